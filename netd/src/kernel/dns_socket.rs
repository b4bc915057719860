//! The sockets of the embedded DNS server, opened inside a sandbox's namespace.
//!
//! A socket belongs to the namespace it was created in, whichever thread uses it later,
//! so a short-lived thread enters the sandbox's namespace just long enough to bind and
//! hands the descriptors back; one netd process then serves every sandbox from its
//! ordinary async workers. The socket itself tells which sandbox asked: no source-address
//! bookkeeping (which overlapping subnets or a sandbox on several networks would make
//! ambiguous), and nothing listens outside the sandboxes, so netd cannot be an open
//! resolver. 127.0.0.11 needs no address setup: all of 127/8 is local on `lo`.
//!
//! As Docker does, the sockets take an ephemeral port on 127.0.0.11 and a DNAT in the
//! sandbox's own nftables table (`ip netd_dns`, output hook) sends `127.0.0.11:53` there.
//! Binding port 53 itself would make a program in the sandbox that binds `0.0.0.0:53`
//! or `[::]:53` (a DNS server in a container) fail with EADDRINUSE. Conntrack in the
//! sandbox turns the replies' source back into port 53.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::Path;

use super::nft::Nft;
use super::{netns, KernelError};

/// The DNAT table in a sandbox, replaced whole each time (a namespace that netd binds
/// again after a restart still has the old ports in it).
fn dnat_batch(ip: Ipv4Addr, port: u16, udp: u16, tcp: u16) -> String {
    format!(
        "add table ip netd_dns\ndelete table ip netd_dns\n\
         add table ip netd_dns\n\
         add chain ip netd_dns output {{ type nat hook output priority -100; policy accept; }}\n\
         add rule ip netd_dns output ip daddr {ip} udp dport {port} dnat to {ip}:{udp} comment \"netd dns\"\n\
         add rule ip netd_dns output ip daddr {ip} tcp dport {port} dnat to {ip}:{tcp} comment \"netd dns\"\n"
    )
}

/// Binds UDP and TCP on `ip` (ephemeral ports, non-blocking) inside the namespace at
/// `path`, and points `ip:port` at them.
pub fn bind_in(path: &Path, ip: Ipv4Addr, port: u16) -> Result<(UdpSocket, TcpListener), KernelError> {
    let err = |what: &str, e: std::io::Error| KernelError::Netns {
        path: path.to_path_buf(),
        msg: format!("bind {what} {ip}: {e}"),
    };
    let any = SocketAddr::V4(SocketAddrV4::new(ip, 0));
    let (u, t) = netns::run_in(path, move || -> Result<(UdpSocket, TcpListener), KernelError> {
        let u = UdpSocket::bind(any).map_err(|e| err("udp", e))?;
        let t = TcpListener::bind(any).map_err(|e| err("tcp", e))?;
        u.set_nonblocking(true).map_err(|e| err("udp", e))?;
        t.set_nonblocking(true).map_err(|e| err("tcp", e))?;
        Ok((u, t))
    })??;
    let pu = u.local_addr().map_err(|e| err("udp", e))?.port();
    let pt = t.local_addr().map_err(|e| err("tcp", e))?.port();
    Nft::new_in(Some(path))?.run(&dnat_batch(ip, port, pu, pt))?;
    Ok((u, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnat_batch_replaces_the_table() {
        let b = dnat_batch(Ipv4Addr::new(127, 0, 0, 11), 53, 40000, 40001);
        assert!(b.starts_with("add table ip netd_dns\ndelete table ip netd_dns\n"));
        assert!(b.contains("udp dport 53 dnat to 127.0.0.11:40000"));
        assert!(b.contains("tcp dport 53 dnat to 127.0.0.11:40001"));
    }
}
