//! Options of macvlan networks, in Docker's words: `-o parent=IFACE` and
//! `-o macvlan_mode=bridge|vepa|private|passthru` (libnetwork's macvlan driver).

use std::collections::BTreeMap;

use super::network::{ParsedNetwork, OPT_MACVLAN_MODE};

/// The modes Docker accepts, `bridge` being its default.
pub const MACVLAN_MODES: &[&str] = &["bridge", "vepa", "private", "passthru"];

/// Fills the macvlan fields of `o` (the parent: `parent::parse_parent`).
pub(super) fn parse_options(opts: &BTreeMap<String, String>, o: &mut ParsedNetwork) -> Result<(), String> {
    super::parent::parse_into(opts, "macvlan", o)?;
    let mode = opts
        .get(OPT_MACVLAN_MODE)
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "bridge".into());
    if !MACVLAN_MODES.contains(&mode.as_str()) {
        return Err(format!(
            "requested macvlan mode {mode:?} is not valid (bridge, vepa, private, passthru; bridge is the default)"
        ));
    }
    o.macvlan_mode = Some(mode);
    // No bridge, no NAT: the sandboxes sit on the parent's LAN and its router is their
    // gateway, as with Docker's macvlan driver.
    o.bridge = String::new();
    o.masquerade = false;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::model::{NetworkRequest, SubnetRequest};

    fn req(opts: &[(&str, &str)]) -> NetworkRequest {
        NetworkRequest {
            name: "lan".into(),
            driver: Some("macvlan".into()),
            subnets: vec![SubnetRequest {
                subnet: Some("192.168.50.0/24".into()),
                gateway: Some("192.168.50.254".into()),
                ip_range: None,
            }],
            options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn parent_and_mode() {
        let p = req(&[("parent", "eth0")]).parse().unwrap();
        assert_eq!(p.parent.as_deref(), Some("eth0"));
        assert_eq!(p.macvlan_mode.as_deref(), Some("bridge"));
        assert!(p.bridge.is_empty() && !p.masquerade);
        let p = req(&[("parent", "eth0"), ("macvlan_mode", "vepa")])
            .parse()
            .unwrap();
        assert_eq!(p.macvlan_mode.as_deref(), Some("vepa"));
    }

    #[test]
    fn refusals_say_why() {
        let e = req(&[]).parse().unwrap_err();
        assert!(e.contains("-o parent=IFACE") && e.contains("dummy"), "{e}");
        let e = req(&[("parent", "lo")]).parse().unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        let e = req(&[("parent", "eth0"), ("macvlan_mode", "l2")])
            .parse()
            .unwrap_err();
        assert!(e.contains("macvlan mode \"l2\""), "{e}");
        let e = req(&[("parent", "a-name-far-too-long")]).parse().unwrap_err();
        assert!(e.contains("parent"), "{e}");
        let e = req(&[("parent", "eth0"), ("com.docker.network.bridge.name", "x")])
            .parse()
            .unwrap_err();
        assert!(e.contains("bridge option"), "{e}");
    }
}
