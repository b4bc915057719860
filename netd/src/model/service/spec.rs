//! The pieces of a load-balanced (`cluster_ip`) service and their command-line syntax:
//! ports `port[:targetPort][/tcp|udp]`, label selectors `k=v` (Kubernetes' rules for
//! keys and values), session affinity `client-ip[:SECONDS]` and published ports
//! `PUBLISHED:TARGET[/udp][,mode=host|ingress]`. Each parser returns a typed value or a
//! `ServiceError` whose text is one line naming the input and what is wrong with it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::Proto;

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_SECS: u32 = 10_800;
/// Kubernetes' upper bound for the same field (one day).
pub const MAX_AFFINITY_SECS: u32 = 86_400;

/// Everything that can be wrong with a service request, one variant per failure.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ServiceError {
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("port {port}/{proto} is listed twice")]
    DuplicatePort { port: u16, proto: Proto },
    #[error("published port {port}/{proto} is listed twice")]
    DuplicatePublished { port: u16, proto: Proto },
    #[error("selector key {0:?} is given twice with different values")]
    DuplicateSelector(String),
    #[error("published port {published}/{proto}: target {target} is not a target port of the service (its ports: {ports})")]
    UnknownTarget {
        published: u16,
        target: u16,
        proto: Proto,
        ports: String,
    },
    #[error("a service needs at least one network (--network NET)")]
    NoNetwork,
    #[error("network {0:?} is listed twice")]
    DuplicateNetwork(String),
    #[error("endpoint mode dnsrr has no VIP, so it cannot publish port {0} in ingress mode (use mode=host)")]
    DnsrrIngress(u16),
    #[error("endpoint mode dnsrr has no VIP to take session affinity")]
    DnsrrAffinity,
    #[error("VIP {ip} given for network {network:?}, which the service is not on")]
    VipOffNetwork { network: String, ip: String },
    #[error("VIP {ip} is outside every subnet of network {network:?}")]
    VipOutsideSubnet { network: String, ip: String },
    #[error("VIP {ip} on network {network:?} is the subnet's {which} address")]
    VipReserved {
        network: String,
        ip: String,
        which: &'static str,
    },
    #[error("endpoint mode dnsrr has no VIP (VIP given for network {0:?})")]
    DnsrrVip(String),
    #[error("endpoint mode vip needs at least one port (--port PORT[:TARGET][/udp])")]
    NoPorts,
    #[error("no such network: {0}")]
    UnknownNetwork(String),
    #[error("no such sandbox: {0} (named as a backend)")]
    UnknownSandbox(String),
    #[error("published port {port}/{proto} is already used by {by}")]
    PublishedInUse { port: u16, proto: Proto, by: String },
}

fn invalid(what: &'static str, value: &str, why: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        what,
        value: value.into(),
        why: why.into(),
    }
}

/// One port of a service: clients connect to `port` on the VIP, backends listen on
/// `target_port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    pub port: u16,
    pub target_port: u16,
    pub proto: Proto,
    /// Kubernetes' port name (`ports[].name` of a Service), which DNS serves as
    /// `_NAME._PROTO.<service>.<ns>.svc.<domain>` SRV. netd's own `--port` specs carry
    /// none (their SRV names use the number); stored services without it read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.port, self.target_port, self.proto)
    }
}

fn port_number(what: &'static str, spec: &str, s: &str) -> Result<u16, ServiceError> {
    match s.parse::<u16>() {
        Ok(0) => Err(invalid(what, spec, "port 0 is not allowed")),
        Ok(p) => Ok(p),
        Err(_) => Err(invalid(
            what,
            spec,
            format!("{s:?} is not a port number (1-65535)"),
        )),
    }
}

fn proto_of(what: &'static str, spec: &str, s: Option<&str>) -> Result<Proto, ServiceError> {
    match s.map(str::to_ascii_lowercase).as_deref() {
        None | Some("tcp") => Ok(Proto::Tcp),
        Some("udp") => Ok(Proto::Udp),
        Some(p) => Err(invalid(what, spec, format!("protocol {p:?} is not tcp or udp"))),
    }
}

/// `port[:targetPort][/tcp|udp]`; the target port defaults to the port, the protocol to
/// TCP.
pub fn parse_service_port(spec: &str) -> Result<ServicePort, ServiceError> {
    const W: &str = "service port";
    let (body, proto) = match spec.split_once('/') {
        Some((b, p)) => (b, proto_of(W, spec, Some(p))?),
        None => (spec, Proto::Tcp),
    };
    let (port, target_port) = match body.split_once(':') {
        Some((p, t)) => (port_number(W, spec, p)?, port_number(W, spec, t)?),
        None => {
            let p = port_number(W, spec, body)?;
            (p, p)
        }
    };
    Ok(ServicePort {
        port,
        target_port,
        proto,
        name: None,
    })
}

/// A port name as Kubernetes takes it in a Service (`DNS_LABEL`: 1-63 lowercase letters,
/// digits and '-', not starting or ending with '-'); DNS puts it in an SRV name
/// (`_NAME._tcp...`), where anything else would not be one label.
pub fn check_port_name(name: &str) -> Result<(), ServiceError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        return Ok(());
    }
    Err(invalid(
        "port name",
        name,
        "use 1 to 63 lowercase letters, digits and '-', not starting or ending with '-'",
    ))
}

/// Parses every spec and refuses a port/protocol pair given twice. Sorted, so the same
/// ports in another order are the same service.
pub fn parse_service_ports(specs: &[String]) -> Result<Vec<ServicePort>, ServiceError> {
    let mut out: Vec<ServicePort> = specs
        .iter()
        .map(|s| parse_service_port(s))
        .collect::<Result<_, _>>()?;
    out.sort();
    for w in out.windows(2) {
        if (w[0].port, w[0].proto) == (w[1].port, w[1].proto) {
            return Err(ServiceError::DuplicatePort {
                port: w[0].port,
                proto: w[0].proto,
            });
        }
    }
    Ok(out)
}

/// Kubernetes' "qualified name" part: 1-63 characters, alphanumeric at both ends,
/// `-`, `_`, `.` between.
fn label_name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS subdomain (RFC 1123) as Kubernetes wants for a key's prefix: lowercase, at most
/// 253 characters, dot-separated labels of 1-63.
fn dns_subdomain_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// A label key: `[prefix/]name`, as Kubernetes validates `metadata.labels`.
pub fn check_label_key(key: &str) -> Result<(), ServiceError> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !dns_subdomain_ok(p) {
            return Err(invalid(
                "selector key",
                key,
                "the prefix before '/' must be a lowercase DNS subdomain (such as app.example.com)",
            ));
        }
    }
    if !label_name_ok(name) {
        return Err(invalid(
            "selector key",
            key,
            "the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

/// A label value: empty, or a name as in `label_name_ok`.
pub fn check_label_value(key: &str, value: &str) -> Result<(), ServiceError> {
    if value.is_empty() || label_name_ok(value) {
        return Ok(());
    }
    Err(invalid(
        "selector value",
        &format!("{key}={value}"),
        "a value is empty or 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
    ))
}

/// `k=v` terms (ANDed). The same key twice is allowed only with the same value.
pub fn parse_selector(terms: &[String]) -> Result<BTreeMap<String, String>, ServiceError> {
    let mut out = BTreeMap::new();
    for t in terms {
        let Some((k, v)) = t.split_once('=') else {
            return Err(invalid("selector", t, "expected KEY=VALUE"));
        };
        check_label_key(k)?;
        check_label_value(k, v)?;
        if let Some(old) = out.insert(k.to_string(), v.to_string()) {
            if old != v {
                return Err(ServiceError::DuplicateSelector(k.into()));
            }
        }
    }
    Ok(out)
}

/// Docker's `--endpoint-mode`: a VIP that balances (`vip`), or DNS answering with every
/// backend's address (`dnsrr`, Kubernetes' headless service).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

pub fn parse_endpoint_mode(s: &str) -> Result<EndpointMode, ServiceError> {
    match s {
        "vip" => Ok(EndpointMode::Vip),
        "dnsrr" => Ok(EndpointMode::Dnsrr),
        _ => Err(invalid("endpoint mode", s, "expected vip or dnsrr")),
    }
}

/// Kubernetes' `sessionAffinity: ClientIP`: connections from one client address go to
/// the same backend while it stays idle for less than `timeout_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionAffinity {
    pub timeout_secs: u32,
}

/// `client-ip[:SECONDS]` (1 to 86400, default 10800) or `none`.
pub fn parse_session_affinity(s: &str) -> Result<Option<SessionAffinity>, ServiceError> {
    const W: &str = "session affinity";
    let (kind, secs) = match s.split_once(':') {
        Some((k, t)) => (k, Some(t)),
        None => (s, None),
    };
    match (kind, secs) {
        ("none", None) => Ok(None),
        ("client-ip", None) => Ok(Some(SessionAffinity {
            timeout_secs: DEFAULT_AFFINITY_SECS,
        })),
        ("client-ip", Some(t)) => match t.parse::<u32>() {
            Ok(n) if (1..=MAX_AFFINITY_SECS).contains(&n) => Ok(Some(SessionAffinity { timeout_secs: n })),
            _ => Err(invalid(
                W,
                s,
                format!("timeout {t:?} is not 1 to {MAX_AFFINITY_SECS} seconds"),
            )),
        },
        _ => Err(invalid(W, s, "expected none or client-ip[:SECONDS]")),
    }
}

/// Where a published port is balanced: `ingress`, one host port over every backend (the
/// single-host routing mesh), or `host`, each backend's own host port (Docker's
/// `mode=host`: the engine publishes it on every backend sandbox).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublishedPort {
    pub published: u16,
    /// A target port of the service (`ServicePort::target_port`) of the same protocol.
    pub target: u16,
    pub proto: Proto,
    pub mode: PublishMode,
}

/// `PUBLISHED:TARGET[/tcp|udp][,mode=host|ingress]`.
pub fn parse_published(spec: &str) -> Result<PublishedPort, ServiceError> {
    const W: &str = "published port";
    let (ports, mode) = match spec.split_once(',') {
        None => (spec, PublishMode::Ingress),
        Some((p, "mode=ingress")) => (p, PublishMode::Ingress),
        Some((p, "mode=host")) => (p, PublishMode::Host),
        Some((_, o)) => {
            return Err(invalid(
                W,
                spec,
                format!("unknown option {o:?} (mode=host or mode=ingress)"),
            ))
        }
    };
    let (body, proto) = match ports.split_once('/') {
        Some((b, p)) => (b, proto_of(W, spec, Some(p))?),
        None => (ports, Proto::Tcp),
    };
    let Some((p, t)) = body.split_once(':') else {
        return Err(invalid(W, spec, "expected PUBLISHED:TARGET[/udp][,mode=host]"));
    };
    Ok(PublishedPort {
        published: port_number(W, spec, p)?,
        target: port_number(W, spec, t)?,
        proto,
        mode,
    })
}

/// Parses the published ports and checks them against the service's ports: each target
/// must be a target port of the same protocol (so the VIP and the host port reach the
/// same listener), a published port/protocol appears once, and dnsrr takes none in
/// ingress mode (there is no VIP to balance with, as Docker refuses).
pub fn parse_published_ports(
    specs: &[String],
    ports: &[ServicePort],
    mode: EndpointMode,
) -> Result<Vec<PublishedPort>, ServiceError> {
    let mut out: Vec<PublishedPort> = specs
        .iter()
        .map(|s| parse_published(s))
        .collect::<Result<_, _>>()?;
    out.sort();
    for w in out.windows(2) {
        if (w[0].published, w[0].proto) == (w[1].published, w[1].proto) {
            return Err(ServiceError::DuplicatePublished {
                port: w[0].published,
                proto: w[0].proto,
            });
        }
    }
    for p in &out {
        if mode == EndpointMode::Dnsrr && p.mode == PublishMode::Ingress {
            return Err(ServiceError::DnsrrIngress(p.published));
        }
        if !ports
            .iter()
            .any(|s| s.target_port == p.target && s.proto == p.proto)
        {
            return Err(ServiceError::UnknownTarget {
                published: p.published,
                target: p.target,
                proto: p.proto,
                ports: ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn port_names_are_dns_labels() {
        for ok in ["http", "grpc-web", "p8080", "8080"] {
            assert_eq!(check_port_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "HTTP", "-http", "http-", "a.b", "a_b", &"a".repeat(64)] {
            let e = check_port_name(bad).unwrap_err().to_string();
            assert!(e.contains("invalid port name"), "{bad}: {e}");
        }
        // Stored ports without a name still read, and a name survives a round trip.
        let old: ServicePort =
            serde_json::from_str(r#"{"port":80,"target_port":8080,"proto":"tcp"}"#).unwrap();
        assert_eq!(old.name, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("name"));
        let named = ServicePort {
            name: Some("http".into()),
            ..old
        };
        let back: ServicePort = serde_json::from_str(&serde_json::to_string(&named).unwrap()).unwrap();
        assert_eq!(back, named);
    }

    #[test]
    fn ports_parse_with_defaults() {
        let p = |s| parse_service_port(s).unwrap();
        assert_eq!(
            p("80"),
            ServicePort {
                port: 80,
                target_port: 80,
                proto: Proto::Tcp,
                name: None
            }
        );
        assert_eq!(
            p("80:8080"),
            ServicePort {
                port: 80,
                target_port: 8080,
                proto: Proto::Tcp,
                name: None
            }
        );
        assert_eq!(
            p("53/UDP"),
            ServicePort {
                port: 53,
                target_port: 53,
                proto: Proto::Udp,
                name: None
            }
        );
        assert_eq!(p("53:5353/udp").target_port, 5353);
        // Same port number, other protocol: two ports.
        assert_eq!(parse_service_ports(&strs(&["53/udp", "53"])).unwrap().len(), 2);
    }

    #[test]
    fn bad_ports_say_why() {
        for (s, want) in [
            ("", "not a port number"),
            ("0", "port 0"),
            ("70000", "not a port number"),
            ("80:0", "port 0"),
            ("80/sctp", "protocol \"sctp\""),
            ("a:80", "not a port number"),
            ("80:90:100", "not a port number"),
        ] {
            let e = parse_service_port(s).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("service port"), "{s}: {e}");
        }
        let e = parse_service_ports(&strs(&["80:8080", "80:9090"])).unwrap_err();
        assert_eq!(e.to_string(), "port 80/tcp is listed twice");
    }

    #[test]
    fn selectors_follow_kubernetes_label_rules() {
        let sel = parse_selector(&strs(&[
            "app=web",
            "example.com/tier=front-1",
            "empty=",
            "app=web",
        ]))
        .unwrap();
        assert_eq!(sel.len(), 3);
        assert_eq!(sel["empty"], "");
        for (t, want) in [
            ("app", "expected KEY=VALUE"),
            ("=web", "selector key"),
            ("-app=web", "selector key"),
            ("app-=web", "selector key"),
            ("a b=web", "selector key"),
            (&format!("{}=x", "k".repeat(64)), "selector key"),
            ("Example.com/app=x", "prefix"),
            ("/app=x", "prefix"),
            ("a/b/c=x", "selector key"),
            ("app=-web", "selector value"),
            ("app=we b", "selector value"),
            (&format!("app={}", "v".repeat(64)), "selector value"),
        ] {
            let e = parse_selector(&strs(&[t])).unwrap_err().to_string();
            assert!(e.contains(want), "{t}: {e}");
            assert!(!e.contains('\n'));
        }
        let e = parse_selector(&strs(&["app=a", "app=b"])).unwrap_err();
        assert_eq!(e, ServiceError::DuplicateSelector("app".into()));
    }

    #[test]
    fn affinity_defaults_to_three_hours() {
        let a = |s| parse_session_affinity(s);
        assert_eq!(a("client-ip").unwrap().unwrap().timeout_secs, 10_800);
        assert_eq!(a("client-ip:60").unwrap().unwrap().timeout_secs, 60);
        assert_eq!(a("none").unwrap(), None);
        for bad in [
            "client-ip:0",
            "client-ip:86401",
            "client-ip:x",
            "cookie",
            "none:5",
            "",
        ] {
            assert!(a(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn published_ports_point_at_a_target_port() {
        let ports = parse_service_ports(&strs(&["80:8080", "53/udp"])).unwrap();
        let p = parse_published_ports(
            &strs(&["9000:8080", "5353:53/udp,mode=host"]),
            &ports,
            EndpointMode::Vip,
        )
        .unwrap();
        assert_eq!(
            p,
            [
                PublishedPort {
                    published: 5353,
                    target: 53,
                    proto: Proto::Udp,
                    mode: PublishMode::Host
                },
                PublishedPort {
                    published: 9000,
                    target: 8080,
                    proto: Proto::Tcp,
                    mode: PublishMode::Ingress
                },
            ]
        );
        for (specs, mode, want) in [
            (vec!["9000:80"], EndpointMode::Vip, "not a target port"),
            (vec!["9000:53"], EndpointMode::Vip, "not a target port"),
            (vec!["9000"], EndpointMode::Vip, "expected PUBLISHED:TARGET"),
            (vec!["9000:8080,mode=swarm"], EndpointMode::Vip, "unknown option"),
            (vec!["0:8080"], EndpointMode::Vip, "port 0"),
            (
                vec!["9000:8080", "9000:8080,mode=host"],
                EndpointMode::Vip,
                "listed twice",
            ),
            (vec!["9000:8080"], EndpointMode::Dnsrr, "dnsrr"),
        ] {
            let e = parse_published_ports(&strs(&specs), &ports, mode)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{specs:?}: {e}");
        }
        assert!(parse_published_ports(&strs(&["9000:8080,mode=host"]), &ports, EndpointMode::Dnsrr).is_ok());
    }

    proptest! {
        /// Whatever the input, parsing never panics, and a port that parses prints back
        /// to a spec that parses to the same port.
        #[test]
        fn port_specs_round_trip(s in "[0-9a-z:/]{0,12}") {
            if let Ok(p) = parse_service_port(&s) {
                prop_assert_eq!(parse_service_port(&p.to_string()).unwrap(), p);
            }
        }

        #[test]
        fn valid_labels_parse(k in "[a-z0-9]([a-z0-9._-]{0,20}[a-z0-9])?", v in "([A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?)?") {
            let sel = parse_selector(&[format!("{k}={v}")]).unwrap();
            prop_assert_eq!(&sel[&k], &v);
        }
    }
}
