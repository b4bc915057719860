//! The eBPF datapath (`--lb ebpf`): socket-level load balancing. cgroup/connect4/6 and
//! sendmsg4/6 rewrite a VIP to a backend once per connection (per datagram for
//! unconnected UDP), recvmsg4/6 and getpeername4/6 show the VIP again, so east-west
//! traffic carries no NAT and no conntrack entry (programs in `ebpf/`, kernel calls in
//! `kernel::bpf`, the map contents planned by `ebpf_plan`). IPv4 and IPv6 VIPs have
//! maps of their own (`lb4_*`, `lb6_*`), planned alike; the IPv6 hooks send an
//! IPv4-mapped address (a dual-stack socket's way to an IPv4 peer) to the IPv4 maps.
//!
//! Isolation: each VIP answers only the network namespaces netd wrote for its network
//! (the sandboxes on it, `set_members`, and the host's own); any other namespace
//! reaches the plain address, which nothing serves, exactly as with nftables.
//!
//! North-south (ingress-mode published ports, NodePorts): the routing mesh, tc
//! programs on the host's devices (`ebpf/tc_nodeport4.c`, maps planned by `ebpf_np`),
//! DNATs what arrives from outside to a Maglev-chosen backend and reverse-NATs the
//! replies. It serves the ports `ebpf_np::served` names (IPv4, client address kept,
//! backends on this host). The services with ingress ports are also handed to the
//! nftables datapath, which serves everything tc does not see or leaves alone: the host
//! itself and its sandboxes (they never cross a device's tc ingress), ports that
//! masquerade (`externalTrafficPolicy: Cluster`), overlay networks (remote backends
//! need its SNAT), IPv6. A packet tc DNATed no longer has a local destination, so
//! nftables' ingress rules never see it twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::nft::NftLb;
use super::{ebpf_plan, LbKind, ServiceLb};
use crate::firewall::ruleset::services::FwService;
use crate::kernel::bpf::{self, BpfError, LbMaps, LbTables};
use crate::kernel::bpf_tc::{self, NpMaps, NpTables};
use crate::kernel::bpf_types::{Lb4Flow, Lb4NodePortKey, LbAddr};
use crate::kernel::{Kernel, KernelError};

/// The IPv4 and the IPv6 socket-LB maps.
pub type BothMaps = (Box<dyn LbMaps<u32>>, Box<dyn LbMaps<[u32; 4]>>);

/// Resolves a namespace file to its cookie (`kernel::bpf::netns_cookie`; a fake in tests).
pub type CookieOf = Box<dyn Fn(&Path) -> Result<u64, BpfError> + Send + Sync>;

/// One family's socket-LB maps and what netd knows of them.
struct Family<A> {
    maps: Box<dyn LbMaps<A>>,
    /// What the maps hold (read at start, then kept in step with every write).
    held: LbTables<A>,
    /// The index of `held`, kept in step with it.
    index: ebpf_plan::Index<A>,
}

impl<A: LbAddr> Family<A> {
    fn open(maps: Box<dyn LbMaps<A>>) -> Result<Family<A>, BpfError> {
        let held = maps.dump()?;
        Ok(Family {
            maps,
            index: ebpf_plan::Index::of(&held),
            held,
        })
    }

    /// `change`: None for a full sync (re-read the maps, plan every service); Some for
    /// a diff (plan the services that changed).
    fn sync(
        &mut self,
        change: Option<&ebpf_plan::Changed>,
        services: &[FwService],
        members: &BTreeMap<String, BTreeSet<u64>>,
        host: u64,
    ) -> Result<(), KernelError> {
        let ops = match change {
            None => {
                self.held = self.maps.dump().map_err(kerr)?;
                self.index = ebpf_plan::Index::of(&self.held);
                let want = ebpf_plan::desired_with(services, members, host, &self.held, &self.index);
                ebpf_plan::diff(&self.held, &want)
            }
            Some(ch) => ebpf_plan::diff_changes(ch, members, host, &self.held, &self.index),
        };
        if ops.is_empty() {
            return Ok(());
        }
        match self.maps.apply(&ops) {
            Ok(()) => {
                ebpf_plan::apply_indexed(&mut self.held, &mut self.index, &ops);
                Ok(())
            }
            Err(e) => {
                // Part of the writes may be done: know what the maps hold now.
                if let Ok(h) = self.maps.dump() {
                    self.index = ebpf_plan::Index::of(&h);
                    self.held = h;
                }
                Err(kerr(e))
            }
        }
    }
}

struct State {
    v4: Family<u32>,
    v6: Family<[u32; 4]>,
    /// Network -> cookies of the namespaces on it.
    members: BTreeMap<String, BTreeSet<u64>>,
    /// (namespace file, inode) -> cookie: a namespace made again under the same path
    /// has another inode.
    cookies: BTreeMap<(PathBuf, u64), u64>,
}

/// The routing mesh's state.
struct Mesh {
    maps: Box<dyn NpMaps>,
    /// What the maps hold (read at every full sync, kept in step with every write).
    held: NpTables,
    /// The ports the maps serve and their backends (`ebpf_np::served`).
    served: BTreeMap<Lb4NodePortKey, Vec<Lb4Flow>>,
    /// Network -> (its bridge, whether all its backends are on this host).
    networks: BTreeMap<String, (String, bool)>,
    /// `--lb-devices`; None: `bpf_tc::default_devices`.
    devices: Option<Vec<String>>,
    /// Maglev table size (a prime).
    size: usize,
    /// The networks `local` named when `served` was planned (a network that changes
    /// sides changes the ports served without any service changing); None before the
    /// first sync and after a failed write.
    planned_local: Option<BTreeSet<String>>,
    /// The devices the programs are attached to now.
    attached: Vec<String>,
}

impl Mesh {
    fn local(&self) -> BTreeSet<String> {
        let mut l: BTreeSet<String> = self
            .networks
            .iter()
            .filter(|(_, (_, local))| *local)
            .map(|(n, _)| n.clone())
            .collect();
        // Kubernetes services: backends are this host's pods (no remote backends).
        l.insert(crate::model::CLUSTER_WIDE.to_string());
        l
    }

    /// Attaches to the devices the mesh serves now and detaches from the others. A
    /// device that refuses is logged and left to nftables.
    fn follow_devices(&mut self) {
        let devs = match &self.devices {
            Some(d) => d.clone(),
            None => {
                let bridges: Vec<String> = self.networks.values().map(|(b, _)| b.clone()).collect();
                bpf_tc::default_devices(&bridges)
            }
        };
        let mut ok = Vec::new();
        for d in devs {
            match self.maps.attach_to(&d) {
                Ok(()) => ok.push(d),
                Err(e) => {
                    tracing::warn!(device = %d, error = %e, "routing mesh not on this device (nftables serves it)")
                }
            }
        }
        for d in self.maps.detach_others(&ok) {
            tracing::info!(device = %d, "routing mesh detached");
        }
        self.attached = ok;
    }

    /// Whether a diff sync has work: a changed service with ingress ports, or a network
    /// that changed sides since the ports served were planned.
    fn stale(&self, ch: &ebpf_plan::Changed) -> bool {
        ch.touches_ingress() || self.planned_local.as_ref() != Some(&self.local())
    }

    /// `full`: re-read the maps and plan every port; else plan the ports that changed.
    fn sync(&mut self, full: bool, services: &[FwService]) -> Result<(), KernelError> {
        let local = self.local();
        let want = super::ebpf_np::served(services, &local);
        self.planned_local = Some(local);
        let ops = if full {
            self.held = self.maps.dump().map_err(kerr)?;
            super::ebpf_np::full(&want, &self.held, self.size)
        } else {
            super::ebpf_np::changed(&self.served, &want, &self.held, self.size)
        }
        .map_err(|e| KernelError::Other(e.to_string()))?;
        // Devices come and go (a veth made after the start): look again whenever the
        // ports served change, besides every full sync and the repair timer (`reap`).
        if full || want != self.served {
            self.follow_devices();
        }
        if ops.is_empty() {
            self.served = want;
            return Ok(());
        }
        match self.maps.apply(&ops) {
            Ok(()) => {
                super::ebpf_np::apply(&mut self.held, &ops);
                self.served = want;
                Ok(())
            }
            Err(e) => {
                if let Ok(h) = self.maps.dump() {
                    self.held = h;
                }
                // The next diff plans from what the maps hold.
                self.served.clear();
                self.planned_local = None;
                Err(kerr(e))
            }
        }
    }
}

pub struct EbpfLb {
    state: Mutex<State>,
    /// The routing mesh (None: not loaded, as in unit tests of the socket LB).
    mesh: Option<Mutex<Mesh>>,
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
    /// Attaches the programs (or finds them attached) on `cgroup`, loads the routing
    /// mesh (attached to `devices`, or the default ones, at the first full sync) and
    /// reads the maps.
    pub fn open(
        kernel: Arc<dyn Kernel>,
        cgroup: Option<&Path>,
        devices: Option<&[String]>,
    ) -> Result<EbpfLb, BpfError> {
        let cgroup = cgroup.map(Path::to_path_buf).unwrap_or_else(bpf::default_cgroup);
        if let Some(missing) = devices.into_iter().flatten().find(|d| !bpf_tc::device_exists(d)) {
            return Err(BpfError::Missing {
                what: "the devices of --lb-devices",
                path: missing.into(),
                why: "does not exist".into(),
            });
        }
        let maps = bpf::SockLb::open(&cgroup, Path::new(bpf::PIN_ROOT))?;
        let host = bpf::netns_cookie(None)?;
        let dir = maps.dir.clone();
        let mesh = bpf_tc::NodePort::load(&dir)?;
        let mut lb = Self::with_maps(
            kernel,
            (Box::new(maps.v4), Box::new(maps.v6)),
            host,
            Box::new(|p| bpf::netns_cookie(Some(p))),
        )?;
        lb.mesh = Some(Mutex::new(Mesh {
            held: mesh.dump()?,
            maps: Box::new(mesh),
            served: BTreeMap::new(),
            networks: BTreeMap::new(),
            devices: devices.map(<[String]>::to_vec),
            size: super::maglev::DEFAULT_SIZE,
            planned_local: None,
            attached: Vec::new(),
        }));
        Ok(lb)
    }

    /// `change`: None for a full sync; Some for a diff, which leaves the mesh alone
    /// unless it is stale (`Mesh::stale`).
    fn mesh_sync(
        &self,
        change: Option<&ebpf_plan::Changed>,
        services: &[FwService],
    ) -> Result<(), KernelError> {
        let Some(m) = &self.mesh else { return Ok(()) };
        let mut m = m
            .lock()
            .map_err(|_| KernelError::Other("routing mesh lock poisoned".into()))?;
        match change {
            None => m.sync(true, services),
            Some(ch) if m.stale(ch) => m.sync(false, services),
            Some(_) => Ok(()),
        }
    }

    /// Over given maps, IPv4's and IPv6's (tests pass fakes).
    pub fn with_maps(
        kernel: Arc<dyn Kernel>,
        maps: BothMaps,
        host: u64,
        cookie_of: CookieOf,
    ) -> Result<EbpfLb, BpfError> {
        Ok(EbpfLb {
            state: Mutex::new(State {
                v4: Family::open(maps.0)?,
                v6: Family::open(maps.1)?,
                members: BTreeMap::new(),
                cookies: BTreeMap::new(),
            }),
            host,
            cookie_of,
            mesh: None,
            nft: NftLb::new(kernel),
        })
    }

    /// `change`: None for a full sync, Some for a diff (`Family::sync`), of both
    /// families' maps.
    fn sync(&self, change: Option<&ebpf_plan::Changed>, services: &[FwService]) -> Result<(), KernelError> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| KernelError::Other("eBPF state lock poisoned".into()))?;
        let st = &mut *guard;
        st.v4.sync(change, services, &st.members, self.host)?;
        st.v6.sync(change, services, &st.members, self.host)
    }
}

impl ServiceLb for EbpfLb {
    fn kind(&self) -> LbKind {
        LbKind::Ebpf
    }

    fn tc_serves(&self, svc: &FwService) -> bool {
        let Some(mesh) = &self.mesh else {
            return false;
        };
        let m = mesh.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        !m.attached.is_empty()
            && svc
                .ingress
                .iter()
                .any(|i| m.served.contains_key(&super::ebpf_np::port_key(i)))
    }

    fn sync_full(&self, services: &[FwService]) -> Result<(), KernelError> {
        self.sync(None, services)?;
        self.mesh_sync(None, services)?;
        self.nft.sync_full(&north_south(services))
    }

    /// Finds the changed services once (the one walk over every service) and hands
    /// them to the socket LB; the routing mesh and the nftables fallback only look at
    /// the lists when a changed service has ingress ports.
    fn sync_diff(&self, old: &[FwService], new: &[FwService]) -> Result<(), KernelError> {
        let ch = ebpf_plan::Changed::between(old, new);
        self.sync(Some(&ch), new)?;
        self.mesh_sync(Some(&ch), new)?;
        if ch.touches_ingress() {
            let (o, n) = (north_south(old), north_south(new));
            if o != n {
                self.nft.sync_diff(&o, &n)?;
            }
        }
        Ok(())
    }

    fn set_networks(&self, networks: &[(String, String, bool)]) {
        let Some(m) = &self.mesh else { return };
        let Ok(mut m) = m.lock() else { return };
        m.networks = networks
            .iter()
            .map(|(n, b, local)| (n.clone(), (b.clone(), *local)))
            .collect();
    }

    /// Follows devices that came or went since the last full sync (the repair timer).
    fn reap(&self, _services: &[FwService]) -> Result<(), KernelError> {
        if let Some(m) = &self.mesh {
            if let Ok(mut m) = m.lock() {
                m.follow_devices();
            }
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
