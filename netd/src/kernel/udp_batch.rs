//! Many UDP datagrams per system call: `recvmmsg(2)` into fixed slots, `sendmmsg(2)` of
//! the replies. The DNS server's hot loop uses it so a burst of queries that queued up
//! while its thread was off the CPU costs two system calls per `BATCH`, not two per query
//! (plus a readiness round trip each): the queue drains faster, which is what the tail
//! latency is made of.
//!
//! The slots are reused from call to call (one `Batch` per serving thread), so the hot
//! path allocates nothing for receiving.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per call.
pub const BATCH: usize = 32;
/// Largest query we read; a longer datagram is reported as truncated (DNS queries are a
/// few dozen bytes, and a resolver never sends one past the 4096-byte EDNS maximum).
pub const SLOT: usize = 4096;

pub struct Batch {
    bufs: Vec<[u8; SLOT]>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: [usize; BATCH],
    flags: [i32; BATCH],
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            bufs: vec![[0u8; SLOT]; BATCH],
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            addrs: vec![unsafe { zeroed() }; BATCH],
            lens: [0; BATCH],
            flags: [0; BATCH],
        }
    }
}

fn to_socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

impl Batch {
    /// Reads up to `BATCH` datagrams without blocking; `WouldBlock` when none is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_flags(fd, libc::MSG_DONTWAIT)
    }

    /// Waits for one datagram (on a blocking socket), then takes what else is queued,
    /// up to `BATCH`: for a server thread of its own.
    pub fn recv_wait(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_flags(fd, libc::MSG_WAITFORONE)
    }

    fn recv_flags(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        let mut iov: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: SLOT,
        });
        // SAFETY: mmsghdr is plain old data; the pointers set below outlive the call.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut iov[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs` holds BATCH valid headers pointing at buffers we own.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, h) in hdrs.iter().enumerate().take(n) {
            self.lens[i] = h.msg_len as usize;
            self.flags[i] = h.msg_hdr.msg_flags;
        }
        Ok(n)
    }

    /// Datagram `i` of the last `recv`: its bytes and sender, or `None` when it was longer
    /// than a slot (cut short) or came from an address family we do not know.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= BATCH || self.flags[i] & libc::MSG_TRUNC != 0 {
            return None;
        }
        let peer = to_socket_addr(&self.addrs[i])?;
        Some((&self.bufs[i][..self.lens[i].min(SLOT)], peer))
    }

    /// The raw sender of datagram `i`, to send its reply back with `send`.
    pub fn peer(&self, i: usize) -> libc::sockaddr_storage {
        self.addrs[i.min(BATCH - 1)]
    }
}

/// Sends each `(bytes, raw peer)` as one datagram, in as few calls as the kernel takes
/// them; returns how many went out. Stops at the first error other than `EINTR` (UDP:
/// a reply the socket buffer cannot take is lost like any datagram).
pub fn send(fd: RawFd, out: &[(Vec<u8>, libc::sockaddr_storage)]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < out.len() {
        let chunk = &out[sent..(sent + BATCH).min(out.len())];
        let mut iov: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: chunk
                .get(i)
                .map_or(std::ptr::null_mut(), |(b, _)| b.as_ptr() as *mut libc::c_void),
            iov_len: chunk.get(i).map_or(0, |(b, _)| b.len()),
        });
        // SAFETY: plain old data, filled in below with pointers into `chunk` and `iov`,
        // which outlive the call; the kernel only reads through them.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, (h, (_, peer))) in hdrs.iter_mut().zip(chunk).enumerate() {
            h.msg_hdr.msg_name =
                (peer as *const libc::sockaddr_storage as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = match i32::from(peer.ss_family) {
                libc::AF_INET6 => size_of::<libc::sockaddr_in6>(),
                _ => size_of::<libc::sockaddr_in>(),
            } as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut iov[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs` holds chunk.len() valid headers.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                chunk.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return if sent > 0 { Ok(sent) } else { Err(e) };
        }
        if n == 0 {
            break;
        }
        sent += n as usize;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_roundtrip_on_loopback() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let mut b = Batch::default();
        assert_eq!(
            b.recv(server.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..40u8 {
            client.send_to(&[i; 3], to).unwrap();
        }
        client.send_to(&vec![7u8; SLOT + 1], to).unwrap();
        let mut got = Vec::new();
        let mut replies = Vec::new();
        let mut truncated = 0;
        loop {
            let n = match b.recv(server.as_raw_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            };
            assert!(n <= BATCH);
            for i in 0..n {
                match b.get(i) {
                    Some((bytes, peer)) => {
                        assert_eq!(peer, client.local_addr().unwrap());
                        got.push(bytes.to_vec());
                        replies.push((bytes.to_vec(), b.peer(i)));
                    }
                    None => truncated += 1,
                }
            }
        }
        assert_eq!(got.len(), 40);
        assert_eq!(got[39], vec![39u8; 3]);
        assert_eq!(truncated, 1, "the oversized datagram is reported, not cut");
        assert_eq!(send(server.as_raw_fd(), &replies).unwrap(), 40);
        let mut buf = [0u8; 16];
        for i in 0..40u8 {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&[i; 3][..], to));
        }
        // Blocking flavour: waits for the first, takes the rest queued behind it.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            client.send_to(b"late", to).unwrap();
        });
        assert_eq!(b.recv_wait(server.as_raw_fd()).unwrap(), 1);
        assert_eq!(b.get(0).unwrap().0, b"late");
        sender.join().unwrap();
    }
}
