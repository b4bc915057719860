//! Property tests: the allocator and the subnet picker against brute-force models that
//! enumerate every address (or every default block) of small spaces.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use proptest::prelude::*;

use super::{bounds, from_u128, new_pool, overlaps, to_u128, DefaultPool, IpamConfig, IpamError, Pool};
use crate::model::ParsedSubnet;

#[derive(Debug, Clone)]
enum Op {
    Dynamic(u8),
    /// Offset from the subnet's first address; may run past its end.
    Static(u16, u8),
    Release(u16),
    ReleaseOwner(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4).prop_map(Op::Dynamic),
        2 => (any::<u16>(), 0u8..4).prop_map(|(o, w)| Op::Static(o, w)),
        2 => any::<u16>().prop_map(Op::Release),
        1 => (0u8..4).prop_map(Op::ReleaseOwner),
    ]
}

/// A small subnet anywhere in the space (the top edge included), with an optional
/// gateway and ip-range inside it.
#[derive(Debug, Clone)]
struct Setup {
    req: ParsedSubnet,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<bool>(),
        0u32..=6,
        any::<u128>(),
        any::<u16>(),
        any::<bool>(),
        0u8..=3,
        any::<u16>(),
        any::<bool>(),
    )
        .prop_map(
            |(v6, host_bits_less, raw, gw, has_gw, range_extra, range_idx, has_range)| {
                let bits: u32 = if v6 { 128 } else { 32 };
                let host_bits = 8 - host_bits_less.min(6); // /24../30 or /120../126
                let prefix = (bits - host_bits) as u8;
                let size = 1u128 << host_bits;
                let raw = if v6 { raw } else { raw & u128::from(u32::MAX) };
                let first = raw & !(size - 1);
                let subnet = IpNetwork::new(from_u128(first, v6), prefix).unwrap();
                // Gateway anywhere but the network (and IPv4 broadcast) address.
                let usable = if v6 { size - 1 } else { size - 2 };
                let gateway = has_gw.then(|| from_u128(first + 1 + u128::from(gw) % usable, v6));
                let rp = (u32::from(prefix) + u32::from(range_extra)).min(bits) as u8;
                let blocks = 1u128 << (rp - prefix);
                let rsize = size / blocks;
                let rfirst = first + (u128::from(range_idx) % blocks) * rsize;
                let ip_range = has_range.then(|| IpNetwork::new(from_u128(rfirst, v6), rp).unwrap());
                Setup {
                    req: ParsedSubnet {
                        subnet,
                        gateway,
                        ip_range,
                    },
                }
            },
        )
}

fn reserved(p: &Pool, v: u128) -> bool {
    let (first, last) = bounds(&p.subnet);
    v == first || (!p.subnet.is_ipv6() && v == last) || v == to_u128(p.gateway)
}

/// What a dynamic allocation must return: the first free address after the cursor in
/// range order, wrapping; found by enumerating the whole range.
fn expected_dynamic(p: &Pool, model: &BTreeMap<u128, String>) -> Option<u128> {
    let (lo, hi) = bounds(&p.ip_range.unwrap_or(p.subnet));
    let start = match p.cursor.map(to_u128).filter(|c| (lo..=hi).contains(c)) {
        Some(c) => c.checked_add(1),
        None => Some(lo),
    };
    let free = |v: &u128| !reserved(p, *v) && !model.contains_key(v);
    match start {
        Some(s) if s <= hi => (s..=hi).find(free).or_else(|| (lo..s).find(free)),
        _ => (lo..=hi).find(free),
    }
}

fn expected_static(p: &Pool, v: u128, model: &BTreeMap<u128, String>) -> Result<(), &'static str> {
    let (first, last) = bounds(&p.subnet);
    if v < first || v > last {
        Err("not in subnet")
    } else if v == to_u128(p.gateway) {
        Err("gateway")
    } else if reserved(p, v) {
        Err("reserved")
    } else if model.contains_key(&v) {
        Err("in use")
    } else {
        Ok(())
    }
}

fn kind(e: &IpamError) -> &'static str {
    match e {
        IpamError::NotInSubnet { .. } => "not in subnet",
        IpamError::IsGateway { .. } => "gateway",
        IpamError::Reserved { .. } => "reserved",
        IpamError::InUse { .. } => "in use",
        _ => "other",
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn allocator_matches_brute_force(s in setup(), ops in proptest::collection::vec(op(), 1..120)) {
        let v6 = s.req.subnet.is_ipv6();
        let mut p = new_pool(&IpamConfig::default(), "net", v6, Some(&s.req), &[], &[]).unwrap();
        let (first, _) = bounds(&p.subnet);
        let top = if v6 { u128::MAX } else { u128::from(u32::MAX) };
        let (lo, hi) = bounds(&p.ip_range.unwrap_or(p.subnet));
        let mut model: BTreeMap<u128, String> = BTreeMap::new();
        let owner = |w: u8| format!("s{w}/net");
        for op in ops {
            match op {
                Op::Dynamic(w) => {
                    let want = expected_dynamic(&p, &model);
                    match p.allocate(&owner(w), None) {
                        Ok(a) => {
                            let v = to_u128(a);
                            prop_assert_eq!(Some(v), want);
                            prop_assert!((lo..=hi).contains(&v) && !reserved(&p, v));
                            prop_assert!(model.insert(v, owner(w)).is_none(), "duplicate {}", a);
                        }
                        Err(e) => {
                            prop_assert!(matches!(e, IpamError::Exhausted { .. }), "{}", e);
                            prop_assert_eq!(want, None, "refused although a free address exists");
                        }
                    }
                }
                Op::Static(off, w) => {
                    let v = (first.saturating_add(u128::from(off) % 300)).min(top);
                    let a = from_u128(v, v6);
                    let want = expected_static(&p, v, &model);
                    let got = p.allocate(&owner(w), Some(a));
                    prop_assert_eq!(got.as_ref().map(|_| ()).map_err(kind), want);
                    if got.is_ok() {
                        prop_assert_eq!(got, Ok(a));
                        model.insert(v, owner(w));
                    }
                }
                Op::Release(off) => {
                    let v = (first.saturating_add(u128::from(off) % 300)).min(top);
                    prop_assert_eq!(p.release(from_u128(v, v6)), model.remove(&v).is_some());
                }
                Op::ReleaseOwner(w) => {
                    let before = model.len();
                    model.retain(|_, o| *o != owner(w));
                    prop_assert_eq!(p.release_owner(&owner(w)), before - model.len());
                }
            }
            let leases: BTreeMap<u128, String> =
                p.leases.iter().map(|(k, o)| (to_u128(*k), o.clone())).collect();
            prop_assert_eq!(&leases, &model);
            prop_assert!(p.leases.keys().all(|k| p.contains(*k) && !reserved(&p, to_u128(*k))));
            let free = (lo..=hi).filter(|v| !reserved(&p, *v) && !model.contains_key(v)).count();
            prop_assert_eq!(p.free_count(), free as u128);
        }
    }
}

/// Random prefixes that often collide with the default pools.
fn prefix() -> impl Strategy<Value = IpNetwork> {
    let base = prop_oneof![Just(0x0a00_0000u32), Just(0xac10_0000u32), Just(0xc0a8_0000u32)];
    (base, any::<u32>(), 8u8..=28).prop_map(|(b, r, len)| {
        let raw = b | (r & 0x000f_ffff);
        let mask = u32::MAX << (32 - u32::from(len));
        IpNetwork::new(IpAddr::V4((raw & mask).into()), len).unwrap()
    })
}

/// Every block the default config could hand out, in the order it tries them.
fn default_blocks(cfg: &IpamConfig) -> Vec<IpNetwork> {
    let mut out = Vec::new();
    for DefaultPool { base, size } in &cfg.pools4 {
        let (b0, b1) = bounds(base);
        let step = 1u128 << (32 - u32::from(*size));
        let mut c = b0;
        while c <= b1 {
            out.push(IpNetwork::new(from_u128(c, false), *size).unwrap());
            c += step;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn new_pool_never_overlaps(
        users in proptest::collection::vec(prefix(), 0..8),
        routes in proptest::collection::vec(prefix(), 0..4),
        picks in 1usize..6,
    ) {
        let cfg = IpamConfig::default();
        let mut pools: Vec<Pool> = Vec::new();
        for (i, u) in users.iter().enumerate() {
            let req = ParsedSubnet { subnet: *u, gateway: None, ip_range: None };
            let existing: Vec<&Pool> = pools.iter().collect();
            let clash = pools.iter().any(|p| overlaps(&p.subnet, u)) || routes.iter().any(|r| overlaps(r, u));
            match new_pool(&cfg, &format!("u{i}"), false, Some(&req), &existing, &routes) {
                Ok(p) => {
                    prop_assert!(!clash);
                    prop_assert_eq!(p.subnet, *u);
                    pools.push(p);
                }
                Err(e) => {
                    prop_assert!(clash, "{}", e);
                    let named = matches!(e, IpamError::OverlapsNetwork { .. } | IpamError::OverlapsHostRoute { .. });
                    prop_assert!(named, "{}", e);
                }
            }
        }
        let blocks = default_blocks(&cfg);
        for i in 0..picks {
            let existing: Vec<&Pool> = pools.iter().collect();
            let free = |b: &IpNetwork| {
                !pools.iter().any(|p| overlaps(&p.subnet, b)) && !routes.iter().any(|r| overlaps(r, b))
            };
            let want = blocks.iter().copied().find(free);
            match new_pool(&cfg, &format!("d{i}"), false, None, &existing, &routes) {
                Ok(p) => {
                    prop_assert_eq!(Some(p.subnet), want, "not the first free default block");
                    prop_assert!(pools.iter().all(|q| !overlaps(&q.subnet, &p.subnet)));
                    prop_assert!(routes.iter().all(|r| !overlaps(r, &p.subnet)));
                    pools.push(p);
                }
                Err(e) => {
                    prop_assert_eq!(e, IpamError::PoolsExhausted { family: "IPv4" });
                    prop_assert_eq!(want, None, "refused although a default block is free");
                }
            }
        }
    }
}
