//! VXLAN requests for overlay networks: `ip link add NAME type vxlan id VNI local IP
//! dstport PORT nolearning proxy`, static FDB entries (`bridge fdb replace MAC dev NAME
//! dst VTEP self permanent`) and permanent neighbour entries (`ip neigh replace IP
//! lladdr MAC dev NAME nud permanent`), and the dump the tests and reconcile read back.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;

use super::{check_ifname, fmt_mac, Netlink};
use crate::kernel::KernelError;

/// An FDB entry as a dump reports it: the MAC and, for a VXLAN device's own entries,
/// the remote VTEP.
pub type FdbEntry = ([u8; 6], Option<IpAddr>);

/// What `add_vxlan` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanReq<'a> {
    pub name: &'a str,
    pub vni: u32,
    pub local: Ipv4Addr,
    pub port: u16,
    pub mtu: u32,
}

impl Netlink {
    /// `ip link add NAME mtu M type vxlan id VNI local IP dstport PORT nolearning proxy`,
    /// left down. No remote and no group: every destination comes from a static FDB
    /// entry, and a frame with none (broadcast, unknown unicast) is dropped, not flooded.
    /// `proxy` answers ARP requests from the neighbour entries, so ARP never crosses.
    pub fn add_vxlan(&mut self, r: &VxlanReq<'_>) -> Result<(), KernelError> {
        let op = || {
            format!(
                "add vxlan {} id {} local {} dstport {}",
                r.name, r.vni, r.local, r.port
            )
        };
        check_ifname(&op(), r.name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(r.name.to_string()));
        if r.mtu != 0 {
            m.attributes.push(LinkAttribute::Mtu(r.mtu));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(r.vni),
                InfoVxlan::Local(r.local),
                InfoVxlan::Port(r.port),
                InfoVxlan::Learning(false),
                InfoVxlan::Proxy(true),
            ])),
        ]));
        self.change(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|f| f.into_err(op()))
    }

    /// `bridge fdb replace MAC dev #IFINDEX dst VTEP self permanent`.
    pub fn fdb_replace(&mut self, ifindex: u32, mac: [u8; 6], vtep: Ipv4Addr) -> Result<(), KernelError> {
        let op = format!("fdb replace {} dev #{ifindex} dst {vtep}", fmt_mac(&mac));
        let m = fdb_msg(ifindex, mac, Some(vtep));
        self.change(RouteNetlinkMessage::NewNeighbour(m), NLM_F_CREATE | NLM_F_REPLACE)
            .map_err(|f| f.into_err(op))
    }

    /// `bridge fdb del MAC dev #IFINDEX self`; "already gone" is success.
    pub fn fdb_del(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), KernelError> {
        let op = format!("fdb del {} dev #{ifindex}", fmt_mac(&mac));
        match self.change(RouteNetlinkMessage::DelNeighbour(fdb_msg(ifindex, mac, None)), 0) {
            Ok(()) => Ok(()),
            Err(f) if matches!(f.errno, Some(Errno::ENOENT | Errno::ENODEV)) => Ok(()),
            Err(f) => Err(f.into_err(op)),
        }
    }

    /// `ip neigh replace IP lladdr MAC dev #IFINDEX nud permanent`.
    pub fn neigh_replace(&mut self, ifindex: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<(), KernelError> {
        let op = format!("neigh replace {ip} lladdr {} dev #{ifindex}", fmt_mac(&mac));
        let m = neigh_msg(ifindex, ip, Some(mac));
        self.change(RouteNetlinkMessage::NewNeighbour(m), NLM_F_CREATE | NLM_F_REPLACE)
            .map_err(|f| f.into_err(op))
    }

    /// `ip neigh del IP dev #IFINDEX`; "already gone" is success.
    pub fn neigh_del(&mut self, ifindex: u32, ip: Ipv4Addr) -> Result<(), KernelError> {
        let op = format!("neigh del {ip} dev #{ifindex}");
        match self.change(RouteNetlinkMessage::DelNeighbour(neigh_msg(ifindex, ip, None)), 0) {
            Ok(()) => Ok(()),
            Err(f) if matches!(f.errno, Some(Errno::ENOENT | Errno::ENODEV)) => Ok(()),
            Err(f) => Err(f.into_err(op)),
        }
    }

    /// `bridge fdb show dev #IFINDEX`: (MAC, destination VTEP) of every entry.
    pub fn fdb_entries(&mut self, ifindex: u32) -> Result<Vec<FdbEntry>, KernelError> {
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Bridge;
        self.dump("fdb", [RouteNetlinkMessage::GetNeighbour(req)], |m| match m {
            RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == ifindex => {
                let mut mac = None;
                let mut dst = None;
                for a in n.attributes {
                    match a {
                        NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                            let mut x = [0u8; 6];
                            x.copy_from_slice(&b);
                            mac = Some(x);
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                            dst = Some(IpAddr::V4(ip))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                            dst = Some(IpAddr::V6(ip))
                        }
                        // An AF_BRIDGE message's NDA_DST: the crate parses addresses by
                        // the message's family, so a VTEP arrives as raw bytes.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                            dst = match b.len() {
                                4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                                16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                                _ => None,
                            }
                        }
                        _ => {}
                    }
                }
                mac.map(|m| (m, dst))
            }
            _ => None,
        })
    }

    /// `ip -4 neigh show dev #IFINDEX nud permanent`: the addresses of its permanent
    /// neighbour entries.
    pub fn permanent_neighbours(&mut self, ifindex: u32) -> Result<Vec<Ipv4Addr>, KernelError> {
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Inet;
        self.dump("neigh", [RouteNetlinkMessage::GetNeighbour(req)], |m| match m {
            RouteNetlinkMessage::NewNeighbour(n)
                if n.header.ifindex == ifindex && n.header.state == NeighbourState::Permanent =>
            {
                n.attributes.into_iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(ip),
                    _ => None,
                })
            }
            _ => None,
        })
    }
}

fn fdb_msg(ifindex: u32, mac: [u8; 6], vtep: Option<Ipv4Addr>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::Permanent;
    // NTF_SELF: the entry is the VXLAN device's own table, not a bridge master's.
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    if let Some(ip) = vtep {
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    }
    m
}

fn neigh_msg(ifindex: u32, ip: Ipv4Addr, mac: Option<[u8; 6]>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    if let Some(mac) = mac {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    m
}
