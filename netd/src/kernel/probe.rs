//! Reachability probes and the responder's sockets, opened inside a given network
//! namespace. A socket keeps the namespace it was created in, so each probe enters the
//! namespace on a short-lived thread of its own, creates its socket there and uses it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

/// Runs `f` on a new thread that has entered `netns` (or the caller's namespace if None).
pub fn in_netns<T: Send + 'static>(
    netns: Option<&Path>,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let path: Option<PathBuf> = netns.map(Path::to_path_buf);
    std::thread::spawn(move || {
        if let Some(p) = path {
            let fd = File::open(&p)?;
            setns(&fd, CloneFlags::CLONE_NEWNET)
                .map_err(|e| std::io::Error::other(format!("setns {}: {e}", p.display())))?;
        }
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("probe thread panicked"))?
}

/// Connects to `addr` over TCP from inside `netns` and returns the first line the peer
/// sends (the responder sends its name).
pub fn tcp_probe(netns: Option<&Path>, addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
    })
}

/// Sends one datagram to `addr` from inside `netns` and returns the answer.
pub fn udp_probe(netns: Option<&Path>, addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    in_netns(netns, move || {
        let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .map_err(std::io::Error::other)?;
        let s = UdpSocket::bind(bind)?;
        s.set_read_timeout(Some(timeout))?;
        s.send_to(b"ping\n", addr)?;
        let mut buf = [0u8; 256];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
    })
}

/// Sockets for a responder, bound inside `netns` on every address (v4 and v6).
pub fn bind_responder(
    netns: Option<&Path>,
    tcp: Vec<u16>,
    udp: Vec<u16>,
) -> std::io::Result<(Vec<std::net::TcpListener>, Vec<UdpSocket>)> {
    in_netns(netns, move || {
        let mut t = Vec::new();
        let mut u = Vec::new();
        for p in tcp {
            // [::] with v6only off takes IPv4 too; fall back to 0.0.0.0 where IPv6 is off.
            t.push(
                std::net::TcpListener::bind(("::", p))
                    .or_else(|_| std::net::TcpListener::bind(("0.0.0.0", p)))?,
            );
        }
        for p in udp {
            u.push(UdpSocket::bind(("::", p)).or_else(|_| UdpSocket::bind(("0.0.0.0", p)))?);
        }
        Ok((t, u))
    })
}

/// Writes `msg` to a TCP peer and closes; used by the responder.
pub fn answer(mut s: TcpStream, msg: &str) {
    let _ = s.write_all(msg.as_bytes());
}
