//! The eBPF datapath (`--lb ebpf`): socket-level load balancing. cgroup/connect4 and
//! sendmsg4 rewrite a VIP to a backend once per connection (per datagram for
//! unconnected UDP), recvmsg4 and getpeername4 show the VIP again, so east-west traffic
//! carries no NAT and no conntrack entry (programs in `ebpf/`, kernel calls in
//! `kernel::bpf`, the map contents planned by `ebpf_plan`).
//!
//! Isolation: each VIP answers only the network namespaces netd wrote for its network
//! (the sandboxes on it, `set_members`, and the host's own); any other namespace
//! reaches the plain address, which nothing serves, exactly as with nftables.
//!
//! North-south (ingress-mode published ports, NodePorts) has no eBPF program yet: the
//! services that have such ports are handed to the nftables datapath as well, which
//! balances packets arriving from outside; their VIPs never reach its chains from
//! local sockets, which the cgroup programs translate first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::nft::NftLb;
use super::{ebpf_plan, LbKind, ServiceLb};
use crate::firewall::ruleset::services::FwService;
use crate::kernel::bpf::{self, BpfError, Lb4Maps, Lb4Tables};
use crate::kernel::{Kernel, KernelError};

/// Resolves a namespace file to its cookie (`kernel::bpf::netns_cookie`; a fake in tests).
pub type CookieOf = Box<dyn Fn(&Path) -> Result<u64, BpfError> + Send + Sync>;

struct State {
    maps: Box<dyn Lb4Maps>,
    /// What the maps hold (read at start, then kept in step with every write).
    held: Lb4Tables,
    /// The index of `held`, kept in step with it.
    index: ebpf_plan::Index,
    /// Network -> cookies of the namespaces on it.
    members: BTreeMap<String, BTreeSet<u64>>,
    /// (namespace file, inode) -> cookie: a namespace made again under the same path
    /// has another inode.
    cookies: BTreeMap<(PathBuf, u64), u64>,
}

pub struct EbpfLb {
    state: Mutex<State>,
    host: u64,
    cookie_of: CookieOf,
    /// North-south fallback: the services with ingress ports.
    nft: NftLb,
}

fn kerr(e: BpfError) -> KernelError {
    KernelError::Other(e.to_string())
}

/// The services the nftables fallback balances: those with ingress ports.
fn north_south(services: &[FwService]) -> Vec<FwService> {
    services
        .iter()
        .filter(|s| !s.ingress.is_empty())
        .cloned()
        .collect()
}

impl EbpfLb {
    /// Attaches the programs (or finds them attached) on `cgroup` and reads the maps.
    pub fn open(kernel: Arc<dyn Kernel>, cgroup: Option<&Path>) -> Result<EbpfLb, BpfError> {
        let cgroup = cgroup.map(Path::to_path_buf).unwrap_or_else(bpf::default_cgroup);
        let maps = bpf::SockLb::open(&cgroup, Path::new(bpf::PIN_ROOT))?;
        let host = bpf::netns_cookie(None)?;
        Self::with_maps(
            kernel,
            Box::new(maps),
            host,
            Box::new(|p| bpf::netns_cookie(Some(p))),
        )
    }

    /// Over given maps (tests pass a fake).
    pub fn with_maps(
        kernel: Arc<dyn Kernel>,
        maps: Box<dyn Lb4Maps>,
        host: u64,
        cookie_of: CookieOf,
    ) -> Result<EbpfLb, BpfError> {
        let held = maps.dump()?;
        Ok(EbpfLb {
            state: Mutex::new(State {
                maps,
                index: ebpf_plan::Index::of(&held),
                held,
                members: BTreeMap::new(),
                cookies: BTreeMap::new(),
            }),
            host,
            cookie_of,
            nft: NftLb::new(kernel),
        })
    }

    /// `old`: None for a full sync (re-read the maps, plan every service); Some for a
    /// diff (plan the services that changed).
    fn sync(&self, old: Option<&[FwService]>, services: &[FwService]) -> Result<(), KernelError> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| KernelError::Other("eBPF state lock poisoned".into()))?;
        let st = &mut *guard;
        let ops = match old {
            None => {
                st.held = st.maps.dump().map_err(kerr)?;
                st.index = ebpf_plan::Index::of(&st.held);
                let want = ebpf_plan::desired_with(services, &st.members, self.host, &st.held, &st.index);
                ebpf_plan::diff(&st.held, &want)
            }
            Some(old) => {
                ebpf_plan::diff_changed_with(old, services, &st.members, self.host, &st.held, &st.index)
            }
        };
        if ops.is_empty() {
            return Ok(());
        }
        match st.maps.apply(&ops) {
            Ok(()) => {
                ebpf_plan::apply_indexed(&mut st.held, &mut st.index, &ops);
                Ok(())
            }
            Err(e) => {
                // Part of the writes may be done: know what the maps hold now.
                if let Ok(h) = st.maps.dump() {
                    st.index = ebpf_plan::Index::of(&h);
                    st.held = h;
                }
                Err(kerr(e))
            }
        }
    }
}

impl ServiceLb for EbpfLb {
    fn kind(&self) -> LbKind {
        LbKind::Ebpf
    }

    fn sync_full(&self, services: &[FwService]) -> Result<(), KernelError> {
        self.sync(None, services)?;
        self.nft.sync_full(&north_south(services))
    }

    fn sync_diff(&self, old: &[FwService], new: &[FwService]) -> Result<(), KernelError> {
        self.sync(Some(old), new)?;
        let (o, n) = (north_south(old), north_south(new));
        if o != n {
            self.nft.sync_diff(&o, &n)?;
        }
        Ok(())
    }

    fn set_members(&self, members: &[(String, PathBuf)]) {
        let Ok(mut st) = self.state.lock() else { return };
        let mut by_net: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        let mut cookies = BTreeMap::new();
        for (net, path) in members {
            use std::os::unix::fs::MetadataExt;
            let Ok(ino) = std::fs::metadata(path).map(|m| m.ino()) else {
                continue; // being deleted: it uses no VIP any more
            };
            let key = (path.clone(), ino);
            let cookie = match st.cookies.get(&key) {
                Some(c) => *c,
                None => match (self.cookie_of)(path) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "no VIP for this namespace");
                        continue;
                    }
                },
            };
            cookies.insert(key, cookie);
            by_net.entry(net.clone()).or_default().insert(cookie);
        }
        st.cookies = cookies;
        st.members = by_net;
    }
}

#[cfg(test)]
#[path = "ebpf_tests.rs"]
mod tests;
