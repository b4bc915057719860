//! Encrypted overlay networks in IPsec mode (`-o encrypted`, as Docker's): the key ring
//! the cluster shares, its rotation, and what each node's kernel must hold for it. Pure:
//! the agent reads the store, asks this module, and applies the answer
//! (`kernel::xfrm` for SAs and policies, nftables for the rules).
//!
//! **Datapath.** A network's VXLAN packets to another node go inside ESP in transport
//! mode (AES-GCM, `kernel::xfrm::AEAD_ALG`). nftables marks the VXLAN packets of
//! encrypted networks (by VNI) as they leave, and one outbound policy per peer node
//! selects marked UDP to the data port, so a plain network on the same port stays plain.
//! Each node holds, per peer: an inbound SA for every key of the ring and an outbound SA
//! for the primary key. SPIs are derived from (source, destination, key epoch), so every
//! node computes the same ones without talking.
//!
//! **Fail closed.** The VXLAN UDP socket takes packets before the kernel's inbound policy
//! check, so an unprotected packet would be decapsulated: nftables drops VXLAN of an
//! encrypted VNI that arrives without an IPsec secpath (`meta ipsec missing`), and
//! outbound VXLAN of one that is about to leave without a transform (`rt ipsec missing`,
//! e.g. to a node whose SA is not there yet). The rules exist before the network's VXLAN
//! device, and SAs and policy of a peer before any FDB entry pointing at it.
//!
//! **Keys.** A ring of at most three keys (`KeyRing`) under a restricted prefix of the
//! store (`keys::ipsec_ring`); the primary one sends, all are accepted. A rotation is
//! three steps, each level-triggered from the store, so no packet is ever sent with a
//! key its receiver lacks:
//! 1. a new key joins the ring (one node wins a compare-and-set: `begin_rotation`);
//!    every node installs inbound SAs for it and acknowledges the ring's version;
//! 2. once every registered node acknowledged, any node promotes it (`promote`):
//!    primary, and the oldest key beyond three leaves the ring;
//! 3. every node then adds its outbound SAs for the new key, deletes those of the old
//!    one, and the inbound SAs of the key that left.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::kernel::xfrm::{Policy, Sa, KEY_LEN, MARK};

/// Keys a ring keeps once a rotation is complete.
pub const RING: usize = 3;
/// ESP's bytes in transport mode with AES-GCM: 8 header + 8 IV + 16 ICV + 2 trailer +
/// up to 3 padding = 37, rounded up to keep the inner packets 4-byte aligned.
pub const ESP_OVERHEAD: u32 = 40;
/// WireGuard's bytes on IPv4: 20 IP + 8 UDP + 32 of its own header and tag.
pub const WG_OVERHEAD: u32 = 60;
/// The nftables table of the fail-closed rules (one per node).
pub const TABLE: &str = "netd-ipsec";

/// `--key-rotation`'s default: Docker's 12 hours.
pub const DEFAULT_ROTATION_S: u64 = 12 * 3600;

/// `12h`, `30m`, `90s`, `45` (seconds) or `0` (never on a timer).
pub fn parse_duration(v: &str) -> Result<u64, String> {
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{v:?}: expected a duration such as 12h, 30m or 90s"))?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{v:?}: expected a duration such as 12h, 30m or 90s")),
    };
    n.checked_mul(mul).ok_or_else(|| format!("{v:?}: too long"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    Ipsec,
    Wireguard,
}

impl Encryption {
    /// `-o encrypted` (empty, "true" or "ipsec"), `-o encrypted=wireguard`.
    pub fn parse(v: &str) -> Result<Encryption, String> {
        match v {
            "" | "true" | "1" | "ipsec" => Ok(Encryption::Ipsec),
            "wireguard" => Ok(Encryption::Wireguard),
            _ => Err(format!(
                "invalid -o encrypted={v}: expected ipsec (the default) or wireguard"
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::Ipsec => "ipsec",
            Encryption::Wireguard => "wireguard",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingKey {
    pub epoch: u32,
    /// `KEY_LEN` bytes, hex: the AES-128 key, then the 4-byte salt.
    pub key: String,
}

impl std::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RingKey(epoch {})", self.epoch)
    }
}

impl RingKey {
    pub fn bytes(&self) -> Option<[u8; KEY_LEN]> {
        let s = self.key.as_bytes();
        if s.len() != KEY_LEN * 2 {
            return None;
        }
        let mut out = [0u8; KEY_LEN];
        for (i, o) in out.iter_mut().enumerate() {
            let hex = std::str::from_utf8(&s[2 * i..2 * i + 2]).ok()?;
            *o = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(out)
    }
}

/// The cluster's IPsec keys (`/netd/v1/secrets/ipsec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRing {
    /// Oldest first.
    pub keys: Vec<RingKey>,
    /// The epoch of the key that sends.
    pub primary: u32,
    /// Bumped at every change: what nodes acknowledge.
    pub version: u64,
    /// Unix seconds of the last new key.
    pub rotated: u64,
    /// The nodes that could read the newest key: registered when it was made or since.
    /// One that is no longer registered still knows the keys, so the ring rotates
    /// (`left`). Empty in a ring from before this field: every node then is added.
    #[serde(default)]
    pub holders: BTreeSet<String>,
}

/// "Node `node` has applied ring `version`" (`/netd/v1/ipsec-acks/<node>`, under the
/// node's lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingAck {
    pub node: String,
    pub version: u64,
}

fn new_key(epoch: u32) -> RingKey {
    let k: [u8; KEY_LEN] = rand::random();
    RingKey {
        epoch,
        key: k.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

impl KeyRing {
    /// The first ring: one key, primary.
    pub fn first(now: u64) -> KeyRing {
        KeyRing {
            keys: vec![new_key(1)],
            primary: 1,
            version: 1,
            rotated: now,
            holders: BTreeSet::new(),
        }
    }

    pub fn newest(&self) -> u32 {
        self.keys.iter().map(|k| k.epoch).max().unwrap_or(0)
    }

    /// A key newer than the primary is waiting for every node's inbound SAs.
    pub fn pending(&self) -> bool {
        self.newest() > self.primary
    }

    pub fn primary_key(&self) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.epoch == self.primary)
    }

    /// Step 1: the ring with a new key, not yet sending, held by the nodes registered
    /// now (`nodes`). `None` while a rotation is under way (one at a time).
    pub fn begin_rotation(&self, now: u64, nodes: &BTreeSet<String>) -> Option<KeyRing> {
        if self.pending() {
            return None;
        }
        let mut r = self.clone();
        r.keys.push(new_key(self.newest() + 1));
        r.version += 1;
        r.rotated = now;
        r.holders = nodes.clone();
        Some(r)
    }

    /// The holders of the keys that are no longer registered (`nodes`): nodes that
    /// left, knowing the keys.
    pub fn left(&self, nodes: &BTreeSet<String>) -> Vec<String> {
        self.holders.difference(nodes).cloned().collect()
    }

    /// The ring with the registered `nodes` among its holders; `None` when they are
    /// already. The version stays: the keys, and so what an ack means, do not change.
    pub fn with_holders(&self, nodes: &BTreeSet<String>) -> Option<KeyRing> {
        if nodes.is_subset(&self.holders) {
            return None;
        }
        let mut r = self.clone();
        r.holders.extend(nodes.iter().cloned());
        Some(r)
    }

    /// Step 2: the new key sends once every node in `nodes` acknowledged this version
    /// (`acks`); the oldest keys beyond `RING` leave. `None` when nothing is pending or
    /// a node has not caught up.
    pub fn promote(&self, nodes: &BTreeSet<String>, acks: &[RingAck]) -> Option<KeyRing> {
        if !self.pending() {
            return None;
        }
        let acked: BTreeMap<&str, u64> = acks.iter().map(|a| (a.node.as_str(), a.version)).collect();
        if nodes
            .iter()
            .any(|n| acked.get(n.as_str()).is_none_or(|&v| v < self.version))
        {
            return None;
        }
        let mut r = self.clone();
        r.primary = self.newest();
        r.keys.sort_by_key(|k| k.epoch);
        let extra = r.keys.len().saturating_sub(RING);
        r.keys.drain(..extra);
        r.version += 1;
        Some(r)
    }

    /// Whether a rotation is due after `every` seconds (0: never on a timer).
    pub fn due(&self, now: u64, every: u64) -> bool {
        every > 0 && !self.pending() && now.saturating_sub(self.rotated) >= every
    }
}

/// The SPI of the SA from `src` to `dst` under key `epoch`: the same on both nodes, and
/// never below 256 (reserved).
pub fn spi(src: Ipv4Addr, dst: Ipv4Addr, epoch: u32) -> u32 {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&src.octets());
    b.extend_from_slice(&dst.octets());
    b.extend_from_slice(&epoch.to_be_bytes());
    let h = crate::model::fnv1a(&b);
    let spi = (h ^ (h >> 32)) as u32;
    if spi < 0x100 {
        spi | 0x100
    } else {
        spi
    }
}

/// A peer node as the SAs see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub name: String,
    pub addr: Ipv4Addr,
}

/// What node `me` (at `local`) must hold for `peers` under `ring`, with VXLAN on `port`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub inbound: BTreeSet<Sa>,
    pub outbound: BTreeSet<Sa>,
    pub policies: BTreeSet<Policy>,
}

pub fn wanted(local: Ipv4Addr, peers: &[Peer], ring: &KeyRing, port: u16) -> Wanted {
    let mut w = Wanted::default();
    let keys: Vec<(u32, [u8; KEY_LEN])> = ring
        .keys
        .iter()
        .filter_map(|k| Some((k.epoch, k.bytes()?)))
        .collect();
    for p in peers.iter().filter(|p| p.addr != local) {
        for &(epoch, key) in &keys {
            w.inbound.insert(Sa {
                src: p.addr,
                dst: local,
                spi: spi(p.addr, local, epoch),
                key,
            });
            if epoch == ring.primary {
                w.outbound.insert(Sa {
                    src: local,
                    dst: p.addr,
                    spi: spi(local, p.addr, epoch),
                    key,
                });
            }
        }
        w.policies.insert(Policy {
            src: local,
            dst: p.addr,
            dport: port,
        });
    }
    w
}

/// One change to the kernel's IPsec state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddSa(Sa),
    DelSa { dst: Ipv4Addr, spi: u32 },
    SetPolicy(Policy),
    DelPolicy(Policy),
}

/// The changes from `have` to `want`, in the order that never drops a packet: inbound
/// SAs, outbound SAs and policies first; then policies, outbound and inbound SAs that
/// go. (A peer's SAs and policy exist before the agent writes FDB entries towards it,
/// and go after they went: the agent runs this before and after the FDB diff.)
pub fn diff(have: &Wanted, want: &Wanted) -> Vec<Op> {
    let mut ops = Vec::new();
    let sa_keys =
        |s: &BTreeSet<Sa>| -> BTreeSet<(Ipv4Addr, u32)> { s.iter().map(|x| (x.dst, x.spi)).collect() };
    let (hin, hout) = (sa_keys(&have.inbound), sa_keys(&have.outbound));
    let (win, wout) = (sa_keys(&want.inbound), sa_keys(&want.outbound));
    ops.extend(
        want.inbound
            .iter()
            .filter(|s| !hin.contains(&(s.dst, s.spi)))
            .map(|s| Op::AddSa(s.clone())),
    );
    ops.extend(
        want.outbound
            .iter()
            .filter(|s| !hout.contains(&(s.dst, s.spi)))
            .map(|s| Op::AddSa(s.clone())),
    );
    ops.extend(
        want.policies
            .difference(&have.policies)
            .map(|p| Op::SetPolicy(*p)),
    );
    ops.extend(
        have.policies
            .difference(&want.policies)
            .map(|p| Op::DelPolicy(*p)),
    );
    ops.extend(hout.difference(&wout).map(|&(dst, spi)| Op::DelSa { dst, spi }));
    ops.extend(hin.difference(&win).map(|&(dst, spi)| Op::DelSa { dst, spi }));
    ops
}

/// How an encryption mode guards the VXLAN of its VNIs (one nftables table per mode).
pub struct Guard<'a> {
    pub table: &'a str,
    /// The mode's word in each rule's comment.
    pub what: &'a str,
    /// The mark `mark-out` sets, which the mode's policy or route selects on.
    pub mark: u32,
    /// The condition under which `out` drops a packet about to leave.
    pub out_drop: &'a str,
    /// The condition under which `in` drops a packet that arrived.
    pub in_drop: &'a str,
}

/// The rules of `g` for VNIs `vnis` on data port `port`, as one nftables batch that
/// replaces the table whole (no VNI: the table goes).
pub fn guard_batch(g: &Guard<'_>, vnis: &BTreeSet<u32>, port: u16) -> String {
    let t = g.table;
    let mut s = format!("table ip {t} {{}}\ndelete table ip {t}\n");
    if vnis.is_empty() {
        return s;
    }
    let each = |out: &mut String, rule: &str| {
        for v in vnis {
            out.push_str(&format!(
                "    udp dport {port} @th,96,24 {v:#x} {rule} comment \"{} overlay vni {v}\"\n",
                g.what
            ));
        }
    };
    s.push_str(&format!("table ip {t} {{\n"));
    s.push_str("  chain mark-out {\n    type route hook output priority mangle; policy accept;\n");
    each(&mut s, &format!("meta mark set meta mark | {:#010x}", g.mark));
    s.push_str("  }\n  chain out {\n    type filter hook postrouting priority filter; policy accept;\n");
    each(&mut s, &format!("{} counter drop", g.out_drop));
    s.push_str("  }\n  chain in {\n    type filter hook input priority filter; policy accept;\n");
    each(&mut s, &format!("{} counter drop", g.in_drop));
    s.push_str("  }\n}\n");
    s
}

/// The fail-closed rules for IPsec VNIs: no transform found on the way out, no ESP on
/// the way in.
pub fn nft_batch(vnis: &BTreeSet<u32>, port: u16) -> String {
    let g = Guard {
        table: TABLE,
        what: "encrypted",
        mark: MARK,
        out_drop: "rt ipsec missing",
        in_drop: "meta ipsec missing",
    };
    guard_batch(&g, vnis, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn peers() -> Vec<Peer> {
        ["10.9.0.1", "10.9.0.2", "10.9.0.3"]
            .iter()
            .enumerate()
            .map(|(i, a)| Peer {
                name: format!("h{}", i + 1),
                addr: ip(a),
            })
            .collect()
    }

    #[test]
    fn both_ends_derive_the_same_spis_and_each_direction_its_own() {
        let (a, b) = (ip("10.9.0.1"), ip("10.9.0.2"));
        let r = KeyRing::first(0);
        let wa = wanted(a, &peers(), &r, 4789);
        let wb = wanted(b, &peers(), &r, 4789);
        let out_a: BTreeSet<(Ipv4Addr, u32)> = wa.outbound.iter().map(|s| (s.dst, s.spi)).collect();
        let in_b: BTreeSet<(Ipv4Addr, u32)> = wb.inbound.iter().map(|s| (s.dst, s.spi)).collect();
        assert!(out_a.contains(&(b, spi(a, b, 1))));
        assert!(in_b.contains(&(b, spi(a, b, 1))));
        assert_ne!(spi(a, b, 1), spi(b, a, 1));
        assert_ne!(spi(a, b, 1), spi(a, b, 2));
        assert_eq!(wa.policies.len(), 2);
        assert_eq!(wa.inbound.len(), 2);
        // Each node's inbound SAs have distinct (dst, spi): the kernel's key.
        let keys: BTreeSet<_> = wa.inbound.iter().map(|s| (s.dst, s.spi)).collect();
        assert_eq!(keys.len(), wa.inbound.len());
    }

    #[test]
    fn a_rotation_sends_with_the_new_key_only_after_every_node_accepts_it() {
        let nodes: BTreeSet<String> = ["h1", "h2"].iter().map(|s| s.to_string()).collect();
        let r1 = KeyRing::first(100);
        assert!(r1.promote(&nodes, &[]).is_none(), "nothing pending");
        let r2 = r1.begin_rotation(200, &nodes).unwrap();
        assert!(r2.begin_rotation(201, &nodes).is_none(), "one rotation at a time");
        assert_eq!((r2.primary, r2.newest(), r2.keys.len()), (1, 2, 2));
        let ack = |n: &str, v| RingAck {
            node: n.into(),
            version: v,
        };
        assert!(r2.promote(&nodes, &[ack("h1", r2.version)]).is_none());
        assert!(r2
            .promote(&nodes, &[ack("h1", r2.version), ack("h2", r1.version)])
            .is_none());
        let r3 = r2
            .promote(&nodes, &[ack("h1", r2.version), ack("h2", r2.version)])
            .unwrap();
        assert_eq!((r3.primary, r3.keys.len()), (2, 2));
        // While pending, the new key is accepted but the old one still sends.
        let w = wanted(ip("10.9.0.1"), &peers(), &r2, 4789);
        assert_eq!(w.inbound.len(), 4);
        assert!(w.outbound.iter().all(|s| s.spi == spi(s.src, s.dst, 1)));
        // Three more rotations: the ring never holds more than three once promoted.
        let mut r = r3;
        for _ in 0..3 {
            let p = r.begin_rotation(300, &nodes).unwrap();
            let all: Vec<RingAck> = nodes.iter().map(|n| ack(n, p.version)).collect();
            r = p.promote(&nodes, &all).unwrap();
            assert_eq!(r.keys.len(), RING);
            assert_eq!(r.primary, r.newest());
        }
        assert_eq!(r.keys.first().unwrap().epoch, r.primary - 2);
    }

    /// A node that leaves knows the keys: the ring notes who could read its newest key
    /// (those registered at the rotation and those who joined since) and names the
    /// ones no longer registered; a new key's holders are the nodes of its rotation.
    #[test]
    fn a_node_that_knew_the_keys_and_left_is_named() {
        let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
        let r = KeyRing::first(0);
        assert!(
            r.left(&set(&["h1"])).is_empty(),
            "an old ring has no holders: nobody left"
        );
        let r = r.with_holders(&set(&["h1", "h2"])).unwrap();
        assert!(r.with_holders(&set(&["h2"])).is_none(), "already a holder");
        let joined = r.with_holders(&set(&["h1", "h2", "h3"])).unwrap();
        assert_eq!(joined.version, r.version, "the keys did not change");
        assert_eq!(joined.holders, set(&["h1", "h2", "h3"]));
        assert_eq!(joined.left(&set(&["h1", "h2"])), vec!["h3".to_string()]);
        let next = joined.begin_rotation(5, &set(&["h1", "h2"])).unwrap();
        assert!(
            next.left(&set(&["h1", "h2"])).is_empty(),
            "h3 never saw the new key"
        );
    }

    #[test]
    fn the_timer_rotates_when_due_and_never_twice_at_once() {
        let r = KeyRing::first(1000);
        assert!(!r.due(1000 + 3599, 3600));
        assert!(r.due(1000 + 3600, 3600));
        assert!(!r.due(1_000_000, 0), "0: only when asked");
        let p = r.begin_rotation(5000, &BTreeSet::new()).unwrap();
        assert!(
            !p.due(1_000_000, 3600),
            "a rotation under way is not started again"
        );
    }

    #[test]
    fn a_key_change_adds_before_it_deletes() {
        let a = ip("10.9.0.1");
        let r1 = KeyRing::first(0);
        let nodes: BTreeSet<String> = ["h1".to_string()].into();
        let r2 = r1.begin_rotation(1, &nodes).unwrap();
        let r3 = r2
            .promote(
                &nodes,
                &[RingAck {
                    node: "h1".into(),
                    version: r2.version,
                }],
            )
            .unwrap();
        let (w1, w3) = (wanted(a, &peers(), &r1, 4789), wanted(a, &peers(), &r3, 4789));
        let ops = diff(&w1, &w3);
        let first_del = ops.iter().position(|o| matches!(o, Op::DelSa { .. })).unwrap();
        let last_add = ops.iter().rposition(|o| matches!(o, Op::AddSa(_))).unwrap();
        assert!(last_add < first_del, "{ops:?}");
        // Inbound SAs of key 1 stay (still in the ring); the outbound ones go.
        let dels: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                Op::DelSa { dst, .. } => Some(*dst),
                _ => None,
            })
            .collect();
        assert_eq!(dels.len(), 2);
        assert!(dels.iter().all(|d| *d != a));
        assert!(diff(&w3, &w3).is_empty());
        // A peer that left: its policy, then its SAs.
        let w_gone = wanted(a, &peers()[..2], &r3, 4789);
        let ops = diff(&w3, &w_gone);
        assert!(matches!(ops[0], Op::DelPolicy(_)), "{ops:?}");
    }

    #[test]
    fn keys_parse_and_stay_out_of_debug_output() {
        let r = KeyRing::first(0);
        assert!(r.keys[0].bytes().is_some());
        assert!(!format!("{r:?}").contains(&r.keys[0].key));
        assert!(RingKey {
            epoch: 1,
            key: "zz".into()
        }
        .bytes()
        .is_none());
        assert_eq!(Encryption::parse("").unwrap(), Encryption::Ipsec);
        assert_eq!(Encryption::parse("wireguard").unwrap(), Encryption::Wireguard);
        assert!(Encryption::parse("aes").is_err());
        assert_eq!(parse_duration("12h"), Ok(43200));
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5w").is_err());
    }

    #[test]
    fn the_rules_name_each_encrypted_vni() {
        let b = nft_batch(&[256u32, 4097].into(), 4789);
        assert!(b.contains("udp dport 4789 @th,96,24 0x100 meta ipsec missing counter drop"));
        assert!(b.contains("@th,96,24 0x1001 rt ipsec missing"));
        assert!(b.starts_with("table ip netd-ipsec {}\ndelete table ip netd-ipsec\n"));
        assert_eq!(nft_batch(&BTreeSet::new(), 4789).lines().count(), 2);
    }
}
