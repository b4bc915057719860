//! Service discovery of a running stack: from inside each sandbox, every service name of
//! the stack (`vote`, `redis`, `db`, ...) is looked up at 127.0.0.11 and, when it
//! resolves, reached over TCP at the resolved address. Expected as in Docker: a name
//! resolves exactly when the asker shares a network with one of the service's sandboxes
//! (NXDOMAIN otherwise), and the responder found there is one of that service's.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::Placed;
use crate::kernel::probe::{in_netns, tcp_probe};

/// One service as the name checks need it.
pub struct Service {
    pub name: String,
    /// Its sandboxes' names (replicas).
    pub members: Vec<String>,
    pub tcp: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct NameProbe {
    pub from: String,
    pub name: String,
    pub expect: bool,
    /// What the lookup gave: addresses, or the failure (NXDOMAIN, timeout, ...).
    pub answer: Result<Vec<IpAddr>, LookupError>,
    /// The responder reached at the first address, if a TCP port was probed.
    pub reached: Option<String>,
    pub ok: bool,
}

/// Why a lookup gave no address: the one answer the probe expects of an isolated
/// name (NXDOMAIN), or any other failure, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    NxDomain,
    Failed(String),
}

impl<E: std::fmt::Display> From<E> for LookupError {
    fn from(e: E) -> Self {
        LookupError::Failed(e.to_string())
    }
}

/// Asks 127.0.0.11 for `name` A from inside `netns`.
pub fn lookup(netns: &std::path::Path, name: &str) -> Result<Vec<IpAddr>, LookupError> {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    let bytes = q.to_vec()?;
    let id = q.metadata.id;
    let raw = in_netns(Some(netns), move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.connect("127.0.0.11:53")?;
        let mut buf = vec![0u8; 4096];
        for _ in 0..3 {
            s.send(&bytes)?;
            match s.recv(&mut buf) {
                Ok(n) => return Ok(buf[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("no answer from 127.0.0.11"))
    })?;
    let m = Message::from_vec(&raw)?;
    if m.metadata.id != id {
        return Err("answer for another query".into());
    }
    if m.metadata.response_code == ResponseCode::NXDomain {
        return Err(LookupError::NxDomain);
    }
    if m.metadata.response_code != ResponseCode::NoError {
        return Err(m.metadata.response_code.into());
    }
    Ok(m.answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect())
}

pub fn measure(placed: &[Placed], services: &[Service]) -> Vec<NameProbe> {
    let nets_of = |who: &str| -> Vec<&str> {
        placed
            .iter()
            .filter(|p| p.name == who)
            .flat_map(|p| p.addrs.iter().map(|(n, _)| n.as_str()))
            .collect()
    };
    let mut out = Vec::new();
    for p in placed {
        let mine = nets_of(&p.name);
        for s in services {
            let expect = s
                .members
                .iter()
                .any(|m| nets_of(m).iter().any(|n| mine.contains(n)));
            let answer = lookup(&p.netns, &s.name);
            let mut reached = None;
            let ok = match (&answer, expect) {
                (Ok(ips), true) if !ips.is_empty() => match (s.tcp, ips.first()) {
                    (Some(port), Some(ip)) => {
                        reached = tcp_probe(
                            Some(&p.netns),
                            SocketAddr::new(*ip, port),
                            Duration::from_millis(500),
                        )
                        .ok()
                        .map(|r| r.trim().to_string());
                        reached.as_ref().is_some_and(|r| s.members.contains(r))
                    }
                    _ => true,
                },
                (Err(e), false) => *e == LookupError::NxDomain,
                _ => false,
            };
            out.push(NameProbe {
                from: p.name.clone(),
                name: s.name.clone(),
                expect,
                answer,
                reached,
                ok,
            });
        }
    }
    out
}

/// The matrix: `ok` = resolved (and reached) as expected, `--` = NXDOMAIN as expected,
/// `FAIL` = anything else, with the details of failures below.
pub fn render(probes: &[NameProbe], services: &[Service]) -> String {
    let mut froms: Vec<&str> = Vec::new();
    for p in probes {
        if !froms.contains(&p.from.as_str()) {
            froms.push(&p.from);
        }
    }
    let mut s = String::from("names via 127.0.0.11 (resolve, then TCP to the answer):\n");
    s.push_str(&format!("{:<10}", "from \\ to"));
    for svc in services {
        s.push_str(&format!("{:<10}", svc.name));
    }
    s.push('\n');
    for f in &froms {
        s.push_str(&format!("{f:<10}"));
        for svc in services {
            let cell = probes
                .iter()
                .find(|p| p.from == *f && p.name == svc.name)
                .map_or("?", |p| match (p.ok, p.expect) {
                    (true, true) => "ok",
                    (true, false) => "--",
                    (false, _) => "FAIL",
                });
            s.push_str(&format!("{cell:<10}"));
        }
        s.push('\n');
    }
    for p in probes.iter().filter(|p| !p.ok) {
        s.push_str(&format!(
            "  FAIL {} -> {}: expected {}, got {:?} (reached {:?})\n",
            p.from,
            p.name,
            if p.expect { "an address" } else { "NXDOMAIN" },
            p.answer,
            p.reached
        ));
    }
    s
}
