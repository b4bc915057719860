//! The overlay driver: a bridge network (`bridge::network_up`) whose bridge also has a
//! VXLAN port carrying the network's VNI to the other nodes. Endpoints are the bridge's
//! veths. The remote endpoints' FDB and neighbour entries are the cluster agent's
//! (`cluster::fdb`), not the plan's: they follow the cluster, not local operations.

use super::bridge;
use crate::model::{vxlan_name, Network, OverlayLink};
use crate::plan::{Step, VxlanSpec};

/// The bridge, then its VXLAN port (the bridge must exist to take it).
/// ARP retransmit time of a sandbox's link on an overlay network. A remote endpoint's
/// neighbour entry reaches this node's VXLAN device one watch event after it is made;
/// a sandbox that asks for the address before that gets no answer, and with the
/// kernel's 1 s it would not ask again for a second. Asking every 100 ms costs nothing
/// outside the node: the VXLAN device answers ARP from its own entries (`proxy`) and
/// never floods a request to the underlay.
pub const ARP_RETRANS_MS: u32 = 100;

pub fn network_up(net: &Network, link: OverlayLink) -> Vec<Step> {
    let mut steps = bridge::network_up(net);
    for s in &mut steps {
        if let Step::EnsureBridge(b) = s {
            b.mac_seed = mac_seed(link);
        }
    }
    steps.push(Step::EnsureVxlan(VxlanSpec {
        name: vxlan_name(&net.name),
        bridge: net.bridge.clone(),
        vni: link.vni,
        local: link.local,
        port: link.port,
        mtu: net.mtu,
    }));
    steps
}

/// A node's bridge MAC differs from the other nodes' (`BridgeSpec::mac_seed`).
pub fn mac_seed(link: OverlayLink) -> String {
    format!("@{}", link.local)
}

/// The MAC of the bridge of `net` on the node whose VTEP is `link.local`.
pub fn bridge_mac(net: &Network, link: OverlayLink) -> String {
    let m = crate::kernel::linux::bridge_mac(&format!("{}{}", net.bridge, mac_seed(link)));
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The VXLAN port first: deleting a bridge leaves its ports behind, unenslaved.
pub fn network_down(net: &Network) -> Vec<Step> {
    let mut steps = vec![Step::DeleteLink {
        name: vxlan_name(&net.name),
        netns: None,
    }];
    steps.extend(bridge::network_down(net));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NetworkRequest;

    #[test]
    fn an_overlay_network_is_a_bridge_with_a_vxlan_port() {
        let mut req = NetworkRequest {
            name: "ov".into(),
            driver: Some("overlay".into()),
            mtu: Some(1450),
            ..Default::default()
        };
        let link = OverlayLink {
            vni: 7,
            local: "10.9.0.1".parse().unwrap(),
            port: 4789,
        };
        link.to_options(&mut req.options);
        let p = req.parse().unwrap();
        let sub = crate::model::Subnet {
            subnet: "10.20.0.0/24".parse().unwrap(),
            gateway: "10.20.0.1".parse().unwrap(),
            ip_range: None,
        };
        let net = p.into_network("id".into(), vec![sub], &req, "cluster", 0);
        assert_eq!(net.overlay(), Some(link));
        let up = network_up(&net, link);
        let Some(Step::EnsureVxlan(v)) = up.last() else {
            panic!("no vxlan step: {up:?}")
        };
        assert_eq!(
            (v.vni, v.mtu, v.bridge.as_str(), v.name.as_str()),
            (7, 1450, "netd-ov", "ndvx-ov")
        );
        assert!(up
            .iter()
            .any(|s| matches!(s, Step::EnsureBridge(b) if b.name == "netd-ov" && b.mtu == 1450)));
        let down = network_down(&net);
        assert!(matches!(&down[0], Step::DeleteLink { name, .. } if name == "ndvx-ov"));
        // A sandbox's link asks for ARP answers every 100 ms (the kernel's 1 s elsewhere).
        let ep = crate::model::Endpoint {
            network: "ov".into(),
            ifname: "eth0".into(),
            host_ifname: "ndv-x".into(),
            mac: "02:42:0a:14:00:02".into(),
            ipv4: Some("10.20.0.2/24".parse().unwrap()),
            ipv6: None,
            gateway4: Some("10.20.0.1".parse().unwrap()),
            gateway6: None,
            aliases: vec![],
            routes: vec![],
            no_default_route: false,
        };
        let Step::CreateVeth(v) = bridge::endpoint_up(&net, "a", std::path::Path::new("/x"), &ep, true)
        else {
            panic!("no veth")
        };
        assert_eq!(v.arp_retrans_ms, Some(ARP_RETRANS_MS));
        // Without the cluster's options, `-d overlay` is refused.
        let bare = NetworkRequest {
            name: "ov".into(),
            driver: Some("overlay".into()),
            ..Default::default()
        };
        assert!(bare.parse().unwrap_err().contains("--cluster"));
    }
}
