//! Reconcile on the fake kernel: the start-up pass goes on past a broken network and
//! keeps a shared VLAN bridge; the loop's pass repairs each kind of drift and does
//! nothing at all on a healthy host.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::super::tests::{open_with, T};
use crate::kernel::fake::FakeKernel;
use crate::kernel::Kernel;
use crate::model::{NetworkRequest, SandboxRequest, SubnetRequest};

fn setup() -> T {
    let tag = format!("{}-{}", std::process::id(), rand::random::<u32>());
    open_with(
        Arc::new(FakeKernel::default()),
        std::env::temp_dir().join(format!("netd-reconcile-test-{tag}")),
        std::env::temp_dir().join(format!("netd-reconcile-test-etc-{tag}")),
    )
}

fn net(name: &str, subnet: &str, opts: &[(&str, &str)]) -> NetworkRequest {
    NetworkRequest {
        name: name.into(),
        subnets: vec![SubnetRequest {
            subnet: Some(subnet.into()),
            ..Default::default()
        }],
        options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

fn vlan(name: &str, subnet: &str, id: &str) -> NetworkRequest {
    net(
        name,
        subnet,
        &[("vlan", id), ("com.docker.network.bridge.name", "vbr")],
    )
}

/// A network whose gateway cannot be made fails alone: the VLAN bridge it shares stays,
/// and the networks and sandboxes after it are still repaired.
#[test]
fn reconcile_goes_on_past_a_broken_network_and_keeps_the_shared_vlan_bridge() {
    let mut t = setup();
    t.e.create_network(&vlan("v100", "10.100.0.0/24", "100")).unwrap();
    t.e.create_network(&vlan("v200", "10.200.0.0/24", "200")).unwrap();
    let s = t.e.create_sandbox(&SandboxRequest::on("b", &["v200"])).unwrap();
    let veth = s.endpoints[0].host_ifname.clone();
    t.k.remove_link("vbr.100");
    t.k.remove_link(&veth);
    t.k.fail_gateway("vbr.100");
    let nft = t.k.nft_batches().len();

    let r =
        t.e.reconcile()
            .expect("a broken network does not abort reconcile");
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert!(r.failed[0].starts_with("network v100: "), "{r:?}");
    let links = t.k.links();
    assert!(links.contains("vbr"), "the shared bridge stays: {links:?}");
    assert!(
        links.contains("vbr.200") && !links.contains("vbr.100"),
        "{links:?}"
    );
    assert!(
        !t.k.log().iter().any(|l| l == "delete link vbr"),
        "{:?}",
        t.k.log()
    );
    // v200 and the sandbox come after v100, and were still repaired.
    assert!(links.contains(&veth), "{r:?}");
    assert!(r.recreated.iter().any(|x| x.contains(&veth)), "{r:?}");
    assert_eq!(t.k.master_of(&veth).as_deref(), Some("vbr"));
    assert!(t.k.nft_batches().len() > nft, "the firewall is still written");

    // Once the gateway can be made, the next pass makes it, and touches nothing else.
    t.k.clear_failure();
    let r = t.e.reconcile().unwrap();
    assert!(r.failed.is_empty() && r.removed.is_empty(), "{r:?}");
    assert_eq!(r.recreated, ["gateway link vbr.100"], "{r:?}");
    assert!(t.k.links().contains("vbr.100"));
}

/// The loop's pass over a host where nothing changed makes no kernel call that changes
/// anything and reports nothing, however often it runs (netd's own changes wake it).
#[test]
fn a_repair_pass_on_a_healthy_host_does_nothing() {
    let mut t = setup();
    t.e.create_network(&net("front", "10.1.0.0/24", &[])).unwrap();
    t.e.create_network(&vlan("v100", "10.100.0.0/24", "100")).unwrap();
    let a = t.e.create_sandbox(&SandboxRequest::on("a", &["front"])).unwrap();
    t.e.create_sandbox(&SandboxRequest::on("b", &["v100"])).unwrap();
    let log = t.k.log();
    let nft = t.k.nft_batches();
    let inside: BTreeSet<PathBuf> = [PathBuf::from(&a.netns)].into();
    for _ in 0..3 {
        let r = t.e.repair(&inside);
        assert!(!r.acted(), "{r:?}");
    }
    let after = t.k.log();
    let changes: Vec<&String> = after[log.len()..]
        .iter()
        .filter(|l| !l.starts_with("ensure addresses and routes"))
        .collect();
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(t.k.nft_batches(), nft);
}

/// Each kind of drift the loop repairs, one at a time, and only that.
#[test]
fn a_repair_pass_restores_what_was_deleted() {
    let mut t = setup();
    t.e.create_network(&net("front", "10.1.0.0/24", &[])).unwrap();
    let a = t.e.create_sandbox(&SandboxRequest::on("a", &["front"])).unwrap();
    let b = t.e.create_sandbox(&SandboxRequest::on("b", &["front"])).unwrap();
    let bridge = t.e.network("front").unwrap().bridge.clone();
    let (va, vb) = (
        a.endpoints[0].host_ifname.clone(),
        b.endpoints[0].host_ifname.clone(),
    );
    let none = BTreeSet::new();

    // A veth.
    t.k.remove_link(&va);
    let r = t.e.repair(&none);
    assert_eq!(
        r.recreated,
        [format!("veth {va} of sandbox a on network front")],
        "{r:?}"
    );
    assert_eq!(t.k.master_of(&va).as_deref(), Some(bridge.as_str()));

    // The bridge: made again, and both ports (left off any bridge) with it.
    t.k.remove_link(&bridge);
    assert_eq!(t.k.master_of(&va), None);
    let r = t.e.repair(&none);
    assert!(r.recreated.contains(&format!("bridge {bridge}")), "{r:?}");
    for v in [&va, &vb] {
        assert_eq!(t.k.master_of(v).as_deref(), Some(bridge.as_str()), "{r:?}");
    }
    assert_eq!(t.k.addrs_of(&bridge), ["10.1.0.1/24".parse().unwrap()]);

    // The gateway address.
    t.k.remove_addr(&bridge, "10.1.0.1/24".parse().unwrap());
    let r = t.e.repair(&none);
    assert_eq!(
        r.recreated,
        [format!("address 10.1.0.1/24 on bridge {bridge}")],
        "{r:?}"
    );
    assert_eq!(t.k.addrs_of(&bridge), ["10.1.0.1/24".parse().unwrap()]);

    // A chain: the ruleset is written again.
    let nft = t.k.nft_batches().len();
    t.k.remove_chain("inet", "forward");
    let r = t.e.repair(&none);
    assert_eq!(r.recreated, ["nftables chain inet netd forward"], "{r:?}");
    assert_eq!(t.k.nft_batches().len(), nft + 1);
    assert!(t.k.nft_chain_exists("inet", "netd", "forward").unwrap());
    // A table: said once, not as each of its chains.
    t.k.remove_chain("bridge", "*");
    let r = t.e.repair(&none);
    assert_eq!(r.recreated, ["nftables table bridge netd"], "{r:?}");
    assert!(t.k.nft_chain_exists("bridge", "netd", "antispoof").unwrap());

    // A route inside a sandbox: looked at when its namespace reported a change.
    t.k.break_sandbox_link(&a.netns, "eth0");
    assert!(!t.e.repair(&none).acted(), "not looked at");
    let r = t.e.repair(&[PathBuf::from(&a.netns)].into());
    assert_eq!(
        r.recreated,
        ["addresses and routes of eth0 in sandbox a (network front)"],
        "{r:?}"
    );
    assert!(!t.k.sandbox_link_broken(&a.netns, "eth0"));

    // A leftover link nobody explains goes; after all this, a pass finds nothing.
    t.k.apply(&crate::plan::Step::CreateHostVeth(crate::plan::HostVethSpec {
        host_name: "ndstray".into(),
        bridge: bridge.clone(),
        alias: "netd:ep=gone/front".into(),
        mtu: 0,
        peer_name: "dkpstray".into(),
        peer_mac: [2, 0, 0, 0, 0, 1],
        vlan: None,
        hairpin: true,
        trunk: vec![],
    }))
    .unwrap();
    let r = t.e.repair(&none);
    assert_eq!(r.removed, ["link ndstray (netd:ep=gone/front)"], "{r:?}");
    assert!(!t.e.repair(&[PathBuf::from(&a.netns)].into()).acted());
}

/// The chains the firewall check looks for are the ruleset's own.
#[test]
fn firewall_chains_are_read_off_the_ruleset() {
    let c = super::firewall_chains().to_vec();
    assert!(c.contains(&("inet", "forward".to_string())), "{c:?}");
    assert!(c.contains(&("bridge", "antispoof".to_string())), "{c:?}");
    assert!(c.contains(&("inet", "user".to_string())), "{c:?}");
}
