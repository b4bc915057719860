//! `ip link del` for a short-lived process that must not sit out the kernel's cleanup.
//!
//! An RTM_DELLINK is answered only after `netdev_run_todo` has run: an `rcu_barrier()`
//! and the wait for the last references, 12–20 ms here for a veth, while the link itself
//! is gone from its namespace (unlisted: no lookup, no dump shows it, its name is free)
//! within the first fraction of a millisecond. The daemon hands deletions to a worker
//! thread and answers at once; a process that exits after one operation (the CNI plugin
//! in standalone mode) cannot, since its exit waits for all of its threads.
//!
//! So the request is sent by a detached child process, which keeps nothing of ours
//! open but the route socket it sends on and a pipe for its answer, while the caller
//! watches the link and returns as soon as it is gone (or as soon as the kernel refused
//! the request). The kernel finishes freeing the device on the child's time; nothing of
//! it is visible any more when this returns.
//!
//! The watch asks for the link's name by index (`name_rcu`, a device ioctl under RCU),
//! not RTM_GETLINK: that takes RTNL, which the deletion holds while it waits for RCU
//! (`synchronize_net`), and a lookup queued behind it returned 10–31 ms later in 4 of
//! 100 DELs here, long after the link was unlisted.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;

use super::{KernelError, Netlink};

/// What the child reports when it could not even send the request.
const SEND_FAILED: i32 = -1;

impl Netlink {
    /// Deletes link `name` like `delete_link`, sending the request on this socket from a
    /// detached process, and returns once `watch` (a socket in the same namespace) no
    /// longer finds the link. Returns whether a link was deleted. `nfnl`: nfnetlink
    /// sockets the detached process takes over too; it closes them once nf_tables is
    /// quiet (`detach::wait_until_quiet`).
    pub fn delete_link_detached(
        self,
        name: &str,
        watch: &mut Netlink,
        nfnl: &[std::os::fd::RawFd],
    ) -> Result<bool, KernelError> {
        let op = || format!("delete link {name}");
        let Some(link) = watch.link(name)? else {
            return Ok(false);
        };
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = 1;
        let mut req = NetlinkMessage::new(
            header,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)),
        );
        req.finalize();
        let mut bytes = vec![0u8; req.buffer_len()];
        req.serialize(&mut bytes);

        let (rd, wr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| KernelError::Netlink {
                op: op(),
                errno: Some(e),
                msg: format!("pipe: {}", e.desc()),
            })?;
        let (sock, wrfd) = (self.sock.as_raw_fd(), wr.as_raw_fd());
        let mut keep = vec![sock, wrfd];
        keep.extend_from_slice(nfnl);
        let job = || {
            // SAFETY: send/recv/write on descriptors the child kept, buffers made
            // before the fork.
            unsafe {
                let code = if libc::send(sock, bytes.as_ptr().cast(), bytes.len(), 0) < 0 {
                    SEND_FAILED
                } else {
                    ack(sock)
                };
                let b = code.to_ne_bytes();
                libc::write(wrfd, b.as_ptr().cast(), 4);
                libc::close(wrfd);
                if let Some(&fd) = nfnl.first() {
                    crate::kernel::detach::wait_until_quiet(fd);
                }
            }
        };
        // SAFETY: `job` makes async-signal-safe calls only (send, recv, write, close,
        // and `wait_until_quiet`'s).
        unsafe { crate::kernel::detach::fork_detached(&keep, &job) }.map_err(|e| KernelError::Netlink {
            op: op(),
            errno: e.raw_os_error().map(nix::errno::Errno::from_raw),
            msg: format!("fork: {e}"),
        })?;
        drop(wr);
        drop(self);
        wait_gone(name, link.index, rd, watch).map_err(|f| f.into_err(op()))
    }
}

/// Waits for the child's answer or for the link to disappear, whichever is first.
fn wait_gone(name: &str, index: u32, rd: OwnedFd, watch: &Netlink) -> Result<bool, super::Fail> {
    let start = Instant::now();
    loop {
        let mut pfd = libc::pollfd {
            fd: rd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; no waiting.
        if unsafe { libc::poll(&mut pfd, 1, 0) } > 0 {
            let mut code = [0u8; 4];
            // SAFETY: reading into a local buffer from our own pipe.
            let got = unsafe { libc::read(rd.as_raw_fd(), code.as_mut_ptr().cast(), 4) };
            if got != 4 {
                return Err(super::Fail {
                    errno: None,
                    msg: "the deleting process died without an answer".into(),
                });
            }
            return match i32::from_ne_bytes(code) {
                0 => Ok(true),
                SEND_FAILED => Err(super::Fail {
                    errno: None,
                    msg: "the deleting process could not send the request".into(),
                }),
                e if Errno::from_raw(e) == Errno::ENODEV => Ok(false),
                e => {
                    let errno = Errno::from_raw(e);
                    Err(super::Fail {
                        errno: Some(errno),
                        msg: errno.desc().to_string(),
                    })
                }
            };
        }
        // Gone once its index names no link, or another one (indexes are not reused
        // right away, but a name is the link's own).
        match watch.name_rcu(index) {
            Ok(Some(n)) if n == name => {}
            Ok(_) => return Ok(true),
            Err(e) => {
                return Err(super::Fail {
                    errno: None,
                    msg: e.to_string(),
                })
            }
        }
        // Unlisting takes well under a millisecond; a kernel that is slower (a busy
        // machine) is polled less often.
        let pause = if start.elapsed() < Duration::from_millis(5) {
            Duration::from_micros(50)
        } else {
            Duration::from_millis(1)
        };
        std::thread::sleep(pause);
    }
}

/// The errno of the ACK to request 1 (0: success).
///
/// # Safety
/// Async-signal-safe: a stack buffer and `recv` only.
unsafe fn ack(sock: i32) -> i32 {
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: receiving into a stack buffer.
        let n = unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return SEND_FAILED;
        }
        let answer = crate::kernel::nfnetlink::messages(&buf[..n as usize])
            .find(|(kind, seq, _)| *kind == libc::NLMSG_ERROR as u16 && *seq == 1)
            .and_then(|(_, _, payload)| crate::kernel::nfnetlink::errno_of(payload));
        if let Some(errno) = answer {
            return errno;
        }
    }
}
