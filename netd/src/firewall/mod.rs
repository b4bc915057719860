//! nftables isolation, masquerade, anti-spoofing and port publishing.
//!
//! The engine describes what the firewall must do as a `FwState` (plain data derived from
//! the model); `ruleset` turns a state into nft batches (`batch::Batch`): `full` (create
//! or restore everything netd owns) and `diff` (the smallest batch from one state to the
//! next). Each batch is applied by the kernel layer as one atomic transaction.

pub mod batch;
pub mod ruleset;
pub mod svc_cmd;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use crate::model::Proto;

/// Table names: `inet netd` (filter + nat), `bridge netd` (anti-spoofing, ICC).
pub const TABLE: &str = "netd";
/// The chain netd creates once and never flushes (Docker's DOCKER-USER): jumped to first
/// from netd's forward chain, for the operator's own rules.
pub const USER_CHAIN: &str = "user";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwNetwork {
    pub name: String,
    pub bridge: String,
    pub subnet4: Option<Ipv4Network>,
    pub subnet6: Option<Ipv6Network>,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
    /// A VLAN network (`bridge` is then its gateway link `<bridge>.<vlan>`): the
    /// VLAN-filtering bridge underneath. With br_netfilter, frames bridged within the
    /// VLAN pass postrouting with it as output device, and must not be masqueraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_bridge: Option<String>,
    /// An overlay network whose services may send to backends on other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_snat: Option<OverlaySnat>,
}

/// The way back for service traffic this node DNATs to a backend on another node of an
/// overlay network: without it the backend would answer the client straight over the
/// overlay (or through its own node), past the conntrack entry that holds the DNAT.
/// SNAT to the node's own address on the network (`addr`, held by its bridge and
/// published like an endpoint) brings the reply back here, as Docker's per-node
/// `lb-<network>` address does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlaySnat {
    /// The addresses of this node's endpoints (its block): backends there need no SNAT.
    pub local: Ipv4Network,
    pub addr: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FwEndpoint {
    /// Host-side veth (a bridge port).
    pub port: String,
    pub mac: [u8; 6],
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// A trunk port (`Network::vlan_trunk`): its tagged frames pass anti-spoofing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trunk: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FwPort {
    /// None: every local address of the host (of the family of `target`).
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub proto: Proto,
    pub target: IpAddr,
    pub target_port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwState {
    pub networks: Vec<FwNetwork>,
    pub endpoints: Vec<FwEndpoint>,
    pub ports: Vec<FwPort>,
}

/// The nft batch from `old` to `new`, fast when only endpoints and ports changed (every
/// attach and detach): it hands `ruleset::diff` just the entries that differ, so the
/// cost follows the change, not the number of endpoints on the host.
pub fn delta(old: &FwState, new: &FwState) -> batch::Batch {
    use std::collections::HashSet;
    if old.networks != new.networks {
        return ruleset::diff(old, new);
    }
    fn minus<T: Clone + Eq + std::hash::Hash>(a: &[T], b: &[T]) -> Vec<T> {
        let b: HashSet<&T> = b.iter().collect();
        a.iter().filter(|x| !b.contains(x)).cloned().collect()
    }
    let was = FwState {
        networks: old.networks.clone(),
        endpoints: minus(&old.endpoints, &new.endpoints),
        ports: minus(&old.ports, &new.ports),
    };
    let now = FwState {
        networks: new.networks.clone(),
        endpoints: minus(&new.endpoints, &old.endpoints),
        ports: minus(&new.ports, &old.ports),
    };
    ruleset::diff(&was, &now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: &str, last: u8) -> FwEndpoint {
        FwEndpoint {
            port: port.into(),
            mac: [2, 0x42, 10, 1, 0, last],
            ipv4: Some(std::net::Ipv4Addr::new(10, 1, 0, last)),
            ipv6: None,
            trunk: false,
        }
    }

    #[test]
    fn delta_equals_full_diff() {
        let net = FwNetwork {
            name: "a".into(),
            bridge: "netd-a".into(),
            subnet4: Some("10.1.0.0/24".parse().unwrap()),
            subnet6: None,
            internal: false,
            icc: false,
            masquerade: true,
            vlan_bridge: None,
            overlay_snat: None,
        };
        let base: Vec<FwEndpoint> = (2..50).map(|i| ep(&format!("v{i}"), i)).collect();
        let old = FwState {
            networks: vec![net.clone()],
            endpoints: base.clone(),
            ports: vec![],
        };
        let mut new = old.clone();
        new.endpoints.remove(3);
        new.endpoints.push(ep("vnew", 77));
        new.endpoints[0].ipv4 = Some(std::net::Ipv4Addr::new(10, 1, 0, 99));
        let sort = |b: batch::Batch| {
            let s = b.to_string();
            let mut l: Vec<String> = s
                .lines()
                .map(|l| {
                    let mut parts: Vec<String> = l.split(", ").map(String::from).collect();
                    parts.sort();
                    parts.join(", ")
                })
                .collect();
            l.sort();
            l
        };
        assert_eq!(sort(delta(&old, &new)), sort(ruleset::diff(&old, &new)));
        assert!(delta(&old, &old).is_empty());
    }
}
