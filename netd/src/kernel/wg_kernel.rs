//! Kernel WireGuard (where the kernel has it): the link is `ip link add … type
//! wireguard`, configured over the `wireguard` generic netlink family as `wg set` does.
//! A small client of our own in raw bytes: two commands (`WG_CMD_SET_DEVICE`,
//! `WG_CMD_GET_DEVICE`) and a dozen attributes, which no maintained crate covers at the
//! netlink versions netd links. The link outlives the daemon (a restart changes nothing
//! in the data path); `remove` deletes it.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use nix::errno::Errno;

use super::netlink::{LinkChange, Netlink};
use super::wg_user::{PeerStatus, WgPeer};
use super::KernelError;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const WG_CMD_GET_DEVICE: u8 = 0;
const WG_CMD_SET_DEVICE: u8 = 1;
const WGDEVICE_A_IFNAME: u16 = 2;
const WGDEVICE_A_PRIVATE_KEY: u16 = 3;
const WGDEVICE_A_LISTEN_PORT: u16 = 6;
const WGDEVICE_A_PEERS: u16 = 8;
const WGPEER_A_PUBLIC_KEY: u16 = 1;
const WGPEER_A_FLAGS: u16 = 3;
const WGPEER_A_ENDPOINT: u16 = 4;
const WGPEER_A_KEEPALIVE: u16 = 5;
const WGPEER_A_LAST_HANDSHAKE: u16 = 6;
const WGPEER_A_RX_BYTES: u16 = 7;
const WGPEER_A_TX_BYTES: u16 = 8;
const WGPEER_A_ALLOWEDIPS: u16 = 9;
const WGPEER_F_REMOVE_ME: u32 = 1;
const WGPEER_F_REPLACE_ALLOWEDIPS: u32 = 2;
const WGALLOWEDIP_A_FAMILY: u16 = 1;
const WGALLOWEDIP_A_IPADDR: u16 = 2;
const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

fn attr(m: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    m.extend_from_slice(&(len as u16).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(data);
    m.resize(m.len() + (len.next_multiple_of(4) - len), 0);
}

/// A nested attribute whose body `f` writes.
fn nested(m: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    f(&mut body);
    attr(m, ty | NLA_F_NESTED, &body);
}

/// The attributes of `b` as (type without flags, payload).
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = &b[len.next_multiple_of(4).min(b.len())..];
    }
    out
}

fn io(op: &str) -> impl Fn(std::io::Error) -> KernelError + '_ {
    move |e| KernelError::Netlink {
        op: op.to_string(),
        errno: e.raw_os_error().map(Errno::from_raw),
        msg: e.to_string(),
    }
}

/// A generic netlink socket with the `wireguard` family resolved.
struct Genl {
    sock: Socket,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl Genl {
    fn open() -> Result<Genl, KernelError> {
        let mut sock = Socket::new(NETLINK_GENERIC).map_err(io("open generic netlink socket"))?;
        sock.bind_auto().map_err(io("bind generic netlink socket"))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(io("connect generic netlink socket"))?;
        let mut g = Genl {
            sock,
            family: GENL_ID_CTRL,
            seq: 0,
            buf: Vec::with_capacity(64 * 1024),
        };
        let mut body = Vec::new();
        attr(&mut body, CTRL_ATTR_FAMILY_NAME, b"wireguard\0");
        let replies = g.exec(
            "resolve generic netlink family wireguard",
            CTRL_CMD_GETFAMILY,
            0,
            &body,
        )?;
        let id = replies
            .iter()
            .flat_map(|r| attrs(r))
            .find(|(t, v)| *t == CTRL_ATTR_FAMILY_ID && v.len() >= 2)
            .map(|(_, v)| u16::from_ne_bytes([v[0], v[1]]))
            .ok_or_else(|| KernelError::Other("the wireguard generic netlink family has no id".into()))?;
        g.family = id;
        Ok(g)
    }

    /// One request; the replies' attribute payloads (after the genl header).
    fn exec(&mut self, op: &str, cmd: u8, flags: u16, body: &[u8]) -> Result<Vec<Vec<u8>>, KernelError> {
        self.seq = self.seq.wrapping_add(1);
        let mut m = Vec::with_capacity(20 + body.len());
        m.extend_from_slice(&((20 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&self.family.to_ne_bytes());
        m.extend_from_slice(&(flags | 0x1 | 0x4).to_ne_bytes()); // REQUEST | ACK
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[cmd, 1, 0, 0]);
        m.extend_from_slice(body);
        self.sock.send(&m, 0).map_err(io(op))?;
        let mut out = Vec::new();
        loop {
            self.buf.clear();
            self.sock.recv(&mut self.buf, 0).map_err(io(op))?;
            let b = &self.buf;
            let mut at = 0;
            while at + 16 <= b.len() {
                let len = u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
                let ty = u16::from_ne_bytes([b[at + 4], b[at + 5]]);
                let seq = u32::from_ne_bytes([b[at + 8], b[at + 9], b[at + 10], b[at + 11]]);
                if len < 16 || at + len > b.len() {
                    break;
                }
                if seq == self.seq {
                    match ty {
                        NLMSG_DONE => return Ok(out),
                        NLMSG_ERROR => {
                            let code = i32::from_ne_bytes([b[at + 16], b[at + 17], b[at + 18], b[at + 19]]);
                            if code == 0 {
                                return Ok(out);
                            }
                            let errno = Errno::from_raw(-code);
                            return Err(KernelError::Netlink {
                                op: op.to_string(),
                                errno: Some(errno),
                                msg: errno.desc().to_string(),
                            });
                        }
                        _ if len >= 20 => out.push(b[at + 20..at + len].to_vec()),
                        _ => {}
                    }
                }
                at += len.next_multiple_of(4);
            }
        }
    }
}

/// Whether this kernel has WireGuard (its generic netlink family resolves).
pub fn available() -> bool {
    Genl::open().is_ok()
}

/// How long a peer that left the set stays on the link with no allowed IPs before it
/// is removed (see `set_peers`).
pub const RETIRE: Duration = Duration::from_secs(5);

/// A kernel WireGuard link netd configures.
pub struct KernelWg {
    name: String,
    public: [u8; 32],
    /// Peers no longer wanted, kept without allowed IPs since then.
    retired: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>,
}

/// What `set_peers` does with the peers the link has that are not wanted: those
/// retired at least `RETIRE` ago go, the others stay (newly retired from `now`).
/// Returns (remove, keep without allowed IPs).
pub fn retire(
    have: &[[u8; 32]],
    want: &[WgPeer],
    retired: &mut std::collections::HashMap<[u8; 32], std::time::Instant>,
    now: std::time::Instant,
) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    let (mut remove, mut keep) = (Vec::new(), Vec::new());
    for k in have.iter().filter(|k| !want.iter().any(|p| &p.public_key == *k)) {
        let since = *retired.entry(*k).or_insert(now);
        if now.duration_since(since) >= RETIRE {
            remove.push(*k);
        } else {
            keep.push(*k);
        }
    }
    retired.retain(|k, _| keep.contains(k));
    (remove, keep)
}

impl KernelWg {
    /// Makes link `name` (or takes the one there, an earlier run's), sets its key and
    /// port, MTU and up, with no peers yet.
    pub fn start(name: &str, private_key: &[u8; 32], port: u16, mtu: u32) -> Result<KernelWg, KernelError> {
        let mut nl = Netlink::open()?;
        match nl.link(name)? {
            Some(l) if l.kind.as_deref() == Some("wireguard") => {}
            Some(_) => {
                return Err(KernelError::NotNetds {
                    name: name.to_string(),
                    pick: "WireGuard link name",
                })
            }
            None => nl.add_wireguard_link(name)?,
        }
        let mut g = Genl::open()?;
        let mut body = Vec::new();
        attr(&mut body, WGDEVICE_A_IFNAME, format!("{name}\0").as_bytes());
        attr(&mut body, WGDEVICE_A_PRIVATE_KEY, private_key);
        attr(&mut body, WGDEVICE_A_LISTEN_PORT, &port.to_ne_bytes());
        g.exec(
            &format!("wg set {name} private-key … listen-port {port}"),
            WG_CMD_SET_DEVICE,
            0,
            &body,
        )?;
        nl.set_link(
            name,
            &LinkChange {
                mtu: Some(mtu),
                up: Some(true),
                ..Default::default()
            },
        )?;
        Ok(KernelWg {
            name: name.to_string(),
            public: super::wg_user::public_key_of(private_key),
            retired: Default::default(),
        })
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// `wg set NAME` with `peers`: one message that adds or updates them and retires
    /// the others. Not `WGDEVICE_F_REPLACE_PEERS`, which removes every peer first and so
    /// ends every session: a peer whose key stays keeps its session (a key rotation
    /// elsewhere in the cluster costs the others nothing). A peer no longer wanted loses
    /// its allowed IPs at once (nothing routes to it, nothing from it is accepted) and is
    /// removed `RETIRE` later, at a later call: removing it at once would drop what is
    /// being encrypted for it that moment, the last packets of a peer whose key changed.
    pub fn set_peers(&self, peers: &[WgPeer]) -> Result<(), KernelError> {
        let have: Vec<[u8; 32]> = self.peers()?.into_iter().map(|p| p.public_key).collect();
        let (gone, keep) = {
            let mut r = self
                .retired
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            retire(&have, peers, &mut r, std::time::Instant::now())
        };
        let mut body = Vec::new();
        attr(
            &mut body,
            WGDEVICE_A_IFNAME,
            format!("{}\0", self.name).as_bytes(),
        );
        nested(&mut body, WGDEVICE_A_PEERS, |ps| {
            for p in peers {
                nested(ps, 0, |b| {
                    attr(b, WGPEER_A_PUBLIC_KEY, &p.public_key);
                    // A peer the link has keeps its allowed IPs and gets these added
                    // (the same ones: nothing changes). Replacing them would clear them
                    // first, and a packet for that peer sent in between would be lost.
                    if !have.contains(&p.public_key) {
                        attr(b, WGPEER_A_FLAGS, &WGPEER_F_REPLACE_ALLOWEDIPS.to_ne_bytes());
                    }
                    if let Some(e) = p.endpoint {
                        let mut sa = [0u8; 16];
                        sa[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                        sa[2..4].copy_from_slice(&e.port().to_be_bytes());
                        sa[4..8].copy_from_slice(&e.ip().octets());
                        attr(b, WGPEER_A_ENDPOINT, &sa);
                    }
                    if let Some(k) = p.keepalive {
                        attr(b, WGPEER_A_KEEPALIVE, &k.to_ne_bytes());
                    }
                    nested(b, WGPEER_A_ALLOWEDIPS, |ips| {
                        for net in &p.allowed_ips {
                            nested(ips, 0, |a| {
                                attr(a, WGALLOWEDIP_A_FAMILY, &(libc::AF_INET as u16).to_ne_bytes());
                                attr(a, WGALLOWEDIP_A_IPADDR, &net.ip().octets());
                                attr(a, WGALLOWEDIP_A_CIDR_MASK, &[net.prefix()]);
                            });
                        }
                    });
                });
            }
            // After the wanted peers, so an allowed IP moving from a retired peer to
            // its successor moves in one step (the kernel swaps the owner in its trie);
            // cleared first, a packet sent in between would find no peer and be lost.
            for k in &keep {
                nested(ps, 0, |b| {
                    attr(b, WGPEER_A_PUBLIC_KEY, k);
                    attr(b, WGPEER_A_FLAGS, &WGPEER_F_REPLACE_ALLOWEDIPS.to_ne_bytes());
                });
            }
            for k in &gone {
                nested(ps, 0, |b| {
                    attr(b, WGPEER_A_PUBLIC_KEY, k);
                    attr(b, WGPEER_A_FLAGS, &WGPEER_F_REMOVE_ME.to_ne_bytes());
                });
            }
        });
        Genl::open()?
            .exec(
                &format!(
                    "wg set {} peers ({}, {} retired, {} removed)",
                    self.name,
                    peers.len(),
                    keep.len(),
                    gone.len()
                ),
                WG_CMD_SET_DEVICE,
                0,
                &body,
            )
            .map(drop)
    }

    /// Whether a retired peer is due for removal (`set_peers` removes it).
    pub fn retired_due(&self) -> bool {
        let r = self
            .retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.values().any(|t| t.elapsed() >= RETIRE)
    }

    /// `wg set NAME private-key …`: the link answers to the new key from now on. The
    /// kernel stops sending on every current session (the next packet to a peer waits,
    /// queued, for a handshake under the new key) but keeps receiving on them until they
    /// expire, so what a peer sent under the old key still arrives while the peer
    /// learns the new one.
    pub fn set_private_key(&mut self, private_key: &[u8; 32]) -> Result<(), KernelError> {
        let mut body = Vec::new();
        attr(
            &mut body,
            WGDEVICE_A_IFNAME,
            format!("{}\0", self.name).as_bytes(),
        );
        attr(&mut body, WGDEVICE_A_PRIVATE_KEY, private_key);
        Genl::open()?.exec(
            &format!("wg set {} private-key …", self.name),
            WG_CMD_SET_DEVICE,
            0,
            &body,
        )?;
        self.public = super::wg_user::public_key_of(private_key);
        Ok(())
    }

    /// `wg show NAME`: each peer's key, endpoint, last handshake and bytes.
    pub fn peers(&self) -> Result<Vec<PeerStatus>, KernelError> {
        let mut body = Vec::new();
        attr(
            &mut body,
            WGDEVICE_A_IFNAME,
            format!("{}\0", self.name).as_bytes(),
        );
        let replies =
            Genl::open()?.exec(&format!("wg show {}", self.name), WG_CMD_GET_DEVICE, 0x300, &body)?;
        let mut out = Vec::new();
        for r in &replies {
            for (t, v) in attrs(r) {
                if t != WGDEVICE_A_PEERS {
                    continue;
                }
                for (_, peer) in attrs(v) {
                    let mut s = PeerStatus {
                        public_key: [0; 32],
                        endpoint: None,
                        last_handshake: None,
                        rx_bytes: 0,
                        tx_bytes: 0,
                    };
                    for (pt, pv) in attrs(peer) {
                        match pt {
                            WGPEER_A_PUBLIC_KEY if pv.len() == 32 => s.public_key.copy_from_slice(pv),
                            WGPEER_A_ENDPOINT
                                if pv.len() >= 8 && pv[0..2] == (libc::AF_INET as u16).to_ne_bytes() =>
                            {
                                s.endpoint = Some(SocketAddrV4::new(
                                    Ipv4Addr::new(pv[4], pv[5], pv[6], pv[7]),
                                    u16::from_be_bytes([pv[2], pv[3]]),
                                ))
                            }
                            WGPEER_A_LAST_HANDSHAKE if pv.len() >= 16 => {
                                let secs = i64::from_ne_bytes(pv[0..8].try_into().unwrap_or([0; 8]));
                                if secs > 0 {
                                    s.last_handshake =
                                        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64));
                                }
                            }
                            WGPEER_A_RX_BYTES if pv.len() == 8 => {
                                s.rx_bytes = u64::from_ne_bytes(pv.try_into().unwrap_or([0; 8]))
                            }
                            WGPEER_A_TX_BYTES if pv.len() == 8 => {
                                s.tx_bytes = u64::from_ne_bytes(pv.try_into().unwrap_or([0; 8]))
                            }
                            _ => {}
                        }
                    }
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// Deletes the link.
    pub fn remove(self) -> Result<(), KernelError> {
        Netlink::open()?.delete_link(&self.name).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_left_keeps_its_entry_for_a_while_then_goes() {
        let peer = |k: u8| WgPeer {
            public_key: [k; 32],
            endpoint: None,
            allowed_ips: Vec::new(),
            keepalive: None,
        };
        let mut retired = std::collections::HashMap::new();
        let t0 = std::time::Instant::now();
        // Key 2 replaced by key 3 (a rotation): 2 stays, without allowed IPs.
        let (rm, keep) = retire(&[[1; 32], [2; 32]], &[peer(1), peer(3)], &mut retired, t0);
        assert_eq!((rm, keep), (vec![], vec![[2; 32]]));
        let (rm, keep) = retire(
            &[[1; 32], [2; 32], [3; 32]],
            &[peer(1), peer(3)],
            &mut retired,
            t0 + RETIRE / 2,
        );
        assert_eq!((rm, keep), (vec![], vec![[2; 32]]), "not yet");
        let (rm, keep) = retire(
            &[[1; 32], [2; 32], [3; 32]],
            &[peer(1), peer(3)],
            &mut retired,
            t0 + RETIRE,
        );
        assert_eq!((rm, keep), (vec![[2; 32]], vec![]));
        assert!(retired.is_empty());
        // A key that comes back is no longer retired.
        retire(&[[1; 32]], &[], &mut retired, t0);
        retire(&[[1; 32]], &[peer(1)], &mut retired, t0);
        assert!(retired.is_empty());
    }

    #[test]
    fn nested_attributes_read_back() {
        let mut m = Vec::new();
        nested(&mut m, WGDEVICE_A_PEERS, |ps| {
            nested(ps, 0, |b| attr(b, WGPEER_A_PUBLIC_KEY, &[7; 32]));
        });
        let top = attrs(&m);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, WGDEVICE_A_PEERS);
        let peer = attrs(top[0].1);
        let inner = attrs(peer[0].1);
        assert_eq!(inner[0], (WGPEER_A_PUBLIC_KEY, &[7u8; 32][..]));
    }
}
