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
use ipam::parse_ip;
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
    /// `"driver": "macvlan"` / `"ipvlan"`: the reference `macvlan` and `ipvlan` plugins'
    /// keys (`mode`: bridge|vepa|private|passthru, or l2|l3|l3s).
    pub master: Option<String>,
    pub mode: Option<String>,
    /// The reference plugins' `linkInContainer`: the master is a link of the container's
    /// namespace, not the node's (netd's `OPT_PARENT_IN_SANDBOX`).
    pub link_in_container: Option<bool>,
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
    /// The VLAN of the network's ports, if any (`vlan` 0 means none, as in the reference).
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan.and_then(|v| u16::try_from(v).ok()).filter(|v| *v != 0)
    }

    pub fn is_macvlan(&self) -> bool {
        self.driver.as_deref() == Some("macvlan")
    }

    pub fn is_ipvlan(&self) -> bool {
        self.driver.as_deref() == Some("ipvlan")
    }

    /// `"driver": "overlay"`: a pod on one of the cluster's overlay networks (made with
    /// `netctl network create -d overlay` on any node), through the node's daemon.
    pub fn is_overlay(&self) -> bool {
        self.driver.as_deref() == Some("overlay")
    }

    /// Whether `master` is a link of the container's namespace (`linkInContainer`).
    pub fn master_in_container(&self) -> bool {
        self.has_master() && self.link_in_container == Some(true)
    }

    /// macvlan or ipvlan: a child of `master`, no bridge.
    pub fn has_master(&self) -> bool {
        self.is_macvlan() || self.is_ipvlan()
    }

    /// The driver in words, for messages.
    pub fn driver_name(&self) -> &str {
        self.driver.as_deref().unwrap_or("bridge")
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

mod check;
mod ipam;

#[cfg(test)]
mod tests;
