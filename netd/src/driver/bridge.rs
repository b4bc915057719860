//! The bridge driver: a Linux bridge per network with the gateway address on it, and a
//! veth pair per endpoint whose sandbox end is named `ethN` inside the sandbox.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

use super::{endpoint_alias, network_alias};
use crate::model::{Endpoint, Network};
use crate::plan::{BridgeSpec, Step, VethSpec};

/// Steps that bring a network's bridge up. Forwarding is a host-wide switch that a
/// bridge with a gateway needs; it is not undone when the network goes (other users).
pub fn network_up(net: &Network) -> Vec<Step> {
    let mut steps = vec![Step::Sysctl {
        key: "net/ipv4/ip_forward".into(),
        value: "1".into(),
    }];
    if net.ipv6 {
        steps.push(Step::Sysctl {
            key: "net/ipv6/conf/all/forwarding".into(),
            value: "1".into(),
        });
    }
    // A family whose gateway is inhibited is routed by someone else on the bridge's LAN.
    let addrs: Vec<IpNetwork> = net
        .subnets
        .iter()
        .filter(|s| {
            !(if s.subnet.is_ipv4() {
                net.inhibit_ipv4
            } else {
                net.inhibit_ipv6
            })
        })
        .filter_map(|s| IpNetwork::new(s.gateway, s.subnet.prefix()).ok())
        .collect();
    if let Some(vlan) = net.vlan {
        steps.extend(super::vlan::network_up(net, vlan, addrs));
        return steps;
    }
    steps.push(Step::EnsureBridge(BridgeSpec {
        name: net.bridge.clone(),
        alias: network_alias(&net.name),
        mtu: net.mtu,
        addrs,
        ipv6: net.ipv6,
        vlan_filtering: false,
        promisc: net.promisc,
        trunk: !net.vlan_trunk.is_empty(),
        vips: Vec::new(),
        nf_call: false,
        mac_seed: String::new(),
    }));
    steps
}

/// The gateway link of a VLAN network, then the bridge (which the engine keeps while
/// other VLAN networks share it).
pub fn network_down(net: &Network) -> Vec<Step> {
    let mut steps = Vec::new();
    if net.vlan.is_some() {
        steps.push(Step::DeleteLink {
            name: net.l3_link(),
            netns: None,
        });
    }
    steps.push(Step::DeleteLink {
        name: net.bridge.clone(),
        netns: None,
    });
    steps
}

/// The veth for one endpoint. `default_route` is true for the sandbox's first network,
/// which carries its default routes (internal networks never do: no way out).
pub fn endpoint_up(net: &Network, sandbox: &str, netns: &Path, ep: &Endpoint, default_route: bool) -> Step {
    let route = ep.carries_gateway_routes(default_route, net.internal);
    let addrs = sandbox_addrs(ep);
    Step::CreateVeth(VethSpec {
        host_name: ep.host_ifname.clone(),
        bridge: net.bridge.clone(),
        alias: endpoint_alias(sandbox, &net.name),
        mtu: net.mtu,
        netns: PathBuf::from(netns),
        ifname: ep.ifname.clone(),
        mac: parse_mac(&ep.mac).unwrap_or([0x02, 0x42, 0, 0, 0, 0]),
        addrs,
        gw4: if route { ep.gateway4 } else { None },
        gw6: if route { ep.gateway6 } else { None },
        routes: ep.routes.clone(),
        vlan: net.vlan,
        hairpin: net.port_hairpin(),
        trunk: net.vlan_trunk.clone(),
        arp_retrans_ms: net.is_overlay().then_some(super::overlay::ARP_RETRANS_MS),
    })
}

/// The endpoint's addresses as the sandbox side of its link carries them (IPv4, then IPv6).
pub(super) fn sandbox_addrs(ep: &Endpoint) -> Vec<IpNetwork> {
    ep.ipv4
        .map(IpNetwork::V4)
        .into_iter()
        .chain(ep.ipv6.map(IpNetwork::V6))
        .collect()
}

pub fn endpoint_down(ep: &Endpoint) -> Step {
    Step::DeleteLink {
        name: ep.host_ifname.clone(),
        netns: None,
    }
}

/// Docker's MAC scheme: 02:42 followed by the IPv4 address, so MACs are unique wherever
/// addresses are; a random locally administered MAC when there is no IPv4 address.
pub fn mac_for(ip: Option<IpAddr>) -> [u8; 6] {
    match ip {
        Some(IpAddr::V4(v4)) => {
            let o = v4.octets();
            [0x02, 0x42, o[0], o[1], o[2], o[3]]
        }
        _ => {
            let r: [u8; 4] = rand::random();
            [0x02, 0x43, r[0], r[1], r[2], r[3]]
        }
    }
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let m: [u8; 6] = parts.try_into().ok()?;
    // A MAC with the multicast bit set cannot be a unicast interface address.
    if m[0] & 1 == 1 || m == [0; 6] {
        return None;
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_helpers() {
        let m = mac_for(Some("172.18.0.2".parse().unwrap()));
        assert_eq!(format_mac(&m), "02:42:ac:12:00:02");
        assert_eq!(parse_mac("02:42:ac:12:00:02"), Some(m));
        assert_eq!(parse_mac("01:00:5e:00:00:01"), None);
        assert_eq!(parse_mac("zz:00:00:00:00:00"), None);
        assert_eq!(parse_mac("02:42:ac:12:00"), None);
    }

    /// `inhibit_ipv4` / `inhibit_ipv6`: the bridge holds no gateway address of that
    /// family; the other family's stays.
    #[test]
    fn inhibited_gateways_stay_off_the_bridge() {
        use crate::model::{NetworkRequest, Subnet, SubnetRequest, OPT_INHIBIT_IPV4, OPT_INHIBIT_IPV6};
        let plan = |opts: &[(&str, &str)]| {
            let req = NetworkRequest {
                name: "lan".into(),
                ipv6: true,
                subnets: vec![
                    SubnetRequest {
                        subnet: Some("10.8.0.0/24".into()),
                        ..Default::default()
                    },
                    SubnetRequest {
                        subnet: Some("fd00:8::/64".into()),
                        ..Default::default()
                    },
                ],
                options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            };
            let p = req.parse().expect("parse");
            let subnets = vec![
                Subnet {
                    subnet: "10.8.0.0/24".parse().unwrap(),
                    gateway: "10.8.0.1".parse().unwrap(),
                    ip_range: None,
                },
                Subnet {
                    subnet: "fd00:8::/64".parse().unwrap(),
                    gateway: "fd00:8::1".parse().unwrap(),
                    ip_range: None,
                },
            ];
            let net = p.into_network("id".into(), subnets, &req, "netctl", 0);
            let bridge = network_up(&net).into_iter().find_map(|s| match s {
                Step::EnsureBridge(b) => Some(b),
                _ => None,
            });
            bridge
                .expect("bridge")
                .addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(plan(&[]), ["10.8.0.1/24", "fd00:8::1/64"]);
        assert_eq!(plan(&[(OPT_INHIBIT_IPV4, "true")]), ["fd00:8::1/64"]);
        assert_eq!(
            plan(&[(OPT_INHIBIT_IPV4, "yes"), (OPT_INHIBIT_IPV6, "1")]),
            Vec::<String>::new()
        );
        assert_eq!(plan(&[(OPT_INHIBIT_IPV4, "false")]).len(), 2);
        let bad = NetworkRequest {
            name: "lan".into(),
            options: [(OPT_INHIBIT_IPV4.to_string(), "maybe".to_string())].into(),
            ..Default::default()
        };
        assert!(bad.parse().unwrap_err().contains("expected true or false"));
    }

    /// `netd.bridge.promisc`: the bridge promiscuous, its ports without hairpin; not
    /// for VLAN networks (their bridge is shared) nor macvlan (no bridge).
    /// `netd.bridge.hairpin=false`: the ports without hairpin, on any bridge network.
    #[test]
    fn a_promiscuous_network_has_ports_without_hairpin() {
        use crate::model::{
            NetworkRequest, Subnet, SubnetRequest, OPT_HAIRPIN, OPT_PARENT, OPT_PROMISC, OPT_VLAN,
        };
        let req = |opts: &[(&str, &str)], driver: Option<&str>| NetworkRequest {
            name: "lan".into(),
            driver: driver.map(Into::into),
            subnets: vec![SubnetRequest {
                subnet: Some("10.8.0.0/24".into()),
                ..Default::default()
            }],
            options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        let plan = |opts: &[(&str, &str)]| {
            let r = req(opts, None);
            let subnets = vec![Subnet {
                subnet: "10.8.0.0/24".parse().unwrap(),
                gateway: "10.8.0.1".parse().unwrap(),
                ip_range: None,
            }];
            let net = r
                .parse()
                .expect("parse")
                .into_network("id".into(), subnets, &r, "netctl", 0);
            let bridge = network_up(&net).into_iter().find_map(|s| match s {
                Step::EnsureBridge(b) => Some(b),
                _ => None,
            });
            let ep =
                crate::driver::test_endpoint("lan", "netd-v", "02:42:0a:08:00:02", "10.8.0.2", "10.8.0.1");
            let Step::CreateVeth(v) = endpoint_up(&net, "s", Path::new("/n"), &ep, true) else {
                panic!("not a veth")
            };
            (bridge.expect("bridge").promisc, v.hairpin)
        };
        assert_eq!(plan(&[(OPT_PROMISC, "true")]), (true, false));
        assert_eq!(plan(&[(OPT_PROMISC, "false")]), (false, true));
        assert_eq!(plan(&[]), (false, true), "hairpin by default");
        assert_eq!(plan(&[(OPT_HAIRPIN, "false")]), (false, false));
        assert_eq!(plan(&[(OPT_HAIRPIN, "true")]), (false, true));
        assert_eq!(plan(&[(OPT_HAIRPIN, "false"), (OPT_VLAN, "5")]), (false, false));
        assert!(req(&[(OPT_HAIRPIN, "maybe")], None).parse().is_err());
        let mv = req(&[(OPT_HAIRPIN, "false"), (OPT_PARENT, "eth0")], Some("macvlan"));
        assert!(mv.parse().unwrap_err().contains("bridge option"));
        let vlan = req(&[(OPT_PROMISC, "true"), (OPT_VLAN, "5")], None);
        assert!(vlan
            .parse()
            .unwrap_err()
            .contains("VLAN networks share their bridge"));
        let mv = req(&[(OPT_PROMISC, "true"), (OPT_PARENT, "eth0")], Some("macvlan"));
        assert!(mv.parse().unwrap_err().contains("bridge option"));
    }

    /// `netd.bridge.vlan_trunk`: the network's own bridge filters by VLAN with the
    /// default VLAN 1 (the gateway stays on it); each port carries the trunk tagged.
    #[test]
    fn a_trunk_network_filters_by_vlan_and_its_ports_carry_the_trunk() {
        use crate::model::{NetworkRequest, Subnet, SubnetRequest, OPT_VLAN_TRUNK};
        let r = NetworkRequest {
            name: "tr".into(),
            subnets: vec![SubnetRequest {
                subnet: Some("10.8.1.0/24".into()),
                ..Default::default()
            }],
            options: [(OPT_VLAN_TRUNK.to_string(), "101,200-299".to_string())].into(),
            ..Default::default()
        };
        let subnets = vec![Subnet {
            subnet: "10.8.1.0/24".parse().unwrap(),
            gateway: "10.8.1.1".parse().unwrap(),
            ip_range: None,
        }];
        let net = r
            .parse()
            .unwrap()
            .into_network("id".into(), subnets, &r, "netctl", 0);
        let steps = network_up(&net);
        let Some(b) = steps.iter().find_map(|s| match s {
            Step::EnsureBridge(b) => Some(b),
            _ => None,
        }) else {
            panic!("{steps:?}")
        };
        assert!(b.trunk && !b.vlan_filtering);
        assert_eq!(
            b.addrs,
            vec!["10.8.1.1/24".parse().unwrap()],
            "the gateway on the bridge"
        );
        let ep = crate::driver::test_endpoint("tr", "netd-t", "02:42:0a:08:01:02", "10.8.1.2", "10.8.1.1");
        let Step::CreateVeth(v) = endpoint_up(&net, "s", Path::new("/n"), &ep, true) else {
            panic!("not a veth")
        };
        assert_eq!((v.vlan, v.trunk), (None, vec![(101, 101), (200, 299)]));
    }
}
