//! Load balancing of a running stack's `[[service]]`s, measured: every replica must
//! answer through each way in, with real connections —
//! - the service name from a sandbox of the stack on one of its networks (resolved at
//!   127.0.0.11: the VIP, or with dnsrr the replicas' addresses), connected to again and
//!   again until every replica has answered;
//! - `tasks.NAME` from there: one address per replica, each reached;
//! - each ingress-published TCP port from the host (127.0.0.1), likewise until every
//!   replica has answered.
//!
//! A replica is told by its responder, which answers with its sandbox name.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::names::{lookup, LookupError};
use super::Placed;
use crate::kernel::probe::tcp_probe;

/// A `[[service]]` as the probes need it.
pub struct Balanced {
    pub name: String,
    pub networks: Vec<String>,
    pub replicas: Vec<String>,
    pub tcp: Option<u16>,
    pub dnsrr: bool,
    /// Ingress-published TCP host ports whose target is `tcp`.
    pub ingress: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub service: String,
    pub way: String,
    pub from: String,
    /// Replicas that answered.
    pub answered: BTreeSet<String>,
    pub want: BTreeSet<String>,
    pub note: String,
}

impl Probe {
    pub fn ok(&self) -> bool {
        !self.want.is_empty() && self.answered == self.want && self.note.is_empty()
    }
}

/// Connections to `to` (from `netns`, or the host for None) until every one of `want`
/// answered, at most `tries`.
fn until_all(
    netns: Option<&PathBuf>,
    to: SocketAddr,
    want: &BTreeSet<String>,
    tries: usize,
) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    for _ in 0..tries {
        if let Ok(r) = tcp_probe(netns.map(|p| p.as_path()), to, Duration::from_millis(500)) {
            got.insert(r.trim().to_string());
        }
        if got.is_superset(want) {
            break;
        }
    }
    got
}

fn lookup_text(r: &Result<Vec<IpAddr>, LookupError>) -> String {
    match r {
        Ok(ips) => ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(","),
        Err(LookupError::NxDomain) => "NXDOMAIN".into(),
        Err(LookupError::Failed(e)) => e.clone(),
    }
}

pub fn measure(placed: &[Placed], services: &[Balanced]) -> Vec<Probe> {
    const TRIES: usize = 60;
    let mut out = Vec::new();
    for s in services {
        let Some(port) = s.tcp else { continue };
        let want: BTreeSet<String> = s.replicas.iter().cloned().collect();
        // Ask from a sandbox on the service's network that is not a replica, if any.
        let on_net = |p: &&Placed| p.addrs.iter().any(|(n, _)| s.networks.contains(n));
        let asker = placed
            .iter()
            .filter(on_net)
            .find(|p| !s.replicas.contains(&p.name))
            .or_else(|| placed.iter().find(on_net));
        if let Some(a) = asker {
            let r = lookup(&a.netns, &s.name);
            let mut p = Probe {
                service: s.name.clone(),
                way: format!(
                    "{} ({}) :{port}",
                    if s.dnsrr {
                        "name, round robin"
                    } else {
                        "name -> VIP"
                    },
                    lookup_text(&r)
                ),
                from: a.name.clone(),
                answered: BTreeSet::new(),
                want: want.clone(),
                note: String::new(),
            };
            match &r {
                Ok(ips) if !ips.is_empty() => {
                    if !s.dnsrr && ips.len() != 1 {
                        p.note = format!("expected one VIP, got {}", ips.len());
                    }
                    for ip in ips {
                        p.answered.extend(until_all(
                            Some(&a.netns),
                            SocketAddr::new(*ip, port),
                            &want,
                            TRIES,
                        ));
                    }
                }
                _ => p.note = format!("lookup gave {}", lookup_text(&r)),
            }
            out.push(p);

            let tasks = format!("tasks.{}", s.name);
            let r = lookup(&a.netns, &tasks);
            let mut p = Probe {
                service: s.name.clone(),
                way: format!("{tasks} ({}) :{port}", lookup_text(&r)),
                from: a.name.clone(),
                answered: BTreeSet::new(),
                want: want.clone(),
                note: String::new(),
            };
            match &r {
                Ok(ips) if ips.len() == want.len() => {
                    for ip in ips {
                        if let Ok(n) = tcp_probe(
                            Some(&a.netns),
                            SocketAddr::new(*ip, port),
                            Duration::from_millis(500),
                        ) {
                            p.answered.insert(n.trim().to_string());
                        }
                    }
                }
                _ => p.note = format!("expected {} addresses, got {}", want.len(), lookup_text(&r)),
            }
            out.push(p);
        }
        for hp in &s.ingress {
            let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *hp);
            out.push(Probe {
                service: s.name.clone(),
                way: format!("published http://127.0.0.1:{hp}"),
                from: "host".into(),
                answered: until_all(None, to, &want, TRIES),
                want: want.clone(),
                note: String::new(),
            });
        }
    }
    out
}

pub fn render(probes: &[Probe]) -> String {
    let mut s = String::from("services (every replica must answer each way in):\n");
    for p in probes {
        s.push_str(&format!(
            "  {:<4} {:<10} {:<50} from {:<10} answered by {}{}\n",
            if p.ok() { "ok" } else { "FAIL" },
            p.service,
            p.way,
            p.from,
            if p.answered.is_empty() {
                "nobody".to_string()
            } else {
                p.answered.iter().cloned().collect::<Vec<_>>().join(", ")
            },
            if p.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.note)
            }
        ));
    }
    s
}
