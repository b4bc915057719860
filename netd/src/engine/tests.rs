//! Engine tests on the fake kernel and the in-memory store: operations, and above all
//! that bad input and kernel failures change nothing.

use std::sync::Arc;

use super::*;
use crate::kernel::fake::FakeKernel;
use crate::model::{EndpointRequest, NetworkRequest, SandboxRequest, SubnetRequest};
use crate::store::MemStore;

/// An engine on a fake kernel and an in-memory store; its /etc directory goes on drop.
/// Shared with the engine's submodule tests (macvlan).
pub(super) struct T {
    pub(super) k: Arc<FakeKernel>,
    pub(super) s: Arc<MemStore>,
    pub(super) e: Engine,
}

impl Drop for T {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.e.cfg.etc_netns_dir);
    }
}

fn setup() -> T {
    open_with(
        Arc::new(FakeKernel::default()),
        std::env::temp_dir().join(format!("netd-engine-test-{}", std::process::id())),
        std::env::temp_dir().join(format!(
            "netd-engine-test-etc-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        )),
    )
}

/// An engine on `k` and a fresh in-memory store, with these namespace directories.
pub(super) fn open_with(
    k: Arc<FakeKernel>,
    netns_dir: std::path::PathBuf,
    etc_netns_dir: std::path::PathBuf,
) -> T {
    let s = Arc::new(MemStore::default());
    let cfg = EngineConfig {
        netns_dir,
        etc_netns_dir,
        ..Default::default()
    };
    let (e, _) = Engine::open(k.clone(), s.clone(), cfg).unwrap();
    T { k, s, e }
}

fn net(name: &str, subnet: Option<&str>) -> NetworkRequest {
    NetworkRequest {
        name: name.into(),
        subnets: subnet
            .map(|s| {
                vec![SubnetRequest {
                    subnet: Some(s.into()),
                    ..Default::default()
                }]
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

type Links = std::collections::BTreeSet<String>;
type Snapshot = (Vec<Vec<(String, Vec<u8>)>>, Links, Links, FwState);

/// Everything observable: store contents, kernel links/netns, firewall state.
fn snapshot(t: &T) -> Snapshot {
    let store = Bucket::ALL.iter().map(|b| t.s.list(*b).unwrap()).collect();
    (store, t.k.links(), t.k.netns(), t.e.fw.clone())
}

#[test]
fn create_connect_remove_roundtrip() {
    let mut t = setup();
    let n = t.e.create_network(&net("front", None)).unwrap();
    assert_eq!(n.bridge, "netd-front");
    assert_eq!(n.subnets[0].subnet.to_string(), "172.17.0.0/16");
    let s =
        t.e.create_sandbox(&SandboxRequest::on("web", &["front"]))
            .unwrap();
    assert_eq!(s.endpoints[0].ipv4.unwrap().to_string(), "172.17.0.2/16");
    assert_eq!(s.endpoints[0].mac, "02:42:ac:11:00:02");
    assert!(t.k.links().contains(&s.endpoints[0].host_ifname));
    assert!(t
        .e
        .fw
        .endpoints
        .iter()
        .any(|e| e.port == s.endpoints[0].host_ifname));
    t.e.remove_sandbox("web").unwrap();
    t.e.remove_network("front").unwrap();
    t.e.settle();
    assert!(t.k.links().is_empty(), "{:?}", t.k.links());
    assert!(t.k.netns().is_empty());
    for b in Bucket::ALL {
        assert!(t.s.list(b).unwrap().is_empty(), "{b:?} not empty");
    }
}

#[test]
fn bad_input_changes_nothing() {
    let mut t = setup();
    t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    t.e.create_sandbox(&SandboxRequest::on("s1", &["a"])).unwrap();
    let before = snapshot(&t);
    let bad_nets = [
        net("a", None),                  // duplicate name
        net("b", Some("10.1.0.0/16")),   // overlaps a
        net("c", Some("10.300.0.0/16")), // invalid CIDR
        net("bad name", None),           // invalid name
    ];
    for r in &bad_nets {
        assert!(t.e.create_network(r).is_err(), "{r:?}");
        assert_eq!(snapshot(&t), before, "after {r:?}");
    }
    let mut with_port = SandboxRequest::on("s2", &["a"]);
    with_port.ports = vec!["8080:80".into(), "8080:81".into()];
    let bad_sbs = [
        SandboxRequest::on("s1", &["a"]),      // duplicate
        SandboxRequest::on("s2", &["nope"]),   // unknown network
        SandboxRequest::on("s2", &["a", "a"]), // listed twice
        with_port,                             // port clash within the request
        SandboxRequest {
            ports: vec!["99999:80".into()],
            ..SandboxRequest::on("s3", &["a"])
        },
    ];
    for r in &bad_sbs {
        assert!(t.e.create_sandbox(r).is_err(), "{r:?}");
        assert_eq!(snapshot(&t), before, "after {r:?}");
    }
    let mut static_ip = SandboxRequest::on("s4", &["a"]);
    static_ip.networks[0].ip = Some("10.1.0.2".into()); // s1 has it
    let e = t.e.create_sandbox(&static_ip).unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    assert!(matches!(t.e.remove_network("a"), Err(EngineError::Conflict(_))));
    assert!(matches!(
        t.e.remove_sandbox("zz"),
        Err(EngineError::NoSuchSandbox(_))
    ));
    assert!(matches!(
        t.e.disconnect("a", "zz"),
        Err(EngineError::NoSuchSandbox(_))
    ));
    assert_eq!(snapshot(&t), before);
}

#[test]
fn kernel_failure_rolls_back_everything() {
    let mut t = setup();
    t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    let before = snapshot(&t);
    let veth = crate::model::host_veth_name("s1", "a");
    t.k.fail_on(&format!(
        "create veth {veth} (master netd-a) <-> {}:eth0",
        t.e.cfg.netns_dir.join("s1").display()
    ));
    let e = t.e.create_sandbox(&SandboxRequest::on("s1", &["a"])).unwrap_err();
    assert!(matches!(e, EngineError::Plan(_)) && e.is_kernel_failure(), "{e}");
    assert_eq!(snapshot(&t), before);
    t.k.clear_failure();
    let s = t.e.create_sandbox(&SandboxRequest::on("s1", &["a"])).unwrap();
    assert_eq!(
        s.endpoints[0].ipv4.unwrap().ip().to_string(),
        "10.1.0.2",
        "the failed attempt leaked no lease"
    );
}

#[test]
fn ports_conflict_and_ephemeral() {
    let mut t = setup();
    t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    let mut r = SandboxRequest::on("s1", &["a"]);
    r.ports = vec!["8080:80".into(), "53:53/udp".into()];
    t.e.create_sandbox(&r).unwrap();
    let mut r2 = SandboxRequest::on("s2", &["a"]);
    r2.ports = vec!["127.0.0.1:8080:80".into()];
    let e = t.e.create_sandbox(&r2).unwrap_err();
    assert!(e.to_string().contains("already published by sandbox s1"), "{e}");
    r2.ports = vec!["8080:80/udp".into(), "80".into()];
    r2.expose = vec!["443".into()];
    r2.publish_all = true;
    let s2 = t.e.create_sandbox(&r2).unwrap();
    assert_eq!(s2.ports.len(), 3);
    assert!(s2.ports[1].host_port >= 49153);
    assert!(s2.ports[2].host_port >= 49153 && s2.ports[2].host_port != s2.ports[1].host_port);
    assert_eq!(t.e.fw.ports.len(), 5);
    let mut r3 = SandboxRequest::on("s3", &["a"]);
    r3.ports = vec!["10.9.9.9:81:80".into()];
    assert!(t
        .e
        .create_sandbox(&r3)
        .unwrap_err()
        .to_string()
        .contains("not an address of this host"));
}

#[test]
fn connect_disconnect_and_default_route() {
    let mut t = setup();
    t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    t.e.create_network(&net("b", Some("10.2.0.0/24"))).unwrap();
    t.e.create_sandbox(&SandboxRequest::on("s", &["a"])).unwrap();
    let ep =
        t.e.connect(
            "b",
            &EndpointRequest {
                ip: Some("10.2.0.9".into()),
                ..Default::default()
            },
            "s",
        )
        .unwrap();
    assert_eq!(ep.ifname, "eth1");
    assert_eq!(ep.ipv4.unwrap().ip().to_string(), "10.2.0.9");
    assert!(matches!(
        t.e.connect("b", &EndpointRequest::default(), "s"),
        Err(EngineError::Conflict(_))
    ));
    t.e.disconnect("b", "s").unwrap();
    t.e.settle();
    assert!(!t.k.links().contains(&ep.host_ifname));
    let ep2 = t.e.connect("b", &EndpointRequest::default(), "s").unwrap();
    assert_eq!(ep2.ifname, "eth1");
}

/// A veth on network "a"'s bridge with no address: what an operation cut short leaves.
fn bare_veth(host_name: &str, alias: &str, netns: &str, ifname: &str) -> crate::plan::Step {
    crate::plan::Step::CreateVeth(crate::plan::VethSpec {
        host_name: host_name.into(),
        bridge: "netd-a".into(),
        alias: alias.into(),
        mtu: 0,
        netns: netns.into(),
        ifname: ifname.into(),
        mac: [2, 0, 0, 0, 0, 1],
        addrs: vec![],
        gw4: None,
        gw6: None,
        routes: vec![],
        vlan: None,
        hairpin: true,
        trunk: Vec::new(),
        arp_retrans_ms: None,
    })
}

#[test]
fn reconcile_repairs_both_ways() {
    let mut t = setup();
    t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    let s = t.e.create_sandbox(&SandboxRequest::on("s", &["a"])).unwrap();
    // A leftover veth of an operation that never committed, and a missing endpoint veth.
    t.k.apply(&bare_veth("ndghost-0000", "netd:ep=ghost/a", "/x", "eth0"))
        .unwrap();
    t.k.apply(&crate::plan::Step::DeleteLink {
        name: s.endpoints[0].host_ifname.clone(),
        netns: None,
    })
    .unwrap();
    let r = t.e.reconcile().unwrap();
    assert!(r.removed.iter().any(|x| x.contains("ndghost-0000")), "{r:?}");
    assert!(
        r.recreated
            .iter()
            .any(|x| x.contains(&s.endpoints[0].host_ifname)),
        "{r:?}"
    );
    assert!(t.k.links().contains(&s.endpoints[0].host_ifname));
    assert!(!t.k.links().contains("ndghost-0000"));
    // Re-open from the same store: same model, nothing to repair.
    let (e2, r2) = Engine::open(t.k.clone(), t.s.clone(), t.e.cfg.clone()).unwrap();
    assert!(r2.removed.is_empty() && r2.recreated.is_empty(), "{r2:?}");
    assert_eq!(e2.sandbox("s").unwrap(), &s);
}

/// The store commit runs while the kernel work does: a crash may leave a record whose
/// link was cut short, still under its "being made" alias. Reconcile makes it anew.
#[test]
fn an_endpoint_cut_short_after_its_record_is_made_anew_by_reconcile() {
    let mut t = setup();
    t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    let s = t.e.create_sandbox(&SandboxRequest::on("s", &["a"])).unwrap();
    let ep = &s.endpoints[0];
    let alias = crate::driver::endpoint_alias("s", "a");
    t.k.apply(&crate::plan::Step::DeleteLink {
        name: ep.host_ifname.clone(),
        netns: None,
    })
    .unwrap();
    let half = bare_veth(
        &ep.host_ifname,
        &crate::driver::creating_alias(&alias),
        &s.netns,
        &ep.ifname,
    );
    t.k.apply(&half).unwrap();
    let r = t.e.reconcile().unwrap();
    assert!(r.removed.iter().any(|x| x.contains(&ep.host_ifname)), "{r:?}");
    assert!(r.recreated.iter().any(|x| x.contains(&ep.host_ifname)), "{r:?}");
    let owned = t.k.owned_links().unwrap();
    let l = owned
        .iter()
        .find(|l| l.name == ep.host_ifname)
        .expect("the endpoint's veth");
    assert_eq!(l.alias, alias);
    // Made whole: a second pass finds nothing to do.
    let r2 = t.e.reconcile().unwrap();
    assert!(r2.removed.is_empty() && r2.recreated.is_empty(), "{r2:?}");
}

#[test]
fn namespace_left_by_an_interrupted_rm_is_removed_by_reconcile() {
    let mut t = setup();
    t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    let s = t.e.create_sandbox(&SandboxRequest::on("s", &["a"])).unwrap();
    // The record is gone but the namespace stays: what a crash right after the store
    // commit of `rm` leaves behind.
    t.k.fail_on(&format!("delete netns {}", s.netns));
    t.e.remove_sandbox("s").unwrap();
    assert!(t.k.netns().contains(&s.netns));
    t.k.clear_failure();
    let (_e2, r) = Engine::open(t.k.clone(), t.s.clone(), t.e.cfg.clone()).unwrap();
    assert!(r.removed.iter().any(|x| x.contains(&s.netns)), "{r:?}");
    assert!(!t.k.netns().contains(&s.netns));
    assert!(t.s.list(Bucket::Pending).unwrap().is_empty());
}

#[test]
fn external_namespace_is_attached_never_created_or_deleted() {
    let mut t = setup();
    t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    let ns = std::path::PathBuf::from("/var/run/netns/runtime-owned");
    let mut r = SandboxRequest::on("c1", &["a"]);
    r.netns = Some(ns.display().to_string());
    r.networks[0].ifname = Some("net1".into());
    assert!(
        matches!(t.e.create_sandbox(&r), Err(EngineError::Invalid(_))),
        "a missing namespace is refused"
    );
    t.k.apply(&crate::plan::Step::CreateNetns { path: ns.clone() })
        .unwrap();
    let log_before = t.k.log().len();
    let s = t.e.create_sandbox(&r).unwrap();
    assert!(s.external);
    assert_eq!(s.endpoints[0].ifname, "net1");
    assert!(
        !t.k.log()[log_before..].iter().any(|l| l.contains("create netns")),
        "{:?}",
        t.k.log()
    );
    let mut r2 = SandboxRequest::on("c2", &["a"]);
    r2.netns = r.netns.clone();
    assert!(
        matches!(t.e.create_sandbox(&r2), Err(EngineError::Conflict(_))),
        "one sandbox per namespace"
    );
    // The runtime's namespace vanishes: reconcile waits for DEL instead of recreating it.
    t.k.apply(&crate::plan::Step::DeleteNetns { path: ns.clone() })
        .unwrap();
    let rep = t.e.reconcile().unwrap();
    assert!(rep.recreated.is_empty(), "{rep:?}");
    t.k.apply(&crate::plan::Step::CreateNetns { path: ns.clone() })
        .unwrap();
    t.e.remove_sandbox("c1").unwrap();
    assert!(
        t.k.netns().contains(&ns.display().to_string()),
        "netd deleted a namespace it does not own"
    );
    assert!(t.s.list(Bucket::Pending).unwrap().is_empty());
}

#[test]
fn services_persist_clash_with_sandbox_names_and_bad_input_changes_nothing() {
    use crate::model::{ServiceKind, ServiceRequest};
    let mut t = setup();
    t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    let mut cart = SandboxRequest::on("cart", &["a"]);
    cart.labels.insert("netd.namespace".into(), "shop".into());
    t.e.create_sandbox(&cart).unwrap();
    let req = |name: &str, ns: &str, target: &str| ServiceRequest {
        name: name.into(),
        namespace: Some(ns.into()),
        external_name: Some(target.into()),
        ..Default::default()
    };
    let s =
        t.e.create_service(&req("mail", "shop", "smtp.example.com"))
            .unwrap();
    assert_eq!(
        s.kind,
        ServiceKind::ExternalName {
            target: "smtp.example.com".into()
        }
    );
    let before = snapshot(&t);
    for (r, want) in [
        (req("mail", "shop", "x.y"), "already exists"),
        (req("cart", "shop", "x.y"), "sandbox cart already answers"),
        (req("Mail", "shop", "x.y"), "invalid service name"),
        (req("m", "shop", "1.2.3.4"), "not an IP address"),
        (
            ServiceRequest {
                name: "web".into(),
                networks: vec!["nope".into()],
                ports: vec!["80".into()],
                ..Default::default()
            },
            "no such network: nope",
        ),
    ] {
        let e = t.e.create_service(&r).unwrap_err().to_string();
        assert!(e.contains(want), "{r:?}: {e}");
    }
    assert!(matches!(
        t.e.remove_service("shop", "nope"),
        Err(EngineError::NoSuchService { .. })
    ));
    assert!(snapshot(&t) == before, "bad input changed nothing");
    // The same name in another namespace is another service.
    t.e.create_service(&req("cart", "other", "x.y")).unwrap();

    // A new engine on the same store has them.
    let (e2, _) = Engine::open(t.k.clone(), t.s.clone(), t.e.cfg.clone()).unwrap();
    let keys: Vec<String> = e2.services().map(|s| s.key()).collect();
    assert_eq!(keys, ["other/cart", "shop/mail"]);
    t.e.remove_service("shop", "mail").unwrap();
    assert_eq!(t.s.list(Bucket::Services).unwrap().len(), 1);
    assert!(t.e.service("shop", "mail").is_err());
}

#[test]
fn extra_routes_get_the_gateway_and_bad_ones_change_nothing() {
    let mut t = setup();
    let n = t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    let gw = n.subnets[0].gateway;
    let route = |dst: &str, gw: Option<&str>| crate::model::Route {
        dst: dst.parse().unwrap(),
        gw: gw.map(|g| g.parse().unwrap()),
    };
    let with_routes = |name: &str, routes: Vec<crate::model::Route>| {
        let mut r = SandboxRequest::on(name, &["a"]);
        r.networks[0].routes = routes;
        r
    };
    let s =
        t.e.create_sandbox(&with_routes(
            "s",
            vec![
                route("10.50.0.0/16", None),
                route("0.0.0.0/0", None), // the default route it gets anyway
                route("10.60.0.0/16", Some("10.1.0.9")),
                route("10.50.0.0/16", None), // listed twice
            ],
        ))
        .unwrap();
    assert_eq!(
        s.endpoints[0].routes,
        vec![
            route("10.50.0.0/16", Some(&gw.to_string())),
            route("10.60.0.0/16", Some("10.1.0.9"))
        ]
    );
    let before = snapshot(&t);
    for bad in [
        vec![route("10.70.0.0/16", Some("10.2.0.1"))], // gateway off the subnet
        vec![route("10.1.2.3/16", None)],              // host bits
        vec![route("fd00::/8", None)],                 // no IPv6 address
        vec![route("0.0.0.0/0", Some("10.1.0.9"))],    // a second default route
        vec![route("10.70.0.0/16", Some("fd00::1"))],  // other family
    ] {
        let e = t.e.create_sandbox(&with_routes("s2", bad.clone())).unwrap_err();
        assert!(matches!(e, EngineError::Invalid(_)), "{bad:?}: {e}");
        assert_eq!(snapshot(&t), before, "after {bad:?}");
    }
}

/// `no_default_route` (CNI's `isDefaultGateway: false`): the endpoint gets no default
/// route through the gateway of its own; a default route asked for in `routes` is kept
/// as asked. A second default route of a family in one sandbox is refused before any
/// change, and so are two in one request.
#[test]
fn an_endpoint_without_default_route_keeps_the_one_it_asks_for() {
    let mut t = setup();
    let a = t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    t.e.create_network(&net("b", Some("10.2.0.0/24"))).unwrap();
    let gw_a: std::net::IpAddr = a.subnets[0].gateway.to_string().parse().unwrap();
    let route = |dst: &str| crate::model::Route {
        dst: dst.parse().unwrap(),
        gw: None,
    };
    let mut r = SandboxRequest::on("s", &["a"]);
    r.networks[0].no_default_route = true;
    let s = t.e.create_sandbox(&r).unwrap();
    assert!(s.endpoints[0].no_default_route);
    assert!(s.endpoints[0].routes.is_empty());
    let step = crate::driver::endpoint_up(&a, "s", std::path::Path::new("/n"), &s.endpoints[0], true);
    let crate::plan::Step::CreateVeth(v) = step else {
        panic!("{step:?}")
    };
    assert_eq!((v.gw4, v.gw6), (None, None));

    // Asked for: kept as a route, via the gateway.
    let mut r = SandboxRequest::on("s2", &["a"]);
    r.networks[0].no_default_route = true;
    r.networks[0].routes = vec![route("0.0.0.0/0")];
    let s2 = t.e.create_sandbox(&r).unwrap();
    assert_eq!(
        s2.endpoints[0].routes,
        vec![crate::model::Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: Some(gw_a)
        }]
    );

    let before = snapshot(&t);
    // s2's first network carries a default route: a second network may not add one.
    let mut ep = SandboxRequest::on("x", &["b"]).networks.remove(0);
    ep.no_default_route = true;
    ep.routes = vec![route("0.0.0.0/0")];
    let e = t.e.connect("b", &ep, "s2").unwrap_err();
    assert!(matches!(e, EngineError::Invalid(_)), "{e}");
    assert!(e.to_string().contains("through network a"), "{e}");
    // Two default routes of a family in one request.
    let mut r = SandboxRequest::on("s3", &["b"]);
    r.networks[0].no_default_route = true;
    r.networks[0].routes = vec![
        route("0.0.0.0/0"),
        crate::model::Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: Some("10.2.0.9".parse().unwrap()),
        },
    ];
    let e = t.e.create_sandbox(&r).unwrap_err();
    assert!(matches!(e, EngineError::Invalid(_)), "{e}");
    assert_eq!(snapshot(&t), before);
    // Without the default route, the same connect is fine.
    ep.routes.clear();
    t.e.connect("b", &ep, "s2").unwrap();
}

/// netd's tables carry their maker's name; an engine with another name refuses them
/// before it changes anything (a second stateDir, or the plugin next to a daemon).
#[test]
fn tables_made_by_another_engine_are_refused_untouched() {
    let cfg = |owner: &str| EngineConfig {
        netns_dir: std::env::temp_dir(),
        etc_netns_dir: std::env::temp_dir().join("netd-owner-test-etc"),
        owner: owner.into(),
        ..Default::default()
    };
    // The first engine's tables are named after it; it and its restarts are at home.
    let k = Arc::new(FakeKernel::default());
    let s = Arc::new(MemStore::default());
    let (mut e, _) = Engine::open(k.clone(), s.clone(), cfg("netd-cni /var/lib/a")).unwrap();
    e.create_network(&net("a", Some("10.70.0.0/24"))).unwrap();
    assert!(k.nft_batches()[0].contains("add table inet netd { comment \"netd-cni /var/lib/a\"; }"));
    drop(e);
    Engine::open(k.clone(), s.clone(), cfg("netd-cni /var/lib/a")).expect("same owner");
    let (links, batches) = (k.links(), k.nft_batches().len());

    // Another one, by either way in, with a store of its own.
    let other = Arc::new(MemStore::default());
    let e = Engine::open(k.clone(), other.clone(), cfg("netd-cni /var/lib/b"))
        .err()
        .expect("refused");
    assert!(matches!(e, EngineError::Foreign { .. }), "{e:?}");
    assert!(e.to_string().contains("belong to \"netd-cni /var/lib/a\""), "{e}");
    let e = Engine::open_trusting(k.clone(), other, cfg("netd daemon /var/lib/netd"), false)
        .err()
        .expect("refused");
    assert!(matches!(e, EngineError::Foreign { .. }), "{e:?}");
    assert_eq!(
        (k.links(), k.nft_batches().len()),
        (links, batches),
        "nothing changed"
    );

    // Tables from before names were written (no comment) are taken over; a name
    // that differs only in characters a comment cannot hold is the same name.
    let k = Arc::new(FakeKernel::default());
    k.nft(&crate::firewall::batch::Batch::from_text("add table inet netd"))
        .unwrap();
    Engine::open(k, Arc::new(MemStore::default()), cfg("netd-cni /var/lib/b")).expect("unnamed tables");
    let k = Arc::new(FakeKernel::default());
    k.tables_made_by("netd-cni /var/lib/_q_");
    Engine::open(k, Arc::new(MemStore::default()), cfg("netd-cni /var/lib/\"q\"")).expect("same name");
}

/// A sandbox's resolv.conf is a step of its plan: written with it, undone with it when
/// a later step fails, removed with the sandbox.
#[test]
fn resolv_conf_goes_with_its_sandbox_and_its_failed_plan() {
    let mut t = setup();
    t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    let conf = t.e.cfg.etc_netns_dir.join("s/resolv.conf");
    t.e.create_sandbox(&SandboxRequest::on("s", &["a"])).unwrap();
    assert!(t.k.files()[&conf].starts_with("# written by netd"));
    t.e.remove_sandbox("s").unwrap();
    assert!(t.k.files().is_empty());
    // The write comes last: fail it, and the namespace and veth before it are undone.
    t.k.fail_on(&format!("write {}", conf.display()));
    t.e.create_sandbox(&SandboxRequest::on("s", &["a"])).unwrap_err();
    assert!(
        t.k.files().is_empty() && t.k.netns().is_empty(),
        "{:?}",
        t.k.log()
    );
    assert!(t.e.sandbox("s").is_err());
}

fn k8s_file(name: &str) -> serde_json::Value {
    let p = format!("{}/tests/data/k8s/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&p).unwrap();
    serde_json::Value::Array(crate::k8s::documents(&text).unwrap())
}

fn kube_of(t: &T, ns: &str, name: &str) -> crate::model::KubeSpec {
    match &t.e.service(ns, name).unwrap().kind {
        ServiceKind::ClusterIp(c) => *c.kubernetes.clone().unwrap(),
        k => panic!("{k:?}"),
    }
}

#[test]
fn k8s_apply_allocates_and_is_idempotent() {
    let mut t = setup();
    let r = t.e.apply_k8s(&k8s_file("list.json")).unwrap();
    let acts: Vec<String> = r
        .iter()
        .map(|r| format!("{}/{} {}", r.kind, r.name, r.action))
        .collect();
    assert_eq!(acts, ["Service/api created", "Service/cache created"]);
    // The lowest free addresses of 10.96.0.0/12 and the lowest free NodePort.
    assert_eq!(
        kube_of(&t, "default", "api").cluster_ip,
        Some("10.96.0.1".parse().unwrap())
    );
    let cache = kube_of(&t, "default", "cache");
    assert_eq!(cache.cluster_ip, Some("10.96.0.2".parse().unwrap()));
    assert_eq!(cache.ports[0].node_port, Some(30000));
    let ServiceKind::ClusterIp(c) = &t.e.service("default", "cache").unwrap().kind else {
        unreachable!()
    };
    assert_eq!(
        c.published[0].published, 30000,
        "the NodePort holds its host port"
    );
    // Applying the same file again changes nothing and keeps what was allocated.
    let before = snapshot(&t);
    let r = t.e.apply_k8s(&k8s_file("list.json")).unwrap();
    assert!(r.iter().all(|r| r.action == "unchanged"), "{r:?}");
    assert_eq!(snapshot(&t), before);
    // A slice for a service, then delete: the service and its slices go.
    t.e.apply_k8s(&k8s_file("clusterip.yaml")).unwrap();
    assert_eq!(kube_of(&t, "shop", "web").slices.len(), 1);
    let r = t.e.delete_k8s(&k8s_file("clusterip.yaml")).unwrap();
    assert_eq!(r.len(), 2);
    assert!(t.e.service("shop", "web").is_err());
    t.e.delete_k8s(&k8s_file("list.json")).unwrap();
    assert!(t.s.list(Bucket::Services).unwrap().is_empty());
}

#[test]
fn k8s_bad_input_changes_nothing() {
    let mut t = setup();
    t.e.create_network(&net("a", Some("10.1.0.0/24"))).unwrap();
    let mut sb = SandboxRequest::on("s1", &["a"]);
    sb.ports = vec!["30080:80".into()];
    t.e.create_sandbox(&sb).unwrap();
    t.e.apply_k8s(&k8s_file("list.json")).unwrap();
    t.e.create_service(&crate::model::ServiceRequest {
        name: "mine".into(),
        external_name: Some("example.com".into()),
        ..Default::default()
    })
    .unwrap();
    let before = snapshot(&t);
    let svc = |name: &str, spec: serde_json::Value| serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec});
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            k8s_file("bad/cluster-ip-outside.yaml"),
            "not a usable address of the service CIDR 10.96.0.0/12",
        ),
        (
            k8s_file("bad/slice-without-service.yaml"),
            "service nosuch (label kubernetes.io/service-name) does not exist",
        ),
        (k8s_file("bad/nodeport-range.yaml"), "outside the NodePort range"),
        (k8s_file("bad/deployment.yaml"), "unknown kind \"Deployment\""),
        (
            svc(
                "x",
                serde_json::json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}),
            ),
            "already allocated to service default/api",
        ),
        (
            svc(
                "x",
                serde_json::json!({"clusterIP": "10.96.0.0", "ports": [{"port": 80}]}),
            ),
            "not a usable address",
        ),
        (
            svc(
                "x",
                serde_json::json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
            ),
            "nodePort 30080/tcp is already used by sandbox s1",
        ),
        (
            svc(
                "x",
                serde_json::json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30000}]}),
            ),
            "already used by service default/cache",
        ),
        (
            serde_json::json!([
                svc(
                    "x",
                    serde_json::json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30500}]})
                ),
                svc(
                    "y",
                    serde_json::json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30500}]})
                )
            ]),
            "Service default/y: nodePort 30500/tcp is already used by service default/x",
        ),
        (
            svc(
                "api",
                serde_json::json!({"clusterIP": "10.96.0.9", "ports": [{"port": 8080}]}),
            ),
            "spec.clusterIP is immutable",
        ),
        (
            svc(
                "api",
                serde_json::json!({"clusterIP": "None", "ports": [{"port": 8080}]}),
            ),
            "spec.clusterIP is immutable",
        ),
        (
            svc("mine", serde_json::json!({"ports": [{"port": 80}]})),
            "was made with netctl service create",
        ),
        // A good object and a bad one in one call: neither is applied.
        (
            serde_json::json!([
                svc("good", serde_json::json!({"ports": [{"port": 80}]})),
                svc("bad", serde_json::json!({}))
            ]),
            "at least one port",
        ),
    ];
    for (docs, want) in cases {
        let e = t.e.apply_k8s(&docs).unwrap_err().to_string();
        assert!(e.contains(want), "{docs}: {e}");
        assert!(!e.contains('\n'));
        assert_eq!(snapshot(&t), before, "{docs}");
    }
    // delete: a missing object, or one netctl service create made.
    let e = t.e.delete_k8s(&svc("nosuch", serde_json::json!({}))).unwrap_err();
    assert!(matches!(e, EngineError::NoSuchService { .. }), "{e}");
    let e = t.e.delete_k8s(&svc("mine", serde_json::json!({}))).unwrap_err();
    assert!(e.to_string().contains("netctl service create"), "{e}");
    assert_eq!(snapshot(&t), before);
}
