use super::*;
use std::net::Ipv4Addr;

use crate::firewall::ruleset::services::FwVip;
use crate::kernel::bpf::Lb4Tables;
use crate::kernel::bpf_types::Lb4Key;

fn svc(name: &str, vip: &str, backends: &[&str]) -> FwService {
    FwService {
        namespace: "default".into(),
        name: name.into(),
        ports: vec![(80, 8080, Proto::Tcp), (80, 8080, Proto::Udp)],
        affinity: None,
        vips: vec![FwVip {
            network: "n".into(),
            vip: vip.parse().unwrap(),
            backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
            bridge: "netd-n".into(),
        }],
        ingress: vec![],
    }
}

fn members() -> BTreeMap<String, BTreeSet<u64>> {
    BTreeMap::from([("n".to_string(), BTreeSet::from([11, 12]))])
}

fn slots(t: &Lb4Tables, vip: &str) -> Vec<Ipv4Addr> {
    let m = Lb4Key::new(vip.parse().unwrap(), 80, 6, 0);
    let n = t.services[&m].count;
    (1..=n)
        .map(|i| {
            let id = t.services[&Lb4Key { backend_slot: i, ..m }].backend_id;
            Ipv4Addr::from(u32::from_be(t.backends[&id].address))
        })
        .collect()
}

#[test]
fn a_service_is_a_master_entry_slots_and_a_reverse_nat() {
    let t = desired(
        &[svc("web", "10.0.0.200", &["10.0.0.2", "10.0.0.3"])],
        &members(),
        99,
        &Lb4Tables::default(),
    );
    // TCP and UDP: two masters, two slots each; two backends per protocol.
    assert_eq!(t.services.len(), 6);
    assert_eq!(t.backends.len(), 4);
    assert_eq!(t.reverse_nat.len(), 2);
    let m = t.services[&Lb4Key::new("10.0.0.200".parse().unwrap(), 80, 6, 0)];
    assert_eq!((m.count, m.net_id), (2, net_id("n")));
    let rn = t.reverse_nat[&m.rev_nat_index];
    assert_eq!(rn.address.to_ne_bytes(), [10, 0, 0, 200]);
    // The host and both members may use network n's VIPs.
    let cookies: BTreeSet<u64> = t.scope.iter().map(|k| k.netns_cookie).collect();
    assert_eq!(cookies, BTreeSet::from([11, 12, 99]));
    assert!(t.scope.iter().all(|k| k.net_id == net_id("n")));
}

#[test]
fn removing_one_backend_writes_three_entries_per_port() {
    let bes: Vec<String> = (2..=21).map(|i| format!("10.0.0.{i}")).collect();
    let refs: Vec<&str> = bes.iter().map(String::as_str).collect();
    let a = desired(
        &[svc("web", "10.0.0.200", &refs)],
        &members(),
        1,
        &Lb4Tables::default(),
    );
    let before = slots(&a, "10.0.0.200");
    let fewer: Vec<&str> = refs.iter().copied().filter(|b| *b != "10.0.0.5").collect();
    let b = desired(&[svc("web", "10.0.0.200", &fewer)], &members(), 1, &a);
    let ops = diff(&a, &b);
    // Per protocol: the master (count), the hole filled by the last, the last deleted;
    // the backend entry deleted.
    assert_eq!(ops.len(), 2 * 4, "{ops:#?}");
    let after = slots(&b, "10.0.0.200");
    assert_eq!(after.len(), 19);
    for (i, ip) in after.iter().enumerate() {
        if before[i].to_string() != "10.0.0.5" {
            assert_eq!(*ip, before[i], "slot {i} moved");
        }
    }
    // Nothing changed: nothing written.
    assert!(diff(
        &b,
        &desired(&[svc("web", "10.0.0.200", &fewer)], &members(), 1, &b)
    )
    .is_empty());
}

#[test]
fn ids_survive_a_restart_and_a_full_round_trip_ends_empty() {
    let s = vec![
        svc("web", "10.0.0.200", &["10.0.0.2"]),
        svc("api", "10.0.0.201", &["10.0.0.2", "10.0.0.4"]),
    ];
    let mut held = Lb4Tables::default();
    let want = desired(&s, &members(), 1, &held);
    apply(&mut held, &diff(&Lb4Tables::default(), &want));
    assert_eq!(held, want);
    // The shared backend 10.0.0.2:8080/tcp has one id.
    assert_eq!(held.backends.len(), 4);
    // Same input over what the maps hold (a restart): no write.
    assert!(diff(&held, &desired(&s, &members(), 1, &held)).is_empty());
    // All services gone: everything deleted, masters before their slots.
    let ops = diff(&held, &desired(&[], &members(), 1, &held));
    let first_slot = ops
        .iter()
        .position(|o| matches!(o, LbOp::DelService(k) if k.backend_slot > 0));
    let last_master = ops
        .iter()
        .rposition(|o| matches!(o, LbOp::DelService(k) if k.backend_slot == 0));
    assert!(last_master < first_slot, "{ops:#?}");
    apply(&mut held, &ops);
    assert_eq!(held, Lb4Tables::default());
}

#[test]
fn no_backend_is_a_master_with_count_zero() {
    let t = desired(
        &[svc("web", "10.0.0.200", &[])],
        &members(),
        1,
        &Lb4Tables::default(),
    );
    assert_eq!(t.services.len(), 2);
    assert!(t.services.values().all(|s| s.count == 0));
}

#[test]
fn slot_order_swap_removes() {
    assert_eq!(keep_slots(&[1, 2, 3, 4], &[1, 3, 4, 5]), vec![1, 4, 3, 5]);
    assert_eq!(keep_slots(&[], &[7, 8]), vec![7, 8]);
    assert_eq!(Taker::new(&Ids::of([1, 2, 4])).take(), 3);
    assert_eq!(Taker::new(&Ids::default()).take(), 1);
}

/// Planning only the changed services ends where planning all of them does, through a
/// series of changes (backend swaps, a shared backend, a new and a removed service,
/// a member joining), and writes no more than the full diff.
#[test]
fn diff_changed_ends_where_the_full_plan_does() {
    type Members = BTreeMap<String, BTreeSet<u64>>;
    let steps: Vec<(Vec<FwService>, Members)> = vec![
        (
            vec![svc("web", "10.0.0.200", &["10.0.0.2", "10.0.0.3"])],
            members(),
        ),
        (
            vec![
                svc("web", "10.0.0.200", &["10.0.0.2", "10.0.0.3"]),
                svc("api", "10.0.0.201", &["10.0.0.3"]),
            ],
            members(),
        ),
        (
            vec![
                svc("web", "10.0.0.200", &["10.0.0.2"]),
                svc("api", "10.0.0.201", &["10.0.0.3", "10.0.0.4"]),
            ],
            BTreeMap::from([("n".to_string(), BTreeSet::from([11, 12, 13]))]),
        ),
        (vec![svc("api", "10.0.0.201", &["10.0.0.3"])], members()),
        (vec![], members()),
    ];
    let mut held = Lb4Tables::default();
    let mut old: Vec<FwService> = vec![];
    for (new, m) in steps {
        let ops = diff_changed(&old, &new, &m, 1, &held);
        let full = diff(&held, &desired(&new, &m, 1, &held));
        apply(&mut held, &ops);
        let want = desired(&new, &m, 1, &held);
        assert_eq!(held, want, "after {ops:#?}");
        assert!(ops.len() <= full.len(), "{} > {}", ops.len(), full.len());
        old = new;
    }
    assert_eq!(held, Lb4Tables::default());
}

#[test]
fn ids_hand_out_the_lowest_free_and_stay_canonical() {
    let mut ids = Ids::of([1, 2, 4, 7]);
    assert_eq!(ids, Ids::of([7, 4, 2, 1]));
    let mut t = Taker::new(&ids);
    assert_eq!([t.take(), t.take(), t.take(), t.take()], [3, 5, 6, 8]);
    ids.release(7);
    ids.release(4);
    assert_eq!(
        ids,
        Ids::of([1, 2]),
        "releasing the top collapses the holes below it"
    );
    ids.release(1);
    ids.release(2);
    assert_eq!(ids, Ids::default());
    ids.used(3);
    assert_eq!(Taker::new(&ids).take(), 1);
    ids.release(9); // not held: nothing to do
    assert_eq!(ids, Ids::of([3]));
}

#[test]
fn the_index_kept_in_step_plans_what_a_fresh_one_does() {
    type Members = BTreeMap<String, BTreeSet<u64>>;
    let other = |name: &str, vip: &str, backends: &[&str]| {
        let mut s = svc(name, vip, backends);
        s.vips[0].network = "m".into();
        s
    };
    let steps: Vec<(Vec<FwService>, Members)> = vec![
        (
            vec![
                svc("a", "10.0.0.200", &["10.0.0.2", "10.0.0.3"]),
                svc("b", "10.0.0.201", &["10.0.0.3", "10.0.0.4"]),
                other("c", "10.1.0.200", &["10.1.0.2"]),
            ],
            members(),
        ),
        // One backend replaced in the same order (the one-walk path).
        (
            vec![
                svc("a", "10.0.0.200", &["10.0.0.2", "10.0.0.5"]),
                svc("b", "10.0.0.201", &["10.0.0.3", "10.0.0.4"]),
                other("c", "10.1.0.200", &["10.1.0.2"]),
            ],
            members(),
        ),
        // A service gone from the middle: holes in the ids; the other network empty.
        (
            vec![svc("a", "10.0.0.200", &["10.0.0.2", "10.0.0.5"])],
            BTreeMap::from([
                ("n".to_string(), BTreeSet::from([11])),
                ("m".to_string(), BTreeSet::from([21])),
            ]),
        ),
        // New services take the holes, in another order.
        (
            vec![
                other("d", "10.1.0.201", &["10.1.0.7", "10.1.0.8"]),
                svc("a", "10.0.0.200", &["10.0.0.5"]),
                svc("e", "10.0.0.202", &["10.0.0.9", "10.0.0.2"]),
            ],
            members(),
        ),
        (vec![], members()),
    ];
    let (mut held, mut idx) = (Lb4Tables::default(), Index::default());
    let mut old: Vec<FwService> = vec![];
    for (new, m) in steps {
        let ops = diff_changed_with(&old, &new, &m, 1, &held, &idx);
        assert_eq!(
            ops,
            diff_changed(&old, &new, &m, 1, &held),
            "same plan as from a fresh index"
        );
        apply_indexed(&mut held, &mut idx, &ops);
        assert_eq!(held, desired(&new, &m, 1, &held));
        assert_eq!(idx, Index::of(&held), "after {ops:#?}");
        old = new;
    }
    assert_eq!(held, Lb4Tables::default());
    assert_eq!(idx, Index::default());
}

/// One backend change among 10,000 services: one service is found changed and the
/// writes name only its entries (per port: the new backend, its slot, the old backend
/// deleted), ending where planning every service does.
#[test]
fn one_backend_change_at_10k_services_writes_that_service_only() {
    let vip = |i: usize| format!("10.{}.{}.{}", 96 + i / 62_500, i / 250 % 250 + 1, i % 250 + 1);
    let be = |i: usize, j: usize| {
        let k = i * 8 + j;
        format!("10.{}.{}.{}", 128 + k / 62_500, k / 250 % 250 + 1, k % 250 + 1)
    };
    let all = |changed: Option<usize>| -> Vec<FwService> {
        (0..10_000)
            .map(|i| {
                let last = if changed == Some(i) { 4 } else { 3 };
                let bs: Vec<String> = (0..3).chain([last]).map(|j| be(i, j)).collect();
                let refs: Vec<&str> = bs.iter().map(String::as_str).collect();
                svc(&format!("s{i:05}"), &vip(i), &refs)
            })
            .collect()
    };
    let (old, new) = (all(None), all(Some(5_000)));
    let mut held = desired(&old, &members(), 1, &Lb4Tables::default());
    let idx = Index::of(&held);

    let ch = Changed::between(&old, &new);
    assert_eq!((ch.old.len(), ch.new.len()), (1, 1));
    assert_eq!(
        (ch.old[0].name.as_str(), ch.new[0].name.as_str()),
        ("s05000", "s05000")
    );
    assert!(!ch.touches_ingress());

    let ops = diff_changes(&ch, &members(), 1, &held, &idx);
    let v: Ipv4Addr = vip(5_000).parse().unwrap();
    let mine = |a: u32| Ipv4Addr::from(u32::from_be(a)) == v;
    let gone: Ipv4Addr = be(5_000, 3).parse().unwrap();
    let came: Ipv4Addr = be(5_000, 4).parse().unwrap();
    let addr = |b: &Lb4Backend| Ipv4Addr::from(u32::from_be(b.address));
    for op in &ops {
        match op {
            LbOp::PutService(k, _) => assert!(mine(k.address) && k.backend_slot == 4, "{op:?}"),
            LbOp::PutBackend(_, b) => assert_eq!(addr(b), came),
            LbOp::DelBackend(id) => assert_eq!(addr(&held.backends[id]), gone),
            other => panic!("a write beyond the changed backend: {other:?}"),
        }
    }
    // Two ports (TCP, UDP) × (new backend, its slot, old backend deleted).
    assert_eq!(ops.len(), 6, "{ops:#?}");
    apply(&mut held, &ops);
    assert_eq!(held, desired(&new, &members(), 1, &held));
}

/// What a change compares: the map contents, not the names, unless the service has
/// ingress ports (the nftables fallback names its objects after it); a list that
/// shifted (one service out, another in) is matched by name.
#[test]
fn changed_compares_what_the_maps_hold_and_matches_a_shifted_list_by_name() {
    let a = svc("a", "10.0.0.200", &["10.0.0.2"]);
    let b = svc("b", "10.0.0.201", &["10.0.0.3"]);
    let c = svc("c", "10.0.0.202", &["10.0.0.4"]);
    let mut a_bridge = a.clone();
    a_bridge.vips[0].bridge = "netd-other".into();
    assert!(Changed::between(std::slice::from_ref(&a), std::slice::from_ref(&a_bridge)).is_empty());
    let mut a_renamed = a.clone();
    a_renamed.name = "a2".into();
    assert!(Changed::between(std::slice::from_ref(&a), std::slice::from_ref(&a_renamed)).is_empty());
    let mut a_ingress = a.clone();
    a_ingress
        .ingress
        .push(crate::firewall::ruleset::services::FwIngress {
            published: 8088,
            target: 8080,
            proto: Proto::Tcp,
            masquerade: false,
        });
    let mut a_ingress_renamed = a_ingress.clone();
    a_ingress_renamed.name = "a2".into();
    let ch = Changed::between(
        std::slice::from_ref(&a_ingress),
        std::slice::from_ref(&a_ingress_renamed),
    );
    assert_eq!((ch.old.len(), ch.new.len()), (1, 1));
    assert!(ch.touches_ingress());
    // a removed and c added: the same length, every pair a stranger.
    let old = [a.clone(), b.clone()];
    let new = [b.clone(), c.clone()];
    let ch = Changed::between(&old, &new);
    assert_eq!(ch.old, vec![&a]);
    assert_eq!(ch.new, vec![&c]);
}
