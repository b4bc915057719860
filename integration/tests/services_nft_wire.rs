//! Service batches sent straight over nfnetlink (`kernel::nft_svc`) against the same
//! batches as text through libnftables, in two throwaway namespaces each: `nft list
//! table inet netd` must print the same. Covers every rule shape `services.rs` emits
//! (the fixture of its unit tests and seeded random sets), full loads, diffs applied on
//! top of a full load made by text, and a refused batch. Needs root (skips otherwise).

use std::net::IpAddr;

use integration::fwtest::TestNs;
use integration::skip::{no_program, no_root};
use netd::firewall::batch::Batch;
use netd::firewall::ruleset::services::{self, FwIngress, FwService, FwVip};
use netd::kernel::nft::Nft;
use netd::kernel::{netns, nft_elements};
use netd::model::Proto;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn skip() -> bool {
    no_root() || no_program("nft", "nftables")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn svc(ns: &str, name: &str, vips: Vec<FwVip>) -> FwService {
    FwService {
        namespace: ns.into(),
        name: name.into(),
        ports: vec![(80, 8080, Proto::Tcp)],
        affinity: None,
        vips,
        ingress: vec![],
    }
}

fn vip(net: &str, vip: &str, backends: &[&str]) -> FwVip {
    FwVip {
        network: net.into(),
        vip: ip(vip),
        backends: backends.iter().map(|b| ip(b)).collect(),
        // The VIP's own-network guard rule.
        bridge: format!("br-{net}"),
    }
}

/// The fixture of `services_tests.rs`: a web service on two networks (one dual-stack
/// backend), with affinity, a UDP port and an ingress port; and a service with no
/// backend (IPv6, UDP: the icmpx reject).
fn example() -> Vec<FwService> {
    let mut web = svc(
        "shop",
        "web",
        vec![
            vip(
                "frontend",
                "10.89.0.200",
                &["10.89.0.2", "10.89.0.3", "fd00:89::2"],
            ),
            vip("backend", "10.89.1.200", &["10.89.1.2"]),
            vip("frontend", "fd00:89::200", &["fd00:89::2"]),
        ],
    );
    web.affinity = Some(10_800);
    web.ports.push((53, 5353, Proto::Udp));
    web.ingress = vec![FwIngress {
        masquerade: false,
        published: 8088,
        target: 8080,
        proto: Proto::Tcp,
    }];
    let mut dns = svc("default", "dns", vec![vip("frontend", "fd00:89::53", &[])]);
    dns.ports = vec![(53, 53, Proto::Udp)];
    let api = svc("default", "api", vec![vip("n", "10.0.0.9", &[])]);
    vec![web, dns, api]
}

/// Up to `n` services with random VIPs (either family), backends, ports, affinity and
/// ingress ports, from a seed.
fn random(rng: &mut StdRng, n: usize) -> Vec<FwService> {
    (0..n)
        .map(|i| {
            let v6 = rng.random_bool(0.3);
            let addr = |rng: &mut StdRng, net: u8| -> String {
                let h: u8 = rng.random_range(2..250);
                if v6 {
                    format!("fd00:{net}::{h:x}")
                } else {
                    format!("10.{net}.0.{h}")
                }
            };
            let nb = rng.random_range(0..5);
            let backends: Vec<String> = (0..nb).map(|_| addr(rng, 1)).collect();
            let b: Vec<&str> = backends.iter().map(String::as_str).collect();
            let v = if v6 {
                format!("fd00:96::{:x}", i + 1)
            } else {
                format!("10.96.{}.{}", i / 250, i % 250 + 1)
            };
            let mut s = svc("rnd", &format!("s{i}"), vec![vip("net1", &v, &b)]);
            if rng.random_bool(0.5) {
                s.ports.push((443, 8443, Proto::Tcp));
            }
            if rng.random_bool(0.3) {
                s.ports.push((53, 53, Proto::Udp));
            }
            if rng.random_bool(0.3) {
                s.affinity = Some(rng.random_range(10..100));
            }
            if rng.random_bool(0.2) {
                s.ingress.push(FwIngress {
                    masquerade: false,
                    published: 9000 + i as u16,
                    target: 8080,
                    proto: if rng.random_bool(0.5) {
                        Proto::Tcp
                    } else {
                        Proto::Udp
                    },
                });
            }
            s
        })
        .collect()
}

/// `svcs` with random changes: backends added and removed, affinity changed, a
/// service dropped, one added.
fn changed(rng: &mut StdRng, svcs: &[FwService]) -> Vec<FwService> {
    let mut out: Vec<FwService> = svcs.to_vec();
    for s in &mut out {
        match rng.random_range(0..6) {
            0 => {
                let v = &mut s.vips[0];
                let b = if v.vip.is_ipv4() {
                    ip(&format!("10.1.1.{}", rng.random_range(2..250)))
                } else {
                    ip(&format!("fd00:1:1::{:x}", rng.random_range(2..250)))
                };
                v.backends.push(b);
            }
            1 => {
                s.vips[0].backends.pop();
            }
            2 => s.affinity = if s.affinity.is_some() { None } else { Some(77) },
            3 => s.ports.truncate(1),
            _ => {}
        }
    }
    if out.len() > 1 {
        out.remove(rng.random_range(0..out.len()));
    }
    out.extend(random(rng, 1).into_iter().map(|mut s| {
        s.name = "added".into();
        s
    }));
    out
}

/// A namespace with `table inet netd`.
fn table_ns() -> TestNs {
    let ns = TestNs::create();
    ns.nft(&["add", "table", "inet", "netd"]);
    ns
}

fn by_text(ns: &TestNs, b: &Batch) {
    if b.is_empty() {
        return;
    }
    Nft::new_in(Some(&ns.path()))
        .expect("nft context")
        .run(&b.to_string())
        .unwrap_or_else(|e| panic!("libnftables refused the batch: {e}\n{b}"));
}

fn conn(ns: &TestNs) -> nft_elements::Conn {
    netns::run_in(&ns.path(), nft_elements::Conn::open)
        .expect("enter test netns")
        .expect("nfnetlink socket")
}

fn by_wire(ns: &TestNs, b: &Batch) {
    if b.is_empty() {
        return;
    }
    let cmds = b.svc_commands().expect("a batch of service commands only");
    match conn(ns).apply_svc(&cmds) {
        Ok(true) => {}
        Ok(false) => panic!("the batch fell back to libnftables:\n{b}"),
        Err(e) => panic!("the kernel refused the direct batch: {e}\n{b}"),
    }
}

fn listing(ns: &TestNs) -> String {
    ns.nft(&["list", "table", "inet", "netd"])
}

/// Full load both ways, then the same full load again on top (a restore): same listing.
fn full_both_ways(svcs: &[FwService]) {
    let full = services::full(svcs);
    let (a, b) = (table_ns(), table_ns());
    by_text(&a, &full);
    by_wire(&b, &full);
    let want = listing(&a);
    assert!(want.contains("svc_prerouting"), "{want}");
    assert_eq!(
        listing(&b),
        want,
        "direct full load differs from text; batch:\n{full}"
    );
    by_wire(&b, &full);
    assert_eq!(listing(&b), want, "a second direct full load changed the table");
}

#[test]
fn a_direct_full_load_lists_as_the_text_one() {
    if skip() {
        return;
    }
    full_both_ways(&example());
    for seed in 1..=4 {
        full_both_ways(&random(&mut StdRng::seed_from_u64(seed), 12));
    }
    // More VIPs than one element message holds (`nft_svc` splits the list).
    full_both_ways(&random(&mut StdRng::seed_from_u64(99), 450));
}

#[test]
fn a_direct_diff_on_a_text_full_load_lists_as_the_text_diff() {
    if skip() {
        return;
    }
    let mut cases = vec![{
        let old = example();
        let mut new = example();
        new[0].vips[0].backends.remove(0);
        new[0].affinity = Some(60);
        new[1].vips[0].backends.push(ip("fd00:89::3"));
        new.remove(2);
        (old, new)
    }];
    for seed in 10..=14 {
        let mut rng = StdRng::seed_from_u64(seed);
        let old = random(&mut rng, 10);
        let new = changed(&mut rng, &old);
        cases.push((old, new));
    }
    for (old, new) in cases {
        let (a, b) = (table_ns(), table_ns());
        let full = services::full(&old);
        by_text(&a, &full);
        by_text(&b, &full);
        let d = services::diff(&old, &new);
        by_text(&a, &d);
        by_wire(&b, &d);
        let want = listing(&a);
        assert_eq!(listing(&b), want, "direct diff differs from text; diff:\n{d}");
        // And back, directly, to where it started.
        let back = services::diff(&new, &old);
        by_text(&a, &back);
        by_wire(&b, &back);
        assert_eq!(
            listing(&b),
            listing(&a),
            "direct diff back differs; diff:\n{back}"
        );
    }
}

#[test]
fn a_refused_direct_batch_changes_nothing_and_names_the_command() {
    if skip() {
        return;
    }
    let ns = table_ns();
    let svcs = example();
    by_wire(&ns, &services::full(&svcs));
    let before = listing(&ns);
    // Deleting a chain that is not there, after valid commands in the same batch.
    let mut gone = svcs.clone();
    gone[0].vips[0].backends.push(ip("10.89.0.9"));
    let mut b = services::diff(&svcs, &gone);
    b.cmds.push(netd::firewall::batch::Command::Svc(
        netd::firewall::svc_cmd::SvcCmd::DeleteChain("svc/nothing/here".into()),
    ));
    let cmds = b.svc_commands().unwrap();
    let err = conn(&ns)
        .apply_svc(&cmds)
        .expect_err("a missing chain must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("delete chain inet netd svc/nothing/here") && msg.contains("No such file"),
        "{msg}"
    );
    assert_eq!(listing(&ns), before, "a refused batch changed the table");
}
