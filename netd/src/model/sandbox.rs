//! Sandboxes (a network namespace a container or process lives in) and their endpoints
//! (one interface per attached network).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use super::port::{PortMapping, Proto};

/// How a sandbox gets its network: its own namespace (`bridge`, attached to networks),
/// the host's namespace (`host`), or its own namespace with only loopback (`none`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    #[default]
    Bridge,
    Host,
    None,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct EndpointRequest {
    pub network: String,
    pub ip: Option<String>,
    pub ip6: Option<String>,
    pub aliases: Vec<String>,
    pub mac: Option<String>,
    /// Interface name inside the sandbox (CNI's CNI_IFNAME); default the lowest free ethN.
    pub ifname: Option<String>,
    /// Routes on top of the default route (CNI's `ipam.routes`); a route without `gw`
    /// goes via the network's gateway.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// No default route through the network's gateway on this endpoint, even when it is
    /// the sandbox's first (CNI's `isDefaultGateway: false`: a second interface of a pod
    /// whose default route is another plugin's). A default route in `routes` is then
    /// installed as it is asked for.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_default_route: bool,
}

/// A route inside a sandbox through one of its endpoints: to `dst` via `gw`, or on-link
/// when `gw` is none.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

impl Route {
    /// What the kernel wants of any route, whatever it goes through: `dst` a network
    /// address (no host bits, as `ip route` insists) and `gw` of `dst`'s family.
    pub fn check(&self) -> Result<(), String> {
        if self.dst.ip() != self.dst.network() {
            return Err(format!(
                "route destination {} has host bits set (did you mean {}/{}?)",
                self.dst,
                self.dst.network(),
                self.dst.prefix()
            ));
        }
        match self.gw {
            Some(g) if g.is_ipv4() != self.dst.is_ipv4() => Err(format!(
                "route to {} via {g}: the gateway is of the other IP family",
                self.dst
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SandboxRequest {
    pub name: String,
    /// Networks in order; the first gives the default route. `host` or `none` alone
    /// select those modes.
    pub networks: Vec<EndpointRequest>,
    /// `-p` specs as typed (`8080:80`, `127.0.0.1:53:53/udp`).
    pub ports: Vec<String>,
    /// `-P`: publish every exposed port on an ephemeral host port.
    pub publish_all: bool,
    /// `--expose PORT[/udp]`.
    pub expose: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Use this existing network namespace (a container runtime's, as CNI hands it over)
    /// instead of creating one; netd then never deletes it.
    pub netns: Option<String>,
}

impl SandboxRequest {
    /// A sandbox named `name` on `networks` (in order), everything else the default.
    pub fn on(name: &str, networks: &[&str]) -> SandboxRequest {
        SandboxRequest {
            name: name.into(),
            networks: networks
                .iter()
                .map(|n| EndpointRequest {
                    network: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub network: String,
    /// Name inside the sandbox: eth0, eth1, ...
    pub ifname: String,
    /// Host-side veth.
    pub host_ifname: String,
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Extra routes through this endpoint, their gateways resolved (see `Route`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// See `EndpointRequest::no_default_route`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_default_route: bool,
}

impl Endpoint {
    /// Whether this endpoint's link carries the sandbox's default routes via its
    /// network's gateways: it is the sandbox's `first` endpoint, its network is not
    /// `internal` (no way out), and it did not ask for none (`no_default_route`). The
    /// one rule for the kernel plan (`driver::endpoint_up`), the check against a second
    /// default route, and the routes a CNI result lists.
    pub fn carries_gateway_routes(&self, first: bool, internal: bool) -> bool {
        first && !internal && !self.no_default_route
    }

    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4
            .map(|n| IpAddr::V4(n.ip()))
            .into_iter()
            .chain(self.ipv6.map(|n| IpAddr::V6(n.ip())))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sandbox {
    pub name: String,
    pub id: String,
    pub mode: NetMode,
    /// Path of the namespace file (`<netns-dir>/<name>`, or the runtime's when external).
    pub netns: String,
    /// The namespace belongs to someone else (a container runtime): netd attaches to it
    /// but never creates, recreates or deletes it.
    #[serde(default)]
    pub external: bool,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<PortMapping>,
    pub publish_all: bool,
    pub expose: Vec<(u16, Proto)>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created: u64,
}

impl Sandbox {
    pub fn endpoint(&self, network: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.network == network)
    }

    /// The lowest `ethN` not in use.
    pub fn next_ifname(&self) -> String {
        (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !self.endpoints.iter().any(|e| &e.ifname == n))
            .unwrap_or_else(|| "eth0".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_ifname_fills_gaps() {
        let ep = |n: &str| Endpoint {
            network: n.into(),
            ifname: n.into(),
            host_ifname: String::new(),
            mac: String::new(),
            ipv4: None,
            ipv6: None,
            gateway4: None,
            gateway6: None,
            aliases: vec![],
            routes: vec![],
            no_default_route: false,
        };
        let mut s = Sandbox {
            name: "s".into(),
            id: "x".into(),
            mode: NetMode::Bridge,
            netns: "/run/netns/s".into(),
            external: false,
            endpoints: vec![ep("eth0"), ep("eth2")],
            ports: vec![],
            publish_all: false,
            expose: vec![],
            labels: Default::default(),
            created: 0,
        };
        assert_eq!(s.next_ifname(), "eth1");
        s.endpoints.push(ep("eth1"));
        assert_eq!(s.next_ifname(), "eth3");
    }
}
