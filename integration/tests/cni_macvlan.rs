//! netd-cni with `"driver": "macvlan"` (the reference `macvlan` plugin's `master` and
//! `mode` keys), in both modes, by direct exec and through libcni's `cnitool`: the
//! result JSON (one interface, named by CNI_IFNAME), the kernel (a macvlan child of the
//! master in the container's namespace, marked as netd's), real packets between two
//! containers and to a router on the master's LAN, CHECK, and DEL leaving nothing.
//! Topology: the node's host namespace holds a veth whose peer is in a "LAN" namespace
//! (`ndmv-<pid>-<n>`) with the router address.

mod cni_support;

use std::path::Path;
use std::process::Command;

use cni_support::{cni_dir, cnitool, Mode, Netns, Node};
use integration::harness::{nsenter, ping_from, run};
use integration::lan::Lan;
use integration::skip::no_root;
use serde_json::{json, Value};

fn conf(node: &Node, lan: &Lan, name: &str, mode: &str) -> Value {
    let mut c = json!({
        "cniVersion": "1.1.0",
        "name": name,
        "type": "netd-cni",
        "driver": "macvlan",
        "master": lan.parent,
        "mode": mode,
        "ipam": {"type": "netd", "subnet": lan.subnet, "gateway": lan.router},
    });
    match node.mode {
        Mode::Delegating => c["socket"] = node.host.socket().display().to_string().into(),
        Mode::Standalone => c["stateDir"] = node.state_dir().display().to_string().into(),
    }
    c
}

fn link(ns_path: &str, ifname: &str) -> Value {
    let o = nsenter(Path::new(ns_path), &["ip", "-d", "-j", "link", "show", ifname]);
    assert!(o.ok(), "ip link show {ifname} in {ns_path}: {}", o.stderr);
    let v: Value = serde_json::from_str(&o.stdout).expect("ip -j");
    v[0].clone()
}

/// Links of the host namespace that are netd's or macvlans: none may be left.
fn host_leftovers(node: &Node) -> Vec<String> {
    let o = node.host.sh("ip -d -j link show");
    let v: Value = serde_json::from_str(&o.stdout).expect("ip -j");
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            l["linkinfo"]["info_kind"] == "macvlan"
                || l["ifalias"].as_str().is_some_and(|a| a.starts_with("netd:"))
        })
        .map(|l| l["ifname"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn direct_exec(mode: Mode, k: u8) {
    let node = Node::new(mode);
    let lan = Lan::new(&node.host.name, k, "c");
    let c = conf(&node, &lan, &format!("ndmv-net{k}"), "bridge");
    let (ns1, ns2) = (Netns::new(), Netns::new());
    let (code, r, err) = node.exec("ADD", "mv-1", &ns1.path(), "net1", &c);
    assert_eq!(code, 0, "ADD: {r} {err}");
    let (code, r2, err) = node.exec("ADD", "mv-2", &ns2.path(), "net1", &c);
    assert_eq!(code, 0, "ADD: {r2} {err}");

    // Result: the container interface only (as the reference macvlan plugin), by
    // CNI_IFNAME, its address on the LAN, the LAN's router as gateway.
    assert_eq!(r["cniVersion"], "1.1.0");
    let ifaces = r["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 1, "{r}");
    assert_eq!(ifaces[0]["name"], "net1");
    assert_eq!(ifaces[0]["sandbox"], ns1.path().as_str());
    assert_eq!(r["ips"][0]["interface"], 0);
    assert_eq!(r["ips"][0]["gateway"], lan.router.as_str());
    assert_eq!(r["routes"][0], json!({"dst": "0.0.0.0/0", "gw": lan.router}));
    let addr = r["ips"][0]["address"].as_str().unwrap().to_string();
    let a1 = addr.split('/').next().unwrap().to_string();
    let a2 = r2["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();

    // Kernel: a macvlan child in bridge mode, marked, with the MAC and address reported.
    let l = link(&ns1.path(), "net1");
    assert_eq!(l["linkinfo"]["info_kind"], "macvlan", "{l}");
    assert_eq!(l["linkinfo"]["info_data"]["mode"], "bridge", "{l}");
    assert!(
        l["ifalias"].as_str().is_some_and(|a| a.starts_with("netd:ep=")),
        "{l}"
    );
    assert_eq!(l["address"], ifaces[0]["mac"], "{l} vs {r}");
    assert_eq!(ns1.addrs("net1"), vec![addr.clone()]);
    assert!(ns1
        .sh("ip route show default")
        .stdout
        .contains(&format!("via {} dev net1", lan.router)));
    assert!(host_leftovers(&node).is_empty(), "{:?}", host_leftovers(&node));

    // Real packets: container <-> container, container -> router, LAN -> container.
    let p1 = Path::new(&ns1.path()).to_path_buf();
    assert!(ping_from(&p1, None, &a2));
    assert!(ping_from(&p1, None, &lan.router));
    assert!(ping_from(&lan.netns(), None, &a1));

    // CHECK with the result as prevResult.
    let mut cc = c.clone();
    cc["prevResult"] = r.clone();
    let (code, out, err) = node.exec("CHECK", "mv-1", &ns1.path(), "net1", &cc);
    assert_eq!(code, 0, "CHECK: {out} {err}");

    // DEL twice each: nothing left in the containers, the host, the store or IPAM.
    for _ in 0..2 {
        for (cid, ns) in [("mv-1", &ns1), ("mv-2", &ns2)] {
            let (code, out, err) = node.exec("DEL", cid, &ns.path(), "net1", &c);
            assert_eq!(code, 0, "DEL: {out} {err}");
        }
    }
    // In delegating mode DEL returns once the attachment is released; the daemon
    // deletes the child right after (as it does a veth).
    assert!(ns1.link_gone("net1"), "net1 left in the container");
    assert!(ns2.link_gone("net1"), "net1 left in the container");
    assert!(host_leftovers(&node).is_empty(), "{:?}", host_leftovers(&node));
    assert!(node.sandboxes().is_empty());
    assert!(node.leases().values().all(Vec::is_empty), "{:?}", node.leases());

    // Refused configs: the right code, nothing made.
    // No master and no default route on the node to take the interface from.
    let mut no_master = c.clone();
    no_master.as_object_mut().unwrap().remove("master");
    let (code, out, _) = node.exec("ADD", "mv-3", &ns1.path(), "net1", &no_master);
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert!(
        out["msg"].as_str().unwrap_or_default().contains("default route"),
        "{out}"
    );
    assert!(ns1.link_gone("net1"));
    // With one, no master means its interface, as with the reference macvlan plugin.
    let host = node.host.netns();
    let route = |verb: &str| {
        let args = [
            "ip",
            "route",
            verb,
            "default",
            "via",
            &lan.router,
            "dev",
            &lan.parent,
            "onlink",
        ];
        assert!(nsenter(&host, &args).ok(), "ip route {verb}");
    };
    route("add");
    let (code, out, err) = node.exec("ADD", "mv-4", &ns1.path(), "net1", &no_master);
    assert_eq!(code, 0, "ADD without master: {out} {err}");
    assert!(ping_from(&p1, None, &lan.router));
    let (code, out, err) = node.exec("DEL", "mv-4", &ns1.path(), "net1", &no_master);
    assert_eq!(code, 0, "DEL: {out} {err}");
    route("del");
    assert!(ns1.link_gone("net1"));
    let mut bad = c.clone();
    bad["mode"] = "l2".into();
    let (code, out, _) = node.exec("ADD", "mv-3", &ns1.path(), "net1", &bad);
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    let mut bad = conf(&node, &lan, &format!("ndmv-other{k}"), "bridge");
    bad["master"] = "nosuch0".into();
    bad["ipam"]["subnet"] = "10.199.0.0/24".into();
    bad["ipam"]["gateway"] = "10.199.0.1".into();
    let (code, out, _) = node.exec("ADD", "mv-3", &ns1.path(), "net1", &bad);
    assert_eq!(code, 1, "{out}");
    assert!(
        out["msg"].as_str().unwrap_or_default().contains("nosuch0"),
        "{out}"
    );
    assert!(!ns1.sh("ip link show net1").ok());
    assert!(node.sandboxes().is_empty());
}

#[test]
fn cni_macvlan_direct_exec_delegating() {
    if no_root() {
        return;
    }
    direct_exec(Mode::Delegating, 81);
}

#[test]
fn cni_macvlan_direct_exec_standalone() {
    if no_root() {
        return;
    }
    direct_exec(Mode::Standalone, 82);
}

fn libcni(mode: Mode, k: u8) {
    let node = Node::new(mode);
    let lan = Lan::new(&node.host.name, k, "c");
    let name = format!("ndmv-lib{k}");
    let dir = node.host.base.join("libcni-mv");
    std::fs::create_dir_all(dir.join("net.d")).unwrap();
    std::fs::create_dir_all(dir.join("cache")).unwrap();
    let list = json!({"cniVersion": "1.0.0", "name": name, "plugins": [conf(&node, &lan, &name, "vepa")]});
    std::fs::write(dir.join("net.d").join("mv.conflist"), list.to_string()).unwrap();
    let ns = Netns::new();
    let tool = |cmd: &str| {
        run(Command::new("nsenter")
            .arg(format!("--net={}", node.host.netns().display()))
            .arg(cnitool())
            .args([cmd, name.as_str(), &ns.path()])
            .env("NETCONFPATH", dir.join("net.d"))
            .env("CNI_PATH", format!("{}:/usr/lib/cni", cni_dir().display()))
            .env("CNI_CACHEDIR", dir.join("cache"))
            .env("CNI_CONTAINERID", format!("libcni-{}", ns.name))
            .env("CNI_IFNAME", "lan0"))
    };
    let o = tool("add");
    assert!(o.ok(), "cnitool add: {} {}", o.stdout, o.stderr);
    let r: Value = serde_json::from_str(&o.stdout).expect("result");
    assert_eq!(r["interfaces"][0]["name"], "lan0", "{r}");
    let l = link(&ns.path(), "lan0");
    assert_eq!(l["linkinfo"]["info_kind"], "macvlan", "{l}");
    assert_eq!(l["linkinfo"]["info_data"]["mode"], "vepa", "{l}");
    assert!(ping_from(Path::new(&ns.path()), None, &lan.router));
    let o = tool("check");
    assert!(o.ok(), "cnitool check: {}", o.stderr);
    let o = tool("del");
    assert!(o.ok(), "cnitool del: {}", o.stderr);
    assert!(ns.link_gone("lan0"));
    assert!(host_leftovers(&node).is_empty());
    assert!(node.sandboxes().is_empty());
    assert!(node.leases().values().all(Vec::is_empty));
}

#[test]
fn cni_macvlan_libcni_delegating() {
    if no_root() {
        return;
    }
    libcni(Mode::Delegating, 83);
}

#[test]
fn cni_macvlan_libcni_standalone() {
    if no_root() {
        return;
    }
    libcni(Mode::Standalone, 84);
}
