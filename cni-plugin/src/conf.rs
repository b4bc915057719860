//! The network configuration on stdin: the keys of the reference `bridge` plugin (so a
//! conflist written for it works after changing `type`), netd's own (`socket`,
//! `stateDir`, `driver`), the `ipam` section, `args`/`runtimeConfig` capabilities and
//! `prevResult`.
//!
//! Parsing is two-step so errors get the code the spec asks for: bytes -> JSON value
//! (syntax: code 6), then value -> typed config (wrong types, missing fields: code 7),
//! then version (code 1) and semantic checks (code 7).

use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{code, CniError, Result};
use crate::version;
use netd::model::Route;

/// Larger configs are refused before parsing (a real conflist is a few KiB).
pub const MAX_STDIN: usize = 1 << 20;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// Delegating mode: the running netd's API socket.
    pub socket: Option<PathBuf>,
    /// Standalone mode: where the plugin keeps its store and lock.
    pub state_dir: Option<PathBuf>,
    pub driver: Option<String>,
    /// `"driver": "macvlan"`: the reference `macvlan` plugin's keys.
    pub master: Option<String>,
    pub mode: Option<String>,
    pub bridge: Option<String>,
    #[serde(default)]
    pub is_gateway: Option<bool>,
    #[serde(default)]
    pub is_default_gateway: Option<bool>,
    #[serde(default)]
    pub ip_masq: bool,
    pub mtu: Option<u32>,
    /// `true`: the ports in hairpin mode (netd's default, see `OPT_HAIRPIN`); `false`:
    /// not, as the reference bridge plugin leaves them without the key.
    #[serde(default)]
    pub hairpin_mode: Option<bool>,
    #[serde(default)]
    pub promisc_mode: bool,
    /// The reference bridge plugin's VLAN keys (see `check_vlan`). Read wide so that an
    /// out-of-range number is our one-line code 7, not a serde message.
    pub vlan: Option<i64>,
    pub vlan_trunk: Option<Value>,
    pub preserve_default_vlan: Option<bool>,
    pub ipam: Option<IpamConf>,
    pub dns: Option<Value>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    pub args: Option<Value>,
    pub prev_result: Option<Value>,
    /// GC: the attachments the runtime still uses.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Vec<Attachment>,
    /// With no `ipam` subnets: also ask netd for an IPv6 subnet from its pools.
    #[serde(default)]
    pub ipv6: bool,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub ipam_type: String,
    pub subnet: Option<String>,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
    pub gateway: Option<String>,
    #[serde(default)]
    pub ranges: Vec<Vec<RangeConf>>,
    #[serde(default)]
    pub routes: Vec<RouteConf>,
    pub data_dir: Option<String>,
    pub resolv_conf: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    pub subnet: String,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RouteConf {
    pub dst: String,
    pub gw: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapConf>,
    #[serde(default)]
    pub ips: Vec<String>,
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapConf {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

/// One subnet as netd's network request wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetSpec {
    pub subnet: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// The smallest CIDR covering `rangeStart..rangeEnd` (netd's ranges are CIDRs).
    pub ip_range: Option<IpNetwork>,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

/// Bytes from stdin -> checked config.
pub fn parse(bytes: &[u8]) -> Result<NetConf> {
    if bytes.len() > MAX_STDIN {
        return Err(CniError::new(
            code::DECODE,
            format!(
                "network configuration is {} bytes; at most {MAX_STDIN} accepted",
                bytes.len()
            ),
        ));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!("network configuration is not valid JSON: {e}"),
        )
    })?;
    if !v.is_object() {
        return Err(CniError::new(
            code::DECODE,
            "network configuration must be a JSON object",
        ));
    }
    let conf: NetConf =
        serde_json::from_value(v).map_err(|e| invalid(format!("network configuration: {e}")))?;
    conf.check()?;
    Ok(conf)
}

/// The `cniVersion` of stdin if it can be read at all (errors are answered in it).
pub fn sniff_version(bytes: &[u8]) -> Option<String> {
    if bytes.len() > MAX_STDIN {
        return None;
    }
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let s = v.get("cniVersion")?.as_str()?;
    version::supported(s).then(|| s.to_string())
}

impl NetConf {
    fn check(&self) -> Result<()> {
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
        netd::model::validate_name(&self.name).map_err(|e| invalid(format!("network name: {e}")))?;
        if let Some(d) = &self.driver {
            if d != "bridge" && d != "macvlan" {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    format!("driver {d:?} is not supported by this netd-cni (supported: bridge, macvlan)"),
                ));
            }
        }
        if self.is_macvlan() {
            self.check_macvlan()?;
        } else if self.master.is_some() || self.mode.is_some() {
            return Err(invalid(
                "master and mode are macvlan keys: add \"driver\": \"macvlan\"",
            ));
        }
        if let Some(b) = &self.bridge {
            netd::model::validate_ifname(b).map_err(|e| invalid(format!("bridge: {e}")))?;
        }
        if let Some(m) = self.mtu {
            if !(68..=65535).contains(&m) {
                return Err(invalid(format!("mtu {m}: must be between 68 and 65535")));
            }
        }
        self.check_vlan()?;
        // As the reference bridge plugin, in its words.
        if self.hairpin_mode == Some(true) && self.promisc_mode {
            return Err(invalid(
                "cannot set hairpin mode and promiscuous mode at the same time",
            ));
        }
        if self.promisc_mode && self.vlan_id().is_some() {
            return Err(invalid(
                "promiscMode on a VLAN network: VLAN networks share their bridge with others",
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

    /// The VLAN of the network's ports, if any (`vlan` 0 means none, as in the reference).
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan.and_then(|v| u16::try_from(v).ok()).filter(|v| *v != 0)
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
            if self.is_macvlan() {
                return Err(invalid(
                    "vlanTrunk is a bridge key; a macvlan network has no bridge",
                ));
            }
            if trunk.is_empty() {
                return Err(invalid("vlanTrunk lists no VLAN"));
            }
        }
        let Some(id) = self.vlan_id() else {
            return Ok(());
        };
        if self.is_macvlan() {
            return Err(invalid(
                "vlan is a bridge key; a macvlan network has no bridge (use a VLAN link as master)",
            ));
        }
        let bridge = self
            .bridge
            .clone()
            .unwrap_or_else(|| netd::model::bridge_name(&crate::ops::netd_network(&self.name)));
        let gw = netd::model::gateway_name(&bridge, id);
        if gw.len() > 15 {
            return Err(invalid(format!(
                "vlan {id}: the gateway link {gw} would be longer than 15 bytes; use a shorter bridge name"
            )));
        }
        Ok(())
    }

    pub fn is_macvlan(&self) -> bool {
        self.driver.as_deref() == Some("macvlan")
    }

    /// As the reference `macvlan` plugin: `master` (when missing, the interface of the
    /// node's IPv4 default route: see `ops::with_default_master`), `mode` one of
    /// bridge/private/vepa/passthru. The bridge plugin's keys have no meaning on a
    /// macvlan network.
    fn check_macvlan(&self) -> Result<()> {
        if let Some(m) = self.master.as_deref().filter(|m| !m.is_empty()) {
            netd::model::validate_ifname(m).map_err(|e| invalid(format!("master: {e}")))?;
        }
        if let Some(m) = &self.mode {
            if !netd::model::MACVLAN_MODES.contains(&m.as_str()) {
                return Err(invalid(format!(
                    "mode {m:?} is not a macvlan mode ({})",
                    netd::model::MACVLAN_MODES.join(", ")
                )));
            }
        }
        if self.bridge.is_some() || self.ip_masq || self.hairpin_mode == Some(true) || self.promisc_mode {
            return Err(invalid(
                "bridge, ipMasq, hairpinMode and promiscMode are bridge keys; a macvlan network has no bridge and no NAT",
            ));
        }
        if !self.runtime_config.port_mappings.is_empty() {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "portMappings on a macvlan network: the container has its own address on the master's LAN",
            ));
        }
        Ok(())
    }

    /// Static addresses asked for, from (most to least specific) runtimeConfig `ips`,
    /// `args.cni.ips` and CNI_ARGS `IP`. Prefix lengths are accepted and dropped.
    pub fn requested_ips(&self, cni_args: &[String]) -> Result<Vec<IpAddr>> {
        let from_args: Vec<String> = self
            .args
            .as_ref()
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("ips"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let list = if !self.runtime_config.ips.is_empty() {
            &self.runtime_config.ips
        } else if !from_args.is_empty() {
            &from_args
        } else {
            cni_args
        };
        let mut out: Vec<IpAddr> = Vec::new();
        for s in list {
            let ip: IpAddr = s
                .split('/')
                .next()
                .unwrap_or("")
                .trim()
                .parse()
                .map_err(|_| invalid(format!("requested ip {s:?} is not an IP address")))?;
            if out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    format!(
                        "more than one IPv{} address requested",
                        if ip.is_ipv4() { 4 } else { 6 }
                    ),
                ));
            }
            out.push(ip);
        }
        Ok(out)
    }

    /// Whether the container gets no default route through the gateway of its own,
    /// only the routes IPAM gives (`ipam.routes`, or a delegated IPAM plugin's answer).
    /// As the reference bridge plugin: `isDefaultGateway: true` adds the gateway routes;
    /// without it there are none (with `isGateway: false`, or an IPAM plugin executed
    /// from CNI_PATH, whose config is the drop-in one: `with_addresses` makes the absent
    /// key false). netd's own IPAM without the key keeps netd's rule: the container's
    /// first network carries its default routes. `isDefaultGateway: false` is a pod's
    /// second interface whose default route is another plugin's (Multus).
    pub fn no_default_route(&self) -> bool {
        match self.is_default_gateway {
            Some(d) => !d,
            None => self.is_gateway == Some(false),
        }
    }

    pub fn requested_mac(&self, cni_arg: Option<&str>) -> Option<String> {
        self.runtime_config
            .mac
            .clone()
            .or_else(|| {
                self.args
                    .as_ref()
                    .and_then(|a| a.get("cni"))
                    .and_then(|c| c.get("mac"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .or(cni_arg.map(str::to_string))
    }

    /// `ipam.routes` for the container interface (validated with the config).
    pub fn routes(&self) -> Result<Vec<Route>> {
        let Some(ipam) = &self.ipam else {
            return Ok(Vec::new());
        };
        ipam.routes
            .iter()
            .map(|r| {
                let dst: IpNetwork = r
                    .dst
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("ipam route dst {:?} is not a CIDR", r.dst)))?;
                let gw = r.gw.as_deref().map(|g| parse_ip("route gw", g)).transpose()?;
                let route = Route { dst, gw };
                route.check().map_err(|e| invalid(format!("ipam {e}")))?;
                Ok(route)
            })
            .collect()
    }

    /// `-p` specs for netd from the `portMappings` capability.
    pub fn port_specs(&self) -> Result<Vec<String>> {
        self.runtime_config.port_mappings.iter().map(port_spec).collect()
    }

    pub fn subnets(&self) -> Result<Vec<SubnetSpec>> {
        match &self.ipam {
            Some(i) => i.subnets(),
            None => Ok(Vec::new()),
        }
    }
}

fn port_spec(p: &PortMapConf) -> Result<String> {
    let proto = match p.protocol.to_ascii_lowercase().as_str() {
        "" | "tcp" => "tcp",
        "udp" => "udp",
        other => {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!("portMappings: protocol {other:?} is not supported (tcp, udp)"),
            ))
        }
    };
    if p.container_port == 0 {
        return Err(invalid("portMappings: containerPort must not be 0"));
    }
    let host_ip = match p.host_ip.trim() {
        "" | "0.0.0.0" => String::new(),
        h => {
            let ip: IpAddr = h
                .parse()
                .map_err(|_| invalid(format!("portMappings: hostIP {h:?} is not an IP address")))?;
            match ip {
                IpAddr::V4(v) => format!("{v}:"),
                IpAddr::V6(v) if v.is_unspecified() => String::new(),
                IpAddr::V6(v) => format!("[{v}]:"),
            }
        }
    };
    Ok(format!("{host_ip}{}:{}/{proto}", p.host_port, p.container_port))
}

fn parse_ip(what: &str, s: &str) -> Result<IpAddr> {
    s.trim()
        .parse()
        .map_err(|_| invalid(format!("ipam {what} {s:?} is not an IP address")))
}

/// The smallest CIDR holding both `a` and `b`.
fn covering(a: IpAddr, b: IpAddr) -> IpNetwork {
    let (x, y, bits) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32),
        (a, b) => (to_u128(a), to_u128(b), 128u32),
    };
    let diff = x ^ y;
    let host_bits = 128 - diff.leading_zeros();
    let prefix = bits.saturating_sub(host_bits) as u8;
    IpNetwork::new(a, prefix)
        .map(|n| IpNetwork::new(n.network(), prefix).unwrap_or(n))
        .unwrap_or_else(|_| IpNetwork::from(a))
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

impl IpamConf {
    /// host-local's keys as netd subnets: the first range of each range set (at most one
    /// IPv4 and one IPv6), or the top-level `subnet`.
    pub fn subnets(&self) -> Result<Vec<SubnetSpec>> {
        let mut ranges: Vec<RangeConf> = self
            .ranges
            .iter()
            .filter_map(|set| set.first().cloned())
            .collect();
        if let Some(s) = &self.subnet {
            ranges.insert(
                0,
                RangeConf {
                    subnet: s.clone(),
                    range_start: self.range_start.clone(),
                    range_end: self.range_end.clone(),
                    gateway: self.gateway.clone(),
                },
            );
        }
        let mut out: Vec<SubnetSpec> = Vec::new();
        for r in ranges {
            let subnet: IpNetwork = r
                .subnet
                .trim()
                .parse()
                .map_err(|_| invalid(format!("ipam subnet {:?} is not a CIDR", r.subnet)))?;
            // host-local accepts host bits in the subnet; netd wants the network address.
            let subnet =
                IpNetwork::new(subnet.network(), subnet.prefix()).map_err(|e| invalid(e.to_string()))?;
            let gateway = r.gateway.as_deref().map(|g| parse_ip("gateway", g)).transpose()?;
            let start = r
                .range_start
                .as_deref()
                .map(|g| parse_ip("rangeStart", g))
                .transpose()?;
            let end = r
                .range_end
                .as_deref()
                .map(|g| parse_ip("rangeEnd", g))
                .transpose()?;
            for ip in [gateway, start, end].into_iter().flatten() {
                if !subnet.contains(ip) || ip.is_ipv4() != subnet.is_ipv4() {
                    return Err(invalid(format!("ipam: {ip} is outside subnet {subnet}")));
                }
            }
            let ip_range = match (start, end) {
                (None, None) => None,
                (s, e) => {
                    let s = s.unwrap_or(subnet.network());
                    let e = e.unwrap_or(subnet.broadcast());
                    if to_u128(s) > to_u128(e) {
                        return Err(invalid(format!("ipam: rangeStart {s} is after rangeEnd {e}")));
                    }
                    Some(covering(s, e))
                }
            };
            if out.iter().any(|o| o.subnet.is_ipv4() == subnet.is_ipv4()) {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    "ipam: more than one IPv4 or IPv6 range set (netd uses one subnet per family)",
                ));
            }
            out.push(SubnetSpec {
                subnet,
                gateway,
                ip_range,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
