//! netd-cni driven by real libcni (Debian's libcni 1.1 through `cnitool`, as kubelet's
//! runtimes use it): add/check/del with the cached result as prevResult, in both modes,
//! and chained before the reference `tuning` and `portmap` plugins. A cnitool that cannot
//! be built (no Go or no libcni sources) fails the tests.

mod cni_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use cni_support::{cni_dir, cnitool, no_reference_plugin, Mode, Netns, Node};
use integration::harness::{run, Out};
use integration::skip::no_root;
use serde_json::{json, Value};

struct Lib {
    dir: PathBuf,
}

impl Lib {
    fn new(node: &Node, name: &str, plugins: Vec<Value>) -> Lib {
        let dir = node.host.base.join(format!("libcni-{name}"));
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        std::fs::create_dir_all(dir.join("cache")).unwrap();
        let list = json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
        std::fs::write(
            dir.join("net.d").join(format!("{name}.conflist")),
            list.to_string(),
        )
        .unwrap();
        Lib { dir }
    }

    fn tool(&self, node: &Node, cmd: &str, net: &str, ns: &Netns, cap_args: Option<&Value>) -> Out {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", node.host.netns().display()))
            .arg(cnitool())
            .args([cmd, net, &ns.path()])
            .env("NETCONFPATH", self.dir.join("net.d"))
            .env("CNI_PATH", format!("{}:/usr/lib/cni", cni_dir().display()))
            .env("CNI_CACHEDIR", self.dir.join("cache"))
            .env("CNI_CONTAINERID", format!("libcni-{}", ns.name))
            .env(
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=default",
            );
        if let Some(a) = cap_args {
            c.env("CAP_ARGS", a.to_string());
        }
        run(&mut c)
    }
}

fn add_check_del(mode: Mode) {
    let node = Node::new(mode);
    let mut plugin = node.conf(
        "ndcni-lib",
        "10.241.0.0/24",
        json!({"dns": {"nameservers": ["10.241.0.1"], "search": ["svc.local"]}}),
    );
    plugin.as_object_mut().unwrap().remove("cniVersion");
    plugin.as_object_mut().unwrap().remove("name");
    let lib = Lib::new(&node, "ndcni-lib", vec![plugin]);
    let ns = Netns::new();
    let o = lib.tool(&node, "add", "ndcni-lib", &ns, None);
    assert!(o.ok(), "cnitool add: {} {}", o.stdout, o.stderr);
    let r: Value = serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout));
    assert_eq!(r["cniVersion"], "1.0.0");
    let ifaces = r["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 3, "{r}");
    assert_eq!(ifaces[2]["name"], "eth0");
    assert_eq!(ifaces[2]["sandbox"], ns.path().as_str());
    let addr = r["ips"][0]["address"].as_str().unwrap();
    assert!(addr.starts_with("10.241.0."), "{r}");
    assert_eq!(r["ips"][0]["interface"], 2);
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(r["dns"]["nameservers"][0], "10.241.0.1");
    assert_eq!(r["dns"]["search"][0], "svc.local");
    assert_eq!(ns.addrs("eth0"), vec![addr.to_string()]);
    assert!(integration::harness::ping_from(
        Path::new(&ns.path()),
        None,
        "10.241.0.1"
    ));
    // The pod name from CNI_ARGS is on the sandbox.
    let sb = &node.sandboxes()[0];
    assert_eq!(
        sb.labels.get("io.kubernetes.pod.name").map(String::as_str),
        Some("web-0")
    );

    let o = lib.tool(&node, "check", "ndcni-lib", &ns, None);
    assert!(o.ok(), "cnitool check: {}", o.stderr);
    // CHECK fails once the interface is gone behind netd's back: renamed away (nothing
    // repairs inside a runtime's namespace)...
    assert!(ns.sh("ip link set eth0 name gone0").ok());
    let o = lib.tool(&node, "check", "ndcni-lib", &ns, None);
    assert!(!o.ok(), "cnitool check passed without eth0");
    assert!(ns.sh("ip link set gone0 name eth0").ok());
    // ...or deleted, with its host side: standalone, nothing brings it back; the
    // daemon's reconcile loop makes the pair again, and CHECK passes once it has.
    assert!(ns.sh("ip link del eth0").ok());
    if mode == Mode::Standalone {
        let o = lib.tool(&node, "check", "ndcni-lib", &ns, None);
        assert!(!o.ok(), "cnitool check passed without eth0");
    } else {
        let t0 = std::time::Instant::now();
        while ns.addrs("eth0") != vec![addr.to_string()] {
            assert!(t0.elapsed().as_secs() < 10, "eth0 not repaired within 10 s");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let o = lib.tool(&node, "check", "ndcni-lib", &ns, None);
        assert!(o.ok(), "cnitool check after the repair: {}", o.stderr);
    }
    for _ in 0..2 {
        let o = lib.tool(&node, "del", "ndcni-lib", &ns, None);
        assert!(o.ok(), "cnitool del: {}", o.stderr);
    }
    assert!(node.sandboxes().is_empty());
    assert!(node.leases().values().all(Vec::is_empty));
    assert!(node.settled_endpoint_links().is_empty());
}

#[test]
fn libcni_add_check_del_delegating() {
    if no_root() {
        return;
    }
    add_check_del(Mode::Delegating);
}

#[test]
fn libcni_add_check_del_standalone() {
    if no_root() {
        return;
    }
    add_check_del(Mode::Standalone);
}

/// netd-cni first, then the reference `tuning` (a sysctl and the MTU inside the
/// container, from our prevResult) and `portmap` (its iptables DNAT for the
/// `portMappings` capability). CHECK runs over the whole chain, DEL removes it all.
#[test]
fn libcni_chained_with_reference_plugins() {
    if no_root() {
        return;
    }
    if no_reference_plugin("tuning") || no_reference_plugin("portmap") {
        return;
    }
    let node = Node::new(Mode::Delegating);
    let mut ours = node.conf("ndcni-chain", "10.242.0.0/24", json!({}));
    ours.as_object_mut().unwrap().remove("cniVersion");
    ours.as_object_mut().unwrap().remove("name");
    let plugins = vec![
        ours,
        json!({"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}),
        json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
    ];
    let lib = Lib::new(&node, "ndcni-chain", plugins);
    let ns = Netns::new();
    let caps = json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]});
    let o = lib.tool(&node, "add", "ndcni-chain", &ns, Some(&caps));
    assert!(o.ok(), "cnitool add (chain): {} {}", o.stdout, o.stderr);
    let r: Value = serde_json::from_str(&o.stdout).unwrap();
    let addr = r["ips"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(ns.addrs("eth0"), vec![addr.clone()]);
    // tuning acted on the interface our result named.
    assert_eq!(
        ns.sh("cat /proc/sys/net/ipv4/conf/eth0/arp_notify").stdout.trim(),
        "1"
    );
    assert!(ns.sh("ip link show eth0").stdout.contains("mtu 1400"));
    // portmap put its DNAT for our address in the host namespace.
    let nat = node.host.sh("iptables -t nat -S 2>/dev/null").stdout;
    let ip = addr.split('/').next().unwrap();
    assert!(
        nat.contains(&format!("{ip}:80")),
        "portmap DNAT to {ip}:80 missing:\n{nat}"
    );
    // CHECK runs netd-cni, tuning, then portmap. Debian's portmap 1.1.1 always fails its
    // own IPv6 check (containernetworking/plugins#819, fixed upstream later), so the
    // chain's CHECK must get past netd-cni and tuning and stop only there.
    let o = lib.tool(&node, "check", "ndcni-chain", &ns, Some(&caps));
    assert!(
        o.ok() || o.stderr.contains("could not check ipv6 dnat"),
        "cnitool check (chain): {}",
        o.stderr
    );
    let o = lib.tool(&node, "del", "ndcni-chain", &ns, Some(&caps));
    assert!(o.ok(), "cnitool del (chain): {}", o.stderr);
    let nat = node.host.sh("iptables -t nat -S 2>/dev/null").stdout;
    assert!(!nat.contains(&format!("{ip}:80")), "portmap DNAT left:\n{nat}");
    assert!(ns.link_gone("eth0"));
    assert!(node.sandboxes().is_empty());
}

/// netd-cni after another plugin: the reference `loopback` goes first, so netd-cni gets
/// its result as prevResult and must pass it on with its own interfaces appended and
/// its `ips[].interface` indexes shifted.
#[test]
fn libcni_chained_after_loopback() {
    if no_root() {
        return;
    }
    if no_reference_plugin("loopback") {
        return;
    }
    let node = Node::new(Mode::Standalone);
    let mut ours = node.conf("ndcni-after", "10.245.0.0/24", json!({}));
    ours.as_object_mut().unwrap().remove("cniVersion");
    ours.as_object_mut().unwrap().remove("name");
    let lib = Lib::new(&node, "ndcni-after", vec![json!({"type": "loopback"}), ours]);
    let ns = Netns::new();
    let o = lib.tool(&node, "add", "ndcni-after", &ns, None);
    assert!(o.ok(), "cnitool add: {} {}", o.stdout, o.stderr);
    let r: Value = serde_json::from_str(&o.stdout).unwrap();
    let names: Vec<&str> = r["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"lo"), "{r}");
    assert_eq!(names.last(), Some(&"eth0"), "{r}");
    let ours_ip = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["address"].as_str().unwrap().starts_with("10.245.0."))
        .unwrap_or_else(|| panic!("no netd address in {r}"));
    assert_eq!(ours_ip["interface"].as_u64(), Some(names.len() as u64 - 1), "{r}");
    assert!(
        r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["address"] == "127.0.0.1/8"),
        "{r}"
    );
    let o = lib.tool(&node, "check", "ndcni-after", &ns, None);
    assert!(o.ok(), "cnitool check: {}", o.stderr);
    let o = lib.tool(&node, "del", "ndcni-after", &ns, None);
    assert!(o.ok(), "cnitool del: {}", o.stderr);
    assert!(node.sandboxes().is_empty());
}
