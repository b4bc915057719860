//! What netd's two tables are made of: every chain with its hook or purpose, every
//! set and map with its type, and which function fills each. `full` and `diff` walk
//! these tables, so the order here is the order of the batches.

use super::bridge::{
    antispoof, bridge_forward, bridge_prerouting, no_icc, port_ip4, port_ip6, port_mac, ports, trunk_ports,
};
use super::inet::{bridges, inet_forward, internal, nat_postrouting, same_bridge};
use super::publish::{nat_output, nat_prerouting, pub4_addr, pub4_any, pub6_addr, pub6_any, published};
use super::Elements;
use crate::firewall::batch::Family;
use crate::firewall::{FwNetwork, FwState};

/// A named set or map netd owns.
pub(super) struct Collection {
    pub(super) family: Family,
    pub(super) name: &'static str,
    pub(super) is_map: bool,
    /// The body of `add set|map ... { <decl> }`.
    pub(super) decl: &'static str,
    pub(super) elements: fn(&FwState) -> Elements,
}

/// A chain netd owns (all but the user chain, which is handled on its own).
pub(super) struct Chain {
    pub(super) family: Family,
    pub(super) name: &'static str,
    /// The body of `add chain ... { <decl> }`: a base chain's hook, or a comment.
    pub(super) decl: &'static str,
    /// Whether the rules depend on the networks (then `diff` regenerates the chain when
    /// they change). Chains that do not are written by `full` only.
    pub(super) per_network: bool,
    pub(super) rules: fn(&[&FwNetwork]) -> Vec<String>,
}

pub(super) const COLLECTIONS: &[Collection] = &[
    Collection {
        family: Family::Inet,
        name: "bridges",
        is_map: false,
        decl: "type ifname; comment \"bridges of all netd networks\";",
        elements: bridges,
    },
    Collection {
        family: Family::Inet,
        name: "internal",
        is_map: false,
        decl: "type ifname; comment \"bridges of internal networks (no way in or out)\";",
        elements: internal,
    },
    Collection {
        family: Family::Inet,
        name: "same_bridge",
        is_map: false,
        decl: "type ifname . ifname; comment \"bridge . bridge: traffic within one network\";",
        elements: same_bridge,
    },
    Collection {
        family: Family::Inet,
        name: "pub4_addr",
        is_map: true,
        decl: "type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; \
               comment \"IPv4 ports published on one host address\";",
        elements: pub4_addr,
    },
    Collection {
        family: Family::Inet,
        name: "pub4_any",
        is_map: true,
        decl: "type inet_proto . inet_service : ipv4_addr . inet_service; \
               comment \"IPv4 ports published on every host address\";",
        elements: pub4_any,
    },
    Collection {
        family: Family::Inet,
        name: "pub6_addr",
        is_map: true,
        decl: "type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; \
               comment \"IPv6 ports published on one host address\";",
        elements: pub6_addr,
    },
    Collection {
        family: Family::Inet,
        name: "pub6_any",
        is_map: true,
        decl: "type inet_proto . inet_service : ipv6_addr . inet_service; \
               comment \"IPv6 ports published on every host address\";",
        elements: pub6_any,
    },
    Collection {
        family: Family::Bridge,
        name: "ports",
        is_map: false,
        decl: "type ifname; comment \"host sides of endpoint veths\";",
        elements: ports,
    },
    Collection {
        family: Family::Bridge,
        name: "port_mac",
        is_map: false,
        decl: "type ifname . ether_addr; comment \"port . the endpoint's MAC\";",
        elements: port_mac,
    },
    Collection {
        family: Family::Bridge,
        name: "port_ip4",
        is_map: false,
        decl: "type ifname . ipv4_addr; comment \"port . the endpoint's IPv4 address\";",
        elements: port_ip4,
    },
    Collection {
        family: Family::Bridge,
        name: "port_ip6",
        is_map: false,
        decl: "type ifname . ipv6_addr; comment \"port . the endpoint's IPv6 address\";",
        elements: port_ip6,
    },
    Collection {
        family: Family::Bridge,
        name: "trunk_ports",
        is_map: false,
        decl: "type ifname; comment \"ports that carry VLANs tagged (vlan_trunk)\";",
        elements: trunk_ports,
    },
    Collection {
        family: Family::Bridge,
        name: "no_icc",
        is_map: false,
        decl: "type ifname; comment \"ports on networks with icc off\";",
        elements: no_icc,
    },
];

pub(super) const CHAINS: &[Chain] = &[
    Chain {
        family: Family::Inet,
        name: "forward",
        decl: "type filter hook forward priority filter; policy accept;",
        per_network: false,
        rules: inet_forward,
    },
    Chain {
        family: Family::Inet,
        name: "published",
        decl: "comment \"DNAT of published ports\";",
        per_network: false,
        rules: published,
    },
    Chain {
        family: Family::Inet,
        name: "prerouting",
        decl: "type nat hook prerouting priority dstnat; policy accept;",
        per_network: false,
        rules: nat_prerouting,
    },
    Chain {
        family: Family::Inet,
        name: "output",
        decl: "type nat hook output priority -100; policy accept;",
        per_network: false,
        rules: nat_output,
    },
    Chain {
        family: Family::Inet,
        name: "postrouting",
        decl: "type nat hook postrouting priority srcnat; policy accept;",
        per_network: true,
        rules: nat_postrouting,
    },
    Chain {
        family: Family::Bridge,
        name: "antispoof",
        decl: "comment \"frames from endpoints must carry the endpoint's own addresses\";",
        per_network: false,
        rules: antispoof,
    },
    Chain {
        family: Family::Bridge,
        name: "prerouting",
        decl: "type filter hook prerouting priority filter; policy accept;",
        per_network: false,
        rules: bridge_prerouting,
    },
    Chain {
        family: Family::Bridge,
        name: "forward",
        decl: "type filter hook forward priority filter; policy accept;",
        per_network: false,
        rules: bridge_forward,
    },
];
