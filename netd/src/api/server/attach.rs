//! `POST /v1/attach`: a sandbox on a network that is created if missing, in one request
//! and under one engine lock. It is what a CNI ADD needs (netd-cni's delegating mode): one
//! round trip instead of "look the network up, then create the sandbox", and no window in
//! which the network can change between the two.
//!
//! An existing network must be the one asked for: every requested subnet among its own,
//! and the requested bridge name (option `com.docker.network.bridge.name`) its bridge.
//! Otherwise the answer is 412 (Precondition Failed) and nothing changes; a sandbox name
//! that is taken is 409, as for `POST /v1/sandboxes`.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::{body, created, with_engine, ApiError, ApiResult, Shared};
use crate::engine::{Engine, EngineError};
use crate::model::{
    option_is_true, Network, NetworkRequest, Sandbox, SandboxRequest, DRIVER_MACVLAN, OPT_BRIDGE_NAME,
    OPT_HAIRPIN, OPT_INHIBIT_IPV4, OPT_INHIBIT_IPV6, OPT_PARENT, OPT_PROMISC, OPT_VLAN, OPT_VLAN_TRUNK,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    pub network: NetworkRequest,
    pub sandbox: SandboxRequest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attached {
    pub network: Network,
    pub sandbox: Sandbox,
}

/// Why the existing `net` is not the network `req` describes, if it is not.
pub fn mismatch(net: &Network, req: &NetworkRequest) -> Option<String> {
    for s in req.subnets.iter().filter_map(|s| s.subnet.as_deref()) {
        // An unparsable subnet cannot match; creation would have refused it too.
        let want = s.trim().parse::<IpNetwork>().ok();
        if !net.subnets.iter().any(|n| Some(n.subnet) == want) {
            let have: Vec<String> = net.subnets.iter().map(|n| n.subnet.to_string()).collect();
            return Some(format!(
                "network {} exists with subnets {have:?}, not {s}",
                net.name
            ));
        }
    }
    let want_macvlan = req.driver.as_deref() == Some(DRIVER_MACVLAN);
    if want_macvlan != net.is_macvlan() {
        return Some(format!(
            "network {} exists with driver {}, not {}",
            net.name,
            net.driver,
            req.driver.as_deref().unwrap_or("bridge")
        ));
    }
    if want_macvlan {
        let parent = req.options.get(OPT_PARENT);
        if parent != net.parent.as_ref() {
            return Some(format!(
                "network {} exists as macvlan on {}, not on {}",
                net.name,
                net.parent.as_deref().unwrap_or("-"),
                parent.map(String::as_str).unwrap_or("-")
            ));
        }
        return None;
    }
    // The VLAN is the network's: a config asking for another (or none) is another network.
    let want_vlan = req
        .options
        .get(OPT_VLAN)
        .and_then(|v| v.trim().parse::<u16>().ok())
        .filter(|v| *v != 0);
    if want_vlan != net.vlan {
        let show = |v: Option<u16>| v.map_or("none".to_string(), |v| v.to_string());
        return Some(format!(
            "network {} exists with vlan {}, not {}",
            net.name,
            show(net.vlan),
            show(want_vlan)
        ));
    }
    // Whether the bridge holds the gateway: another answer is another network.
    let inhibited = |k: &str| req.options.get(k).is_some_and(|v| option_is_true(v));
    let want = (inhibited(OPT_INHIBIT_IPV4), inhibited(OPT_INHIBIT_IPV6));
    if want != (net.inhibit_ipv4, net.inhibit_ipv6) {
        let show = |(v4, v6): (bool, bool)| match (v4, v6) {
            (false, false) => "its gateway on the bridge",
            (true, true) => "no gateway on the bridge",
            (true, false) => "no IPv4 gateway on the bridge",
            (false, true) => "no IPv6 gateway on the bridge",
        };
        return Some(format!(
            "network {} exists with {}, not {}",
            net.name,
            show((net.inhibit_ipv4, net.inhibit_ipv6)),
            show(want)
        ));
    }
    let promisc = req.options.get(OPT_PROMISC).is_some_and(|v| option_is_true(v));
    if promisc != net.promisc {
        let show = |p: bool| {
            if p {
                "a promiscuous bridge"
            } else {
                "a bridge that is not promiscuous"
            }
        };
        return Some(format!(
            "network {} exists with {}, not {}",
            net.name,
            show(net.promisc),
            show(promisc)
        ));
    }
    // The trunk's VLANs: another list is another network.
    let trunk = req
        .options
        .get(OPT_VLAN_TRUNK)
        .and_then(|v| crate::model::parse_vid_ranges(v).ok())
        .unwrap_or_default();
    if trunk != net.vlan_trunk {
        let show = |t: &[crate::model::VidRange]| {
            if t.is_empty() {
                "none".to_string()
            } else {
                crate::model::format_vid_ranges(t)
            }
        };
        return Some(format!(
            "network {} exists with vlan trunk {}, not {}",
            net.name,
            show(&net.vlan_trunk),
            show(&trunk)
        ));
    }
    // Absent means on, as for a new network (`OPT_HAIRPIN`).
    let no_hairpin = req.options.get(OPT_HAIRPIN).is_some_and(|v| !option_is_true(v));
    if no_hairpin != net.no_hairpin {
        let show = |off: bool| if off { "off" } else { "on" };
        return Some(format!(
            "network {} exists with hairpin mode {} on its ports, not {}",
            net.name,
            show(net.no_hairpin),
            show(no_hairpin)
        ));
    }
    match req.options.get(OPT_BRIDGE_NAME) {
        Some(b) if *b != net.bridge => Some(format!(
            "network {} exists with bridge {}, not {b}",
            net.name, net.bridge
        )),
        _ => None,
    }
}

/// The operation itself: `Ok(Err(reason))` when the network exists but differs.
pub fn attach(e: &mut Engine, req: &AttachRequest) -> Result<Result<Attached, String>, EngineError> {
    let network = match e.network(&req.network.name) {
        Ok(n) => n.clone(),
        Err(_) => e.create_network(&req.network)?,
    };
    if let Some(why) = mismatch(&network, &req.network) {
        return Ok(Err(why));
    }
    let sandbox = e.create_sandbox(&req.sandbox)?;
    Ok(Ok(Attached { network, sandbox }))
}

pub(super) async fn handler(State(st): State<Shared>, b: Body) -> ApiResult<Response> {
    let req: AttachRequest = body(b).await?;
    match with_engine(&st, move |e| attach(e, &req)).await? {
        Ok(a) => Ok(created(a)),
        Err(why) => Err(ApiError(StatusCode::PRECONDITION_FAILED, why)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::EngineConfig;
    use crate::kernel::fake::FakeKernel;
    use crate::model::{EndpointRequest, SubnetRequest};
    use crate::store::MemStore;

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
            Err(EngineError::Conflict(_))
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
}
