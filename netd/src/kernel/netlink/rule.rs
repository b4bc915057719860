//! Policy routing for the WireGuard overlay: `ip rule add fwmark M/M lookup T` and the
//! routes of table T (`ip route replace DST dev D table T`). Marked VXLAN packets of an
//! encrypted network look up T, which sends each peer's underlay address into the
//! WireGuard link; everything else (WireGuard's own UDP included) keeps the main table.

use ipnetwork::{IpNetwork, Ipv4Network};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;

use super::Netlink;
use crate::kernel::KernelError;

fn fwmark_rule(mark: u32, mask: u32, table: u32, priority: u32) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.action = RuleAction::ToTable;
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.attributes = vec![
        RuleAttribute::FwMark(mark),
        RuleAttribute::FwMask(mask),
        RuleAttribute::Table(table),
        RuleAttribute::Priority(priority),
    ];
    m
}

fn table_route(dst: Ipv4Network, table: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = dst.prefix();
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Link;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Table(table));
    m.attributes.push(RouteAttribute::Destination(RouteAddress::from(
        std::net::IpAddr::V4(dst.network()),
    )));
    m
}

impl Netlink {
    /// `ip rule add fwmark MARK/MASK lookup TABLE priority PRIO`; one already there is
    /// no error.
    pub fn add_fwmark_rule(
        &mut self,
        mark: u32,
        mask: u32,
        table: u32,
        priority: u32,
    ) -> Result<(), KernelError> {
        let m = fwmark_rule(mark, mask, table, priority);
        match self.change(RouteNetlinkMessage::NewRule(m), NLM_F_CREATE | NLM_F_EXCL) {
            Err(f) if f.errno == Some(Errno::EEXIST) => Ok(()),
            r => r.map_err(|f| {
                f.into_err(format!(
                    "add rule fwmark {mark:#x}/{mask:#x} lookup {table} priority {priority}"
                ))
            }),
        }
    }

    /// `ip rule del fwmark MARK/MASK lookup TABLE priority PRIO`; one already gone is no
    /// error.
    pub fn del_fwmark_rule(
        &mut self,
        mark: u32,
        mask: u32,
        table: u32,
        priority: u32,
    ) -> Result<(), KernelError> {
        let m = fwmark_rule(mark, mask, table, priority);
        match self.change(RouteNetlinkMessage::DelRule(m), 0) {
            Err(f) if matches!(f.errno, Some(Errno::ENOENT | Errno::ESRCH)) => Ok(()),
            r => r.map_err(|f| f.into_err(format!("delete rule fwmark {mark:#x}/{mask:#x} lookup {table}"))),
        }
    }

    /// `ip route replace DST dev OIF table TABLE`.
    pub fn replace_table_route(&mut self, dst: Ipv4Network, oif: u32, table: u32) -> Result<(), KernelError> {
        let mut m = table_route(dst, table);
        m.attributes.push(RouteAttribute::Oif(oif));
        self.change(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_REPLACE)
            .map_err(|f| f.into_err(format!("replace route {dst} table {table}")))
    }

    /// `ip route del DST table TABLE`; one already gone is no error.
    pub fn del_table_route(&mut self, dst: Ipv4Network, table: u32) -> Result<(), KernelError> {
        match self.change(RouteNetlinkMessage::DelRoute(table_route(dst, table)), 0) {
            Err(f) if matches!(f.errno, Some(Errno::ESRCH | Errno::ENOENT)) => Ok(()),
            r => r.map_err(|f| f.into_err(format!("delete route {dst} table {table}"))),
        }
    }

    /// The IPv4 destinations of table `table`.
    pub fn table_routes(&mut self, table: u32) -> Result<Vec<Ipv4Network>, KernelError> {
        Ok(self
            .routes()?
            .into_iter()
            .filter(|r| r.table == table)
            .filter_map(|r| match r.dst {
                IpNetwork::V4(d) => Some(d),
                _ => None,
            })
            .collect())
    }
}
