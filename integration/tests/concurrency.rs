//! Concurrent API requests: 60 attaches at once on one network get 60 distinct addresses,
//! and 60 concurrent detaches leave no lease behind.

use std::collections::BTreeSet;

use integration::harness::Host;
use integration::skip::no_root;
use serde_json::json;

#[test]
fn concurrent_attach_detach_no_duplicates_no_leaks() {
    if no_root() {
        return;
    }
    let h = Host::new();
    h.ctl(&["network", "create", "n", "--subnet", "10.95.0.0/24"]);
    for i in 0..60 {
        h.client()
            .post("/v1/sandboxes", &json!({"name": format!("s{i}")}))
            .expect("create");
    }
    let threads: Vec<_> = (0..60)
        .map(|i| {
            let c = h.client();
            std::thread::spawn(move || {
                c.post("/v1/networks/n/connect", &json!({"sandbox": format!("s{i}")}))
                    .map(|ep| ep["ipv4"].as_str().unwrap_or_default().to_string())
            })
        })
        .collect();
    let ips: Vec<String> = threads
        .into_iter()
        .map(|t| t.join().expect("join").expect("connect"))
        .collect();
    let unique: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), 60, "duplicate addresses: {ips:?}");
    for i in [0, 30, 59] {
        assert!(h.ping(&format!("s{i}"), "10.95.0.1"));
    }
    let threads: Vec<_> = (0..60)
        .map(|i| {
            let c = h.client();
            std::thread::spawn(move || {
                c.post("/v1/networks/n/disconnect", &json!({"sandbox": format!("s{i}")}))
            })
        })
        .collect();
    for t in threads {
        t.join().expect("join").expect("disconnect");
    }
    let pools = h.client().get("/v1/pools").expect("pools");
    let leases: usize = pools
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["pool"]["leases"].as_object().map(|m| m.len()).unwrap_or(0))
        .sum();
    assert_eq!(leases, 0, "leases left: {pools}");
}
