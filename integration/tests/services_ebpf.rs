//! The service conformance suite (`integration::services_suite`) on the eBPF datapath
//! (`netd daemon --lb ebpf`): socket-level load balancing by cgroup programs; ingress
//! ports from outside through the tc routing mesh, with the nftables datapath for the
//! rest of north-south (the host, its sandboxes, what tc does not serve).

use integration::services_suite::Datapath;

integration::services_scenarios!(ebpf => super::Datapath::Ebpf);

/// What only the socket-level datapath promises, beyond the suite.
mod socket_lb {
    use std::collections::BTreeSet;
    use std::io::Read;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream, UdpSocket};
    use std::time::{Duration, Instant};

    use integration::harness::{echo, respond, roundtrip, run, spread_from, tcp, Host};
    use integration::skip::{no_root, skip, this_test};

    fn host() -> Option<Host> {
        if no_root() {
            return None;
        }
        if !std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
            && !std::path::Path::new("/sys/fs/cgroup/cgroup.procs").exists()
        {
            skip(&this_test(), "no cgroup v2 hierarchy for cgroup/connect4");
            return None;
        }
        let mut h = Host::bare();
        h.daemon_args = vec!["--lb".into(), "ebpf".into()];
        h.start();
        h.ctl(&["network", "create", "n", "--subnet", "10.90.0.0/24"]);
        h.ctl(&["sandbox", "create", "a", "--network", "n", "--label", "app=web"]);
        respond(&h.sb("a"), "a", &[8080], &[8080]);
        echo(&h.sb("a"), 9000);
        h.ctl(&["sandbox", "create", "client", "--network", "n"]);
        h.ctl(&[
            "service",
            "create",
            "web",
            "--network",
            "n",
            "--selector",
            "app=web",
            "--port",
            "80:8080",
            "--port",
            "80:8080/udp",
            "--port",
            "90:9000",
        ]);
        Some(h)
    }

    fn vip(h: &Host) -> String {
        let v = h.client().get("/v1/services/default/web").expect("inspect");
        v["vips"]["n"].as_str().expect("a VIP on n").to_string()
    }

    /// From sandbox `sb`: a TCP connection to `tcp_at` and a datagram to `udp_at` (from
    /// a socket of `udp_at`'s family), answered. Returns the connection's peer as
    /// getpeername() gives it, the connection, and the reply's source as recvfrom()
    /// gives it.
    fn peers_seen(
        h: &Host,
        sb: &str,
        tcp_at: SocketAddr,
        udp_at: SocketAddr,
    ) -> (SocketAddr, TcpStream, SocketAddr) {
        netd::kernel::probe::in_netns(Some(&h.sb(sb)), move || {
            let s = TcpStream::connect_timeout(&tcp_at, Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            let u = UdpSocket::bind(if udp_at.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
            u.set_read_timeout(Some(Duration::from_secs(1)))?;
            u.send_to(b"hi", udp_at)?;
            let mut buf = [0u8; 64];
            let (_, from) = u.recv_from(&mut buf)?;
            Ok((s.peer_addr()?, s, from))
        })
        .unwrap_or_else(|e| panic!("connect through {tcp_at} and {udp_at}: {e}"))
    }

    /// Conntrack in the host namespace (the bridge passes the flows to it,
    /// nf_call_iptables), listed with `filter`, holds a flow to one of `backends` and no
    /// entry that names `vip` or NAT. Skips the test (false) without conntrack(8).
    fn flow_has_no_nat(h: &Host, filter: &[&str], backends: &[String], vip: &str) -> bool {
        let ct = run(std::process::Command::new("nsenter")
            .arg(format!("--net={}", h.netns().display()))
            .args(["conntrack", "-L"])
            .args(filter));
        if !ct.ok() && ct.stderr.contains("not found") {
            skip(&this_test(), "conntrack(8) missing (scripts/install-deps.sh)");
            return false;
        }
        println!("{}", ct.stdout);
        assert!(
            backends.iter().any(|b| ct.stdout.contains(&format!("dst={b}"))),
            "flow not seen: {}",
            ct.stdout
        );
        assert!(
            !ct.stdout.contains(vip),
            "a conntrack entry names the VIP: {}",
            ct.stdout
        );
        for l in ct.stdout.lines() {
            assert!(!l.contains("[DNAT]") && !l.contains("[SNAT]"), "NAT entry: {l}");
        }
        true
    }

    /// The client sees the VIP as its peer (getpeername, recvfrom) while the packets
    /// go to the backend itself: conntrack holds the flow with no NAT and no VIP.
    #[test]
    fn peer_is_the_vip_and_conntrack_has_no_nat() {
        let Some(h) = host() else { return };
        let vip = vip(&h);
        let at: SocketAddr = format!("{vip}:90").parse().unwrap();
        let udp_at: SocketAddr = format!("{vip}:80").parse().unwrap();
        let (peer, mut flow, from) = peers_seen(&h, "client", at, udp_at);
        assert_eq!(peer, at, "getpeername() shows the backend");
        assert_eq!(from, udp_at, "recvfrom() shows the backend");
        assert!(roundtrip(&mut flow, "x\n"));
        let backend = h.ip("a", "n");
        flow_has_no_nat(&h, &["-p", "tcp", "--dport", "9000"], &[backend], &vip);
    }

    /// kill -9 of the daemon and a restart drop no established connection (the
    /// programs and maps are pinned, and a connection is rewritten once, at connect).
    #[test]
    fn kill9_keeps_established_flows() {
        let Some(mut h) = host() else { return };
        let at: SocketAddr = format!("{}:90", vip(&h)).parse().unwrap();
        let mut flow = netd::kernel::probe::in_netns(Some(&h.sb("client")), move || {
            let s = TcpStream::connect_timeout(&at, Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            Ok(s)
        })
        .expect("flow");
        assert!(roundtrip(&mut flow, "before\n"));
        h.kill9();
        assert!(roundtrip(&mut flow, "netd dead\n"));
        h.start();
        assert!(roundtrip(&mut flow, "after restart\n"));
    }

    /// An IPv6 VIP goes through the IPv6 hooks and maps (connect6, sendmsg6, recvmsg6,
    /// getpeername6): balanced over the backends' IPv6 addresses, the client sees the
    /// VIP, conntrack holds no NAT, a network the service is not on does not reach it,
    /// a VIP with no backend refuses at once and client affinity holds. An AF_INET6
    /// socket reaches an IPv4 VIP through its IPv4-mapped address, as dual-stack
    /// applications (Java's default) do.
    #[test]
    fn ipv6_vips_and_ipv4_mapped_addresses() {
        let Some(h) = host() else { return };
        for (n, k) in [("n6", 91), ("m6", 92)] {
            h.ctl(&[
                "network",
                "create",
                n,
                "--ipv6",
                "--subnet",
                &format!("10.{k}.0.0/24"),
                "--subnet",
                &format!("fd00:{k}::/64"),
            ]);
        }
        for b in ["b1", "b2"] {
            h.ctl(&["sandbox", "create", b, "--network", "n6", "--label", "app=web6"]);
            respond(&h.sb(b), b, &[8080], &[8080]);
        }
        h.ctl(&["sandbox", "create", "c6", "--network", "n6"]);
        h.ctl(&["sandbox", "create", "o6", "--network", "m6"]);
        let vip6: Ipv6Addr = "fd00:91::c8".parse().unwrap();
        h.ctl(&[
            "service",
            "create",
            "web6",
            "--network",
            "n6",
            "--selector",
            "app=web6",
            "--port",
            "80:8080",
            "--port",
            "80:8080/udp",
            "--vip",
            "n6=fd00:91::c8",
        ]);
        h.ctl(&[
            "service",
            "create",
            "none6",
            "--network",
            "n6",
            "--selector",
            "app=nobody",
            "--port",
            "80:8080",
            "--vip",
            "n6=fd00:91::c9",
        ]);
        let at = SocketAddr::V6(SocketAddrV6::new(vip6, 80, 0, 0));
        let (names, peers, udp) = netd::kernel::probe::in_netns(Some(&h.sb("c6")), move || {
            let (mut names, mut peers) = (BTreeSet::new(), BTreeSet::new());
            for _ in 0..40 {
                let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(1))?;
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                peers.insert(s.peer_addr()?);
                let mut name = String::new();
                s.read_to_string(&mut name)?;
                names.insert(name.trim().to_string());
            }
            let u = UdpSocket::bind("[::]:0")?;
            u.set_read_timeout(Some(Duration::from_secs(1)))?;
            u.send_to(b"hi", at)?;
            let mut buf = [0u8; 64];
            let (n, from) = u.recv_from(&mut buf)?;
            Ok((
                names,
                peers,
                (from, String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            ))
        })
        .expect("connect through the IPv6 VIP");
        assert_eq!(
            names,
            BTreeSet::from(["b1".to_string(), "b2".to_string()]),
            "balanced over both"
        );
        assert_eq!(peers, BTreeSet::from([at]), "getpeername() shows the VIP");
        assert_eq!(udp.0, at, "recvfrom() shows the VIP");
        assert!(udp.1 == "b1" || udp.1 == "b2", "{udp:?}");
        let backends = [h.ip6("b1", "n6"), h.ip6("b2", "n6")];
        if !flow_has_no_nat(
            &h,
            &["-f", "ipv6", "-p", "tcp", "--dport", "8080"],
            &backends,
            "fd00:91::c8",
        ) {
            return;
        }
        // Isolation: a sandbox on another network is not balanced (its connection goes to
        // the plain address, which nothing serves).
        assert_eq!(
            tcp(Some(&h.sb("o6")), "[fd00:91::c8]:80", 1000),
            None,
            "m6 reached the VIP"
        );
        // No backend: refused at once.
        let none = SocketAddr::V6(SocketAddrV6::new("fd00:91::c9".parse().unwrap(), 80, 0, 0));
        let refused = netd::kernel::probe::in_netns(Some(&h.sb("c6")), move || {
            let t0 = Instant::now();
            let e = TcpStream::connect_timeout(&none, Duration::from_secs(3)).err();
            Ok((e.map(|e| e.kind()), t0.elapsed()))
        })
        .unwrap();
        assert_eq!(
            refused.0,
            Some(std::io::ErrorKind::ConnectionRefused),
            "{refused:?}"
        );
        assert!(refused.1 < Duration::from_millis(500), "{refused:?}");
        // Client affinity: every connection of the client lands on one backend.
        h.ctl(&[
            "service",
            "create",
            "sticky6",
            "--network",
            "n6",
            "--selector",
            "app=web6",
            "--port",
            "81:8080",
            "--session-affinity",
            "client-ip",
            "--vip",
            "n6=fd00:91::ca",
        ]);
        let stuck = spread_from(&h.sb("c6"), "[fd00:91::ca]:81", 20);
        assert_eq!(stuck.len(), 1, "affinity did not hold: {stuck:?}");
        assert!(stuck.contains_key("b1") || stuck.contains_key("b2"), "{stuck:?}");

        // IPv4 VIP through an AF_INET6 socket (::ffff:VIP): TCP and UDP, with the mapped
        // VIP as the peer.
        let vip4: Ipv4Addr = vip(&h).parse().unwrap();
        let m = |port| SocketAddr::V6(SocketAddrV6::new(vip4.to_ipv6_mapped(), port, 0, 0));
        let (tcp_m, udp_m) = (m(90), m(80));
        let (peer, mut flow, from) = peers_seen(&h, "client", tcp_m, udp_m);
        assert_eq!(peer, tcp_m, "getpeername() shows the mapped VIP");
        assert_eq!(from, udp_m, "recvfrom() shows the mapped VIP");
        assert!(roundtrip(&mut flow, "mapped\n"));
    }

    /// A host without the hook fails at start with one line naming what is missing.
    #[test]
    fn missing_cgroup_fails_at_start_in_one_line() {
        if no_root() {
            return;
        }
        let h = Host::bare();
        let o = run(std::process::Command::new("nsenter")
            .arg(format!("--net={}", h.netns().display()))
            .arg(integration::harness::bin("netd"))
            .arg("daemon")
            .args(h.dir_args())
            .args(["--lb", "ebpf", "--bpf-cgroup", "/nonexistent/cgroup"]));
        assert!(!o.ok());
        // The error line, beside the daemon's own log lines (tracing, with a timestamp).
        let err: Vec<&str> = o.stderr.lines().filter(|l| l.starts_with("netd: ")).collect();
        assert_eq!(err.len(), 1, "{}", o.stderr);
        assert!(
            err[0].contains("/nonexistent/cgroup") && err[0].contains("cgroup v2"),
            "{}",
            o.stderr
        );
    }
}

/// The routing mesh (`ebpf/tc_nodeport4.c` on the host's devices): what arrives from
/// outside on a published port is DNATed in tc, before conntrack, so conntrack holds
/// the flow to the backend itself with no NAT; the host and its sandboxes still reach
/// the port through nftables.
mod routing_mesh {
    use integration::harness::{respond, respond_peer, run, spread_from, tcp, Host, Outside};
    use integration::skip::{in_vm_lane, no_program, no_root, skip, this_test};

    #[test]
    fn outside_clients_are_balanced_in_tc_and_keep_their_address() {
        if no_root() || no_program("conntrack", "conntrack") {
            return;
        }
        if !std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
            && !std::path::Path::new("/sys/fs/cgroup/cgroup.procs").exists()
        {
            skip(&this_test(), "no cgroup v2 hierarchy for cgroup/connect4");
            return;
        }
        let mut h = Host::bare();
        h.daemon_args = vec!["--lb".into(), "ebpf".into()];
        h.start();
        // The outside device exists before the service: the mesh attaches to it when
        // the served ports change.
        let out = Outside::new(&h, 73);
        h.ctl(&["network", "create", "n", "--subnet", "10.90.0.0/24"]);
        for i in 1..=3 {
            let name = format!("web{i}");
            h.ctl(&["sandbox", "create", &name, "--network", "n", "--label", "app=web"]);
            respond(&h.sb(&name), &name, &[8080], &[]);
            respond_peer(&h.sb(&name), 7000);
        }
        h.ctl(&["sandbox", "create", "client", "--network", "n"]);
        h.ctl(&[
            "service",
            "create",
            "web",
            "--network",
            "n",
            "--selector",
            "app=web",
            "--port",
            "80:8080",
            "--port",
            "70:7000",
            "-p",
            "8088:8080",
            "-p",
            "8070:7000",
        ]);
        let at = format!("{}:8088", out.host_ip);
        let seen = spread_from(&out.netns(), &at, 60);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["web1", "web2", "web3"],
            "{seen:?}"
        );
        // inspect says tc serves the published ports from outside.
        let v = h.client().get("/v1/services/default/web").expect("inspect");
        assert!(
            v["datapath"]
                .as_str()
                .is_some_and(|d| d.contains("tc routing mesh")),
            "{v}"
        );
        // Attached with tcx where the kernel has it (6.6 and later, this machine), else
        // as direct-action filters on a clsact qdisc (the VM lane's 6.1): the same
        // programs either way, and `tc filter show` tells which.
        let filters = h.sh(&format!("tc filter show dev {} ingress", out.dev)).stdout;
        if in_vm_lane() {
            assert!(
                filters.contains("netd_"),
                "no clsact filter in the lane: {filters}"
            );
        } else {
            let qd = h.sh(&format!("tc qdisc show dev {}", out.dev)).stdout;
            assert!(
                !filters.contains("netd_") && !qd.contains("clsact"),
                "clsact where tcx exists: {qd}{filters}"
            );
        }
        // The backend sees the outside client's own address.
        let peer = tcp(Some(&out.netns()), &format!("{}:8070", out.host_ip), 1000);
        assert_eq!(peer.as_deref(), Some(out.ip.as_str()));
        // tc did it: conntrack saw client -> backend:8080, never the published port.
        let ct = run(std::process::Command::new("nsenter")
            .arg(format!("--net={}", h.netns().display()))
            .args(["conntrack", "-L", "-p", "tcp", "-s", &out.ip]));
        assert!(ct.ok(), "{}", ct.stderr);
        let lines: Vec<&str> = ct.stdout.lines().collect();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("dport=8080") && l.contains("dst=10.90.0.")),
            "no flow to a backend: {}",
            ct.stdout
        );
        for l in &lines {
            assert!(
                !l.contains("dport=8088") && !l.contains("[DNAT]"),
                "nftables DNATed: {l}"
            );
        }
        // The host itself and a sandbox still reach the port (nftables' output and
        // prerouting chains: they never cross a device's tc ingress).
        assert!(tcp(Some(&h.netns()), &at, 1000).is_some_and(|n| n.starts_with("web")));
        assert!(tcp(Some(&h.sb("client")), &at, 1000).is_some_and(|n| n.starts_with("web")));
        // A removed backend leaves the table; the others keep serving.
        h.ctl(&["sandbox", "rm", "web3"]);
        let seen = spread_from(&out.netns(), &at, 40);
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["web1", "web2"], "{seen:?}");
        // kill -9 and a restart: the mesh stays attached and keeps serving.
        h.kill9();
        let seen = spread_from(&out.netns(), &at, 20);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["web1", "web2"],
            "netd dead: {seen:?}"
        );
        h.start();
        let seen = spread_from(&out.netns(), &at, 20);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["web1", "web2"],
            "after restart: {seen:?}"
        );
    }

    /// A bad `--lb-devices` fails the start in one line and makes no socket.
    #[test]
    fn bad_lb_devices_fail_at_start_in_one_line() {
        if no_root() {
            return;
        }
        let h = Host::bare();
        for (args, says) in [
            (&["--lb-devices", "lo"][..], "needs --lb ebpf"),
            (
                &["--lb", "ebpf", "--lb-devices", "ndnosuch0"][..],
                "ndnosuch0 does not exist",
            ),
            (
                &["--lb", "ebpf", "--lb-devices", "lo,"][..],
                "is not a device name",
            ),
        ] {
            let o = run(std::process::Command::new("nsenter")
                .arg(format!("--net={}", h.netns().display()))
                .arg(integration::harness::bin("netd"))
                .arg("daemon")
                .args(h.dir_args())
                .args(args));
            assert!(!o.ok(), "{args:?} started");
            let err: Vec<&str> = o.stderr.lines().filter(|l| l.starts_with("netd: ")).collect();
            assert_eq!(err.len(), 1, "{args:?}: {}", o.stderr);
            assert!(err[0].contains(says), "{args:?}: {}", err[0]);
            assert!(!h.socket().exists(), "{args:?}: a socket was made");
        }
    }
}
