//! Services: a name in a Kubernetes-style namespace that is not a sandbox. Two kinds,
//! stored under the same key and listed by the same API:
//! - `external_name` (Kubernetes' ExternalName: `<name>.<namespace>.svc.<domain>` is a
//!   CNAME to a name outside);
//! - `cluster_ip`: backends (sandboxes chosen by a label selector and/or by name) behind
//!   a VIP on each of the service's networks, balanced in nftables
//!   (`firewall::ruleset::services`), or with endpoint mode `dnsrr` no VIP and DNS
//!   answering with every backend (Kubernetes' headless service, Docker's dnsrr).
//!
//! `spec` parses the command-line pieces of a `cluster_ip` service, `select` finds its
//! backends among the sandboxes. All pure: the engine checks names against what exists,
//! allocates VIPs and applies the ruleset.

mod select;
mod spec;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::names::validate_name;
use super::network::Subnet;
use super::port::PortMapping;
pub use select::{select_backends, Backend};
pub use spec::{
    check_port_name, parse_endpoint_mode, parse_published, parse_published_ports, parse_selector,
    parse_service_ports, parse_session_affinity, EndpointMode, PublishMode, PublishedPort, ServiceError,
    ServicePort, SessionAffinity,
};

/// The namespace a service lands in when the request names none (Kubernetes' default).
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServiceKind {
    /// `<name>.<namespace>.svc.<domain>` CNAME `target`.
    ExternalName { target: String },
    /// Backends behind a VIP per network (or DNS round robin).
    ClusterIp(ClusterIp),
}

/// A load-balanced service. Field names are the JSON the store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIp {
    /// The networks the service has a VIP on and takes backends from, as given.
    pub networks: Vec<String>,
    /// network -> VIP. After `ServiceRequest::parse` only the VIPs the request asked
    /// for; the engine allocates the others from each network's subnet (as Docker does
    /// per network). Always empty in dnsrr mode.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vips: BTreeMap<String, IpAddr>,
    /// Sorted; one entry per port/protocol.
    pub ports: Vec<ServicePort>,
    /// Labels a sandbox must all carry to be a backend.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// Sandboxes that are backends by name, whatever their labels. Sorted, no duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// Sorted; one entry per published port/protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<PublishedPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub id: String,
    #[serde(flatten)]
    pub kind: ServiceKind,
    /// As on networks and sandboxes (`netd.stack=…` marks a stack's services).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub created: u64,
}

impl Service {
    /// The store key, unique per namespace as in Kubernetes.
    pub fn key(&self) -> String {
        service_key(&self.namespace, &self.name)
    }
}

pub fn service_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// `POST /v1/services`. `kind` may be left out when `external_name` says it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceRequest {
    pub name: String,
    pub namespace: Option<String>,
    pub kind: Option<String>,
    pub external_name: Option<String>,
    /// `cluster_ip`: `--network NET` (at least one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// `--port port[:targetPort][/tcp|udp]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// `--selector k=v`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub selector: Vec<String>,
    /// `--backend SANDBOX`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// `--endpoint-mode vip|dnsrr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_mode: Option<String>,
    /// `--session-affinity client-ip[:SECONDS]|none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<String>,
    /// `-p PUBLISHED:TARGET[/udp][,mode=host|ingress]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// network -> the VIP asked for there (the engine picks one where none is asked).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub vips: BTreeMap<String, String>,
    /// `--label k=v`, kept on the service as given.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A DNS label as Kubernetes wants for namespaces (RFC 1123) and, when `letter_first`,
/// for service names (RFC 1035): lowercase letters, digits and '-', at most 63, no '-'
/// at either end.
fn check_label(what: &str, s: &str, letter_first: bool) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && (!letter_first || s.as_bytes()[0].is_ascii_lowercase());
    if ok {
        return Ok(());
    }
    let first = if letter_first {
        "a letter"
    } else {
        "a letter or digit"
    };
    Err(format!(
        "invalid {what} {s:?}: use at most 63 lowercase letters, digits and '-', starting with {first} and not ending with '-'"
    ))
}

/// The target of an ExternalName: a host name (not an address), lowercased, without the
/// trailing dot.
fn check_target(t: &str) -> Result<String, String> {
    let name = t.strip_suffix('.').unwrap_or(t).to_ascii_lowercase();
    let bad = |why: &str| Err(format!("invalid external name {t:?}: {why}"));
    if name.is_empty() {
        return bad("expected a DNS name such as db.example.com");
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return bad("an ExternalName is a DNS name (a CNAME), not an IP address");
    }
    if name.len() > 253 {
        return bad("longer than 253 characters");
    }
    for l in name.split('.') {
        let ok = !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-');
        if !ok {
            return bad("each dot-separated label needs 1 to 63 letters, digits, '-' or '_', not starting or ending with '-'");
        }
    }
    Ok(name)
}

impl ServiceRequest {
    /// Checks the request and returns the service it describes (without id and time).
    pub fn parse(&self) -> Result<(String, String, ServiceKind), String> {
        check_label("service name", &self.name, true)?;
        let ns = self.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        check_label("namespace", &ns, false)?;
        let balanced = !self.networks.is_empty();
        let kind = match (self.kind.as_deref(), &self.external_name) {
            (None | Some("external_name"), Some(t)) => {
                if self.has_cluster_ip_fields() {
                    return Err("an external_name service takes no networks, ports, selector, backends, \
                                endpoint mode, affinity, published ports or VIPs"
                        .into());
                }
                ServiceKind::ExternalName {
                    target: check_target(t)?,
                }
            }
            (None, None) if balanced => ServiceKind::ClusterIp(self.cluster_ip().map_err(|e| e.to_string())?),
            (Some("cluster_ip"), None) => ServiceKind::ClusterIp(self.cluster_ip().map_err(|e| e.to_string())?),
            (Some("cluster_ip"), Some(_)) => {
                return Err("a cluster_ip service has no external name (that is the external_name kind)".into())
            }
            (None | Some("external_name"), None) => {
                return Err(
                    "a service needs a target (--external-name NAME) or, to balance over backends, a network (--network NET)"
                        .into(),
                )
            }
            (Some(k), _) => {
                return Err(format!(
                    "unknown service kind {k:?}: netd has external_name and cluster_ip"
                ))
            }
        };
        Ok((self.name.clone(), ns, kind))
    }

    fn has_cluster_ip_fields(&self) -> bool {
        !(self.networks.is_empty()
            && self.ports.is_empty()
            && self.selector.is_empty()
            && self.backends.is_empty()
            && self.endpoint_mode.is_none()
            && self.session_affinity.is_none()
            && self.publish.is_empty()
            && self.vips.is_empty())
    }

    /// The `cluster_ip` part of the request, typed. Names of networks and sandboxes are
    /// checked for syntax only: whether they exist is the engine's question.
    pub fn cluster_ip(&self) -> Result<ClusterIp, ServiceError> {
        if self.networks.is_empty() {
            return Err(ServiceError::NoNetwork);
        }
        let mut networks: Vec<String> = Vec::new();
        for n in &self.networks {
            validate_name(n).map_err(|e| ServiceError::Invalid {
                what: "network",
                value: n.clone(),
                why: e.to_string(),
            })?;
            if networks.contains(n) {
                return Err(ServiceError::DuplicateNetwork(n.clone()));
            }
            networks.push(n.clone());
        }
        let endpoint_mode = match &self.endpoint_mode {
            Some(m) => parse_endpoint_mode(m)?,
            None => EndpointMode::Vip,
        };
        let ports = parse_service_ports(&self.ports)?;
        if ports.is_empty() && endpoint_mode == EndpointMode::Vip {
            return Err(ServiceError::NoPorts);
        }
        let selector = parse_selector(&self.selector)?;
        let mut backends = self.backends.clone();
        for b in &backends {
            validate_name(b).map_err(|e| ServiceError::Invalid {
                what: "backend",
                value: b.clone(),
                why: e.to_string(),
            })?;
        }
        backends.sort();
        backends.dedup();
        let session_affinity = match &self.session_affinity {
            Some(a) => parse_session_affinity(a)?,
            None => None,
        };
        if session_affinity.is_some() && endpoint_mode == EndpointMode::Dnsrr {
            return Err(ServiceError::DnsrrAffinity);
        }
        let published = parse_published_ports(&self.publish, &ports, endpoint_mode)?;
        let mut vips = BTreeMap::new();
        for (net, ip) in &self.vips {
            if endpoint_mode == EndpointMode::Dnsrr {
                return Err(ServiceError::DnsrrVip(net.clone()));
            }
            if !networks.contains(net) {
                return Err(ServiceError::VipOffNetwork {
                    network: net.clone(),
                    ip: ip.clone(),
                });
            }
            let addr: IpAddr = ip.parse().map_err(|_| ServiceError::Invalid {
                what: "VIP",
                value: ip.clone(),
                why: "not an IP address".into(),
            })?;
            vips.insert(net.clone(), addr);
        }
        Ok(ClusterIp {
            networks,
            vips,
            ports,
            selector,
            backends,
            endpoint_mode,
            session_affinity,
            published,
        })
    }
}

impl ClusterIp {
    /// Checks the service against what exists: its networks and named backends, and its
    /// published ports against the host ports in use (`in_use`: each with who holds it,
    /// such as a sandbox's `-p` or another service's `-p`). Both publish modes hold the
    /// host port on every address (ingress directly, host mode on each backend).
    pub fn check_refs(
        &self,
        known_network: impl Fn(&str) -> bool,
        known_sandbox: impl Fn(&str) -> bool,
        in_use: &[(PortMapping, String)],
    ) -> Result<(), ServiceError> {
        if let Some(n) = self.networks.iter().find(|n| !known_network(n)) {
            return Err(ServiceError::UnknownNetwork(n.clone()));
        }
        if let Some(b) = self.backends.iter().find(|b| !known_sandbox(b)) {
            return Err(ServiceError::UnknownSandbox(b.clone()));
        }
        for p in &self.published {
            let mine = PortMapping {
                host_ip: None,
                host_port: p.published,
                container_port: p.target,
                proto: p.proto,
            };
            if let Some((_, by)) = in_use.iter().find(|(m, _)| m.clashes(&mine)) {
                return Err(ServiceError::PublishedInUse {
                    port: p.published,
                    proto: p.proto,
                    by: by.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Whether `ip` can be the VIP of a service on `network`, whose subnets are `subnets`:
/// inside one of them, and not its network, broadcast (IPv4) or gateway address.
/// Whether another service or an endpoint holds it already is IPAM's answer.
pub fn check_vip(network: &str, subnets: &[Subnet], ip: IpAddr) -> Result<(), ServiceError> {
    let err = |which: &'static str| ServiceError::VipReserved {
        network: network.into(),
        ip: ip.to_string(),
        which,
    };
    let Some(s) = subnets.iter().find(|s| s.subnet.contains(ip)) else {
        return Err(ServiceError::VipOutsideSubnet {
            network: network.into(),
            ip: ip.to_string(),
        });
    };
    if ip == s.subnet.network() {
        return Err(err("network"));
    }
    if ip.is_ipv4() && s.subnet.prefix() < 31 && ip == s.subnet.broadcast() {
        return Err(err("broadcast"));
    }
    if ip == s.gateway {
        return Err(err("gateway"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, ns: Option<&str>, target: Option<&str>) -> ServiceRequest {
        ServiceRequest {
            name: name.into(),
            namespace: ns.map(Into::into),
            external_name: target.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn parses_an_external_name() {
        let (n, ns, k) = req("db", None, Some("DB.Example.com.")).parse().unwrap();
        assert_eq!((n.as_str(), ns.as_str()), ("db", "default"));
        assert_eq!(
            k,
            ServiceKind::ExternalName {
                target: "db.example.com".into()
            }
        );
        let (_, ns, _) = req("db", Some("prod-1"), Some("x")).parse().unwrap();
        assert_eq!(ns, "prod-1");
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for (r, want) in [
            (req("", None, Some("x")), "service name"),
            (req("Db", None, Some("x")), "service name"),
            (req("1db", None, Some("x")), "service name"),
            (req("db-", None, Some("x")), "service name"),
            (req(&"a".repeat(64), None, Some("x")), "service name"),
            (req("db", Some("Prod"), Some("x")), "namespace"),
            (req("db", Some("a.b"), Some("x")), "namespace"),
            (req("db", None, None), "needs a target"),
            (req("db", None, Some("")), "external name"),
            (req("db", None, Some("10.0.0.1")), "not an IP address"),
            (req("db", None, Some("a..b")), "label"),
            (req("db", None, Some("-a.b")), "label"),
            (req("db", None, Some("a b")), "label"),
            (req("db", None, Some(&format!("{}.com", "a".repeat(64)))), "label"),
        ] {
            let e = r.parse().unwrap_err();
            assert!(e.contains(want), "{r:?}: {e}");
        }
        let mut r = req("db", None, Some("x"));
        r.kind = Some("vip".into());
        assert!(r.parse().unwrap_err().contains("unknown service kind"));
    }

    #[test]
    fn json_has_a_kind_field_for_later_kinds() {
        let s = Service {
            name: "db".into(),
            namespace: "prod".into(),
            id: "1".into(),
            kind: ServiceKind::ExternalName { target: "x.y".into() },
            labels: Default::default(),
            created: 0,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["kind"], "external_name");
        assert_eq!(v["target"], "x.y");
        assert_eq!(serde_json::from_value::<Service>(v).unwrap(), s);
        assert_eq!(s.key(), "prod/db");
    }
}

#[cfg(test)]
mod cluster_ip_tests;
