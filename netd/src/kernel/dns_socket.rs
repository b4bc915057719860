//! The sockets of the embedded DNS server, opened inside a sandbox's namespace.
//!
//! A socket belongs to the namespace it was created in, whichever thread uses it later,
//! so a short-lived thread enters the sandbox's namespace just long enough to bind
//! `127.0.0.11:53` (UDP and TCP) and hands the descriptors back; one netd process then
//! serves every sandbox from its ordinary async workers. We chose this over an nftables
//! DNAT in each sandbox to a netd listener because the listening socket itself tells
//! which sandbox asked (no source-address bookkeeping, which overlapping subnets or a
//! sandbox on several networks would make ambiguous), there are no per-sandbox rules to
//! keep in sync, and nothing listens outside the sandboxes, so netd cannot be an open
//! resolver. 127.0.0.11 needs no address setup: all of 127/8 is local on `lo`.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;

use super::{netns, KernelError};

/// Binds UDP and TCP on `addr` inside the namespace at `path`, non-blocking.
pub fn bind_in(path: &Path, addr: SocketAddr) -> Result<(UdpSocket, TcpListener), KernelError> {
    let err = |what: &str, e: std::io::Error| KernelError::Netns {
        path: path.to_path_buf(),
        msg: format!("bind {what} {addr}: {e}"),
    };
    netns::run_in(path, move || -> Result<(UdpSocket, TcpListener), KernelError> {
        let u = UdpSocket::bind(addr).map_err(|e| err("udp", e))?;
        let t = TcpListener::bind(addr).map_err(|e| err("tcp", e))?;
        u.set_nonblocking(true).map_err(|e| err("udp", e))?;
        t.set_nonblocking(true).map_err(|e| err("tcp", e))?;
        Ok((u, t))
    })?
}
