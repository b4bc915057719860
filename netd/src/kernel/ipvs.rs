//! A small synchronous IPVS client over generic netlink: virtual services (TCP/UDP/SCTP on
//! a VIP and port, or a firewall mark), their destinations, and the one sysctl a
//! load balancer that removes backends needs (`expire_nodest_conn`).
//!
//! Why our own: no usable crate exists. `cargo info ipvs` (2026-12-02): 0.1.1, described
//! as "project in active development, just reserved a name", whose code resolves the
//! family and sends a flush, nothing else (LGPL, bitflags 0.9); `cargo info ipvs-rs`:
//! not in the registry. Docker and kube-proxy speak the same protocol from Go
//! (`moby/ipvs`). It is eight commands over two nested attribute sets, so we encode it
//! with `netlink-packet-generic` 0.5 (the generic netlink header and the controller's
//! CTRL_CMD_GETFAMILY, on the same `netlink-packet-core` 0.9 as our rtnetlink client)
//! and keep the IPVS attributes in `wire.rs`, pure and unit-tested.
//!
//! Like `netlink::Netlink`, a client acts on the namespace its socket was opened in
//! (IPVS tables are per network namespace), requests are ACKed and checked, and failures
//! name the call and the service (`ipvs add service tcp 10.0.0.1:80: already exists`).

mod model;
pub mod wire;

pub use model::{Dest, Forward, Op, Protocol, Service, ServiceKey};

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use netlink_packet_core::{
    Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, ParseableParametrized, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr as NlAddr};
use nix::errno::Errno;

use super::netns::NsThread;
use super::{sysctl, KernelError};
use wire::{Attr, IpvsMsg};

/// Per namespace; exists once ip_vs is loaded. 1: a connection whose destination was
/// removed is expired on its next packet, so the client gets a reset at once and
/// reconnects to a live backend, instead of its packets being dropped until the entry
/// times out (15 minutes for an established TCP flow).
pub const EXPIRE_NODEST_CONN: &str = "net/ipv4/vs/expire_nodest_conn";

/// Big enough for one datagram of any dump (the kernel fills at most ~32 KiB per recv).
const RECV_BUF: usize = 64 * 1024;

/// Why a request failed. `Exists` and `NotFound` are the answers callers act on
/// (creating twice, deleting what is gone); the rest carry the kernel's words.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("already exists")]
    Exists,
    #[error("not found")]
    NotFound,
    #[error("{msg}")]
    Kernel { errno: Errno, msg: String },
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("cannot decode reply: {0}")]
    Decode(String),
}

impl Failure {
    /// EEXIST is a duplicate; ESRCH means no such service (every command but
    /// NEW_SERVICE), ENOENT no such destination. ENOENT on NEW_SERVICE, though, is an
    /// unknown scheduler (no `ip_vs_<name>` module), so adds keep the errno.
    fn of(errno: Errno, ext: Option<String>, adding: bool) -> Failure {
        match errno {
            Errno::EEXIST => Failure::Exists,
            Errno::ESRCH => Failure::NotFound,
            Errno::ENOENT if !adding => Failure::NotFound,
            _ => {
                let mut msg = errno.desc().to_string();
                if errno == Errno::ENOENT {
                    msg.push_str(" (no such scheduler module?)");
                }
                if let Some(ext) = ext {
                    msg = format!("{msg} ({ext})");
                }
                Failure::Kernel { errno, msg }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The generic netlink family does not resolve: no ip_vs module in this kernel.
    #[error(
        "ipvs: this kernel has no IPVS (generic netlink family {} not found; modprobe ip_vs)",
        wire::GENL_NAME
    )]
    Unavailable,
    #[error("ipvs open generic netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("ipvs open socket in {path}: {source}")]
    OpenIn { path: PathBuf, source: KernelError },
    #[error("ipvs resolve generic netlink family IPVS: {0}")]
    Resolve(#[source] Failure),
    #[error("ipvs scheduler name {0:?}: 1-15 bytes, no NUL")]
    BadScheduler(String),
    #[error("ipvs add service {key}: {source}")]
    AddService { key: ServiceKey, source: Failure },
    #[error("ipvs set service {key}: {source}")]
    SetService { key: ServiceKey, source: Failure },
    #[error("ipvs delete service {key}: {source}")]
    DelService { key: ServiceKey, source: Failure },
    #[error("ipvs list services: {0}")]
    ListServices(#[source] Failure),
    #[error("ipvs add destination {dest} to {key}: {source}")]
    AddDest {
        key: ServiceKey,
        dest: SocketAddr,
        source: Failure,
    },
    #[error("ipvs set destination {dest} of {key}: {source}")]
    SetDest {
        key: ServiceKey,
        dest: SocketAddr,
        source: Failure,
    },
    #[error("ipvs delete destination {dest} of {key}: {source}")]
    DelDest {
        key: ServiceKey,
        dest: SocketAddr,
        source: Failure,
    },
    #[error("ipvs list destinations of {key}: {source}")]
    ListDests { key: ServiceKey, source: Failure },
    #[error("ipvs: {0}")]
    Sysctl(#[from] KernelError),
}

impl IpvsError {
    /// The failure of a service or destination call, if that is what this is.
    pub fn failure(&self) -> Option<&Failure> {
        use IpvsError::*;
        match self {
            AddService { source, .. }
            | SetService { source, .. }
            | DelService { source, .. }
            | AddDest { source, .. }
            | SetDest { source, .. }
            | DelDest { source, .. }
            | ListDests { source, .. }
            | ListServices(source) => Some(source),
            _ => None,
        }
    }
    /// Whether the service or destination was not there (teardown treats it as done).
    pub fn is_not_found(&self) -> bool {
        matches!(self.failure(), Some(Failure::NotFound))
    }
    pub fn is_exists(&self) -> bool {
        matches!(self.failure(), Some(Failure::Exists))
    }
}

/// One generic netlink socket with the IPVS family resolved. Not `Sync`: replies are
/// matched to requests by sequence number on one socket.
pub struct Ipvs {
    sock: Socket,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl fmt::Debug for Ipvs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ipvs")
            .field("fd", &self.sock.as_raw_fd())
            .field("family", &self.family)
            .finish()
    }
}

fn genl_socket() -> std::io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_GENERIC)?;
    sock.bind_auto()?;
    sock.connect(&NlAddr::new(0, 0))?;
    // Extended ACKs carry the kernel's explanation when it gives one; capped ACKs keep
    // errors from echoing the request.
    sock.set_ext_ack(true)?;
    sock.set_cap_ack(true)?;
    Ok(sock)
}

impl Ipvs {
    /// A client for the calling thread's network namespace. `Unavailable` when the
    /// kernel has no IPVS.
    pub fn open() -> Result<Self, IpvsError> {
        Self::from_socket(genl_socket().map_err(IpvsError::Open)?)
    }

    /// A client for the namespace bound at `path` (the socket is created there by a
    /// short-lived thread; it keeps acting there whichever thread uses it).
    pub fn open_in(path: &Path) -> Result<Self, IpvsError> {
        let sock = super::netns::run_in(path, genl_socket)
            .map_err(|source| IpvsError::OpenIn {
                path: path.to_path_buf(),
                source,
            })?
            .map_err(IpvsError::Open)?;
        Self::from_socket(sock)
    }

    /// Whether this kernel has IPVS (the family resolves). Generic netlink families are
    /// global, so the answer holds for every namespace.
    pub fn available() -> Result<bool, IpvsError> {
        match Self::open() {
            Ok(_) => Ok(true),
            Err(IpvsError::Unavailable) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn from_socket(sock: Socket) -> Result<Self, IpvsError> {
        let mut c = Ipvs {
            sock,
            family: 0,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        };
        let ask = GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(wire::GENL_NAME.into())],
        };
        let replies = match c.exec(ask, 0, NLM_F_ACK, false) {
            Err(Failure::NotFound) => return Err(IpvsError::Unavailable),
            r => r.map_err(IpvsError::Resolve)?,
        };
        c.family = replies
            .iter()
            .flat_map(|m| &m.nlas)
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| IpvsError::Resolve(Failure::Decode("no family id in the reply".into())))?;
        Ok(c)
    }

    /// `ipvsadm -A`: a new service. `Exists` when it is there already.
    pub fn new_service(&mut self, s: &Service) -> Result<(), IpvsError> {
        check_scheduler(&s.scheduler)?;
        self.change(wire::CMD_NEW_SERVICE, vec![wire::service_full(s)], true)
            .map_err(|source| IpvsError::AddService { key: s.key, source })
    }

    /// `ipvsadm -E`: changes a service's scheduler, flags or timeout.
    pub fn set_service(&mut self, s: &Service) -> Result<(), IpvsError> {
        check_scheduler(&s.scheduler)?;
        self.change(wire::CMD_SET_SERVICE, vec![wire::service_full(s)], false)
            .map_err(|source| IpvsError::SetService { key: s.key, source })
    }

    /// `ipvsadm -D`: removes a service and its destinations. `NotFound` when absent.
    pub fn del_service(&mut self, key: &ServiceKey) -> Result<(), IpvsError> {
        self.change(wire::CMD_DEL_SERVICE, vec![wire::service_key(key)], false)
            .map_err(|source| IpvsError::DelService { key: *key, source })
    }

    /// `ipvsadm -Ln`: every service of the namespace.
    pub fn services(&mut self) -> Result<Vec<Service>, IpvsError> {
        let msg = IpvsMsg {
            cmd: wire::CMD_GET_SERVICE,
            attrs: Vec::new(),
        };
        let replies = self
            .exec(msg, self.family, NLM_F_DUMP, false)
            .map_err(IpvsError::ListServices)?;
        replies
            .iter()
            .filter_map(|m| m.attr(wire::CMD_ATTR_SERVICE))
            .map(|v| wire::service_of(v).map_err(|e| IpvsError::ListServices(Failure::Decode(e.to_string()))))
            .collect()
    }

    /// `ipvsadm -a`: a new destination of service `key`.
    pub fn new_dest(&mut self, key: &ServiceKey, d: &Dest) -> Result<(), IpvsError> {
        let attrs = vec![wire::service_key(key), wire::dest_attr(d, true)];
        self.change(wire::CMD_NEW_DEST, attrs, true)
            .map_err(|source| IpvsError::AddDest {
                key: *key,
                dest: d.addr,
                source,
            })
    }

    /// `ipvsadm -e`: changes a destination's weight, method or thresholds.
    pub fn set_dest(&mut self, key: &ServiceKey, d: &Dest) -> Result<(), IpvsError> {
        let attrs = vec![wire::service_key(key), wire::dest_attr(d, true)];
        self.change(wire::CMD_SET_DEST, attrs, false)
            .map_err(|source| IpvsError::SetDest {
                key: *key,
                dest: d.addr,
                source,
            })
    }

    /// `ipvsadm -d`: removes a destination at once (see `drain` to let it empty first).
    pub fn del_dest(&mut self, key: &ServiceKey, dest: SocketAddr) -> Result<(), IpvsError> {
        let attrs = vec![
            wire::service_key(key),
            wire::dest_attr(&Dest::masquerade(dest, 0), false),
        ];
        self.change(wire::CMD_DEL_DEST, attrs, false)
            .map_err(|source| IpvsError::DelDest {
                key: *key,
                dest,
                source,
            })
    }

    /// The destinations of service `key`, with their connection counts. Empty for a
    /// service that does not exist (the kernel's dump says nothing then).
    pub fn dests(&mut self, key: &ServiceKey) -> Result<Vec<Dest>, IpvsError> {
        let err = |source| IpvsError::ListDests { key: *key, source };
        let msg = IpvsMsg {
            cmd: wire::CMD_GET_DEST,
            attrs: vec![wire::service_key(key)],
        };
        let replies = self.exec(msg, self.family, NLM_F_DUMP, false).map_err(err)?;
        replies
            .iter()
            .filter_map(|m| m.attr(wire::CMD_ATTR_DEST))
            .map(|v| wire::dest_of(v).map_err(|e| err(Failure::Decode(e.to_string()))))
            .collect()
    }

    /// Starts removing a destination gently: weight 0, so the scheduler sends it no new
    /// connections while established ones go on. The `Drain` says when it is empty and
    /// removes it; when to give up waiting is the caller's policy.
    pub fn drain(&mut self, key: &ServiceKey, dest: SocketAddr) -> Result<Drain, IpvsError> {
        let mut d = self
            .dests(key)?
            .into_iter()
            .find(|d| d.addr == dest)
            .ok_or(IpvsError::SetDest {
                key: *key,
                dest,
                source: Failure::NotFound,
            })?;
        // SET_DEST wants a full entry: keep the method and thresholds, change the weight.
        d.weight = 0;
        self.set_dest(key, &d)?;
        Ok(Drain { key: *key, dest })
    }

    /// Carries out `ops` in order, stopping at the first failure: IPVS has no
    /// transactions, so the error says how many were done (`Applied`).
    pub fn apply(&mut self, ops: &[Op]) -> Result<(), Applied> {
        for (done, op) in ops.iter().enumerate() {
            let r = match op {
                Op::AddService(s) => self.new_service(s),
                Op::SetService(s) => self.set_service(s),
                Op::DelService(k) => self.del_service(k),
                Op::AddDest(k, d) => self.new_dest(k, d),
                Op::SetDest(k, d) => self.set_dest(k, d),
                Op::DelDest(k, a) => self.del_dest(k, *a),
            };
            r.map_err(|source| Applied {
                done,
                total: ops.len(),
                source,
            })?;
        }
        Ok(())
    }

    /// Every service with its destinations (`ipvsadm -Ln`): one dump for the services,
    /// one per service for its destinations.
    pub fn table(&mut self) -> Result<Vec<(Service, Vec<Dest>)>, IpvsError> {
        let services = self.services()?;
        services
            .into_iter()
            .map(|s| {
                let d = self.dests(&s.key)?;
                Ok((s, d))
            })
            .collect()
    }

    fn change(&mut self, cmd: u8, attrs: Vec<Attr>, adding: bool) -> Result<(), Failure> {
        let msg = IpvsMsg { cmd, attrs };
        self.exec(msg, self.family, NLM_F_ACK, adding).map(drop)
    }

    /// Sends one request and collects the replies until its ACK (or, for a dump, DONE).
    /// `adding`: the request creates something (how ENOENT reads, `Failure::of`).
    fn exec<F>(&mut self, payload: F, family: u16, flags: u16, adding: bool) -> Result<Vec<F>, Failure>
    where
        F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + fmt::Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut genl = GenlMessage::from_payload(payload);
        genl.set_resolved_family_id(family);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
        req.finalize();
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        self.sock.send(&out, 0).map_err(Failure::Io)?;

        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            let n = self
                .sock
                .recv(&mut self.buf, libc::MSG_TRUNC)
                .map_err(Failure::Io)?;
            if n > self.buf.len() {
                return Err(Failure::Decode(format!(
                    "reply truncated ({n} bytes > {RECV_BUF})"
                )));
            }
            let mut off = 0;
            while off + 16 <= self.buf.len() {
                let len = u32::from_ne_bytes([
                    self.buf[off],
                    self.buf[off + 1],
                    self.buf[off + 2],
                    self.buf[off + 3],
                ]) as usize;
                if len < 16 || off + len > self.buf.len() {
                    return Err(Failure::Decode(format!("bad message length {len}")));
                }
                let raw = &self.buf[off..off + len];
                off += len.next_multiple_of(4);
                let m = NetlinkMessage::<GenlMessage<F>>::deserialize(raw)
                    .map_err(|e| Failure::Decode(e.to_string()))?;
                if m.header.sequence_number != seq {
                    continue; // a late reply to an earlier, failed request
                }
                match m.payload {
                    NetlinkPayload::Error(err) => {
                        let Some(code) = err.code else {
                            return Ok(replies); // the ACK
                        };
                        let errno = Errno::from_raw(code.get().abs());
                        let ext = super::netlink::ext_ack_msg(m.header.flags, &err.header);
                        return Err(Failure::of(errno, ext, adding));
                    }
                    NetlinkPayload::Done(done) if done.code != 0 => {
                        return Err(Failure::of(Errno::from_raw(done.code.abs()), None, adding));
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner.payload),
                    _ => {}
                }
            }
        }
    }
}

fn check_scheduler(name: &str) -> Result<(), IpvsError> {
    if name.is_empty() || name.len() > wire::SCHED_NAME_MAX || name.contains('\0') {
        return Err(IpvsError::BadScheduler(name.into()));
    }
    Ok(())
}

/// A list of changes that stopped part way: `done` of `total` were carried out, then
/// `source` failed.
#[derive(Debug, thiserror::Error)]
#[error("{source} (after {done} of {total} IPVS changes)")]
pub struct Applied {
    pub done: usize,
    pub total: usize,
    #[source]
    pub source: IpvsError,
}

/// A destination at weight 0, on its way out (`Ipvs::drain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    pub key: ServiceKey,
    pub dest: SocketAddr,
}

impl Drain {
    /// Connections the destination still has (active + inactive), None once it is gone.
    pub fn connections(&self, ipvs: &mut Ipvs) -> Result<Option<u32>, IpvsError> {
        Ok(ipvs
            .dests(&self.key)?
            .iter()
            .find(|d| d.addr == self.dest)
            .map(|d| d.active_conns + d.inactive_conns))
    }

    /// Removes the destination; already gone (or its service) is success.
    pub fn finish(self, ipvs: &mut Ipvs) -> Result<(), IpvsError> {
        match ipvs.del_dest(&self.key, self.dest) {
            Err(e) if e.is_not_found() => Ok(()),
            r => r,
        }
    }
}

/// What a host that balances with IPVS sets, with why (`ipvs_setup`):
/// - `expire_nodest_conn=1`: see `EXPIRE_NODEST_CONN`.
/// - `conntrack=1`: IPVS keeps netfilter's conntrack entries for the connections it
///   forwards, so the replies that `br_netfilter` shows the inet forward chain match
///   `ct state established` there, and nft NAT (hairpin masquerade) applies to them.
/// - `expire_quiescent_template=1`: a persistence template (session affinity) that
///   points at a backend at weight 0 expires, so a sticky client moves to a live backend
///   instead of following the one being drained.
pub const SYSCTLS: [(&str, &str); 3] = [
    (EXPIRE_NODEST_CONN, "1"),
    ("net/ipv4/vs/conntrack", "1"),
    ("net/ipv4/vs/expire_quiescent_template", "1"),
];

/// Sets `expire_nodest_conn=1` in the calling thread's namespace (why: `EXPIRE_NODEST_CONN`).
pub fn expire_nodest_conn() -> Result<(), IpvsError> {
    Ok(sysctl::write(EXPIRE_NODEST_CONN, "1")?)
}

/// `expire_nodest_conn` in the worker's namespace (the daemon's host).
pub fn expire_nodest_conn_in(ns: &NsThread) -> Result<(), IpvsError> {
    Ok(sysctl::write_in(ns, EXPIRE_NODEST_CONN, "1")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_become_the_failures_callers_match() {
        assert!(matches!(Failure::of(Errno::EEXIST, None, true), Failure::Exists));
        assert!(matches!(
            Failure::of(Errno::ESRCH, None, false),
            Failure::NotFound
        ));
        assert!(matches!(
            Failure::of(Errno::ENOENT, None, false),
            Failure::NotFound
        ));
        // On an add, ENOENT is the kernel's "no such scheduler", not a missing object.
        let f = Failure::of(Errno::ENOENT, None, true);
        assert!(
            matches!(
                f,
                Failure::Kernel {
                    errno: Errno::ENOENT,
                    ..
                }
            ),
            "{f:?}"
        );
        assert!(f.to_string().contains("scheduler"), "{f}");
    }

    #[test]
    fn errors_name_the_call_and_the_service() {
        let e = IpvsError::AddService {
            key: ServiceKey::tcp("10.0.0.1:80".parse().unwrap()),
            source: Failure::Exists,
        };
        assert_eq!(e.to_string(), "ipvs add service tcp 10.0.0.1:80: already exists");
        assert!(e.is_exists() && !e.is_not_found());
        let e = IpvsError::DelDest {
            key: ServiceKey::fwmark(7),
            dest: "10.0.1.2:0".parse().unwrap(),
            source: Failure::NotFound,
        };
        assert_eq!(
            e.to_string(),
            "ipvs delete destination 10.0.1.2:0 of fwmark 7: not found"
        );
        assert!(e.is_not_found());
    }

    #[test]
    fn scheduler_names_fit_the_kernels_buffer() {
        assert!(check_scheduler("wrr").is_ok());
        assert!(check_scheduler("").is_err());
        assert!(check_scheduler("a-sixteen-bytes!").is_err());
    }
}
