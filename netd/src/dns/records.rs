//! The name table: which names each sandbox sees, and what they point to. Pure data,
//! rebuilt from the model after every engine operation (cheap: one pass over the
//! endpoints) and swapped in whole, so a query never sees half an update.
//!
//! Records are scoped by network: `by_net[network][name]`. A sandbox looks a name up in
//! the networks it is attached to, so it sees only peers it shares a network with, and
//! gets their address *on that network*. Cluster-wide records (Kubernetes ExternalName)
//! live in `global`.
//!
//! Services (`super::services::ServiceRecords`: plain data the engine fills for netd's
//! own services and for Kubernetes-applied ones) add their names after the sandboxes, so
//! a sandbox keeps a name it already has. Several addresses under a sandbox's name come
//! in a fresh random order per answer; a service's backend names (`tasks.NAME`, dnsrr)
//! rotate: each answer starts one further down the list (`Lookup::InOrder`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::services::ServiceRecords;
use crate::model::{NetMode, Network, Proto, Sandbox};

/// Labels that put a sandbox in a Kubernetes-style namespace (the first one set wins).
pub const NAMESPACE_LABELS: [&str; 2] = ["io.kubernetes.pod.namespace", "netd.namespace"];
/// Label naming the Kubernetes service a sandbox backs (default: its pod name, else the
/// sandbox name).
pub const SERVICE_LABELS: [&str; 2] = ["io.kubernetes.service", "netd.service"];
/// The pod a sandbox is (set by netd-cni from CNI_ARGS `K8S_POD_NAME`): a CNI sandbox is
/// named `cni-<hash of the container id>`, so this is the name people know it by.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";

/// A Kubernetes ExternalName service: `<name>.<namespace>.svc.<domain>` is a CNAME.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalName {
    pub namespace: String,
    pub name: String,
    pub target: String,
}

/// One record under a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rec {
    Addr(IpAddr),
    /// `_PORT._PROTO.name` → `target:port`.
    Srv {
        port: u16,
        target: String,
    },
    Cname(String),
}

#[derive(Debug, Clone, Default)]
struct Names {
    recs: Vec<Rec>,
    /// Round robin: where the next answer starts, one counter per asked family (A,
    /// AAAA, other), since a resolver asks A and AAAA together and one shared counter
    /// would then step by two (never moving with two backends). `None`: shuffled.
    rr: Option<Arc<[AtomicUsize; 3]>>,
}

#[derive(Debug, Clone, Default)]
struct Scope {
    networks: Vec<String>,
}

/// What a query gets from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name exists for this sandbox; the records of the asked type (empty: NODATA).
    Found(Vec<Rec>),
    /// As `Found`, in the order to answer (a service's backends, rotated per answer):
    /// not to be shuffled.
    InOrder(Vec<Rec>),
    /// `name` is a PTR: the address is netd's and maps to these names.
    Ptr(Vec<String>),
    /// netd owns the name but this sandbox has nothing under it.
    NxDomain,
    /// Not netd's: forward upstream.
    NotOurs,
    /// The asker is not a sandbox netd serves.
    Refused,
}

impl Lookup {
    /// The records of `Found` or `InOrder`.
    pub fn records(self) -> Option<Vec<Rec>> {
        match self {
            Lookup::Found(v) | Lookup::InOrder(v) => Some(v),
            _ => None,
        }
    }
}

/// The record kinds a lookup can filter on (server maps wire types onto these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    A,
    Aaaa,
    Srv,
    Cname,
    Ptr,
    Any,
    /// Some other type: the name may exist, but there is never data of this type.
    Other,
}

#[derive(Debug, Default, Clone)]
pub struct Table {
    by_net: HashMap<String, HashMap<String, Names>>,
    /// Reverse records per network: address → names.
    ptr: HashMap<String, HashMap<IpAddr, Vec<String>>>,
    global: HashMap<String, Names>,
    scopes: HashMap<String, Scope>,
    /// Every name netd has anywhere (answered NXDOMAIN, never forwarded, when out of scope).
    known: HashSet<String>,
    subnets: Vec<IpNetwork>,
    cluster_domain: String,
}

/// One row of `netctl dns ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    pub network: String,
}

pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn label<'a>(s: &'a Sandbox, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| s.labels.get(*k).map(String::as_str))
}

/// The name a sandbox is known by: its pod name when it has one.
pub fn display_name(s: &Sandbox) -> &str {
    pod_name(s).unwrap_or(&s.name)
}

fn pod_name(s: &Sandbox) -> Option<&str> {
    s.labels
        .get(POD_NAME_LABEL)
        .map(String::as_str)
        .filter(|n| !n.is_empty())
}

/// The namespace a sandbox was created in, if any (drives k8s names and search domains).
pub fn namespace_of(s: &Sandbox) -> Option<&str> {
    label(s, &NAMESPACE_LABELS).filter(|n| !n.is_empty())
}

/// The service names a sandbox answers under in its namespace: its service label (or
/// its name) and its aliases.
pub fn service_names(s: &Sandbox) -> impl Iterator<Item = &str> {
    std::iter::once(label(s, &SERVICE_LABELS).unwrap_or(display_name(s))).chain(
        s.endpoints
            .iter()
            .flat_map(|e| e.aliases.iter().map(String::as_str)),
    )
}

impl Table {
    pub fn new(cluster_domain: &str) -> Table {
        Table {
            cluster_domain: normalize(cluster_domain),
            ..Default::default()
        }
    }

    /// The table for the current model: the sandboxes' names, then the services' (in
    /// the order given; a name already there stays as it is), then ExternalNames.
    pub fn build<'a>(
        networks: impl IntoIterator<Item = &'a Network>,
        sandboxes: impl IntoIterator<Item = &'a Sandbox>,
        cluster_domain: &str,
        external: &[ExternalName],
        services: &[ServiceRecords],
    ) -> Table {
        let mut t = Table::new(cluster_domain);
        for n in networks {
            t.subnets.extend(n.subnets.iter().map(|s| s.subnet));
        }
        for s in sandboxes {
            t.add_sandbox(s);
        }
        for s in services {
            t.add_service(s);
        }
        for x in external {
            let name = t.k8s_name(&x.name, &x.namespace);
            // A sandbox (or a service) answering under the same name keeps it (a name is
            // either addresses or a CNAME); `create_service` refuses such a clash up front.
            if t.global.contains_key(&name) || t.by_net.values().any(|m| m.contains_key(&name)) {
                continue;
            }
            t.insert_global(&name, Rec::Cname(normalize(&x.target)));
        }
        t
    }

    pub(super) fn k8s_name(&self, svc: &str, ns: &str) -> String {
        normalize(&format!("{svc}.{ns}.svc.{}", self.cluster_domain))
    }

    /// Adds a sandbox's names on each of its networks, and its scope.
    pub fn add_sandbox(&mut self, s: &Sandbox) {
        if s.mode != NetMode::Bridge {
            return;
        }
        self.scopes.insert(
            s.name.clone(),
            Scope {
                networks: s.endpoints.iter().map(|e| e.network.clone()).collect(),
            },
        );
        let ns = namespace_of(s);
        let svc = label(s, &SERVICE_LABELS).unwrap_or(display_name(s)).to_string();
        let pod = pod_name(s).filter(|p| normalize(p) != normalize(&s.name));
        let mut ports: Vec<(u16, Proto)> = s.expose.clone();
        ports.extend(s.ports.iter().map(|p| (p.container_port, p.proto)));
        ports.sort();
        ports.dedup();
        for e in &s.endpoints {
            let mut names = vec![s.name.clone()];
            names.extend(pod.map(str::to_string));
            names.extend(e.aliases.iter().cloned());
            if let Some(ns) = ns {
                names.push(self.k8s_name(&svc, ns));
                for a in &e.aliases {
                    names.push(self.k8s_name(a, ns));
                }
            }
            for name in &names {
                for ip in e.ips() {
                    self.insert(&e.network, name, Rec::Addr(ip));
                }
                for (port, proto) in &ports {
                    self.insert(
                        &e.network,
                        &format!("_{port}._{proto}.{name}"),
                        Rec::Srv {
                            port: *port,
                            target: normalize(name),
                        },
                    );
                }
            }
            for ip in e.ips() {
                // The pod name first: that is what a reverse lookup should tell a person.
                if let Some(p) = pod {
                    self.insert_ptr(&e.network, ip, p);
                }
                self.insert_ptr(&e.network, ip, &s.name);
            }
        }
    }

    /// Adds one record under `name` on `network` (idempotent).
    pub fn insert(&mut self, network: &str, name: &str, rec: Rec) {
        let name = normalize(name);
        self.known.insert(name.clone());
        let n = self
            .by_net
            .entry(network.to_string())
            .or_default()
            .entry(name)
            .or_default();
        if !n.recs.contains(&rec) {
            n.recs.push(rec);
        }
    }

    /// A record every sandbox sees (cluster-wide names such as ExternalName).
    pub fn insert_global(&mut self, name: &str, rec: Rec) {
        let name = normalize(name);
        self.known.insert(name.clone());
        let n = self.global.entry(name).or_default();
        if !n.recs.contains(&rec) {
            n.recs.push(rec);
        }
    }

    /// The names of `network` (`None`: the cluster-wide ones), created on first use.
    fn names_mut(&mut self, network: Option<&str>, name: &str) -> &mut Names {
        let name = normalize(name);
        self.known.insert(name.clone());
        match network {
            Some(net) => self
                .by_net
                .entry(net.to_string())
                .or_default()
                .entry(name)
                .or_default(),
            None => self.global.entry(name).or_default(),
        }
    }

    /// Makes `name` exist on `network` (`None`: for every sandbox) without records, so
    /// it answers NODATA rather than NXDOMAIN (a service with no backend yet).
    pub(super) fn touch(&mut self, network: Option<&str>, name: &str) {
        self.names_mut(network, name);
    }

    /// Adds a record under `name` on `network` (`None`: for every sandbox), idempotent.
    pub(super) fn add_rec(&mut self, network: Option<&str>, name: &str, rec: Rec) {
        let n = self.names_mut(network, name);
        if !n.recs.contains(&rec) {
            n.recs.push(rec);
        }
    }

    /// Adds a record under a name whose answers rotate (round robin) rather than shuffle.
    pub(super) fn insert_rotating(&mut self, network: Option<&str>, name: &str, rec: Rec) {
        let n = self.names_mut(network, name);
        if n.rr.is_none() {
            // A random start: the table is rebuilt on every operation, and starting each
            // table at the first backend would favour it.
            let start = rand::random::<u32>() as usize;
            n.rr = Some(Arc::new(std::array::from_fn(|_| AtomicUsize::new(start))));
        }
        if !n.recs.contains(&rec) {
            n.recs.push(rec);
        }
    }

    /// Whether `name` already exists on `network` (`None`: cluster-wide, where a
    /// network-scoped name anywhere counts too), so a service leaves it alone.
    pub(super) fn taken(&self, network: Option<&str>, name: &str) -> bool {
        let name = normalize(name);
        match network {
            Some(net) => {
                self.global.contains_key(&name) || self.by_net.get(net).is_some_and(|m| m.contains_key(&name))
            }
            None => self.global.contains_key(&name) || self.by_net.values().any(|m| m.contains_key(&name)),
        }
    }

    pub fn insert_ptr(&mut self, network: &str, ip: IpAddr, name: &str) {
        let v = self
            .ptr
            .entry(network.to_string())
            .or_default()
            .entry(ip)
            .or_default();
        let name = normalize(name);
        if !v.contains(&name) {
            v.push(name);
        }
    }

    /// Gives `sandbox` a scope without adding names (a services-issue VIP client, tests).
    pub fn set_scope(&mut self, sandbox: &str, networks: &[&str]) {
        self.scopes.insert(
            sandbox.to_string(),
            Scope {
                networks: networks.iter().map(|n| n.to_string()).collect(),
            },
        );
    }

    pub fn serves(&self, sandbox: &str) -> bool {
        self.scopes.contains_key(sandbox)
    }

    pub fn cluster_domain(&self) -> &str {
        &self.cluster_domain
    }

    /// Names netd answers itself (NXDOMAIN when out of scope) rather than forwarding:
    /// single labels, its own names and anything under them, the cluster domain.
    fn owns(&self, name: &str) -> bool {
        !name.contains('.')
            || self.known.contains(name)
            || name
                .match_indices('.')
                .any(|(i, _)| self.known.contains(&name[i + 1..]))
            || name == self.cluster_domain
            || name.ends_with(&format!(".{}", self.cluster_domain))
    }

    /// Answers `name` (any case, trailing dot or not) of `kind` for `sandbox`.
    pub fn lookup(&self, sandbox: &str, name: &str, kind: Kind) -> Lookup {
        let Some(scope) = self.scopes.get(sandbox) else {
            return Lookup::Refused;
        };
        let name = normalize(name);
        if let Some(ip) = parse_reverse(&name) {
            let mut names: Vec<String> = Vec::new();
            for net in &scope.networks {
                if let Some(v) = self.ptr.get(net).and_then(|m| m.get(&ip)) {
                    for n in v {
                        if !names.contains(n) {
                            names.push(n.clone());
                        }
                    }
                }
            }
            return if !names.is_empty() {
                match kind {
                    Kind::Ptr | Kind::Any => Lookup::Ptr(names),
                    _ => Lookup::Found(vec![]),
                }
            } else if self.subnets.iter().any(|s| s.contains(ip)) {
                Lookup::NxDomain
            } else {
                Lookup::NotOurs
            };
        }
        let mut recs: Vec<&Rec> = Vec::new();
        let mut exists = false;
        let mut rr: Option<&[AtomicUsize; 3]> = None;
        let scoped = scope
            .networks
            .iter()
            .filter_map(|net| self.by_net.get(net).and_then(|m| m.get(&name)));
        for n in scoped.chain(self.global.get(&name)) {
            exists = true;
            recs.extend(n.recs.iter());
            rr = rr.or(n.rr.as_deref());
        }
        if !exists {
            return if self.owns(&name) {
                Lookup::NxDomain
            } else {
                Lookup::NotOurs
            };
        }
        // A CNAME owns its name: it is the answer whatever the type (the server chases it).
        if let Some(c) = recs.iter().find(|r| matches!(r, Rec::Cname(_))) {
            return Lookup::Found(vec![(*c).clone()]);
        }
        let mut out: Vec<Rec> = Vec::new();
        for r in recs {
            let keep = matches!(
                (kind, r),
                (Kind::Any, _)
                    | (Kind::A, Rec::Addr(IpAddr::V4(_)))
                    | (Kind::Aaaa, Rec::Addr(IpAddr::V6(_)))
                    | (Kind::Srv, Rec::Srv { .. })
            );
            if keep && !out.contains(r) {
                out.push(r.clone());
            }
        }
        let Some(rr) = rr.filter(|_| out.len() > 1) else {
            return Lookup::Found(out);
        };
        // A stable order (whatever the networks the records came from), then the next
        // start for this family.
        out.sort_by(|a, b| rec_order(a).cmp(&rec_order(b)));
        let i = match kind {
            Kind::A => 0,
            Kind::Aaaa => 1,
            _ => 2,
        };
        let n = rr[i].fetch_add(1, Ordering::Relaxed) % out.len();
        out.rotate_left(n);
        Lookup::InOrder(out)
    }

    /// Every record `sandbox` sees, sorted (for `netctl dns ls`); `None` if netd does not
    /// serve it.
    pub fn listing(&self, sandbox: &str) -> Option<Vec<Listing>> {
        let scope = self.scopes.get(sandbox)?;
        let mut out = Vec::new();
        for net in &scope.networks {
            for (name, n) in self.by_net.get(net).into_iter().flatten() {
                for r in &n.recs {
                    out.push(listing_row(name, r, net));
                }
            }
            for (ip, names) in self.ptr.get(net).into_iter().flatten() {
                for n in names {
                    out.push(Listing {
                        name: reverse_name(*ip),
                        kind: "PTR".into(),
                        value: n.clone(),
                        network: net.clone(),
                    });
                }
            }
        }
        for (name, n) in &self.global {
            for r in &n.recs {
                out.push(listing_row(name, r, ""));
            }
        }
        out.sort_by(|a, b| {
            (&a.name, &a.kind, &a.value, &a.network).cmp(&(&b.name, &b.kind, &b.value, &b.network))
        });
        out.dedup();
        Some(out)
    }
}

/// The order rotation starts from: addresses, then SRV by target and port.
fn rec_order(r: &Rec) -> (u8, Option<IpAddr>, &str, u16) {
    match r {
        Rec::Addr(ip) => (0, Some(*ip), "", 0),
        Rec::Srv { port, target } => (1, None, target, *port),
        Rec::Cname(t) => (2, None, t, 0),
    }
}

fn listing_row(name: &str, r: &Rec, net: &str) -> Listing {
    let (kind, value) = match r {
        Rec::Addr(IpAddr::V4(a)) => ("A", a.to_string()),
        Rec::Addr(IpAddr::V6(a)) => ("AAAA", a.to_string()),
        Rec::Srv { port, target } => ("SRV", format!("0 0 {port} {target}")),
        Rec::Cname(t) => ("CNAME", t.clone()),
    };
    Listing {
        name: name.to_string(),
        kind: kind.into(),
        value,
        network: net.to_string(),
    }
}

/// `4.3.2.1.in-addr.arpa` for 1.2.3.4, nibbles for IPv6.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v) => {
            let mut s = String::with_capacity(72);
            for b in v.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// The address a full reverse name stands for (partial reverse names are not addresses).
pub fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        let mut o = [0u8; 4];
        for (i, p) in parts.iter().rev().enumerate() {
            if p.is_empty() || p.len() > 3 || (p.len() > 1 && p.starts_with('0')) {
                return None;
            }
            o[i] = p.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(o)));
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 32 {
            return None;
        }
        let mut v: u128 = 0;
        for p in parts.iter().rev() {
            if p.len() != 1 {
                return None;
            }
            v = (v << 4) | u128::from(u8::from_str_radix(p, 16).ok()?);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(v)));
    }
    None
}

/// Search domains for a sandbox in a Kubernetes-style namespace.
pub fn search_domains(labels: &BTreeMap<String, String>, cluster_domain: &str) -> Vec<String> {
    let ns = NAMESPACE_LABELS
        .iter()
        .find_map(|k| labels.get(*k))
        .filter(|n| !n.is_empty());
    let d = normalize(cluster_domain);
    match ns {
        Some(ns) => vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d],
        None => vec![],
    }
}

#[cfg(test)]
#[path = "records_tests.rs"]
pub(crate) mod tests;
