//! nft batches for a `FwState`: `full` (create or restore everything netd owns) and
//! `diff` (the smallest batch from one state to the next). Pure data in, a `Batch` out
//! (element changes typed, the rest nft text); the kernel layer applies each batch as
//! one transaction.
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

use super::batch::{Batch, Command, Element, ElementChange, Family, Part, Parts};
use super::{FwNetwork, FwState, TABLE, USER_CHAIN};
use skeleton::{Chain, Collection, CHAINS, COLLECTIONS};

mod bridge;
#[cfg(test)]
mod fixtures;
mod inet;
mod publish;
pub mod services;
mod skeleton;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;
/// Longest part of a network name put into a rule comment (nft allows 128 bytes in all).
const COMMENT_NAME_MAX: usize = 64;

/// A set's or map's elements by their key's nft text: the same state always gives the
/// same text, so old and new compare by key, and elements come out in the order of
/// their text.
pub(super) type Elements = BTreeMap<String, Element>;

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

/// Every chain `full` makes, as `(family, name)`: the operator's chain and the
/// skeleton's. Reconcile looks for each of them in the kernel.
pub fn chains() -> impl Iterator<Item = (Family, &'static str)> {
    std::iter::once((Family::Inet, USER_CHAIN)).chain(CHAINS.iter().map(|c| (c.family, c.name)))
}

/// A batch that creates netd's tables, or restores them to `state` whatever is in them
/// now: every netd chain, set and map is flushed and refilled, except the user chain,
/// which is only created when missing. Safe to apply any number of times.
/// New tables get the comment `owner` (`table_comment`): the kernel keeps a table's
/// first comment, so the tables name whoever made them (`Engine::check_owner`).
pub fn full(state: &FwState, owner: &str) -> Batch {
    let nets = networks(state);
    let mut b = Batch::default();
    let comment = table_comment(owner);
    for family in [Family::Inet, Family::Bridge] {
        b.push_text(format!("add table {family} {TABLE} {{ comment \"{comment}\"; }}"));
    }
    b.push_text(format!(
        "add chain inet {TABLE} {USER_CHAIN} {{ comment \"operator rules, jumped to first from forward; \
         netd never flushes this chain\"; }}"
    ));
    // Every chain exists before any rule, since rules jump between chains.
    for c in CHAINS {
        b.push_text(format!(
            "add chain {} {TABLE} {} {{ {} }}",
            c.family, c.name, c.decl
        ));
        b.push_text(format!("flush chain {} {TABLE} {}", c.family, c.name));
    }
    for s in COLLECTIONS {
        let kind = if s.is_map { "map" } else { "set" };
        b.push_text(format!(
            "add {kind} {} {TABLE} {} {{ {} }}",
            s.family, s.name, s.decl
        ));
        b.push_text(format!("flush {kind} {} {TABLE} {}", s.family, s.name));
        push_elements(&mut b, true, s, (s.elements)(state).into_values());
    }
    for c in CHAINS {
        push_rules(&mut b, c, &nets);
    }
    b
}

/// The smallest batch taking the kernel from `old` to `new` (empty when nothing changed):
/// element deletions and additions for endpoints and ports, and, when the networks
/// changed, the per-network chain flushed and refilled. Assumes the kernel holds `old`.
pub fn diff(old: &FwState, new: &FwState) -> Batch {
    let mut b = Batch::default();
    for s in COLLECTIONS {
        let (was, now) = ((s.elements)(old), (s.elements)(new));
        // A key whose map value changed is deleted and added again: `add element` on an
        // existing key fails with EEXIST, and both happen in the same transaction.
        let gone = was
            .iter()
            .filter(|(k, e)| now.get(*k) != Some(*e))
            .map(|(_, e)| Element {
                key: e.key.clone(),
                value: None,
            });
        push_elements(&mut b, false, s, gone);
        let added = now.iter().filter(|(k, e)| was.get(*k) != Some(*e));
        push_elements(&mut b, true, s, added.map(|(_, e)| e.clone()));
    }
    let (was, now) = (networks(old), networks(new));
    if was != now {
        for c in CHAINS.iter().filter(|c| c.per_network) {
            b.push_text(format!("flush chain {} {TABLE} {}", c.family, c.name));
            push_rules(&mut b, c, &now);
        }
    }
    b
}

fn push_rules(b: &mut Batch, c: &Chain, nets: &[&FwNetwork]) {
    for r in (c.rules)(nets) {
        b.push_text(format!("add rule {} {TABLE} {} {r}", c.family, c.name));
    }
}

/// Adds or deletes `elems` in `s`; nothing when there are none (nft rejects an empty
/// element list).
fn push_elements(b: &mut Batch, add: bool, s: &Collection, elems: impl Iterator<Item = Element>) {
    let elems: Vec<Element> = elems.collect();
    if elems.is_empty() {
        return;
    }
    b.cmds.push(Command::Elements(ElementChange {
        add,
        family: s.family,
        table: TABLE.to_string(),
        set: s.name.to_string(),
        elems,
    }));
}

/// Networks in a stable order (by name), so a reordered list is no change and rules
/// come out the same in `full` and `diff`.
fn networks(state: &FwState) -> Vec<&FwNetwork> {
    let mut v: Vec<&FwNetwork> = state.networks.iter().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v.dedup_by(|a, b| a == b);
    v
}

/// Whether nft can take `name` as an interface name in quotes: a valid Linux interface
/// name that cannot break the quoting.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' && c != '/' && c != ':')
}

/// `"name"` for a rule, None for a name `valid_ifname` refuses.
pub(super) fn ifname(name: &str) -> Option<String> {
    valid_ifname(name).then(|| format!("\"{name}\""))
}

/// `name` as an element part, None for a name `valid_ifname` refuses.
pub(super) fn ifname_part(name: &str) -> Option<Part> {
    valid_ifname(name).then(|| Part::Ifname(name.to_string()))
}

/// A network name fit for a rule comment: no quotes or control characters, bounded.
pub(super) fn comment_name(name: &str) -> String {
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

/// A set's elements, from their keys.
pub(super) fn set_of(keys: impl Iterator<Item = Vec<Part>>) -> Elements {
    keys.map(|key| {
        let e = Element { key, value: None };
        (Parts(&e.key).to_string(), e)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fixtures::*;
    use std::net::IpAddr;

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
add rule inet netd forward meta mark & 0x00000100 == 0x00000100 oifname @bridges accept comment "published ports (eBPF routing mesh)"
add rule inet netd forward iifname @bridges oifname @bridges drop comment "isolation between networks"
add rule inet netd forward oifname @bridges drop comment "into a network only through published ports"
add rule inet netd forward iifname @bridges accept comment "networks to the outside"
add rule inet netd published meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @pub4_addr comment "IPv4, one host address"
add rule inet netd published meta nfproto ipv4 dnat ip to meta l4proto . th dport map @pub4_any comment "IPv4, every host address"
add rule inet netd published ip6 daddr != ::1 dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6_addr comment "IPv6, one host address"
add rule inet netd published ip6 daddr != ::1 dnat ip6 to meta l4proto . th dport map @pub6_any comment "IPv6, every host address"
add rule inet netd prerouting fib daddr type local jump published comment "published ports"
add rule inet netd output fib daddr type local jump published comment "published ports, from the host itself"
add rule inet netd postrouting oifname @bridges ct status dnat meta mark & 0x00001000 == 0x00001000 accept comment "service clients keep their address"
add rule inet netd postrouting ip saddr 10.89.0.0/24 oifname != "netd-frontend" masquerade comment "net frontend"
add rule inet netd postrouting oifname "netd-frontend" ip saddr 10.89.0.0/24 ct status dnat meta mark & 0x00001000 == 0 masquerade comment "net frontend: hairpin"
add rule inet netd postrouting ip6 saddr fd00:89::/64 oifname != "netd-frontend" masquerade comment "net frontend"
add rule inet netd postrouting oifname "netd-frontend" ip6 saddr fd00:89::/64 ct status dnat meta mark & 0x00001000 == 0 masquerade comment "net frontend: hairpin"
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

    #[test]
    fn full_of_sample() {
        let got = full(&sample(), "netd test").to_string();
        for (i, (g, w)) in got.lines().zip(SAMPLE_FULL.lines()).enumerate() {
            assert_eq!(g, w, "line {}", i + 1);
        }
        assert_eq!(got, SAMPLE_FULL);
    }

    #[test]
    fn full_is_the_same_for_reordered_networks() {
        let a = sample();
        let mut b = sample();
        b.networks.reverse();
        assert_eq!(
            full(&a, "netd test").to_string(),
            full(&b, "netd test").to_string()
        );
        assert_eq!(diff(&a, &b).to_string(), "");
    }

    #[test]
    fn full_never_flushes_or_deletes_the_user_chain() {
        let mut states = vec![FwState::default(), sample()];
        // A network named like the user chain must not fool anything either.
        let mut odd = sample();
        odd.networks[0].name = "user".into();
        states.push(odd);
        for st in &states {
            let b = full(st, "netd test").to_string();
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
        assert_eq!(diff(&sample(), &sample()).to_string(), "");
        assert_eq!(diff(&FwState::default(), &FwState::default()).to_string(), "");
    }

    #[test]
    fn endpoint_change_is_elements_only() {
        let old = sample();
        let mut new = sample();
        new.endpoints.remove(1); // vethB: its published port goes with it
        new.ports
            .retain(|p| p.target != "10.89.0.3".parse::<IpAddr>().unwrap());
        new.endpoints.push(ep("vethD", 5, "10.89.1.3", None));
        // All typed, so the kernel layer can send it without libnftables.
        assert!(diff(&old, &new).element_changes().is_some());
        let d = diff(&old, &new).to_string();
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
            diff(&old, &new).to_string(),
            "delete element inet netd pub4_any { tcp . 8080 }\n\
             add element inet netd pub4_any { tcp . 8080 : 10.89.0.3 . 80 }\n"
        );
    }

    #[test]
    fn network_change_regenerates_postrouting_only() {
        let old = sample();
        let mut new = sample();
        new.networks.push(net("db", "netd-db", "10.89.2.0/24", None));
        assert!(diff(&old, &new).element_changes().is_none());
        let d = diff(&old, &new).to_string();
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
        let back = diff(&new, &old).to_string();
        assert!(
            back.contains("delete element inet netd bridges { \"netd-db\" }"),
            "{back}"
        );
        assert!(!back.contains("netd-db\" masquerade"), "{back}");
    }

    #[test]
    fn names_that_would_break_the_syntax_are_left_out() {
        let mut st = sample();
        st.endpoints.push(ep("ve\"th; flush", 9, "10.89.0.9", None));
        st.networks[0].name = "front \"end\"".into();
        let b = full(&st, "netd test").to_string();
        assert!(!b.contains("ve\"th") && !b.contains("front \"end"), "{b}");
        assert!(b.contains("comment \"net front__end_\""), "{b}");
    }

    #[test]
    fn empty_state_makes_the_skeleton() {
        let b = full(&FwState::default(), "netd test").to_string();
        assert!(!b.contains("add element"), "{b}");
        assert!(b.contains("add rule inet netd forward jump user"), "{b}");
        assert_eq!(
            diff(&FwState::default(), &sample())
                .to_string()
                .matches("flush")
                .count(),
            1
        );
    }
}
