//! Network namespaces: create one bound at a path (as `ip netns add` does), bind the
//! daemon's own namespace at a path, delete, check liveness, and run code inside one.
//!
//! A thread's network namespace is per thread (`setns`/`unshare(CLONE_NEWNET)` only move
//! the calling thread), so everything here that enters a namespace does it on a thread
//! of its own, never on a caller's thread: a short-lived one for one-off work (opening a
//! route socket, which then stays bound to that namespace after the thread exits), or a
//! long-lived `NsThread` for repeated work in the daemon's "host" namespace (sysctl
//! writes, which `/proc/sys/net` resolves against the *writing thread's* namespace).
//! The one exception is a process that asks for it (`allow_entering_in_place`): one
//! operation on one thread, where a spawn costs more than the work.
//! That is also what lets tests run several daemons in one process, each with a
//! different namespace as its host.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Scope, ScopedJoinHandle};

use netlink_sys::Socket;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use super::netlink::{self, Netlink};
use super::KernelError;

/// The calling thread's own namespace (not `/proc/self`, which is the main thread's).
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Serialises "make the namespace directory a shared mount", so two threads creating
/// their first namespaces at once do not stack two bind mounts on the directory.
static DIR_SETUP: Mutex<()> = Mutex::new(());

fn ns_err(path: &Path, msg: impl Into<String>) -> KernelError {
    KernelError::Netns {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Whether `path` is a live namespace mount (an nsfs file, not the empty placeholder
/// left behind when its bind mount is gone).
pub fn is_alive(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Opens the namespace bound at `path` (for `setns` or IFLA_NET_NS_FD).
pub fn open(path: &Path) -> Result<File, KernelError> {
    let f = File::open(path).map_err(|e| ns_err(path, format!("open: {e}")))?;
    if !is_alive(path) {
        return Err(ns_err(path, "not a network namespace (no nsfs mount)"));
    }
    Ok(f)
}

/// Whether `run_in` and `spawn_in` may enter a namespace on the calling thread
/// (`allow_entering_in_place`).
static IN_PLACE: AtomicBool = AtomicBool::new(false);

/// For a process that does one operation on one thread and exits (the CNI plugin's
/// standalone mode): from now on `run_in` and `spawn_in` enter the namespace on the
/// calling thread and return it to its own namespace before they return, instead of
/// spawning a thread. A spawn costs such a process ~0.1 ms of its one busy thread plus
/// the thread's exit; two `setns` calls cost ~20 µs. The daemon keeps the threads: its
/// threads are shared, and it gains from the overlap.
pub fn allow_entering_in_place() {
    IN_PLACE.store(true, Ordering::Relaxed);
}

/// Runs `f` on the calling thread inside `ns` (opened from `path`), then puts the
/// thread back into the namespace it was in. If it cannot go back, the process aborts:
/// whatever it did next (opening a socket, writing a sysctl) would land in the wrong
/// namespace. (`setns` into a namespace the thread was just in, by a descriptor held,
/// fails only without memory.)
fn run_in_place<T>(path: &Path, ns: &File, f: impl FnOnce() -> T) -> Result<T, KernelError> {
    let home = File::open(THREAD_NETNS).map_err(|e| ns_err(Path::new(THREAD_NETNS), format!("open: {e}")))?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| ns_err(path, format!("setns: {}", e.desc())))?;
    let out = catch_unwind(AssertUnwindSafe(f));
    if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
        eprintln!(
            "netd: cannot return from network namespace {} to this thread's own: {}; aborting",
            path.display(),
            e.desc()
        );
        std::process::abort();
    }
    out.map_err(|p| std::panic::resume_unwind(p))
}

/// Runs `f` on a fresh thread that has entered the namespace at `path`, and returns its
/// result. The thread exits afterwards, so the caller's namespace is never touched
/// (except with `allow_entering_in_place`).
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, KernelError> {
    let ns = open(path)?;
    if IN_PLACE.load(Ordering::Relaxed) {
        return run_in_place(path, &ns, f);
    }
    std::thread::scope(|s| join_scoped(path, spawn_in(s, path, &ns, f)))
}

/// Work inside a namespace started by `spawn_in`.
pub enum InNs<'scope, T> {
    Thread(ScopedJoinHandle<'scope, Result<T, KernelError>>),
    /// Done on the calling thread already (`allow_entering_in_place`).
    Done(Result<T, KernelError>),
}

/// Like `run_in`, but returns at once: `f` runs on a scoped thread inside `ns` (opened
/// from `path`) while the caller goes on; `join_scoped` collects the result. Lets the
/// caller overlap entering a namespace (a thread spawn, ~100 µs) with other work.
/// With `allow_entering_in_place`, `f` runs before this returns.
pub fn spawn_in<'scope, 'env, T: Send + 'scope>(
    s: &'scope Scope<'scope, 'env>,
    path: &'env Path,
    ns: &'env File,
    f: impl FnOnce() -> T + Send + 'scope,
) -> InNs<'scope, T> {
    if IN_PLACE.load(Ordering::Relaxed) {
        return InNs::Done(run_in_place(path, ns, f));
    }
    InNs::Thread(s.spawn(move || {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| ns_err(path, format!("setns: {}", e.desc())))?;
        Ok(f())
    }))
}

/// The result of a `spawn_in`.
pub fn join_scoped<T>(path: &Path, h: InNs<'_, T>) -> Result<T, KernelError> {
    match h {
        InNs::Thread(h) => h
            .join()
            .map_err(|_| ns_err(path, "thread running in the namespace panicked"))?,
        InNs::Done(r) => r,
    }
}

/// A route socket inside the namespace at `path`. A netlink socket belongs to the
/// namespace it was created in, whichever thread later uses it, so a short-lived
/// thread enters the namespace just long enough to call `socket()`.
pub fn route_socket_in(path: &Path) -> Result<Socket, KernelError> {
    run_in(path, netlink::route_socket)?.map_err(|e| ns_err(path, format!("open route socket: {e}")))
}

/// Makes sure `path`'s directory exists and is a shared mount, then creates the empty
/// file a namespace will be bound onto. Returns whether the file was created here.
///
/// Like iproute2: if the directory is not a mount point yet, bind it onto itself first,
/// then mark it shared, so namespace mounts made later propagate into mount namespaces
/// that were cloned earlier (a container runtime's, a `ip netns exec` shell's) and an
/// unmount here does not leave pinned copies behind in them.
fn prepare_target(path: &Path) -> Result<bool, KernelError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| ns_err(path, "path has no parent directory"))?;
    {
        let _g = DIR_SETUP.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::create_dir_all(dir).map_err(|e| ns_err(path, format!("create {}: {e}", dir.display())))?;
        let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
        let mut bound = false;
        // MS_SHARED on a directory that is not a mount point fails with EINVAL.
        while let Err(e) = mount(None::<&str>, dir, Some("none"), shared, None::<&str>) {
            if e != Errno::EINVAL || bound {
                return Err(ns_err(
                    path,
                    format!("make {} shared: {}", dir.display(), e.desc()),
                ));
            }
            mount(
                Some(dir),
                dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| ns_err(path, format!("bind {} onto itself: {}", dir.display(), e.desc())))?;
            bound = true;
        }
    }
    if is_alive(path) {
        return Err(ns_err(path, "a network namespace is already bound there"));
    }
    // An existing plain file is a leftover of a namespace whose unmount succeeded but
    // whose unlink did not; mounting over it again is fine.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(ns_err(path, format!("create mount point: {e}"))),
    }
}

/// Binds the calling thread's namespace at `path` (which `prepare_target` made).
fn bind_thread_netns(path: &Path) -> Result<(), KernelError> {
    mount(
        Some(THREAD_NETNS),
        path,
        Some("none"),
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| ns_err(path, format!("bind {THREAD_NETNS}: {}", e.desc())))
}

/// `ip netns add`: a new network namespace bound at `path`, with `lo` up (a fresh
/// namespace's loopback is down, and nothing — not even 127.0.0.1 — works without it).
pub fn create(path: &Path) -> Result<(), KernelError> {
    let created = prepare_target(path)?;
    let res = std::thread::scope(|s| {
        s.spawn(|| -> Result<(), KernelError> {
            // Only this thread moves; it exits right after, and the bind mount keeps the
            // namespace alive.
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| ns_err(path, format!("unshare(CLONE_NEWNET): {}", e.desc())))?;
            bind_thread_netns(path)?;
            Netlink::open()?.set_up("lo")
        })
        .join()
        .map_err(|_| ns_err(path, "namespace thread panicked"))?
    });
    if res.is_err() {
        // Leave nothing behind: unmount if the bind happened, and remove the file.
        let _ = umount2(path, MntFlags::MNT_DETACH);
        if created {
            let _ = std::fs::remove_file(path);
        }
    }
    res
}

/// Binds the namespace of the calling thread at `path` (run it on an `NsThread` to bind
/// some other namespace).
pub fn bind_current(path: &Path) -> Result<(), KernelError> {
    let created = prepare_target(path)?;
    bind_thread_netns(path).inspect_err(|_| {
        if created {
            let _ = std::fs::remove_file(path);
        }
    })
}

/// `ip netns del`: lazy unmount, then unlink. A namespace that is already gone (no
/// mount, no file) is success; the namespace itself dies with its last user.
pub fn delete(path: &Path) -> Result<(), KernelError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (the bind is already gone); ENOENT: no file.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(ns_err(path, format!("unmount: {}", e.desc()))),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ns_err(path, format!("remove: {e}"))),
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A long-lived thread inside one network namespace that runs the closures sent to it,
/// one at a time. The daemon keeps one for its host namespace, so work that depends on
/// the *calling thread's* namespace (sysctl writes, binding the host namespace) lands
/// in the right one even when the daemon's host is not the process's namespace.
///
/// The thread starts with the first job, not before: most operations of a short-lived
/// process (a CNI ADD on an existing network) send it none, and a thread it never uses
/// still costs ~0.1 ms to start and to end.
pub struct NsThread {
    label: PathBuf,
    worker: Mutex<Worker>,
    /// Why the worker could not enter the namespace, once it has tried and failed.
    failed: Arc<OnceLock<Errno>>,
}

enum Worker {
    /// Not started: the namespace to start it in.
    Idle(OwnedFd),
    Running {
        tx: mpsc::Sender<Job>,
        handle: JoinHandle<()>,
    },
    /// Dropped, or the thread could not be spawned (the reason).
    Gone(Option<String>),
}

impl std::fmt::Debug for NsThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsThread").field("netns", &self.label).finish()
    }
}

impl NsThread {
    /// A worker for the namespace bound at `ns`, or, for `None`, the calling thread's
    /// namespace (captured now, so a later `setns` elsewhere does not matter). A
    /// namespace that cannot be opened fails here; one the thread cannot enter fails
    /// its jobs. The thread itself starts with the first job.
    pub fn spawn(ns: Option<&Path>) -> Result<Self, KernelError> {
        let label = ns.map_or_else(|| PathBuf::from(THREAD_NETNS), Path::to_path_buf);
        let fd: OwnedFd = match ns {
            Some(p) => open(p)?.into(),
            None => File::open(THREAD_NETNS)
                .map_err(|e| ns_err(&label, format!("open: {e}")))?
                .into(),
        };
        Ok(NsThread {
            label,
            worker: Mutex::new(Worker::Idle(fd)),
            failed: Arc::default(),
        })
    }

    /// Starts the thread in `fd`'s namespace; it runs jobs until the sender is dropped.
    fn start(&self, fd: OwnedFd) -> Result<Worker, String> {
        let (tx, rx) = mpsc::channel::<Job>();
        let failed_in = self.failed.clone();
        let handle = std::thread::Builder::new()
            .name("netd-netns".into())
            .spawn(move || {
                let entered = setns(fd.as_fd(), CloneFlags::CLONE_NEWNET);
                drop(fd);
                match entered {
                    // Queued jobs are dropped unrun with `rx`: their callers hear "gone".
                    Err(e) => {
                        let _ = failed_in.set(e);
                    }
                    Ok(()) => {
                        for job in rx {
                            job();
                        }
                    }
                }
            })
            .map_err(|e| format!("spawn thread: {e}"))?;
        Ok(Worker::Running { tx, handle })
    }

    /// The error for a worker that is gone: why it could not start, if that is why.
    fn gone(&self, why: Option<&str>) -> KernelError {
        match (self.failed.get(), why) {
            (Some(e), _) => ns_err(&self.label, format!("setns: {}", e.desc())),
            (None, Some(why)) => ns_err(&self.label, why),
            (None, None) => ns_err(&self.label, "namespace worker thread is gone"),
        }
    }

    /// The namespace path this worker was started for.
    pub fn netns(&self) -> &Path {
        &self.label
    }

    /// Whether the thread has been started (by a first job).
    pub fn started(&self) -> bool {
        !matches!(
            *self.worker.lock().unwrap_or_else(|e| e.into_inner()),
            Worker::Idle(_)
        )
    }

    /// Runs `f` on the worker and waits for its result. A panic in `f` is caught and
    /// reported, so the worker stays usable.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, KernelError> {
        self.submit(f)?.wait()
    }

    /// Queues `f` on the worker (starting it if this is the first job) and returns at
    /// once; `Pending::wait` gets the result. Dropping the `Pending` does not cancel `f`.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Pending<'_, T>, KernelError> {
        let (rtx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = rtx.send(catch_unwind(AssertUnwindSafe(f)));
        });
        let mut w = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*w, Worker::Idle(_)) {
            let Worker::Idle(fd) = std::mem::replace(&mut *w, Worker::Gone(None)) else {
                unreachable!()
            };
            *w = self.start(fd).unwrap_or_else(|why| Worker::Gone(Some(why)));
        }
        match &*w {
            Worker::Running { tx, .. } => tx.send(job).map_err(|_| self.gone(None))?,
            Worker::Gone(why) => return Err(self.gone(why.as_deref())),
            Worker::Idle(_) => unreachable!("started above"),
        }
        Ok(Pending { worker: self, rx })
    }
}

/// A job queued on an `NsThread`.
pub struct Pending<'a, T> {
    worker: &'a NsThread,
    rx: mpsc::Receiver<std::thread::Result<T>>,
}

impl<T> Pending<'_, T> {
    pub fn wait(self) -> Result<T, KernelError> {
        match self.rx.recv() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(ns_err(&self.worker.label, "job panicked in namespace worker")),
            Err(_) => Err(self.worker.gone(None)),
        }
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop.
        let w = std::mem::replace(
            self.worker.get_mut().unwrap_or_else(|e| e.into_inner()),
            Worker::Gone(None),
        );
        if let Worker::Running { tx, handle } = w {
            drop(tx);
            let _ = handle.join();
        }
    }
}
