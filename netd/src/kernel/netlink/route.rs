//! Route requests: `ip route add`, `ip route show table all`, and what is read from
//! them (the default route's link, one interface's configuration for CNI's CHECK).

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::Netlink;
use crate::kernel::KernelError;

/// A route's destination and where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub table: u32,
    pub kind: RouteType,
    /// RTA_OIF: the interface the route goes out of (none for multipath routes).
    pub oif: Option<u32>,
    /// RTA_PRIORITY (the metric), 0 when absent.
    pub metric: u32,
    /// RTA_GATEWAY, when the route goes via one.
    pub gw: Option<IpAddr>,
}

/// What one interface carries: its addresses (universe scope) and the main table's
/// unicast routes out of it, with their gateways. For CNI's CHECK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub addrs: Vec<IpNetwork>,
    pub routes: Vec<(IpNetwork, Option<IpAddr>)>,
}

impl Netlink {
    /// `ip route add default via GW [dev INDEX]` in the main table.
    pub fn add_default_route(&mut self, gw: IpAddr, oif: Option<u32>) -> Result<(), KernelError> {
        let any = match gw {
            IpAddr::V4(_) => IpNetwork::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
            IpAddr::V6(_) => IpNetwork::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
        }
        .expect("prefix 0 is valid");
        self.add_route(any, Some(gw), oif).map_err(|e| match e {
            KernelError::Netlink { errno, msg, .. } => KernelError::Netlink {
                op: format!("add default route via {gw}"),
                errno,
                msg,
            },
            e => e,
        })
    }

    /// What a sandbox's interface `ifname` (index `index`) needs once it is there: up,
    /// its addresses, its default routes, then its extra routes. Used for a veth peer and
    /// for a macvlan child alike.
    pub fn configure_sandbox_link(
        &mut self,
        index: u32,
        ifname: &str,
        addrs: &[IpNetwork],
        gw4: Option<std::net::Ipv4Addr>,
        gw6: Option<std::net::Ipv6Addr>,
        routes: &[crate::model::Route],
    ) -> Result<(), KernelError> {
        // Up before the routes: a gateway route on a down link is refused (ENETDOWN).
        self.set_up(ifname)?;
        for a in addrs {
            self.add_address(index, *a)?;
        }
        if let Some(gw) = gw4 {
            self.add_default_route(IpAddr::V4(gw), Some(index))?;
        }
        if let Some(gw) = gw6 {
            self.add_default_route(IpAddr::V6(gw), Some(index))?;
        }
        for r in routes {
            self.add_route(r.dst, r.gw, Some(index))?;
        }
        Ok(())
    }

    /// `ip ntable change name arp_cache dev IFNAME retrans MS`: how long the link waits
    /// for an ARP answer before it asks again.
    pub fn set_arp_retrans(&mut self, index: u32, ifname: &str, ms: u32) -> Result<(), KernelError> {
        use netlink_packet_route::neighbour_table::{
            NeighbourTableAttribute, NeighbourTableMessage, NeighbourTableParameter,
        };
        let mut m = NeighbourTableMessage::default();
        m.header.family = AddressFamily::Inet;
        m.attributes
            .push(NeighbourTableAttribute::Name("arp_cache".into()));
        m.attributes.push(NeighbourTableAttribute::Parms(vec![
            NeighbourTableParameter::Ifindex(index),
            NeighbourTableParameter::RetransTime(u64::from(ms)),
        ]));
        self.change(RouteNetlinkMessage::SetNeighbourTable(m), 0)
            .map_err(|f| f.into_err(format!("set ARP retransmit time of {ifname} to {ms} ms")))
    }

    /// `ip route add DST [via GW] [dev OIF]`; without a gateway the route is on-link.
    pub fn add_route(
        &mut self,
        dst: IpNetwork,
        gw: Option<IpAddr>,
        oif: Option<u32>,
    ) -> Result<(), KernelError> {
        let mut m = RouteMessage::default();
        m.header.address_family = if dst.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.destination_prefix_length = dst.prefix();
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        // RTPROT_BOOT is what `ip route add` uses: "configured by an admin tool".
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if gw.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.header.kind = RouteType::Unicast;
        if dst.prefix() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(dst.network())));
        }
        if let Some(gw) = gw {
            m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        let via = gw.map_or(String::new(), |g| format!(" via {g}"));
        self.change(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|f| f.into_err(format!("add route to {dst}{via}")))
    }

    /// The interface of the IPv4 default route in the main table with the lowest metric
    /// (what `ip route get` picks for an outside address), if there is one.
    pub fn default_route_link(&mut self) -> Result<Option<String>, KernelError> {
        let best = self
            .routes()?
            .into_iter()
            .filter(|r| {
                r.dst.is_ipv4()
                    && r.dst.prefix() == 0
                    && r.table == u32::from(RouteHeader::RT_TABLE_MAIN)
                    && r.kind == RouteType::Unicast
            })
            .filter_map(|r| r.oif.map(|i| (r.metric, i)))
            .min();
        let Some((_, index)) = best else {
            return Ok(None);
        };
        Ok(self
            .links()?
            .into_iter()
            .find(|l| l.index == index)
            .map(|l| l.name))
    }

    /// The addresses and routes of the link `name`, `None` when there is no such link.
    pub fn interface_config(&mut self, name: &str) -> Result<Option<InterfaceConfig>, KernelError> {
        let Some(index) = self.link_index(name)? else {
            return Ok(None);
        };
        let addrs = self
            .addresses()?
            .into_iter()
            .filter(|a| a.index == index && a.scope == 0)
            .map(|a| a.net)
            .collect();
        let routes = self
            .routes()?
            .into_iter()
            .filter(|r| {
                r.oif == Some(index)
                    && r.table == u32::from(RouteHeader::RT_TABLE_MAIN)
                    && r.kind == RouteType::Unicast
            })
            .map(|r| (r.dst, r.gw))
            .collect();
        Ok(Some(InterfaceConfig { addrs, routes }))
    }

    /// `ip route show table all` for IPv4 and IPv6 (no cached clones).
    pub fn routes(&mut self) -> Result<Vec<Route>, KernelError> {
        // One dump per family: an AF_UNSPEC dump also walks multicast (ipmr) tables,
        // whose messages are of no use here.
        let reqs = [AddressFamily::Inet, AddressFamily::Inet6].map(|family| {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            RouteNetlinkMessage::GetRoute(m)
        });
        self.dump("routes", reqs, |r| match r {
            RouteNetlinkMessage::NewRoute(r) => to_route(r),
            _ => None,
        })
    }
}

fn to_route(r: RouteMessage) -> Option<Route> {
    let mut table = u32::from(r.header.table);
    let mut dst = None;
    let (mut oif, mut metric, mut gw) = (None, 0, None);
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(IpAddr::V4(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => gw = Some(IpAddr::V6(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
            _ => {}
        }
    }
    // No RTA_DST means the default route (0.0.0.0/0 or ::/0).
    let dst = dst.unwrap_or(match r.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    });
    Some(Route {
        dst: IpNetwork::new(dst, r.header.destination_prefix_length).ok()?,
        table,
        kind: r.header.kind,
        oif,
        metric,
        gw,
    })
}
