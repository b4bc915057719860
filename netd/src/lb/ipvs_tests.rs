use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::*;
use crate::firewall::ruleset::services::{FwIngress, FwService, FwVip};
use crate::kernel::fake::FakeKernel;
use crate::kernel::ipvs::{wire, Forward};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Service `name` with VIP 10.89.0.<vip> on net `front`, port 80 -> 8080/tcp, backends
/// 10.89.0.<b>.
fn svc(name: &str, vip: u8, backends: &[u8]) -> FwService {
    FwService {
        namespace: "default".into(),
        name: name.into(),
        ports: vec![(80, 8080, Proto::Tcp)],
        affinity: None,
        vips: vec![FwVip {
            network: "front".into(),
            bridge: String::new(),
            vip: ip(&format!("10.89.0.{vip}")),
            backends: backends.iter().map(|b| ip(&format!("10.89.0.{b}"))).collect(),
        }],
        ingress: vec![],
    }
}

/// `n` services on VIPs 10.89.<i/250>.<i%250> (net /16), 2 backends each.
fn many(n: usize) -> Vec<FwService> {
    (0..n)
        .map(|i| {
            let mut s = svc(&format!("s{i}"), 1, &[2, 3]);
            s.vips[0].vip = ip(&format!("10.89.{}.{}", 100 + i / 250, i % 250 + 1));
            s
        })
        .collect()
}

fn owned() -> Vec<IpNetwork> {
    vec!["10.89.0.0/16".parse().unwrap()]
}

fn lb(k: &Arc<FakeKernel>) -> IpvsLb {
    IpvsLb::new(k.clone(), owned())
}

fn key(vip: &str) -> ServiceKey {
    ServiceKey::tcp(sa(vip))
}

/// The fake's table as `service -> [(dest, weight)]`.
fn table(k: &FakeKernel) -> BTreeMap<String, Vec<(SocketAddr, u32)>> {
    k.ipvs_table()
        .into_iter()
        .map(|(s, ds)| {
            let mut d: Vec<_> = ds.iter().map(|d| (d.addr, d.weight)).collect();
            d.sort();
            (s.key.to_string(), d)
        })
        .collect()
}

#[test]
fn a_service_port_is_a_virtual_service_with_nat_destinations_at_target_ports() {
    let mut s = svc("web", 200, &[2, 3]);
    s.ports.push((53, 5353, Proto::Udp));
    s.affinity = Some(600);
    s.vips[0].backends.push(ip("fd00::2")); // another family: not behind a v4 VIP
    let want = desired(&[s]);
    assert_eq!(want.len(), 2);
    let w = &want[&key("10.89.0.200:80")];
    assert_eq!(w.service.scheduler, "rr");
    assert_eq!(w.service.flags & wire::SVC_F_PERSISTENT, wire::SVC_F_PERSISTENT);
    assert_eq!(w.service.timeout, 600);
    assert_eq!(w.dests, [sa("10.89.0.2:8080"), sa("10.89.0.3:8080")].into());
    let u = &want[&ServiceKey::udp(sa("10.89.0.200:53"))];
    assert_eq!(u.dests, [sa("10.89.0.2:5353"), sa("10.89.0.3:5353")].into());
}

#[test]
fn an_ingress_port_is_a_fwmark_service_per_family_over_every_backend() {
    let mut s = svc("web", 200, &[2]);
    s.vips.push(FwVip {
        network: "back".into(),
        bridge: String::new(),
        vip: ip("10.90.0.200"),
        backends: vec![ip("10.90.0.7")],
    });
    s.ingress.push(FwIngress {
        published: 8088,
        target: 8080,
        proto: Proto::Tcp,
    });
    let want = desired(&[s]);
    let mark = ingress_mark(Proto::Tcp, 8088);
    let w = &want[&ServiceKey::Fwmark { mark, ipv6: false }];
    assert_eq!(w.dests, [sa("10.89.0.2:8080"), sa("10.90.0.7:8080")].into());
    // No IPv6 VIP, no IPv6 ingress service.
    assert!(!want.contains_key(&ServiceKey::Fwmark { mark, ipv6: true }));
}

#[test]
fn ingress_marks_are_netds_and_stay_clear_of_other_mark_bits() {
    let marks = [
        ingress_mark(Proto::Tcp, 1),
        ingress_mark(Proto::Tcp, 8080),
        ingress_mark(Proto::Udp, 8080),
        ingress_mark(Proto::Udp, 65535),
    ];
    let distinct: BTreeSet<u32> = marks.into();
    assert_eq!(distinct.len(), 4);
    for m in marks {
        assert!(is_ingress_mark(m), "{m:#x}");
        // netd's hairpin bit, kube-proxy's masquerade and drop bits.
        assert_eq!(m & (0x2000 | 0x4000 | 0x8000), 0, "{m:#x}");
    }
    for other in [0, 7, 0x2000, 0x4000, 0x0e06, 0x1_0e07] {
        assert!(!is_ingress_mark(other), "{other:#x}");
    }
}

#[test]
fn full_sync_from_empty_makes_every_service_and_the_ingress_table() {
    let k = Arc::new(FakeKernel::default());
    let mut s = svc("web", 200, &[2, 3, 4]);
    s.ingress.push(FwIngress {
        published: 8088,
        target: 8080,
        proto: Proto::Tcp,
    });
    lb(&k).sync_full(&[s, svc("empty", 201, &[])]).unwrap();
    assert!(k.ipvs_was_set_up());
    let t = table(&k);
    let three = vec![
        (sa("10.89.0.2:8080"), 1),
        (sa("10.89.0.3:8080"), 1),
        (sa("10.89.0.4:8080"), 1),
    ];
    assert_eq!(t["tcp 10.89.0.200:80"], three);
    assert_eq!(t["tcp 10.89.0.201:80"], vec![]);
    let fwm = format!("fwmark {}", ingress_mark(Proto::Tcp, 8088));
    assert_eq!(t[&fwm], three);
    assert_eq!(t.len(), 3);
    assert!(k
        .ipvs_table()
        .iter()
        .flat_map(|(_, d)| d)
        .all(|d| d.forward == Forward::Masquerade));
    let nft = k.nft_batches().join("\n");
    assert!(nft.contains("add table inet netd_ipvs"), "{nft}");
    assert!(
        nft.contains(&format!("tcp . 8088 : {:#010x}", ingress_mark(Proto::Tcp, 8088))),
        "{nft}"
    );
    assert!(nft.contains("10.89.0.2 . 10.89.0.2"), "{nft}");
}

#[test]
fn a_restart_on_an_unchanged_kernel_sends_no_ipvs_change() {
    let k = Arc::new(FakeKernel::default());
    let state = many(50);
    lb(&k).sync_full(&state).unwrap();
    let before = (k.ipvs_log(), k.ipvs_table());
    assert_eq!(before.0.len(), 50 * 3);
    // kill -9 and start again: a new IpvsLb that knows only the store's state.
    lb(&k).sync_full(&state).unwrap();
    assert_eq!((k.ipvs_log(), k.ipvs_table()), before);
}

#[test]
fn a_full_sync_repairs_only_what_differs() {
    let k = Arc::new(FakeKernel::default());
    let state = vec![svc("web", 200, &[2, 3]), svc("db", 201, &[4])];
    lb(&k).sync_full(&state).unwrap();
    let n = k.ipvs_log().len();
    // Behind netd's back: one destination gone, the other service's weight changed.
    k.ipvs_apply(&[
        Op::DelDest(key("10.89.0.200:80"), sa("10.89.0.3:8080")),
        Op::SetDest(key("10.89.0.201:80"), Dest::masquerade(sa("10.89.0.4:8080"), 5)),
    ])
    .unwrap();
    lb(&k).sync_full(&state).unwrap();
    assert_eq!(
        k.ipvs_log()[n + 2..],
        [
            "-a tcp 10.89.0.200:80 -r 10.89.0.3:8080 -w 1",
            "-e tcp 10.89.0.201:80 -r 10.89.0.4:8080 -w 1",
        ]
    );
}

#[test]
fn services_netd_does_not_own_are_never_touched() {
    let k = Arc::new(FakeKernel::default());
    let foreign = Service::new(key("192.168.5.5:443"));
    let foreign_mark = Service::new(ServiceKey::fwmark(7));
    k.add_ipvs_service(foreign.clone(), vec![Dest::masquerade(sa("192.168.5.6:443"), 1)]);
    k.add_ipvs_service(foreign_mark.clone(), vec![]);
    // netd's, from before a restart, of a service since removed: in its prefix.
    k.add_ipvs_service(Service::new(key("10.89.0.250:80")), vec![]);
    let stale_mark = ServiceKey::fwmark(ingress_mark(Proto::Udp, 9000));
    k.add_ipvs_service(Service::new(stale_mark), vec![]);
    lb(&k).sync_full(&[svc("web", 200, &[2])]).unwrap();
    let t = table(&k);
    let keys: BTreeSet<&str> = t.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["tcp 192.168.5.5:443", "fwmark 7", "tcp 10.89.0.200:80"].into()
    );
    assert_eq!(t["tcp 192.168.5.5:443"], vec![(sa("192.168.5.6:443"), 1)]);
    assert!(k
        .ipvs_log()
        .iter()
        .all(|l| !l.contains("192.168.5.5") && !l.contains("fwmark 7 ")));
}

#[test]
fn a_removed_backend_drains_at_weight_zero_and_goes_when_it_has_no_connection() {
    let k = Arc::new(FakeKernel::default());
    let lb = lb(&k);
    let v1 = vec![svc("web", 200, &[2, 3, 4])];
    let v2 = vec![svc("web", 200, &[2, 3])];
    lb.sync_full(&v1).unwrap();
    let web = key("10.89.0.200:80");
    k.set_ipvs_conns(&web, sa("10.89.0.4:8080"), 1, 0);
    let n = k.ipvs_log().len();
    lb.sync_diff(&v1, &v2).unwrap();
    assert_eq!(
        k.ipvs_log()[n..],
        ["-e tcp 10.89.0.200:80 -r 10.89.0.4:8080 -w 0"]
    );
    assert_eq!(
        table(&k)["tcp 10.89.0.200:80"],
        vec![
            (sa("10.89.0.2:8080"), 1),
            (sa("10.89.0.3:8080"), 1),
            (sa("10.89.0.4:8080"), 0)
        ]
    );
    assert_eq!(lb.draining(), [web].into());
    // Still one connection: a later sync keeps it; a restart (full sync) too.
    lb.reap(&v2).unwrap();
    IpvsLb::new(k.clone(), owned()).sync_full(&v2).unwrap();
    assert_eq!(k.ipvs_log().len(), n + 1);
    assert_eq!(table(&k)["tcp 10.89.0.200:80"].len(), 3);
    // The connection ended: the next sync removes it, and the service stops draining.
    k.set_ipvs_conns(&web, sa("10.89.0.4:8080"), 0, 0);
    lb.reap(&v2).unwrap();
    assert_eq!(k.ipvs_log()[n + 1..], ["-d tcp 10.89.0.200:80 -r 10.89.0.4:8080"]);
    assert_eq!(lb.draining(), BTreeSet::new());
    lb.reap(&v2).unwrap();
    assert_eq!(k.ipvs_log().len(), n + 2);
}

#[test]
fn a_draining_backend_that_comes_back_is_live_again() {
    let k = Arc::new(FakeKernel::default());
    let lb = lb(&k);
    let (v1, v2) = (vec![svc("web", 200, &[2, 3])], vec![svc("web", 200, &[2])]);
    lb.sync_full(&v1).unwrap();
    k.set_ipvs_conns(&key("10.89.0.200:80"), sa("10.89.0.3:8080"), 0, 2);
    lb.sync_diff(&v1, &v2).unwrap();
    let n = k.ipvs_log().len();
    lb.sync_diff(&v2, &v1).unwrap();
    assert_eq!(
        k.ipvs_log()[n..],
        ["-e tcp 10.89.0.200:80 -r 10.89.0.3:8080 -w 1"]
    );
    assert_eq!(lb.draining(), BTreeSet::new());
}

#[test]
fn a_change_costs_what_changed_not_what_exists() {
    let mut sizes = Vec::new();
    for n in [10, 1000] {
        let k = Arc::new(FakeKernel::default());
        let lb = lb(&k);
        let old = many(n);
        lb.sync_full(&old).unwrap();
        let mut new = old.clone();
        new[n / 2].vips[0].backends.push(ip("10.89.0.9"));
        let (ops, batches) = (k.ipvs_log().len(), k.nft_batches().len());
        lb.sync_diff(&old, &new).unwrap();
        let log = k.ipvs_log()[ops..].to_vec();
        let nft = k.nft_batches()[batches..].to_vec();
        assert_eq!(log.len(), 1, "{log:?}");
        sizes.push((log[0].split(' ').skip(1).count(), nft.concat().len()));
    }
    assert_eq!(sizes[0], sizes[1], "the same change at 10 and 1000 services");
}

#[test]
fn removing_a_service_deletes_it_and_its_ingress_mark() {
    let k = Arc::new(FakeKernel::default());
    let lb = lb(&k);
    let mut s = svc("web", 200, &[2]);
    s.ingress.push(FwIngress {
        published: 8088,
        target: 8080,
        proto: Proto::Udp,
    });
    let old = vec![s, svc("db", 201, &[3])];
    lb.sync_full(&old).unwrap();
    let n = k.ipvs_log().len();
    let b = k.nft_batches().len();
    lb.sync_diff(&old, &old[1..]).unwrap();
    let mark = ingress_mark(Proto::Udp, 8088);
    let log: BTreeSet<String> = k.ipvs_log()[n..].iter().cloned().collect();
    assert_eq!(
        log,
        ["-D tcp 10.89.0.200:80".to_string(), format!("-D fwmark {mark}")].into()
    );
    let nft = k.nft_batches()[b..].concat();
    assert!(
        nft.contains("delete element inet netd_ipvs ingress { udp . 8088 }"),
        "{nft}"
    );
    assert!(
        nft.contains("delete element inet netd_ipvs hairpin4 { 10.89.0.2 . 10.89.0.2 }"),
        "{nft}"
    );
    assert_eq!(table(&k).len(), 1);
}

#[test]
fn affinity_changes_set_the_service_in_place() {
    let k = Arc::new(FakeKernel::default());
    let lb = lb(&k);
    let old = vec![svc("web", 200, &[2])];
    let mut new = old.clone();
    new[0].affinity = Some(30);
    lb.sync_full(&old).unwrap();
    let n = k.ipvs_log().len();
    lb.sync_diff(&old, &new).unwrap();
    assert_eq!(k.ipvs_log()[n..], ["-E tcp 10.89.0.200:80 rr -p 30"]);
}

#[test]
fn a_failed_change_says_how_far_it_got() {
    let k = Arc::new(FakeKernel::default());
    k.fail_ipvs_at(2);
    let e = lb(&k)
        .sync_full(&[svc("web", 200, &[2, 3, 4])])
        .expect_err("injected failure");
    assert!(
        matches!(e, KernelError::IpvsPartial(ref a) if a.done == 2 && a.total == 4),
        "{e}"
    );
    assert!(e.to_string().contains("after 2 of 4 IPVS changes"), "{e}");
    // The next full sync finishes the job from what is there.
    lb(&k).sync_full(&[svc("web", 200, &[2, 3, 4])]).unwrap();
    assert_eq!(table(&k)["tcp 10.89.0.200:80"].len(), 3);
}

#[test]
fn someone_elses_service_on_a_wanted_vip_is_an_error_not_a_takeover() {
    let k = Arc::new(FakeKernel::default());
    let lb = lb(&k);
    k.add_ipvs_service(Service::new(key("10.89.0.200:80")).scheduler("sh"), vec![]);
    // The full sync sees it and corrects it (the VIP is netd's)...
    lb.sync_full(&[svc("web", 200, &[2])]).unwrap();
    assert_eq!(k.ipvs_table()[0].0.scheduler, "rr");
    // ...a diff that believes it absent gets the kernel's EEXIST.
    let k2 = Arc::new(FakeKernel::default());
    k2.add_ipvs_service(Service::new(key("10.89.0.200:80")), vec![]);
    let e = IpvsLb::new(k2.clone(), owned())
        .sync_diff(&[], &[svc("web", 200, &[2])])
        .expect_err("exists");
    assert!(e.to_string().contains("already exists"), "{e}");
}

/// `nft -c` (checks a batch in the kernel, changes nothing) accepts the ingress table,
/// a diff that adds an ingress port and a backend, and one that removes them. Run as
/// root where nft is installed; skipped with the reason otherwise (a failure under
/// `NETD_TEST_REQUIRE=1`).
#[test]
fn nft_accepts_the_ingress_table_and_its_diffs() {
    let name = "nft_accepts_the_ingress_table_and_its_diffs";
    let skip = |reason: &str| {
        assert!(
            std::env::var("NETD_TEST_REQUIRE").as_deref() != Ok("1"),
            "{name}: required but cannot run: {reason}"
        );
        println!("skipped {name}: {reason}");
    };
    if !nix::unistd::Uid::effective().is_root() {
        return skip("not root");
    }
    let old = desired(&[svc("web", 200, &[2])]);
    let mut s = svc("web", 200, &[2, 3]);
    s.vips.push(FwVip {
        network: "v6".into(),
        bridge: String::new(),
        vip: ip("fd00:89::200"),
        backends: vec![ip("fd00:89::2")],
    });
    s.ingress.push(FwIngress {
        published: 8088,
        target: 8080,
        proto: Proto::Tcp,
    });
    let new = desired(&[s]);
    let batch = format!(
        "{}{}{}",
        nft_full(&old),
        nft_diff(&old, &new),
        nft_diff(&new, &old)
    );
    let path = std::env::temp_dir().join(format!("netd-ipvs-nft-{}.nft", std::process::id()));
    std::fs::write(&path, &batch).expect("write batch");
    let out = std::process::Command::new("nft")
        .args(["-c", "-f"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    match out {
        Err(e) => skip(&format!("cannot run nft: {e}")),
        Ok(o) => assert!(
            o.status.success(),
            "nft -c refused: {}\n{batch}",
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}
