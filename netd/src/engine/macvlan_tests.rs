//! macvlan networks on the fake kernel: what is made where, what reconcile leaves alone,
//! and that refused requests change nothing.

use std::sync::Arc;

use super::super::tests::{open_with, T};
use super::super::Engine;
use crate::kernel::fake::FakeKernel;
use crate::kernel::Kernel;
use crate::model::{EndpointRequest, NetworkRequest, SandboxRequest, SubnetRequest};
use crate::plan::Step;
use crate::store::{Bucket, Store};

fn setup() -> T {
    let k = Arc::new(FakeKernel::default());
    k.add_link("eth1");
    let tag = format!("{}-{}", std::process::id(), rand::random::<u32>());
    open_with(
        k,
        std::env::temp_dir().join(format!("netd-mv-test-{tag}")),
        std::env::temp_dir().join(format!("netd-mv-test-etc-{tag}")),
    )
}

fn mvnet(name: &str, parent: Option<&str>, subnet: &str) -> NetworkRequest {
    NetworkRequest {
        name: name.into(),
        driver: Some("macvlan".into()),
        subnets: vec![SubnetRequest {
            subnet: Some(subnet.into()),
            gateway: None,
            ip_range: None,
        }],
        options: parent
            .map(|p| [("parent".to_string(), p.to_string())].into())
            .unwrap_or_default(),
        ..Default::default()
    }
}

fn store_dump(t: &T) -> Vec<Vec<(String, Vec<u8>)>> {
    Bucket::ALL.iter().map(|b| t.s.list(*b).unwrap()).collect()
}

#[test]
fn endpoint_is_a_child_inside_the_sandbox_and_nothing_on_the_host() {
    let mut t = setup();
    // The host has a route for the LAN (the parent's own address): not a clash.
    t.k.add_route("192.168.50.0/24".parse().unwrap());
    let n =
        t.e.create_network(&mvnet("lan", Some("eth1"), "192.168.50.0/24"))
            .unwrap();
    assert_eq!(
        (n.driver.as_str(), n.parent.as_deref(), n.macvlan_mode.as_deref()),
        ("macvlan", Some("eth1"), Some("bridge"))
    );
    assert!(n.bridge.is_empty());
    let json = serde_json::to_value(t.e.network_view("lan").unwrap()).unwrap();
    assert_eq!(json["parent"], "eth1");
    assert_eq!(json["macvlan_mode"], "bridge");
    let s = t.e.create_sandbox(&SandboxRequest::on("a", &["lan"])).unwrap();
    let ns = s.netns.clone();
    assert_eq!(t.k.links_in(&ns), ["eth0".to_string()].into());
    // Host namespace: only the parent; no bridge, no veth.
    assert_eq!(t.k.links(), ["eth1".to_string()].into());
    let ep = &s.endpoints[0];
    assert_eq!(ep.gateway4, Some("192.168.50.1".parse().unwrap()));
    assert!(ep.host_ifname.is_empty());
    // No firewall objects for macvlan networks.
    let fw = t.e.desired_fw();
    assert!(fw.networks.is_empty() && fw.endpoints.is_empty());

    // A restart neither recreates nor removes it.
    let (e2, r) = Engine::open(t.k.clone(), t.s.clone(), t.e.cfg.clone()).unwrap();
    assert!(r.recreated.is_empty() && r.removed.is_empty(), "{r:?}");
    t.e = e2;

    t.e.remove_sandbox("a").unwrap();
    assert!(t.k.links_in(&ns).is_empty());
    assert!(t
        .k
        .log()
        .iter()
        .any(|l| l == &format!("delete link eth0 in {ns}")));
    t.e.remove_network("lan").unwrap();
    assert_eq!(t.k.links(), ["eth1".to_string()].into());
}

#[test]
fn reconcile_recreates_a_missing_child_and_removes_unknown_ones() {
    let mut t = setup();
    t.e.create_network(&mvnet("lan", Some("eth1"), "192.168.50.0/24"))
        .unwrap();
    let s = t.e.create_sandbox(&SandboxRequest::on("a", &["lan"])).unwrap();
    t.k.apply(&Step::DeleteLink {
        name: "eth0".into(),
        netns: Some(s.netns.clone().into()),
    })
    .unwrap();
    // A child an interrupted attach left behind.
    let stray = crate::driver::macvlan::endpoint_up(
        t.e.network("lan").unwrap(),
        "a",
        std::path::Path::new(&s.netns),
        &crate::model::Endpoint {
            ifname: "eth7".into(),
            ..s.endpoints[0].clone()
        },
        false,
    );
    t.k.apply(&stray).unwrap();
    let (_e2, r) = Engine::open(t.k.clone(), t.s.clone(), t.e.cfg.clone()).unwrap();
    assert_eq!(r.recreated.len(), 1, "{r:?}");
    assert!(r.recreated[0].starts_with("macvlan eth0"), "{r:?}");
    assert_eq!(r.removed.len(), 1, "{r:?}");
    assert_eq!(t.k.links_in(&s.netns), ["eth0".to_string()].into());
}

/// A child whose making a crash cut short (still under its "being made" alias) while
/// its record was committed is made anew.
#[test]
fn reconcile_makes_a_child_cut_short_anew() {
    let mut t = setup();
    t.e.create_network(&mvnet("lan", Some("eth1"), "192.168.50.0/24"))
        .unwrap();
    let s = t.e.create_sandbox(&SandboxRequest::on("a", &["lan"])).unwrap();
    let netns = std::path::Path::new(&s.netns);
    t.k.apply(&Step::DeleteLink {
        name: "eth0".into(),
        netns: Some(netns.into()),
    })
    .unwrap();
    let mut half =
        crate::driver::macvlan::endpoint_up(t.e.network("lan").unwrap(), "a", netns, &s.endpoints[0], true);
    if let Step::CreateMacvlan(m) = &mut half {
        m.alias = crate::driver::creating_alias(&m.alias);
    }
    t.k.apply(&half).unwrap();
    let (_e2, r) = Engine::open(t.k.clone(), t.s.clone(), t.e.cfg.clone()).unwrap();
    assert_eq!(r.removed.len(), 1, "{r:?}");
    assert_eq!(r.recreated.len(), 1, "{r:?}");
    let inside = t.k.owned_links_in(netns).unwrap();
    assert_eq!(inside.len(), 1);
    assert_eq!(inside[0].alias, crate::driver::endpoint_alias("a", "lan"));
}

#[test]
fn refusals_change_nothing() {
    let mut t = setup();
    t.e.create_network(&mvnet("lan", Some("eth1"), "192.168.50.0/24"))
        .unwrap();
    let before = (store_dump(&t), t.k.links(), t.k.log().len());
    let cases: Vec<(NetworkRequest, &str)> = vec![
        (mvnet("x", None, "10.9.0.0/24"), "-o parent=IFACE"),
        (
            mvnet("x", Some("nosuch0"), "10.9.0.0/24"),
            "parent interface nosuch0 not found",
        ),
        (
            mvnet("x", Some("eth1"), "10.9.0.0/24"),
            "already using parent interface eth1",
        ),
        (
            {
                let mut r = mvnet("x", Some("eth1"), "10.9.0.0/24");
                r.options.insert("macvlan_mode".into(), "l3".into());
                r
            },
            "macvlan mode",
        ),
    ];
    for (req, want) in cases {
        let e = t.e.create_network(&req).unwrap_err().to_string();
        assert!(e.contains(want), "{e} (wanted {want})");
    }
    // Published ports on a sandbox whose first network is macvlan.
    let mut r = SandboxRequest::on("p", &["lan"]);
    r.ports = vec!["8080:80".into()];
    let e = t.e.create_sandbox(&r).unwrap_err().to_string();
    assert!(e.contains("macvlan"), "{e}");
    let mut r = SandboxRequest::on("p", &["lan"]);
    r.publish_all = true;
    assert!(t.e.create_sandbox(&r).is_err());
    assert_eq!(before, (store_dump(&t), t.k.links(), t.k.log().len()));
}

#[test]
fn overlapping_subnets_on_another_parent_are_refused_by_ipam() {
    let mut t = setup();
    t.k.add_link("eth2");
    t.e.create_network(&mvnet("lan", Some("eth1"), "192.168.50.0/24"))
        .unwrap();
    let e =
        t.e.create_network(&mvnet("lan2", Some("eth2"), "192.168.50.128/25"))
            .unwrap_err()
            .to_string();
    assert!(e.contains("overlaps"), "{e}");
}

#[test]
fn docker_endpoint_is_left_in_the_host_for_dockerd_and_survives_a_restart() {
    use crate::engine::{DockerEndpoint, DockerNetwork};
    let mut t = setup();
    let nid = "a".repeat(64);
    let eid = "b".repeat(64);
    let p =
        t.e.docker_request_pool(Some("192.168.60.0/24".parse().unwrap()), None, false)
            .unwrap();
    let gw = t.e.docker_request_address(&p.id, None, true).unwrap();
    t.e.docker_create_network(&DockerNetwork {
        id: nid.clone(),
        v4: vec![(p.pool, gw)],
        options: [
            ("netd.driver".to_string(), "macvlan".to_string()),
            ("parent".to_string(), "eth1".to_string()),
        ]
        .into(),
        ..Default::default()
    })
    .unwrap();
    let ipnetwork::IpNetwork::V4(a) = t.e.docker_request_address(&p.id, None, false).unwrap() else {
        panic!("v4");
    };
    t.e.docker_create_endpoint(&DockerEndpoint {
        network_id: nid.clone(),
        endpoint_id: eid.clone(),
        addr4: Some(a),
        ..Default::default()
    })
    .unwrap();
    let peer = format!("dkp{}", &eid[..12]);
    assert!(t.k.links().contains(&peer), "{:?}", t.k.links());
    assert!(t
        .k
        .log()
        .iter()
        .any(|l| l.starts_with(&format!("create macvlan {peer} (link eth1 mode bridge)"))));
    // A restart before Join keeps the child dockerd has not taken yet.
    let (e2, r) = Engine::open(t.k.clone(), t.s.clone(), t.e.cfg.clone()).unwrap();
    assert!(r.removed.is_empty() && r.recreated.is_empty(), "{r:?}");
    t.e = e2;
    let j = t.e.docker_join(&nid, &eid).unwrap();
    assert_eq!(j.src_name, peer);
    assert_eq!(j.gateway4, Some(gw.ip()));
    t.e.docker_delete_endpoint(&nid, &eid).unwrap();
    t.e.settle();
    assert!(!t.k.links().contains(&peer));
    t.e.docker_delete_network(&nid).unwrap();
    assert_eq!(t.k.links(), ["eth1".to_string()].into());
}

#[test]
fn detach_is_deferred_but_a_reattach_waits_for_it_and_rm_deletes_before_the_netns() {
    let mut t = setup();
    t.e.create_network(&mvnet("lan", Some("eth1"), "192.168.50.0/24"))
        .unwrap();
    t.e.create_network(&NetworkRequest {
        name: "br".into(),
        ..Default::default()
    })
    .unwrap();
    let s = t.e.create_sandbox(&SandboxRequest::on("a", &["br"])).unwrap();
    let req = EndpointRequest {
        network: "lan".into(),
        ..Default::default()
    };
    // The same name (eth1) comes back each time: each connect must find the previous
    // child gone, though the disconnect did not wait for it.
    for _ in 0..20 {
        let ep = t.e.connect("lan", &req, "a").unwrap();
        assert_eq!(ep.ifname, "eth1");
        t.e.disconnect("lan", "a").unwrap();
    }
    t.e.settle();
    assert!(t.k.links_in(&s.netns).is_empty());
    t.e.connect("lan", &req, "a").unwrap();
    t.e.remove_sandbox("a").unwrap();
    let log = t.k.log();
    let del = log
        .iter()
        .rposition(|l| l == &format!("delete link eth1 in {}", s.netns));
    let ns = log
        .iter()
        .rposition(|l| l == &format!("delete netns {}", s.netns));
    assert!(del.is_some() && del < ns, "{log:?}");
}
