use super::*;
use crate::firewall::ruleset::services::{FwIngress, FwVip};

const M: usize = 251;

fn svc(name: &str, network: &str, backends: &[&str], published: u16, masquerade: bool) -> FwService {
    FwService {
        namespace: "default".into(),
        name: name.into(),
        ports: vec![(80, 8080, Proto::Tcp)],
        affinity: None,
        vips: vec![FwVip {
            network: network.into(),
            vip: "10.0.0.200".parse().unwrap(),
            backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
            bridge: format!("netd-{network}"),
        }],
        ingress: vec![FwIngress {
            published,
            target: 8080,
            proto: Proto::Tcp,
            masquerade,
        }],
    }
}

fn local() -> BTreeSet<String> {
    BTreeSet::from(["n".to_string()])
}

fn key(port: u16) -> Lb4NodePortKey {
    Lb4NodePortKey::new(port, 6)
}

fn slot_count(ops: &[NpOp]) -> usize {
    ops.iter()
        .map(|o| match o {
            NpOp::PutSlots(_, s) => s.len(),
            _ => 0,
        })
        .sum()
}

#[test]
fn tc_serves_local_ports_that_keep_the_client_address() {
    let services = [
        svc("web", "n", &["10.0.0.2", "10.0.0.3", "fd00::2"], 8088, false),
        svc("cluster", "n", &["10.0.0.4"], 8089, true), // externalTrafficPolicy: Cluster
        svc("remote", "ov", &["10.0.0.5"], 8090, false), // an overlay network
        svc("empty", "n", &[], 8091, false),            // nftables rejects
    ];
    let s = served(&services, &local());
    assert_eq!(s.keys().copied().collect::<Vec<_>>(), vec![key(8088)]);
    assert_eq!(
        s[&key(8088)]
            .iter()
            .map(|b| (b.ip().to_string(), b.port()))
            .collect::<Vec<_>>(),
        vec![("10.0.0.2".into(), 8080), ("10.0.0.3".into(), 8080)],
        "IPv4 backends at the target port"
    );
}

#[test]
fn a_full_sync_writes_every_slot_once_and_a_restart_writes_nothing() {
    let want = served(
        &[svc("web", "n", &["10.0.0.2", "10.0.0.3"], 8088, false)],
        &local(),
    );
    let mut held = NpTables::default();
    let ops = full(&want, &held, M).unwrap();
    assert_eq!(slot_count(&ops), M);
    // Slots before the entry that makes the program read them.
    assert!(
        matches!(ops.last(), Some(NpOp::PutService(k, v)) if *k == key(8088) && v.count == 2 && v.table_size == M as u32 && v.maglev_id == 1)
    );
    apply(&mut held, &ops);
    assert_eq!(full(&want, &held, M).unwrap(), vec![]);
}

#[test]
fn a_backend_change_writes_only_the_slots_that_move_of_that_port() {
    let web = |bs: &[&str]| svc("web", "n", bs, 8088, false);
    let other = svc("other", "n", &["10.0.0.9", "10.0.0.10"], 9090, false);
    let old = served(
        &[web(&["10.0.0.2", "10.0.0.3", "10.0.0.4"]), other.clone()],
        &local(),
    );
    let mut held = NpTables::default();
    let ops = full(&old, &held, M).unwrap();
    apply(&mut held, &ops);
    let before = held.tables[&held.services[&key(8088)].maglev_id].clone();
    let gone = Lb4Flow::new("10.0.0.3".parse().unwrap(), 8080);
    let owned = before.iter().filter(|b| **b == gone).count();

    let new = served(&[web(&["10.0.0.2", "10.0.0.4"]), other], &local());
    let ops = changed(&old, &new, &held, M).unwrap();
    // Exactly the removed backend's slots, and the entry's count; nothing of port 9090.
    assert_eq!(slot_count(&ops), owned);
    assert!(ops.iter().all(|o| match o {
        NpOp::PutSlots(id, _) => *id == held.services[&key(8088)].maglev_id,
        NpOp::PutService(k, v) => *k == key(8088) && v.count == 2,
        _ => false,
    }));
    apply(&mut held, &ops);
    let after = &held.tables[&held.services[&key(8088)].maglev_id];
    assert!(!after.contains(&gone));
    assert_eq!(after.len(), M);
    // A diff and a full sync agree.
    assert_eq!(full(&new, &held, M).unwrap(), vec![]);

    // Adding one back moves only what it takes.
    let back = served(
        &[
            web(&["10.0.0.2", "10.0.0.3", "10.0.0.4"]),
            svc("other", "n", &["10.0.0.9", "10.0.0.10"], 9090, false),
        ],
        &local(),
    );
    let ops = changed(&new, &back, &held, M).unwrap();
    assert!(slot_count(&ops) <= M / 3 + 1, "{} slots", slot_count(&ops));
}

#[test]
fn a_removed_port_deletes_its_entry_then_its_table_and_frees_its_id() {
    let one = served(&[svc("web", "n", &["10.0.0.2"], 8088, false)], &local());
    let mut held = NpTables::default();
    let ops = full(&one, &held, M).unwrap();
    apply(&mut held, &ops);
    let ops = changed(&one, &BTreeMap::new(), &held, M).unwrap();
    assert_eq!(
        ops,
        vec![NpOp::DelService(key(8088)), NpOp::DelSlots(1, 0..M as u32)]
    );
    apply(&mut held, &ops);
    assert_eq!(held, NpTables::default());
    // A table left without its entry (a write cut short) goes at the next full sync.
    held.tables
        .insert(7, vec![Lb4Flow::new("10.0.0.2".parse().unwrap(), 80); 3]);
    assert_eq!(
        full(&BTreeMap::new(), &held, M).unwrap(),
        vec![NpOp::DelSlots(7, 0..3)]
    );
}

#[test]
fn a_smaller_table_drops_its_tail_and_bad_sizes_are_refused() {
    let one = served(
        &[svc("web", "n", &["10.0.0.2", "10.0.0.3"], 8088, false)],
        &local(),
    );
    let mut held = NpTables::default();
    let ops = full(&one, &held, M).unwrap();
    apply(&mut held, &ops);
    let ops = full(&one, &held, 13).unwrap();
    assert_eq!(ops.last(), Some(&NpOp::DelSlots(1, 13..M as u32)));
    apply(&mut held, &ops);
    assert_eq!(held.tables[&1].len(), 13);
    assert_eq!(
        full(&one, &held, 12),
        Err(maglev::MaglevError::NotPrime(12)),
        "the table size must be a prime"
    );
}
