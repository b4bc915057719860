//! Crash safety: `kill -9` of the daemon at random points of 200 operations (some while
//! a request is in flight), restart and reconcile each time; afterwards nothing leaked
//! (links, namespaces, nft elements, leases), no address is duplicated, and a TCP flow
//! opened before the first kill still carries data. Also: `nft flush ruleset` is undone.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use integration::harness::{echo, respond, skip, tcp, Host, Outside};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn open_flow(h: &Host, from: &str, to: &str) -> TcpStream {
    let addr: std::net::SocketAddr = to.parse().expect("addr");
    let s = netd::kernel::probe::in_netns(Some(&h.sb(from)), move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .expect("open flow");
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    s
}

fn roundtrip(s: &mut TcpStream, msg: &str) -> bool {
    if s.write_all(msg.as_bytes()).is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).is_ok() && buf == msg.as_bytes()
}

/// Asserts that kernel and store agree and nothing leaked.
fn check_consistent(h: &Host) {
    let c = h.client();
    let sandboxes = c.get("/v1/sandboxes").expect("sandboxes");
    let networks = c.get("/v1/networks").expect("networks");
    let mut want_links = BTreeSet::new();
    let mut ips = BTreeMap::new();
    for n in networks.as_array().into_iter().flatten() {
        want_links.insert(n["bridge"].as_str().unwrap_or_default().to_string());
    }
    for s in sandboxes.as_array().into_iter().flatten() {
        for e in s["endpoints"].as_array().into_iter().flatten() {
            want_links.insert(e["host_ifname"].as_str().unwrap_or_default().to_string());
            for k in ["ipv4", "ipv6"] {
                if let Some(ip) = e[k].as_str() {
                    let prev = ips.insert(ip.to_string(), format!("{}/{}", s["name"], e["network"]));
                    assert!(
                        prev.is_none(),
                        "duplicate address {ip}: {prev:?} and {}",
                        s["name"]
                    );
                }
            }
        }
    }
    // Links: every netd-marked link is known, every known link exists.
    let links: Value = serde_json::from_str(&h.sh("ip -j link show").stdout).expect("ip -j link");
    let have: BTreeSet<String> = links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["ifalias"].as_str().is_some_and(|a| a.starts_with("netd:")))
        .map(|l| l["ifname"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(have, want_links, "netd links in the kernel vs the store");
    // Namespaces: exactly the sandboxes'.
    let mut files: Vec<String> = std::fs::read_dir(h.netns_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut names: Vec<String> = sandboxes
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    assert_eq!(files, names, "netns files vs sandboxes");
    // nft: the endpoint port set holds exactly the endpoints' veths.
    let set: Value = serde_json::from_str(&h.sh("nft -j list set bridge netd ports").stdout).expect("nft -j");
    let elems: BTreeSet<String> = set["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["set"]["elem"].as_array().cloned())
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    let ports: BTreeSet<String> = want_links
        .iter()
        .filter(|l| !l.starts_with("netd-"))
        .cloned()
        .collect();
    assert_eq!(elems, ports, "nft endpoint set vs endpoints");
    // Leases: exactly the endpoints' addresses.
    let pools = c.get("/v1/pools").expect("pools");
    let mut leased = BTreeSet::new();
    for p in pools.as_array().into_iter().flatten() {
        let prefix = p["pool"]["subnet"]
            .as_str()
            .and_then(|s| s.split('/').nth(1))
            .unwrap_or("0")
            .to_string();
        for (ip, _) in p["pool"]["leases"].as_object().into_iter().flatten() {
            leased.insert(format!("{ip}/{prefix}"));
        }
    }
    let addrs: BTreeSet<String> = ips.keys().cloned().collect();
    assert_eq!(leased, addrs, "leases vs endpoint addresses");
}

#[test]
fn kill9_during_200_operations_leaks_nothing_and_flows_survive() {
    if skip() {
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
    for i in 0..200 {
        let c = h.client();
        let name = format!("c{}", rng.random_range(0..12));
        let net = if rng.random_bool(0.5) { "n1" } else { "n2" };
        let op = rng.random_range(0..4);
        let req = move || -> bool {
            match op {
                0 => c
                    .post(
                        "/v1/sandboxes",
                        &json!({"name": name, "networks": [{"network": net}]}),
                    )
                    .is_ok(),
                1 => c
                    .post(&format!("/v1/networks/{net}/connect"), &json!({"sandbox": name}))
                    .is_ok(),
                2 => c
                    .post(
                        &format!("/v1/networks/{net}/disconnect"),
                        &json!({"sandbox": name}),
                    )
                    .is_ok(),
                _ => c.delete(&format!("/v1/sandboxes/{name}")).is_ok(),
            }
        };
        if i % 20 == 19 {
            // Kill while this request is in flight, at a random moment of it.
            let t = std::thread::spawn(req);
            std::thread::sleep(Duration::from_micros(rng.random_range(0..4000)));
            h.kill9();
            let _ = t.join();
            kills += 1;
            h.start();
        } else {
            let _ = req();
            if rng.random_ratio(1, 40) {
                h.restart();
                kills += 1;
            }
        }
    }
    h.restart();
    assert!(kills >= 10, "only {kills} kills");
    check_consistent(&h);
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
    if skip() {
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
