//! nft batches for a `FwState`: `full` (create or restore everything netd owns) and
//! `diff` (the smallest batch from one state to the next). Pure text in, text out; the
//! kernel layer applies each batch as one transaction.
//!
//! # Design
//!
//! Two tables named `netd`, so `nft list ruleset` shows at a glance what is netd's; every
//! rule carries a comment saying why it is there, and rules made for one network say
//! `net <name>`. Nearly everything that changes at run time is a set or map element, so
//! attaching or detaching a container is an `add element`/`delete element` batch that
//! touches no rule; only a network change regenerates (flushes and refills) the one
//! chain with per-network rules, `inet netd postrouting`.
//!
//! `table inet netd` (routing, NAT):
//! - `user`: the operator's chain (Docker's DOCKER-USER), jumped to first from `forward`.
//!   netd creates it and never flushes or deletes it, not even in `full`.
//! - `forward` (filter, priority 0, policy accept, so the host's own forwarding is left
//!   alone): replies pass; traffic within one bridge passes (it shows up here only when
//!   br_netfilter is loaded); internal bridges (`@internal`) neither send nor receive
//!   routed traffic; DNATed traffic into a netd bridge passes (published ports, reachable
//!   from the outside, from the host and from other netd networks, as in Docker); any
//!   other traffic between two netd bridges is dropped (isolation); anything else into a
//!   netd bridge is dropped (containers are reached through published ports only, as in
//!   Docker 28); traffic from a bridge to the outside passes.
//! - `prerouting` (nat, dstnat) and `output` (nat, -100) send packets to a local address
//!   (`fib daddr type local`) through `published`, which DNATs with four maps: ports
//!   published on one host address, keyed `addr . proto . port` (`pub4_addr`,
//!   `pub6_addr`), tried before ports published on every address, keyed `proto . port`
//!   (`pub4_any`, `pub6_any`). `output` covers the host itself, including 127.0.0.1 (the
//!   kernel layer sets route_localnet on netd bridges). `::1` is left alone: IPv6 has no
//!   route_localnet, so a DNATed `::1` packet could only be dropped.
//! - `postrouting` (nat, srcnat): per network with masquerade (and not internal),
//!   `ip saddr <subnet> oifname != <bridge> masquerade`, which also covers published
//!   ports reached from another netd network; per network, hairpin masquerade of DNATed
//!   traffic from the network back into it (without it the reply would go container to
//!   container, bypassing the NAT); and masquerade of 127.0.0.0/8 sources leaving on a
//!   netd bridge (published ports reached via localhost).
//!
//! `table bridge netd` (frames on netd bridges; no `meta ibrname`, which needs
//! CONFIG_NFT_BRIDGE_META, a module many kernels lack):
//! - `prerouting` (filter, -200): frames entering from an endpoint's port (`@ports`) go
//!   through `antispoof`: the source MAC, the ARP sender MAC and IPv4 address, the IPv4
//!   source and the IPv6 source (except `::` and `fe80::/10`, which neighbour discovery
//!   needs) must be the endpoint's own, looked up by `port . address` in `@port_mac`,
//!   `@port_ip4`, `@port_ip6`; VLAN-tagged frames are dropped, since the checks cannot
//!   see inside them, except 802.1Q frames from a trunk port (`@trunk_ports`,
//!   `Network::vlan_trunk`) that carry the endpoint's MAC.
//! - `forward` (filter, -200): ICC off. The bridge forward hook sees only frames going
//!   from one port to another (frames to and from the host take the local in/out hooks),
//!   so dropping every forwarded frame that entered from a port of an ICC-off network
//!   (`@no_icc`) leaves containers the host and the outside only. `FwEndpoint` does not
//!   name its network, so a port is in `@no_icc` when one of its addresses lies in the
//!   subnet of a network with `icc == false`.
//!
//! Names that could break the nft syntax (an interface name with a quote, say) are left
//! out: a port missing from the anti-spoofing sets loses its traffic (fails closed).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{FwEndpoint, FwNetwork, FwPort, FwState, TABLE, USER_CHAIN};

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;
/// Longest part of a network name put into a rule comment (nft allows 128 bytes in all).
const COMMENT_NAME_MAX: usize = 64;

/// A set's or map's elements: key -> value (`None` for sets). Keys and values are nft
/// text, generated the same way every time, so old and new compare as strings.
type Elements = BTreeMap<String, Option<String>>;

/// A named set or map netd owns.
struct Collection {
    family: &'static str,
    name: &'static str,
    is_map: bool,
    /// The body of `add set|map ... { <decl> }`.
    decl: &'static str,
    elements: fn(&FwState) -> Elements,
}

/// A chain netd owns (all but the user chain, which is handled on its own).
struct Chain {
    family: &'static str,
    name: &'static str,
    /// The body of `add chain ... { <decl> }`: a base chain's hook, or a comment.
    decl: &'static str,
    /// Whether the rules depend on the networks (then `diff` regenerates the chain when
    /// they change). Chains that do not are written by `full` only.
    per_network: bool,
    rules: fn(&[&FwNetwork]) -> Vec<String>,
}

const COLLECTIONS: &[Collection] = &[
    Collection {
        family: "inet",
        name: "bridges",
        is_map: false,
        decl: "type ifname; comment \"bridges of all netd networks\";",
        elements: bridges,
    },
    Collection {
        family: "inet",
        name: "internal",
        is_map: false,
        decl: "type ifname; comment \"bridges of internal networks (no way in or out)\";",
        elements: internal,
    },
    Collection {
        family: "inet",
        name: "same_bridge",
        is_map: false,
        decl: "type ifname . ifname; comment \"bridge . bridge: traffic within one network\";",
        elements: same_bridge,
    },
    Collection {
        family: "inet",
        name: "pub4_addr",
        is_map: true,
        decl: "type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; \
               comment \"IPv4 ports published on one host address\";",
        elements: pub4_addr,
    },
    Collection {
        family: "inet",
        name: "pub4_any",
        is_map: true,
        decl: "type inet_proto . inet_service : ipv4_addr . inet_service; \
               comment \"IPv4 ports published on every host address\";",
        elements: pub4_any,
    },
    Collection {
        family: "inet",
        name: "pub6_addr",
        is_map: true,
        decl: "type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; \
               comment \"IPv6 ports published on one host address\";",
        elements: pub6_addr,
    },
    Collection {
        family: "inet",
        name: "pub6_any",
        is_map: true,
        decl: "type inet_proto . inet_service : ipv6_addr . inet_service; \
               comment \"IPv6 ports published on every host address\";",
        elements: pub6_any,
    },
    Collection {
        family: "bridge",
        name: "ports",
        is_map: false,
        decl: "type ifname; comment \"host sides of endpoint veths\";",
        elements: ports,
    },
    Collection {
        family: "bridge",
        name: "port_mac",
        is_map: false,
        decl: "type ifname . ether_addr; comment \"port . the endpoint's MAC\";",
        elements: port_mac,
    },
    Collection {
        family: "bridge",
        name: "port_ip4",
        is_map: false,
        decl: "type ifname . ipv4_addr; comment \"port . the endpoint's IPv4 address\";",
        elements: port_ip4,
    },
    Collection {
        family: "bridge",
        name: "port_ip6",
        is_map: false,
        decl: "type ifname . ipv6_addr; comment \"port . the endpoint's IPv6 address\";",
        elements: port_ip6,
    },
    Collection {
        family: "bridge",
        name: "trunk_ports",
        is_map: false,
        decl: "type ifname; comment \"ports that carry VLANs tagged (vlan_trunk)\";",
        elements: trunk_ports,
    },
    Collection {
        family: "bridge",
        name: "no_icc",
        is_map: false,
        decl: "type ifname; comment \"ports on networks with icc off\";",
        elements: no_icc,
    },
];

const CHAINS: &[Chain] = &[
    Chain {
        family: "inet",
        name: "forward",
        decl: "type filter hook forward priority filter; policy accept;",
        per_network: false,
        rules: inet_forward,
    },
    Chain {
        family: "inet",
        name: "published",
        decl: "comment \"DNAT of published ports\";",
        per_network: false,
        rules: published,
    },
    Chain {
        family: "inet",
        name: "prerouting",
        decl: "type nat hook prerouting priority dstnat; policy accept;",
        per_network: false,
        rules: nat_prerouting,
    },
    Chain {
        family: "inet",
        name: "output",
        decl: "type nat hook output priority -100; policy accept;",
        per_network: false,
        rules: nat_output,
    },
    Chain {
        family: "inet",
        name: "postrouting",
        decl: "type nat hook postrouting priority srcnat; policy accept;",
        per_network: true,
        rules: nat_postrouting,
    },
    Chain {
        family: "bridge",
        name: "antispoof",
        decl: "comment \"frames from endpoints must carry the endpoint's own addresses\";",
        per_network: false,
        rules: antispoof,
    },
    Chain {
        family: "bridge",
        name: "prerouting",
        decl: "type filter hook prerouting priority filter; policy accept;",
        per_network: false,
        rules: bridge_prerouting,
    },
    Chain {
        family: "bridge",
        name: "forward",
        decl: "type filter hook forward priority filter; policy accept;",
        per_network: false,
        rules: bridge_forward,
    },
];

/// `owner` as a table comment: printable ASCII without quotes or backslashes, at most
/// 200 bytes (the kernel keeps 256 of user data, nft's entry header included).
pub fn table_comment(owner: &str) -> String {
    owner
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect()
}

/// A batch that creates netd's tables, or restores them to `state` whatever is in them
/// now: every netd chain, set and map is flushed and refilled, except the user chain,
/// which is only created when missing. Safe to apply any number of times.
/// New tables get the comment `owner` (`table_comment`): the kernel keeps a table's
/// first comment, so the tables name whoever made them (`Engine::check_owner`).
pub fn full(state: &FwState, owner: &str) -> String {
    let nets = networks(state);
    let mut cmds = Vec::new();
    let comment = table_comment(owner);
    for family in ["inet", "bridge"] {
        cmds.push(format!("add table {family} {TABLE} {{ comment \"{comment}\"; }}"));
    }
    cmds.push(format!(
        "add chain inet {TABLE} {USER_CHAIN} {{ comment \"operator rules, jumped to first from forward; \
         netd never flushes this chain\"; }}"
    ));
    // Every chain exists before any rule, since rules jump between chains.
    for c in CHAINS {
        cmds.push(format!(
            "add chain {} {TABLE} {} {{ {} }}",
            c.family, c.name, c.decl
        ));
        cmds.push(format!("flush chain {} {TABLE} {}", c.family, c.name));
    }
    for s in COLLECTIONS {
        let kind = if s.is_map { "map" } else { "set" };
        cmds.push(format!(
            "add {kind} {} {TABLE} {} {{ {} }}",
            s.family, s.name, s.decl
        ));
        cmds.push(format!("flush {kind} {} {TABLE} {}", s.family, s.name));
        let all = (s.elements)(state);
        if let Some(add) = element_cmd("add", s, all.iter().map(|(k, v)| with_value(k, v.as_deref()))) {
            cmds.push(add);
        }
    }
    for c in CHAINS {
        push_rules(&mut cmds, c, &nets);
    }
    join(cmds)
}

/// The smallest batch taking the kernel from `old` to `new` (empty when nothing changed):
/// element deletions and additions for endpoints and ports, and, when the networks
/// changed, the per-network chain flushed and refilled. Assumes the kernel holds `old`.
pub fn diff(old: &FwState, new: &FwState) -> String {
    let mut cmds = Vec::new();
    for s in COLLECTIONS {
        let (was, now) = ((s.elements)(old), (s.elements)(new));
        // A key whose map value changed is deleted and added again: `add element` on an
        // existing key fails with EEXIST, and both happen in the same transaction.
        let gone = was
            .iter()
            .filter(|(k, v)| now.get(*k) != Some(*v))
            .map(|(k, _)| k.clone());
        let added = now
            .iter()
            .filter(|(k, v)| was.get(*k) != Some(*v))
            .map(|(k, v)| with_value(k, v.as_deref()));
        cmds.extend(element_cmd("delete", s, gone));
        cmds.extend(element_cmd("add", s, added));
    }
    let (was, now) = (networks(old), networks(new));
    if was != now {
        for c in CHAINS.iter().filter(|c| c.per_network) {
            cmds.push(format!("flush chain {} {TABLE} {}", c.family, c.name));
            push_rules(&mut cmds, c, &now);
        }
    }
    if cmds.is_empty() {
        String::new()
    } else {
        join(cmds)
    }
}

fn join(cmds: Vec<String>) -> String {
    let mut out = cmds.join("\n");
    out.push('\n');
    out
}

fn push_rules(cmds: &mut Vec<String>, c: &Chain, nets: &[&FwNetwork]) {
    for r in (c.rules)(nets) {
        cmds.push(format!("add rule {} {TABLE} {} {r}", c.family, c.name));
    }
}

/// `<verb> element <family> netd <name> { a, b }`, or None when there is nothing to do
/// (nft rejects an empty element list).
fn element_cmd(verb: &str, s: &Collection, elems: impl Iterator<Item = String>) -> Option<String> {
    let elems: Vec<String> = elems.collect();
    if elems.is_empty() {
        return None;
    }
    Some(format!(
        "{verb} element {} {TABLE} {} {{ {} }}",
        s.family,
        s.name,
        elems.join(", ")
    ))
}

fn with_value(k: &str, v: Option<&str>) -> String {
    match v {
        Some(v) => format!("{k} : {v}"),
        None => k.to_string(),
    }
}

/// Networks in a stable order (by name), so a reordered list is no change and rules
/// come out the same in `full` and `diff`.
fn networks(state: &FwState) -> Vec<&FwNetwork> {
    let mut v: Vec<&FwNetwork> = state.networks.iter().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v.dedup_by(|a, b| a == b);
    v
}

/// `"name"` for an interface name nft can take in quotes; None for anything that is not
/// a valid Linux interface name or would break the quoting.
fn ifname(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' && c != '/' && c != ':');
    ok.then(|| format!("\"{name}\""))
}

/// A network name fit for a rule comment: no quotes or control characters, bounded.
fn comment_name(name: &str) -> String {
    name.chars()
        .take(COMMENT_NAME_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn set_of(keys: impl Iterator<Item = String>) -> Elements {
    keys.map(|k| (k, None)).collect()
}

// ---- elements ---------------------------------------------------------------------

fn bridges(st: &FwState) -> Elements {
    set_of(st.networks.iter().filter_map(|n| ifname(&n.bridge)))
}

fn internal(st: &FwState) -> Elements {
    set_of(
        st.networks
            .iter()
            .filter(|n| n.internal)
            .filter_map(|n| ifname(&n.bridge)),
    )
}

fn same_bridge(st: &FwState) -> Elements {
    set_of(
        st.networks
            .iter()
            .filter_map(|n| ifname(&n.bridge))
            .map(|b| format!("{b} . {b}")),
    )
}

fn ports(st: &FwState) -> Elements {
    set_of(st.endpoints.iter().filter_map(|e| ifname(&e.port)))
}

fn port_mac(st: &FwState) -> Elements {
    set_of(st.endpoints.iter().filter_map(|e| {
        let m = e.mac;
        let mac = format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        );
        Some(format!("{} . {mac}", ifname(&e.port)?))
    }))
}

fn port_ip4(st: &FwState) -> Elements {
    set_of(
        st.endpoints
            .iter()
            .filter_map(|e| Some(format!("{} . {}", ifname(&e.port)?, e.ipv4?))),
    )
}

fn port_ip6(st: &FwState) -> Elements {
    set_of(
        st.endpoints
            .iter()
            .filter_map(|e| Some(format!("{} . {}", ifname(&e.port)?, e.ipv6?))),
    )
}

fn trunk_ports(st: &FwState) -> Elements {
    set_of(
        st.endpoints
            .iter()
            .filter(|e| e.trunk)
            .filter_map(|e| ifname(&e.port)),
    )
}

/// Ports of endpoints with an address in a network whose ICC is off.
fn no_icc(st: &FwState) -> Elements {
    let on_isolated = |e: &FwEndpoint| {
        st.networks.iter().filter(|n| !n.icc).any(|n| {
            let in4 = matches!((n.subnet4, e.ipv4), (Some(s), Some(a)) if s.contains(a));
            let in6 = matches!((n.subnet6, e.ipv6), (Some(s), Some(a)) if s.contains(a));
            in4 || in6
        })
    };
    set_of(
        st.endpoints
            .iter()
            .filter(|e| on_isolated(e))
            .filter_map(|e| ifname(&e.port)),
    )
}

/// Where a published port goes in the DNAT maps.
enum PubKey {
    Addr4(Ipv4Addr),
    Any4,
    Addr6(Ipv6Addr),
    Any6,
}

/// The map a port belongs in, or None when its host address and target are of
/// different families (nothing can translate between them) or the port is 0.
fn pub_key(p: &FwPort) -> Option<PubKey> {
    if p.host_port == 0 || p.target_port == 0 {
        return None;
    }
    let host = p.host_ip.filter(|ip| !ip.is_unspecified());
    match (p.target, host) {
        (IpAddr::V4(_), None) => Some(PubKey::Any4),
        (IpAddr::V4(_), Some(IpAddr::V4(a))) => Some(PubKey::Addr4(a)),
        (IpAddr::V4(_), Some(IpAddr::V6(a))) => a.to_ipv4_mapped().map(PubKey::Addr4),
        (IpAddr::V6(_), None) => Some(PubKey::Any6),
        // `published` skips ::1 (no route_localnet for IPv6), so such an entry is dead.
        (IpAddr::V6(_), Some(IpAddr::V6(a))) if a.is_loopback() => None,
        (IpAddr::V6(_), Some(IpAddr::V6(a))) => Some(PubKey::Addr6(a)),
        (IpAddr::V6(_), Some(IpAddr::V4(_))) => None,
    }
}

/// Elements of one DNAT map: `[addr . ]proto . port : target . port`. When two ports
/// claim the same key (the engine refuses that), the first one wins, so the batch stays
/// valid.
fn pub_map(st: &FwState, want: fn(&PubKey) -> Option<String>) -> Elements {
    let mut out = Elements::new();
    for p in &st.ports {
        let Some(prefix) = pub_key(p).as_ref().and_then(want) else {
            continue;
        };
        let key = format!("{prefix}{} . {}", p.proto, p.host_port);
        out.entry(key)
            .or_insert_with(|| Some(format!("{} . {}", p.target, p.target_port)));
    }
    out
}

fn pub4_addr(st: &FwState) -> Elements {
    pub_map(st, |k| match k {
        PubKey::Addr4(a) => Some(format!("{a} . ")),
        _ => None,
    })
}

fn pub4_any(st: &FwState) -> Elements {
    pub_map(st, |k| matches!(k, PubKey::Any4).then(String::new))
}

fn pub6_addr(st: &FwState) -> Elements {
    pub_map(st, |k| match k {
        PubKey::Addr6(a) => Some(format!("{a} . ")),
        _ => None,
    })
}

fn pub6_any(st: &FwState) -> Elements {
    pub_map(st, |k| matches!(k, PubKey::Any6).then(String::new))
}

// ---- rules --------------------------------------------------------------------------

fn inet_forward(_: &[&FwNetwork]) -> Vec<String> {
    vec![
        format!("jump {USER_CHAIN}"),
        "ct state established,related accept comment \"replies\"".into(),
        // With br_netfilter loaded, frames bridged within one network pass here too;
        // ICC is enforced in the bridge table instead.
        "iifname . oifname @same_bridge accept comment \"within one network\"".into(),
        "iifname @internal drop comment \"internal networks: nothing leaves\"".into(),
        "oifname @internal drop comment \"internal networks: nothing enters\"".into(),
        // Before isolation, so a published port is reachable through a host address
        // from other netd networks too (Docker does the same).
        "ct status dnat oifname @bridges accept comment \"published ports\"".into(),
        "iifname @bridges oifname @bridges drop comment \"isolation between networks\"".into(),
        "oifname @bridges drop comment \"into a network only through published ports\"".into(),
        "iifname @bridges accept comment \"networks to the outside\"".into(),
    ]
}

fn published(_: &[&FwNetwork]) -> Vec<String> {
    // Ports bound to one address first: they are more specific than the any-address
    // ones, which may share protocol and port with them.
    vec![
        "meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @pub4_addr \
         comment \"IPv4, one host address\""
            .into(),
        "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @pub4_any \
         comment \"IPv4, every host address\""
            .into(),
        "ip6 daddr != ::1 dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6_addr \
         comment \"IPv6, one host address\""
            .into(),
        "ip6 daddr != ::1 dnat ip6 to meta l4proto . th dport map @pub6_any \
         comment \"IPv6, every host address\""
            .into(),
    ]
}

fn nat_prerouting(_: &[&FwNetwork]) -> Vec<String> {
    vec!["fib daddr type local jump published comment \"published ports\"".into()]
}

fn nat_output(_: &[&FwNetwork]) -> Vec<String> {
    vec!["fib daddr type local jump published comment \"published ports, from the host itself\"".into()]
}

fn nat_postrouting(nets: &[&FwNetwork]) -> Vec<String> {
    let mut rules = Vec::new();
    for n in nets {
        let Some(br) = ifname(&n.bridge) else { continue };
        let name = comment_name(&n.name);
        let subnets = [
            n.subnet4
                .map(|s| format!("ip saddr {}/{}", s.network(), s.prefix())),
            n.subnet6
                .map(|s| format!("ip6 saddr {}/{}", s.network(), s.prefix())),
        ];
        for saddr in subnets.iter().flatten() {
            if n.masquerade && !n.internal {
                let not_out = match n.vlan_bridge.as_deref().and_then(ifname) {
                    Some(l2) => format!("{{ {br}, {l2} }}"),
                    None => br.clone(),
                };
                rules.push(format!(
                    "{saddr} oifname != {not_out} masquerade comment \"net {name}\""
                ));
            }
            if !n.internal {
                rules.push(format!(
                    "oifname {br} {saddr} ct status dnat masquerade comment \"net {name}: hairpin\""
                ));
            }
        }
    }
    rules.push(
        "oifname @bridges ip saddr 127.0.0.0/8 masquerade comment \"published ports via localhost\"".into(),
    );
    rules
}

fn bridge_prerouting(_: &[&FwNetwork]) -> Vec<String> {
    vec!["iifname @ports jump antispoof comment \"frames from endpoints\"".into()]
}

fn antispoof(_: &[&FwNetwork]) -> Vec<String> {
    vec![
        // What a trunk's VLANs carry is the container's own business (the reference
        // plugin checks nothing at all); the frame's source MAC is still checked.
        "ether type 8021q iifname @trunk_ports iifname . ether saddr @port_mac accept comment \"VLANs of a trunk port\""
            .into(),
        "ether type { 8021q, 8021ad } drop comment \"tagged frames would slip past these checks\"".into(),
        "iifname . ether saddr != @port_mac drop comment \"source MAC not the endpoint's\"".into(),
        "ether type arp iifname . arp saddr ether != @port_mac drop comment \"ARP sender MAC not the endpoint's\""
            .into(),
        "ether type arp arp saddr ip 0.0.0.0 accept comment \"ARP probes\"".into(),
        "ether type arp iifname . arp saddr ip != @port_ip4 drop comment \"ARP sender IP not the endpoint's\""
            .into(),
        "ether type ip iifname . ip saddr != @port_ip4 drop comment \"IPv4 source not the endpoint's\"".into(),
        "ether type ip6 ip6 saddr { ::, fe80::/10 } accept comment \"neighbour discovery\"".into(),
        "ether type ip6 iifname . ip6 saddr != @port_ip6 drop comment \"IPv6 source not the endpoint's\"".into(),
    ]
}

fn bridge_forward(_: &[&FwNetwork]) -> Vec<String> {
    vec!["iifname @no_icc drop comment \"icc off: no traffic between containers\"".into()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;

    fn net(name: &str, bridge: &str, s4: &str, s6: Option<&str>) -> FwNetwork {
        FwNetwork {
            name: name.into(),
            bridge: bridge.into(),
            subnet4: Some(s4.parse().unwrap()),
            subnet6: s6.map(|s| s.parse().unwrap()),
            internal: false,
            icc: true,
            masquerade: true,
            vlan_bridge: None,
        }
    }

    fn ep(port: &str, last: u8, ip4: &str, ip6: Option<&str>) -> FwEndpoint {
        FwEndpoint {
            port: port.into(),
            mac: [0x02, 0x42, 0, 0, 0, last],
            ipv4: Some(ip4.parse().unwrap()),
            ipv6: ip6.map(|s| s.parse().unwrap()),
            trunk: false,
        }
    }

    fn port(host_ip: Option<&str>, host_port: u16, proto: Proto, target: &str, target_port: u16) -> FwPort {
        FwPort {
            host_ip: host_ip.map(|s| s.parse().unwrap()),
            host_port,
            proto,
            target: target.parse().unwrap(),
            target_port,
        }
    }

    /// Two ordinary networks (one dual-stack), one internal with ICC off, three
    /// endpoints and ports of every kind.
    fn sample() -> FwState {
        let mut back = net("backend", "netd-backend", "10.89.1.0/24", None);
        back.internal = true;
        back.icc = false;
        FwState {
            networks: vec![
                net("frontend", "netd-frontend", "10.89.0.0/24", Some("fd00:89::/64")),
                back,
            ],
            endpoints: vec![
                ep("vethA", 2, "10.89.0.2", Some("fd00:89::2")),
                ep("vethB", 3, "10.89.0.3", None),
                ep("vethC", 4, "10.89.1.2", None),
            ],
            ports: vec![
                port(None, 8080, Proto::Tcp, "10.89.0.2", 80),
                port(None, 8080, Proto::Tcp, "fd00:89::2", 80),
                port(Some("127.0.0.1"), 5353, Proto::Udp, "10.89.0.3", 53),
                port(Some("fd00:1::1"), 9000, Proto::Tcp, "fd00:89::2", 9000),
            ],
        }
    }

    const SAMPLE_FULL: &str = r#"add table inet netd { comment "netd test"; }
add table bridge netd { comment "netd test"; }
add chain inet netd user { comment "operator rules, jumped to first from forward; netd never flushes this chain"; }
add chain inet netd forward { type filter hook forward priority filter; policy accept; }
flush chain inet netd forward
add chain inet netd published { comment "DNAT of published ports"; }
flush chain inet netd published
add chain inet netd prerouting { type nat hook prerouting priority dstnat; policy accept; }
flush chain inet netd prerouting
add chain inet netd output { type nat hook output priority -100; policy accept; }
flush chain inet netd output
add chain inet netd postrouting { type nat hook postrouting priority srcnat; policy accept; }
flush chain inet netd postrouting
add chain bridge netd antispoof { comment "frames from endpoints must carry the endpoint's own addresses"; }
flush chain bridge netd antispoof
add chain bridge netd prerouting { type filter hook prerouting priority filter; policy accept; }
flush chain bridge netd prerouting
add chain bridge netd forward { type filter hook forward priority filter; policy accept; }
flush chain bridge netd forward
add set inet netd bridges { type ifname; comment "bridges of all netd networks"; }
flush set inet netd bridges
add element inet netd bridges { "netd-backend", "netd-frontend" }
add set inet netd internal { type ifname; comment "bridges of internal networks (no way in or out)"; }
flush set inet netd internal
add element inet netd internal { "netd-backend" }
add set inet netd same_bridge { type ifname . ifname; comment "bridge . bridge: traffic within one network"; }
flush set inet netd same_bridge
add element inet netd same_bridge { "netd-backend" . "netd-backend", "netd-frontend" . "netd-frontend" }
add map inet netd pub4_addr { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; comment "IPv4 ports published on one host address"; }
flush map inet netd pub4_addr
add element inet netd pub4_addr { 127.0.0.1 . udp . 5353 : 10.89.0.3 . 53 }
add map inet netd pub4_any { type inet_proto . inet_service : ipv4_addr . inet_service; comment "IPv4 ports published on every host address"; }
flush map inet netd pub4_any
add element inet netd pub4_any { tcp . 8080 : 10.89.0.2 . 80 }
add map inet netd pub6_addr { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; comment "IPv6 ports published on one host address"; }
flush map inet netd pub6_addr
add element inet netd pub6_addr { fd00:1::1 . tcp . 9000 : fd00:89::2 . 9000 }
add map inet netd pub6_any { type inet_proto . inet_service : ipv6_addr . inet_service; comment "IPv6 ports published on every host address"; }
flush map inet netd pub6_any
add element inet netd pub6_any { tcp . 8080 : fd00:89::2 . 80 }
add set bridge netd ports { type ifname; comment "host sides of endpoint veths"; }
flush set bridge netd ports
add element bridge netd ports { "vethA", "vethB", "vethC" }
add set bridge netd port_mac { type ifname . ether_addr; comment "port . the endpoint's MAC"; }
flush set bridge netd port_mac
add element bridge netd port_mac { "vethA" . 02:42:00:00:00:02, "vethB" . 02:42:00:00:00:03, "vethC" . 02:42:00:00:00:04 }
add set bridge netd port_ip4 { type ifname . ipv4_addr; comment "port . the endpoint's IPv4 address"; }
flush set bridge netd port_ip4
add element bridge netd port_ip4 { "vethA" . 10.89.0.2, "vethB" . 10.89.0.3, "vethC" . 10.89.1.2 }
add set bridge netd port_ip6 { type ifname . ipv6_addr; comment "port . the endpoint's IPv6 address"; }
flush set bridge netd port_ip6
add element bridge netd port_ip6 { "vethA" . fd00:89::2 }
add set bridge netd trunk_ports { type ifname; comment "ports that carry VLANs tagged (vlan_trunk)"; }
flush set bridge netd trunk_ports
add set bridge netd no_icc { type ifname; comment "ports on networks with icc off"; }
flush set bridge netd no_icc
add element bridge netd no_icc { "vethC" }
add rule inet netd forward jump user
add rule inet netd forward ct state established,related accept comment "replies"
add rule inet netd forward iifname . oifname @same_bridge accept comment "within one network"
add rule inet netd forward iifname @internal drop comment "internal networks: nothing leaves"
add rule inet netd forward oifname @internal drop comment "internal networks: nothing enters"
add rule inet netd forward ct status dnat oifname @bridges accept comment "published ports"
add rule inet netd forward iifname @bridges oifname @bridges drop comment "isolation between networks"
add rule inet netd forward oifname @bridges drop comment "into a network only through published ports"
add rule inet netd forward iifname @bridges accept comment "networks to the outside"
add rule inet netd published meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @pub4_addr comment "IPv4, one host address"
add rule inet netd published meta nfproto ipv4 dnat ip to meta l4proto . th dport map @pub4_any comment "IPv4, every host address"
add rule inet netd published ip6 daddr != ::1 dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6_addr comment "IPv6, one host address"
add rule inet netd published ip6 daddr != ::1 dnat ip6 to meta l4proto . th dport map @pub6_any comment "IPv6, every host address"
add rule inet netd prerouting fib daddr type local jump published comment "published ports"
add rule inet netd output fib daddr type local jump published comment "published ports, from the host itself"
add rule inet netd postrouting ip saddr 10.89.0.0/24 oifname != "netd-frontend" masquerade comment "net frontend"
add rule inet netd postrouting oifname "netd-frontend" ip saddr 10.89.0.0/24 ct status dnat masquerade comment "net frontend: hairpin"
add rule inet netd postrouting ip6 saddr fd00:89::/64 oifname != "netd-frontend" masquerade comment "net frontend"
add rule inet netd postrouting oifname "netd-frontend" ip6 saddr fd00:89::/64 ct status dnat masquerade comment "net frontend: hairpin"
add rule inet netd postrouting oifname @bridges ip saddr 127.0.0.0/8 masquerade comment "published ports via localhost"
add rule bridge netd antispoof ether type 8021q iifname @trunk_ports iifname . ether saddr @port_mac accept comment "VLANs of a trunk port"
add rule bridge netd antispoof ether type { 8021q, 8021ad } drop comment "tagged frames would slip past these checks"
add rule bridge netd antispoof iifname . ether saddr != @port_mac drop comment "source MAC not the endpoint's"
add rule bridge netd antispoof ether type arp iifname . arp saddr ether != @port_mac drop comment "ARP sender MAC not the endpoint's"
add rule bridge netd antispoof ether type arp arp saddr ip 0.0.0.0 accept comment "ARP probes"
add rule bridge netd antispoof ether type arp iifname . arp saddr ip != @port_ip4 drop comment "ARP sender IP not the endpoint's"
add rule bridge netd antispoof ether type ip iifname . ip saddr != @port_ip4 drop comment "IPv4 source not the endpoint's"
add rule bridge netd antispoof ether type ip6 ip6 saddr { ::, fe80::/10 } accept comment "neighbour discovery"
add rule bridge netd antispoof ether type ip6 iifname . ip6 saddr != @port_ip6 drop comment "IPv6 source not the endpoint's"
add rule bridge netd prerouting iifname @ports jump antispoof comment "frames from endpoints"
add rule bridge netd forward iifname @no_icc drop comment "icc off: no traffic between containers"
"#;

    /// A trunk endpoint's port is in `@trunk_ports` (its tagged frames with its own
    /// MAC pass anti-spoofing); attaching one is an element change only.
    #[test]
    fn trunk_ports_are_elements() {
        let old = sample();
        let mut new = sample();
        let mut t = ep("vethT", 9, "10.89.0.9", None);
        t.trunk = true;
        new.endpoints.push(t);
        let d = diff(&old, &new);
        assert!(d.lines().all(|l| l.starts_with("add element ")), "{d}");
        assert!(
            d.contains("add element bridge netd trunk_ports { \"vethT\" }"),
            "{d}"
        );
        assert!(d.contains("add element bridge netd ports { \"vethT\" }"), "{d}");
        assert!(!full(&old, "t").contains("add element bridge netd trunk_ports"));
        assert!(full(&new, "t").contains("add element bridge netd trunk_ports { \"vethT\" }"));
    }

    #[test]
    fn full_of_sample() {
        let got = full(&sample(), "netd test");
        for (i, (g, w)) in got.lines().zip(SAMPLE_FULL.lines()).enumerate() {
            assert_eq!(g, w, "line {}", i + 1);
        }
        assert_eq!(got, SAMPLE_FULL);
    }

    /// A VLAN network's L3 link is its gateway `<bridge>.<vlan>`; frames bridged within
    /// the VLAN (br_netfilter) leave through the bridge itself and stay unmasqueraded.
    #[test]
    fn vlan_network_masquerades_past_its_gateway_and_bridge_only() {
        let mut v = net("v100", "vbr.100", "10.77.100.0/24", None);
        v.vlan_bridge = Some("vbr".into());
        let st = FwState {
            networks: vec![v],
            ..Default::default()
        };
        let b = full(&st, "netd test");
        assert!(
            b.contains(
                r#"ip saddr 10.77.100.0/24 oifname != { "vbr.100", "vbr" } masquerade comment "net v100""#
            ),
            "{b}"
        );
        assert!(
            b.contains(r#"oifname "vbr.100" ip saddr 10.77.100.0/24 ct status dnat masquerade"#),
            "{b}"
        );
    }

    #[test]
    fn full_is_the_same_for_reordered_networks() {
        let a = sample();
        let mut b = sample();
        b.networks.reverse();
        assert_eq!(full(&a, "netd test"), full(&b, "netd test"));
        assert_eq!(diff(&a, &b), "");
    }

    #[test]
    fn full_never_flushes_or_deletes_the_user_chain() {
        let mut states = vec![FwState::default(), sample()];
        // A network named like the user chain must not fool anything either.
        let mut odd = sample();
        odd.networks[0].name = "user".into();
        states.push(odd);
        for st in &states {
            let b = full(st, "netd test");
            assert!(b.contains("add chain inet netd user"), "{b}");
            for bad in [
                "flush chain inet netd user",
                "delete chain inet netd user",
                "flush table",
                "delete table",
            ] {
                assert!(!b.contains(bad), "{bad} in:\n{b}");
            }
        }
    }

    #[test]
    fn diff_of_equal_states_is_empty() {
        assert_eq!(diff(&sample(), &sample()), "");
        assert_eq!(diff(&FwState::default(), &FwState::default()), "");
    }

    #[test]
    fn endpoint_change_is_elements_only() {
        let old = sample();
        let mut new = sample();
        new.endpoints.remove(1); // vethB: its published port goes with it
        new.ports
            .retain(|p| p.target != "10.89.0.3".parse::<IpAddr>().unwrap());
        new.endpoints.push(ep("vethD", 5, "10.89.1.3", None));
        let d = diff(&old, &new);
        assert!(!d.contains("flush"), "{d}");
        assert!(!d.contains("add rule") && !d.contains("add chain"), "{d}");
        assert!(
            d.lines()
                .all(|l| l.starts_with("add element ") || l.starts_with("delete element ")),
            "{d}"
        );
        let want = [
            "delete element inet netd pub4_addr { 127.0.0.1 . udp . 5353 }",
            "delete element bridge netd ports { \"vethB\" }",
            "add element bridge netd ports { \"vethD\" }",
            "delete element bridge netd port_mac { \"vethB\" . 02:42:00:00:00:03 }",
            "add element bridge netd port_mac { \"vethD\" . 02:42:00:00:00:05 }",
            "delete element bridge netd port_ip4 { \"vethB\" . 10.89.0.3 }",
            "add element bridge netd port_ip4 { \"vethD\" . 10.89.1.3 }",
            // 10.89.1.3 is in backend, whose ICC is off.
            "add element bridge netd no_icc { \"vethD\" }",
        ];
        assert_eq!(d.lines().collect::<Vec<_>>(), want);
    }

    #[test]
    fn retargeted_port_is_deleted_then_added() {
        let old = sample();
        let mut new = sample();
        new.ports[0].target = "10.89.0.3".parse().unwrap();
        assert_eq!(
            diff(&old, &new),
            "delete element inet netd pub4_any { tcp . 8080 }\n\
             add element inet netd pub4_any { tcp . 8080 : 10.89.0.3 . 80 }\n"
        );
    }

    #[test]
    fn network_change_regenerates_postrouting_only() {
        let old = sample();
        let mut new = sample();
        new.networks.push(net("db", "netd-db", "10.89.2.0/24", None));
        let d = diff(&old, &new);
        let flushes: Vec<&str> = d.lines().filter(|l| l.starts_with("flush")).collect();
        assert_eq!(flushes, ["flush chain inet netd postrouting"]);
        for want in [
            "add element inet netd bridges { \"netd-db\" }",
            "add element inet netd same_bridge { \"netd-db\" . \"netd-db\" }",
            "add rule inet netd postrouting ip saddr 10.89.2.0/24 oifname != \"netd-db\" masquerade comment \"net db\"",
            "add rule inet netd postrouting ip saddr 10.89.0.0/24 oifname != \"netd-frontend\" masquerade comment \"net frontend\"",
            "add rule inet netd postrouting oifname @bridges ip saddr 127.0.0.0/8 masquerade comment \"published ports via localhost\"",
        ] {
            assert!(d.lines().any(|l| l == want), "missing {want:?} in:\n{d}");
        }
        assert!(!d.contains(" user"), "{d}");
        // And back again.
        let back = diff(&new, &old);
        assert!(
            back.contains("delete element inet netd bridges { \"netd-db\" }"),
            "{back}"
        );
        assert!(!back.contains("netd-db\" masquerade"), "{back}");
    }

    #[test]
    fn icc_flip_moves_ports_in_and_out_of_no_icc() {
        let old = sample();
        let mut new = sample();
        new.networks[0].icc = false; // frontend
        let d = diff(&old, &new);
        assert!(
            d.contains("add element bridge netd no_icc { \"vethA\", \"vethB\" }"),
            "{d}"
        );
    }

    #[test]
    fn ports_that_cannot_work_are_left_out() {
        let st = FwState {
            ports: vec![
                // Host address of the other family than the target.
                port(Some("192.0.2.1"), 80, Proto::Tcp, "fd00::2", 80),
                // ::1 cannot be DNATed out of the host.
                port(Some("::1"), 81, Proto::Tcp, "fd00::2", 80),
                port(None, 0, Proto::Tcp, "10.0.0.2", 80),
                // Unspecified host address means every address; v4-mapped means IPv4.
                port(Some("0.0.0.0"), 82, Proto::Udp, "10.0.0.2", 53),
                port(Some("::ffff:192.0.2.1"), 83, Proto::Tcp, "10.0.0.2", 80),
                // A duplicate key: the first one wins, the batch stays valid.
                port(None, 82, Proto::Udp, "10.0.0.3", 53),
            ],
            ..FwState::default()
        };
        assert!(pub6_addr(&st).is_empty() && pub6_any(&st).is_empty());
        assert_eq!(
            pub4_any(&st).into_iter().collect::<Vec<_>>(),
            [("udp . 82".to_string(), Some("10.0.0.2 . 53".to_string()))]
        );
        assert_eq!(
            pub4_addr(&st).keys().collect::<Vec<_>>(),
            ["192.0.2.1 . tcp . 83"]
        );
    }

    #[test]
    fn names_that_would_break_the_syntax_are_left_out() {
        let mut st = sample();
        st.endpoints.push(ep("ve\"th; flush", 9, "10.89.0.9", None));
        st.networks[0].name = "front \"end\"".into();
        let b = full(&st, "netd test");
        assert!(!b.contains("ve\"th") && !b.contains("front \"end"), "{b}");
        assert!(b.contains("comment \"net front__end_\""), "{b}");
    }

    #[test]
    fn empty_state_makes_the_skeleton() {
        let b = full(&FwState::default(), "netd test");
        assert!(!b.contains("add element"), "{b}");
        assert!(b.contains("add rule inet netd forward jump user"), "{b}");
        assert_eq!(diff(&FwState::default(), &sample()).matches("flush").count(), 1);
    }
}
