//! Options of ipvlan networks, in Docker's words: `-o parent=IFACE`,
//! `-o ipvlan_mode=l2|l3|l3s` (l2 the default) and `-o ipvlan_flag=bridge|private|vepa`
//! (bridge the default), as libnetwork's ipvlan driver reads them.

use std::collections::BTreeMap;

use super::network::{ParsedNetwork, OPT_IPVLAN_FLAG, OPT_IPVLAN_MODE};

/// The modes Docker accepts, `l2` being its default.
pub const IPVLAN_MODES: &[&str] = &["l2", "l3", "l3s"];
/// The flags Docker accepts, `bridge` being its default.
pub const IPVLAN_FLAGS: &[&str] = &["bridge", "private", "vepa"];

/// Fills the ipvlan fields of `o` (the parent: `parent::parse_parent`).
pub(super) fn parse_options(opts: &BTreeMap<String, String>, o: &mut ParsedNetwork) -> Result<(), String> {
    super::parent::parse_into(opts, "ipvlan", o)?;
    let pick = |key: &str, default: &str| {
        opts.get(key)
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| default.into())
    };
    let mode = pick(OPT_IPVLAN_MODE, "l2");
    if !IPVLAN_MODES.contains(&mode.as_str()) {
        return Err(format!(
            "requested ipvlan mode {mode:?} is not valid (l2, l3, l3s; l2 is the default)"
        ));
    }
    let flag = pick(OPT_IPVLAN_FLAG, "bridge");
    if !IPVLAN_FLAGS.contains(&flag.as_str()) {
        return Err(format!(
            "requested ipvlan flag {flag:?} is not valid (bridge, private, vepa; bridge is the default)"
        ));
    }
    o.ipvlan_mode = Some(mode);
    o.ipvlan_flag = Some(flag);
    // As macvlan: no bridge and no NAT. In l2 the LAN's router is the gateway; in l3 the
    // sandboxes route through their device (the parent answers for them).
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
            driver: Some("ipvlan".into()),
            subnets: vec![SubnetRequest {
                subnet: Some("192.168.50.0/24".into()),
                ..Default::default()
            }],
            options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn parent_mode_and_flag() {
        let p = req(&[("parent", "eth0")]).parse().unwrap();
        assert_eq!(p.parent.as_deref(), Some("eth0"));
        assert_eq!(
            (p.ipvlan_mode.as_deref(), p.ipvlan_flag.as_deref()),
            (Some("l2"), Some("bridge"))
        );
        assert!(p.bridge.is_empty() && !p.masquerade && p.macvlan_mode.is_none());
        let p = req(&[
            ("parent", "eth0.10"),
            ("ipvlan_mode", "l3s"),
            ("ipvlan_flag", "private"),
        ])
        .parse()
        .unwrap();
        assert_eq!(p.parent.as_deref(), Some("eth0.10"));
        assert_eq!(
            (p.ipvlan_mode.as_deref(), p.ipvlan_flag.as_deref()),
            (Some("l3s"), Some("private"))
        );
    }

    #[test]
    fn refusals_say_why() {
        for (opts, says) in [
            (vec![], "ipvlan needs a parent interface: -o parent=IFACE"),
            (
                vec![("parent", "lo")],
                "loopback interface is not a valid ipvlan parent",
            ),
            (
                vec![("parent", "eth0"), ("ipvlan_mode", "bridge")],
                "ipvlan mode \"bridge\"",
            ),
            (
                vec![("parent", "eth0"), ("ipvlan_flag", "passthru")],
                "ipvlan flag \"passthru\"",
            ),
            (
                vec![("parent", "eth0"), ("macvlan_mode", "vepa")],
                "option macvlan_mode is not for this ipvlan network",
            ),
            (vec![("parent", "eth0.5000")], "vlan id must be between 1-4094"),
            (
                vec![("parent", "eth0"), ("com.docker.network.bridge.name", "x")],
                "bridge option; this network uses the ipvlan driver",
            ),
            (
                vec![("parent", "eth0"), ("vlan", "5")],
                "ipvlan network has no bridge",
            ),
        ] {
            let e = req(&opts).parse().unwrap_err();
            assert!(e.contains(says), "{opts:?}: {e}");
        }
        let e = NetworkRequest {
            driver: None,
            ..req(&[("ipvlan_mode", "l3")])
        }
        .parse()
        .unwrap_err();
        assert!(
            e.contains("option ipvlan_mode is for macvlan and ipvlan networks"),
            "{e}"
        );
    }
}
