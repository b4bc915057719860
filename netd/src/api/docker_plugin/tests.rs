//! The plugin protocol over the engine on the fake kernel: answers in libnetwork's shapes
//! (bodies from `shared/reference/libnetwork-trace.txt`), clear `Err`s for bad input, and
//! a property test that throws garbage and half-valid requests at every handler: no
//! panic, an `Err` on every refusal, and a refused request changes nothing.

use std::sync::Arc;

use axum::http::StatusCode;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::handle;
use crate::engine::{Engine, EngineConfig};
use crate::kernel::fake::FakeKernel;
use crate::store::MemStore;

const NID: &str = "d40ef1ca7cba73e111aeaa132764d5ab6a91b43c7785b8e3bb7a85bf81d70036";
const EID: &str = "73e53144f12087bcba4ed6a666226d2e20e6329b47a49a38014ec24c0fa05d69";
const EID2: &str = "d5ea512c811d47e537b42f468c8a4d2d72b0527e35f8b804406358cedbedfe79";

fn engine() -> (Arc<FakeKernel>, Engine) {
    let k = Arc::new(FakeKernel::default());
    let cfg = EngineConfig {
        etc_netns_dir: std::env::temp_dir().join(format!("netd-dkp-test-{}", std::process::id())),
        ..Default::default()
    };
    let e = Engine::open(k.clone(), Arc::new(MemStore::default()), cfg)
        .unwrap()
        .0;
    (k, e)
}

fn call(e: &mut Engine, method: &str, body: Value) -> (StatusCode, Value) {
    let b = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    handle(e, &format!("/{method}"), &b)
}

fn ok(e: &mut Engine, method: &str, body: Value) -> Value {
    let (s, v) = call(e, method, body);
    assert_eq!(s, StatusCode::OK, "{method}: {v}");
    assert!(v.get("Err").is_none(), "{method}: {v}");
    v
}

fn err(e: &mut Engine, method: &str, body: &[u8]) -> String {
    let (s, v) = handle(e, &format!("/{method}"), body);
    assert_ne!(s, StatusCode::OK, "{method} should fail: {v}");
    v["Err"].as_str().unwrap_or_default().to_string()
}

fn snapshot(e: &Engine, k: &FakeKernel) -> String {
    format!(
        "{}|{}|{}|{:?}",
        serde_json::to_string(&e.networks().collect::<Vec<_>>()).unwrap(),
        serde_json::to_string(&e.sandboxes().collect::<Vec<_>>()).unwrap(),
        serde_json::to_string(&e.pools().collect::<Vec<_>>()).unwrap(),
        k.links()
    )
}

/// `network create -d netd --ipam-driver netd --subnet 10.99.0.0/24 --gateway 10.99.0.254
/// --ipv6 --subnet fd99::/64`, then `run --ip 10.99.0.42 --mac-address ...`, as traced.
fn trace_n3(e: &mut Engine) {
    assert_eq!(
        ok(e, "Plugin.Activate", Value::Null),
        json!({"Implements": ["NetworkDriver", "IpamDriver"]})
    );
    assert_eq!(
        ok(e, "NetworkDriver.GetCapabilities", Value::Null)["Scope"],
        "local"
    );
    assert_eq!(
        ok(e, "IpamDriver.GetCapabilities", Value::Null)["RequiresMACAddress"],
        false
    );
    let sp = ok(e, "IpamDriver.GetDefaultAddressSpaces", Value::Null);
    let space = sp["LocalDefaultAddressSpace"].as_str().unwrap().to_string();
    let p4 = ok(
        e,
        "IpamDriver.RequestPool",
        json!({"AddressSpace": space, "Options": {}, "Pool": "10.99.0.0/24", "SubPool": "", "V6": false}),
    );
    assert_eq!(p4["Pool"], "10.99.0.0/24");
    let id4 = p4["PoolID"].as_str().unwrap().to_string();
    let gw = ok(
        e,
        "IpamDriver.RequestAddress",
        json!({"Address": "10.99.0.254", "Options": {"RequestAddressType": "com.docker.network.gateway"}, "PoolID": id4}),
    );
    assert_eq!(gw["Address"], "10.99.0.254/24");
    let p6 = ok(
        e,
        "IpamDriver.RequestPool",
        json!({"AddressSpace": space, "Options": {}, "Pool": "fd99::/64", "SubPool": "", "V6": true}),
    );
    let id6 = p6["PoolID"].as_str().unwrap().to_string();
    let gw6 = ok(
        e,
        "IpamDriver.RequestAddress",
        json!({"Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}, "PoolID": id6}),
    );
    assert_eq!(gw6["Address"], "fd99::1/64");
    ok(
        e,
        "NetworkDriver.CreateNetwork",
        json!({"IPv4Data": [{"AddressSpace": space, "Gateway": "10.99.0.254/24", "Pool": "10.99.0.0/24"}],
               "IPv6Data": [{"AddressSpace": space, "Gateway": "fd99::1/64", "Pool": "fd99::/64"}],
               "NetworkID": NID,
               "Options": {"com.docker.network.enable_ipv6": true, "com.docker.network.generic": {}}}),
    );
    let a = ok(
        e,
        "IpamDriver.RequestAddress",
        json!({"Address": "10.99.0.42", "Options": null, "PoolID": id4}),
    );
    assert_eq!(a["Address"], "10.99.0.42/24");
    let a6 = ok(
        e,
        "IpamDriver.RequestAddress",
        json!({"Address": "", "Options": null, "PoolID": id6}),
    );
    assert_eq!(a6["Address"], "fd99::2/64");
    let ce = ok(
        e,
        "NetworkDriver.CreateEndpoint",
        json!({"EndpointID": EID, "Interface": {"Address": "10.99.0.42/24", "AddressIPv6": "fd99::2/64", "MacAddress": "02:00:00:00:00:42"},
               "NetworkID": NID,
               "Options": {"com.docker.network.endpoint.exposedports": [], "com.docker.network.endpoint.macaddress": "AgAAAABC", "com.docker.network.portmap": []}}),
    );
    assert_eq!(
        ce,
        json!({"Interface": {}}),
        "Docker chose everything: nothing to add"
    );
}

#[test]
fn answers_in_libnetwork_shapes() {
    let (k, mut e) = engine();
    let empty = snapshot(&e, &k);
    trace_n3(&mut e);
    let j = ok(
        &mut e,
        "NetworkDriver.Join",
        json!({"EndpointID": EID, "NetworkID": NID, "Options": {}, "SandboxKey": "/var/run/docker/netns/0a1d3976d00a"}),
    );
    assert_eq!(j["InterfaceName"]["DstPrefix"], "eth");
    assert_eq!(j["Gateway"], "10.99.0.254");
    assert_eq!(j["GatewayIPv6"], "fd99::1");
    let src = j["InterfaceName"]["SrcName"].as_str().unwrap().to_string();
    assert!(k.links().contains(&src), "the veth dockerd moves exists: {src}");
    let ep = json!({"EndpointID": EID, "NetworkID": NID});
    ok(
        &mut e,
        "NetworkDriver.ProgramExternalConnectivity",
        json!({"EndpointID": EID, "NetworkID": NID, "Options": {
            "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}, {"Proto": 17, "Port": 53}],
            "com.docker.network.portmap": [
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
                {"Proto": 17, "IP": "", "Port": 53, "HostIP": "", "HostPort": 0, "HostPortEnd": 0}]}}),
    );
    let info = ok(&mut e, "NetworkDriver.EndpointOperInfo", ep.clone());
    let pm = info["Value"]["com.docker.network.portmap"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(pm.len(), 2);
    assert_eq!(pm[0]["HostPort"], 8080);
    assert!(
        pm[1]["HostPort"].as_u64().unwrap() >= 49153,
        "-P picked an ephemeral port"
    );
    ok(&mut e, "NetworkDriver.RevokeExternalConnectivity", ep.clone());
    assert_eq!(
        ok(&mut e, "NetworkDriver.EndpointOperInfo", ep.clone())["Value"]["com.docker.network.portmap"],
        json!([])
    );
    // A second endpoint without a MAC gets Docker's 02:42 scheme from netd.
    let ce = ok(
        &mut e,
        "NetworkDriver.CreateEndpoint",
        json!({"EndpointID": EID2, "Interface": {"Address": "10.99.0.7/24", "AddressIPv6": "", "MacAddress": ""}, "NetworkID": NID}),
    );
    assert_eq!(ce, json!({"Interface": {"MacAddress": "02:42:0a:63:00:07"}}));
    for m in ["NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint"] {
        ok(&mut e, m, ep.clone());
        ok(&mut e, m, json!({"EndpointID": EID2, "NetworkID": NID}));
    }
    e.settle();
    let pools: Vec<String> = e.pools().map(|(k, _)| k.clone()).collect();
    for (pid, addrs) in [
        (&pools[0], ["10.99.0.42", "10.99.0.254"]),
        (&pools[1], ["fd99::2", "fd99::1"]),
    ] {
        for a in addrs {
            ok(
                &mut e,
                "IpamDriver.ReleaseAddress",
                json!({"Address": a, "PoolID": pid}),
            );
        }
        ok(&mut e, "IpamDriver.ReleasePool", json!({"PoolID": pid}));
    }
    ok(&mut e, "NetworkDriver.DeleteNetwork", json!({"NetworkID": NID}));
    e.settle();
    assert_eq!(snapshot(&e, &k), empty, "nothing left");
    // Optional methods answer as libnetwork expects.
    assert_eq!(
        ok(&mut e, "NetworkDriver.AllocateNetwork", json!({})),
        json!({"Options": {}})
    );
    ok(
        &mut e,
        "NetworkDriver.DiscoverNew",
        json!({"DiscoveryType": 1, "DiscoveryData": {}}),
    );
    ok(&mut e, "NetworkDriver.DiscoverDelete", json!({}));
    ok(&mut e, "NetworkDriver.FreeNetwork", json!({"NetworkID": NID}));
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let (k, mut e) = engine();
    trace_n3(&mut e);
    let before = snapshot(&e, &k);
    let other = "ab".repeat(32);
    let cases: Vec<(&str, String, &str)> = vec![
        ("NetworkDriver.CreateNetwork", String::new(), "request body is empty"),
        ("NetworkDriver.CreateNetwork", "garbage{".into(), "malformed request"),
        ("NetworkDriver.CreateNetwork", "null".into(), "request body is empty"),
        ("NetworkDriver.CreateNetwork", r#"{"NetworkID": 5}"#.into(), "malformed request"),
        ("NetworkDriver.CreateNetwork", json!({"IPv4Data": []}).to_string(), "NetworkID is missing"),
        ("NetworkDriver.CreateNetwork", json!({"NetworkID": other, "IPv4Data": []}).to_string(), "no IPv4 pool"),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": other, "IPv4Data": [{"Pool": "10.99.0.0/24", "Gateway": "10.99.0.1/24"}]}).to_string(),
            "already used by network",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": other, "IPv4Data": [{"Pool": "banana", "Gateway": "10.1.0.1/24"}]}).to_string(),
            "invalid IPv4 pool \"banana\"",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "x/../y", "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}]}).to_string(),
            "invalid NetworkID",
        ),
        ("NetworkDriver.DeleteNetwork", json!({"NetworkID": other}).to_string(), "not known to netd"),
        ("NetworkDriver.Join", json!({"NetworkID": NID}).to_string(), "EndpointID is missing"),
        ("NetworkDriver.Join", json!({"NetworkID": NID, "EndpointID": other}).to_string(), "is not known to netd"),
        ("NetworkDriver.Leave", json!({"NetworkID": other, "EndpointID": EID}).to_string(), "not known to netd"),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NID, "EndpointID": EID}).to_string(),
            "already exists",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NID, "EndpointID": other, "Interface": {"Address": "10.99.0.9/24", "MacAddress": "ff:ff:ff:ff:ff:ff"}}).to_string(),
            "invalid MAC address",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NID, "EndpointID": other, "Interface": {"Address": "10.5.0.9/24"}}).to_string(),
            "not in the network's subnet",
        ),
        (
            "NetworkDriver.ProgramExternalConnectivity",
            json!({"NetworkID": NID, "EndpointID": EID, "Options": {"com.docker.network.portmap": [{"Proto": 132, "Port": 80}]}}).to_string(),
            "SCTP",
        ),
        (
            "NetworkDriver.ProgramExternalConnectivity",
            json!({"NetworkID": NID, "EndpointID": EID, "Options": {"com.docker.network.portmap": "x"}}).to_string(),
            "option com.docker.network.portmap",
        ),
        (
            "NetworkDriver.ProgramExternalConnectivity",
            json!({"NetworkID": NID, "EndpointID": EID, "Options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostIP": "10.9.9.9", "HostPort": 80}]}}).to_string(),
            "not an address of this host",
        ),
        ("IpamDriver.RequestPool", json!({"Pool": "10.99.0.0/16", "V6": false}).to_string(), "overlaps"),
        ("IpamDriver.RequestPool", json!({"Pool": "10.7.0.1/16"}).to_string(), "host bits are set"),
        ("IpamDriver.RequestPool", json!({"Pool": "fd00::/64", "V6": false}).to_string(), "not an IPv4 subnet"),
        ("IpamDriver.RequestPool", json!({"AddressSpace": "elsewhere"}).to_string(), "unknown address space"),
        ("IpamDriver.RequestAddress", json!({"PoolID": "nope"}).to_string(), "no such netd address pool"),
        ("IpamDriver.RequestAddress", json!({}).to_string(), "PoolID is missing"),
        ("IpamDriver.ReleasePool", json!({"PoolID": "docker-ipam:10.1.0.0/24"}).to_string(), "no such netd address pool"),
        ("IpamDriver.ReleaseAddress", json!({"PoolID": "x"}).to_string(), "Address is missing"),
    ];
    for (m, body, want) in cases {
        let got = err(&mut e, m, body.as_bytes());
        assert!(got.contains(want), "{m} {body}: {got:?} should say {want:?}");
        assert!(got.starts_with("netd: "), "{got}");
        assert_eq!(snapshot(&e, &k), before, "{m} {body} changed state");
    }
    let (s, v) = handle(&mut e, "/NetworkDriver.Nonsense", b"{}");
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["Err"].as_str().unwrap().contains("not implemented"));
}

const METHODS: &[&str] = &[
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.Join",
    "NetworkDriver.Leave",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.RevokeExternalConnectivity",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
    "Plugin.Activate",
    "NetworkDriver.Bogus",
];

/// Values that are sometimes right, often wrong, in every field.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!(NID)),
        Just(json!(EID)),
        Just(json!(EID2)),
        Just(json!("docker-ipam:10.99.0.0/24")),
        Just(json!("10.99.0.0/24")),
        Just(json!("10.99.0.5/24")),
        Just(json!("10.99.0.254/24")),
        Just(json!("10.98.0.0/24")),
        Just(json!("10.98.0.1/24")),
        Just(json!("fd99::/64")),
        Just(json!("02:00:00:00:00:43")),
        Just(json!("")),
        Just(json!(null)),
        Just(json!(true)),
        any::<i64>().prop_map(|n| json!(n)),
        "[ -~]{0,20}".prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("Pool".to_string()),
                    Just("Gateway".to_string()),
                    Just("Address".to_string()),
                    Just("Proto".to_string()),
                    Just("Port".to_string()),
                    Just("HostPort".to_string()),
                    Just("com.docker.network.generic".to_string()),
                    Just("com.docker.network.portmap".to_string()),
                    Just("RequestAddressType".to_string()),
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const KEYS: &[&str] = &[
    "NetworkID",
    "EndpointID",
    "PoolID",
    "Pool",
    "SubPool",
    "V6",
    "Address",
    "Options",
    "Interface",
    "IPv4Data",
    "IPv6Data",
    "SandboxKey",
];

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..40),
        1 => Just(Vec::new()),
        6 => prop::collection::btree_map(prop::sample::select(KEYS), value(), 0..6).prop_map(|m| {
            let o: serde_json::Map<String, Value> = m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            Value::Object(o).to_string().into_bytes()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Any sequence of requests: no panic, refusals carry an Err and change nothing, and
    /// at the end every netd link belongs to a record (nothing half-made).
    #[test]
    fn fuzz_handlers(calls in prop::collection::vec((prop::sample::select(METHODS), body()), 1..25)) {
        let (k, mut e) = engine();
        trace_n3(&mut e);
        for (m, b) in calls {
            let before = snapshot(&e, &k);
            let (s, v) = handle(&mut e, &format!("/{m}"), &b);
            if s != StatusCode::OK {
                let msg = v["Err"].as_str().unwrap_or_default();
                prop_assert!(!msg.is_empty(), "{} gave {} without Err", m, s);
                prop_assert_eq!(snapshot(&e, &k), before, "{} refused but changed state", m);
            }
        }
        e.settle();
        let names: Vec<String> = e
            .sandboxes()
            .flat_map(|s| s.endpoints.iter().flat_map(|x| [x.host_ifname.clone(), x.ifname.clone()]))
            .chain(e.networks().map(|n| n.bridge.clone()))
            .collect();
        for l in k.links() {
            prop_assert!(names.contains(&l), "link {} belongs to nothing", l);
        }
        for s in e.sandboxes() {
            for x in &s.endpoints {
                prop_assert!(e.network(&x.network).is_ok(), "endpoint on a missing network");
            }
        }
    }
}

/// The socket side: dockerd's empty-bodied Activate over HTTP/1.1 on a unix socket, the
/// plugin content type, and an Err body with status 500 for a refused call.
#[test]
fn serves_the_protocol_on_a_unix_socket() {
    use std::io::{Read, Write};
    use std::sync::Mutex;

    let dir = std::env::temp_dir().join(format!(
        "netd-dkp-sock-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("netd.sock");
    let (_k, e) = engine();
    let shared = Arc::new(Mutex::new(e));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let listener = rt
        .block_on(async { tokio::net::UnixListener::bind(&path) })
        .unwrap();
    let server = rt.spawn(super::serve(listener, shared, async {
        let _ = rx.await;
    }));
    let post = |path_: &str, body: &str| -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        write!(
            s,
            "POST /{path_} HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let a = post("Plugin.Activate", "");
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(
        a.to_ascii_lowercase()
            .contains("content-type: application/vnd.docker.plugins.v1+json"),
        "{a}"
    );
    assert!(
        a.ends_with(r#"{"Implements":["NetworkDriver","IpamDriver"]}"#),
        "{a}"
    );
    let j = post("NetworkDriver.Join", r#"{"NetworkID": "nope"}"#);
    assert!(j.starts_with("HTTP/1.1 500"), "{j}");
    assert!(
        j.contains(r#"{"Err":"netd: Join: EndpointID is missing"}"#),
        "{j}"
    );
    let u = post("VolumeDriver.Create", "{}");
    assert!(u.starts_with("HTTP/1.1 404"), "{u}");
    let _ = tx.send(());
    rt.block_on(server).unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
