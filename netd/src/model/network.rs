//! Networks: what a user asks for (`NetworkRequest`, strings as typed on a command line)
//! and what netd keeps (`Network`, typed and complete).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::names::{bridge_name, validate_ifname, validate_name};

pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
pub const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
pub const OPT_MASQ: &str = "com.docker.network.bridge.enable_ip_masquerade";
pub const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// Docker's `-o com.docker.network.bridge.inhibit_ipv4=true`: the bridge gets no IPv4
/// address; the gateway address (still the endpoints' default route) is someone else's,
/// a router on the bridge's LAN. `OPT_INHIBIT_IPV6` is netd's counterpart for IPv6
/// (CNI `isGateway: false` sets both).
pub const OPT_INHIBIT_IPV4: &str = "com.docker.network.bridge.inhibit_ipv4";
pub const OPT_INHIBIT_IPV6: &str = "netd.bridge.inhibit_ipv6";
/// `-o netd.bridge.promisc=true` (CNI `promiscMode`): the bridge is in promiscuous mode,
/// and its ports are not in hairpin mode (the reference bridge plugin's promiscuous
/// alternative to hairpin mode: it refuses the two together).
pub const OPT_PROMISC: &str = "netd.bridge.promisc";
/// `-o netd.bridge.hairpin=false` (CNI `hairpinMode: false`): the network's ports are
/// not in hairpin mode. They are by default, so that a container reaches its own
/// published port through a host address (Docker does the same without its userland
/// proxy); a frame then cannot be bridged back out of the port it came in on.
pub const OPT_HAIRPIN: &str = "netd.bridge.hairpin";
const KNOWN_BRIDGE_OPTS: &[&str] = &[
    OPT_BRIDGE_NAME,
    OPT_ICC,
    OPT_MASQ,
    OPT_HOST_BINDING,
    OPT_INHIBIT_IPV4,
];
/// Docker's macvlan driver options (`-o parent=eth0 -o macvlan_mode=bridge`).
pub const OPT_PARENT: &str = "parent";
pub const OPT_MACVLAN_MODE: &str = "macvlan_mode";
pub const DRIVER_BRIDGE: &str = "bridge";
pub const DRIVER_MACVLAN: &str = "macvlan";
/// Docker's ipvlan driver options (`-o parent=eth0.10 -o ipvlan_mode=l3 -o ipvlan_flag=private`).
pub const OPT_IPVLAN_MODE: &str = "ipvlan_mode";
pub const OPT_IPVLAN_FLAG: &str = "ipvlan_flag";
/// netd's `-o netd.parent_in_sandbox=true` (CNI `linkInContainer: true`): see
/// `parent::parse_parent`.
pub const OPT_PARENT_IN_SANDBOX: &str = "netd.parent_in_sandbox";
pub const DRIVER_IPVLAN: &str = "ipvlan";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SubnetRequest {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct NetworkRequest {
    pub name: String,
    pub driver: Option<String>,
    pub subnets: Vec<SubnetRequest>,
    pub ipv6: bool,
    pub internal: bool,
    pub mtu: Option<u32>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A request after syntax checks: every string parsed, options understood. Pool choice,
/// overlap and exhaustion are IPAM's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedNetwork {
    pub name: String,
    pub driver: String,
    pub subnets: Vec<ParsedSubnet>,
    pub ipv6: bool,
    pub internal: bool,
    pub mtu: u32,
    pub bridge: String,
    pub icc: bool,
    pub masquerade: bool,
    pub host_binding_ipv4: Option<Ipv4Addr>,
    /// macvlan and ipvlan: the host link the children hang off, and the mode.
    pub parent: Option<String>,
    pub macvlan_mode: Option<String>,
    /// ipvlan only: l2, l3 or l3s, and bridge, private or vepa.
    pub ipvlan_mode: Option<String>,
    pub ipvlan_flag: Option<String>,
    /// macvlan and ipvlan: `parent` is a link of each sandbox's namespace, not the host's
    /// (`OPT_PARENT_IN_SANDBOX`).
    pub parent_in_sandbox: bool,
    /// bridge only: the VLAN of the network's ports (`-o vlan=N`).
    pub vlan: Option<u16>,
    /// bridge only: no gateway address on the bridge, per family (`OPT_INHIBIT_IPV4`).
    pub inhibit_ipv4: bool,
    pub inhibit_ipv6: bool,
    /// bridge only: `OPT_PROMISC`.
    pub promisc: bool,
    /// bridge only: `OPT_HAIRPIN=false`.
    pub no_hairpin: bool,
    /// bridge only: `OPT_VLAN_TRUNK`.
    pub vlan_trunk: Vec<super::vlan::VidRange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedSubnet {
    pub subnet: IpNetwork,
    pub gateway: Option<IpAddr>,
    pub ip_range: Option<IpNetwork>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Subnet {
    pub subnet: IpNetwork,
    pub gateway: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNetwork>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub driver: String,
    /// The network's bridge; empty for macvlan networks, which have none.
    pub bridge: String,
    pub subnets: Vec<Subnet>,
    pub ipv6: bool,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_binding_ipv4: Option<Ipv4Addr>,
    pub mtu: u32,
    /// macvlan: the parent link (`-o parent=`) and mode (`-o macvlan_mode=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvlan_mode: Option<String>,
    /// ipvlan: the mode (`-o ipvlan_mode=l2|l3|l3s`) and flag (`-o ipvlan_flag=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvlan_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvlan_flag: Option<String>,
    /// The parent is a link of each sandbox's namespace (`OPT_PARENT_IN_SANDBOX`): the
    /// host has none to check, make or share.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parent_in_sandbox: bool,
    /// bridge with `-o vlan=N`: the VLAN of its ports; the gateway is on `<bridge>.<N>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The bridge holds no gateway address of that family (`OPT_INHIBIT_IPV4`): the
    /// gateway is a router on the bridge's LAN.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inhibit_ipv4: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inhibit_ipv6: bool,
    /// The bridge is promiscuous and its ports are not in hairpin mode (`OPT_PROMISC`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promisc: bool,
    /// Its ports are not in hairpin mode (`OPT_HAIRPIN=false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_hairpin: bool,
    /// VLANs its ports carry tagged (`OPT_VLAN_TRUNK`); the bridge filters by VLAN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlan_trunk: Vec<super::vlan::VidRange>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Who made it: "netctl" (API, CLI, stack), later "docker" and "cni".
    #[serde(default = "default_owner")]
    pub owner: String,
    pub created: u64,
}

impl ParsedNetwork {
    /// The network netd keeps, once IPAM has settled its subnets. One place for every
    /// field, so a new one cannot be forgotten by one of the ways networks are made.
    pub fn into_network(
        self,
        id: String,
        subnets: Vec<Subnet>,
        req: &NetworkRequest,
        owner: &str,
        created: u64,
    ) -> Network {
        Network {
            name: self.name,
            id,
            driver: self.driver,
            bridge: self.bridge,
            subnets,
            ipv6: self.ipv6,
            internal: self.internal,
            icc: self.icc,
            masquerade: self.masquerade,
            host_binding_ipv4: self.host_binding_ipv4,
            mtu: self.mtu,
            parent: self.parent,
            macvlan_mode: self.macvlan_mode,
            ipvlan_mode: self.ipvlan_mode,
            ipvlan_flag: self.ipvlan_flag,
            parent_in_sandbox: self.parent_in_sandbox,
            vlan: self.vlan,
            inhibit_ipv4: self.inhibit_ipv4,
            inhibit_ipv6: self.inhibit_ipv6,
            promisc: self.promisc,
            no_hairpin: self.no_hairpin,
            vlan_trunk: self.vlan_trunk,
            options: req.options.clone(),
            labels: req.labels.clone(),
            owner: owner.into(),
            created,
        }
    }
}

fn default_owner() -> String {
    "netctl".into()
}

impl Network {
    pub fn subnet4(&self) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.subnet.is_ipv4())
    }
    pub fn subnet6(&self) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.subnet.is_ipv6())
    }
    pub fn is_macvlan(&self) -> bool {
        self.driver == DRIVER_MACVLAN
    }
    pub fn is_ipvlan(&self) -> bool {
        self.driver == DRIVER_IPVLAN
    }
    /// Whether the network hangs off a host link (macvlan, ipvlan) instead of having a
    /// bridge: no bridge, no NAT, no rules, and endpoints only inside their sandboxes.
    pub fn has_parent(&self) -> bool {
        self.is_macvlan() || self.is_ipvlan()
    }
    /// The host link the network hangs off, if it has one: none for a bridge network,
    /// nor for one whose parent is each sandbox's own (`parent_in_sandbox`).
    pub fn host_parent(&self) -> Option<&str> {
        self.parent
            .as_deref()
            .filter(|_| self.has_parent() && !self.parent_in_sandbox)
    }
    /// Whether endpoints route through their device without a gateway (ipvlan l3, l3s):
    /// the parent does the neighbour work, so the default route is `dev eth0`.
    pub fn routes_without_gateway(&self) -> bool {
        self.is_ipvlan() && matches!(self.ipvlan_mode.as_deref(), Some("l3" | "l3s"))
    }
    /// Whether the network's bridge ports are in hairpin mode: unless the bridge is
    /// promiscuous (`OPT_PROMISC`) or hairpin is switched off (`OPT_HAIRPIN`).
    pub fn port_hairpin(&self) -> bool {
        !self.promisc && !self.no_hairpin
    }
}

/// Whether a boolean option's value says yes (what `parse_bool` reads as true).
pub fn option_is_true(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on")
}

pub(super) fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("option {key}={v}: expected true or false")),
    }
}

pub fn parse_cidr(what: &str, s: &str) -> Result<IpNetwork, String> {
    let n: IpNetwork = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid {what} {s:?}: expected CIDR like 10.1.0.0/24 or fd00::/64"))?;
    if !s.contains('/') {
        return Err(format!("invalid {what} {s:?}: missing prefix length (e.g. /24)"));
    }
    if n.network() != n.ip() {
        return Err(format!(
            "invalid {what} {s}: host bits are set; did you mean {}/{}?",
            n.network(),
            n.prefix()
        ));
    }
    Ok(n)
}

impl NetworkRequest {
    /// Syntax and option checks. Everything that needs other networks or pools is IPAM's.
    pub fn parse(&self) -> Result<ParsedNetwork, String> {
        validate_name(&self.name).map_err(|e| format!("network {e}"))?;
        if matches!(self.name.as_str(), "host" | "none" | "bridge" | "default") {
            return Err(format!("network name {:?} is reserved", self.name));
        }
        let driver = self.driver.clone().unwrap_or_else(|| DRIVER_BRIDGE.into());
        if ![
            DRIVER_BRIDGE,
            DRIVER_MACVLAN,
            DRIVER_IPVLAN,
            super::overlay::DRIVER_OVERLAY,
        ]
        .contains(&driver.as_str())
        {
            return Err(format!(
                "driver {driver:?} is not supported here (supported: bridge, macvlan, ipvlan, overlay)"
            ));
        }
        if driver == super::overlay::DRIVER_OVERLAY {
            super::overlay::parse_options(&self.options)?;
        }
        let parented = driver == DRIVER_MACVLAN || driver == DRIVER_IPVLAN;
        let mut o = ParsedNetwork {
            name: self.name.clone(),
            driver,
            subnets: Vec::new(),
            ipv6: self.ipv6,
            internal: self.internal,
            mtu: self.mtu.unwrap_or(0),
            bridge: bridge_name(&self.name),
            icc: true,
            masquerade: true,
            host_binding_ipv4: None,
            parent: None,
            macvlan_mode: None,
            ipvlan_mode: None,
            ipvlan_flag: None,
            parent_in_sandbox: false,
            vlan: None,
            inhibit_ipv4: false,
            inhibit_ipv6: false,
            promisc: false,
            no_hairpin: false,
            vlan_trunk: Vec::new(),
        };
        if o.driver == DRIVER_MACVLAN {
            super::macvlan::parse_options(&self.options, &mut o)?;
        } else if o.driver == DRIVER_IPVLAN {
            super::ipvlan::parse_options(&self.options, &mut o)?;
        } else if let Some(k) = [
            OPT_PARENT,
            OPT_MACVLAN_MODE,
            OPT_IPVLAN_MODE,
            OPT_IPVLAN_FLAG,
            OPT_PARENT_IN_SANDBOX,
        ]
        .into_iter()
        .find(|k| self.options.contains_key(*k))
        {
            return Err(format!(
                "option {k} is for macvlan and ipvlan networks; this network uses the bridge driver"
            ));
        }
        if let Some(k) = match o.driver.as_str() {
            DRIVER_MACVLAN => [OPT_IPVLAN_MODE, OPT_IPVLAN_FLAG]
                .into_iter()
                .find(|k| self.options.contains_key(*k)),
            DRIVER_IPVLAN => [OPT_MACVLAN_MODE]
                .into_iter()
                .find(|k| self.options.contains_key(*k)),
            _ => None,
        } {
            return Err(format!("option {k} is not for this {} network", o.driver));
        }
        for (k, v) in &self.options {
            match k.as_str() {
                k if parented && k.starts_with("com.docker.network.bridge.") => {
                    return Err(format!(
                        "option {k} is a bridge option; this network uses the {} driver",
                        o.driver
                    ));
                }
                OPT_BRIDGE_NAME => {
                    validate_ifname(v).map_err(|e| format!("option {k}: {e}"))?;
                    o.bridge = v.clone();
                }
                OPT_ICC => o.icc = parse_bool(k, v)?,
                OPT_INHIBIT_IPV4 => o.inhibit_ipv4 = parse_bool(k, v)?,
                OPT_INHIBIT_IPV6 | OPT_PROMISC | OPT_HAIRPIN if parented => {
                    return Err(format!(
                        "option {k} is a bridge option; this network uses the {} driver",
                        o.driver
                    ));
                }
                OPT_INHIBIT_IPV6 => o.inhibit_ipv6 = parse_bool(k, v)?,
                OPT_PROMISC => o.promisc = parse_bool(k, v)?,
                OPT_HAIRPIN => o.no_hairpin = !parse_bool(k, v)?,
                OPT_MASQ => o.masquerade = parse_bool(k, v)?,
                OPT_HOST_BINDING => {
                    o.host_binding_ipv4 = Some(
                        v.parse()
                            .map_err(|_| format!("option {k}={v}: expected an IPv4 address"))?,
                    )
                }
                OPT_MTU => {
                    o.mtu = v
                        .parse()
                        .map_err(|_| format!("option {k}={v}: expected a number"))?
                }
                k if k.starts_with("com.docker.network.bridge.") && !KNOWN_BRIDGE_OPTS.contains(&k) => {
                    return Err(format!("unknown bridge option {k:?}"));
                }
                _ => {}
            }
        }
        super::vlan::parse_option(&self.options, &mut o)?;
        super::vlan::parse_trunk(&self.options, &mut o)?;
        if o.promisc && o.vlan.is_some() {
            return Err(format!(
                "option {OPT_PROMISC} is not for a VLAN network: VLAN networks share their bridge"
            ));
        }
        if o.mtu != 0 && !(68..=65535).contains(&o.mtu) {
            return Err(format!("invalid MTU {}: must be between 68 and 65535", o.mtu));
        }
        if o.internal {
            o.masquerade = false;
        }
        for s in &self.subnets {
            let subnet = match &s.subnet {
                Some(x) => parse_cidr("subnet", x)?,
                None => return Err("a subnet entry needs a subnet".into()),
            };
            let gateway = match &s.gateway {
                Some(g) => {
                    let g: IpAddr = g
                        .trim()
                        .parse()
                        .map_err(|_| format!("invalid gateway {g:?}: expected an IP address"))?;
                    if !subnet.contains(g) || g.is_ipv4() != subnet.is_ipv4() {
                        return Err(format!("gateway {g} is outside subnet {subnet}"));
                    }
                    if g == subnet.network()
                        || (subnet.is_ipv4() && g == subnet.broadcast() && subnet.prefix() < 31)
                    {
                        return Err(format!(
                            "gateway {g} is the network or broadcast address of {subnet}"
                        ));
                    }
                    Some(g)
                }
                None => None,
            };
            let ip_range = match &s.ip_range {
                Some(r) => {
                    let r = parse_cidr("ip-range", r)?;
                    if r.is_ipv4() != subnet.is_ipv4()
                        || !subnet.contains(r.network())
                        || r.prefix() < subnet.prefix()
                    {
                        return Err(format!("ip-range {r} is not inside subnet {subnet}"));
                    }
                    Some(r)
                }
                None => None,
            };
            if subnet.is_ipv4() && subnet.prefix() > 30 {
                return Err(format!("subnet {subnet} is too small: use /30 or larger"));
            }
            if subnet.is_ipv6() {
                if subnet.prefix() > 126 {
                    return Err(format!("subnet {subnet} is too small: use /126 or larger"));
                }
                o.ipv6 = true;
            }
            o.subnets.push(ParsedSubnet {
                subnet,
                gateway,
                ip_range,
            });
        }
        let v4 = o.subnets.iter().filter(|s| s.subnet.is_ipv4()).count();
        let v6 = o.subnets.len() - v4;
        // Docker's ipvlan takes several subnets on one network (l3 routes between them
        // without a gateway); each is a pool of its own (`Engine::pool_keys_of`).
        if (v4 > 1 && o.driver != DRIVER_IPVLAN) || v6 > 1 {
            return Err(
                "at most one IPv4 and one IPv6 subnet per network (several IPv4 subnets: ipvlan only)".into(),
            );
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(subnet: &str, gw: Option<&str>) -> NetworkRequest {
        NetworkRequest {
            name: "n1".into(),
            subnets: vec![SubnetRequest {
                subnet: Some(subnet.into()),
                gateway: gw.map(Into::into),
                ip_range: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn parses_docker_options() {
        let mut r = req("10.1.0.0/24", Some("10.1.0.254"));
        r.options.insert(OPT_ICC.into(), "false".into());
        r.options.insert(OPT_BRIDGE_NAME.into(), "br-custom".into());
        r.options.insert(OPT_MTU.into(), "1400".into());
        let p = r.parse().unwrap();
        assert!(!p.icc);
        assert_eq!(p.bridge, "br-custom");
        assert_eq!(p.mtu, 1400);
        assert_eq!(p.subnets[0].gateway, Some("10.1.0.254".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        let e = req("10.1.0.0/33", None).parse().unwrap_err();
        assert!(e.contains("invalid subnet"), "{e}");
        let e = req("10.1.0.5/24", None).parse().unwrap_err();
        assert!(e.contains("did you mean 10.1.0.0/24"), "{e}");
        let e = req("10.1.0.0/24", Some("10.2.0.1")).parse().unwrap_err();
        assert!(e.contains("outside subnet"), "{e}");
        let e = req("10.1.0.0/24", Some("10.1.0.255")).parse().unwrap_err();
        assert!(e.contains("broadcast"), "{e}");
        let mut r = req("10.1.0.0/24", None);
        r.options
            .insert("com.docker.network.bridge.bogus".into(), "1".into());
        assert!(r.parse().unwrap_err().contains("unknown bridge option"));
        let mut r = req("10.1.0.0/24", None);
        r.name = "host".into();
        assert!(r.parse().unwrap_err().contains("reserved"));
    }

    #[test]
    fn internal_never_masquerades_and_v6_subnet_implies_ipv6() {
        let mut r = req("fd00:1::/64", None);
        r.internal = true;
        let p = r.parse().unwrap();
        assert!(p.ipv6 && !p.masquerade);
    }
}
