//! The IPVS datapath (`netd daemon --lb ipvs`, Docker's and kube-proxy's IPVS mode):
//! the services as IPVS virtual services, programmed over generic netlink through the
//! `Kernel` trait (`kernel::ipvs`), planned as pure diffs (`plan`), tested without root.
//!
//! Layout, and why:
//! - **A virtual service per (VIP, port, protocol)**, scheduler `rr`, every backend a NAT
//!   (`Masquerade`) destination `backend:targetPort` of weight 1. Not per fwmark: an
//!   address service says in its key what it balances, so a dump after a restart names
//!   the VIP it belongs to (ownership below) with no mark table to keep in step, and
//!   each port gets its own target port, which one fwmark service over many ports
//!   cannot give (a fwmark destination has one port).
//! - **Session affinity** is IPVS persistence (`-p SECONDS`): a client sticks to its
//!   backend while it has connections and for the timeout after.
//! - **Ingress ports** (published on every local address) are fwmark services: the
//!   table `inet netd_ipvs` marks packets to a local address and a published port
//!   (`ingress_mark`), one fwmark service per port and family balances them over every
//!   backend of that family. The alternative, a service per host address, would have
//!   to follow every address change of the host.
//! - **Hairpin** (a backend reaching its own VIP and being chosen): IPVS forwards the
//!   packet back to its sender, whose reply would never pass the host; that table
//!   masquerades packets whose source is their destination (a set of `b . b`), which
//!   nft NAT can do to IPVS traffic because `vs/conntrack=1` keeps its conntrack entry.
//!   NOT working yet: in the VM lane such a connection stays in SYN_RECV (docs/services.md).
//!   The table is netd's own (not `inet netd`), so the firewall's full rewrite of its
//!   table never drops it and `--lb nftables` hosts have none.
//! - **A backend that goes** is first set to weight 0: no new connections, established
//!   ones carry on. It is deleted at a later sync (any `sync_diff` or `sync_full`, or
//!   `reap`) once the kernel counts no connection on it (active + inactive, so a
//!   TIME_WAIT entry keeps it up to 2 minutes); a connection held open keeps it at
//!   weight 0, which costs nothing. A whole service that goes is deleted at once: its
//!   VIP goes with it, and `expire_nodest_conn=1` resets its clients at their next
//!   packet instead of letting them hang.
//! - **Ownership**: IPVS services carry no owner tag, so netd's are those with a VIP in
//!   one of the prefixes netd allocates VIPs from (its networks' subnets and the service
//!   CIDR, `IpvsLb::set_owned`), those it is asked to hold, and fwmark services whose
//!   mark has netd's layout (`is_ingress_mark`). Nothing else is ever changed or
//!   deleted; a service of someone else's on a VIP netd wants is an error (EEXIST).
//! - **Restart**: `sync_full` dumps the table and changes only what differs, so after a
//!   kill -9 an unchanged state sends no IPVS change at all (asserted by a test), and
//!   the ingress table is rewritten in one nft transaction (no packet sees it half
//!   made). IPVS keeps working while netd is down: it is all kernel state.
//! - The VIP must be a local address (IPVS looks at packets on their way in to the
//!   host, LOCAL_IN): the network wiring puts each VIP as a /32 (/128) on its network's
//!   bridge, which also answers ARP for it. Replies from a backend to a client on the
//!   same bridge must pass the host to be un-NATed: the bridge's `nf_call_iptables`
//!   (br_netfilter) sends bridged IP through the inet hooks, where IPVS's FORWARD hook
//!   rewrites them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use ipnetwork::IpNetwork;

use super::{LbKind, ServiceLb};
use crate::firewall::batch::{Batch, Command};
use crate::firewall::ruleset::services::FwService;
use crate::kernel::ipvs::{Dest, Forward, Op, Protocol, Service, ServiceKey};
use crate::kernel::{Kernel, KernelError};
use crate::model::Proto;

/// The scheduler of every service: round robin spreads new connections evenly whatever
/// their length, which the conformance suite measures (33 % ± 7 over 3 backends).
pub const SCHEDULER: &str = "rr";

/// The nft table of the ingress marks and the hairpin masquerade.
pub const TABLE: &str = "netd_ipvs";

/// The low 16 bits of every ingress mark, beside the IP protocol number: chosen clear
/// of the bits others use on this host (netd's hairpin 0x2000, kube-proxy's 0x4000 and
/// 0x8000), so a marked packet never triggers their rules.
const MARK_TAG: u32 = 0x0e00;

fn ip_proto(p: Proto) -> u32 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

/// The fwmark of an ingress port: `port << 16 | 0x0e00 | IP protocol`. Deterministic, so
/// a restarted netd finds its fwmark services by the mark alone; unique because a
/// published port and protocol is held by one service on the host.
pub fn ingress_mark(proto: Proto, port: u16) -> u32 {
    (port as u32) << 16 | MARK_TAG | ip_proto(proto)
}

/// Whether `mark` has the layout of `ingress_mark` (a netd fwmark service).
pub fn is_ingress_mark(mark: u32) -> bool {
    let low = mark & 0xffff;
    mark >> 16 != 0 && (low == MARK_TAG | 6 || low == MARK_TAG | 17)
}

fn ipvs_proto(p: Proto) -> Protocol {
    match p {
        Proto::Tcp => Protocol::Tcp,
        Proto::Udp => Protocol::Udp,
    }
}

/// One virtual service as netd wants it: its settings and destination addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub service: Service,
    pub dests: BTreeSet<SocketAddr>,
}

/// What the kernel holds of one service.
pub type Held = (Service, Vec<Dest>);

fn service(key: ServiceKey, affinity: Option<u32>) -> Service {
    let s = Service::new(key).scheduler(SCHEDULER);
    match affinity {
        Some(secs) => s.persistent(secs),
        None => s,
    }
}

/// The virtual services `services` need, by key (pure).
pub fn desired(services: &[FwService]) -> BTreeMap<ServiceKey, Want> {
    let mut out = BTreeMap::new();
    for s in services {
        for v in &s.vips {
            let backends: BTreeSet<IpAddr> = v
                .backends
                .iter()
                .copied()
                .filter(|b| b.is_ipv4() == v.vip.is_ipv4())
                .collect();
            for &(port, target, proto) in &s.ports {
                let key = ServiceKey::Addr {
                    protocol: ipvs_proto(proto),
                    vip: SocketAddr::new(v.vip, port),
                };
                let dests = backends.iter().map(|&b| SocketAddr::new(b, target)).collect();
                out.insert(
                    key,
                    Want {
                        service: service(key, s.affinity),
                        dests,
                    },
                );
            }
        }
        for ipv6 in [false, true] {
            // Only a family the service has a VIP of, as the nftables datapath does.
            if !s.vips.iter().any(|v| v.vip.is_ipv6() == ipv6) {
                continue;
            }
            let backends: BTreeSet<IpAddr> = s
                .vips
                .iter()
                .flat_map(|v| v.backends.iter().copied())
                .filter(|b| b.is_ipv6() == ipv6)
                .collect();
            for i in &s.ingress {
                let key = ServiceKey::Fwmark {
                    mark: ingress_mark(i.proto, i.published),
                    ipv6,
                };
                let dests = backends.iter().map(|&b| SocketAddr::new(b, i.target)).collect();
                out.insert(
                    key,
                    Want {
                        service: service(key, s.affinity),
                        dests,
                    },
                );
            }
        }
    }
    out
}

/// Which IPVS services are netd's (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    pub prefixes: Vec<IpNetwork>,
}

impl Owned {
    pub fn owns(&self, key: &ServiceKey) -> bool {
        match key {
            ServiceKey::Addr { vip, .. } => self.prefixes.iter().any(|p| p.contains(vip.ip())),
            ServiceKey::Fwmark { mark, .. } => is_ingress_mark(*mark),
        }
    }
}

fn same_settings(a: &Service, b: &Service) -> bool {
    a.scheduler == b.scheduler && a.flags == b.flags && a.timeout == b.timeout
}

/// A destination as netd makes it: NAT, weight 1, no thresholds.
fn live(addr: SocketAddr) -> Dest {
    Dest::masquerade(addr, 1)
}

fn is_live(d: &Dest) -> bool {
    d.weight == 1 && d.forward == Forward::Masquerade && d.upper_threshold == 0 && d.lower_threshold == 0
}

/// The plan for the services in `scope`: the changes that take what the kernel holds
/// (`held`) to what netd wants (`want`), and the services left with a destination
/// draining (at weight 0 with connections, or set to 0 by this plan). A held service
/// that is not wanted is deleted only when `owns` says it is netd's. Pure.
pub fn plan<'a>(
    held: &BTreeMap<ServiceKey, Held>,
    want: &BTreeMap<ServiceKey, Want>,
    scope: impl IntoIterator<Item = &'a ServiceKey>,
    owns: impl Fn(&ServiceKey) -> bool,
) -> (Vec<Op>, BTreeSet<ServiceKey>) {
    let mut ops = Vec::new();
    let mut draining = BTreeSet::new();
    for key in scope {
        match (held.get(key), want.get(key)) {
            (None, None) => {}
            (Some(_), None) => {
                if owns(key) {
                    ops.push(Op::DelService(*key));
                }
            }
            (None, Some(w)) => {
                ops.push(Op::AddService(w.service.clone()));
                ops.extend(w.dests.iter().map(|&a| Op::AddDest(*key, live(a))));
            }
            (Some((s, ds)), Some(w)) => {
                if !same_settings(s, &w.service) {
                    ops.push(Op::SetService(w.service.clone()));
                }
                // New backends first, so the service never has fewer than it needs.
                for &a in &w.dests {
                    match ds.iter().find(|d| d.addr == a) {
                        None => ops.push(Op::AddDest(*key, live(a))),
                        Some(d) if !is_live(d) => ops.push(Op::SetDest(*key, live(a))),
                        Some(_) => {}
                    }
                }
                for d in ds.iter().filter(|d| !w.dests.contains(&d.addr)) {
                    if d.weight != 0 {
                        // SET_DEST takes a whole entry: keep the method and thresholds.
                        ops.push(Op::SetDest(
                            *key,
                            Dest {
                                weight: 0,
                                ..d.clone()
                            },
                        ));
                        draining.insert(*key);
                    } else if d.active_conns + d.inactive_conns == 0 {
                        ops.push(Op::DelDest(*key, d.addr));
                    } else {
                        draining.insert(*key);
                    }
                }
            }
        }
    }
    (ops, draining)
}

/// The ingress and hairpin table of `services`, as data.
#[derive(Debug, Default, PartialEq, Eq)]
struct NftObjects {
    /// `l4proto . port : mark` of the ingress ports.
    marks: BTreeSet<String>,
    /// `backend . backend` per family.
    hairpin4: BTreeSet<String>,
    hairpin6: BTreeSet<String>,
}

fn nft_objects(want: &BTreeMap<ServiceKey, Want>) -> NftObjects {
    let mut o = NftObjects::default();
    for (key, w) in want {
        if let ServiceKey::Fwmark { mark, .. } = key {
            let proto = if mark & 0xff == 6 { "tcp" } else { "udp" };
            o.marks.insert(format!("{proto} . {} : {mark:#010x}", mark >> 16));
        }
        for d in &w.dests {
            let ip = d.ip();
            let set = if ip.is_ipv4() {
                &mut o.hairpin4
            } else {
                &mut o.hairpin6
            };
            set.insert(format!("{ip} . {ip}"));
        }
    }
    o
}

const SETS: [(&str, &str); 3] = [
    (
        "ingress",
        "type inet_proto . inet_service : mark; comment \"service ports published in ingress mode: their IPVS fwmark\";",
    ),
    (
        "hairpin4",
        "type ipv4_addr . ipv4_addr; comment \"IPVS backends (IPv4): masquerade one reaching itself\";",
    ),
    (
        "hairpin6",
        "type ipv6_addr . ipv6_addr; comment \"IPVS backends (IPv6): masquerade one reaching itself\";",
    ),
];

fn chains() -> [(&'static str, &'static str, Vec<&'static str>); 3] {
    // Mangle priority: the mark must be on the packet before IPVS sees it (LOCAL_IN, or
    // LOCAL_OUT for the host's own connections). Loopback addresses are left out: IPVS
    // cannot NAT a 127/8 source out to a bridge, and ::1 has no route_localnet.
    let mark =
        "fib daddr type local ip daddr != 127.0.0.0/8 meta mark set meta l4proto . th dport map @ingress \
                comment \"ingress ports\"";
    let mark6 = "fib daddr type local ip6 daddr != ::1 meta mark set meta l4proto . th dport map @ingress \
                 comment \"ingress ports\"";
    [
        (
            "prerouting",
            "type filter hook prerouting priority mangle; policy accept;",
            vec![mark, mark6],
        ),
        (
            "output",
            "type filter hook output priority mangle; policy accept;",
            vec![mark, mark6],
        ),
        (
            "postrouting",
            "type nat hook postrouting priority srcnat; policy accept;",
            vec![
                "ip saddr . ip daddr @hairpin4 masquerade comment \"hairpin\"",
                "ip6 saddr . ip6 daddr @hairpin6 masquerade comment \"hairpin\"",
            ],
        ),
    ]
}

fn set_contents<'a>(o: &'a NftObjects, set: &str) -> &'a BTreeSet<String> {
    match set {
        "ingress" => &o.marks,
        "hairpin4" => &o.hairpin4,
        _ => &o.hairpin6,
    }
}

/// The whole table, restored whatever is there (one nft transaction: no packet sees
/// it half made).
fn nft_full(want: &BTreeMap<ServiceKey, Want>) -> Batch {
    let o = nft_objects(want);
    let mut cmds = vec![format!(
        "add table inet {TABLE} {{ comment \"netd: IPVS ingress marks and hairpin\"; }}"
    )];
    for (name, decl, _) in chains() {
        cmds.push(format!("add chain inet {TABLE} {name} {{ {decl} }}"));
        cmds.push(format!("flush chain inet {TABLE} {name}"));
    }
    for (name, decl) in SETS {
        let kind = if name == "ingress" { "map" } else { "set" };
        cmds.push(format!("add {kind} inet {TABLE} {name} {{ {decl} }}"));
        cmds.push(format!("flush {kind} inet {TABLE} {name}"));
        let elems = set_contents(&o, name);
        if !elems.is_empty() {
            let list: Vec<&str> = elems.iter().map(String::as_str).collect();
            cmds.push(format!(
                "add element inet {TABLE} {name} {{ {} }}",
                list.join(", ")
            ));
        }
    }
    for (name, _, rules) in chains() {
        for r in rules {
            cmds.push(format!("add rule inet {TABLE} {name} {r}"));
        }
    }
    text(cmds)
}

/// The element changes from `old` to `new` (empty when nothing changed).
fn nft_diff(old: &BTreeMap<ServiceKey, Want>, new: &BTreeMap<ServiceKey, Want>) -> Batch {
    let (a, b) = (nft_objects(old), nft_objects(new));
    let mut cmds = Vec::new();
    for (name, _) in SETS {
        let (was, now) = (set_contents(&a, name), set_contents(&b, name));
        let gone: Vec<&str> = was.difference(now).map(String::as_str).collect();
        let added: Vec<&str> = now.difference(was).map(String::as_str).collect();
        if !gone.is_empty() {
            // A map element is deleted by its key alone.
            let keys: Vec<&str> = gone.iter().map(|e| e.split(" : ").next().unwrap_or(e)).collect();
            cmds.push(format!(
                "delete element inet {TABLE} {name} {{ {} }}",
                keys.join(", ")
            ));
        }
        if !added.is_empty() {
            cmds.push(format!(
                "add element inet {TABLE} {name} {{ {} }}",
                added.join(", ")
            ));
        }
    }
    text(cmds)
}

fn text(cmds: Vec<String>) -> Batch {
    Batch {
        cmds: cmds.into_iter().map(Command::Text).collect(),
    }
}

/// The IPVS datapath over a `Kernel`.
pub struct IpvsLb {
    kernel: Arc<dyn Kernel>,
    owned: Mutex<Owned>,
    /// Services with a destination at weight 0, looked at again on every sync.
    draining: Mutex<BTreeSet<ServiceKey>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl IpvsLb {
    /// `owned`: the prefixes netd allocates VIPs from (see the module doc).
    pub fn new(kernel: Arc<dyn Kernel>, owned: Vec<IpNetwork>) -> Self {
        IpvsLb {
            kernel,
            owned: Mutex::new(Owned { prefixes: owned }),
            draining: Mutex::new(BTreeSet::new()),
        }
    }

    /// Replaces the VIP prefixes netd owns (networks were created or removed).
    pub fn set_owned(&self, prefixes: Vec<IpNetwork>) {
        lock(&self.owned).prefixes = prefixes;
    }

    /// The services with a destination still draining.
    pub fn draining(&self) -> BTreeSet<ServiceKey> {
        lock(&self.draining).clone()
    }

    /// Deletes the drained destinations that have no connection left, given the state
    /// the kernel holds (`services`). What `sync_diff` does besides its change; for a
    /// timer that wants them gone without a change to come.
    pub fn reap(&self, services: &[FwService]) -> Result<(), KernelError> {
        self.sync_diff(services, services)
    }

    /// The kernel's view of the services in `keys` whose settings netd knows
    /// (`known`): one destination dump per service.
    fn held(
        &self,
        keys: &BTreeSet<ServiceKey>,
        known: &BTreeMap<ServiceKey, Want>,
    ) -> Result<BTreeMap<ServiceKey, Held>, KernelError> {
        let mut held = BTreeMap::new();
        for k in keys {
            if let Some(w) = known.get(k) {
                held.insert(*k, (w.service.clone(), self.kernel.ipvs_dests(k)?));
            }
        }
        Ok(held)
    }
}

impl ServiceLb for IpvsLb {
    fn kind(&self) -> LbKind {
        LbKind::Ipvs
    }

    fn sync_full(&self, services: &[FwService]) -> Result<(), KernelError> {
        self.kernel.ipvs_setup()?;
        let want = desired(services);
        let held: BTreeMap<ServiceKey, Held> = self
            .kernel
            .ipvs_table()?
            .into_iter()
            .map(|(s, d)| (s.key, (s, d)))
            .collect();
        let scope: BTreeSet<ServiceKey> = held.keys().chain(want.keys()).copied().collect();
        let owned = lock(&self.owned).clone();
        let (ops, draining) = plan(&held, &want, &scope, |k| owned.owns(k));
        if !ops.is_empty() {
            self.kernel.ipvs_apply(&ops)?;
        }
        *lock(&self.draining) = draining;
        self.kernel.nft(&nft_full(&want))
    }

    fn sync_diff(&self, old: &[FwService], new: &[FwService]) -> Result<(), KernelError> {
        let (was, now) = (desired(old), desired(new));
        let mut scope: BTreeSet<ServiceKey> = lock(&self.draining).clone();
        scope.extend(was.keys().filter(|k| now.get(*k) != was.get(*k)));
        scope.extend(now.keys().filter(|k| !was.contains_key(*k)));
        // What the kernel holds is `old` (the contract) plus the weight-0 destinations
        // of draining services, which only a dump of those services shows.
        let held = self.held(&scope, &was)?;
        // A service `old` had is netd's whatever the prefixes say.
        let (ops, draining) = plan(&held, &now, &scope, |k| was.contains_key(k));
        if !ops.is_empty() {
            self.kernel.ipvs_apply(&ops)?;
        }
        {
            let mut d = lock(&self.draining);
            d.retain(|k| !scope.contains(k));
            d.extend(draining);
        }
        let batch = nft_diff(&was, &now);
        if batch.cmds.is_empty() {
            return Ok(());
        }
        self.kernel.nft(&batch)
    }
}

#[cfg(test)]
#[path = "ipvs_tests.rs"]
mod tests;
