//! The Kubernetes part of a `cluster_ip` service applied with `netctl apply`
//! (`k8s::translate` makes it from a `v1 Service` and its `discovery.k8s.io/v1
//! EndpointSlice`s). It extends netd's own model rather than living beside it: the
//! service's `ports`, `selector`, `session_affinity` and `published` (NodePorts, in
//! ingress mode) are the common fields, so the same datapath (`FwService`) and the same
//! clash checks serve both. What only Kubernetes has is here:
//! - a cluster-wide VIP from `--service-cidr`, reachable from every network, instead of
//!   a VIP per network (headless services, `clusterIP: None`, have none and are dnsrr);
//! - port names and named target ports, resolved through the EndpointSlices' ports by
//!   name, as kube-proxy does;
//! - explicit endpoints from EndpointSlices (by IP, with their ready condition): when a
//!   service has slices, they are its endpoints (netd is then a kube-proxy replacement);
//!   without, its selector picks sandboxes on every network (netd is also the endpoint
//!   controller);
//! - `externalTrafficPolicy`: `Cluster` masquerades NodePort traffic, `Local` keeps the
//!   client's address.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Backend, ServicePort};
use crate::model::Proto;

/// The pseudo network of a cluster-wide VIP (`FwVip::network`, `Backend::network` of
/// EndpointSlice endpoints). A Docker network name starts with a letter or digit, so no
/// network can be called this.
pub const CLUSTER_WIDE: &str = "_cluster";

/// The port range NodePorts come from (Kubernetes' default `--service-node-port-range`).
pub const NODE_PORTS: (u16, u16) = (30000, 32767);

/// Label naming the service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KubeType {
    #[default]
    ClusterIP,
    NodePort,
}

/// A service port's `targetPort`: a number, or the name of a port of the endpoints.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubePort {
    /// "" for a service's only, unnamed port.
    #[serde(default)]
    pub name: String,
    pub port: u16,
    pub proto: Proto,
    pub target: TargetPort,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

/// One endpoint of an EndpointSlice: its addresses (one family, the slice's) and
/// whether it takes new connections (`conditions.ready`; unset means ready).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceEndpoint {
    pub addresses: Vec<IpAddr>,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlicePort {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    pub proto: Proto,
}

/// A `discovery.k8s.io/v1 EndpointSlice` of the service (addressType IPv4 or IPv6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSlice {
    pub endpoints: Vec<SliceEndpoint>,
    pub ports: Vec<SlicePort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeSpec {
    #[serde(rename = "type", default)]
    pub type_: KubeType,
    /// The ClusterIP; None for a headless service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<IpAddr>,
    /// As in the object, in its order.
    pub ports: Vec<KubePort>,
    /// `externalTrafficPolicy: Local`: NodePort traffic keeps the client's address.
    #[serde(default)]
    pub external_traffic_local: bool,
    /// The service's EndpointSlices by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slices: BTreeMap<String, EndpointSlice>,
}

impl KubeSpec {
    /// The port the backends listen on for service port `p`: the slices' port of the
    /// same name and protocol when the service has slices (kube-proxy's rule; the first
    /// slice by name wins if they disagree), else a numeric `targetPort`. None: a named
    /// target with no slice to name it, so nothing can serve that port.
    pub fn resolve_target(&self, p: &KubePort) -> Option<u16> {
        if !self.slices.is_empty() {
            return self
                .slices
                .values()
                .flat_map(|s| &s.ports)
                .find(|sp| sp.name == p.name && sp.proto == p.proto)
                .map(|sp| sp.port);
        }
        match &p.target {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(_) => None,
        }
    }

    /// The ready endpoint addresses of every slice, sorted (None without slices).
    pub fn slice_backends(&self) -> Option<Vec<Backend>> {
        if self.slices.is_empty() {
            return None;
        }
        let mut out: Vec<Backend> = self
            .slices
            .iter()
            .flat_map(|(name, s)| {
                s.endpoints.iter().filter(|e| e.ready).flat_map(move |e| {
                    e.addresses.iter().map(move |ip| Backend {
                        network: CLUSTER_WIDE.into(),
                        sandbox: format!("endpointslice/{name}"),
                        ip: *ip,
                    })
                })
            })
            .collect();
        out.sort();
        // One address in two slices is one backend.
        out.dedup_by(|a, b| a.ip == b.ip);
        Some(out)
    }

    /// The model's ports: a named target stands for itself until resolved (the port
    /// number is kept there so the common checks, which want a number, still hold).
    pub fn service_ports(&self) -> Vec<ServicePort> {
        let mut out: Vec<ServicePort> = self
            .ports
            .iter()
            .map(|p| ServicePort {
                port: p.port,
                target_port: match p.target {
                    TargetPort::Number(n) => n,
                    TargetPort::Name(_) => p.port,
                },
                proto: p.proto,
                name: (!p.name.is_empty()).then(|| p.name.clone()),
            })
            .collect();
        out.sort();
        out
    }
}
