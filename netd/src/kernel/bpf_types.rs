//! `#[repr(C)]` mirrors of the map entries in `ebpf/include/lb4.h`, `lb6.h` and `nodeport4.h`, byte for byte (the
//! size tests below fail when the two drift apart). Addresses and ports are kept in
//! network byte order, as the programs read them from `struct bpf_sock_addr`; the
//! constructors take host values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A map entry's address: `u32` for the IPv4 maps (`lb4.h`), `[u32; 4]` for the IPv6
/// ones (`lb6.h`), in network byte order as the programs read `user_ip4` / `user_ip6`.
/// The planner (`lb::ebpf_plan`) is written once over it.
pub trait LbAddr:
    aya::Pod + Copy + Default + Ord + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static
{
    type Ip: Copy + Ord + std::fmt::Display + std::fmt::Debug;
    /// `ip` when it is of this family.
    fn pick(ip: IpAddr) -> Option<Self::Ip>;
    fn raw(ip: Self::Ip) -> Self;
    fn ip(self) -> Self::Ip;
}

impl LbAddr for u32 {
    type Ip = Ipv4Addr;
    fn pick(ip: IpAddr) -> Option<Ipv4Addr> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
    fn raw(ip: Ipv4Addr) -> u32 {
        u32::from(ip).to_be()
    }
    fn ip(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from_be(self))
    }
}

impl LbAddr for [u32; 4] {
    type Ip = Ipv6Addr;
    fn pick(ip: IpAddr) -> Option<Ipv6Addr> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
    fn raw(ip: Ipv6Addr) -> [u32; 4] {
        let o = ip.octets();
        std::array::from_fn(|i| u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]))
    }
    fn ip(self) -> Ipv6Addr {
        let mut o = [0u8; 16];
        for (i, w) in self.iter().enumerate() {
            o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
        Ipv6Addr::from(o)
    }
}

/// `struct lb4_key` / `struct lb6_key`: a service port (`backend_slot` 0) or one of its
/// backend slots.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LbKey<A> {
    pub address: A,
    pub dport: u16,
    pub backend_slot: u16,
    pub proto: u8,
    pub scope: u8,
    pub pad: [u8; 2],
}

pub type Lb4Key = LbKey<u32>;
pub type Lb6Key = LbKey<[u32; 4]>;

impl<A: LbAddr> LbKey<A> {
    pub fn new(vip: A::Ip, port: u16, proto: u8, slot: u16) -> LbKey<A> {
        LbKey {
            address: A::raw(vip),
            dport: port.to_be(),
            backend_slot: slot,
            proto,
            scope: 0,
            pad: [0; 2],
        }
    }
    pub fn vip(&self) -> A::Ip {
        self.address.ip()
    }
    pub fn port(&self) -> u16 {
        u16::from_be(self.dport)
    }
    /// The master entry of this key's service.
    pub fn master(&self) -> LbKey<A> {
        LbKey {
            backend_slot: 0,
            ..*self
        }
    }
}

/// `struct lb4_service` (the IPv6 maps use it too: it holds no address).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lb4Service {
    pub backend_id: u32,
    pub count: u16,
    pub rev_nat_index: u16,
    pub net_id: u32,
    pub affinity_secs: u32,
}

/// `struct lb4_backend` / `struct lb6_backend`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LbBackend<A> {
    pub address: A,
    pub port: u16,
    pub proto: u8,
    pub flags: u8,
}

pub type Lb4Backend = LbBackend<u32>;
pub type Lb6Backend = LbBackend<[u32; 4]>;

impl<A: LbAddr> LbBackend<A> {
    pub fn new(ip: A::Ip, port: u16, proto: u8) -> LbBackend<A> {
        LbBackend {
            address: A::raw(ip),
            port: port.to_be(),
            proto,
            flags: 0,
        }
    }
}

/// `struct lb4_reverse_nat` / `struct lb6_reverse_nat`: what a backend's replies are
/// shown as.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LbReverseNat<A> {
    pub address: A,
    pub port: u16,
    pub pad: u16,
}

pub type Lb4ReverseNat = LbReverseNat<u32>;
pub type Lb6ReverseNat = LbReverseNat<[u32; 4]>;

/// `struct lb4_scope_key`: namespace `netns_cookie` may use the VIPs of `net_id`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lb4ScopeKey {
    pub netns_cookie: u64,
    pub net_id: u32,
    pub pad: u32,
}

/// `struct lb4_reverse_sk_key` (written by the programs only).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lb4ReverseSkKey {
    pub cookie: u64,
    pub address: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct lb4_reverse_sk`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lb4ReverseSk {
    pub address: u32,
    pub port: u16,
    pub rev_nat_index: u16,
}

/// `struct lb4_affinity_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lb4AffinityKey {
    pub netns_cookie: u64,
    pub rev_nat_index: u32,
    pub pad: u32,
}

/// `struct lb4_affinity`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lb4Affinity {
    pub backend_id: u32,
    pub pad: u32,
    pub last_used_ns: u64,
}

/// The mark `ebpf/tc_nodeport4.c` sets on a packet it DNATed (`NETD_NODEPORT_MARK`):
/// netd's forward chain lets such packets into a network, as `ct status dnat` does for
/// nftables' own DNAT.
pub const NODEPORT_MARK: u32 = 0x0100;

/// `struct lb4_nodeport_key` (`ebpf/include/nodeport4.h`): a published port.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lb4NodePortKey {
    pub dport: u16,
    pub proto: u8,
    pub pad: u8,
}

impl Lb4NodePortKey {
    pub fn new(port: u16, proto: u8) -> Lb4NodePortKey {
        Lb4NodePortKey {
            dport: port.to_be(),
            proto,
            pad: 0,
        }
    }
    pub fn port(&self) -> u16 {
        u16::from_be(self.dport)
    }
}

/// `struct lb4_nodeport`: which Maglev table, its size and the backend count.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lb4NodePort {
    pub maglev_id: u32,
    pub table_size: u32,
    pub count: u16,
    pub flags: u16,
    pub pad: u32,
}

/// `struct lb4_maglev_key`: one slot of one table.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lb4MaglevKey {
    pub maglev_id: u32,
    pub slot: u32,
}

/// `struct lb4_flow_key`: a 5-tuple as the packet carries it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lb4FlowKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// `struct lb4_flow`: an address and port (a Maglev slot's backend, a flow's other end).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lb4Flow {
    pub address: u32,
    pub port: u16,
    pub pad: u16,
}

impl Lb4Flow {
    pub fn new(ip: Ipv4Addr, port: u16) -> Lb4Flow {
        Lb4Flow {
            address: u32::from(ip).to_be(),
            port: port.to_be(),
            pad: 0,
        }
    }
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from_be(self.address))
    }
    pub fn port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

// SAFETY: plain `#[repr(C)]` integers with explicit padding fields, no implicit padding
// (the size tests check that), so every byte pattern is a valid value.
// The generic ones hold a `u32` or `[u32; 4]` address first: no padding either way.
unsafe impl<A: aya::Pod> aya::Pod for LbKey<A> {}
unsafe impl aya::Pod for Lb4Service {}
unsafe impl<A: aya::Pod> aya::Pod for LbBackend<A> {}
unsafe impl<A: aya::Pod> aya::Pod for LbReverseNat<A> {}
unsafe impl aya::Pod for Lb4ScopeKey {}
unsafe impl aya::Pod for Lb4ReverseSkKey {}
unsafe impl aya::Pod for Lb4ReverseSk {}
unsafe impl aya::Pod for Lb4AffinityKey {}
unsafe impl aya::Pod for Lb4Affinity {}
unsafe impl aya::Pod for Lb4NodePortKey {}
unsafe impl aya::Pod for Lb4NodePort {}
unsafe impl aya::Pod for Lb4MaglevKey {}
unsafe impl aya::Pod for Lb4FlowKey {}
unsafe impl aya::Pod for Lb4Flow {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, size_of};

    /// The sizes `ebpf/include/lb4.h` gives (the C compiler's, counted by hand from the
    /// header: the fields, no hidden padding).
    #[test]
    fn sizes_match_the_c_header() {
        assert_eq!(size_of::<Lb4Key>(), 12);
        assert_eq!(size_of::<Lb4Service>(), 16);
        assert_eq!(size_of::<Lb4Backend>(), 8);
        assert_eq!(size_of::<Lb4ReverseNat>(), 8);
        assert_eq!(size_of::<Lb4ScopeKey>(), 16);
        assert_eq!(size_of::<Lb4ReverseSkKey>(), 16);
        assert_eq!(size_of::<Lb4ReverseSk>(), 8);
        assert_eq!(size_of::<Lb4AffinityKey>(), 16);
        assert_eq!(size_of::<Lb4Affinity>(), 16);
        assert_eq!(align_of::<Lb4ScopeKey>(), 8);
        // ebpf/include/lb6.h
        assert_eq!(size_of::<Lb6Key>(), 24);
        assert_eq!(size_of::<Lb6Backend>(), 20);
        assert_eq!(size_of::<Lb6ReverseNat>(), 20);
        // ebpf/include/nodeport4.h
        assert_eq!(size_of::<Lb4NodePortKey>(), 4);
        assert_eq!(size_of::<Lb4NodePort>(), 16);
        assert_eq!(size_of::<Lb4MaglevKey>(), 8);
        assert_eq!(size_of::<Lb4FlowKey>(), 16);
        assert_eq!(size_of::<Lb4Flow>(), 8);
    }

    #[test]
    fn byte_order_is_the_network_s() {
        let k = Lb4Key::new("10.90.0.200".parse().unwrap(), 80, 6, 0);
        assert_eq!(k.address.to_ne_bytes(), [10, 90, 0, 200]);
        assert_eq!(k.dport.to_ne_bytes(), [0, 80]);
        assert_eq!((k.vip(), k.port()), ("10.90.0.200".parse().unwrap(), 80));
        let ip: Ipv6Addr = "fd00:90::c8".parse().unwrap();
        let k = Lb6Key::new(ip, 80, 6, 0);
        let bytes: Vec<u8> = k.address.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(bytes, ip.octets());
        assert_eq!(k.vip(), ip);
    }
}
