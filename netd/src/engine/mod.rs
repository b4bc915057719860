//! The engine: one instance per daemon, owning the in-memory model, the store and the
//! kernel. Every operation follows the same shape:
//!
//! 1. validate and compute (pure: model, IPAM) — bad input stops here and changes nothing;
//! 2. apply the kernel plan (`plan::execute`, which undoes itself on failure);
//! 3. apply the firewall diff as one nftables transaction (on failure: undo step 2);
//! 4. commit the store transaction (on failure: undo 3 and 2);
//! 5. only then update the in-memory model.
//!
//! Callers serialise operations (the API holds one lock around the engine), which is also
//! what makes IPAM free of duplicates under concurrent requests.

mod docker;
mod docker_ipam;
mod error;
mod k8s;
mod macvlan;
mod network;
mod observe;
mod overlay;
mod ports;
mod reaper;
mod reconcile;
mod sandbox;
mod service;
mod short_lived;
mod vlan;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::firewall::batch::Batch;
use crate::firewall::ruleset::services::FwService;
use crate::firewall::{ruleset, FwEndpoint, FwNetwork, FwState};
use crate::ipam::{IpamConfig, Pool};
use crate::kernel::Kernel;
use crate::model::{Network, Sandbox, Service, ServiceKind};
use crate::plan::{self, Step};
use crate::store::{self, Bucket, Store, Txn};

pub use docker::{DockerEndpoint, DockerNetwork, DockerPool, DockerPort, JoinInfo};
pub use error::{EngineError, Result};
pub use k8s::{K8sResult, DEFAULT_SERVICE_CIDR};
pub use overlay::{RemoteName, CLUSTER_SERVICE_LABEL};
pub use reconcile::ReconcileReport;
pub use service::{apply_update, ServiceUpdate, ServiceView};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where sandbox namespaces are bound (`/run/netns`, so `ip netns exec` works).
    pub netns_dir: PathBuf,
    /// Where per-sandbox `resolv.conf` files go (`/etc/netns/<name>/resolv.conf`).
    pub etc_netns_dir: PathBuf,
    /// The host's resolver configuration, copied (minus loopback servers) into sandboxes.
    pub host_resolv_conf: PathBuf,
    pub ipam: IpamConfig,
    /// Host ports for `-P` and `-p PORT` (Docker uses the same range).
    pub ephemeral_ports: (u16, u16),
    /// Who this engine is, written as the comment of the nftables tables it makes
    /// (`netd daemon <state dir>`, `netd-cni <stateDir>`): two engines on one
    /// namespace's tables would each rewrite them to their own state and delete each
    /// other's links, so an engine that finds tables another one made refuses to start
    /// (`check_owner`).
    pub owner: String,
    /// Where Kubernetes ClusterIPs come from (`netd daemon --service-cidr`).
    pub service_cidr: ipnetwork::IpNetwork,
    /// The service load-balancing datapath (`netd daemon --lb`).
    pub lb: crate::lb::LbKind,
    /// The cgroup v2 the eBPF datapath attaches to (`--bpf-cgroup`; default its root).
    pub bpf_cgroup: Option<PathBuf>,
    /// The devices of the eBPF routing mesh (`--lb-devices`; default
    /// `kernel::bpf_tc::default_devices`).
    pub lb_devices: Option<Vec<String>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            netns_dir: "/run/netns".into(),
            etc_netns_dir: "/etc/netns".into(),
            host_resolv_conf: "/etc/resolv.conf".into(),
            ipam: IpamConfig::default(),
            ephemeral_ports: (49153, 65535),
            owner: "netd".into(),
            service_cidr: k8s::DEFAULT_SERVICE_CIDR.parse().unwrap_or_else(|_| {
                ipnetwork::IpNetwork::V4(ipnetwork::Ipv4Network::from(std::net::Ipv4Addr::UNSPECIFIED))
            }),
            lb: crate::lb::LbKind::default(),
            bpf_cgroup: None,
            lb_devices: None,
        }
    }
}

/// A network as `inspect` shows it: the record plus who is attached.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkView {
    #[serde(flatten)]
    pub network: Network,
    pub endpoints: Vec<EndpointView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    pub sandbox: String,
    pub ifname: String,
    pub host_ifname: String,
    pub mac: String,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    pub aliases: Vec<String>,
}

pub struct Engine {
    kernel: Arc<dyn Kernel>,
    store: Arc<dyn Store>,
    cfg: EngineConfig,
    networks: BTreeMap<String, Network>,
    sandboxes: BTreeMap<String, Sandbox>,
    /// Keyed `<namespace>/<name>`.
    services: BTreeMap<String, Service>,
    /// Keyed `<network>/4` and `<network>/6`.
    pools: BTreeMap<String, Pool>,
    /// What the kernel's netd tables hold now.
    fw: FwState,
    /// The service datapath, and what it holds now.
    lb: Box<dyn crate::lb::ServiceLb>,
    svc_fw: Vec<FwService>,
    /// Where the last ephemeral port search stopped.
    port_cursor: u16,
    /// What the last reconcile did (shown by `GET /v1/info`).
    last_reconcile: ReconcileReport,
    reaper: reaper::Reaper,
    /// The embedded DNS server, told about every change before an operation returns.
    dns: Option<Arc<crate::dns::Dns>>,
    /// The daemon's events and metrics (`set_observer`); `None` emits nothing.
    observer: Option<Arc<crate::observe::Observer>>,
    /// Other nodes' endpoints on overlay networks (`set_remote_names`), for the DNS.
    remote_names: Vec<overlay::RemoteName>,
    /// Overlay network -> this node's load-balancer address there and its block
    /// (`set_overlay_lb`): held by the bridge, the SNAT source toward other nodes.
    overlay_lb: BTreeMap<String, crate::firewall::OverlaySnat>,
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn new_id() -> String {
    let a: u128 = rand::random();
    format!("{a:032x}")
}

pub(crate) fn pool_key(network: &str, v6: bool) -> String {
    format!("{network}/{}", if v6 { 6 } else { 4 })
}

/// The pool of an ipvlan network's IPv4 subnet after its first (`i` from 1).
pub(crate) fn extra_pool_key(network: &str, i: usize) -> String {
    format!("{network}/4.{i}")
}

impl Engine {
    /// Every pool key of `network`: IPv4, IPv6, and the extra IPv4 subnets of an ipvlan
    /// network (network names have no `/`, so the prefix is the network's alone).
    pub(crate) fn pool_keys_of(&self, network: &str) -> Vec<String> {
        let extra = format!("{network}/4.");
        let mut keys = vec![pool_key(network, false), pool_key(network, true)];
        keys.extend(self.pools.keys().filter(|k| k.starts_with(&extra)).cloned());
        keys
    }

    /// The key of `network`'s IPv4 pool holding `ip`; its first pool when none does
    /// (which then refuses the address in its own words).
    pub(crate) fn v4_pool_key_for(&self, network: &str, ip: Option<std::net::IpAddr>) -> String {
        let first = pool_key(network, false);
        let Some(ip) = ip else {
            return first;
        };
        self.pool_keys_of(network)
            .into_iter()
            .filter(|k| *k != pool_key(network, true))
            .find(|k| self.pools.get(k).is_some_and(|p| p.subnet.contains(ip)))
            .unwrap_or(first)
    }
}

/// Snapshot of the entries an operation is about to change, to put back on failure.
#[derive(Default)]
struct Undo {
    networks: Vec<(String, Option<Network>)>,
    sandboxes: Vec<(String, Option<Sandbox>)>,
    pools: Vec<(String, Option<Pool>)>,
    services: Vec<(String, Option<Service>)>,
}

impl Engine {
    /// Loads the store, reconciles the kernel with it and returns a ready engine.
    pub fn open(
        kernel: Arc<dyn Kernel>,
        store: Arc<dyn Store>,
        cfg: EngineConfig,
    ) -> Result<(Engine, ReconcileReport)> {
        let mut e = Engine::load(kernel, store, cfg)?;
        let report = e.reconcile()?;
        e.last_reconcile = report.clone();
        Ok((e, report))
    }

    /// Reads the store into a new engine without touching the kernel.
    fn load(kernel: Arc<dyn Kernel>, store: Arc<dyn Store>, cfg: EngineConfig) -> Result<Engine> {
        let networks = store::load::<Network>(store.as_ref(), Bucket::Networks)?
            .into_iter()
            .collect();
        let sandboxes = store::load::<Sandbox>(store.as_ref(), Bucket::Sandboxes)?
            .into_iter()
            .collect();
        let pools = store::load::<Pool>(store.as_ref(), Bucket::Pools)?
            .into_iter()
            .collect();
        let services = store::load::<Service>(store.as_ref(), Bucket::Services)?
            .into_iter()
            .collect();
        let port_cursor = cfg.ephemeral_ports.0;
        let reaper = reaper::Reaper::new(kernel.clone());
        let lb = crate::lb::datapath(
            cfg.lb,
            kernel.clone(),
            cfg.bpf_cgroup.as_deref(),
            cfg.lb_devices.as_deref(),
        )
        .map_err(EngineError::Invalid)?;
        Ok(Engine {
            kernel,
            store,
            cfg,
            networks,
            sandboxes,
            services,
            pools,
            fw: FwState::default(),
            lb,
            svc_fw: Vec::new(),
            port_cursor,
            last_reconcile: ReconcileReport::default(),
            reaper,
            dns: None,
            observer: None,
            remote_names: Vec::new(),
            overlay_lb: BTreeMap::new(),
        })
    }

    /// Waits until deferred link deletions are done (tests, shutdown).
    pub fn settle(&self) {
        self.reaper.drain();
    }

    /// Attaches the DNS server and gives it the current model (start-up, after
    /// reconcile: every name resolves again after a restart).
    pub fn set_dns(&mut self, dns: Arc<crate::dns::Dns>) {
        self.dns = Some(dns);
        self.sync_dns();
    }

    pub fn dns(&self) -> Option<&Arc<crate::dns::Dns>> {
        self.dns.as_ref()
    }

    /// Hands the model to the DNS server: every successful `commit` does (with a table
    /// built meanwhile), so names change before the API call returns; so do changes to
    /// services, which only the store holds, and attaching the server.
    fn sync_dns(&self) {
        if let Some(d) = &self.dns {
            d.publish(self.dns_table(d), self.sandboxes.values());
        }
    }

    /// The DNS table of the model as it is now. A `cluster_ip` service's backends are
    /// selected from the sandboxes as they are now, so its names follow every sandbox
    /// operation in the same `commit` that changes the datapath.
    fn dns_table(&self, d: &crate::dns::Dns) -> crate::dns::records::Table {
        let mut external: Vec<crate::dns::records::ExternalName> = Vec::new();
        let mut balanced: Vec<crate::dns::services::ServiceRecords> = Vec::new();
        for s in self.services.values() {
            match &s.kind {
                ServiceKind::ExternalName { target } => external.push(crate::dns::records::ExternalName {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    target: target.clone(),
                }),
                ServiceKind::ClusterIp(c) => {
                    let backends = self.service_backends(c);
                    balanced.push(crate::dns::services::ServiceRecords::cluster_ip(
                        &s.namespace,
                        &s.name,
                        c,
                        &backends,
                    ));
                }
            }
        }
        let mut table = d.table_for(
            self.networks.values(),
            self.sandboxes.values(),
            &external,
            &balanced,
        );
        overlay::add_remote_names(&mut table, &self.remote_names);
        table
    }

    pub fn last_reconcile(&self) -> &ReconcileReport {
        &self.last_reconcile
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values()
    }

    pub fn sandboxes(&self) -> impl Iterator<Item = &Sandbox> {
        self.sandboxes.values()
    }

    pub fn sandbox(&self, name: &str) -> Result<&Sandbox> {
        self.sandboxes
            .get(name)
            .ok_or_else(|| EngineError::NoSuchSandbox(name.into()))
    }

    pub fn network(&self, name: &str) -> Result<&Network> {
        self.networks
            .get(name)
            .ok_or_else(|| EngineError::NoSuchNetwork(name.into()))
    }

    pub fn pools(&self) -> impl Iterator<Item = (&String, &Pool)> {
        self.pools.iter()
    }

    pub fn network_view(&self, name: &str) -> Result<NetworkView> {
        let network = self.network(name)?.clone();
        let endpoints = self
            .sandboxes
            .values()
            .filter_map(|s| {
                s.endpoint(name).map(|e| EndpointView {
                    sandbox: s.name.clone(),
                    ifname: e.ifname.clone(),
                    host_ifname: e.host_ifname.clone(),
                    mac: e.mac.clone(),
                    ipv4: e.ipv4.map(|n| n.to_string()),
                    ipv6: e.ipv6.map(|n| n.to_string()),
                    aliases: e.aliases.clone(),
                })
            })
            .collect();
        Ok(NetworkView { network, endpoints })
    }

    /// The firewall state the model calls for.
    pub fn desired_fw(&self) -> FwState {
        // macvlan networks have no bridge and no rules: their traffic never passes the
        // host's stack (Docker's macvlan makes no iptables rules either).
        let networks = self
            .networks
            .values()
            .filter(|n| !n.has_parent())
            .map(|n| FwNetwork {
                name: n.name.clone(),
                bridge: n.l3_link(),
                subnet4: n.subnet4().and_then(|s| match s.subnet {
                    ipnetwork::IpNetwork::V4(v) => Some(v),
                    _ => None,
                }),
                subnet6: n.subnet6().and_then(|s| match s.subnet {
                    ipnetwork::IpNetwork::V6(v) => Some(v),
                    _ => None,
                }),
                internal: n.internal,
                icc: n.icc,
                masquerade: n.masquerade,
                vlan_bridge: n.vlan.map(|_| n.bridge.clone()),
                overlay_snat: self.overlay_lb.get(&n.name).copied(),
            })
            .collect();
        let mut endpoints = Vec::new();
        let mut ports = Vec::new();
        for s in self.sandboxes.values() {
            for e in &s.endpoints {
                let net = self.networks.get(&e.network);
                if net.is_some_and(Network::has_parent) {
                    continue;
                }
                endpoints.push(FwEndpoint {
                    port: e.host_ifname.clone(),
                    mac: crate::driver::bridge::parse_mac(&e.mac).unwrap_or([0; 6]),
                    ipv4: e.ipv4.map(|n| n.ip()),
                    ipv6: e.ipv6.map(|n| n.ip()),
                    trunk: net.is_some_and(|n| !n.vlan_trunk.is_empty()),
                });
            }
            ports.extend(ports::fw_ports(s));
        }
        self.service_host_ports(&mut ports);
        ports.sort();
        FwState {
            networks,
            endpoints,
            ports,
        }
    }

    /// Refuses tables (`table`: netd's inet table as the kernel has it) that another
    /// engine made: their comment names another owner. Tables without a comment (made
    /// by a netd before this check) are taken as ours.
    pub(crate) fn check_owner(&self, table: Option<&crate::kernel::nft_table::NftTable>) -> Result<()> {
        let mine = ruleset::table_comment(&self.cfg.owner);
        match table.and_then(|t| t.comment.as_deref()) {
            Some(theirs) if theirs != mine => Err(EngineError::Foreign {
                theirs: theirs.to_string(),
                mine,
            }),
            _ => Ok(()),
        }
    }

    fn remember(&self, u: &mut Undo, networks: &[&str], sandboxes: &[&str], pools: &[String]) {
        for n in networks {
            u.networks.push((n.to_string(), self.networks.get(*n).cloned()));
        }
        for s in sandboxes {
            u.sandboxes.push((s.to_string(), self.sandboxes.get(*s).cloned()));
        }
        for p in pools {
            u.pools.push((p.clone(), self.pools.get(p).cloned()));
        }
    }

    fn rollback(&mut self, u: Undo) {
        for (k, v) in u.networks {
            match v {
                Some(v) => self.networks.insert(k, v),
                None => self.networks.remove(&k),
            };
        }
        for (k, v) in u.sandboxes {
            match v {
                Some(v) => self.sandboxes.insert(k, v),
                None => self.sandboxes.remove(&k),
            };
        }
        for (k, v) in u.pools {
            match v {
                Some(v) => self.pools.insert(k, v),
                None => self.pools.remove(&k),
            };
        }
        for (k, v) in u.services {
            match v {
                Some(v) => self.services.insert(k, v),
                None => self.services.remove(&k),
            };
        }
    }

    /// Steps 2–4 of every operation, with the model already changed in memory: apply
    /// `steps`, then the firewall diff, and commit `txn` meanwhile. On any failure, undo
    /// what was done (kernel, firewall, store, memory) and return the error. `teardown`
    /// steps (deletions) run after the commit, best effort, since the store no longer
    /// refers to their objects.
    ///
    /// The store commit runs on a thread of its own while the kernel is changed: it is
    /// mostly one fsync (~1 ms), the kernel work is about as long, and neither needs the
    /// other's result, so an operation takes the longer of the two instead of the sum.
    /// A crash in the middle may leave a record whose objects are missing or half-made;
    /// reconcile (at restart, or the next short-lived open) recreates those, as it does
    /// objects deleted behind netd's back: a link still under its "being made" alias
    /// (`driver::creating_alias`) counts as missing.
    fn commit(&mut self, undo: Undo, steps: &[Step], txn: &Txn, teardown: &[Step]) -> Result<()> {
        let names: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::EnsureBridge(b) => Some(b.name.clone()),
                Step::CreateVeth(v) => Some(v.host_name.clone()),
                Step::CreateHostVeth(v) => Some(v.host_name.clone()),
                Step::EnsureVlanGateway(g) => Some(g.name.clone()),
                Step::EnsureVlanParent(v) => Some(v.name.clone()),
                Step::EnsureVxlan(v) => Some(v.name.clone()),
                Step::EnsureDummyParent(d) => Some(d.name.clone()),
                Step::CreateMacvlan(m) => Some(match &m.sandbox {
                    Some(sb) => reaper::link_key(Some(&sb.netns), &sb.ifname),
                    None => m.tmp_name.clone(),
                }),
                _ => None,
            })
            .collect();
        self.reaper.wait_for(names.iter().map(String::as_str));
        let t0 = std::time::Instant::now();
        let undo_steps: Vec<Step> = steps.iter().rev().filter_map(Step::undo).collect();
        let store = Arc::clone(&self.store);
        let this = &*self;
        let (applied, stored, dns_table) = std::thread::scope(|s| {
            let stored = s.spawn(move || (store.commit_undoable(txn), t0.elapsed()));
            // The new firewall state and DNS table depend on the model alone (changed
            // already), not on the kernel: both are built meanwhile, on CPU the fsync
            // leaves idle. Each walks every sandbox, so they grow with the host.
            let fw = s.spawn(move || {
                let want = this.desired_fw();
                let batch = crate::firewall::delta(&this.fw, &want);
                (want, batch, this.desired_services())
            });
            let dns = this.dns.as_ref().map(|d| s.spawn(move || this.dns_table(d)));
            let applied = this.apply_with_fw(steps, &undo_steps, t0, fw);
            let stored = stored.join().unwrap_or_else(|_| {
                let e = crate::store::StoreError::Io {
                    op: "commit".into(),
                    msg: "the committing thread panicked".into(),
                };
                (Err(e), t0.elapsed())
            });
            (applied, stored, dns.and_then(|h| h.join().ok()))
        });
        let (stored, t_store) = stored;
        let (want, _, want_svc, t_kernel, t_plan_fw, t_nft) = match (applied, stored) {
            (Ok(a), Ok(_)) => a,
            (Err(e), stored) => {
                // The kernel and firewall are as before (apply_with_fw undid its part);
                // so must the store be.
                if let Ok(back) = stored {
                    if let Err(e2) = self.store.commit(&back) {
                        tracing::error!(error = %e2, "could not undo the store commit of a failed operation; reconcile will recreate what it records");
                    }
                }
                self.rollback(undo);
                return Err(e);
            }
            (Ok((want, batch, want_svc, ..)), Err(e)) => {
                if let Err(e) = self.lb.sync_diff(&want_svc, &self.svc_fw) {
                    tracing::error!(error = %e, "could not revert the service datapath after a store failure");
                }
                if !batch.is_empty() {
                    if let Err(e) = self.kernel.nft(&crate::firewall::delta(&want, &self.fw)) {
                        tracing::error!(error = %e, "could not revert firewall after a store failure");
                    }
                }
                plan::teardown(self.kernel.as_ref(), &undo_steps);
                self.rollback(undo);
                return Err(e.into());
            }
        };
        self.fw = want;
        self.svc_fw = want_svc;
        // Names change before the operation returns (`sync_dns`).
        if let (Some(d), Some(t)) = (&self.dns, dns_table) {
            d.publish(t, self.sandboxes.values());
        }
        tracing::debug!(
            kernel_us = t_kernel.as_micros() as u64,
            fw_diff_us = (t_plan_fw - t_kernel).as_micros() as u64,
            nft_us = (t_nft - t_plan_fw).as_micros() as u64,
            store_us = t_store.as_micros() as u64,
            total_us = t0.elapsed().as_micros() as u64,
            "operation committed"
        );
        self.reaper.teardown(self.kernel.as_ref(), teardown);
        for s in steps.iter().chain(teardown) {
            tracing::info!("{}", plan::describe(s));
        }
        self.emit_changes(&undo);
        Ok(())
    }

    /// The kernel half of `commit`: `steps`, then the firewall delta they call for. On
    /// failure both are as before. Answers the new firewall state, its delta and when
    /// each part ended (since `t0`).
    #[allow(clippy::type_complexity)]
    fn apply_with_fw(
        &self,
        steps: &[Step],
        undo_steps: &[Step],
        t0: std::time::Instant,
        fw: std::thread::ScopedJoinHandle<'_, (FwState, Batch, Vec<FwService>)>,
    ) -> Result<(FwState, Batch, Vec<FwService>, Duration, Duration, Duration)> {
        // plan::execute undoes its own steps when one fails.
        let executed = plan::execute(self.kernel.as_ref(), steps);
        let t_kernel = t0.elapsed();
        let fw = fw.join();
        executed?;
        let (want, batch, want_svc) =
            fw.map_err(|_| EngineError::Panicked("computing the firewall state"))?;
        let t_plan_fw = t0.elapsed();
        if !batch.is_empty() {
            if let Err(e) = self.kernel.nft(&batch) {
                plan::teardown(self.kernel.as_ref(), undo_steps);
                return Err(EngineError::Kernel {
                    op: "apply firewall rules".into(),
                    source: e,
                });
            }
        }
        // Backends follow sandboxes: the services' datapath moves in the same call.
        self.lb_hints();
        if let Err(e) = self.lb.sync_diff(&self.svc_fw, &want_svc) {
            if !batch.is_empty() {
                if let Err(e) = self.kernel.nft(&crate::firewall::delta(&want, &self.fw)) {
                    tracing::error!(error = %e, "could not revert the firewall");
                }
            }
            plan::teardown(self.kernel.as_ref(), undo_steps);
            return Err(EngineError::Kernel {
                op: format!("service datapath ({})", self.lb.kind()),
                source: e,
            });
        }
        Ok((want, batch, want_svc, t_kernel, t_plan_fw, t0.elapsed()))
    }
}

#[cfg(test)]
mod tests;
