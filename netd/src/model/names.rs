//! Object names and the kernel names derived from them.
//!
//! Linux interface names are at most 15 bytes (IFNAMSIZ - 1). Derived names keep as much
//! of the user's name as fits, so `ip link` tells a person what belongs to whom, and add a
//! short hash when they have to cut, so two long names never collide.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name {0:?} is longer than 64 characters")]
    TooLong(String),
    #[error("name {0:?} has invalid characters: use letters, digits, '_', '.', '-' and start with a letter or digit")]
    BadChars(String),
    #[error("interface name {0:?} is invalid: 1 to 15 characters, no '/', ':' or whitespace")]
    BadIfname(String),
}

/// Docker's rule for object names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, here capped at 64.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 64 {
        return Err(NameError::TooLong(name.to_string()));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(NameError::BadChars(name.to_string()));
    }
    Ok(())
}

/// A name the kernel accepts for a network interface.
pub fn validate_ifname(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(NameError::BadIfname(name.to_string()))
    }
}

/// FNV-1a: stable across releases and platforms (unlike `DefaultHasher`), which matters
/// because derived names are found again after a restart.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn squeeze(prefix: &str, name: &str, key: &str) -> String {
    let full = format!("{prefix}{name}");
    if full.len() <= 15 {
        return full;
    }
    // prefix + part of the name + '-' + 4 hex digits = 15
    let keep = 15 - prefix.len() - 5;
    let part: String = name.chars().take(keep).collect();
    format!("{prefix}{part}-{:04x}", fnv1a(key.as_bytes()) & 0xffff)
}

/// Kernel bridge name for a network: `netd-<name>`, shortened with a hash when too long.
pub fn bridge_name(network: &str) -> String {
    squeeze("netd-", network, network)
}

/// The VXLAN port of an overlay network's bridge: `ndvx-<name>`, shortened as bridges are.
pub fn vxlan_name(network: &str) -> String {
    squeeze("ndvx-", network, network)
}

/// Host-side veth name of a sandbox's endpoint on a network: `nd<sandbox>-<hash>`, where
/// the hash covers both names so each (sandbox, network) pair gets its own link.
pub fn host_veth_name(sandbox: &str, network: &str) -> String {
    let part: String = sandbox.chars().take(8).collect();
    format!(
        "nd{part}-{:04x}",
        fnv1a(format!("{sandbox}/{network}").as_bytes()) & 0xffff
    )
}

/// Name of a macvlan child while it is in the host namespace, between its creation and
/// its move into the sandbox (where it becomes `ethN`): `ndm<sandbox>-<hash>`.
pub fn macvlan_tmp_name(sandbox: &str, network: &str) -> String {
    let part: String = sandbox.chars().take(7).collect();
    format!(
        "ndm{part}-{:04x}",
        fnv1a(format!("{sandbox}/{network}").as_bytes()) & 0xffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_rules() {
        assert!(validate_name("frontend").is_ok());
        assert!(validate_name("my_net.v2-a").is_ok());
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(validate_name("-x"), Err(NameError::BadChars(_))));
        assert!(matches!(validate_name("a b"), Err(NameError::BadChars(_))));
        assert!(matches!(
            validate_name(&"a".repeat(65)),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn derived_names_fit_ifnamsiz_and_differ() {
        assert_eq!(bridge_name("front"), "netd-front");
        let a = bridge_name("averyveryverylongname-1");
        let b = bridge_name("averyveryverylongname-2");
        assert_eq!(a.len(), 15);
        assert_ne!(a, b);
        assert!(a.starts_with("netd-avery-"));
        let v1 = host_veth_name("vote-1", "frontend");
        let v2 = host_veth_name("vote-1", "backend");
        assert!(v1.starts_with("ndvote-1-"));
        assert_ne!(v1, v2);
        let m = macvlan_tmp_name(&"x".repeat(64), "y");
        assert!(m.starts_with("ndmxxxxxxx-"));
        for n in [&a, &b, &v1, &v2, &host_veth_name(&"x".repeat(64), "y"), &m] {
            assert!(validate_ifname(n).is_ok(), "{n}");
        }
    }
}
