//! The embedded DNS server, seen from inside real sandboxes with dig (Debian's
//! bind9-dnsutils) and getent: every record kind, per-network scoping, aliases added and
//! removed by connect/disconnect, IPv6, PTR, SRV, Kubernetes names and ExternalName,
//! forwarding to a fake upstream (dnsmasq in a namespace of our own) and SERVFAIL when
//! it is down, names after a restart, and bad packets that do not stop the server.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

mod dns_support;

use dns_support::{dig, dnsmasq, no_dig};
use integration::harness::{Host, Outside};

/// The data fields of the answers (`dig +short`).
fn short(h: &Host, sandbox: &str, args: &str) -> Vec<String> {
    let (status, ans) = dig(h, sandbox, args);
    assert_eq!(status, "NOERROR", "dig {args} from {sandbox}: {ans:?}");
    let mut v: Vec<String> = ans
        .iter()
        .map(|l| l.split(' ').skip(4).collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

fn status(h: &Host, sandbox: &str, args: &str) -> String {
    dig(h, sandbox, args).0
}

/// `getent ahostsv4 NAME` (first line) in `sandbox` with the resolv.conf netd wrote bind-mounted over
/// /etc/resolv.conf in a private mount namespace (what `ip netns exec` does).
fn getent(h: &Host, sandbox: &str, name: &str) -> String {
    let rc = h.base.join("etc").join(sandbox).join("resolv.conf");
    let o = h.sh_in(
        sandbox,
        &format!(
            "unshare -m bash -c 'mount --bind {} /etc/resolv.conf && getent ahostsv4 {name} | head -1'",
            rc.display()
        ),
    );
    o.stdout.trim().to_string()
}

#[test]
fn names_scoping_aliases_srv_ptr_ipv6() {
    if no_dig() {
        return;
    }
    let h = Host::new();
    h.ctl(&[
        "network",
        "create",
        "front",
        "--ipv6",
        "--subnet",
        "10.61.0.0/24",
        "--subnet",
        "fd00:61::/64",
    ]);
    h.ctl(&["network", "create", "back", "--subnet", "10.62.0.0/24"]);
    h.ctl(&[
        "sandbox",
        "create",
        "web",
        "--network",
        "front",
        "--alias",
        "www",
        "--expose",
        "80",
    ]);
    h.ctl(&[
        "sandbox",
        "create",
        "api",
        "--network",
        "front",
        "--network",
        "back",
    ]);
    h.ctl(&["sandbox", "create", "db", "--network", "back"]);
    let web4 = h.ip("web", "front");
    let web6 = h.ip6("web", "front");
    let db4 = h.ip("db", "back");
    let api_back = h.ip("api", "back");
    let api_front = h.ip("api", "front");

    // resolv.conf points at the embedded server.
    let rc = std::fs::read_to_string(h.base.join("etc/api/resolv.conf")).expect("resolv.conf");
    assert!(
        rc.contains("nameserver 127.0.0.11") && rc.contains("options ndots:0"),
        "{rc}"
    );

    // A, alias, AAAA, any case; each peer's address on the shared network.
    assert_eq!(short(&h, "api", "web A"), one(&web4));
    assert_eq!(short(&h, "api", "WWW A"), one(&web4));
    assert_eq!(short(&h, "api", "web AAAA"), one(&web6));
    assert_eq!(short(&h, "db", "api A"), one(&api_back));
    assert_eq!(short(&h, "web", "api A"), one(&api_front));
    // Over TCP as well.
    assert_eq!(short(&h, "api", "+tcp db A"), one(&db4));
    // Scoping: web and db share no network.
    assert_eq!(status(&h, "web", "db A"), "NXDOMAIN");
    assert_eq!(status(&h, "db", "www A"), "NXDOMAIN");
    // NODATA: db exists, has no IPv6.
    let (st, ans) = dig(&h, "api", "db AAAA");
    assert_eq!((st.as_str(), ans.len()), ("NOERROR", 0));
    // SRV for the exposed port, PTR for v4 and v6.
    assert_eq!(short(&h, "api", "_80._tcp.web SRV"), ["0 0 80 web."]);
    assert_eq!(short(&h, "api", &format!("-x {web4}")), ["web."]);
    assert_eq!(short(&h, "api", &format!("-x {web6}")), ["web."]);
    assert_eq!(status(&h, "db", &format!("-x {web4}")), "NXDOMAIN");
    // A program in the sandbox can still serve port 53 on every address (netd's sockets
    // sit on ephemeral ports behind a DNAT of 127.0.0.11:53), and names keep answering.
    let own = netd::kernel::probe::bind_responder(Some(&h.sb("db")), vec![53], vec![53]);
    assert!(own.is_ok(), "bind [::]:53 in a sandbox: {own:?}");
    assert_eq!(short(&h, "db", "api A"), one(&api_back));
    assert_eq!(short(&h, "db", "+tcp api A"), one(&api_back));
    // The system resolver (glibc via resolv.conf) finds them too.
    assert!(getent(&h, "api", "www").starts_with(&web4), "getent www");
    assert_eq!(getent(&h, "web", "db"), "");

    // netctl dns ls shows what a sandbox sees, and only that.
    let ls = h.ctl(&["dns", "ls", "db", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ls).expect("json");
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"api") && !names.contains(&"web"), "{ls}");
    let o = h.netctl(&["dns", "ls", "nosuch"]);
    assert!(!o.ok() && o.stderr.contains("no such sandbox"), "{}", o.stderr);

    // Alias added by connect answers as soon as connect returns, and goes with disconnect.
    h.ctl(&["network", "connect", "front", "db", "--alias", "database"]);
    let db_front = h.ip("db", "front");
    assert_eq!(short(&h, "web", "database A"), one(&db_front));
    assert_eq!(short(&h, "web", "db A"), [db_front]);
    h.ctl(&["network", "disconnect", "front", "db"]);
    assert_eq!(status(&h, "web", "database A"), "NXDOMAIN");
    assert_eq!(status(&h, "web", "db A"), "NXDOMAIN");
    // Removal: gone before rm returns.
    h.ctl(&["sandbox", "rm", "web"]);
    assert_eq!(status(&h, "api", "web A"), "NXDOMAIN");
    assert_eq!(status(&h, "api", "www AAAA"), "NXDOMAIN");
}

#[test]
fn round_robin_and_tcp_fallback_for_big_answers() {
    if no_dig() {
        return;
    }
    let h = Host::new();
    h.ctl(&["network", "create", "rr", "--subnet", "10.63.0.0/24"]);
    h.ctl(&["sandbox", "create", "client", "--network", "rr"]);
    for i in 0..40 {
        h.ctl(&[
            "sandbox",
            "create",
            &format!("r{i}"),
            "--network",
            "rr",
            "--alias",
            "pool",
        ]);
    }
    // 40 A records exceed 512 bytes: plain UDP is truncated (TC), dig retries over TCP.
    let o = h.sh_in(
        "client",
        "dig @127.0.0.11 +time=3 +tries=1 +noedns +ignore pool A",
    );
    assert!(
        o.stdout.contains(" tc "),
        "expected TC over plain UDP: {}",
        o.stdout
    );
    let all = short(&h, "client", "+noedns pool A");
    assert_eq!(all.len(), 40);
    // With EDNS (dig's default 1232) they fit; the order changes between answers.
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let (_, ans) = dig(&h, "client", "pool A");
        assert_eq!(ans.len(), 40);
        firsts.insert(ans[0].clone());
    }
    assert!(firsts.len() > 1, "round robin: always {firsts:?}");
}

#[test]
fn forwarding_cache_servfail_kubernetes_names_and_restart() {
    if no_dig() {
        return;
    }
    let mut h = Host::bare();
    let up = Outside::new(&h, 64);
    let cfg = h.base.join("netd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[dns]\nupstreams = [\"{}\"]\ntimeout_ms = 300\nattempts = 2\nttl = 30\n\
             [[dns.external_names]]\nnamespace = \"shop\"\nname = \"mail\"\ntarget = \"smtp.example.test\"\n",
            up.ip
        ),
    )
    .expect("write config");
    h.daemon_args = vec!["--config".into(), cfg.display().to_string()];
    h.start();
    let Some(fake) = dnsmasq(&up, &["--address=/other.test/192.0.2.8", "--local-ttl=60"]) else {
        return;
    };
    h.ctl(&["network", "create", "k", "--subnet", "10.64.1.0/24"]);
    h.ctl(&[
        "sandbox",
        "create",
        "cart",
        "--network",
        "k",
        "--label",
        "netd.namespace=shop",
        "--expose",
        "8080",
    ]);
    h.ctl(&[
        "sandbox",
        "create",
        "ui",
        "--network",
        "k",
        "--label",
        "netd.namespace=shop",
    ]);
    let cart = h.ip("cart", "k");

    // Kubernetes-style names, search domains, ExternalName as CNAME chased upstream.
    let rc = std::fs::read_to_string(h.base.join("etc/ui/resolv.conf")).expect("resolv.conf");
    assert!(
        rc.contains("search shop.svc.cluster.local svc.cluster.local cluster.local"),
        "{rc}"
    );
    assert_eq!(short(&h, "ui", "cart.shop.svc.cluster.local A"), one(&cart));
    // TTL from the config (ttl = 30): "name TTL IN A addr".
    let (_, ans) = dig(&h, "ui", "cart A");
    assert_eq!(ans[0].split(' ').nth(1), Some("30"), "{ans:?}");
    assert_eq!(status(&h, "ui", "nope.shop.svc.cluster.local A"), "NXDOMAIN");
    let (st, ans) = dig(&h, "ui", "mail.shop.svc.cluster.local A");
    assert_eq!(st, "NOERROR");
    assert!(
        ans.iter().any(|l| l.contains("CNAME smtp.example.test.")),
        "{ans:?}"
    );
    assert!(ans.iter().any(|l| l.ends_with("A 192.0.2.7")), "{ans:?}");
    assert!(getent(&h, "ui", "cart.shop").starts_with(&cart));

    // Forwarding: answered by the fake upstream, TTL from netd's cache counts down.
    assert_eq!(short(&h, "ui", "www.example.test A"), ["192.0.2.7"]);
    assert_eq!(short(&h, "ui", "+tcp x.other.test A"), ["192.0.2.8"]);

    // Upstream down: a cached name still answers, a new one gets SERVFAIL within the
    // timeout (2 attempts x 300 ms), not a hang.
    drop(fake);
    assert_eq!(short(&h, "ui", "www.example.test A"), ["192.0.2.7"]);
    let t0 = Instant::now();
    assert_eq!(status(&h, "ui", "new.example.test A"), "SERVFAIL");
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(1500), "SERVFAIL after {took:?}");

    // Restart: names answer again after reconcile.
    h.restart();
    assert_eq!(short(&h, "ui", "cart A"), one(&cart));
    assert_eq!(
        short(&h, "cart", "ui.shop.svc.cluster.local A"),
        [h.ip("ui", "k")]
    );
    assert_eq!(short(&h, "ui", "_8080._tcp.cart SRV"), ["0 0 8080 cart."]);
}

#[test]
fn bad_packets_get_an_error_or_nothing_and_the_server_keeps_serving() {
    if no_dig() {
        return;
    }
    let h = Host::new();
    h.ctl(&["network", "create", "f", "--subnet", "10.65.0.0/24"]);
    h.ctl(&["sandbox", "create", "a", "--network", "f"]);
    h.ctl(&["sandbox", "create", "b", "--network", "f"]);
    let cases: Vec<(&str, Vec<u8>, Option<u8>)> = vec![
        ("truncated header", vec![0x12, 0x34, 0x01], None),
        (
            "response bit set",
            vec![0x12, 0x34, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            None,
        ),
        (
            "question missing",
            vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            Some(1),
        ),
        (
            "compression loop",
            vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1],
            Some(1),
        ),
        (
            "huge counts",
            vec![
                0x12, 0x34, 0x01, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
            Some(1),
        ),
        (
            "class CHAOS",
            vec![
                0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'b', 0, 0, 1, 0, 3,
            ],
            Some(5),
        ),
        (
            "opcode STATUS",
            vec![
                0x12, 0x34, 0x10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'b', 0, 0, 1, 0, 1,
            ],
            Some(4),
        ),
    ];
    let got = netd::kernel::netns::run_in(&h.sb("a"), move || {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let to: SocketAddr = "127.0.0.11:53".parse().expect("addr");
        let mut out = Vec::new();
        for (what, pkt, _) in &cases {
            s.send_to(pkt, to).expect("send");
            let mut buf = [0u8; 512];
            let rcode = s.recv(&mut buf).ok().map(|n| {
                assert!(n >= 12 && buf[..2] == pkt[..2], "{what}: reply for another id");
                buf[3] & 0x0f
            });
            out.push((
                what.to_string(),
                rcode,
                cases.iter().find(|c| c.0 == *what).map(|c| c.2).unwrap(),
            ));
        }
        // And a flood of random bytes.
        for i in 0..2000u32 {
            let len = (i % 300) as usize;
            let pkt: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
            let _ = s.send_to(&pkt, to);
        }
        out
    })
    .expect("run in sandbox");
    for (what, rcode, want) in got {
        assert_eq!(rcode, want, "{what}");
    }
    assert_eq!(short(&h, "a", "b A"), [h.ip("b", "f")]);
}

fn one(s: &str) -> Vec<String> {
    vec![s.to_string()]
}

/// A runtime-owned namespace (CNI: podman's or kubelet's, `--netns`) gets its resolver
/// from the runtime, so netd opens no listener and leaves no table of its own there
/// (even when its `lo` is still down, as before the loopback plugin ran); its name
/// still answers for netd's sandboxes on the same network.
#[test]
fn runtime_owned_namespaces_get_no_listener_but_their_names_answer() {
    if no_dig() {
        return;
    }
    let h = Host::new();
    h.ctl(&["network", "create", "rt", "--subnet", "10.63.0.0/24"]);
    h.ctl(&["sandbox", "create", "alpha", "--network", "rt"]);
    let ext = integration::fwtest::TestNs::create();
    ext.ip(&["link", "set", "lo", "down"]);
    let path = ext.path();
    h.ctl(&[
        "sandbox",
        "create",
        "pod",
        "--network",
        "rt",
        "--netns",
        path.to_str().unwrap(),
    ]);
    let pod_ip = h.ip("pod", "rt");
    assert_eq!(short(&h, "alpha", "pod A"), [pod_ip]);
    let tables = ext.nft(&["list", "tables"]);
    assert!(
        !tables.contains("netd_dns"),
        "netd left a table in a runtime's namespace: {tables}"
    );
    let listening = ext.exec(&["ss", "-Hlun"]);
    assert!(
        !listening.contains("127.0.0.11"),
        "listener in a runtime's namespace: {listening}"
    );
    // Later operations still work and do not retry anything in that namespace.
    h.ctl(&["sandbox", "create", "beta", "--network", "rt"]);
    assert_eq!(short(&h, "beta", "alpha A"), [h.ip("alpha", "rt")]);
    assert!(!h.log().contains("cannot serve"), "{}", h.log());
    h.ctl(&["sandbox", "rm", "pod"]);
    assert_eq!(status(&h, "alpha", "pod A"), "NXDOMAIN");
}
