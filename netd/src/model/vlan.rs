//! VLANs on bridge networks (option `vlan=N`, the reference CNI `bridge` plugin's `vlan`
//! key): the bridge filters by VLAN, every endpoint's port gets VID N as PVID and egress
//! untagged, and the gateway address lives on `<bridge>.<N>`, one end of a veth pair
//! whose other end is a port of VLAN N (as the reference plugin does it: no 802.1Q
//! device needed). Several VLAN networks may share one bridge, one VLAN each.

use std::collections::BTreeMap;

use super::names::{fnv1a, validate_ifname};
use super::network::{Network, ParsedNetwork, DRIVER_IPVLAN, DRIVER_MACVLAN};

/// `-o vlan=N` (netctl, API) and the CNI `vlan` key.
pub const OPT_VLAN: &str = "vlan";

/// `-o netd.bridge.vlan_trunk=101,200-299` (the CNI `vlanTrunk` key): the network's
/// ports also carry these VLANs tagged, so a container can use them on VLAN devices of
/// its own (`eth0.101`). The bridge filters by VLAN; untagged frames stay in the
/// network's own VLAN (`vlan`, or the bridge's default VLAN 1 without it).
pub const OPT_VLAN_TRUNK: &str = "netd.bridge.vlan_trunk";

/// A range of VLAN IDs, both ends included.
pub type VidRange = (u16, u16);

/// Parses `101,200-299`: VLAN IDs and ranges from 1 to 4094, sorted and merged.
pub fn parse_vid_ranges(v: &str) -> Result<Vec<VidRange>, String> {
    let vid = |x: &str| -> Result<u16, String> {
        x.trim()
            .parse::<u16>()
            .ok()
            .filter(|id| (1..=4094).contains(id))
            .ok_or_else(|| format!("{x:?} is not a VLAN ID from 1 to 4094"))
    };
    let mut out: Vec<VidRange> = Vec::new();
    for part in v.split(',') {
        let r = match part.split_once('-') {
            Some((a, b)) => (vid(a)?, vid(b)?),
            None => (vid(part)?, vid(part)?),
        };
        if r.0 > r.1 {
            return Err(format!("{}-{}: the range starts above its end", r.0, r.1));
        }
        out.push(r);
    }
    Ok(merge_vid_ranges(out))
}

/// `ranges` sorted, with overlapping and adjacent ones merged.
pub fn merge_vid_ranges(mut ranges: Vec<VidRange>) -> Vec<VidRange> {
    ranges.sort_unstable();
    let mut merged: Vec<VidRange> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.0 <= last.1.saturating_add(1) => last.1 = last.1.max(r.1),
            _ => merged.push(r),
        }
    }
    merged
}

/// `101,200-299`, the form `parse_vid_ranges` reads.
pub fn format_vid_ranges(r: &[VidRange]) -> String {
    r.iter()
        .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
        .collect::<Vec<_>>()
        .join(",")
}

/// The alias of a bridge that VLAN networks share: it belongs to no single network.
pub const VLAN_BRIDGE_ALIAS: &str = "netd:vlan-bridge";

/// Fills `o.vlan` from the options. 0 means "no VLAN", as in the reference plugin.
pub(super) fn parse_option(opts: &BTreeMap<String, String>, o: &mut ParsedNetwork) -> Result<(), String> {
    let Some(v) = opts.get(OPT_VLAN).map(|v| v.trim()) else {
        return Ok(());
    };
    let id: u16 = v
        .parse()
        .ok()
        .filter(|id| *id <= 4094)
        .ok_or_else(|| format!("option vlan={v}: expected a VLAN ID from 1 to 4094"))?;
    if id == 0 {
        return Ok(());
    }
    if o.driver == DRIVER_MACVLAN || o.driver == DRIVER_IPVLAN {
        return Err(format!(
            "option vlan is for bridge networks; this {} network has no bridge (use a VLAN parent: -o parent=eth0.{id})",
            o.driver
        ));
    }
    let gw = gateway_name(&o.bridge, id);
    validate_ifname(&gw).map_err(|_| {
        format!(
            "option vlan={id}: the gateway link {gw} would be longer than 15 bytes; use a shorter bridge name"
        )
    })?;
    o.vlan = Some(id);
    Ok(())
}

/// Fills `o.vlan_trunk` (after `parse_option`, which fills `o.vlan`).
pub(super) fn parse_trunk(opts: &BTreeMap<String, String>, o: &mut ParsedNetwork) -> Result<(), String> {
    let Some(v) = opts.get(OPT_VLAN_TRUNK) else {
        return Ok(());
    };
    if o.driver == DRIVER_MACVLAN || o.driver == DRIVER_IPVLAN {
        return Err(format!(
            "option {OPT_VLAN_TRUNK} is for bridge networks; this {} network has no bridge",
            o.driver
        ));
    }
    if let Some(id) = o.vlan {
        // As the reference plugin: a port is an access port of one VLAN or a trunk.
        return Err(format!(
            "option {OPT_VLAN_TRUNK} is not for a VLAN network (vlan {id}): a port is an access port or a trunk"
        ));
    }
    o.vlan_trunk = parse_vid_ranges(v).map_err(|e| format!("option {OPT_VLAN_TRUNK}={v}: {e}"))?;
    Ok(())
}

/// `<bridge>.<vlan>`: the link holding the gateway addresses (the reference's name).
pub fn gateway_name(bridge: &str, vlan: u16) -> String {
    format!("{bridge}.{vlan}")
}

/// The bridge-side peer of the gateway link: `ndg<hash>`, a port of the VLAN.
pub fn gateway_peer_name(bridge: &str, vlan: u16) -> String {
    format!("ndg{:08x}", fnv1a(gateway_name(bridge, vlan).as_bytes()) as u32)
}

impl Network {
    /// The link and VLAN ID of a dotted parent (`eth0.10`), made when missing.
    /// None when the parent is in the sandboxes (`parent_in_sandbox`): nothing is made.
    pub fn vlan_parent(&self) -> Option<(String, u16)> {
        super::parent::vlan_parent(self.host_parent()?).ok().flatten()
    }

    /// The link that routes for the network: its bridge, or `<bridge>.<vlan>`.
    pub fn l3_link(&self) -> String {
        match self.vlan {
            Some(id) => gateway_name(&self.bridge, id),
            None => self.bridge.clone(),
        }
    }

    /// The dummy parent of an internal ipvlan network (`parent::parse_into`), made when
    /// missing and removed with the network.
    pub fn dummy_parent(&self) -> Option<&str> {
        self.host_parent().filter(|p| {
            self.internal && self.is_ipvlan() && *p == super::parent::dummy_parent_name(&self.name)
        })
    }

    /// The host link netd makes for the network to hang off, if any: a dotted parent's
    /// 802.1Q link or an internal network's dummy.
    pub fn made_parent(&self) -> Option<&str> {
        self.dummy_parent()
            .or_else(|| self.vlan_parent().and(self.host_parent()))
    }

    /// Whether `link` (a host link) is one of this network's own.
    pub fn owns_link(&self, link: &str) -> bool {
        if self.has_parent() {
            // The 802.1Q or dummy parent netd made for it (`Step::EnsureVlanParent`,
            // `Step::EnsureDummyParent`).
            return self.made_parent() == Some(link);
        }
        match self.vlan {
            Some(id) => {
                link == self.bridge
                    || link == gateway_name(&self.bridge, id)
                    || link == gateway_peer_name(&self.bridge, id)
            }
            None => link == self.bridge,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{NetworkRequest, SubnetRequest};

    fn req(opts: &[(&str, &str)]) -> NetworkRequest {
        NetworkRequest {
            name: "v".into(),
            subnets: vec![SubnetRequest {
                subnet: Some("10.9.0.0/24".into()),
                ..Default::default()
            }],
            options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn vlan_ids() {
        assert_eq!(req(&[("vlan", "100")]).parse().unwrap().vlan, Some(100));
        assert_eq!(req(&[("vlan", "4094")]).parse().unwrap().vlan, Some(4094));
        assert_eq!(req(&[("vlan", "0")]).parse().unwrap().vlan, None);
        assert_eq!(req(&[]).parse().unwrap().vlan, None);
        for bad in ["4095", "-1", "x", "", "65536"] {
            let e = req(&[("vlan", bad)]).parse().unwrap_err();
            assert!(e.contains("1 to 4094"), "{bad}: {e}");
        }
    }

    #[test]
    fn vlan_refusals() {
        let e = req(&[("vlan", "5"), ("parent", "eth0")]);
        let e = NetworkRequest {
            driver: Some("macvlan".into()),
            ..e
        }
        .parse()
        .unwrap_err();
        assert!(e.contains("macvlan network has no bridge"), "{e}");
        let e = req(&[
            ("vlan", "4000"),
            ("com.docker.network.bridge.name", "bridge-name-13"),
        ])
        .parse()
        .unwrap_err();
        assert!(e.contains("longer than 15 bytes"), "{e}");
    }

    #[test]
    fn vlan_trunks() {
        use super::{format_vid_ranges, parse_vid_ranges, OPT_VLAN_TRUNK};
        assert_eq!(
            parse_vid_ranges("300,101, 200-299,102,4094").unwrap(),
            vec![(101, 102), (200, 300), (4094, 4094)]
        );
        assert_eq!(
            format_vid_ranges(&[(101, 102), (200, 300), (7, 7)]),
            "101-102,200-300,7"
        );
        for bad in ["", "0", "4095", "5-3", "a", "1-", "1,,2", "-5"] {
            assert!(parse_vid_ranges(bad).is_err(), "{bad}");
        }
        let p = req(&[(OPT_VLAN_TRUNK, "101,200-299")]).parse().unwrap();
        assert_eq!((p.vlan, p.vlan_trunk), (None, vec![(101, 101), (200, 299)]));
        let e = req(&[(OPT_VLAN_TRUNK, "101"), ("vlan", "5")])
            .parse()
            .unwrap_err();
        assert!(e.contains("access port or a trunk"), "{e}");
        // vlan 0 is no VLAN: the trunk is fine.
        assert!(req(&[(OPT_VLAN_TRUNK, "101"), ("vlan", "0")]).parse().is_ok());
        let e = req(&[(OPT_VLAN_TRUNK, "x")]).parse().unwrap_err();
        assert!(e.contains(OPT_VLAN_TRUNK), "{e}");
        let e = NetworkRequest {
            driver: Some("macvlan".into()),
            ..req(&[(OPT_VLAN_TRUNK, "101"), ("parent", "eth0")])
        }
        .parse()
        .unwrap_err();
        assert!(e.contains("macvlan network has no bridge"), "{e}");
    }

    #[test]
    fn links_of_a_vlan_network() {
        let p = req(&[("vlan", "7"), ("com.docker.network.bridge.name", "br0")])
            .parse()
            .unwrap();
        let n = p.into_network("id".into(), vec![], &req(&[]), "netctl", 0);
        assert_eq!(n.l3_link(), "br0.7");
        let peer = super::gateway_peer_name("br0", 7);
        assert!(peer.starts_with("ndg") && peer.len() == 11, "{peer}");
        assert!(n.owns_link("br0") && n.owns_link("br0.7") && n.owns_link(&peer));
        assert!(!n.owns_link("br0.8"));
    }
}
