//! Drivers turn model objects into kernel plans. Only `bridge` exists so far; macvlan,
//! ipvlan and overlay drivers will sit beside it behind the same functions.

pub mod bridge;

/// Marker aliases (IFLA_IFALIAS) that tell `ip link` readers, and reconcile, what a link is.
pub fn network_alias(network: &str) -> String {
    format!("netd:net={network}")
}

pub fn endpoint_alias(sandbox: &str, network: &str) -> String {
    format!("netd:ep={sandbox}/{network}")
}

/// What a `netd:` alias says about its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasOwner {
    Network(String),
    Endpoint { sandbox: String, network: String },
}

pub fn parse_alias(alias: &str) -> Option<AliasOwner> {
    if let Some(n) = alias.strip_prefix("netd:net=") {
        return Some(AliasOwner::Network(n.to_string()));
    }
    let rest = alias.strip_prefix("netd:ep=")?;
    let (s, n) = rest.split_once('/')?;
    Some(AliasOwner::Endpoint {
        sandbox: s.to_string(),
        network: n.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_roundtrip() {
        assert_eq!(
            parse_alias(&network_alias("front")),
            Some(AliasOwner::Network("front".into()))
        );
        assert_eq!(
            parse_alias(&endpoint_alias("web.1", "front")),
            Some(AliasOwner::Endpoint {
                sandbox: "web.1".into(),
                network: "front".into()
            })
        );
        assert_eq!(parse_alias("docker0"), None);
    }
}
