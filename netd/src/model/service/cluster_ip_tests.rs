//! Requests for `cluster_ip` services: kind inference, every field typed, one-line
//! errors, the stored JSON, and VIP placement.

use std::collections::BTreeMap;

use super::*;
use crate::model::Proto;

fn req(nets: &[&str]) -> ServiceRequest {
    ServiceRequest {
        name: "web".into(),
        networks: nets.iter().map(|s| s.to_string()).collect(),
        ports: vec!["80:8080".into()],
        ..Default::default()
    }
}

#[test]
fn a_network_makes_a_cluster_ip_service() {
    let mut r = req(&["front", "back"]);
    r.selector = vec!["app=web".into()];
    r.backends = vec!["b".into(), "a".into(), "b".into()];
    r.session_affinity = Some("client-ip:60".into());
    r.publish = vec!["9000:8080".into()];
    r.vips = BTreeMap::from([("back".into(), "10.1.0.200".into())]);
    let (name, ns, kind) = r.parse().unwrap();
    assert_eq!((name.as_str(), ns.as_str()), ("web", "default"));
    let ServiceKind::ClusterIp(c) = kind else {
        panic!("{kind:?}")
    };
    assert_eq!(c.networks, ["front", "back"]);
    assert_eq!(c.backends, ["a", "b"]);
    assert_eq!(
        c.ports,
        [ServicePort {
            port: 80,
            target_port: 8080,
            proto: Proto::Tcp,
            name: None
        }]
    );
    assert_eq!(c.endpoint_mode, EndpointMode::Vip);
    assert_eq!(c.session_affinity, Some(SessionAffinity { timeout_secs: 60 }));
    assert_eq!(c.vips["back"], "10.1.0.200".parse::<IpAddr>().unwrap());
    assert_eq!(c.published[0].mode, PublishMode::Ingress);
    // The kind may also be named.
    let mut r = req(&["front"]);
    r.kind = Some("cluster_ip".into());
    assert!(matches!(r.parse().unwrap().2, ServiceKind::ClusterIp(_)));
}

#[test]
fn bad_cluster_ip_requests_fail_in_one_line() {
    let with = |f: &dyn Fn(&mut ServiceRequest)| {
        let mut r = req(&["front"]);
        f(&mut r);
        r
    };
    for (r, want) in [
        (with(&|r| r.networks.push("front".into())), "listed twice"),
        (with(&|r| r.networks = vec!["-x".into()]), "invalid network"),
        (with(&|r| r.ports.clear()), "needs at least one port"),
        (with(&|r| r.ports.push("80/udp".into())), ""),
        (
            with(&|r| r.ports.push("80:81".into())),
            "port 80/tcp is listed twice",
        ),
        (with(&|r| r.selector = vec!["app".into()]), "KEY=VALUE"),
        (with(&|r| r.backends = vec!["a b".into()]), "invalid backend"),
        (with(&|r| r.endpoint_mode = Some("ipvs".into())), "vip or dnsrr"),
        (
            with(&|r| r.session_affinity = Some("client-ip:0".into())),
            "timeout",
        ),
        (with(&|r| r.publish = vec!["9000:80".into()]), "not a target port"),
        (
            with(&|r| r.vips = BTreeMap::from([("back".into(), "10.0.0.9".into())])),
            "not on",
        ),
        (
            with(&|r| r.vips = BTreeMap::from([("front".into(), "10.0.0".into())])),
            "not an IP address",
        ),
        (
            with(&|r| {
                r.endpoint_mode = Some("dnsrr".into());
                r.publish = vec!["9000:8080".into()];
            }),
            "ingress",
        ),
        (
            with(&|r| {
                r.endpoint_mode = Some("dnsrr".into());
                r.session_affinity = Some("client-ip".into());
            }),
            "affinity",
        ),
        (
            with(&|r| {
                r.endpoint_mode = Some("dnsrr".into());
                r.vips = BTreeMap::from([("front".into(), "10.0.0.9".into())]);
            }),
            "no VIP",
        ),
        (
            with(&|r| r.external_name = Some("x.y".into())),
            "takes no networks",
        ),
        (
            with(&|r| {
                r.kind = Some("cluster_ip".into());
                r.external_name = Some("x.y".into());
            }),
            "no external name",
        ),
        (with(&|r| r.networks.clear()), "needs a target"),
    ] {
        match r.parse() {
            Ok(_) if want.is_empty() => {}
            Ok(k) => panic!("{r:?} parsed to {k:?}"),
            Err(e) => {
                assert!(!want.is_empty() && e.contains(want), "{r:?}: {e}");
                assert!(!e.contains('\n'), "{e}");
            }
        }
    }
    // dnsrr needs no port (DNS answers with addresses only).
    let mut r = req(&["front"]);
    r.ports.clear();
    r.endpoint_mode = Some("dnsrr".into());
    assert!(r.parse().is_ok());
}

#[test]
fn stored_json_round_trips_and_old_records_still_load() {
    let (name, namespace, kind) = {
        let mut r = req(&["front"]);
        r.selector = vec!["app=web".into()];
        r.parse().unwrap()
    };
    let s = Service {
        name,
        namespace,
        id: "1".into(),
        kind,
        labels: Default::default(),
        created: 7,
    };
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["kind"], "cluster_ip");
    assert_eq!(v["networks"][0], "front");
    assert_eq!(v["endpoint_mode"], "vip");
    assert_eq!(serde_json::from_value::<Service>(v).unwrap(), s);
    // An ExternalName record as the store holds it today.
    let old =
        r#"{"name":"db","namespace":"prod","id":"1","kind":"external_name","target":"x.y","created":0}"#;
    let s: Service = serde_json::from_str(old).unwrap();
    assert_eq!(s.kind, ServiceKind::ExternalName { target: "x.y".into() });
    assert_eq!(serde_json::to_string(&s).unwrap(), old);
    // And an ExternalName request as netctl sends it today: no new fields on the wire.
    let r = ServiceRequest {
        name: "db".into(),
        external_name: Some("x.y".into()),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"name":"db","namespace":null,"kind":null,"external_name":"x.y"}"#
    );
}

#[test]
fn vips_must_be_usable_addresses_of_the_network() {
    let subnets = [Subnet {
        subnet: "10.0.0.0/24".parse().unwrap(),
        gateway: "10.0.0.1".parse().unwrap(),
        ip_range: None,
    }];
    let check = |ip: &str| check_vip("front", &subnets, ip.parse().unwrap()).map_err(|e| e.to_string());
    assert!(check("10.0.0.200").is_ok());
    assert!(check("10.0.1.2").unwrap_err().contains("outside"));
    assert!(check("10.0.0.0").unwrap_err().contains("network address"));
    assert!(check("10.0.0.255").unwrap_err().contains("broadcast"));
    assert!(check("10.0.0.1").unwrap_err().contains("gateway"));
    assert!(check("fd00::1").unwrap_err().contains("outside"));
}

#[test]
fn references_must_exist_and_host_ports_be_free() {
    let mut r = req(&["front"]);
    r.backends = vec!["web-1".into()];
    r.publish = vec!["9000:8080".into()];
    let c = r.cluster_ip().unwrap();
    let nets = |n: &str| n == "front";
    let sbs = |s: &str| s == "web-1";
    assert_eq!(c.check_refs(nets, sbs, &[]), Ok(()));
    let e = c.check_refs(|_| false, sbs, &[]).unwrap_err();
    assert_eq!(e.to_string(), "no such network: front");
    let e = c.check_refs(nets, |_| false, &[]).unwrap_err();
    assert!(e.to_string().starts_with("no such sandbox: web-1"), "{e}");
    let used = |spec: &str| {
        (
            crate::model::parse_port_spec(spec).unwrap(),
            "sandbox db".to_string(),
        )
    };
    let e = c.check_refs(nets, sbs, &[used("127.0.0.1:9000:80")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "published port 9000/tcp is already used by sandbox db"
    );
    // Another protocol or port is no clash.
    assert!(c
        .check_refs(nets, sbs, &[used("9000:80/udp"), used("9001:80")])
        .is_ok());
}
