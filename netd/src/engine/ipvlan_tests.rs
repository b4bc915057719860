//! ipvlan networks and dotted (802.1Q) parents on the fake kernel: the plan of each mode,
//! the VLAN parent made and removed only when netd made it, and refusals that change
//! nothing (a kernel without ipvlan or 802.1Q, a parent in use).

use std::sync::Arc;

use super::super::tests::{open_with, T};
use super::super::{Engine, EngineError};
use crate::kernel::fake::FakeKernel;
use crate::model::{EndpointRequest, NetworkRequest, SandboxRequest, SubnetRequest};
use crate::store::{Bucket, Store, Txn};

fn setup_with(k: FakeKernel) -> T {
    k.add_link("eth1");
    let tag = format!("{}-{}", std::process::id(), rand::random::<u32>());
    open_with(
        Arc::new(k),
        std::env::temp_dir().join(format!("netd-iv-test-{tag}")),
        std::env::temp_dir().join(format!("netd-iv-test-etc-{tag}")),
    )
}

fn setup() -> T {
    setup_with(FakeKernel::default())
}

fn ivnet(name: &str, driver: &str, opts: &[(&str, &str)], subnet: &str) -> NetworkRequest {
    NetworkRequest {
        name: name.into(),
        driver: Some(driver.into()),
        subnets: vec![SubnetRequest {
            subnet: Some(subnet.into()),
            ..Default::default()
        }],
        options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

/// Everything a refused request must leave as it was: store, links, log, nft.
type Snapshot = (Vec<Vec<(String, Vec<u8>)>>, Vec<String>, Vec<String>, usize);

fn snapshot(t: &T) -> Snapshot {
    (
        Bucket::ALL.iter().map(|b| t.s.list(*b).unwrap()).collect(),
        t.k.links().into_iter().collect(),
        t.k.log(),
        t.k.nft_batches().len(),
    )
}

#[test]
fn l2_child_has_the_lan_router_as_gateway_and_no_mac_of_its_own() {
    let mut t = setup();
    let n =
        t.e.create_network(&ivnet("lan", "ipvlan", &[("parent", "eth1")], "192.168.60.0/24"))
            .unwrap();
    assert_eq!(
        (n.ipvlan_mode.as_deref(), n.ipvlan_flag.as_deref()),
        (Some("l2"), Some("bridge"))
    );
    let s = t.e.create_sandbox(&SandboxRequest::on("a", &["lan"])).unwrap();
    let ep = &s.endpoints[0];
    assert!(ep.mac.is_empty() && ep.host_ifname.is_empty(), "{ep:?}");
    assert_eq!(t.k.links_in(&s.netns), ["eth0".to_string()].into());
    assert_eq!(t.k.links(), ["eth1".to_string()].into());
    let log = t.k.log().join("\n");
    assert!(log.contains("create ipvlan ndma-"), "{log}");
    assert!(log.contains("(link eth1 mode l2 bridge)"), "{log}");
    let side = crate::driver::sandbox_side(&n, "a", s.netns.as_ref(), ep, true).unwrap();
    assert_eq!(side.gw4, Some("192.168.60.1".parse().unwrap()));
    assert!(side.routes.is_empty());
    assert!(t.e.desired_fw().networks.is_empty());
    // A MAC of its own is refused, and changes nothing.
    let before = snapshot(&t);
    let mut req = SandboxRequest::on("b", &["lan"]);
    req.networks[0] = EndpointRequest {
        mac: Some("02:00:00:00:00:01".into()),
        ..req.networks[0].clone()
    };
    let e = t.e.create_sandbox(&req).unwrap_err();
    assert!(e.to_string().contains("MAC address of parent eth1"), "{e}");
    assert_eq!(snapshot(&t), before);
    t.e.remove_sandbox("a").unwrap();
    t.e.remove_network("lan").unwrap();
    assert_eq!(t.k.links(), ["eth1".to_string()].into());
}

#[test]
fn l3_routes_through_the_device_without_a_gateway() {
    let mut t = setup();
    let n =
        t.e.create_network(&ivnet(
            "l3",
            "ipvlan",
            &[
                ("parent", "eth1"),
                ("ipvlan_mode", "l3"),
                ("ipvlan_flag", "private"),
            ],
            "10.61.0.0/24",
        ))
        .unwrap();
    assert!(n.routes_without_gateway());
    let s = t.e.create_sandbox(&SandboxRequest::on("a", &["l3"])).unwrap();
    let side = crate::driver::sandbox_side(&n, "a", s.netns.as_ref(), &s.endpoints[0], true).unwrap();
    assert_eq!((side.gw4, side.gw6), (None, None));
    assert_eq!(
        side.routes,
        vec![crate::model::Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: None
        }]
    );
    assert!(t.k.log().join("\n").contains("mode l3 private)"));
    // A restart changes nothing.
    let (e2, r) = Engine::open(t.k.clone(), t.s.clone(), t.e.cfg.clone()).unwrap();
    assert!(r.recreated.is_empty() && r.removed.is_empty(), "{r:?}");
    t.e = e2;
    t.e.remove_sandbox("a").unwrap();
}

#[test]
fn a_dotted_parent_is_made_marked_and_removed_with_its_network() {
    let mut t = setup();
    for driver in ["ipvlan", "macvlan"] {
        let n =
            t.e.create_network(&ivnet("v10", driver, &[("parent", "eth1.10")], "10.62.0.0/24"))
                .unwrap();
        assert_eq!(n.vlan_parent(), Some(("eth1".into(), 10)));
        assert!(t.k.links().contains("eth1.10"));
        assert_eq!(t.k.alias_of("eth1.10").as_deref(), Some("netd:net=v10"));
        assert!(t
            .k
            .log()
            .contains(&"ensure vlan eth1.10 (link eth1 id 10)".to_string()));
        // Another network on the same parent and VLAN, of either driver, is refused.
        for other in ["ipvlan", "macvlan"] {
            let e =
                t.e.create_network(&ivnet("again", other, &[("parent", "eth1.10")], "10.63.0.0/24"))
                    .unwrap_err();
            assert!(
                e.to_string()
                    .contains("network v10 is already using parent interface eth1.10"),
                "{e}"
            );
        }
        let s = t.e.create_sandbox(&SandboxRequest::on("a", &["v10"])).unwrap();
        // Reconcile keeps it (it is the network's), and makes it again when it is gone.
        let r = t.e.reconcile().unwrap();
        assert!(r.removed.is_empty() && r.recreated.is_empty(), "{r:?}");
        t.k.remove_link("eth1.10");
        let r = t.e.reconcile().unwrap();
        assert!(r.recreated.iter().any(|x| x.contains("vlan eth1.10")), "{r:?}");
        t.e.remove_sandbox("a").unwrap();
        drop(s);
        t.e.remove_network("v10").unwrap();
        t.e.settle();
        assert_eq!(t.k.links(), ["eth1".to_string()].into(), "{driver}");
    }
}

#[test]
fn an_existing_dotted_parent_is_used_and_never_removed() {
    let mut t = setup();
    t.k.add_link("eth1.20");
    t.e.create_network(&ivnet("v20", "ipvlan", &[("parent", "eth1.20")], "10.64.0.0/24"))
        .unwrap();
    assert_eq!(t.k.alias_of("eth1.20"), None);
    t.e.remove_network("v20").unwrap();
    t.e.settle();
    assert!(t.k.links().contains("eth1.20"));
}

#[test]
fn a_leftover_vlan_parent_of_no_network_is_removed_by_reconcile() {
    let mut t = setup();
    // A crash between making the VLAN link and storing the network.
    let n =
        t.e.create_network(&ivnet("v30", "ipvlan", &[("parent", "eth1.30")], "10.65.0.0/24"))
            .unwrap();
    let mut txn = Txn::new();
    txn.delete(Bucket::Networks, &n.name);
    t.s.commit(&txn).unwrap();
    let (_e2, r) = Engine::open(t.k.clone(), t.s.clone(), t.e.cfg.clone()).unwrap();
    assert!(r.removed.iter().any(|x| x.contains("eth1.30")), "{r:?}");
    assert!(!t.k.links().contains("eth1.30"));
}

#[test]
fn kernels_without_ipvlan_or_8021q_are_refused_before_any_change() {
    let k = FakeKernel::default();
    k.without_ipvlan();
    let mut t = setup_with(k);
    let before = snapshot(&t);
    let e =
        t.e.create_network(&ivnet("lan", "ipvlan", &[("parent", "eth1")], "10.66.0.0/24"))
            .unwrap_err();
    assert!(matches!(e, EngineError::Unsupported { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "an ipvlan network: this kernel has no ipvlan support (CONFIG_IPVLAN)"
    );
    assert_eq!(snapshot(&t), before);
    // macvlan is unaffected.
    t.e.create_network(&ivnet("mv", "macvlan", &[("parent", "eth1")], "10.67.0.0/24"))
        .unwrap();

    let k = FakeKernel::default();
    k.without_8021q();
    let mut t = setup_with(k);
    let before = snapshot(&t);
    let e =
        t.e.create_network(&ivnet("mv", "macvlan", &[("parent", "eth1.5")], "10.67.0.0/24"))
            .unwrap_err();
    assert_eq!(
        e.to_string(),
        "parent eth1.5: this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q)"
    );
    assert_eq!(snapshot(&t), before);
    // A dotted parent that exists needs no 802.1Q from netd; one on a missing link is refused.
    t.k.add_link("eth1.6");
    t.e.create_network(&ivnet("mv", "macvlan", &[("parent", "eth1.6")], "10.67.0.0/24"))
        .unwrap();
    let e =
        t.e.create_network(&ivnet("x", "macvlan", &[("parent", "eth9.5")], "10.68.0.0/24"))
            .unwrap_err();
    assert!(
        e.to_string()
            .contains("parent interface eth9.5 not found on the host, nor its link eth9"),
        "{e}"
    );
}

#[test]
fn an_ipvlan_network_takes_several_ipv4_subnets_a_pool_each() {
    let mut t = setup();
    let mut req = ivnet(
        "l3",
        "ipvlan",
        &[("parent", "eth1"), ("ipvlan_mode", "l3")],
        "10.70.1.0/24",
    );
    req.subnets.push(SubnetRequest {
        subnet: Some("10.70.2.0/24".into()),
        ..Default::default()
    });
    let n = t.e.create_network(&req).unwrap();
    let subnets: Vec<String> = n.subnets.iter().map(|s| s.subnet.to_string()).collect();
    assert_eq!(subnets, ["10.70.1.0/24", "10.70.2.0/24"]);
    assert_eq!(t.s.list(Bucket::Pools).unwrap().len(), 2);
    let a = t.e.create_sandbox(&SandboxRequest::on("a", &["l3"])).unwrap();
    let mut rb = SandboxRequest::on("b", &["l3"]);
    rb.networks[0].ip = Some("10.70.2.20".into());
    let b = t.e.create_sandbox(&rb).unwrap();
    assert_eq!(a.endpoints[0].ipv4.unwrap().network().to_string(), "10.70.1.0");
    assert_eq!(b.endpoints[0].ipv4.unwrap().to_string(), "10.70.2.20/24");
    // The same address again is refused by its own pool, and changes nothing.
    let before = snapshot(&t);
    let mut rc = SandboxRequest::on("c", &["l3"]);
    rc.networks[0].ip = Some("10.70.2.20".into());
    assert!(t.e.create_sandbox(&rc).is_err());
    assert_eq!(snapshot(&t), before);
    // A restart keeps both leases; removal releases them and both pools go.
    let (e2, r) = Engine::open(t.k.clone(), t.s.clone(), t.e.cfg.clone()).unwrap();
    assert_eq!(r.released_leases, 0, "{r:?}");
    t.e = e2;
    t.e.remove_sandbox("b").unwrap();
    t.e.remove_sandbox("a").unwrap();
    t.e.remove_network("l3").unwrap();
    assert!(t.s.list(Bucket::Pools).unwrap().is_empty());
    assert_eq!(t.e.pools().count(), 0);
    // Other drivers keep one IPv4 subnet.
    let mut mv = ivnet("mv", "macvlan", &[("parent", "eth1")], "10.70.1.0/24");
    mv.subnets.push(SubnetRequest {
        subnet: Some("10.70.2.0/24".into()),
        ..Default::default()
    });
    let e = t.e.create_network(&mv).unwrap_err();
    assert!(e.to_string().contains("several IPv4 subnets: ipvlan only"), "{e}");
}

/// `netd.parent_in_sandbox` (CNI `linkInContainer`): the parent is each sandbox's own
/// link, so the host is not asked for it, a dotted name makes no 802.1Q link, two such
/// networks may name the same parent, and a host network on that name is not refused
/// either. The child is planned inside the sandbox next to its parent.
#[test]
fn a_parent_in_the_sandbox_is_not_looked_for_made_or_shared_on_the_host() {
    let mut t = setup();
    let pis = ("netd.parent_in_sandbox", "true");
    let a =
        t.e.create_network(&ivnet(
            "pa",
            "ipvlan",
            &[("parent", "net1.7"), pis],
            "192.168.61.0/24",
        ))
        .unwrap();
    assert!(a.parent_in_sandbox && a.vlan_parent().is_none() && a.host_parent().is_none());
    t.e.create_network(&ivnet(
        "pb",
        "macvlan",
        &[("parent", "net1.7"), pis],
        "192.168.62.0/24",
    ))
    .unwrap();
    // Nothing made on the host for either.
    assert_eq!(t.k.links(), ["eth1".to_string()].into());
    // A host network on eth1 is still refused twice, not because of these.
    t.e.create_network(&ivnet("h1", "ipvlan", &[("parent", "eth1")], "192.168.63.0/24"))
        .unwrap();
    let e =
        t.e.create_network(&ivnet("h2", "ipvlan", &[("parent", "eth1")], "192.168.64.0/24"))
            .unwrap_err();
    assert!(
        e.to_string()
            .contains("network h1 is already using parent interface eth1"),
        "{e}"
    );
    t.e.create_network(&ivnet(
        "pc",
        "ipvlan",
        &[("parent", "eth1"), pis],
        "192.168.65.0/24",
    ))
    .unwrap();
    t.e.create_sandbox(&SandboxRequest::on("a", &["pa"])).unwrap();
    let log = t.k.log().join("\n");
    assert!(
        log.contains("(link net1.7 in the sandbox mode l2 bridge)"),
        "{log}"
    );
    t.e.remove_sandbox("a").unwrap();
    for n in ["pa", "pb", "pc", "h1"] {
        t.e.remove_network(n).unwrap();
    }
    assert_eq!(t.k.links(), ["eth1".to_string()].into());
    // Not for the bridge driver, and a yes-or-no.
    for (driver, opts, says) in [
        (
            "bridge",
            vec![pis],
            "option netd.parent_in_sandbox is for macvlan and ipvlan",
        ),
        (
            "ipvlan",
            vec![("parent", "eth1"), ("netd.parent_in_sandbox", "maybe")],
            "expected true or false",
        ),
    ] {
        let e =
            t.e.create_network(&ivnet("x", driver, &opts, "192.168.66.0/24"))
                .unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
}

/// `--internal` as Docker's ipvlan driver: the parent given is set aside for a dummy
/// link of the network's own (`dm-<hash>`), made and marked with the network, its
/// children on it, removed with it and made again by reconcile; a kernel without dummy
/// links is refused before any change.
#[test]
fn an_internal_network_hangs_off_a_dummy_of_its_own() {
    let mut t = setup();
    let mut req = ivnet(
        "inner",
        "ipvlan",
        &[("parent", "eth1"), ("ipvlan_mode", "l3")],
        "10.69.0.0/24",
    );
    req.internal = true;
    let n = t.e.create_network(&req).unwrap();
    let dm = crate::model::dummy_parent_name("inner");
    assert_eq!(
        (n.parent.as_deref(), n.dummy_parent()),
        (Some(dm.as_str()), Some(dm.as_str()))
    );
    assert!(dm.len() <= 15 && dm.starts_with("dm-"), "{dm}");
    assert_eq!(t.k.alias_of(&dm).as_deref(), Some("netd:net=inner"));
    // eth1 is free for another network: the internal one does not use it.
    t.e.create_network(&ivnet("outer", "ipvlan", &[("parent", "eth1")], "10.70.0.0/24"))
        .unwrap();
    t.e.create_sandbox(&SandboxRequest::on("a", &["inner"])).unwrap();
    let log = t.k.log().join("\n");
    assert!(log.contains(&format!("(link {dm} mode l3 bridge)")), "{log}");
    // Deleted behind netd's back: reconcile makes it again.
    t.e.settle();
    t.k.remove_link(&dm);
    let r = t.e.reconcile().unwrap();
    assert!(r.recreated.iter().any(|x| x == &format!("dummy {dm}")), "{r:?}");
    t.e.remove_sandbox("a").unwrap();
    t.e.remove_network("inner").unwrap();
    t.e.settle();
    assert!(!t.k.links().contains(&dm));
    assert!(t.k.links().contains("eth1"));

    let k = FakeKernel::default();
    k.without_dummy();
    let mut t = setup_with(k);
    let before = snapshot(&t);
    let e = t.e.create_network(&req).unwrap_err();
    assert_eq!(
        e.to_string(),
        "an internal ipvlan network: this kernel has no dummy links (CONFIG_DUMMY)"
    );
    assert_eq!(snapshot(&t), before);
    let mut bad = req.clone();
    bad.options.insert("netd.parent_in_sandbox".into(), "true".into());
    let e = t.e.create_network(&bad).unwrap_err();
    assert!(e.to_string().contains("not for an internal network"), "{e}");
}
