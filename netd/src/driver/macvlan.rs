//! The macvlan driver: no bridge and no NAT. Each endpoint is a macvlan child of the
//! network's parent link, created from the host namespace straight into the sandbox
//! under a temporary name, then renamed `ethN` and marked with the endpoint alias. The
//! sandbox has its own MAC and address on the parent's LAN, whose router is the gateway
//! (it is not assigned anywhere on the host), as with Docker's macvlan driver.
//!
//! The kernel property users trip over: a macvlan child cannot talk to its own parent's
//! host (traffic between them never crosses the parent's wire), so the host does not
//! reach its sandboxes over the parent; other machines on the LAN do.
//!
//! ipvlan networks are the same plan with another kind of child: every child has the
//! parent's MAC (the kernel tells them apart by IP address), so a LAN that limits MACs
//! per port still takes them. In l2 mode the LAN's router is the gateway as for
//! macvlan; in l3 and l3s the parent routes for its children and answers no ARP for
//! them, so a sandbox's default route is `dev eth0` with no gateway, and the LAN
//! reaches the sandboxes through a route to their subnet via the host.
//!
//! A dotted parent (`eth0.10`) that does not exist is made as an 802.1Q link by the
//! network's first step and marked with the network's alias; the engine deletes it with
//! the network (`Engine::vlan_parent_down`), and never one it did not make.

use std::net::IpAddr;
use std::path::Path;

use ipnetwork::IpNetwork;

use super::bridge::{parse_mac, sandbox_addrs};
use super::{endpoint_alias, network_alias};
use crate::model::{macvlan_tmp_name, Endpoint, Network, Route};
use crate::plan::{ChildKind, DummyParentSpec, MacvlanSpec, SandboxSide, Step, VlanParentSpec};

/// A macvlan or ipvlan network needs nothing in the kernel until its first endpoint,
/// except a dotted parent or an internal ipvlan network's dummy, made when missing.
pub fn network_up(net: &Network) -> Vec<Step> {
    if let Some(name) = net.dummy_parent() {
        return vec![Step::EnsureDummyParent(DummyParentSpec {
            name: name.to_string(),
            alias: network_alias(&net.name),
        })];
    }
    match (net.vlan_parent(), &net.parent) {
        (Some((link, id)), Some(name)) => vec![Step::EnsureVlanParent(VlanParentSpec {
            name: name.clone(),
            link,
            id,
            alias: network_alias(&net.name),
        })],
        _ => Vec::new(),
    }
}

/// The child for one endpoint, moved into `netns`. Default routes as for bridge
/// endpoints: only on the sandbox's first network, and never on an internal one (that is
/// what `--internal` means for Docker's macvlan: no gateway).
pub fn endpoint_up(net: &Network, sandbox: &str, netns: &Path, ep: &Endpoint, default_route: bool) -> Step {
    let route = ep.carries_gateway_routes(default_route, net.internal);
    let addrs = sandbox_addrs(ep);
    let mut routes = ep.routes.clone();
    let (gw4, gw6) = if !route {
        (None, None)
    } else if net.routes_without_gateway() {
        // ipvlan l3: the default route is the device itself, per family the sandbox has.
        let any4: IpNetwork = "0.0.0.0/0".parse().expect("literal");
        let any6: IpNetwork = "::/0".parse().expect("literal");
        for (has, dst) in [(ep.ipv4.is_some(), any4), (ep.ipv6.is_some(), any6)] {
            if has {
                routes.insert(0, Route { dst, gw: None });
            }
        }
        (None, None)
    } else {
        (ep.gateway4, ep.gateway6)
    };
    Step::CreateMacvlan(MacvlanSpec {
        tmp_name: macvlan_tmp_name(sandbox, &net.name),
        sandbox: Some(SandboxSide {
            netns: netns.to_path_buf(),
            ifname: ep.ifname.clone(),
            addrs,
            gw4,
            gw6,
            routes,
        }),
        ..spec(net, sandbox, ep)
    })
}

/// For engines that move and configure the link themselves (Docker): the child stays in
/// the host namespace as `ep.host_ifname`.
pub fn host_endpoint_up(net: &Network, sandbox: &str, ep: &Endpoint) -> Step {
    Step::CreateMacvlan(MacvlanSpec {
        tmp_name: ep.host_ifname.clone(),
        ..spec(net, sandbox, ep)
    })
}

fn spec(net: &Network, sandbox: &str, ep: &Endpoint) -> MacvlanSpec {
    let (kind, mode, flag) = if net.is_ipvlan() {
        (
            ChildKind::Ipvlan,
            net.ipvlan_mode.clone().unwrap_or_else(|| "l2".into()),
            net.ipvlan_flag.clone().unwrap_or_else(|| "bridge".into()),
        )
    } else {
        (
            ChildKind::Macvlan,
            net.macvlan_mode.clone().unwrap_or_else(|| "bridge".into()),
            String::new(),
        )
    };
    MacvlanSpec {
        tmp_name: String::new(),
        parent: net.parent.clone().unwrap_or_default(),
        kind,
        mode,
        flag,
        alias: endpoint_alias(sandbox, &net.name),
        mtu: net.mtu,
        mac: parse_mac(&ep.mac)
            .unwrap_or_else(|| super::bridge::mac_for(ep.ipv4.map(|n| IpAddr::V4(n.ip())))),
        sandbox: None,
        parent_in_sandbox: net.parent_in_sandbox,
    }
}

/// An endpoint with a host-side name (Docker's, before `Join` or after `Leave`) is
/// deleted there; otherwise the child is in the sandbox namespace.
pub fn endpoint_down(ep: &Endpoint, netns: &Path) -> Step {
    if ep.host_ifname.is_empty() {
        Step::DeleteLink {
            name: ep.ifname.clone(),
            netns: Some(netns.to_path_buf()),
        }
    } else {
        Step::DeleteLink {
            name: ep.host_ifname.clone(),
            netns: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Subnet;

    fn net(internal: bool) -> Network {
        Network {
            name: "lan".into(),
            id: "x".into(),
            driver: "macvlan".into(),
            bridge: String::new(),
            subnets: vec![Subnet {
                subnet: "192.168.50.0/24".parse().unwrap(),
                gateway: "192.168.50.254".parse().unwrap(),
                ip_range: None,
            }],
            ipv6: false,
            internal,
            icc: true,
            masquerade: false,
            host_binding_ipv4: None,
            mtu: 0,
            parent: Some("eth0".into()),
            macvlan_mode: Some("vepa".into()),
            ipvlan_mode: None,
            ipvlan_flag: None,
            parent_in_sandbox: false,
            vlan: None,
            inhibit_ipv4: false,
            inhibit_ipv6: false,
            promisc: false,
            no_hairpin: false,
            vlan_trunk: Vec::new(),
            options: Default::default(),
            labels: Default::default(),
            owner: "netctl".into(),
            created: 0,
        }
    }

    fn ep() -> Endpoint {
        Endpoint {
            network: "lan".into(),
            ifname: "eth0".into(),
            host_ifname: String::new(),
            mac: "02:42:c0:a8:32:02".into(),
            ipv4: Some("192.168.50.2/24".parse().unwrap()),
            ipv6: None,
            gateway4: Some("192.168.50.254".parse().unwrap()),
            gateway6: None,
            aliases: vec![],
            routes: vec![],
            no_default_route: false,
        }
    }

    #[test]
    fn child_goes_into_the_sandbox_with_the_lan_router_as_gateway() {
        let Step::CreateMacvlan(m) =
            endpoint_up(&net(false), "web", Path::new("/run/netns/web"), &ep(), true)
        else {
            panic!("not a macvlan step");
        };
        assert_eq!((m.parent.as_str(), m.mode.as_str()), ("eth0", "vepa"));
        assert_eq!(m.alias, "netd:ep=web/lan");
        assert!(m.tmp_name.starts_with("ndmweb-"));
        let sb = m.sandbox.unwrap();
        assert_eq!(sb.ifname, "eth0");
        assert_eq!(sb.gw4, Some("192.168.50.254".parse().unwrap()));
        assert_eq!(
            endpoint_down(&ep(), Path::new("/run/netns/web")),
            Step::DeleteLink {
                name: "eth0".into(),
                netns: Some("/run/netns/web".into())
            }
        );
    }

    #[test]
    fn internal_networks_get_no_default_route() {
        let Step::CreateMacvlan(m) = endpoint_up(&net(true), "web", Path::new("/n"), &ep(), true) else {
            panic!("not a macvlan step");
        };
        assert_eq!(m.sandbox.unwrap().gw4, None);
    }
}
