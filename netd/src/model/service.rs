//! Services: a name in a Kubernetes-style namespace that is not a sandbox. Today one
//! kind, `external_name` (Kubernetes' ExternalName: `<name>.<namespace>.svc.<domain>` is
//! a CNAME to a name outside). The services issue adds its kinds (a VIP with tasks, DNS
//! round robin) as further `ServiceKind` variants of the same object, stored under the
//! same key and listed by the same API.

use serde::{Deserialize, Serialize};

/// The namespace a service lands in when the request names none (Kubernetes' default).
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServiceKind {
    /// `<name>.<namespace>.svc.<domain>` CNAME `target`.
    ExternalName { target: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub id: String,
    #[serde(flatten)]
    pub kind: ServiceKind,
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
        let kind = match (self.kind.as_deref(), &self.external_name) {
            (None | Some("external_name"), Some(t)) => ServiceKind::ExternalName {
                target: check_target(t)?,
            },
            (None | Some("external_name"), None) => {
                return Err("an external_name service needs a target (--external-name NAME)".into())
            }
            (Some(k), _) => return Err(format!("unknown service kind {k:?}: netd has external_name")),
        };
        Ok((self.name.clone(), ns, kind))
    }
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
            created: 0,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["kind"], "external_name");
        assert_eq!(v["target"], "x.y");
        assert_eq!(serde_json::from_value::<Service>(v).unwrap(), s);
        assert_eq!(s.key(), "prod/db");
    }
}
