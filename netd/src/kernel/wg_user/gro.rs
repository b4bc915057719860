//! The receive half of the offloads: consecutive segments of one TCP flow that arrive in
//! one `recvmmsg` batch are joined back into a super-packet and written to the TUN link
//! with a virtio-net header saying so (`VNET_GSO_TCPV4`). The stack then takes one
//! packet (and sends one ACK) where it would take ~45, which is most of a receiver's
//! cost; the checks mirror Linux's own `tcp_gro_receive`. Pure over byte slices, so
//! unit-tested below; the caller writes what `Gro` hands it.

use super::gso::{checksum, pseudo_sum};
use super::tun::{VnetHdr, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_HDR_LEN};

/// IPv4 total length limit.
const MAX_LEN: usize = 65_535;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// A super-packet being built, in `buf` after room for its virtio-net header.
pub struct Gro {
    buf: Vec<u8>,
    /// Bytes of the packet (after the header room); 0 = nothing held.
    len: usize,
    segs: usize,
    /// IPv4 + TCP header length, and the payload size of every segment but the last.
    hdrs: usize,
    mss: usize,
    next_seq: u32,
    /// A short or PSH segment ended the run: nothing may follow it.
    closed: bool,
}

impl Default for Gro {
    fn default() -> Self {
        Gro {
            buf: vec![0; VNET_HDR_LEN + MAX_LEN],
            len: 0,
            segs: 0,
            hdrs: 0,
            mss: 0,
            next_seq: 0,
            closed: false,
        }
    }
}

/// (header length, payload length, sequence number) of a TCP/IPv4 data segment that
/// may be joined: no IP options or fragments, only ACK (and PSH) set.
fn joinable(p: &[u8]) -> Option<(usize, usize, u32)> {
    if p.len() < 40 || p[0] != 0x45 || p[9] != 6 || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
        return None;
    }
    if usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len() {
        return None;
    }
    let thl = usize::from(p[32] >> 4) * 4;
    if thl < 20 || p.len() <= 20 + thl || p[33] & !TCP_PSH != TCP_ACK {
        return None;
    }
    let seq = u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
    Some((20 + thl, p.len() - 20 - thl, seq))
}

impl Gro {
    /// Adds one decrypted packet; `write` gets every packet that is complete.
    pub fn push(&mut self, p: &[u8], write: &mut impl FnMut(&[u8])) {
        let seg = joinable(p);
        if let Some((hdrs, payload, seq)) = seg {
            if self.len > 0 && self.fits(p, hdrs, payload, seq) {
                let at = VNET_HDR_LEN + self.len;
                self.buf[at..at + payload].copy_from_slice(&p[hdrs..]);
                self.len += payload;
                self.segs += 1;
                self.next_seq = seq.wrapping_add(payload as u32);
                self.closed = payload < self.mss || p[33] & TCP_PSH != 0;
                if p[33] & TCP_PSH != 0 {
                    self.buf[VNET_HDR_LEN + 33] |= TCP_PSH;
                }
                return;
            }
        }
        self.flush(write);
        match seg {
            Some((hdrs, payload, seq)) => {
                self.buf[VNET_HDR_LEN..VNET_HDR_LEN + p.len()].copy_from_slice(p);
                self.len = p.len();
                self.segs = 1;
                self.hdrs = hdrs;
                self.mss = payload;
                self.next_seq = seq.wrapping_add(payload as u32);
                self.closed = p[33] & TCP_PSH != 0;
            }
            None => {
                // Not joinable: out as it is, ahead of nothing (the run was flushed).
                self.buf[VNET_HDR_LEN..VNET_HDR_LEN + p.len()].copy_from_slice(p);
                data_valid().write(&mut self.buf[..VNET_HDR_LEN]);
                write(&self.buf[..VNET_HDR_LEN + p.len()]);
            }
        }
    }

    fn fits(&self, p: &[u8], hdrs: usize, payload: usize, seq: u32) -> bool {
        let h = &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + self.hdrs];
        !self.closed
            && hdrs == self.hdrs
            && payload <= self.mss
            && seq == self.next_seq
            && self.len + payload <= MAX_LEN
            // Same addresses, TOS, TTL, ports, ACK number and TCP options.
            && p[1] == h[1]
            && p[8] == h[8]
            && p[12..20] == h[12..20]
            && p[20..24] == h[20..24]
            && p[28..32] == h[28..32]
            && p[40..hdrs] == h[40..hdrs]
    }

    /// Writes out what is held: as it is when one segment, else as a super-packet whose
    /// TCP checksum the stack finishes (it holds the pseudo-header sum, as TSO leaves it).
    pub fn flush(&mut self, write: &mut impl FnMut(&[u8])) {
        if self.len == 0 {
            return;
        }
        let p = &mut self.buf[VNET_HDR_LEN..VNET_HDR_LEN + self.len];
        let hdr = if self.segs == 1 {
            data_valid()
        } else {
            p[2..4].copy_from_slice(&(self.len as u16).to_be_bytes());
            p[10..12].fill(0);
            let c = checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            let c = pseudo_sum(p, self.len - 20);
            p[36..38].copy_from_slice(&c.to_be_bytes());
            VnetHdr {
                flags: VNET_F_NEEDS_CSUM,
                gso_type: VNET_GSO_TCPV4,
                hdr_len: self.hdrs as u16,
                gso_size: self.mss as u16,
                csum_start: 20,
                csum_offset: 16,
            }
        };
        hdr.write(&mut self.buf[..VNET_HDR_LEN]);
        write(&self.buf[..VNET_HDR_LEN + self.len]);
        self.len = 0;
        self.segs = 0;
    }
}

/// Poly1305 vouched for the packet, so the stack need not verify its checksums.
fn data_valid() -> VnetHdr {
    VnetHdr {
        flags: VNET_F_DATA_VALID,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::gso::{segment, segment_count};
    use super::*;

    /// A valid TCP/IPv4 packet 10.0.0.1 -> 10.0.0.2 with `payload` at `seq`.
    fn tcp_packet(payload: &[u8], seq: u32, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        p[6] = 0x40;
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
        p
    }

    #[test]
    fn a_run_becomes_one_super_packet_that_segments_back() {
        let data: Vec<u8> = (0..3500u32).map(|i| (i % 251) as u8).collect();
        let mut g = Gro::default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut w = |b: &[u8]| out.push(b.to_vec());
        for (i, c) in data.chunks(1400).enumerate() {
            let flags = if i == 2 { TCP_ACK | TCP_PSH } else { TCP_ACK };
            g.push(&tcp_packet(c, 5000 + 1400 * i as u32, flags), &mut w);
        }
        g.flush(&mut w);
        assert_eq!(out.len(), 1);
        let h = VnetHdr::parse(&out[0]);
        assert_eq!((h.gso_type, h.gso_size, h.hdr_len), (VNET_GSO_TCPV4, 1400, 40));
        let mut sup = out[0][VNET_HDR_LEN..].to_vec();
        assert_eq!(sup[33], TCP_ACK | TCP_PSH);
        assert_eq!(&sup[40..], &data[..]);
        assert_eq!(segment_count(&sup, &h), 3);
        let mut scratch = vec![0u8; 2000];
        let mut n = 0;
        segment(&mut sup, &h, &mut scratch, |_| n += 1);
        assert_eq!(n, 3);
    }

    #[test]
    fn gaps_other_flows_and_non_data_break_the_run() {
        let mut g = Gro::default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut w = |b: &[u8]| out.push(b.to_vec());
        g.push(&tcp_packet(&[1; 100], 0, TCP_ACK), &mut w);
        g.push(&tcp_packet(&[1; 100], 150, TCP_ACK), &mut w); // gap
        g.push(&tcp_packet(&[], 250, TCP_ACK), &mut w); // pure ACK
        g.push(&tcp_packet(&[1; 100], 250, TCP_ACK | 0x01), &mut w); // FIN
        g.flush(&mut w);
        assert_eq!(out.len(), 4);
        for o in &out {
            assert_eq!(VnetHdr::parse(o).gso_type, 0);
            assert_eq!(VnetHdr::parse(o).flags, VNET_F_DATA_VALID);
        }
    }
}
