//! Hand-made Ethernet/IPv4/TCP|UDP frames for BPF_PROG_TEST_RUN tests, and a reader
//! that checks their checksums independently of the kernel's helpers (RFC 1071 over
//! the header, and over the pseudo-header plus segment for TCP and UDP).

use std::net::{Ipv4Addr, SocketAddrV4};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
const ETH: usize = 14;
const IP: usize = 20;

/// One's-complement sum of `data` (16-bit big-endian words), folded.
fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    sum(0, &p)
}

/// TCP flags.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// A frame `src -> dst` carrying `payload`: a TCP SYN (window 64240) or a UDP
/// datagram, with valid checksums (`udp_csum`: false leaves the UDP checksum 0, "none").
pub fn frame(proto: u8, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8], udp_csum: bool) -> Vec<u8> {
    frame_flags(proto, src, dst, payload, udp_csum, SYN)
}

/// `frame` with the TCP flags given (ignored for UDP).
pub fn frame_flags(
    proto: u8,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
    udp_csum: bool,
    tcp_flags: u8,
) -> Vec<u8> {
    let l4_len = if proto == TCP { 20 } else { 8 };
    let total = IP + l4_len + payload.len();
    let mut f = Vec::with_capacity(ETH + total);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // dst MAC
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // src MAC
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0]); // id, DF
    f.extend_from_slice(&[64, proto, 0, 0]);
    f.extend_from_slice(&src.ip().octets());
    f.extend_from_slice(&dst.ip().octets());
    let c = !(sum(0, &f[ETH..ETH + IP]) as u16);
    f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
    let l4 = f.len();
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    if proto == TCP {
        f.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
        f.extend_from_slice(&0u32.to_be_bytes()); // ack
        f.extend_from_slice(&[0x50, tcp_flags]); // data offset 5
        f.extend_from_slice(&64240u16.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    } else {
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(payload);
    if proto == TCP || udp_csum {
        let mut c = !(sum(pseudo(*src.ip(), *dst.ip(), proto, f.len() - l4), &f[l4..]) as u16);
        if proto == UDP && c == 0 {
            c = 0xffff;
        }
        let off = l4 + if proto == TCP { 16 } else { 6 };
        f[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }
    f
}

/// What a frame carries, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub proto: u8,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub ip_csum_ok: bool,
    /// The TCP/UDP checksum verifies (a UDP checksum of 0 is "none": `l4_csum_zero`).
    pub l4_csum_ok: bool,
    pub l4_csum_zero: bool,
    pub payload: Vec<u8>,
}

/// Reads a frame `frame` made (IPv4 without options); None when it is not one.
pub fn read(f: &[u8]) -> Option<Seen> {
    if f.len() < ETH + IP + 8 || f[12..14] != [0x08, 0x00] || f[ETH] != 0x45 {
        return None;
    }
    let ip = &f[ETH..ETH + IP];
    let proto = ip[9];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let l4 = &f[ETH + IP..ETH + total];
    let port = |o: usize| u16::from_be_bytes([l4[o], l4[o + 1]]);
    let hdr = if proto == TCP { 20 } else { 8 };
    let csum_off = if proto == TCP { 16 } else { 6 };
    let l4_csum_zero = proto == UDP && port(csum_off) == 0;
    Some(Seen {
        proto,
        src: SocketAddrV4::new(src, port(0)),
        dst: SocketAddrV4::new(dst, port(2)),
        ip_csum_ok: sum(0, ip) == 0xffff,
        l4_csum_ok: !l4_csum_zero && sum(pseudo(src, dst, proto, l4.len()), l4) == 0xffff,
        l4_csum_zero,
        payload: l4[hdr..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_verify_and_a_flipped_bit_does_not() {
        let a: SocketAddrV4 = "198.51.100.7:40000".parse().unwrap();
        let b: SocketAddrV4 = "192.0.2.1:8088".parse().unwrap();
        for (proto, csum) in [(TCP, true), (UDP, true), (UDP, false)] {
            let f = frame(proto, a, b, b"hello", csum);
            let s = read(&f).unwrap();
            assert_eq!((s.proto, s.src, s.dst), (proto, a, b));
            assert!(s.ip_csum_ok);
            assert_eq!(s.l4_csum_ok, csum, "{proto} {csum}");
            assert_eq!(s.l4_csum_zero, !csum);
            assert_eq!(s.payload, b"hello");
            let mut bad = f.clone();
            bad[ETH + 16] ^= 1; // destination address
            let s = read(&bad).unwrap();
            assert!(!s.ip_csum_ok);
            assert!(!s.l4_csum_ok);
        }
    }
}
