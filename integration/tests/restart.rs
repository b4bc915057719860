//! Crash safety: `kill -9` of the daemon at random points of 200 operations (some while
//! a request is in flight), restart and reconcile each time; afterwards nothing leaked
//! (links, namespaces, nft elements, leases), no address is duplicated, and a TCP flow
//! opened before the first kill still carries data. Also: `nft flush ruleset` is undone.

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::harness::{echo, respond, roundtrip, tcp, Host, Outside};
use integration::skip::no_root;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn open_flow(h: &Host, from: &str, to: &str) -> TcpStream {
    let addr: std::net::SocketAddr = to.parse().expect("addr");
    let s = netd::kernel::probe::in_netns(Some(&h.sb(from)), move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .expect("open flow");
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    s
}

#[test]
fn kill9_during_200_operations_leaks_nothing_and_flows_survive() {
    if no_root() {
        return;
    }
    let mut h = Host::new();
    h.ctl(&["network", "create", "n1", "--subnet", "10.90.0.0/24"]);
    h.ctl(&["network", "create", "n2", "--subnet", "10.91.0.0/24"]);
    h.ctl(&["sandbox", "create", "f1", "--network", "n1"]);
    h.ctl(&["sandbox", "create", "f2", "--network", "n1"]);
    echo(&h.sb("f2"), 7);
    let mut flow = open_flow(&h, "f1", &format!("{}:7", h.ip("f2", "n1")));
    assert!(roundtrip(&mut flow, "before\n"));

    let mut rng = StdRng::seed_from_u64(0x6e657464);
    let mut kills = 0;
    let mut done = 0;
    let mut checks = 0;
    // Kills every 10-30 operations (~20), each while a request is in flight.
    let mut next_kill = rng.random_range(10..30);
    let ok = Arc::new(AtomicUsize::new(0));
    for _ in 0..200 {
        let c = h.client();
        let name = format!("c{}", rng.random_range(0..12));
        let net = ["n1", "n2", "n3"][rng.random_range(0..3)];
        let op = rng.random_range(0..7);
        // Some sandboxes publish a port, so the DNAT maps churn too.
        let ports: Vec<String> = if rng.random_bool(0.3) {
            vec![format!("{}:80", 8000 + rng.random_range(0..20))]
        } else {
            vec![]
        };
        let ok2 = ok.clone();
        let req = move || {
            let r = match op {
                0 | 1 => c
                    .post(
                        "/v1/sandboxes",
                        &json!({"name": name, "networks": [{"network": net}], "ports": ports}),
                    )
                    .is_ok(),
                2 => c
                    .post(&format!("/v1/networks/{net}/connect"), &json!({"sandbox": name}))
                    .is_ok(),
                3 => c
                    .post(
                        &format!("/v1/networks/{net}/disconnect"),
                        &json!({"sandbox": name}),
                    )
                    .is_ok(),
                4 => c.delete(&format!("/v1/sandboxes/{name}")).is_ok(),
                // A third network comes and goes (refused while in use).
                5 => c
                    .post(
                        "/v1/networks",
                        &json!({"name": "n3", "subnets": [{"subnet": "10.92.0.0/24"}]}),
                    )
                    .is_ok(),
                _ => c.delete("/v1/networks/n3").is_ok(),
            };
            if r {
                ok2.fetch_add(1, Ordering::Relaxed);
            }
        };
        next_kill -= 1;
        if next_kill == 0 {
            next_kill = rng.random_range(10..30);
            // Kill while this request is in flight, at a random moment of it.
            let t = std::thread::spawn(req);
            std::thread::sleep(Duration::from_micros(rng.random_range(0..6000)));
            h.kill9();
            let _ = t.join();
            kills += 1;
            h.start();
            // After every restart (reconcile included), not just at the end.
            h.assert_consistent();
            checks += 1;
        } else {
            req();
            if rng.random_ratio(1, 40) {
                h.restart();
                kills += 1;
            }
        }
        done += 1;
    }
    let ok = ok.load(Ordering::Relaxed);
    eprintln!("{done} operations, {ok} succeeded, {kills} kills, {checks} mid-run checks");
    assert!(
        ok >= 40,
        "only {ok} of {done} operations succeeded: the chaos did little"
    );
    h.restart();
    assert!(kills >= 10, "only {kills} kills");
    h.assert_consistent();
    assert!(
        roundtrip(&mut flow, "after\n"),
        "the TCP flow opened before the kills died"
    );
    // And the data path still works for sandboxes made during the chaos.
    for s in h
        .client()
        .get("/v1/sandboxes")
        .expect("list")
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(e) = s["endpoints"].as_array().and_then(|a| a.first()) {
            let name = s["name"].as_str().unwrap_or_default();
            let gw = e["gateway4"].as_str().unwrap_or_default();
            assert!(
                h.ping(name, gw),
                "{name} cannot reach its gateway {gw} after the restarts"
            );
        }
    }
}

#[test]
fn flushed_ruleset_is_restored_within_2s() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let out = Outside::new(&h, 92);
    h.ctl(&["network", "create", "n", "--subnet", "10.93.0.0/24"]);
    h.ctl(&["sandbox", "create", "s", "--network", "n", "-p", "8080:80"]);
    respond(&h.sb("s"), "s", &[80], &[]);
    let url = format!("{}:8080", out.host_ip);
    assert_eq!(tcp(Some(&out.netns()), &url, 2000).as_deref(), Some("s"));
    assert!(h.sh("nft add rule inet netd user counter comment keepme").ok());
    assert!(h.sh("nft flush ruleset").ok());
    let t0 = Instant::now();
    while !h
        .sh("nft list table inet netd && nft list table bridge netd")
        .ok()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "tables not restored within 2 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("restored after {:?}", t0.elapsed());
    assert_eq!(
        tcp(Some(&out.netns()), &url, 2000).as_deref(),
        Some("s"),
        "published port after restore"
    );
    assert!(h.sh("nft list chain inet netd user").ok(), "user chain recreated");
}
