//! `netd daemon --metrics-addr`: scraped with a real HTTP client (curl, inside the
//! daemon's namespace), parsed as Prometheus text (`prometheus-parse`), and its counters
//! and gauges follow operations: objects by kind, operation latency by operation and
//! result, published ports, service backends, DNS queries and NXDOMAIN answers. A
//! non-loopback address without `--metrics-public` is refused in one line.

use std::collections::BTreeMap;

use integration::harness::{bin, Host};
use integration::skip::{no_root, skip};

const ADDR: &str = "127.0.0.1:9490";

/// Every sample as `name{k="v",...}` -> value (labels sorted).
fn scrape(h: &Host) -> BTreeMap<String, f64> {
    let o = h.sh(&format!("curl -sS --fail http://{ADDR}/metrics"));
    assert!(o.ok(), "scrape: {}", o.stderr);
    let lines = o.stdout.lines().map(|l| Ok(l.to_string()));
    let s = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let mut out = BTreeMap::new();
    for x in s.samples {
        let mut labels: Vec<String> = x.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        labels.sort();
        let key = if labels.is_empty() {
            x.metric.clone()
        } else {
            format!("{}{{{}}}", x.metric, labels.join(","))
        };
        let v = match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, v);
    }
    out
}

fn get(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(0.0)
}

#[test]
fn counters_move_with_operations() {
    if no_root() {
        return;
    }
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        skip("metrics", "no curl (scripts/install-deps.sh installs it)");
        return;
    }
    let mut h = Host::bare();
    h.daemon_args = vec!["--metrics-addr".into(), ADDR.into()];
    h.start();
    let m0 = scrape(&h);
    assert_eq!(get(&m0, "netd_objects{kind=\"network\"}"), 0.0, "{m0:#?}");

    h.ctl(&["network", "create", "front", "--subnet", "10.83.0.0/24"]);
    h.ctl(&["sandbox", "create", "a", "--network", "front", "-p", "8080:80"]);
    h.ctl(&["sandbox", "create", "b", "--network", "front"]);
    h.ctl(&[
        "service",
        "create",
        "web",
        "--network",
        "front",
        "--backend",
        "a",
        "--backend",
        "b",
        "--port",
        "80",
    ]);
    let bad = h.netctl(&["network", "create", "front"]);
    assert!(!bad.ok(), "a second network 'front' was accepted");
    // DNS: a name that resolves and one that does not.
    let dig = h.sh_in("a", "dig +short +time=2 +tries=1 @127.0.0.11 b");
    assert!(
        dig.ok() && dig.stdout.trim().starts_with("10.83.0."),
        "dig b: {}",
        dig.stdout
    );
    h.sh_in("a", "dig +time=2 +tries=1 @127.0.0.11 nosuch.svc.cluster.local");

    let m1 = scrape(&h);
    println!("metrics after the operations: {m1:#?}");
    assert_eq!(get(&m1, "netd_objects{kind=\"network\"}"), 1.0);
    assert_eq!(get(&m1, "netd_objects{kind=\"sandbox\"}"), 2.0);
    assert_eq!(get(&m1, "netd_objects{kind=\"service\"}"), 1.0);
    assert_eq!(get(&m1, "netd_published_ports"), 1.0);
    assert_eq!(
        get(
            &m1,
            "netd_service_backends{namespace=\"default\",service=\"web\"}"
        ),
        2.0
    );
    let ok = "netd_operation_duration_seconds_count{operation=\"sandbox_create\",result=\"ok\"}";
    assert_eq!(get(&m1, ok), 2.0, "{ok}");
    let err = "netd_operation_duration_seconds_count{operation=\"network_create\",result=\"error\"}";
    assert_eq!(get(&m1, err), 1.0, "{err}");
    assert!(get(&m1, "netd_dns_queries_total") >= 2.0);
    assert!(get(&m1, "netd_dns_nxdomain_total") >= 1.0);
    assert!(get(&m1, "netd_events_total{type=\"sandbox\"}") >= 4.0);

    h.ctl(&["service", "rm", "web"]);
    h.ctl(&["sandbox", "rm", "a"]);
    let m2 = scrape(&h);
    assert_eq!(get(&m2, "netd_objects{kind=\"sandbox\"}"), 1.0);
    assert_eq!(get(&m2, "netd_published_ports"), 0.0);
    assert!(
        !m2.keys().any(|k| k.starts_with("netd_service_backends")),
        "{m2:#?}"
    );
    assert_eq!(
        get(
            &m2,
            "netd_operation_duration_seconds_count{operation=\"sandbox_rm\",result=\"ok\"}"
        ),
        1.0
    );
}

#[test]
fn a_public_metrics_address_needs_metrics_public() {
    if no_root() {
        return;
    }
    let h = Host::bare();
    let o = h.sh(&format!(
        "timeout 10 {} daemon {} --metrics-addr 0.0.0.0:9490",
        bin("netd").display(),
        h.dir_args().join(" ")
    ));
    assert!(!o.ok(), "netd served metrics on 0.0.0.0 without --metrics-public");
    assert_eq!(o.stderr.trim().lines().count(), 1, "{}", o.stderr);
    assert!(o.stderr.contains("--metrics-public"), "{}", o.stderr);
    assert!(
        !h.base.join("state").exists(),
        "the refused daemon made its state dir"
    );
}
