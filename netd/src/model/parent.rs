//! The parent link of macvlan and ipvlan networks (`-o parent=IFACE`), and Docker's
//! dotted form `-o parent=eth0.10`: when no such link exists, an 802.1Q sub-interface
//! of `eth0` with VLAN ID 10, made for the network and removed with it (libnetwork's
//! `parseVlan`, in its words).

use std::collections::BTreeMap;

use super::names::validate_ifname;
use super::network::OPT_PARENT;

/// The parent named by `-o parent=`, required: Docker creates a dummy parent link when
/// it is empty; this kernel has no dummy links.
pub(super) fn parse_parent(opts: &BTreeMap<String, String>, driver: &str) -> Result<String, String> {
    let parent = match opts.get(OPT_PARENT).map(|p| p.trim()) {
        None | Some("") => {
            return Err(format!("{driver} needs a parent interface: -o parent=IFACE (Docker would create a dummy link instead, and this kernel has no dummy links)"))
        }
        Some(p) => p.to_string(),
    };
    validate_ifname(&parent).map_err(|e| format!("option {OPT_PARENT}: {e}"))?;
    if parent == "lo" {
        return Err(format!("loopback interface is not a valid {driver} parent link"));
    }
    if parent.contains('.') {
        vlan_parent(&parent)?;
    }
    Ok(parent)
}

/// `eth0.10` -> (`eth0`, 10): the link and VLAN ID of a dotted parent; `None` for a
/// name without a dot. A dotted name of another shape is refused as Docker refuses it
/// (even though a link of that name could exist: netd could not make it when missing).
pub fn vlan_parent(parent: &str) -> Result<Option<(String, u16)>, String> {
    let Some((link, vid)) = parent.split_once('.') else {
        return Ok(None);
    };
    if link.is_empty() || vid.contains('.') {
        return Err(format!(
            "required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, instead received {parent}"
        ));
    }
    let id: u32 = vid
        .parse()
        .map_err(|_| format!("unable to parse a valid vlan id from: {parent} (ex. eth0.10 for vlan 10)"))?;
    if !(1..=4094).contains(&id) {
        return Err(format!("vlan id must be between 1-4094, received: {id}"));
    }
    Ok(Some((link.to_string(), id as u16)))
}

#[cfg(test)]
mod tests {
    use super::vlan_parent;

    #[test]
    fn dotted_parents() {
        assert_eq!(vlan_parent("eth0").unwrap(), None);
        assert_eq!(vlan_parent("eth0.10").unwrap(), Some(("eth0".into(), 10)));
        assert_eq!(vlan_parent("bond0.4094").unwrap(), Some(("bond0".into(), 4094)));
        for (bad, says) in [
            ("eth0.0", "between 1-4094"),
            ("eth0.4095", "between 1-4094"),
            ("eth0.x", "unable to parse"),
            ("eth0.", "unable to parse"),
            (".10", "name.vlan_id"),
            ("a.1.2", "name.vlan_id"),
        ] {
            let e = vlan_parent(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
