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
//!
//! The child's own close of an nfnetlink socket waits in the same place, and does so
//! holding nf_tables' commit mutex: every nft commit of the host waits behind it, and
//! the destroy work is busy whenever any commit deleted something in the last grace
//! period (~8 ms here, `membarrier` measured). A stream of DELs, one every ~7 ms, kept
//! it busy, and the close of one DEL's child held up a later DEL's batch by 9–27 ms in
//! 8 of 100. So the child closes only once nf_tables has been quiet
//! (`wait_until_quiet`), when the flush has nothing to wait for.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Runs `job` in a child process that has closed every descriptor but `keep`, and
/// returns at once. The child is not waited for: the caller is a process that exits
/// after one operation (`LinuxKernel::with_detached_deletes`), whereupon the child is
/// reparented and reaped by init (or the runtime's subreaper). A child that holds
/// nfnetlink sockets lives on until nf_tables is quiet (`wait_until_quiet`, at most
/// `QUIET_DEADLINE`): tens of milliseconds after a lone DEL. A second fork to reparent
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
    let first = keep[0];
    let job = move || {
        let mut b = [0u8; 1];
        // Returns 0 once every write end is closed: ours below, or at our exit.
        // SAFETY: reading into a stack buffer.
        while unsafe { libc::read(rfd, b.as_mut_ptr().cast(), 1) } > 0 {}
        // SAFETY: async-signal-safe (see there).
        unsafe { wait_until_quiet(first) };
    };
    // SAFETY: `job` only makes syscalls on stack buffers.
    if unsafe { fork_detached(&keep, &job) }.is_err() {
        return;
    }
    drop(fds);
    drop(rd);
    drop(wr);
}

/// The longest a detached child holds nfnetlink sockets waiting for nf_tables to be
/// quiet; then it closes them anyway (a flush may then wait, as without the wait).
const QUIET_DEADLINE: Duration = Duration::from_secs(5);

/// Returns once no nft commit has happened in this namespace for two RCU grace periods
/// (the nf_tables generation, read on `nfnl`, did not change meanwhile), or after
/// `QUIET_DEADLINE`. The last commit's destroy work, queued before the first read, has
/// then finished its own grace period, and a close's flush finds nothing to wait for.
/// A commit may still slip in between the return and the close: that close then waits
/// as it would have without this.
///
/// # Safety
/// Runs in a forked child: async-signal-safe calls only (syscalls on stack buffers).
pub(super) unsafe fn wait_until_quiet(nfnl: RawFd) {
    let start = monotonic();
    let mut seq = 0x6e64_0000u32;
    // SAFETY: as above.
    let Some(mut gen) = (unsafe { nft_generation(nfnl, seq) }) else {
        return;
    };
    loop {
        // SAFETY: syscalls only.
        unsafe {
            grace_period();
            grace_period();
        }
        seq += 1;
        // SAFETY: as above.
        let Some(now) = (unsafe { nft_generation(nfnl, seq) }) else {
            return;
        };
        if now == gen || monotonic().saturating_sub(start) > QUIET_DEADLINE {
            return;
        }
        gen = now;
    }
}

/// CLOCK_MONOTONIC, read with clock_gettime(2), which is async-signal-safe.
fn monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Waits for one RCU grace period: `membarrier(MEMBARRIER_CMD_GLOBAL)` is a
/// `synchronize_rcu()`; where it is refused (nohz_full), 10 ms, longer than one here.
///
/// # Safety
/// Syscalls only.
unsafe fn grace_period() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: no memory involved.
    if unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) } != 0 {
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        // SAFETY: a local timespec.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    }
}

/// nf_tables' generation id (NFT_MSG_GETGEN), bumped by every commit; `None` when the
/// kernel does not answer within a second.
///
/// # Safety
/// Syscalls on stack buffers only.
pub(super) unsafe fn nft_generation(nfnl: RawFd, seq: u32) -> Option<u32> {
    use super::nfnetlink::{attributes, messages, nft_type, NFTA_GEN_ID, NFT_MSG_GETGEN, NFT_MSG_NEWGEN};
    let ty = nft_type(NFT_MSG_GETGEN);
    let mut req = [0u8; 20];
    req[0..4].copy_from_slice(&20u32.to_ne_bytes());
    req[4..6].copy_from_slice(&ty.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id 0: all zero.
    // SAFETY: sending a stack buffer.
    if unsafe { libc::send(nfnl, req.as_ptr().cast(), req.len(), 0) } < 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    loop {
        let mut pfd = libc::pollfd {
            fd: nfnl,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one local pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 1000) } <= 0 {
            return None;
        }
        // SAFETY: receiving into a stack buffer.
        let n = unsafe { libc::recv(nfnl, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            return None;
        }
        for (kind, mseq, payload) in messages(&buf[..n as usize]) {
            if mseq != seq {
                continue;
            }
            if kind != nft_type(NFT_MSG_NEWGEN) {
                return None; // an error answer
            }
            // Attributes follow the 4-byte nfgenmsg.
            let (_, v) = attributes(payload, 4).find(|(k, _)| *k == NFTA_GEN_ID)?;
            return Some(u32::from_be_bytes(v.get(0..4)?.try_into().ok()?));
        }
    }
}
