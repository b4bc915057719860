//! The topology picture (`netctl graph`, `netd up --graph`): the host, its networks
//! (subnets, bridge), sandboxes with their addresses and published ports, and services
//! with their VIPs and backends, as Graphviz DOT. `dot` is pure (the model in, text
//! out) and unit-tested; `render` hands it to Graphviz's `dot` for SVG.

mod render;

use std::fmt::Write;

use serde::Deserialize;

use crate::api::client::Client;
use crate::cluster::agent::NodeView;
use crate::model::{Backend, Network, Sandbox, Service, ServiceKind};

pub use render::{render, Format, GraphError};

/// What the picture shows, as the API lists it.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub host: String,
    pub networks: Vec<Network>,
    pub sandboxes: Vec<Sandbox>,
    pub services: Vec<ServiceEntry>,
    /// The cluster's nodes (`--cluster`; empty on a single host): the others are drawn
    /// as the overlay networks' peers.
    pub nodes: Vec<NodeView>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServiceEntry {
    #[serde(flatten)]
    pub service: Service,
    #[serde(default)]
    pub live_backends: Option<Vec<Backend>>,
}

impl Topology {
    /// Reads the daemon's networks, sandboxes and services.
    pub fn fetch(c: &Client, host: &str) -> Result<Topology, GraphError> {
        Ok(Topology {
            host: host.to_string(),
            networks: list(c, "/v1/networks")?,
            sandboxes: list(c, "/v1/sandboxes")?,
            services: list(c, "/v1/services")?,
            nodes: match c.get("/v1/cluster/nodes") {
                Ok(v) => serde_json::from_value(v)
                    .map_err(|e| GraphError::Api(format!("/v1/cluster/nodes: {e}")))?,
                // A daemon without --cluster has no such path.
                Err(crate::api::client::ClientError::Api { status: 404, .. }) => Vec::new(),
                Err(e) => return Err(GraphError::Api(e.to_string())),
            },
        })
    }

    /// Only the objects labelled `netd.stack=<stack>` (`netd up --graph`).
    pub fn only_stack(mut self, stack: &str) -> Topology {
        let mine = |l: &std::collections::BTreeMap<String, String>| {
            l.get(crate::stack::diff::LABEL_STACK).map(String::as_str) == Some(stack)
        };
        self.networks.retain(|n| mine(&n.labels));
        self.sandboxes.retain(|s| mine(&s.labels));
        let nets: Vec<String> = self.networks.iter().map(|n| n.name.clone()).collect();
        self.nodes.retain(|p| p.networks.iter().any(|n| nets.contains(n)));
        self.services.retain(|s| match &s.service.kind {
            ServiceKind::ClusterIp(c) => {
                mine(&s.service.labels) || c.networks.iter().any(|n| nets.contains(n))
            }
            ServiceKind::ExternalName { .. } => mine(&s.service.labels),
        });
        self
    }
}

fn list<T: serde::de::DeserializeOwned>(c: &Client, path: &str) -> Result<Vec<T>, GraphError> {
    let v = c.get(path).map_err(|e| GraphError::Api(e.to_string()))?;
    serde_json::from_value(v).map_err(|e| GraphError::Api(format!("{path}: {e}")))
}

/// The host's name for the picture's title (its UTS name; `host` when unreadable).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// Writes the picture of `t` to `path`: DOT when the name ends in `.dot`, else SVG.
pub fn write_file(t: &Topology, path: &std::path::Path) -> Result<(), GraphError> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("dot" | "gv") => Format::Dot,
        _ => Format::Svg,
    };
    let bytes = render(&dot(t), format)?;
    std::fs::write(path, bytes).map_err(|e| GraphError::Write(path.display().to_string(), e))
}

/// A DOT string literal: quotes and backslashes escaped, newlines as `\n`.
fn q(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn net_id(n: &str) -> String {
    q(&format!("net:{n}"))
}
fn sb_id(s: &str) -> String {
    q(&format!("sb:{s}"))
}
fn peer_id(n: &str) -> String {
    q(&format!("peer:{n}"))
}
fn svc_id(s: &Service) -> String {
    q(&format!("svc:{}/{}", s.namespace, s.name))
}

/// The picture as Graphviz DOT: networks are boxes, sandboxes rounded boxes linked to
/// their networks (the edge labelled with the address), services diamonds linked to
/// their networks (VIP) and backends (dashed); the overlay's other nodes are houses
/// linked (dotted) to the overlay networks they have endpoints on.
pub fn dot(t: &Topology) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "digraph netd {{");
    let _ = writeln!(
        o,
        "  graph [rankdir=LR, fontname=\"Helvetica\", label={}, labelloc=t];",
        q(&format!("netd on {}", t.host))
    );
    let _ = writeln!(o, "  node [fontname=\"Helvetica\", fontsize=11];");
    let _ = writeln!(o, "  edge [fontname=\"Helvetica\", fontsize=9, arrowhead=none];");
    let _ = writeln!(o, "  host [shape=house, label={}];", q(&t.host));
    for n in &t.networks {
        let mut label = format!("{}\n{}", n.name, n.driver);
        for s in &n.subnets {
            let _ = write!(label, "\n{} gw {}", s.subnet, s.gateway);
        }
        if !n.bridge.is_empty() {
            let _ = write!(label, "\nbridge {}", n.bridge);
        }
        let _ = writeln!(
            o,
            "  {} [shape=box, style=filled, fillcolor=\"#dbe9f6\", label={}];",
            net_id(&n.name),
            q(&label)
        );
        let _ = writeln!(o, "  host -> {};", net_id(&n.name));
    }
    for s in &t.sandboxes {
        let mut label = s.name.clone();
        for p in &s.ports {
            let _ = write!(label, "\npublish {p}");
        }
        let _ = writeln!(
            o,
            "  {} [shape=box, style=\"rounded,filled\", fillcolor=\"#e8f5e1\", label={}];",
            sb_id(&s.name),
            q(&label)
        );
        for e in &s.endpoints {
            let addrs: Vec<String> = e.ips().map(|ip| ip.to_string()).collect();
            let label = format!("{} {}", e.ifname, addrs.join(" "));
            let _ = writeln!(
                o,
                "  {} -> {} [label={}];",
                net_id(&e.network),
                sb_id(&s.name),
                q(label.trim())
            );
        }
    }
    for p in t.nodes.iter().filter(|p| !p.local) {
        let label = format!("{}\nVTEP {}:{}\n{}", p.name, p.addr, p.data_port, p.state);
        let _ = writeln!(
            o,
            "  {} [shape=house, style=filled, fillcolor=\"#eeeeee\", label={}];",
            peer_id(&p.name),
            q(&label)
        );
        for n in p
            .networks
            .iter()
            .filter(|n| t.networks.iter().any(|x| &x.name == *n))
        {
            let _ = writeln!(
                o,
                "  {} -> {} [style=dotted, label=\"VXLAN peer\"];",
                net_id(n),
                peer_id(&p.name)
            );
        }
    }
    for entry in &t.services {
        let s = &entry.service;
        let mut label = format!("{}/{}", s.namespace, s.name);
        match &s.kind {
            ServiceKind::ExternalName { target } => {
                let _ = write!(label, "\nCNAME {target}");
            }
            ServiceKind::ClusterIp(c) => {
                for p in &c.ports {
                    let _ = write!(label, "\nport {p}");
                }
                for p in &c.published {
                    let _ = write!(label, "\npublish {}:{}/{}", p.published, p.target, p.proto);
                }
            }
        }
        let _ = writeln!(
            o,
            "  {} [shape=diamond, style=filled, fillcolor=\"#fdf0d5\", label={}];",
            svc_id(s),
            q(&label)
        );
        if let ServiceKind::ClusterIp(c) = &s.kind {
            for (net, vip) in &c.vips {
                let _ = writeln!(
                    o,
                    "  {} -> {} [label={}];",
                    net_id(net),
                    svc_id(s),
                    q(&format!("VIP {vip}"))
                );
            }
        }
        for b in entry.live_backends.iter().flatten() {
            let _ = writeln!(
                o,
                "  {} -> {} [style=dashed, arrowhead=normal, label={}];",
                svc_id(s),
                sb_id(&b.sandbox),
                q(&b.ip.to_string())
            );
        }
    }
    let _ = writeln!(o, "}}");
    o
}

#[cfg(test)]
mod tests;
