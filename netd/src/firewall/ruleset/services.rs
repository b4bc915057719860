//! Service VIPs and ingress ports in `table inet netd`, as nft batches: `full` (create or
//! restore every service object) and `diff` (the batch from one state to the next, whose
//! size follows what changed, not how many services exist). Kept apart from the rest of
//! the ruleset so a host without services gets byte for byte the batches it got before.
//!
//! Layout (kube-proxy's nftables mode, adapted to netd's names):
//! - base chains `svc_prerouting` and `svc_output` (nat, just before `prerouting` and
//!   `output`) look every packet up once in `svc4_dispatch`/`svc6_dispatch`, verdict
//!   maps keyed `vip . l4proto . dport`, and, for local addresses, in
//!   `svc4_ingress`/`svc6_ingress` keyed `l4proto . dport` (ingress-mode published
//!   ports). Each element is `goto` the chain of one service port: one lookup, whatever
//!   the number of services.
//! - a chain per service port per network, `svc/<ns>/<name>/<network>/<proto>/<port>`
//!   (`…/<network>/ip6/<proto>/<port>` for an IPv6 VIP; ingress:
//!   `svc/<ns>/<name>/ingress<4|6>/<proto>/<published>`), picks a backend
//!   with `numgen random mod N vmap`, or rejects at once when there is none (TCP reset,
//!   ICMP port unreachable), as kube-proxy does, instead of letting the SYN time out.
//! - a chain per backend of that port, `<port chain>/<ip>`, marks hairpin traffic and
//!   DNATs. Conntrack keeps the choice for the rest of the connection.
//! - session affinity (client IP): per backend a set `<backend chain>/aff<secs>` of
//!   client addresses with `flags dynamic,timeout`; the port chain first sends a client
//!   found in a backend's set to that backend, the backend chain refreshes the entry.
//!   That is kube-proxy's `recent`-style affinity with a real idle timeout; `jhash ip
//!   saddr` would have no timeout and would move every client when N changes. The
//!   timeout is in the set's name because a set's timeout cannot change in place.
//! - hairpin: a backend reaching its own VIP would get a reply from itself to itself,
//!   bypassing the NAT; its backend chain marks such packets (`saddr == backend`) with
//!   `HAIRPIN_MARK` and `svc_postrouting` masquerades marked packets. Other clients keep
//!   their source address (nothing else in these chains masquerades).
//!
//! Names are nft identifiers (letters, digits, `/ . - _`): namespaces and service names
//! are DNS labels and network names Docker names, so they fit; anything else is left
//! out (fails closed, as the rest of the ruleset does).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::firewall::batch::{Batch, Command, Part};
use crate::firewall::svc_cmd::{
    AffinitySet, ChainKind, DispatchMap, Hook, MapElement, Priority, SvcCmd, SvcRule, SvcRuleLine,
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
            vec![SvcRuleLine::commented(
                SvcRule::HairpinMasquerade,
                "service hairpin: a backend reaching itself through its VIP",
            )],
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

/// Adds the chain of one service port (reached from `what`) and its backend chains.
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
                add_port_chain(
                    &mut o, chain, what, proto, target, &backends, s.affinity, from, false,
                );
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

/// Every service object, restored whatever is there now: base chains, maps and service
/// chains are flushed and refilled (affinity sets are kept: their entries are live
/// state). Meant to follow `ruleset::full` in the same batch, which makes the table.
/// Service chains the state no longer has are not deleted here: text cannot name what
/// the kernel holds, so the kernel layer lists `svc/` chains and deletes the rest.
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
    for s in sets
        .iter()
        .filter(|s| s.starts_with("svc/") && !o.sets.contains_key(*s))
    {
        b.cmds.push(Command::Svc(SvcCmd::DeleteSet(s.clone())));
    }
    b
}

/// The batch from `old` to `new` (empty when nothing changed), assuming the kernel holds
/// `old`. Only chains whose rules differ are touched: adding a backend to one service
/// port adds that backend's chain and refills that port's chain, whatever else exists.
/// Order matters in one transaction: new chains and sets exist before anything jumps to
/// them, references go (map elements deleted, port chains refilled) before the chains
/// and sets they name are deleted.
pub fn diff(old: &[FwService], new: &[FwService]) -> Batch {
    let (was, now) = (objects(old), objects(new));
    let mut cmds = Vec::new();
    for (name, set) in &now.sets {
        if !was.sets.contains_key(name) {
            cmds.push(SvcCmd::AddSet {
                name: name.clone(),
                set: set.clone(),
            });
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
    for s in was.sets.keys().filter(|s| !now.sets.contains_key(*s)) {
        cmds.push(SvcCmd::DeleteSet(s.clone()));
    }
    // The last service gone: the base chains and maps go too, so `nft list ruleset`
    // after the last `service rm` is what it was before the first `service create`.
    if new.is_empty() && !old.is_empty() {
        base_teardown(&mut cmds);
    }
    svc_batch(cmds)
}

/// Flushes and deletes the base chains, then deletes the dispatch maps (nothing
/// references them once the chains are gone). Follows the deletion of every service
/// chain in the same batch.
fn base_teardown(cmds: &mut Vec<SvcCmd>) {
    for (name, _, _) in base_chains() {
        cmds.push(SvcCmd::FlushChain(name.to_string()));
    }
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
