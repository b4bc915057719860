//! Deferred link deletion.
//!
//! Deleting a veth or bridge costs the kernel one or two RCU grace periods
//! (`unregister_netdevice` waits in `synchronize_net`): 15–30 ms here, most of a detach.
//! Nothing in the data path needs the caller to wait for it: once the store no longer
//! refers to the link, the firewall no longer lets it through and, for a sandbox, its
//! namespace is already gone. So deletions of host links run on this worker, and an
//! operation that is about to create a link of the same name waits for that name first.
//! A crash with deletions still queued leaves links whose `netd:` alias no longer matches
//! the store; reconcile removes those.

use std::collections::BTreeSet;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

use crate::kernel::Kernel;
use crate::plan::{self, Step};

#[derive(Default)]
struct Pending {
    names: BTreeSet<String>,
}

pub struct Reaper {
    kernel: Arc<dyn Kernel>,
    /// The worker's queue (`None` if the thread could not start: deletions then run on
    /// the caller). Started by the first deferred deletion, so a process that never
    /// defers one (netd-cni's standalone ADD) does not pay for a thread.
    tx: OnceLock<Option<Sender<Step>>>,
    pending: Arc<(Mutex<Pending>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What `wait_for` knows a pending deletion by: the link's name for a host link,
/// `<netns>#<name>` for one inside a sandbox (a macvlan endpoint's).
pub fn link_key(netns: Option<&std::path::Path>, name: &str) -> String {
    match netns {
        None => name.to_string(),
        Some(p) => format!("{}#{name}", p.display()),
    }
}

fn link_name(s: &Step) -> Option<String> {
    match s {
        Step::DeleteLink { name, netns } => Some(link_key(netns.as_deref(), name)),
        _ => None,
    }
}

impl Reaper {
    pub fn new(kernel: Arc<dyn Kernel>) -> Reaper {
        Reaper {
            kernel,
            tx: OnceLock::new(),
            pending: Arc::default(),
            thread: Mutex::new(None),
        }
    }

    /// The worker's queue, starting the worker on first use.
    fn tx(&self) -> Option<&Sender<Step>> {
        self.tx
            .get_or_init(|| {
                let (tx, rx) = channel::<Step>();
                let p = self.pending.clone();
                let kernel = self.kernel.clone();
                let thread = std::thread::Builder::new()
                    .name("netd-reaper".into())
                    .spawn(move || {
                        for step in rx {
                            if let Err(e) = kernel.apply(&step) {
                                tracing::warn!(step = %plan::describe(&step), error = %e, "deferred delete failed; reconcile will retry");
                            }
                            if let Some(n) = link_name(&step) {
                                let (m, cv) = &*p;
                                m.lock().unwrap_or_else(|e| e.into_inner()).names.remove(&n);
                                cv.notify_all();
                            }
                        }
                    })
                    .ok()?;
                *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
                Some(tx)
            })
            .as_ref()
    }

    /// Queues link deletions; other steps run at once, in order, on the caller. A link
    /// inside a namespace that a later step deletes is deleted at once: once that
    /// namespace's file is gone the reaper could no longer reach the link, and a process
    /// still holding the namespace would keep it (a macvlan child, up on the LAN).
    pub fn teardown(&self, kernel: &dyn Kernel, steps: &[Step]) {
        for (i, s) in steps.iter().enumerate() {
            let ns_goes_later = |p: &std::path::PathBuf| {
                steps[i + 1..]
                    .iter()
                    .any(|l| matches!(l, Step::DeleteNetns { path } if path == p))
            };
            let key = match s {
                Step::DeleteLink { netns: Some(p), .. } if ns_goes_later(p) => None,
                _ => link_name(s),
            };
            // The worker starts only for a link to delete.
            match key.and_then(|n| self.tx().map(|tx| (n, tx))) {
                Some((n, tx)) => {
                    let (m, cv) = &*self.pending;
                    m.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .names
                        .insert(n.clone());
                    if tx.send(s.clone()).is_err() {
                        // The worker is gone: delete here, and let no one wait for it.
                        let _ = kernel.apply(s);
                        m.lock().unwrap_or_else(|e| e.into_inner()).names.remove(&n);
                        cv.notify_all();
                    }
                }
                _ => {
                    if let Err(e) = kernel.apply(s) {
                        tracing::warn!(step = %plan::describe(s), error = %e, "teardown step failed; reconcile will retry");
                    }
                }
            }
        }
    }

    /// Blocks until none of `names` is waiting for deletion.
    pub fn wait_for<'a>(&self, names: impl IntoIterator<Item = &'a str> + Clone) {
        let (m, cv) = &*self.pending;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        while names.clone().into_iter().any(|n| g.names.contains(n)) {
            g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until every queued deletion is done.
    /// Links whose deferred deletion is still under way (`link_key`s).
    pub fn pending(&self) -> BTreeSet<String> {
        let (m, _) = &*self.pending;
        m.lock().unwrap_or_else(|e| e.into_inner()).names.clone()
    }

    pub fn drain(&self) {
        let (m, cv) = &*self.pending;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        while !g.names.is_empty() {
            g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}
