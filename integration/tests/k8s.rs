//! `netctl apply -f` / `delete -f` against a real daemon, with the Kubernetes files of
//! `netd/tests/data/k8s/`: ClusterIP (with an EndpointSlice), NodePort, headless and
//! ExternalName services are created with their ClusterIPs and NodePorts, applying again
//! changes nothing, `delete -f` leaves nothing; bad files are refused in one line and
//! change nothing (store, links, routes, nft ruleset).

use std::io::Write;
use std::process::{Command, Stdio};

use integration::harness::{bin, Host};
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
    let before = state(&h);
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
