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
//! `KernelError::Netlink { op, errno, msg }`, with `op` in `ip` words ("add veth ndweb-1-3fa2"),
//! `errno` the kernel's answer, and `msg` the errno text plus the kernel's extended-ack
//! message when it sent one.

use std::os::fd::AsRawFd;
use std::path::Path;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;

use super::KernelError;

mod addr;
mod detached;
mod ipvlan;
mod link;
mod macvlan;
mod rcu_lookup;
mod route;
mod rule;
mod vlan;
mod vxlan;
pub use addr::Addr;
pub use ipvlan::{ipvlan_flags_from_name, ipvlan_mode_from_name};
pub use link::{Link, LinkChange, VethReq};
pub use macvlan::mode_from_name;
pub use route::{InterfaceConfig, Route};
pub use vlan::{DefaultVlan, VlanBridge};
pub use vxlan::{FdbEntry, VxlanReq};

/// IFNAMSIZ - 1: the kernel rejects longer names with a bare EINVAL.
pub const MAX_IFNAME: usize = 15;

/// Big enough for one datagram of any dump (the kernel fills at most ~32 KiB per recv).
const RECV_BUF: usize = 64 * 1024;

/// NLMSGERR_ATTR_MSG: the human-readable extended-ack string.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// NLM_F_CAPPED / NLM_F_ACK_TLVS, as set by the kernel on an NLMSG_ERROR header.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;

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
            errno: self.errno,
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
            errno: Some(Errno::EINVAL),
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
            errno: e.raw_os_error().map(nix::errno::Errno::from_raw),
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
                errno: e.raw_os_error().map(nix::errno::Errno::from_raw),
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

    /// Every dump: each request in turn (one per address family where the kernel needs
    /// that), the replies `pick` keeps, failures as `KernelError`s saying `dump WHAT`.
    fn dump<T>(
        &mut self,
        what: &str,
        reqs: impl IntoIterator<Item = RouteNetlinkMessage>,
        mut pick: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>, KernelError> {
        let mut out = Vec::new();
        for req in reqs {
            let replies = self
                .exec(req, NLM_F_DUMP)
                .map_err(|f| f.into_err(format!("dump {what}")))?;
            out.extend(replies.into_iter().filter_map(&mut pick));
        }
        Ok(out)
    }
}

/// The NLMSGERR_ATTR_MSG string of an extended ACK, if the kernel sent one. `payload` is
/// what follows the error code: the (possibly capped) original request, then TLVs.
pub(crate) fn ext_ack_msg(flags: u16, payload: &[u8]) -> Option<String> {
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
