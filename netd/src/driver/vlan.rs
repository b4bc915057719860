//! VLAN networks on the bridge driver (see `model::vlan`): a VLAN-filtering bridge that
//! several such networks may share, and per network the gateway veth `<bridge>.<N>`
//! whose peer is an access port of VLAN N. Endpoints are ordinary veths whose host side
//! gets VLAN N (`VethSpec::vlan`).

use ipnetwork::IpNetwork;

use super::network_alias;
use crate::model::{gateway_peer_name, Network, VLAN_BRIDGE_ALIAS};
use crate::plan::{BridgeSpec, Step, VlanGatewaySpec};

/// The bridge (no addresses: they are the gateway link's), then the gateway.
pub(super) fn network_up(net: &Network, vlan: u16, addrs: Vec<IpNetwork>) -> Vec<Step> {
    vec![
        Step::EnsureBridge(BridgeSpec {
            name: net.bridge.clone(),
            alias: VLAN_BRIDGE_ALIAS.into(),
            mtu: net.mtu,
            addrs: Vec::new(),
            ipv6: false,
            vlan_filtering: true,
            promisc: false,
            trunk: false,
            vips: Vec::new(),
            nf_call: false,
            mac_seed: String::new(),
        }),
        Step::EnsureVlanGateway(VlanGatewaySpec {
            name: net.l3_link(),
            peer: gateway_peer_name(&net.bridge, vlan),
            bridge: net.bridge.clone(),
            alias: network_alias(&net.name),
            vlan,
            mtu: net.mtu,
            addrs,
            ipv6: net.ipv6,
        }),
    ]
}

#[cfg(test)]
mod tests {
    use crate::driver::{endpoint_up, network_down, network_up};
    use crate::model::{NetworkRequest, SubnetRequest};
    use crate::plan::Step;

    fn net(vlan: &str) -> crate::model::Network {
        let req = NetworkRequest {
            name: "v100".into(),
            subnets: vec![SubnetRequest {
                subnet: Some("10.9.0.0/24".into()),
                ..Default::default()
            }],
            options: [
                ("vlan".to_string(), vlan.to_string()),
                ("com.docker.network.bridge.name".to_string(), "cnivl".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let p = req.parse().unwrap();
        let subnets = vec![crate::model::Subnet {
            subnet: "10.9.0.0/24".parse().unwrap(),
            gateway: "10.9.0.1".parse().unwrap(),
            ip_range: None,
        }];
        p.into_network("id".into(), subnets, &req, "netctl", 0)
    }

    #[test]
    fn plan_of_a_vlan_network() {
        let n = net("100");
        let steps = network_up(&n);
        let Some(Step::EnsureBridge(b)) = steps.iter().find(|s| matches!(s, Step::EnsureBridge(_))) else {
            panic!("no bridge: {steps:?}");
        };
        assert!(b.vlan_filtering && b.addrs.is_empty() && b.alias == "netd:vlan-bridge");
        let Some(Step::EnsureVlanGateway(g)) = steps.last() else {
            panic!("gateway last: {steps:?}");
        };
        assert_eq!(
            (g.name.as_str(), g.bridge.as_str(), g.vlan),
            ("cnivl.100", "cnivl", 100)
        );
        assert_eq!(g.addrs, vec!["10.9.0.1/24".parse().unwrap()]);
        assert_eq!(g.alias, "netd:net=v100");
        // The gateway goes before the bridge (which the engine may keep).
        let down = network_down(&n);
        assert!(
            matches!(&down[..], [Step::DeleteLink { name: a, .. }, Step::DeleteLink { name: b, .. }] if a == "cnivl.100" && b == "cnivl")
        );
        let ep = crate::driver::test_endpoint("v100", "ndx", "02:42:0a:09:00:02", "10.9.0.2", "10.9.0.1");
        let Step::CreateVeth(v) = endpoint_up(&n, "s", std::path::Path::new("/n"), &ep, true) else {
            panic!("veth")
        };
        assert_eq!(v.vlan, Some(100));
        // Without a VLAN: the plain plan, gateway on the bridge.
        let plain = net("0");
        assert!(network_up(&plain)
            .iter()
            .all(|s| !matches!(s, Step::EnsureVlanGateway(_))));
    }
}
