//! Packets the TUN link hands over with offloads still to do: a checksum left partial
//! (`VNET_F_NEEDS_CSUM`) or a TCP super-packet (`VNET_GSO_TCPV4`) to cut into segments
//! of `gso_size` payload bytes. Pure functions over byte slices, unit-tested below.

use super::tun::{VnetHdr, VNET_F_NEEDS_CSUM};

/// One's-complement sum of `data` added to `acc` (not folded, not inverted).
fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The TCP pseudo-header sum of an IPv4 packet with `tcp_len` bytes of TCP, folded and
/// not inverted: what a checksum left to offload holds.
pub fn pseudo_sum(ip: &[u8], tcp_len: usize) -> u16 {
    fold(sum(&ip[12..20], 6 + tcp_len as u64))
}

/// The internet checksum of `data` (inverted, ready to store).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// Completes a checksum the kernel left partial: it stored the pseudo-header sum at
/// `csum_start + csum_offset`; the rest is the sum from `csum_start` to the end.
pub fn finish_checksum(pkt: &mut [u8], h: &VnetHdr) {
    if h.flags & VNET_F_NEEDS_CSUM == 0 {
        return;
    }
    let start = usize::from(h.csum_start);
    let at = start + usize::from(h.csum_offset);
    if at + 2 > pkt.len() {
        return;
    }
    let c = checksum(&pkt[start..]);
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// How many packets `pkt` becomes: its segment count for a TCP super-packet, else 1.
pub fn segment_count(pkt: &[u8], h: &VnetHdr) -> usize {
    match tcp4_layout(pkt, h) {
        Some((hdrs, mss)) => (pkt.len() - hdrs).div_ceil(mss).max(1),
        None => 1,
    }
}

/// (IPv4 + TCP header length, segment payload size) of a super-packet worth cutting.
fn tcp4_layout(pkt: &[u8], h: &VnetHdr) -> Option<(usize, usize)> {
    if h.gso_type & 0x7f != super::tun::VNET_GSO_TCPV4 || h.gso_size == 0 {
        return None;
    }
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    let thl = usize::from(*pkt.get(ihl + 12)? >> 4) * 4;
    let hdrs = ihl + thl;
    (ihl >= 20 && thl >= 20 && pkt.len() > hdrs).then_some((hdrs, usize::from(h.gso_size)))
}

/// Cuts a TCP/IPv4 super-packet into segments of at most `gso_size` payload bytes, each
/// a complete packet with its own IP id, sequence number, flags and checksums, built in
/// `scratch` and passed to `each`. Anything else is passed on whole, its checksum done.
pub fn segment(pkt: &mut [u8], h: &VnetHdr, scratch: &mut [u8], mut each: impl FnMut(&[u8])) {
    let Some((hdrs, mss)) = tcp4_layout(pkt, h) else {
        finish_checksum(pkt, h);
        each(pkt);
        return;
    };
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let id = u16::from_be_bytes([pkt[4], pkt[5]]);
    let seq = u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]]);
    let flags = pkt[ihl + 13];
    // Pseudo-header without the length: source, destination, protocol.
    let pseudo = sum(&pkt[12..20], 6);
    let payload = &pkt[hdrs..];
    let n = payload.len().div_ceil(mss);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let len = hdrs + chunk.len();
        let s = &mut scratch[..len];
        s[..hdrs].copy_from_slice(&pkt[..hdrs]);
        s[hdrs..].copy_from_slice(chunk);
        s[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        s[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        s[10..12].fill(0);
        let c = checksum(&s[..ihl]);
        s[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut s[ihl..];
        t[4..8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut f = flags;
        if i + 1 < n {
            f &= !(0x01 | 0x08); // FIN and PSH only on the last segment
        }
        if i > 0 {
            f &= !0x80; // CWR only on the first
        }
        t[13] = f;
        t[16..18].fill(0);
        let c = !fold(sum(t, pseudo + t.len() as u64));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        each(s);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tun::VNET_GSO_TCPV4;
    use super::*;

    /// A TCP/IPv4 packet 10.0.0.1:1000 -> 10.0.0.2:2000 with `payload`, checksums valid.
    fn tcp_packet(payload: &[u8], seq: u32, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&7u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&1000u16.to_be_bytes());
        p[22..24].copy_from_slice(&2000u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p.extend_from_slice(payload);
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let pseudo = sum(&p[12..20], 6 + (20 + payload.len()) as u64);
        let c = !fold(sum(&p[20..], pseudo));
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn tcp_valid(p: &[u8]) -> bool {
        let pseudo = sum(&p[12..20], 6 + (p.len() - 20) as u64);
        fold(sum(&p[..20], 0)) == 0xffff && fold(sum(&p[20..], pseudo)) == 0xffff
    }

    #[test]
    fn segments_are_complete_packets() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut big = tcp_packet(&payload, 100, 0x18 | 0x01);
        let h = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: VNET_GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1400,
            csum_start: 20,
            csum_offset: 16,
        };
        assert_eq!(segment_count(&big, &h), 3);
        let mut scratch = vec![0u8; 2000];
        let mut segs = Vec::new();
        segment(&mut big, &h, &mut scratch, |s| segs.push(s.to_vec()));
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(tcp_valid(s), "segment {i} checksums");
            let seq = u32::from_be_bytes(s[24..28].try_into().unwrap());
            assert_eq!(seq, 100 + 1400 * i as u32);
            assert_eq!(u16::from_be_bytes([s[4], s[5]]), 7 + i as u16);
            assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
            let fin_psh = s[33] & 0x09;
            assert_eq!(fin_psh, if i == 2 { 0x09 } else { 0 });
            joined.extend_from_slice(&s[40..]);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn partial_checksum_is_completed() {
        let mut p = tcp_packet(b"hello", 1, 0x18);
        let good = p.clone();
        // What the kernel leaves: the pseudo-header sum, not inverted, in the field.
        let pseudo = fold(sum(&p[12..20], 6 + 25));
        p[36..38].copy_from_slice(&pseudo.to_be_bytes());
        let h = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..Default::default()
        };
        let mut scratch = [0u8; 100];
        let mut out = Vec::new();
        segment(&mut p, &h, &mut scratch, |s| out = s.to_vec());
        assert_eq!(out, good);
    }
}
