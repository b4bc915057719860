//! The socket-LB maps netd wants (`desired`) and the writes from what they hold to that
//! (`diff`): pure, so the slot and id choices are unit-tested without a kernel.
//!
//! Stability is the point of most of this file: a service keeps its reverse-NAT index
//! and a backend its id for as long as they exist (read back from the maps after a
//! restart), and a backend keeps its slot; a removed backend's slot takes the last one
//! (swap-remove), so removing one backend writes the master entry, one slot and one
//! delete, whatever the number of backends.

use std::collections::{BTreeMap, BTreeSet};

use crate::firewall::ruleset::services::FwService;
use crate::kernel::bpf::{LbOp, LbTables};
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

/// Ids in use, as the lowest free one is wanted: every id below `next` is used except
/// the `holes`. Kept in step with the maps (`Index`), so handing out an id costs no walk
/// over every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    next: u32,
    holes: BTreeSet<u32>,
}

impl Default for Ids {
    fn default() -> Ids {
        Ids {
            next: 1,
            holes: BTreeSet::new(),
        }
    }
}

impl Ids {
    fn of(used: impl IntoIterator<Item = u32>) -> Ids {
        let mut ids = Ids::default();
        for u in used {
            ids.used(u);
        }
        ids
    }

    fn used(&mut self, id: u32) {
        if id == 0 {
            return;
        }
        if id >= self.next {
            self.holes.extend(self.next..id);
            self.next = id + 1;
        } else {
            self.holes.remove(&id);
        }
    }

    fn release(&mut self, id: u32) {
        if id == 0 || id >= self.next {
            return;
        }
        if id + 1 == self.next {
            self.next = id;
            while self.next > 1 && self.holes.remove(&(self.next - 1)) {
                self.next -= 1;
            }
        } else {
            self.holes.insert(id);
        }
    }
}

/// Hands out the lowest free ids of `Ids` without changing it (the plan is pure; the
/// maps' writes update the index once they are done).
struct Taker<'a> {
    ids: &'a Ids,
    /// The last hole handed out: holes are handed out in order.
    hole: Option<u32>,
    next: u32,
}

impl<'a> Taker<'a> {
    fn new(ids: &'a Ids) -> Taker<'a> {
        Taker {
            ids,
            hole: None,
            next: ids.next,
        }
    }

    fn take(&mut self) -> u32 {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = self.hole.map_or(Unbounded, Excluded);
        if let Some(&h) = self.ids.holes.range((from, Unbounded)).next() {
            self.hole = Some(h);
            return h;
        }
        let v = self.next;
        self.next += 1;
        v
    }
}

/// What planning a change needs to know of the maps, kept in step with every write
/// (`apply_indexed`) instead of being rebuilt from all they hold: which id each
/// backend has, the free ids, how many slots name each backend and how many service
/// entries each network has. Planning one backend change then touches only the
/// services that changed, at 10 or at 10,000.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index<A> {
    ids: BTreeMap<LbBackend<A>, u32>,
    backend_ids: Ids,
    rev_ids: Ids,
    /// Backend id -> slots naming it.
    slot_refs: BTreeMap<u32, usize>,
    /// Network id -> master entries (one per VIP:port) on it.
    net_refs: BTreeMap<u32, usize>,
}

fn bump(m: &mut BTreeMap<u32, usize>, k: u32, up: bool) {
    if up {
        *m.entry(k).or_default() += 1;
    } else if let Some(n) = m.get_mut(&k) {
        *n -= 1;
        if *n == 0 {
            m.remove(&k);
        }
    }
}

impl<A> Default for Index<A> {
    fn default() -> Index<A> {
        Index {
            ids: BTreeMap::new(),
            backend_ids: Ids::default(),
            rev_ids: Ids::default(),
            slot_refs: BTreeMap::new(),
            net_refs: BTreeMap::new(),
        }
    }
}

impl<A: LbAddr> Index<A> {
    /// The index of what `t` holds (after a dump of the maps).
    pub fn of(t: &LbTables<A>) -> Index<A> {
        let mut idx = Index {
            ids: t.backends.iter().map(|(id, b)| (*b, *id)).collect(),
            backend_ids: Ids::of(t.backends.keys().copied()),
            rev_ids: Ids::of(t.reverse_nat.keys().map(|&r| u32::from(r))),
            ..Index::default()
        };
        for (k, v) in &t.services {
            idx.count(k, v, true);
        }
        idx
    }

    fn count(&mut self, k: &LbKey<A>, v: &Lb4Service, up: bool) {
        if k.backend_slot == 0 {
            bump(&mut self.net_refs, v.net_id, up);
        } else {
            bump(&mut self.slot_refs, v.backend_id, up);
        }
    }
}

/// What the maps should hold for `services`, given what they hold (`held`, for stable
/// ids and slots) and who may use each network's VIPs (`members`: network -> netns
/// cookies; `host` is added to every network), for the maps of one family: the VIPs
/// and backends of the other are left to the other family's tables.
pub fn desired<A: LbAddr>(
    services: &[FwService],
    members: &BTreeMap<String, BTreeSet<u64>>,
    host: u64,
    held: &LbTables<A>,
) -> LbTables<A> {
    desired_with(services, members, host, held, &Index::of(held))
}

/// `desired` with the index of `held` at hand.
pub fn desired_with<'s, A: LbAddr>(
    services: impl IntoIterator<Item = &'s FwService>,
    members: &BTreeMap<String, BTreeSet<u64>>,
    host: u64,
    held: &LbTables<A>,
    idx: &Index<A>,
) -> LbTables<A> {
    let mut want = LbTables::<A>::default();
    let mut free_ids = Taker::new(&idx.backend_ids);
    let mut free_rev = Taker::new(&idx.rev_ids);
    let mut ids: BTreeMap<LbBackend<A>, u32> = BTreeMap::new();
    let mut networks = BTreeSet::new();
    for s in services {
        for v in &s.vips {
            let Some(vip) = A::pick(v.vip) else { continue };
            let net = net_id(&v.network);
            networks.insert(v.network.clone());
            let mut ips: Vec<A::Ip> = v.backends.iter().filter_map(|&b| A::pick(b)).collect();
            ips.sort();
            ips.dedup();
            for &(port, target, proto) in &s.ports {
                let p = proto_num(proto);
                let master = LbKey::new(vip, port, p, 0);
                if want.services.contains_key(&master) {
                    continue; // the same VIP:port twice (two networks cannot share a VIP)
                }
                let rev = match held.services.get(&master) {
                    Some(m) if m.rev_nat_index != 0 => m.rev_nat_index,
                    // Reverse-NAT indexes are u16 in the maps.
                    _ => match u16::try_from(free_rev.take()) {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::warn!(%vip, port, "no reverse-NAT index left (65,535 VIP:ports): not balanced in eBPF");
                            continue;
                        }
                    },
                };
                let mut bids = Vec::new();
                for &ip in &ips {
                    let be = LbBackend::new(ip, target, p);
                    let id = *ids.entry(be).or_insert_with(|| match idx.ids.get(&be) {
                        Some(&id) => id,
                        None => free_ids.take(),
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
                        LbKey::new(vip, port, p, i as u16 + 1),
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
                    LbReverseNat {
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
/// `desired(old, ..)`), planning only the services that differ. Scopes follow the
/// networks that have a service after the change.
pub fn diff_changed<A: LbAddr>(
    old: &[FwService],
    new: &[FwService],
    members: &BTreeMap<String, BTreeSet<u64>>,
    host: u64,
    held: &LbTables<A>,
) -> Vec<LbOp<A>> {
    diff_changed_with(old, new, members, host, held, &Index::of(held))
}

/// `diff_changed` with the index of `held` at hand.
pub fn diff_changed_with<A: LbAddr>(
    old: &[FwService],
    new: &[FwService],
    members: &BTreeMap<String, BTreeSet<u64>>,
    host: u64,
    held: &LbTables<A>,
    idx: &Index<A>,
) -> Vec<LbOp<A>> {
    diff_changes(&Changed::between(old, new), members, host, held, idx)
}

/// The services of a change whose map entries may differ: `old` the versions the maps
/// hold, `new` the versions wanted (a service added is only in `new`, one removed only
/// in `old`). Unchanged services are not needed to plan: ids, slots and scopes come
/// from the `Index`.
#[derive(Debug, Default, PartialEq)]
pub struct Changed<'a> {
    pub old: Vec<&'a FwService>,
    pub new: Vec<&'a FwService>,
}

impl<'a> Changed<'a> {
    /// One walk over both lists when they hold the same number of services (the
    /// engine keeps them in one order, so a backend change pairs each service with
    /// itself), else a match by name. The walk compares only what the maps are made of
    /// (`same_entries`), once per pair; it is the one part of a change that grows with
    /// the number of services (figures: docs/benchmarks.md).
    pub fn between(old: &'a [FwService], new: &'a [FwService]) -> Changed<'a> {
        fn key(s: &FwService) -> (&str, &str) {
            (s.namespace.as_str(), s.name.as_str())
        }
        if old.len() == new.len() {
            let mut c = Changed::default();
            for (a, b) in old.iter().zip(new) {
                if !same_entries(a, b) {
                    c.old.push(a);
                    c.new.push(b);
                }
            }
            // A service added and another removed in one change shift the list: the
            // pairs past the shift are strangers, matched by name below instead.
            if c.old.iter().zip(&c.new).all(|(a, b)| key(a) == key(b)) {
                return c;
            }
        }
        let old_by: std::collections::HashMap<_, &FwService> = old.iter().map(|s| (key(s), s)).collect();
        let new_by: std::collections::HashMap<_, &FwService> = new.iter().map(|s| (key(s), s)).collect();
        Changed {
            old: old
                .iter()
                .filter(|s| new_by.get(&key(s)).is_none_or(|n| !same_entries(s, n)))
                .collect(),
            new: new
                .iter()
                .filter(|s| old_by.get(&key(s)).is_none_or(|o| !same_entries(o, s)))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.old.is_empty() && self.new.is_empty()
    }

    /// Whether a changed service has ingress ports, before or after: only then may the
    /// routing mesh and the nftables fallback for north-south have work.
    pub fn touches_ingress(&self) -> bool {
        self.old.iter().chain(&self.new).any(|s| !s.ingress.is_empty())
    }
}

/// Whether `a` and `b` ask the same of the socket-LB maps: VIPs, networks, backends,
/// ports and affinity (names and bridges are in no map). A service with ingress ports
/// is compared whole: the nftables fallback names its objects after it.
fn same_entries(a: &FwService, b: &FwService) -> bool {
    if !a.ingress.is_empty() || !b.ingress.is_empty() {
        return a == b;
    }
    a.ports == b.ports
        && a.affinity == b.affinity
        && a.vips.len() == b.vips.len()
        && a.vips
            .iter()
            .zip(&b.vips)
            .all(|(x, y)| x.vip == y.vip && x.backends == y.backends && x.network == y.network)
}

/// The writes for the services of `ch`, over maps that hold `held` (indexed by `idx`):
/// what it costs depends on what changed, not on how many services there are.
pub fn diff_changes<A: LbAddr>(
    ch: &Changed,
    members: &BTreeMap<String, BTreeSet<u64>>,
    host: u64,
    held: &LbTables<A>,
    idx: &Index<A>,
) -> Vec<LbOp<A>> {
    // What the maps hold for the old versions: their service entries, reverse NAT and
    // backends.
    let mut sub = LbTables::<A>::default();
    for s in &ch.old {
        for v in &s.vips {
            let Some(vip) = A::pick(v.vip) else { continue };
            for &(port, _, proto) in &s.ports {
                let master = LbKey::new(vip, port, proto_num(proto), 0);
                let Some(m) = held.services.get(&master) else {
                    continue;
                };
                sub.services.insert(master, *m);
                if let Some(r) = held.reverse_nat.get(&m.rev_nat_index) {
                    sub.reverse_nat.insert(m.rev_nat_index, *r);
                }
                for i in 1..=m.count {
                    let k = LbKey {
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
    let mut want = desired_with(ch.new.iter().copied(), members, host, held, idx);
    // Scopes: every network with a service entry once the change is written (the
    // index's count, less the entries replaced, plus the new ones), against all the
    // maps hold.
    let mut nets = idx.net_refs.clone();
    for (k, v) in &sub.services {
        if k.backend_slot == 0 {
            bump(&mut nets, v.net_id, false);
        }
    }
    for (k, v) in &want.services {
        if k.backend_slot == 0 {
            bump(&mut nets, v.net_id, true);
        }
    }
    let mut cookies: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (n, cs) in members {
        cookies.entry(net_id(n)).or_default().extend(cs);
    }
    want.scope = nets
        .keys()
        .flat_map(|&id| {
            cookies
                .get(&id)
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
    ops.retain(|o| !matches!(o, LbOp::PutBackend(id, b) if held.backends.get(id) == Some(b)));
    // A backend of a changed service may be shared with a service that did not change:
    // kept while any slot outside the changed ones still names it.
    let mut in_sub: BTreeMap<u32, usize> = BTreeMap::new();
    for (k, v) in &sub.services {
        if k.backend_slot > 0 {
            bump(&mut in_sub, v.backend_id, true);
        }
    }
    ops.retain(|o| match o {
        LbOp::DelBackend(id) => {
            idx.slot_refs.get(id).copied().unwrap_or(0) <= in_sub.get(id).copied().unwrap_or(0)
        }
        _ => true,
    });
    // An id `desired` handed out may equal one of a backend deleted above only if held
    // no longer had it; held has it until the deletes run, so ids never collide.
    ops
}

/// Applies `ops` to `t`, as the kernel maps do.
pub fn apply<A: LbAddr>(t: &mut LbTables<A>, ops: &[LbOp<A>]) {
    for op in ops {
        match op {
            LbOp::PutBackend(i, b) => drop(t.backends.insert(*i, *b)),
            LbOp::PutReverseNat(i, r) => drop(t.reverse_nat.insert(*i, *r)),
            LbOp::PutScope(k) => drop(t.scope.insert(*k)),
            LbOp::PutService(k, v) => drop(t.services.insert(*k, *v)),
            LbOp::DelService(k) => drop(t.services.remove(k)),
            LbOp::DelScope(k) => drop(t.scope.remove(k)),
            LbOp::DelReverseNat(i) => drop(t.reverse_nat.remove(i)),
            LbOp::DelBackend(i) => drop(t.backends.remove(i)),
        }
    }
}

/// `apply`, keeping `idx` (the index of `t`) in step.
pub fn apply_indexed<A: LbAddr>(t: &mut LbTables<A>, idx: &mut Index<A>, ops: &[LbOp<A>]) {
    for op in ops {
        match op {
            LbOp::PutBackend(i, b) => {
                if let Some(was) = t.backends.insert(*i, *b) {
                    if idx.ids.get(&was) == Some(i) {
                        idx.ids.remove(&was);
                    }
                }
                idx.ids.insert(*b, *i);
                idx.backend_ids.used(*i);
            }
            LbOp::DelBackend(i) => {
                if let Some(was) = t.backends.remove(i) {
                    if idx.ids.get(&was) == Some(i) {
                        idx.ids.remove(&was);
                    }
                    idx.backend_ids.release(*i);
                }
            }
            LbOp::PutReverseNat(i, r) => {
                t.reverse_nat.insert(*i, *r);
                idx.rev_ids.used(u32::from(*i));
            }
            LbOp::DelReverseNat(i) => {
                if t.reverse_nat.remove(i).is_some() {
                    idx.rev_ids.release(u32::from(*i));
                }
            }
            LbOp::PutService(k, v) => {
                if let Some(was) = t.services.insert(*k, *v) {
                    idx.count(k, &was, false);
                }
                idx.count(k, v, true);
            }
            LbOp::DelService(k) => {
                if let Some(was) = t.services.remove(k) {
                    idx.count(k, &was, false);
                }
            }
            LbOp::PutScope(k) => drop(t.scope.insert(*k)),
            LbOp::DelScope(k) => drop(t.scope.remove(k)),
        }
    }
}

/// The backend ids of `master`'s slots as the maps hold them.
fn held_slots<A: LbAddr>(held: &LbTables<A>, master: &LbKey<A>) -> Vec<u32> {
    let n = held.services.get(master).map(|m| m.count).unwrap_or(0);
    (1..=n)
        .filter_map(|i| {
            held.services
                .get(&LbKey {
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
pub fn diff<A: LbAddr>(held: &LbTables<A>, want: &LbTables<A>) -> Vec<LbOp<A>> {
    let mut ops = Vec::new();
    for (id, b) in &want.backends {
        if held.backends.get(id) != Some(b) {
            ops.push(LbOp::PutBackend(*id, *b));
        }
    }
    for (id, r) in &want.reverse_nat {
        if held.reverse_nat.get(id) != Some(r) {
            ops.push(LbOp::PutReverseNat(*id, *r));
        }
    }
    for k in want.scope.difference(&held.scope) {
        ops.push(LbOp::PutScope(*k));
    }
    let changed = |k: &LbKey<A>, v: &Lb4Service| held.services.get(k) != Some(v);
    for master in [false, true] {
        for (k, v) in &want.services {
            if (k.backend_slot == 0) == master && changed(k, v) {
                ops.push(LbOp::PutService(*k, *v));
            }
        }
    }
    for master in [true, false] {
        for k in held.services.keys() {
            if (k.backend_slot == 0) == master && !want.services.contains_key(k) {
                ops.push(LbOp::DelService(*k));
            }
        }
    }
    for k in held.scope.difference(&want.scope) {
        ops.push(LbOp::DelScope(*k));
    }
    for id in held.reverse_nat.keys() {
        if !want.reverse_nat.contains_key(id) {
            ops.push(LbOp::DelReverseNat(*id));
        }
    }
    for id in held.backends.keys() {
        if !want.backends.contains_key(id) {
            ops.push(LbOp::DelBackend(*id));
        }
    }
    ops
}

#[cfg(test)]
#[path = "ebpf_plan_tests.rs"]
mod tests;
