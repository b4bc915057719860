//! `Engine::attach`: a network reused only when it is the one asked for.

use std::sync::Arc;

use crate::engine::{Engine, EngineConfig, EngineError};
use crate::kernel::fake::FakeKernel;
use crate::model::{
    EndpointRequest, Network, NetworkRequest, Sandbox, SandboxRequest, SubnetRequest, OPT_BRIDGE_NAME,
    OPT_HAIRPIN, OPT_VLAN, OPT_VLAN_TRUNK,
};
use crate::store::MemStore;

struct AttachRequest {
    network: NetworkRequest,
    sandbox: SandboxRequest,
}

#[derive(Debug)]
struct Attached {
    network: Network,
    sandbox: Sandbox,
}

/// `Engine::attach`, with a mismatch as `Ok(Err(reason))` and the sandbox count checked
/// unchanged by it.
fn attach(e: &mut Engine, r: &AttachRequest) -> Result<Result<Attached, String>, EngineError> {
    let before = e.sandboxes().count();
    match e.attach(&r.network, &r.sandbox) {
        Ok((network, sandbox)) => Ok(Ok(Attached { network, sandbox })),
        Err(EngineError::NetworkMismatch(why)) => {
            assert_eq!(e.sandboxes().count(), before, "a mismatch changes nothing");
            Ok(Err(why))
        }
        Err(e) => Err(e),
    }
}

fn engine() -> Engine {
    let cfg = EngineConfig {
        etc_netns_dir: std::env::temp_dir().join(format!("netd-attach-test-{}", std::process::id())),
        ..Default::default()
    };
    Engine::open(
        Arc::new(FakeKernel::default()),
        Arc::new(MemStore::default()),
        cfg,
    )
    .unwrap()
    .0
}

fn req(sandbox: &str, subnet: &str, bridge: &str) -> AttachRequest {
    AttachRequest {
        network: NetworkRequest {
            name: "podnet".into(),
            driver: Some("bridge".into()),
            subnets: vec![SubnetRequest {
                subnet: Some(subnet.into()),
                ..Default::default()
            }],
            options: [(OPT_BRIDGE_NAME.to_string(), bridge.to_string())].into(),
            ..Default::default()
        },
        sandbox: SandboxRequest {
            name: sandbox.into(),
            networks: vec![EndpointRequest {
                network: "podnet".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
    }
}

#[test]
fn creates_the_network_once_then_reuses_it() {
    let mut e = engine();
    let a = attach(&mut e, &req("s1", "10.60.0.0/24", "podbr0"))
        .unwrap()
        .unwrap();
    assert_eq!(a.network.bridge, "podbr0");
    assert_eq!(a.sandbox.endpoints[0].network, "podnet");
    let b = attach(&mut e, &req("s2", "10.60.0.0/24", "podbr0"))
        .unwrap()
        .unwrap();
    assert_eq!(b.network.id, a.network.id, "the existing network is reused");
    assert_ne!(b.sandbox.endpoints[0].ipv4, a.sandbox.endpoints[0].ipv4);
    // A taken sandbox name is the engine's conflict, as for POST /v1/sandboxes.
    assert!(matches!(
        attach(&mut e, &req("s1", "10.60.0.0/24", "podbr0")),
        Err(EngineError::SandboxExists(_))
    ));
}

#[test]
fn another_subnet_or_bridge_is_refused_and_changes_nothing() {
    let mut e = engine();
    attach(&mut e, &req("s1", "10.61.0.0/24", "podbr1"))
        .unwrap()
        .unwrap();
    let why = attach(&mut e, &req("s2", "10.62.0.0/24", "podbr1"))
        .unwrap()
        .unwrap_err();
    assert!(why.contains("subnets") && why.contains("10.62.0.0/24"), "{why}");
    let why = attach(&mut e, &req("s3", "10.61.0.0/24", "other0"))
        .unwrap()
        .unwrap_err();
    assert!(why.contains("bridge podbr1, not other0"), "{why}");
    assert_eq!(e.sandboxes().count(), 1);
    assert_eq!(e.networks().count(), 1);
}

#[test]
fn another_vlan_is_another_network() {
    let mut e = engine();
    let mut r = req("s1", "10.63.0.0/24", "podbr3");
    r.network.options.insert(OPT_VLAN.into(), "100".into());
    let a = attach(&mut e, &r).unwrap().unwrap();
    assert_eq!(a.network.vlan, Some(100));
    r.sandbox.name = "s2".into();
    r.network.options.insert(OPT_VLAN.into(), "200".into());
    let why = attach(&mut e, &r).unwrap().unwrap_err();
    assert!(why.contains("exists with vlan 100, not 200"), "{why}");
    r.network.options.remove(OPT_VLAN);
    let why = attach(&mut e, &r).unwrap().unwrap_err();
    assert!(why.contains("exists with vlan 100, not none"), "{why}");
    assert_eq!(e.sandboxes().count(), 1);
}

#[test]
fn another_hairpin_mode_is_refused_and_changes_nothing() {
    let mut e = engine();
    let mut r = req("s1", "10.64.0.0/24", "podbr4");
    r.network.options.insert(OPT_HAIRPIN.into(), "false".into());
    let a = attach(&mut e, &r).unwrap().unwrap();
    assert!(a.network.no_hairpin && !a.network.port_hairpin());
    r.sandbox.name = "s2".into();
    r.network.options.remove(OPT_HAIRPIN);
    let why = attach(&mut e, &r).unwrap().unwrap_err();
    assert!(why.contains("hairpin mode off on its ports, not on"), "{why}");
    r.network.options.insert(OPT_HAIRPIN.into(), "true".into());
    assert!(attach(&mut e, &r).unwrap().is_err());
    r.network.options.insert(OPT_HAIRPIN.into(), "false".into());
    attach(&mut e, &r).unwrap().unwrap();
    assert_eq!(e.sandboxes().count(), 2);
}

#[test]
fn another_vlan_trunk_is_another_network() {
    let mut e = engine();
    let mut r = req("s1", "10.65.0.0/24", "podbr5");
    r.network.options.insert(OPT_VLAN_TRUNK.into(), "101".into());
    // The fake kernel filters by VLAN.
    let a = attach(&mut e, &r).unwrap().unwrap();
    assert_eq!(a.network.vlan_trunk, vec![(101, 101)]);
    r.sandbox.name = "s2".into();
    r.network.options.insert(OPT_VLAN_TRUNK.into(), "101-102".into());
    let why = attach(&mut e, &r).unwrap().unwrap_err();
    assert!(why.contains("vlan trunk 101, not 101-102"), "{why}");
    r.network.options.remove(OPT_VLAN_TRUNK);
    let why = attach(&mut e, &r).unwrap().unwrap_err();
    assert!(why.contains("vlan trunk 101, not none"), "{why}");
    assert_eq!(e.sandboxes().count(), 1);
}

#[test]
fn a_malformed_option_for_an_existing_network_is_refused() {
    let mut e = engine();
    let mut r = req("s1", "10.66.0.0/24", "podbr6");
    attach(&mut e, &r).unwrap().unwrap();
    r.sandbox.name = "s2".into();
    // Read as "no VLAN" (another network) before; now the request's own fault.
    r.network.options.insert(OPT_VLAN.into(), "abc".into());
    let err = attach(&mut e, &r).expect_err("refused");
    assert!(matches!(err, EngineError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("option vlan=abc"), "{err}");
    assert_eq!(e.sandboxes().count(), 1);
}
