//! Convergence prober for `bench/overlay.sh`: from every network namespace given, at
//! once (a thread each), ICMP echo requests to ADDR every 20 ms until one is answered;
//! prints each namespace's time to its first answer (ms since the prober's start, which
//! the script takes as the create's end) and exits 1 if one got none within the limit.
//! One process for all hosts: 49 `nsenter ping` loops on 2 cores measured process
//! starts, not the overlay.
//!
//!   netd-bench-probe ADDR LIMIT_MS NETNS_FILE...

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Time from `t0` to the first echo reply from `to`, pinging from inside `ns`.
fn probe(ns: &str, to: Ipv4Addr, t0: Instant, limit: Duration, id: u16) -> anyhow::Result<Option<Duration>> {
    let f = std::fs::File::open(ns)?;
    // SAFETY: setns on this thread only, with an fd we hold.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        anyhow::bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a plain socket call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        anyhow::bail!("raw socket in {ns}: {}", std::io::Error::last_os_error());
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 20_000,
    };
    // SAFETY: setsockopt with a valid fd and a timeval.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(to).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut seq: u16 = 0;
    let mut got = None;
    while t0.elapsed() < limit && got.is_none() {
        seq = seq.wrapping_add(1);
        let mut pkt = [0u8; 16];
        pkt[0] = 8; // echo request
        pkt[4..6].copy_from_slice(&id.to_be_bytes());
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
        // SAFETY: sendto with a valid buffer and address.
        unsafe {
            libc::sendto(
                fd,
                pkt.as_ptr() as *const libc::c_void,
                pkt.len(),
                0,
                &dst as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_millis(20) {
            let mut buf = [0u8; 1500];
            // SAFETY: recv into a buffer we own.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 28 {
                break; // timeout (or a runt): send again
            }
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
            let icmp = &buf[ihl..n as usize];
            if src == to && icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() {
                got = Some(t0.elapsed());
                break;
            }
        }
    }
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    Ok(got)
}

fn main() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [to, limit, nss @ ..] = args.as_slice() else {
        anyhow::bail!("usage: netd-bench-probe ADDR LIMIT_MS NETNS_FILE...");
    };
    let to: Ipv4Addr = to.parse()?;
    let limit = Duration::from_millis(limit.parse()?);
    let hs: Vec<_> = nss
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let ns = ns.clone();
            std::thread::spawn(move || (probe(&ns, to, t0, limit, 0x4e00 + i as u16), ns))
        })
        .collect();
    let mut missing = false;
    for h in hs {
        let (r, ns) = h.join().map_err(|_| anyhow::anyhow!("probe thread panicked"))?;
        match r? {
            Some(d) => println!("{} {ns}", d.as_millis()),
            None => {
                println!("none {ns}");
                missing = true;
            }
        }
    }
    std::process::exit(i32::from(missing));
}
