//! What the routing mesh's maps should hold (`ebpf/tc_nodeport4.c`), and the writes
//! from what they hold to that: pure, so table stability and "only what changed" are
//! tested without a kernel.
//!
//! Which ingress ports the tc program serves (`served`): IPv4, `masquerade` off
//! (netd's own ingress ports and Kubernetes' `externalTrafficPolicy: Local`), and
//! every network of the service local to this host (not overlay: a remote backend's
//! reply would not come back through this node without the SNAT nftables adds). The
//! rest stays with the nftables fallback, which also keeps serving every ingress port
//! for what never crosses tc ingress (the host itself, the sandboxes).
//!
//! A port keeps its Maglev id and its table as long as it exists; a change of backends
//! rebuilds the table from the held one (`maglev::rebuild`), so only the slots that
//! move are written, and only for the ports whose backends changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::maglev;
use crate::firewall::ruleset::services::FwService;
use crate::kernel::bpf_tc::{NpOp, NpTables};
use crate::kernel::bpf_types::{Lb4Flow, Lb4NodePort, Lb4NodePortKey};
use crate::model::Proto;

fn proto_num(p: Proto) -> u8 {
    match p {
        Proto::Tcp => libc::IPPROTO_TCP as u8,
        Proto::Udp => libc::IPPROTO_UDP as u8,
    }
}

/// The map key of ingress port `i`.
pub fn port_key(i: &crate::firewall::ruleset::services::FwIngress) -> Lb4NodePortKey {
    Lb4NodePortKey::new(i.published, proto_num(i.proto))
}

/// Whether tc serves the ingress ports of `s` (see the module doc): `local` names the
/// networks whose backends are all on this host.
pub fn tc_serves(s: &FwService, local: &BTreeSet<String>) -> bool {
    !s.vips.is_empty() && s.vips.iter().all(|v| local.contains(&v.network))
}

/// Port -> its backends (address, target port; sorted) for every ingress port tc
/// serves. A port without an IPv4 backend is left out (nftables rejects it at once).
pub fn served(services: &[FwService], local: &BTreeSet<String>) -> BTreeMap<Lb4NodePortKey, Vec<Lb4Flow>> {
    // Ingress ports first: most services have none, and the test reads no heap.
    let mut out = BTreeMap::new();
    for s in services
        .iter()
        .filter(|s| s.ingress.iter().any(|i| !i.masquerade) && tc_serves(s, local))
    {
        let mut ips: Vec<_> = s
            .vips
            .iter()
            .flat_map(|v| &v.backends)
            .filter_map(|b| match b {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            })
            .collect();
        ips.sort();
        ips.dedup();
        for i in s.ingress.iter().filter(|i| !i.masquerade) {
            if ips.is_empty() {
                continue;
            }
            let bs = ips.iter().map(|&ip| Lb4Flow::new(ip, i.target)).collect();
            out.insert(port_key(i), bs);
        }
    }
    out
}

fn name(b: &Lb4Flow) -> String {
    format!("{}:{}", b.ip(), b.port())
}

/// The backends a held table names, in order of first appearance, and the table as
/// indexes into them (what `maglev::rebuild` starts from).
fn held_backends(table: &[Lb4Flow]) -> (Vec<String>, Vec<u32>) {
    let mut names: Vec<String> = Vec::new();
    let mut index: BTreeMap<Lb4Flow, u32> = BTreeMap::new();
    let mut t = Vec::with_capacity(table.len());
    for b in table {
        let i = *index.entry(*b).or_insert_with(|| {
            names.push(name(b));
            names.len() as u32 - 1
        });
        t.push(i);
    }
    (names, t)
}

/// The writes that take port `key` from what `held` holds to `want` (None: not served).
/// `next_id` hands out Maglev ids for new ports.
fn plan_port(
    key: &Lb4NodePortKey,
    want: Option<&Vec<Lb4Flow>>,
    held: &NpTables,
    size: usize,
    next_id: &mut impl FnMut() -> u32,
) -> Result<Vec<NpOp>, maglev::MaglevError> {
    let have = held.services.get(key);
    let mut ops = Vec::new();
    let Some(want) = want.filter(|w| !w.is_empty()) else {
        if let Some(h) = have {
            // The service entry first, so the program never reads a half-deleted table.
            ops.push(NpOp::DelService(*key));
            let len = held
                .tables
                .get(&h.maglev_id)
                .map_or(h.table_size, |t| t.len() as u32);
            ops.push(NpOp::DelSlots(h.maglev_id, 0..len));
        }
        return Ok(ops);
    };
    let id = have.map_or_else(&mut *next_id, |h| h.maglev_id);
    let empty = Vec::new();
    let old = held.tables.get(&id).unwrap_or(&empty);
    let (prev_names, prev_table) = held_backends(old);
    let names: Vec<String> = want.iter().map(name).collect();
    let prev_table = if old.iter().any(|b| *b == Lb4Flow::default()) {
        Vec::new() // a table with holes (a write cut short): build afresh
    } else {
        prev_table
    };
    let table = maglev::rebuild(&prev_names, &prev_table, &names, size)?;
    let slots: Vec<(u32, Lb4Flow)> = table
        .iter()
        .enumerate()
        .filter_map(|(i, &b)| {
            let be = want[b as usize];
            (old.get(i) != Some(&be)).then_some((i as u32, be))
        })
        .collect();
    if !slots.is_empty() {
        ops.push(NpOp::PutSlots(id, slots));
    }
    let svc = Lb4NodePort {
        maglev_id: id,
        table_size: size as u32,
        count: want.len().min(usize::from(u16::MAX)) as u16,
        ..Default::default()
    };
    if have != Some(&svc) {
        ops.push(NpOp::PutService(*key, svc));
    }
    if old.len() > size {
        // A smaller table than before: its tail goes once the entry says the new size.
        ops.push(NpOp::DelSlots(id, size as u32..old.len() as u32));
    }
    Ok(ops)
}

/// Hands out the lowest Maglev ids no held service uses (ids start at 1).
fn id_taker(held: &NpTables) -> impl FnMut() -> u32 {
    let used: BTreeSet<u32> = held
        .services
        .values()
        .map(|s| s.maglev_id)
        .chain(held.tables.keys().copied())
        .collect();
    let mut next = 1u32;
    move || {
        while used.contains(&next) {
            next += 1;
        }
        next += 1;
        next - 1
    }
}

/// Every write from `held` to the ports `want` (`served`): a full sync. Tables no
/// service names (a write cut short) are deleted.
pub fn full(
    want: &BTreeMap<Lb4NodePortKey, Vec<Lb4Flow>>,
    held: &NpTables,
    size: usize,
) -> Result<Vec<NpOp>, maglev::MaglevError> {
    let mut take = id_taker(held);
    let keys: BTreeSet<&Lb4NodePortKey> = want.keys().chain(held.services.keys()).collect();
    let mut ops = Vec::new();
    for k in keys {
        ops.extend(plan_port(k, want.get(k), held, size, &mut take)?);
    }
    let named: BTreeSet<u32> = held.services.values().map(|s| s.maglev_id).collect();
    for (id, t) in &held.tables {
        if !named.contains(id) {
            ops.push(NpOp::DelSlots(*id, 0..t.len() as u32));
        }
    }
    Ok(ops)
}

/// The writes for the ports whose backends differ between `old` and `new` (both from
/// `served`); `held` holds `old`.
pub fn changed(
    old: &BTreeMap<Lb4NodePortKey, Vec<Lb4Flow>>,
    new: &BTreeMap<Lb4NodePortKey, Vec<Lb4Flow>>,
    held: &NpTables,
    size: usize,
) -> Result<Vec<NpOp>, maglev::MaglevError> {
    let mut take = id_taker(held);
    let keys: BTreeSet<&Lb4NodePortKey> = old.keys().chain(new.keys()).collect();
    let mut ops = Vec::new();
    for k in keys {
        if old.get(k) != new.get(k) || held.services.contains_key(k) != new.contains_key(k) {
            ops.extend(plan_port(k, new.get(k), held, size, &mut take)?);
        }
    }
    Ok(ops)
}

/// Applies `ops` to `t`, as the kernel maps do.
pub fn apply(t: &mut NpTables, ops: &[NpOp]) {
    for op in ops {
        match op {
            NpOp::PutSlots(id, slots) => {
                let tab = t.tables.entry(*id).or_default();
                for (i, b) in slots {
                    let i = *i as usize;
                    if tab.len() <= i {
                        tab.resize(i + 1, Lb4Flow::default());
                    }
                    tab[i] = *b;
                }
            }
            NpOp::DelSlots(id, r) => {
                if let Some(tab) = t.tables.get_mut(id) {
                    tab.truncate((r.start as usize).min(tab.len()));
                    if tab.is_empty() {
                        t.tables.remove(id);
                    }
                }
            }
            NpOp::PutService(k, v) => drop(t.services.insert(*k, *v)),
            NpOp::DelService(k) => drop(t.services.remove(k)),
        }
    }
}

#[cfg(test)]
#[path = "ebpf_np_tests.rs"]
mod tests;
