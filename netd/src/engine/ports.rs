//! Published ports: Docker's `-p`, `-P` and `--expose`, checked against every other
//! sandbox's publications, with ephemeral host ports picked round-robin.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{Engine, EngineError, Result};
use crate::firewall::FwPort;
use crate::model::{parse_port_spec, PortMapping, Proto, Sandbox};

/// The DNAT entries a sandbox's publications need: each mapping goes to the sandbox's
/// first endpoint (the one holding its default route, as in Docker), per address family.
pub fn fw_ports(s: &Sandbox) -> Vec<FwPort> {
    let Some(ep) = s.endpoints.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in &s.ports {
        let want4 = !matches!(m.host_ip, Some(IpAddr::V6(_)));
        let want6 = !matches!(m.host_ip, Some(IpAddr::V4(_)));
        let host_ip = m.host_ip.filter(|ip| !ip.is_unspecified());
        if let (true, Some(v4)) = (want4, ep.ipv4) {
            out.push(FwPort {
                host_ip,
                host_port: m.host_port,
                proto: m.proto,
                target: IpAddr::V4(v4.ip()),
                target_port: m.container_port,
            });
        }
        if let (true, Some(v6)) = (want6, ep.ipv6) {
            out.push(FwPort {
                host_ip,
                host_port: m.host_port,
                proto: m.proto,
                target: IpAddr::V6(v6.ip()),
                target_port: m.container_port,
            });
        }
    }
    out
}

impl Engine {
    /// Turns a sandbox request's port specs into concrete mappings: host binding
    /// defaulted from the network option, ephemeral ports picked, clashes refused.
    pub(super) fn resolve_ports(
        &mut self,
        sandbox: &str,
        specs: &[String],
        publish_all: bool,
        expose: &[(u16, Proto)],
        default_host_ip: Option<IpAddr>,
    ) -> Result<Vec<PortMapping>> {
        let mut wanted = Vec::new();
        for s in specs {
            wanted.push(parse_port_spec(s).map_err(|e| EngineError::Invalid(e.to_string()))?);
        }
        if publish_all {
            for (port, proto) in expose {
                if !wanted
                    .iter()
                    .any(|m| m.container_port == *port && m.proto == *proto)
                {
                    wanted.push(PortMapping {
                        host_ip: None,
                        host_port: 0,
                        container_port: *port,
                        proto: *proto,
                    });
                }
            }
        }
        self.resolve_mappings(sandbox, wanted, default_host_ip)
    }

    /// Checks and completes parsed mappings (host binding default, ephemeral ports,
    /// clashes with every other sandbox's publications).
    pub(super) fn resolve_mappings(
        &mut self,
        sandbox: &str,
        wanted: Vec<PortMapping>,
        default_host_ip: Option<IpAddr>,
    ) -> Result<Vec<PortMapping>> {
        if wanted.is_empty() {
            return Ok(wanted);
        }
        let locals = self
            .kernel
            .local_addrs()
            .map_err(EngineError::kernel("list the host's addresses"))?;
        let mut taken: Vec<PortMapping> = self
            .sandboxes
            .values()
            .filter(|s| s.name != sandbox)
            .flat_map(|s| s.ports.iter().copied())
            .collect();
        // Services' published ports: an ephemeral pick skips them too.
        let services = self.service_ports_in_use(None);
        taken.extend(services.iter().map(|(m, _)| *m));
        let mut out = Vec::new();
        for mut m in wanted {
            if m.host_ip.is_none() {
                m.host_ip = default_host_ip;
            }
            if let Some(ip) = m.host_ip {
                if !ip.is_unspecified() && !locals.contains(&ip) {
                    return Err(EngineError::Invalid(format!(
                        "cannot publish {m}: {ip} is not an address of this host"
                    )));
                }
            }
            if m.host_port == 0 {
                m.host_port = self.pick_ephemeral(&m, &taken)?;
            } else if let Some((_, by)) = services.iter().find(|(t, _)| t.clashes(&m)) {
                return Err(EngineError::Conflict(format!(
                    "port {}/{} is already published by {by}",
                    m.host_port, m.proto
                )));
            } else if let Some(clash) = taken.iter().find(|t| t.clashes(&m)) {
                let owner = self
                    .sandboxes
                    .values()
                    .find(|s| s.ports.contains(clash))
                    .map(|s| format!("sandbox {}", s.name))
                    .unwrap_or_else(|| "this request".into());
                return Err(EngineError::Conflict(format!(
                    "port {}/{} is already published by {owner}",
                    m.host_port, m.proto
                )));
            }
            taken.push(m);
            out.push(m);
        }
        Ok(out)
    }

    fn pick_ephemeral(&mut self, m: &PortMapping, taken: &[PortMapping]) -> Result<u16> {
        let (lo, hi) = self.cfg.ephemeral_ports;
        let used: BTreeSet<u16> = taken
            .iter()
            .filter(|t| t.proto == m.proto)
            .map(|t| t.host_port)
            .collect();
        let span = u32::from(hi - lo) + 1;
        let start = self.port_cursor.clamp(lo, hi);
        for i in 0..span {
            let p = lo + ((u32::from(start - lo) + i) % span) as u16;
            let cand = PortMapping { host_port: p, ..*m };
            if !used.contains(&p) && !taken.iter().any(|t| t.clashes(&cand)) {
                self.port_cursor = if p == hi { lo } else { p + 1 };
                return Ok(p);
            }
        }
        Err(EngineError::Conflict(format!(
            "no free host port left in {lo}-{hi} for {}",
            m.proto
        )))
    }
}
