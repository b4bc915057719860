//! A `v1 Service` or `discovery.k8s.io/v1 EndpointSlice` to netd's model, with
//! Kubernetes' validation rules for the fields netd uses (one-line errors naming the
//! object and the field). Fields netd has no use for on one host (`ipFamilies`,
//! `internalTrafficPolicy`, topology hints, `appProtocol`) are accepted and ignored; fields
//! that would change what a client gets and netd cannot do (`type: LoadBalancer`,
//! `externalIPs`, SCTP, FQDN endpoints) are refused rather than ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice as K8sSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::K8sError;
use crate::model::{
    check_label, check_target, parse_selector, ClusterIp, EndpointMode, EndpointSlice, KubePort, KubeSpec,
    KubeType, Proto, ServiceKind, SessionAffinity, SliceEndpoint, SlicePort, TargetPort,
    DEFAULT_AFFINITY_SECS, DEFAULT_NAMESPACE, MAX_AFFINITY_SECS, NODE_PORTS, SERVICE_NAME_LABEL,
};

/// What `spec.clusterIP` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantClusterIp {
    /// Unset or "": the engine picks one from `--service-cidr`.
    Allocate,
    /// "None": a headless service.
    Headless,
    /// This address (it must lie in `--service-cidr` and be free).
    Ip(IpAddr),
    /// An ExternalName service has none.
    NotApplicable,
}

/// A translated Service. For `cluster_ip` services `kind` carries a `KubeSpec` whose
/// ClusterIP and unset NodePorts the engine still has to fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeService {
    pub name: String,
    pub namespace: String,
    pub kind: ServiceKind,
    pub cluster_ip: WantClusterIp,
}

/// A translated EndpointSlice, with the service it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSlice {
    pub name: String,
    pub namespace: String,
    pub service: String,
    pub slice: EndpointSlice,
}

fn invalid(object: &str, why: impl Into<String>) -> K8sError {
    K8sError::Invalid {
        object: object.into(),
        why: why.into(),
    }
}

fn name_and_namespace(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    letter_first: bool,
) -> Result<(String, String, String), K8sError> {
    let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
        return Err(invalid(kind, "metadata.name is required"));
    };
    let ns = meta
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    let object = format!("{kind} {ns}/{name}");
    check_label("metadata.name", &name, letter_first).map_err(|e| invalid(&object, e))?;
    check_label("metadata.namespace", &ns, false).map_err(|e| invalid(&object, e))?;
    Ok((name, ns, object))
}

fn proto(object: &str, field: &str, p: Option<&str>) -> Result<Proto, K8sError> {
    match p {
        None | Some("TCP") => Ok(Proto::Tcp),
        Some("UDP") => Ok(Proto::Udp),
        Some(other) => Err(invalid(
            object,
            format!("{field}: protocol {other:?} is not supported (TCP or UDP)"),
        )),
    }
}

fn port_number(object: &str, field: &str, n: i32) -> Result<u16, K8sError> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(invalid(
            object,
            format!("{field}: {n} is not a port number (1-65535)"),
        )),
    }
}

/// Kubernetes' IANA_SVC_NAME, the syntax of a named port: at most 15 lowercase letters,
/// digits and '-', at least one letter, no '-' at either end or twice in a row.
fn port_name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(u8::is_ascii_lowercase)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--")
}

/// A `v1 Service` in netd's model.
pub fn service(svc: &K8sService) -> Result<KubeService, K8sError> {
    let (name, namespace, object) = name_and_namespace("Service", &svc.metadata, true)?;
    let spec = svc.spec.clone().unwrap_or_default();
    let bad = |why: String| invalid(&object, why);
    let type_ =
        match spec.type_.as_deref() {
            None | Some("ClusterIP") => KubeType::ClusterIP,
            Some("NodePort") => KubeType::NodePort,
            Some("ExternalName") => {
                let target = spec
                    .external_name
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| bad("spec.externalName is required for type ExternalName".into()))?;
                return Ok(KubeService {
                    name,
                    namespace,
                    kind: ServiceKind::ExternalName {
                        target: check_target(target).map_err(bad)?,
                    },
                    cluster_ip: WantClusterIp::NotApplicable,
                });
            }
            Some("LoadBalancer") => return Err(bad(
                "spec.type LoadBalancer is not supported: netd has no load-balancer provider (use NodePort)"
                    .into(),
            )),
            Some(t) => {
                return Err(bad(format!(
                    "spec.type {t:?} is not one of ClusterIP, NodePort, ExternalName"
                )))
            }
        };
    if spec.external_ips.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(bad("spec.externalIPs is not supported".into()));
    }
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") => WantClusterIp::Allocate,
        Some("None") => WantClusterIp::Headless,
        Some(ip) => WantClusterIp::Ip(
            ip.parse()
                .map_err(|_| bad(format!("spec.clusterIP {ip:?} is not an IP address or \"None\"")))?,
        ),
    };
    if let (Some(ips), Some(first)) = (&spec.cluster_ips, spec.cluster_ip.as_deref()) {
        if ips.first().is_some_and(|f| f != first) {
            return Err(bad(format!(
                "spec.clusterIPs[0] {:?} must equal spec.clusterIP {first:?}",
                ips[0]
            )));
        }
    }
    let headless = cluster_ip == WantClusterIp::Headless;
    if headless && type_ == KubeType::NodePort {
        return Err(bad("spec.clusterIP may not be \"None\" for type NodePort".into()));
    }
    let local = match spec.external_traffic_policy.as_deref() {
        None | Some("Cluster") => false,
        Some("Local") if type_ == KubeType::NodePort => true,
        Some("Local") => {
            return Err(bad(
                "spec.externalTrafficPolicy Local applies to type NodePort only".into(),
            ))
        }
        Some(p) => {
            return Err(bad(format!(
                "spec.externalTrafficPolicy {p:?} is not Cluster or Local"
            )))
        }
    };
    let ports_in = spec.ports.clone().unwrap_or_default();
    if ports_in.is_empty() && !headless {
        return Err(bad("spec.ports: at least one port is required".into()));
    }
    let mut ports = Vec::new();
    let (mut names, mut seen) = (BTreeSet::new(), BTreeSet::new());
    for (i, p) in ports_in.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        let pname = p.name.clone().unwrap_or_default();
        if ports_in.len() > 1 && pname.is_empty() {
            return Err(bad(format!(
                "{field}.name is required when a service has more than one port"
            )));
        }
        if !pname.is_empty() && !port_name_ok(&pname) {
            return Err(bad(format!(
                "{field}.name {pname:?}: use at most 15 lowercase letters, digits and '-', with a letter"
            )));
        }
        if !names.insert(pname.clone()) {
            return Err(bad(format!("{field}.name {pname:?} is used twice")));
        }
        let port = port_number(&object, &format!("{field}.port"), p.port)?;
        let proto = proto(&object, &format!("{field}.protocol"), p.protocol.as_deref())?;
        if !seen.insert((port, proto)) {
            return Err(bad(format!("{field}: port {port}/{proto} is listed twice")));
        }
        let target = match &p.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => {
                TargetPort::Number(port_number(&object, &format!("{field}.targetPort"), *n)?)
            }
            Some(IntOrString::String(s)) if port_name_ok(s) => TargetPort::Name(s.clone()),
            Some(IntOrString::String(s)) => {
                return Err(bad(format!(
                    "{field}.targetPort {s:?} is neither a port number nor a port name"
                )))
            }
        };
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(_) if type_ != KubeType::NodePort => {
                return Err(bad(format!("{field}.nodePort may only be set for type NodePort")))
            }
            Some(n) => {
                let np = u16::try_from(n)
                    .ok()
                    .filter(|np| (NODE_PORTS.0..=NODE_PORTS.1).contains(np));
                Some(np.ok_or_else(|| {
                    bad(format!(
                        "{field}.nodePort {n} is outside the NodePort range {}-{}",
                        NODE_PORTS.0, NODE_PORTS.1
                    ))
                })?)
            }
        };
        ports.push(KubePort {
            name: pname,
            port,
            proto,
            target,
            node_port,
        });
    }
    let terms: Vec<String> = spec
        .selector
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let selector = parse_selector(&terms).map_err(|e| bad(format!("spec.selector: {e}")))?;
    let session_affinity = match spec.session_affinity.as_deref() {
        None | Some("None") => None,
        // A headless service has no VIP to hold affinity: Kubernetes ignores it there.
        Some("ClientIP") if headless => None,
        Some("ClientIP") => {
            let secs = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout_secs = match secs {
                None => DEFAULT_AFFINITY_SECS,
                Some(s) if s > 0 && s as u32 <= MAX_AFFINITY_SECS => s as u32,
                Some(s) => {
                    return Err(bad(format!(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds {s} is not within 1-{MAX_AFFINITY_SECS}"
                    )))
                }
            };
            Some(SessionAffinity { timeout_secs })
        }
        Some(a) => return Err(bad(format!("spec.sessionAffinity {a:?} is not None or ClientIP"))),
    };
    let kube = KubeSpec {
        type_,
        cluster_ip: match cluster_ip {
            WantClusterIp::Ip(ip) => Some(ip),
            _ => None,
        },
        ports,
        external_traffic_local: local,
        slices: BTreeMap::new(),
    };
    let c = ClusterIp {
        networks: Vec::new(),
        vips: BTreeMap::new(),
        ports: kube.service_ports(),
        selector,
        backends: Vec::new(),
        endpoint_mode: if headless {
            EndpointMode::Dnsrr
        } else {
            EndpointMode::Vip
        },
        session_affinity,
        // NodePorts: the engine fills them in once every one is known (`published_node_ports`).
        published: Vec::new(),
        kubernetes: Some(Box::new(kube)),
    };
    Ok(KubeService {
        name,
        namespace,
        kind: ServiceKind::ClusterIp(c),
        cluster_ip,
    })
}

/// A `discovery.k8s.io/v1 EndpointSlice` in netd's model.
pub fn endpoint_slice(s: &K8sSlice) -> Result<KubeSlice, K8sError> {
    // Slice names are generated (`web-abc12`): a DNS label, digits first allowed.
    let (name, namespace, object) = name_and_namespace("EndpointSlice", &s.metadata, false)?;
    let bad = |why: String| invalid(&object, why);
    let service = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
        .ok_or_else(|| {
            bad(format!(
                "metadata.labels must name its service ({SERVICE_NAME_LABEL})"
            ))
        })?;
    check_label(SERVICE_NAME_LABEL, &service, true).map_err(bad)?;
    let v4 = match s.address_type.as_str() {
        "IPv4" => true,
        "IPv6" => false,
        t => {
            return Err(bad(format!(
                "addressType {t:?} is not supported: netd balances over IPv4 or IPv6 addresses"
            )))
        }
    };
    let mut endpoints = Vec::new();
    for (i, e) in s.endpoints.iter().enumerate() {
        if e.addresses.is_empty() {
            return Err(bad(format!(
                "endpoints[{i}].addresses: at least one address is required"
            )));
        }
        let mut addresses = Vec::new();
        for a in &e.addresses {
            let ip: IpAddr = a
                .parse()
                .map_err(|_| bad(format!("endpoints[{i}].addresses: {a:?} is not an IP address")))?;
            if ip.is_ipv4() != v4 {
                return Err(bad(format!(
                    "endpoints[{i}].addresses: {a} is not of addressType {}",
                    s.address_type
                )));
            }
            addresses.push(ip);
        }
        // "ready" unset means ready (the API's documented default).
        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        endpoints.push(SliceEndpoint { addresses, ready });
    }
    let mut ports = Vec::new();
    let mut names = BTreeSet::new();
    for (i, p) in s.ports.clone().unwrap_or_default().iter().enumerate() {
        let field = format!("ports[{i}]");
        let pname = p.name.clone().unwrap_or_default();
        let proto = proto(&object, &format!("{field}.protocol"), p.protocol.as_deref())?;
        if !names.insert((pname.clone(), proto)) {
            return Err(bad(format!("{field}.name {pname:?} is used twice")));
        }
        let Some(n) = p.port else {
            return Err(bad(format!(
                "{field}.port is required (netd does not forward every port of an endpoint)"
            )));
        };
        ports.push(SlicePort {
            name: pname,
            port: port_number(&object, &format!("{field}.port"), n)?,
            proto,
        });
    }
    ports.sort();
    Ok(KubeSlice {
        name,
        namespace,
        service,
        slice: EndpointSlice { endpoints, ports },
    })
}
