//! The IPVS objects as callers see them: a service (its key, scheduler and persistence)
//! and a destination (address, weight, forwarding method, connection counts). Plain
//! data; `wire.rs` turns them into attributes and back.

use std::fmt;
use std::net::SocketAddr;

use super::wire;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// What identifies a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// `ipvsadm -t/-u VIP:PORT`.
    Addr { protocol: Protocol, vip: SocketAddr },
    /// `ipvsadm -f MARK`: packets an nftables rule marked (many ports, one service).
    Fwmark { mark: u32, ipv6: bool },
}

impl ServiceKey {
    pub fn tcp(vip: SocketAddr) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            vip,
        }
    }
    pub fn udp(vip: SocketAddr) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Udp,
            vip,
        }
    }
    /// An IPv4 fwmark service.
    pub fn fwmark(mark: u32) -> Self {
        ServiceKey::Fwmark { mark, ipv6: false }
    }
    pub fn is_ipv6(&self) -> bool {
        match self {
            ServiceKey::Addr { vip, .. } => vip.is_ipv6(),
            ServiceKey::Fwmark { ipv6, .. } => *ipv6,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr { protocol, vip } => {
                let p = match protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                    Protocol::Sctp => "sctp",
                };
                write!(f, "{p} {vip}")
            }
            ServiceKey::Fwmark { mark, ipv6 } => {
                write!(f, "fwmark {mark}{}", if *ipv6 { " ipv6" } else { "" })
            }
        }
    }
}

/// A virtual service, as `ipvsadm -A` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub key: ServiceKey,
    /// Scheduler module name without `ip_vs_`: "rr", "wrr", "sh", "mh", ...
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` (persistent, one-packet, scheduler flags).
    pub flags: u32,
    /// Persistence timeout in seconds (with `wire::SVC_F_PERSISTENT`).
    pub timeout: u32,
}

impl Service {
    /// Round robin, no persistence: what `ipvsadm -A` does by default.
    pub fn new(key: ServiceKey) -> Self {
        Service {
            key,
            scheduler: "rr".into(),
            flags: 0,
            timeout: 0,
        }
    }
    pub fn scheduler(mut self, name: &str) -> Self {
        self.scheduler = name.into();
        self
    }
    /// `ipvsadm -p SECONDS`: a client sticks to its destination while it has
    /// connections and for `seconds` after.
    pub fn persistent(mut self, seconds: u32) -> Self {
        self.flags |= wire::SVC_F_PERSISTENT;
        self.timeout = seconds;
        self
    }
}

/// How IPVS forwards to a destination (`ipvsadm -m/-g/-i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forward {
    /// NAT: the destination address and port are rewritten; replies must come back
    /// through this host (backends route via it), which container networks do.
    Masquerade,
    Local,
    Tunnel,
    DirectRoute,
}

/// A destination (real server) of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    /// Port 0 on a fwmark service keeps the packet's own port.
    pub addr: SocketAddr,
    /// 0 takes no new connections and keeps the existing ones (draining).
    pub weight: u32,
    pub forward: Forward,
    /// Connection thresholds, 0 = none.
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    /// Read only (filled by `dests`): connections in ESTABLISHED / the others.
    pub active_conns: u32,
    pub inactive_conns: u32,
}

impl Dest {
    pub fn masquerade(addr: SocketAddr, weight: u32) -> Self {
        Dest {
            addr,
            weight,
            forward: Forward::Masquerade,
            upper_threshold: 0,
            lower_threshold: 0,
            active_conns: 0,
            inactive_conns: 0,
        }
    }
}

/// One change to the IPVS table, as data: what `lb::ipvs` plans and `Ipvs::apply` (or
/// a fake) carries out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddService(Service),
    SetService(Service),
    DelService(ServiceKey),
    AddDest(ServiceKey, Dest),
    SetDest(ServiceKey, Dest),
    DelDest(ServiceKey, SocketAddr),
}

impl fmt::Display for Op {
    /// In `ipvsadm` words, for logs and test assertions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddService(s) | Op::SetService(s) => {
                let verb = if matches!(self, Op::AddService(_)) {
                    "-A"
                } else {
                    "-E"
                };
                write!(f, "{verb} {} {}", s.key, s.scheduler)?;
                if s.flags & wire::SVC_F_PERSISTENT != 0 {
                    write!(f, " -p {}", s.timeout)?;
                }
                Ok(())
            }
            Op::DelService(k) => write!(f, "-D {k}"),
            Op::AddDest(k, d) => write!(f, "-a {k} -r {} -w {}", d.addr, d.weight),
            Op::SetDest(k, d) => write!(f, "-e {k} -r {} -w {}", d.addr, d.weight),
            Op::DelDest(k, a) => write!(f, "-d {k} -r {a}"),
        }
    }
}
