//! Services on overlay networks (issue 18), on real namespaces and a real etcd: a service
//! made on one node is the cluster's. Its VIP balances over backends on every node, from
//! a client on a third node; its ingress-mode published port opens on every node and
//! reaches a backend on another node, also on a node with no backend (the routing mesh);
//! its name and `tasks.NAME` resolve on every node; removed, it goes from every node
//! (nft objects, DNS, etcd keys).

use std::collections::BTreeSet;

use integration::cluster::{eventually, has_network, Cluster};
use integration::dig::{dig, dig_missing};
use integration::harness::{respond, tcp, Host};
use integration::skip::{no_program, no_root};

fn unavailable() -> bool {
    no_root() || no_program("etcd", "etcd-server") || no_program("etcdctl", "etcd-client")
}

/// The service's VIP on `net` as this node has it, once it has made the service.
fn vip_of(h: &Host, svc: &str, net: &str) -> Option<String> {
    let o = h.netctl(&["service", "inspect", svc]);
    if !o.ok() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&o.stdout).ok()?;
    let v = if v.is_array() { v[0].clone() } else { v };
    v["vips"][net].as_str().map(str::to_string)
}

/// The names that answer `addr` over `n` connections from `netns` (None: the host's).
fn answers(netns: Option<&std::path::Path>, addr: &str, n: usize) -> BTreeSet<String> {
    (0..n).filter_map(|_| tcp(netns, addr, 2000)).collect()
}

fn svc_objects(h: &Host) -> String {
    h.sh("nft list table inet netd")
        .stdout
        .lines()
        .filter(|l| l.contains("svc/default/web"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_service_balances_over_nodes_and_publishes_on_every_node() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(3);
    let (h1, h2, h3) = (c.node(0), c.node(1), c.node(2));
    c.overlay(0, "ovs", "10.63.0.0/22");
    // Backends on h1 and h2, each answering its own name; the client on h3.
    h1.ctl(&[
        "sandbox",
        "create",
        "--network",
        "ovs",
        "--label",
        "app=web",
        "w1",
    ]);
    h2.ctl(&[
        "sandbox",
        "create",
        "--network",
        "ovs",
        "--label",
        "app=web",
        "w2",
    ]);
    h3.ctl(&["sandbox", "create", "--network", "ovs", "c3"]);
    respond(&h1.sb("w1"), "w1", &[80], &[]);
    respond(&h2.sb("w2"), "w2", &[80], &[]);
    let ips = [h1.ip("w1", "ovs"), h2.ip("w2", "ovs")];

    // Made on h2, a node with a backend; h3 has none.
    h2.ctl(&[
        "service",
        "create",
        "web",
        "--network",
        "ovs",
        "--selector",
        "app=web",
        "--port",
        "80",
        "-p",
        "8080:80",
    ]);
    let mut vips = Vec::new();
    for (i, h) in [h1, h2, h3].iter().enumerate() {
        assert!(
            eventually(5, || vip_of(h, "web", "ovs").is_some()),
            "h{}: no service web: {}",
            i + 1,
            h.log()
        );
        vips.push(vip_of(h, "web", "ovs").unwrap());
    }
    assert!(
        vips.iter().all(|v| *v == vips[0]),
        "one VIP cluster-wide: {vips:?}"
    );
    let vip = vips[0].clone();
    assert!(vip.starts_with("10.63.") && !ips.contains(&vip), "{vip} {ips:?}");

    // The VIP from a client on the third node: both backends answer.
    let c3 = h3.sb("c3");
    let want: BTreeSet<String> = ["w1".to_string(), "w2".to_string()].into();
    let mut seen = BTreeSet::new();
    let both = eventually(10, || {
        seen.extend(answers(Some(&c3), &format!("{vip}:80"), 10));
        seen == want
    });
    assert!(both, "VIP {vip} from h3 answered by {seen:?}\n{}", h3.log());
    println!("overlay services: VIP {vip} from h3 answered by {seen:?}");

    // The routing mesh: port 8080 of h3 (no backend there) reaches both backends, from
    // h3 itself and from another host on the underlay.
    let mesh = format!("{}:8080", c.nodes[2].addr);
    let mut seen = BTreeSet::new();
    assert!(
        eventually(10, || {
            seen.extend(answers(Some(&h3.netns()), &mesh, 10));
            seen == want
        }),
        "{mesh} from h3 answered by {seen:?}"
    );
    let mut seen = BTreeSet::new();
    assert!(
        eventually(10, || {
            seen.extend(answers(Some(&h1.netns()), &mesh, 10));
            seen == want
        }),
        "{mesh} from h1 answered by {seen:?}"
    );

    // Names on every node: the VIP, and tasks.web with both backends.
    if !dig_missing() {
        let (_, a) = dig(h3, "c3", "web");
        assert!(a.iter().any(|l| l.ends_with(&format!("A {vip}"))), "{a:?}");
        let tasks = || {
            let (_, a) = dig(h3, "c3", "tasks.web");
            ips.iter()
                .all(|ip| a.iter().any(|l| l.ends_with(&format!("A {ip}"))))
        };
        assert!(eventually(5, tasks), "{:?}", dig(h3, "c3", "tasks.web"));
    }
    assert!(!svc_objects(h3).is_empty());
    // The way back: what h3 DNATs to another node leaves from h3's own address there.
    let post = h3.sh("nft list chain inet netd postrouting").stdout;
    assert!(post.contains("snat ip to 10.63."), "{post}");

    // A network with a service stays, and says why.
    let o = h3.netctl(&["network", "rm", "ovs"]);
    assert!(
        !o.ok() && o.stderr.contains("has services (default/web)") && o.stderr.trim().lines().count() == 1,
        "{}",
        o.stderr
    );
    // Load-balancer addresses are not endpoints: one sandbox per node.
    let nodes: serde_json::Value = serde_json::from_str(&h1.ctl(&["node", "ls", "--json"])).unwrap();
    assert!(
        nodes.as_array().unwrap().iter().all(|n| n["endpoints"] == 1),
        "{nodes}"
    );

    // Updated on h1 (h2 made it): every node follows, in place, with the same VIP. A
    // selector nothing matches leaves the VIP without backends on h3; back to app=web,
    // both answer again.
    h1.ctl(&["service", "update", "web", "--selector", "app=none"]);
    assert!(
        eventually(10, || answers(Some(&c3), &format!("{vip}:80"), 3).is_empty()),
        "VIP {vip} still answered on h3 after the selector changed"
    );
    h1.ctl(&["service", "update", "web", "--selector", "app=web"]);
    let mut seen = BTreeSet::new();
    assert!(
        eventually(10, || {
            seen.extend(answers(Some(&c3), &format!("{vip}:80"), 10));
            seen == want
        }),
        "VIP {vip} from h3 after the update answered by {seen:?}"
    );
    for (i, h) in [h1, h2, h3].iter().enumerate() {
        assert_eq!(
            vip_of(h, "web", "ovs").as_deref(),
            Some(vip.as_str()),
            "h{}",
            i + 1
        );
    }
    assert!(h3.log().contains("cluster: service updated here"), "{}", h3.log());
    // A bad update is one line and changes nothing.
    let o = h1.netctl(&["service", "update", "web", "--port", "99999"]);
    assert!(!o.ok() && o.stderr.trim().lines().count() == 1, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&h1.ctl(&["service", "inspect", "web"])).unwrap();
    assert_eq!(v[0]["selector"]["app"], "web", "{v}");

    // Removed on h1 (not where it was made): gone from every node and from etcd.
    h1.ctl(&["service", "rm", "web"]);
    for (i, h) in [h1, h2, h3].iter().enumerate() {
        assert!(
            eventually(5, || vip_of(h, "web", "ovs").is_none()
                && svc_objects(h).is_empty()),
            "h{}: web still there: {}",
            i + 1,
            svc_objects(h)
        );
    }
    if !dig_missing() {
        let (_, a) = dig(h3, "c3", "web");
        assert!(!a.iter().any(|l| l.contains(" A ")), "{a:?}");
    }
    assert!(tcp(Some(&h1.netns()), &mesh, 1000).is_none(), "{mesh} still open");
    assert!(c.underlay.keys("/netd/v1/services/").is_empty());

    // Without services, the network goes once its sandboxes have.
    for (h, sb) in [(h1, "w1"), (h2, "w2"), (h3, "c3")] {
        h.ctl(&["sandbox", "rm", sb]);
    }
    assert!(
        eventually(5, || h2.netctl(&["network", "rm", "ovs"]).ok()),
        "{}",
        h2.netctl(&["network", "rm", "ovs"]).stderr
    );
    assert!(c.underlay.keys("/netd/v1/addrs/").is_empty());
}

#[test]
fn bad_overlay_service_input_is_one_line_and_changes_nothing() {
    if unavailable() {
        return;
    }
    let one_line = |o: &integration::harness::Out, want: &str| {
        assert!(
            !o.ok() && o.stderr.contains(want) && o.stderr.trim().lines().count() == 1,
            "want {want:?}: {}",
            o.stderr
        );
    };
    // A daemon without --cluster has no overlay network: unknown network.
    let plain = Host::new();
    let before = plain.snapshot();
    let o = plain.netctl(&["service", "create", "web", "--network", "ovx", "--port", "80"]);
    one_line(&o, "ovx");
    assert_eq!(plain.snapshot(), before);

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
    h.ctl(&["network", "create", "--subnet", "10.66.0.0/24", "local"]);
    assert!(eventually(5, || has_network(h, "ov")));
    // A sandbox on it, so the node holds the network (the engine's refusal below is
    // about an overlay network it has, not an unknown one).
    h.ctl(&["sandbox", "create", "--network", "ov", "s1"]);
    // Its record is published at the agent's next look (every 100 ms).
    assert!(eventually(5, || c.underlay.keys("/netd/v1/endpoints/ov/").len() == 1));
    let keys = c.underlay.keys("/netd/v1/");
    let base = ["service", "create", "web", "--port", "80"];
    for (extra, want) in [
        (vec!["--network", "nope"], "nope"),
        (
            vec!["--network", "ov", "--network", "local"],
            "not an overlay network",
        ),
        (vec!["--network", "ov", "--vip", "ov=10.64.0.200"], "--vip"),
        (vec!["--network", "ov", "-p", "8080:81"], "target"),
    ] {
        let mut a = base.to_vec();
        a.extend(extra);
        one_line(&h.netctl(&a), want);
    }
    // Straight to the engine's API, a service on an overlay network is refused: made on
    // one node only it would balance there only.
    let r = h.client().post(
        "/v1/services",
        &serde_json::json!({"name": "web", "networks": ["ov"], "ports": ["80"]}),
    );
    let e = r.expect_err("engine took an overlay service").to_string();
    assert!(e.contains("overlay network"), "{e}");
    assert_eq!(c.underlay.keys("/netd/v1/"), keys);
    assert!(h.ctl(&["service", "ls", "-q"]).trim().is_empty());
}

/// The owners of the addresses taken in `net`'s services block (`svc:…`, `lb:<node>`).
fn addr_owners(c: &Cluster, net: &str) -> BTreeSet<String> {
    let (ok, out) = c.underlay.etcdctl(&[
        "get",
        "--prefix",
        "--print-value-only",
        &format!("/netd/v1/addrs/{net}/"),
    ]);
    assert!(ok, "etcdctl get addrs");
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["owner"].as_str().map(str::to_string))
        .collect()
}

/// A node that dies gives back its load-balancer address: once its lease is gone the
/// others release it (only while it is still away). Back again, it takes one anew.
#[test]
fn a_dead_nodes_load_balancer_address_is_given_back() {
    if unavailable() {
        return;
    }
    let mut c = Cluster::new(2);
    c.overlay(0, "ovl", "10.64.0.0/22");
    c.node(0).ctl(&[
        "sandbox",
        "create",
        "--network",
        "ovl",
        "--label",
        "app=web",
        "w1",
    ]);
    c.node(0).ctl(&[
        "service",
        "create",
        "web",
        "--network",
        "ovl",
        "--selector",
        "app=web",
        "--port",
        "80",
    ]);
    let all: BTreeSet<String> = ["svc:default/web", "lb:h1", "lb:h2"].map(String::from).into();
    assert!(
        eventually(10, || addr_owners(&c, "ovl") == all),
        "{:?}",
        addr_owners(&c, "ovl")
    );
    c.nodes[1].host.kill9();
    let without: BTreeSet<String> = ["svc:default/web", "lb:h1"].map(String::from).into();
    assert!(
        eventually(25, || addr_owners(&c, "ovl") == without),
        "h2's address not given back: {:?}\n{}",
        addr_owners(&c, "ovl"),
        c.node(0).log()
    );
    assert!(c
        .node(0)
        .log()
        .contains("load-balancer address of a node that left given back"));
    c.nodes[1].host.restart();
    assert!(
        eventually(15, || addr_owners(&c, "ovl") == all),
        "h2 did not take an address again: {:?}",
        addr_owners(&c, "ovl")
    );
}

/// A node whose own check refuses a stored service (its host port is taken there by a
/// local service) says so once per record, and keeps trying quietly; the node that was
/// asked made it.
#[test]
fn a_node_that_refuses_a_service_says_so_once() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(2);
    let (h1, h2) = (c.node(0), c.node(1));
    c.overlay(0, "ovr", "10.65.0.0/22");
    h2.ctl(&["network", "create", "--subnet", "10.66.0.0/24", "loc"]);
    h2.ctl(&["sandbox", "create", "--network", "loc", "--label", "app=l", "l2"]);
    h2.ctl(&[
        "service",
        "create",
        "local",
        "--network",
        "loc",
        "--selector",
        "app=l",
        "--port",
        "80",
        "-p",
        "8080:80",
    ]);
    h1.ctl(&[
        "sandbox",
        "create",
        "--network",
        "ovr",
        "--label",
        "app=web",
        "w1",
    ]);
    h1.ctl(&[
        "service",
        "create",
        "web",
        "--network",
        "ovr",
        "--selector",
        "app=web",
        "--port",
        "80",
        "-p",
        "8080:80",
    ]);
    assert!(vip_of(h1, "web", "ovr").is_some());
    let said = |h: &Host| h.log().matches("cannot make service here; retrying").count();
    assert!(eventually(10, || said(h2) == 1), "{}", h2.log());
    // Passes go on (every change and tick); the refusal is not logged again.
    h1.ctl(&["sandbox", "create", "--network", "ovr", "w3"]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(said(h2), 1, "{}", h2.log());
    assert!(vip_of(h2, "web", "ovr").is_none());
    // The port freed on h2: it makes the service at a later pass.
    h2.ctl(&["service", "rm", "local"]);
    assert!(
        eventually(15, || vip_of(h2, "web", "ovr").is_some()),
        "{}",
        h2.log()
    );
}
