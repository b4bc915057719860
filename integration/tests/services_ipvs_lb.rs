//! `netd::lb::ipvs::IpvsLb` (the `--lb ipvs` datapath) against a real IPVS, on the
//! topology a netd network has: a "host" namespace with a bridge (gateway 10.88.0.1/24,
//! `nf_call_iptables` on, as the network wiring sets it), the service VIP as a /32 on
//! that bridge, three backend namespaces and a client namespace on the same bridge
//! (east-west, the hard case: the reply must pass the host to be un-NATed), and an
//! "outside" namespace routed to the host for ingress ports. Each backend answers
//! `<name> <client address>` and then echoes.
//!
//! Measured: 300 connections over the VIP land 33 % ± 10 on each backend and every
//! backend sees the client's own address; a removed backend is at weight 0, gets no
//! new connection and its established one carries on, also across a later sync; a
//! restart (a new kernel handle and `IpvsLb`, then `sync_full` of the same state)
//! leaves the IPVS table and the `netd_ipvs` nft table exactly as they were and the
//! held connection working; an ingress port reached from outside answers from every
//! backend with the outside client's address; a VIP with no backend refuses at once;
//! removing every service leaves no IPVS service. Not yet: hairpin (see below).
//!
//! This kernel has no IP_VS: the tests skip here with `skip_for_lane` and run in the VM
//! lane (`scripts/vmlane-test.sh services_ipvs_lb`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::fwtest::TestNs;
use integration::skip::{no_root, skip_for_lane, this_test};
use netd::firewall::ruleset::services::{FwIngress, FwService, FwVip};
use netd::kernel::ipvs::Ipvs;
use netd::kernel::linux::LinuxKernel;
use netd::kernel::{netns, probe, sysctl, Kernel};
use netd::lb::ipvs::IpvsLb;
use netd::lb::ServiceLb;
use netd::model::Proto;

const VIP: &str = "10.88.0.100";
const CLIENT: &str = "10.88.0.50";
const OUTSIDE_HOST: &str = "10.99.0.1";
const TARGET: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(5);

fn ipvs_or_skip() -> bool {
    if no_root() {
        return false;
    }
    if !Ipvs::available().expect("probe IPVS") {
        let _ = Command::new("modprobe").arg("ip_vs").output();
        if !Ipvs::available().expect("probe IPVS") {
            return !skip_for_lane(&this_test(), "this kernel has no IPVS (CONFIG_IP_VS)");
        }
    }
    // The bridge hands bridged IP to the inet hooks only with br_netfilter (a module
    // in the lane's kernel, built in on the host's).
    let _ = Command::new("modprobe").arg("br_netfilter").output();
    true
}

struct Net {
    host: TestNs,
    client: TestNs,
    outside: TestNs,
    /// Held for their drop, which removes the namespaces.
    _backends: Vec<TestNs>,
    kernel: Arc<LinuxKernel>,
}

fn backend_ip(i: usize) -> IpAddr {
    format!("10.88.0.{}", 10 + i).parse().unwrap()
}

impl Net {
    fn new(n: usize) -> Net {
        let host = TestNs::create();
        let hp = host.path();
        netns::run_in(&hp, || sysctl::write("net/ipv4/ip_forward", "1"))
            .expect("enter host netns")
            .expect("ip_forward=1");
        host.ip(&["link", "add", "br0", "type", "bridge"]);
        host.ip(&["link", "set", "br0", "type", "bridge", "nf_call_iptables", "1"]);
        host.ip(&["addr", "add", "10.88.0.1/24", "dev", "br0"]);
        // The VIP is local (IPVS sees packets on their way in, LOCAL_IN) and answers ARP.
        host.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "br0"]);
        host.ip(&["link", "set", "br0", "up"]);
        let client = TestNs::create();
        port(&host, &client, "p50", CLIENT);
        let backends: Vec<TestNs> = (0..n)
            .map(|i| {
                let b = TestNs::create();
                port(&host, &b, &format!("p{i}"), &backend_ip(i).to_string());
                serve(&b, &format!("b{i}"));
                b
            })
            .collect();
        let outside = TestNs::create();
        host.ip(&[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.name,
        ]);
        host.ip(&["addr", "add", &format!("{OUTSIDE_HOST}/24"), "dev", "up0"]);
        host.ip(&["link", "set", "up0", "up"]);
        outside.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"]);
        outside.ip(&["link", "set", "eth0", "up"]);
        outside.ip(&["route", "add", "default", "via", OUTSIDE_HOST]);
        let kernel = Arc::new(LinuxKernel::for_netns(&hp).expect("kernel for the host netns"));
        Net {
            host,
            client,
            outside,
            _backends: backends,
            kernel,
        }
    }

    fn lb(&self) -> IpvsLb {
        IpvsLb::new(self.kernel.clone(), vec!["10.88.0.0/24".parse().unwrap()])
    }

    /// A service `web` on the VIP, port 80 -> TARGET, over backends `which`.
    fn web(&self, which: &[usize], ingress: bool) -> FwService {
        FwService {
            namespace: "default".into(),
            name: "web".into(),
            ports: vec![(80, TARGET, Proto::Tcp)],
            affinity: None,
            vips: vec![FwVip {
                network: "net".into(),
                bridge: String::new(),
                vip: VIP.parse().unwrap(),
                backends: which.iter().map(|&i| backend_ip(i)).collect(),
            }],
            ingress: ingress
                .then_some(FwIngress {
                    published: 8088,
                    target: TARGET,
                    proto: Proto::Tcp,
                })
                .into_iter()
                .collect(),
        }
    }

    /// `n` connections from `from` to `to`: per backend name, the client addresses it saw.
    fn spread(&self, from: &TestNs, to: SocketAddr, n: usize) -> BTreeMap<String, Vec<String>> {
        let seen = probe::in_netns(Some(&from.path()), move || {
            (0..n)
                .map(|_| hello(to).map(|(_, l)| l))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .unwrap_or_else(|e| panic!("connections to {to}: {e}"));
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in seen {
            let (name, peer) = line.split_once(' ').expect("name and peer");
            out.entry(name.into()).or_default().push(peer.into());
        }
        out
    }

    fn hold(&self, to: SocketAddr) -> (TcpStream, String) {
        probe::in_netns(Some(&self.client.path()), move || hello(to)).expect("held connection")
    }

    /// The IPVS table as `ipvsadm -Ln` would list it, as data.
    fn table(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (s, ds) in self.kernel.ipvs_table().expect("dump IPVS") {
            let mut ds: Vec<String> = ds
                .iter()
                .map(|d| format!("  -> {} w{} {:?}", d.addr, d.weight, d.forward))
                .collect();
            ds.sort();
            out.push(format!("{} {} f{} t{}", s.key, s.scheduler, s.flags, s.timeout));
            out.extend(ds);
        }
        out
    }
}

/// A veth from `br0` to `peer` (`eth0` at `addr`/24, default route via the gateway).
fn port(host: &TestNs, peer: &TestNs, name: &str, addr: &str) {
    host.ip(&[
        "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
    ]);
    host.ip(&["link", "set", name, "master", "br0", "up"]);
    peer.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
    peer.ip(&["link", "set", "eth0", "up"]);
    peer.ip(&["route", "add", "default", "via", "10.88.0.1"]);
}

/// TCP on TARGET in `ns`: answers `name peer-address\n`, then echoes until closed.
fn serve(ns: &TestNs, name: &str) {
    let (tl, _) = probe::bind_responder(Some(&ns.path()), vec![TARGET], vec![]).expect("bind backend");
    for l in tl {
        let name = name.to_string();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                // The listener is dual-stack: an IPv4 client shows as ::ffff:a.b.c.d.
                let peer = s
                    .peer_addr()
                    .map(|p| p.ip().to_canonical().to_string())
                    .unwrap_or_default();
                let msg = format!("{name} {peer}\n");
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
}

fn hello(to: SocketAddr) -> std::io::Result<(TcpStream, String)> {
    let mut s = TcpStream::connect_timeout(&to, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = [0u8; 128];
    let n = s.read(&mut buf)?;
    Ok((s, String::from_utf8_lossy(&buf[..n]).trim().to_string()))
}

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
fn ipvs_lb_balances_keeps_the_client_address_drains_and_survives_a_restart() {
    if !ipvs_or_skip() {
        return;
    }
    let net = Net::new(3);
    let lb = net.lb();
    let all = vec![net.web(&[0, 1, 2], false)];
    lb.sync_full(&all).expect("sync_full");
    for (k, v) in netd::kernel::ipvs::SYSCTLS {
        let got = netns::run_in(&net.host.path(), move || sysctl::read(k)).expect("enter host");
        assert_eq!(got.expect("read sysctl"), v, "{k}");
    }

    let count = net.spread(&net.client, vip(80), 300);
    let sizes: BTreeMap<&String, usize> = count.iter().map(|(k, v)| (k, v.len())).collect();
    println!("300 connections through the VIP (same bridge): {sizes:?}");
    assert_eq!(
        sizes.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["b0", "b1", "b2"]
    );
    for (name, n) in &sizes {
        assert!((70..=130).contains(n), "{name} got {n} of 300: {sizes:?}");
    }
    for (name, peers) in &count {
        assert!(
            peers.iter().all(|p| p == CLIENT),
            "{name} saw {peers:?}, not {CLIENT}"
        );
    }

    // Remove the backend of a held connection.
    let (mut held, line) = net.hold(vip(80));
    let i: usize = line[1..2].parse().expect("backend name");
    let rest: Vec<usize> = (0..3).filter(|&j| j != i).collect();
    let fewer = vec![net.web(&rest, false)];
    lb.sync_diff(&all, &fewer).expect("sync_diff");
    let gone = format!("  -> {}:{TARGET} w0 Masquerade", backend_ip(i));
    let table = net.table();
    assert!(table.contains(&gone), "{table:#?}");
    let count = net.spread(&net.client, vip(80), 60);
    println!("60 connections with b{i} at weight 0: {:?}", count.keys());
    assert!(
        !count.contains_key(&format!("b{i}")),
        "b{i} got new connections: {count:?}"
    );
    assert_eq!(count.values().map(Vec::len).sum::<usize>(), 60);
    roundtrip(&mut held, "still here\n").expect("the held connection survives weight 0");
    // A later sync keeps the destination while its connection lives.
    lb.reap(&fewer).expect("reap");
    assert!(net.table().contains(&gone));
    assert_eq!(lb.draining().len(), 1);

    // Restart: a new kernel handle and datapath that know only the state.
    let before = (net.table(), net.host.nft(&["list", "table", "inet", "netd_ipvs"]));
    drop(lb);
    let kernel2: Arc<dyn Kernel> = Arc::new(LinuxKernel::for_netns(net.host.path()).expect("kernel"));
    let lb2 = IpvsLb::new(kernel2, vec!["10.88.0.0/24".parse().unwrap()]);
    lb2.sync_full(&fewer).expect("sync_full after restart");
    let after = (net.table(), net.host.nft(&["list", "table", "inet", "netd_ipvs"]));
    assert_eq!(before, after, "a restart changed the datapath");
    roundtrip(&mut held, "after restart\n").expect("the held connection survives a restart");
    assert_eq!(
        lb2.draining().len(),
        1,
        "the restarted datapath still drains b{i}"
    );

    // Every service gone: nothing left of netd's in IPVS.
    lb2.sync_diff(&fewer, &[]).expect("remove the service");
    assert_eq!(net.table(), Vec::<String>::new());
}

#[test]
fn ipvs_lb_ingress_from_outside_and_no_backend() {
    if !ipvs_or_skip() {
        return;
    }
    let net = Net::new(3);
    let lb = net.lb();
    let mut empty = net.web(&[], false);
    empty.name = "empty".into();
    empty.ports = vec![(81, TARGET, Proto::Tcp)];
    let state = vec![net.web(&[0, 1, 2], true), empty];
    lb.sync_full(&state).expect("sync_full");

    // Ingress: the published port on the host's outside address, from outside.
    let to = SocketAddr::new(OUTSIDE_HOST.parse().unwrap(), 8088);
    let count = net.spread(&net.outside, to, 30);
    let sizes: BTreeMap<&String, usize> = count.iter().map(|(k, v)| (k, v.len())).collect();
    println!("30 connections to the ingress port from outside: {sizes:?}");
    assert_eq!(sizes.len(), 3, "every replica answers: {sizes:?}");
    assert!(count.values().flatten().all(|p| p == "10.99.0.2"), "{count:?}");

    // Hairpin (a backend reaching its own VIP) is not asserted: the `netd_ipvs`
    // masquerade does not make it work yet. Measured here: b0's connections through
    // the VIP reach b1 and b2, but one IPVS schedules to b0 itself stays in SYN_RECV
    // (`ipvsadm -Lnc`) and times out. docs/services.md lists it as not done.
    // No backend: refused at once (the host's own stack answers with a reset).
    let t = Instant::now();
    let r = probe::tcp_probe(Some(&net.client.path()), vip(81), TIMEOUT);
    let took = t.elapsed();
    println!("connection to a VIP without backend: {r:?} after {took:?}");
    assert_eq!(
        r.as_ref().map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused),
        "{r:?}"
    );

    lb.sync_diff(&state, &[]).expect("remove services");
    assert!(net.kernel.ipvs_table().expect("dump").is_empty());
    let nft = net.host.nft(&["list", "table", "inet", "netd_ipvs"]);
    assert!(!nft.contains("8088"), "{nft}");
}
