//! States the ruleset tests share.

use crate::firewall::{FwEndpoint, FwNetwork, FwPort, FwState};
use crate::model::Proto;

pub fn net(name: &str, bridge: &str, s4: &str, s6: Option<&str>) -> FwNetwork {
    FwNetwork {
        name: name.into(),
        bridge: bridge.into(),
        subnet4: Some(s4.parse().unwrap()),
        subnet6: s6.map(|s| s.parse().unwrap()),
        internal: false,
        icc: true,
        masquerade: true,
        vlan_bridge: None,
        overlay_snat: None,
    }
}

pub fn ep(port: &str, last: u8, ip4: &str, ip6: Option<&str>) -> FwEndpoint {
    FwEndpoint {
        port: port.into(),
        mac: [0x02, 0x42, 0, 0, 0, last],
        ipv4: Some(ip4.parse().unwrap()),
        ipv6: ip6.map(|s| s.parse().unwrap()),
        trunk: false,
    }
}

pub fn port(host_ip: Option<&str>, host_port: u16, proto: Proto, target: &str, target_port: u16) -> FwPort {
    FwPort {
        host_ip: host_ip.map(|s| s.parse().unwrap()),
        host_port,
        proto,
        target: target.parse().unwrap(),
        target_port,
    }
}

/// Two ordinary networks (one dual-stack), one internal with ICC off, three
/// endpoints and ports of every kind.
pub fn sample() -> FwState {
    let mut back = net("backend", "netd-backend", "10.89.1.0/24", None);
    back.internal = true;
    back.icc = false;
    FwState {
        networks: vec![
            net("frontend", "netd-frontend", "10.89.0.0/24", Some("fd00:89::/64")),
            back,
        ],
        endpoints: vec![
            ep("vethA", 2, "10.89.0.2", Some("fd00:89::2")),
            ep("vethB", 3, "10.89.0.3", None),
            ep("vethC", 4, "10.89.1.2", None),
        ],
        ports: vec![
            port(None, 8080, Proto::Tcp, "10.89.0.2", 80),
            port(None, 8080, Proto::Tcp, "fd00:89::2", 80),
            port(Some("127.0.0.1"), 5353, Proto::Udp, "10.89.0.3", 53),
            port(Some("fd00:1::1"), 9000, Proto::Tcp, "fd00:89::2", 9000),
        ],
    }
}
