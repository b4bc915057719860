//! The parent link of macvlan and ipvlan networks (`-o parent=IFACE`), and Docker's
//! dotted form `-o parent=eth0.10`: when no such link exists, an 802.1Q sub-interface
//! of `eth0` with VLAN ID 10, made for the network and removed with it (libnetwork's
//! `parseVlan`, in its words).
//!
//! With `-o netd.parent_in_sandbox=true` (the reference CNI plugins' `linkInContainer`)
//! the parent is a link of each sandbox's own namespace, put there by the runtime
//! (a pod given a NIC or a VLAN link of its own): the child is made next to it, and the
//! host has nothing to check, make or share, so a dotted name is just a name.

use std::collections::BTreeMap;

use super::names::{fnv1a, validate_ifname};
use super::network::{parse_bool, ParsedNetwork, OPT_PARENT, OPT_PARENT_IN_SANDBOX};

/// The dummy link an internal ipvlan network hangs off (Docker's `dm-<id>`).
pub fn dummy_parent_name(network: &str) -> String {
    format!("dm-{:012x}", fnv1a(network.as_bytes()) & 0xffff_ffff_ffff)
}

/// Fills `o.parent` and `o.parent_in_sandbox` from the options.
///
/// An internal ipvlan network gets a dummy link of its own as parent, as Docker's
/// ipvlan driver does ("empty --parent= and --internal are handled the same"): its
/// sandboxes reach each other and nothing on any LAN. A `-o parent` given with
/// `--internal` is set aside, as there. (Internal macvlan networks keep their parent
/// and only lose the default route.)
pub(super) fn parse_into(
    opts: &BTreeMap<String, String>,
    driver: &str,
    o: &mut ParsedNetwork,
) -> Result<(), String> {
    let in_sandbox = match opts.get(OPT_PARENT_IN_SANDBOX) {
        Some(v) => parse_bool(OPT_PARENT_IN_SANDBOX, v)?,
        None => false,
    };
    if o.internal && driver == super::network::DRIVER_IPVLAN {
        if in_sandbox {
            return Err(format!("option {OPT_PARENT_IN_SANDBOX} is not for an internal network: its parent is a dummy link netd makes on the host"));
        }
        o.parent = Some(dummy_parent_name(&o.name));
        return Ok(());
    }
    o.parent = Some(parse_parent(opts, driver, in_sandbox)?);
    o.parent_in_sandbox = in_sandbox;
    Ok(())
}

/// The parent named by `-o parent=`, required: Docker creates a dummy parent link when
/// it is empty; this kernel has no dummy links.
fn parse_parent(opts: &BTreeMap<String, String>, driver: &str, in_sandbox: bool) -> Result<String, String> {
    let parent = match opts.get(OPT_PARENT).map(|p| p.trim()) {
        None | Some("") => {
            return Err(format!("{driver} needs a parent interface: -o parent=IFACE (or, for an ipvlan network of its own with no parent traffic, --internal: a dummy parent)"))
        }
        Some(p) => p.to_string(),
    };
    validate_ifname(&parent).map_err(|e| format!("option {OPT_PARENT}: {e}"))?;
    if parent == "lo" {
        return Err(format!("loopback interface is not a valid {driver} parent link"));
    }
    if parent.contains('.') && !in_sandbox {
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
