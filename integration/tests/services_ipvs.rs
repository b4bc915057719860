//! `netd::kernel::ipvs` against a real IPVS: a "host" namespace holds a VIP on `lo` and
//! the IPVS table (NAT, `Masquerade`), a client namespace and three backend namespaces
//! hang off it by veths, and each backend runs a tiny listener that answers its own
//! name (then echoes, so a held connection can prove it still carries data).
//!
//! Measured: 300 connections over "rr" land 33% ± 10 on each backend; a backend at
//! weight 0 gets no new connection while one it already has keeps working, and once it
//! is removed that connection is reset (`expire_nodest_conn=1`); deletes leave `list`
//! and `ipvsadm -Ln` empty; a UDP service answers from every backend; a fwmark service
//! lists as it was made and changed; duplicates and missing objects are typed errors.
//!
//! This kernel has no IP_VS: the tests skip here with `skip_for_lane` and run in the VM
//! lane (`scripts/vmlane-test.sh services_ipvs`), whose kernel loads ip_vs at boot.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration::fwtest::TestNs;
use integration::skip::{in_vm_lane, no_root, on_path, skip_for_lane, this_test};
use netd::kernel::ipvs::{self, Dest, Failure, Forward, Ipvs, IpvsError, Service, ServiceKey};
use netd::kernel::{netns, probe, sysctl};

const VIP: &str = "10.77.0.100";
const BACKEND_PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Whether IPVS is there to test; false after a skip (not root, or no IPVS here).
fn ipvs_or_skip() -> bool {
    if no_root() {
        return false;
    }
    if Ipvs::available().expect("probe IPVS") {
        return true;
    }
    // A kernel with ip_vs as an unloaded module (the lane loads it at boot; a host
    // that cannot load modules just fails this).
    let _ = Command::new("modprobe").arg("ip_vs").output();
    if Ipvs::available().expect("probe IPVS") {
        return true;
    }
    !skip_for_lane(&this_test(), "this kernel has no IPVS (CONFIG_IP_VS)")
}

/// The topology: host (VIP, IPVS), client, backends `b0..`; namespaces go on drop.
struct Lb {
    ipvs: Ipvs,
    host: TestNs,
    client: TestNs,
    backends: Vec<TestNs>,
}

impl Lb {
    fn new(backends: usize) -> Lb {
        let host = TestNs::create();
        let client = TestNs::create();
        let path = host.path();
        netns::run_in(&path, || sysctl::write("net/ipv4/ip_forward", "1"))
            .expect("enter host netns")
            .expect("ip_forward=1 in the host netns");
        // IPVS catches the request on its way to a local address (LOCAL_IN): the VIP must
        // be local on the host.
        host.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        link(&host, &client, 1);
        let backends: Vec<TestNs> = (0..backends)
            .map(|i| {
                let b = TestNs::create();
                link(&host, &b, 10 + i as u8);
                serve(&b.path(), &format!("b{i}"));
                b
            })
            .collect();
        let ipvs = Ipvs::open_in(&path).expect("IPVS client in the host netns");
        Lb {
            ipvs,
            host,
            client,
            backends,
        }
    }

    /// Backend `i`'s address as a destination.
    fn backend(&self, i: usize) -> SocketAddr {
        SocketAddr::new(format!("10.77.{}.2", 10 + i).parse().unwrap(), BACKEND_PORT)
    }

    /// A service with every backend as a NAT destination of weight 1.
    fn service(&mut self, s: &Service) {
        self.ipvs.new_service(s).expect("add service");
        for i in 0..self.backends.len() {
            let d = Dest::masquerade(self.backend(i), 1);
            self.ipvs.new_dest(&s.key, &d).expect("add destination");
        }
    }

    /// `n` TCP connections from the client to `vip`, each closed after the backend's
    /// name is read: how many each backend answered.
    fn spread(&self, vip: SocketAddr, n: usize) -> BTreeMap<String, usize> {
        let names = probe::in_netns(Some(&self.client.path()), move || {
            (0..n)
                .map(|_| hello(vip).map(|(_, name)| name))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .expect("connections through the VIP");
        let mut count = BTreeMap::new();
        for name in names {
            *count.entry(name).or_insert(0) += 1;
        }
        count
    }

    /// A connection from the client that stays open, with the name of its backend.
    fn hold(&self, vip: SocketAddr) -> (TcpStream, String) {
        probe::in_netns(Some(&self.client.path()), move || hello(vip)).expect("held connection")
    }

    /// `ipvsadm -Ln` in the host namespace, or None where ipvsadm is missing (required
    /// in the lane, which ships it).
    fn ipvsadm(&self) -> Option<String> {
        if !on_path("ipvsadm") {
            assert!(!in_vm_lane(), "the VM lane ships ipvsadm");
            println!("{}: ipvsadm not installed, its view not checked", this_test());
            return None;
        }
        Some(self.host.exec(&["ipvsadm", "-Ln"]))
    }
}

/// A veth from the host (`v<net>`, 10.77.<net>.1/24) to `peer` (`eth0`, .2, default
/// route via the host, so NAT replies come back through IPVS).
fn link(host: &TestNs, peer: &TestNs, net: u8) {
    let v = format!("v{net}");
    host.ip(&[
        "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
    ]);
    host.ip(&["addr", "add", &format!("10.77.{net}.1/24"), "dev", &v]);
    host.ip(&["link", "set", &v, "up"]);
    peer.ip(&["addr", "add", &format!("10.77.{net}.2/24"), "dev", "eth0"]);
    peer.ip(&["link", "set", "eth0", "up"]);
    peer.ip(&["route", "add", "default", "via", &format!("10.77.{net}.1")]);
}

/// TCP and UDP on BACKEND_PORT inside `ns`: TCP answers `name\n` then echoes until the
/// client closes; UDP answers each datagram with `name\n`. Threads live as long as the
/// test process (the namespace with them).
fn serve(ns: &Path, name: &str) {
    let (tl, ul) =
        probe::bind_responder(Some(ns), vec![BACKEND_PORT], vec![BACKEND_PORT]).expect("bind backend");
    let msg = format!("{name}\n");
    for l in tl {
        let msg = msg.clone();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let msg = msg.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 512];
                    if s.write_all(msg.as_bytes()).is_err() {
                        return;
                    }
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    for u in ul {
        let msg = msg.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, peer)) = u.recv_from(&mut buf) {
                let _ = u.send_to(msg.as_bytes(), peer);
            }
        });
    }
}

/// Connects to `vip` and reads the backend's name line.
fn hello(vip: SocketAddr) -> std::io::Result<(TcpStream, String)> {
    let mut s = TcpStream::connect_timeout(&vip, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let name = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    Ok((s, name))
}

/// Writes `msg` on a held connection and reads the echo: the error if it no longer
/// carries data.
fn roundtrip(s: &mut TcpStream, msg: &str) -> std::io::Result<()> {
    s.write_all(msg.as_bytes())?;
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf)?;
    assert_eq!(buf, msg.as_bytes());
    Ok(())
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.parse().unwrap(), port)
}

#[test]
fn round_robin_spreads_300_connections_evenly() {
    if !ipvs_or_skip() {
        return;
    }
    let mut lb = Lb::new(3);
    let svc = Service::new(ServiceKey::tcp(vip(80)));
    lb.service(&svc);
    assert_eq!(lb.ipvs.services().expect("list services"), vec![svc.clone()]);
    let dests = lb.ipvs.dests(&svc.key).expect("list destinations");
    let addrs: BTreeSet<SocketAddr> = dests.iter().map(|d| d.addr).collect();
    assert_eq!(addrs, (0..3).map(|i| lb.backend(i)).collect());
    assert!(
        dests
            .iter()
            .all(|d| d.weight == 1 && d.forward == Forward::Masquerade),
        "{dests:?}"
    );

    let count = lb.spread(vip(80), 300);
    println!("300 connections over rr: {count:?}");
    assert_eq!(count.keys().cloned().collect::<Vec<_>>(), ["b0", "b1", "b2"]);
    for (name, n) in &count {
        // 33% ± 10 points of 300.
        assert!((70..=130).contains(n), "{name} got {n} of 300: {count:?}");
    }
}

#[test]
fn weight_zero_drains_and_a_removed_backend_resets_its_connections() {
    if !ipvs_or_skip() {
        return;
    }
    let mut lb = Lb::new(3);
    let host = lb.host.path();
    netns::run_in(&host, ipvs::expire_nodest_conn)
        .expect("enter host netns")
        .expect("expire_nodest_conn");
    let set = netns::run_in(&host, || sysctl::read(ipvs::EXPIRE_NODEST_CONN)).expect("enter host netns");
    assert_eq!(set.expect("read expire_nodest_conn"), "1");

    let svc = Service::new(ServiceKey::tcp(vip(80)));
    lb.service(&svc);
    let (mut held, name) = lb.hold(vip(80));
    let i: usize = name.trim_start_matches('b').parse().expect("backend name");
    let drained = lb.backend(i);

    let drain = lb.ipvs.drain(&svc.key, drained).expect("drain");
    let d = lb.ipvs.dests(&svc.key).expect("list destinations");
    let d = d
        .iter()
        .find(|d| d.addr == drained)
        .expect("drained destination still listed");
    assert_eq!(d.weight, 0);
    assert!(
        drain.connections(&mut lb.ipvs).expect("connections") >= Some(1),
        "the held connection counts"
    );

    let count = lb.spread(vip(80), 60);
    println!("60 connections with {name} at weight 0: {count:?}");
    assert_eq!(
        count.get(&name),
        None,
        "{name} got new connections at weight 0: {count:?}"
    );
    assert_eq!(count.values().sum::<usize>(), 60);
    assert_eq!(count.len(), 2, "the two others share the load: {count:?}");
    roundtrip(&mut held, "still here\n").expect("an established connection survives weight 0");

    drain
        .clone()
        .finish(&mut lb.ipvs)
        .expect("remove drained destination");
    drain.finish(&mut lb.ipvs).expect("removing it again is success");
    assert_eq!(lb.ipvs.dests(&svc.key).expect("list destinations").len(), 2);
    // expire_nodest_conn=1: the next packet expires the entry and the host's own stack,
    // with no socket on the VIP, answers with a reset.
    let after = roundtrip(&mut held, "gone?\n");
    println!("held connection after its backend was removed: {after:?}");
    // Without the sysctl its packets would be dropped and the read would time out.
    let kind = after.as_ref().map_err(|e| e.kind());
    assert_eq!(kind, Err(std::io::ErrorKind::ConnectionReset), "{after:?}");
}

#[test]
fn deleting_destinations_and_service_leaves_nothing() {
    if !ipvs_or_skip() {
        return;
    }
    let mut lb = Lb::new(3);
    let svc = Service::new(ServiceKey::tcp(vip(80))).scheduler("wrr");
    lb.service(&svc);
    if let Some(out) = lb.ipvsadm() {
        // ipvsadm reads the same table: the service and its NAT destinations.
        assert!(out.contains(&format!("TCP  {VIP}:80 wrr")), "{out}");
        assert!(
            out.contains("-> 10.77.10.2:8080") && out.contains("Masq"),
            "{out}"
        );
    }
    for i in 0..3 {
        lb.ipvs
            .del_dest(&svc.key, lb.backend(i))
            .expect("delete destination");
    }
    assert_eq!(lb.ipvs.dests(&svc.key).expect("list destinations"), vec![]);
    lb.ipvs.del_service(&svc.key).expect("delete service");
    assert_eq!(lb.ipvs.services().expect("list services"), vec![]);
    if let Some(out) = lb.ipvsadm() {
        let entries: Vec<&str> = out
            .lines()
            .filter(|l| {
                ["TCP", "UDP", "FWM", "SCTP", "  ->"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .filter(|l| !l.contains("RemoteAddress"))
            .collect();
        assert!(entries.is_empty(), "ipvsadm -Ln still lists {entries:?}:\n{out}");
    }
    // Nothing balances the VIP any more: the host's own stack refuses the connection.
    let after = probe::tcp_probe(Some(&lb.client.path()), vip(80), TIMEOUT);
    assert!(
        after.is_err(),
        "the VIP still answers after its service was deleted: {after:?}"
    );
}

#[test]
fn a_udp_service_answers_from_every_backend() {
    if !ipvs_or_skip() {
        return;
    }
    let mut lb = Lb::new(3);
    let svc = Service::new(ServiceKey::udp(vip(53)));
    lb.service(&svc);
    let client = lb.client.path();
    // Each probe is a new socket (a new source port), so a new IPVS connection: rr
    // gives the three of them three different backends.
    let names: BTreeSet<String> = (0..3)
        .map(|_| probe::udp_probe(Some(&client), vip(53), TIMEOUT).expect("UDP answer through the VIP"))
        .collect();
    assert_eq!(names, ["b0", "b1", "b2"].map(String::from).into());
}

#[test]
fn a_fwmark_service_lists_as_made_and_changed() {
    if !ipvs_or_skip() {
        return;
    }
    let mut lb = Lb::new(1);
    let key = ServiceKey::fwmark(7);
    let svc = Service::new(key).scheduler("sh").persistent(60);
    lb.ipvs.new_service(&svc).expect("add fwmark service");
    // Port 0: the packet keeps its own destination port.
    let d = Dest::masquerade(SocketAddr::new(lb.backend(0).ip(), 0), 3);
    lb.ipvs.new_dest(&key, &d).expect("add destination");
    assert_eq!(lb.ipvs.services().expect("list services"), vec![svc.clone()]);
    assert_eq!(lb.ipvs.dests(&key).expect("list destinations"), vec![d.clone()]);
    if let Some(out) = lb.ipvsadm() {
        assert!(
            out.contains("FWM  7 sh") && out.contains("persistent 60"),
            "{out}"
        );
    }

    let changed = Service::new(key).scheduler("wrr");
    lb.ipvs.set_service(&changed).expect("set service");
    let heavier = Dest { weight: 9, ..d };
    lb.ipvs.set_dest(&key, &heavier).expect("set destination");
    assert_eq!(lb.ipvs.services().expect("list services"), vec![changed]);
    assert_eq!(lb.ipvs.dests(&key).expect("list destinations"), vec![heavier]);
    lb.ipvs.del_service(&key).expect("delete service");
    assert_eq!(lb.ipvs.services().expect("list services"), vec![]);
}

#[test]
fn duplicates_and_missing_objects_are_typed_errors() {
    if !ipvs_or_skip() {
        return;
    }
    let mut lb = Lb::new(1);
    let key = ServiceKey::tcp(vip(80));
    let svc = Service::new(key);
    let d = Dest::masquerade(lb.backend(0), 1);

    let missing = lb
        .ipvs
        .new_dest(&key, &d)
        .expect_err("destination of a missing service");
    assert!(
        matches!(
            missing,
            IpvsError::AddDest {
                source: Failure::NotFound,
                ..
            }
        ),
        "{missing}"
    );
    lb.ipvs.new_service(&svc).expect("add service");
    let dup = lb.ipvs.new_service(&svc).expect_err("second add");
    assert!(
        matches!(
            dup,
            IpvsError::AddService {
                source: Failure::Exists,
                ..
            }
        ),
        "{dup}"
    );
    assert_eq!(
        dup.to_string(),
        format!("ipvs add service tcp {VIP}:80: already exists")
    );
    lb.ipvs.new_dest(&key, &d).expect("add destination");
    let dup = lb.ipvs.new_dest(&key, &d).expect_err("second destination add");
    assert!(dup.is_exists(), "{dup}");

    let other = Dest::masquerade("10.77.99.2:8080".parse().unwrap(), 1);
    let e = lb
        .ipvs
        .del_dest(&key, other.addr)
        .expect_err("delete a missing destination");
    assert!(
        matches!(
            e,
            IpvsError::DelDest {
                source: Failure::NotFound,
                ..
            }
        ),
        "{e}"
    );
    let e = lb
        .ipvs
        .set_dest(&key, &other)
        .expect_err("set a missing destination");
    assert!(e.is_not_found(), "{e}");
    let e = lb
        .ipvs
        .drain(&key, other.addr)
        .expect_err("drain a missing destination");
    assert!(e.is_not_found(), "{e}");

    let nosuch = Service::new(ServiceKey::tcp(vip(81))).scheduler("nosuch");
    let e = lb.ipvs.new_service(&nosuch).expect_err("unknown scheduler");
    assert!(
        matches!(
            e,
            IpvsError::AddService {
                source: Failure::Kernel { .. },
                ..
            }
        ),
        "an unknown scheduler is not a missing service: {e}"
    );
    println!("unknown scheduler: {e}");

    lb.ipvs.del_service(&key).expect("delete service");
    let gone = lb.ipvs.del_service(&key).expect_err("second delete");
    assert!(
        matches!(
            gone,
            IpvsError::DelService {
                source: Failure::NotFound,
                ..
            }
        ),
        "{gone}"
    );
    assert_eq!(
        gone.to_string(),
        format!("ipvs delete service tcp {VIP}:80: not found")
    );
}
