//! Many UDP datagrams per system call for the device's threads, with UDP's own offloads:
//!
//! * sending, the encrypted segments of one TCP super-packet lie back to back in one
//!   buffer and leave as one UDP GSO message (`UDP_SEGMENT`): the kernel walks its
//!   output path once for up to 64 datagrams, and a NIC (or a veth) carries the
//!   super-packet whole as far as it can; several such messages go in one `sendmmsg`;
//! * receiving, `UDP_GRO` lets the kernel hand over a run of datagrams from one sender
//!   as one buffer plus their size, and `recvmmsg` takes several of those per call.
//!
//! IPv4 only; the slots are allocated once per thread.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

/// Datagrams per send batch: one 64 KiB super-packet cut at the smallest MSS (536)
/// fits, so a super-packet never waits on a half-sent batch.
pub const TX_BATCH: usize = 128;
/// Messages per `recvmmsg`; with UDP_GRO each may hold up to 64 KiB of datagrams.
pub const RX_BATCH: usize = 32;
/// Size of a receive slot: the largest UDP_GRO message.
pub const RX_SLOT: usize = 65_536;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// The kernel's UDP_MAX_SEGMENTS, and the largest UDP payload.
const MAX_SEGMENTS: usize = 64;
const MAX_GSO_BYTES: usize = 65_507;

/// Turns on UDP_GRO for `fd` (then every receive may carry several datagrams).
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A control message holding one u16 or int (UDP_SEGMENT's or UDP_GRO's size).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Cmsg {
    hdr: libc::cmsghdr,
    val: [u8; 8],
}

/// Encrypted datagrams waiting to be sent, back to back in one buffer.
pub struct SendBatch {
    slot: usize,
    bufs: Vec<u8>,
    /// Where the next datagram goes in `bufs`.
    end: usize,
    /// Whether runs go as UDP GSO messages (until the kernel refuses one).
    gso: bool,
    lens: Vec<usize>,
    dsts: Vec<libc::sockaddr_in>,
}

fn sockaddr(ep: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: ep.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*ep.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

impl SendBatch {
    /// `slot`: room for the largest datagram (MTU + WireGuard's overhead).
    pub fn new(slot: usize) -> SendBatch {
        SendBatch {
            slot,
            bufs: vec![0; slot * TX_BATCH],
            end: 0,
            gso: true,
            lens: Vec::with_capacity(TX_BATCH),
            dsts: Vec::with_capacity(TX_BATCH),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.lens.len() == TX_BATCH
    }

    pub fn free(&self) -> usize {
        TX_BATCH - self.lens.len()
    }

    /// Room for the next datagram, right after the last one.
    pub fn next_slot(&mut self) -> &mut [u8] {
        &mut self.bufs[self.end..self.end + self.slot]
    }

    pub fn commit(&mut self, len: usize, dst: SocketAddrV4) {
        self.end += len;
        self.lens.push(len);
        self.dsts.push(sockaddr(dst));
    }

    /// Sends everything queued: each run of datagrams to one destination, all of one
    /// size but the last, as one UDP_SEGMENT message. A message the kernel refuses (no
    /// route to an endpoint, say) is dropped like a lost packet, and the rest still go.
    pub fn flush(&mut self, fd: RawFd) {
        let mut from = 0;
        // A route whose device cannot checksum (so cannot take UDP GSO) refuses a
        // segmented message with EIO: from there on, datagrams go one by one.
        while let Some(failed) = self.send(fd, from) {
            self.gso = false;
            from = failed;
        }
        self.end = 0;
        self.lens.clear();
        self.dsts.clear();
    }

    /// Sends datagrams `from..`; on EIO for a segmented message, the index of its first
    /// datagram, to send again unsegmented.
    fn send(&mut self, fd: RawFd, from: usize) -> Option<usize> {
        let n = self.lens.len();
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; TX_BATCH];
        // SAFETY: plain old data; the pointers set below outlive the call.
        let mut hdrs: [libc::mmsghdr; TX_BATCH] = unsafe { std::mem::zeroed() };
        let mut cmsgs: [Cmsg; TX_BATCH] = unsafe { std::mem::zeroed() };
        let mut starts = [0usize; TX_BATCH];
        let mut off: usize = self.lens[..from].iter().sum();
        let (mut msgs, mut i) = (0, from);
        while i < n {
            starts[msgs] = i;
            let size = self.lens[i];
            let (mut j, mut bytes) = (i + 1, size);
            while self.gso
                && j < n
                && j - i < MAX_SEGMENTS
                && self.dsts[j].sin_addr.s_addr == self.dsts[i].sin_addr.s_addr
                && self.dsts[j].sin_port == self.dsts[i].sin_port
                && self.lens[j] <= size
                && self.lens[j - 1] == size
                && bytes + self.lens[j] <= MAX_GSO_BYTES
            {
                bytes += self.lens[j];
                j += 1;
            }
            iov[msgs].iov_base = self.bufs[off..].as_mut_ptr().cast();
            iov[msgs].iov_len = bytes;
            let h = &mut hdrs[msgs].msg_hdr;
            h.msg_name = (&mut self.dsts[i] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut iov[msgs];
            h.msg_iovlen = 1;
            if j - i > 1 {
                let c = &mut cmsgs[msgs];
                c.hdr.cmsg_level = libc::SOL_UDP;
                c.hdr.cmsg_type = UDP_SEGMENT;
                // SAFETY: CMSG_LEN is pure arithmetic.
                c.hdr.cmsg_len = unsafe { libc::CMSG_LEN(2) } as _;
                c.val[..2].copy_from_slice(&(size as u16).to_ne_bytes());
                h.msg_control = (c as *mut Cmsg).cast();
                h.msg_controllen = std::mem::size_of::<Cmsg>() as _;
            }
            msgs += 1;
            off += bytes;
            i = j;
        }
        let mut sent = 0;
        while sent < msgs {
            // SAFETY: hdrs[sent..msgs] are valid headers pointing at our buffers.
            let r =
                unsafe { libc::sendmmsg(fd, hdrs[sent..].as_mut_ptr(), (msgs - sent) as libc::c_uint, 0) };
            if r > 0 {
                sent += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EIO) && !hdrs[sent].msg_hdr.msg_control.is_null() {
                return Some(starts[sent]);
            }
            if e.kind() != io::ErrorKind::Interrupted {
                sent += 1;
            }
        }
        None
    }
}

/// Received messages in fixed slots, for `recvmmsg`.
pub struct RecvBatch {
    bufs: Vec<u8>,
    lens: [usize; RX_BATCH],
    /// The UDP_GRO size of each message: its datagrams' size (all but the last).
    segs: [usize; RX_BATCH],
    from: [libc::sockaddr_in; RX_BATCH],
    cmsgs: [Cmsg; RX_BATCH],
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![0; RX_SLOT * RX_BATCH],
            lens: [0; RX_BATCH],
            segs: [0; RX_BATCH],
            // SAFETY: plain old data; all zeroes is a valid value.
            from: unsafe { std::mem::zeroed() },
            cmsgs: unsafe { std::mem::zeroed() },
        }
    }

    /// Waits (up to the socket's receive timeout) for one message, then takes what
    /// else is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iov: [libc::iovec; RX_BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i * RX_SLOT..].as_mut_ptr().cast(),
            iov_len: RX_SLOT,
        });
        // SAFETY: mmsghdr is plain old data; the pointers set below outlive the call.
        let mut hdrs: [libc::mmsghdr; RX_BATCH] = unsafe { std::mem::zeroed() };
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = (&mut self.from[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut iov[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = (&mut self.cmsgs[i] as *mut Cmsg).cast();
            h.msg_hdr.msg_controllen = std::mem::size_of::<Cmsg>() as _;
        }
        // SAFETY: RX_BATCH valid headers pointing at buffers we own.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                RX_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, h) in hdrs.iter().enumerate().take(n) {
            // A message longer than a slot is cut short: make it fail authentication.
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.lens[i] = if truncated { 0 } else { h.msg_len as usize };
            let c = &self.cmsgs[i];
            // SAFETY: CMSG_LEN is pure arithmetic.
            let gro = h.msg_hdr.msg_controllen >= unsafe { libc::CMSG_LEN(4) } as _
                && c.hdr.cmsg_level == libc::SOL_UDP
                && c.hdr.cmsg_type == UDP_GRO;
            let size = if gro {
                i32::from_ne_bytes([c.val[0], c.val[1], c.val[2], c.val[3]]) as usize
            } else {
                0
            };
            self.segs[i] = if size == 0 { self.lens[i].max(1) } else { size };
        }
        Ok(n)
    }

    /// Message `i` of the last `recv`: its bytes, its datagram size, and its sender.
    pub fn get(&self, i: usize) -> (&[u8], usize, SocketAddrV4) {
        let a = &self.from[i];
        let from = SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
            u16::from_be(a.sin_port),
        );
        (
            &self.bufs[i * RX_SLOT..i * RX_SLOT + self.lens[i]],
            self.segs[i],
            from,
        )
    }
}
