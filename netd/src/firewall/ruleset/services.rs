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

use crate::firewall::batch::{Batch, Command};
use crate::firewall::TABLE;
use crate::model::{Backend, EndpointMode, Proto, PublishMode, Service, ServiceKind};

/// Packet mark bit for "masquerade this: a backend reaching itself through its VIP".
/// kube-proxy uses 0x4000; another bit lets both run on one host.
pub const HAIRPIN_MARK: u32 = 0x2000;

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
                })
                .collect(),
        })
    }
}

/// Every service object, as data: chains with their rules, affinity sets, map elements.
/// `full` prints it; `diff` compares two of them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Objects {
    /// chain -> (comment, rules).
    chains: BTreeMap<String, (String, Vec<String>)>,
    /// set -> declaration.
    sets: BTreeMap<String, String>,
    /// map -> key -> verdict.
    elements: BTreeMap<&'static str, BTreeMap<String, String>>,
}

const MAPS: [(&str, &str); 4] = [
    (
        "svc4_dispatch",
        "type ipv4_addr . inet_proto . inet_service : verdict; comment \"service VIPs (IPv4)\";",
    ),
    (
        "svc6_dispatch",
        "type ipv6_addr . inet_proto . inet_service : verdict; comment \"service VIPs (IPv6)\";",
    ),
    (
        "svc4_ingress",
        "type inet_proto . inet_service : verdict; comment \"service ports published in ingress mode (IPv4)\";",
    ),
    (
        "svc6_ingress",
        "type inet_proto . inet_service : verdict; comment \"service ports published in ingress mode (IPv6)\";",
    ),
];

/// The base chains: fixed rules, written by `full` only.
fn base_chains() -> [(&'static str, &'static str, Vec<String>); 3] {
    let dispatch = |from: &str| {
        vec![
            format!("ip daddr . meta l4proto . th dport vmap @svc4_dispatch comment \"service VIPs{from}\""),
            format!("ip6 daddr . meta l4proto . th dport vmap @svc6_dispatch comment \"service VIPs{from}\""),
            format!(
                "fib daddr type local meta nfproto ipv4 meta l4proto . th dport vmap @svc4_ingress \
                 comment \"service ingress ports{from}\""
            ),
            // As for published ports: IPv6 has no route_localnet, ::1 cannot be DNATed out.
            format!(
                "fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @svc6_ingress \
                 comment \"service ingress ports{from}\""
            ),
        ]
    };
    [
        // Before netd's own DNAT (-100): a VIP is never a published port's address.
        (
            "svc_prerouting",
            "type nat hook prerouting priority -101; policy accept;",
            dispatch(""),
        ),
        (
            "svc_output",
            "type nat hook output priority -101; policy accept;",
            dispatch(", from the host itself"),
        ),
        (
            "svc_postrouting",
            "type nat hook postrouting priority srcnat; policy accept;",
            vec![format!(
                "meta mark & {HAIRPIN_MARK:#010x} == {HAIRPIN_MARK:#010x} masquerade \
                 comment \"service hairpin: a backend reaching itself through its VIP\""
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

fn family(ip: IpAddr) -> (&'static str, u8) {
    if ip.is_ipv4() {
        ("ip", 4)
    } else {
        ("ip6", 6)
    }
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
) {
    let mut rules = Vec::new();
    if let Some(net) = vip_of {
        // The host's own packets (output hook: no input interface, which newer
        // kernels read as "") come from a local address and pass.
        if let Some(br) = ifname_lit(net) {
            rules.push(format!(
                "iifname != {br} fib saddr type != local drop comment \"a VIP answers its own network only\""
            ));
        }
        rules.push(format!(
            "meta mark set meta mark | {VIP_MARK:#010x} comment \"client keeps its address\""
        ));
    }
    let mut picks = Vec::new();
    for (i, &be) in backends.iter().enumerate() {
        let (fam, _) = family(be);
        let be_chain = format!("{chain}/{}", ip_part(be));
        let mut be_rules = vec![format!(
            "{fam} saddr {be} meta mark set meta mark | {HAIRPIN_MARK:#010x} comment \"hairpin\""
        )];
        if let Some(secs) = affinity {
            let set = format!("{be_chain}/aff{secs}");
            let key = if fam == "ip" { "ipv4_addr" } else { "ipv6_addr" };
            o.sets.insert(
                set.clone(),
                format!("type {key}; flags dynamic,timeout; timeout {secs}s; comment \"clients of {be}\";"),
            );
            rules.push(format!("{fam} saddr @{set} goto {be_chain} comment \"affinity\""));
            be_rules.push(format!("update @{set} {{ {fam} saddr }}"));
        }
        let to = if be.is_ipv4() {
            format!("{be}:{target}")
        } else {
            format!("[{be}]:{target}")
        };
        be_rules.push(format!("meta l4proto {proto} dnat {fam} to {to}"));
        o.chains
            .insert(be_chain.clone(), (format!("{what}: backend {be}"), be_rules));
        picks.push(format!("{i} : goto {be_chain}"));
    }
    if picks.is_empty() {
        rules.push(match proto {
            Proto::Tcp => "meta l4proto tcp reject with tcp reset comment \"no backend\"".into(),
            Proto::Udp => "reject with icmpx port-unreachable comment \"no backend\"".into(),
        });
    } else {
        rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            picks.len(),
            picks.join(", ")
        ));
    }
    o.chains.insert(chain, (what, rules));
}

fn objects(services: &[FwService]) -> Objects {
    let mut o = Objects::default();
    for m in MAPS {
        o.elements.insert(m.0, BTreeMap::new());
    }
    for s in services {
        let (Some(ns), Some(name)) = (part(&s.namespace), part(&s.name)) else {
            continue;
        };
        for v in &s.vips {
            let Some(net) = part(&v.network) else { continue };
            let (_, fam) = family(v.vip);
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
                    "svc4_dispatch"
                } else {
                    "svc6_dispatch"
                };
                o.elements
                    .entry(map)
                    .or_default()
                    .insert(format!("{} . {proto} . {port}", v.vip), format!("goto {chain}"));
                // No VIP in the comment: a chain's comment cannot change in place.
                let what = format!("service {ns}/{name} {port}/{proto} on net {net}");
                let from = Some(v.bridge.as_str());
                add_port_chain(&mut o, chain, what, proto, target, &backends, s.affinity, from);
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
                let map = if fam == 4 { "svc4_ingress" } else { "svc6_ingress" };
                o.elements
                    .entry(map)
                    .or_default()
                    .insert(format!("{} . {}", i.proto, i.published), format!("goto {chain}"));
                let what = format!(
                    "service {ns}/{name} ingress port {}/{} (IPv{fam})",
                    i.published, i.proto
                );
                add_port_chain(
                    &mut o, chain, what, i.proto, i.target, &backends, s.affinity, None,
                );
            }
        }
    }
    o
}

fn chain_decl(name: &str, comment: &str) -> String {
    format!("add chain inet {TABLE} {name} {{ comment \"{comment}\"; }}")
}

fn rules_of(cmds: &mut Vec<String>, chain: &str, rules: &[String]) {
    for r in rules {
        cmds.push(format!("add rule inet {TABLE} {chain} {r}"));
    }
}

fn elements(cmds: &mut Vec<String>, verb: &str, map: &str, elems: Vec<String>) {
    if !elems.is_empty() {
        cmds.push(format!(
            "{verb} element inet {TABLE} {map} {{ {} }}",
            elems.join(", ")
        ));
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
    for (name, decl, _) in base_chains() {
        cmds.push(format!("add chain inet {TABLE} {name} {{ {decl} }}"));
        cmds.push(format!("flush chain inet {TABLE} {name}"));
    }
    for (name, (comment, _)) in &o.chains {
        cmds.push(chain_decl(name, comment));
        cmds.push(format!("flush chain inet {TABLE} {name}"));
    }
    for (name, decl) in &o.sets {
        cmds.push(format!("add set inet {TABLE} {name} {{ {decl} }}"));
    }
    for (map, decl) in MAPS {
        cmds.push(format!("add map inet {TABLE} {map} {{ {decl} }}"));
        cmds.push(format!("flush map inet {TABLE} {map}"));
        let elems = o.elements[map]
            .iter()
            .map(|(k, v)| format!("{k} : {v}"))
            .collect();
        elements(&mut cmds, "add", map, elems);
    }
    for (name, _, rules) in base_chains() {
        rules_of(&mut cmds, name, &rules);
    }
    for (name, (_, rules)) in &o.chains {
        rules_of(&mut cmds, name, rules);
    }
    text_batch(cmds)
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
        b.push_text(format!("flush chain inet {TABLE} {c}"));
    }
    for c in &gone {
        b.push_text(format!("delete chain inet {TABLE} {c}"));
    }
    for s in sets
        .iter()
        .filter(|s| s.starts_with("svc/") && !o.sets.contains_key(*s))
    {
        b.push_text(format!("delete set inet {TABLE} {s}"));
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
    for (name, decl) in &now.sets {
        if !was.sets.contains_key(name) {
            cmds.push(format!("add set inet {TABLE} {name} {{ {decl} }}"));
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
                cmds.push(format!("flush chain inet {TABLE} {name}"));
                rules_of(&mut cmds, name, rules);
            }
            None => rules_of(&mut cmds, name, rules),
        }
    }
    for (map, _) in MAPS {
        let (a, b) = (&was.elements[map], &now.elements[map]);
        // A key whose verdict changed is deleted and added again (EEXIST otherwise).
        let gone = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, _)| k.clone());
        elements(&mut cmds, "delete", map, gone.collect());
        let added = b.iter().filter(|(k, v)| a.get(*k) != Some(*v));
        elements(
            &mut cmds,
            "add",
            map,
            added.map(|(k, v)| format!("{k} : {v}")).collect(),
        );
    }
    let gone: Vec<&String> = was
        .chains
        .keys()
        .filter(|c| !now.chains.contains_key(*c))
        .collect();
    // Flush every chain before deleting any: a gone port chain jumps to gone backends.
    for c in &gone {
        cmds.push(format!("flush chain inet {TABLE} {c}"));
    }
    for c in &gone {
        cmds.push(format!("delete chain inet {TABLE} {c}"));
    }
    for s in was.sets.keys().filter(|s| !now.sets.contains_key(*s)) {
        cmds.push(format!("delete set inet {TABLE} {s}"));
    }
    text_batch(cmds)
}

/// Every command as nft text: the element changes here are verdicts (`goto <chain>`),
/// which the raw element path does not encode, and they always travel with rule changes.
fn text_batch(cmds: Vec<String>) -> Batch {
    Batch {
        cmds: cmds.into_iter().map(Command::Text).collect(),
    }
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
