//! Translation of the real YAML/JSON files in `netd/tests/data/k8s/` (the integration
//! tests apply the same files to a daemon).

use std::net::IpAddr;

use super::*;
use crate::firewall::ruleset::services::{full, FwService};
use crate::model::{
    select_backends, Backend, EndpointMode, KubeType, Proto, Service, ServiceKind, TargetPort, CLUSTER_WIDE,
};

fn file(name: &str) -> String {
    let p = format!("{}/tests/data/k8s/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn objects_of(name: &str) -> Vec<Object> {
    let docs = documents(&file(name)).unwrap();
    objects(&serde_json::Value::Array(docs)).unwrap()
}

fn services_and_slices(name: &str) -> (Vec<KubeService>, Vec<KubeSlice>) {
    let (mut svcs, mut slices) = (Vec::new(), Vec::new());
    for o in objects_of(name) {
        match o {
            Object::Service(s) => svcs.push(service(&s).unwrap()),
            Object::EndpointSlice(s) => slices.push(endpoint_slice(&s).unwrap()),
        }
    }
    (svcs, slices)
}

fn model(k: &KubeService) -> Service {
    Service {
        name: k.name.clone(),
        namespace: k.namespace.clone(),
        id: "1".into(),
        kind: k.kind.clone(),
        created: 0,
        applied: true,
        labels: Default::default(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn cluster_ip_with_an_endpoint_slice() {
    let (svcs, slices) = services_and_slices("clusterip.yaml");
    assert_eq!((svcs.len(), slices.len()), (1, 1));
    let web = &svcs[0];
    assert_eq!((web.name.as_str(), web.namespace.as_str()), ("web", "shop"));
    assert_eq!(web.cluster_ip, WantClusterIp::Ip(ip("10.96.0.80")));
    let ServiceKind::ClusterIp(c) = &web.kind else {
        panic!("{:?}", web.kind)
    };
    assert!(c.networks.is_empty());
    assert_eq!(c.selector["app"], "web");
    assert_eq!(c.endpoint_mode, EndpointMode::Vip);
    let k = c.kubernetes.as_ref().unwrap();
    assert_eq!(k.type_, KubeType::ClusterIP);
    assert_eq!(k.ports[0].target, TargetPort::Name("http".into()));
    assert_eq!(k.ports[1].target, TargetPort::Number(5353));
    assert_eq!(k.ports[1].proto, Proto::Udp);

    let s = &slices[0];
    assert_eq!(
        (s.name.as_str(), s.namespace.as_str(), s.service.as_str()),
        ("web-7x2kq", "shop", "web")
    );
    let ready: Vec<bool> = s.slice.endpoints.iter().map(|e| e.ready).collect();
    assert_eq!(ready, [true, true, false]);

    // Before any slice, the named target resolves to nothing: that port is left out.
    let svc = model(web);
    let fw = FwService::from_model(&svc, &[], |_| None).unwrap();
    assert_eq!(fw.ports, [(53, 5353, Proto::Udp)]);

    // With the slice: its ready endpoints are the backends, on every network, and the
    // named target is the slice's port "http".
    let mut svc = svc;
    let ServiceKind::ClusterIp(c) = &mut svc.kind else {
        unreachable!()
    };
    let k = c.kubernetes.as_mut().unwrap();
    k.slices.insert(s.name.clone(), s.slice.clone());
    let backends = select_backends(c, &[]);
    assert_eq!(
        backends.iter().map(|b| b.ip).collect::<Vec<_>>(),
        [ip("10.244.1.5"), ip("10.244.2.7")]
    );
    assert!(backends.iter().all(|b| b.network == CLUSTER_WIDE));
    let fw = FwService::from_model(&svc, &backends, |_| None).unwrap();
    assert_eq!(fw.ports, [(53, 5353, Proto::Udp), (80, 8080, Proto::Tcp)]);
    assert_eq!(fw.vips.len(), 1);
    assert_eq!(fw.vips[0].network, CLUSTER_WIDE);
    assert_eq!(fw.vips[0].vip, ip("10.96.0.80"));
    assert!(fw.ingress.is_empty());

    // The datapath: one dispatch element per port into the service's chains, the
    // backends (at the slice's ports) as elements of the backend maps the pick chain
    // DNATs through.
    let text = full(&[fw]).to_string();
    for want in [
        "10.96.0.80 . tcp . 80 : goto svc/shop/web/_cluster/tcp/80",
        "10.96.0.80 . udp . 53 : goto svc/shop/web/_cluster/udp/53",
        "svc/pick4/tcp/n2 { 10.96.0.80 . 80 . 0 : 10.244.1.5 . 8080, 10.96.0.80 . 80 . 1 : 10.244.2.7 . 8080 }",
        "svc/pick4/udp/n2 { 10.96.0.80 . 53 . 0 : 10.244.1.5 . 5353, 10.96.0.80 . 53 . 1 : 10.244.2.7 . 5353 }",
        "add rule inet netd svc/shop/web/_cluster/tcp/80 goto svc/pick4",
    ] {
        assert!(text.contains(want), "{want} not in\n{text}");
    }
    assert!(
        !text.contains("10.244.3.9"),
        "a not-ready endpoint takes no connection"
    );
}

#[test]
fn node_port_local_keeps_the_client_and_cluster_masquerades() {
    let (svcs, _) = services_and_slices("nodeport.yaml");
    let vote = &svcs[0];
    assert_eq!(vote.namespace, "default");
    assert_eq!(vote.cluster_ip, WantClusterIp::Allocate);
    let mut svc = model(vote);
    let ServiceKind::ClusterIp(c) = &mut svc.kind else {
        unreachable!()
    };
    assert_eq!(c.session_affinity.unwrap().timeout_secs, 60);
    let k = c.kubernetes.as_mut().unwrap();
    assert_eq!(k.type_, KubeType::NodePort);
    assert!(k.external_traffic_local);
    assert_eq!(k.ports[0].node_port, Some(30080));
    // The engine fills the ClusterIP.
    k.cluster_ip = Some(ip("10.96.0.10"));
    let be = [Backend {
        network: "front".into(),
        sandbox: "vote-1".into(),
        ip: ip("10.89.0.2"),
    }];
    let fw = FwService::from_model(&svc, &be, |_| None).unwrap();
    assert_eq!(fw.affinity, Some(60));
    assert_eq!(fw.ingress.len(), 1);
    assert_eq!(
        (
            fw.ingress[0].published,
            fw.ingress[0].target,
            fw.ingress[0].masquerade
        ),
        (30080, 8080, false)
    );
    let text = full(std::slice::from_ref(&fw)).to_string();
    assert!(
        text.contains("tcp . 30080 : goto svc/default/vote/ingress4/tcp/30080"),
        "{text}"
    );
    assert!(!text.contains("externalTrafficPolicy Cluster"), "{text}");

    // The same service with the default policy (Cluster) masquerades NodePort traffic,
    // and only that: the ClusterIP chain keeps the client's address.
    let ServiceKind::ClusterIp(c) = &mut svc.kind else {
        unreachable!()
    };
    c.kubernetes.as_mut().unwrap().external_traffic_local = false;
    let fw = FwService::from_model(&svc, &be, |_| None).unwrap();
    assert!(fw.ingress[0].masquerade);
    let text = full(&[fw]).to_string();
    let marked: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("externalTrafficPolicy Cluster"))
        .collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(
        marked[0].contains("svc/default/vote/ingress4/tcp/30080 "),
        "{}",
        marked[0]
    );
}

#[test]
fn headless_is_dnsrr_over_sandboxes_of_every_network() {
    use crate::model::{Endpoint, NetMode, Sandbox};
    let (svcs, _) = services_and_slices("headless.yaml");
    let db = &svcs[0];
    assert_eq!(db.cluster_ip, WantClusterIp::Headless);
    let ServiceKind::ClusterIp(c) = &db.kind else {
        unreachable!()
    };
    assert_eq!(c.endpoint_mode, EndpointMode::Dnsrr);
    assert!(c.kubernetes.as_ref().unwrap().cluster_ip.is_none());
    assert!(
        FwService::from_model(&model(db), &[], |_| None).is_none(),
        "no VIP, no nft objects"
    );
    let sb = |name: &str, app: &str, net: &str, addr: &str| Sandbox {
        name: name.into(),
        id: name.into(),
        mode: NetMode::Bridge,
        netns: String::new(),
        external: false,
        endpoints: vec![Endpoint {
            network: net.into(),
            ifname: "eth0".into(),
            host_ifname: String::new(),
            mac: String::new(),
            ipv4: Some(format!("{addr}/24").parse().unwrap()),
            ipv6: None,
            gateway4: None,
            gateway6: None,
            aliases: vec![],
            routes: vec![],
            no_default_route: false,
        }],
        ports: vec![],
        publish_all: false,
        expose: vec![],
        labels: [("app".to_string(), app.to_string())].into(),
        created: 0,
    };
    let world = [
        sb("db-1", "db", "front", "10.89.0.5"),
        sb("db-2", "db", "back", "10.90.0.5"),
        sb("web-1", "web", "front", "10.89.0.6"),
    ];
    let got: Vec<String> = select_backends(c, &world)
        .iter()
        .map(|b| format!("{}/{}", b.sandbox, b.ip))
        .collect();
    assert_eq!(got, ["db-2/10.90.0.5", "db-1/10.89.0.5"]);
}

#[test]
fn external_name_and_a_json_list() {
    let (svcs, _) = services_and_slices("externalname.yaml");
    assert_eq!(
        svcs[0].kind,
        ServiceKind::ExternalName {
            target: "api.example.com".into()
        }
    );
    assert_eq!(svcs[0].cluster_ip, WantClusterIp::NotApplicable);
    let (svcs, _) = services_and_slices("list.json");
    let names: Vec<&str> = svcs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "cache"]);
    let ServiceKind::ClusterIp(c) = &svcs[1].kind else {
        unreachable!()
    };
    let k = c.kubernetes.as_ref().unwrap();
    assert_eq!((k.type_, k.ports[0].node_port), (KubeType::NodePort, None));
}

/// Every bad file fails with one line that names what is wrong.
#[test]
fn bad_input_says_what_and_where() {
    let run = |name: &str| -> Result<(), K8sError> {
        let docs = documents(&file(name))?;
        for o in objects(&serde_json::Value::Array(docs))? {
            match o {
                Object::Service(s) => drop(service(&s)?),
                Object::EndpointSlice(s) => drop(endpoint_slice(&s)?),
            }
        }
        Ok(())
    };
    for (name, want) in [
        ("bad/invalid.yaml", "invalid YAML"),
        (
            "bad/deployment.yaml",
            "unknown kind \"Deployment\" (apiVersion \"apps/v1\")",
        ),
        (
            "bad/loadbalancer.yaml",
            "Service default/web: spec.type LoadBalancer is not supported",
        ),
        (
            "bad/nodeport-range.yaml",
            "spec.ports[0].nodePort 8080 is outside the NodePort range 30000-32767",
        ),
        ("bad/sctp.yaml", "protocol \"SCTP\" is not supported"),
    ] {
        let e = run(name).unwrap_err().to_string();
        assert!(e.contains(want), "{name}: {e}");
        assert!(!e.contains('\n'), "{name}: {e}");
    }
    // Checked by the engine, not here: the ClusterIP range and the slice's service.
    assert!(run("bad/cluster-ip-outside.yaml").is_ok());
    assert!(run("bad/slice-without-service.yaml").is_ok());
}

#[test]
fn more_refusals() {
    let svc = |spec: serde_json::Value| -> Result<KubeService, K8sError> {
        let v = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": spec});
        match objects(&v)?.remove(0) {
            Object::Service(s) => service(&s),
            o => panic!("{o:?}"),
        }
    };
    for (spec, want) in [
        (serde_json::json!({}), "at least one port"),
        (
            serde_json::json!({"ports": [{"port": 80}, {"port": 81}]}),
            "spec.ports[0].name is required",
        ),
        (
            serde_json::json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}),
            "port 80/tcp is listed twice",
        ),
        (
            serde_json::json!({"ports": [{"port": 70000}]}),
            "70000 is not a port number",
        ),
        (
            serde_json::json!({"ports": [{"port": 80, "nodePort": 30001}]}),
            "nodePort may only be set for type NodePort",
        ),
        (
            serde_json::json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}),
            "may not be \"None\" for type NodePort",
        ),
        (
            serde_json::json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
            "applies to type NodePort only",
        ),
        (
            serde_json::json!({"clusterIP": "ten", "ports": [{"port": 80}]}),
            "not an IP address",
        ),
        (
            serde_json::json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}},
                                "ports": [{"port": 80}]}),
            "timeoutSeconds 0",
        ),
        (
            serde_json::json!({"selector": {"app": "-x"}, "ports": [{"port": 80}]}),
            "spec.selector",
        ),
        (
            serde_json::json!({"ports": [{"port": 80, "targetPort": "Not_A_Name"}]}),
            "neither a port number nor a port name",
        ),
        (
            serde_json::json!({"type": "ExternalName"}),
            "spec.externalName is required",
        ),
    ] {
        let e = svc(spec.clone()).unwrap_err().to_string();
        assert!(e.contains(want), "{spec}: {e}");
        assert!(e.starts_with("Service default/web: "), "{e}");
    }
    // apiVersion is checked with the kind.
    let v = serde_json::json!({"apiVersion": "v2", "kind": "Service", "metadata": {"name": "web"}});
    assert!(matches!(objects(&v), Err(K8sError::UnknownKind { .. })));
    assert_eq!(objects(&serde_json::json!([])), Err(K8sError::Empty));
    assert_eq!(objects(&serde_json::json!(["x"])), Err(K8sError::NotAnObject(1)));
    let slice = |body: serde_json::Value| -> String {
        match objects(&body).unwrap().remove(0) {
            Object::EndpointSlice(s) => endpoint_slice(&s).unwrap_err().to_string(),
            o => panic!("{o:?}"),
        }
    };
    let base = |extra: serde_json::Value| {
        let mut v = serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    assert!(slice(base(serde_json::json!({"addressType": "FQDN"}))).contains("addressType \"FQDN\""));
    assert!(slice(base(
        serde_json::json!({"endpoints": [{"addresses": ["fd00::1"]}]})
    ))
    .contains("not of addressType IPv4"));
    assert!(
        slice(base(serde_json::json!({"ports": [{"name": "http"}]}))).contains("ports[0].port is required")
    );
    assert!(slice(base(serde_json::json!({"metadata": {"name": "web-1"}})))
        .contains("kubernetes.io/service-name"));
}
