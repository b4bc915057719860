//! The node's agent: one level-triggered pass (`pass`) brings the node in line with the
//! cluster store, run at every change the store's watch reports, after every cluster API
//! call, and on a short timer (local sandboxes come and go through the engine, which
//! does not tell). A pass:
//!
//! 1. makes the overlay networks of the store this node *needs* and lacks (after
//!    claiming an address block for it, `blocks.rs`), and removes local ones that the
//!    store dropped or that the node no longer needs, releasing its blocks of them
//!    (`needed_networks`: networks with a local endpoint, plus what other code asks the
//!    node to keep, `Agent::keep`);
//! 2. publishes the node's endpoints on overlay networks (under the node's lease) and
//!    deletes the ones that went;
//! 3. brings each VXLAN device's FDB and neighbour entries to the other nodes' endpoints
//!    (`fdb.rs`).
//!
//! Every read is a full listing, so a pass after a missed event (a broken watch, a
//! compaction, etcd away) is also a full resync. Passes are serialised.
//!
//! A node with no endpoint on an overlay network holds nothing for it: no bridge, no
//! VXLAN device, no block. The first local attach makes it on demand (`ensure_local`,
//! called by the API before the engine sees the request, `api::materialize_first`),
//! under a `Hold` that keeps the pass from removing it before the endpoint exists.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::{IpNetwork, Ipv4Network};
use serde::{Deserialize, Serialize};

use super::fdb::{self, RemoteEntry};
use super::{
    blocks, BlockRecord, ClusterConfig, ClusterError, ClusterStore, EndpointRecord, NetworkRecord, NodeRecord,
};
use crate::api::server::Shared;
use crate::engine::Engine;
use crate::model::{vxlan_name, Network, NetworkRequest, OverlayLink, SubnetRequest, DRIVER_OVERLAY};
use crate::observe::{Event, Kind};

/// Local sandboxes are noticed within this long: the engine tells nobody, so the agent
/// looks (a look is one short engine lock and no store call; a change starts a pass).
const LOOK: Duration = Duration::from_millis(100);
/// A full pass at least this often, changes or not.
const TICK: Duration = Duration::from_secs(2);
/// Every this many passes the remote entries are all written again (`replace`), so a
/// VXLAN device recreated behind the agent's back (reconcile) gets them back.
const REAPPLY_EVERY: u32 = 10;
/// Where `network create -d overlay` without `--subnet` takes a /24 from.
const DEFAULT_POOL: &str = "10.112.0.0/16";

/// What `netctl network create -d overlay` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OverlayRequest {
    pub name: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub internal: bool,
    /// Prefix length of the address blocks nodes claim (`-o block_prefix=N`).
    pub block_prefix: Option<u8>,
    /// `-o encrypted[=ipsec|wireguard]` (the value; empty for the bare option).
    pub encrypted: Option<String>,
}

/// A node as `netctl node ls` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub addr: Ipv4Addr,
    pub data_port: u16,
    pub state: String,
    pub endpoints: usize,
    /// The overlay networks it has endpoints on (what `netctl graph` draws as its peers).
    #[serde(default)]
    pub networks: Vec<String>,
    /// The node that answered.
    #[serde(default)]
    pub local: bool,
}

#[derive(Default)]
pub(super) struct State {
    published: BTreeMap<String, EndpointRecord>,
    epoch: u64,
    applied: BTreeMap<String, BTreeSet<RemoteEntry>>,
    ticks: u32,
    /// This node's load-balancer address per overlay network (`services.rs`).
    pub(super) lb: BTreeMap<String, Ipv4Addr>,
    /// The nodes the last pass saw (`None` before the first): joins and leaves are
    /// events (`netctl events --filter type=node`).
    nodes: Option<BTreeMap<String, NodeRecord>>,
}

pub struct Agent<S: ClusterStore> {
    pub(super) store: Arc<S>,
    engine: Shared,
    pub(super) cfg: ClusterConfig,
    /// Underlay MTU − VXLAN overhead.
    pub(super) mtu: u32,
    state: tokio::sync::Mutex<State>,
    /// Networks kept on this node for reasons other than a local endpoint.
    keep: Arc<std::sync::Mutex<Keep>>,
    /// Serialises attaches to overlay networks from `make_room` to the engine's answer.
    pub(super) attach_lock: tokio::sync::Mutex<()>,
    /// Cluster services this node refused to make (service → record id), so each
    /// refusal is logged once per record, not at every pass that retries it.
    pub(super) refused: std::sync::Mutex<BTreeMap<String, String>>,
    /// Encrypted networks' IPsec state (`encrypt.rs`).
    pub(super) ipsec: tokio::sync::Mutex<super::encrypt::IpsecState>,
    /// WireGuard networks' link and peers (`wireguard.rs`).
    pub(super) wg: tokio::sync::Mutex<super::wireguard::WgState>,
    /// nftables in the node's namespace, made at first use (the IPsec rules).
    nft: std::sync::OnceLock<Arc<crate::kernel::nft::Nft>>,
}

/// Why a node keeps an overlay network that has no local endpoint (see `needed_networks`).
#[derive(Debug, Default)]
struct Keep {
    /// Per reason (e.g. "routing-mesh"), the networks it needs here; set by `Agent::keep`.
    reasons: BTreeMap<String, BTreeSet<String>>,
    /// Networks an attach in flight is about to put an endpoint on (a count per network).
    pending: BTreeMap<String, usize>,
}

/// Keeps `network` on the node while alive: taken by an attach before it makes the
/// network (`Agent::ensure_local`) and dropped once the engine answered, by which time
/// the endpoint exists (or the attach failed and the network may go).
pub struct Hold {
    keep: Arc<std::sync::Mutex<Keep>>,
    network: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut k = self.keep.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = k.pending.get_mut(&self.network) {
            *n -= 1;
            if *n == 0 {
                k.pending.remove(&self.network);
            }
        }
    }
}

/// The overlay networks a node must hold a datapath (bridge, VXLAN device, block) for:
/// those with a local endpoint, those an attach in flight is about to use, and those
/// another part of netd asked to keep (`Agent::keep`, e.g. the routing mesh needs a
/// network on every node that publishes one of its services' ports). Every other overlay
/// network is only a record in the store here: listed, not made.
pub fn needed_networks(
    endpoints: &[EndpointRecord],
    kept: &BTreeMap<String, BTreeSet<String>>,
    pending: &BTreeMap<String, usize>,
) -> BTreeSet<String> {
    endpoints
        .iter()
        .map(|e| e.network.clone())
        .chain(kept.values().flatten().cloned())
        .chain(pending.keys().cloned())
        .collect()
}

/// What the engine holds of the overlay: its networks, and their endpoints here.
pub(super) struct Local {
    pub(super) networks: BTreeMap<String, Network>,
    pub(super) endpoints: Vec<EndpointRecord>,
}

impl<S: ClusterStore> Agent<S> {
    pub fn new(store: Arc<S>, engine: Shared, cfg: ClusterConfig, underlay_mtu: u32) -> Agent<S> {
        Agent {
            store,
            engine,
            cfg,
            mtu: underlay_mtu.saturating_sub(super::VXLAN_OVERHEAD),
            state: tokio::sync::Mutex::new(State::default()),
            keep: Arc::default(),
            attach_lock: tokio::sync::Mutex::new(()),
            refused: std::sync::Mutex::default(),
            ipsec: tokio::sync::Mutex::default(),
            wg: tokio::sync::Mutex::default(),
            nft: std::sync::OnceLock::new(),
        }
    }

    /// The node's nftables context (made in the calling thread's namespace: the daemon's).
    pub(super) fn nft(&self) -> Result<Arc<crate::kernel::nft::Nft>, ClusterError> {
        if let Some(n) = self.nft.get() {
            return Ok(Arc::clone(n));
        }
        let n = Arc::new(
            crate::kernel::nft::Nft::new_in(None).map_err(|e| ClusterError::Invalid(e.to_string()))?,
        );
        Ok(Arc::clone(self.nft.get_or_init(|| n)))
    }

    /// The MTU of overlay network `n` here: the underlay's less VXLAN's and, when it is
    /// encrypted, the cipher's overhead.
    fn mtu_of(&self, n: &NetworkRecord) -> u32 {
        match n.encrypted {
            Some(super::ipsec::Encryption::Ipsec) => self.mtu.saturating_sub(super::ipsec::ESP_OVERHEAD),
            Some(super::ipsec::Encryption::Wireguard) => self.mtu.saturating_sub(super::ipsec::WG_OVERHEAD),
            None => self.mtu,
        }
    }

    /// The hook for other parts of netd: `reason` needs exactly `networks` on this node
    /// whether or not a local endpoint is on them (replacing what `reason` asked before;
    /// an empty set withdraws it). The next pass makes or removes networks accordingly;
    /// call `pass` to have it done before returning.
    pub fn keep(&self, reason: &str, networks: BTreeSet<String>) {
        let mut k = self.keep.lock().unwrap_or_else(|p| p.into_inner());
        if networks.is_empty() {
            k.reasons.remove(reason);
        } else {
            k.reasons.insert(reason.to_string(), networks);
        }
    }

    fn needed(&self, local: &Local) -> BTreeSet<String> {
        let k = self.keep.lock().unwrap_or_else(|p| p.into_inner());
        needed_networks(&local.endpoints, &k.reasons, &k.pending)
    }

    /// Holds `network` on this node until the guard drops (see `Hold`).
    pub fn hold(&self, network: &str) -> Hold {
        let mut k = self.keep.lock().unwrap_or_else(|p| p.into_inner());
        *k.pending.entry(network.to_string()).or_default() += 1;
        Hold {
            keep: Arc::clone(&self.keep),
            network: network.to_string(),
        }
    }

    /// Makes overlay network `name` on this node now if the store has it and the node
    /// does not (the attach path: the engine then finds it). `Ok(true)` when `name` is an
    /// overlay network held here now, `Ok(false)` for any other name (the engine answers
    /// for it as usual).
    /// Without a store call when the network is already here, so a node with etcd away
    /// still attaches to networks it holds. Take a `hold` first.
    pub async fn ensure_local(&self, name: &str) -> Result<bool, ClusterError> {
        if let Some(overlay) = self.has_network(name).await? {
            return Ok(overlay);
        }
        let _st = self.state.lock().await;
        if let Some(overlay) = self.has_network(name).await? {
            return Ok(overlay);
        }
        let nets = self.store.networks().await?;
        let Some(rec) = nets.iter().find(|n| n.name == name) else {
            return Ok(false);
        };
        self.materialize(rec).await?;
        Ok(true)
    }

    /// A static address (`--ip`) on overlay network `name` is unique across the cluster
    /// because it must lie in a block this node holds: the block containing it is
    /// claimed here first when nobody has it (one compare-and-set), and refused when
    /// another node has it (that node's pool may hand it out). Within the node, the
    /// local pool refuses an address leased twice. So no key per address, and dynamic
    /// allocation on other nodes never meets a static one. `Ok(claimed blocks)`; nothing
    /// happens for a name that is not an overlay network of the store or an address
    /// outside its subnet (the engine refuses those as usual).
    pub async fn claim_static(&self, name: &str, ips: &[Ipv4Addr]) -> Result<Vec<Ipv4Network>, ClusterError> {
        let mut claimed = Vec::new();
        if ips.is_empty() || self.has_network(name).await? == Some(false) {
            return Ok(claimed);
        }
        let _st = self.state.lock().await;
        let nets = self.store.networks().await?;
        let Some(n) = nets.iter().find(|n| n.name == name) else {
            return Ok(claimed);
        };
        let prefix = blocks::block_prefix(n.subnet, n.block_prefix);
        for ip in ips.iter().copied().filter(|ip| n.subnet.contains(*ip)) {
            if ip == n.gateway {
                return Err(ClusterError::Invalid(format!(
                    "address {ip} is the gateway of overlay network {name}"
                )));
            }
            let Some(block) = blocks::blocks_of(n.subnet, prefix).find(|b| b.contains(ip)) else {
                continue;
            };
            // Two rounds: a lost race is re-read once (the winner is then named).
            for _ in 0..2 {
                let claims = self.store.blocks(name).await?;
                match claims.iter().find(|c| c.block == block) {
                    Some(c) if c.node == self.cfg.node => break,
                    Some(c) => {
                        return Err(ClusterError::Conflict(format!(
                            "address {ip} of overlay network {name} is in block {block}, which node {} holds: take it there or pick another",
                            c.node
                        )))
                    }
                    None => {
                        if self.claim(n, block).await? {
                            claimed.push(block);
                            break;
                        }
                    }
                }
            }
        }
        Ok(claimed)
    }

    /// Gives back `blocks` (claimed for an attach that then failed) unless the network is
    /// held here now: a network not held here keeps no block.
    pub async fn unclaim(&self, name: &str, blocks: &[Ipv4Network]) -> Result<(), ClusterError> {
        let _st = self.state.lock().await;
        if blocks.is_empty() || self.has_network(name).await?.is_some() {
            return Ok(());
        }
        for b in blocks {
            let rec = BlockRecord {
                network: name.to_string(),
                block: *b,
                node: self.cfg.node.clone(),
            };
            if self.store.release_block(&rec).await? {
                tracing::info!(network = %name, block = %b, "cluster: block released (attach failed)");
            }
        }
        Ok(())
    }

    /// Whether the engine has `name`, and if so whether it is an overlay network.
    async fn has_network(&self, name: &str) -> Result<Option<bool>, ClusterError> {
        let n = name.to_string();
        self.engine(move |e| Ok(e.networks().find(|x| x.name == n).map(|x| x.is_overlay())))
            .await
    }

    /// Releases this node's blocks of `net` (the network is gone from the node, so no
    /// address of them is leased here): another node may claim them.
    async fn release_blocks(&self, net: &str) -> Result<(), ClusterError> {
        let claims = self.store.blocks(net).await?;
        for c in claims.iter().filter(|c| c.node == self.cfg.node) {
            if self.store.release_block(c).await? {
                tracing::info!(network = %net, block = %c.block, "cluster: block released");
            }
        }
        Ok(())
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Passes until `shutdown` flips: at each store change and each tick.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut look = tokio::time::interval(LOOK);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen: Vec<EndpointRecord> = Vec::new();
        loop {
            tokio::select! {
                _ = self.store.changed() => {}
                _ = tick.tick() => {}
                _ = look.tick() => {
                    match self.local().await {
                        Ok(l) if l.endpoints == seen => continue,
                        Ok(l) => seen = l.endpoints,
                        Err(_) => continue,
                    }
                }
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "cluster: pass failed; retrying at the next change or tick");
            }
        }
    }

    pub(super) async fn engine<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> Result<T, crate::engine::EngineError> + Send + 'static,
    ) -> Result<T, ClusterError> {
        let e = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = e.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut g)
        })
        .await
        .map_err(|e| ClusterError::Invalid(format!("engine task panicked: {e}")))?
        .map_err(ClusterError::from)
    }

    async fn local(&self) -> Result<Local, ClusterError> {
        let (node, vtep) = (self.cfg.node.clone(), self.cfg.advertise);
        self.engine(move |e| {
            let networks: BTreeMap<String, Network> = e
                .networks()
                .filter(|n| n.is_overlay())
                .map(|n| (n.name.clone(), n.clone()))
                .collect();
            let mut endpoints = Vec::new();
            for s in e.sandboxes() {
                for ep in s.endpoints.iter().filter(|ep| networks.contains_key(&ep.network)) {
                    let Some(ip) = ep.ipv4 else { continue };
                    let mut names = vec![s.name.clone()];
                    names.extend(ep.aliases.iter().cloned());
                    endpoints.push(EndpointRecord {
                        network: ep.network.clone(),
                        node: node.clone(),
                        sandbox: s.name.clone(),
                        ip: ip.ip(),
                        mac: ep.mac.clone(),
                        vtep,
                        names,
                        labels: s.labels.clone(),
                        lb: false,
                    });
                }
            }
            Ok(Local { networks, endpoints })
        })
        .await
    }

    /// One pass; see the module doc.
    pub async fn pass(&self) -> Result<(), ClusterError> {
        let mut st = self.state.lock().await;
        self.see_nodes(&mut st).await?;
        let nets = self.store.networks().await?;
        // A service on overlay networks is on every node (its VIP, the routing mesh's
        // published ports): the networks it uses are kept here with or without a local
        // endpoint (`services::networks_needed_by_services`).
        let services = self.store.services().await?;
        self.keep(
            "services",
            super::services::networks_needed_by_services(&services)
                .into_keys()
                .collect(),
        );
        // Encrypted networks: SAs and policies towards every node before any FDB entry
        // of this pass points at it (removals come after the FDB diff, at the end).
        if let Err(e) = self.sync_ipsec(&nets, super::encrypt::Half::Add).await {
            tracing::warn!(error = %e, "cluster: cannot set the IPsec state; encrypted networks stay closed");
        }
        if let Err(e) = self.sync_wireguard(&nets).await {
            tracing::warn!(error = %e, "cluster: cannot set the WireGuard state; its networks stay closed");
        }
        let local = self.local().await?;
        let needed = self.needed(&local);
        for n in nets
            .iter()
            .filter(|n| needed.contains(&n.name) && !local.networks.contains_key(&n.name))
        {
            if let Err(e) = self.materialize(n).await {
                tracing::warn!(network = %n.name, error = %e, "cluster: cannot make overlay network here");
            }
        }
        let in_store: BTreeSet<&str> = nets.iter().map(|n| n.name.as_str()).collect();
        for name in local.networks.keys() {
            let stored = in_store.contains(name.as_str());
            if stored && needed.contains(name) {
                continue;
            }
            if local.endpoints.iter().any(|e| &e.network == name) {
                continue; // Only removable once its sandboxes are gone.
            }
            let n = name.clone();
            self.engine(move |e| e.remove_network(&n)).await?;
            st.applied.remove(name);
            if stored {
                tracing::info!(network = %name, "cluster: overlay network removed here (no local endpoint left)");
                self.release_blocks(name).await?;
            } else {
                tracing::info!(network = %name, "cluster: overlay network removed here (gone from the store)");
            }
        }
        let mut local = self.local().await?;
        // This node's own address on the networks its services send over
        // (`services.rs`), published like an endpoint so the others can answer it.
        match self.hold_lb_addrs(&mut st, &services, &local).await {
            Ok(lbs) => local.endpoints.extend(lbs),
            Err(e) => tracing::warn!(error = %e, "cluster: cannot take load-balancer addresses; retrying"),
        }
        self.publish(&mut st, &local).await?;
        let eps = self.store.endpoints().await?;
        st.ticks = st.ticks.wrapping_add(1);
        if st.ticks % REAPPLY_EVERY == 0 {
            st.applied.clear();
        }
        st.applied.retain(|n, _| local.networks.contains_key(n));
        let remote: Vec<crate::engine::RemoteName> = eps
            .iter()
            .filter(|e| e.node != self.cfg.node && !e.lb && local.networks.contains_key(&e.network))
            .map(|e| crate::engine::RemoteName {
                network: e.network.clone(),
                names: e.names.clone(),
                ip: e.ip.into(),
                sandbox: e.sandbox.clone(),
                labels: e.labels.clone(),
            })
            .collect();
        self.engine(move |e| e.set_remote_names(remote)).await?;
        self.make_services(&services, &local).await;
        for name in local.networks.keys() {
            let want = fdb::wanted(name, &self.cfg.node, &eps);
            let dev = vxlan_name(name);
            let ops = match st.applied.get(name) {
                Some(have) => fdb::diff(have, &want),
                // No record of what is there (first pass, periodic re-apply): what the
                // device holds beyond `want` goes, then all of `want` is set.
                None => {
                    let d = dev.clone();
                    let held = tokio::task::spawn_blocking(move || crate::kernel::vxlan::remote_entries(&d))
                        .await
                        .map_err(|e| ClusterError::Invalid(format!("fdb task panicked: {e}")))?;
                    let mut ops = match held {
                        Ok((f, n)) => fdb::stale(&f, &n, &want),
                        Err(e) => {
                            tracing::warn!(device = %dev, error = %e, "cluster: cannot read remote entries; not sweeping");
                            Vec::new()
                        }
                    };
                    if !ops.is_empty() {
                        tracing::info!(network = %name, device = %dev, entries = ops.len(), "cluster: stale remote entries removed");
                    }
                    ops.extend(fdb::diff(&BTreeSet::new(), &want));
                    ops
                }
            };
            if ops.is_empty() {
                st.applied.insert(name.clone(), want);
                continue;
            }
            let res = tokio::task::spawn_blocking(move || crate::kernel::vxlan::apply_remote(&dev, &ops))
                .await
                .map_err(|e| ClusterError::Invalid(format!("fdb task panicked: {e}")))?;
            match res {
                Ok(()) => {
                    tracing::debug!(network = %name, remote = want.len(), "cluster: remote entries updated");
                    st.applied.insert(name.clone(), want);
                }
                Err(e) => {
                    // Applied in part: forget it all, so the next pass writes it again.
                    st.applied.remove(name);
                    tracing::warn!(network = %name, error = %e, "cluster: cannot update remote entries");
                }
            }
        }
        // IPsec removals (a peer that left, a key that left the ring) after its FDB
        // entries went; acknowledgement and promotion of the ring.
        if let Err(e) = self.sync_ipsec(&nets, super::encrypt::Half::All).await {
            tracing::warn!(error = %e, "cluster: cannot update the IPsec state");
        }
        Ok(())
    }

    /// Lists the nodes and emits an event for each that joined or left since the last
    /// pass (the first pass: every node there is, this one included, joined).
    async fn see_nodes(&self, st: &mut State) -> Result<(), ClusterError> {
        let now: BTreeMap<String, NodeRecord> = self
            .store
            .nodes()
            .await?
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        let first = st.nodes.is_none();
        let events = node_events(st.nodes.as_ref(), &now);
        st.nodes = Some(now);
        if events.is_empty() {
            return Ok(());
        }
        // A node gone (or gone while this one was away: the first pass looks at all)
        // gives back its load-balancer addresses in the services' blocks.
        if first || events.iter().any(|e| e.action == "leave") {
            let alive: BTreeSet<String> = st.nodes.iter().flat_map(|m| m.keys().cloned()).collect();
            if let Err(e) = self.release_gone_lb_addrs(&alive).await {
                tracing::warn!(error = %e, "cluster: cannot give back the load-balancer addresses of nodes that left; the next start tries again");
            }
        }
        for e in &events {
            tracing::info!(node = %e.name, action = %e.action, "cluster: node {}", e.action);
        }
        self.engine(move |e| {
            if let Some(o) = e.observer() {
                events.into_iter().for_each(|ev| o.emit(ev));
            }
            Ok(())
        })
        .await
    }

    /// Deletes the `lb:<node>` addresses of nodes not in `alive`, each only while that
    /// node is still not registered (`ClusterStore::release_addr_of_gone`).
    async fn release_gone_lb_addrs(&self, alive: &BTreeSet<String>) -> Result<(), ClusterError> {
        for n in self.store.networks().await? {
            for a in self.store.addrs(&n.name).await? {
                let Some(node) = a.owner.strip_prefix("lb:") else {
                    continue;
                };
                if alive.contains(node) {
                    continue;
                }
                if self.store.release_addr_of_gone(&a, node).await? {
                    tracing::info!(network = %n.name, addr = %a.ip, node, "cluster: load-balancer address of a node that left given back");
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, st: &mut State, local: &Local) -> Result<(), ClusterError> {
        let epoch = self.store.lease_epoch();
        if epoch != st.epoch {
            // A new lease: what was published under the old one is gone.
            st.published.clear();
            st.epoch = epoch;
        }
        let want: BTreeMap<String, &EndpointRecord> = local
            .endpoints
            .iter()
            .map(|e| (super::keys::endpoint(&e.network, &e.node, &e.sandbox), e))
            .collect();
        for (k, rec) in &want {
            if st.published.get(k) != Some(*rec) {
                self.store.put_endpoint(rec).await?;
                st.published.insert(k.clone(), (*rec).clone());
            }
        }
        let gone: Vec<String> = st
            .published
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(rec) = st.published.get(&k) {
                self.store.delete_endpoint(rec).await?;
            }
            st.published.remove(&k);
        }
        Ok(())
    }

    /// Claims a block of `n`'s subnet for this node (or finds the one it holds), then
    /// makes the network here with the block as its pool's range.
    async fn materialize(&self, n: &NetworkRecord) -> Result<(), ClusterError> {
        match n.encrypted {
            // SAs, policies and the fail-closed rules before the VXLAN device exists.
            Some(super::ipsec::Encryption::Ipsec) => {
                let nets = self.store.networks().await?;
                self.sync_ipsec(&nets, super::encrypt::Half::Add).await?;
            }
            // The link, its peers and the rules before the VXLAN device exists.
            Some(super::ipsec::Encryption::Wireguard) => {
                let nets = self.store.networks().await?;
                self.sync_wireguard(&nets).await?;
            }
            None => {}
        }
        let block = self.claim_block(n).await?;
        let mut req = NetworkRequest {
            name: n.name.clone(),
            driver: Some(DRIVER_OVERLAY.into()),
            subnets: vec![SubnetRequest {
                subnet: Some(n.subnet.to_string()),
                gateway: Some(n.gateway.to_string()),
                ip_range: Some(block.to_string()),
            }],
            internal: n.internal,
            mtu: Some(self.mtu_of(n)),
            ..Default::default()
        };
        OverlayLink {
            vni: n.vni,
            local: self.cfg.advertise,
            port: self.cfg.data_port,
        }
        .to_options(&mut req.options);
        self.engine(move |e| e.create_network(&req)).await?;
        tracing::info!(network = %n.name, vni = n.vni, %block, mtu = self.mtu_of(n), encrypted = ?n.encrypted, "cluster: overlay network made here");
        // The remote entries now, not at the next pass: the sandbox this is made for ARPs
        // its peers at once, and an ARP the VXLAN device's proxy cannot answer yet is
        // retried only a second later (50 hosts: 1.4-2.4 s to the first create's peers).
        // The next pass sets them again from scratch (`applied` has nothing for it).
        let eps = self.store.endpoints().await?;
        let ops = fdb::diff(&BTreeSet::new(), &fdb::wanted(&n.name, &self.cfg.node, &eps));
        if !ops.is_empty() {
            let dev = vxlan_name(&n.name);
            let res =
                tokio::task::spawn_blocking(move || crate::kernel::vxlan::apply_remote(&dev, &ops)).await;
            if !matches!(res, Ok(Ok(()))) {
                tracing::warn!(network = %n.name, "cluster: cannot set the remote entries yet; the next pass does");
            }
        }
        Ok(())
    }

    /// A block of `n` for this node: one it holds already (a restart, or a network made
    /// again here), else the first free one, claimed.
    async fn claim_block(&self, n: &NetworkRecord) -> Result<Ipv4Network, ClusterError> {
        self.claim_block_for(n, &self.cfg.node).await
    }

    /// A block `node` holds on `n`, claimed now if it holds none (`node` is this node,
    /// or the services' pseudo-node, `services.rs`).
    pub(super) async fn claim_block_for(
        &self,
        n: &NetworkRecord,
        node: &str,
    ) -> Result<Ipv4Network, ClusterError> {
        let prefix = blocks::block_prefix(n.subnet, n.block_prefix);
        // Each lost race means another node took a block: bounded by the block count.
        for _ in 0..blocks::blocks_of(n.subnet, prefix).count() + 1 {
            let claims = self.store.blocks(&n.name).await?;
            if let Some(mine) = blocks::held_by(node, &claims) {
                return Ok(mine.block);
            }
            let Some(b) = blocks::next_free(n.subnet, prefix, &claims) else {
                break;
            };
            if self.claim_as(n, b, node).await? {
                return Ok(b);
            }
        }
        Err(ClusterError::Conflict(format!(
            "overlay network {}: every address block of {} is claimed by other nodes",
            n.name, n.subnet
        )))
    }

    /// One compare-and-set on block `b`'s key, for this node.
    async fn claim(&self, n: &NetworkRecord, b: Ipv4Network) -> Result<bool, ClusterError> {
        self.claim_as(n, b, &self.cfg.node).await
    }

    /// One compare-and-set on block `b`'s key, for `node`.
    async fn claim_as(&self, n: &NetworkRecord, b: Ipv4Network, node: &str) -> Result<bool, ClusterError> {
        let rec = BlockRecord {
            network: n.name.clone(),
            block: b,
            node: node.to_string(),
        };
        let won = self.store.claim_block(&rec).await?;
        if won {
            tracing::info!(network = %n.name, block = %b, %node, "cluster: block claimed");
        }
        Ok(won)
    }

    /// Before an attach asks `want` dynamic addresses of overlay network `name` (held
    /// here): when the pool's block has fewer free, moves the pool to another block this
    /// node holds that has room, or claims the next free block (`blocks::next_block`).
    /// Callers serialise attaches (`attach_lock`) so two cannot count the same room.
    pub async fn make_room(&self, name: &str, want: usize) -> Result<(), ClusterError> {
        if want == 0 {
            return Ok(());
        }
        let _st = self.state.lock().await;
        let key = crate::engine::pool_key(name, false);
        let pool = self
            .engine(move |e| Ok(e.pools().find(|(k, _)| **k == key).map(|(_, p)| p.clone())))
            .await?;
        let Some(pool) = pool else { return Ok(()) };
        if pool.free_count() >= want as u128 {
            return Ok(()); // No store call while the block has room.
        }
        let nets = self.store.networks().await?;
        let Some(n) = nets.iter().find(|n| n.name == name) else {
            return Ok(());
        };
        let prefix = blocks::block_prefix(n.subnet, n.block_prefix);
        for _ in 0..blocks::blocks_of(n.subnet, prefix).count() + 1 {
            let claims = self.store.blocks(name).await?;
            let to = match blocks::next_block(&pool, want, &self.cfg.node, prefix, &claims) {
                blocks::NextBlock::Room => return Ok(()),
                blocks::NextBlock::Switch(b) => b,
                blocks::NextBlock::Claim(b) => {
                    if !self.claim(n, b).await? {
                        continue; // Another node took it: look again.
                    }
                    b
                }
                blocks::NextBlock::Full => {
                    return Err(ClusterError::Conflict(format!(
                        "overlay network {name}: no free address in this node's blocks and every block of {} is claimed",
                        n.subnet
                    )))
                }
            };
            let net = name.to_string();
            self.engine(move |e| e.set_pool_range(&net, to.into())).await?;
            tracing::info!(network = %name, block = %to, "cluster: pool moved to block");
            return Ok(());
        }
        Ok(())
    }

    /// `netctl network create -d overlay`: checks, picks a subnet and a VNI, stores it.
    pub async fn create_network(&self, req: &OverlayRequest) -> Result<NetworkRecord, ClusterError> {
        crate::model::validate_name(&req.name).map_err(|e| ClusterError::Invalid(format!("network {e}")))?;
        let nets = self.store.networks().await?;
        if nets.iter().any(|n| n.name == req.name) {
            return Err(ClusterError::Conflict(format!(
                "network {} already exists",
                req.name
            )));
        }
        let local_clash = {
            let name = req.name.clone();
            self.engine(move |e| Ok(e.networks().any(|n| n.name == name)))
                .await?
        };
        if local_clash {
            return Err(ClusterError::Conflict(format!(
                "network {} already exists on this node (a local network)",
                req.name
            )));
        }
        let subnet = match &req.subnet {
            Some(s) => parse_subnet(s)?,
            None => default_subnet(&nets)?,
        };
        if let Some(o) = nets.iter().find(|n| overlaps(n.subnet, subnet)) {
            return Err(ClusterError::Conflict(format!(
                "subnet {subnet} overlaps {} of overlay network {}",
                o.subnet, o.name
            )));
        }
        let gateway = match &req.gateway {
            Some(g) => {
                let g: Ipv4Addr = g.parse().map_err(|_| {
                    ClusterError::Invalid(format!("invalid gateway {g:?}: expected an IPv4 address"))
                })?;
                if !subnet.contains(g) || g == subnet.network() || g == subnet.broadcast() {
                    return Err(ClusterError::Invalid(format!(
                        "gateway {g} is not a host address of {subnet}"
                    )));
                }
                g
            }
            None => Ipv4Addr::from(u32::from(subnet.network()) + 1),
        };
        if let Some(p) = req.block_prefix {
            if p < subnet.prefix() || p > 30 {
                return Err(ClusterError::Invalid(format!(
                    "block_prefix {p}: expected {} to 30 for subnet {subnet}",
                    subnet.prefix()
                )));
            }
        }
        let encrypted = match &req.encrypted {
            Some(v) => Some(super::ipsec::Encryption::parse(v).map_err(ClusterError::Invalid)?),
            None => None,
        };
        if encrypted == Some(super::ipsec::Encryption::Ipsec) {
            // Refused here, before anything is stored, when this node cannot do ESP.
            let probe = tokio::task::spawn_blocking(crate::kernel::xfrm::probe_esp)
                .await
                .map_err(|e| ClusterError::Invalid(format!("xfrm task panicked: {e}")))?;
            if let Err(e) = probe {
                return Err(ClusterError::Invalid(format!(
                    "-o encrypted needs IPsec ESP with {} in the kernel, and this node's cannot ({e})",
                    crate::kernel::xfrm::AEAD_ALG
                )));
            }
        }
        let taken: BTreeSet<u32> = nets.iter().map(|n| n.vni).collect();
        for _ in 0..16 {
            // Derived from the name, so two nodes racing on different names rarely collide.
            let mut vni = (crate::model::fnv1a(req.name.as_bytes()) % 0xff_fff0) as u32 + 16;
            while taken.contains(&vni) {
                vni += 1;
            }
            let rec = NetworkRecord {
                name: req.name.clone(),
                subnet,
                gateway,
                vni,
                internal: req.internal,
                created_by: self.cfg.node.clone(),
                created: now(),
                block_prefix: req.block_prefix,
                encrypted,
            };
            if self.store.create_network(&rec).await? {
                tracing::info!(network = %rec.name, %subnet, vni, "cluster: overlay network created");
                return Ok(rec);
            }
            if self.store.networks().await?.iter().any(|n| n.name == req.name) {
                return Err(ClusterError::Conflict(format!(
                    "network {} already exists",
                    req.name
                )));
            }
        }
        Err(ClusterError::Conflict("no free VNI found".into()))
    }

    /// `netctl network rm` of an overlay network: refused while any node has an endpoint.
    pub async fn delete_network(&self, name: &str) -> Result<(), ClusterError> {
        let nets = self.store.networks().await?;
        let rec = nets
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| ClusterError::NotFound(format!("no overlay network {name}")))?;
        let users = super::services::networks_needed_by_services(&self.store.services().await?);
        if let Some(svcs) = users.get(name) {
            return Err(ClusterError::Conflict(format!(
                "network {name} has services ({}); remove them first",
                svcs.join(", ")
            )));
        }
        if !self.store.delete_network(rec).await? {
            let eps = self.store.endpoints().await?;
            let users: Vec<String> = eps
                .iter()
                .filter(|e| e.network == name)
                .map(|e| format!("{}@{}", e.sandbox, e.node))
                .collect();
            return Err(ClusterError::Conflict(format!(
                "network {name} has active endpoints ({}); remove them first",
                users.join(", ")
            )));
        }
        Ok(())
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClusterError> {
        let nodes = self.store.nodes().await?;
        let eps = self.store.endpoints().await?;
        Ok(nodes
            .into_iter()
            .map(|n| NodeView {
                // A node's load-balancer addresses are not endpoints.
                endpoints: eps.iter().filter(|e| e.node == n.name && !e.lb).count(),
                networks: eps
                    .iter()
                    .filter(|e| e.node == n.name && !e.lb)
                    .map(|e| e.network.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                local: n.name == self.cfg.node,
                name: n.name,
                addr: n.addr,
                data_port: n.data_port,
                state: "ready".into(),
            })
            .collect())
    }
}

/// Connects to the store, checks `--advertise-addr` is this node's, registers the node
/// and starts the agent: the agent (whose routes `api::wrap` adds) and the store (to
/// `leave` at the end).
pub async fn start(
    cfg: &ClusterConfig,
    engine: Shared,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(
    Arc<Agent<crate::store::etcd::EtcdStore>>,
    Arc<crate::store::etcd::EtcdStore>,
)> {
    use anyhow::Context;
    let addr = cfg.advertise;
    let underlay_mtu = tokio::task::spawn_blocking(move || crate::kernel::vxlan::mtu_of_addr(addr))
        .await?
        .with_context(|| format!("--advertise-addr {addr}: not an address of this host"))?;
    let store = Arc::new(
        crate::store::etcd::EtcdStore::connect(&cfg.endpoints, cfg.tls.as_ref())
            .await
            .with_context(|| format!("cluster store {}", cfg.endpoints.join(",")))?,
    );
    let rec = super::NodeRecord {
        name: cfg.node.clone(),
        addr: cfg.advertise,
        data_port: cfg.data_port,
        started: now(),
    };
    store.register_node(&rec).await.context("register node")?;
    let agent = Arc::new(Agent::new(Arc::clone(&store), engine, cfg.clone(), underlay_mtu));
    if let Err(e) = agent.pass().await {
        tracing::warn!(error = %e, "cluster: first pass failed; retrying");
    }
    tokio::spawn(Arc::clone(&agent).follow_wireguard(shutdown.clone()));
    tokio::spawn(Arc::clone(&agent).run(shutdown));
    tracing::info!(node = %cfg.node, addr = %cfg.advertise, mtu = agent.mtu, "cluster: node registered");
    Ok((agent, store))
}

/// `node join NAME (addr=…, data_port=…)` for a node `now` has that `before` lacked,
/// `node leave NAME` for one it lost (its lease expired or it left); a node that came
/// back with another start time left and joined again (its old endpoints went with its
/// old lease). Sorted by name, leaves first.
fn node_events(
    before: Option<&BTreeMap<String, NodeRecord>>,
    now: &BTreeMap<String, NodeRecord>,
) -> Vec<Event> {
    let empty = BTreeMap::new();
    let before = before.unwrap_or(&empty);
    let join = |n: &NodeRecord| {
        Event::new(Kind::Node, "join", &n.name)
            .attr("addr", n.addr)
            .attr("data_port", n.data_port)
    };
    let leave = |n: &NodeRecord| Event::new(Kind::Node, "leave", &n.name).attr("addr", n.addr);
    let mut out = Vec::new();
    for (name, was) in before {
        match now.get(name) {
            Some(is) if is == was => {}
            _ => out.push(leave(was)),
        }
    }
    for (name, is) in now {
        if before.get(name) != Some(is) {
            out.push(join(is));
        }
    }
    out
}

pub(super) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_subnet(s: &str) -> Result<Ipv4Network, ClusterError> {
    match crate::model::parse_cidr("subnet", s).map_err(ClusterError::Invalid)? {
        IpNetwork::V4(n) if n.prefix() <= 30 => Ok(n),
        IpNetwork::V4(n) => Err(ClusterError::Invalid(format!(
            "subnet {n} is too small for an overlay network"
        ))),
        IpNetwork::V6(n) => Err(ClusterError::Invalid(format!(
            "subnet {n}: overlay networks are IPv4 only for now"
        ))),
    }
}

fn overlaps(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// The first /24 of `DEFAULT_POOL` no overlay network overlaps.
fn default_subnet(nets: &[NetworkRecord]) -> Result<Ipv4Network, ClusterError> {
    let pool: Ipv4Network = DEFAULT_POOL
        .parse()
        .map_err(|_| ClusterError::Invalid("bad default pool".into()))?;
    let base = u32::from(pool.network());
    (0..256u32)
        .filter_map(|i| Ipv4Network::new(Ipv4Addr::from(base + (i << 8)), 24).ok())
        .find(|c| !nets.iter().any(|n| overlaps(n.subnet, *c)))
        .ok_or_else(|| ClusterError::Conflict(format!("no free /24 left in {DEFAULT_POOL}; give --subnet")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, started: u64) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            addr: "192.168.60.2".parse().unwrap(),
            data_port: 4789,
            started,
        }
    }

    fn said(ev: &[Event]) -> Vec<String> {
        ev.iter().map(|e| format!("{} {}", e.action, e.name)).collect()
    }

    #[test]
    fn nodes_that_come_and_go_are_events() {
        let map = |ns: &[NodeRecord]| -> BTreeMap<String, NodeRecord> {
            ns.iter().map(|n| (n.name.clone(), n.clone())).collect()
        };
        let first = map(&[node("h1", 1), node("h2", 1)]);
        let ev = node_events(None, &first);
        assert_eq!(said(&ev), ["join h1", "join h2"]);
        assert_eq!(ev[0].kind, Kind::Node);
        assert_eq!(ev[0].attributes["addr"], "192.168.60.2");
        assert_eq!(ev[0].attributes["data_port"], "4789");
        assert!(node_events(Some(&first), &first).is_empty(), "nothing changed");
        let later = map(&[node("h1", 1), node("h3", 1)]);
        assert_eq!(said(&node_events(Some(&first), &later)), ["leave h2", "join h3"]);
        let restarted = map(&[node("h1", 2), node("h3", 1)]);
        assert_eq!(
            said(&node_events(Some(&later), &restarted)),
            ["leave h1", "join h1"]
        );
        assert_eq!(
            said(&node_events(Some(&later), &BTreeMap::new())),
            ["leave h1", "leave h3"]
        );
    }

    #[test]
    fn a_node_needs_networks_with_local_endpoints_or_kept_for_a_reason() {
        let ep = |net: &str| EndpointRecord {
            network: net.into(),
            node: "h1".into(),
            sandbox: "s".into(),
            ip: "10.0.0.2".parse().unwrap(),
            mac: "02:00:00:00:00:01".into(),
            vtep: "192.168.60.2".parse().unwrap(),
            names: vec!["s".into()],
            labels: BTreeMap::new(),
            lb: false,
        };
        let none = BTreeMap::new();
        assert!(needed_networks(&[], &none, &BTreeMap::new()).is_empty());
        let kept = BTreeMap::from([("routing-mesh".to_string(), BTreeSet::from(["web".to_string()]))]);
        let pending = BTreeMap::from([("db".to_string(), 1)]);
        let got = needed_networks(&[ep("red"), ep("red")], &kept, &pending);
        assert_eq!(got, BTreeSet::from(["db".into(), "red".into(), "web".into()]));
    }

    #[test]
    fn default_subnets_skip_taken_ones() {
        let rec = |s: &str| NetworkRecord {
            name: s.into(),
            subnet: s.parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            vni: 1,
            internal: false,
            created_by: "h1".into(),
            created: 0,
            block_prefix: None,
            encrypted: None,
        };
        assert_eq!(default_subnet(&[]).unwrap().to_string(), "10.112.0.0/24");
        let taken = [rec("10.112.0.0/23"), rec("10.112.3.0/24")];
        assert_eq!(default_subnet(&taken).unwrap().to_string(), "10.112.2.0/24");
        assert!(parse_subnet("fd00::/64").is_err());
        assert!(parse_subnet("10.0.0.0/31").is_err());
        assert!(parse_subnet("10.0.0.1/24").is_err(), "host bits set");
    }
}
