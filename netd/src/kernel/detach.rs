//! Work a short-lived process hands to a detached child process, so that its own exit does
//! not wait for the kernel's deferred cleanup (RCU grace periods) after an operation:
//!
//! - deleting a link (`Netlink::delete_link_detached`): the RTM_DELLINK answer comes only
//!   after `netdev_run_todo`'s `rcu_barrier()`;
//! - closing an nfnetlink socket that deleted set elements (`hold_until_closed`): the
//!   last close of such a socket runs nf_tables' NETLINK_URELEASE handler, which flushes
//!   the transaction destroy work (a `synchronize_rcu()`, 10–15 ms here) whenever
//!   deleted objects wait to be freed. A process's exit closes its descriptors itself,
//!   so without this the exit pays it.
//!
//! The child keeps only the descriptors it is given, so the runtime's stdout pipe and the
//! plugin's lock file close when the plugin exits; it is reparented to init, which
//! reaps it.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Runs `job` in a child process that has closed every descriptor but `keep`, and
/// returns at once. The child is not waited for: the caller is a process that exits
/// after one operation (`LinuxKernel::with_detached_deletes`), whereupon the child is
/// reparented and reaped by init (or the runtime's subreaper). A second fork to reparent
/// it at once would cost the caller another page-table copy (~0.3 ms here).
///
/// # Safety
/// `job` runs after `fork` in a copy of a multi-threaded process: it must only make
/// async-signal-safe calls on memory prepared before (no allocation, no locks).
pub(super) unsafe fn fork_detached(keep: &[RawFd], job: &dyn Fn()) -> std::io::Result<()> {
    let mut keep: Vec<u32> = keep.iter().map(|fd| *fd as u32).collect();
    keep.sort_unstable();
    keep.dedup();
    // SAFETY: the child only calls async-signal-safe functions (close_range, signal,
    // _exit) and `job`, which the caller vouches for.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: as above; never returns.
        unsafe {
            let mut from = 0u32;
            for fd in &keep {
                if *fd > from {
                    libc::syscall(libc::SYS_close_range, from, *fd - 1, 0u32);
                }
                from = *fd + 1;
            }
            libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32);
            // Whoever reads our answers may be gone.
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            job();
            libc::_exit(0)
        }
    }
    Ok(())
}

/// Closes `fds` without waiting for what their last close waits for: a detached
/// child holds them until this process has dropped its copies, then exits.
pub fn hold_until_closed(fds: Vec<OwnedFd>) {
    if fds.is_empty() {
        return;
    }
    let Ok((rd, wr)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return; // closing them here is slower, not wrong
    };
    let mut keep: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    keep.push(rd.as_raw_fd());
    let rfd = rd.as_raw_fd();
    let job = move || {
        let mut b = [0u8; 1];
        // Returns 0 once every write end is closed: ours below, or at our exit.
        // SAFETY: reading into a stack buffer.
        while unsafe { libc::read(rfd, b.as_mut_ptr().cast(), 1) } > 0 {}
    };
    // SAFETY: `job` only calls read(2) on a stack buffer.
    if unsafe { fork_detached(&keep, &job) }.is_err() {
        return;
    }
    drop(fds);
    drop(rd);
    drop(wr);
}
