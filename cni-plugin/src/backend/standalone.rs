//! Standalone mode: no daemon. netd's engine runs inside this process for one operation,
//! on the plugin's own store (`<stateDir>/netd.json.{0,1}`, a `FileStore`: one fdatasync
//! per commit, where redb costs seven fsyncs per exec), under an exclusive `flock` on
//! `<stateDir>/lock` that serialises concurrent plugin processes (what makes IPAM free of
//! duplicates here, as the engine lock does in the daemon).
//!
//! Opening uses `Engine::open_trusting`: no full reconcile per exec (see there). A crash
//! between "started" and "committed" is detected by the `dirty` marker (`Marker`), set
//! before a mutating operation and cleared after it; the next exec then reconciles.

use std::fs;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netd::engine::{Engine, EngineConfig, EngineError};
use netd::kernel::linux::LinuxKernel;
use netd::model::{Endpoint, EndpointRequest, Network, NetworkRequest, Sandbox, SandboxRequest};
use netd::store::{Bucket, FileStore, Store, StoreError};

use super::{attach_in_steps, Attach, Created, Netd};
use crate::error::{code, from_engine, CniError, Result};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/netd-cni";

pub struct Standalone {
    // Dropped before the lock: the engine's reaper finishes queued deletions on drop.
    engine: Engine,
    dirty: Marker,
    _lock: Option<fs::File>,
    /// How long each step of `open` took (for `NETD_CNI_TIMING`).
    pub timings: Vec<(&'static str, Duration)>,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> CniError {
    CniError::new(code::IO, format!("{what} {}: {e}", p.display()))
}

/// The crash marker `<stateDir>/dirty`: one byte, `0` once an operation has finished; any
/// other content (`1` while one runs, or the empty file earlier versions created) means
/// the last exec may have stopped half-way. The file is made once and then only written
/// in place: creating and unlinking it on every exec cost an ext4 inode allocation each
/// time (`__ext4_new_inode`, 4% of a standalone ADD's CPU samples in `perf`, more than
/// its fdatasync).
pub struct Marker {
    path: PathBuf,
    file: fs::File,
}

impl Marker {
    /// Opens the marker, making it (clean) if there is none; answers it and whether it
    /// was set.
    pub fn open(path: PathBuf) -> Result<(Marker, bool)> {
        let rw = || fs::OpenOptions::new().read(true).write(true).clone();
        match rw().open(&path) {
            Ok(file) => {
                let mut b = [0u8; 1];
                let n = file.read_at(&mut b, 0).map_err(|e| io("read", &path, e))?;
                Ok((Marker { path, file }, !(n == 1 && b[0] == b'0')))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = rw()
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| io("create", &path, e))?;
                let m = Marker { path, file };
                m.clear()?;
                Ok((m, false))
            }
            Err(e) => Err(io("open", &path, e)),
        }
    }

    pub fn set(&self) -> Result<()> {
        self.file
            .write_all_at(b"1", 0)
            .map_err(|e| io("write", &self.path, e))
    }

    pub fn clear(&self) -> Result<()> {
        self.file
            .write_all_at(b"0", 0)
            .map_err(|e| io("write", &self.path, e))
    }
}

/// The plugin's store. Durable commits (one fdatasync of a slot file, see `FileStore`):
/// what this store describes is gone after a reboot, but a power loss must not leave a
/// torn state, which would refuse every later ADD.
fn open_store(state_dir: &Path) -> std::result::Result<FileStore, StoreError> {
    FileStore::open(&state_dir.join("netd.json"))
}

/// Whether the store in `state_dir` has sandbox `name`, read without the engine (and
/// without the lock: a reader always sees a whole commit, `FileStore`).
pub fn holds(state_dir: &Path, name: &str) -> bool {
    open_store(state_dir)
        .and_then(|s| s.list(Bucket::Sandboxes))
        .is_ok_and(|l| l.iter().any(|(k, _)| k == name))
}

impl Standalone {
    pub fn open(state_dir: &Path) -> Result<Standalone> {
        fs::create_dir_all(state_dir).map_err(|e| io("create state dir", state_dir, e))?;
        let lock_path = state_dir.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("open", &lock_path, e))?;
        let mut timings = Vec::new();
        let mut t = Instant::now();
        let mut lap = |what: &'static str| {
            timings.push((what, t.elapsed()));
            t = Instant::now();
        };
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io("lock", &lock_path, std::io::Error::last_os_error()));
        }
        lap("lock_wait");
        let (dirty, crashed) = Marker::open(state_dir.join("dirty"))?;
        let store = open_store(state_dir)
            .map_err(|e| CniError::new(code::IO, format!("open store in {}: {e}", state_dir.display())))?;
        lap("store_open");
        // One operation on this thread, then exit: entering a sandbox's namespace needs
        // no thread of its own, and link deletions need not wait for the kernel's cleanup.
        netd::kernel::netns::allow_entering_in_place();
        let kernel = LinuxKernel::current()
            .map(LinuxKernel::with_detached_deletes)
            .map_err(|e| CniError::new(code::IO, format!("open kernel interfaces: {e}")))?;
        lap("kernel_open");
        let cfg = EngineConfig {
            netns_dir: state_dir.join("netns"),
            etc_netns_dir: state_dir.join("etc"),
            owner: format!(
                "netd-cni {}",
                fs::canonicalize(state_dir)
                    .unwrap_or_else(|_| state_dir.to_path_buf())
                    .display()
            ),
            ..EngineConfig::default()
        };
        let (engine, _report) =
            Engine::open_trusting(Arc::new(kernel), Arc::new(store), cfg, crashed).map_err(from_engine)?;
        if crashed {
            let _ = dirty.clear();
        }
        lap("engine_load");
        Ok(Standalone {
            engine,
            dirty,
            _lock: Some(lock),
            timings,
        })
    }

    /// Over an engine the caller opened (tests: fake kernel, memory store), without lock.
    pub fn with_engine(engine: Engine, dirty: PathBuf) -> Result<Standalone> {
        Ok(Standalone {
            engine,
            dirty: Marker::open(dirty)?.0,
            _lock: None,
            timings: Vec::new(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs a mutating operation between writing and removing the crash marker.
    fn mutate<T>(&mut self, f: impl Fn(&mut Engine) -> std::result::Result<T, EngineError>) -> Result<T> {
        self.dirty.set()?;
        let r = match f(&mut self.engine) {
            // The store was trusted without listing the firewall or every link (see
            // `Engine::open_trusting`): a kernel that drifted (`nft flush ruleset`, a
            // link removed by hand) shows here. Reconcile fully, then try once more.
            Err(e) if e.is_kernel_failure() => match self.engine.reconcile() {
                Ok(_) => f(&mut self.engine).map_err(from_engine),
                Err(again) => {
                    let e = from_engine(e);
                    Err(CniError::new(
                        e.code,
                        format!("{}; reconcile failed too: {again}", e.msg),
                    ))
                }
            },
            r => r.map_err(from_engine),
        };
        // Kernel, firewall and store agree again whether `f` succeeded or undid itself.
        let _ = self.dirty.clear();
        r
    }
}

impl Netd for Standalone {
    fn network(&mut self, name: &str) -> Result<Option<Network>> {
        Ok(self.engine.network(name).ok().cloned())
    }

    fn create_network(&mut self, req: &NetworkRequest) -> Result<Option<Network>> {
        self.mutate(|e| e.create_network(req)).map(Some)
    }

    fn sandbox(&mut self, name: &str) -> Result<Option<Sandbox>> {
        Ok(self.engine.sandbox(name).ok().cloned())
    }

    fn create_sandbox(&mut self, req: &SandboxRequest) -> Result<Created> {
        if self.engine.sandbox(&req.name).is_ok() {
            return Ok(Created::Exists);
        }
        if req
            .networks
            .iter()
            .any(|n| self.engine.network(&n.network).is_err())
        {
            return Ok(Created::NoNetwork);
        }
        self.mutate(|e| e.create_sandbox(req)).map(Created::Sandbox)
    }

    fn connect(&mut self, sandbox: &str, req: &EndpointRequest) -> Result<Endpoint> {
        self.mutate(|e| e.connect(&req.network, req, sandbox))
    }

    fn disconnect(&mut self, sandbox: &str, network: &str) -> Result<()> {
        let attached = self
            .engine
            .sandbox(sandbox)
            .is_ok_and(|s| s.endpoint(network).is_some());
        if !attached {
            return Ok(());
        }
        self.mutate(|e| e.disconnect(network, sandbox))
    }

    fn remove_sandbox(&mut self, name: &str) -> Result<()> {
        if self.engine.sandbox(name).is_err() {
            return Ok(());
        }
        self.mutate(|e| e.remove_sandbox(name))
    }

    fn sandboxes(&mut self) -> Result<Vec<Sandbox>> {
        Ok(self.engine.sandboxes().cloned().collect())
    }

    fn attach(&mut self, net: &NetworkRequest, req: &SandboxRequest) -> Result<Attach> {
        attach_in_steps(self, net, req)
    }

    fn free_addresses(&mut self, network: &str) -> Result<Option<u128>> {
        let mut pools = self.engine.pools();
        let v4 = format!("{network}/4");
        let v6 = format!("{network}/6");
        let all: Vec<_> = pools.by_ref().collect();
        Ok(all
            .iter()
            .find(|(k, _)| **k == v4)
            .or_else(|| all.iter().find(|(k, _)| **k == v6))
            .map(|(_, p)| p.free_count()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crash_marker_survives_a_reopen_and_an_old_empty_one_counts() {
        let dir = std::env::temp_dir().join(format!("netd-cni-marker-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dirty");
        let (m, set) = Marker::open(path.clone()).unwrap();
        assert!(!set, "a new marker is clean");
        assert_eq!(fs::read(&path).unwrap(), b"0");
        m.set().unwrap();
        drop(m);
        let (m, set) = Marker::open(path.clone()).unwrap();
        assert!(
            set,
            "an operation that never cleared the marker is seen by the next exec"
        );
        m.clear().unwrap();
        assert!(!Marker::open(path.clone()).unwrap().1);
        // What an earlier version left when it crashed: the file, empty.
        fs::write(&path, b"").unwrap();
        assert!(Marker::open(path.clone()).unwrap().1);
        let _ = fs::remove_dir_all(&dir);
    }
}
