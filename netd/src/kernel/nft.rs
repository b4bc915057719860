//! nftables in-process, through libnftables (the library behind the `nft` command).
//!
//! netd applies a batch on every attach and detach; a fork+exec of `nft` costs
//! milliseconds, a call into the library costs microseconds plus the kernel's work. One
//! batch string is one call of `nft_run_cmd_from_buffer` (or `_from_filename`, see
//! `Ctx::run`), which libnftables sends as one netlink batch: the kernel applies all of
//! it or none of it.
//!
//! An `nft_ctx` talks to the kernel through a netlink socket it opens itself, in the
//! namespace of the thread that uses it, and it is not thread-safe. So each `Nft` owns a
//! worker thread that enters the target namespace once, creates the context there and
//! then runs the batches sent to it, one at a time; the context never leaves that thread.
//! Callers on any thread (and in any namespace) share one `Nft` by reference.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::mpsc;
use std::thread::JoinHandle;

use nix::sched::{setns, CloneFlags};

use super::{netns, KernelError};

/// The calling thread's own namespace (not `/proc/self`, which is the main thread's).
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Longest line of nft's error text kept in a `KernelError` (batches can hold element
/// lists of thousands of entries on one line).
const MAX_ERR_LINE: usize = 240;
/// Most lines of nft's error text kept in a `KernelError`.
const MAX_ERR_LINES: usize = 6;

mod ffi {
    //! The part of `<nftables/libnftables.h>` netd uses, loaded with `dlopen` on first
    //! use rather than linked: libnftables pulls in five more libraries (nftnl, mnl,
    //! xtables, jansson, gmp) whose loading and relocation cost every process ~0.6 ms at
    //! start, and most netd processes never touch nftables (`netctl`, `netd-cni` in
    //! delegating mode, which runs once per container).

    use std::ffi::CStr;
    use std::os::raw::{c_char, c_int, c_void};
    use std::sync::OnceLock;

    /// `struct nft_ctx`, opaque.
    #[repr(C)]
    pub struct NftCtx {
        _private: [u8; 0],
    }

    /// `NFT_CTX_DEFAULT`.
    pub const NFT_CTX_DEFAULT: u32 = 0;

    type CtxFn = unsafe extern "C" fn(*mut NftCtx) -> c_int;
    type BufFn = unsafe extern "C" fn(*mut NftCtx) -> *const c_char;
    type RunFn = unsafe extern "C" fn(*mut NftCtx, *const c_char) -> c_int;

    struct Lib {
        ctx_new: unsafe extern "C" fn(u32) -> *mut NftCtx,
        ctx_free: unsafe extern "C" fn(*mut NftCtx),
        buffer_output: CtxFn,
        buffer_error: CtxFn,
        get_output_buffer: BufFn,
        get_error_buffer: BufFn,
        run_from_buffer: RunFn,
        run_from_filename: RunFn,
    }

    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();

    /// Loads libnftables once per process; every later call is a pointer read.
    pub fn load() -> Result<(), String> {
        LIB.get_or_init(open).as_ref().map(|_| ()).map_err(Clone::clone)
    }

    fn dlerror() -> String {
        // SAFETY: dlerror returns NULL or a C string valid until the next dl* call.
        let e = unsafe { libc::dlerror() };
        if e.is_null() {
            "unknown error".into()
        } else {
            // SAFETY: non-NULL, NUL-terminated, copied at once.
            unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
        }
    }

    fn open() -> Result<Lib, String> {
        let mut handle = std::ptr::null_mut();
        for name in [c"libnftables.so.1", c"libnftables.so"] {
            // SAFETY: a NUL-terminated literal; the result is checked.
            handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if !handle.is_null() {
                break;
            }
        }
        if handle.is_null() {
            return Err(format!(
                "load libnftables.so.1 (Debian: libnftables1): {}",
                dlerror()
            ));
        }
        let sym = |name: &CStr| -> Result<*mut c_void, String> {
            // SAFETY: handle is a live library handle (never closed); name is NUL-terminated.
            let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
            if p.is_null() {
                Err(format!(
                    "libnftables has no {}: {}",
                    name.to_string_lossy(),
                    dlerror()
                ))
            } else {
                Ok(p)
            }
        };
        // SAFETY: each symbol is the libnftables function of that name, whose C signature
        // (libnftables.h) is the one it is cast to.
        unsafe {
            Ok(Lib {
                ctx_new: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(u32) -> *mut NftCtx>(sym(
                    c"nft_ctx_new",
                )?),
                ctx_free: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut NftCtx)>(sym(
                    c"nft_ctx_free",
                )?),
                buffer_output: std::mem::transmute::<*mut c_void, CtxFn>(sym(c"nft_ctx_buffer_output")?),
                buffer_error: std::mem::transmute::<*mut c_void, CtxFn>(sym(c"nft_ctx_buffer_error")?),
                get_output_buffer: std::mem::transmute::<*mut c_void, BufFn>(sym(
                    c"nft_ctx_get_output_buffer",
                )?),
                get_error_buffer: std::mem::transmute::<*mut c_void, BufFn>(sym(
                    c"nft_ctx_get_error_buffer",
                )?),
                run_from_buffer: std::mem::transmute::<*mut c_void, RunFn>(sym(c"nft_run_cmd_from_buffer")?),
                run_from_filename: std::mem::transmute::<*mut c_void, RunFn>(sym(
                    c"nft_run_cmd_from_filename",
                )?),
            })
        }
    }

    /// The loaded library; `None` before a successful `load` (a context cannot exist
    /// then, so the wrappers below are never reached without it).
    fn lib() -> Option<&'static Lib> {
        LIB.get().and_then(|r| r.as_ref().ok())
    }

    pub unsafe fn nft_ctx_new(flags: u32) -> *mut NftCtx {
        // SAFETY: the caller's contract is libnftables'.
        lib().map_or(std::ptr::null_mut(), |l| unsafe { (l.ctx_new)(flags) })
    }
    pub unsafe fn nft_ctx_free(ctx: *mut NftCtx) {
        if let Some(l) = lib() {
            // SAFETY: as above.
            unsafe { (l.ctx_free)(ctx) }
        }
    }
    pub unsafe fn nft_ctx_buffer_output(ctx: *mut NftCtx) -> c_int {
        // SAFETY: as above.
        lib().map_or(-1, |l| unsafe { (l.buffer_output)(ctx) })
    }
    pub unsafe fn nft_ctx_buffer_error(ctx: *mut NftCtx) -> c_int {
        // SAFETY: as above.
        lib().map_or(-1, |l| unsafe { (l.buffer_error)(ctx) })
    }
    pub unsafe fn nft_ctx_get_output_buffer(ctx: *mut NftCtx) -> *const c_char {
        // SAFETY: as above.
        lib().map_or(std::ptr::null(), |l| unsafe { (l.get_output_buffer)(ctx) })
    }
    pub unsafe fn nft_ctx_get_error_buffer(ctx: *mut NftCtx) -> *const c_char {
        // SAFETY: as above.
        lib().map_or(std::ptr::null(), |l| unsafe { (l.get_error_buffer)(ctx) })
    }
    pub unsafe fn nft_run_cmd_from_buffer(ctx: *mut NftCtx, buf: *const c_char) -> c_int {
        // SAFETY: as above.
        lib().map_or(-1, |l| unsafe { (l.run_from_buffer)(ctx, buf) })
    }
    pub unsafe fn nft_run_cmd_from_filename(ctx: *mut NftCtx, filename: *const c_char) -> c_int {
        // SAFETY: as above.
        lib().map_or(-1, |l| unsafe { (l.run_from_filename)(ctx, filename) })
    }
}

/// One libnftables context with buffered output and errors. Holds a raw pointer, so it is
/// neither `Send` nor `Sync`: it lives and dies on the worker thread that made it.
struct Ctx(NonNull<ffi::NftCtx>);

impl Ctx {
    fn new() -> Result<Ctx, KernelError> {
        ffi::load().map_err(KernelError::Nft)?;
        // SAFETY: no preconditions; a null return is handled.
        let raw = unsafe { ffi::nft_ctx_new(ffi::NFT_CTX_DEFAULT) };
        let ctx = Ctx(NonNull::new(raw).ok_or_else(|| KernelError::Nft("nft_ctx_new failed".into()))?);
        // Without buffering, libnftables prints to the daemon's stdout/stderr and the
        // caller gets nothing back.
        // SAFETY: ctx is a live context owned by this thread.
        let (out, err) = unsafe {
            (
                ffi::nft_ctx_buffer_output(ctx.0.as_ptr()),
                ffi::nft_ctx_buffer_error(ctx.0.as_ptr()),
            )
        };
        if out != 0 || err != 0 {
            return Err(KernelError::Nft("nft_ctx_buffer_output/error failed".into()));
        }
        Ok(ctx)
    }

    /// Runs one batch; Ok(output) or Err(nft's error text, trimmed).
    ///
    /// A batch of several lines goes through a memfd read as a file: for buffer input
    /// libnftables (1.0.6, at least) reports errors without a line number and prints the
    /// batch's *first* line as the culprit, while for a file it names the right line.
    /// One-line batches use the buffer call directly.
    fn run(&mut self, batch: &str) -> Result<String, KernelError> {
        let p = self.0.as_ptr();
        let multi_line = batch.trim_end().contains('\n');
        let (rc, file) = if multi_line {
            let file = batch_file(batch)?;
            let path = CString::new(file.1.as_str())
                .map_err(|_| KernelError::Nft("memfd path contains a NUL byte".into()))?;
            // SAFETY: p is live and used only on this thread; path is NUL-terminated.
            let rc = unsafe { ffi::nft_run_cmd_from_filename(p, path.as_ptr()) };
            // The memfd (file.0) stays open until nft has read it, then closes on drop.
            (rc, Some(file))
        } else {
            let cmd =
                CString::new(batch).map_err(|_| KernelError::Nft("batch contains a NUL byte".into()))?;
            // SAFETY: p is live and used only on this thread; cmd is NUL-terminated.
            (unsafe { ffi::nft_run_cmd_from_buffer(p, cmd.as_ptr()) }, None)
        };
        // Read both buffers every time: reading is what rewinds them for the next run.
        // SAFETY: the returned strings stay valid until the next call on this context,
        // and they are copied out right here.
        let (out, err) = unsafe {
            (
                buf_to_string(ffi::nft_ctx_get_output_buffer(p)),
                buf_to_string(ffi::nft_ctx_get_error_buffer(p)),
            )
        };
        if rc == 0 {
            if !err.trim().is_empty() {
                tracing::debug!(warnings = %err.trim(), "nft batch applied with warnings");
            }
            Ok(out)
        } else {
            let err = match &file {
                // "/proc/self/fd/7:3:18-23: Error: ..." -> "line 3:18-23: Error: ...".
                Some((_, path)) => err.replace(&format!("{path}:"), "line "),
                None => err,
            };
            Err(KernelError::Nft(trim_error(&err)))
        }
    }
}

/// An anonymous in-memory file holding `batch`, and a path nft can open it by.
fn batch_file(batch: &str) -> Result<(File, String), KernelError> {
    if batch.contains('\0') {
        return Err(KernelError::Nft("batch contains a NUL byte".into()));
    }
    // SAFETY: the name is a NUL-terminated literal; the result is checked.
    let fd = unsafe { libc::memfd_create(c"netd-nft-batch".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(KernelError::Nft(format!(
            "memfd_create for the batch: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(batch.as_bytes())
        .map_err(|e| KernelError::Nft(format!("write batch to memfd: {e}")))?;
    // Opening /proc/self/fd/N makes a new open file description, starting at offset 0.
    Ok((f, format!("/proc/self/fd/{fd}")))
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the context was made by nft_ctx_new and is freed exactly once.
        unsafe { ffi::nft_ctx_free(self.0.as_ptr()) }
    }
}

/// Copies a libnftables buffer (NULL or a C string) into a String.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
unsafe fn buf_to_string(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: per this function's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Keeps what a person needs from nft's error text: the `Error:` lines and the batch
/// line each one points at, without the `^^^^` markers, long lines cut short.
fn trim_error(err: &str) -> String {
    let lines: Vec<String> = err
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        // The marker line under the offending command: only spaces, ^ and ~.
        .filter(|l| !l.chars().all(|c| c == ' ' || c == '^' || c == '~' || c == '\t'))
        .take(MAX_ERR_LINES)
        .map(|l| {
            if l.len() <= MAX_ERR_LINE {
                l.to_string()
            } else {
                let mut cut = MAX_ERR_LINE;
                while !l.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{}…", &l[..cut])
            }
        })
        .collect();
    if lines.is_empty() {
        "nft failed without an error message".into()
    } else {
        lines.join("\n")
    }
}

/// A batch for the worker and where to send its result.
type Job = (String, mpsc::SyncSender<Result<String, KernelError>>);

/// An nftables context bound to one network namespace, usable from any thread.
pub struct Nft {
    netns: PathBuf,
    tx: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Nft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nft").field("netns", &self.netns).finish()
    }
}

impl Nft {
    /// An nftables context in the namespace bound at `ns`, or, for `None`, in the calling
    /// thread's namespace (captured now: where the caller goes later does not matter).
    pub fn new_in(ns: Option<&Path>) -> Result<Nft, KernelError> {
        let label = ns.map_or_else(|| PathBuf::from(THREAD_NETNS), Path::to_path_buf);
        let ns_err = |msg: String| KernelError::Netns {
            path: label.clone(),
            msg,
        };
        let fd: OwnedFd = match ns {
            Some(p) => netns::open(p)?.into(),
            None => File::open(THREAD_NETNS)
                .map_err(|e| ns_err(format!("open: {e}")))?
                .into(),
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), KernelError>>(1);
        let worker_label = label.clone();
        let worker = std::thread::Builder::new()
            .name("netd-nft".into())
            .spawn(move || {
                // The context opens its netlink socket inside the namespace of the
                // thread that creates it, so enter first, then create.
                let entered = setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| KernelError::Netns {
                    path: worker_label,
                    msg: format!("setns: {}", e.desc()),
                });
                drop(fd);
                let ctx = entered.and_then(|()| Ctx::new());
                let mut ctx = match ctx {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Ends when the last sender (the Nft) is dropped.
                for (batch, reply) in rx {
                    let _ = reply.send(ctx.run(&batch));
                }
            })
            .map_err(|e| ns_err(format!("spawn nft worker thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Nft {
                netns: label,
                tx: Some(tx),
                worker: Some(worker),
            }),
            Ok(Err(e)) => {
                let _ = worker.join();
                Err(e)
            }
            Err(_) => {
                let _ = worker.join();
                Err(ns_err("nft worker thread died while starting".into()))
            }
        }
    }

    /// The namespace this context acts on (`/proc/thread-self/ns/net` for `new_in(None)`).
    pub fn netns(&self) -> &Path {
        &self.netns
    }

    /// Runs `batch` (nft syntax, any number of commands) as one kernel transaction and
    /// returns nft's output (empty for commands that only change things).
    pub fn run(&self, batch: &str) -> Result<String, KernelError> {
        if batch.contains('\0') {
            return Err(KernelError::Nft("batch contains a NUL byte".into()));
        }
        let gone = || KernelError::Nft(format!("nft worker for {} is gone", self.netns.display()));
        let (rtx, rrx) = mpsc::sync_channel(1);
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .send((batch.to_string(), rtx))
            .map_err(|_| gone())?;
        rrx.recv().map_err(|_| gone())?
    }

    /// Whether table `family name` exists. Lists table names only, never the contents,
    /// so it stays cheap with large sets (a periodic "was it flushed?" check).
    pub fn table_exists(&self, family: &str, name: &str) -> Result<bool, KernelError> {
        let word_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !word_ok(family) || !word_ok(name) {
            return Err(KernelError::Nft(format!("invalid table {family:?} {name:?}")));
        }
        let out = self.run(&format!("list tables {family}"))?;
        let want = format!("table {family} {name}");
        Ok(out.lines().any(|l| l.trim() == want))
    }
}

/// Chains and sets of one table, by name (`Kernel::nft_objects`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftObjects {
    pub chains: Vec<String>,
    /// Sets and maps.
    pub sets: Vec<String>,
}

impl Nft {
    /// The chains and sets (maps included) of table `family name`: headers only
    /// (`list chains`, `list sets`, `list maps` print no rules and no elements), so the
    /// cost follows the number of objects, not their contents.
    pub fn objects(&self, family: &str, name: &str) -> Result<NftObjects, KernelError> {
        Ok(NftObjects {
            chains: names_in(
                &self.run(&format!("list chains {family}"))?,
                family,
                name,
                "chain",
            ),
            sets: [
                names_in(&self.run(&format!("list sets {family}"))?, family, name, "set"),
                names_in(&self.run(&format!("list maps {family}"))?, family, name, "map"),
            ]
            .concat(),
        })
    }
}

/// The names of `kind` ("chain", "set", "map") inside `table FAMILY NAME { ... }` of
/// nft's listing `out`.
pub fn names_in(out: &str, family: &str, name: &str, kind: &str) -> Vec<String> {
    let head = format!("table {family} {name} {{");
    let mut inside = false;
    let mut found = Vec::new();
    for l in out.lines() {
        let t = l.trim();
        if t.starts_with("table ") {
            inside = t == head;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(rest) = t.strip_prefix(kind).and_then(|r| r.strip_prefix(' ')) {
            if let Some(n) = rest.strip_suffix(" {") {
                found.push(n.trim_matches('"').to_string());
            }
        }
    }
    found
}

impl Drop for Nft {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop; it frees the context itself.
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_from_one_table_of_a_listing() {
        let out = "table inet other {\n\tchain svc/x {\n\t}\n}\ntable inet netd {\n\tchain svc/a/b/n/tcp/80 {\n\t}\n\
                   \tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n}\n";
        assert_eq!(
            super::names_in(out, "inet", "netd", "chain"),
            ["svc/a/b/n/tcp/80", "prerouting"]
        );
        assert!(super::names_in(out, "inet", "netd", "set").is_empty());
    }

    #[test]
    fn nft_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Nft>();
    }

    #[test]
    fn error_text_keeps_error_and_command_drops_markers() {
        let err = "Error: Could not process rule: File exists\n\
                   add element inet netd pub4_any { udp . 53 : 10.1.0.3 . 5353 }\n\
                   \x20                                ^^^^^^^^\n";
        assert_eq!(
            trim_error(err),
            "Error: Could not process rule: File exists\n\
             add element inet netd pub4_any { udp . 53 : 10.1.0.3 . 5353 }"
        );
    }

    #[test]
    fn error_text_cuts_long_lines() {
        let long = format!(
            "Error: x\nadd element inet netd ports {{ {} }}",
            "\"vethé\", ".repeat(200)
        );
        let t = trim_error(&long);
        assert!(t.lines().all(|l| l.len() <= MAX_ERR_LINE + '…'.len_utf8()));
        assert!(t.ends_with('…'));
        assert_eq!(trim_error(""), "nft failed without an error message");
    }
}
