use super::*;
use crate::dns::records::tests::{ep, sb};
use crate::dns::records::{Kind, Lookup};
use crate::dns::server::{handle, Outcome, Transport};
use crate::model::{Proto, Sandbox, ServiceRequest};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use proptest::prelude::*;

const K: &str = "web.shop.svc.cluster.local";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn port(port: u16, target_port: u16, proto: Proto, name: Option<&str>) -> ServicePort {
    ServicePort {
        port,
        target_port,
        proto,
        name: name.map(Into::into),
    }
}

fn backend(net: Option<&str>, addr: &str, host: Option<&str>) -> SvcBackend {
    SvcBackend {
        network: net.map(Into::into),
        ip: ip(addr),
        hostname: host.map(Into::into),
    }
}

/// web in namespace shop on front (VIP 10.0.0.200, fd00::200) and back (10.1.0.200);
/// backends w1 on both networks, w2 on front.
fn web(mode: EndpointMode) -> ServiceRecords {
    let vip = mode == EndpointMode::Vip;
    ServiceRecords {
        namespace: "shop".into(),
        name: "web".into(),
        mode,
        networks: vec!["front".into(), "back".into()],
        vips: if vip {
            vec![
                ("front".into(), ip("10.0.0.200")),
                ("front".into(), ip("fd00::200")),
                ("back".into(), ip("10.1.0.200")),
            ]
        } else {
            vec![]
        },
        cluster_ips: vec![],
        backends: vec![
            backend(Some("front"), "10.0.0.11", Some("w1")),
            backend(Some("front"), "fd00::11", Some("w1")),
            backend(Some("back"), "10.1.0.11", Some("w1")),
            backend(Some("front"), "10.0.0.12", Some("w2")),
        ],
        ports: vec![
            port(80, 8080, Proto::Tcp, Some("http")),
            port(53, 53, Proto::Udp, None),
        ],
    }
}

/// Askers: f (front), b (back), fb (both), o (other network), and the w1/w2 backends.
fn askers() -> Vec<Sandbox> {
    vec![
        sb("f", vec![ep("front", "10.0.0.2", None, &[])]),
        sb("b", vec![ep("back", "10.1.0.2", None, &[])]),
        sb(
            "fb",
            vec![
                ep("front", "10.0.0.3", None, &[]),
                ep("back", "10.1.0.3", None, &[]),
            ],
        ),
        sb("o", vec![ep("other", "10.9.0.2", None, &[])]),
    ]
}

fn table(svcs: &[ServiceRecords]) -> Table {
    Table::build([], askers().iter(), "cluster.local", &[], svcs)
}

/// The addresses of a lookup, in answer order, or the outcome's name.
fn addrs(l: Lookup) -> Vec<String> {
    match l {
        Lookup::Found(v) | Lookup::InOrder(v) => v
            .into_iter()
            .map(|r| match r {
                Rec::Addr(a) => a.to_string(),
                other => format!("{other:?}"),
            })
            .collect(),
        other => vec![format!("{other:?}")],
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn the_name_answers_the_vip_of_the_askers_networks_only() {
    let t = table(&[web(EndpointMode::Vip)]);
    for name in ["web", "WEB.", K] {
        assert_eq!(addrs(t.lookup("f", name, Kind::A)), ["10.0.0.200"], "{name}");
        assert_eq!(addrs(t.lookup("b", name, Kind::A)), ["10.1.0.200"], "{name}");
        assert_eq!(
            sorted(addrs(t.lookup("fb", name, Kind::A))),
            ["10.0.0.200", "10.1.0.200"],
            "{name}"
        );
        // A sandbox sharing no network with the service: the name is netd's, and not
        // there for it.
        assert_eq!(t.lookup("o", name, Kind::A), Lookup::NxDomain, "{name}");
    }
    // AAAA: the IPv6 VIP where there is one, NODATA where the network has none.
    assert_eq!(addrs(t.lookup("f", "web", Kind::Aaaa)), ["fd00::200"]);
    assert_eq!(t.lookup("b", "web", Kind::Aaaa), Lookup::Found(vec![]));
    assert_eq!(t.lookup("b", "web", Kind::Other), Lookup::Found(vec![]));
    // The VIP is one address: a plain answer, not rotated.
    assert!(matches!(t.lookup("f", "web", Kind::A), Lookup::Found(_)));
}

#[test]
fn tasks_answer_the_backends_the_asker_reaches() {
    let t = table(&[web(EndpointMode::Vip)]);
    assert_eq!(
        sorted(addrs(t.lookup("f", "tasks.web", Kind::A))),
        ["10.0.0.11", "10.0.0.12"]
    );
    assert_eq!(addrs(t.lookup("f", "tasks.web", Kind::Aaaa)), ["fd00::11"]);
    assert_eq!(addrs(t.lookup("b", "tasks.web", Kind::A)), ["10.1.0.11"]);
    assert_eq!(t.lookup("b", "tasks.web", Kind::Aaaa), Lookup::Found(vec![]));
    assert_eq!(
        sorted(addrs(t.lookup("fb", "TASKS.web.", Kind::A))),
        ["10.0.0.11", "10.0.0.12", "10.1.0.11"]
    );
    assert_eq!(t.lookup("o", "tasks.web", Kind::A), Lookup::NxDomain);
    assert!(matches!(t.lookup("f", "tasks.web", Kind::A), Lookup::InOrder(_)));
}

#[test]
fn dnsrr_answers_the_backends_rotated() {
    let t = table(&[web(EndpointMode::Dnsrr)]);
    for name in ["web", K] {
        let first = addrs(t.lookup("f", name, Kind::A));
        assert_eq!(sorted(first.clone()), ["10.0.0.11", "10.0.0.12"], "{name}");
        assert_eq!(addrs(t.lookup("b", name, Kind::A)), ["10.1.0.11"], "{name}");
        assert_eq!(addrs(t.lookup("f", name, Kind::Aaaa)), ["fd00::11"], "{name}");
        assert_eq!(t.lookup("o", name, Kind::A), Lookup::NxDomain, "{name}");
    }
    // Round robin over three: every answer starts one further, whatever AAAA
    // questions come in between (a resolver asks both at once).
    let mut prev = addrs(t.lookup("fb", "web", Kind::A));
    assert_eq!(sorted(prev.clone()), ["10.0.0.11", "10.0.0.12", "10.1.0.11"]);
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let _ = t.lookup("fb", "web", Kind::Aaaa);
        let next = addrs(t.lookup("fb", "web", Kind::A));
        let mut want = prev.clone();
        want.rotate_left(1);
        assert_eq!(next, want);
        firsts.insert(next[0].clone());
        prev = next;
    }
    assert_eq!(firsts.len(), 3, "each backend comes first in turn");
    // Each backend by its host name under the Kubernetes name.
    assert_eq!(
        sorted(addrs(t.lookup("f", &format!("w1.{K}"), Kind::Any))),
        ["10.0.0.11", "fd00::11"]
    );
    assert_eq!(addrs(t.lookup("b", &format!("w1.{K}"), Kind::A)), ["10.1.0.11"]);
    assert_eq!(t.lookup("b", &format!("w2.{K}"), Kind::A), Lookup::NxDomain);
}

#[test]
fn a_service_without_backends_is_nodata_not_nxdomain() {
    for mode in [EndpointMode::Vip, EndpointMode::Dnsrr] {
        let mut s = web(mode);
        s.backends.clear();
        let t = table(&[s]);
        assert_eq!(
            t.lookup("f", "tasks.web", Kind::A),
            Lookup::Found(vec![]),
            "{mode:?}"
        );
        assert_eq!(t.lookup("o", "tasks.web", Kind::A), Lookup::NxDomain, "{mode:?}");
        if mode == EndpointMode::Dnsrr {
            assert_eq!(t.lookup("b", "web", Kind::A), Lookup::Found(vec![]));
            assert_eq!(t.lookup("b", K, Kind::A), Lookup::Found(vec![]));
        }
    }
}

#[test]
fn srv_in_vip_mode_names_the_service_and_its_port() {
    let t = table(&[web(EndpointMode::Vip)]);
    let srv = |target: &str, port| {
        Lookup::Found(vec![Rec::Srv {
            port,
            target: target.into(),
        }])
    };
    assert_eq!(t.lookup("f", "_80._tcp.web", Kind::Srv), srv("web", 80));
    assert_eq!(t.lookup("f", &format!("_80._tcp.{K}"), Kind::Srv), srv(K, 80));
    assert_eq!(t.lookup("b", &format!("_http._tcp.{K}"), Kind::Srv), srv(K, 80));
    assert_eq!(t.lookup("f", &format!("_53._udp.{K}"), Kind::Srv), srv(K, 53));
    // Wrong protocol or number, no name, or out of scope: no such name.
    for (who, name) in [
        ("f", format!("_http._udp.{K}")),
        ("f", format!("_8080._tcp.{K}")),
        ("f", format!("_dns._udp.{K}")),
        ("o", format!("_http._tcp.{K}")),
    ] {
        assert_eq!(t.lookup(who, &name, Kind::Srv), Lookup::NxDomain, "{who} {name}");
    }
}

#[test]
fn srv_in_dnsrr_mode_names_each_backend_and_its_target_port() {
    let t = table(&[web(EndpointMode::Dnsrr)]);
    let got = match t.lookup("f", &format!("_http._tcp.{K}"), Kind::Srv) {
        Lookup::InOrder(v) => v,
        other => panic!("{other:?}"),
    };
    let mut got: Vec<String> = got.iter().map(|r| format!("{r:?}")).collect();
    got.sort();
    assert_eq!(
        got,
        [
            format!("Srv {{ port: 8080, target: \"w1.{K}\" }}"),
            format!("Srv {{ port: 8080, target: \"w2.{K}\" }}"),
        ]
    );
    assert_eq!(
        addrs(t.lookup("b", &format!("_8080._tcp.{K}"), Kind::Srv)),
        [format!("Srv {{ port: 8080, target: \"w1.{K}\" }}")]
    );
}

#[test]
fn kubernetes_cluster_ips_and_headless_endpoints_are_cluster_wide() {
    // A Kubernetes ClusterIP service (no netd network) and a headless one whose
    // endpoints netd knows no network of.
    let api = ServiceRecords {
        namespace: "prod".into(),
        name: "api".into(),
        mode: EndpointMode::Vip,
        networks: vec![],
        vips: vec![],
        cluster_ips: vec![ip("10.96.0.10"), ip("fd96::10")],
        backends: vec![backend(None, "10.2.0.5", None)],
        ports: vec![port(443, 8443, Proto::Tcp, Some("https"))],
    };
    let db = ServiceRecords {
        namespace: "prod".into(),
        name: "db".into(),
        mode: EndpointMode::Dnsrr,
        networks: vec![],
        vips: vec![],
        cluster_ips: vec![],
        backends: vec![
            backend(None, "10.2.0.7", Some("db-0")),
            backend(None, "10.2.0.8", Some("Not_A_Label")),
        ],
        ports: vec![port(5432, 5432, Proto::Tcp, Some("pg"))],
    };
    let t = table(&[api, db]);
    for who in ["f", "o"] {
        assert_eq!(
            addrs(t.lookup(who, "api.prod.svc.cluster.local", Kind::A)),
            ["10.96.0.10"]
        );
        assert_eq!(
            addrs(t.lookup(who, "api.prod.svc.cluster.local", Kind::Aaaa)),
            ["fd96::10"]
        );
        assert_eq!(
            sorted(addrs(t.lookup(who, "db.prod.svc.cluster.local", Kind::A))),
            ["10.2.0.7", "10.2.0.8"]
        );
        assert_eq!(
            addrs(t.lookup(who, "db-0.db.prod.svc.cluster.local", Kind::A)),
            ["10.2.0.7"]
        );
        // No usable host name: the address with dashes (as Kubernetes does).
        assert_eq!(
            addrs(t.lookup(who, "10-2-0-8.db.prod.svc.cluster.local", Kind::A)),
            ["10.2.0.8"]
        );
        assert_eq!(
            t.lookup(who, "_https._tcp.api.prod.svc.cluster.local", Kind::Srv),
            Lookup::Found(vec![Rec::Srv {
                port: 443,
                target: "api.prod.svc.cluster.local".into()
            }])
        );
        // No network of its own: no bare name and no tasks. name (a single label is
        // netd's, so NXDOMAIN; `tasks.api` is nobody's here, so forwarded).
        assert_eq!(t.lookup(who, "api", Kind::A), Lookup::NxDomain);
        assert_eq!(t.lookup(who, "tasks.api", Kind::A), Lookup::NotOurs);
    }
}

#[test]
fn a_cluster_ip_with_networks_answers_the_cluster_ip_under_both_names() {
    let mut s = web(EndpointMode::Vip);
    s.cluster_ips = vec![ip("10.96.0.20")];
    let t = table(&[s]);
    assert_eq!(addrs(t.lookup("f", "web", Kind::A)), ["10.96.0.20"]);
    assert_eq!(addrs(t.lookup("o", K, Kind::A)), ["10.96.0.20"]);
    assert_eq!(t.lookup("o", "web", Kind::A), Lookup::NxDomain);
}

#[test]
fn a_sandbox_keeps_its_name_and_the_first_service_keeps_a_shared_one() {
    let mut sbs = askers();
    // A sandbox named web on back, and one answering as web in namespace shop on front.
    sbs.push(sb("web", vec![ep("back", "10.1.0.50", None, &[])]));
    let mut k = sb("cart", vec![ep("front", "10.0.0.60", None, &[])]);
    k.labels.insert("netd.namespace".into(), "shop".into());
    k.labels.insert("netd.service".into(), "web".into());
    sbs.push(k);
    let mut other = web(EndpointMode::Vip);
    other.namespace = "blog".into();
    other.vips = vec![("front".into(), ip("10.0.0.201"))];
    let t = Table::build(
        [],
        sbs.iter(),
        "cluster.local",
        &[],
        &[other, web(EndpointMode::Vip)],
    );
    // back: the sandbox web, not the VIP; front: the first service given.
    assert_eq!(addrs(t.lookup("b", "web", Kind::A)), ["10.1.0.50"]);
    assert_eq!(addrs(t.lookup("f", "web", Kind::A)), ["10.0.0.201"]);
    // The Kubernetes names: blog's is its own; shop's is the sandbox's on front, the
    // service's on back.
    assert_eq!(
        addrs(t.lookup("f", "web.blog.svc.cluster.local", Kind::A)),
        ["10.0.0.201"]
    );
    assert_eq!(addrs(t.lookup("f", K, Kind::A)), ["10.0.0.60"]);
    assert_eq!(addrs(t.lookup("b", K, Kind::A)), ["10.1.0.200"]);
    // tasks.web is no sandbox's: the services' backends (both on the same sandboxes).
    assert_eq!(addrs(t.lookup("b", "tasks.web", Kind::A)), ["10.1.0.11"]);
}

#[test]
fn a_netd_cluster_ip_service_fills_the_records_from_the_model() {
    let req = ServiceRequest {
        name: "web".into(),
        networks: vec!["front".into()],
        ports: vec!["80:8080".into()],
        selector: vec!["app=web".into()],
        ..Default::default()
    };
    let mut c = req.cluster_ip().unwrap();
    c.vips.insert("front".into(), ip("10.0.0.200"));
    let mut w = sb(
        "w-1",
        vec![
            ep("front", "10.0.0.21", None, &[]),
            ep("x", "10.5.0.2", None, &[]),
        ],
    );
    w.labels.insert("app".into(), "web".into());
    let backends = crate::model::select_backends(&c, [&w]);
    let r = ServiceRecords::cluster_ip("default", "web", &c, &backends);
    assert_eq!(r.vips, [("front".to_string(), ip("10.0.0.200"))]);
    assert_eq!(r.backends, [backend(Some("front"), "10.0.0.21", Some("w-1"))]);
    let mut sbs = askers();
    sbs.push(w);
    let t = Table::build([], sbs.iter(), "cluster.local", &[], &[r]);
    assert_eq!(addrs(t.lookup("w-1", "web", Kind::A)), ["10.0.0.200"]);
    assert_eq!(addrs(t.lookup("f", "tasks.web", Kind::A)), ["10.0.0.21"]);
    assert_eq!(
        addrs(t.lookup("f", "web.default.svc.cluster.local", Kind::A)),
        ["10.0.0.200"]
    );
}

#[test]
fn a_clash_names_who_holds_the_name() {
    let mut sbs = askers();
    let mut k = sb("cart-1", vec![ep("back", "10.1.0.60", None, &["shop-web"])]);
    k.labels.insert("netd.namespace".into(), "shop".into());
    k.labels.insert("netd.service".into(), "cart".into());
    sbs.push(k);
    let nets = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let req = ServiceRequest {
        name: "web".into(),
        networks: nets(&["front", "back"]),
        ports: vec!["80".into()],
        ..Default::default()
    };
    let blog = Service {
        name: "web".into(),
        namespace: "blog".into(),
        id: "1".into(),
        kind: ServiceKind::ClusterIp(req.cluster_ip().unwrap()),
        labels: Default::default(),
        created: 0,
    };
    let clash = |ns: &str, name: &str, on: &[&str]| name_clash(ns, name, &nets(on), sbs.iter(), [&blog]);
    // A sandbox's name, alias or Kubernetes service name; another namespace's service.
    assert!(clash("shop", "f", &["front"])
        .unwrap()
        .contains("sandbox f already answers as f on network front"));
    assert!(clash("x", "shop-web", &["back"])
        .unwrap()
        .contains("sandbox cart-1"));
    assert!(clash("shop", "cart", &["other"])
        .unwrap()
        .contains("in namespace shop"));
    assert!(clash("shop", "web", &["back"])
        .unwrap()
        .contains("service web of namespace blog"));
    // Elsewhere, or the same service (an update), no clash.
    assert_eq!(clash("shop", "f", &["back"]), None);
    assert_eq!(clash("other", "cart", &["other"]), None);
    assert_eq!(clash("blog", "web", &["front"]), None);
    assert_eq!(clash("shop", "web", &["other"]), None);
}

fn ask(t: &Table, who: &str, name: &str, rt: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = 7;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rt));
    match handle(t, who, 600, &m.to_vec().unwrap(), Transport::Udp) {
        Outcome::Reply(b) => Message::from_vec(&b).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn answer_ips(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_server_keeps_the_rotation_and_adds_srv_targets() {
    let t = table(&[web(EndpointMode::Dnsrr)]);
    // Over the wire (the fast path): the order rotates by one per answer.
    let a = answer_ips(&ask(&t, "fb", "web.", RecordType::A));
    let b = answer_ips(&ask(&t, "fb", "web.", RecordType::A));
    assert_eq!(a.len(), 3);
    let mut want = a.clone();
    want.rotate_left(1);
    assert_eq!(b, want);
    // NXDOMAIN out of scope, NODATA for a type with no record.
    assert_eq!(
        ask(&t, "o", "tasks.web.", RecordType::A).metadata.response_code,
        ResponseCode::NXDomain
    );
    let r = ask(&t, "b", "web.", RecordType::AAAA);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());

    // SRV in vip mode: the service name with the port, its VIP for this asker beside.
    let t = table(&[web(EndpointMode::Vip)]);
    let r = ask(&t, "b", &format!("_http._tcp.{K}."), RecordType::SRV);
    assert_eq!(r.answers.len(), 1);
    match &r.answers[0].data {
        RData::SRV(s) => {
            assert_eq!(s.port, 80);
            assert_eq!(s.target.to_ascii(), format!("{K}."));
        }
        other => panic!("{other:?}"),
    }
    let extra: Vec<String> = r
        .additionals
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(extra, ["10.1.0.200"]);
}

proptest! {
    /// Whatever the services' networks and backends and the asker's networks: `NAME`
    /// answers only VIPs of networks the asker shares with the service (vip) or backends
    /// on them (dnsrr), `tasks.NAME` only such backends, and NXDOMAIN exactly when they
    /// share none.
    #[test]
    fn answers_never_cross_networks(
        svc_nets in proptest::collection::btree_set(0usize..4, 1..4),
        asker_nets in proptest::collection::btree_set(0usize..4, 1..3),
        backs in proptest::collection::vec((0usize..4, 2u8..250), 0..8),
        dnsrr: bool,
    ) {
        let net = |i: usize| format!("n{i}");
        let mode = if dnsrr { EndpointMode::Dnsrr } else { EndpointMode::Vip };
        let s = ServiceRecords {
            namespace: "ns".into(),
            name: "svc".into(),
            mode,
            networks: svc_nets.iter().map(|&i| net(i)).collect(),
            vips: if dnsrr {
                vec![]
            } else {
                svc_nets.iter().map(|&i| (net(i), ip(&format!("10.{i}.0.1")))).collect()
            },
            cluster_ips: vec![],
            // select_backends gives backends on the service's networks only.
            backends: backs
                .iter()
                .filter(|(i, _)| svc_nets.contains(i))
                .map(|&(i, h)| backend(Some(&net(i)), &format!("10.{i}.1.{h}"), None))
                .collect(),
            ports: vec![],
        };
        let asker = sb(
            "asker",
            asker_nets
                .iter()
                .map(|&i| ep(&net(i), &format!("10.{i}.2.2"), None, &[]))
                .collect(),
        );
        let t = Table::build([], [&asker], "cluster.local", &[], std::slice::from_ref(&s));
        let shared: Vec<usize> = svc_nets.intersection(&asker_nets).copied().collect();
        let reach = |a: &str| shared.iter().any(|i| a.starts_with(&format!("10.{i}.")));
        for name in ["svc", "tasks.svc", "svc.ns.svc.cluster.local"] {
            let l = t.lookup("asker", name, Kind::A);
            if shared.is_empty() {
                prop_assert_eq!(l, Lookup::NxDomain);
                continue;
            }
            let got = addrs(l);
            for a in &got {
                prop_assert!(reach(a), "{} answered {} to an asker on {:?}", name, a, asker_nets);
            }
            let tasks = name == "tasks.svc" || dnsrr;
            let want: std::collections::BTreeSet<String> = if tasks {
                s.backends.iter().filter(|b| reach(&b.ip.to_string())).map(|b| b.ip.to_string()).collect()
            } else {
                shared.iter().map(|i| format!("10.{i}.0.1")).collect()
            };
            prop_assert_eq!(got.into_iter().collect::<std::collections::BTreeSet<_>>(), want);
        }
    }
}
