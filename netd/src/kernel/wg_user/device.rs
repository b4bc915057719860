//! The running device: three threads over one TUN queue and one UDP socket.
//!
//! * `tx`: TUN -> cut super-packets into segments -> route by destination -> encrypt ->
//!   `sendmmsg` (flushed when the TUN queue is empty or the batch is full);
//! * `rx`: `recvmmsg` -> find the peer (receiver index, or the initiator's static key
//!   for a handshake) -> decrypt -> check the inner source against that peer's allowed
//!   IPs -> join runs of one TCP flow (`gro.rs`) -> TUN;
//! * `timers`: `Tunn::update_timers` of every peer every 250 ms (handshake retries,
//!   keepalives, session expiry), as boringtun's own device does.
//!
//! The peer set is an immutable snapshot behind an `RwLock<Arc<_>>`, taken once per
//! batch, so `set_peers` never stalls the data path; a peer's `Tunn` is behind its own
//! mutex, held for one batch of segments at a time.
//!
//! A new private key (`set_private_key`) gives every peer a new `Tunn`, which sends
//! under the new key (the first packets wait in its queue for the handshake), and keeps
//! the old one as the peer's `previous`, which still decrypts what the peer sent on
//! its sessions under the old key until the peer has learnt the new one: the kernel's
//! behaviour (it stops sending on the current sessions but keeps receiving on them).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use super::allowed::AllowedIps;
use super::gro::Gro;
use super::gso;
use super::mmsg::{enable_gro, RecvBatch, SendBatch, RX_SLOT};
use super::tun::{wait_readable, Tun, VnetHdr, VNET_HDR_LEN};
use super::{PeerStatus, WgConfig, WgPeer};
use crate::kernel::netlink::{LinkChange, Netlink};
use crate::kernel::KernelError;

/// How often the threads look at the stop flag while idle.
const IDLE_MS: i32 = 200;
const TIMER_TICK: Duration = Duration::from_millis(250);
/// WireGuard's data header (16) + Poly1305 tag (16).
const OVERHEAD: usize = 32;
/// Largest packet the TUN link hands over: a 64 KiB super-packet plus its header.
const TUN_READ: usize = VNET_HDR_LEN + 65_536;

/// One peer's protocol state and counters; shared by every snapshot that has its key.
struct Peer {
    public_key: [u8; 32],
    /// Receiver indices of this peer's sessions are `index << 8 | n`.
    index: u32,
    keepalive: Option<u16>,
    tunn: Mutex<Tunn>,
    /// The peer's state under this device's previous private key: receives only.
    /// (Taken from it when the key changes again: one key back is enough.)
    previous: Mutex<Option<Arc<Peer>>>,
    /// 0 = unknown, else 1 << 48 | ip << 16 | port: read per packet without a lock.
    endpoint: AtomicU64,
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
}

fn encode(ep: SocketAddrV4) -> u64 {
    1 << 48 | u64::from(u32::from(*ep.ip())) << 16 | u64::from(ep.port())
}

fn decode(v: u64) -> Option<SocketAddrV4> {
    (v != 0).then(|| SocketAddrV4::new(Ipv4Addr::from((v >> 16) as u32), v as u16))
}

impl Peer {
    fn endpoint(&self) -> Option<SocketAddrV4> {
        decode(self.endpoint.load(Ordering::Relaxed))
    }
    fn set_endpoint(&self, ep: SocketAddrV4) {
        self.endpoint.store(encode(ep), Ordering::Relaxed);
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Tunn> {
        self.tunn.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn previous(&self) -> Option<Arc<Peer>> {
        self.previous
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The device's own key pair.
struct Identity {
    secret: StaticSecret,
    public: PublicKey,
}

struct PeerSet {
    identity: Arc<Identity>,
    peers: Vec<Arc<Peer>>,
    by_key: HashMap<[u8; 32], usize>,
    /// Receiver index (`>> 8`) to slot: every peer's, and its `previous`'s.
    by_index: HashMap<u32, usize>,
    routes: AllowedIps,
}

impl PeerSet {
    fn new(identity: Arc<Identity>) -> PeerSet {
        PeerSet {
            identity,
            peers: Vec::new(),
            by_key: HashMap::new(),
            by_index: HashMap::new(),
            routes: AllowedIps::default(),
        }
    }

    /// Adds `peer` in the next slot with its allowed IPs.
    fn push(&mut self, peer: Arc<Peer>, allowed: &[ipnetwork::Ipv4Network]) {
        let slot = self.peers.len();
        self.by_key.insert(peer.public_key, slot);
        self.by_index.insert(peer.index, slot);
        if let Some(p) = peer.previous() {
            self.by_index.insert(p.index, slot);
        }
        for net in allowed {
            self.routes.insert(*net, slot);
        }
        self.peers.push(peer);
    }
}

struct Shared {
    tun: Tun,
    udp: UdpSocket,
    peers: RwLock<Arc<PeerSet>>,
    next_index: AtomicU32,
    stop: AtomicBool,
}

impl Shared {
    fn snapshot(&self) -> Arc<PeerSet> {
        self.peers.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A running userspace WireGuard device; dropping it stops its threads and removes its
/// link.
pub struct UserWg {
    name: String,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Opened in the namespace of the link, so `drop` removes it from any thread.
    netlink: Mutex<Netlink>,
}

impl std::fmt::Debug for UserWg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserWg")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn io_err<'a>(name: &'a str, op: &'static str) -> impl FnOnce(io::Error) -> KernelError + 'a {
    move |source| KernelError::WgIo {
        name: name.to_string(),
        op,
        source,
    }
}

fn setsockopt_u32(fd: RawFd, opt: libc::c_int, v: u32) -> io::Result<()> {
    let v = v as libc::c_int;
    // SAFETY: a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The UDP socket: SO_MARK when asked, and buffers deep enough for a burst of
/// super-packets (4 MiB; the FORCE variants pass rmem_max, as root may).
fn udp_socket(cfg: &WgConfig) -> io::Result<UdpSocket> {
    let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, cfg.listen_port))?;
    let fd = udp.as_raw_fd();
    if cfg.fwmark != 0 {
        setsockopt_u32(fd, libc::SO_MARK, cfg.fwmark)?;
    }
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_u32(fd, force, 4 << 20).is_err() {
            setsockopt_u32(fd, plain, 4 << 20)?;
        }
    }
    // Runs of datagrams in one receive (mmsg.rs); kernels before 5.0 have no UDP_GRO.
    let _ = enable_gro(fd);
    udp.set_read_timeout(Some(Duration::from_millis(IDLE_MS as u64)))?;
    Ok(udp)
}

impl UserWg {
    /// Creates link `cfg.name` (TUN, up, `cfg.mtu`) and the UDP socket on
    /// `cfg.listen_port` in the calling thread's network namespace, and starts the
    /// device with no peers.
    pub fn start(cfg: WgConfig) -> Result<UserWg, KernelError> {
        let name = cfg.name.clone();
        if cfg.mtu < 576 || cfg.mtu > 65_000 {
            return Err(KernelError::Wg {
                name,
                what: format!("mtu {} out of range 576..=65000", cfg.mtu),
            });
        }
        let mut netlink = Netlink::open()?;
        let tun = Tun::open(&name).map_err(io_err(&name, "create tun"))?;
        let udp = udp_socket(&cfg).map_err(io_err(&name, "udp socket"))?;
        // The TUN link goes when its fd closes; on an error below `tun` drops with it.
        netlink.set_link(
            &name,
            &LinkChange {
                mtu: Some(cfg.mtu),
                up: Some(true),
                ..Default::default()
            },
        )?;
        let secret = StaticSecret::from(cfg.private_key);
        let identity = Arc::new(Identity {
            public: PublicKey::from(&secret),
            secret,
        });
        let shared = Arc::new(Shared {
            tun,
            udp,
            peers: RwLock::new(Arc::new(PeerSet::new(identity))),
            next_index: AtomicU32::new(1),
            stop: AtomicBool::new(false),
        });
        let mtu = cfg.mtu as usize;
        let mut threads = Vec::new();
        let spawn = |what: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("wg-{what}"))
                .spawn(f)
                .map_err(io_err(&name, "spawn thread"))
        };
        let run = [
            spawn("tx", {
                let sh = shared.clone();
                Box::new(move || tx_loop(&sh, mtu))
            }),
            spawn("rx", {
                let sh = shared.clone();
                Box::new(move || rx_loop(&sh))
            }),
            spawn("timers", {
                let sh = shared.clone();
                Box::new(move || timer_loop(&sh))
            }),
        ];
        let mut failed = None;
        for r in run {
            match r {
                Ok(h) => threads.push(h),
                Err(e) => failed = Some(e),
            }
        }
        let wg = UserWg {
            name,
            shared,
            threads,
            netlink: Mutex::new(netlink),
        };
        match failed {
            Some(e) => Err(e), // `wg` drops: stops what started, removes the link
            None => Ok(wg),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.shared.snapshot().identity.public.to_bytes()
    }

    /// The UDP port the device listens on (the one asked for, or the kernel's pick for 0).
    pub fn listen_port(&self) -> u16 {
        self.shared.udp.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// `ip addr add NET dev NAME`.
    pub fn add_address(&self, net: ipnetwork::Ipv4Network) -> Result<(), KernelError> {
        let mut nl = self.netlink.lock().unwrap_or_else(PoisonError::into_inner);
        let index = nl.link_index(&self.name)?.ok_or_else(|| KernelError::Vanished {
            what: format!("link {}", self.name),
            when: "before its address was added",
        })?;
        nl.add_address(index, net.into())
    }

    /// Replaces the whole peer set. A peer whose key was already there keeps its session
    /// and counters (and its learnt endpoint when `endpoint` is `None`), unless its
    /// keepalive changed: boringtun fixes that at creation, so the peer starts over with
    /// a new handshake. Two peers with one key are refused.
    pub fn set_peers(&self, peers: &[WgPeer]) -> Result<(), KernelError> {
        let mut guard = self.shared.peers.write().unwrap_or_else(PoisonError::into_inner);
        let old = guard.clone();
        let mut set = PeerSet::new(old.identity.clone());
        let mut fresh = Vec::new();
        for p in peers {
            if set.by_key.contains_key(&p.public_key) {
                return Err(KernelError::Wg {
                    name: self.name.clone(),
                    what: format!("peer {} listed twice", super::key_to_base64(&p.public_key)),
                });
            }
            let kept = old
                .by_key
                .get(&p.public_key)
                .map(|&i| old.peers[i].clone())
                .filter(|o| o.keepalive == p.keepalive);
            let peer = match kept {
                Some(o) => o,
                None => {
                    let n = self.new_peer(&set.identity, p.public_key, p.keepalive, None);
                    fresh.push(n.clone());
                    n
                }
            };
            if let Some(ep) = p.endpoint {
                peer.set_endpoint(ep);
            }
            set.push(peer, &p.allowed_ips);
        }
        *guard = Arc::new(set);
        drop(guard);
        // A new peer with a keepalive gets a handshake now, as the kernel's WireGuard
        // does: its session is up before the first packet for it has to wait.
        let mut buf = [0u8; 256];
        for p in fresh.iter().filter(|p| p.keepalive.is_some()) {
            let Some(ep) = p.endpoint() else { continue };
            if let TunnResult::WriteToNetwork(m) = p.lock().format_handshake_initiation(&mut buf, false) {
                if self.shared.udp.send_to(m, ep).is_ok() {
                    p.tx_bytes.fetch_add(m.len() as u64, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// A peer with a new `Tunn` under `identity` and a fresh receiver index.
    fn new_peer(
        &self,
        identity: &Identity,
        public_key: [u8; 32],
        keepalive: Option<u16>,
        previous: Option<Arc<Peer>>,
    ) -> Arc<Peer> {
        let index = self.shared.next_index.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
        Arc::new(Peer {
            public_key,
            index,
            keepalive,
            tunn: Mutex::new(Tunn::new(
                identity.secret.clone(),
                PublicKey::from(public_key),
                None,
                keepalive,
                index,
                None,
            )),
            previous: Mutex::new(previous),
            endpoint: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
        })
    }

    /// The device answers to `private_key` from now on: every peer gets a new session
    /// state under it (the next packet to a peer waits for a handshake) and keeps its
    /// old one for receiving what the peer still sends under the old key (see the
    /// module's comment). Counters and endpoints carry over.
    pub fn set_private_key(&self, private_key: &[u8; 32]) {
        let secret = StaticSecret::from(*private_key);
        let identity = Arc::new(Identity {
            public: PublicKey::from(&secret),
            secret,
        });
        let mut guard = self.shared.peers.write().unwrap_or_else(PoisonError::into_inner);
        let old = guard.clone();
        let mut set = PeerSet::new(identity.clone());
        for o in &old.peers {
            // The old state keeps receiving; its own previous one goes.
            *o.previous.lock().unwrap_or_else(PoisonError::into_inner) = None;
            let prev = o.clone();
            let peer = self.new_peer(&identity, o.public_key, o.keepalive, Some(prev));
            peer.endpoint
                .store(o.endpoint.load(Ordering::Relaxed), Ordering::Relaxed);
            peer.rx_bytes
                .store(o.rx_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            peer.tx_bytes
                .store(o.tx_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            set.push(peer, &[]);
        }
        // Same slots, same order: the routes carry over as they are.
        set.routes = old.routes.clone();
        *guard = Arc::new(set);
    }

    /// Every peer's endpoint, last handshake and byte counts, in `set_peers` order.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let set = self.shared.snapshot();
        set.peers
            .iter()
            .map(|p| {
                let since = p.lock().time_since_last_handshake();
                PeerStatus {
                    public_key: p.public_key,
                    endpoint: p.endpoint(),
                    last_handshake: since.and_then(|d| SystemTime::now().checked_sub(d)),
                    rx_bytes: p.rx_bytes.load(Ordering::Relaxed),
                    tx_bytes: p.tx_bytes.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

impl Drop for UserWg {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Closing the TUN fd (when `shared` drops, after this) removes the link too; the
        // explicit delete makes it gone before `drop` returns, whoever holds `shared`.
        let mut nl = self.netlink.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = nl.delete_link(&self.name) {
            tracing::warn!(link = %self.name, error = %e, "wireguard: delete link");
        }
    }
}

fn tx_loop(sh: &Shared, mtu: usize) {
    let mut rbuf = vec![0u8; TUN_READ];
    let mut scratch = vec![0u8; 65_536];
    // A slot takes a segment of MTU bytes plus WireGuard's overhead, or a handshake
    // initiation (148 bytes).
    let mut out = SendBatch::new((mtu + OVERHEAD).max(256));
    let udp = sh.udp.as_raw_fd();
    while !sh.stopped() {
        if !wait_readable(sh.tun.fd(), IDLE_MS) {
            continue;
        }
        let set = sh.snapshot();
        loop {
            let n = match sh.tun.read(&mut rbuf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: the queue is empty; flush below
            };
            if n < VNET_HDR_LEN + 20 {
                continue;
            }
            let (hdr, pkt) = rbuf[..n].split_at_mut(VNET_HDR_LEN);
            let h = VnetHdr::parse(hdr);
            if pkt[0] >> 4 != 4 {
                continue; // IPv4 only: allowed IPs are IPv4 networks
            }
            let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
            let Some(slot) = set.routes.lookup(dst) else {
                continue;
            };
            let peer = &set.peers[slot];
            let Some(ep) = peer.endpoint() else {
                continue;
            };
            if out.free() < gso::segment_count(pkt, &h) {
                out.flush(udp);
            }
            let mut tunn = peer.lock();
            let mut bytes = 0u64;
            gso::segment(pkt, &h, &mut scratch, |seg| {
                if out.is_full() {
                    out.flush(udp);
                }
                if let TunnResult::WriteToNetwork(p) = tunn.encapsulate(seg, out.next_slot()) {
                    let len = p.len();
                    bytes += len as u64;
                    out.commit(len, ep);
                }
            });
            drop(tunn);
            peer.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
            if out.is_full() {
                out.flush(udp);
            }
        }
        if !out.is_empty() {
            out.flush(udp);
        }
    }
}

/// Where a datagram goes: its peer's slot, whether the peer's `previous` state (the
/// old key's) holds the session it names, and whether it is a data packet.
struct Dest {
    slot: usize,
    previous: bool,
    data: bool,
}

/// The peer a datagram claims to be from: by the receiver index we gave it, or, for a
/// handshake initiation, by the static key inside (which costs a DH).
fn peer_of(set: &PeerSet, data: &[u8]) -> Option<Dest> {
    let (index, data) = match Tunn::parse_incoming_packet(data).ok()? {
        Packet::HandshakeInit(p) => {
            let id = &set.identity;
            let half = parse_handshake_anon(&id.secret, &id.public, &p).ok()?;
            let slot = *set.by_key.get(&half.peer_static_public)?;
            return Some(Dest {
                slot,
                previous: false,
                data: false,
            });
        }
        Packet::HandshakeResponse(p) => (p.receiver_idx, false),
        Packet::PacketCookieReply(p) => (p.receiver_idx, false),
        Packet::PacketData(p) => (p.receiver_idx, true),
    };
    let slot = *set.by_index.get(&(index >> 8))?;
    Some(Dest {
        slot,
        previous: set.peers[slot].index != index >> 8,
        data,
    })
}

fn rx_loop(sh: &Shared) {
    let mut batch = RecvBatch::new();
    let mut bufs = RxBufs {
        dec: vec![0u8; RX_SLOT],
        spare: vec![0u8; RX_SLOT],
    };
    let mut gro = Gro::default();
    let tun = &sh.tun;
    let mut write = |b: &[u8]| {
        let _ = tun.write(b);
    };
    let udp = sh.udp.as_raw_fd();
    while !sh.stopped() {
        let n = match batch.recv(udp) {
            Ok(n) => n,
            Err(_) => continue, // timeout (checks the stop flag) or EINTR
        };
        let set = sh.snapshot();
        for i in 0..n {
            let (msg, size, from) = batch.get(i);
            for data in msg.chunks(size) {
                receive(sh, &set, data, from, &mut bufs, &mut |p| gro.push(p, &mut write));
            }
        }
        gro.flush(&mut write);
    }
}

/// One datagram: to its peer's `Tunn` (or, for a session under this device's previous
/// key, the peer's `previous` one); a decrypted packet whose source routes back to that
/// peer goes to `deliver`, answers (handshakes, cookies, queued packets) go back.
fn receive(
    sh: &Shared,
    set: &PeerSet,
    data: &[u8],
    from: SocketAddrV4,
    buf: &mut RxBufs,
    deliver: &mut impl FnMut(&[u8]),
) {
    let Some(d) = peer_of(set, data) else {
        return;
    };
    let peer = &set.peers[d.slot];
    let previous;
    let state = match d.previous {
        false => peer,
        true => match peer.previous() {
            Some(p) => {
                previous = p;
                &previous
            }
            None => return,
        },
    };
    let mut tunn = state.lock();
    let src = Some(IpAddr::V4(*from.ip()));
    let dec = &mut buf.dec;
    let (len, inner_src) = match tunn.decapsulate(src, data, dec) {
        TunnResult::Err(_) => return,
        TunnResult::Done => (0, None),
        TunnResult::WriteToTunnelV4(p, s) => (p.len(), Some(s)),
        TunnResult::WriteToTunnelV6(..) => (0, None),
        TunnResult::WriteToNetwork(p) => {
            // A handshake answer or cookie; then what waited for the session.
            let _ = sh.udp.send_to(p, from);
            while let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &[], &mut buf.spare) {
                let _ = sh.udp.send_to(p, from);
            }
            (0, None)
        }
    };
    if d.data && !d.previous {
        // The first data of a session this side answered confirms it: what waited in
        // its queue (sent while the handshake ran) can go now. boringtun sends a
        // queue only after a handshake message of its own; without this a responder's
        // queue waits for the next handshake, minutes later. Empty, this is one check.
        while let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &[], &mut buf.spare) {
            if sh.udp.send_to(p, from).is_ok() {
                peer.tx_bytes.fetch_add(p.len() as u64, Ordering::Relaxed);
            }
        }
    }
    drop(tunn);
    // Authenticated: the peer is at `from` now (roaming).
    if peer.endpoint() != Some(from) {
        peer.set_endpoint(from);
    }
    peer.rx_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
    // Cryptokey routing: the inner source must route back to this same peer.
    if let Some(s) = inner_src {
        if set.routes.lookup(s) == Some(d.slot) {
            deliver(&buf.dec[..len]);
        }
    }
}

/// The receive thread's buffers: decrypted packets, and packets leaving from a queue.
struct RxBufs {
    dec: Vec<u8>,
    spare: Vec<u8>,
}

fn timer_loop(sh: &Shared) {
    let mut buf = vec![0u8; 2048];
    while !sh.stopped() {
        std::thread::sleep(TIMER_TICK);
        let set = sh.snapshot();
        for peer in &set.peers {
            let mut tunn = peer.lock();
            if let TunnResult::WriteToNetwork(p) = tunn.update_timers(&mut buf) {
                if let Some(ep) = peer.endpoint() {
                    if sh.udp.send_to(p, ep).is_ok() {
                        peer.tx_bytes.fetch_add(p.len() as u64, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}
