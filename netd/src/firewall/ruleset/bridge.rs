//! `table bridge netd`: anti-spoofing (each port may only send with its endpoint's own
//! MAC and addresses) and ICC off (no frames between the ports of such a network).

use super::{ifname_part, set_of, Elements};
use crate::firewall::batch::Part;
use crate::firewall::{FwEndpoint, FwNetwork, FwState};

pub(super) fn ports(st: &FwState) -> Elements {
    set_of(
        st.endpoints
            .iter()
            .filter_map(|e| Some(vec![ifname_part(&e.port)?])),
    )
}

pub(super) fn port_mac(st: &FwState) -> Elements {
    set_of(
        st.endpoints
            .iter()
            .filter_map(|e| Some(vec![ifname_part(&e.port)?, Part::Ether(e.mac)])),
    )
}

pub(super) fn port_ip4(st: &FwState) -> Elements {
    set_of(
        st.endpoints
            .iter()
            .filter_map(|e| Some(vec![ifname_part(&e.port)?, Part::Ipv4(e.ipv4?)])),
    )
}

pub(super) fn port_ip6(st: &FwState) -> Elements {
    set_of(
        st.endpoints
            .iter()
            .filter_map(|e| Some(vec![ifname_part(&e.port)?, Part::Ipv6(e.ipv6?)])),
    )
}

pub(super) fn trunk_ports(st: &FwState) -> Elements {
    set_of(
        st.endpoints
            .iter()
            .filter(|e| e.trunk)
            .filter_map(|e| Some(vec![ifname_part(&e.port)?])),
    )
}

/// Ports of endpoints with an address in a network whose ICC is off.
pub(super) fn no_icc(st: &FwState) -> Elements {
    let on_isolated = |e: &FwEndpoint| {
        st.networks.iter().filter(|n| !n.icc).any(|n| {
            let in4 = matches!((n.subnet4, e.ipv4), (Some(s), Some(a)) if s.contains(a));
            let in6 = matches!((n.subnet6, e.ipv6), (Some(s), Some(a)) if s.contains(a));
            in4 || in6
        })
    };
    set_of(
        st.endpoints
            .iter()
            .filter(|e| on_isolated(e))
            .filter_map(|e| Some(vec![ifname_part(&e.port)?])),
    )
}

pub(super) fn bridge_prerouting(_: &[&FwNetwork]) -> Vec<String> {
    vec!["iifname @ports jump antispoof comment \"frames from endpoints\"".into()]
}

pub(super) fn antispoof(_: &[&FwNetwork]) -> Vec<String> {
    vec![
        // What a trunk's VLANs carry is the container's own business (the reference
        // plugin checks nothing at all); the frame's source MAC is still checked.
        "ether type 8021q iifname @trunk_ports iifname . ether saddr @port_mac accept comment \"VLANs of a trunk port\""
            .into(),
        "ether type { 8021q, 8021ad } drop comment \"tagged frames would slip past these checks\"".into(),
        "iifname . ether saddr != @port_mac drop comment \"source MAC not the endpoint's\"".into(),
        "ether type arp iifname . arp saddr ether != @port_mac drop comment \"ARP sender MAC not the endpoint's\""
            .into(),
        "ether type arp arp saddr ip 0.0.0.0 accept comment \"ARP probes\"".into(),
        "ether type arp iifname . arp saddr ip != @port_ip4 drop comment \"ARP sender IP not the endpoint's\""
            .into(),
        "ether type ip iifname . ip saddr != @port_ip4 drop comment \"IPv4 source not the endpoint's\"".into(),
        "ether type ip6 ip6 saddr { ::, fe80::/10 } accept comment \"neighbour discovery\"".into(),
        "ether type ip6 iifname . ip6 saddr != @port_ip6 drop comment \"IPv6 source not the endpoint's\"".into(),
    ]
}

pub(super) fn bridge_forward(_: &[&FwNetwork]) -> Vec<String> {
    vec!["iifname @no_icc drop comment \"icc off: no traffic between containers\"".into()]
}

#[cfg(test)]
mod tests {
    use crate::firewall::ruleset::fixtures::*;
    use crate::firewall::ruleset::{diff, full};

    /// A trunk endpoint's port is in `@trunk_ports` (its tagged frames with its own
    /// MAC pass anti-spoofing); attaching one is an element change only.
    #[test]
    fn trunk_ports_are_elements() {
        let old = sample();
        let mut new = sample();
        let mut t = ep("vethT", 9, "10.89.0.9", None);
        t.trunk = true;
        new.endpoints.push(t);
        let d = diff(&old, &new).to_string();
        assert!(d.lines().all(|l| l.starts_with("add element ")), "{d}");
        assert!(
            d.contains("add element bridge netd trunk_ports { \"vethT\" }"),
            "{d}"
        );
        assert!(d.contains("add element bridge netd ports { \"vethT\" }"), "{d}");
        assert!(!full(&old, "t")
            .to_string()
            .contains("add element bridge netd trunk_ports"));
        assert!(full(&new, "t")
            .to_string()
            .contains("add element bridge netd trunk_ports { \"vethT\" }"));
    }

    #[test]
    fn icc_flip_moves_ports_in_and_out_of_no_icc() {
        let old = sample();
        let mut new = sample();
        new.networks[0].icc = false; // frontend
        let d = diff(&old, &new).to_string();
        assert!(
            d.contains("add element bridge netd no_icc { \"vethA\", \"vethB\" }"),
            "{d}"
        );
    }
}
