//! The client's floor for bench/dns.sh: the most trivial DNS responder there is. One
//! blocking thread, one UDP socket, no table, no parsing beyond the header: every query
//! gets its own question back with one A record (192.0.2.1). It reads and writes in
//! batches (recvmmsg/sendmmsg, as netd does), so it is at least as fast as any server can
//! be on this path. Whatever p99 dnsperf reports against it is dnsperf's own (pacing, its
//! threads, the shared CPUs) plus the kernel's path: no server can do better than it on
//! this machine at the same load.
//!
//!   netd-bench-dns-echo ADDR:PORT

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use netd::kernel::udp_batch::{self, Batch};

fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:5300".into());
    let sock = UdpSocket::bind(&addr)?;
    let fd = sock.as_raw_fd();
    let mut b = Batch::default();
    let mut replies: Vec<(Vec<u8>, libc::sockaddr_storage)> = Vec::with_capacity(udp_batch::BATCH);
    loop {
        let Ok(n) = b.recv_wait(fd) else { continue };
        for i in 0..n {
            let Some((q, _)) = b.get(i) else { continue };
            // A query with exactly one question and nothing else; anything else is ignored.
            if q.len() < 17 || q[2] & 0x80 != 0 || q[4..12] != [0, 1, 0, 0, 0, 0, 0, 0] {
                continue;
            }
            let mut out = Vec::with_capacity(q.len() + 16);
            out.extend_from_slice(&q[..2]);
            out.extend_from_slice(&[0x84 | (q[2] & 1), 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
            out.extend_from_slice(&q[12..]);
            out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 2, 0x58, 0, 4, 192, 0, 2, 1]);
            replies.push((out, b.peer(i)));
        }
        let _ = udp_batch::send(fd, &replies);
        replies.clear();
    }
}
