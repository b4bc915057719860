//! What a sandbox request says, checked without looking at anything else: its name, its
//! network mode, its networks, `--expose` and whether its published ports can be
//! published at all; and an endpoint's extra routes against its own addresses. What
//! needs the engine's state (the networks exist, the namespace is alive and free, an
//! address or port is free) is the engine's.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::names::validate_name;
use super::port::{parse_proto, Proto};
use super::sandbox::{Endpoint, NetMode, Route, SandboxRequest};

/// A sandbox request after the checks of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSandbox {
    pub mode: NetMode,
    /// The networks to attach, in order (none in mode host or none).
    pub networks: Vec<String>,
    /// `--expose`, one entry per port.
    pub expose: Vec<(u16, Proto)>,
}

impl SandboxRequest {
    pub fn parse(&self) -> Result<ParsedSandbox, String> {
        validate_name(&self.name).map_err(|e| format!("sandbox {e}"))?;
        let special = self
            .networks
            .iter()
            .map(|e| e.network.as_str())
            .find(|n| matches!(*n, "host" | "none"));
        let mode = match (special, self.networks.len()) {
            (None, _) => NetMode::Bridge,
            (Some("host"), 1) => NetMode::Host,
            (Some("none"), 1) => NetMode::None,
            (Some(m), _) => return Err(format!("network mode {m} cannot be combined with other networks")),
        };
        if self.netns.is_some() && mode != NetMode::Bridge {
            return Err("an existing namespace cannot use network mode host or none".into());
        }
        if let Some(p) = self.netns.as_deref().filter(|p| !p.starts_with('/')) {
            return Err(format!("{p} is not a network namespace"));
        }
        let mut networks: Vec<String> = Vec::new();
        if mode == NetMode::Bridge {
            for e in &self.networks {
                if networks.contains(&e.network) {
                    return Err(format!("network {} is listed twice", e.network));
                }
                networks.push(e.network.clone());
            }
        }
        let mut expose = Vec::new();
        for s in &self.expose {
            expose.extend(parse_expose(s)?);
        }
        let publishes = !self.ports.is_empty() || self.publish_all;
        if publishes && mode != NetMode::Bridge {
            return Err(format!(
                "published ports need a bridge network; sandbox {} uses network mode {}",
                self.name,
                special.unwrap_or("bridge")
            ));
        }
        if !self.ports.is_empty() && networks.is_empty() {
            return Err("published ports need a network: add --network".into());
        }
        Ok(ParsedSandbox {
            mode,
            networks,
            expose,
        })
    }
}

/// Parses `--expose PORT[/udp]` (Docker also accepts a range `8000-8010`).
pub fn parse_expose(spec: &str) -> Result<Vec<(u16, Proto)>, String> {
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((p, pr)) => (p, parse_proto(spec, pr).map_err(|e| e.to_string())?),
        None => (spec, Proto::Tcp),
    };
    let bad = || format!("invalid --expose {spec:?}: expected PORT[-PORT][/tcp|/udp]");
    let (a, b) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a..=b).map(|p| (p, proto)).collect())
}

impl Endpoint {
    /// The extra routes `want` with their gateways resolved against this endpoint (its
    /// addresses and gateways set): a route without one goes via the network's gateway,
    /// as CNI's `ipam.routes` mean it. A default route via the network's gateway is the
    /// one the endpoint gets anyway and is dropped (unless the endpoint gets none,
    /// `no_default_route`, where it is kept as asked); anything the kernel would refuse
    /// (no address of the family, a gateway off the subnet, host bits in the
    /// destination) is refused here, before any change.
    pub fn extra_routes(&self, want: &[Route]) -> Result<Vec<Route>, String> {
        let network = &self.network;
        let mut out: Vec<Route> = Vec::new();
        for r in want {
            let (subnet, gateway) = if r.dst.is_ipv4() {
                (self.ipv4.map(IpNetwork::V4), self.gateway4.map(IpAddr::V4))
            } else {
                (self.ipv6.map(IpNetwork::V6), self.gateway6.map(IpAddr::V6))
            };
            let family = if r.dst.is_ipv4() { "IPv4" } else { "IPv6" };
            let Some(subnet) = subnet else {
                return Err(format!(
                    "route to {}: the endpoint on network {network} has no {family} address",
                    r.dst
                ));
            };
            r.check()?;
            let gw = match r.gw {
                Some(g) if !subnet.contains(g) => {
                    return Err(format!(
                        "route to {} via {g}: the gateway is not on network {network}'s subnet {}",
                        r.dst,
                        IpNetwork::new(subnet.network(), subnet.prefix()).unwrap_or(subnet)
                    ))
                }
                Some(g) => Some(g),
                None => gateway,
            };
            if r.dst.prefix() == 0 && !self.no_default_route {
                if gw == gateway {
                    continue;
                }
                return Err(format!(
                    "a default route via {} on network {network}: netd's default route goes via the network's gateway {}",
                    gw.map_or("the link".to_string(), |g| g.to_string()),
                    gateway.map_or("(none)".to_string(), |g| g.to_string())
                ));
            }
            let r = Route { dst: r.dst, gw };
            if out.contains(&r) {
                continue;
            }
            if let Some(d) = out
                .iter()
                .find(|o| r.dst.prefix() == 0 && o.dst.prefix() == 0 && o.dst.is_ipv4() == r.dst.is_ipv4())
            {
                return Err(format!(
                    "two {family} default routes on network {network} ({} and {}): a sandbox has one",
                    via(d),
                    via(&r)
                ));
            }
            out.push(r);
        }
        Ok(out)
    }
}

/// `via GW` or `on-link`, for messages.
fn via(r: &Route) -> String {
    r.gw.map_or("on-link".to_string(), |g| format!("via {g}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(networks: &[&str]) -> SandboxRequest {
        SandboxRequest::on("web", networks)
    }

    #[test]
    fn modes_and_networks() {
        let p = req(&["a", "b"]).parse().unwrap();
        assert_eq!(
            (p.mode, p.networks),
            (NetMode::Bridge, vec!["a".to_string(), "b".to_string()])
        );
        let p = req(&["host"]).parse().unwrap();
        assert_eq!((p.mode, p.networks.len()), (NetMode::Host, 0));
        assert_eq!(req(&["none"]).parse().unwrap().mode, NetMode::None);
        assert_eq!(req(&[]).parse().unwrap().mode, NetMode::Bridge);
        let e = req(&["a", "host"]).parse().unwrap_err();
        assert_eq!(e, "network mode host cannot be combined with other networks");
        let e = req(&["a", "a"]).parse().unwrap_err();
        assert_eq!(e, "network a is listed twice");
        let mut r = req(&["a"]);
        r.name = "bad/name".into();
        assert!(r.parse().unwrap_err().starts_with("sandbox name"));
    }

    #[test]
    fn an_existing_namespace() {
        let mut r = req(&["host"]);
        r.netns = Some("/proc/1/ns/net".into());
        assert!(r.parse().unwrap_err().contains("cannot use network mode host"));
        let mut r = req(&["a"]);
        r.netns = Some("relative".into());
        assert_eq!(r.parse().unwrap_err(), "relative is not a network namespace");
        r.netns = Some("/var/run/netns/x".into());
        assert!(r.parse().is_ok(), "whether it is alive is the engine's to ask");
    }

    #[test]
    fn ports_and_expose() {
        let mut r = req(&["a"]);
        r.expose = vec!["80".into(), "53/udp".into(), "8000-8002".into()];
        assert_eq!(r.parse().unwrap().expose.len(), 5);
        r.expose = vec!["x".into()];
        assert!(r.parse().unwrap_err().contains("invalid --expose \"x\""));
        let mut r = req(&["none"]);
        r.publish_all = true;
        assert!(r.parse().unwrap_err().contains("uses network mode none"));
        let mut r = req(&[]);
        r.ports = vec!["8080:80".into()];
        assert_eq!(
            r.parse().unwrap_err(),
            "published ports need a network: add --network"
        );
        assert_eq!(parse_expose("80").unwrap(), vec![(80, Proto::Tcp)]);
        assert_eq!(parse_expose("53/udp").unwrap(), vec![(53, Proto::Udp)]);
        for bad in ["0", "9-8", "x"] {
            assert!(parse_expose(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extra_routes_resolve_their_gateway() {
        let ep = Endpoint {
            network: "n".into(),
            ifname: "eth0".into(),
            host_ifname: String::new(),
            mac: String::new(),
            ipv4: Some("10.1.0.2/24".parse().unwrap()),
            ipv6: None,
            gateway4: Some("10.1.0.1".parse().unwrap()),
            gateway6: None,
            aliases: Vec::new(),
            routes: Vec::new(),
            no_default_route: false,
        };
        let route = |dst: &str, gw: Option<&str>| Route {
            dst: dst.parse().unwrap(),
            gw: gw.map(|g| g.parse().unwrap()),
        };
        let got = ep
            .extra_routes(&[route("192.168.0.0/16", None), route("0.0.0.0/0", None)])
            .unwrap();
        assert_eq!(got, vec![route("192.168.0.0/16", Some("10.1.0.1"))]);
        let e = ep.extra_routes(&[route("fd00::/64", None)]).unwrap_err();
        assert!(e.contains("has no IPv6 address"), "{e}");
        let e = ep
            .extra_routes(&[route("10.9.0.0/16", Some("10.2.0.1"))])
            .unwrap_err();
        assert!(e.contains("not on network n's subnet 10.1.0.0/24"), "{e}");
    }
}
