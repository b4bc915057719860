//! The socket-LB maps netd wants (`desired`) and the writes from what they hold to that
//! (`diff`): pure, so the slot and id choices are unit-tested without a kernel.
//!
//! Stability is the point of most of this file: a service keeps its reverse-NAT index
//! and a backend its id for as long as they exist (read back from the maps after a
//! restart), and a backend keeps its slot; a removed backend's slot takes the last one
//! (swap-remove), so removing one backend writes the master entry, one slot and one
//! delete, whatever the number of backends.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use crate::firewall::ruleset::services::FwService;
use crate::kernel::bpf::{Lb4Op, Lb4Tables};
use crate::kernel::bpf_types::*;
use crate::model::Proto;

/// The id of a network in the maps: FNV-1a of its name (never 0). A collision would
/// merge two networks' scopes, at odds of 1 in 2^32 per pair.
pub fn net_id(network: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in network.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

fn proto_num(p: Proto) -> u8 {
    match p {
        Proto::Tcp => libc::IPPROTO_TCP as u8,
        Proto::Udp => libc::IPPROTO_UDP as u8,
    }
}

/// Lowest value >= 1 not in `used`.
fn lowest_free<T: Ord + Copy + From<u8> + std::ops::Add<Output = T>>(used: &BTreeSet<T>) -> T {
    let mut v = T::from(1);
    for &u in used.range(T::from(1)..) {
        if u != v {
            break;
        }
        v = v + T::from(1);
    }
    v
}

/// What the maps should hold for `services`, given what they hold (`held`, for stable
/// ids and slots) and who may use each network's VIPs (`members`: network -> netns
/// cookies; `host` is added to every network). IPv6 VIPs are left out (no v6 programs
/// yet).
pub fn desired(
    services: &[FwService],
    members: &BTreeMap<String, BTreeSet<u64>>,
    host: u64,
    held: &Lb4Tables,
) -> Lb4Tables {
    let mut want = Lb4Tables::default();
    let held_ids: BTreeMap<Lb4Backend, u32> = held.backends.iter().map(|(id, b)| (*b, *id)).collect();
    let mut used_ids: BTreeSet<u32> = held.backends.keys().copied().collect();
    let mut used_rev: BTreeSet<u16> = held.reverse_nat.keys().copied().collect();
    let mut ids: BTreeMap<Lb4Backend, u32> = BTreeMap::new();
    let mut networks = BTreeSet::new();
    for s in services {
        for v in &s.vips {
            let IpAddr::V4(vip) = v.vip else { continue };
            let net = net_id(&v.network);
            networks.insert(v.network.clone());
            let mut ips: Vec<Ipv4Addr> = v
                .backends
                .iter()
                .filter_map(|b| match b {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                })
                .collect();
            ips.sort();
            ips.dedup();
            for &(port, target, proto) in &s.ports {
                let p = proto_num(proto);
                let master = Lb4Key::new(vip, port, p, 0);
                if want.services.contains_key(&master) {
                    continue; // the same VIP:port twice (two networks cannot share a VIP)
                }
                let rev = match held.services.get(&master) {
                    Some(m) if m.rev_nat_index != 0 => m.rev_nat_index,
                    _ => {
                        let r = lowest_free(&used_rev);
                        used_rev.insert(r);
                        r
                    }
                };
                let mut bids = Vec::new();
                for &ip in &ips {
                    let be = Lb4Backend::new(ip, target, p);
                    let id = *ids.entry(be).or_insert_with(|| match held_ids.get(&be) {
                        Some(&id) => id,
                        None => {
                            let id = lowest_free(&used_ids);
                            used_ids.insert(id);
                            id
                        }
                    });
                    want.backends.insert(id, be);
                    bids.push(id);
                }
                let slots = keep_slots(&held_slots(held, &master), &bids);
                let affinity = s.affinity.unwrap_or(0);
                want.services.insert(
                    master,
                    Lb4Service {
                        backend_id: 0,
                        count: slots.len() as u16,
                        rev_nat_index: rev,
                        net_id: net,
                        affinity_secs: affinity,
                    },
                );
                for (i, id) in slots.iter().enumerate() {
                    want.services.insert(
                        Lb4Key::new(vip, port, p, i as u16 + 1),
                        Lb4Service {
                            backend_id: *id,
                            count: 0,
                            rev_nat_index: rev,
                            net_id: net,
                            affinity_secs: 0,
                        },
                    );
                }
                want.reverse_nat.insert(
                    rev,
                    Lb4ReverseNat {
                        address: master.address,
                        port: master.dport,
                        pad: 0,
                    },
                );
            }
        }
    }
    for n in networks {
        let net = net_id(&n);
        let cookies = members
            .get(&n)
            .into_iter()
            .flatten()
            .chain(std::iter::once(&host));
        for &c in cookies {
            want.scope.insert(Lb4ScopeKey {
                netns_cookie: c,
                net_id: net,
                pad: 0,
            });
        }
    }
    want
}

/// The writes for a change from `old` to `new` (the maps hold `held`, which is
/// `desired(old, ..)`), planning only the services that differ: what a backend change
/// costs does not grow with the number of services. Scopes follow the networks that
/// have a service, recounted from `new` (names only).
pub fn diff_changed(
    old: &[FwService],
    new: &[FwService],
    members: &BTreeMap<String, BTreeSet<u64>>,
    host: u64,
    held: &Lb4Tables,
) -> Vec<Lb4Op> {
    let key = |s: &FwService| (s.namespace.clone(), s.name.clone());
    let old_by: BTreeMap<_, &FwService> = old.iter().map(|s| (key(s), s)).collect();
    let new_by: BTreeMap<_, &FwService> = new.iter().map(|s| (key(s), s)).collect();
    let changed_old: Vec<FwService> = old
        .iter()
        .filter(|s| new_by.get(&key(s)) != Some(s))
        .cloned()
        .collect();
    let changed_new: Vec<FwService> = new
        .iter()
        .filter(|s| old_by.get(&key(s)) != Some(s))
        .cloned()
        .collect();
    // What the maps hold for the old versions: their service entries, reverse NAT and
    // backends.
    let mut sub = Lb4Tables::default();
    for s in &changed_old {
        for v in &s.vips {
            let IpAddr::V4(vip) = v.vip else { continue };
            for &(port, _, proto) in &s.ports {
                let master = Lb4Key::new(vip, port, proto_num(proto), 0);
                let Some(m) = held.services.get(&master) else {
                    continue;
                };
                sub.services.insert(master, *m);
                if let Some(r) = held.reverse_nat.get(&m.rev_nat_index) {
                    sub.reverse_nat.insert(m.rev_nat_index, *r);
                }
                for i in 1..=m.count {
                    let k = Lb4Key {
                        backend_slot: i,
                        ..master
                    };
                    if let Some(e) = held.services.get(&k) {
                        sub.services.insert(k, *e);
                        if let Some(b) = held.backends.get(&e.backend_id) {
                            sub.backends.insert(e.backend_id, *b);
                        }
                    }
                }
            }
        }
    }
    let mut want = desired(&changed_new, members, host, held);
    // Scopes: every network with a service in `new`, against all the maps hold.
    let nets: BTreeSet<&str> = new
        .iter()
        .flat_map(|s| {
            s.vips
                .iter()
                .filter(|v| v.vip.is_ipv4())
                .map(|v| v.network.as_str())
        })
        .collect();
    want.scope = nets
        .iter()
        .flat_map(|n| {
            let id = net_id(n);
            members
                .get(*n)
                .into_iter()
                .flatten()
                .chain(std::iter::once(&host))
                .map(move |&c| Lb4ScopeKey {
                    netns_cookie: c,
                    net_id: id,
                    pad: 0,
                })
        })
        .collect();
    sub.scope = held.scope.clone();
    let mut ops = diff(&sub, &want);
    // A backend an unchanged service holds already needs no write.
    ops.retain(|o| !matches!(o, Lb4Op::PutBackend(id, b) if held.backends.get(id) == Some(b)));
    // A backend of a changed service may be shared with a service that did not change:
    // kept while any slot outside the changed ones still names it.
    let gone: BTreeSet<u32> = ops
        .iter()
        .filter_map(|o| match o {
            Lb4Op::DelBackend(id) => Some(*id),
            _ => None,
        })
        .collect();
    if !gone.is_empty() {
        let still: BTreeSet<u32> = held
            .services
            .iter()
            .filter(|(k, v)| {
                k.backend_slot > 0 && !sub.services.contains_key(k) && gone.contains(&v.backend_id)
            })
            .map(|(_, v)| v.backend_id)
            .collect();
        ops.retain(|o| !matches!(o, Lb4Op::DelBackend(id) if still.contains(id)));
    }
    // An id `desired` handed out may equal one of a backend deleted above only if held
    // no longer had it; held has it until the deletes run, so ids never collide.
    ops
}

/// Applies `ops` to `t`, as the kernel maps do.
pub fn apply(t: &mut Lb4Tables, ops: &[Lb4Op]) {
    for op in ops {
        match op {
            Lb4Op::PutBackend(i, b) => drop(t.backends.insert(*i, *b)),
            Lb4Op::PutReverseNat(i, r) => drop(t.reverse_nat.insert(*i, *r)),
            Lb4Op::PutScope(k) => drop(t.scope.insert(*k)),
            Lb4Op::PutService(k, v) => drop(t.services.insert(*k, *v)),
            Lb4Op::DelService(k) => drop(t.services.remove(k)),
            Lb4Op::DelScope(k) => drop(t.scope.remove(k)),
            Lb4Op::DelReverseNat(i) => drop(t.reverse_nat.remove(i)),
            Lb4Op::DelBackend(i) => drop(t.backends.remove(i)),
        }
    }
}

/// The backend ids of `master`'s slots as the maps hold them.
fn held_slots(held: &Lb4Tables, master: &Lb4Key) -> Vec<u32> {
    let n = held.services.get(master).map(|m| m.count).unwrap_or(0);
    (1..=n)
        .filter_map(|i| {
            held.services
                .get(&Lb4Key {
                    backend_slot: i,
                    ..*master
                })
                .map(|s| s.backend_id)
        })
        .collect()
}

/// New slot order: backends that stay keep their slot, a removed one's slot takes the
/// last (swap-remove), new ones are appended.
fn keep_slots(old: &[u32], want: &[u32]) -> Vec<u32> {
    let wanted: BTreeSet<u32> = want.iter().copied().collect();
    let mut slots: Vec<u32> = Vec::new();
    let mut seen = BTreeSet::new();
    for &id in old {
        if seen.insert(id) {
            slots.push(id);
        }
    }
    let mut i = 0;
    while i < slots.len() {
        if wanted.contains(&slots[i]) {
            i += 1;
        } else {
            slots.swap_remove(i);
        }
    }
    let have: BTreeSet<u32> = slots.iter().copied().collect();
    slots.extend(want.iter().filter(|id| !have.contains(id)));
    slots
}

/// The writes that turn `held` into `want`, in an order where the programs never find
/// a slot past `count` or a backend id without its backend: new backends, reverse NAT
/// and scopes first; slots before the master entries that count them; then deletions,
/// master entries before their slots, backends last.
pub fn diff(held: &Lb4Tables, want: &Lb4Tables) -> Vec<Lb4Op> {
    let mut ops = Vec::new();
    for (id, b) in &want.backends {
        if held.backends.get(id) != Some(b) {
            ops.push(Lb4Op::PutBackend(*id, *b));
        }
    }
    for (id, r) in &want.reverse_nat {
        if held.reverse_nat.get(id) != Some(r) {
            ops.push(Lb4Op::PutReverseNat(*id, *r));
        }
    }
    for k in want.scope.difference(&held.scope) {
        ops.push(Lb4Op::PutScope(*k));
    }
    let changed = |k: &Lb4Key, v: &Lb4Service| held.services.get(k) != Some(v);
    for master in [false, true] {
        for (k, v) in &want.services {
            if (k.backend_slot == 0) == master && changed(k, v) {
                ops.push(Lb4Op::PutService(*k, *v));
            }
        }
    }
    for master in [true, false] {
        for k in held.services.keys() {
            if (k.backend_slot == 0) == master && !want.services.contains_key(k) {
                ops.push(Lb4Op::DelService(*k));
            }
        }
    }
    for k in held.scope.difference(&want.scope) {
        ops.push(Lb4Op::DelScope(*k));
    }
    for id in held.reverse_nat.keys() {
        if !want.reverse_nat.contains_key(id) {
            ops.push(Lb4Op::DelReverseNat(*id));
        }
    }
    for id in held.backends.keys() {
        if !want.backends.contains_key(id) {
            ops.push(Lb4Op::DelBackend(*id));
        }
    }
    ops
}

#[cfg(test)]
#[path = "ebpf_plan_tests.rs"]
mod tests;
