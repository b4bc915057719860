//! Link requests: `ip link add` (bridge, veth), `ip link set`, `ip link del` and
//! `ip link show`.

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind, InfoPortData,
    InfoPortKind, InfoVeth, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;

use super::{check_ifname, fmt_mac, Fail, Netlink};
use crate::kernel::KernelError;

/// A link as a dump or lookup reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND ("bridge", "veth", ...); `None` for plain devices like `lo`.
    pub kind: Option<String>,
    pub alias: Option<String>,
    /// Index of the master (bridge) the link is enslaved to.
    pub master: Option<u32>,
    pub mtu: u32,
    pub up: bool,
}

/// Attribute changes for `ip link set`: only the `Some` fields (and a `true`
/// `no_ipv6_addrs`) are sent, in one request.
#[derive(Debug, Clone, Default)]
pub struct LinkChange<'a> {
    pub master: Option<u32>,
    pub mtu: Option<u32>,
    pub alias: Option<&'a str>,
    pub mac: Option<[u8; 6]>,
    pub up: Option<bool>,
    /// A bridge port's hairpin mode (`ip link set NAME type bridge_slave hairpin on`).
    pub hairpin: Option<bool>,
    /// `ip link set NAME promisc on|off`.
    pub promisc: Option<bool>,
    /// `addrgenmode none`: IPv6 makes no address of its own on the link (no link-local,
    /// so no DAD, router or MLD solicitations when it comes up). Must come before the
    /// link is first up. Skipped where IPv6 is disabled at boot.
    pub no_ipv6_addrs: bool,
}

/// `ip link add NAME [mtu M] [master B] [up] type veth peer name PEER netns NS
/// [address MAC] [mtu M] [up]`.
#[derive(Debug, Clone)]
pub struct VethReq<'a> {
    pub name: &'a str,
    /// 0 keeps the kernel default (1500).
    pub mtu: u32,
    pub master: Option<u32>,
    pub up: bool,
    pub peer_name: &'a str,
    /// Namespace of the peer: the peer is created there directly, so it never appears in
    /// the host namespace (no rename/move race, no name clash with a host `eth0`).
    /// `None`: the peer stays in the socket's namespace.
    pub peer_netns: Option<BorrowedFd<'a>>,
    pub peer_mac: Option<[u8; 6]>,
    // No `peer_up`: the kernel configures the peer's ifi_flags before it ties the pair
    // together, so asking for IFF_UP there fails with ENOTCONN (veth_open has no peer
    // yet). Bring the peer up with a socket in its namespace afterwards.
}

impl Netlink {
    /// `ip link add NAME [mtu M] [address MAC] type bridge` (left down).
    pub fn add_bridge(&mut self, name: &str, mtu: u32, mac: Option<[u8; 6]>) -> Result<(), KernelError> {
        let op = || format!("add bridge {name}");
        check_ifname(&op(), name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        if mtu != 0 {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.change(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|f| f.into_err(op()))
    }

    /// `ip link add NAME type veth peer name PEER netns NS ...`, in one request.
    pub fn add_veth(&mut self, req: &VethReq<'_>) -> Result<(), KernelError> {
        let op = || format!("add veth {}", req.name);
        check_ifname(&op(), req.name)?;
        check_ifname(&op(), req.peer_name)?;

        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(req.peer_name.to_string()));
        if let Some(ns) = req.peer_netns {
            peer.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        if req.mtu != 0 {
            peer.attributes.push(LinkAttribute::Mtu(req.mtu));
        }
        if let Some(mac) = req.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }

        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(req.name.to_string()));
        if req.mtu != 0 {
            m.attributes.push(LinkAttribute::Mtu(req.mtu));
        }
        if let Some(master) = req.master {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        if req.up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.change(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|f| f.into_err(op()))
    }

    /// `ip link set NAME [master B] [mtu M] [alias A] [address MAC] [up|down]`, in one
    /// request. The link is addressed by name, so no index lookup is needed.
    pub fn set_link(&mut self, name: &str, ch: &LinkChange<'_>) -> Result<(), KernelError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        let mut what = Vec::new();
        if let Some(master) = ch.master {
            m.attributes.push(LinkAttribute::Controller(master));
            what.push(format!("master {master}"));
        }
        if let Some(mtu) = ch.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
            what.push(format!("mtu {mtu}"));
        }
        if let Some(alias) = ch.alias {
            m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
            what.push(format!("alias {alias}"));
        }
        if let Some(mac) = ch.mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
            what.push(format!("address {}", fmt_mac(&mac)));
        }
        if let Some(up) = ch.up {
            m.header.flags.set(LinkFlags::Up, up);
            m.header.change_mask |= LinkFlags::Up;
            what.push(if up { "up" } else { "down" }.to_string());
        }
        if let Some(on) = ch.promisc {
            m.header.flags.set(LinkFlags::Promisc, on);
            m.header.change_mask |= LinkFlags::Promisc;
            what.push(format!("promisc {}", if on { "on" } else { "off" }));
        }
        // Port options travel as IFLA_INFO_SLAVE_DATA, which only RTM_NEWLINK (without
        // NLM_F_CREATE) applies, before the other changes; RTM_SETLINK ignores them
        // silently.
        let new_link = if let Some(on) = ch.hairpin {
            m.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(on)])),
            ]));
            what.push(format!("hairpin {}", if on { "on" } else { "off" }));
            true
        } else {
            false
        };
        let send = |nl: &mut Self, m: LinkMessage| {
            let msg = if new_link {
                RouteNetlinkMessage::NewLink(m)
            } else {
                RouteNetlinkMessage::SetLink(m)
            };
            nl.change(msg, 0)
        };
        let res = if ch.no_ipv6_addrs {
            let mut with = m.clone();
            with.attributes
                .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![
                    AfSpecInet6::AddrGenMode(In6AddrGenMode::None),
                ])]));
            what.push("addrgenmode none".into());
            match send(self, with) {
                // No IPv6 in this kernel (ipv6.disable=1): no addresses to keep it from.
                Err(f) if f.errno == Some(Errno::EAFNOSUPPORT) => send(self, m),
                r => r,
            }
        } else {
            send(self, m)
        };
        res.map_err(|f| f.into_err(format!("set link {name} {}", what.join(" "))))
    }

    /// `ip link set NAME master BRIDGE_INDEX`.
    pub fn set_master(&mut self, name: &str, master: u32) -> Result<(), KernelError> {
        self.set_link(
            name,
            &LinkChange {
                master: Some(master),
                ..Default::default()
            },
        )
    }

    /// `ip link set NAME mtu MTU`.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<(), KernelError> {
        self.set_link(
            name,
            &LinkChange {
                mtu: Some(mtu),
                ..Default::default()
            },
        )
    }

    /// `ip link set NAME alias ALIAS`.
    pub fn set_alias(&mut self, name: &str, alias: &str) -> Result<(), KernelError> {
        self.set_link(
            name,
            &LinkChange {
                alias: Some(alias),
                ..Default::default()
            },
        )
    }

    /// `ip link set NAME address MAC`.
    pub fn set_mac(&mut self, name: &str, mac: [u8; 6]) -> Result<(), KernelError> {
        self.set_link(
            name,
            &LinkChange {
                mac: Some(mac),
                ..Default::default()
            },
        )
    }

    /// `ip link set NAME up`.
    pub fn set_up(&mut self, name: &str) -> Result<(), KernelError> {
        self.set_link(
            name,
            &LinkChange {
                up: Some(true),
                ..Default::default()
            },
        )
    }

    /// `ip link del NAME`. Returns whether a link was deleted: ENODEV is success, since
    /// teardown must be idempotent (and deleting one end of a veth removes the other).
    pub fn delete_link(&mut self, name: &str) -> Result<bool, KernelError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.change(RouteNetlinkMessage::DelLink(m), 0) {
            Ok(()) => Ok(true),
            Err(Fail {
                errno: Some(Errno::ENODEV),
                ..
            }) => Ok(false),
            Err(f) => Err(f.into_err(format!("delete link {name}"))),
        }
    }

    /// `ip link show NAME`: `None` when there is no such link.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, KernelError> {
        let op = || format!("get link {name}");
        check_ifname(&op(), name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        // Lookups are on the CreateVeth path: skip the ~1 KiB of counters per reply.
        m.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        match self.exec(RouteNetlinkMessage::GetLink(m), NLM_F_ACK) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(l)),
                _ => None,
            })),
            Err(Fail {
                errno: Some(Errno::ENODEV),
                ..
            }) => Ok(None),
            Err(f) => Err(f.into_err(op())),
        }
    }

    /// Index of link `name`, if it exists.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, KernelError> {
        Ok(self.link(name)?.map(|l| l.index))
    }

    /// `ip link show`: every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, KernelError> {
        let mut m = LinkMessage::default();
        m.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.dump("links", [RouteNetlinkMessage::GetLink(m)], |r| match r {
            RouteNetlinkMessage::NewLink(l) => Some(to_link(l)),
            _ => None,
        })
    }
}

fn to_link(l: LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        kind: None,
        alias: None,
        master: None,
        mtu: 0,
        up: l.header.flags.contains(LinkFlags::Up),
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::IfAlias(a) => link.alias = Some(a),
            LinkAttribute::Controller(m) => link.master = Some(m),
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}
