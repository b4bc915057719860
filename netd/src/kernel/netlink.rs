//! A small synchronous rtnetlink client: links (bridge, veth), addresses, routes.
//!
//! We speak rtnetlink directly over a blocking `netlink_sys::Socket` with the message
//! types of `netlink-packet-route`, rather than using the async `rtnetlink` crate or
//! shelling out to `ip`:
//!
//! * the engine is synchronous and applies a plan under one lock, so an async handle
//!   would only add a runtime hop per request;
//! * a rtnetlink socket acts on the namespace it was *created* in, so to act on a
//!   sandbox we open a socket from a thread that entered that namespace
//!   (`netns::route_socket_in`); with `rtnetlink` every such socket needs its own spawned
//!   connection task, with a plain socket it is one fd we use and drop;
//! * `ip` costs a fork+exec per call (milliseconds), while a request here is one
//!   `sendto` plus one `recv` (microseconds), and errors come back as errnos we can match
//!   on (ENODEV = already gone) instead of parsed stderr.
//!
//! Every request asks for an ACK and every ACK is checked; kernel errors become
//! `KernelError::Netlink { op, msg }`, with `op` in `ip` words ("add veth ndweb-1-3fa2")
//! and `msg` the errno text plus the kernel's extended-ack message when it sent one.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use ipnetwork::IpNetwork;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind, InfoPortData,
    InfoPortKind, InfoVeth, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;

use super::KernelError;

mod detached;
mod macvlan;
mod rcu_lookup;
mod vlan;
pub use macvlan::mode_from_name;
pub use vlan::{DefaultVlan, VlanBridge};

/// IFNAMSIZ - 1: the kernel rejects longer names with a bare EINVAL.
pub const MAX_IFNAME: usize = 15;

/// Big enough for one datagram of any dump (the kernel fills at most ~32 KiB per recv).
const RECV_BUF: usize = 64 * 1024;

/// NLMSGERR_ATTR_MSG: the human-readable extended-ack string.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// NLM_F_CAPPED / NLM_F_ACK_TLVS, as set by the kernel on an NLMSG_ERROR header.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;

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

/// An address as `ip addr` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub net: IpNetwork,
    /// RT_SCOPE_* (0 universe, 253 link, 254 host).
    pub scope: u8,
}

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

/// Why a request failed, before it is given its `op` words.
#[derive(Debug)]
struct Fail {
    errno: Option<Errno>,
    msg: String,
}

impl Fail {
    fn io(what: &str, e: std::io::Error) -> Self {
        Fail {
            errno: e.raw_os_error().map(Errno::from_raw),
            msg: format!("{what}: {e}"),
        }
    }
    fn decode(e: impl std::fmt::Display) -> Self {
        Fail {
            errno: None,
            msg: format!("cannot decode reply: {e}"),
        }
    }
    fn into_err(self, op: impl Into<String>) -> KernelError {
        KernelError::Netlink {
            op: op.into(),
            msg: self.msg,
        }
    }
}

/// One rtnetlink socket, bound to the namespace it was opened in. Not `Sync`: callers
/// share it behind a `Mutex` (requests and replies are matched by sequence number, and
/// interleaving two requests on one socket would mix their replies).
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.sock.as_raw_fd())
            .finish()
    }
}

fn check_ifname(op: &str, name: &str) -> Result<(), KernelError> {
    if name.is_empty() || name.len() > MAX_IFNAME || name.contains(['/', ' ', '\0']) {
        return Err(KernelError::Netlink {
            op: op.to_string(),
            msg: format!("invalid interface name {name:?} (1-{MAX_IFNAME} bytes, no '/' or space)"),
        });
    }
    Ok(())
}

/// A new route socket in the calling thread's network namespace.
pub fn route_socket() -> std::io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    Ok(sock)
}

impl Netlink {
    /// A client on a new socket in the calling thread's namespace.
    pub fn open() -> Result<Self, KernelError> {
        let sock = route_socket().map_err(|e| KernelError::Netlink {
            op: "open route socket".into(),
            msg: e.to_string(),
        })?;
        Self::from_socket(sock)
    }

    /// A client on a socket opened inside the namespace bound at `path`.
    pub fn open_in(path: &Path) -> Result<Self, KernelError> {
        Self::from_socket(super::netns::route_socket_in(path)?)
    }

    /// Wraps a bound route socket (from `route_socket`, possibly made in another netns).
    pub fn from_socket(sock: Socket) -> Result<Self, KernelError> {
        let opt = |r: std::io::Result<()>, what: &str| {
            r.map_err(|e| KernelError::Netlink {
                op: format!("set {what} on route socket"),
                msg: e.to_string(),
            })
        };
        // Extended ACKs carry the kernel's own explanation ("Master device not found").
        opt(sock.set_ext_ack(true), "NETLINK_EXT_ACK")?;
        // Capped ACKs: errors do not echo our whole request back (a veth request is big).
        opt(sock.set_cap_ack(true), "NETLINK_CAP_ACK")?;
        Ok(Netlink {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends one request and collects replies until its ACK (or, for dumps, DONE).
    fn exec(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>, Fail> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        self.sock.send(&out, 0).map_err(|e| Fail::io("send", e))?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            let n = self
                .sock
                .recv(&mut self.buf, libc::MSG_TRUNC)
                .map_err(|e| Fail::io("recv", e))?;
            if n > self.buf.len() {
                return Err(Fail {
                    errno: None,
                    msg: format!("reply truncated ({n} bytes > {RECV_BUF})"),
                });
            }
            let mut off = 0;
            while off + 16 <= self.buf.len() {
                let len =
                    u32::from_ne_bytes(self.buf[off..off + 4].try_into().map_err(Fail::decode)?) as usize;
                if len < 16 || off + len > self.buf.len() {
                    return Err(Fail::decode(format!("bad message length {len}")));
                }
                let raw = &self.buf[off..off + len];
                off += (len + 3) & !3;
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw);
                let m = match parsed {
                    Ok(m) => m,
                    // A dump may carry objects this crate cannot parse yet (a newer
                    // kernel's attribute); skip them rather than fail the whole dump.
                    Err(e) if dump => {
                        tracing::warn!(error = %e, "skipping undecodable netlink message");
                        continue;
                    }
                    Err(e) => return Err(Fail::decode(e)),
                };
                if m.header.sequence_number != seq {
                    continue; // a late reply to an earlier, failed request
                }
                match m.payload {
                    NetlinkPayload::Error(err) => {
                        let Some(code) = err.code else {
                            return Ok(replies); // the ACK
                        };
                        let errno = Errno::from_raw(code.get().abs());
                        let mut msg = errno.desc().to_string();
                        if let Some(ext) = ext_ack_msg(m.header.flags, &err.header) {
                            msg = format!("{msg} ({ext})");
                        }
                        return Err(Fail {
                            errno: Some(errno),
                            msg,
                        });
                    }
                    NetlinkPayload::Done(done) => {
                        if done.code != 0 {
                            let errno = Errno::from_raw(done.code.abs());
                            return Err(Fail {
                                errno: Some(errno),
                                msg: errno.desc().to_string(),
                            });
                        }
                        return Ok(replies);
                    }
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// A request that changes state: must be ACKed.
    fn change(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), Fail> {
        self.exec(msg, flags | NLM_F_ACK).map(drop)
    }

    // ---- links -------------------------------------------------------------------

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
        let replies = self
            .exec(RouteNetlinkMessage::GetLink(m), NLM_F_DUMP)
            .map_err(|f| f.into_err("dump links"))?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(l)),
                _ => None,
            })
            .collect())
    }

    // ---- addresses ---------------------------------------------------------------

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
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = AddressMessage::default();
            m.header.family = family;
            let replies = self
                .exec(RouteNetlinkMessage::GetAddress(m), NLM_F_DUMP)
                .map_err(|f| f.into_err("dump addresses"))?;
            out.extend(replies.into_iter().filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(a) => to_addr(a),
                _ => None,
            }));
        }
        Ok(out)
    }

    // ---- routes ------------------------------------------------------------------

    /// `ip route add default via GW [dev INDEX]` in the main table.
    pub fn add_default_route(&mut self, gw: IpAddr, oif: Option<u32>) -> Result<(), KernelError> {
        let any = match gw {
            IpAddr::V4(_) => IpNetwork::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
            IpAddr::V6(_) => IpNetwork::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
        }
        .expect("prefix 0 is valid");
        self.add_route(any, Some(gw), oif).map_err(|e| match e {
            KernelError::Netlink { msg, .. } => KernelError::Netlink {
                op: format!("add default route via {gw}"),
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
        let mut out = Vec::new();
        // One dump per family: an AF_UNSPEC dump also walks multicast (ipmr) tables,
        // whose messages are of no use here.
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            let replies = self
                .exec(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)
                .map_err(|f| f.into_err("dump routes"))?;
            out.extend(replies.into_iter().filter_map(|r| match r {
                RouteNetlinkMessage::NewRoute(r) => to_route(r),
                _ => None,
            }));
        }
        Ok(out)
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

/// The NLMSGERR_ATTR_MSG string of an extended ACK, if the kernel sent one. `payload` is
/// what follows the error code: the (possibly capped) original request, then TLVs.
fn ext_ack_msg(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < 16 {
        return None;
    }
    let orig_len = u32::from_ne_bytes(payload[0..4].try_into().ok()?) as usize;
    let mut off = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        (orig_len + 3) & !3
    };
    while off + 4 <= payload.len() {
        let len = u16::from_ne_bytes(payload[off..off + 2].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(payload[off + 2..off + 4].try_into().ok()?) & 0x3fff;
        if len < 4 || off + len > payload.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let s = &payload[off + 4..off + len];
            let s = s.split(|b| *b == 0).next().unwrap_or(s);
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        off += (len + 3) & !3;
    }
    None
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_message_is_found_after_capped_header() {
        let mut p = vec![0u8; 16];
        p[0..4].copy_from_slice(&200u32.to_ne_bytes());
        let text = b"Master device not found\0";
        let len = (4 + text.len()) as u16;
        p.extend_from_slice(&len.to_ne_bytes());
        p.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(text);
        assert_eq!(
            ext_ack_msg(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).as_deref(),
            Some("Master device not found")
        );
        assert_eq!(ext_ack_msg(NLM_F_CAPPED, &p), None);
    }

    #[test]
    fn long_names_are_refused_before_the_kernel_sees_them() {
        assert!(check_ifname("add veth", "a-very-long-name-x").is_err());
        assert!(check_ifname("add veth", "eth0").is_ok());
    }
}
