//! Overlay networks across hosts (issue 18), on real namespaces and a real etcd: hosts are
//! namespaces on an underlay bridge (`integration::cluster`), each running `netd daemon
//! --cluster`. An overlay network made on one node exists on all; sandboxes on different
//! nodes share its subnet with distinct addresses and reach each other by ping and TCP
//! through VXLAN with static FDB entries (no flood entry); the MTU is the underlay's − 50;
//! `rm` leaves no link and no etcd key; a killed node's lease expires and its entries go.

use std::collections::BTreeSet;
use std::time::Instant;

use integration::cluster::{eventually, has_network, Cluster};
use integration::dig::{dig, dig_missing};
use integration::harness::{nsenter, ping_from, respond, tcp, Host};
use integration::skip::{no_program, no_root};

fn unavailable() -> bool {
    no_root() || no_program("etcd", "etcd-server") || no_program("etcdctl", "etcd-client")
}

/// `bridge fdb show dev ndvx-NET` in the host namespace.
fn fdb(h: &Host, net: &str) -> String {
    h.sh(&format!("bridge fdb show dev ndvx-{net}")).stdout
}

fn mac(h: &Host, sandbox: &str, net: &str) -> String {
    let s = h.sandbox(sandbox);
    s["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["network"] == net))
        .and_then(|e| e["mac"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{sandbox} has no MAC on {net}: {s}"))
}

fn ping_ok(h: &Host, sandbox: &str, addr: &str) -> bool {
    ping_from(&h.sb(sandbox), None, addr)
}

#[test]
fn three_hosts_share_one_subnet_and_reach_each_other() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(3);
    let (h1, h2, h3) = (c.node(0), c.node(1), c.node(2));
    c.overlay(0, "ov", "10.61.0.0/24");
    // Hosts that have no sandbox yet still list the network with the overlay driver.
    assert!(h3
        .ctl(&["network", "ls"])
        .lines()
        .any(|l| l.starts_with("ov ") && l.contains("overlay")));
    let hosts = [h1, h2, h3];
    for (i, h) in hosts.iter().enumerate() {
        h.ctl(&["sandbox", "create", "--network", "ov", &format!("s{}", i + 1)]);
    }
    let ips: Vec<String> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| h.ip(&format!("s{}", i + 1), "ov"))
        .collect();
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 3, "{ips:?}");
    assert!(ips.iter().all(|ip| ip.starts_with("10.61.0.")), "{ips:?}");
    // Overlay links ask for ARP answers every 100 ms (driver::overlay::ARP_RETRANS_MS).
    let retrans = std::process::Command::new("nsenter")
        .arg(format!("--net={}", h1.sb("s1").display()))
        .args(["cat", "/proc/sys/net/ipv4/neigh/eth0/retrans_time_ms"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&retrans.stdout).trim(), "100");

    // Every pair, both ways, once the endpoints are published and the FDBs fed.
    let t0 = Instant::now();
    for (i, h) in hosts.iter().enumerate() {
        for (j, ip) in ips.iter().enumerate() {
            if i != j {
                let sb = format!("s{}", i + 1);
                assert!(
                    eventually(5, || ping_ok(h, &sb, ip)),
                    "s{} cannot ping s{} at {ip}",
                    i + 1,
                    j + 1
                );
            }
        }
    }
    println!(
        "overlay: all 6 pairs reachable {} ms after the last sandbox create",
        t0.elapsed().as_millis()
    );
    respond(&h2.sb("s2"), "s2", &[8080], &[]);
    assert_eq!(
        tcp(Some(&h1.sb("s1")), &format!("{}:8080", ips[1]), 2000).as_deref(),
        Some("s2")
    );
    assert_eq!(
        tcp(Some(&h3.sb("s3")), &format!("{}:8080", ips[1]), 2000).as_deref(),
        Some("s2")
    );
    // Names across hosts: each node's DNS answers the other nodes' sandboxes.
    if !dig_missing() {
        for (i, h) in hosts.iter().enumerate() {
            let sb = format!("s{}", i + 1);
            for (j, ip) in ips.iter().enumerate().filter(|(j, _)| *j != i) {
                let name = format!("s{}", j + 1);
                let resolves = || {
                    dig(h, &sb, &name)
                        .1
                        .iter()
                        .any(|a| a.ends_with(&format!("A {ip}")))
                };
                assert!(
                    eventually(5, resolves),
                    "{sb} on h{} does not resolve {name}: {:?}",
                    i + 1,
                    dig(h, &sb, &name)
                );
            }
        }
        let (_, ptr) = dig(h1, "s1", &format!("-x {}", ips[2]));
        assert!(ptr.iter().any(|a| a.contains("PTR s3")), "{ptr:?}");
    }

    // Static entries only: each remote MAC points at its node, and nothing is flooded.
    for (i, h) in hosts.iter().enumerate() {
        let f = fdb(h, "ov");
        assert!(!f.contains("00:00:00:00:00:00"), "flood entry on h{}: {f}", i + 1);
        for (j, other) in hosts.iter().enumerate().filter(|(j, _)| *j != i) {
            let m = mac(other, &format!("s{}", j + 1), "ov");
            let want = format!("{m} dst {}", c.nodes[j].addr);
            assert!(
                f.lines().any(|l| l.starts_with(&want) && l.contains("permanent")),
                "h{}: no `{want}` in {f}",
                i + 1
            );
        }
    }
    // The picture: the other two nodes are peers of `ov` (`netctl graph`).
    let d = h1.ctl(&["graph", "--format", "dot"]);
    for (j, name) in ["h2", "h3"].iter().enumerate() {
        let vtep = format!("VTEP {}:", c.nodes[j + 1].addr);
        assert!(
            d.contains(&format!("\"net:ov\" -> \"peer:{name}\"")) && d.contains(&vtep),
            "{name} not a peer in\n{d}"
        );
    }
    assert!(!d.contains("\"peer:h1\""), "{d}");
    // MTU: the underlay's 1500 − 50. 1422 bytes of ICMP payload + 28 = 1450 passes, 1423 not.
    let s1 = h1.sb("s1");
    assert!(nsenter(&s1, &["ping", "-c1", "-W1", "-M", "do", "-s", "1422", &ips[2]]).ok());
    assert!(!nsenter(&s1, &["ping", "-c1", "-W1", "-M", "do", "-s", "1423", &ips[2]]).ok());
    let link = h1.sh("ip -o link show ndvx-ov").stdout;
    assert!(link.contains(" mtu 1450 "), "{link}");

    let nodes: serde_json::Value =
        serde_json::from_str(&h2.ctl(&["node", "ls", "--json"])).expect("node ls json");
    let names: BTreeSet<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["h1", "h2", "h3"]));
    assert!(
        nodes.as_array().unwrap().iter().all(|n| n["endpoints"] == 1),
        "{nodes}"
    );

    // While endpoints exist the network stays; then it goes everywhere, links and keys.
    let busy = h3.netctl(&["network", "rm", "ov"]);
    assert!(
        !busy.ok() && busy.stderr.contains("active endpoints"),
        "{}",
        busy.stderr
    );
    for (i, h) in hosts.iter().enumerate() {
        h.ctl(&["sandbox", "rm", &format!("s{}", i + 1)]);
    }
    assert!(eventually(5, || c
        .underlay
        .keys("/netd/v1/endpoints/")
        .is_empty()));
    h3.ctl(&["network", "rm", "ov"]);
    for (i, h) in hosts.iter().enumerate() {
        assert!(eventually(5, || !has_network(h, "ov")), "ov still on h{}", i + 1);
        let links = h.sh("ip -o link show").stdout;
        assert!(
            !links.contains("ndvx-ov") && !links.contains("netd-ov"),
            "h{}: {links}",
            i + 1
        );
    }
    let left = c.underlay.keys("/netd/v1/");
    assert_eq!(
        left,
        vec!["/netd/v1/nodes/h1", "/netd/v1/nodes/h2", "/netd/v1/nodes/h3"]
    );
}

/// Two nodes, overlay network `ov` on `subnet` (made on the first, seen by the second),
/// sandbox `a` on the first node and `b` on the second.
fn two_nodes_a_and_b(subnet: &str) -> Cluster {
    let c = Cluster::new(2);
    c.node(0)
        .ctl(&["network", "create", "-d", "overlay", "--subnet", subnet, "ov"]);
    assert!(eventually(5, || has_network(c.node(1), "ov")));
    c.node(0).ctl(&["sandbox", "create", "--network", "ov", "a"]);
    c.node(1).ctl(&["sandbox", "create", "--network", "ov", "b"]);
    c
}

#[test]
fn a_killed_node_leaves_the_cluster_within_its_lease() {
    if unavailable() {
        return;
    }
    let mut c = two_nodes_a_and_b("10.63.0.0/24");
    let b_ip = c.node(1).ip("b", "ov");
    let b_mac = mac(c.node(1), "b", "ov");
    assert!(eventually(5, || ping_ok(c.node(0), "a", &b_ip)));
    assert!(fdb(c.node(0), "ov").contains(&format!("{b_mac} dst {}", c.nodes[1].addr)));

    c.nodes[1].host.kill9();
    let t0 = Instant::now();
    let gone = eventually(20, || !c.node(0).ctl(&["node", "ls"]).contains("h2 "));
    let secs = t0.elapsed().as_secs_f64();
    assert!(gone, "h2 still listed: {}", c.node(0).ctl(&["node", "ls"]));
    println!("overlay: killed node gone from node ls after {secs:.1} s (lease TTL 10 s)");
    assert!(secs <= 15.0, "took {secs} s");
    // The VXLAN device's own entry (`dst VTEP`) goes; the bridge's learned one ages out.
    let vtep_entry = |f: String| f.lines().any(|l| l.starts_with(&b_mac) && l.contains(" dst "));
    assert!(
        eventually(3, || !vtep_entry(fdb(c.node(0), "ov"))),
        "{}",
        fdb(c.node(0), "ov")
    );
    let neigh = c.node(0).sh("ip neigh show dev ndvx-ov").stdout;
    assert!(!neigh.contains(&b_ip), "{neigh}");
    assert!(c.underlay.keys("/netd/v1/endpoints/ov/h2/").is_empty());
    assert_eq!(c.underlay.keys("/netd/v1/endpoints/ov/h1/").len(), 1);
    // h1's event log: h2 joined, then left (`netctl events --filter type=node`).
    let ev = c.node(0).ctl(&[
        "events",
        "--since",
        "5m",
        "--until",
        "0s",
        "--filter",
        "type=node",
        "--json",
    ]);
    let seen: Vec<(String, String, String)> = ev
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("event JSON"))
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (
                s("action"),
                s("name"),
                e["attributes"]["addr"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let h2 = c.nodes[1].addr.to_string();
    let join = seen
        .iter()
        .position(|x| *x == ("join".into(), "h2".into(), h2.clone()));
    let leave = seen
        .iter()
        .position(|x| *x == ("leave".into(), "h2".into(), h2.clone()));
    assert!(
        matches!((join, leave), (Some(j), Some(l)) if j < l),
        "node events on h1: {ev}"
    );
    assert!(seen.iter().any(|x| x.0 == "join" && x.1 == "h1"), "{ev}");
}

#[test]
fn three_nodes_allocating_at_once_never_share_an_address() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(3);
    // All three nodes see the network at once and race for blocks.
    c.node(0).ctl(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.62.0.0/24",
        "ov",
    ]);
    let per_node = 20;
    std::thread::scope(|s| {
        for i in 0..3 {
            let c = &c;
            s.spawn(move || {
                let h = c.node(i);
                assert!(eventually(5, || has_network(h, "ov")));
                for j in 0..per_node {
                    h.ctl(&["sandbox", "create", "--network", "ov", &format!("n{i}x{j}")]);
                }
            });
        }
    });
    let mut all = Vec::new();
    for i in 0..3 {
        for j in 0..per_node {
            all.push(c.node(i).ip(&format!("n{i}x{j}"), "ov"));
        }
    }
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), 3 * per_node, "duplicate addresses: {all:?}");
    let blocks = c.underlay.keys("/netd/v1/blocks/ov/");
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    // Block IPAM: no store write per address; the endpoints are published, one key each.
    assert!(eventually(5, || c.underlay.keys("/netd/v1/endpoints/ov/").len()
        == 3 * per_node));
}

#[test]
fn bad_cluster_input_is_one_line_and_changes_nothing() {
    if unavailable() {
        return;
    }
    // A daemon without --cluster refuses overlay networks, and makes nothing.
    let plain = Host::new();
    let before = plain.snapshot();
    let o = plain.netctl(&["network", "create", "-d", "overlay", "x"]);
    assert!(
        !o.ok() && o.stderr.contains("--cluster") && o.stderr.trim().lines().count() == 1,
        "{}",
        o.stderr
    );
    assert_eq!(plain.snapshot(), before);
    let o = plain.netctl(&["node", "ls"]);
    assert!(!o.ok() && o.stderr.contains("not in a cluster"), "{}", o.stderr);

    let c = Cluster::new(1);
    let h = c.node(0);
    h.ctl(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.64.0.0/24",
        "ov",
    ]);
    let keys = c.underlay.keys("/netd/v1/");
    for (args, want) in [
        (vec!["--subnet", "10.64.0.0/25", "ov2"], "overlaps"),
        (vec!["--subnet", "10.64.0.1/24", "ov3"], "host bits"),
        (vec!["--subnet", "fd00::/64", "ov4"], "IPv4"),
        (vec!["--ipv6", "ov5"], "--ipv6"),
        (vec!["ov"], "already exists"),
        (
            vec!["--subnet", "10.65.0.0/24", "--gateway", "10.66.0.1", "ov6"],
            "gateway",
        ),
    ] {
        let mut a = vec!["network", "create", "-d", "overlay"];
        a.extend(args);
        let o = h.netctl(&a);
        assert!(
            !o.ok() && o.stderr.contains(want) && o.stderr.trim().lines().count() == 1,
            "{a:?}: {}",
            o.stderr
        );
    }
    assert_eq!(c.underlay.keys("/netd/v1/"), keys);

    // Bad --cluster flags: the daemon exits at once, one line. In a namespace of its own
    // (a second engine beside a running one would be refused for that first).
    let bare = Host::bare();
    for (args, want) in [
        (
            vec![
                "--cluster",
                "http://10.250.0.254:2379",
                "--advertise-addr",
                "10.250.0.1",
            ],
            "etcd://",
        ),
        (vec!["--cluster", "etcd://10.250.0.254:2379"], "--advertise-addr"),
        (
            vec![
                "--cluster",
                "etcd://10.250.0.254:2379",
                "--advertise-addr",
                "192.0.2.1",
            ],
            "not an address of this host",
        ),
    ] {
        let o = refused_daemon(&bare, &args);
        assert!(o.stderr.contains(want), "{args:?}: {}", o.stderr);
    }
}

/// `netd daemon --node hx ARGS` in `bare`'s namespace on dirs of its own: it must exit
/// with an error and make no socket.
fn refused_daemon(bare: &Host, args: &[&str]) -> integration::harness::Out {
    let dir = bare.base.join("bad");
    let netd = integration::harness::bin("netd").display().to_string();
    let (state, sock) = (
        dir.join("state").display().to_string(),
        dir.join("s.sock").display().to_string(),
    );
    let mut argv: Vec<&str> = vec![
        &netd,
        "daemon",
        "--state-dir",
        &state,
        "--socket",
        &sock,
        "--docker-plugin-dir",
        "none",
        "--node",
        "hx",
    ];
    argv.extend(args.iter().copied());
    let o = nsenter(&bare.netns(), &argv);
    assert!(!o.ok(), "{args:?} started: {}", o.stderr);
    assert!(!dir.join("s.sock").exists(), "{args:?}: a socket was made");
    o
}

/// Two overlay networks share the nodes but not their traffic: a sandbox reaches its own
/// network's remote peer, not the other network's (the bridges' isolation rules hold for
/// overlay bridges too, and the VNIs keep the tunnels apart).
#[test]
fn two_overlay_networks_are_isolated_across_hosts() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(2);
    let (h1, h2) = (c.node(0), c.node(1));
    c.overlay(0, "red", "10.66.0.0/24");
    c.overlay(1, "blue", "10.67.0.0/24");
    h1.ctl(&["sandbox", "create", "--network", "red", "r1"]);
    h2.ctl(&["sandbox", "create", "--network", "red", "r2"]);
    h2.ctl(&["sandbox", "create", "--network", "blue", "b2"]);
    let (r2, b2) = (h2.ip("r2", "red"), h2.ip("b2", "blue"));
    assert!(eventually(5, || ping_ok(h1, "r1", &r2)), "r1 cannot reach r2");
    assert!(!ping_ok(h1, "r1", &b2), "r1 reached blue's b2 at {b2}");
    respond(&h2.sb("b2"), "b2", &[8081], &[]);
    assert_eq!(tcp(Some(&h1.sb("r1")), &format!("{b2}:8081"), 1000), None);
    let vni = |net: &str| {
        let d = h1.sh(&format!("ip -d -o link show ndvx-{net}")).stdout;
        d.split_whitespace()
            .skip_while(|w| *w != "id")
            .nth(1)
            .map(str::to_string)
    };
    assert_ne!(vni("red"), vni("blue"));
}

/// `kill -9` and a restart of one node: its sandboxes keep their addresses and the
/// datapath (nothing is recreated), it finds its block again, and a sandbox made after
/// the restart is reachable from the other node.
#[test]
fn a_restarted_node_reconciles_from_the_store() {
    if unavailable() {
        return;
    }
    let mut c = two_nodes_a_and_b("10.68.0.0/24");
    let (a_ip, b_ip) = (c.node(0).ip("a", "ov"), c.node(1).ip("b", "ov"));
    assert!(eventually(5, || ping_ok(c.node(0), "a", &b_ip)));
    let blocks = c.underlay.keys("/netd/v1/blocks/ov/");
    // Leftovers on the kept VXLAN device (of a sandbox gone while netd was away, or by
    // hand): the restarted node's first pass removes them and keeps the live ones.
    let planted = c.node(1).sh(
        "bridge fdb add 02:00:00:00:99:99 dev ndvx-ov dst 192.0.2.99 self permanent && \
         ip neigh add 10.68.0.250 lladdr 02:00:00:00:99:99 dev ndvx-ov nud permanent",
    );
    assert!(planted.ok(), "{}", planted.stderr);
    c.nodes[1].host.restart();
    assert!(ping_ok(c.node(0), "a", &b_ip), "datapath broken by the restart");
    let neigh = || c.node(1).sh("ip neigh show dev ndvx-ov").stdout;
    assert!(
        eventually(5, || !fdb(c.node(1), "ov").contains("02:00:00:00:99:99")
            && !neigh().contains("10.68.0.250")),
        "stale entries kept: {}\n{}",
        fdb(c.node(1), "ov"),
        neigh()
    );
    assert!(neigh().contains(&a_ip), "a's entry went too: {}", neigh());
    c.node(1).ctl(&["sandbox", "create", "--network", "ov", "b2"]);
    let b2_ip = c.node(1).ip("b2", "ov");
    assert!(
        eventually(5, || ping_ok(c.node(0), "a", &b2_ip)),
        "b2 unreachable after the restart"
    );
    assert!(eventually(5, || ping_ok(c.node(1), "b2", &a_ip)));
    assert_eq!(
        c.underlay.keys("/netd/v1/blocks/ov/"),
        blocks,
        "the node claimed a new block"
    );
    assert_eq!(c.underlay.keys("/netd/v1/endpoints/ov/").len(), 3);
}

/// etcd away for longer than a lease: the datapath keeps working, local-only calls work,
/// cluster calls fail with a clear error; when etcd is back, what changed meanwhile (a
/// sandbox made during the outage) reaches the other node.
#[test]
fn etcd_away_keeps_the_datapath_and_converges_after() {
    if unavailable() {
        return;
    }
    let mut c = two_nodes_a_and_b("10.69.0.0/24");
    let b_ip = c.node(1).ip("b", "ov");
    assert!(eventually(5, || ping_ok(c.node(0), "a", &b_ip)));

    c.underlay.stop_etcd();
    std::thread::sleep(std::time::Duration::from_secs(12));
    assert!(
        ping_ok(c.node(0), "a", &b_ip),
        "datapath broken while etcd is away"
    );
    let o = c.node(0).netctl(&["network", "create", "-d", "overlay", "late"]);
    assert!(!o.ok() && o.stderr.contains("cluster store"), "{}", o.stderr);
    c.node(1).ctl(&["network", "create", "local"]);
    c.node(1).ctl(&["sandbox", "create", "--network", "ov", "b2"]);
    let b2_ip = c.node(1).ip("b2", "ov");

    c.underlay.start_etcd();
    assert!(
        eventually(15, || ping_ok(c.node(0), "a", &b2_ip)),
        "b2 never reached h1"
    );
    assert!(eventually(15, || c.node(0).ctl(&["node", "ls"]).contains("h2 ")));
    c.node(0).ctl(&["network", "create", "-d", "overlay", "late"]);
}

/// Block claims of `net` that name `node`, from their values in etcd.
fn blocks_of(c: &Cluster, net: &str, node: &str) -> usize {
    let (ok, out) = c.underlay.etcdctl(&[
        "get",
        "--prefix",
        "--print-value-only",
        &format!("/netd/v1/blocks/{net}/"),
    ]);
    assert!(ok, "etcdctl get blocks");
    out.lines()
        .filter(|l| l.contains(&format!("\"node\":\"{node}\"")))
        .count()
}

fn holds_links(h: &Host, net: &str) -> bool {
    let links = h.sh("ip -o link show").stdout;
    links.contains(&format!("netd-{net}")) || links.contains(&format!("ndvx-{net}"))
}

/// A node with no endpoint on an overlay network holds nothing for it (no bridge, no
/// VXLAN device, no block) yet lists it; its first sandbox makes it on demand and
/// reaches the others; when its last endpoint goes (sandbox rm, or network disconnect),
/// the links go and the block is released.
#[test]
fn a_node_without_endpoints_holds_nothing_until_one_attaches() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(3);
    let (h1, h2, h3) = (c.node(0), c.node(1), c.node(2));
    c.overlay(0, "ov", "10.70.0.0/24");
    h2.ctl(&["sandbox", "create", "--network", "ov", "b"]);
    h3.ctl(&["sandbox", "create", "--network", "ov", "c3"]);
    let (b_ip, c_ip) = (h2.ip("b", "ov"), h3.ip("c3", "ov"));
    assert!(eventually(5, || ping_ok(h2, "b", &c_ip)), "b cannot reach c3");
    // Listed and inspectable on h1, from the store, but nothing made there.
    assert!(has_network(h1, "ov"));
    let ls = h1.ctl(&["network", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("ov ") && l.contains("overlay") && l.contains("10.70.0.0/24")),
        "{ls}"
    );
    let ins: serde_json::Value = serde_json::from_str(&h1.ctl(&["network", "inspect", "ov"])).unwrap();
    assert_eq!(ins[0]["local"], false, "{ins}");
    assert_eq!(ins[0]["driver"], "overlay", "{ins}");
    // A pass or two after the creates: still nothing on h1.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(!holds_links(h1, "ov"), "{}", h1.sh("ip -o link show").stdout);
    assert_eq!(blocks_of(&c, "ov", "h1"), 0);
    assert_eq!(blocks_of(&c, "ov", "h2") + blocks_of(&c, "ov", "h3"), 2);

    // The first local sandbox makes it, synchronously: the create answers with an address.
    h1.ctl(&["sandbox", "create", "--network", "ov", "a"]);
    let a_ip = h1.ip("a", "ov");
    assert!(holds_links(h1, "ov"));
    assert_eq!(blocks_of(&c, "ov", "h1"), 1);
    assert!(eventually(5, || ping_ok(h1, "a", &b_ip)), "a cannot reach b");
    assert!(eventually(5, || ping_ok(h1, "a", &c_ip)), "a cannot reach c3");
    assert!(eventually(5, || ping_ok(h3, "c3", &a_ip)), "c3 cannot reach a");

    // The last endpoint goes: links and block go too, the others keep theirs.
    h1.ctl(&["sandbox", "rm", "a"]);
    assert!(
        eventually(5, || !holds_links(h1, "ov") && blocks_of(&c, "ov", "h1") == 0),
        "h1 kept ov: {} / {:?}",
        h1.sh("ip -o link show").stdout,
        c.underlay.keys("/netd/v1/blocks/ov/")
    );
    assert!(has_network(h1, "ov"), "h1 no longer lists ov");
    assert!(holds_links(h2, "ov") && holds_links(h3, "ov"));
    assert!(ping_ok(h2, "b", &c_ip), "b lost c3");

    // The same through `network connect` / `disconnect` of an existing sandbox.
    h1.ctl(&["sandbox", "create", "d"]);
    h1.ctl(&["network", "connect", "ov", "d"]);
    let d_ip = h1.ip("d", "ov");
    assert!(eventually(5, || ping_ok(h1, "d", &b_ip)), "d cannot reach b");
    assert!(eventually(5, || ping_ok(h2, "b", &d_ip)), "b cannot reach d");
    h1.ctl(&["network", "disconnect", "ov", "d"]);
    assert!(
        eventually(5, || !holds_links(h1, "ov") && blocks_of(&c, "ov", "h1") == 0),
        "h1 kept ov after disconnect"
    );
    // Nothing else went with it: the network and the other nodes' keys stay.
    assert_eq!(
        c.underlay.keys("/netd/v1/networks/"),
        vec!["/netd/v1/networks/ov"]
    );
    assert_eq!(c.underlay.keys("/netd/v1/endpoints/ov/").len(), 2);
}

/// Every block claim of `net`: (block, node).
fn claims(c: &Cluster, net: &str) -> Vec<(String, String)> {
    let (ok, out) = c.underlay.etcdctl(&[
        "get",
        "--prefix",
        "--print-value-only",
        &format!("/netd/v1/blocks/{net}/"),
    ]);
    assert!(ok, "etcdctl get blocks");
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("block JSON");
            (
                v["block"].as_str().unwrap().to_string(),
                v["node"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn in_block(ip: &str, block: &str) -> bool {
    let (net, p) = block.split_once('/').unwrap();
    let (ip, net): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (ip.parse().unwrap(), net.parse().unwrap());
    let p: u32 = p.parse().unwrap();
    (u32::from(ip) >> (32 - p)) == (u32::from(net) >> (32 - p))
}

/// Blocks of /28 in a /26 (`-o block_prefix=28`): two nodes making 20 sandboxes each at
/// once fill their first block and claim another; 40 distinct addresses, each in a block
/// its own node claimed, every block claimed once; the sandboxes in the second blocks
/// reach each other. A bad block size is one line and stores nothing.
#[test]
fn a_full_block_makes_the_node_claim_another() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(2);
    let o = c.node(0).netctl(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.71.0.0/26",
        "-o",
        "block_prefix=31",
        "ov",
    ]);
    assert!(
        !o.ok() && o.stderr.contains("block_prefix") && o.stderr.trim().lines().count() == 1,
        "{}",
        o.stderr
    );
    assert!(c.underlay.keys("/netd/v1/networks/").is_empty());
    c.node(0).ctl(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.71.0.0/26",
        "-o",
        "block_prefix=28",
        "ov",
    ]);
    let per_node = 20;
    std::thread::scope(|s| {
        for i in 0..2 {
            let c = &c;
            s.spawn(move || {
                for j in 0..per_node {
                    c.node(i)
                        .ctl(&["sandbox", "create", "--network", "ov", &format!("n{i}x{j}")]);
                }
            });
        }
    });
    let cl = claims(&c, "ov");
    assert_eq!(cl.len(), 4, "{cl:?}");
    let mut all = BTreeSet::new();
    for i in 0..2 {
        let node = format!("h{}", i + 1);
        let mine: Vec<&String> = cl.iter().filter(|(_, n)| *n == node).map(|(b, _)| b).collect();
        assert_eq!(mine.len(), 2, "{node}: {cl:?}");
        for j in 0..per_node {
            let ip = c.node(i).ip(&format!("n{i}x{j}"), "ov");
            assert!(
                mine.iter().any(|b| in_block(&ip, b)),
                "{ip} of {node} not in {mine:?}"
            );
            assert!(all.insert(ip.clone()), "{ip} twice");
        }
    }
    let last = format!("n1x{}", per_node - 1);
    let ip = c.node(1).ip(&last, "ov");
    assert!(
        eventually(5, || ping_ok(c.node(0), &format!("n0x{}", per_node - 1), &ip)),
        "last sandboxes do not reach each other"
    );
}

/// A static `--ip` on an overlay network is unique across the cluster: the node claims
/// the block that holds it; a second node asking for it gets one line naming the holder,
/// and nothing is made there (no sandbox, no link, no block); an address in a free block
/// is taken by whoever asks first, and both sandboxes reach each other.
#[test]
fn a_static_address_is_unique_across_the_cluster() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(2);
    let (h1, h2) = (c.node(0), c.node(1));
    c.overlay(0, "ov", "10.72.0.0/24");
    h1.ctl(&["sandbox", "create", "--network", "ov", "--ip", "10.72.0.200", "a"]);
    assert_eq!(h1.ip("a", "ov"), "10.72.0.200");
    assert_eq!(
        claims(&c, "ov"),
        vec![("10.72.0.192/26".to_string(), "h1".to_string())]
    );

    assert!(eventually(5, || c.underlay.keys("/netd/v1/endpoints/ov/").len() == 1));
    let keys = c.underlay.keys("/netd/v1/");
    let before = h2.snapshot();
    let o = h2.netctl(&["sandbox", "create", "--network", "ov", "--ip", "10.72.0.200", "b"]);
    assert!(
        !o.ok()
            && o.stderr.contains("10.72.0.200")
            && o.stderr.contains("h1")
            && o.stderr.trim().lines().count() == 1,
        "{}",
        o.stderr
    );
    // Another address of h1's block: refused the same way.
    let o = h2.netctl(&["sandbox", "create", "--network", "ov", "--ip", "10.72.0.201", "b"]);
    assert!(!o.ok() && o.stderr.contains("h1"), "{}", o.stderr);
    assert!(!h2.netctl(&["sandbox", "inspect", "b"]).ok(), "b was made");
    assert!(!holds_links(h2, "ov"), "{}", h2.sh("ip -o link show").stdout);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(c.underlay.keys("/netd/v1/"), keys, "the store changed");
    assert_eq!(h2.snapshot(), before, "h2 changed");

    // An address in a block nobody holds: h2 claims that block and gets it.
    h2.ctl(&["sandbox", "create", "--network", "ov", "--ip", "10.72.0.70", "b"]);
    assert_eq!(h2.ip("b", "ov"), "10.72.0.70");
    assert!(claims(&c, "ov").contains(&("10.72.0.64/26".to_string(), "h2".to_string())));
    assert!(
        eventually(5, || ping_ok(h1, "a", "10.72.0.70")),
        "a cannot reach b"
    );
    assert!(
        eventually(5, || ping_ok(h2, "b", "10.72.0.200")),
        "b cannot reach a"
    );
    // Twice on one node: the local pool refuses it, one line.
    let o = h1.netctl(&[
        "sandbox",
        "create",
        "--network",
        "ov",
        "--ip",
        "10.72.0.200",
        "a2",
    ]);
    assert!(
        !o.ok() && o.stderr.contains("in use") && o.stderr.trim().lines().count() == 1,
        "{}",
        o.stderr
    );
    // h1's dynamic addresses never come from h2's block.
    h1.ctl(&["sandbox", "create", "--network", "ov", "a3"]);
    let a3 = h1.ip("a3", "ov");
    assert!(!in_block(&a3, "10.72.0.64/26"), "{a3}");
}

/// The cluster store over TLS: etcd serves only TLS and wants client certificates
/// (`--client-cert-auth`); daemons with `--cluster-ca/--cluster-cert/--cluster-key` join,
/// share an overlay network and reach each other. Bad TLS flags stop the daemon at once
/// with one line naming the flag.
#[test]
fn the_cluster_store_over_tls_with_client_certificates() {
    if unavailable() || no_program("openssl", "openssl") {
        return;
    }
    let c = Cluster::new_tls(2);
    let (h1, h2) = (c.node(0), c.node(1));
    let nodes = h1.ctl(&["node", "ls"]);
    assert!(nodes.contains("h1 ") && nodes.contains("h2 "), "{nodes}");
    h1.ctl(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.73.0.0/24",
        "ov",
    ]);
    h1.ctl(&["sandbox", "create", "--network", "ov", "a"]);
    h2.ctl(&["sandbox", "create", "--network", "ov", "b"]);
    let b_ip = h2.ip("b", "ov");
    assert!(eventually(5, || ping_ok(h1, "a", &b_ip)), "a cannot reach b");
    assert_eq!(c.underlay.keys("/netd/v1/endpoints/ov/").len(), 2);
    // etcd really wants the client certificate: without one, etcdctl is refused.
    let plain = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", c.underlay.name))
        .args([
            "etcdctl",
            "--endpoints",
            "https://10.250.0.254:2379",
            "--dial-timeout",
            "2s",
        ])
        .arg("--cacert")
        .arg(c.underlay.tls.as_ref().unwrap().join("ca.crt"))
        .args(["get", "--prefix", "/netd/"])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "etcd answered without a client certificate"
    );

    let certs = c.underlay.tls.clone().unwrap();
    let f = |n: &str| certs.join(n).display().to_string();
    let bare = Host::bare();
    for (args, want) in [
        (
            vec!["--cluster-ca", "/nonexistent/ca.crt"],
            "--cluster-ca /nonexistent/ca.crt",
        ),
        (vec!["--cluster-ca", &f("client.key")], "not a PEM file"),
        (
            vec!["--cluster-ca", &f("ca.crt"), "--cluster-cert", &f("client.crt")],
            "go together",
        ),
        (
            vec![
                "--cluster-ca",
                &f("ca.crt"),
                "--cluster-cert",
                &f("client.key"),
                "--cluster-key",
                &f("client.key"),
            ],
            "--cluster-cert",
        ),
    ] {
        let mut argv = vec![
            "--cluster",
            "etcd://10.250.0.254:2379",
            "--advertise-addr",
            "10.250.0.1",
        ];
        argv.extend(args.iter().copied());
        let o = refused_daemon(&bare, &argv);
        let last = o.stderr.trim().lines().last().unwrap_or_default().to_string();
        assert!(last.contains(want), "{args:?}: {}", o.stderr);
    }
}
