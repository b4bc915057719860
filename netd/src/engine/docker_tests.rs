//! Docker plugin operations on the fake kernel and the in-memory store.

use std::sync::Arc;

use super::*;
use crate::engine::{Engine, EngineConfig};
use crate::kernel::fake::FakeKernel;
use crate::kernel::Kernel;
use crate::model::NetworkRequest;
use crate::store::MemStore;

const NID: &str = "d929d10c17633a5f1ed7a5b29ec2514fa078049f2006f0f2f84f2fd4338078cd";
const EID: &str = "0b3b525d4ed7aaf72fe5408a9a7592085d7005f75d61f6b799c9e0c77bf16174";

fn open(k: &Arc<FakeKernel>, s: &Arc<MemStore>) -> Engine {
    let cfg = EngineConfig {
        netns_dir: std::env::temp_dir().join(format!("netd-dk-test-{}", std::process::id())),
        etc_netns_dir: std::env::temp_dir().join(format!("netd-dk-test-etc-{}", std::process::id())),
        ..Default::default()
    };
    Engine::open(k.clone(), s.clone(), cfg).unwrap().0
}

fn setup() -> (Arc<FakeKernel>, Arc<MemStore>, Engine) {
    let k = Arc::new(FakeKernel::default());
    let s = Arc::new(MemStore::default());
    let e = open(&k, &s);
    (k, s, e)
}

fn cidr(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// Pool + gateway + network, as dockerd does for `network create -d netd --ipam-driver netd`.
fn docker_net(e: &mut Engine, subnet: Option<&str>) -> (DockerPool, IpNetwork) {
    let p = e.docker_request_pool(subnet.map(cidr), None, false).unwrap();
    let gw = e.docker_request_address(&p.id, None, true).unwrap();
    e.docker_create_network(&DockerNetwork {
        id: NID.into(),
        v4: vec![(p.pool, gw)],
        ..Default::default()
    })
    .unwrap();
    (p, gw)
}

fn state(e: &Engine, k: &FakeKernel) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        e.networks().collect::<Vec<_>>(),
        e.sandboxes().collect::<Vec<_>>(),
        e.pools().collect::<Vec<_>>(),
        k.links()
    )
}

#[test]
fn full_lifecycle_leaves_nothing() {
    let (k, _s, mut e) = setup();
    let before = state(&e, &k);
    let (p, gw) = docker_net(&mut e, Some("10.210.0.0/24"));
    assert_eq!(p.pool, cidr("10.210.0.0/24"));
    assert_eq!(gw, cidr("10.210.0.1/24"));
    let net = e.docker_networks().next().unwrap().clone();
    assert_eq!(net.owner, "docker");
    assert!(k.links().contains(&net.bridge));

    let a = e.docker_request_address(&p.id, None, false).unwrap();
    assert_eq!(a, cidr("10.210.0.2/24"));
    let IpNetwork::V4(a4) = a else { panic!() };
    let mac = e
        .docker_create_endpoint(&DockerEndpoint {
            network_id: NID.into(),
            endpoint_id: EID.into(),
            addr4: Some(a4),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        mac,
        Some([0x02, 0x42, 10, 210, 0, 2]),
        "netd picks Docker's MAC scheme"
    );
    let sb = e.docker_endpoint(NID, EID).unwrap();
    let host = sb.endpoints[0].host_ifname.clone();
    assert!(k.links().contains(&host) && k.links().contains(&peer_name(EID)));

    let j = e.docker_join(NID, EID).unwrap();
    assert_eq!(j.src_name, peer_name(EID));
    assert_eq!(j.gateway4, Some("10.210.0.1".parse().unwrap()));

    let ports = e
        .docker_program_ports(
            NID,
            EID,
            &[
                DockerPort {
                    proto: Proto::Tcp,
                    container_port: 80,
                    host_ip: None,
                    host_port: 8080,
                    host_port_end: 8080,
                },
                DockerPort {
                    proto: Proto::Tcp,
                    container_port: 443,
                    host_ip: None,
                    host_port: 0,
                    host_port_end: 0,
                },
            ],
            &[(80, Proto::Tcp), (443, Proto::Tcp)],
        )
        .unwrap();
    assert_eq!(ports[0].host_port, 8080);
    assert!(ports[1].host_port >= 49153, "-P takes an ephemeral port");
    let fw = e.desired_fw();
    assert!(fw
        .ports
        .iter()
        .any(|p| p.host_port == 8080 && p.target_port == 80));
    assert!(
        fw.endpoints.iter().any(|x| x.port == host),
        "anti-spoofing entry for the veth"
    );

    e.docker_revoke_ports(NID, EID).unwrap();
    assert!(e.desired_fw().ports.is_empty());
    e.docker_leave(NID, EID).unwrap();
    e.docker_delete_endpoint(NID, EID).unwrap();
    e.settle();
    assert!(!k.links().contains(&host) && !k.links().contains(&peer_name(EID)));
    e.docker_release_address(&p.id, a.ip()).unwrap();
    e.docker_release_address(&p.id, gw.ip()).unwrap();
    e.docker_release_pool(&p.id).unwrap();
    e.docker_delete_network(NID).unwrap();
    e.settle();
    assert_eq!(state(&e, &k), before);
}

#[test]
fn docker_and_netctl_pools_never_overlap() {
    let (_k, _s, mut e) = setup();
    let p = e.docker_request_pool(None, None, false).unwrap();
    // netctl's next network skips the Docker pool ...
    let n = e
        .create_network(&NetworkRequest {
            name: "front".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(!crate::ipam::overlaps(&n.subnets[0].subnet, &p.pool));
    // ... and an explicit overlap is refused both ways.
    let err = e
        .create_network(&NetworkRequest {
            name: "clash".into(),
            subnets: vec![crate::model::SubnetRequest {
                subnet: Some(p.pool.to_string()),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("overlaps"), "{err}");
    let err = e
        .docker_request_pool(Some(n.subnets[0].subnet), None, false)
        .unwrap_err();
    assert!(
        err.to_string().contains("overlaps with network \"front\""),
        "{err}"
    );
    // A second Docker pool is a different one; IPv6 comes from the ULA defaults.
    let p2 = e.docker_request_pool(None, None, false).unwrap();
    assert_ne!(p.pool, p2.pool);
    let p6 = e.docker_request_pool(None, None, true).unwrap();
    assert!(p6.pool.is_ipv6());
}

#[test]
fn gateway_and_static_requests() {
    let (_k, _s, mut e) = setup();
    let p = e
        .docker_request_pool(Some(cidr("10.99.0.0/24")), None, false)
        .unwrap();
    let gw = e
        .docker_request_address(&p.id, Some("10.99.0.254".parse().unwrap()), true)
        .unwrap();
    assert_eq!(gw, cidr("10.99.0.254/24"));
    // .1 is free again since the gateway moved.
    assert_eq!(
        e.docker_request_address(&p.id, None, false).unwrap(),
        cidr("10.99.0.1/24")
    );
    let a = e
        .docker_request_address(&p.id, Some("10.99.0.42".parse().unwrap()), false)
        .unwrap();
    assert_eq!(a, cidr("10.99.0.42/24"));
    for (bad, why) in [
        ("10.99.0.42", "in use"),
        ("10.99.0.254", "gateway"),
        ("10.98.0.5", "not in subnet"),
        ("10.99.0.255", "broadcast"),
    ] {
        let err = e
            .docker_request_address(&p.id, Some(bad.parse().unwrap()), false)
            .unwrap_err();
        assert!(err.to_string().contains(why), "{bad}: {err}");
    }
    let err = e
        .docker_request_address("docker-ipam:10.1.0.0/24", None, false)
        .unwrap_err();
    assert!(err.to_string().contains("no such netd address pool"), "{err}");
}

#[test]
fn exhausted_pool_is_a_clear_error() {
    let (_k, _s, mut e) = setup();
    let p = e
        .docker_request_pool(Some(cidr("10.98.0.0/30")), None, false)
        .unwrap();
    e.docker_request_address(&p.id, None, true).unwrap();
    e.docker_request_address(&p.id, None, false).unwrap();
    let err = e.docker_request_address(&p.id, None, false).unwrap_err();
    assert!(err.to_string().contains("no free address"), "{err}");
}

#[test]
fn state_survives_a_restart_and_reconcile_keeps_docker_leases() {
    let k = Arc::new(FakeKernel::default());
    let s = Arc::new(MemStore::default());
    let mut e = open(&k, &s);
    let (p, _) = docker_net(&mut e, Some("10.211.0.0/24"));
    let IpNetwork::V4(a) = e.docker_request_address(&p.id, None, false).unwrap() else {
        panic!()
    };
    e.docker_create_endpoint(&DockerEndpoint {
        network_id: NID.into(),
        endpoint_id: EID.into(),
        addr4: Some(a),
        ..Default::default()
    })
    .unwrap();
    let links = k.links();
    drop(e);
    // kill -9: a new engine on the same store and kernel.
    let mut e = open(&k, &s);
    assert_eq!(k.links(), links, "reconcile keeps the Docker veth");
    assert_eq!(e.pools().find(|(id, _)| **id == p.id).unwrap().1.leases.len(), 1);
    assert_eq!(e.docker_join(NID, EID).unwrap().src_name, peer_name(EID));
    // A new endpoint still joins; the next address skips the leased one.
    let b = e.docker_request_address(&p.id, None, false).unwrap();
    assert_ne!(b.ip(), IpAddr::V4(a.ip()));
}

#[test]
fn join_remakes_a_vanished_pair() {
    let (k, _s, mut e) = setup();
    let (p, _) = docker_net(&mut e, None);
    let IpNetwork::V4(a) = e.docker_request_address(&p.id, None, false).unwrap() else {
        panic!()
    };
    e.docker_create_endpoint(&DockerEndpoint {
        network_id: NID.into(),
        endpoint_id: EID.into(),
        addr4: Some(a),
        ..Default::default()
    })
    .unwrap();
    let host = e.docker_endpoint(NID, EID).unwrap().endpoints[0]
        .host_ifname
        .clone();
    k.apply(&Step::DeleteLink {
        name: host.clone(),
        netns: None,
    })
    .unwrap();
    e.docker_join(NID, EID).unwrap();
    assert!(k.links().contains(&host) && k.links().contains(&peer_name(EID)));
}

#[test]
fn bad_requests_change_nothing() {
    let (k, _s, mut e) = setup();
    let (p, _) = docker_net(&mut e, Some("10.212.0.0/24"));
    let before = state(&e, &k);
    let other = "ab".repeat(32);
    let ep = |nid: &str, eid: &str, a: &str| DockerEndpoint {
        network_id: nid.into(),
        endpoint_id: eid.into(),
        addr4: Some(a.parse().unwrap()),
        ..Default::default()
    };
    let cases: Vec<(Result<()>, &str)> = vec![
        (
            e.docker_create_endpoint(&ep(&other, EID, "10.212.0.5/24"))
                .map(drop),
            "not known to netd",
        ),
        (
            e.docker_create_endpoint(&ep(NID, "xyz", "10.212.0.5/24"))
                .map(drop),
            "invalid EndpointID",
        ),
        (
            e.docker_create_endpoint(&ep(NID, EID, "10.1.0.5/24")).map(drop),
            "not in the network's subnet",
        ),
        (
            e.docker_create_endpoint(&ep("", EID, "10.212.0.5/24")).map(drop),
            "NetworkID is missing",
        ),
        (
            e.docker_join(NID, EID).map(drop),
            "endpoint 0b3b525d4ed7 is not known",
        ),
        (e.docker_delete_network(&other), "not known to netd"),
        (e.docker_release_pool("nope"), "no such netd address pool"),
        (
            e.docker_create_network(&DockerNetwork {
                id: other.clone(),
                v4: vec![(p.pool, cidr("10.212.0.1/24"))],
                ..Default::default()
            })
            .map(drop),
            "already used by network dk-d929d10c1763",
        ),
        (
            e.docker_create_network(&DockerNetwork {
                id: other.clone(),
                v4: vec![(cidr("10.213.0.0/24"), cidr("10.213.0.1/24"))],
                options: [("netd.driver".to_string(), "overlay".to_string())].into(),
                ..Default::default()
            })
            .map(drop),
            "not supported",
        ),
        (
            e.docker_create_network(&DockerNetwork {
                id: other.clone(),
                v4: vec![(cidr("10.213.0.0/24"), cidr("10.213.0.1/24"))],
                options: [("netd.driver".to_string(), "ipvlan".to_string())].into(),
                ..Default::default()
            })
            .map(drop),
            "ipvlan needs a parent interface: -o parent=IFACE",
        ),
        (
            e.docker_create_network(&DockerNetwork {
                id: other.clone(),
                v4: vec![(cidr("10.213.0.0/24"), cidr("10.213.0.1/24"))],
                options: [
                    ("netd.driver".to_string(), "ipvlan".to_string()),
                    ("parent".to_string(), "eth9".to_string()),
                    ("ipvlan_mode".to_string(), "l4".to_string()),
                ]
                .into(),
                ..Default::default()
            })
            .map(drop),
            "requested ipvlan mode \"l4\" is not valid",
        ),
        (
            e.docker_create_network(&DockerNetwork {
                id: other.clone(),
                v4: vec![(cidr("10.213.0.0/24"), cidr("10.213.0.1/24"))],
                options: [("netd.driver".to_string(), "macvlan".to_string())].into(),
                ..Default::default()
            })
            .map(drop),
            "-o parent=IFACE",
        ),
        (
            e.docker_create_network(&DockerNetwork {
                id: other.clone(),
                v4: vec![(cidr("10.212.0.0/25"), cidr("10.212.0.1/25"))],
                options: [("com.docker.network.bridge.name".to_string(), "br-x".to_string())].into(),
                ..Default::default()
            })
            .map(drop),
            "overlaps",
        ),
    ];
    for (r, want) in cases {
        let err = r.unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should say {want:?}");
    }
    assert_eq!(state(&e, &k), before);
}

#[test]
fn kernel_failure_leaves_no_half_made_endpoint() {
    let (k, _s, mut e) = setup();
    let (p, _) = docker_net(&mut e, Some("10.214.0.0/24"));
    let IpNetwork::V4(a) = e.docker_request_address(&p.id, None, false).unwrap() else {
        panic!()
    };
    let before = state(&e, &k);
    let name = endpoint_name(EID);
    let host = host_veth_name(&name, &network_name(NID));
    let net = e.docker_networks().next().unwrap().clone();
    k.fail_on(&format!(
        "create veth {host} (master {}) <-> {} (left for the engine)",
        net.bridge,
        peer_name(EID)
    ));
    let err = e
        .docker_create_endpoint(&DockerEndpoint {
            network_id: NID.into(),
            endpoint_id: EID.into(),
            addr4: Some(a),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(state(&e, &k), before);
}
