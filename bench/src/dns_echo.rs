//! The client's floor for bench/dns.sh: the most trivial DNS responder there is. One
//! blocking thread, one UDP socket, no table, no parsing beyond the header: every query
//! gets its own question back with one A record (192.0.2.1). Whatever p99 dnsperf reports
//! against this is dnsperf's own (pacing, its threads, the shared CPUs) plus the kernel's
//! path, and no server can do better than it on this machine.
//!
//!   netd-bench-dns-echo ADDR:PORT

use std::net::UdpSocket;

fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:5300".into());
    let sock = UdpSocket::bind(&addr)?;
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(4096);
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        // A query with exactly one question and nothing else; anything else is ignored.
        if n < 17 || buf[2] & 0x80 != 0 || buf[4..12] != [0, 1, 0, 0, 0, 0, 0, 0] {
            continue;
        }
        out.clear();
        out.extend_from_slice(&buf[..2]);
        out.extend_from_slice(&[0x84 | (buf[2] & 1), 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
        out.extend_from_slice(&buf[12..n]);
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 2, 0x58, 0, 4, 192, 0, 2, 1]);
        let _ = sock.send_to(&out, peer);
    }
}
