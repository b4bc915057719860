//! What the engine knows of other nodes: their endpoints on overlay networks, which the
//! cluster agent hands over (`set_remote_names`) so the embedded DNS answers their names
//! on every node, as it does local sandboxes' (network-scoped: a sandbox sees the names
//! of the networks it is on), and services on overlay networks balance over them too
//! (`remote_backends`). The agent also gives the node's own address on each overlay
//! network (`set_overlay_lb`): services SNAT to it what they send to another node.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{Engine, EngineError, Result};
use crate::dns::records::{Rec, Table};
use crate::firewall::OverlaySnat;
use crate::model::{Backend, ClusterIp, ServiceKind};
use crate::plan::Step;

/// A remote endpoint's names (sandbox name, then aliases) and address on `network`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteName {
    pub network: String,
    pub names: Vec<String>,
    pub ip: IpAddr,
    /// The sandbox's name and labels, which services select backends by.
    pub sandbox: String,
    pub labels: BTreeMap<String, String>,
}

/// The label the cluster agent puts on the services it makes from the store (value: the
/// record's id). A service on an overlay network without it is refused: made on one
/// node only, it would balance there only.
pub const CLUSTER_SERVICE_LABEL: &str = "netd.cluster.service";

impl Engine {
    /// Replaces the remote endpoints; the DNS serves the new set, and services on overlay
    /// networks balance over it, before this returns. Nothing happens when the set is
    /// unchanged (the agent calls it each pass).
    pub fn set_remote_names(&mut self, mut names: Vec<RemoteName>) -> Result<()> {
        names.sort();
        if names == self.remote_names {
            return Ok(());
        }
        self.remote_names = names;
        self.sync_dns();
        self.sync_services()
    }

    /// The remote endpoints that serve `c` (same rule as `select_backends`: the
    /// selector's labels or the sandbox's name, on the service's networks).
    pub(super) fn remote_backends(&self, c: &ClusterIp) -> Vec<Backend> {
        if c.kubernetes.is_some() {
            return Vec::new();
        }
        self.remote_names
            .iter()
            .filter(|r| c.networks.contains(&r.network))
            .filter(|r| {
                let by_labels =
                    !c.selector.is_empty() && c.selector.iter().all(|(k, v)| r.labels.get(k) == Some(v));
                by_labels || c.backends.contains(&r.sandbox)
            })
            .map(|r| Backend {
                network: r.network.clone(),
                sandbox: r.sandbox.clone(),
                ip: r.ip,
            })
            .collect()
    }

    /// Brings the service datapath to the model (backends that came or went elsewhere).
    fn sync_services(&mut self) -> Result<()> {
        let want = self.desired_services();
        if want == self.svc_fw {
            return Ok(());
        }
        self.lb
            .sync_diff(&self.svc_fw, &want)
            .map_err(EngineError::kernel(format!(
                "service datapath ({})",
                self.lb.kind()
            )))?;
        self.svc_fw = want;
        Ok(())
    }

    /// Sets this node's own address on overlay networks (network -> address and the
    /// node's block): the bridge holds it and the firewall SNATs to it what services
    /// send to other nodes' backends. Idempotent.
    pub fn set_overlay_lb(&mut self, lb: BTreeMap<String, OverlaySnat>) -> Result<()> {
        let lb: BTreeMap<String, OverlaySnat> = lb
            .into_iter()
            .filter(|(n, _)| self.networks.get(n).is_some_and(|n| n.is_overlay()))
            .collect();
        if lb == self.overlay_lb {
            return Ok(());
        }
        let changed: Vec<String> = self
            .overlay_lb
            .keys()
            .chain(lb.keys())
            .filter(|n| self.overlay_lb.get(*n) != lb.get(*n))
            .cloned()
            .collect();
        self.overlay_lb = lb;
        for b in self.bridge_specs(&changed) {
            self.kernel
                .apply(&Step::EnsureBridge(b.clone()))
                .map_err(|e| EngineError::Kernel {
                    op: format!("load-balancer address on bridge {}", b.name),
                    source: e,
                })?;
        }
        let want = self.desired_fw();
        let batch = crate::firewall::delta(&self.fw, &want);
        if !batch.is_empty() {
            self.kernel
                .nft(&batch)
                .map_err(EngineError::kernel("apply firewall rules"))?;
        }
        self.fw = want;
        for n in &changed {
            match self.overlay_lb.get(n) {
                Some(s) => {
                    tracing::info!(network = %n, addr = %s.addr, "overlay: load-balancer address held")
                }
                None => tracing::info!(network = %n, "overlay: load-balancer address dropped"),
            }
        }
        Ok(())
    }

    /// This node's load-balancer address on `network`, as a bridge address.
    pub(super) fn overlay_lb_addr(&self, network: &str) -> Option<IpNetwork> {
        self.overlay_lb
            .get(network)
            .map(|s| IpNetwork::from(IpAddr::from(s.addr)))
    }

    /// Whether `svc` was made by the cluster agent.
    pub(super) fn is_cluster_service(labels: &BTreeMap<String, String>) -> bool {
        labels.contains_key(CLUSTER_SERVICE_LABEL)
    }

    /// The cluster-made services, by key, with their record id.
    pub fn cluster_services(&self) -> BTreeMap<String, String> {
        self.services
            .iter()
            .filter(|(_, s)| matches!(s.kind, ServiceKind::ClusterIp(_)))
            .filter_map(|(k, s)| Some((k.clone(), s.labels.get(CLUSTER_SERVICE_LABEL)?.clone())))
            .collect()
    }
}

pub(super) fn add_remote_names(table: &mut Table, remote: &[RemoteName]) {
    for r in remote {
        for n in &r.names {
            table.insert(&r.network, n, Rec::Addr(r.ip));
        }
        if let Some(first) = r.names.first() {
            table.insert_ptr(&r.network, r.ip, first);
        }
    }
}
