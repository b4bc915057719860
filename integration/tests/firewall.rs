//! The firewall on a real kernel: `kernel::nft::Nft` applying `firewall::ruleset` batches
//! inside throwaway namespaces (`ndfw-<pid>-<n>`, removed on drop), checked with `nft`
//! and with traffic between namespaces. Nothing touches the namespace the tests run in.
//! Needs root (skips otherwise).

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::fwtest::{chain_text, elements, TestNs};
use integration::skip::{no_program, no_root};
use netd::firewall::batch::{self, Batch, ElementChange};
use netd::firewall::{ruleset, FwEndpoint, FwNetwork, FwPort, FwState};
use netd::kernel::nft::Nft;
use netd::kernel::{netns, nft_elements};
use netd::model::Proto;
use serde_json::Value;

fn net(name: &str, bridge: &str, s4: &str) -> FwNetwork {
    FwNetwork {
        name: name.into(),
        bridge: bridge.into(),
        subnet4: Some(s4.parse().unwrap()),
        subnet6: None,
        internal: false,
        icc: true,
        masquerade: true,
        vlan_bridge: None,
        overlay_snat: None,
    }
}

fn ep(port: &str, mac_last: u8, ip4: &str) -> FwEndpoint {
    FwEndpoint {
        port: port.into(),
        mac: [0x02, 0x42, 0x0a, 0x4d, 0x00, mac_last],
        ipv4: Some(ip4.parse().unwrap()),
        ipv6: None,
        trunk: false,
    }
}

fn tcp(host_ip: Option<&str>, host_port: u16, target: &str, target_port: u16) -> FwPort {
    FwPort {
        host_ip: host_ip.map(|s| s.parse().unwrap()),
        host_port,
        proto: Proto::Tcp,
        target: target.parse().unwrap(),
        target_port,
    }
}

/// A state with one dual-stack network, one internal one, endpoints and ports.
fn sample() -> FwState {
    let mut front = net("front", "netd-front", "10.88.0.0/24");
    front.subnet6 = Some("fd00:88::/64".parse().unwrap());
    let mut back = net("back", "netd-back", "10.88.1.0/24");
    back.internal = true;
    back.icc = false;
    let mut a = ep("vethA", 2, "10.88.0.2");
    a.ipv6 = Some("fd00:88::2".parse().unwrap());
    FwState {
        networks: vec![front, back],
        endpoints: vec![a, ep("vethB", 3, "10.88.0.3"), ep("vethC", 4, "10.88.1.2")],
        ports: vec![
            tcp(None, 8080, "10.88.0.2", 80),
            tcp(None, 8080, "fd00:88::2", 80),
            tcp(Some("127.0.0.1"), 9090, "10.88.0.3", 90),
        ],
    }
}

/// A fresh namespace, an nft context inside it, and `sample()`'s full ruleset applied.
fn with_sample() -> (TestNs, Nft, FwState) {
    let ns = TestNs::create();
    let nft = Nft::new_in(Some(&ns.path())).expect("nft context in test netns");
    let a = sample();
    nft.run(&ruleset::full(&a, "netd test").to_string())
        .expect("apply full");
    (ns, nft, a)
}

/// `nft -j list ruleset` without rule handles and with set elements sorted, so two
/// rulesets built along different paths compare equal when they hold the same things.
fn normalized(ns: &TestNs) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                for (k, x) in m.iter_mut() {
                    strip(x);
                    if k == "elem" {
                        if let Value::Array(a) = x {
                            a.sort_by_key(|e| e.to_string());
                        }
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = ns.ruleset_json();
    // The first item is nft's version banner.
    if let Some(a) = v["nftables"].as_array_mut() {
        a.retain(|i| i.get("metainfo").is_none());
    }
    strip(&mut v);
    v
}

/// Element changes of every netd set and map go to the kernel as raw nfnetlink
/// (`nft_elements::Conn`, what the daemon and netd-cni use for each attach and detach),
/// none falls back to libnftables, and the result is what libnftables makes of the same
/// state.
#[test]
fn raw_element_changes_cover_every_set_and_match_libnftables() {
    if no_root() {
        return;
    }
    let (ns, nft, a) = with_sample();
    // Every set and map changes: a new network (bridges, internal, same_bridge), a trunk
    // port on an ICC-off network with both address families, ports of all four maps,
    // and what `sample` had removed or retargeted.
    let mut b = a.clone();
    let mut db = net("db", "netd-db", "10.88.2.0/24");
    db.subnet6 = Some("fd00:89::/64".parse().unwrap());
    db.internal = true;
    db.icc = false;
    b.networks.push(db);
    b.endpoints.retain(|e| e.port != "vethB");
    let mut t = ep("vethT", 9, "10.88.2.9");
    t.ipv6 = Some("fd00:89::9".parse().unwrap());
    t.trunk = true;
    b.endpoints.push(t);
    b.ports = vec![
        tcp(None, 8080, "10.88.0.2", 81),
        tcp(None, 8081, "fd00:88::2", 80),
        tcp(Some("192.0.2.7"), 443, "10.88.2.9", 8443),
        tcp(Some("fd00:1::7"), 443, "fd00:89::9", 8443),
    ];
    let d = ruleset::diff(&a, &b);
    let (elems, rest): (Vec<_>, Vec<_>) = d
        .cmds
        .iter()
        .partition(|c| matches!(c, batch::Command::Elements(_)));
    let changes: Vec<&ElementChange> = elems
        .iter()
        .filter_map(|c| match c {
            batch::Command::Elements(e) => Some(e),
            batch::Command::Svc(_) | batch::Command::Text(_) => None,
        })
        .collect();
    let sets: std::collections::BTreeSet<&str> = changes.iter().map(|c| c.set.as_str()).collect();
    assert_eq!(sets.len(), 13, "every set and map changes: {sets:?}");
    let mut conn = netns::run_in(&ns.path(), nft_elements::Conn::open)
        .expect("enter test netns")
        .expect("nfnetlink socket");
    match conn.apply(&changes) {
        Ok(()) => {}
        Err(nft_elements::Error::Unsupported) => panic!("an element change fell back to libnftables"),
        Err(nft_elements::Error::Kernel(e)) => panic!("raw element batch: {e}"),
    }
    let rest = Batch {
        cmds: rest.into_iter().cloned().collect(),
    };
    nft.run(&rest.to_string()).expect("apply the rules of the diff");
    let via_raw = normalized(&ns);
    nft.run(&ruleset::full(&b, "netd test").to_string())
        .expect("re-apply full");
    assert_eq!(via_raw, normalized(&ns));
}

#[test]
fn full_then_diffs_add_and_remove_elements() {
    if no_root() {
        return;
    }
    let (ns, nft, a) = with_sample();
    let rs = ns.ruleset_json();
    let mut ip4 = elements(&rs, "bridge", "port_ip4");
    ip4.sort();
    assert_eq!(
        ip4,
        [
            r#"{"concat":["vethA","10.88.0.2"]}"#,
            r#"{"concat":["vethB","10.88.0.3"]}"#,
            r#"{"concat":["vethC","10.88.1.2"]}"#
        ]
    );
    assert_eq!(elements(&rs, "bridge", "no_icc"), [r#""vethC""#]);
    assert_eq!(elements(&rs, "inet", "pub4_any").len(), 1);

    // An endpoint leaves (with its port), another one arrives: elements only.
    let mut b = a.clone();
    b.endpoints.retain(|e| e.port != "vethB");
    b.ports
        .retain(|p| p.target != "10.88.0.3".parse::<IpAddr>().unwrap());
    b.endpoints.push(ep("vethD", 5, "10.88.0.4"));
    b.ports.push(tcp(Some("192.0.2.7"), 443, "10.88.0.4", 8443));
    let d = ruleset::diff(&a, &b).to_string();
    assert!(!d.contains("flush"), "{d}");
    nft.run(&d).expect("apply endpoint diff");
    let rs = ns.ruleset_json();
    let ip4 = elements(&rs, "bridge", "port_ip4");
    assert!(
        ip4.contains(&r#"{"concat":["vethD","10.88.0.4"]}"#.to_string()),
        "{ip4:?}"
    );
    assert!(!ip4.iter().any(|e| e.contains("vethB")), "{ip4:?}");
    let macs = elements(&rs, "bridge", "port_mac");
    assert!(
        macs.iter()
            .any(|e| e.contains("vethD") && e.contains("02:42:0a:4d:00:05")),
        "{macs:?}"
    );
    let by_addr = elements(&rs, "inet", "pub4_addr");
    assert_eq!(by_addr.len(), 1, "{by_addr:?}");
    assert!(
        by_addr[0].contains("192.0.2.7") && by_addr[0].contains("8443"),
        "{by_addr:?}"
    );

    // A port moves to another target: delete + add of one key, in one transaction.
    let mut c = b.clone();
    c.ports[0].target = "10.88.0.4".parse().unwrap();
    nft.run(&ruleset::diff(&b, &c).to_string())
        .expect("apply retarget diff");
    let any = elements(&ns.ruleset_json(), "inet", "pub4_any");
    assert!(any.len() == 1 && any[0].contains("10.88.0.4"), "{any:?}");

    // A network arrives: the per-network chain is regenerated.
    let mut d = c.clone();
    d.networks.push(net("db", "netd-db", "10.88.2.0/24"));
    nft.run(&ruleset::diff(&c, &d).to_string())
        .expect("apply network diff");
    let post = chain_text(&ns, "inet", "postrouting");
    assert!(
        post.contains("oifname != \"netd-db\" masquerade comment \"net db\""),
        "{post}"
    );
    assert!(post.contains("comment \"net front\""), "{post}");

    // The diffs led where a full() of the last state leads.
    let via_diffs = normalized(&ns);
    nft.run(&ruleset::full(&d, "netd test").to_string())
        .expect("re-apply full");
    assert_eq!(via_diffs, normalized(&ns));

    // And back to the start the same way.
    nft.run(&ruleset::diff(&d, &a).to_string())
        .expect("apply diff back");
    let back = normalized(&ns);
    nft.run(&ruleset::full(&a, "netd test").to_string())
        .expect("re-apply full of a");
    assert_eq!(back, normalized(&ns));
    assert_eq!(ruleset::diff(&a, &a).to_string(), "");
}

#[test]
fn user_chain_survives_full_and_diffs() {
    if no_root() {
        return;
    }
    let (ns, nft, a) = with_sample();
    ns.nft(&[
        "add",
        "rule",
        "inet",
        "netd",
        "user",
        "ip",
        "saddr",
        "192.0.2.66",
        "drop",
        "comment",
        "\"operator rule\"",
    ]);
    let mut b = a.clone();
    b.networks.push(net("db", "netd-db", "10.88.2.0/24"));
    b.endpoints.clear();
    for batch in [
        ruleset::full(&a, "netd test").to_string(),
        ruleset::diff(&a, &b).to_string(),
        ruleset::full(&b, "netd test").to_string(),
    ] {
        nft.run(&batch).expect("apply");
        let user = chain_text(&ns, "inet", "user");
        assert!(
            user.contains("ip saddr 192.0.2.66 drop comment \"operator rule\""),
            "user chain lost its rule after:\n{batch}\n{user}"
        );
    }
    let fwd = chain_text(&ns, "inet", "forward");
    // The first rule, right after the hook line.
    let first = fwd.lines().skip_while(|l| !l.contains("hook forward")).nth(1);
    assert_eq!(first.map(str::trim), Some("jump user"), "{fwd}");
}

#[test]
fn flushed_ruleset_is_restored_by_full() {
    if no_root() {
        return;
    }
    let ns = TestNs::create();
    let nft = Nft::new_in(Some(&ns.path())).expect("nft context");
    assert!(!nft.table_exists("inet", "netd").expect("table_exists"));
    let a = sample();
    nft.run(&ruleset::full(&a, "netd test").to_string())
        .expect("apply full");
    let before = normalized(&ns);
    assert!(nft.table_exists("inet", "netd").expect("table_exists"));
    assert!(nft.table_exists("bridge", "netd").expect("table_exists"));
    assert!(!nft.table_exists("ip", "netd").expect("table_exists"));

    ns.nft(&["flush", "ruleset"]);
    assert!(!nft.table_exists("inet", "netd").expect("table_exists"));
    assert!(!nft.table_exists("bridge", "netd").expect("table_exists"));

    nft.run(&ruleset::full(&a, "netd test").to_string())
        .expect("restore");
    assert!(nft.table_exists("inet", "netd").expect("table_exists"));
    assert!(nft.table_exists("bridge", "netd").expect("table_exists"));
    assert_eq!(before, normalized(&ns));
}

/// The one-request nfnetlink probe (`kernel::nft_table`, what a standalone CNI exec uses)
/// agrees with libnftables' `list tables`, before and after a flush.
#[test]
fn nfnetlink_table_probe_agrees_with_libnftables() {
    if no_root() {
        return;
    }
    let ns = TestNs::create();
    let path = ns.path();
    let table = |family: &'static str| {
        netd::kernel::netns::run_in(&path, move || netd::kernel::nft_table::table(family, "netd"))
            .expect("enter namespace")
            .expect("probe")
    };
    let probe = |family: &'static str| table(family).is_some();
    let nft = Nft::new_in(Some(&path)).expect("nft context");
    assert!(!probe("inet") && !probe("bridge"));
    nft.run(&ruleset::full(&sample(), "netd test \"owner\"").to_string())
        .expect("apply full");
    // The comment as nft wrote it into the table's user data, read back by the probe.
    for family in ["inet", "bridge"] {
        let t = table(family).expect("table");
        assert_eq!(t.comment.as_deref(), Some("netd test _owner_"), "{family}");
    }
    assert!(ns
        .nft(&["list", "table", "inet", "netd"])
        .contains("comment \"netd test _owner_\""));
    for family in ["inet", "bridge", "ip"] {
        assert_eq!(
            probe(family),
            nft.table_exists(family, "netd").unwrap(),
            "{family}"
        );
    }
    assert!(probe("inet") && probe("bridge") && !probe("ip"));
    ns.nft(&["flush", "ruleset"]);
    assert!(!probe("inet") && !probe("bridge"));
}

#[test]
fn failed_batch_changes_nothing_and_says_why() {
    if no_root() {
        return;
    }
    let ns = TestNs::create();
    let nft = Nft::new_in(Some(&ns.path())).expect("nft context");
    let err = nft
        .run("add table inet atomic\nadd chain inet atomic c\nadd element inet nosuch s { 1.2.3.4 }\n")
        .expect_err("batch with a missing table must fail");
    let msg = err.to_string();
    // nft's own words, pointing at the right line of the batch.
    assert!(msg.contains("line 3:") && msg.contains("Error:"), "{msg}");
    assert!(msg.contains("add element inet nosuch s"), "{msg}");
    assert!(!msg.contains('^'), "{msg}");
    assert!(
        !nft.table_exists("inet", "atomic").expect("table_exists"),
        "half a batch was applied"
    );
    assert!(
        nft.run("add table inet ok").is_ok(),
        "context unusable after an error"
    );
    assert!(nft.run("list tables").expect("list").contains("table inet ok"));
    assert!(nft.run("bad\0batch").is_err());
}

#[test]
fn nft_none_acts_on_the_creating_threads_namespace() {
    if no_root() {
        return;
    }
    let ns = TestNs::create();
    // Made on a thread inside the test namespace, then used from this thread (which is
    // elsewhere): batches still land in the test namespace.
    let nft = netns::run_in(&ns.path(), || Nft::new_in(None))
        .expect("enter test netns")
        .expect("nft context");
    nft.run("add table inet probe").expect("add table");
    assert!(ns.nft(&["list", "tables"]).contains("table inet probe"));
    // Shared by reference across threads.
    std::thread::scope(|s| {
        for i in 0..4 {
            let nft = &nft;
            s.spawn(move || nft.run(&format!("add chain inet probe c{i}")).expect("add chain"));
        }
    });
    assert_eq!(
        ns.nft(&["list", "table", "inet", "probe"])
            .matches("chain c")
            .count(),
        4
    );
}

/// A host namespace with bridge `netd-t` (10.77.0.1/24) and two sandbox namespaces
/// plugged into it (eth0 10.77.0.2 and .3 behind host ports `vp1`, `vp2`), plus the
/// matching firewall state. Field order is drop order: sandboxes before the host.
struct Lab {
    sb: [TestNs; 2],
    host: TestNs,
    state: FwState,
}

impl Lab {
    fn new() -> Lab {
        let host = TestNs::create();
        let sb = [TestNs::create(), TestNs::create()];
        host.ip(&["link", "add", "netd-t", "type", "bridge"]);
        host.ip(&["addr", "add", "10.77.0.1/24", "dev", "netd-t"]);
        host.ip(&["link", "set", "netd-t", "up"]);
        let mut endpoints = Vec::new();
        for (i, s) in sb.iter().enumerate() {
            let port = format!("vp{}", i + 1);
            let e = ep(&port, 2 + i as u8, &format!("10.77.0.{}", 2 + i));
            let mac = e.mac.map(|b| format!("{b:02x}")).join(":");
            host.ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &s.name,
            ]);
            host.ip(&["link", "set", &port, "master", "netd-t", "up"]);
            s.ip(&["link", "set", "eth0", "address", &mac, "up"]);
            s.ip(&["addr", "add", &format!("10.77.0.{}/24", 2 + i), "dev", "eth0"]);
            s.ip(&["route", "add", "default", "via", "10.77.0.1"]);
            endpoints.push(e);
        }
        let state = FwState {
            networks: vec![net("t", "netd-t", "10.77.0.0/24")],
            endpoints,
            ports: Vec::new(),
        };
        Lab { sb, host, state }
    }
}

#[test]
fn spoofed_sources_are_dropped_and_icc_off_isolates() {
    if no_root() {
        return;
    }
    let lab = Lab::new();
    let [s1, s2] = &lab.sb;
    let nft = Nft::new_in(Some(&lab.host.path())).expect("nft context in host netns");
    nft.run(&ruleset::full(&lab.state, "netd test").to_string())
        .expect("apply full");

    assert!(s1.ping(None, "10.77.0.1"), "sandbox cannot reach its gateway");
    assert!(s1.ping(None, "10.77.0.3"), "icc on, yet sandboxes cannot talk");

    // A second address on eth0 that netd never gave out: its packets die on the bridge.
    s1.ip(&["addr", "add", "10.77.0.99/24", "dev", "eth0"]);
    assert!(
        !s1.ping(Some("10.77.0.99"), "10.77.0.1"),
        "spoofed IPv4 source got through"
    );
    assert!(
        s1.ping(Some("10.77.0.2"), "10.77.0.1"),
        "real source stopped working"
    );

    // A MAC that is not the endpoint's.
    s2.ip(&["link", "set", "eth0", "address", "02:00:00:00:00:99"]);
    s2.ip(&["neigh", "flush", "dev", "eth0"]);
    assert!(!s2.ping(None, "10.77.0.1"), "spoofed MAC got through");
    let mac = lab.state.endpoints[1].mac.map(|b| format!("{b:02x}")).join(":");
    s2.ip(&["link", "set", "eth0", "address", &mac]);
    assert!(s2.ping(None, "10.77.0.1"), "real MAC stopped working");

    // ICC off: an element-only change; sandboxes still reach the host, not each other.
    let mut off = lab.state.clone();
    off.networks[0].icc = false;
    let d = ruleset::diff(&lab.state, &off).to_string();
    nft.run(&d).expect("apply icc diff");
    assert!(!s1.ping(None, "10.77.0.3"), "icc off, yet sandboxes talk:\n{d}");
    assert!(s1.ping(None, "10.77.0.1"), "icc off cut the gateway too");
    nft.run(&ruleset::diff(&off, &lab.state).to_string())
        .expect("icc back on");
    assert!(
        s1.ping(None, "10.77.0.3"),
        "icc back on, yet sandboxes cannot talk"
    );
}

/// A process started for a test, killed (by its own pid) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `socat` from inside `ns` to `addr:port`; what the server said, if anything.
fn fetch(ns: &TestNs, addr: &str, port: u16) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "socat", "-T2", "-u"])
        .arg(format!("TCP:{addr}:{port},connect-timeout=2"))
        .arg("STDOUT")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn published_port_reached_from_host_localhost_and_hairpin() {
    if no_root() {
        return;
    }
    if no_program("socat", "socat") {
        return;
    }
    let lab = Lab::new();
    let [s1, s2] = &lab.sb;
    // What the kernel layer does for netd bridges and hosts; per namespace, so only the
    // test's host namespace changes.
    lab.host.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    lab.host
        .exec(&["sysctl", "-qw", "net.ipv4.conf.netd-t.route_localnet=1"]);
    // s2 answers on port 80 with the address the connection came from.
    let _server = Proc(
        Command::new("ip")
            .args(["netns", "exec", &s2.name, "socat"])
            .args(["TCP-LISTEN:80,reuseaddr,fork", "SYSTEM:echo from $SOCAT_PEERADDR"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat server"),
    );
    let mut st = lab.state.clone();
    st.ports.push(tcp(None, 8080, "10.77.0.3", 80));
    st.ports.push(tcp(Some("127.0.0.1"), 8081, "10.77.0.3", 80));
    let nft = Nft::new_in(Some(&lab.host.path())).expect("nft context");
    nft.run(&ruleset::full(&st, "netd test").to_string())
        .expect("apply full");

    // The server may need a moment to listen.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fetch(s2, "127.0.0.1", 80).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // From the host to its own address (output chain DNAT).
    assert_eq!(
        fetch(&lab.host, "10.77.0.1", 8080).as_deref(),
        Some("from 10.77.0.1")
    );
    // From the host via localhost: masqueraded to the bridge address on the way out.
    assert_eq!(
        fetch(&lab.host, "127.0.0.1", 8081).as_deref(),
        Some("from 10.77.0.1")
    );
    // Port 8081 is bound to 127.0.0.1 only.
    assert_eq!(fetch(&lab.host, "10.77.0.1", 8081), None);
    // From a container on the same network via the host address: hairpin, masqueraded
    // so the reply comes back through the host.
    assert_eq!(fetch(s1, "10.77.0.1", 8080).as_deref(), Some("from 10.77.0.1"));
    // Unpublished: gone after a diff.
    let mut gone = st.clone();
    gone.ports.retain(|p| p.host_port != 8080);
    nft.run(&ruleset::diff(&st, &gone).to_string())
        .expect("unpublish");
    assert_eq!(fetch(&lab.host, "10.77.0.1", 8080), None);
}
