//! `netctl apply -f` / `delete -f` against a real daemon, with the Kubernetes files of
//! `netd/tests/data/k8s/`: ClusterIP (with an EndpointSlice), NodePort, headless and
//! ExternalName services are created with their ClusterIPs and NodePorts, applying again
//! changes nothing, `delete -f` leaves nothing; bad files are refused in one line and
//! change nothing (store, links, routes, nft ruleset). The `*_traffic` tests send real
//! traffic through what the files make: ClusterIPs (EndpointSlice and selector backends,
//! from every network and the host), NodePorts from an outside namespace (Local keeps
//! the client's address, Cluster masquerades), headless endpoints and ExternalName.

mod dns_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dns_support::{dig, dig_missing};
use integration::harness::{bin, respond, respond_peer, tcp, udp, Host, Outside};
use integration::skip::no_root;
use serde_json::Value;

fn data(name: &str) -> String {
    format!("{}/../netd/tests/data/k8s/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn services(h: &Host) -> Value {
    serde_json::from_str(&h.ctl(&["service", "ls", "--json"])).expect("service ls --json")
}

fn find<'a>(svcs: &'a Value, ns: &str, name: &str) -> &'a Value {
    svcs.as_array()
        .into_iter()
        .flatten()
        .find(|s| s["namespace"] == ns && s["name"] == name)
        .unwrap_or_else(|| panic!("no service {ns}/{name} in {svcs}"))
}

/// Everything observable, services included.
fn state(h: &Host) -> Vec<String> {
    let mut s = h.snapshot();
    s.push(h.client().get("/v1/services").expect("services").to_string());
    s
}

fn apply_stdin(h: &Host, text: &str) -> (i32, String, String) {
    let mut c = Command::new(bin("netctl"))
        .arg("--socket")
        .arg(h.socket())
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netctl");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write stdin");
    let o = c.wait_with_output().expect("netctl");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn k8s_apply_and_delete_real_files() {
    if no_root() {
        return;
    }
    let h = Host::new();
    // The first ClusterIP makes the (empty) base chains and maps of the service layout,
    // which stay (as for `netctl service`): "before" is taken once they exist.
    h.ctl(&["apply", "-f", &data("list.json")]);
    h.ctl(&["delete", "-f", &data("list.json")]);
    let before = state(&h);
    assert!(!before.iter().any(|s| s.contains("svc/")), "{before:?}");
    let out = h.ctl(&["apply", "-f", &data("clusterip.yaml")]);
    assert_eq!(out, "service/web created\nendpointslice/web-7x2kq created\n");
    let out = h.ctl(&["apply", "-f", &data("nodeport.yaml")]);
    assert_eq!(out, "service/vote created\n");
    let out = h.ctl(&["apply", "-f", &data("headless.yaml")]);
    assert_eq!(out, "service/db created\n");
    // Standard input, a JSON List.
    let (code, out, err) = apply_stdin(
        &h,
        &std::fs::read_to_string(data("list.json")).expect("list.json"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "service/api created\nservice/cache created\n");
    let out = h.ctl(&["apply", "-f", &data("externalname.yaml"), "--json"]);
    let v: Value = serde_json::from_str(&out).expect("apply --json");
    assert_eq!(v[0]["action"], "created");

    let svcs = services(&h);
    let web = find(&svcs, "shop", "web");
    assert_eq!(web["kind"], "cluster_ip");
    assert_eq!(web["kubernetes"]["cluster_ip"], "10.96.0.80");
    assert_eq!(
        web["kubernetes"]["slices"]["web-7x2kq"]["endpoints"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let vote = find(&svcs, "default", "vote");
    // 10.96.0.80 is web's (asked for); the others get the lowest free ones.
    assert_eq!(vote["kubernetes"]["cluster_ip"], "10.96.0.1");
    assert_eq!(vote["kubernetes"]["ports"][0]["node_port"], 30080);
    assert_eq!(vote["kubernetes"]["external_traffic_local"], true);
    assert_eq!(vote["session_affinity"]["timeout_secs"], 60);
    assert_eq!(
        find(&svcs, "default", "cache")["kubernetes"]["ports"][0]["node_port"],
        30000
    );
    let db = find(&svcs, "shop", "db");
    assert_eq!(db["endpoint_mode"], "dnsrr");
    assert!(db["kubernetes"].get("cluster_ip").is_none(), "{db}");
    assert_eq!(find(&svcs, "shop", "upstream")["target"], "api.example.com");

    // Again: nothing changes, what was allocated stays.
    let mid = state(&h);
    let out = h.ctl(&["apply", "-f", &data("list.json")]);
    assert_eq!(out, "service/api unchanged\nservice/cache unchanged\n");
    assert_eq!(state(&h), mid);

    for f in [
        "clusterip.yaml",
        "nodeport.yaml",
        "headless.yaml",
        "list.json",
        "externalname.yaml",
    ] {
        h.ctl(&["delete", "-f", &data(f)]);
    }
    assert_eq!(state(&h), before, "delete -f left something");
    h.assert_consistent();
}

#[test]
fn k8s_bad_files_change_nothing() {
    if no_root() {
        return;
    }
    let h = Host::new();
    h.ctl(&["network", "create", "a", "--subnet", "10.80.0.0/24"]);
    h.ctl(&["sandbox", "create", "s1", "--network", "a", "-p", "30080:80"]);
    h.ctl(&["apply", "-f", &data("list.json")]);
    let before = state(&h);
    for (file, why) in [
        ("bad/invalid.yaml", "invalid YAML"),
        (
            "bad/deployment.yaml",
            "unknown kind \"Deployment\" (apiVersion \"apps/v1\")",
        ),
        ("bad/loadbalancer.yaml", "spec.type LoadBalancer is not supported"),
        (
            "bad/nodeport-range.yaml",
            "outside the NodePort range 30000-32767",
        ),
        (
            "bad/cluster-ip-outside.yaml",
            "not a usable address of the service CIDR 10.96.0.0/12",
        ),
        ("bad/sctp.yaml", "protocol \"SCTP\" is not supported"),
        (
            "bad/slice-without-service.yaml",
            "service nosuch (label kubernetes.io/service-name) does not exist",
        ),
        // The NodePort a sandbox publishes already.
        (
            "nodeport.yaml",
            "nodePort 30080/tcp is already used by sandbox s1",
        ),
    ] {
        let o = h.netctl(&["apply", "-f", &data(file)]);
        assert_ne!(o.code, 0, "{file} applied");
        let err = o.stderr.trim();
        assert_eq!(err.lines().count(), 1, "{file}: {err:?}");
        assert!(
            err.starts_with("netctl: ") && err.contains(why),
            "{file}: {err:?} lacks {why:?}"
        );
        assert_eq!(state(&h), before, "{file} changed state");
    }
    let o = h.netctl(&["delete", "-f", &data("headless.yaml")]);
    assert!(
        !o.ok() && o.stderr.contains("no such service: db in namespace shop"),
        "{}",
        o.stderr
    );
    // The API: 4xx with a message, nothing changed.
    let c = h.client();
    for body in [
        &b"{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\"}}"[..],
        b"[]",
        b"not json",
    ] {
        let (code, v) = c.raw("POST", "/v1/k8s/apply", Some(body)).expect("API");
        assert!((400..500).contains(&code), "{code} {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    assert_eq!(state(&h), before);
    h.assert_consistent();
}

/// `n` TCP connections from inside `netns` to `addr`, counted by the answer ("!err" for
/// a failed connection).
fn spread(netns: &Path, addr: &str, n: usize) -> BTreeMap<String, usize> {
    let a: SocketAddr = addr.parse().expect("address");
    netd::kernel::probe::in_netns(Some(netns), move || {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let name = TcpStream::connect_timeout(&a, Duration::from_millis(500))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_millis(500)))?;
                    let mut out = String::new();
                    s.read_to_string(&mut out)?;
                    Ok(out.trim().to_string())
                })
                .unwrap_or_else(|_| "!err".into());
            *seen.entry(name).or_insert(0) += 1;
        }
        Ok(seen)
    })
    .expect("connections")
}

/// The nft ruleset and the host's addresses.
fn datapath(h: &Host) -> (String, String) {
    let r = h.sh("nft list ruleset");
    let a = h.sh("ip -j addr show");
    assert!(r.ok() && a.ok());
    // An outside veth's link-local address is tentative for a moment after it is made.
    (r.stdout, a.stdout.replace("\"tentative\":true,", ""))
}

fn nf_call(h: &Host, br: &str) -> bool {
    let o = h.sh(&format!("ip -d -j link show {br}")).stdout;
    assert!(o.contains("nf_call_iptables"), "{o}");
    o.contains("\"nf_call_iptables\":1")
}

/// clusterip.yaml: its EndpointSlice names 10.244.1.5 and 10.244.2.7 (ready) and
/// 10.244.3.9 (not ready), given here to sandboxes on three networks. The ClusterIP
/// 10.96.0.80 (off every subnet, reached through each sandbox's gateway) balances over
/// the two ready ones from every network and from the host; a client on a backend's own
/// bridge keeps its address; UDP 53 goes to the slice's port 5353. delete -f leaves the
/// ruleset and addresses as they were.
#[test]
fn k8s_clusterip_slice_traffic() {
    if no_root() {
        return;
    }
    let h = Host::new();
    for (net, i) in [("a", 1), ("b", 2), ("c", 3)] {
        h.ctl(&["network", "create", net, "--subnet", &format!("10.244.{i}.0/24")]);
    }
    h.ctl(&["sandbox", "create", "be1", "--network", "a", "--ip", "10.244.1.5"]);
    h.ctl(&["sandbox", "create", "be2", "--network", "b", "--ip", "10.244.2.7"]);
    h.ctl(&["sandbox", "create", "be3", "--network", "c", "--ip", "10.244.3.9"]);
    // be1 answers with the client's address as it sees it, the others with their name.
    respond_peer(&h.sb("be1"), 8080);
    respond(&h.sb("be1"), "be1", &[], &[5353]);
    respond(&h.sb("be2"), "be2", &[8080], &[5353]);
    respond(&h.sb("be3"), "be3", &[8080], &[5353]);
    h.ctl(&["sandbox", "create", "ca", "--network", "a"]);
    h.ctl(&["sandbox", "create", "cc", "--network", "c"]);
    let ca = h.ip("ca", "a");
    let cc = h.ip("cc", "c");
    // A host has a route covering the service CIDR (its default route) or it cannot
    // even send to a ClusterIP: give the test host one, through an outside namespace.
    let out = Outside::new(&h, 74);
    let r = h.sh(&format!("ip route add default via {}", out.ip));
    assert!(r.ok(), "{}", r.stderr);
    let before = datapath(&h);
    assert!(!nf_call(&h, "netd-a"));

    h.ctl(&["apply", "-f", &data("clusterip.yaml")]);
    // The datapath follows before apply returns: no retry loop here.
    let seen = spread(&h.sb("ca"), "10.96.0.80:80", 200);
    println!("ClusterIP from network a (200 connections): {seen:?}");
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        [&ca, &"be2".to_string()],
        "{seen:?}"
    );
    for (k, c) in &seen {
        assert!((60..=140).contains(c), "{k} got {c} of 200: {seen:?}");
    }
    // Another network (the not-ready endpoint's own) reaches it too, never be3.
    // be1 (network a) sees the client's own address from network c too.
    let seen = spread(&h.sb("cc"), "10.96.0.80:80", 100);
    println!("ClusterIP from network c (100 connections): {seen:?}");
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        [&cc, &"be2".to_string()],
        "{seen:?}"
    );
    // The host itself.
    let seen = spread(&h.netns(), "10.96.0.80:80", 40);
    println!("ClusterIP from the host (40 connections): {seen:?}");
    assert!(
        !seen.contains_key("!err") && !seen.contains_key("be3"),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
    // UDP 53 -> the slice's port "dns" 5353.
    for _ in 0..10 {
        let got = udp(Some(&h.sb("ca")), "10.96.0.80:53", 1000);
        assert!(matches!(got.as_deref(), Some("be1" | "be2")), "{got:?}");
    }
    for br in ["netd-a", "netd-b", "netd-c"] {
        assert!(nf_call(&h, br), "{br}: nf_call_iptables off");
    }
    // Kubernetes names from every network: the ClusterIP, SRV by port name and number.
    if !dig_missing() {
        for who in ["ca", "cc"] {
            let ask = |q: &str| dig(&h, who, q);
            assert_eq!(
                ask("web.shop.svc.cluster.local A").1,
                ["web.shop.svc.cluster.local. 600 IN A 10.96.0.80"],
                "from {who}"
            );
            for (q, port) in [
                ("_http._tcp.web.shop.svc.cluster.local", 80),
                ("_80._tcp.web.shop.svc.cluster.local", 80),
                ("_dns._udp.web.shop.svc.cluster.local", 53),
            ] {
                assert_eq!(
                    ask(&format!("{q} SRV")).1,
                    [format!("{q}. 600 IN SRV 0 0 {port} web.shop.svc.cluster.local.")],
                    "from {who}"
                );
            }
        }
    }
    // No address for the ClusterIP anywhere: it is dispatched, not held.
    assert!(!h.sh("ip -j addr show").stdout.contains("10.96.0.80"));
    h.assert_consistent();

    h.ctl(&["delete", "-f", &data("clusterip.yaml")]);
    assert_eq!(tcp(Some(&h.sb("ca")), "10.96.0.80:80", 300), None);
    let after = datapath(&h);
    assert!(!after.0.contains("svc/"), "{}", after.0);
    assert!(!after.0.contains("10.96.0.80"), "{}", after.0);
    assert_eq!(after.1, before.1, "delete -f left an address or nf_call behind");
    h.assert_consistent();
}

/// nodeport.yaml (selector app=vote, externalTrafficPolicy Local, ClientIP affinity 60s,
/// nodePort 30080 -> 8080): sandboxes labelled app=vote on two networks are its backends;
/// from an outside namespace the NodePort answers and the backend sees the outside
/// address (Local), every connection to the same backend (affinity). Applied again with
/// `externalTrafficPolicy: Cluster` the backend sees the host instead. The ClusterIP
/// (selector backends) answers a sandbox on a third network.
#[test]
fn k8s_nodeport_selector_traffic() {
    if no_root() {
        return;
    }
    let h = Host::new();
    h.ctl(&["network", "create", "a", "--subnet", "10.81.1.0/24"]);
    h.ctl(&["network", "create", "b", "--subnet", "10.81.2.0/24"]);
    h.ctl(&["network", "create", "c", "--subnet", "10.81.3.0/24"]);
    for (sb, net) in [("v1", "a"), ("v2", "b")] {
        h.ctl(&["sandbox", "create", sb, "--network", net, "--label", "app=vote"]);
        respond_peer(&h.sb(sb), 8080);
    }
    h.ctl(&["sandbox", "create", "cli", "--network", "c"]);
    let out = Outside::new(&h, 73);
    let before = datapath(&h);
    h.ctl(&["apply", "-f", &data("nodeport.yaml")]);
    let np = format!("{}:30080", out.host_ip);
    let seen = spread(&out.netns(), &np, 30);
    println!("NodePort, Local, from outside: {seen:?}");
    assert_eq!(seen.keys().collect::<Vec<_>>(), [&out.ip], "{seen:?}");
    assert_eq!(seen[&out.ip], 30);

    let svcs = services(&h);
    let cip = find(&svcs, "default", "vote")["kubernetes"]["cluster_ip"]
        .as_str()
        .expect("cluster_ip")
        .to_string();
    let seen = spread(&h.sb("cli"), &format!("{cip}:80"), 20);
    println!("ClusterIP {cip} (selector) from network c: {seen:?}");
    // Another network's client through the ClusterIP: it reaches a backend (affinity: one).
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!seen.contains_key("!err"), "{seen:?}");
    assert!(
        seen.contains_key(&h.ip("cli", "c")),
        "the client keeps its address: {seen:?}"
    );

    let text = std::fs::read_to_string(data("nodeport.yaml")).expect("nodeport.yaml");
    let cluster = text.replace("externalTrafficPolicy: Local", "externalTrafficPolicy: Cluster");
    assert_ne!(cluster, text);
    let (code, o, e) = apply_stdin(&h, &cluster);
    assert_eq!((code, o.as_str()), (0, "service/vote configured\n"), "{e}");
    let seen = spread(&out.netns(), &np, 30);
    println!("NodePort, Cluster, from outside: {seen:?}");
    let gw = ["10.81.1.1", "10.81.2.1"];
    assert!(
        seen.len() == 1 && seen.keys().all(|k| gw.contains(&k.as_str())),
        "Cluster must masquerade to the host's address on the backend's bridge: {seen:?}"
    );
    h.assert_consistent();
    h.ctl(&["delete", "-f", &data("nodeport.yaml")]);
    assert_eq!(tcp(Some(&out.netns()), &np, 300), None);
    let after = datapath(&h);
    assert!(!after.0.contains("svc/"), "{}", after.0);
    assert_eq!(after.1, before.1, "delete -f left an address or nf_call behind");
    h.assert_consistent();
}

/// headless.yaml (clusterIP None, selector app=db) makes no VIP and no datapath object:
/// clients reach the endpoints themselves. externalname.yaml is a CNAME (dig, when
/// installed). delete -f leaves nothing.
#[test]
fn k8s_headless_and_external_name_traffic() {
    if no_root() {
        return;
    }
    let h = Host::new();
    h.ctl(&["network", "create", "a", "--subnet", "10.82.1.0/24"]);
    h.ctl(&["sandbox", "create", "db1", "--network", "a", "--label", "app=db"]);
    respond(&h.sb("db1"), "db1", &[5432], &[]);
    h.ctl(&["sandbox", "create", "cli", "--network", "a"]);
    h.ctl(&["network", "create", "b", "--subnet", "10.82.2.0/24"]);
    h.ctl(&["sandbox", "create", "far", "--network", "b"]);
    let before = datapath(&h);
    h.ctl(&["apply", "-f", &data("headless.yaml")]);
    h.ctl(&["apply", "-f", &data("externalname.yaml")]);
    let db = find(&services(&h), "shop", "db").clone();
    assert_eq!(db["endpoint_mode"], "dnsrr");
    let v = h.client().get("/v1/services/shop/db").expect("inspect");
    let ep = v["live_backends"][0]["ip"]
        .as_str()
        .expect("a live backend")
        .to_string();
    assert_eq!(ep, h.ip("db1", "a"));
    assert_eq!(
        tcp(Some(&h.sb("cli")), &format!("{ep}:5432"), 1000).as_deref(),
        Some("db1")
    );
    let now = datapath(&h);
    assert!(!now.0.contains("svc/shop/db"), "{}", now.0);
    assert!(!nf_call(&h, "netd-a"), "headless needs no nf_call_iptables");
    if !dig_missing() {
        // Headless: the endpoints, with a host name each, from any network.
        let ep1 = h.ip("db1", "a");
        for who in ["cli", "far"] {
            assert_eq!(
                dig(&h, who, "db.shop.svc.cluster.local A").1,
                [format!("db.shop.svc.cluster.local. 600 IN A {ep1}")],
                "from {who}"
            );
            assert_eq!(
                dig(&h, who, "_postgres._tcp.db.shop.svc.cluster.local SRV").1,
                ["_postgres._tcp.db.shop.svc.cluster.local. 600 IN SRV 0 0 5432 db1.db.shop.svc.cluster.local."],
                "from {who}"
            );
        }
        let (st, ans) = dig(&h, "cli", "upstream.shop.svc.cluster.local CNAME");
        assert_eq!(st, "NOERROR", "{ans:?}");
        assert!(
            ans.iter().any(|l| l.ends_with("CNAME api.example.com.")),
            "{ans:?}"
        );
    }
    h.ctl(&["delete", "-f", &data("headless.yaml")]);
    h.ctl(&["delete", "-f", &data("externalname.yaml")]);
    assert_eq!(datapath(&h), before, "delete -f left something");
    h.assert_consistent();
}
