//! What the engine knows of other nodes: their endpoints on overlay networks, which the
//! cluster agent hands over (`set_remote_names`) so the embedded DNS answers their names
//! on every node, as it does local sandboxes' (network-scoped: a sandbox sees the names
//! of the networks it is on), and services on overlay networks balance over them too
//! (`remote_backends`). The agent also gives the node's own address on each overlay
//! network (`set_overlay_lb`): services SNAT to it what they send to another node.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{pool_key, Engine, EngineError, Result, Undo};
use crate::dns::records::{Rec, Table};
use crate::firewall::OverlaySnat;
use crate::model::{Backend, ClusterIp, ServiceKind};
use crate::plan::Step;
use crate::store::Txn;

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
        self.lb_hints();
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

impl Engine {
    /// Points dynamic allocation on overlay network `network` at `range`, an address
    /// block the node holds (the cluster agent moves it when a block fills,
    /// `cluster::blocks::next_block`). Leases outside `range` stay.
    pub fn set_pool_range(&mut self, network: &str, range: IpNetwork) -> Result<()> {
        let net = self.network(network)?;
        if !net.is_overlay() {
            return Err(EngineError::Invalid(format!(
                "network {network} is not an overlay network"
            )));
        }
        let key = pool_key(network, false);
        let Some(pool) = self.pools.get(&key) else {
            return Err(EngineError::Invalid(format!(
                "network {network} has no IPv4 pool"
            )));
        };
        if !pool.subnet.contains(range.network()) || range.prefix() < pool.subnet.prefix() {
            return Err(EngineError::Invalid(format!(
                "range {range} is not inside {} of network {network}",
                pool.subnet
            )));
        }
        let mut undo = Undo::default();
        self.remember(&mut undo, &[], &[], std::slice::from_ref(&key));
        if let Some(p) = self.pools.get_mut(&key) {
            p.ip_range = Some(range);
        }
        let mut txn = Txn::new();
        self.put_pools(&mut txn, &[network]);
        self.commit(undo, &[], &txn, &[])?;
        tracing::info!(network, %range, "pool range moved");
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::open_with;
    use crate::kernel::fake::FakeKernel;
    use crate::model::{NetworkRequest, OverlayLink, SandboxRequest, SubnetRequest, DRIVER_OVERLAY};

    /// A /28 block fills; moved to the next block, allocation goes on there and the first
    /// block's leases stay. Moving a bridge network's pool, or outside the subnet, is
    /// refused and changes nothing.
    #[test]
    fn a_full_block_moves_the_pool_and_keeps_its_leases() {
        let mut t = open_with(
            Arc::new(FakeKernel::default()),
            std::env::temp_dir().join(format!("netd-ov-test-{}", std::process::id())),
            std::env::temp_dir().join(format!(
                "netd-ov-test-etc-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            )),
        );
        let mut req = NetworkRequest {
            name: "ov".into(),
            driver: Some(DRIVER_OVERLAY.into()),
            subnets: vec![SubnetRequest {
                subnet: Some("10.20.0.0/26".into()),
                gateway: Some("10.20.0.1".into()),
                ip_range: Some("10.20.0.0/28".into()),
            }],
            mtu: Some(1450),
            ..Default::default()
        };
        OverlayLink {
            vni: 7,
            local: "10.9.0.1".parse().unwrap(),
            port: 4789,
        }
        .to_options(&mut req.options);
        t.e.create_network(&req).unwrap();
        for i in 0..14 {
            t.e.create_sandbox(&SandboxRequest::on(&format!("s{i}"), &["ov"]))
                .unwrap();
        }
        let full =
            t.e.create_sandbox(&SandboxRequest::on("s14", &["ov"]))
                .unwrap_err();
        assert!(full.to_string().contains("no free address"), "{full}");
        let pools = |t: &super::super::tests::T| {
            t.e.pools()
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect::<Vec<_>>()
        };
        let before = pools(&t);
        assert!(t.e.set_pool_range("ov", "10.21.0.0/28".parse().unwrap()).is_err());
        t.e.create_network(&NetworkRequest {
            name: "br".into(),
            ..Default::default()
        })
        .unwrap();
        let before_br = pools(&t);
        assert!(t
            .e
            .set_pool_range("br", "10.20.0.16/28".parse().unwrap())
            .is_err());
        assert_eq!(pools(&t), before_br);
        assert!(before_br.len() > before.len());
        t.e.set_pool_range("ov", "10.20.0.16/28".parse().unwrap())
            .unwrap();
        let sb = t.e.create_sandbox(&SandboxRequest::on("s14", &["ov"])).unwrap();
        let ip = sb.endpoints[0].ipv4.unwrap().ip();
        let block: ipnetwork::Ipv4Network = "10.20.0.16/28".parse().unwrap();
        assert!(block.contains(ip), "{ip}");
        let p = t.e.pools().find(|(k, _)| *k == "ov/4").unwrap().1;
        assert_eq!(p.leases.len(), 15, "the first block's leases stay");
    }
}
