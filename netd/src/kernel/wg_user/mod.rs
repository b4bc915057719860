//! A WireGuard device in userspace: a TUN link, one UDP socket, and the WireGuard protocol
//! of the `boringtun` crate (`noise`: handshakes, session keys, timers, data packets).
//! This kernel has no WireGuard module (`ip link add type wireguard`: "Unknown device
//! type"), so the encrypted overlay cannot use the kernel's; a userspace device works on
//! any kernel with TUN. netd does its own I/O instead of boringtun's `device` module
//! because that is where the time goes, in the kernel's per-packet work: the TUN link
//! hands over 64 KiB TCP super-packets (TSO, cut here into segments) and takes them
//! back (runs of segments joined again, `gro.rs`), and encrypted packets cross the
//! UDP socket as GSO/GRO runs in `sendmmsg`/`recvmmsg` batches (`mmsg.rs`); no packet
//! is allocated. That made it 7.4 times boringtun-cli's throughput (docs/benchmarks.md).
//!
//! Threads: `start` spawns three (`wg-tx`, `wg-rx`, `wg-timers`); they block in
//! poll/recvmmsg with a 200 ms timeout, so `drop` returns within about that.
//!
//! `UserWg::start` works in the calling thread's network namespace: the TUN link and the
//! UDP socket are made there, and the worker threads only use those descriptors.

mod allowed;
mod device;
mod gro;
mod gso;
mod keys;
mod mmsg;
mod tun;

use std::net::SocketAddrV4;
use std::time::SystemTime;

pub use device::UserWg;
pub use keys::{generate_private_key, key_from_base64, key_to_base64, public_key_of};

/// The device: its link name, its key, the UDP port it listens on.
#[derive(Clone)]
pub struct WgConfig {
    pub name: String,
    pub private_key: [u8; 32],
    pub listen_port: u16,
    pub mtu: u32,
    /// SO_MARK of the UDP socket, so policy routing can keep encrypted packets off the
    /// tunnel; 0 sets none.
    pub fwmark: u32,
}

/// Keys stay out of logs: Debug shows everything else.
impl std::fmt::Debug for WgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgConfig")
            .field("name", &self.name)
            .field("listen_port", &self.listen_port)
            .field("mtu", &self.mtu)
            .field("fwmark", &self.fwmark)
            .finish_non_exhaustive()
    }
}

/// A peer as configured: its key, where to reach it (learnt from its packets when
/// `None`), the inner addresses it may use, and a keepalive interval in seconds.
#[derive(Clone, PartialEq, Eq)]
pub struct WgPeer {
    pub public_key: [u8; 32],
    pub endpoint: Option<SocketAddrV4>,
    pub allowed_ips: Vec<ipnetwork::Ipv4Network>,
    pub keepalive: Option<u16>,
}

impl std::fmt::Debug for WgPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgPeer")
            .field("endpoint", &self.endpoint)
            .field("allowed_ips", &self.allowed_ips)
            .field("keepalive", &self.keepalive)
            .finish_non_exhaustive()
    }
}

/// What `wg show` tells of a peer; the byte counts are of UDP payloads sent and received.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: [u8; 32],
    pub endpoint: Option<SocketAddrV4>,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl std::fmt::Debug for PeerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerStatus")
            .field("endpoint", &self.endpoint)
            .field("last_handshake", &self.last_handshake)
            .field("rx_bytes", &self.rx_bytes)
            .field("tx_bytes", &self.tx_bytes)
            .finish_non_exhaustive()
    }
}
