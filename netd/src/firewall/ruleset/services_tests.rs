//! Service ruleset: what `full` writes, that `nft -c` accepts it, and that `diff` stays
//! the size of the change whatever the number of services.

use proptest::prelude::*;

use super::*;
use crate::firewall::ruleset::fixtures::sample;

/// The batches as text, as libnftables gets them.
fn full(s: &[FwService]) -> String {
    super::full(s).to_string()
}

fn diff(a: &[FwService], b: &[FwService]) -> String {
    super::diff(a, b).to_string()
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
        bridge: String::new(),
    }
}

/// A web service on two networks (one dual-stack backend), with affinity, a UDP port and
/// an ingress port; and a service with no backend.
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
        ],
    );
    web.affinity = Some(10_800);
    web.ingress = vec![FwIngress {
        published: 8088,
        target: 8080,
        proto: Proto::Tcp,
        masquerade: false,
    }];
    let mut dns = svc("default", "dns", vec![vip("frontend", "fd00:89::53", &[])]);
    dns.ports = vec![(53, 53, Proto::Udp)];
    vec![web, dns]
}

#[test]
fn full_lays_out_dispatch_port_and_backend_chains() {
    let b = full(&example());
    // Printed for docs/services.md (`cargo test -p netd --lib services -- --nocapture`).
    println!("{b}");
    for want in [
        "add element inet netd svc4_dispatch { 10.89.0.200 . tcp . 80 : goto svc/shop/web/frontend/tcp/80, \
         10.89.1.200 . tcp . 80 : goto svc/shop/web/backend/tcp/80 }",
        "add element inet netd svc6_dispatch { fd00:89::53 . udp . 53 : goto svc/default/dns/frontend/ip6/udp/53 }",
        "add element inet netd svc4_ingress { tcp . 8088 : goto svc/shop/web/ingress4/tcp/8088 }",
        // With affinity (web): a chain per backend. v4 VIP: only the v4 backends of its network.
        "add rule inet netd svc/shop/web/frontend/tcp/80 numgen random mod 2 vmap { \
         0 : goto svc/shop/web/frontend/tcp/80/10.89.0.2, 1 : goto svc/shop/web/frontend/tcp/80/10.89.0.3 }",
        "add rule inet netd svc/shop/web/frontend/tcp/80 ip saddr @svc/shop/web/frontend/tcp/80/10.89.0.2/aff10800 \
         goto svc/shop/web/frontend/tcp/80/10.89.0.2 comment \"affinity\"",
        "add rule inet netd svc/shop/web/frontend/tcp/80/10.89.0.2 meta l4proto tcp dnat ip to 10.89.0.2:8080",
        // Ingress: every backend of the family, all networks.
        "add rule inet netd svc/shop/web/ingress4/tcp/8088 numgen random mod 3 vmap { \
         0 : goto svc/shop/web/ingress4/tcp/8088/10.89.0.2, 1 : goto svc/shop/web/ingress4/tcp/8088/10.89.0.3, \
         2 : goto svc/shop/web/ingress4/tcp/8088/10.89.1.2 }",
        // Without affinity (dns, no backend): the port chain goes to the pick chain,
        // which rejects what no backend map has.
        "add rule inet netd svc/default/dns/frontend/ip6/udp/53 goto svc/pick6",
        "add rule inet netd svc/pick6 reject with icmpx port-unreachable comment \"no backend\"",
        "add rule inet netd svc_postrouting ip saddr . ip daddr @svc/hairpin4 masquerade \
         comment \"service hairpin: a backend reaching itself through its VIP\"",
        "add element inet netd svc/hairpin4 { 10.89.0.2 . 10.89.0.2, 10.89.0.3 . 10.89.0.3, 10.89.1.2 . 10.89.1.2 }",
    ] {
        assert!(b.lines().any(|l| l == want), "missing {want:?} in:\n{b}");
    }
    // No IPv6 ingress port: the web service has no IPv6 VIP.
    assert!(!b.contains("svc/shop/web/ingress6"), "{b}");
    // The same services in another order: the same batch.
    let mut rev = example();
    rev.reverse();
    assert_eq!(full(&rev), b);
    assert_eq!(diff(&example(), &rev), "");
}

#[test]
fn a_vip_of_each_family_on_one_network_gets_chains_of_its_own() {
    let s = svc(
        "default",
        "api",
        vec![
            vip("n", "10.0.0.9", &["10.0.0.2", "fd00::2"]),
            vip("n", "fd00::9", &["10.0.0.2", "fd00::2"]),
        ],
    );
    let b = full(&[s]);
    for want in [
        "add rule inet netd svc/default/api/n/tcp/80 goto svc/pick4",
        "add rule inet netd svc/default/api/n/ip6/tcp/80 goto svc/pick6",
        "add element inet netd svc/pick4/tcp/n1 { 10.0.0.9 . 80 . 0 : 10.0.0.2 . 8080 }",
        "add element inet netd svc/pick6/tcp/n1 { fd00::9 . 80 . 0 : fd00::2 . 8080 }",
        "add rule inet netd svc/pick6 dnat ip6 to ip6 daddr . tcp dport . numgen random mod 1 map @svc/pick6/tcp/n1",
        "add element inet netd svc6_dispatch { fd00::9 . tcp . 80 : goto svc/default/api/n/ip6/tcp/80 }",
    ] {
        assert!(b.lines().any(|l| l == want), "missing {want:?} in:\n{b}");
    }
}

#[test]
fn from_model_takes_vip_services_and_their_backends_per_network() {
    use crate::model::ServiceRequest;
    let r = ServiceRequest {
        name: "web".into(),
        namespace: Some("shop".into()),
        networks: vec!["front".into(), "back".into(), "later".into()],
        ports: vec!["80:8080".into()],
        backends: vec!["a".into()],
        session_affinity: Some("client-ip".into()),
        publish: vec!["9000:8080".into(), "9001:8080,mode=host".into()],
        vips: [("front", "10.0.0.200"), ("back", "10.1.0.200")]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let (name, namespace, kind) = r.parse().unwrap();
    let svc = Service {
        name,
        namespace,
        id: "1".into(),
        kind,
        labels: Default::default(),
        created: 0,
        applied: false,
    };
    let backends = vec![
        Backend {
            network: "front".into(),
            sandbox: "a".into(),
            ip: ip("10.0.0.2"),
        },
        Backend {
            network: "back".into(),
            sandbox: "a".into(),
            ip: ip("10.1.0.2"),
        },
    ];
    let f = FwService::from_model(&svc, &backends, |_| None).unwrap();
    assert_eq!(f.ports, [(80, 8080, Proto::Tcp)]);
    assert_eq!(f.affinity, Some(10_800));
    // "later" has no VIP yet; host-mode ports are the backends' own, not ingress.
    assert_eq!(
        f.vips,
        [
            vip("front", "10.0.0.200", &["10.0.0.2"]),
            vip("back", "10.1.0.200", &["10.1.0.2"])
        ]
    );
    assert_eq!(
        f.ingress,
        [FwIngress {
            published: 9000,
            target: 8080,
            proto: Proto::Tcp,
            masquerade: false,
        }]
    );
    // dnsrr and ExternalName services have no nft objects.
    let mut d = svc.clone();
    if let ServiceKind::ClusterIp(c) = &mut d.kind {
        c.endpoint_mode = EndpointMode::Dnsrr;
    }
    assert!(FwService::from_model(&d, &backends, |_| None).is_none());
}

#[test]
fn no_backend_rejects_with_a_tcp_reset() {
    let b = full(&[svc("default", "api", vec![vip("n", "10.0.0.9", &[])])]);
    assert!(
        b.contains("add rule inet netd svc/default/api/n/tcp/80 goto svc/pick4\n"),
        "{b}"
    );
    assert!(b.contains(
        "add rule inet netd svc/pick4 meta l4proto tcp reject with tcp reset comment \"no backend\""
    ));
    // No backend map at all: the pick chain holds the rejects only.
    assert!(!b.contains("dnat"), "{b}");
}

#[test]
fn names_that_are_not_identifiers_are_left_out() {
    let b = full(&[svc("default", "w;b", vec![vip("n", "10.0.0.9", &[])])]);
    assert!(!b.contains("w;b") && !b.contains("svc/default"), "{b}");
}

/// `n` services of one backend each on one network, as the engine would hand them.
fn many(n: usize) -> Vec<FwService> {
    (0..n)
        .map(|i| {
            let (hi, lo) = ((i / 250) as u8, (i % 250) as u8 + 2);
            let v = format!("10.{}.{hi}.{lo}", 100 + (i / 62_500));
            let be = format!("10.{}.{hi}.{lo}", 200 + (i / 62_500));
            svc("default", &format!("s{i}"), vec![vip("net", &v, &[&be])])
        })
        .collect()
}

/// Whether a line of a diff belongs to service `i` of `many`: its chains, or elements
/// keyed by its VIP (backend maps) or naming `backend` (hairpin set). The pick chains
/// and backend maps are shared by all services: refilled (a few rules) when the set of
/// backend counts in use changes, whatever the number of services.
fn of_service(l: &str, i: usize, backend: &str) -> bool {
    let (hi, lo) = ((i / 250) as u8, (i % 250) as u8 + 2);
    let v = format!("10.{}.{hi}.{lo} . ", 100 + (i / 62_500));
    l.contains(&format!("svc/default/s{i}/"))
        || (l.contains(" element inet netd svc/pick") && l.contains(&format!("{{ {v}")))
        || (l.contains(" element inet netd svc/hairpin") && l.contains(backend))
        || l.starts_with("add map inet netd svc/pick")
        || l.starts_with("delete set inet netd svc/pick")
        || l.starts_with("flush chain inet netd svc/pick")
        || l.starts_with("add rule inet netd svc/pick")
}

#[test]
fn one_backend_change_costs_the_same_at_10_1000_and_10000_services() {
    let mut sizes = Vec::new();
    for n in [10, 1_000, 10_000] {
        let old = many(n);
        // A backend replaced: one element of the backend map and the hairpin set each
        // way, no rule, no chain.
        let mut new = old.clone();
        new[3].vips[0].backends = vec![ip("10.250.0.9")];
        let d = diff(&old, &new);
        assert_eq!(d.lines().count(), 4, "{d}");
        assert!(d.lines().all(|l| l.contains(" element inet netd svc/")), "{d}");
        assert!(
            d.lines()
                .all(|l| of_service(l, 3, "10.250.0.9") || of_service(l, 3, "10.200.0.5")),
            "{d}"
        );
        if n == 10 {
            println!("{d}");
        }
        sizes.push((d.lines().count(), d.len()));
        // A backend added: the service moves to the map of 2 backends (made, and the
        // pick chain refilled, as no service had 2).
        let mut more = old.clone();
        more[3].vips[0].backends.push(ip("10.250.0.9"));
        let d = diff(&old, &more);
        assert!(d.lines().all(|l| of_service(l, 3, "10.250.0.9")), "{d}");
        sizes.push((d.lines().count(), d.len()));
        let back = diff(&more, &old);
        assert!(back.contains("delete set inet netd svc/pick4/tcp/n2"), "{back}");
        assert!(back.lines().all(|l| of_service(l, 3, "10.250.0.9")), "{back}");
    }
    assert!(
        sizes
            .iter()
            .step_by(2)
            .collect::<Vec<_>>()
            .windows(2)
            .all(|w| w[0] == w[1]),
        "{sizes:?}"
    );
    assert!(
        sizes
            .iter()
            .skip(1)
            .step_by(2)
            .collect::<Vec<_>>()
            .windows(2)
            .all(|w| w[0] == w[1]),
        "{sizes:?}"
    );
}

#[test]
fn removing_a_service_drops_references_before_chains() {
    let old = example();
    let new = vec![old[1].clone()];
    let d = diff(&old, &new);
    let pos = |s: &str| {
        d.lines()
            .position(|l| l.starts_with(s))
            .unwrap_or_else(|| panic!("{s} in {d}"))
    };
    assert!(pos("delete element inet netd svc4_dispatch") < pos("flush chain inet netd svc/shop/web"));
    assert!(pos("flush chain inet netd svc/shop/web") < pos("delete chain inet netd svc/shop/web"));
    assert!(pos("delete chain") < pos("delete set"));
    assert!(!d.contains("svc/default/dns"), "{d}");
}

/// Prints the skip as the suite counts it (`skipped NAME: reason`); under
/// `NETD_TEST_REQUIRE=1` (CI) a skip is a failure, as `integration::skip` has it.
fn skip(reason: &str) -> Option<Result<(), String>> {
    if std::env::var("NETD_TEST_REQUIRE").as_deref() == Ok("1") {
        panic!("nft_accepts_full_and_diff: required but cannot run: {reason}");
    }
    println!("skipped nft_accepts_full_and_diff: {reason}");
    None
}

/// `nft -c` checks a batch in the kernel without changing anything. Run as root where
/// nft is installed; skipped with the reason otherwise.
fn nft_check(batch: &str) -> Option<Result<(), String>> {
    if !nix::unistd::Uid::effective().is_root() {
        return skip("not root");
    }
    let path = std::env::temp_dir().join(format!("netd-svc-nft-{}.nft", std::process::id()));
    if let Err(e) = std::fs::write(&path, batch) {
        return Some(Err(format!("write {}: {e}", path.display())));
    }
    let out = std::process::Command::new("nft")
        .args(["-c", "-f"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    match out {
        Err(e) => skip(&format!("cannot run nft: {e}")),
        Ok(o) if o.status.success() => {
            eprintln!("nft -c accepted {} lines", batch.lines().count());
            Some(Ok(()))
        }
        Ok(o) => Some(Err(String::from_utf8_lossy(&o.stderr).into_owned())),
    }
}

#[test]
fn nft_accepts_full_and_diff() {
    let base = crate::firewall::ruleset::full(&sample(), "netd nft -c test");
    let old = example();
    let mut new = example();
    new[0].vips[0].backends.remove(0);
    new[0].affinity = Some(60);
    new[1].vips[0].backends.push(ip("fd00:89::3"));
    // One transaction: create everything, then move to `new`, then drop a service,
    // then the last one (which takes the base chains and maps with it).
    let batch = format!(
        "{base}{}{}{}{}",
        full(&old),
        diff(&old, &new),
        diff(&new, &new[1..]),
        diff(&new[1..], &[])
    );
    match nft_check(&batch) {
        None => {}
        Some(Ok(())) => {}
        Some(Err(e)) => panic!("nft -c refused the batch: {e}\n{batch}"),
    }
}

/// A service of the mixed set `diff_plans_what_diff_all_does` draws from: backends
/// from a small pool (so services share them and backend counts collide), on one of two
/// networks, with or without affinity, an ingress port, a UDP port.
fn mixed(i: usize, (present, mask, aff, ingress, udp): (bool, u8, bool, bool, bool)) -> Option<FwService> {
    const POOL: [&str; 6] = [
        "10.89.0.2",
        "10.89.0.3",
        "10.89.0.4",
        "10.89.0.5",
        "fd00:89::2",
        "10.89.0.6",
    ];
    if !present {
        return None;
    }
    let backends: Vec<&str> = POOL
        .iter()
        .enumerate()
        .filter(|(b, _)| mask & (1 << b) != 0)
        .map(|(_, ip)| *ip)
        .collect();
    let net = if i % 2 == 0 { "frontend" } else { "backend" };
    // Services 5 and 6 share a VIP and ingress port with 1 and 2 (the daemon refuses
    // that; a plan must still match `diff_all`, where the later service holds the keys).
    let j = if i >= 5 { i - 4 } else { i };
    let mut s = svc(
        "default",
        &format!("s{i}"),
        vec![vip(net, &format!("10.89.{}.{}", 100 + i % 2, 200 + j), &backends)],
    );
    if aff {
        s.affinity = Some(60);
    }
    if ingress {
        s.ingress = vec![FwIngress {
            published: 9000 + j as u16,
            target: 8080,
            proto: Proto::Tcp,
            masquerade: i % 3 == 0,
        }];
    }
    if udp {
        s.ports.push((53, 53, Proto::Udp));
    }
    Some(s)
}

type Mixed = (bool, u8, bool, bool, bool);

fn mixed_set(v: &[Mixed], reverse: bool) -> Vec<FwService> {
    // Which of two services with one VIP holds its keys follows the list's order, so a
    // reordered list with such a pair changes them with no service changed: `diff_all`
    // would move them, `diff` plans nothing. The daemon never has such a pair; reordered
    // sets leave the sharing services (5, 6) out.
    let mut out: Vec<FwService> = v
        .iter()
        .enumerate()
        .filter(|(i, _)| !reverse || *i < 5)
        .filter_map(|(i, m)| mixed(i, *m))
        .collect();
    if reverse {
        out.reverse();
    }
    out
}

proptest! {
    /// Planning from the changed services only gives the batch planning from every
    /// service gives: backends shared between services, backend counts that come and
    /// go, services added, removed and reordered, the first and the last service.
    #[test]
    fn diff_plans_what_diff_all_does(
        a in proptest::collection::vec(any::<Mixed>(), 0..7),
        b in proptest::collection::vec(any::<Mixed>(), 0..7),
        keep in proptest::collection::vec(any::<bool>(), 7),
        reverse in any::<bool>(),
    ) {
        let old = mixed_set(&a, false);
        // `new`: some services as they were, others redrawn (most changes are small).
        let mut drawn = a.clone();
        for (i, m) in b.iter().enumerate() {
            if i >= drawn.len() {
                drawn.push(*m);
            } else if !keep[i] {
                drawn[i] = *m;
            }
        }
        let new = mixed_set(&drawn, reverse);
        prop_assert_eq!(super::diff(&old, &new), super::diff_all(&old, &new));
        prop_assert_eq!(super::diff(&new, &old), super::diff_all(&new, &old));
    }

    /// Any change to some services touches the objects of those services only, and
    /// equal states give an empty batch.
    #[test]
    fn diff_touches_changed_services_only(
        n in 1usize..20,
        changes in proptest::collection::vec((0usize..20, 0u8..4), 0..5),
    ) {
        let old = many(n);
        let mut new = old.clone();
        let mut touched = std::collections::BTreeSet::new();
        for (i, what) in changes {
            let i = i % n;
            let s = &mut new[i];
            match what {
                0 => s.vips[0].backends.push(ip("10.250.0.9")),
                1 => s.vips[0].backends.clear(),
                2 => s.affinity = Some(30),
                _ => s.ports.push((443, 8443, Proto::Tcp)),
            }
            touched.insert(i);
        }
        let d = diff(&old, &new);
        prop_assert_eq!(d.is_empty(), old == new);
        for l in d.lines() {
            // (the backends of service i are 10.200.x.y, and the added one 10.250.0.9)
            prop_assert!(
                touched.iter().any(|&i| {
                    let (hi, lo) = ((i / 250) as u8, (i % 250) as u8 + 2);
                    of_service(l, i, "10.250.0.9") || of_service(l, i, &format!("10.200.{hi}.{lo} "))
                }),
                "{}",
                l
            );
        }
        prop_assert_eq!(diff(&new, &new), "");
    }
}

/// A VIP is dispatched only from its own network's bridge (the host's own packets, in
/// the output hook, have no input interface and pass), and marks what it DNATs so the
/// per-network hairpin masquerade leaves the client's address alone. Ingress ports are
/// reached from anywhere and carry no mark.
#[test]
fn a_vip_answers_its_own_bridge_and_marks_its_packets() {
    let mut v = vip("front", "10.0.0.200", &["10.0.0.2"]);
    v.bridge = "netd-front".into();
    let mut s = svc("default", "web", vec![v]);
    s.ingress = vec![FwIngress {
        published: 9000,
        target: 8080,
        proto: Proto::Tcp,
        masquerade: false,
    }];
    let b = full(&[s]);
    let chain = "add rule inet netd svc/default/web/front/tcp/80";
    let rules: Vec<&str> = b.lines().filter(|l| l.starts_with(chain)).collect();
    assert_eq!(
        rules[..2],
        [
            format!("{chain} iifname != \"netd-front\" fib saddr type != local drop comment \"a VIP answers its own network only\""),
            format!("{chain} meta mark set meta mark | 0x00001000 comment \"client keeps its address\""),
        ]
    );
    let ingress: Vec<&str> = b
        .lines()
        .filter(|l| l.starts_with("add rule inet netd svc/default/web/ingress4/tcp/9000 "))
        .collect();
    assert_eq!(ingress.len(), 1, "{b}");
    assert!(!ingress[0].contains("iifname") && !ingress[0].contains("mark"));
}

/// A full sync over what the kernel holds deletes the service chains and sets of
/// services that are gone (after the refill that drops references to them), and never
/// an object outside `svc/`.
#[test]
fn full_over_deletes_leftover_service_objects_only() {
    let now = vec![svc("default", "web", vec![vip("n", "10.0.0.9", &["10.0.0.2"])])];
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let chains = strs(&[
        "prerouting",
        "svc/default/web/n/tcp/80",
        "svc/pick4",
        "svc/default/old/n/tcp/80",
        "svc/default/old/n/tcp/80/10.0.0.3",
    ]);
    let sets = strs(&[
        "bridges",
        "svc/pick4/tcp/n1",
        "svc/hairpin4",
        "svc/default/old/n/tcp/80/10.0.0.3/aff60",
        "svc/pick4/tcp/n3",
    ]);
    let b = super::full_over(&now, &chains, &sets).to_string();
    let tail: Vec<&str> = b
        .lines()
        .skip_while(|l| !l.starts_with("flush chain inet netd svc/default/old"))
        .collect();
    assert_eq!(
        tail,
        [
            "flush chain inet netd svc/default/old/n/tcp/80",
            "flush chain inet netd svc/default/old/n/tcp/80/10.0.0.3",
            "delete chain inet netd svc/default/old/n/tcp/80",
            "delete chain inet netd svc/default/old/n/tcp/80/10.0.0.3",
            "delete set inet netd svc/default/old/n/tcp/80/10.0.0.3/aff60",
            // A backend map no service uses any more (the pick chain no longer names it).
            "delete set inet netd svc/pick4/tcp/n3",
        ]
    );
    assert_eq!(
        super::full_over(&now, &chains[..3], &sets[..3]).to_string(),
        full(&now)
    );
}

#[test]
fn the_last_service_gone_takes_the_base_chains_and_maps() {
    let old = example();
    let d = diff(&old, &[]);
    for name in ["svc_prerouting", "svc_output", "svc_postrouting"] {
        assert!(d.contains(&format!("delete chain inet netd {name}\n")), "{d}");
    }
    for map in ["svc4_dispatch", "svc6_dispatch", "svc4_ingress", "svc6_ingress"] {
        assert!(d.contains(&format!("delete set inet netd {map}\n")), "{d}");
    }
    // Not while a service is left.
    assert!(!diff(&old, &old[1..]).contains("svc_prerouting"));
    // From the kernel's listing: what is there goes, nothing outside `svc` is named.
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let chains = strs(&["prerouting", "svc_prerouting", "svc/default/old/n/tcp/80"]);
    let sets = strs(&[
        "bridges",
        "svc4_dispatch",
        "svc/default/old/n/tcp/80/10.0.0.3/aff60",
    ]);
    assert_eq!(
        super::teardown(&chains, &sets)
            .to_string()
            .lines()
            .collect::<Vec<_>>(),
        [
            "flush chain inet netd svc/default/old/n/tcp/80",
            "flush chain inet netd svc_prerouting",
            "delete chain inet netd svc/default/old/n/tcp/80",
            "delete chain inet netd svc_prerouting",
            "delete set inet netd svc/default/old/n/tcp/80/10.0.0.3/aff60",
            "delete set inet netd svc4_dispatch",
        ]
    );
    assert!(super::teardown(&chains[..1], &sets[..1]).is_empty());
}
