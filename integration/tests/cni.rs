//! netd-cni by direct exec (as a runtime calls it), in both modes: result JSON against
//! the kernel, CHECK, DEL three times (also after the namespace is gone), 100 concurrent
//! ADDs then DELs, STATUS 50/51, GC with `cni.dev/valid-attachments`, and kill -9 of
//! the daemon during a burst of ADDs.

mod cni_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use cni_support::{exec_plugin, ip_of, no_reference_plugin, ping_each_other, Mode, Netns, Node};
use integration::skip::no_root;
use serde_json::{json, Value};

fn add_check_del(mode: Mode) {
    let node = Node::new(mode);
    let conf = node.conf("ndcni-a", "10.231.0.0/24", json!({}));
    let ns = Netns::new();
    let r = node.add("ctr-1", &ns, &conf);
    // Result: bridge, host veth, eth0 in the container's namespace with its address.
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["interfaces"][0]["name"], conf["bridge"]);
    assert_eq!(r["interfaces"][2]["name"], "eth0");
    assert_eq!(r["interfaces"][2]["sandbox"], ns.path().as_str());
    let addr = r["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(addr.starts_with("10.231.0.") && addr.ends_with("/24"), "{r}");
    assert_eq!(r["ips"][0]["gateway"], "10.231.0.1");
    assert_eq!(r["routes"][0], json!({"dst": "0.0.0.0/0", "gw": "10.231.0.1"}));
    // Kernel: the address and MAC on eth0, the default route, the gateway reachable.
    assert_eq!(ns.addrs("eth0"), vec![addr.clone()]);
    let mac = ns.sh("cat /sys/class/net/eth0/address").stdout;
    let link = ns.sh("ip -j link show eth0").stdout;
    assert!(
        link.contains(r["interfaces"][2]["mac"].as_str().unwrap()),
        "{link} vs {r} ({mac})"
    );
    assert!(ns
        .sh("ip route show default")
        .stdout
        .contains("via 10.231.0.1 dev eth0"));
    let host_veth = r["interfaces"][1]["name"].as_str().unwrap();
    assert!(node.host.sh(&format!("ip link show {host_veth}")).ok());
    assert!(integration::harness::ping_from(
        std::path::Path::new(&ns.path()),
        None,
        "10.231.0.1"
    ));

    // The same network name with another subnet or bridge is a config error (code 7)
    // that creates nothing (delegating mode: the daemon's 412 on `/v1/attach`).
    let ns_other = Netns::new();
    for (key, val) in [
        ("ipam", json!({"type": "netd", "subnet": "10.232.0.0/24"})),
        ("bridge", json!("ndcnix0")),
    ] {
        let mut other = conf.clone();
        other[key] = val;
        let (code, out, _) = node.exec("ADD", "ctr-other", &ns_other.path(), "eth0", &other);
        assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{key}: {out}");
        assert!(out["msg"].as_str().unwrap_or("").contains("exists with"), "{out}");
    }
    assert!(!ns_other.sh("ip link show eth0").ok());
    assert_eq!(node.sandboxes().len(), 1);

    // CHECK with the result as prevResult (what libcni does).
    let mut c = conf.clone();
    c["prevResult"] = r.clone();
    let (code, out, err) = node.exec("CHECK", "ctr-1", &ns.path(), "eth0", &c);
    assert_eq!(code, 0, "CHECK: {out} {err}");
    // CHECK notices an interface removed behind netd's back (code 100).
    assert!(ns.sh("ip link set eth0 name gone0").ok());
    let (code, out, _) = node.exec("CHECK", "ctr-1", &ns.path(), "eth0", &c);
    assert_eq!((code, out["code"].as_u64()), (1, Some(100)), "{out}");
    assert!(ns.sh("ip link set gone0 name eth0").ok());

    // DEL three times: success each time, nothing left.
    node.del("ctr-1", &ns.path(), &conf);
    // Standalone: the veth pair is gone from both namespaces when DEL returns (the
    // kernel's cleanup after that runs in a detached process); nothing to wait for.
    if mode == Mode::Standalone {
        assert!(
            !ns.sh("ip link show eth0 2>/dev/null").ok(),
            "eth0 left in the container"
        );
        assert!(
            node.endpoint_links().is_empty(),
            "veth left: {:?}",
            node.endpoint_links()
        );
    }
    for _ in 0..2 {
        node.del("ctr-1", &ns.path(), &conf);
    }
    assert!(ns.link_gone("eth0"), "eth0 left in the container");
    assert!(
        node.settled_endpoint_links().is_empty(),
        "veth left: {:?}",
        node.endpoint_links()
    );
    assert!(node.sandboxes().is_empty());
    assert!(node.leases().values().all(Vec::is_empty), "{:?}", node.leases());
    // CHECK of a deleted attachment: unknown container.
    let (code, out, _) = node.exec("CHECK", "ctr-1", &ns.path(), "eth0", &c);
    assert_eq!((code, out["code"].as_u64()), (1, Some(3)), "{out}");
}

#[test]
fn cni_add_check_del_delegating() {
    if no_root() {
        return;
    }
    add_check_del(Mode::Delegating);
}

#[test]
fn cni_add_check_del_standalone() {
    if no_root() {
        return;
    }
    add_check_del(Mode::Standalone);
}

fn del_after_netns_gone(mode: Mode) {
    let node = Node::new(mode);
    let conf = node.conf("ndcni-b", "10.232.0.0/24", json!({}));
    let mut ns = Netns::new();
    let path = ns.path();
    node.add("ctr-gone", &ns, &conf);
    ns.delete();
    for netns in [path.as_str(), "", path.as_str()] {
        node.del("ctr-gone", netns, &conf);
    }
    assert!(node.sandboxes().is_empty());
    assert!(node.leases().values().all(Vec::is_empty));
    // The kernel destroys the veth with the namespace; give it its RCU grace periods.
    assert!(
        node.settled_endpoint_links().is_empty(),
        "{:?}",
        node.endpoint_links()
    );
    // The address is free again: a /30 has room for exactly one container.
    let small = node.conf("ndcni-c", "10.233.0.0/30", json!({}));
    let a = Netns::new();
    node.add("one", &a, &small);
    let mut b = Netns::new();
    let (code, out, _) = node.exec("ADD", "two", &b.path(), "eth0", &small);
    assert_eq!((code, out["code"].as_u64()), (1, Some(100)), "{out}");
    assert!(!b.sh("ip link show eth0").ok(), "a failed ADD left eth0");
    b.delete();
    node.del("two", "", &small);
    node.del("one", &a.path(), &small);
    let b2 = Netns::new();
    node.add("three", &b2, &small);
}

#[test]
fn cni_del_after_netns_deleted_delegating() {
    if no_root() {
        return;
    }
    del_after_netns_gone(Mode::Delegating);
}

#[test]
fn cni_del_after_netns_deleted_standalone() {
    if no_root() {
        return;
    }
    del_after_netns_gone(Mode::Standalone);
}

/// N ADDs at once through `xargs -P`, then N DELs: all succeed, no duplicate address,
/// then no sandbox, lease or veth left.
fn concurrent(mode: Mode, n: usize) {
    let node = Node::new(mode);
    let conf = node.conf("ndcni-p", "10.234.0.0/22", json!({}));
    let dir = node.host.base.join("cni-par");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("conf.json"), conf.to_string()).unwrap();
    let nss: Vec<Netns> = (0..n).map(|_| Netns::new()).collect();
    let list: String = nss.iter().map(|ns| format!("{}\n", ns.name)).collect();
    let script = format!(
        "cd {dir} && xargs -P {n} -I @C@ sh -c 'CNI_COMMAND=$0 CNI_CONTAINERID=@C@ CNI_NETNS=/run/netns/@C@ \
         CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni nsenter --net={host} {bin} < conf.json > @C@.$0 2>&1; echo $? > @C@.$0.rc'",
        dir = dir.display(),
        host = node.host.netns().display(),
        bin = cni_support::cni_bin().display(),
    );
    let run = |cmd: &str| {
        let mut child = Command::new("bash")
            .args(["-c", &script.replace("$0", cmd)])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(list.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    };
    run("ADD");
    let mut ips = Vec::new();
    for ns in &nss {
        let rc = std::fs::read_to_string(dir.join(format!("{}.ADD.rc", ns.name))).unwrap();
        let out = std::fs::read_to_string(dir.join(format!("{}.ADD", ns.name))).unwrap();
        assert_eq!(rc.trim(), "0", "ADD {}: {out}", ns.name);
        let r: Value = serde_json::from_str(&out).unwrap();
        let a = r["ips"][0]["address"].as_str().unwrap().to_string();
        assert_eq!(
            ns.addrs("eth0"),
            vec![a.clone()],
            "kernel vs result in {}",
            ns.name
        );
        ips.push(a);
    }
    let mut uniq = ips.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), n, "duplicate addresses among {n} concurrent ADDs");
    assert_eq!(node.sandboxes().len(), n);
    assert_eq!(node.endpoint_links().len(), n);
    run("DEL");
    for ns in &nss {
        let rc = std::fs::read_to_string(dir.join(format!("{}.DEL.rc", ns.name))).unwrap();
        assert_eq!(rc.trim(), "0", "DEL {}", ns.name);
        assert!(ns.link_gone("eth0"), "eth0 left in {}", ns.name);
    }
    assert!(node.sandboxes().is_empty(), "sandboxes left after {n} DELs");
    assert!(
        node.leases().values().all(Vec::is_empty),
        "leases left: {:?}",
        node.leases()
    );
    assert!(
        node.settled_endpoint_links().is_empty(),
        "veths left: {:?}",
        node.endpoint_links()
    );
}

#[test]
fn cni_100_concurrent_adds_dels_delegating() {
    if no_root() {
        return;
    }
    concurrent(Mode::Delegating, 100);
}

#[test]
fn cni_100_concurrent_adds_dels_standalone() {
    if no_root() {
        return;
    }
    concurrent(Mode::Standalone, 100);
}

fn status_and_gc(mode: Mode) {
    let mut node = Node::new(mode);
    let conf = node.conf("ndcni-s", "10.235.0.0/30", json!({}));
    let (code, out, _) = node.exec("STATUS", "", "", "", &conf);
    assert_eq!(code, 0, "STATUS: {out}");
    let a = Netns::new();
    node.add("gc-a", &a, &conf);
    // A /30 holds one container: STATUS now says "no IPs" (51).
    let (code, out, _) = node.exec("STATUS", "", "", "", &conf);
    assert_eq!((code, out["code"].as_u64()), (1, Some(51)), "{out}");
    // STATUS needs 1.1.0.
    let mut old = conf.clone();
    old["cniVersion"] = "1.0.0".into();
    let (code, out, _) = node.exec("STATUS", "", "", "", &old);
    assert_eq!((code, out["code"].as_u64()), (1, Some(1)), "{out}");

    // GC: a second network with three containers; keep one.
    let wide = node.conf("ndcni-g", "10.236.0.0/24", json!({}));
    let nss: Vec<Netns> = (0..3).map(|_| Netns::new()).collect();
    for (i, ns) in nss.iter().enumerate() {
        node.add(&format!("gc-{i}"), ns, &wide);
    }
    let mut gc = wide.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gc-1", "ifname": "eth0"}]);
    let (code, out, err) = node.exec("GC", "", "", "", &gc);
    assert_eq!(code, 0, "GC: {out} {err}");
    assert!(nss[0].link_gone("eth0") && nss[2].link_gone("eth0"));
    assert_eq!(nss[1].addrs("eth0").len(), 1);
    let left: Vec<String> = node
        .sandboxes()
        .iter()
        .map(|s| s.labels["cni.netd/container"].clone())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&"gc-1".to_string()) && left.contains(&"gc-a".to_string()));
    assert_eq!(node.leases()["ndcni-g/4"].len(), 1);

    if mode == Mode::Delegating {
        // Daemon gone: STATUS 50, ADD "try again later" (11).
        node.host.kill9();
        let (code, out, _) = node.exec("STATUS", "", "", "", &wide);
        assert_eq!((code, out["code"].as_u64()), (1, Some(50)), "{out}");
        let b = Netns::new();
        let (code, out, _) = node.exec("ADD", "late", &b.path(), "eth0", &wide);
        assert_eq!((code, out["code"].as_u64()), (1, Some(11)), "{out}");
        assert!(!b.sh("ip link show eth0").ok());
    }
}

#[test]
fn cni_status_gc_delegating() {
    if no_root() {
        return;
    }
    status_and_gc(Mode::Delegating);
}

#[test]
fn cni_status_gc_standalone() {
    if no_root() {
        return;
    }
    status_and_gc(Mode::Standalone);
}

/// Spec errors on stdout with a non-zero exit, and nothing changed.
#[test]
fn cni_bad_input_gets_spec_errors() {
    if no_root() {
        return;
    }
    let node = Node::new(Mode::Standalone);
    let ns = Netns::new();
    let conf = node.conf("ndcni-e", "10.237.0.0/24", json!({}));
    let cases: Vec<(Value, u64)> = vec![
        (json!("not an object"), 6),
        (
            {
                let mut c = conf.clone();
                c["cniVersion"] = "0.2.0".into();
                c
            },
            1,
        ),
        (
            {
                let mut c = conf.clone();
                c["mtu"] = "x".into();
                c
            },
            7,
        ),
        (
            {
                let mut c = conf.clone();
                c["ipam"]["subnet"] = "10.0.0.0/99".into();
                c
            },
            7,
        ),
        (
            {
                let mut c = conf.clone();
                c["vlan"] = 5.into();
                c
            },
            2,
        ),
    ];
    for (c, want) in cases {
        let (code, out, _) = node.exec("ADD", "bad", &ns.path(), "eth0", &c);
        assert_eq!((code, out["code"].as_u64()), (1, Some(want)), "{c}: {out}");
        assert!(out["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (code, out, _) = node.exec("ADD", "bad/id", &ns.path(), "eth0", &conf);
    assert_eq!((code, out["code"].as_u64()), (1, Some(4)), "{out}");
    let (code, out, _) = node.exec("ADD", "ok", "/run/netns/ndcni-does-not-exist", "eth0", &conf);
    assert_eq!((code, out["code"].as_u64()), (1, Some(3)), "{out}");
    assert!(!ns.sh("ip link show eth0").ok());
    assert!(node.sandboxes().is_empty());
    let (code, out, _) = node.exec("VERSION", "", "", "", &json!({"cniVersion": "1.0.0"}));
    assert_eq!(code, 0);
    assert_eq!(
        out["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

/// kill -9 of the daemon in the middle of 30 concurrent ADDs. After a restart every
/// container is either fully attached (netd has it and eth0 carries that address) or
/// has nothing; the runtime's DEL of the failed ones leaves no leak.
#[test]
fn cni_kill9_during_add_burst() {
    if no_root() {
        return;
    }
    let mut node = Node::new(Mode::Delegating);
    let conf = node.conf("ndcni-k", "10.238.0.0/24", json!({}));
    // Large enough that the kill lands while ADDs are still queued behind the engine lock
    // (one-request ADDs are fast: a burst of 30 sometimes ended between the poll and the kill).
    const BURST: usize = 120;
    let nss: Vec<Netns> = (0..BURST).map(|_| Netns::new()).collect();
    let host = node.host.netns();
    let bin = cni_support::cni_bin();
    let handles: Vec<_> = nss
        .iter()
        .map(|ns| {
            let (host, bin, conf, path, name) = (
                host.clone(),
                bin.clone(),
                conf.clone(),
                ns.path(),
                ns.name.clone(),
            );
            std::thread::spawn(move || exec_plugin(&host, &bin, "ADD", &name, &path, "eth0", &conf).0)
        })
        .collect();
    // Kill once some ADDs have landed, so others are surely in flight.
    let t0 = std::time::Instant::now();
    while node
        .host
        .client()
        .get("/v1/sandboxes")
        .map_or(0, |v| v.as_array().map_or(0, Vec::len))
        < 3
        && t0.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    node.host.restart();
    let codes: Vec<i32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = codes.iter().filter(|c| **c == 0).count();
    println!("{ok} of {BURST} ADDs succeeded around the kill");
    // The kill came after 3 sandboxes were committed; it landed in the burst if some
    // ADDs failed (a committed ADD may still fail when its answer was lost).
    assert!(
        ok < BURST,
        "the kill did not land during the burst (all {BURST} succeeded)"
    );
    let sbs = node.sandboxes();
    for (ns, code) in nss.iter().zip(&codes) {
        let sb = sbs.iter().find(|s| s.labels["cni.netd/container"] == ns.name);
        let addrs = ns.addrs("eth0");
        match sb {
            Some(sb) => {
                let want = sb.endpoints[0].ipv4.unwrap().to_string();
                assert_eq!(addrs, vec![want], "{}: netd has it, the kernel must too", ns.name);
            }
            None => {
                assert_ne!(*code, 0, "{}: ADD succeeded but netd lost it", ns.name);
                assert!(
                    addrs.is_empty() && !ns.sh("ip link show eth0").ok(),
                    "{}: half-made attachment: {} {}\n{}",
                    ns.name,
                    ns.sh("ip -d addr; ip link show type veth").stdout,
                    node.host.sh("ip -d link show").stdout,
                    node.host.log()
                );
            }
        }
    }
    // The runtime cleans up the failed ones with DEL; then nothing of them is left.
    for (ns, code) in nss.iter().zip(&codes) {
        if *code != 0 {
            node.del(&ns.name, &ns.path(), &conf);
        }
    }
    let sbs = node.sandboxes();
    assert!(sbs.len() >= ok);
    std::thread::sleep(Duration::from_millis(500));
    let links = node.endpoint_links();
    assert_eq!(
        links.len(),
        sbs.len(),
        "veths {links:?} vs {} sandboxes",
        sbs.len()
    );
    let leases = node.leases().get("ndcni-k/4").map_or(0, Vec::len);
    assert_eq!(leases, sbs.len());
    for ns in &nss {
        node.del(&ns.name, &ns.path(), &conf);
    }
    assert!(node.sandboxes().is_empty());
}

/// Standalone mode trusts its store between execs (no full reconcile each time): a
/// ruleset flushed or a bridge deleted by someone else is repaired by the next exec.
#[test]
fn cni_standalone_repairs_drift() {
    if no_root() {
        return;
    }
    let node = Node::new(Mode::Standalone);
    let conf = node.conf("ndcni-d", "10.239.0.0/24", json!({}));
    let a = Netns::new();
    node.add("drift-a", &a, &conf);
    assert!(node.host.sh("nft flush ruleset").ok());
    let b = Netns::new();
    node.add("drift-b", &b, &conf);
    let rs = node.host.sh("nft list table bridge netd").stdout;
    for ns in [&a, &b] {
        let ip = ns.addrs("eth0")[0].split('/').next().unwrap().to_string();
        assert!(rs.contains(&ip), "{ip} missing from the restored ruleset:\n{rs}");
    }
    let bridge = conf["bridge"].as_str().unwrap();
    assert!(node.host.sh(&format!("ip link del {bridge}")).ok());
    let c = Netns::new();
    node.add("drift-c", &c, &conf);
    assert!(
        node.host.sh(&format!("ip link show {bridge}")).ok(),
        "bridge not recreated"
    );
    assert!(integration::harness::ping_from(
        std::path::Path::new(&c.path()),
        None,
        "10.239.0.1"
    ));
    for (id, ns) in [("drift-a", &a), ("drift-b", &b), ("drift-c", &c)] {
        node.del(id, &ns.path(), &conf);
    }
    assert!(node.sandboxes().is_empty());
}

/// An IPAM type that is not netd's own is executed from CNI_PATH (here the reference
/// `static` plugin): its address is the container's, on a netd network made with its
/// subnet; an IPAM plugin that is not there is a clean error that leaves nothing.
fn delegated_ipam(mode: Mode) {
    let node = Node::new(mode);
    let conf = node.conf(
        "ndcni-ipam",
        "unused",
        // Debian's reference plugins (1.1.1) speak up to 1.0.0.
        json!({"cniVersion": "1.0.0",
               "ipam": {"type": "static", "addresses": [{"address": "10.236.0.7/24", "gateway": "10.236.0.1"}]}}),
    );
    let ns = Netns::new();
    let r = node.add("ctr-static", &ns, &conf);
    assert_eq!(r["ips"][0]["address"], "10.236.0.7/24", "{r}");
    assert_eq!(r["ips"][0]["gateway"], "10.236.0.1", "{r}");
    assert_eq!(ns.addrs("eth0"), vec!["10.236.0.7/24".to_string()]);
    assert!(integration::harness::ping_from(
        std::path::Path::new(&ns.path()),
        None,
        "10.236.0.1"
    ));
    node.del("ctr-static", &ns.path(), &conf);
    assert!(node.sandboxes().is_empty());
    assert!(node.leases().values().all(Vec::is_empty));

    let missing = node.conf(
        "ndcni-ipam2",
        "unused",
        json!({"ipam": {"type": "ndcni-no-such-ipam"}}),
    );
    let ns2 = Netns::new();
    let (code, out, _) = node.exec("ADD", "ctr-missing", &ns2.path(), "eth0", &missing);
    assert_eq!((code, out["code"].as_u64()), (1, Some(4)), "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap_or("")
            .contains("not found in CNI_PATH"),
        "{out}"
    );
    assert!(!ns2.sh("ip link show eth0").ok(), "a failed ADD left eth0");
    assert!(node.sandboxes().is_empty());
}

#[test]
fn cni_delegated_ipam_delegating() {
    if no_root() {
        return;
    }
    delegated_ipam(Mode::Delegating);
}

#[test]
fn cni_delegated_ipam_standalone() {
    if no_root() {
        return;
    }
    delegated_ipam(Mode::Standalone);
}

/// Addresses host-local has leased: the files named by address in its data dir.
fn host_local_leases(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.parse::<std::net::IpAddr>().ok()?;
            let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
            Some((name, owner.lines().next().unwrap_or("").to_string()))
        })
        .collect();
    v.sort();
    v
}

/// The drop-in `"ipam": {"type": "host-local", ...}` is executed from CNI_PATH (the
/// reference plugin, as the spec describes): host-local's lease files decide the address,
/// netd leases the same one, an ADD that netd refuses hands host-local's lease back, and
/// DEL releases both (three times, the last after the namespace is gone).
fn host_local_executed(mode: Mode) {
    let node = Node::new(mode);
    let data = node.host.base.join("host-local");
    let conf = node.conf(
        "ndcni-hl",
        "unused",
        // Debian's reference plugins (1.1.1) speak up to 1.0.0.
        json!({"cniVersion": "1.0.0",
               "ipam": {"type": "host-local",
                        "ranges": [[{"subnet": "10.238.0.0/24", "rangeStart": "10.238.0.50"}]],
                        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.250.0.0/16", "gw": "10.238.0.7"}],
                        "dataDir": data}}),
    );
    let leases_dir = data.join("ndcni-hl");
    let ns1 = Netns::new();
    let mut ns2 = Netns::new();
    let r1 = node.add("ctr-hl1", &ns1, &conf);
    let r2 = node.add("ctr-hl2", &ns2, &conf);
    // host-local allocates upwards from rangeStart; netd's own IPAM would not pick these.
    assert_eq!(r1["ips"][0]["address"], "10.238.0.50/24", "{r1}");
    assert_eq!(r2["ips"][0]["address"], "10.238.0.51/24", "{r2}");
    assert_eq!(r1["ips"][0]["gateway"], "10.238.0.1", "{r1}");
    assert_eq!(
        host_local_leases(&leases_dir),
        vec![
            ("10.238.0.50".to_string(), "ctr-hl1".to_string()),
            ("10.238.0.51".to_string(), "ctr-hl2".to_string())
        ]
    );
    assert_eq!(ns1.addrs("eth0"), vec!["10.238.0.50/24".to_string()]);
    // host-local's routes are the container's, as the bridge plugin installs them.
    assert!(
        r1["routes"]
            .as_array()
            .unwrap()
            .contains(&json!({"dst": "10.250.0.0/16", "gw": "10.238.0.7"})),
        "{r1}"
    );
    let routes = ns1.sh("ip -4 route show").stdout;
    assert!(
        routes.contains("10.250.0.0/16 via 10.238.0.7 dev eth0"),
        "{routes}"
    );
    assert!(routes.contains("default via 10.238.0.1 dev eth0"), "{routes}");
    assert!(integration::harness::ping_from(
        std::path::Path::new(&ns2.path()),
        None,
        "10.238.0.50"
    ));
    let netd_leases: Vec<String> = node.leases().values().flatten().cloned().collect();
    assert!(
        netd_leases.contains(&"10.238.0.50".to_string()) && netd_leases.contains(&"10.238.0.51".to_string()),
        "{netd_leases:?}"
    );

    // netd refuses a second interface of ctr-hl2 on the same network after host-local
    // leased it an address: the failed ADD gives that address back.
    let (code, out, _) = node.exec("ADD", "ctr-hl2", &ns2.path(), "eth1", &conf);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        host_local_leases(&leases_dir).len(),
        2,
        "failed ADD leaked a host-local lease"
    );
    assert!(!ns2.sh("ip link show eth1").ok());

    node.del("ctr-hl1", &ns1.path(), &conf);
    assert_eq!(
        host_local_leases(&leases_dir),
        vec![("10.238.0.51".to_string(), "ctr-hl2".to_string())]
    );
    node.del("ctr-hl2", &ns2.path(), &conf);
    ns2.delete();
    for _ in 0..2 {
        node.del("ctr-hl1", &ns1.path(), &conf);
        node.del("ctr-hl2", &ns2.path(), &conf);
    }
    assert!(host_local_leases(&leases_dir).is_empty());
    assert!(node.sandboxes().is_empty());
    assert!(node.leases().values().all(Vec::is_empty), "{:?}", node.leases());
}

/// `ipam.routes` with netd's own IPAM: installed in the container through its interface
/// (a route without `gw` via the network's gateway; the default route once) and listed in
/// the result; a route the kernel would refuse is refused before anything is made.
fn ipam_routes(mode: Mode) {
    let node = Node::new(mode);
    let conf = node.conf(
        "ndcni-rt",
        "10.237.0.0/24",
        json!({"ipam": {"type": "netd", "subnet": "10.237.0.0/24",
                        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.250.0.0/16"},
                                   {"dst": "10.251.0.0/16", "gw": "10.237.0.9"}]}}),
    );
    let ns = Netns::new();
    let r = node.add("ctr-rt1", &ns, &conf);
    let gw = r["ips"][0]["gateway"].as_str().unwrap().to_string();
    let want = [
        json!({"dst": "0.0.0.0/0", "gw": gw}),
        json!({"dst": "10.250.0.0/16", "gw": gw}),
        json!({"dst": "10.251.0.0/16", "gw": "10.237.0.9"}),
    ];
    assert_eq!(r["routes"].as_array().unwrap(), &want, "{r}");
    let routes = ns.sh("ip -4 route show").stdout;
    for line in [
        format!("default via {gw} dev eth0"),
        format!("10.250.0.0/16 via {gw} dev eth0"),
        "10.251.0.0/16 via 10.237.0.9 dev eth0".to_string(),
    ] {
        assert!(routes.contains(&line), "{line} not in {routes}");
    }
    assert_eq!(routes.matches("default").count(), 1, "{routes}");
    // The container's namespace is the runtime's, and so is its resolv.conf: netd writes
    // no /etc/netns/<sandbox> for it (the daemon's etc dir, or the plugin's state dir's).
    let etc = match mode {
        Mode::Delegating => node.host.base.join("etc"),
        Mode::Standalone => node.state_dir().join("etc"),
    };
    let written: Vec<_> = std::fs::read_dir(&etc)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(written.is_empty(), "{etc:?} has {written:?}");
    // CHECK looks at the kernel: fine as made, refused once a route is gone.
    let mut cc = conf.clone();
    cc["prevResult"] = r.clone();
    let (code, out, err) = node.exec("CHECK", "ctr-rt1", &ns.path(), "eth0", &cc);
    assert_eq!(code, 0, "CHECK: {out} {err}");
    assert!(ns.sh("ip route del 10.250.0.0/16").ok());
    let (code, out, _) = node.exec("CHECK", "ctr-rt1", &ns.path(), "eth0", &cc);
    assert_eq!(code, 1, "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap_or("")
            .contains("route to 10.250.0.0/16"),
        "{out}"
    );

    // A gateway off the subnet: refused, nothing made (no interface, no lease).
    let mut bad = conf.clone();
    bad["ipam"]["routes"] = json!([{"dst": "10.252.0.0/16", "gw": "10.99.0.1"}]);
    let ns2 = Netns::new();
    let leases = node.leases();
    let (code, out, _) = node.exec("ADD", "ctr-rt2", &ns2.path(), "eth0", &bad);
    assert_ne!(code, 0, "{out}");
    assert!(out["msg"].as_str().unwrap_or("").contains("10.99.0.1"), "{out}");
    assert!(ns2.link_gone("eth0"));
    assert_eq!(node.leases(), leases);
    node.del("ctr-rt2", &ns2.path(), &bad);
    node.del("ctr-rt1", &ns.path(), &conf);
    assert!(ns.link_gone("eth0"));
}

#[test]
fn cni_ipam_routes_delegating() {
    if no_root() {
        return;
    }
    ipam_routes(Mode::Delegating);
}

#[test]
fn cni_ipam_routes_standalone() {
    if no_root() {
        return;
    }
    ipam_routes(Mode::Standalone);
}

#[test]
fn cni_host_local_ipam_executed_delegating() {
    if no_root() || no_reference_plugin("host-local") {
        return;
    }
    host_local_executed(Mode::Delegating);
}

#[test]
fn cni_host_local_ipam_executed_standalone() {
    if no_root() || no_reference_plugin("host-local") {
        return;
    }
    host_local_executed(Mode::Standalone);
}

/// CNI 1.1: with delegated IPAM, GC and STATUS are passed on to the IPAM plugin after
/// netd's own (here a scripted IPAM plugin that logs its calls; Debian's reference
/// plugins stop at 1.0.0): its STATUS error comes back with its code, GC reaches it after
/// netd removed the attachments that are not listed.
#[test]
fn cni_delegated_ipam_gets_gc_and_status() {
    if no_root() {
        return;
    }
    let node = Node::new(Mode::Standalone);
    let bin_dir = node.host.base.join("ipam-bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let log = node.host.base.join("ipam.log");
    let fail = node.host.base.join("ipam-fail");
    let plugin = bin_dir.join("ndcni-fake-ipam");
    std::fs::write(
        &plugin,
        format!(
            r#"#!/bin/sh
echo "$CNI_COMMAND $CNI_CONTAINERID" >>{log}
case "$CNI_COMMAND" in
ADD) echo '{{"cniVersion":"1.1.0","ips":[{{"address":"10.239.0.9/24","gateway":"10.239.0.1"}}]}}' ;;
STATUS) if [ -e {fail} ]; then echo '{{"cniVersion":"1.1.0","code":51,"msg":"fake pool empty"}}'; exit 1; fi ;;
esac
"#,
            log = log.display(),
            fail = fail.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", cni_support::cni_dir().display(), bin_dir.display());
    let conf = node.conf(
        "ndcni-fake",
        "unused",
        json!({"ipam": {"type": "ndcni-fake-ipam"}}),
    );
    let run = |cmd: &str, cid: &str, netns: &str, c: &Value| {
        cni_support::exec_plugin_in_path(
            &node.host.netns(),
            &cni_support::cni_bin(),
            cmd,
            cid,
            netns,
            "eth0",
            c,
            &path,
        )
    };
    let calls = || std::fs::read_to_string(&log).unwrap_or_default();

    let ns = Netns::new();
    let (code, out, err) = run("ADD", "ctr-fake", &ns.path(), &conf);
    assert_eq!(code, 0, "ADD: {out} {err}");
    assert_eq!(out["ips"][0]["address"], "10.239.0.9/24");
    let (code, out, _) = run("STATUS", "", "", &conf);
    assert_eq!(code, 0, "STATUS: {out}");
    assert!(calls().contains("STATUS"), "{}", calls());
    std::fs::write(&fail, b"").unwrap();
    let (code, out, _) = run("STATUS", "", "", &conf);
    assert_eq!((code, out["code"].as_u64()), (1, Some(51)), "{out}");
    assert!(
        out["msg"].as_str().unwrap_or("").contains("fake pool empty"),
        "{out}"
    );

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let (code, out, err) = run("GC", "", "", &gc);
    assert_eq!(code, 0, "GC: {out} {err}");
    assert!(node.sandboxes().is_empty(), "GC left the unlisted attachment");
    assert!(ns.link_gone("eth0"));
    let log_now = calls();
    let order: Vec<&str> = log_now
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(order, ["ADD", "STATUS", "STATUS", "GC"], "{log_now}");
}

/// One netd per network namespace: netd-cni standalone with a second stateDir, or next
/// to a netd daemon, finds netd's tables named after their maker and refuses with code 7
/// before it changes anything (its reconcile would delete the first one's bridge and
/// veths and rewrite the firewall without its networks).
#[test]
fn cni_standalone_refuses_tables_of_another_netd() {
    if no_root() {
        return;
    }
    for first in [Mode::Standalone, Mode::Delegating] {
        let node = Node::new(first);
        let conf = node.conf("ndcni-own", "10.236.0.0/24", json!({}));
        let a = Netns::new();
        node.add("own-a", &a, &conf);
        let table = node.host.sh("nft list table inet netd").stdout;
        let owner = match first {
            Mode::Standalone => format!("netd-cni {}", node.state_dir().display()),
            Mode::Delegating => "netd daemon ".to_string(),
        };
        assert!(table.contains(&format!("comment \"{owner}")), "{table}");
        let before = (
            node.host.sh("nft list ruleset").stdout,
            node.host.sh("ip -br link").stdout,
        );

        // The other one: standalone on another stateDir, another network.
        let other_dir = node.host.base.join("cni-state-2");
        let mut other = node.conf("ndcni-own2", "10.237.0.0/24", json!({}));
        other.as_object_mut().unwrap().remove("socket");
        other["stateDir"] = other_dir.display().to_string().into();
        let b = Netns::new();
        let (code, out, err) = node.exec("ADD", "own-b", &b.path(), "eth0", &other);
        assert_eq!(
            (code, out["code"].as_u64()),
            (1, Some(7)),
            "{first:?}: {out} {err}"
        );
        let msg = out["msg"].as_str().unwrap_or("");
        assert!(msg.contains(&owner) && msg.contains("stateDir"), "{msg}");
        assert!(b.link_gone("eth0"));
        let after = (
            node.host.sh("nft list ruleset").stdout,
            node.host.sh("ip -br link").stdout,
        );
        assert_eq!(
            before, after,
            "{first:?}: the first netd's links and rules changed"
        );
        assert!(integration::harness::ping_from(
            std::path::Path::new(&a.path()),
            None,
            "10.236.0.1"
        ));
        // DEL of what it never added succeeds, as DEL must.
        let (code, out, err) = node.exec("DEL", "own-b", &b.path(), "eth0", &other);
        assert_eq!(code, 0, "{out} {err}");
        node.del("own-a", &a.path(), &conf);
    }
}

/// The reference's `isGateway: false` (an L2 network whose gateway is a router on the
/// bridge's LAN): the bridge holds no address; containers get their addresses, the
/// gateway in the result, the routes IPAM gives (a default route via the gateway here)
/// and no others, and reach each other over the bridge; nobody answers at the gateway
/// address. The same network with `isGateway` true is another network (code 7). DEL
/// leaves nothing.
fn no_gateway(mode: Mode) {
    let node = Node::new(mode);
    let conf = node.conf(
        "ndcni-l2",
        "unused",
        json!({"isGateway": false, "isDefaultGateway": false,
               "ipam": {"type": "netd", "subnet": "10.238.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]}}),
    );
    let (a, b) = (Netns::new(), Netns::new());
    let ra = node.add("l2-a", &a, &conf);
    let rb = node.add("l2-b", &b, &conf);
    assert_eq!(
        ra["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.238.0.1"}]),
        "{ra}"
    );
    // Without IPAM routes, no route but the subnet's, as the reference.
    let mut bare = conf.clone();
    bare["ipam"]["routes"] = json!([]);
    let d = Netns::new();
    let rd = node.add("l2-d", &d, &bare);
    assert_eq!(rd["routes"], json!([]), "{rd}");
    assert_eq!(rd["ips"][0]["gateway"], "10.238.0.1", "{rd}");
    assert_eq!(d.sh("ip route show default").stdout.trim(), "");
    assert!(integration::harness::ping_from(
        std::path::Path::new(&d.path()),
        None,
        &ip_of(&ra)
    ));
    let bridge = conf["bridge"].as_str().unwrap();
    let addrs = node.host.sh(&format!("ip -j addr show dev {bridge}")).stdout;
    let v: Value = serde_json::from_str(&addrs).expect("ip -j");
    let on_bridge: Vec<&Value> = v[0]["addr_info"].as_array().unwrap().iter().collect();
    assert!(on_bridge.is_empty(), "the bridge holds {on_bridge:?}");
    assert_eq!(ra["ips"][0]["gateway"], "10.238.0.1", "{ra}");
    assert!(a
        .sh("ip route show default")
        .stdout
        .contains("via 10.238.0.1 dev eth0"));
    let path = |n: &Netns| std::path::PathBuf::from(n.path());
    assert!(ping_each_other((&a, &ra), (&b, &rb)));
    assert!(
        !integration::harness::ping_from(&path(&a), None, "10.238.0.1"),
        "no gateway here"
    );

    let mut gw = conf.clone();
    gw["isGateway"] = json!(true);
    let c = Netns::new();
    let (code, out, _) = node.exec("ADD", "l2-c", &c.path(), "eth0", &gw);
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap_or("")
            .contains("no gateway on the bridge"),
        "{out}"
    );
    assert!(c.link_gone("eth0"));

    for (id, ns) in [("l2-a", &a), ("l2-b", &b), ("l2-d", &d)] {
        node.del(id, &ns.path(), &conf);
    }
    assert!(node.sandboxes().is_empty());
}

/// The reference's `promiscMode`: the bridge is promiscuous and its ports are not in
/// hairpin mode; with `hairpinMode` too it is code 7 (the reference's words) and nothing
/// is made; the same network without it is another network (code 7). DEL leaves nothing.
fn promiscuous(mode: Mode) {
    let node = Node::new(mode);
    let conf = node.conf("ndcni-pm", "10.241.0.0/24", json!({"promiscMode": true}));
    let bridge = conf["bridge"].as_str().unwrap().to_string();
    let (a, b) = (Netns::new(), Netns::new());
    let ra = node.add("pm-a", &a, &conf);
    let rb = node.add("pm-b", &b, &conf);
    let br = node.host.sh(&format!("ip link show dev {bridge}")).stdout;
    assert!(br.contains("PROMISC"), "{br}");
    let ports = node.host.sh(&format!("ip -d link show master {bridge}")).stdout;
    assert_eq!(ports.matches("hairpin off").count(), 2, "{ports}");
    assert!(!ports.contains("hairpin on"), "{ports}");
    assert!(ping_each_other((&a, &ra), (&b, &rb)));

    let c = Netns::new();
    let mut both = conf.clone();
    both["hairpinMode"] = json!(true);
    let (code, out, _) = node.exec("ADD", "pm-c", &c.path(), "eth0", &both);
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap_or("")
            .contains("hairpin mode and promiscuous mode"),
        "{out}"
    );
    let mut plain = conf.clone();
    plain["promiscMode"] = json!(false);
    let (code, out, _) = node.exec("ADD", "pm-c", &c.path(), "eth0", &plain);
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert!(out["msg"].as_str().unwrap_or("").contains("promiscuous"), "{out}");
    assert!(c.link_gone("eth0"));
    assert_eq!(node.sandboxes().len(), 2);

    for (id, ns) in [("pm-a", &a), ("pm-b", &b)] {
        node.del(id, &ns.path(), &conf);
    }
    assert!(node.sandboxes().is_empty());
    assert_eq!(node.settled_endpoint_links(), Vec::<String>::new());
}

#[test]
fn cni_promisc_mode_delegating() {
    if no_root() {
        return;
    }
    promiscuous(Mode::Delegating);
}

#[test]
fn cni_promisc_mode_standalone() {
    if no_root() {
        return;
    }
    promiscuous(Mode::Standalone);
}

/// `hairpinMode: false` as the reference bridge plugin: the ports out of hairpin mode
/// (netd's ports are in it without the key, so a pod reaches its own published port).
/// The same network asked for with hairpin is code 7 and changes nothing.
fn hairpin_off(mode: Mode) {
    let node = Node::new(mode);
    let conf = node.conf("ndcni-hp", "10.244.0.0/24", json!({"hairpinMode": false}));
    let bridge = conf["bridge"].as_str().unwrap().to_string();
    let (a, b) = (Netns::new(), Netns::new());
    let ra = node.add("hp-a", &a, &conf);
    let rb = node.add("hp-b", &b, &conf);
    let ports = node.host.sh(&format!("ip -d link show master {bridge}")).stdout;
    assert_eq!(ports.matches("hairpin off").count(), 2, "{ports}");
    assert!(!ports.contains("hairpin on"), "{ports}");
    let br = node.host.sh(&format!("ip link show dev {bridge}")).stdout;
    assert!(!br.contains("PROMISC"), "{br}");
    assert!(ping_each_other((&a, &ra), (&b, &rb)));

    // The same network without the key (hairpin on) is another network.
    let c = Netns::new();
    let mut on = conf.clone();
    on.as_object_mut().unwrap().remove("hairpinMode");
    let (code, out, _) = node.exec("ADD", "hp-c", &c.path(), "eth0", &on);
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert!(
        out["msg"].as_str().unwrap_or("").contains("hairpin mode off"),
        "{out}"
    );
    assert!(c.link_gone("eth0"));
    assert_eq!(node.sandboxes().len(), 2);

    // Without the key, on a network of its own: netd's default, hairpin on.
    let dflt = node.conf("ndcni-hp2", "10.246.0.0/24", json!({}));
    let bridge2 = dflt["bridge"].as_str().unwrap().to_string();
    node.add("hp-c", &c, &dflt);
    let ports = node.host.sh(&format!("ip -d link show master {bridge2}")).stdout;
    assert_eq!(ports.matches("hairpin on").count(), 1, "{ports}");

    node.del("hp-c", &c.path(), &dflt);
    for (id, ns) in [("hp-a", &a), ("hp-b", &b)] {
        node.del(id, &ns.path(), &conf);
    }
    assert!(node.sandboxes().is_empty());
    assert_eq!(node.settled_endpoint_links(), Vec::<String>::new());
}

#[test]
fn cni_hairpin_mode_false_delegating() {
    if no_root() {
        return;
    }
    hairpin_off(Mode::Delegating);
}

#[test]
fn cni_hairpin_mode_false_standalone() {
    if no_root() {
        return;
    }
    hairpin_off(Mode::Standalone);
}

/// A pod's second interface (as Multus adds one): the pod's eth0 and default route are
/// another plugin's. With `isDefaultGateway: false` netd-cni adds net1 with its address
/// and the routes IPAM gives, and leaves the default route alone, as the reference
/// bridge plugin does. netd's own IPAM without the key gives the container netd's
/// default route; with another one there, that ADD fails and leaves nothing behind.
fn second_interface(mode: Mode) {
    let node = Node::new(mode);
    let conf = node.conf(
        "ndcni-sec",
        "unused",
        json!({"isDefaultGateway": false,
               "ipam": {"type": "netd", "subnet": "10.239.0.0/24", "routes": [{"dst": "10.251.0.0/16"}]}}),
    );
    // The primary network, made by "another plugin": a veth pair inside the pod.
    let primary = |ns: &Netns| {
        let o = ns.sh(
            "ip link add eth0 type veth peer name other0 && ip link set other0 up && \
             ip addr add 192.0.2.2/24 dev eth0 && ip link set eth0 up && \
             ip route add default via 192.0.2.1 dev eth0",
        );
        assert!(o.ok(), "{}", o.stderr);
    };
    let pod = Netns::new();
    primary(&pod);
    let (code, r, err) = node.exec("ADD", "sec-a", &pod.path(), "net1", &conf);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(
        r["routes"],
        json!([{"dst": "10.251.0.0/16", "gw": "10.239.0.1"}]),
        "{r}"
    );
    assert_eq!(
        pod.sh("ip route show default").stdout.trim(),
        "default via 192.0.2.1 dev eth0"
    );
    let routes = pod.sh("ip -4 route show dev net1").stdout;
    assert!(routes.contains("10.251.0.0/16 via 10.239.0.1"), "{routes}");
    assert_eq!(pod.addrs("net1").len(), 1);
    let (code, out, err) = node.exec("CHECK", "sec-a", &pod.path(), "net1", &{
        let mut c = conf.clone();
        c["prevResult"] = r.clone();
        c
    });
    assert_eq!(code, 0, "CHECK: {out} {err}");
    // A second netd network in the same pod is a connect to its sandbox (in delegating
    // mode another request): its routes come along too.
    let conf2 = node.conf(
        "ndcni-sec2",
        "unused",
        json!({"isDefaultGateway": false,
               "ipam": {"type": "netd", "subnet": "10.240.0.0/24", "routes": [{"dst": "10.252.0.0/16"}]}}),
    );
    let (code, r2, err) = node.exec("ADD", "sec-a", &pod.path(), "net2", &conf2);
    assert_eq!(code, 0, "{r2} {err}");
    assert_eq!(
        r2["routes"],
        json!([{"dst": "10.252.0.0/16", "gw": "10.240.0.1"}]),
        "{r2}"
    );
    let routes = pod.sh("ip -4 route show dev net2").stdout;
    assert!(routes.contains("10.252.0.0/16 via 10.240.0.1"), "{routes}");
    let (code, out, err) = node.exec("DEL", "sec-a", &pod.path(), "net2", &conf2);
    assert_eq!(code, 0, "{out} {err}");

    // Without the key, netd's IPAM asks for netd's default route: the kernel refuses a
    // second one, and the failed ADD leaves nothing.
    let mut netd_rule = conf.clone();
    netd_rule.as_object_mut().unwrap().remove("isDefaultGateway");
    let other = Netns::new();
    primary(&other);
    let before = node.sandboxes().len();
    let (code, out, _) = node.exec("ADD", "sec-b", &other.path(), "net1", &netd_rule);
    assert_ne!(code, 0, "{out}");
    assert!(other.link_gone("net1"));
    assert_eq!(node.sandboxes().len(), before);

    let (code, out, err) = node.exec("DEL", "sec-a", &pod.path(), "net1", &conf);
    assert_eq!(code, 0, "{out} {err}");
    assert!(pod.link_gone("net1"));
    assert_eq!(
        pod.sh("ip route show default").stdout.trim(),
        "default via 192.0.2.1 dev eth0"
    );
    assert!(node.sandboxes().is_empty());
}

#[test]
fn cni_second_interface_keeps_the_pods_default_route_delegating() {
    if no_root() {
        return;
    }
    second_interface(Mode::Delegating);
}

#[test]
fn cni_second_interface_keeps_the_pods_default_route_standalone() {
    if no_root() {
        return;
    }
    second_interface(Mode::Standalone);
}

#[test]
fn cni_is_gateway_false_delegating() {
    if no_root() {
        return;
    }
    no_gateway(Mode::Delegating);
}

#[test]
fn cni_is_gateway_false_standalone() {
    if no_root() {
        return;
    }
    no_gateway(Mode::Standalone);
}
