//! The macvlan driver on real namespaces. Topology per test: a "host" namespace running
//! the daemon, with a veth `mv<tag>` whose peer `lan0` sits in a "LAN" namespace
//! (`ndmv-<pid>-<n>`) holding the LAN router's address, `192.168.<k>.1/24`. Sandboxes on
//! a macvlan network over `mv<tag>` reach each other and the router by real packets; the
//! host itself does not reach them (a macvlan child never talks to its own parent's
//! host); restart and `kill -9` keep the data path and recreate nothing; `rm` leaves no
//! link; refused requests change nothing.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use integration::harness::{echo, nsenter, ping_from, respond, roundtrip, sh, tcp, Host};
use integration::lan::Lan;
use integration::skip::no_root;
use serde_json::Value;

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn mvnet(h: &Host, lan: &Lan, name: &str, extra: &[&str]) {
    let parent = format!("parent={}", lan.parent);
    let mut args = vec![
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        &parent,
        "--subnet",
        &lan.subnet,
        "--gateway",
        &lan.router,
    ];
    args.extend_from_slice(extra);
    args.push(name);
    h.ctl(&args);
}

/// `ip -d -j link show` inside a namespace.
fn links_in(netns: &std::path::Path) -> Value {
    let o = nsenter(netns, &["ip", "-d", "-j", "link", "show"]);
    assert!(o.ok(), "ip link: {}", o.stderr);
    serde_json::from_str(&o.stdout).expect("ip -j link")
}

fn macvlans_in(netns: &std::path::Path) -> Vec<String> {
    links_in(netns)
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["linkinfo"]["info_kind"] == "macvlan")
        .map(|l| l["ifname"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Whether `f` holds within 2 s.
fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn sandboxes_reach_each_other_and_the_lan_across_restarts_and_rm_leaves_nothing() {
    if no_root() {
        return;
    }
    let mut h = Host::new();
    let lan = Lan::new(&h.name, 71, "");
    // The host has an address on the LAN, as a real host's uplink would: the subnet is
    // routed on the host, which must not stop a macvlan network on it.
    assert!(h
        .sh(&format!("ip addr add 192.168.71.254/24 dev {}", lan.parent))
        .ok());
    mvnet(&h, &lan, "lan", &[]);
    h.ctl(&["sandbox", "create", "a", "--network", "lan"]);
    h.ctl(&["sandbox", "create", "b", "--network", "lan"]);
    let (a, b) = (h.ip("a", "lan"), h.ip("b", "lan"));

    // inspect shows driver, parent and mode.
    let j: Value = serde_json::from_str(&h.ctl(&["network", "inspect", "--json", "lan"])).expect("json");
    let n = if j.is_array() { &j[0] } else { &j };
    assert_eq!(n["driver"], "macvlan", "{j}");
    assert_eq!(n["parent"], lan.parent.as_str(), "{j}");
    assert_eq!(n["macvlan_mode"], "bridge", "{j}");

    // Kernel: eth0 in each sandbox is a macvlan child of the parent, marked as netd's;
    // the host has no bridge, no veth, no macvlan of netd's.
    let l = links_in(&h.sb("a"));
    let eth0 = l
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["ifname"] == "eth0")
        .expect("eth0");
    assert_eq!(eth0["linkinfo"]["info_kind"], "macvlan", "{eth0}");
    assert_eq!(eth0["linkinfo"]["info_data"]["mode"], "bridge", "{eth0}");
    assert_eq!(eth0["ifalias"], "netd:ep=a/lan", "{eth0}");
    assert!(macvlans_in(&h.netns()).is_empty());
    let route = h.sh_in("a", "ip route show default").stdout;
    assert!(route.contains(&format!("via {}", lan.router)), "{route}");
    h.assert_consistent();

    // Real packets: sandbox <-> sandbox, sandbox -> router, LAN -> sandbox (TCP too).
    respond(&h.sb("b"), "b", &[80], &[]);
    respond(&lan.netns(), "router", &[80], &[]);
    assert!(h.ping("a", &b));
    assert!(h.ping("a", &lan.router));
    assert!(ping_from(&lan.netns(), None, &a));
    assert_eq!(
        tcp(Some(&h.sb("a")), &format!("{b}:80"), 2000).as_deref(),
        Some("b")
    );
    assert_eq!(
        tcp(Some(&h.sb("a")), &format!("{}:80", lan.router), 2000).as_deref(),
        Some("router")
    );
    assert_eq!(
        tcp(Some(&lan.netns()), &format!("{b}:80"), 2000).as_deref(),
        Some("b")
    );
    // macvlan's known property: the parent's own host does not reach its children.
    assert!(
        !ping_from(&h.netns(), None, &a),
        "the host reached a macvlan sandbox"
    );

    // A flow opened before kill -9 keeps going; reconcile recreates and removes nothing.
    echo(&h.sb("b"), 7);
    let addr: std::net::SocketAddr = format!("{b}:7").parse().unwrap();
    let mut flow = netd::kernel::probe::in_netns(Some(&h.sb("a")), move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .expect("open flow");
    flow.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert!(roundtrip(&mut flow, "before\n"));
    let ifindex = |h: &Host| {
        links_in(&h.sb("a"))
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["ifname"] == "eth0")
            .map(|x| x["ifindex"].clone())
    };
    let idx_before = ifindex(&h);
    for _ in 0..2 {
        h.kill9();
        h.start();
        let info = h.client().get("/v1/info").expect("info");
        assert_eq!(info["reconcile"]["recreated"], serde_json::json!([]), "{info}");
        assert_eq!(info["reconcile"]["removed"], serde_json::json!([]), "{info}");
        assert!(roundtrip(&mut flow, "after\n"), "flow broke across kill -9");
        assert_eq!(ifindex(&h), idx_before, "eth0 was recreated");
        h.assert_consistent();
    }
    assert!(h.ping("b", &a));
    assert!(h.ping("a", &lan.router));

    // connect/disconnect on a sandbox of a bridge network: eth1 comes and goes.
    h.ctl(&["network", "create", "br", "--subnet", "10.71.0.0/24"]);
    h.ctl(&["sandbox", "create", "c", "--network", "br"]);
    h.ctl(&["network", "connect", "lan", "c"]);
    assert_eq!(macvlans_in(&h.sb("c")), vec!["eth1".to_string()]);
    assert!(h.ping("c", &a));
    h.assert_consistent();
    h.ctl(&["network", "disconnect", "lan", "c"]);
    // Detach returns before the kernel has deleted the child (RCU grace periods), as
    // for bridge endpoints; it is gone a moment later.
    assert!(
        wait_until(|| macvlans_in(&h.sb("c")).is_empty()),
        "eth1 still in c after disconnect"
    );
    h.assert_consistent();

    // rm and prune leave nothing: no netd link anywhere, the parent and the LAN intact.
    drop(flow);
    h.ctl(&["sandbox", "rm", "a", "b", "c"]);
    h.ctl(&["network", "prune", "-f"]);
    assert!(h.ctl(&["network", "ls", "-q"]).trim().is_empty());
    h.assert_consistent();
    let host_links = links_in(&h.netns());
    assert!(
        !host_links.to_string().contains("netd:"),
        "netd links left on the host: {host_links}"
    );
    assert!(macvlans_in(&h.netns()).is_empty());
    assert!(h.netns_files().is_empty());
    assert!(h
        .sh(&format!("ip link show {} up", lan.parent))
        .stdout
        .contains(&lan.parent));
}

#[test]
fn internal_and_modes() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let lan = Lan::new(&h.name, 72, "");
    // --internal: as Docker's macvlan, no gateway route; the LAN subnet itself is reachable.
    mvnet(&h, &lan, "inner", &["--internal", "-o", "macvlan_mode=private"]);
    h.ctl(&["sandbox", "create", "i1", "--network", "inner"]);
    h.ctl(&["sandbox", "create", "i2", "--network", "inner"]);
    let route = h.sh_in("i1", "ip route show default").stdout;
    assert!(
        route.trim().is_empty(),
        "internal network got a default route: {route}"
    );
    let l = links_in(&h.sb("i1"));
    let eth0 = l
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["ifname"] == "eth0")
        .expect("eth0");
    assert_eq!(eth0["linkinfo"]["info_data"]["mode"], "private", "{eth0}");
    assert!(h.ping("i1", &lan.router));
    // private mode: children of one parent do not reach each other.
    assert!(
        !h.ping("i1", &h.ip("i2", "inner")),
        "private mode let siblings talk"
    );
    h.ctl(&["sandbox", "rm", "i1", "i2"]);
    h.ctl(&["network", "rm", "inner"]);
    // vepa is accepted and made as such.
    mvnet(&h, &lan, "v", &["-o", "macvlan_mode=vepa"]);
    h.ctl(&["sandbox", "create", "v1", "--network", "v"]);
    let l = links_in(&h.sb("v1"));
    let eth0 = l
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["ifname"] == "eth0")
        .expect("eth0");
    assert_eq!(eth0["linkinfo"]["info_data"]["mode"], "vepa", "{eth0}");
    assert!(h.ping("v1", &lan.router));
    h.ctl(&["sandbox", "rm", "v1"]);
    h.ctl(&["network", "rm", "v"]);
    h.assert_consistent();
}

#[test]
fn bad_input_is_refused_with_one_line_and_changes_nothing() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let lan = Lan::new(&h.name, 73, "");
    // A second parent, for the overlapping-subnet case.
    let other = format!("mo{}", std::process::id() % 100_000);
    assert!(h
        .sh(&format!("ip link add {other} type veth peer name {other}p"))
        .ok());
    mvnet(&h, &lan, "lan", &[]);
    h.ctl(&["sandbox", "create", "a", "--network", "lan"]);
    let parent = format!("parent={}", lan.parent);
    let other_parent = format!("parent={other}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "network",
                "create",
                "-d",
                "macvlan",
                "--subnet",
                "10.73.0.0/24",
                "x",
            ],
            "-o parent=IFACE",
        ),
        (
            vec![
                "network",
                "create",
                "-d",
                "macvlan",
                "-o",
                "parent=nosuch0",
                "--subnet",
                "10.73.0.0/24",
                "x",
            ],
            "parent interface nosuch0 not found",
        ),
        (
            vec![
                "network",
                "create",
                "-d",
                "macvlan",
                "-o",
                &parent,
                "-o",
                "macvlan_mode=l2",
                "--subnet",
                "10.73.0.0/24",
                "x",
            ],
            "macvlan mode",
        ),
        (
            vec![
                "network",
                "create",
                "-d",
                "macvlan",
                "-o",
                &parent,
                "--subnet",
                "10.73.0.0/24",
                "x",
            ],
            "already using parent interface",
        ),
        (
            vec![
                "network",
                "create",
                "-d",
                "macvlan",
                "-o",
                &other_parent,
                "--subnet",
                "192.168.73.128/25",
                "x",
            ],
            "overlaps",
        ),
        (
            vec![
                "network",
                "create",
                "-d",
                "macvlan",
                "-o",
                "parent=lo",
                "--subnet",
                "10.73.0.0/24",
                "x",
            ],
            "loopback",
        ),
        (
            vec![
                "network",
                "create",
                "-d",
                "macvlan",
                "-o",
                &other_parent,
                "-o",
                "com.docker.network.bridge.name=b",
                "x",
            ],
            "bridge option",
        ),
        (
            vec!["network", "create", "-d", "overlay", "x"],
            "overlay networks need a cluster",
        ),
        (
            vec!["sandbox", "create", "p", "--network", "lan", "-p", "8080:80"],
            "macvlan",
        ),
        (
            vec![
                "sandbox",
                "create",
                "p",
                "--network",
                "lan",
                "-P",
                "--expose",
                "80",
            ],
            "macvlan",
        ),
    ];
    for (args, want) in cases {
        let before = h.snapshot();
        let lan_before = links_in(&lan.netns()).to_string();
        let o = h.netctl(&args);
        assert_ne!(o.code, 0, "{args:?} was accepted");
        let err = o.stderr.trim();
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(err.contains(want), "{args:?}: {err} (wanted {want})");
        assert_eq!(before, h.snapshot(), "{args:?} changed something");
        assert_eq!(lan_before, links_in(&lan.netns()).to_string());
        assert!(macvlans_in(&h.netns()).is_empty());
    }
    h.assert_consistent();
}

/// What a crash can leave: a child inside a sandbox not yet marked, under netd's
/// temporary name (killed between creation and rename), a marked child inside a sandbox
/// that no endpoint explains (killed before the store commit), and children in the
/// daemon's namespace (marked, or unmarked under the temporary name). Reconcile removes
/// them all and leaves the real endpoint alone.
#[test]
fn reconcile_removes_crash_leftovers_and_keeps_endpoints() {
    if no_root() {
        return;
    }
    let mut h = Host::new();
    let lan = Lan::new(&h.name, 74, "");
    mvnet(&h, &lan, "lan", &[]);
    h.ctl(&["sandbox", "create", "a", "--network", "lan"]);
    h.kill9();
    let sb = h.sb("a");
    let o = h.sh(&format!(
        "set -e
         ip link add ndmleft-1 link {p} type macvlan mode bridge
         ip link set ndmleft-1 alias netd:ep=gone/lan
         ip link add ndmleft-0abc link {p} type macvlan mode bridge
         ip link add ndmleft-2 link {p} type macvlan mode bridge
         ip link set ndmleft-2 alias netd:ep=a/lan
         ip link set ndmleft-2 netns {sb} name eth5
         ip link add ndmleft-0def link {p} type macvlan mode bridge
         ip link set ndmleft-0def netns {sb}",
        p = lan.parent,
        sb = sb.display()
    ));
    assert!(o.ok(), "make leftovers: {}", o.stderr);
    assert_eq!(macvlans_in(&sb).len(), 3);
    h.start();
    let info = h.client().get("/v1/info").expect("info");
    let removed = info["reconcile"]["removed"].to_string();
    assert!(
        removed.contains("ndmleft-1") && removed.contains("eth5"),
        "{info}"
    );
    assert_eq!(info["reconcile"]["recreated"], serde_json::json!([]), "{info}");
    assert!(macvlans_in(&h.netns()).is_empty());
    assert_eq!(macvlans_in(&sb), vec!["eth0".to_string()]);
    assert!(h.ping("a", &lan.router));
    h.assert_consistent();
    // And a child deleted behind netd's back is made again.
    h.kill9();
    assert!(nsenter(&sb, &["ip", "link", "del", "eth0"]).ok());
    h.start();
    let info = h.client().get("/v1/info").expect("info");
    assert!(
        info["reconcile"]["recreated"]
            .to_string()
            .contains("macvlan eth0"),
        "{info}"
    );
    assert!(h.ping("a", &lan.router));
    h.assert_consistent();
}

/// The kernel step alone (`LinuxKernel` on a bare host namespace): every failure leaves
/// no child behind, in the host or in the sandbox, and touches nothing that was there.
#[test]
fn failed_create_macvlan_leaves_nothing() {
    use netd::kernel::linux::LinuxKernel;
    use netd::kernel::Kernel;
    use netd::plan::{MacvlanSpec, SandboxSide, Step};
    if no_root() {
        return;
    }
    let h = Host::bare();
    let lan = Lan::new(&h.name, 75, "");
    let k = LinuxKernel::for_netns(h.netns()).expect("kernel");
    let sb_name = format!(
        "ndmv-{}-k{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _g = Gone(sb_name.clone());
    assert!(sh(&format!("ip netns add {sb_name}")).ok());
    let sb = PathBuf::from(format!("/run/netns/{sb_name}"));
    let spec = |netns: &std::path::Path, parent: &str, gw: &str| MacvlanSpec {
        tmp_name: "ndmktest-0001".into(),
        parent: parent.into(),
        kind: netd::plan::ChildKind::Macvlan,
        mode: "bridge".into(),
        flag: String::new(),
        alias: "netd:ep=k/lan".into(),
        mtu: 0,
        mac: [0x02, 0x42, 192, 168, 75, 2],
        sandbox: Some(SandboxSide {
            netns: netns.to_path_buf(),
            ifname: "eth0".into(),
            addrs: vec!["192.168.75.2/24".parse().unwrap()],
            gw4: Some(gw.parse().unwrap()),
            gw6: None,
            // One route on-link (no gateway), one via a neighbour.
            routes: vec![
                netd::model::Route {
                    dst: "10.77.0.0/16".parse().unwrap(),
                    gw: None,
                },
                netd::model::Route {
                    dst: "10.78.0.0/16".parse().unwrap(),
                    gw: Some("192.168.75.9".parse().unwrap()),
                },
            ],
        }),
        parent_in_sandbox: false,
    };
    let host_clean = || !k.link_exists("ndmktest-0001", None).unwrap() && macvlans_in(&h.netns()).is_empty();

    // No such namespace; no such parent.
    let missing = PathBuf::from("/run/netns/ndmv-missing-namespace");
    let e = k
        .apply(&Step::CreateMacvlan(spec(&missing, &lan.parent, "192.168.75.1")))
        .unwrap_err();
    assert!(e.to_string().contains("ndmv-missing-namespace"), "{e}");
    let e = k
        .apply(&Step::CreateMacvlan(spec(&sb, "nosuch0", "192.168.75.1")))
        .unwrap_err();
    assert!(e.to_string().contains("nosuch0 not found"), "{e}");
    assert!(host_clean());

    // The name is taken inside the sandbox: the move fails, the child is deleted, the
    // sandbox's own eth0 is left as it was.
    assert!(nsenter(
        &sb,
        &["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0"]
    )
    .ok());
    let e = k
        .apply(&Step::CreateMacvlan(spec(&sb, &lan.parent, "192.168.75.1")))
        .unwrap_err();
    assert!(e.to_string().contains("eth0"), "{e}");
    assert!(host_clean());
    assert!(macvlans_in(&sb).is_empty());
    assert!(nsenter(&sb, &["ip", "link", "del", "eth0"]).ok());

    // A failure after the move (a gateway off the subnet): deleted inside the sandbox.
    let e = k
        .apply(&Step::CreateMacvlan(spec(&sb, &lan.parent, "192.0.2.1")))
        .unwrap_err();
    assert!(e.to_string().contains("192.0.2.1"), "{e}");
    assert!(host_clean());
    assert!(macvlans_in(&sb).is_empty());

    // And then it works, with the mark, and deleting it twice is fine.
    k.apply(&Step::CreateMacvlan(spec(&sb, &lan.parent, "192.168.75.1")))
        .expect("create");
    assert_eq!(macvlans_in(&sb), vec!["eth0".to_string()]);
    let routes = nsenter(&sb, &["ip", "-4", "route", "show"]).stdout;
    assert!(routes.contains("10.77.0.0/16 dev eth0 scope link"), "{routes}");
    assert!(
        routes.contains("10.78.0.0/16 via 192.168.75.9 dev eth0"),
        "{routes}"
    );
    assert!(host_clean());
    let owned = k.owned_links_in(&sb).expect("owned");
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].alias, "netd:ep=k/lan");
    assert!(ping_from(&sb, None, &lan.router));
    for _ in 0..2 {
        k.apply(&Step::DeleteLink {
            name: "eth0".into(),
            netns: Some(sb.clone()),
        })
        .expect("delete");
    }
    assert!(macvlans_in(&sb).is_empty());
}

/// Dual stack: the IPv6 address and default route of a macvlan endpoint, by real packets
/// to a sibling and to the LAN router's IPv6 address.
#[test]
fn ipv6_on_macvlan() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let lan = Lan::new(&h.name, 76, "");
    assert!(sh(&format!("ip -n {} addr add fd76::1/64 dev lan0 nodad", lan.name)).ok());
    mvnet(
        &h,
        &lan,
        "lan6",
        &["--ipv6", "--subnet", "fd76::/64", "--gateway", "fd76::1"],
    );
    h.ctl(&["sandbox", "create", "a", "--network", "lan6"]);
    h.ctl(&["sandbox", "create", "b", "--network", "lan6"]);
    let (a6, b6) = (h.ip6("a", "lan6"), h.ip6("b", "lan6"));
    assert!(a6.starts_with("fd76::") && a6 != b6, "{a6} {b6}");
    let route = h.sh_in("a", "ip -6 route show default").stdout;
    assert!(route.contains("via fd76::1"), "{route}");
    assert!(wait_until(|| h.ping("a", &b6)), "a -> b over IPv6");
    assert!(wait_until(|| h.ping("a", "fd76::1")), "a -> LAN router over IPv6");
    assert!(h.ping("a", &h.ip("b", "lan6")));
    h.assert_consistent();
    h.ctl(&["sandbox", "rm", "a", "b"]);
    h.ctl(&["network", "rm", "lan6"]);
    h.assert_consistent();
}
