//! Drivers turn model objects into kernel plans: `bridge`, and `macvlan` (which plans
//! ipvlan networks too: the same steps with another kind of child), and `overlay` (a
//! bridge with a VXLAN port), chosen per network by the functions below.

pub mod bridge;
pub mod macvlan;
pub mod overlay;
pub mod vlan;

use std::path::Path;

use crate::model::{Endpoint, Network};
use crate::plan::{SandboxSide, Step};

/// Steps that make a network's own kernel objects (a bridge; nothing for macvlan).
pub fn network_up(net: &Network) -> Vec<Step> {
    if net.has_parent() {
        macvlan::network_up(net)
    } else if let Some(link) = net.overlay() {
        overlay::network_up(net, link)
    } else {
        bridge::network_up(net)
    }
}

/// A parented network's own link, a dotted parent netd made, is the engine's to delete
/// (`Engine::vlan_parent_down`): only the kernel knows whether netd made it.
pub fn network_down(net: &Network) -> Vec<Step> {
    if net.has_parent() {
        Vec::new()
    } else if net.is_overlay() {
        overlay::network_down(net)
    } else {
        bridge::network_down(net)
    }
}

/// The link for one endpoint of `net` in the sandbox at `netns`.
pub fn endpoint_up(net: &Network, sandbox: &str, netns: &Path, ep: &Endpoint, default_route: bool) -> Step {
    if net.has_parent() {
        macvlan::endpoint_up(net, sandbox, netns, ep, default_route)
    } else {
        bridge::endpoint_up(net, sandbox, netns, ep, default_route)
    }
}

/// What the sandbox side of `endpoint_up`'s link carries (its addresses and routes),
/// for reconcile to check and restore in place.
pub fn sandbox_side(
    net: &Network,
    sandbox: &str,
    netns: &Path,
    ep: &Endpoint,
    default_route: bool,
) -> Option<SandboxSide> {
    match endpoint_up(net, sandbox, netns, ep, default_route) {
        Step::CreateVeth(v) => Some(SandboxSide {
            netns: v.netns,
            ifname: v.ifname,
            addrs: v.addrs,
            gw4: v.gw4,
            gw6: v.gw6,
            routes: v.routes,
        }),
        Step::CreateMacvlan(m) => m.sandbox,
        _ => None,
    }
}

pub fn endpoint_down(net: Option<&Network>, ep: &Endpoint, netns: &Path) -> Step {
    match net {
        Some(n) if n.has_parent() => macvlan::endpoint_down(ep, netns),
        _ => bridge::endpoint_down(ep),
    }
}

/// Marker aliases (IFLA_IFALIAS) that tell `ip link` readers, and reconcile, what a link is.
pub fn network_alias(network: &str) -> String {
    format!("netd:net={network}")
}

pub fn endpoint_alias(sandbox: &str, network: &str) -> String {
    format!("netd:ep={sandbox}/{network}")
}

/// The alias an endpoint's link carries while it is being made: marked as netd's from
/// its first moment (a crash leaves nothing anonymous), and swapped for `alias` as the
/// last step. It names no endpoint (a network name has no space), so reconcile removes
/// such a link, and recreates it when the store records the endpoint: the store commit
/// runs while the link is made, so a record may outlive a crash that cut the link short.
pub fn creating_alias(alias: &str) -> String {
    format!("{alias} (creating)")
}

/// What a `netd:` alias says about its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasOwner {
    Network(String),
    Endpoint { sandbox: String, network: String },
}

pub fn parse_alias(alias: &str) -> Option<AliasOwner> {
    if let Some(n) = alias.strip_prefix("netd:net=") {
        return Some(AliasOwner::Network(n.to_string()));
    }
    let rest = alias.strip_prefix("netd:ep=")?;
    let (s, n) = rest.split_once('/')?;
    Some(AliasOwner::Endpoint {
        sandbox: s.to_string(),
        network: n.to_string(),
    })
}

/// An endpoint of `network` with IPv4 `ip` (a /24) and gateway `gw`, as the driver tests
/// plan them.
#[cfg(test)]
pub(crate) fn test_endpoint(network: &str, host_ifname: &str, mac: &str, ip: &str, gw: &str) -> Endpoint {
    Endpoint {
        network: network.into(),
        ifname: "eth0".into(),
        host_ifname: host_ifname.into(),
        mac: mac.into(),
        ipv4: Some(format!("{ip}/24").parse().unwrap()),
        ipv6: None,
        gateway4: Some(gw.parse().unwrap()),
        gateway6: None,
        aliases: vec![],
        routes: vec![],
        no_default_route: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_roundtrip() {
        assert_eq!(
            parse_alias(&network_alias("front")),
            Some(AliasOwner::Network("front".into()))
        );
        assert_eq!(
            parse_alias(&endpoint_alias("web.1", "front")),
            Some(AliasOwner::Endpoint {
                sandbox: "web.1".into(),
                network: "front".into()
            })
        );
        assert_eq!(parse_alias("docker0"), None);
        // A link still being made belongs to no endpoint of the network.
        assert_ne!(
            parse_alias(&creating_alias(&endpoint_alias("web.1", "front"))),
            parse_alias(&endpoint_alias("web.1", "front"))
        );
    }
}
