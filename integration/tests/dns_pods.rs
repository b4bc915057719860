//! CNI pods answer DNS under their pod name (CNI_ARGS `K8S_POD_NAME`, which netd-cni puts
//! on the sandbox as a label) rather than only as `cni-<hash>`: a netd sandbox on the
//! same network digs the pod's name and gets its address, and the reverse lookup gives
//! the pod name first.

mod cni_support;
mod dns_support;

use cni_support::{Mode, Netns, Node};
use integration::skip::no_root;
use serde_json::json;

#[test]
fn ndds_cni_pod_resolves_by_its_pod_name() {
    if no_root() {
        return;
    }
    if dns_support::dig_missing() {
        return;
    }
    let node = Node::new(Mode::Delegating);
    let conf = node.conf("ndds-pods", "10.69.0.0/24", json!({}));
    let ns = Netns::new();
    // exec_plugin passes CNI_ARGS "IgnoreUnknown=1;K8S_POD_NAME=test".
    let r = node.add("ndds-pod-1", &ns, &conf);
    let ip = r["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("pod address")
        .to_string();
    let h = &node.host;
    h.ctl(&["sandbox", "create", "asker", "--network", "ndds-pods"]);
    let dig = |q: &str| {
        h.sh_in("asker", &format!("dig @127.0.0.11 +time=3 +tries=1 +short {q}"))
            .stdout
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(dig("test A"), [ip.as_str()]);
    assert_eq!(dig("TEST. A"), [ip.as_str()]);
    let ptr = dig(&format!("-x {ip}"));
    assert_eq!(ptr.first().map(String::as_str), Some("test."), "{ptr:?}");
    assert!(ptr.iter().any(|n| n.starts_with("cni-")), "{ptr:?}");
    // DEL takes the name away.
    node.del("ndds-pod-1", &ns.path(), &conf);
    let o = h.sh_in("asker", "dig @127.0.0.11 +time=3 +tries=1 test A");
    assert!(o.stdout.contains("status: NXDOMAIN"), "{}", o.stdout);
}
