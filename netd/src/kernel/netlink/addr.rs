//! Address requests: `ip addr add`, `ip addr del`, `ip addr show`.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;

use super::{Fail, Netlink};
use crate::kernel::KernelError;

/// An address as `ip addr` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub net: IpNetwork,
    /// RT_SCOPE_* (0 universe, 253 link, 254 host).
    pub scope: u8,
}

impl Netlink {
    /// `ip addr add NET dev INDEX`. IPv6 addresses get IFA_F_NODAD: netd assigns them
    /// from its own IPAM, so duplicate detection only delays them (~1 s of "tentative",
    /// during which the sandbox cannot use or bind them).
    pub fn add_address(&mut self, index: u32, net: IpNetwork) -> Result<(), KernelError> {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = net.prefix();
        m.header.scope = AddressScope::Universe;
        match net.ip() {
            IpAddr::V4(ip) => {
                m.header.family = AddressFamily::Inet;
                // Like `ip addr add`: IFA_LOCAL is the address, IFA_ADDRESS the peer
                // (same on a broadcast link); the kernel derives the prefix route.
                m.attributes.push(AddressAttribute::Local(ip.into()));
                m.attributes.push(AddressAttribute::Address(ip.into()));
                if net.prefix() < 31 {
                    if let ipnetwork::IpNetwork::V4(n) = net {
                        m.attributes.push(AddressAttribute::Broadcast(n.broadcast()));
                    }
                }
            }
            IpAddr::V6(ip) => {
                m.header.family = AddressFamily::Inet6;
                m.header.flags = AddressHeaderFlags::Nodad;
                m.attributes.push(AddressAttribute::Address(ip.into()));
                m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        self.change(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|f| f.into_err(format!("add address {net} dev #{index}")))
    }

    /// `ip addr del NET dev INDEX`; EADDRNOTAVAIL (already gone) is success.
    pub fn del_address(&mut self, index: u32, net: IpNetwork) -> Result<(), KernelError> {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = net.prefix();
        m.header.family = match net {
            IpNetwork::V4(_) => AddressFamily::Inet,
            IpNetwork::V6(_) => AddressFamily::Inet6,
        };
        if net.is_ipv4() {
            m.attributes.push(AddressAttribute::Local(net.ip()));
        }
        m.attributes.push(AddressAttribute::Address(net.ip()));
        match self.change(RouteNetlinkMessage::DelAddress(m), 0) {
            Ok(())
            | Err(Fail {
                errno: Some(Errno::EADDRNOTAVAIL),
                ..
            }) => Ok(()),
            Err(f) => Err(f.into_err(format!("delete address {net} dev #{index}"))),
        }
    }

    /// `ip addr show`, both families.
    pub fn addresses(&mut self) -> Result<Vec<Addr>, KernelError> {
        let reqs = [AddressFamily::Inet, AddressFamily::Inet6].map(|family| {
            let mut m = AddressMessage::default();
            m.header.family = family;
            RouteNetlinkMessage::GetAddress(m)
        });
        self.dump("addresses", reqs, |r| match r {
            RouteNetlinkMessage::NewAddress(a) => to_addr(a),
            _ => None,
        })
    }
}

fn to_addr(a: AddressMessage) -> Option<Addr> {
    // IFA_LOCAL is the interface's own address on point-to-point links; prefer it.
    let mut local = None;
    let mut address = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    Some(Addr {
        index: a.header.index,
        net: IpNetwork::new(ip, a.header.prefix_len).ok()?,
        scope: u8::from(a.header.scope),
    })
}
