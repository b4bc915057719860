//! The service objects of `table inet netd` as typed commands (`SvcCmd`, `SvcRule`):
//! `ruleset::services` builds them, `Display` prints them as nft text (what libnftables
//! gets, and what the tests read), and `kernel::nft_svc` encodes the same values as
//! nfnetlink messages, so service batches reach the kernel without libnftables.
//!
//! Why typed: libnftables (1.0.6) dumps every chain of the table into its cache before
//! any `add rule` or `delete chain`, so with text one backend change costs a transfer
//! that grows with the number of services (docs/services.md). The kernel needs none of
//! it: every object here is named, so each command is one message.
//!
//! How to add a rule shape (e.g. a new match in a service chain):
//! 1. add a variant to `SvcRule` with the data it needs (addresses, names: no text);
//! 2. print it in `SvcRule::fmt` exactly as nft would list it back;
//! 3. encode it in `kernel::nft_svc::rule_exprs`: run
//!    `nft --debug=netlink -c -f FILE` on a one-rule file and write the same expressions
//!    (registers, byte order, lengths) with the `Exprs` helpers there;
//! 4. add it to the fixtures of `integration/tests/services_nft_wire.rs`, which applies a
//!    batch both ways in two namespaces and compares `nft list table inet netd`.

use std::fmt;
use std::net::IpAddr;

use super::batch::{Part, Parts};
use super::TABLE;
use crate::model::Proto;

/// Packet mark bit for "masquerade this: a backend reaching itself through its VIP".
/// kube-proxy uses 0x4000; another bit lets both run on one host.
pub const HAIRPIN_MARK: u32 = 0x2000;

/// The four dispatch maps of the base chains, each `key : verdict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DispatchMap {
    /// `ipv4_addr . inet_proto . inet_service`: IPv4 VIPs.
    Svc4Dispatch,
    /// `ipv6_addr . inet_proto . inet_service`: IPv6 VIPs.
    Svc6Dispatch,
    /// `inet_proto . inet_service`: ingress ports on local IPv4 addresses.
    Svc4Ingress,
    /// `inet_proto . inet_service`: ingress ports on local IPv6 addresses.
    Svc6Ingress,
}

impl DispatchMap {
    pub const ALL: [DispatchMap; 4] = [
        DispatchMap::Svc4Dispatch,
        DispatchMap::Svc6Dispatch,
        DispatchMap::Svc4Ingress,
        DispatchMap::Svc6Ingress,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DispatchMap::Svc4Dispatch => "svc4_dispatch",
            DispatchMap::Svc6Dispatch => "svc6_dispatch",
            DispatchMap::Svc4Ingress => "svc4_ingress",
            DispatchMap::Svc6Ingress => "svc6_ingress",
        }
    }

    /// Whether the key starts with a VIP (else it is `proto . port` only).
    pub fn has_vip(self) -> bool {
        matches!(self, DispatchMap::Svc4Dispatch | DispatchMap::Svc6Dispatch)
    }

    pub fn v6(self) -> bool {
        matches!(self, DispatchMap::Svc6Dispatch | DispatchMap::Svc6Ingress)
    }

    pub fn comment(self) -> &'static str {
        match self {
            DispatchMap::Svc4Dispatch => "service VIPs (IPv4)",
            DispatchMap::Svc6Dispatch => "service VIPs (IPv6)",
            DispatchMap::Svc4Ingress => "service ports published in ingress mode (IPv4)",
            DispatchMap::Svc6Ingress => "service ports published in ingress mode (IPv6)",
        }
    }

    fn key_type(self) -> &'static str {
        match self {
            DispatchMap::Svc4Dispatch => "ipv4_addr . inet_proto . inet_service",
            DispatchMap::Svc6Dispatch => "ipv6_addr . inet_proto . inet_service",
            _ => "inet_proto . inet_service",
        }
    }
}

impl fmt::Display for DispatchMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend map: for the service ports of one family, kind (VIP or ingress port),
/// protocol and backend count N, `key . slot` -> `backend . target port`, where the key
/// is `vip . port` (VIP) or `port` (ingress) and the slot `numgen random mod N`. One rule
/// of the pick chain (`PickMap::chain`) looks every such port up at once, so a backend
/// change is an element change: no rule, no chain, nothing for the kernel to revalidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PickMap {
    pub v6: bool,
    pub ingress: bool,
    pub proto: Proto,
    /// Backends of each port in this map (>= 1).
    pub n: u32,
}

impl PickMap {
    /// `svc/pick4/tcp/n3`, `svc/ingress6/udp/n2`.
    pub fn name(&self) -> String {
        format!(
            "{}/{}/n{}",
            Self::chain(self.v6, self.ingress),
            self.proto,
            self.n
        )
    }

    /// The pick chain of a family and kind: `svc/pick4`, `svc/pick6`, `svc/ingress4`,
    /// `svc/ingress6`.
    pub fn chain(v6: bool, ingress: bool) -> &'static str {
        match (ingress, v6) {
            (false, false) => "svc/pick4",
            (false, true) => "svc/pick6",
            (true, false) => "svc/ingress4",
            (true, true) => "svc/ingress6",
        }
    }

    /// The key (or data) expression as nft's `typeof` and the rule read it: the
    /// protocol's own `dport`, which brings the `meta l4proto` match along (with
    /// `th dport` nft 1.0.6 cannot add a rule to a map it reads back from the kernel).
    fn key_text(&self) -> String {
        let p = self.proto;
        if self.ingress {
            format!("{p} dport . numgen random mod {}", self.n)
        } else {
            format!(
                "{} daddr . {p} dport . numgen random mod {}",
                fam(self.v6),
                self.n
            )
        }
    }
}

/// One element of a backend map: slot `slot` of the port `vip . port` (VIP, or `port`
/// alone for an ingress port) goes to `to . to_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickElement {
    pub vip: Option<IpAddr>,
    pub port: u16,
    pub slot: u32,
    pub to: IpAddr,
    pub to_port: u16,
}

impl PickElement {
    fn key(&self) -> String {
        match self.vip {
            Some(v) => format!("{v} . {} . {}", self.port, self.slot),
            None => format!("{} . {}", self.port, self.slot),
        }
    }
}

/// A base chain's hook (all `type nat`, `policy accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Output,
    Postrouting,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// A base chain's priority: a number, or `srcnat` (100), printed as nft takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Num(i32),
    Srcnat,
}

impl Priority {
    pub fn value(self) -> i32 {
        match self {
            Priority::Num(n) => n,
            Priority::Srcnat => 100,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Priority::Num(n) => write!(f, "{n}"),
            Priority::Srcnat => f.write_str("srcnat"),
        }
    }
}

/// What a chain is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainKind {
    /// `type nat hook H priority P; policy accept;`
    Base { hook: Hook, priority: Priority },
    /// A regular chain with a comment.
    Regular { comment: String },
}

/// The rule shapes of the service chains. Each prints as nft text (without table, chain
/// or comment) and is encoded by `kernel::nft_svc` as the expressions nft makes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SvcRule {
    /// `ip saddr B meta mark set meta mark | HAIRPIN_MARK`: a backend reaching its VIP.
    HairpinMark { backend: IpAddr },
    /// `ip saddr @SET goto CHAIN`: a client of a backend's affinity set goes back to it.
    AffinityGoto { v6: bool, set: String, chain: String },
    /// `update @SET { ip saddr }`: refreshes the client's affinity entry.
    AffinityUpdate { v6: bool, set: String },
    /// `meta l4proto P dnat ip to B:PORT`.
    Dnat { proto: Proto, to: IpAddr, port: u16 },
    /// `numgen random mod N vmap { 0 : goto C0, ... }` over the chains (never empty).
    Pick { chains: Vec<String> },
    /// `meta l4proto tcp reject with tcp reset`.
    RejectTcpReset,
    /// `reject with icmpx port-unreachable`.
    RejectPortUnreachable,
    /// `ip daddr . meta l4proto . th dport vmap @svc4_dispatch` (ip6 for v6).
    Dispatch { v6: bool },
    /// `fib daddr type local meta nfproto ipv4 meta l4proto . th dport vmap
    /// @svc4_ingress`; for v6 `ip6 daddr != ::1` in place of the nfproto match (IPv6
    /// has no route_localnet: ::1 cannot be DNATed out).
    IngressDispatch { v6: bool },
    /// `meta mark & HAIRPIN_MARK == HAIRPIN_MARK masquerade`.
    HairpinMasquerade,
    /// `iifname != "BRIDGE" fib saddr type != local drop`: a VIP answers its own
    /// network (and the host) only. `bridge` is a valid interface name.
    OwnNetworkOnly { bridge: String },
    /// `meta mark set meta mark | MARK`.
    MarkSet { mark: u32 },
    /// `dnat ip to ip daddr . tcp dport . numgen random mod N map @MAP` (`ip6`; ingress:
    /// `dnat ip to tcp dport . numgen ...`): the backend of a service port, in one lookup.
    PickDnat { map: PickMap },
    /// `goto CHAIN`.
    Goto { chain: String },
    /// `ip saddr . ip daddr @svc/hairpin4 masquerade`: a backend DNATed to itself.
    HairpinSetMasquerade { v6: bool },
}

fn fam(v6: bool) -> &'static str {
    if v6 {
        "ip6"
    } else {
        "ip"
    }
}

impl fmt::Display for SvcRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SvcRule::HairpinMark { backend } => write!(
                f,
                "{} saddr {backend} meta mark set meta mark | {HAIRPIN_MARK:#010x}",
                fam(backend.is_ipv6())
            ),
            SvcRule::AffinityGoto { v6, set, chain } => {
                write!(f, "{} saddr @{set} goto {chain}", fam(*v6))
            }
            SvcRule::AffinityUpdate { v6, set } => write!(f, "update @{set} {{ {} saddr }}", fam(*v6)),
            SvcRule::Dnat { proto, to, port } => match to {
                IpAddr::V4(a) => write!(f, "meta l4proto {proto} dnat ip to {a}:{port}"),
                IpAddr::V6(a) => write!(f, "meta l4proto {proto} dnat ip6 to [{a}]:{port}"),
            },
            SvcRule::Pick { chains } => {
                write!(f, "numgen random mod {} vmap {{ ", chains.len())?;
                for (i, c) in chains.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{i} : goto {c}")?;
                }
                f.write_str(" }")
            }
            SvcRule::RejectTcpReset => f.write_str("meta l4proto tcp reject with tcp reset"),
            SvcRule::RejectPortUnreachable => f.write_str("reject with icmpx port-unreachable"),
            SvcRule::Dispatch { v6 } => {
                let map = if *v6 {
                    DispatchMap::Svc6Dispatch
                } else {
                    DispatchMap::Svc4Dispatch
                };
                write!(f, "{} daddr . meta l4proto . th dport vmap @{map}", fam(*v6))
            }
            SvcRule::IngressDispatch { v6: false } => write!(
                f,
                "fib daddr type local meta nfproto ipv4 meta l4proto . th dport vmap @{}",
                DispatchMap::Svc4Ingress
            ),
            SvcRule::IngressDispatch { v6: true } => write!(
                f,
                "fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @{}",
                DispatchMap::Svc6Ingress
            ),
            SvcRule::OwnNetworkOnly { bridge } => {
                write!(f, "iifname != \"{bridge}\" fib saddr type != local drop")
            }
            SvcRule::MarkSet { mark } => write!(f, "meta mark set meta mark | {mark:#010x}"),
            SvcRule::PickDnat { map } => write!(
                f,
                "dnat {} to {} map @{}",
                fam(map.v6),
                map.key_text(),
                map.name()
            ),
            SvcRule::Goto { chain } => write!(f, "goto {chain}"),
            SvcRule::HairpinSetMasquerade { v6 } => {
                let a = fam(*v6);
                write!(f, "{a} saddr . {a} daddr @{} masquerade", hairpin_set(*v6))
            }
            SvcRule::HairpinMasquerade => write!(
                f,
                "meta mark & {HAIRPIN_MARK:#010x} == {HAIRPIN_MARK:#010x} masquerade"
            ),
        }
    }
}

/// A rule with its optional comment, as it sits in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcRuleLine {
    pub rule: SvcRule,
    pub comment: Option<String>,
}

impl SvcRuleLine {
    pub fn new(rule: SvcRule) -> Self {
        SvcRuleLine { rule, comment: None }
    }
    pub fn commented(rule: SvcRule, comment: impl Into<String>) -> Self {
        SvcRuleLine {
            rule,
            comment: Some(comment.into()),
        }
    }
}

impl fmt::Display for SvcRuleLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rule)?;
        if let Some(c) = &self.comment {
            write!(f, " comment \"{c}\"")?;
        }
        Ok(())
    }
}

/// A client-IP affinity set: `type ipv4_addr; flags dynamic,timeout; timeout Ns; comment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinitySet {
    pub v6: bool,
    pub timeout_secs: u32,
    pub comment: String,
}

impl fmt::Display for AffinitySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.v6 { "ipv6_addr" } else { "ipv4_addr" };
        write!(
            f,
            "type {key}; flags dynamic,timeout; timeout {}s; comment \"{}\";",
            self.timeout_secs, self.comment
        )
    }
}

/// One element of a dispatch map: key parts (`vip . proto . port` or `proto . port`) and
/// the chain it jumps to (`goto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapElement {
    pub key: Vec<Part>,
    pub goto: String,
}

/// One command on the service objects of `table inet netd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SvcCmd {
    AddChain {
        name: String,
        kind: ChainKind,
    },
    FlushChain(String),
    DeleteChain(String),
    AddRule {
        chain: String,
        rule: SvcRuleLine,
    },
    AddSet {
        name: String,
        set: AffinitySet,
    },
    DeleteSet(String),
    AddMap(DispatchMap),
    FlushMap(DispatchMap),
    /// Never empty. Deletions print keys only.
    MapElements {
        add: bool,
        map: DispatchMap,
        elems: Vec<MapElement>,
    },
    AddPickMap(PickMap),
    /// Never empty. Deletions print keys only.
    PickElements {
        add: bool,
        map: PickMap,
        elems: Vec<PickElement>,
    },
    /// `svc/hairpin4` (`svc/hairpin6`): `type ipv4_addr . ipv4_addr`, an element
    /// `B . B` per backend B.
    AddHairpinSet {
        v6: bool,
    },
    /// Never empty.
    HairpinElements {
        add: bool,
        v6: bool,
        backends: Vec<IpAddr>,
    },
    /// Every element of a backend map or hairpin set removed (`flush map`/`flush set`).
    FlushSet {
        name: String,
        map: bool,
    },
}

/// The hairpin set of a family.
pub fn hairpin_set(v6: bool) -> &'static str {
    if v6 {
        "svc/hairpin6"
    } else {
        "svc/hairpin4"
    }
}

impl fmt::Display for SvcCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = TABLE;
        match self {
            SvcCmd::AddChain {
                name,
                kind: ChainKind::Base { hook, priority },
            } => write!(
                f,
                "add chain inet {t} {name} {{ type nat hook {} priority {priority}; policy accept; }}",
                hook.name()
            ),
            SvcCmd::AddChain {
                name,
                kind: ChainKind::Regular { comment },
            } => write!(f, "add chain inet {t} {name} {{ comment \"{comment}\"; }}"),
            SvcCmd::FlushChain(c) => write!(f, "flush chain inet {t} {c}"),
            SvcCmd::DeleteChain(c) => write!(f, "delete chain inet {t} {c}"),
            SvcCmd::AddRule { chain, rule } => write!(f, "add rule inet {t} {chain} {rule}"),
            SvcCmd::AddSet { name, set } => write!(f, "add set inet {t} {name} {{ {set} }}"),
            SvcCmd::DeleteSet(s) => write!(f, "delete set inet {t} {s}"),
            SvcCmd::AddMap(m) => write!(
                f,
                "add map inet {t} {m} {{ type {} : verdict; comment \"{}\"; }}",
                m.key_type(),
                m.comment()
            ),
            SvcCmd::FlushMap(m) => write!(f, "flush map inet {t} {m}"),
            SvcCmd::MapElements { add, map, elems } => {
                let verb = if *add { "add" } else { "delete" };
                write!(f, "{verb} element inet {t} {map} {{ ")?;
                for (i, e) in elems.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", Parts(&e.key))?;
                    if *add {
                        write!(f, " : goto {}", e.goto)?;
                    }
                }
                f.write_str(" }")
            }
            SvcCmd::AddPickMap(m) => {
                let to = format!("{} daddr . {} dport", fam(m.v6), m.proto);
                write!(
                    f,
                    "add map inet {t} {} {{ typeof {} : {to}; }}",
                    m.name(),
                    m.key_text()
                )
            }
            SvcCmd::PickElements { add, map, elems } => {
                let verb = if *add { "add" } else { "delete" };
                write!(f, "{verb} element inet {t} {} {{ ", map.name())?;
                for (i, e) in elems.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(&e.key())?;
                    if *add {
                        write!(f, " : {} . {}", e.to, e.to_port)?;
                    }
                }
                f.write_str(" }")
            }
            SvcCmd::AddHairpinSet { v6 } => {
                let k = if *v6 { "ipv6_addr" } else { "ipv4_addr" };
                write!(f, "add set inet {t} {} {{ type {k} . {k}; }}", hairpin_set(*v6))
            }
            SvcCmd::HairpinElements { add, v6, backends } => {
                let verb = if *add { "add" } else { "delete" };
                write!(f, "{verb} element inet {t} {} {{ ", hairpin_set(*v6))?;
                for (i, b) in backends.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{b} . {b}")?;
                }
                f.write_str(" }")
            }
            SvcCmd::FlushSet { name, map } => {
                let kind = if *map { "map" } else { "set" };
                write!(f, "flush {kind} inet {t} {name}")
            }
        }
    }
}
