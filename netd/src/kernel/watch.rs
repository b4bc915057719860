//! Kernel change reports for the daemon's reconcile loop: one thread listening on
//! netlink multicast groups, in the host namespace (links, IPv4/IPv6 addresses and
//! routes, and every nftables change) and in each sandbox namespace it is told of
//! (links, addresses, routes: a socket receives only its own namespace's reports, so
//! each sandbox gets a socket opened inside it).
//!
//! The watcher does not say what changed, only where: the first report starts a window
//! (`debounce`), and when it ends everything seen meanwhile goes out as one `Changes`.
//! netd's own work is reported like anyone's; the engine's pass then finds nothing to do
//! (`Engine::repair`). A socket whose queue overflowed (ENOBUFS) lost reports, and
//! counts as a change. A sandbox socket holds its namespace alive, so one is dropped as
//! soon as the namespace's bind mount is gone or bound to another namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netlink_sys::protocols::{NETLINK_NETFILTER, NETLINK_ROUTE};
use netlink_sys::Socket;

use super::{netns, KernelError};

/// rtnetlink groups (`RTNLGRP_*`): links, IPv4 addresses, IPv4 routes, IPv6 addresses,
/// IPv6 routes.
const ROUTE_GROUPS: [u32; 5] = [1, 5, 7, 9, 11];
/// `NFNLGRP_NFTABLES`: every committed nftables change.
const NFT_GROUP: u32 = 7;
/// How often the thread looks at the sandbox list and its namespaces with no report.
const IDLE_TICK: Duration = Duration::from_millis(200);

/// Where the kernel reported changes during one window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// In the host namespace (links, addresses, routes, nftables).
    pub host: bool,
    /// In these sandbox namespaces (by path).
    pub sandboxes: BTreeSet<PathBuf>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        !self.host && self.sandboxes.is_empty()
    }
    pub fn merge(&mut self, other: Changes) {
        self.host |= other.host;
        self.sandboxes.extend(other.sandboxes);
    }
}

/// The watching thread; stopped on drop.
pub struct Watch {
    sandboxes: Arc<Mutex<BTreeSet<PathBuf>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn io_err(what: &str, e: std::io::Error) -> KernelError {
    KernelError::Netlink {
        op: format!("watch: {what}"),
        errno: e.raw_os_error().map(nix::errno::Errno::from_raw),
        msg: e.to_string(),
    }
}

/// A non-blocking socket of `protocol` in the calling thread's namespace, joined to `groups`.
fn subscribe(protocol: isize, groups: &[u32]) -> std::io::Result<Socket> {
    let mut s = Socket::new(protocol)?;
    s.bind_auto()?;
    for g in groups {
        s.add_membership(*g)?;
    }
    // A burst (hundreds of links at start-up) must not overflow the queue.
    s.set_rx_buf_sz(1 << 20)?;
    s.set_non_blocking(true)?;
    Ok(s)
}

/// Reads everything queued on `s`; whether anything (or an overflow) was there.
fn drain(s: &Socket, buf: &mut Vec<u8>) -> bool {
    let mut any = false;
    loop {
        buf.clear();
        match s.recv(buf, 0) {
            Ok(0) => return any,
            Ok(_) => any = true,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => any = true,
            Err(_) => return any,
        }
    }
}

/// The namespace a path is bound to, as its nsfs inode.
fn ns_id(path: &Path) -> Option<(u64, u64)> {
    if !netns::is_alive(path) {
        return None;
    }
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

struct Sandbox {
    sock: Socket,
    id: (u64, u64),
}

impl Watch {
    /// Starts watching the calling thread's namespace (the daemon's host); `notify`
    /// gets each window's `Changes`, `debounce` after its first report.
    pub fn start(
        debounce: Duration,
        notify: impl Fn(Changes) + Send + 'static,
    ) -> Result<Watch, KernelError> {
        let route = subscribe(NETLINK_ROUTE, &ROUTE_GROUPS).map_err(|e| io_err("rtnetlink socket", e))?;
        let nft = subscribe(NETLINK_NETFILTER, &[NFT_GROUP]).map_err(|e| io_err("nfnetlink socket", e))?;
        let sandboxes = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (list, halt) = (sandboxes.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("netd-watch".into())
            .spawn(move || run(&route, &nft, &list, &halt, debounce, notify))
            .map_err(|e| io_err("spawn thread", e))?;
        Ok(Watch {
            sandboxes,
            stop,
            thread: Some(thread),
        })
    }

    /// The sandbox namespaces to watch from now on (the daemon's, after each pass).
    pub fn watch_sandboxes(&self, paths: impl IntoIterator<Item = PathBuf>) {
        *self.sandboxes.lock().unwrap_or_else(|e| e.into_inner()) = paths.into_iter().collect();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    route: &Socket,
    nft: &Socket,
    list: &Mutex<BTreeSet<PathBuf>>,
    stop: &AtomicBool,
    debounce: Duration,
    notify: impl Fn(Changes),
) {
    let mut open: BTreeMap<PathBuf, Sandbox> = BTreeMap::new();
    let mut pending: Option<(Instant, Changes)> = None;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut last_sync = Instant::now() - IDLE_TICK;
    while !stop.load(Ordering::Relaxed) {
        if last_sync.elapsed() >= IDLE_TICK {
            sync(&mut open, list);
            last_sync = Instant::now();
        }
        let paths: Vec<&PathBuf> = open.keys().collect();
        let mut fds: Vec<libc::pollfd> = [route.as_raw_fd(), nft.as_raw_fd()]
            .into_iter()
            .chain(open.values().map(|s| s.sock.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let wait = match &pending {
            Some((t, _)) => debounce.saturating_sub(t.elapsed()).min(IDLE_TICK),
            None => IDLE_TICK,
        };
        // Rounded up: a window's last fraction of a millisecond is waited, not spun.
        let ms = wait.as_micros().div_ceil(1000) as i32;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        let mut seen = Changes::default();
        if n > 0 {
            for (i, p) in fds.iter().enumerate().filter(|(_, p)| p.revents != 0) {
                match i {
                    0 => seen.host |= drain(route, &mut buf),
                    1 => seen.host |= drain(nft, &mut buf),
                    _ => {
                        let path = paths[i - 2];
                        if open.get(path).is_some_and(|s| drain(&s.sock, &mut buf))
                            || p.revents & libc::POLLERR != 0
                        {
                            seen.sandboxes.insert(path.clone());
                        }
                    }
                }
            }
        }
        if !seen.is_empty() {
            match &mut pending {
                Some((_, c)) => c.merge(seen),
                None => pending = Some((Instant::now(), seen)),
            }
        }
        if pending.as_ref().is_some_and(|(t, _)| t.elapsed() >= debounce) {
            if let Some((_, c)) = pending.take() {
                notify(c);
            }
        }
    }
}

/// Opens sockets in the listed namespaces that have none, and drops those of
/// namespaces no longer listed, gone, or bound to another namespace.
fn sync(open: &mut BTreeMap<PathBuf, Sandbox>, list: &Mutex<BTreeSet<PathBuf>>) {
    let want = list.lock().unwrap_or_else(|e| e.into_inner()).clone();
    open.retain(|p, s| want.contains(p) && ns_id(p) == Some(s.id));
    for p in want {
        if open.contains_key(&p) {
            continue;
        }
        let Some(id) = ns_id(&p) else {
            continue;
        };
        match netns::run_in(&p, || subscribe(NETLINK_ROUTE, &ROUTE_GROUPS[..])) {
            Ok(Ok(sock)) => {
                open.insert(p, Sandbox { sock, id });
            }
            Ok(Err(e)) => {
                tracing::debug!(netns = %p.display(), error = %e, "watch: no socket in the sandbox")
            }
            Err(e) => tracing::debug!(netns = %p.display(), error = %e, "watch: cannot enter the sandbox"),
        }
    }
}
