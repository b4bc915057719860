//! Published ports end to end: from an outside namespace, from the host itself, from the
//! same sandbox (hairpin) and with host-IP binding; `-P` from the ephemeral range.

use integration::harness::{respond, tcp, udp, Host, Outside};
use integration::skip::no_root;

#[test]
fn published_tcp_udp_ephemeral_hairpin_and_binding() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let out = Outside::new(&h, 71);
    let hip = out.host_ip.clone();
    h.ctl(&["network", "create", "web", "--subnet", "10.72.0.0/24"]);
    h.ctl(&[
        "sandbox",
        "create",
        "w1",
        "--network",
        "web",
        "-p",
        "8080:80",
        "-p",
        "5353:53/udp",
    ]);
    h.ctl(&[
        "sandbox",
        "create",
        "w2",
        "--network",
        "web",
        "-P",
        "--expose",
        "80",
    ]);
    h.ctl(&[
        "sandbox",
        "create",
        "w3",
        "--network",
        "web",
        "-p",
        "127.0.0.1:8081:80",
    ]);
    for s in ["w1", "w2", "w3"] {
        respond(&h.sb(s), s, &[80], &[53]);
    }
    let o = Some(out.netns());
    let o = o.as_deref();
    // From outside, at the host's address.
    assert_eq!(
        tcp(o, &format!("{hip}:8080"), 2000).as_deref(),
        Some("w1"),
        "published TCP from outside"
    );
    assert_eq!(
        udp(o, &format!("{hip}:5353"), 2000).as_deref(),
        Some("w1"),
        "published UDP from outside"
    );
    // -P: a port from the ephemeral range, and it works.
    let w2 = h.sandbox("w2");
    let p = w2["ports"][0]["host_port"]
        .as_u64()
        .expect("w2 has a published port");
    assert!((49153..=65535).contains(&p), "ephemeral port {p}");
    assert_eq!(
        tcp(o, &format!("{hip}:{p}"), 2000).as_deref(),
        Some("w2"),
        "-P port from outside"
    );
    // Host-IP binding: 127.0.0.1 only — the host reaches it, outside does not.
    assert_eq!(
        tcp(o, &format!("{hip}:8081"), 500),
        None,
        "127.0.0.1-bound port reachable from outside"
    );
    let hn = Some(h.netns());
    let hn = hn.as_deref();
    assert_eq!(
        tcp(hn, "127.0.0.1:8081", 2000).as_deref(),
        Some("w3"),
        "127.0.0.1-bound port from the host"
    );
    assert_eq!(
        tcp(hn, &format!("{hip}:8081"), 500),
        None,
        "127.0.0.1-bound port at another host address"
    );
    // From the host itself, at localhost and at its own address, TCP and UDP.
    assert_eq!(tcp(hn, "127.0.0.1:8080", 2000).as_deref(), Some("w1"));
    assert_eq!(tcp(hn, &format!("{hip}:8080"), 2000).as_deref(), Some("w1"));
    assert_eq!(udp(hn, &format!("{hip}:5353"), 2000).as_deref(), Some("w1"));
    assert_eq!(tcp(hn, &format!("{hip}:{p}"), 2000).as_deref(), Some("w2"));
    // Hairpin: a sandbox reaches its own published port through a host address, and
    // so does its neighbour.
    assert_eq!(
        tcp(Some(&h.sb("w1")), &format!("{hip}:8080"), 2000).as_deref(),
        Some("w1"),
        "hairpin to itself"
    );
    assert_eq!(
        tcp(Some(&h.sb("w1")), "10.72.0.1:8080", 2000).as_deref(),
        Some("w1"),
        "hairpin to itself via its gateway address"
    );
    assert_eq!(
        udp(Some(&h.sb("w1")), &format!("{hip}:5353"), 2000).as_deref(),
        Some("w1"),
        "UDP hairpin to itself"
    );
    assert_eq!(
        tcp(Some(&h.sb("w2")), &format!("{hip}:8080"), 2000).as_deref(),
        Some("w1"),
        "hairpin neighbour"
    );
    // Removing the sandbox unpublishes; the port is free for another sandbox.
    h.ctl(&["sandbox", "rm", "w1"]);
    assert_eq!(tcp(o, &format!("{hip}:8080"), 500), None);
    assert_eq!(udp(o, &format!("{hip}:5353"), 500), None);
    h.ctl(&["sandbox", "create", "w4", "--network", "web", "-p", "8080:80"]);
    respond(&h.sb("w4"), "w4", &[80], &[]);
    assert_eq!(tcp(o, &format!("{hip}:8080"), 2000).as_deref(), Some("w4"));
    h.assert_consistent();
}

#[test]
fn network_host_binding_option() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let a = Outside::new(&h, 73);
    let b = Outside::new(&h, 74);
    h.ctl(&[
        "network",
        "create",
        "bound",
        "--subnet",
        "10.75.0.0/24",
        "-o",
        &format!("com.docker.network.bridge.host_binding_ipv4={}", a.host_ip),
    ]);
    h.ctl(&["sandbox", "create", "s", "--network", "bound", "-p", "8090:80"]);
    respond(&h.sb("s"), "s", &[80], &[]);
    assert_eq!(
        h.sandbox("s")["ports"][0]["host_ip"].as_str(),
        Some(a.host_ip.as_str())
    );
    assert_eq!(
        tcp(Some(&a.netns()), &format!("{}:8090", a.host_ip), 2000).as_deref(),
        Some("s")
    );
    assert_eq!(
        tcp(Some(&b.netns()), &format!("{}:8090", b.host_ip), 500),
        None,
        "bound to the other address"
    );
    // The host itself: at the bound address yes, at the other one no.
    let hn = Some(h.netns());
    assert_eq!(
        tcp(hn.as_deref(), &format!("{}:8090", a.host_ip), 2000).as_deref(),
        Some("s")
    );
    assert_eq!(tcp(hn.as_deref(), &format!("{}:8090", b.host_ip), 500), None);
    // An explicit host IP in -p wins over the network's default.
    h.ctl(&[
        "sandbox",
        "create",
        "t",
        "--network",
        "bound",
        "-p",
        &format!("{}:8091:80", b.host_ip),
    ]);
    respond(&h.sb("t"), "t", &[80], &[]);
    assert_eq!(
        tcp(Some(&b.netns()), &format!("{}:8091", b.host_ip), 2000).as_deref(),
        Some("t")
    );
    assert_eq!(tcp(Some(&a.netns()), &format!("{}:8091", a.host_ip), 500), None);
}
