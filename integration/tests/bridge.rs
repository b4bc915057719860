//! Bridge networks end to end: reachability inside a network, isolation between
//! networks, ICC off, internal networks, IPv6 dual stack and anti-spoofing, all through
//! the real daemon and real packets.

use integration::harness::{
    ping_from, respond, respond_peer, tcp, udp_recorder, udp_send_from, Host, Outside,
};
use integration::skip::no_root;

#[test]
fn same_network_reaches_other_networks_do_not() {
    if no_root() {
        return;
    }
    let h = Host::new();
    h.ctl(&["network", "create", "a", "--subnet", "10.61.0.0/24"]);
    h.ctl(&["network", "create", "b", "--subnet", "10.62.0.0/24"]);
    for (s, n) in [("s1", "a"), ("s2", "a"), ("s3", "b")] {
        h.ctl(&["sandbox", "create", s, "--network", n]);
        respond(&h.sb(s), s, &[80], &[]);
    }
    let s2 = h.ip("s2", "a");
    let s3 = h.ip("s3", "b");
    assert!(h.ping("s1", &s2), "ICMP inside a network");
    assert_eq!(
        tcp(Some(&h.sb("s1")), &format!("{s2}:80"), 2000).as_deref(),
        Some("s2"),
        "TCP inside a network"
    );
    assert!(!h.ping("s1", &s3), "ICMP across networks must be dropped");
    assert_eq!(
        tcp(Some(&h.sb("s1")), &format!("{s3}:80"), 500),
        None,
        "TCP across networks must be dropped"
    );
    assert_eq!(tcp(Some(&h.sb("s3")), &format!("{s2}:80"), 500), None);
    // lo is up, eth0 is the first network, the default route goes via its gateway.
    let r = h.sh_in("s1", "ip route show default; ip -br link show lo");
    assert!(
        r.stdout.contains("default via 10.61.0.1 dev eth0"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("UNKNOWN") || r.stdout.contains("UP"),
        "{}",
        r.stdout
    );
    // The resolv.conf a sandbox gets exists and `ip netns`-style paths work.
    assert!(h.base.join("etc/s1/resolv.conf").exists());
}

#[test]
fn icc_off_and_internal_networks() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let out = Outside::new(&h, 63);
    respond(&out.netns(), "outside", &[80], &[]);
    respond_peer(&out.netns(), 81);
    h.ctl(&[
        "network",
        "create",
        "quiet",
        "--subnet",
        "10.64.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
    ]);
    h.ctl(&[
        "network",
        "create",
        "int",
        "--subnet",
        "10.65.0.0/24",
        "--internal",
    ]);
    h.ctl(&["network", "create", "open", "--subnet", "10.66.0.0/24"]);
    for (s, n) in [
        ("q1", "quiet"),
        ("q2", "quiet"),
        ("i1", "int"),
        ("i2", "int"),
        ("o1", "open"),
    ] {
        h.ctl(&["sandbox", "create", s, "--network", n]);
        respond(&h.sb(s), s, &[80], &[]);
    }
    // ICC off: no traffic between sandboxes of that network, the gateway still answers.
    assert!(!h.ping("q1", &h.ip("q2", "quiet")), "ICC off must block ICMP");
    assert_eq!(
        tcp(Some(&h.sb("q1")), &format!("{}:80", h.ip("q2", "quiet")), 500),
        None
    );
    assert!(
        h.ping("q1", "10.64.0.1"),
        "the gateway stays reachable with ICC off"
    );
    // Internal: members reach each other, nothing outside, and have no default route.
    assert_eq!(
        tcp(Some(&h.sb("i1")), &format!("{}:80", h.ip("i2", "int")), 2000).as_deref(),
        Some("i2")
    );
    assert_eq!(
        tcp(Some(&h.sb("i1")), &format!("{}:80", out.ip), 500),
        None,
        "internal reached outside"
    );
    assert!(!h.sh_in("i1", "ip route show default").stdout.contains("default"));
    assert_eq!(
        tcp(Some(&h.sb("o1")), &format!("{}:80", h.ip("i1", "int")), 500),
        None
    );
    // A normal network reaches the outside, masqueraded: the outside sees the host's
    // address, not the sandbox's.
    assert_eq!(
        tcp(Some(&h.sb("o1")), &format!("{}:81", out.ip), 2000).as_deref(),
        Some(out.host_ip.as_str()),
        "outbound traffic is masqueraded"
    );
    assert!(h.ping("o1", &out.ip), "a normal network pings the outside");
    assert!(!h.ping("i1", &out.ip), "an internal network pings the outside");
}

#[test]
fn ipv6_dual_stack() {
    if no_root() {
        return;
    }
    let h = Host::new();
    h.ctl(&[
        "network",
        "create",
        "v6",
        "--subnet",
        "10.67.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:67::/64",
    ]);
    h.ctl(&["sandbox", "create", "a", "--network", "v6"]);
    h.ctl(&[
        "sandbox",
        "create",
        "b",
        "--network",
        "v6",
        "--ip6",
        "fd00:67::99",
    ]);
    respond(&h.sb("b"), "b", &[80], &[]);
    let b6 = h.ip6("b", "v6");
    assert_eq!(b6, "fd00:67::99");
    assert!(h.ping("a", &b6), "ICMPv6 inside a dual-stack network");
    assert_eq!(
        tcp(Some(&h.sb("a")), &format!("[{b6}]:80"), 2000).as_deref(),
        Some("b")
    );
    assert_eq!(
        tcp(Some(&h.sb("a")), &format!("{}:80", h.ip("b", "v6")), 2000).as_deref(),
        Some("b")
    );
    assert!(h
        .sh_in("a", "ip -6 route show default")
        .stdout
        .contains("via fd00:67::1"));
}

#[test]
fn spoofed_source_ip_and_mac_are_dropped() {
    if no_root() {
        return;
    }
    let h = Host::new();
    h.ctl(&[
        "network",
        "create",
        "a",
        "--subnet",
        "10.68.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:68::/64",
    ]);
    h.ctl(&["sandbox", "create", "good", "--network", "a"]);
    h.ctl(&["sandbox", "create", "bad", "--network", "a"]);
    let (good, bad) = (h.ip("good", "a"), h.ip("bad", "a"));
    let (good6, bad6) = (h.ip6("good", "a"), h.ip6("bad", "a"));
    // A one-way check: what reaches `good`, whatever happens to replies.
    let seen = udp_recorder(&h.sb("good"), 9);
    let seen_from = |ip: &str| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|a| a.ip().to_canonical().to_string() == ip)
    };
    assert!(h.ping("bad", &good), "the real address works");
    udp_send_from(&h.sb("bad"), &format!("{bad}:0"), &format!("{good}:9"));
    assert!(seen_from(&bad), "datagram from the real IPv4 address");
    udp_send_from(&h.sb("bad"), &format!("[{bad6}]:0"), &format!("[{good6}]:9"));
    assert!(seen_from(&bad6), "datagram from the real IPv6 address");

    // Second addresses the sandbox does not own (nodad: usable at once).
    assert!(h
        .sh_in(
            "bad",
            "ip addr add 10.68.0.200/24 dev eth0 && ip addr add fd00:68::c8/64 dev eth0 nodad"
        )
        .ok());
    assert!(
        !ping_from(&h.sb("bad"), Some("10.68.0.200"), &good),
        "ping from a spoofed source IP got through"
    );
    udp_send_from(&h.sb("bad"), "10.68.0.200:0", &format!("{good}:9"));
    assert!(
        !seen_from("10.68.0.200"),
        "datagram from a spoofed IPv4 source arrived"
    );
    udp_send_from(&h.sb("bad"), "[fd00:68::c8]:0", &format!("[{good6}]:9"));
    assert!(
        !seen_from("fd00:68::c8"),
        "datagram from a spoofed IPv6 source arrived"
    );
    assert!(h.ping("bad", &good), "the real address still works");

    // Someone else's MAC address (an unused one), real IP: dropped on the way in, which
    // the recorder sees regardless of where replies would go.
    let before = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
    assert!(h.sh_in("bad", "ip link set eth0 address 02:42:0a:44:00:c8").ok());
    udp_send_from(&h.sb("bad"), &format!("{bad}:0"), &format!("{good}:9"));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let after = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
    assert_eq!(after, before, "datagram from a spoofed source MAC arrived");
    assert!(
        !h.ping("bad", &good),
        "ping from a spoofed source MAC got through"
    );
    // Its own MAC back: it works again.
    let mac = h.sandbox("bad")["endpoints"][0]["mac"]
        .as_str()
        .expect("mac")
        .to_string();
    assert!(h.sh_in("bad", &format!("ip link set eth0 address {mac}")).ok());
    assert!(h.ping("bad", &good), "the real MAC works again");
}
