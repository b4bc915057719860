//! Reachability of a running stack, measured with real TCP connections from inside each
//! sandbox, against what Docker's rules say: two sandboxes reach each other exactly on
//! the networks they share (unless ICC is off there); published ports answer on the
//! host's addresses, from the host, from other networks and from the sandbox itself
//! (hairpin).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::Placed;
use crate::kernel::probe::tcp_probe;

#[derive(Debug, Clone)]
pub struct Probe {
    pub from: String,
    pub to: String,
    pub via: String,
    pub expect: bool,
    pub reached: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub pairs: Vec<Probe>,
    pub published: Vec<Probe>,
}

struct Job {
    from: String,
    netns: Option<PathBuf>,
    to: String,
    addr: SocketAddr,
    via: String,
    expect: bool,
    published: bool,
}

pub fn measure(placed: &[Placed], nets: &[(String, bool)]) -> Report {
    let icc: BTreeMap<&str, bool> = nets.iter().map(|(n, i)| (n.as_str(), *i)).collect();
    let mut jobs = Vec::new();
    for a in placed {
        for b in placed {
            if a.name == b.name {
                continue;
            }
            let Some(port) = b.tcp.first() else { continue };
            for (net, ip) in &b.addrs {
                let shared = a.addrs.iter().any(|(n, _)| n == net);
                jobs.push(Job {
                    from: a.name.clone(),
                    netns: Some(a.netns.clone()),
                    to: b.name.clone(),
                    addr: SocketAddr::new(*ip, *port),
                    via: format!("{ip}:{port} ({net})"),
                    expect: shared && icc.get(net.as_str()).copied().unwrap_or(true),
                    published: false,
                });
            }
        }
    }
    for b in placed {
        for (hp, proto) in b.published.iter().filter(|(_, p)| p == "tcp") {
            let _ = proto;
            jobs.push(Job {
                from: "host".into(),
                netns: None,
                to: b.name.clone(),
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *hp),
                via: format!("http://127.0.0.1:{hp}"),
                expect: true,
                published: true,
            });
            for a in placed {
                let Some(gw) = a.gateway else { continue };
                if a.name != b.name && a.addrs.iter().any(|(n, _)| b.addrs.iter().any(|(m, _)| m == n)) {
                    continue; // same network: covered by the pair probes; keep the list short
                }
                jobs.push(Job {
                    from: a.name.clone(),
                    netns: Some(a.netns.clone()),
                    to: b.name.clone(),
                    addr: SocketAddr::new(gw, *hp),
                    via: format!("{gw}:{hp}{}", if a.name == b.name { " (hairpin)" } else { "" }),
                    expect: true,
                    published: true,
                });
            }
        }
    }
    // Run all probes at once: isolated pairs cost a timeout each, not a sum of them.
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|j| {
            std::thread::spawn(move || {
                let timeout = Duration::from_millis(if j.expect { 2000 } else { 500 });
                let got = tcp_probe(j.netns.as_deref(), j.addr, timeout).ok();
                let reached = got.as_deref() == Some(j.to.as_str());
                (
                    j.published,
                    Probe {
                        from: j.from,
                        to: j.to,
                        via: j.via,
                        expect: j.expect,
                        reached,
                    },
                )
            })
        })
        .collect();
    let mut r = Report::default();
    for h in handles {
        if let Ok((published, p)) = h.join() {
            if published {
                r.published.push(p);
            } else {
                r.pairs.push(p);
            }
        }
    }
    r
}

impl Report {
    pub fn failures(&self) -> usize {
        self.pairs
            .iter()
            .chain(&self.published)
            .filter(|p| p.expect != p.reached)
            .count()
    }

    pub fn total(&self) -> usize {
        self.pairs.len() + self.published.len()
    }

    pub fn render(&self, stack: &str) -> String {
        let mut names: Vec<&str> = Vec::new();
        for p in &self.pairs {
            for n in [p.from.as_str(), p.to.as_str()] {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(9) + 2;
        let mut out = format!("stack {stack}: reachability measured with TCP connections\n");
        out.push_str("  ok = reached as expected, -- = isolated as expected, FAIL = not as expected\n\n");
        out.push_str(&format!("{:<w$}", "from \\ to"));
        for n in &names {
            out.push_str(&format!("{n:<w$}"));
        }
        out.push('\n');
        for a in &names {
            out.push_str(&format!("{a:<w$}"));
            for b in &names {
                let cell: Vec<&Probe> = self.pairs.iter().filter(|p| p.from == *a && p.to == *b).collect();
                let c = if a == b || cell.is_empty() {
                    "."
                } else if cell.iter().any(|p| p.expect != p.reached) {
                    "FAIL"
                } else if cell.iter().any(|p| p.reached) {
                    "ok"
                } else {
                    "--"
                };
                out.push_str(&format!("{c:<w$}"));
            }
            out.push('\n');
        }
        out.push_str("\npublished ports:\n");
        for p in &self.published {
            out.push_str(&format!(
                "  {:<6} {} from {:<8} -> {}\n",
                if p.reached == p.expect { "ok" } else { "FAIL" },
                p.via,
                p.from,
                p.to
            ));
        }
        let fails: Vec<&Probe> = self
            .pairs
            .iter()
            .chain(&self.published)
            .filter(|p| p.expect != p.reached)
            .collect();
        if !fails.is_empty() {
            out.push_str("\nnot as expected:\n");
            for p in fails {
                out.push_str(&format!(
                    "  {} -> {} via {}: expected {}, got {}\n",
                    p.from,
                    p.to,
                    p.via,
                    if p.expect { "reachable" } else { "isolated" },
                    if p.reached { "reachable" } else { "isolated" }
                ));
            }
        }
        out.push_str(&format!(
            "\n{} of {} expectations held\n",
            self.total() - self.failures(),
            self.total()
        ));
        out
    }
}
