//! Service operations: create, update, list, inspect, remove.
//!
//! An ExternalName service touches no kernel object: validate, commit to the store,
//! update memory, then hand the new name table to the DNS server before the API answers.
//!
//! A `cluster_ip` service (vip mode) gets, per network, a VIP leased from that network's
//! IPAM pool (owner `svc:<namespace>/<name>`), held by the host as a `/32` (`/128`) on
//! the network's bridge with `nf_call_iptables` on (`plan::BridgeSpec::vips`), its
//! chains in the load-balancing datapath (`lb::ServiceLb`) and, for `mode=host`
//! published ports, a published-port entry to one backend. The order is the engine's:
//! validate (nothing changes on bad input), change memory, bridges, firewall, datapath,
//! store; each kernel step is reverted when a later one fails. Backends follow
//! sandboxes: every sandbox operation recomputes the services' datapath state in
//! `commit` (`Engine::desired_services`), before it returns.

use std::collections::BTreeSet;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::{new_id, now, pool_key, Engine, EngineError, Result, Undo};
use crate::dns::services::name_clash;
use crate::firewall::ruleset::services::FwService;
use crate::firewall::{FwPort, FwState};
use crate::model::{
    check_vip, select_backends, service_key, Backend, ClusterIp, EndpointMode, PortMapping, PublishMode,
    Service, ServiceError, ServiceKind, ServiceRequest,
};
use crate::plan::{BridgeSpec, Step};
use crate::store::{Bucket, Txn};

/// The IPAM owner of a service's VIPs.
pub(super) fn vip_owner(key: &str) -> String {
    format!("svc:{key}")
}

/// A service as `inspect` and `ls` show it: the record plus its live backends.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    #[serde(flatten)]
    pub service: Service,
    /// Every address the service balances to now (cluster_ip only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_backends: Option<Vec<Backend>>,
    /// Which datapath balances its VIPs (`--lb`); none without a VIP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datapath: Option<String>,
}

/// `PATCH /v1/services/{namespace}/{name}`: what `service update` changes. Lists given
/// replace the service's (`selector`, `ports`, `publish`); backends are added/removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceUpdate {
    pub add_backends: Vec<String>,
    pub rm_backends: Vec<String>,
    pub selector: Option<Vec<String>>,
    pub ports: Option<Vec<String>>,
    pub publish: Option<Vec<String>>,
    pub session_affinity: Option<String>,
}

/// `req` with `up` applied (`service update`): lists given replace the service's,
/// backends are added and removed. The result is checked by whoever makes it.
pub fn apply_update(mut req: ServiceRequest, up: &ServiceUpdate) -> Result<ServiceRequest> {
    let mut backends: BTreeSet<String> = req.backends.iter().cloned().collect();
    for b in &up.rm_backends {
        if !backends.remove(b) {
            return Err(EngineError::Invalid(format!(
                "{b} is not a named backend of service {}",
                req.name
            )));
        }
    }
    backends.extend(up.add_backends.iter().cloned());
    req.backends = backends.into_iter().collect();
    if let Some(s) = &up.selector {
        req.selector = s.clone();
    }
    if let Some(p) = &up.ports {
        req.ports = p.clone();
    }
    if let Some(p) = &up.publish {
        req.publish = p.clone();
    }
    if let Some(a) = &up.session_affinity {
        req.session_affinity = Some(a.clone());
    }
    Ok(req)
}

/// The request a stored `cluster_ip` service was made from (for an update to re-check).
fn request_of(svc: &Service, c: &ClusterIp) -> ServiceRequest {
    ServiceRequest {
        name: svc.name.clone(),
        namespace: Some(svc.namespace.clone()),
        kind: Some("cluster_ip".into()),
        external_name: None,
        networks: c.networks.clone(),
        ports: c.ports.iter().map(ToString::to_string).collect(),
        selector: c.selector.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        backends: c.backends.clone(),
        endpoint_mode: Some(match c.endpoint_mode {
            EndpointMode::Vip => "vip".into(),
            EndpointMode::Dnsrr => "dnsrr".into(),
        }),
        session_affinity: c
            .session_affinity
            .map(|a| format!("client-ip:{}", a.timeout_secs)),
        publish: c
            .published
            .iter()
            .map(|p| {
                let mode = match p.mode {
                    PublishMode::Ingress => "ingress",
                    PublishMode::Host => "host",
                };
                format!("{}:{}/{},mode={mode}", p.published, p.target, p.proto)
            })
            .collect(),
        vips: c.vips.iter().map(|(n, ip)| (n.clone(), ip.to_string())).collect(),
        labels: svc.labels.clone(),
    }
}

fn refused(e: ServiceError) -> EngineError {
    match e {
        ServiceError::UnknownNetwork(n) => EngineError::NoSuchNetwork(n),
        ServiceError::UnknownSandbox(s) => EngineError::NoSuchSandbox(s),
        e @ ServiceError::PublishedInUse { .. } => EngineError::Conflict(e.to_string()),
        e => EngineError::Invalid(e.to_string()),
    }
}

impl Engine {
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    pub fn service(&self, namespace: &str, name: &str) -> Result<&Service> {
        self.services
            .get(&service_key(namespace, name))
            .ok_or_else(|| EngineError::NoSuchService {
                namespace: namespace.into(),
                name: name.into(),
            })
    }

    /// The backends of a `cluster_ip` service as the sandboxes are now.
    /// On overlay networks, other nodes' endpoints serve too (`remote_backends`).
    pub fn service_backends(&self, c: &ClusterIp) -> Vec<Backend> {
        let mut out = select_backends(c, self.sandboxes.values());
        if !self.remote_names.is_empty() {
            out.extend(self.remote_backends(c));
            out.sort();
            out.dedup();
        }
        out
    }

    pub fn service_view(&self, svc: &Service) -> ServiceView {
        let live_backends = match &svc.kind {
            ServiceKind::ClusterIp(c) => Some(self.service_backends(c)),
            ServiceKind::ExternalName { .. } => None,
        };
        let fw = FwService::from_model(svc, live_backends.as_deref().unwrap_or_default(), |_| None);
        ServiceView {
            service: svc.clone(),
            datapath: crate::lb::serving(
                self.lb.kind(),
                fw.as_ref(),
                fw.as_ref().is_some_and(|f| self.lb.tc_serves(f)),
            ),
            live_backends,
        }
    }

    /// The prefixes VIPs are leased from (every network's subnets): what the datapath
    /// may treat as netd's when it finds kernel objects without an owner tag (IPVS).
    pub(crate) fn vip_prefixes(&self) -> Vec<IpNetwork> {
        self.networks
            .values()
            .flat_map(|n| n.subnets.iter().map(|s| s.subnet))
            .collect()
    }

    /// What the datapath is told before a sync: the namespaces on each network
    /// (`ServiceLb::set_members`) and the networks (`ServiceLb::set_networks`).
    pub(crate) fn lb_hints(&self) {
        self.lb.set_members(&self.lb_members());
        let nets: Vec<(String, String, bool)> = self
            .networks
            .values()
            .map(|n| (n.name.clone(), n.bridge.clone(), !n.is_overlay()))
            .collect();
        self.lb.set_networks(&nets);
    }

    /// Each sandbox namespace with the networks it is on (`ServiceLb::set_members`).
    pub(crate) fn lb_members(&self) -> Vec<(String, std::path::PathBuf)> {
        self.sandboxes
            .values()
            .flat_map(|s| {
                s.endpoints
                    .iter()
                    .map(move |e| (e.network.clone(), std::path::PathBuf::from(&s.netns)))
            })
            .collect()
    }

    /// Deletes what the datapath left pending once it may go (IPVS: backends drained
    /// of their last connection). The daemon calls it on its repair timer.
    pub fn reap_services(&self) {
        if let Err(e) = self.lb.reap(&self.svc_fw) {
            tracing::warn!(error = %e, lb = %self.lb.kind(), "service datapath: reap");
        }
    }

    /// What the load-balancing datapath must hold for the model as it is now.
    pub fn desired_services(&self) -> Vec<FwService> {
        self.services
            .values()
            .filter_map(|s| {
                let ServiceKind::ClusterIp(c) = &s.kind else {
                    return None;
                };
                let backends = self.service_backends(c);
                FwService::from_model(s, &backends, |n| self.networks.get(n).map(|n| n.bridge.clone()))
            })
            .collect()
    }

    /// Published-port entries of services' `mode=host` ports: each goes to the first
    /// backend (by network, sandbox, address) of each family, as Docker's `mode=host`
    /// publishes on the node of a task; on one host two backends cannot share the port.
    pub(super) fn service_host_ports(&self, out: &mut Vec<FwPort>) {
        for s in self.services.values() {
            let ServiceKind::ClusterIp(c) = &s.kind else {
                continue;
            };
            if !c.published.iter().any(|p| p.mode == PublishMode::Host) {
                continue;
            }
            let backends = self.service_backends(c);
            for v4 in [true, false] {
                let Some(b) = backends.iter().find(|b| b.ip.is_ipv4() == v4) else {
                    continue;
                };
                for p in c.published.iter().filter(|p| p.mode == PublishMode::Host) {
                    out.push(FwPort {
                        host_ip: None,
                        host_port: p.published,
                        proto: p.proto,
                        target: b.ip,
                        target_port: p.target,
                    });
                }
            }
        }
    }

    /// Host ports services hold (both modes hold theirs on every address), with who.
    pub(super) fn service_ports_in_use(&self, except: Option<&str>) -> Vec<(PortMapping, String)> {
        let mut out = Vec::new();
        for (k, s) in &self.services {
            let ServiceKind::ClusterIp(c) = &s.kind else {
                continue;
            };
            if Some(k.as_str()) == except {
                continue;
            }
            for p in &c.published {
                out.push((
                    PortMapping {
                        host_ip: None,
                        host_port: p.published,
                        container_port: p.target,
                        proto: p.proto,
                    },
                    format!("service {k}"),
                ));
            }
        }
        out
    }

    /// Every host port in use by sandboxes and by services other than `except`.
    fn ports_in_use(&self, except: Option<&str>) -> Vec<(PortMapping, String)> {
        let mut used: Vec<(PortMapping, String)> = self
            .sandboxes
            .values()
            .flat_map(|s| s.ports.iter().map(|m| (*m, format!("sandbox {}", s.name))))
            .collect();
        used.extend(self.service_ports_in_use(except));
        used
    }

    /// The VIPs services hold on `network`.
    fn vips_on(&self, network: &str) -> Vec<IpNetwork> {
        let mut out: Vec<IpNetwork> = self
            .services
            .values()
            .filter_map(|s| match &s.kind {
                ServiceKind::ClusterIp(c) => c.vips.get(network).copied(),
                _ => None,
            })
            .map(IpNetwork::from)
            .collect();
        out.sort();
        out
    }

    /// Whether a Kubernetes service holds a ClusterIP (dispatched from every network).
    fn has_cluster_wide_vip(&self) -> bool {
        self.services.values().any(|s| {
            matches!(&s.kind, ServiceKind::ClusterIp(c)
                if c.kubernetes.as_ref().is_some_and(|k| k.cluster_ip.is_some()))
        })
    }

    /// A network's bring-up steps with its services' VIPs on the bridge (and
    /// `nf_call_iptables` on while it has one).
    pub(super) fn network_up(&self, net: &crate::model::Network) -> Vec<Step> {
        let mut steps = crate::driver::network_up(net);
        let mut vips = self.vips_on(&net.name);
        vips.extend(self.overlay_lb_addr(&net.name));
        for s in &mut steps {
            if let Step::EnsureBridge(b) = s {
                if net.vlan.is_none() {
                    // A Kubernetes ClusterIP is reached through the gateway from every
                    // network and balanced to backends on any of them: a reply within
                    // one bridge must pass conntrack to be un-DNATed.
                    b.nf_call = !vips.is_empty() || self.has_cluster_wide_vip();
                    b.vips = vips.clone();
                }
            }
        }
        steps
    }

    fn bridge_spec(&self, network: &str) -> Option<BridgeSpec> {
        let net = self.networks.get(network)?;
        self.network_up(net).into_iter().find_map(|s| match s {
            Step::EnsureBridge(b) => Some(b),
            _ => None,
        })
    }

    pub fn create_service(&mut self, req: &ServiceRequest) -> Result<Service> {
        let (name, namespace, kind) = req.parse().map_err(EngineError::Invalid)?;
        let key = service_key(&namespace, &name);
        if self.services.contains_key(&key) {
            return Err(EngineError::Conflict(format!(
                "service {name} already exists in namespace {namespace}"
            )));
        }
        // A sandbox (or another service) already answers under a name this one takes:
        // refused, rather than one of them hidden in DNS. An ExternalName takes its
        // namespaced name; a cluster_ip service also its bare name and `tasks.NAME` on
        // its networks.
        let networks: &[String] = match &kind {
            ServiceKind::ClusterIp(c) => &c.networks,
            ServiceKind::ExternalName { .. } => &[],
        };
        if let Some(why) = name_clash(
            &namespace,
            &name,
            networks,
            self.sandboxes.values(),
            self.services.values(),
        ) {
            return Err(EngineError::Conflict(why));
        }
        let cluster = Self::is_cluster_service(&req.labels);
        if let Some(n) = networks
            .iter()
            .find(|n| self.networks.get(*n).is_some_and(|n| n.is_overlay()))
        {
            if !cluster {
                return Err(EngineError::Invalid(format!(
                    "network {n} is an overlay network: its services are the cluster's (netctl service create asks the cluster)"
                )));
            }
        }
        let svc = Service {
            name,
            namespace,
            id: new_id(),
            kind,
            labels: req.labels.clone(),
            created: now(),
            applied: false,
        };
        if let ServiceKind::ClusterIp(c) = &svc.kind {
            let c = c.clone();
            return self.create_cluster_ip(svc, c);
        }
        let mut txn = Txn::new();
        txn.put(Bucket::Services, &key, &svc);
        self.store.commit(&txn)?;
        self.services.insert(key, svc.clone());
        self.sync_dns();
        tracing::info!(service = %svc.name, namespace = %svc.namespace, "service created");
        Ok(svc)
    }

    /// Checks a cluster_ip service against what exists (networks, named backends, host
    /// ports in use by others, network kinds that can carry a VIP).
    /// A cluster service's named backends may be on any node.
    fn check_cluster_ip(&self, key: &str, c: &ClusterIp, cluster: bool) -> Result<()> {
        c.check_refs(
            |n| self.networks.contains_key(n),
            |s| cluster || self.sandboxes.contains_key(s),
            &self.ports_in_use(Some(key)),
        )
        .map_err(refused)?;
        for n in &c.networks {
            let net = &self.networks[n];
            if net.is_macvlan() || net.vlan.is_some() {
                return Err(EngineError::Invalid(format!(
                    "network {n} is a {} network: service VIPs need a plain bridge network",
                    if net.is_macvlan() { "macvlan" } else { "VLAN" }
                )));
            }
            if c.endpoint_mode == EndpointMode::Vip && net.internal && !c.published.is_empty() {
                return Err(EngineError::Invalid(format!(
                    "cannot publish ports of a service on internal network {n}: it has no way in"
                )));
            }
        }
        Ok(())
    }

    fn create_cluster_ip(&mut self, mut svc: Service, mut c: ClusterIp) -> Result<Service> {
        let key = svc.key();
        self.check_cluster_ip(&key, &c, Self::is_cluster_service(&svc.labels))?;
        let networks = c.networks.clone();
        let nets: Vec<&str> = networks.iter().map(String::as_str).collect();
        let mut undo = Undo::default();
        let keys = self.pool_keys(&nets);
        self.remember(&mut undo, &[], &[], &keys);
        undo.services.push((key.clone(), None));
        if c.endpoint_mode == EndpointMode::Vip {
            if let Err(e) = self.allocate_vips(&key, &mut c) {
                self.rollback(undo);
                return Err(e);
            }
        }
        let touched: Vec<String> = c.vips.keys().cloned().collect();
        svc.kind = ServiceKind::ClusterIp(c);
        let before = self.bridge_specs(&touched);
        self.services.insert(key.clone(), svc.clone());
        let mut txn = Txn::new();
        txn.put(Bucket::Services, &key, &svc);
        self.put_pools(&mut txn, &nets);
        self.commit_service(undo, &before, &txn)?;
        tracing::info!(service = %svc.name, namespace = %svc.namespace, "service created");
        Ok(svc)
    }

    /// Leases each network's VIP (the one asked for, checked, or the next free one).
    /// The caller has remembered the pools.
    fn allocate_vips(&mut self, key: &str, c: &mut ClusterIp) -> Result<()> {
        let owner = vip_owner(key);
        for n in c.networks.clone() {
            let net = &self.networks[&n];
            let want = c.vips.get(&n).copied();
            if let Some(ip) = want {
                check_vip(&n, &net.subnets, ip).map_err(refused)?;
            }
            let v6 = match want {
                Some(ip) => ip.is_ipv6(),
                None => !self.pools.contains_key(&pool_key(&n, false)),
            };
            let pool = self.pools.get_mut(&pool_key(&n, v6)).ok_or_else(|| {
                EngineError::Invalid(format!("network {n} has no address pool to take a VIP from"))
            })?;
            if let Some(ip) = want {
                if let Some(by) = pool.owner_of(ip) {
                    return Err(EngineError::Conflict(format!(
                        "VIP {ip} on network {n} is taken (by {by})"
                    )));
                }
            }
            let ip = pool.allocate(&owner, want)?;
            c.vips.insert(n, ip);
        }
        Ok(())
    }

    pub(super) fn bridge_specs(&self, networks: &[String]) -> Vec<BridgeSpec> {
        networks.iter().filter_map(|n| self.bridge_spec(n)).collect()
    }

    /// Steps 2–4 of a service operation, with memory already changed: the bridges of
    /// the networks whose VIPs changed (`before`: their specs before the change), the
    /// firewall, the datapath, then the store. On failure every done part is reverted
    /// and memory rolled back.
    pub(super) fn commit_service(&mut self, undo: Undo, before: &[BridgeSpec], txn: &Txn) -> Result<()> {
        let after: Vec<BridgeSpec> = before
            .iter()
            .filter_map(|b| {
                let net = self.networks.values().find(|n| n.bridge == b.name)?;
                self.bridge_spec(&net.name)
            })
            .collect();
        let revert_bridges = |k: &dyn crate::kernel::Kernel, upto: usize| {
            for b in before.iter().take(upto) {
                if let Err(e) = k.apply(&Step::EnsureBridge(b.clone())) {
                    tracing::error!(bridge = %b.name, error = %e, "could not put a bridge's addresses back");
                }
            }
        };
        for (i, b) in after.iter().enumerate() {
            if let Err(e) = self.kernel.apply(&Step::EnsureBridge(b.clone())) {
                revert_bridges(self.kernel.as_ref(), i);
                self.rollback(undo);
                return Err(EngineError::Kernel {
                    op: format!("service VIPs on bridge {}", b.name),
                    source: e,
                });
            }
        }
        let want_fw: FwState = self.desired_fw();
        let fw_batch = crate::firewall::delta(&self.fw, &want_fw);
        if !fw_batch.is_empty() {
            if let Err(e) = self.kernel.nft(&fw_batch) {
                revert_bridges(self.kernel.as_ref(), after.len());
                self.rollback(undo);
                return Err(EngineError::kernel("apply firewall rules")(e));
            }
        }
        let revert_fw = |this: &Engine| {
            if !fw_batch.is_empty() {
                if let Err(e) = this.kernel.nft(&crate::firewall::delta(&want_fw, &this.fw)) {
                    tracing::error!(error = %e, "could not revert the firewall");
                }
            }
        };
        let want_svc = self.desired_services();
        self.lb_hints();
        if let Err(e) = self.lb.sync_diff(&self.svc_fw, &want_svc) {
            revert_fw(self);
            revert_bridges(self.kernel.as_ref(), after.len());
            self.rollback(undo);
            return Err(EngineError::kernel(format!(
                "service datapath ({})",
                self.lb.kind()
            ))(e));
        }
        if let Err(e) = self.store.commit(txn) {
            if let Err(e) = self.lb.sync_diff(&want_svc, &self.svc_fw) {
                tracing::error!(error = %e, "could not revert the service datapath");
            }
            revert_fw(self);
            revert_bridges(self.kernel.as_ref(), after.len());
            self.rollback(undo);
            return Err(e.into());
        }
        self.fw = want_fw;
        self.svc_fw = want_svc;
        self.sync_dns();
        self.emit_changes(&undo);
        Ok(())
    }

    pub fn update_service(&mut self, namespace: &str, name: &str, up: &ServiceUpdate) -> Result<Service> {
        let old = self.service(namespace, name)?.clone();
        let ServiceKind::ClusterIp(c) = &old.kind else {
            return Err(EngineError::Invalid(format!(
                "service {name} is an external_name service: only cluster_ip services are updated"
            )));
        };
        if Self::is_cluster_service(&old.labels) {
            // Changed here only, the other nodes would keep the old one: the cluster's
            // update (`PATCH /v1/cluster/services/…`) changes the record every node follows.
            return Err(EngineError::Invalid(format!(
                "service {name} is the cluster's: update it through the cluster (netctl service update does)"
            )));
        }
        let req = apply_update(request_of(&old, c), up)?;
        let new_c = req
            .cluster_ip()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let mut svc = old.clone();
        svc.kind = ServiceKind::ClusterIp(new_c);
        self.store_changed_service(old, svc)
    }

    /// A cluster service made again from its record's new request (`service update` on
    /// any node): the same VIPs, networks and endpoint mode, so it changes in place (the
    /// VIP's flows go on); anything else is an error and the caller makes it anew.
    pub fn replace_cluster_service(&mut self, req: &ServiceRequest) -> Result<Service> {
        let (name, namespace, _) = req.parse().map_err(EngineError::Invalid)?;
        let old = self.service(&namespace, &name)?.clone();
        let ServiceKind::ClusterIp(c) = &old.kind else {
            return Err(EngineError::Invalid(format!(
                "service {name} is not a cluster_ip service"
            )));
        };
        if !Self::is_cluster_service(&old.labels) {
            return Err(EngineError::Invalid(format!(
                "service {name} is not the cluster's"
            )));
        }
        let new_c = req
            .cluster_ip()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        if new_c.networks != c.networks || new_c.vips != c.vips || new_c.endpoint_mode != c.endpoint_mode {
            return Err(EngineError::Invalid(format!(
                "service {name}: its networks, VIPs or endpoint mode changed; it is made anew"
            )));
        }
        let mut svc = old.clone();
        svc.kind = ServiceKind::ClusterIp(new_c);
        svc.labels = req.labels.clone();
        self.store_changed_service(old, svc)
    }

    /// Checks `svc` (a changed `old`) and stores it, the datapath following; nothing
    /// changes when it is refused.
    fn store_changed_service(&mut self, old: Service, svc: Service) -> Result<Service> {
        let (ServiceKind::ClusterIp(new_c), key) = (&svc.kind, old.key()) else {
            return Ok(svc);
        };
        self.check_cluster_ip(&key, new_c, Self::is_cluster_service(&old.labels))?;
        if svc == old {
            return Ok(svc);
        }
        let (name, namespace) = (svc.name.clone(), svc.namespace.clone());
        let mut undo = Undo::default();
        undo.services.push((key.clone(), Some(old)));
        self.services.insert(key.clone(), svc.clone());
        let mut txn = Txn::new();
        txn.put(Bucket::Services, &key, &svc);
        self.commit_service(undo, &[], &txn)?;
        tracing::info!(service = %name, namespace = %namespace, "service updated");
        Ok(svc)
    }

    pub fn remove_service(&mut self, namespace: &str, name: &str) -> Result<()> {
        let svc = self.service(namespace, name)?.clone();
        let key = service_key(namespace, name);
        let mut txn = Txn::new();
        txn.delete(Bucket::Services, &key);
        let ServiceKind::ClusterIp(c) = &svc.kind else {
            self.store.commit(&txn)?;
            self.services.remove(&key);
            self.sync_dns();
            tracing::info!(service = %name, namespace, "service removed");
            return Ok(());
        };
        let nets: Vec<&str> = c.networks.iter().map(String::as_str).collect();
        let touched: Vec<String> = c.vips.keys().cloned().collect();
        let before = self.bridge_specs(&touched);
        let mut undo = Undo::default();
        let keys = self.pool_keys(&nets);
        self.remember(&mut undo, &[], &[], &keys);
        undo.services.push((key.clone(), Some(svc.clone())));
        let owner = vip_owner(&key);
        for n in &nets {
            for v6 in [false, true] {
                if let Some(p) = self.pools.get_mut(&pool_key(n, v6)) {
                    p.release_owner(&owner);
                }
            }
        }
        self.services.remove(&key);
        self.put_pools(&mut txn, &nets);
        self.commit_service(undo, &before, &txn)?;
        tracing::info!(service = %name, namespace, "service removed");
        Ok(())
    }

    /// Services that hold a VIP on `network` or take backends from it (a network in
    /// use by a service is not removed).
    pub(super) fn services_on(&self, network: &str) -> Vec<String> {
        self.services
            .iter()
            .filter(|(_, s)| matches!(&s.kind, ServiceKind::ClusterIp(c) if c.networks.iter().any(|n| n == network)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The owners of service VIP leases (reconcile keeps them).
    pub(super) fn vip_owners(&self) -> BTreeSet<String> {
        self.services
            .iter()
            .filter(|(_, s)| matches!(s.kind, ServiceKind::ClusterIp(_)))
            .map(|(k, _)| vip_owner(k))
            .collect()
    }
}
