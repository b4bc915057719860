use super::*;
use crate::model::{Endpoint, PortMapping};
use proptest::prelude::*;

pub(crate) fn ep(net: &str, v4: &str, v6: Option<&str>, aliases: &[&str]) -> Endpoint {
    Endpoint {
        network: net.into(),
        ifname: "eth0".into(),
        host_ifname: "x".into(),
        mac: "02:00:00:00:00:01".into(),
        ipv4: Some(format!("{v4}/24").parse().unwrap()),
        ipv6: v6.map(|a| format!("{a}/64").parse().unwrap()),
        gateway4: None,
        gateway6: None,
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        routes: vec![],
        no_default_route: false,
    }
}

pub(crate) fn sb(name: &str, eps: Vec<Endpoint>) -> Sandbox {
    Sandbox {
        name: name.into(),
        id: "id".into(),
        mode: NetMode::Bridge,
        netns: format!("/run/netns/{name}"),
        external: false,
        endpoints: eps,
        ports: vec![],
        publish_all: false,
        expose: vec![],
        labels: Default::default(),
        created: 0,
    }
}

/// front: web(10.0.0.2, fd00::2, alias www) api(10.0.0.3); back: api(10.1.0.3) db(10.1.0.4)
pub(crate) fn sample() -> Table {
    let mut web = sb("web", vec![ep("front", "10.0.0.2", Some("fd00::2"), &["www"])]);
    web.expose = vec![(80, Proto::Tcp)];
    web.ports = vec![PortMapping {
        host_ip: None,
        host_port: 5353,
        container_port: 53,
        proto: Proto::Udp,
    }];
    let api = sb(
        "api",
        vec![
            ep("front", "10.0.0.3", None, &[]),
            ep("back", "10.1.0.3", None, &[]),
        ],
    );
    let db = sb("db", vec![ep("back", "10.1.0.4", None, &[])]);
    let mut t = Table::build([], [&web, &api, &db], "cluster.local", &[], &[]);
    t.subnets = vec!["10.0.0.0/24".parse().unwrap(), "10.1.0.0/24".parse().unwrap()];
    t
}

fn addrs(l: Lookup) -> Vec<String> {
    match l {
        Lookup::Found(v) => v
            .into_iter()
            .map(|r| match r {
                Rec::Addr(a) => a.to_string(),
                other => format!("{other:?}"),
            })
            .collect(),
        other => vec![format!("{other:?}")],
    }
}

#[test]
fn names_are_scoped_by_network_with_the_address_on_that_network() {
    let t = sample();
    assert_eq!(addrs(t.lookup("web", "api", Kind::A)), ["10.0.0.3"]);
    assert_eq!(addrs(t.lookup("db", "api", Kind::A)), ["10.1.0.3"]);
    // db and web share no network: NXDOMAIN both ways, never forwarded.
    assert_eq!(t.lookup("web", "db", Kind::A), Lookup::NxDomain);
    assert_eq!(t.lookup("db", "web", Kind::A), Lookup::NxDomain);
    assert_eq!(t.lookup("db", "www", Kind::A), Lookup::NxDomain);
    // api sees both networks.
    assert_eq!(addrs(t.lookup("api", "db", Kind::A)), ["10.1.0.4"]);
    assert_eq!(addrs(t.lookup("api", "www", Kind::A)), ["10.0.0.2"]);
}

#[test]
fn aliases_case_trailing_dot_and_aaaa() {
    let t = sample();
    assert_eq!(addrs(t.lookup("api", "WwW.", Kind::A)), ["10.0.0.2"]);
    assert_eq!(addrs(t.lookup("api", "web", Kind::Aaaa)), ["fd00::2"]);
    // NODATA: the name exists, no AAAA.
    assert_eq!(t.lookup("web", "api", Kind::Aaaa), Lookup::Found(vec![]));
    assert_eq!(t.lookup("web", "api", Kind::Other), Lookup::Found(vec![]));
    assert_eq!(addrs(t.lookup("api", "web", Kind::Any)).len(), 2);
}

#[test]
fn ownership_decides_nxdomain_or_forward() {
    let t = sample();
    assert_eq!(t.lookup("web", "nosuch", Kind::A), Lookup::NxDomain);
    assert_eq!(t.lookup("web", "x.svc.cluster.local", Kind::A), Lookup::NxDomain);
    assert_eq!(t.lookup("web", "example.com", Kind::A), Lookup::NotOurs);
    assert_eq!(t.lookup("stranger", "web", Kind::A), Lookup::Refused);
}

#[test]
fn srv_for_exposed_and_published_ports() {
    let t = sample();
    assert_eq!(
        t.lookup("api", "_80._tcp.web", Kind::Srv),
        Lookup::Found(vec![Rec::Srv {
            port: 80,
            target: "web".into()
        }])
    );
    assert_eq!(
        t.lookup("api", "_53._udp.www", Kind::Srv),
        Lookup::Found(vec![Rec::Srv {
            port: 53,
            target: "www".into()
        }])
    );
    assert_eq!(t.lookup("api", "_81._tcp.web", Kind::Srv), Lookup::NxDomain);
}

#[test]
fn ptr_is_scoped_and_owned() {
    let t = sample();
    assert_eq!(
        t.lookup("api", "4.0.1.10.in-addr.arpa", Kind::Ptr),
        Lookup::Ptr(vec!["db".into()])
    );
    assert_eq!(
        t.lookup("web", "4.0.1.10.in-addr.arpa", Kind::Ptr),
        Lookup::NxDomain
    );
    assert_eq!(
        t.lookup("web", "9.9.9.9.in-addr.arpa", Kind::Ptr),
        Lookup::NotOurs
    );
    let v6 = reverse_name("fd00::2".parse().unwrap());
    assert_eq!(t.lookup("api", &v6, Kind::Ptr), Lookup::Ptr(vec!["web".into()]));
}

#[test]
fn kubernetes_names_and_external_name() {
    let mut a = sb("a", vec![ep("n", "10.2.0.2", None, &[])]);
    a.labels
        .insert("io.kubernetes.pod.namespace".into(), "prod".into());
    a.labels.insert("netd.service".into(), "cart".into());
    let b = sb("b", vec![ep("n", "10.2.0.3", None, &[])]);
    let x = ExternalName {
        namespace: "prod".into(),
        name: "mail".into(),
        target: "smtp.example.com.".into(),
    };
    let t = Table::build([], [&a, &b], "Cluster.Local.", &[x], &[]);
    assert_eq!(
        addrs(t.lookup("b", "cart.prod.svc.cluster.local", Kind::A)),
        ["10.2.0.2"]
    );
    assert_eq!(
        t.lookup("b", "mail.prod.svc.cluster.local", Kind::A),
        Lookup::Found(vec![Rec::Cname("smtp.example.com".into())])
    );
    assert_eq!(
        search_domains(&a.labels, "cluster.local"),
        ["prod.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    );
    assert!(search_domains(&b.labels, "cluster.local").is_empty());
}

#[test]
fn a_sandbox_keeps_its_name_over_an_external_name() {
    let mut a = sb("cart", vec![ep("n", "10.2.0.2", None, &[])]);
    a.labels
        .insert("io.kubernetes.pod.namespace".into(), "prod".into());
    let clash = ExternalName {
        namespace: "prod".into(),
        name: "cart".into(),
        target: "elsewhere.example.com".into(),
    };
    let t = Table::build([], [&a], "cluster.local", &[clash], &[]);
    assert_eq!(
        addrs(t.lookup("cart", "cart.prod.svc.cluster.local", Kind::A)),
        ["10.2.0.2"],
        "addresses, not a CNAME next to them"
    );
}

#[test]
fn cni_pods_answer_under_their_pod_name() {
    let mut p = sb("cni-0123456789abcdef", vec![ep("n", "10.2.0.5", None, &[])]);
    p.labels.insert(POD_NAME_LABEL.into(), "web-0".into());
    p.labels
        .insert("io.kubernetes.pod.namespace".into(), "prod".into());
    let q = sb("q", vec![ep("n", "10.2.0.6", None, &[])]);
    let t = Table::build([], [&p, &q], "cluster.local", &[], &[]);
    for name in ["web-0", "WEB-0.prod.svc.cluster.local", "cni-0123456789abcdef"] {
        assert_eq!(addrs(t.lookup("q", name, Kind::A)), ["10.2.0.5"], "{name}");
    }
    assert_eq!(
        t.lookup("q", "5.0.2.10.in-addr.arpa", Kind::Ptr),
        Lookup::Ptr(vec!["web-0".into(), "cni-0123456789abcdef".into()])
    );
    let names: Vec<&str> = service_names(&p).collect();
    assert_eq!(names, ["web-0"]);
}

#[test]
fn plug_in_records_for_services() {
    let mut t = sample();
    t.insert("front", "tasks.web", Rec::Addr("10.0.0.7".parse().unwrap()));
    t.insert("front", "tasks.web", Rec::Addr("10.0.0.8".parse().unwrap()));
    t.insert("front", "tasks.web", Rec::Addr("10.0.0.8".parse().unwrap()));
    assert_eq!(
        addrs(t.lookup("api", "tasks.web", Kind::A)),
        ["10.0.0.7", "10.0.0.8"]
    );
    assert_eq!(t.lookup("db", "tasks.web", Kind::A), Lookup::NxDomain);
}

#[test]
fn listing_shows_what_the_sandbox_sees() {
    let t = sample();
    let l = t.listing("db").unwrap();
    assert!(l
        .iter()
        .any(|r| r.name == "api" && r.value == "10.1.0.3" && r.network == "back"));
    assert!(!l.iter().any(|r| r.name == "web"));
    assert!(l.iter().any(|r| r.kind == "PTR" && r.value == "db"));
    assert!(t.listing("nobody").is_none());
}

proptest! {
    #[test]
    fn reverse_names_round_trip(v4: u32, v6: u128) {
        for ip in [IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6))] {
            prop_assert_eq!(parse_reverse(&reverse_name(ip)), Some(ip));
        }
    }

    #[test]
    fn lookups_never_panic(name in "[a-zA-Z0-9._-]{0,80}") {
        let t = sample();
        for k in [Kind::A, Kind::Aaaa, Kind::Srv, Kind::Ptr, Kind::Any, Kind::Other] {
            let _ = t.lookup("api", &name, k);
        }
    }
}
