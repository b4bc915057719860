//! The routing side of `table inet netd`: which bridges are netd's and which are
//! internal, the forward chain that isolates networks, and the one chain with rules per
//! network, postrouting's masquerades.

use super::services::VIP_MARK;
use super::{comment_name, ifname, ifname_part, set_of, Elements};
use crate::firewall::{FwNetwork, FwState, USER_CHAIN};

pub(super) fn bridges(st: &FwState) -> Elements {
    set_of(
        st.networks
            .iter()
            .filter_map(|n| Some(vec![ifname_part(&n.bridge)?])),
    )
}

pub(super) fn internal(st: &FwState) -> Elements {
    set_of(
        st.networks
            .iter()
            .filter(|n| n.internal)
            .filter_map(|n| Some(vec![ifname_part(&n.bridge)?])),
    )
}

pub(super) fn same_bridge(st: &FwState) -> Elements {
    set_of(
        st.networks
            .iter()
            .filter_map(|n| ifname_part(&n.bridge))
            .map(|b| vec![b.clone(), b]),
    )
}

pub(super) fn inet_forward(_: &[&FwNetwork]) -> Vec<String> {
    vec![
        format!("jump {USER_CHAIN}"),
        "ct state established,related accept comment \"replies\"".into(),
        // With br_netfilter loaded, frames bridged within one network pass here too;
        // ICC is enforced in the bridge table instead.
        "iifname . oifname @same_bridge accept comment \"within one network\"".into(),
        "iifname @internal drop comment \"internal networks: nothing leaves\"".into(),
        "oifname @internal drop comment \"internal networks: nothing enters\"".into(),
        // Before isolation, so a published port is reachable through a host address
        // from other netd networks too (Docker does the same).
        "ct status dnat oifname @bridges accept comment \"published ports\"".into(),
        // The eBPF routing mesh DNATs in tc, before conntrack: no `ct status dnat`, the
        // program's mark instead (`bpf_types::NODEPORT_MARK`).
        format!(
            "meta mark & {m:#010x} == {m:#010x} oifname @bridges accept comment \"published ports (eBPF routing mesh)\"",
            m = crate::kernel::bpf_types::NODEPORT_MARK
        ),
        "iifname @bridges oifname @bridges drop comment \"isolation between networks\"".into(),
        "oifname @bridges drop comment \"into a network only through published ports\"".into(),
        "iifname @bridges accept comment \"networks to the outside\"".into(),
    ]
}

pub(super) fn nat_postrouting(nets: &[&FwNetwork]) -> Vec<String> {
    // A client DNATed through a service VIP into a netd network keeps its address, also
    // from another network (a Kubernetes ClusterIP serves every network): the reply
    // is routed back through the host and un-DNATed there. Hairpin traffic is still
    // masqueraded by `svc_postrouting` (another base chain).
    // First: the first NAT chain that binds an address decides, and the accept below
    // only keeps this chain from binding one.
    let mut rules: Vec<String> = nets
        .iter()
        .filter_map(|n| {
            let s = n.overlay_snat?;
            let br = ifname(&n.bridge)?;
            Some(format!(
                "oifname {br} ct status dnat ip daddr != {}/{} snat ip to {} \
                 comment \"net {}: service traffic to other nodes\"",
                s.local.network(),
                s.local.prefix(),
                s.addr,
                comment_name(&n.name)
            ))
        })
        .collect();
    rules.push(format!(
        "oifname @bridges ct status dnat meta mark & {VIP_MARK:#010x} == {VIP_MARK:#010x} accept \
         comment \"service clients keep their address\""
    ));
    for n in nets {
        let Some(br) = ifname(&n.bridge) else { continue };
        let name = comment_name(&n.name);
        let subnets = [
            n.subnet4
                .map(|s| format!("ip saddr {}/{}", s.network(), s.prefix())),
            n.subnet6
                .map(|s| format!("ip6 saddr {}/{}", s.network(), s.prefix())),
        ];
        for saddr in subnets.iter().flatten() {
            if n.masquerade && !n.internal {
                let not_out = match n.vlan_bridge.as_deref().and_then(ifname) {
                    Some(l2) => format!("{{ {br}, {l2} }}"),
                    None => br.clone(),
                };
                rules.push(format!(
                    "{saddr} oifname != {not_out} masquerade comment \"net {name}\""
                ));
            }
            if !n.internal {
                // Not a client DNATed through a service VIP of its own network: its
                // reply passes conntrack on the bridge (nf_call_iptables), and east-west
                // it keeps its address (`services::VIP_MARK`).
                rules.push(format!(
                    "oifname {br} {saddr} ct status dnat meta mark & {VIP_MARK:#010x} == 0 masquerade \
                     comment \"net {name}: hairpin\""
                ));
            }
        }
    }
    rules.push(
        "oifname @bridges ip saddr 127.0.0.0/8 masquerade comment \"published ports via localhost\"".into(),
    );
    rules
}

#[cfg(test)]
mod tests {
    use crate::firewall::ruleset::fixtures::*;
    use crate::firewall::ruleset::full;
    use crate::firewall::FwState;

    /// An overlay network's service traffic to other nodes leaves from the node's own
    /// address, and that rule comes before the accept that keeps clients' addresses.
    #[test]
    fn overlay_snat_comes_first() {
        let mut o = net("ov", "netd-ov", "10.61.0.0/24", None);
        o.overlay_snat = Some(crate::firewall::OverlaySnat {
            local: "10.61.0.64/26".parse().unwrap(),
            addr: "10.61.0.254".parse().unwrap(),
        });
        let st = FwState {
            networks: vec![o],
            ..Default::default()
        };
        let b = full(&st, "netd test").to_string();
        let snat = r#"add rule inet netd postrouting oifname "netd-ov" ct status dnat ip daddr != 10.61.0.64/26 snat ip to 10.61.0.254 comment "net ov: service traffic to other nodes""#;
        let at = b.find(snat).unwrap_or_else(|| panic!("{b}"));
        let keep = b.find("service clients keep their address").unwrap();
        assert!(at < keep, "{b}");
    }

    /// A VLAN network's L3 link is its gateway `<bridge>.<vlan>`; frames bridged within
    /// the VLAN (br_netfilter) leave through the bridge itself and stay unmasqueraded.
    #[test]
    fn vlan_network_masquerades_past_its_gateway_and_bridge_only() {
        let mut v = net("v100", "vbr.100", "10.77.100.0/24", None);
        v.vlan_bridge = Some("vbr".into());
        let st = FwState {
            networks: vec![v],
            ..Default::default()
        };
        let b = full(&st, "netd test").to_string();
        assert!(
            b.contains(
                r#"ip saddr 10.77.100.0/24 oifname != { "vbr.100", "vbr" } masquerade comment "net v100""#
            ),
            "{b}"
        );
        assert!(
            b.contains(r#"oifname "vbr.100" ip saddr 10.77.100.0/24 ct status dnat meta mark & 0x00001000 == 0 masquerade"#),
            "{b}"
        );
    }
}
