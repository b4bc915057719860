//! The checks of a configuration that are the CNI plugin's own: the spec's (version,
//! name), the reference plugins' keys in their words (`vlan`, `vlanTrunk`, hairpin with
//! promiscuous mode), keys netd's request does not carry (bridge keys or a VLAN on
//! macvlan, the capabilities). What netd itself would refuse in the network the
//! configuration asks for is asked of netd's model (`check_network`), not written here
//! a second time.

use serde_json::Value;

use super::{invalid, port_spec, NetConf};
use crate::error::{code, CniError, Result};
use crate::version;

impl NetConf {
    pub(super) fn check(&self) -> Result<()> {
        if self.cni_version.is_empty() {
            return Err(invalid("cniVersion is missing"));
        }
        if !version::supported(&self.cni_version) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {:?} is not supported (supported: {})",
                    self.cni_version,
                    version::SUPPORTED.join(", ")
                ),
            ));
        }
        if self.name.is_empty() {
            return Err(invalid("name is missing"));
        }
        if let Some(d) = &self.driver {
            if d != "bridge" && d != "macvlan" && d != "ipvlan" && d != "overlay" {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    format!(
                        "driver {d:?} is not supported by this netd-cni (supported: bridge, macvlan, ipvlan, overlay)"
                    ),
                ));
            }
        }
        if self.is_overlay() {
            return self.check_overlay();
        }
        if self.has_master() {
            self.check_macvlan()?;
        } else if self.master.is_some() || self.mode.is_some() || self.link_in_container.is_some() {
            return Err(invalid(
                "master, mode and linkInContainer are macvlan and ipvlan keys: add \"driver\": \"macvlan\" or \"ipvlan\"",
            ));
        }
        self.check_vlan()?;
        // As the reference bridge plugin, in its words.
        if self.hairpin_mode == Some(true) && self.promisc_mode {
            return Err(invalid(
                "cannot set hairpin mode and promiscuous mode at the same time",
            ));
        }
        if let Some(i) = &self.ipam {
            if crate::delegated_ipam::is_builtin(&i.ipam_type) {
                i.subnets()?;
                self.routes()?;
            } else if !crate::delegated_ipam::valid_type(&i.ipam_type) {
                return Err(invalid(format!(
                    "ipam type {:?} is not a plugin name (a file in CNI_PATH)",
                    i.ipam_type
                )));
            }
        }
        self.check_network()?;
        for p in &self.runtime_config.port_mappings {
            port_spec(p)?;
        }
        self.requested_ips(&[])?;
        if let Some(m) = self.requested_mac(None) {
            netd::driver::bridge::parse_mac(&m)
                .ok_or_else(|| invalid(format!("mac {m:?}: expected aa:bb:cc:dd:ee:ff")))?;
        }
        Ok(())
    }

    /// `vlanTrunk` as VLAN ranges (`[{"id": 101}, {"minID": 200, "maxID": 299}]`),
    /// checked as the reference plugin does, in its words; `None` without the key.
    pub fn vlan_trunk(&self) -> Result<Option<Vec<netd::model::VidRange>>> {
        let Some(t) = self.vlan_trunk.as_ref().filter(|t| !t.is_null()) else {
            return Ok(None);
        };
        let items = t
            .as_array()
            .ok_or_else(|| invalid("vlanTrunk: expected a list of {\"id\"} or {\"minID\", \"maxID\"}"))?;
        let id = |item: &Value, key: &str| -> Result<Option<u16>> {
            match item.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_i64()
                    .filter(|v| (1..=4094).contains(v))
                    .map(|v| Some(v as u16))
                    .ok_or_else(|| invalid(format!("incorrect trunk {key} parameter"))),
            }
        };
        let mut ranges = Vec::new();
        for item in items {
            if !item.is_object() {
                return Err(invalid(
                    "vlanTrunk: expected a list of {\"id\"} or {\"minID\", \"maxID\"}",
                ));
            }
            match (id(item, "minID")?, id(item, "maxID")?) {
                (Some(a), Some(b)) if a > b => {
                    return Err(invalid("minID is greater than maxID in trunk parameter"))
                }
                (Some(a), Some(b)) => ranges.push((a, b)),
                (None, Some(_)) => {
                    return Err(invalid(
                        "minID and maxID should be configured simultaneously, minID is missing",
                    ))
                }
                (Some(_), None) => {
                    return Err(invalid(
                        "minID and maxID should be configured simultaneously, maxID is missing",
                    ))
                }
                (None, None) => {}
            }
            if let Some(v) = id(item, "id")? {
                ranges.push((v, v));
            }
        }
        Ok(Some(netd::model::merge_vid_ranges(ranges)))
    }

    /// As the reference `bridge` plugin: `vlan` 0..=4094 (0: none); `vlanTrunk`, not
    /// with `vlan` (`vlan_trunk`). `preserveDefaultVlan` is accepted; a VLAN network's
    /// ports are in their network's VLAN only (as with `false`), a trunk network's in
    /// VLAN 1 untagged (as with `true`). Whether the kernel can do it is netd's to say
    /// when the network is made (code 2).
    fn check_vlan(&self) -> Result<()> {
        if let Some(v) = self.vlan {
            if !(0..=4094).contains(&v) {
                return Err(invalid(format!(
                    "invalid VLAN ID {v} (must be between 0 and 4094)"
                )));
            }
        }
        if let Some(trunk) = self.vlan_trunk()? {
            if self.vlan_id().is_some() {
                return Err(invalid("cannot set vlan and vlanTrunk at the same time"));
            }
            if self.has_master() {
                return Err(invalid(format!(
                    "vlanTrunk is a bridge key; this {} network has no bridge",
                    self.driver_name()
                )));
            }
            if trunk.is_empty() {
                return Err(invalid("vlanTrunk lists no VLAN"));
            }
        }
        // netd's request carries no VLAN for macvlan or ipvlan, so netd would not see this one.
        if self.vlan_id().is_some() && self.has_master() {
            return Err(invalid(format!(
                "vlan is a bridge key; this {} network has no bridge (use a VLAN link as master: \"master\": \"eth0.{}\")",
                self.driver_name(),
                self.vlan_id().unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// What netd would refuse in the network this configuration asks for (its name, the
    /// bridge's, the MTU, the VLAN gateway's link name, a promiscuous VLAN bridge, the
    /// macvlan master and mode), asked of netd's model, which decides it for every way a
    /// network is made; code 7, as any config error.
    fn check_network(&self) -> Result<()> {
        let delegated = self
            .ipam
            .as_ref()
            .is_some_and(|i| !crate::delegated_ipam::is_builtin(&i.ipam_type));
        let no_master = self.has_master() && self.master.as_deref().is_none_or(str::is_empty);
        let conf = if delegated || no_master {
            let mut c = self.clone();
            // A delegated IPAM plugin's subnets are known once it answers.
            if delegated {
                c.ipam = None;
            }
            // The master is the default route's interface, found at ADD
            // (`ops::with_default_master`); a valid name stands in for it here.
            if no_master {
                c.master = Some("eth0".into());
            }
            std::borrow::Cow::Owned(c)
        } else {
            std::borrow::Cow::Borrowed(self)
        };
        crate::ops::network_request(&conf)?
            .parse()
            .map(drop)
            .map_err(invalid)
    }

    /// An overlay network is the cluster's: the pod joins it through the node's daemon
    /// (delegating mode), which knows its subnet, VNI and MTU. The keys that would make
    /// or shape a network have no meaning here; `ipam` may name the subnet, which netd
    /// then checks against the network's.
    fn check_overlay(&self) -> Result<()> {
        if self.socket.is_none() {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "driver overlay needs delegating mode: set \"socket\" to the API socket of a netd started with --cluster",
            ));
        }
        if self.bridge.is_some()
            || self.vlan.is_some()
            || self.vlan_trunk.is_some()
            || self.promisc_mode
            || self.master.is_some()
            || self.mode.is_some()
            || self.is_gateway == Some(false)
        {
            return Err(invalid(
                "bridge, vlan, vlanTrunk, promiscMode, master, mode and isGateway: false shape a network; an overlay network is made by the cluster (netctl network create -d overlay)",
            ));
        }
        if let Some(i) = &self.ipam {
            if !crate::delegated_ipam::is_builtin(&i.ipam_type) {
                return Err(invalid(format!(
                    "ipam type {:?} on an overlay network: its addresses come from the cluster's blocks",
                    i.ipam_type
                )));
            }
            i.subnets()?;
            self.routes()?;
        }
        for p in &self.runtime_config.port_mappings {
            port_spec(p)?;
        }
        Ok(())
    }

    /// The bridge plugin's keys have no meaning on a macvlan network, nor have port
    /// mappings. `master` (when missing, the interface of the node's IPv4 default route:
    /// `ops::with_default_master`) and `mode` are netd's to check (`check_network`).
    fn check_macvlan(&self) -> Result<()> {
        let d = self.driver_name();
        if self.bridge.is_some() || self.ip_masq || self.hairpin_mode == Some(true) || self.promisc_mode {
            return Err(invalid(format!(
                "bridge, ipMasq, hairpinMode and promiscMode are bridge keys; this {d} network has no bridge and no NAT"
            )));
        }
        if !self.runtime_config.port_mappings.is_empty() {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!(
                    "portMappings on this {d} network: the container has its own address on the master's LAN"
                ),
            ));
        }
        if self.is_ipvlan() && self.requested_mac(None).is_some() {
            return Err(invalid(
                "a MAC address was asked for, and an ipvlan interface has its master's MAC",
            ));
        }
        Ok(())
    }
}
