//! Whether an existing network is the one a request describes: the rule behind the
//! local API's `/v1/attach` and netd-cni's ADD, which reuse a network of the requested
//! name only when it is that network. The request is read by `NetworkRequest::parse`,
//! as for a new network, so both agree on what every option means.
//!
//! What the request leaves out takes a new network's default (no VLAN, no trunk, the
//! gateway on the bridge, hairpin on, not promiscuous, the bridge driver), with two
//! exceptions where "not given" means "any": the bridge name (a new network would get
//! a generated one, which an existing network need not have) and the subnets (a new
//! network would get its pool from IPAM).

use super::network::{Network, NetworkRequest, ParsedNetwork, OPT_BRIDGE_NAME};
use super::vlan::{format_vid_ranges, VidRange};

impl NetworkRequest {
    /// Why the existing `net` is not the network this request describes: `Ok(None)` when
    /// it is, `Ok(Some(reason))` when a property differs, `Err` when the request itself
    /// is malformed (a value a new network would refuse, `vlan=abc`).
    pub fn mismatch(&self, net: &Network) -> Result<Option<String>, String> {
        let p = self.parse()?;
        Ok(p.mismatch(net, self.options.contains_key(OPT_BRIDGE_NAME)))
    }
}

impl ParsedNetwork {
    /// `NetworkRequest::mismatch` over the parsed request; `bridge_given`: whether the
    /// request named the bridge (`parse` fills in a default otherwise).
    fn mismatch(&self, net: &Network, bridge_given: bool) -> Option<String> {
        let name = &net.name;
        for s in &self.subnets {
            if !net.subnets.iter().any(|n| n.subnet == s.subnet) {
                let have: Vec<String> = net.subnets.iter().map(|n| n.subnet.to_string()).collect();
                return Some(format!(
                    "network {name} exists with subnets {have:?}, not {}",
                    s.subnet
                ));
            }
        }
        if self.driver != net.driver {
            return Some(format!(
                "network {name} exists with driver {}, not {}",
                net.driver, self.driver
            ));
        }
        if net.has_parent() {
            let show = |p: &Option<String>| p.clone().unwrap_or_else(|| "-".into());
            if self.parent != net.parent {
                return Some(format!(
                    "network {name} exists as {} on {}, not on {}",
                    net.driver,
                    show(&net.parent),
                    show(&self.parent)
                ));
            }
            if self.parent_in_sandbox != net.parent_in_sandbox {
                let side = |in_sandbox: bool| {
                    if in_sandbox {
                        "in the sandboxes"
                    } else {
                        "on the host"
                    }
                };
                return Some(format!(
                    "network {name} exists with its parent {}, not {}",
                    side(net.parent_in_sandbox),
                    side(self.parent_in_sandbox)
                ));
            }
            if net.is_ipvlan() && self.ipvlan_mode != net.ipvlan_mode {
                return Some(format!(
                    "network {name} exists with ipvlan mode {}, not {}",
                    show(&net.ipvlan_mode),
                    show(&self.ipvlan_mode)
                ));
            }
            return None;
        }
        // The VLAN is the network's: a request for another (or none) is another network.
        if self.vlan != net.vlan {
            let show = |v: Option<u16>| v.map_or("none".to_string(), |v| v.to_string());
            return Some(format!(
                "network {name} exists with vlan {}, not {}",
                show(net.vlan),
                show(self.vlan)
            ));
        }
        // Whether the bridge holds the gateway: another answer is another network.
        let want = (self.inhibit_ipv4, self.inhibit_ipv6);
        let have = (net.inhibit_ipv4, net.inhibit_ipv6);
        if want != have {
            let show = |(v4, v6): (bool, bool)| match (v4, v6) {
                (false, false) => "its gateway on the bridge",
                (true, true) => "no gateway on the bridge",
                (true, false) => "no IPv4 gateway on the bridge",
                (false, true) => "no IPv6 gateway on the bridge",
            };
            return Some(format!(
                "network {name} exists with {}, not {}",
                show(have),
                show(want)
            ));
        }
        if self.promisc != net.promisc {
            let show = |p: bool| {
                if p {
                    "a promiscuous bridge"
                } else {
                    "a bridge that is not promiscuous"
                }
            };
            return Some(format!(
                "network {name} exists with {}, not {}",
                show(net.promisc),
                show(self.promisc)
            ));
        }
        if self.vlan_trunk != net.vlan_trunk {
            let show = |t: &[VidRange]| {
                if t.is_empty() {
                    "none".to_string()
                } else {
                    format_vid_ranges(t)
                }
            };
            return Some(format!(
                "network {name} exists with vlan trunk {}, not {}",
                show(&net.vlan_trunk),
                show(&self.vlan_trunk)
            ));
        }
        if self.no_hairpin != net.no_hairpin {
            let show = |off: bool| if off { "off" } else { "on" };
            return Some(format!(
                "network {name} exists with hairpin mode {} on its ports, not {}",
                show(net.no_hairpin),
                show(self.no_hairpin)
            ));
        }
        if bridge_given && self.bridge != net.bridge {
            return Some(format!(
                "network {name} exists with bridge {}, not {}",
                net.bridge, self.bridge
            ));
        }
        None
    }
}

#[cfg(test)]
#[path = "network_match_tests.rs"]
mod tests;
