//! The stack file (`netd up FILE.toml`): networks, sandboxes with their networks,
//! addresses, published ports and a built-in responder, like a small compose file.
//!
//! ```toml
//! name = "demo"
//! [[network]]
//! name = "frontend"
//! subnet = "10.30.1.0/24"     # optional
//! [[sandbox]]
//! name = "web"
//! replicas = 2                # web-1, web-2
//! networks = ["frontend"]
//! publish = ["8080-8081:80"]  # a range is shared out between replicas, like compose
//! tcp = [80]                  # the responder answers with the sandbox name here
//! [[service]]                 # replicas behind one VIP and one published port
//! name = "vote"
//! replicas = 2                # sandboxes vote-1, vote-2, labelled netd.stack.service=vote
//! networks = ["frontend"]
//! publish = ["8080:80"]       # ingress: 8080 on the host balances over both replicas
//! endpoint_mode = "vip"       # or "dnsrr": no VIP, DNS answers with every replica
//! tcp = [80]                  # the responders' ports, and the service's ports
//! ```
//!
//! On a cluster (`netd daemon --cluster`) a network may say `driver = "overlay"` and a
//! sandbox `node = "h2"`: one file for the whole cluster, which `netd up` on each node
//! applies its own part of (`placement`; docs/overlay.md, "Stacks across nodes").

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use crate::model::{
    parse_port_spec, validate_name, EndpointRequest, NetworkRequest, SandboxRequest, ServiceRequest,
    SubnetRequest,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackFile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "network")]
    pub networks: Vec<StackNetwork>,
    #[serde(default, rename = "sandbox")]
    pub sandboxes: Vec<StackSandbox>,
    #[serde(default, rename = "service")]
    pub services: Vec<StackService>,
}

/// Replicas behind one name (Docker's swarm service, on one host): a sandbox per replica
/// (`NAME-1` … `NAME-N`, labelled `netd.stack.service=NAME`) and a `cluster_ip` service
/// NAME selecting them by that label, with a VIP on each of its networks (or DNS round
/// robin with `endpoint_mode = "dnsrr"`) and its published ports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackService {
    pub name: String,
    /// 0 is allowed, as `docker service scale web=0`: the name stays, nothing answers.
    #[serde(default = "one")]
    pub replicas: u32,
    #[serde(default)]
    pub networks: Vec<String>,
    /// `PUBLISHED:TARGET[/udp][,mode=host|ingress]`, default mode ingress.
    #[serde(default)]
    pub publish: Vec<String>,
    pub endpoint_mode: Option<String>,
    #[serde(default)]
    pub tcp: Vec<u16>,
    #[serde(default)]
    pub udp: Vec<u16>,
    /// In a cluster: the node every replica goes on...
    pub node: Option<String>,
    /// ...or the nodes the replicas are spread over, in turn (replica 1 on the first).
    #[serde(default)]
    pub nodes: Vec<String>,
}

impl StackService {
    /// The node of replica `i` (1-based), if the service is placed.
    pub fn node_of(&self, i: u32) -> Option<String> {
        match (&self.node, self.nodes.len()) {
            (Some(n), _) => Some(n.clone()),
            (None, 0) => None,
            (None, k) => Some(self.nodes[(i as usize - 1) % k].clone()),
        }
    }

    pub fn is_placed(&self) -> bool {
        self.node.is_some() || !self.nodes.is_empty()
    }
}

/// The label a service's replicas carry, which its selector matches (with the stack's).
pub const LABEL_SERVICE: &str = "netd.stack.service";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackNetwork {
    pub name: String,
    /// `bridge` (the default: a network of this daemon) or `overlay` (the cluster's,
    /// made once in the cluster store and never removed by a stack).
    pub driver: Option<String>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub ipv6: bool,
    pub subnet6: Option<String>,
    #[serde(default)]
    pub icc: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSandbox {
    pub name: String,
    #[serde(default = "one")]
    pub replicas: u32,
    #[serde(default)]
    pub networks: Vec<String>,
    /// Static IPv4 address on the first network (only with one replica).
    pub ip: Option<String>,
    /// The cluster node the sandbox (all its replicas) lives on; unset: the node
    /// `netd up` runs against.
    pub node: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub tcp: Vec<u16>,
    #[serde(default)]
    pub udp: Vec<u16>,
}

fn one() -> u32 {
    1
}

impl StackNetwork {
    pub fn is_overlay(&self) -> bool {
        self.driver.as_deref() == Some("overlay")
    }

    /// `bridge` or `overlay`; an overlay network takes what `netctl network create -d
    /// overlay` takes (one IPv4 subnet and gateway, `internal`).
    fn check_driver(&self) -> Result<(), String> {
        match self.driver.as_deref() {
            None | Some("bridge") => Ok(()),
            Some("overlay") => {
                let refused = [
                    ("ipv6", self.ipv6),
                    ("subnet6", self.subnet6.is_some()),
                    ("icc", self.icc.is_some()),
                ];
                match refused.iter().find(|(_, set)| *set) {
                    Some((key, _)) => Err(format!(
                        "network {}: {key} is not supported for overlay networks",
                        self.name
                    )),
                    None => Ok(()),
                }
            }
            Some(d) => Err(format!(
                "network {}: driver {d} is not one a stack makes (bridge or overlay)",
                self.name
            )),
        }
    }
}

/// A sandbox after replicas are expanded: the API request plus the responder ports.
#[derive(Debug, Clone)]
pub struct Instance {
    pub service: String,
    /// The `node` of its `[[sandbox]]`.
    pub node: Option<String>,
    pub req: SandboxRequest,
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
}

impl StackFile {
    pub fn load(path: &Path) -> Result<StackFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_text(text: &str) -> Result<StackFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The stack's name: `--name`/`-p` if given, else the file's `name` key, else the
    /// file name without its extension (as `docker compose -p` and the project dir).
    pub fn stack_name(&self, path: &Path, flag: Option<&str>) -> Result<String, String> {
        let name = match (flag, self.name.as_deref()) {
            (Some(n), _) | (None, Some(n)) => n.to_string(),
            (None, None) => path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string(),
        };
        validate_name(&name).map_err(|e| format!("stack {e}"))?;
        Ok(name)
    }

    /// The daemon's own (bridge) networks as requests; overlay networks are the
    /// cluster's (`overlay_networks`).
    pub fn network_requests(&self) -> Vec<NetworkRequest> {
        self.networks
            .iter()
            .filter(|n| !n.is_overlay())
            .map(|n| {
                let mut subnets = Vec::new();
                if n.subnet.is_some() || n.gateway.is_some() {
                    subnets.push(SubnetRequest {
                        subnet: n.subnet.clone(),
                        gateway: n.gateway.clone(),
                        ip_range: None,
                    });
                }
                if let Some(s6) = &n.subnet6 {
                    subnets.push(SubnetRequest {
                        subnet: Some(s6.clone()),
                        ..Default::default()
                    });
                }
                let mut options = std::collections::BTreeMap::new();
                if let Some(icc) = n.icc {
                    options.insert("com.docker.network.bridge.enable_icc".into(), icc.to_string());
                }
                NetworkRequest {
                    name: n.name.clone(),
                    subnets,
                    ipv6: n.ipv6,
                    internal: n.internal,
                    options,
                    ..Default::default()
                }
            })
            .collect()
    }

    /// The overlay networks, as `POST /v1/cluster/networks` takes them.
    pub fn overlay_networks(&self) -> Vec<serde_json::Value> {
        self.networks
            .iter()
            .filter(|n| n.is_overlay())
            .map(|n| {
                serde_json::json!({
                    "name": n.name,
                    "subnet": n.subnet,
                    "gateway": n.gateway,
                    "internal": n.internal,
                })
            })
            .collect()
    }

    /// Checks names and references and expands replicas into sandbox requests.
    pub fn instances(&self) -> Result<Vec<Instance>, String> {
        for n in &self.networks {
            n.check_driver()?;
        }
        let nets: BTreeSet<&str> = self.networks.iter().map(|n| n.name.as_str()).collect();
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for s in &self.sandboxes {
            validate_name(&s.name).map_err(|e| format!("sandbox {e}"))?;
            if let Some(node) = &s.node {
                validate_name(node).map_err(|e| format!("sandbox {}: node {e}", s.name))?;
            }
            if s.replicas == 0 {
                return Err(format!("sandbox {}: replicas must be at least 1", s.name));
            }
            for n in &s.networks {
                if !nets.contains(n.as_str()) && !matches!(n.as_str(), "host" | "none") {
                    return Err(format!(
                        "sandbox {} uses network {n}, which the stack does not declare",
                        s.name
                    ));
                }
            }
            if s.replicas > 1 && s.ip.is_some() {
                return Err(format!("sandbox {}: a static ip needs replicas = 1", s.name));
            }
            let per_replica = split_publish(&s.name, &s.publish, s.replicas)?;
            for (i, ports) in per_replica.into_iter().enumerate() {
                let name = if s.replicas == 1 {
                    s.name.clone()
                } else {
                    format!("{}-{}", s.name, i + 1)
                };
                if !seen.insert(name.clone()) {
                    return Err(format!("sandbox name {name} appears twice"));
                }
                let networks = s
                    .networks
                    .iter()
                    .enumerate()
                    .map(|(j, n)| EndpointRequest {
                        network: n.clone(),
                        ip: if j == 0 { s.ip.clone() } else { None },
                        aliases: if s.replicas > 1 {
                            let mut a = vec![s.name.clone()];
                            a.extend(s.aliases.iter().cloned());
                            a
                        } else {
                            s.aliases.clone()
                        },
                        ..Default::default()
                    })
                    .collect();
                out.push(Instance {
                    service: s.name.clone(),
                    node: s.node.clone(),
                    req: SandboxRequest {
                        name,
                        networks,
                        ports,
                        ..Default::default()
                    },
                    tcp: s.tcp.clone(),
                    udp: s.udp.clone(),
                });
            }
        }
        for s in &self.services {
            self.check_service(s, &nets)?;
            for i in 1..=s.replicas {
                let name = format!("{}-{i}", s.name);
                if !seen.insert(name.clone()) {
                    return Err(format!(
                        "sandbox name {name} appears twice (service {} replica {i})",
                        s.name
                    ));
                }
                out.push(Instance {
                    service: s.name.clone(),
                    node: s.node_of(i),
                    req: SandboxRequest {
                        name,
                        networks: s
                            .networks
                            .iter()
                            .map(|n| EndpointRequest {
                                network: n.clone(),
                                ..Default::default()
                            })
                            .collect(),
                        labels: [(LABEL_SERVICE.to_string(), s.name.clone())].into(),
                        ..Default::default()
                    },
                    tcp: s.tcp.clone(),
                    udp: s.udp.clone(),
                });
            }
        }
        Ok(out)
    }

    fn check_service(&self, s: &StackService, nets: &BTreeSet<&str>) -> Result<(), String> {
        validate_name(&s.name).map_err(|e| format!("service {e}"))?;
        if self.sandboxes.iter().any(|x| x.name == s.name)
            || self.services.iter().filter(|x| x.name == s.name).count() > 1
        {
            return Err(format!("service {}: the name appears twice in the stack", s.name));
        }
        if s.networks.is_empty() {
            return Err(format!("service {}: needs at least one network", s.name));
        }
        if s.node.is_some() && !s.nodes.is_empty() {
            return Err(format!(
                "service {}: give node (all replicas there) or nodes (spread over them), not both",
                s.name
            ));
        }
        for n in s.node.iter().chain(&s.nodes) {
            validate_name(n).map_err(|e| format!("service {}: node {e}", s.name))?;
        }
        for n in &s.networks {
            if !nets.contains(n.as_str()) {
                return Err(format!(
                    "service {} uses network {n}, which the stack does not declare",
                    s.name
                ));
            }
        }
        Ok(())
    }

    /// The `cluster_ip` service of each `[[service]]`, selecting its replicas by their
    /// `netd.stack.service` label and the stack's label (so two stacks' `web` never mix).
    /// The daemon validates the rest (ports, publish specs, endpoint mode) as for
    /// `netctl service create`.
    pub fn service_requests(&self, stack: &str) -> Vec<ServiceRequest> {
        self.services
            .iter()
            .map(|s| ServiceRequest {
                name: s.name.clone(),
                kind: Some("cluster_ip".into()),
                networks: s.networks.clone(),
                ports: s
                    .tcp
                    .iter()
                    .map(|p| format!("{p}/tcp"))
                    .chain(s.udp.iter().map(|p| format!("{p}/udp")))
                    .collect(),
                selector: vec![
                    format!("{}={stack}", super::diff::LABEL_STACK),
                    format!("{LABEL_SERVICE}={}", s.name),
                ],
                publish: s.publish.clone(),
                endpoint_mode: s.endpoint_mode.clone(),
                ..Default::default()
            })
            .collect()
    }
}

/// Compose's rule: with replicas, a host port range `A-B:P` gives each replica one port
/// of the range; a single host port can only go to one replica.
fn split_publish(name: &str, specs: &[String], replicas: u32) -> Result<Vec<Vec<String>>, String> {
    let mut out = vec![Vec::new(); replicas as usize];
    for spec in specs {
        let (head, proto) = match spec.rsplit_once('/') {
            Some((h, p)) => (h, format!("/{p}")),
            None => (spec.as_str(), String::new()),
        };
        let parts: Vec<&str> = head.rsplitn(2, ':').collect();
        let (container, host) = (parts[0], parts.get(1).copied().unwrap_or(""));
        let (host_ip, host_ports) = match host.rsplit_once(':') {
            Some((ip, p)) => (format!("{ip}:"), p),
            None => (String::new(), host),
        };
        match host_ports.split_once('-') {
            Some((a, b)) => {
                let a: u16 = a
                    .parse()
                    .map_err(|_| format!("sandbox {name}: invalid port range in {spec:?}"))?;
                let b: u16 = b
                    .parse()
                    .map_err(|_| format!("sandbox {name}: invalid port range in {spec:?}"))?;
                if b < a || u32::from(b - a) + 1 < replicas {
                    return Err(format!(
                        "sandbox {name}: range in {spec:?} has fewer ports than replicas ({replicas})"
                    ));
                }
                for (i, r) in out.iter_mut().enumerate() {
                    let s = format!("{host_ip}{}:{container}{proto}", a + i as u16);
                    parse_port_spec(&s).map_err(|e| format!("sandbox {name}: {e}"))?;
                    r.push(s);
                }
            }
            None => {
                parse_port_spec(spec).map_err(|e| format!("sandbox {name}: {e}"))?;
                if replicas > 1 && !host_ports.is_empty() {
                    return Err(format!(
                        "sandbox {name}: host port {host_ports} can go to one replica only; use a range like {host_ports}-{}:{container}",
                        host_ports.parse::<u32>().unwrap_or(0) + replicas - 1
                    ));
                }
                for r in out.iter_mut() {
                    r.push(spec.clone());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voting_app_parses_and_expands() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/voting-app.toml");
        let f = StackFile::load(&path).unwrap();
        let inst = f.instances().unwrap();
        let names: Vec<&str> = inst.iter().map(|i| i.req.name.as_str()).collect();
        assert_eq!(names, ["redis", "worker", "db", "result", "vote-1", "vote-2"]);
        assert_eq!(inst[3].req.ports, ["5001:80"]);
        assert!(
            inst[4].req.ports.is_empty(),
            "vote's replicas publish through the service"
        );
        let svcs = f.service_requests("voting-app");
        assert_eq!(svcs.len(), 1);
        assert_eq!(svcs[0].publish, ["8080:80"]);
        assert_eq!(f.network_requests().len(), 2);
    }

    #[test]
    fn a_service_section_expands_to_labelled_replicas_and_one_service() {
        let f: StackFile = toml::from_str(
            "[[network]]\nname='front'\n[[service]]\nname='vote'\nreplicas=2\nnetworks=['front']\n\
             publish=['8080:80']\ntcp=[80]\n",
        )
        .unwrap();
        let inst = f.instances().unwrap();
        let names: Vec<&str> = inst.iter().map(|i| i.req.name.as_str()).collect();
        assert_eq!(names, ["vote-1", "vote-2"]);
        assert_eq!(inst[1].req.labels[LABEL_SERVICE], "vote");
        assert!(
            inst[0].req.ports.is_empty(),
            "replicas publish nothing themselves"
        );
        let reqs = f.service_requests("shop");
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].selector, ["netd.stack=shop", "netd.stack.service=vote"]);
        assert_eq!(reqs[0].ports, ["80/tcp"]);
        assert_eq!(reqs[0].publish, ["8080:80"]);
        // What the daemon will parse: a valid cluster_ip request.
        reqs[0].cluster_ip().unwrap();
    }

    #[test]
    fn service_sections_are_checked() {
        let bad = |t: &str| {
            StackFile::from_text(t)
                .and_then(|f| f.instances().map(drop))
                .unwrap_err()
        };
        assert!(bad("[[service]]\nname='a'\n").contains("at least one network"));
        assert!(bad("[[service]]\nname='a'\nnetworks=['x']\n").contains("does not declare"));
        assert!(
            bad("[[network]]\nname='n'\n[[sandbox]]\nname='a'\n[[service]]\nname='a'\nnetworks=['n']\n")
                .contains("appears twice")
        );
        assert!(bad(
            "[[network]]\nname='n'\n[[sandbox]]\nname='a-1'\n[[service]]\nname='a'\nnetworks=['n']\n"
        )
        .contains("appears twice"));
        assert!(bad("[[service]]\nname='a'\nbogus=1\n").contains("bogus"));
        let zero = StackFile::from_text(
            "[[network]]\nname='n'\n[[service]]\nname='a'\nreplicas=0\nnetworks=['n']\n",
        )
        .unwrap();
        assert!(zero.instances().unwrap().is_empty());
        assert_eq!(zero.service_requests("s").len(), 1);
    }

    #[test]
    fn publish_rules() {
        assert!(split_publish("w", &["8080:80".into()], 2).is_err());
        assert!(split_publish("w", &["8080-8080:80".into()], 2).is_err());
        let r = split_publish("w", &["127.0.0.1:9000-9001:80/udp".into()], 2).unwrap();
        assert_eq!(r[1], ["127.0.0.1:9001:80/udp"]);
        assert_eq!(split_publish("w", &["80".into()], 2).unwrap()[1], ["80"]);
    }

    #[test]
    fn stack_name_from_flag_key_or_file_name() {
        let named: StackFile = toml::from_str("name = 'shop'").unwrap();
        let bare: StackFile = toml::from_str("").unwrap();
        let p = Path::new("/x/voting-app.toml");
        assert_eq!(named.stack_name(p, None).unwrap(), "shop");
        assert_eq!(named.stack_name(p, Some("other")).unwrap(), "other");
        assert_eq!(bare.stack_name(p, None).unwrap(), "voting-app");
        assert!(bare.stack_name(p, Some("bad/name")).is_err());
    }

    #[test]
    fn bad_references_are_refused() {
        let f: StackFile = toml::from_str("[[sandbox]]\nname='a'\nnetworks=['nope']\n").unwrap();
        assert!(f.instances().unwrap_err().contains("does not declare"));
        assert!(toml::from_str::<StackFile>("[[sandbox]]\nname='a'\nbogus=1\n").is_err());
    }
}
