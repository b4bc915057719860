//! Service VIPs and ingress ports in `table inet netd`, as nft batches: `full` (create or
//! restore every service object) and `diff` (the batch from one state to the next, whose
//! size follows what changed, not how many services exist). Kept apart from the rest of
//! the ruleset so a host without services gets byte for byte the batches it got before.
//!
//! Layout (kube-proxy's nftables mode, with the per-backend chains folded into maps):
//! - base chains `svc_prerouting` and `svc_output` (nat, just before `prerouting` and
//!   `output`) look every packet up once in `svc4_dispatch`/`svc6_dispatch`, verdict
//!   maps keyed `vip . l4proto . dport`, and, for local addresses, in
//!   `svc4_ingress`/`svc6_ingress` keyed `l4proto . dport` (ingress-mode published
//!   ports). Each element is `goto` the chain of one service port: one lookup, whatever
//!   the number of services.
//! - a chain per service port per network, `svc/<ns>/<name>/<network>/<proto>/<port>`
//!   (`…/<network>/ip6/<proto>/<port>` for an IPv6 VIP; ingress:
//!   `svc/<ns>/<name>/ingress<4|6>/<proto>/<published>`), holds what depends on the port
//!   alone (own network only, marks) and ends in `goto` its family's pick chain
//!   (`svc/pick4`, `svc/pick6`, `svc/ingress4`, `svc/ingress6`).
//! - a pick chain has one rule per backend map of its family and kind: `dnat ip to ip
//!   daddr . tcp dport . numgen random mod N map @svc/pick4/tcp/nN`, a map per protocol
//!   and backend count N holding, for each port with N backends, `vip . port . slot :
//!   backend . target port`. A port is in exactly one map, so the other lookups miss and
//!   fall through; when none has it (no backend) the chain rejects at once (TCP reset,
//!   ICMP port unreachable), as kube-proxy does, instead of letting the SYN time out.
//!   Conntrack keeps the choice for the rest of the connection.
//!   Why maps and not a chain per backend: a commit that adds a rule or a `goto` makes
//!   the kernel revalidate every chain reachable from the base chains, and each new
//!   `goto` runs a loop check that walks every set of the table, so with a chain, a goto
//!   and an anonymous map per backend a change cost O(table) and a full load grew
//!   super-linearly (docs/benchmarks.md). A backend change here is element changes in
//!   maps of plain data: no rule, no verdict, nothing to revalidate. Only a backend
//!   count no port had before (or the last port of a count gone) refills a pick chain.
//! - session affinity (client IP) keeps a chain per backend, `<port chain>/<ip>`: per
//!   backend a set `<backend chain>/aff<secs>` of client addresses with `flags
//!   dynamic,timeout`; the port chain first sends a client found in a backend's set to
//!   that backend, the backend chain refreshes the entry and DNATs. That is
//!   kube-proxy's `recent`-style affinity with a real idle timeout; `jhash ip saddr`
//!   would have no timeout and would move every client when N changes. The timeout is
//!   in the set's name because a set's timeout cannot change in place.
//! - hairpin: a backend reaching its own VIP would get a reply from itself to itself,
//!   bypassing the NAT; `svc_postrouting` masquerades packets whose `saddr . daddr` is
//!   in `svc/hairpin4`/`svc/hairpin6` (an element `B . B` per backend B: after DNAT only
//!   a backend talking to itself matches). Other clients keep their source address.
//!   `HAIRPIN_MARK` is left for ingress ports of `externalTrafficPolicy: Cluster`
//!   (and the affinity backend chains), which `svc_postrouting` masquerades too.
//!
//! Names are nft identifiers (letters, digits, `/ . - _`): namespaces and service names
//! are DNS labels and network names Docker names, so they fit; anything else is left
//! out (fails closed, as the rest of the ruleset does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::firewall::batch::{Batch, Command, Part};
use crate::firewall::svc_cmd::{
    hairpin_set, AffinitySet, ChainKind, DispatchMap, Hook, MapElement, PickElement, PickMap, Priority,
    SvcCmd, SvcRule, SvcRuleLine,
};
use crate::model::{
    Backend, ClusterIp, EndpointMode, KubeSpec, Proto, PublishMode, Service, ServiceKind, CLUSTER_WIDE,
};

pub use crate::firewall::svc_cmd::HAIRPIN_MARK;

/// Packet mark bit for "DNATed to a service backend through its VIP", set by a VIP's
/// port chain: the per-network hairpin masquerade of published ports
/// (`ruleset::inet::nat_postrouting`) skips such packets, so a client on the VIP's own
/// network keeps its source address (the reply passes conntrack through
/// `nf_call_iptables` on the bridge instead).
pub const VIP_MARK: u32 = 0x1000;

/// A VIP of a service on one network and the backends reachable from it (addresses of
/// the VIP's family on that network, as `model::select_backends` gives them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwVip {
    pub network: String,
    pub vip: IpAddr,
    pub backends: Vec<IpAddr>,
    /// The network's bridge: the VIP is dispatched only to packets that come in through
    /// it (or from the host itself), so a sandbox on another network cannot reach it.
    /// Empty: from anywhere.
    #[serde(default)]
    pub bridge: String,
}

/// One published port in ingress mode: `published` on every local address, balanced
/// over every backend of the family (all networks) at `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwIngress {
    pub published: u16,
    pub target: u16,
    pub proto: Proto,
    /// Masquerade what arrives here (Kubernetes' `externalTrafficPolicy: Cluster` for a
    /// NodePort; `Local` and netd's own ingress ports keep the client's address).
    #[serde(default)]
    pub masquerade: bool,
}

/// What the firewall needs to know of one `cluster_ip` service in vip mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwService {
    pub namespace: String,
    pub name: String,
    /// (port, target port, protocol) as in `model::ServicePort`.
    pub ports: Vec<(u16, u16, Proto)>,
    /// Client-IP affinity timeout in seconds, if any.
    pub affinity: Option<u32>,
    pub vips: Vec<FwVip>,
    pub ingress: Vec<FwIngress>,
}

impl FwService {
    /// What the firewall needs of `svc`, given its backends (`model::select_backends`):
    /// None for services with nothing to balance in nftables (ExternalName, dnsrr). A
    /// network whose VIP is not allocated yet is left out.
    /// `bridge_of` names the bridge of a network (see `FwVip::bridge`).
    pub fn from_model(
        svc: &Service,
        backends: &[Backend],
        bridge_of: impl Fn(&str) -> Option<String>,
    ) -> Option<FwService> {
        let ServiceKind::ClusterIp(c) = &svc.kind else {
            return None;
        };
        if c.endpoint_mode != EndpointMode::Vip {
            return None;
        }
        if let Some(k) = &c.kubernetes {
            return Self::from_kubernetes(svc, c, k, backends);
        }
        let vips = c
            .networks
            .iter()
            .filter_map(|n| {
                Some(FwVip {
                    network: n.clone(),
                    vip: *c.vips.get(n)?,
                    backends: backends
                        .iter()
                        .filter(|b| &b.network == n)
                        .map(|b| b.ip)
                        .collect(),
                    bridge: bridge_of(n).unwrap_or_default(),
                })
            })
            .collect();
        Some(FwService {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            ports: c.ports.iter().map(|p| (p.port, p.target_port, p.proto)).collect(),
            affinity: c.session_affinity.map(|a| a.timeout_secs),
            vips,
            ingress: c
                .published
                .iter()
                .filter(|p| p.mode == PublishMode::Ingress)
                .map(|p| FwIngress {
                    published: p.published,
                    target: p.target,
                    proto: p.proto,
                    masquerade: false,
                })
                .collect(),
        })
    }

    /// A Kubernetes Service: its ClusterIP as one VIP on the pseudo network
    /// `CLUSTER_WIDE` over every backend, its NodePorts as ingress ports. A port whose
    /// named target no EndpointSlice resolves is left out (nothing could serve it).
    fn from_kubernetes(
        svc: &Service,
        c: &ClusterIp,
        k: &KubeSpec,
        backends: &[Backend],
    ) -> Option<FwService> {
        let resolved: Vec<(&crate::model::KubePort, u16)> = k
            .ports
            .iter()
            .filter_map(|p| Some((p, k.resolve_target(p)?)))
            .collect();
        let mut ports: Vec<(u16, u16, Proto)> = resolved.iter().map(|(p, t)| (p.port, *t, p.proto)).collect();
        ports.sort();
        let mut ips: Vec<IpAddr> = backends.iter().map(|b| b.ip).collect();
        ips.sort();
        ips.dedup();
        Some(FwService {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            ports,
            affinity: c.session_affinity.map(|a| a.timeout_secs),
            vips: k
                .cluster_ip
                .map(|vip| FwVip {
                    network: CLUSTER_WIDE.into(),
                    vip,
                    backends: ips,
                    // Off-subnet, reached through a gateway: from every network and the host.
                    bridge: String::new(),
                })
                .into_iter()
                .collect(),
            ingress: resolved
                .iter()
                .filter_map(|(p, t)| {
                    Some(FwIngress {
                        published: p.node_port?,
                        target: *t,
                        proto: p.proto,
                        masquerade: !k.external_traffic_local,
                    })
                })
                .collect(),
        })
    }
}

/// Every service object, as data: chains with their rules, affinity sets, map elements.
/// `full` lists it; `diff` compares two of them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Objects {
    /// chain -> (comment, rules).
    chains: BTreeMap<String, (String, Vec<SvcRuleLine>)>,
    /// set -> declaration.
    sets: BTreeMap<String, AffinitySet>,
    /// map -> key (as text, for a stable order) -> element.
    elements: BTreeMap<DispatchMap, BTreeMap<String, MapElement>>,
    /// backend map -> key (as text) -> element.
    picks: BTreeMap<PickMap, BTreeMap<String, PickElement>>,
    /// hairpin set (IPv6?) -> backends; a set exists while any service does.
    hairpin: BTreeMap<bool, BTreeSet<IpAddr>>,
}

impl Objects {
    /// Every set and map of a service (affinity sets, backend maps, hairpin sets):
    /// what `full_over` keeps of the kernel's `svc/` sets.
    fn has_set(&self, name: &str) -> bool {
        self.sets.contains_key(name)
            || self.picks.keys().any(|m| m.name() == name)
            || self.hairpin.keys().any(|v6| hairpin_set(*v6) == name)
    }
}

/// The base chains: fixed rules, written by `full` only.
fn base_chains() -> [(&'static str, ChainKind, Vec<SvcRuleLine>); 3] {
    let dispatch = |from: &str| {
        vec![
            SvcRuleLine::commented(SvcRule::Dispatch { v6: false }, format!("service VIPs{from}")),
            SvcRuleLine::commented(SvcRule::Dispatch { v6: true }, format!("service VIPs{from}")),
            SvcRuleLine::commented(
                SvcRule::IngressDispatch { v6: false },
                format!("service ingress ports{from}"),
            ),
            // As for published ports: IPv6 has no route_localnet, ::1 cannot be DNATed out.
            SvcRuleLine::commented(
                SvcRule::IngressDispatch { v6: true },
                format!("service ingress ports{from}"),
            ),
        ]
    };
    let nat = |hook, priority| ChainKind::Base { hook, priority };
    [
        // Before netd's own DNAT (-100): a VIP is never a published port's address.
        (
            "svc_prerouting",
            nat(Hook::Prerouting, Priority::Num(-101)),
            dispatch(""),
        ),
        (
            "svc_output",
            nat(Hook::Output, Priority::Num(-101)),
            dispatch(", from the host itself"),
        ),
        (
            "svc_postrouting",
            nat(Hook::Postrouting, Priority::Srcnat),
            vec![
                SvcRuleLine::commented(
                    SvcRule::HairpinMasquerade,
                    "service: masquerade what a service chain marked",
                ),
                SvcRuleLine::commented(
                    SvcRule::HairpinSetMasquerade { v6: false },
                    "service hairpin: a backend reaching itself through its VIP",
                ),
                SvcRuleLine::commented(
                    SvcRule::HairpinSetMasquerade { v6: true },
                    "service hairpin: a backend reaching itself through its VIP",
                ),
            ],
        ),
    ]
}

/// A name part nft takes in an identifier, or None.
fn part(s: &str) -> Option<&str> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    ok.then_some(s)
}

/// A bridge name as an nft string literal, or None for an empty or odd name (no
/// restriction then).
fn ifname_lit(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    ok.then(|| format!("\"{name}\""))
}

/// An address as part of an identifier (':' is not an identifier character).
fn ip_part(ip: IpAddr) -> String {
    ip.to_string().replace(':', "_")
}

/// A service port without affinity: where its packets come from, and its backends.
struct PickPort<'a> {
    chain: String,
    what: String,
    proto: Proto,
    /// The VIP (None: an ingress port, any local address).
    vip: Option<IpAddr>,
    /// The port the key matches (the VIP's port, or the published port).
    port: u16,
    target: u16,
    backends: &'a [IpAddr],
    v6: bool,
    /// The VIP's bridge (`FwVip::bridge`); None for an ingress port.
    vip_of: Option<&'a str>,
    masquerade: bool,
}

/// Adds the chain of one service port without affinity: rules that depend on the
/// port alone (own network only, marks) and a goto to its family's pick chain; the
/// backends are elements `vip . port . slot : backend . target` of the backend map of
/// their count. A backend change is then an element change and touches no rule.
fn add_pick_port(o: &mut Objects, p: PickPort<'_>) {
    let mut rules = Vec::new();
    if let Some(net) = p.vip_of {
        if ifname_lit(net).is_some() {
            rules.push(SvcRuleLine::commented(
                SvcRule::OwnNetworkOnly {
                    bridge: net.to_string(),
                },
                "a VIP answers its own network only",
            ));
        }
        rules.push(SvcRuleLine::commented(
            SvcRule::MarkSet { mark: VIP_MARK },
            "client keeps its address",
        ));
    }
    if p.masquerade {
        rules.push(SvcRuleLine::commented(
            SvcRule::MarkSet { mark: HAIRPIN_MARK },
            "externalTrafficPolicy Cluster",
        ));
    }
    rules.push(SvcRuleLine::new(SvcRule::Goto {
        chain: PickMap::chain(p.v6, p.vip.is_none()).to_string(),
    }));
    if !p.backends.is_empty() {
        let map = PickMap {
            v6: p.v6,
            ingress: p.vip.is_none(),
            proto: p.proto,
            n: p.backends.len() as u32,
        };
        let elems = o.picks.entry(map).or_default();
        for (slot, &to) in p.backends.iter().enumerate() {
            let e = PickElement {
                vip: p.vip,
                port: p.port,
                slot: slot as u32,
                to,
                to_port: p.target,
            };
            elems.insert(pick_key(&e), e);
        }
    }
    o.chains.insert(p.chain, (p.what, rules));
}

fn pick_key(e: &PickElement) -> String {
    match e.vip {
        Some(v) => format!("{v} . {} . {}", e.port, e.slot),
        None => format!("{} . {}", e.port, e.slot),
    }
}

/// The pick chains (`PickMap::chain`): a DNAT through each backend map of the family
/// and kind, then, when none has the port (no backend), a reject at once.
fn add_pick_chains(o: &mut Objects) {
    for (v6, ingress) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut rules: Vec<SvcRuleLine> = o
            .picks
            .keys()
            .filter(|m| m.v6 == v6 && m.ingress == ingress)
            .map(|&map| SvcRuleLine::new(SvcRule::PickDnat { map }))
            .collect();
        rules.push(SvcRuleLine::commented(SvcRule::RejectTcpReset, "no backend"));
        rules.push(SvcRuleLine::commented(
            SvcRule::RejectPortUnreachable,
            "no backend",
        ));
        let kind = if ingress { "ingress ports" } else { "VIPs" };
        let what = format!("service backends: {kind} (IPv{})", if v6 { 6 } else { 4 });
        o.chains
            .insert(PickMap::chain(v6, ingress).to_string(), (what, rules));
    }
}

/// Adds the chain of one service port (reached from `what`) and its backend chains:
/// the layout of a port with client-IP affinity.
#[allow(clippy::too_many_arguments)]
fn add_port_chain(
    o: &mut Objects,
    chain: String,
    what: String,
    proto: Proto,
    target: u16,
    backends: &[IpAddr],
    affinity: Option<u32>,
    vip_of: Option<&str>,
    masquerade: bool,
) {
    let mut rules = Vec::new();
    if let Some(net) = vip_of {
        // The host's own packets (output hook: no input interface, which newer
        // kernels read as "") come from a local address and pass.
        if ifname_lit(net).is_some() {
            rules.push(SvcRuleLine::commented(
                SvcRule::OwnNetworkOnly {
                    bridge: net.to_string(),
                },
                "a VIP answers its own network only",
            ));
        }
        rules.push(SvcRuleLine::commented(
            SvcRule::MarkSet { mark: VIP_MARK },
            "client keeps its address",
        ));
    }
    if masquerade && !backends.is_empty() {
        // svc_postrouting masquerades this mark: the backend answers the host, which
        // un-NATs, as kube-proxy does for `externalTrafficPolicy: Cluster`.
        rules.push(SvcRuleLine::commented(
            SvcRule::MarkSet { mark: HAIRPIN_MARK },
            "externalTrafficPolicy Cluster",
        ));
    }
    let mut picks = Vec::new();
    for &be in backends {
        let v6 = be.is_ipv6();
        let be_chain = format!("{chain}/{}", ip_part(be));
        let mut be_rules = vec![SvcRuleLine::commented(
            SvcRule::HairpinMark { backend: be },
            "hairpin",
        )];
        if let Some(secs) = affinity {
            let set = format!("{be_chain}/aff{secs}");
            o.sets.insert(
                set.clone(),
                AffinitySet {
                    v6,
                    timeout_secs: secs,
                    comment: format!("clients of {be}"),
                },
            );
            rules.push(SvcRuleLine::commented(
                SvcRule::AffinityGoto {
                    v6,
                    set: set.clone(),
                    chain: be_chain.clone(),
                },
                "affinity",
            ));
            be_rules.push(SvcRuleLine::new(SvcRule::AffinityUpdate { v6, set }));
        }
        be_rules.push(SvcRuleLine::new(SvcRule::Dnat {
            proto,
            to: be,
            port: target,
        }));
        o.chains
            .insert(be_chain.clone(), (format!("{what}: backend {be}"), be_rules));
        picks.push(be_chain);
    }
    if picks.is_empty() {
        rules.push(match proto {
            Proto::Tcp => SvcRuleLine::commented(SvcRule::RejectTcpReset, "no backend"),
            Proto::Udp => SvcRuleLine::commented(SvcRule::RejectPortUnreachable, "no backend"),
        });
    } else {
        rules.push(SvcRuleLine::new(SvcRule::Pick { chains: picks }));
    }
    o.chains.insert(chain, (what, rules));
}

fn objects(services: &[FwService]) -> Objects {
    let mut o = Objects::default();
    for m in DispatchMap::ALL {
        o.elements.insert(m, BTreeMap::new());
    }
    for s in services {
        let (Some(ns), Some(name)) = (part(&s.namespace), part(&s.name)) else {
            continue;
        };
        for v in &s.vips {
            let Some(net) = part(&v.network) else { continue };
            let fam: u8 = if v.vip.is_ipv4() { 4 } else { 6 };
            let mut backends: Vec<IpAddr> = v
                .backends
                .iter()
                .copied()
                .filter(|b| b.is_ipv4() == v.vip.is_ipv4())
                .collect();
            backends.sort();
            backends.dedup();
            for &(port, target, proto) in &s.ports {
                // A network may have a VIP of each family: `ip6/` keeps their chains apart.
                let v6 = if fam == 4 { "" } else { "ip6/" };
                let chain = format!("svc/{ns}/{name}/{net}/{v6}{proto}/{port}");
                let map = if fam == 4 {
                    DispatchMap::Svc4Dispatch
                } else {
                    DispatchMap::Svc6Dispatch
                };
                o.elements.entry(map).or_default().insert(
                    format!("{} . {proto} . {port}", v.vip),
                    MapElement {
                        key: vec![Part::ip(v.vip), Part::Proto(proto), Part::Port(port)],
                        goto: chain.clone(),
                    },
                );
                // No VIP in the comment: a chain's comment cannot change in place.
                let what = format!("service {ns}/{name} {port}/{proto} on net {net}");
                let from = Some(v.bridge.as_str());
                if s.affinity.is_none() {
                    add_pick_port(
                        &mut o,
                        PickPort {
                            chain,
                            what,
                            proto,
                            vip: Some(v.vip),
                            port,
                            target,
                            backends: &backends,
                            v6: fam == 6,
                            vip_of: from,
                            masquerade: false,
                        },
                    );
                } else {
                    add_port_chain(
                        &mut o, chain, what, proto, target, &backends, s.affinity, from, false,
                    );
                }
            }
        }
        for fam in [4u8, 6] {
            let mut backends: Vec<IpAddr> = s
                .vips
                .iter()
                .flat_map(|v| v.backends.iter().copied())
                .filter(|b| b.is_ipv4() == (fam == 4))
                .collect();
            backends.sort();
            backends.dedup();
            // Only a family the service has a VIP of: a v4-only service takes no v6 port.
            if !s.vips.iter().any(|v| v.vip.is_ipv4() == (fam == 4)) {
                continue;
            }
            for i in &s.ingress {
                let chain = format!("svc/{ns}/{name}/ingress{fam}/{}/{}", i.proto, i.published);
                let map = if fam == 4 {
                    DispatchMap::Svc4Ingress
                } else {
                    DispatchMap::Svc6Ingress
                };
                o.elements.entry(map).or_default().insert(
                    format!("{} . {}", i.proto, i.published),
                    MapElement {
                        key: vec![Part::Proto(i.proto), Part::Port(i.published)],
                        goto: chain.clone(),
                    },
                );
                let what = format!(
                    "service {ns}/{name} ingress port {}/{} (IPv{fam})",
                    i.published, i.proto
                );
                if s.affinity.is_none() {
                    add_pick_port(
                        &mut o,
                        PickPort {
                            chain,
                            what,
                            proto: i.proto,
                            vip: None,
                            port: i.published,
                            target: i.target,
                            backends: &backends,
                            v6: fam == 6,
                            vip_of: None,
                            masquerade: i.masquerade,
                        },
                    );
                    continue;
                }
                add_port_chain(
                    &mut o,
                    chain,
                    what,
                    i.proto,
                    i.target,
                    &backends,
                    s.affinity,
                    None,
                    i.masquerade,
                );
            }
        }
        // Every backend, for the hairpin sets (`svc_postrouting`).
        for v in &s.vips {
            for b in &v.backends {
                o.hairpin.entry(b.is_ipv6()).or_default().insert(*b);
            }
        }
    }
    if !services.is_empty() {
        add_pick_chains(&mut o);
        for v6 in [false, true] {
            o.hairpin.entry(v6).or_default();
        }
    }
    o
}

fn chain_decl(name: &str, comment: &str) -> SvcCmd {
    SvcCmd::AddChain {
        name: name.to_string(),
        kind: ChainKind::Regular {
            comment: comment.to_string(),
        },
    }
}

fn rules_of(cmds: &mut Vec<SvcCmd>, chain: &str, rules: &[SvcRuleLine]) {
    for r in rules {
        cmds.push(SvcCmd::AddRule {
            chain: chain.to_string(),
            rule: r.clone(),
        });
    }
}

fn elements(cmds: &mut Vec<SvcCmd>, add: bool, map: DispatchMap, elems: Vec<MapElement>) {
    if !elems.is_empty() {
        cmds.push(SvcCmd::MapElements { add, map, elems });
    }
}

fn pick_elements(cmds: &mut Vec<SvcCmd>, add: bool, map: PickMap, elems: Vec<PickElement>) {
    if !elems.is_empty() {
        cmds.push(SvcCmd::PickElements { add, map, elems });
    }
}

fn hairpin_elements(cmds: &mut Vec<SvcCmd>, add: bool, v6: bool, backends: Vec<IpAddr>) {
    if !backends.is_empty() {
        cmds.push(SvcCmd::HairpinElements { add, v6, backends });
    }
}

/// Every service object, restored whatever is there now: base chains, maps, sets and
/// service chains are flushed and refilled in one transaction (affinity sets are kept:
/// their entries are live state; conntrack keeps every connection's backend). Meant to
/// follow `ruleset::full` in the same batch, which makes the table.
/// Service chains and sets the state no longer has are not deleted here: text cannot
/// name what the kernel holds, so the kernel layer lists them and `full_over` deletes.
pub fn full(services: &[FwService]) -> Batch {
    let o = objects(services);
    let mut cmds = Vec::new();
    for (name, kind, _) in base_chains() {
        cmds.push(SvcCmd::AddChain {
            name: name.to_string(),
            kind,
        });
        cmds.push(SvcCmd::FlushChain(name.to_string()));
    }
    for (name, (comment, _)) in &o.chains {
        cmds.push(chain_decl(name, comment));
        cmds.push(SvcCmd::FlushChain(name.clone()));
    }
    for (name, set) in &o.sets {
        cmds.push(SvcCmd::AddSet {
            name: name.clone(),
            set: set.clone(),
        });
    }
    for (&v6, backends) in &o.hairpin {
        cmds.push(SvcCmd::AddHairpinSet { v6 });
        cmds.push(SvcCmd::FlushSet {
            name: hairpin_set(v6).to_string(),
            map: false,
        });
        hairpin_elements(&mut cmds, true, v6, backends.iter().copied().collect());
    }
    for (&map, elems) in &o.picks {
        cmds.push(SvcCmd::AddPickMap(map));
        cmds.push(SvcCmd::FlushSet {
            name: map.name(),
            map: true,
        });
        pick_elements(&mut cmds, true, map, elems.values().cloned().collect());
    }
    for map in DispatchMap::ALL {
        cmds.push(SvcCmd::AddMap(map));
        cmds.push(SvcCmd::FlushMap(map));
        elements(&mut cmds, true, map, o.elements[&map].values().cloned().collect());
    }
    for (name, _, rules) in base_chains() {
        rules_of(&mut cmds, name, &rules);
    }
    for (name, (_, rules)) in &o.chains {
        rules_of(&mut cmds, name, rules);
    }
    svc_batch(cmds)
}

/// `full`, then the deletion of the service chains and sets the kernel holds
/// (`chains`, `sets`: every name in netd's table, as listed) that `services` no longer
/// has: a service removed while netd was down leaves no chain behind. Names outside
/// the `svc/` prefix are not service objects and are never touched.
pub fn full_over(services: &[FwService], chains: &[String], sets: &[String]) -> Batch {
    let o = objects(services);
    let mut b = full(services);
    let gone: Vec<&String> = chains
        .iter()
        .filter(|c| c.starts_with("svc/") && !o.chains.contains_key(*c))
        .collect();
    // Flush every one before deleting any: a leftover port chain jumps to its backends.
    for c in &gone {
        b.cmds.push(Command::Svc(SvcCmd::FlushChain((*c).clone())));
    }
    for c in &gone {
        b.cmds.push(Command::Svc(SvcCmd::DeleteChain((*c).clone())));
    }
    for s in sets.iter().filter(|s| s.starts_with("svc/") && !o.has_set(s)) {
        b.cmds.push(Command::Svc(SvcCmd::DeleteSet(s.clone())));
    }
    b
}

/// The batch from `old` to `new` (empty when nothing changed), assuming the kernel holds
/// `old`. Only what differs is touched: a backend replaced in a service without
/// affinity is one element deleted and one added in its backend map (and the hairpin
/// set), whatever else exists; no rule changes, so the kernel revalidates nothing.
/// Order matters in one transaction: new chains and sets exist before anything refers
/// to them, references go (map elements deleted, chains refilled) before the chains
/// and sets they name are deleted.
///
/// Planning touches only the services that changed (found in one walk when both lists
/// hold the same services in the same order): their objects, and of the shared ones
/// (the backend maps the pick chains list, the hairpin sets) what the unchanged
/// services use. One backend change plans in the same time at 10 or at 10,000
/// services; the batch is the one `diff_all` makes from every service's objects.
pub fn diff(old: &[FwService], new: &[FwService]) -> Batch {
    let (mut co, mut cn, mut rest) = changed_services(old, new);
    if co.is_empty() && cn.is_empty() {
        return Batch::default();
    }
    // An unchanged service with a VIP or an ingress port of a changed one (the daemon
    // refuses such a pair; a store may still hold one) shares its dispatch and backend
    // map keys, where the later service in the list wins: plan it with the changed ones,
    // in list order, as `diff_all` would.
    let vips: BTreeSet<IpAddr> = co
        .iter()
        .chain(&cn)
        .flat_map(|s| s.vips.iter().map(|v| v.vip))
        .collect();
    let ports: BTreeSet<(Proto, u16)> = co
        .iter()
        .chain(&cn)
        .flat_map(|s| s.ingress.iter().map(|i| (i.proto, i.published)))
        .collect();
    let shares = |s: &FwService| {
        s.vips.iter().any(|v| vips.contains(&v.vip))
            || s.ingress.iter().any(|i| ports.contains(&(i.proto, i.published)))
    };
    if rest.iter().any(|s| shares(s)) {
        let key = |s: &FwService| (s.namespace.clone(), s.name.clone());
        let take: BTreeSet<(String, String)> = co
            .iter()
            .chain(&cn)
            .map(key)
            .chain(rest.iter().filter(|s| shares(s)).map(|s| key(s)))
            .collect();
        co = old.iter().filter(|s| take.contains(&key(s))).cloned().collect();
        cn = new.iter().filter(|s| take.contains(&key(s))).cloned().collect();
        rest.retain(|s| !take.contains(&key(s)));
    }
    let (mut was, mut now) = (objects_part(&co), objects_part(&cn));
    // Backend maps: while the changed services use the same ones, the set of maps (and
    // so the pick chains) stays; otherwise the unchanged services' maps are counted in.
    let first_or_last = old.is_empty() != new.is_empty();
    if first_or_last || !was.picks.keys().eq(now.picks.keys()) {
        let mut maps = BTreeSet::new();
        for s in &rest {
            pick_maps_of(s, &mut maps);
        }
        for m in maps {
            was.picks.entry(m).or_default();
            now.picks.entry(m).or_default();
        }
        if !old.is_empty() {
            add_pick_chains(&mut was);
        }
        if !new.is_empty() {
            add_pick_chains(&mut now);
        }
    }
    // Hairpin sets: a backend of a changed service that an unchanged one also has stays.
    let candidates: BTreeSet<IpAddr> = was
        .hairpin
        .values()
        .chain(now.hairpin.values())
        .flatten()
        .copied()
        .collect();
    if !candidates.is_empty() {
        let mut shared = BTreeSet::new();
        'scan: for s in &rest {
            if part(&s.namespace).is_none() || part(&s.name).is_none() {
                continue;
            }
            for v in &s.vips {
                for b in &v.backends {
                    if candidates.contains(b) && shared.insert(*b) && shared.len() == candidates.len() {
                        break 'scan;
                    }
                }
            }
        }
        for b in shared {
            was.hairpin.entry(b.is_ipv6()).or_default().insert(b);
            now.hairpin.entry(b.is_ipv6()).or_default().insert(b);
        }
    }
    for (o, any) in [(&mut was, !old.is_empty()), (&mut now, !new.is_empty())] {
        if any {
            for v6 in [false, true] {
                o.hairpin.entry(v6).or_default();
            }
        }
    }
    diff_objects(was, now, old.is_empty(), new.is_empty())
}

/// `diff` from every service's objects (the reference `diff` is tested against).
pub fn diff_all(old: &[FwService], new: &[FwService]) -> Batch {
    diff_objects(objects(old), objects(new), old.is_empty(), new.is_empty())
}

/// The services of `old` and of `new` that differ (by namespace and name), and those
/// that did not change: in one walk when both lists hold the same services in the same
/// order, as the daemon's do unless a service came or went. Also the eBPF plan's
/// (`lb::ebpf_plan`).
pub(crate) fn changed_services<'a>(
    old: &'a [FwService],
    new: &'a [FwService],
) -> (Vec<FwService>, Vec<FwService>, Vec<&'a FwService>) {
    fn key(s: &FwService) -> (&str, &str) {
        (s.namespace.as_str(), s.name.as_str())
    }
    let (mut co, mut cn, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    if old.len() == new.len() && old.iter().zip(new).all(|(a, b)| key(a) == key(b)) {
        for (a, b) in old.iter().zip(new) {
            if a == b {
                rest.push(b);
            } else {
                co.push(a.clone());
                cn.push(b.clone());
            }
        }
        return (co, cn, rest);
    }
    let old_by: std::collections::HashMap<_, &FwService> = old.iter().map(|s| (key(s), s)).collect();
    let new_by: std::collections::HashMap<_, &FwService> = new.iter().map(|s| (key(s), s)).collect();
    co.extend(old.iter().filter(|s| new_by.get(&key(s)) != Some(s)).cloned());
    for s in new {
        if old_by.get(&key(s)) == Some(&s) {
            rest.push(s);
        } else {
            cn.push(s.clone());
        }
    }
    (co, cn, rest)
}

/// `objects` without what every service shares (the pick chains, and the hairpin sets'
/// existence): the part of some services.
fn objects_part(services: &[FwService]) -> Objects {
    let mut o = objects(&[]);
    for s in services {
        let one = objects(std::slice::from_ref(s));
        o.chains.extend(one.chains);
        o.sets.extend(one.sets);
        for (m, e) in one.elements {
            o.elements.entry(m).or_default().extend(e);
        }
        for (m, e) in one.picks {
            o.picks.entry(m).or_default().extend(e);
        }
        for (v6, b) in one.hairpin {
            o.hairpin.entry(v6).or_default().extend(b);
        }
    }
    for c in [
        PickMap::chain(false, false),
        PickMap::chain(true, false),
        PickMap::chain(false, true),
        PickMap::chain(true, true),
    ] {
        o.chains.remove(c);
    }
    o.hairpin.retain(|_, b| !b.is_empty());
    o
}

/// The backend maps `objects` puts `s`'s ports in, without making its objects.
fn pick_maps_of(s: &FwService, out: &mut BTreeSet<PickMap>) {
    if part(&s.namespace).is_none() || part(&s.name).is_none() || s.affinity.is_some() {
        return;
    }
    let distinct = |v6: bool, it: &mut dyn Iterator<Item = &IpAddr>| {
        let mut seen: Vec<IpAddr> = Vec::new();
        for b in it {
            if b.is_ipv6() == v6 && !seen.contains(b) {
                seen.push(*b);
            }
        }
        seen.len() as u32
    };
    for v in &s.vips {
        if part(&v.network).is_none() {
            continue;
        }
        let n = distinct(v.vip.is_ipv6(), &mut v.backends.iter());
        if n == 0 {
            continue;
        }
        for &(_, _, proto) in &s.ports {
            out.insert(PickMap {
                v6: v.vip.is_ipv6(),
                ingress: false,
                proto,
                n,
            });
        }
    }
    for v6 in [false, true] {
        if !s.vips.iter().any(|v| v.vip.is_ipv6() == v6) {
            continue;
        }
        let n = distinct(v6, &mut s.vips.iter().flat_map(|v| v.backends.iter()));
        if n == 0 {
            continue;
        }
        for i in &s.ingress {
            out.insert(PickMap {
                v6,
                ingress: true,
                proto: i.proto,
                n,
            });
        }
    }
}

/// The batch from the objects `was` to `now` (see `diff`); `old_empty`/`new_empty`:
/// whether no service existed before/after (the base chains' teardown).
fn diff_objects(was: Objects, now: Objects, old_empty: bool, new_empty: bool) -> Batch {
    let mut cmds = Vec::new();
    for (name, set) in &now.sets {
        if !was.sets.contains_key(name) {
            cmds.push(SvcCmd::AddSet {
                name: name.clone(),
                set: set.clone(),
            });
        }
    }
    for &v6 in now.hairpin.keys() {
        if !was.hairpin.contains_key(&v6) {
            cmds.push(SvcCmd::AddHairpinSet { v6 });
        }
    }
    for &map in now.picks.keys() {
        if !was.picks.contains_key(&map) {
            cmds.push(SvcCmd::AddPickMap(map));
        }
    }
    for (name, (comment, _)) in &now.chains {
        if !was.chains.contains_key(name) {
            cmds.push(chain_decl(name, comment));
        }
    }
    for (name, (_, rules)) in &now.chains {
        match was.chains.get(name) {
            Some((_, r)) if r == rules => {}
            Some(_) => {
                cmds.push(SvcCmd::FlushChain(name.clone()));
                rules_of(&mut cmds, name, rules);
            }
            None => rules_of(&mut cmds, name, rules),
        }
    }
    for map in DispatchMap::ALL {
        let (a, b) = (&was.elements[&map], &now.elements[&map]);
        // A key whose verdict changed is deleted and added again (EEXIST otherwise).
        let gone = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(_, v)| v.clone());
        elements(&mut cmds, false, map, gone.collect());
        let added = b.iter().filter(|(k, v)| a.get(*k) != Some(*v));
        elements(&mut cmds, true, map, added.map(|(_, v)| v.clone()).collect());
    }
    let empty = BTreeMap::new();
    for (&map, b) in &now.picks {
        let a = was.picks.get(&map).unwrap_or(&empty);
        // (a map that goes takes its elements with it: nothing to delete there)
        let gone = a.iter().filter(|(k, v)| b.get(*k) != Some(*v));
        pick_elements(&mut cmds, false, map, gone.map(|(_, v)| v.clone()).collect());
        let added = b.iter().filter(|(k, v)| a.get(*k) != Some(*v));
        pick_elements(&mut cmds, true, map, added.map(|(_, v)| v.clone()).collect());
    }
    let none = BTreeSet::new();
    for (&v6, b) in &now.hairpin {
        let a = was.hairpin.get(&v6).unwrap_or(&none);
        hairpin_elements(&mut cmds, false, v6, a.difference(b).copied().collect());
        hairpin_elements(&mut cmds, true, v6, b.difference(a).copied().collect());
    }
    let gone: Vec<&String> = was
        .chains
        .keys()
        .filter(|c| !now.chains.contains_key(*c))
        .collect();
    // Flush every chain before deleting any: a gone port chain jumps to gone backends.
    for c in &gone {
        cmds.push(SvcCmd::FlushChain((*c).clone()));
    }
    for c in &gone {
        cmds.push(SvcCmd::DeleteChain((*c).clone()));
    }
    // The last service gone: the base chains and maps go too, so `nft list ruleset`
    // after the last `service rm` is what it was before the first `service create`.
    // (Flushed before the sets go: `svc_postrouting` looks the hairpin sets up.)
    let last = new_empty && !old_empty;
    if last {
        for (name, _, _) in base_chains() {
            cmds.push(SvcCmd::FlushChain(name.to_string()));
        }
    }
    for s in was.sets.keys().filter(|s| !now.sets.contains_key(*s)) {
        cmds.push(SvcCmd::DeleteSet(s.clone()));
    }
    for m in was.picks.keys().filter(|m| !now.picks.contains_key(*m)) {
        cmds.push(SvcCmd::DeleteSet(m.name()));
    }
    for v6 in was.hairpin.keys().filter(|v6| !now.hairpin.contains_key(*v6)) {
        cmds.push(SvcCmd::DeleteSet(hairpin_set(*v6).to_string()));
    }
    if last {
        base_teardown(&mut cmds);
    }
    svc_batch(cmds)
}

/// Deletes the base chains (flushed before), then the dispatch maps (nothing
/// references them once the chains are gone). Follows the deletion of every service
/// chain and set in the same batch.
fn base_teardown(cmds: &mut Vec<SvcCmd>) {
    for (name, _, _) in base_chains() {
        cmds.push(SvcCmd::DeleteChain(name.to_string()));
    }
    for map in DispatchMap::ALL {
        cmds.push(SvcCmd::DeleteSet(map.name().to_string()));
    }
}

/// Every service object the kernel holds (`chains`, `sets`: every name in netd's
/// table, as listed) deleted: what `sync_full` sends when no service is left but the
/// kernel still has service objects (the last one removed while netd was down).
pub fn teardown(chains: &[String], sets: &[String]) -> Batch {
    let mut cmds = Vec::new();
    let svc: Vec<&String> = chains.iter().filter(|c| c.starts_with("svc/")).collect();
    for c in &svc {
        cmds.push(SvcCmd::FlushChain((*c).clone()));
    }
    let bases: Vec<&'static str> = base_chains()
        .into_iter()
        .map(|(n, _, _)| n)
        .filter(|n| chains.iter().any(|c| c == n))
        .collect();
    for n in &bases {
        cmds.push(SvcCmd::FlushChain(n.to_string()));
    }
    for c in &svc {
        cmds.push(SvcCmd::DeleteChain((*c).clone()));
    }
    for n in &bases {
        cmds.push(SvcCmd::DeleteChain(n.to_string()));
    }
    for s in sets.iter().filter(|s| s.starts_with("svc/")) {
        cmds.push(SvcCmd::DeleteSet(s.clone()));
    }
    for map in DispatchMap::ALL {
        if sets.iter().any(|s| s == map.name()) {
            cmds.push(SvcCmd::DeleteSet(map.name().to_string()));
        }
    }
    svc_batch(cmds)
}

/// Every command typed: the kernel layer sends such a batch straight over nfnetlink
/// (`kernel::nft_svc`), and its text (`Display`) is what libnftables would get.
fn svc_batch(cmds: Vec<SvcCmd>) -> Batch {
    Batch {
        cmds: cmds.into_iter().map(Command::Svc).collect(),
    }
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
