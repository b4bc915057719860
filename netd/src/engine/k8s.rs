//! `netctl apply -f` / `delete -f`: Kubernetes Services and EndpointSlices (decoded and
//! translated by `crate::k8s`) into the service model. One call is all or nothing:
//! every object is checked and placed on a copy of the services (ClusterIPs from
//! `--service-cidr`, NodePorts from 30000-32767, each checked for range and clashes
//! with sandboxes' `-p`, other services' published ports and other NodePorts), then
//! the changed services are committed in one store transaction. On any error nothing
//! changed.
//!
//! Services are applied before EndpointSlices, so a file may list a slice before its
//! service. A slice belongs to the service its `kubernetes.io/service-name` label names,
//! which must exist (a Kubernetes API server keeps orphan slices; netd has nowhere to
//! put one) and is stored with it: deleting the service deletes its slices, as
//! Kubernetes' garbage collector does with the slices a service owns.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Serialize;

use super::{new_id, now, Engine, EngineError, Result, Undo};
use crate::dns::records::{namespace_of, service_names};
use crate::k8s::{self, KubeService, KubeSlice, Object, WantClusterIp};
use crate::model::{
    service_key, KubeType, PortMapping, PublishMode, PublishedPort, Service, ServiceKind, NODE_PORTS,
};
use crate::store::{Bucket, Txn};

/// What `apply`/`delete` did to one object (kubectl's `service/web created`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct K8sResult {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// created, configured, unchanged or deleted.
    pub action: &'static str,
}

/// The default `--service-cidr` (Kubernetes').
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

fn invalid(e: k8s::K8sError) -> EngineError {
    EngineError::Invalid(e.to_string())
}

/// Splits objects into translated services and slices (services first).
fn translate(docs: &serde_json::Value) -> Result<(Vec<KubeService>, Vec<KubeSlice>)> {
    let (mut svcs, mut slices) = (Vec::new(), Vec::new());
    for o in k8s::objects(docs).map_err(invalid)? {
        match o {
            Object::Service(s) => svcs.push(k8s::service(&s).map_err(invalid)?),
            Object::EndpointSlice(s) => slices.push(k8s::endpoint_slice(&s).map_err(invalid)?),
        }
    }
    Ok((svcs, slices))
}

impl Engine {
    /// Applies Kubernetes objects (`POST /v1/k8s/apply`): creates or updates services
    /// and the slices of existing ones.
    pub fn apply_k8s(&mut self, docs: &serde_json::Value) -> Result<Vec<K8sResult>> {
        let (svcs, slices) = translate(docs)?;
        let mut next = self.services.clone();
        let mut out = Vec::new();
        for ks in svcs {
            out.push(self.place_service(&mut next, ks)?);
        }
        for sl in slices {
            out.push(place_slice(&mut next, sl)?);
        }
        self.commit_services(next)?;
        Ok(out)
    }

    /// Deletes the objects named in `docs` (`POST /v1/k8s/delete`): every one must
    /// exist (kubectl's NotFound), a service must have been made by `apply`.
    pub fn delete_k8s(&mut self, docs: &serde_json::Value) -> Result<Vec<K8sResult>> {
        // Only kind, namespace and name matter here (kubectl deletes by name): a file
        // whose spec this netd would refuse can still delete what it names.
        let mut refs = Vec::new();
        for o in k8s::objects(docs).map_err(invalid)? {
            let (kind, meta) = match &o {
                Object::Service(s) => ("Service", &s.metadata),
                Object::EndpointSlice(s) => ("EndpointSlice", &s.metadata),
            };
            let name = meta.name.clone().unwrap_or_default();
            let namespace = meta
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| crate::model::DEFAULT_NAMESPACE.into());
            refs.push((kind, namespace, name));
        }
        let mut next = self.services.clone();
        let mut out = Vec::new();
        // Slices first: a file holding a service and its slices deletes both.
        refs.sort_by_key(|(kind, ..)| *kind != "EndpointSlice");
        for (kind, namespace, name) in refs {
            if kind == "EndpointSlice" {
                let prefix = format!("{namespace}/");
                let gone = next
                    .iter_mut()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .any(|(_, s)| match &mut s.kind {
                        ServiceKind::ClusterIp(c) => c
                            .kubernetes
                            .as_mut()
                            .and_then(|k| k.slices.remove(&name))
                            .is_some(),
                        _ => false,
                    });
                if !gone {
                    return Err(EngineError::Invalid(format!(
                        "EndpointSlice {namespace}/{name} not found"
                    )));
                }
            } else {
                let key = service_key(&namespace, &name);
                match next.get(&key) {
                    None => return Err(EngineError::NoSuchService { namespace, name }),
                    Some(s) if !s.applied => return Err(not_applied(s)),
                    Some(_) => next.remove(&key),
                };
            }
            out.push(K8sResult {
                kind,
                namespace,
                name,
                action: "deleted",
            });
        }
        self.commit_services(next)?;
        Ok(out)
    }

    /// Takes `next` through the services' commit path (`Engine::commit_service`): the
    /// bridges (`nf_call_iptables` while a Kubernetes ClusterIP exists), the firewall,
    /// the datapath and the store, each reverted when a later one fails; the datapath
    /// carries the change before this returns.
    fn commit_services(&mut self, next: BTreeMap<String, Service>) -> Result<()> {
        let mut txn = Txn::new();
        let mut undo = Undo::default();
        for (k, s) in &next {
            if self.services.get(k) != Some(s) {
                txn.put(Bucket::Services, k, s);
                undo.services.push((k.clone(), self.services.get(k).cloned()));
            }
        }
        for (k, s) in self.services.iter().filter(|(k, _)| !next.contains_key(*k)) {
            txn.delete(Bucket::Services, k);
            undo.services.push((k.clone(), Some(s.clone())));
        }
        if txn.is_empty() {
            return Ok(());
        }
        let nets: Vec<String> = self.networks.keys().cloned().collect();
        let before = self.bridge_specs(&nets);
        self.services = next;
        self.commit_service(undo, &before, &txn)?;
        tracing::info!(changed = txn.ops.len(), "kubernetes objects applied");
        Ok(())
    }

    /// Checks one Service against `next` (the services as this call has them so far),
    /// fills its ClusterIP and NodePorts and puts it there.
    fn place_service(&self, next: &mut BTreeMap<String, Service>, ks: KubeService) -> Result<K8sResult> {
        let key = service_key(&ks.namespace, &ks.name);
        let old = next.get(&key).cloned();
        if let Some(o) = &old {
            if !o.applied {
                return Err(not_applied(o));
            }
        } else if let Some(s) = self.sandboxes.values().find(|s| {
            namespace_of(s) == Some(ks.namespace.as_str()) && service_names(s).any(|n| n == ks.name)
        }) {
            return Err(EngineError::Conflict(format!(
                "sandbox {} already answers as service {} in namespace {}",
                s.name, ks.name, ks.namespace
            )));
        }
        let object = format!("Service {}/{}", ks.namespace, ks.name);
        let mut kind = ks.kind;
        if let ServiceKind::ClusterIp(c) = &mut kind {
            let old_c = match old.as_ref().map(|o| &o.kind) {
                Some(ServiceKind::ClusterIp(c)) => c.kubernetes.clone(),
                _ => None,
            };
            let k = c
                .kubernetes
                .as_mut()
                .ok_or_else(|| EngineError::Invalid(format!("{object}: not a Kubernetes service")))?;
            let old_ip = old_c.as_ref().and_then(|o| o.cluster_ip);
            let was_headless = old_c.as_ref().is_some_and(|o| o.cluster_ip.is_none());
            let immutable = |now: String| {
                EngineError::Invalid(format!(
                    "{object}: spec.clusterIP is immutable (it is {}, the object asks for {now})",
                    old_ip.map_or("None".to_string(), |ip| ip.to_string())
                ))
            };
            k.cluster_ip = match (ks.cluster_ip, old_c.is_some()) {
                (WantClusterIp::Headless, false) => None,
                (WantClusterIp::Headless, true) if was_headless => None,
                (WantClusterIp::Headless, true) => return Err(immutable("None".into())),
                (WantClusterIp::Allocate, true) if was_headless => {
                    return Err(immutable("an address".into()))
                }
                (WantClusterIp::Allocate, _) => match old_ip {
                    Some(ip) => Some(ip),
                    None => Some(self.free_cluster_ip(next, &object)?),
                },
                (WantClusterIp::Ip(ip), true) if old_ip != Some(ip) => return Err(immutable(ip.to_string())),
                (WantClusterIp::Ip(ip), _) => {
                    self.check_kube_cluster_ip(next, &key, &object, ip)?;
                    Some(ip)
                }
                (WantClusterIp::NotApplicable, _) => None,
            };
            // Slices stay with their service across applies.
            if let Some(o) = &old_c {
                k.slices = o.slices.clone();
            }
            // NodePorts: those asked for are checked, the others keep the port they had
            // or get the lowest free one.
            let mut used = self.host_ports_in_use(next, &key);
            if k.type_ == KubeType::NodePort {
                for p in k.ports.iter_mut() {
                    let had = old_c.as_ref().and_then(|o| {
                        o.ports
                            .iter()
                            .find(|q| q.port == p.port && q.proto == p.proto)
                            .and_then(|q| q.node_port)
                    });
                    let want = p.node_port.or(had);
                    let np = match want {
                        Some(np) => {
                            let mine = mapping(np, p.proto);
                            if let Some((_, by)) = used.iter().find(|(m, _)| m.clashes(&mine)) {
                                return Err(EngineError::Conflict(format!(
                                    "{object}: nodePort {np}/{} is already used by {by}",
                                    p.proto
                                )));
                            }
                            np
                        }
                        None => (NODE_PORTS.0..=NODE_PORTS.1)
                            .find(|np| !used.iter().any(|(m, _)| m.clashes(&mapping(*np, p.proto))))
                            .ok_or_else(|| {
                                EngineError::Conflict(format!(
                                    "{object}: no free NodePort in {}-{}",
                                    NODE_PORTS.0, NODE_PORTS.1
                                ))
                            })?,
                    };
                    p.node_port = Some(np);
                    used.push((mapping(np, p.proto), object.clone()));
                }
            }
            let ports = k.service_ports();
            let mut published: Vec<PublishedPort> = k
                .ports
                .iter()
                .filter_map(|p| {
                    let target = ports
                        .iter()
                        .find(|s| s.port == p.port && s.proto == p.proto)?
                        .target_port;
                    Some(PublishedPort {
                        published: p.node_port?,
                        target,
                        proto: p.proto,
                        mode: PublishMode::Ingress,
                    })
                })
                .collect();
            published.sort();
            c.published = published;
        }
        let svc = Service {
            name: ks.name.clone(),
            namespace: ks.namespace.clone(),
            id: old.as_ref().map_or_else(new_id, |o| o.id.clone()),
            kind,
            created: old.as_ref().map_or_else(now, |o| o.created),
            applied: true,
            labels: Default::default(),
        };
        let action = match &old {
            None => "created",
            Some(o) if *o == svc => "unchanged",
            Some(_) => "configured",
        };
        next.insert(key, svc);
        Ok(K8sResult {
            kind: "Service",
            namespace: ks.namespace,
            name: ks.name,
            action,
        })
    }

    fn service_cidr(&self) -> IpNetwork {
        self.cfg.service_cidr
    }

    /// ClusterIPs held by services in `next` other than `except`.
    fn cluster_ips(next: &BTreeMap<String, Service>, except: &str) -> Vec<IpAddr> {
        next.iter()
            .filter(|(k, _)| k.as_str() != except)
            .filter_map(|(_, s)| match &s.kind {
                ServiceKind::ClusterIp(c) => c.kubernetes.as_ref()?.cluster_ip,
                _ => None,
            })
            .collect()
    }

    fn check_kube_cluster_ip(
        &self,
        next: &BTreeMap<String, Service>,
        key: &str,
        object: &str,
        ip: IpAddr,
    ) -> Result<()> {
        let cidr = self.service_cidr();
        let reserved =
            ip == cidr.network() || (cidr.is_ipv4() && cidr.prefix() < 31 && ip == cidr.broadcast());
        if !cidr.contains(ip) || reserved {
            return Err(EngineError::Invalid(format!(
                "{object}: spec.clusterIP {ip} is not a usable address of the service CIDR {cidr} (--service-cidr)"
            )));
        }
        if let Some((k, _)) = next.iter().find(|(k, s)| {
            k.as_str() != key
                && matches!(&s.kind, ServiceKind::ClusterIp(c)
                    if c.kubernetes.as_ref().and_then(|k| k.cluster_ip) == Some(ip))
        }) {
            return Err(EngineError::Conflict(format!(
                "{object}: spec.clusterIP {ip} is already allocated to service {k}"
            )));
        }
        Ok(())
    }

    /// The lowest free address of the service CIDR (not its network or broadcast).
    fn free_cluster_ip(&self, next: &BTreeMap<String, Service>, object: &str) -> Result<IpAddr> {
        let cidr = self.service_cidr();
        let taken = Self::cluster_ips(next, "");
        cidr.iter()
            .skip(1)
            .take_while(|ip| !(cidr.is_ipv4() && *ip == cidr.broadcast()))
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| EngineError::Conflict(format!("{object}: the service CIDR {cidr} is full")))
    }

    /// Host ports held by sandboxes (`-p`) and by services other than `except` in
    /// `next` (published ports and NodePorts), each with who holds it.
    fn host_ports_in_use(
        &self,
        next: &BTreeMap<String, Service>,
        except: &str,
    ) -> Vec<(PortMapping, String)> {
        let mut used: Vec<(PortMapping, String)> = self
            .sandboxes
            .values()
            .flat_map(|s| s.ports.iter().map(|m| (*m, format!("sandbox {}", s.name))))
            .collect();
        for (k, s) in next.iter().filter(|(k, _)| k.as_str() != except) {
            if let ServiceKind::ClusterIp(c) = &s.kind {
                used.extend(
                    c.published
                        .iter()
                        .map(|p| (mapping(p.published, p.proto), format!("service {k}"))),
                );
            }
        }
        used
    }
}

fn mapping(port: u16, proto: crate::model::Proto) -> PortMapping {
    PortMapping {
        host_ip: None,
        host_port: port,
        container_port: port,
        proto,
    }
}

fn not_applied(s: &Service) -> EngineError {
    EngineError::Conflict(format!(
        "service {} in namespace {} was made with netctl service create, not netctl apply; \
         remove it with netctl service rm first",
        s.name, s.namespace
    ))
}

/// Puts a slice into its service in `next`.
fn place_slice(next: &mut BTreeMap<String, Service>, sl: KubeSlice) -> Result<K8sResult> {
    let key = service_key(&sl.namespace, &sl.service);
    let object = format!("EndpointSlice {}/{}", sl.namespace, sl.name);
    let Some(svc) = next.get_mut(&key) else {
        return Err(EngineError::Invalid(format!(
            "{object}: service {} (label kubernetes.io/service-name) does not exist in namespace {}; \
             apply the Service first or in the same file",
            sl.service, sl.namespace
        )));
    };
    let k = match &mut svc.kind {
        ServiceKind::ClusterIp(c) => c.kubernetes.as_mut(),
        ServiceKind::ExternalName { .. } => None,
    };
    let Some(k) = k else {
        return Err(EngineError::Invalid(format!(
            "{object}: service {} is not a ClusterIP, NodePort or headless service applied from Kubernetes",
            sl.service
        )));
    };
    let action = match k.slices.insert(sl.name.clone(), sl.slice.clone()) {
        None => "created",
        Some(old) if old == sl.slice => "unchanged",
        Some(_) => "configured",
    };
    // A slice moved to another service leaves the one it was in (names are unique per
    // namespace).
    let prefix = format!("{}/", sl.namespace);
    for (k2, other) in next.iter_mut() {
        if *k2 == key || !k2.starts_with(&prefix) {
            continue;
        }
        if let ServiceKind::ClusterIp(c) = &mut other.kind {
            if let Some(k) = c.kubernetes.as_mut() {
                k.slices.remove(&sl.name);
            }
        }
    }
    Ok(K8sResult {
        kind: "EndpointSlice",
        namespace: sl.namespace,
        name: sl.name,
        action,
    })
}
