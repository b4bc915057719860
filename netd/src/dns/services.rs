//! The DNS names of load-balanced services, from plain data (`ServiceRecords`) that both
//! netd's own `cluster_ip` services (`ServiceRecords::cluster_ip`) and Kubernetes-applied
//! ones fill, so the name table needs no knowledge of where a service came from.
//!
//! Let `K` be `NAME.NS.svc.<cluster domain>`. A service answers:
//!
//! | name | endpoint mode `vip` | `dnsrr` (headless) |
//! |---|---|---|
//! | `NAME` (on its networks) | its VIP on the asker's network (or its cluster IPs) | the backends, rotated |
//! | `K` | the same | the same (cluster-wide for backends with no network) |
//! | `tasks.NAME` (on its networks) | the backends, rotated | the same |
//! | `HOST.K` | – | the backend (`HOST`: its sandbox name, or its address with `-`) |
//! | `_PORT._PROTO.NAME`, `_PORT._PROTO.K`, `_PNAME._PROTO.K` | SRV `port` → `NAME` / `K` | SRV `targetPort` → `HOST.K` per backend |
//!
//! Visibility follows the table's rule: a record on a network is seen by the sandboxes on
//! that network only, so a sandbox gets the VIP of the network it shares with the service
//! and the backends it can reach. Cluster IPs (Kubernetes' ClusterIP, not bound to a
//! network) and backends without a network are seen by every sandbox under `K`, as in
//! Kubernetes. A name that a sandbox (or an earlier service) already has on a network is
//! left to it there (`create_service` refuses such a clash up front), and a service with
//! no backend still exists: NODATA, not NXDOMAIN.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::records::{display_name, namespace_of, normalize, service_names, Rec, Table};
use crate::model::{Backend, ClusterIp, EndpointMode, Sandbox, Service, ServiceKind, ServicePort};

/// One backend address of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SvcBackend {
    /// The network it is reached on; `None`: reachable from every sandbox (a Kubernetes
    /// endpoint netd knows no network of).
    pub network: Option<String>,
    pub ip: IpAddr,
    /// Its host name (the sandbox, a pod, an EndpointSlice `hostname`): `HOST.K` in dnsrr
    /// mode. Used when it is one DNS label, else the address stands in.
    pub hostname: Option<String>,
}

/// What DNS needs to know of one load-balanced service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecords {
    pub namespace: String,
    pub name: String,
    /// `vip`: names answer the VIP(s); `dnsrr` (Kubernetes' headless): the backends.
    pub mode: EndpointMode,
    /// The networks the service is on: `NAME` and `tasks.NAME` answer there (and exist,
    /// NODATA, with nothing behind them yet).
    pub networks: Vec<String>,
    /// (network, VIP): the service's address on that network (one per family at most).
    pub vips: Vec<(String, IpAddr)>,
    /// Addresses every sandbox reaches the service on (Kubernetes ClusterIPs); when set,
    /// `NAME` and `K` answer these rather than the per-network VIPs.
    pub cluster_ips: Vec<IpAddr>,
    pub backends: Vec<SvcBackend>,
    /// For SRV: `port` in `vip` mode, `target_port` (what the backends listen on) in
    /// `dnsrr` mode; `name` adds the Kubernetes `_NAME._PROTO.K` form.
    pub ports: Vec<ServicePort>,
}

impl ServiceRecords {
    /// A `cluster_ip` service with its backends (`model::select_backends`). A Kubernetes
    /// one (`netctl apply`: no netd network of its own) is cluster-wide: its ClusterIP
    /// and, headless, its endpoints answer `NAME.NS.svc.<domain>` from every sandbox, as
    /// in a cluster's flat network.
    pub fn cluster_ip(namespace: &str, name: &str, c: &ClusterIp, backends: &[Backend]) -> ServiceRecords {
        let kube = c.kubernetes.as_deref();
        ServiceRecords {
            namespace: namespace.to_string(),
            name: name.to_string(),
            mode: c.endpoint_mode,
            networks: c.networks.clone(),
            vips: c.vips.iter().map(|(n, ip)| (n.clone(), *ip)).collect(),
            cluster_ips: kube.and_then(|k| k.cluster_ip).into_iter().collect(),
            backends: backends
                .iter()
                .map(|b| SvcBackend {
                    network: kube.is_none().then(|| b.network.clone()),
                    ip: b.ip,
                    hostname: Some(b.sandbox.clone()),
                })
                .collect(),
            ports: c.ports.clone(),
        }
    }
}

/// Who already answers under a name a new service on `networks` would take (the bare
/// `name` on those networks, `tasks.name`, or `name.namespace.svc.<domain>` from a
/// sandbox in that namespace): a sandbox (by its name, pod name, alias or service label)
/// or another load-balanced service on a shared network. `create_service` refuses the
/// service then (409), as it does for an ExternalName, rather than let the table hide
/// one of them.
pub fn name_clash<'a>(
    namespace: &str,
    name: &str,
    networks: &[String],
    sandboxes: impl IntoIterator<Item = &'a Sandbox>,
    services: impl IntoIterator<Item = &'a Service>,
) -> Option<String> {
    let name = normalize(name);
    let tasks = format!("tasks.{name}");
    for s in sandboxes {
        if namespace_of(s) == Some(namespace) && service_names(s).any(|n| normalize(n) == name) {
            return Some(format!(
                "sandbox {} already answers as service {name} in namespace {namespace}",
                s.name
            ));
        }
        for e in s.endpoints.iter().filter(|e| networks.contains(&e.network)) {
            let mut names = [s.name.as_str(), display_name(s)]
                .into_iter()
                .chain(e.aliases.iter().map(String::as_str));
            if names.any(|n| normalize(n) == name || normalize(n) == tasks) {
                return Some(format!(
                    "sandbox {} already answers as {name} on network {}",
                    s.name, e.network
                ));
            }
        }
    }
    for o in services {
        let ServiceKind::ClusterIp(c) = &o.kind else {
            continue;
        };
        if let Some(net) = c.networks.iter().find(|n| networks.contains(n)) {
            if normalize(&o.name) == name && o.namespace != namespace {
                return Some(format!(
                    "service {name} of namespace {} already answers as {name} on network {net}",
                    o.namespace
                ));
            }
        }
    }
    None
}

/// Where a record goes: a network, or every sandbox (`None`)./// Where a record goes: a network, or every sandbox (`None`).
type Scope = Option<String>;

/// The records of one service before they enter the table.
#[derive(Default)]
struct Pending {
    /// (scope, name) -> records (empty: the name exists without data); `true` rotates.
    names: BTreeMap<(Scope, String), (Vec<Rec>, bool)>,
}

impl Pending {
    fn touch(&mut self, scope: &Scope, name: &str) {
        self.names.entry((scope.clone(), normalize(name))).or_default();
    }

    fn add(&mut self, scope: &Scope, name: &str, rec: Rec, rotate: bool) {
        let e = self.names.entry((scope.clone(), normalize(name))).or_default();
        if !e.0.contains(&rec) {
            e.0.push(rec);
        }
        e.1 |= rotate;
    }
}

/// `HOST` of `HOST.K`: the host name when it is one DNS label, else the address with
/// `-` for `.` and `:` (as Kubernetes names endpoints without a hostname).
pub fn host_label(b: &SvcBackend) -> String {
    let h = b.hostname.as_deref().map(str::to_ascii_lowercase);
    match h {
        Some(h)
            if !h.is_empty()
                && h.len() <= 63
                && h.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !h.starts_with('-')
                && !h.ends_with('-') =>
        {
            h
        }
        _ => b.ip.to_string().replace(['.', ':'], "-"),
    }
}

impl Table {
    /// Adds the names of one service (see the module doc).
    pub fn add_service(&mut self, s: &ServiceRecords) {
        let k = self.k8s_name(&s.name, &s.namespace);
        let tasks = format!("tasks.{}", s.name);
        let nets: BTreeSet<Scope> = s.networks.iter().map(|n| Some(n.clone())).collect();
        // Where K lives: on the service's networks, or cluster-wide for a service with
        // cluster IPs or none of its own networks (Kubernetes).
        let k_global = !s.cluster_ips.is_empty() || s.networks.is_empty();
        let mut p = Pending::default();
        for n in &nets {
            p.touch(n, &s.name);
            p.touch(n, &tasks);
            if !k_global {
                p.touch(n, &k);
            }
        }
        if k_global {
            p.touch(&None, &k);
        }
        // The scopes a backend is seen in under the network-bound names (NAME, tasks.NAME):
        // its network, or all of the service's networks when it has none.
        let bound = |b: &SvcBackend| -> Vec<Scope> {
            match &b.network {
                Some(n) => vec![Some(n.clone())],
                None => nets.iter().cloned().collect(),
            }
        };
        for b in &s.backends {
            for sc in bound(b) {
                p.add(&sc, &tasks, Rec::Addr(b.ip), true);
            }
        }
        match s.mode {
            EndpointMode::Vip => {
                if k_global {
                    for ip in &s.cluster_ips {
                        p.add(&None, &k, Rec::Addr(*ip), false);
                        for n in &nets {
                            p.add(n, &s.name, Rec::Addr(*ip), false);
                        }
                    }
                } else {
                    for (net, ip) in &s.vips {
                        let sc = Some(net.clone());
                        p.add(&sc, &s.name, Rec::Addr(*ip), false);
                        p.add(&sc, &k, Rec::Addr(*ip), false);
                    }
                }
                let k_scopes: Vec<Scope> = if k_global {
                    vec![None]
                } else {
                    nets.iter().cloned().collect()
                };
                for port in &s.ports {
                    let proto = port.proto;
                    let srv = |target: &str| Rec::Srv {
                        port: port.port,
                        target: normalize(target),
                    };
                    for n in &nets {
                        p.add(
                            n,
                            &format!("_{}._{proto}.{}", port.port, s.name),
                            srv(&s.name),
                            false,
                        );
                    }
                    for sc in &k_scopes {
                        p.add(sc, &format!("_{}._{proto}.{k}", port.port), srv(&k), false);
                        if let Some(pn) = &port.name {
                            p.add(sc, &format!("_{pn}._{proto}.{k}"), srv(&k), false);
                        }
                    }
                }
            }
            EndpointMode::Dnsrr => {
                for b in &s.backends {
                    let host = format!("{}.{k}", host_label(b));
                    let k_scope: Scope = b.network.clone();
                    for sc in bound(b) {
                        p.add(&sc, &s.name, Rec::Addr(b.ip), true);
                    }
                    p.add(&k_scope, &k, Rec::Addr(b.ip), true);
                    p.add(&k_scope, &host, Rec::Addr(b.ip), false);
                    for port in &s.ports {
                        let proto = port.proto;
                        let srv = Rec::Srv {
                            port: port.target_port,
                            target: host.clone(),
                        };
                        for sc in bound(b) {
                            p.add(
                                &sc,
                                &format!("_{}._{proto}.{}", port.target_port, s.name),
                                srv.clone(),
                                true,
                            );
                        }
                        p.add(
                            &k_scope,
                            &format!("_{}._{proto}.{k}", port.target_port),
                            srv.clone(),
                            true,
                        );
                        if let Some(pn) = &port.name {
                            p.add(&k_scope, &format!("_{pn}._{proto}.{k}"), srv.clone(), true);
                        }
                    }
                }
            }
        }
        // Decide what is taken before adding anything: a service's own names do not
        // shadow each other.
        let free: Vec<bool> = p
            .names
            .keys()
            .map(|(sc, name)| !self.taken(sc.as_deref(), name))
            .collect();
        for (((sc, name), (recs, rotate)), free) in p.names.into_iter().zip(free) {
            if !free {
                continue;
            }
            self.touch(sc.as_deref(), &name);
            for r in recs {
                if rotate {
                    self.insert_rotating(sc.as_deref(), &name, r);
                } else {
                    self.add_rec(sc.as_deref(), &name, r);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
