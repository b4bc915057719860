//! Port publishing: the four DNAT maps (`pub4_addr`, `pub4_any`, `pub6_addr`,
//! `pub6_any`) and the chains that send local traffic through them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Elements;
use crate::firewall::batch::{Element, Part, Parts};
use crate::firewall::{FwNetwork, FwPort, FwState};

/// Where a published port goes in the DNAT maps.
enum PubKey {
    Addr4(Ipv4Addr),
    Any4,
    Addr6(Ipv6Addr),
    Any6,
}

/// The map a port belongs in, or None when its host address and target are of
/// different families (nothing can translate between them) or the port is 0.
fn pub_key(p: &FwPort) -> Option<PubKey> {
    if p.host_port == 0 || p.target_port == 0 {
        return None;
    }
    let host = p.host_ip.filter(|ip| !ip.is_unspecified());
    match (p.target, host) {
        (IpAddr::V4(_), None) => Some(PubKey::Any4),
        (IpAddr::V4(_), Some(IpAddr::V4(a))) => Some(PubKey::Addr4(a)),
        (IpAddr::V4(_), Some(IpAddr::V6(a))) => a.to_ipv4_mapped().map(PubKey::Addr4),
        (IpAddr::V6(_), None) => Some(PubKey::Any6),
        // `published` skips ::1 (no route_localnet for IPv6), so such an entry is dead.
        (IpAddr::V6(_), Some(IpAddr::V6(a))) if a.is_loopback() => None,
        (IpAddr::V6(_), Some(IpAddr::V6(a))) => Some(PubKey::Addr6(a)),
        (IpAddr::V6(_), Some(IpAddr::V4(_))) => None,
    }
}

/// Elements of one DNAT map: `[addr . ]proto . port : target . port`, where `want`
/// gives the address part of a port's key (empty for the any-address maps) or None when
/// the port is not for this map. When two ports claim the same key (the engine refuses
/// that), the first one wins, so the batch stays valid.
fn pub_map(st: &FwState, want: fn(&PubKey) -> Option<Vec<Part>>) -> Elements {
    let mut out = Elements::new();
    for p in &st.ports {
        let Some(mut key) = pub_key(p).as_ref().and_then(want) else {
            continue;
        };
        key.extend([Part::Proto(p.proto), Part::Port(p.host_port)]);
        out.entry(Parts(&key).to_string()).or_insert_with(|| Element {
            key,
            value: Some(vec![Part::ip(p.target), Part::Port(p.target_port)]),
        });
    }
    out
}

pub(super) fn pub4_addr(st: &FwState) -> Elements {
    pub_map(st, |k| match k {
        PubKey::Addr4(a) => Some(vec![Part::Ipv4(*a)]),
        _ => None,
    })
}

pub(super) fn pub4_any(st: &FwState) -> Elements {
    pub_map(st, |k| matches!(k, PubKey::Any4).then(Vec::new))
}

pub(super) fn pub6_addr(st: &FwState) -> Elements {
    pub_map(st, |k| match k {
        PubKey::Addr6(a) => Some(vec![Part::Ipv6(*a)]),
        _ => None,
    })
}

pub(super) fn pub6_any(st: &FwState) -> Elements {
    pub_map(st, |k| matches!(k, PubKey::Any6).then(Vec::new))
}

pub(super) fn published(_: &[&FwNetwork]) -> Vec<String> {
    // Ports bound to one address first: they are more specific than the any-address
    // ones, which may share protocol and port with them.
    vec![
        "meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @pub4_addr \
         comment \"IPv4, one host address\""
            .into(),
        "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @pub4_any \
         comment \"IPv4, every host address\""
            .into(),
        "ip6 daddr != ::1 dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6_addr \
         comment \"IPv6, one host address\""
            .into(),
        "ip6 daddr != ::1 dnat ip6 to meta l4proto . th dport map @pub6_any \
         comment \"IPv6, every host address\""
            .into(),
    ]
}

pub(super) fn nat_prerouting(_: &[&FwNetwork]) -> Vec<String> {
    vec!["fib daddr type local jump published comment \"published ports\"".into()]
}

pub(super) fn nat_output(_: &[&FwNetwork]) -> Vec<String> {
    vec!["fib daddr type local jump published comment \"published ports, from the host itself\"".into()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::ruleset::fixtures::*;
    use crate::model::Proto;

    #[test]
    fn ports_that_cannot_work_are_left_out() {
        let st = FwState {
            ports: vec![
                // Host address of the other family than the target.
                port(Some("192.0.2.1"), 80, Proto::Tcp, "fd00::2", 80),
                // ::1 cannot be DNATed out of the host.
                port(Some("::1"), 81, Proto::Tcp, "fd00::2", 80),
                port(None, 0, Proto::Tcp, "10.0.0.2", 80),
                // Unspecified host address means every address; v4-mapped means IPv4.
                port(Some("0.0.0.0"), 82, Proto::Udp, "10.0.0.2", 53),
                port(Some("::ffff:192.0.2.1"), 83, Proto::Tcp, "10.0.0.2", 80),
                // A duplicate key: the first one wins, the batch stays valid.
                port(None, 82, Proto::Udp, "10.0.0.3", 53),
            ],
            ..FwState::default()
        };
        assert!(pub6_addr(&st).is_empty() && pub6_any(&st).is_empty());
        assert_eq!(
            pub4_any(&st)
                .into_values()
                .map(|e| e.to_string())
                .collect::<Vec<_>>(),
            ["udp . 82 : 10.0.0.2 . 53"]
        );
        assert_eq!(
            pub4_addr(&st).keys().collect::<Vec<_>>(),
            ["192.0.2.1 . tcp . 83"]
        );
    }
}
