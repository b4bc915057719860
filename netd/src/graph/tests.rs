use super::*;
use serde_json::json;

fn topo() -> Topology {
    let network: Network = serde_json::from_value(json!({
        "name": "front", "id": "1", "driver": "bridge", "bridge": "netd-front",
        "subnets": [{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1"}],
        "ipv6": false, "internal": false, "icc": true, "masquerade": true, "mtu": 1500, "options": {}, "labels": {"netd.stack": "s"},
        "created": 0
    }))
    .expect("a network");
    let sandbox: Sandbox = serde_json::from_value(json!({
        "name": "web \"1\"", "id": "x", "mode": "bridge", "netns": "/run/netns/web",
        "endpoints": [{"network": "front", "ifname": "eth0", "host_ifname": "v1", "mac": "", "ipv4": "10.1.0.2/24"}],
        "ports": [{"host_ip": null, "host_port": 8080, "container_port": 80, "proto": "tcp"}],
        "publish_all": false, "expose": [], "labels": {"netd.stack": "s"}, "created": 0
    }))
    .expect("a sandbox");
    Topology {
        host: "h1".into(),
        networks: vec![network],
        sandboxes: vec![sandbox],
        services: Vec::new(),
        nodes: Vec::new(),
    }
}

#[test]
fn names_every_network_sandbox_address_and_port() {
    let d = dot(&topo());
    for want in [
        "\"net:front\"",
        "10.1.0.0/24 gw 10.1.0.1",
        "bridge netd-front",
        "\"sb:web \\\"1\\\"\"",
        "eth0 10.1.0.2",
        "publish 0.0.0.0:8080->80/tcp",
        "\"net:front\" -> \"sb:web \\\"1\\\"\"",
    ] {
        assert!(d.contains(want), "{want} not in\n{d}");
    }
    assert!(d.starts_with("digraph netd {") && d.trim_end().ends_with('}'));
}

#[test]
fn only_stack_keeps_the_stacks_objects() {
    let mut t = topo();
    let mut other = t.networks[0].clone();
    other.name = "elsewhere".into();
    other.labels.clear();
    t.networks.push(other);
    let t = t.only_stack("s");
    assert_eq!(t.networks.len(), 1);
    assert_eq!(t.sandboxes.len(), 1);
    assert!(!dot(&t).contains("elsewhere"));
}

#[test]
fn overlay_peers_are_the_other_nodes_on_the_networks_shown() {
    let mut t = topo();
    t.networks[0].driver = "overlay".into();
    let node = |name: &str, local: bool, nets: &[&str]| NodeView {
        name: name.into(),
        addr: "192.168.60.3".parse().unwrap(),
        data_port: 4789,
        state: "ready".into(),
        endpoints: nets.len(),
        networks: nets.iter().map(|n| n.to_string()).collect(),
        local,
    };
    t.nodes = vec![
        node("h1", true, &["front"]),
        node("h2", false, &["front"]),
        node("h3", false, &["elsewhere"]),
    ];
    let d = dot(&t);
    assert!(d.contains("\"peer:h2\" [shape=house"), "{d}");
    assert!(d.contains("VTEP 192.168.60.3:4789"), "{d}");
    assert!(d.contains("\"net:front\" -> \"peer:h2\" [style=dotted"), "{d}");
    assert!(!d.contains("\"peer:h1\""), "this node is the picture's host: {d}");
    assert!(!d.contains("-> \"peer:h3\""), "h3 has nothing on front: {d}");
    // A stack's picture keeps the peers on its networks only.
    let s = t.only_stack("s");
    assert_eq!(
        s.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["h1", "h2"]
    );
}
