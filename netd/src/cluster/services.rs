//! Services on overlay networks: cluster objects. `netctl service create --network OV`
//! on any node stores the service under `services/<namespace>/<name>` with its VIPs
//! taken cluster-wide (`addrs/<net>/<ip>`, in one transaction with the record); every
//! node's agent then makes it locally from the store (`make_services`, as an engine
//! service labelled `CLUSTER_SERVICE_LABEL`), and the engine balances it over the
//! matching endpoints of every node (its own sandboxes and the other nodes' endpoint
//! records, same selector and names as on one host).
//!
//! VIPs and the nodes' load-balancer addresses come from one block of the subnet that
//! no node gets (claimed for `SERVICES_BLOCK_OWNER`), so they never clash with a
//! sandbox's address. A node that has a service on a network holds a load-balancer
//! address there (`hold_lb_addrs`): the bridge carries it, it is published like an
//! endpoint (so the other nodes answer ARP for it and send its frames to this VTEP),
//! and what the node DNATs to a backend on another node is SNATed to it
//! (`firewall::OverlaySnat`), so the reply comes back through the node that DNATed.
//! With `-p` in ingress mode every node opens the port: the routing mesh.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};

use super::agent::{now, Agent, Local, State};
use super::{AddrRecord, ClusterError, ClusterStore, EndpointRecord, NetworkRecord, ServiceRecord};
use crate::engine::CLUSTER_SERVICE_LABEL;
use crate::firewall::OverlaySnat;
use crate::model::{service_key, EndpointMode, ServiceKind, ServiceRequest};

/// The block owner of service VIPs and load-balancer addresses (not a valid node name).
pub const SERVICES_BLOCK_OWNER: &str = "_services";

/// The overlay networks this node needs because of services, each with the services
/// that need it ("this node needs overlay network X because of service Y"). Every node
/// makes every service on the cluster's overlay networks, so this is every network of
/// every service: one with a published port (`-p`, ingress mode) opens the port on
/// every node and DNATs to a backend on any node, and one with a VIP is reached from
/// every node's sandboxes. The node needs the network's datapath for it even with no
/// local endpoint on it. (The hook for the rule "a node with no local endpoint on a
/// network holds nothing for it": these networks are needed for another reason.)
pub fn networks_needed_by_services(services: &[ServiceRecord]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in services {
        for n in &s.request.networks {
            out.entry(n.clone())
                .or_default()
                .push(service_key(s.namespace(), &s.request.name));
        }
    }
    out
}

/// The first free address of `block` from the top, outside `taken` and the subnet's
/// network, broadcast and gateway addresses.
pub fn free_in_block(block: Ipv4Network, n: &NetworkRecord, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let reserved = [n.subnet.network(), n.subnet.broadcast(), n.gateway];
    let ips: Vec<Ipv4Addr> = block.iter().collect();
    ips.into_iter()
        .rev()
        .find(|ip| !taken.contains(ip) && !reserved.contains(ip))
}

impl<S: ClusterStore> Agent<S> {
    pub async fn services(&self) -> Result<Vec<ServiceRecord>, ClusterError> {
        self.store.services().await
    }

    /// `netctl service create` on overlay networks: checks, takes the VIPs, stores the
    /// service, and makes it on this node before answering (a refusal here, such as a
    /// host port in use, removes it again: nothing is left).
    pub async fn create_service(&self, req: &ServiceRequest) -> Result<ServiceRecord, ClusterError> {
        let (name, namespace, kind) = req.parse().map_err(ClusterError::Invalid)?;
        let ServiceKind::ClusterIp(c) = &kind else {
            return Err(ClusterError::Invalid(format!(
                "service {name}: an external_name service is not a cluster object"
            )));
        };
        if !req.vips.is_empty() {
            return Err(ClusterError::Invalid(
                "--vip is not supported for services on overlay networks yet".into(),
            ));
        }
        let nets = self.store.networks().await?;
        let mut recs = Vec::new();
        for n in &c.networks {
            let Some(r) = nets.iter().find(|r| r.name == *n) else {
                return Err(ClusterError::Invalid(format!(
                    "network {n} is not an overlay network: a service on overlay networks has only overlay networks"
                )));
            };
            recs.push(r.clone());
        }
        let exists = |all: &[ServiceRecord]| {
            all.iter()
                .any(|s| s.namespace() == namespace && s.request.name == name)
        };
        let conflict =
            || ClusterError::Conflict(format!("service {name} already exists in namespace {namespace}"));
        if exists(&self.store.services().await?) {
            return Err(conflict());
        }
        let id = crate::engine::new_id();
        let mut req = req.clone();
        req.namespace = Some(namespace.clone());
        req.labels.insert(CLUSTER_SERVICE_LABEL.into(), id.clone());
        let owner = format!("svc:{namespace}/{name}");
        // Each lost race means another service took an address: retried with a fresh look.
        for _ in 0..8 {
            let mut addrs = Vec::new();
            if c.endpoint_mode == EndpointMode::Vip {
                for n in &recs {
                    let ip = self.free_addr(n).await?;
                    req.vips.insert(n.name.clone(), ip.to_string());
                    addrs.push(AddrRecord {
                        network: n.name.clone(),
                        ip,
                        owner: owner.clone(),
                    });
                }
            }
            let rec = ServiceRecord {
                id: id.clone(),
                request: req.clone(),
                created_by: self.cfg.node.clone(),
                created: now(),
            };
            if self.store.create_service(&rec, &addrs).await? {
                let r = rec.request.clone();
                if let Err(e) = self.engine(move |e| e.create_service(&r)).await {
                    self.store.delete_service(&rec, &addrs).await?;
                    return Err(e);
                }
                tracing::info!(service = %name, namespace = %namespace, vips = ?rec.request.vips, "cluster: service created");
                return Ok(rec);
            }
            if exists(&self.store.services().await?) {
                return Err(conflict());
            }
        }
        Err(ClusterError::Conflict(format!(
            "service {name}: no free VIP found"
        )))
    }

    /// `netctl service update` of a cluster service: the record gets the new request
    /// and a new id (compare-and-set on the old record), this node follows before it
    /// answers (a refusal here, such as a host port in use, puts the old record back),
    /// and every other node follows at its next pass, in place (`replace_cluster_service`).
    pub async fn update_service(
        &self,
        namespace: &str,
        name: &str,
        up: &crate::engine::ServiceUpdate,
    ) -> Result<ServiceRecord, ClusterError> {
        let old = self
            .store
            .services()
            .await?
            .into_iter()
            .find(|s| s.namespace() == namespace && s.request.name == name)
            .ok_or_else(|| {
                ClusterError::NotFound(format!("no cluster service {name} in namespace {namespace}"))
            })?;
        let mut req = crate::engine::apply_update(old.request.clone(), up)?;
        req.parse().map_err(ClusterError::Invalid)?;
        req.cluster_ip()
            .map_err(|e| ClusterError::Invalid(format!("service {name}: {e}")))?;
        if req == old.request {
            return Ok(old);
        }
        let id = crate::engine::new_id();
        req.labels.insert(CLUSTER_SERVICE_LABEL.into(), id.clone());
        let new = ServiceRecord {
            id,
            request: req,
            ..old.clone()
        };
        if !self.store.replace_service(&old, &new).await? {
            return Err(ClusterError::Conflict(format!(
                "service {name} changed on another node meanwhile; look again and retry"
            )));
        }
        let r = new.request.clone();
        if let Err(e) = self.engine(move |e| e.replace_cluster_service(&r)).await {
            if !self.store.replace_service(&new, &old).await? {
                tracing::warn!(service = %name, "cluster: could not put the service back after a refused update");
            }
            return Err(e);
        }
        tracing::info!(service = %name, namespace, id = %new.id, "cluster: service updated");
        Ok(new)
    }

    /// `netctl service rm` of a cluster service: the record and its VIPs go; every node
    /// removes it at its next pass.
    pub async fn delete_service(&self, namespace: &str, name: &str) -> Result<(), ClusterError> {
        let all = self.store.services().await?;
        let rec = all
            .iter()
            .find(|s| s.namespace() == namespace && s.request.name == name)
            .ok_or_else(|| {
                ClusterError::NotFound(format!("no cluster service {name} in namespace {namespace}"))
            })?;
        let addrs: Vec<AddrRecord> = rec
            .request
            .vips
            .iter()
            .filter_map(|(n, ip)| {
                Some(AddrRecord {
                    network: n.clone(),
                    ip: ip.parse().ok()?,
                    owner: format!("svc:{namespace}/{name}"),
                })
            })
            .collect();
        self.store.delete_service(rec, &addrs).await?;
        tracing::info!(service = %name, namespace, "cluster: service removed");
        Ok(())
    }

    /// An address of `n`'s services block nobody holds (not claimed here).
    async fn free_addr(&self, n: &NetworkRecord) -> Result<Ipv4Addr, ClusterError> {
        let block = self.claim_block_for(n, SERVICES_BLOCK_OWNER).await?;
        let taken: BTreeSet<Ipv4Addr> = self.store.addrs(&n.name).await?.iter().map(|a| a.ip).collect();
        free_in_block(block, n, &taken).ok_or_else(|| {
            ClusterError::Conflict(format!(
                "network {}: the services' address block {block} is full",
                n.name
            ))
        })
    }

    /// This node's load-balancer address on `n` (the one it holds, or a new one).
    async fn lb_addr(&self, n: &NetworkRecord) -> Result<Ipv4Addr, ClusterError> {
        let owner = format!("lb:{}", self.cfg.node);
        for _ in 0..8 {
            if let Some(a) = self.store.addrs(&n.name).await?.iter().find(|a| a.owner == owner) {
                return Ok(a.ip);
            }
            let ip = self.free_addr(n).await?;
            let rec = AddrRecord {
                network: n.name.clone(),
                ip,
                owner: owner.clone(),
            };
            if self.store.claim_addr(&rec).await? {
                return Ok(ip);
            }
        }
        Err(ClusterError::Conflict(format!(
            "network {}: no free load-balancer address",
            n.name
        )))
    }

    /// Takes (once) and hands the engine this node's load-balancer address on every
    /// network a service needs (`networks_needed_by_services`); the endpoint records
    /// that publish them.
    pub(super) async fn hold_lb_addrs(
        &self,
        st: &mut State,
        services: &[ServiceRecord],
        local: &Local,
    ) -> Result<Vec<EndpointRecord>, ClusterError> {
        let needed = networks_needed_by_services(services);
        st.lb.retain(|n, _| needed.contains_key(n));
        let nets = if needed.is_empty() {
            Vec::new()
        } else {
            self.store.networks().await?
        };
        let mut snat = BTreeMap::new();
        let mut out = Vec::new();
        for (net, why) in &needed {
            let (Some(n), Some(rec)) = (local.networks.get(net), nets.iter().find(|r| r.name == *net)) else {
                continue;
            };
            let (Some(link), Some(IpNetwork::V4(block))) =
                (n.overlay(), n.subnets.first().and_then(|s| s.ip_range))
            else {
                continue;
            };
            let addr = match st.lb.get(net) {
                Some(a) => *a,
                None => {
                    let a = self.lb_addr(rec).await?;
                    tracing::info!(network = %net, addr = %a, services = ?why, "cluster: this node needs the overlay network for services; load-balancer address held");
                    st.lb.insert(net.clone(), a);
                    a
                }
            };
            snat.insert(net.clone(), OverlaySnat { local: block, addr });
            out.push(EndpointRecord {
                network: net.clone(),
                node: self.cfg.node.clone(),
                sandbox: format!("lb-{}", self.cfg.node),
                ip: addr,
                mac: crate::driver::overlay::bridge_mac(n, link),
                vtep: self.cfg.advertise,
                names: Vec::new(),
                labels: BTreeMap::new(),
                lb: true,
            });
        }
        self.engine(move |e| e.set_overlay_lb(snat)).await?;
        Ok(out)
    }

    /// Brings the engine's cluster services to the store's: made when missing (or made
    /// again when the record's id changed), removed when gone. A service whose networks
    /// this node lacks waits for them.
    pub(super) async fn make_services(&self, services: &[ServiceRecord], local: &Local) {
        let want: BTreeMap<String, &ServiceRecord> = services
            .iter()
            .filter(|s| s.request.networks.iter().all(|n| local.networks.contains_key(n)))
            .map(|s| (service_key(s.namespace(), &s.request.name), s))
            .collect();
        let have = match self.engine(|e| Ok(e.cluster_services())).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot list services here");
                return;
            }
        };
        for key in have.keys() {
            // Still wanted (same id, or another one: changed below, in place if it can be).
            if want.contains_key(key) {
                continue;
            }
            let Some((ns, name)) = key.split_once('/') else {
                continue;
            };
            let (ns, name) = (ns.to_string(), name.to_string());
            match self.engine(move |e| e.remove_service(&ns, &name)).await {
                Ok(()) => tracing::info!(service = %key, "cluster: service removed here"),
                Err(e) => tracing::warn!(service = %key, error = %e, "cluster: cannot remove service here"),
            }
        }
        for (key, rec) in want {
            match have.get(&key) {
                Some(id) if *id == rec.id => continue,
                Some(_) => {
                    let req = rec.request.clone();
                    match self.engine(move |e| e.replace_cluster_service(&req)).await {
                        Ok(_) => {
                            tracing::info!(service = %key, id = %rec.id, "cluster: service updated here");
                            continue;
                        }
                        Err(e) => {
                            tracing::info!(service = %key, error = %e, "cluster: service made anew here");
                            let (ns, name) = (rec.namespace().to_string(), rec.request.name.clone());
                            if let Err(e) = self.engine(move |e| e.remove_service(&ns, &name)).await {
                                tracing::warn!(service = %key, error = %e, "cluster: cannot remove service here");
                                continue;
                            }
                        }
                    }
                }
                None => {}
            }
            let req = rec.request.clone();
            let res = self.engine(move |e| e.create_service(&req)).await;
            let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            match res {
                Ok(_) => {
                    refused.remove(&key);
                    tracing::info!(service = %key, vips = ?rec.request.vips, "cluster: service made here")
                }
                // Logged once per record; retried at every pass (a port may be freed).
                Err(e) if refused.get(&key) != Some(&rec.id) => {
                    refused.insert(key.clone(), rec.id.clone());
                    tracing::warn!(service = %key, error = %e, "cluster: cannot make service here; retrying at each pass, quietly")
                }
                Err(e) => {
                    tracing::debug!(service = %key, error = %e, "cluster: cannot make service here yet")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, nets: &[&str]) -> ServiceRecord {
        ServiceRecord {
            id: name.into(),
            request: ServiceRequest {
                name: name.into(),
                networks: nets.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            created_by: "h1".into(),
            created: 0,
        }
    }

    #[test]
    fn networks_are_needed_by_their_services() {
        let got = networks_needed_by_services(&[svc("web", &["ov", "b"]), svc("db", &["ov"])]);
        assert_eq!(got["ov"], ["default/web", "default/db"]);
        assert_eq!(got["b"], ["default/web"]);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn service_addresses_skip_reserved_and_taken() {
        let n = NetworkRecord {
            name: "ov".into(),
            subnet: "10.61.0.0/24".parse().unwrap(),
            gateway: "10.61.0.1".parse().unwrap(),
            vni: 1,
            internal: false,
            created_by: "h1".into(),
            created: 0,
            block_prefix: None,
            encrypted: None,
        };
        let top: Ipv4Network = "10.61.0.192/26".parse().unwrap();
        let mut taken = BTreeSet::new();
        assert_eq!(
            free_in_block(top, &n, &taken),
            Some("10.61.0.254".parse().unwrap())
        );
        taken.insert("10.61.0.254".parse().unwrap());
        assert_eq!(
            free_in_block(top, &n, &taken),
            Some("10.61.0.253".parse().unwrap())
        );
        // The subnet's first block: its network and gateway addresses are never handed out.
        let first: Ipv4Network = "10.61.0.0/30".parse().unwrap();
        taken.insert("10.61.0.3".parse().unwrap());
        assert_eq!(
            free_in_block(first, &n, &taken),
            Some("10.61.0.2".parse().unwrap())
        );
        taken.insert("10.61.0.2".parse().unwrap());
        assert_eq!(free_in_block(first, &n, &taken), None);
    }
}
