//! The routing mesh's tc programs (`ebpf/tc_nodeport4.c`) one by one, with
//! BPF_PROG_TEST_RUN on hand-made frames (`integration::packet`): DNAT to the Maglev
//! backend with valid checksums, reverse NAT of the reply, and packets the mesh must
//! leave alone. Each test loads the programs with their maps pinned in a directory of
//! its own and runs them inside a namespace of its own (the route lookup that decides
//! "local address" is the namespace's). Needs root (skips otherwise).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use integration::ns::{self, NsGuard};
use integration::packet::{self, frame, frame_flags, read, ACK, TCP, UDP};
use integration::skip::no_root;
use netd::kernel::bpf_tc::{NodePort, NpMaps, NpOp, TcDir};
use netd::kernel::bpf_types::{Lb4Flow, Lb4NodePort, Lb4NodePortKey, NODEPORT_MARK};
use netd::kernel::netns;
use netd::lb::maglev;

const TC_ACT_OK: u32 = 0;
const HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT: &str = "198.51.100.7:40000";
const TABLE: u32 = 251; // a small prime: quick to write, same code path as 16381
const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 90, 0, 2),
    Ipv4Addr::new(10, 90, 0, 3),
    Ipv4Addr::new(10, 90, 0, 4),
];

/// A pin directory on bpffs, removed on drop.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A namespace where 192.0.2.1 is local, forwarding is on and everything else routes
/// out a veth (so "not local" is a unicast route, not "no route").
fn namespace(guard: &mut NsGuard) -> PathBuf {
    let p = guard.reserve();
    netns::create(&p).expect("create netns");
    let run = |args: &[&str]| assert!(ns::exec_in(&p, args), "{args:?}");
    run(&["ip", "link", "set", "lo", "up"]);
    run(&["ip", "addr", "add", &format!("{HOST}/32"), "dev", "lo"]);
    run(&["ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    run(&["ip", "link", "set", "up0", "up"]);
    run(&["ip", "link", "set", "up1", "up"]);
    run(&["ip", "route", "add", "default", "dev", "up0"]);
    run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    p
}

/// Runs `f` on a thread inside `netns` with the programs loaded (maps pinned in a
/// fresh directory) and a service on 8088/tcp and 5353/udp over `BACKENDS`.
fn with_mesh(f: impl FnOnce(&mut NodePort) + Send + 'static) {
    let mut guard = NsGuard::new();
    let netns = namespace(&mut guard);
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/netd-test-tc-{}-{}",
        std::process::id(),
        ns::unique_name()
    )));
    let dir = pins.0.clone();
    let r = std::thread::spawn(move || {
        let fd = std::fs::File::open(&netns).expect("open netns");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let mut np = NodePort::load(&dir).expect("load tc_nodeport4");
        let names: Vec<String> = BACKENDS.iter().map(|b| b.to_string()).collect();
        let table = maglev::table(&names, TABLE as usize).expect("maglev table");
        let mut ops = Vec::new();
        for (id, port, target, proto) in [(1u32, 8088u16, 8080u16, TCP), (2, 5353, 53, UDP)] {
            let slots = table
                .iter()
                .enumerate()
                .map(|(i, &b)| (i as u32, Lb4Flow::new(BACKENDS[b as usize], target)))
                .collect();
            ops.push(NpOp::PutSlots(id, slots));
            ops.push(NpOp::PutService(
                Lb4NodePortKey::new(port, proto),
                Lb4NodePort {
                    maglev_id: id,
                    table_size: TABLE,
                    count: BACKENDS.len() as u16,
                    ..Default::default()
                },
            ));
        }
        np.apply(&ops).expect("write the maps");
        f(&mut np);
    })
    .join();
    drop(pins);
    drop(guard);
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// The program's flow hash (`flow_hash` in tc_nodeport4.c), over the words as the
/// program loads them from the packet (network byte order, read natively).
fn flow_hash(src: SocketAddrV4, dst: SocketAddrV4, proto: u8) -> u32 {
    let ne = |p: u16| u32::from(u16::from_ne_bytes(p.to_be_bytes()));
    let w = [
        u32::from_ne_bytes(src.ip().octets()),
        u32::from_ne_bytes(dst.ip().octets()),
        (ne(src.port()) << 16) | ne(dst.port()),
        u32::from(proto),
    ];
    let mut h: u32 = 0x9e37_79b9;
    for x in w {
        let k = x.wrapping_mul(0xcc9e_2d51).rotate_left(15);
        h ^= k.wrapping_mul(0x1b87_3593);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The backend Maglev gives a flow (what the program must pick).
fn expected_backend(src: SocketAddrV4, dst: SocketAddrV4, proto: u8) -> Ipv4Addr {
    let names: Vec<String> = BACKENDS.iter().map(|b| b.to_string()).collect();
    let table = maglev::table(&names, TABLE as usize).unwrap();
    BACKENDS[table[(flow_hash(src, dst, proto) % TABLE) as usize] as usize]
}

#[test]
fn tcp_to_a_published_port_is_dnated_to_its_maglev_backend_and_the_reply_reverse_nated() {
    if no_root() {
        return;
    }
    with_mesh(|np| {
        let client: SocketAddrV4 = CLIENT.parse().unwrap();
        let published = SocketAddrV4::new(HOST, 8088);
        let want = expected_backend(client, published, TCP);
        let syn = frame(TCP, client, published, b"", true);
        let run = np.test_run(TcDir::Ingress, &syn).expect("test run ingress");
        assert_eq!(run.verdict, TC_ACT_OK);
        assert_eq!(
            run.mark & NODEPORT_MARK,
            NODEPORT_MARK,
            "DNATed packets carry the mark"
        );
        let s = read(&run.packet).expect("an IPv4 TCP frame");
        assert_eq!(s.src, client, "the client keeps its address");
        assert_eq!(
            s.dst,
            SocketAddrV4::new(want, 8080),
            "Maglev's backend, target port"
        );
        assert!(s.ip_csum_ok, "IPv4 header checksum");
        assert!(s.l4_csum_ok, "TCP checksum");
        // The same flow again (a retransmitted SYN) goes to the same backend.
        let again = np.test_run(TcDir::Ingress, &syn).unwrap();
        assert_eq!(again.packet, run.packet);

        // The backend's SYN-ACK, leaving towards the client, shows the published address.
        let reply = frame(TCP, SocketAddrV4::new(want, 8080), client, b"", true);
        let out = np.test_run(TcDir::Egress, &reply).expect("test run egress");
        assert_eq!(out.verdict, TC_ACT_OK);
        let s = read(&out.packet).unwrap();
        assert_eq!((s.src, s.dst), (published, client));
        assert!(s.ip_csum_ok && s.l4_csum_ok, "checksums after reverse NAT: {s:?}");
    });
}

#[test]
fn flows_spread_over_every_backend_as_maglev_says() {
    if no_root() {
        return;
    }
    with_mesh(|np| {
        let published = SocketAddrV4::new(HOST, 8088);
        let mut seen = std::collections::BTreeSet::new();
        for port in 40000..40060u16 {
            let client = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), port);
            let run = np
                .test_run(TcDir::Ingress, &frame(TCP, client, published, b"", true))
                .unwrap();
            let s = read(&run.packet).unwrap();
            assert_eq!(
                *s.dst.ip(),
                expected_backend(client, published, TCP),
                "client port {port}"
            );
            assert!(s.ip_csum_ok && s.l4_csum_ok);
            seen.insert(*s.dst.ip());
        }
        assert_eq!(
            seen.len(),
            BACKENDS.len(),
            "60 flows reach all 3 backends: {seen:?}"
        );
    });
}

#[test]
fn udp_with_and_without_checksum() {
    if no_root() {
        return;
    }
    with_mesh(|np| {
        let published = SocketAddrV4::new(HOST, 5353);
        for (port, csum) in [(50000u16, true), (50001, false)] {
            let client = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 8), port);
            let want = expected_backend(client, published, UDP);
            let run = np
                .test_run(TcDir::Ingress, &frame(UDP, client, published, b"query", csum))
                .unwrap();
            assert_eq!(run.verdict, TC_ACT_OK);
            let s = read(&run.packet).unwrap();
            assert_eq!((s.src, s.dst), (client, SocketAddrV4::new(want, 53)));
            assert_eq!(s.payload, b"query");
            assert!(s.ip_csum_ok);
            assert_eq!(
                (s.l4_csum_ok, s.l4_csum_zero),
                (csum, !csum),
                "checksum {csum}: {s:?}"
            );
            let out = np
                .test_run(
                    TcDir::Egress,
                    &frame(UDP, SocketAddrV4::new(want, 53), client, b"answer", csum),
                )
                .unwrap();
            let s = read(&out.packet).unwrap();
            assert_eq!((s.src, s.dst), (published, client));
            assert!(s.ip_csum_ok);
            assert_eq!((s.l4_csum_ok, s.l4_csum_zero), (csum, !csum));
        }
    });
}

#[test]
fn what_the_mesh_does_not_serve_passes_unchanged() {
    if no_root() {
        return;
    }
    with_mesh(|np| {
        let client: SocketAddrV4 = CLIENT.parse().unwrap();
        let cases = [
            (
                "unknown port",
                frame(TCP, client, SocketAddrV4::new(HOST, 8089), b"", true),
            ),
            (
                "UDP on a TCP port",
                frame(UDP, client, SocketAddrV4::new(HOST, 8088), b"x", true),
            ),
            (
                "not a local address (routed through)",
                frame(TCP, client, "203.0.113.9:8088".parse().unwrap(), b"", true),
            ),
        ];
        for (what, f) in cases {
            let run = np.test_run(TcDir::Ingress, &f).unwrap();
            assert_eq!(run.verdict, TC_ACT_OK, "{what}");
            assert_eq!(run.packet, f, "{what}: the packet is left as it was");
            assert_eq!(run.mark & NODEPORT_MARK, 0, "{what}: no mark");
        }
        // A packet leaving that no DNAT created: no reverse NAT.
        let f = frame(TCP, "10.90.0.2:8080".parse().unwrap(), client, b"", true);
        let out = np.test_run(TcDir::Egress, &f).unwrap();
        assert_eq!((out.verdict, &out.packet), (TC_ACT_OK, &f));
        // A service without backends is left to nftables (which rejects).
        np.apply(&[NpOp::PutService(
            Lb4NodePortKey::new(9000, TCP),
            Lb4NodePort {
                maglev_id: 3,
                table_size: TABLE,
                count: 0,
                ..Default::default()
            },
        )])
        .unwrap();
        let f = frame(TCP, client, SocketAddrV4::new(HOST, 9000), b"", true);
        assert_eq!(np.test_run(TcDir::Ingress, &f).unwrap().packet, f);
        // Not IPv4 at all (an ARP frame) passes.
        let mut arp = packet::frame(TCP, client, SocketAddrV4::new(HOST, 8088), b"", true);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(np.test_run(TcDir::Ingress, &arp).unwrap().packet, arp);
    });
}

#[test]
fn an_established_flow_keeps_its_backend_when_the_table_moves_and_a_new_syn_follows_it() {
    if no_root() {
        return;
    }
    with_mesh(|np| {
        let client: SocketAddrV4 = CLIENT.parse().unwrap();
        let published = SocketAddrV4::new(HOST, 8088);
        let first = expected_backend(client, published, TCP);
        assert_eq!(to(np, &frame(TCP, client, published, b"", true)), first);
        let ack = frame_flags(TCP, client, published, b"data", true, ACK);
        assert_eq!(to(np, &ack), first);
        // Every slot now names another backend (as when `first` is removed).
        let other = *BACKENDS.iter().find(|b| **b != first).unwrap();
        let slots = (0..TABLE).map(|i| (i, Lb4Flow::new(other, 8080))).collect();
        np.apply(&[NpOp::PutSlots(1, slots)]).unwrap();
        assert_eq!(to(np, &ack), first, "the connection's packets keep their backend");
        assert_eq!(
            to(np, &frame(TCP, client, published, b"", true)),
            other,
            "a new connection on the same client port follows the table"
        );
        assert_eq!(to(np, &ack), other, "and its flow is the new one");
    });
}

/// Where the ingress program sends `f`.
fn to(np: &mut NodePort, f: &[u8]) -> Ipv4Addr {
    let r = np.test_run(TcDir::Ingress, f).expect("test run");
    assert_eq!(r.verdict, TC_ACT_OK);
    let s = read(&r.packet).expect("IPv4");
    assert!(s.ip_csum_ok && s.l4_csum_ok, "{s:?}");
    *s.dst.ip()
}

#[test]
fn a_direct_connection_on_a_reused_client_port_is_not_reverse_nated() {
    if no_root() {
        return;
    }
    with_mesh(|np| {
        let client: SocketAddrV4 = CLIENT.parse().unwrap();
        let published = SocketAddrV4::new(HOST, 8088);
        let be = SocketAddrV4::new(to(np, &frame(TCP, client, published, b"", true)), 8080);
        let reply = frame(TCP, be, client, b"", true);
        let out = np.test_run(TcDir::Egress, &reply).unwrap();
        assert_eq!(
            read(&out.packet).unwrap().src,
            published,
            "the translated flow's reply"
        );
        // The client now opens a connection to the backend's own address from the same
        // port (routed to it, no published port involved): a SYN the program passes...
        let direct = frame(TCP, client, be, b"", true);
        let run = np.test_run(TcDir::Ingress, &direct).unwrap();
        assert_eq!(run.packet, direct);
        // ...and whose replies leave as the backend sent them.
        let out = np.test_run(TcDir::Egress, &reply).unwrap();
        assert_eq!(out.packet, reply, "a direct connection's reply is left alone");
    });
}
