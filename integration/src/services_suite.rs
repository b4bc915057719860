//! The service conformance suite (issue 17): every scenario written once, a function
//! taking the `Datapath` it runs against (`netd daemon --lb <name>`). Test binaries
//! instantiate it with `services_scenarios!(name => Datapath::X)`, one test per
//! scenario: `integration/tests/services.rs` for nftables (runs on this host),
//! `services_ipvs_suite.rs` for IPVS (in the VM lane: a binary listed in
//! `integration/vmlane-tests` runs whole there, so IPVS has its own),
//! `services_ebpf.rs` for eBPF (socket LB; runs on this host).
//!
//! Backends are sandboxes running `harness::respond` (answers its name over TCP and
//! UDP); clients are other sandboxes or an `Outside` namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{echo, respond, respond_peer, roundtrip, tcp, udp, Host, Outside};
use crate::skip::{no_root, skip_for_lane, this_test};
use netd::kernel::ipvs::{Ipvs, Op, Service, ServiceKey};
use netd::kernel::linux::LinuxKernel;
use netd::kernel::Kernel;
use std::process::Command;

/// A datapath the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datapath {
    Nftables,
    Ipvs,
    Ebpf,
}

impl Datapath {
    fn lb(self) -> &'static str {
        match self {
            Datapath::Nftables => "nftables",
            Datapath::Ipvs => "ipvs",
            Datapath::Ebpf => "ebpf",
        }
    }

    /// A host whose daemon runs this datapath, or None (skipped, with the reason
    /// printed) where it cannot run.
    fn host(self) -> Option<Host> {
        if no_root() {
            return None;
        }
        if self == Datapath::Ipvs {
            let _ = Command::new("modprobe").arg("ip_vs").output();
            if !Ipvs::available().expect("probe IPVS") {
                skip_for_lane(&this_test(), "this kernel has no IPVS (CONFIG_IP_VS)");
                return None;
            }
            // Bridged IP reaches the inet hooks only with br_netfilter (a module in
            // the lane's kernel, built in on the host's).
            let _ = Command::new("modprobe").arg("br_netfilter").output();
        }
        if self == Datapath::Ebpf
            && !Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
            && !Path::new("/sys/fs/cgroup/cgroup.procs").exists()
        {
            crate::skip::skip(&this_test(), "no cgroup v2 hierarchy for cgroup/connect4");
            return None;
        }
        let mut h = Host::bare();
        h.daemon_args = vec!["--lb".into(), self.lb().into()];
        h.start();
        Some(h)
    }
}

/// The service's VIP on `network`.
fn vip(h: &Host, name: &str, network: &str) -> String {
    let v = h
        .client()
        .get(&format!("/v1/services/default/{name}"))
        .expect("inspect");
    v["vips"][network]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no VIP on {network}: {v}"))
        .to_string()
}

/// `n` TCP connections from inside `netns` to `addr`, counted by the name that answered
/// ("!err" for a failed connection). One thread in the namespace for all of them.
fn spread(netns: &Path, addr: &str, n: usize) -> BTreeMap<String, usize> {
    let a: SocketAddr = addr.parse().expect("address");
    netd::kernel::probe::in_netns(Some(netns), move || {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let name = TcpStream::connect_timeout(&a, Duration::from_millis(500))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_millis(500)))?;
                    let mut out = String::new();
                    s.read_to_string(&mut out)?;
                    Ok(out.trim().to_string())
                })
                .unwrap_or_else(|_| "!err".into());
            *seen.entry(name).or_insert(0) += 1;
        }
        Ok(seen)
    })
    .expect("connections")
}

/// A network `n` (10.90.0.0/24) and backends `web1..=k` labelled app=web answering
/// their names on TCP and UDP 8080.
fn backends(h: &Host, k: usize) {
    h.ctl(&["network", "create", "n", "--subnet", "10.90.0.0/24"]);
    for i in 1..=k {
        backend(h, &format!("web{i}"), "n");
    }
}

fn backend(h: &Host, name: &str, network: &str) {
    h.ctl(&[
        "sandbox",
        "create",
        name,
        "--network",
        network,
        "--label",
        "app=web",
    ]);
    respond(&h.sb(name), name, &[8080], &[8080]);
}

fn web_service(h: &Host, extra: &[&str]) -> String {
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    h.ctl(&args);
    vip(h, "web", "n")
}

/// The host namespace's IPVS table as `ipvsadm -Ln` lists it (settings, destinations
/// and weights; no counters), empty where IPVS is absent.
fn ipvs_text(h: &Host) -> String {
    let ns = h.netns();
    netd::kernel::probe::in_netns(None, move || {
        if !Ipvs::available().unwrap_or(false) {
            return Ok(String::new());
        }
        let k = LinuxKernel::for_netns(&ns).map_err(std::io::Error::other)?;
        let mut out = Vec::new();
        for (s, ds) in k.ipvs_table().map_err(std::io::Error::other)? {
            out.push(format!("{} {} f{} t{}", s.key, s.scheduler, s.flags, s.timeout));
            let mut ds: Vec<String> = ds
                .iter()
                .map(|d| format!("  -> {} w{} {:?}", d.addr, d.weight, d.forward))
                .collect();
            ds.sort();
            out.extend(ds);
        }
        Ok(out.join("\n"))
    })
    .expect("dump IPVS")
}

/// A leftover of a service removed while netd was down, in `dp`'s own objects: a
/// restart must delete it.
fn plant_leftover(h: &Host, dp: Datapath) {
    match dp {
        Datapath::Nftables => {
            let o = h.sh("nft add chain inet netd svc/default/ghost/n/tcp/80");
            assert!(o.ok(), "{}", o.stderr);
        }
        Datapath::Ipvs => {
            let ns = h.netns();
            netd::kernel::probe::in_netns(None, move || {
                let k = LinuxKernel::for_netns(&ns).map_err(std::io::Error::other)?;
                let key = ServiceKey::tcp("10.90.0.250:80".parse().expect("addr"));
                k.ipvs_apply(&[Op::AddService(Service::new(key).scheduler("rr"))])
                    .map_err(std::io::Error::other)
            })
            .expect("plant an IPVS leftover");
        }
        Datapath::Ebpf => {
            // A reverse-NAT entry of a service that no longer exists.
            let d = ebpf_dir(h);
            let o = h.sh(&format!(
                "bpftool map update pinned {}/netd_lb4_reverse_nat key 0xff 0xff value 10 90 0 250 0 80 0 0",
                d.display()
            ));
            assert!(o.ok(), "{}", o.stderr);
        }
    }
}

/// Where `h`'s daemon pins its eBPF objects.
fn ebpf_dir(h: &Host) -> std::path::PathBuf {
    netd::kernel::bpf::pin_dir_for(Path::new(netd::kernel::bpf::PIN_ROOT), &h.netns())
        .expect("the host's namespace")
}

/// The eBPF datapath's maps netd writes (empty where there are none): `bpftool map
/// dump` of each, which lists entries in hash order, sorted here.
fn ebpf_text(h: &Host) -> String {
    let d = ebpf_dir(h);
    let mut out = Vec::new();
    for m in [
        "netd_lb4_services",
        "netd_lb4_backends",
        "netd_lb4_reverse_nat",
        "netd_lb4_scope",
    ] {
        let p = d.join(m);
        if !p.exists() {
            continue;
        }
        let o = h.sh(&format!("bpftool -j map dump pinned {}", p.display()));
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap_or_default();
        let mut lines: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("{m} {} {}", e["key"], e["value"]))
            .collect();
        lines.sort();
        out.extend(lines);
    }
    out.join("\n")
}

/// The nft ruleset, the host's addresses and its IPVS table: what a restart must leave
/// as it was (an affinity entry's remaining time, which counts down, left out).
fn datapath_text(h: &Host) -> (String, String, String) {
    let r = h.sh("nft list ruleset");
    let a = h.sh("ip -j addr show");
    assert!(r.ok() && a.ok());
    let rules = r
        .stdout
        .split(" expires ")
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part
            } else {
                part.trim_start_matches(|c: char| c.is_ascii_alphanumeric())
            }
        })
        .collect::<Vec<_>>()
        .join(" expires _");
    (rules, a.stdout, format!("{}{}", ipvs_text(h), ebpf_text(h)))
}

pub fn basic_create_and_rm(dp: Datapath) {
    let Some(h) = dp.host() else { return };
    backends(&h, 1);
    h.ctl(&["sandbox", "create", "client", "--network", "n"]);
    let before_rm = datapath_text(&h);
    let vip = web_service(&h, &[]);
    assert_eq!(
        tcp(Some(&h.sb("client")), &format!("{vip}:80"), 1000).as_deref(),
        Some("web1")
    );
    // The VIP is the host's, on the bridge, with nf_call_iptables on.
    let br = h.sh("ip -d -j link show netd-n").stdout;
    assert!(br.contains("\"nf_call_iptables\":1"), "{br}");
    assert!(h.sh("ip -j addr show dev netd-n").stdout.contains(&vip));
    let v = h.client().get("/v1/services/default/web").unwrap();
    assert_eq!(v["live_backends"][0]["sandbox"], "web1", "{v}");
    assert_eq!(v["datapath"], dp.lb(), "inspect names the datapath: {v}");
    let ls = h.ctl(&["service", "ls"]);
    assert!(
        ls.contains(&format!("n={vip}")) && ls.contains("backends=1"),
        "{ls}"
    );
    let j: serde_json::Value = serde_json::from_str(&h.ctl(&["service", "ls", "--json"])).unwrap();
    assert_eq!(j[0]["vips"]["n"], vip.as_str());
    h.assert_consistent();
    h.ctl(&["service", "rm", "web"]);
    assert_eq!(tcp(Some(&h.sb("client")), &format!("{vip}:80"), 300), None);
    // Nothing left: no svc/ chain, no VIP, no lease, nf_call off again.
    let after = datapath_text(&h);
    assert!(!after.0.contains("svc/"), "{}", after.0);
    assert_eq!(after.2, "", "rm left an IPVS service behind");
    // The (empty) base chains and maps of the service layout stay once made.
    assert_eq!(after.1, before_rm.1, "rm left an address behind");
    h.assert_consistent();
}

pub fn balances_three_backends(dp: Datapath) {
    let Some(h) = dp.host() else { return };
    backends(&h, 3);
    h.ctl(&["sandbox", "create", "client", "--network", "n"]);
    let vip = web_service(&h, &[]);
    let seen = spread(&h.sb("client"), &format!("{vip}:80"), 1000);
    println!("1000 connections over 3 backends: {seen:?}");
    assert_eq!(seen.len(), 3, "{seen:?}");
    for i in 1..=3 {
        let c = seen.get(&format!("web{i}")).copied().unwrap_or(0);
        assert!(
            (260..=400).contains(&c),
            "web{i} got {c} of 1000 (33% ± 7): {seen:?}"
        );
    }
}

pub fn removed_backend_keeps_its_flow(dp: Datapath) {
    let Some(h) = dp.host() else { return };
    h.ctl(&["network", "create", "n", "--subnet", "10.90.0.0/24"]);
    for b in ["a", "b"] {
        h.ctl(&["sandbox", "create", b, "--network", "n"]);
        respond(&h.sb(b), b, &[8080], &[]);
        echo(&h.sb(b), 9000);
    }
    h.ctl(&["sandbox", "create", "client", "--network", "n"]);
    h.ctl(&[
        "service",
        "create",
        "web",
        "--network",
        "n",
        "--backend",
        "a",
        "--port",
        "80:8080",
        "--port",
        "90:9000",
    ]);
    let vip = vip(&h, "web", "n");
    let addr: SocketAddr = format!("{vip}:90").parse().unwrap();
    let mut flow = netd::kernel::probe::in_netns(Some(&h.sb("client")), move || {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        Ok(s)
    })
    .expect("flow through the VIP");
    assert!(roundtrip(&mut flow, "before\n"));
    h.ctl(&[
        "service",
        "update",
        "web",
        "--add-backend",
        "b",
        "--rm-backend",
        "a",
    ]);
    let seen = spread(&h.sb("client"), &format!("{vip}:80"), 100);
    assert_eq!(
        seen.get("b"),
        Some(&100),
        "a removed backend got new connections: {seen:?}"
    );
    assert!(
        roundtrip(&mut flow, "after\n"),
        "the established flow to a did not survive"
    );
}

pub fn scales_1_5_0_2(dp: Datapath) {
    let Some(h) = dp.host() else { return };
    backends(&h, 1);
    h.ctl(&["sandbox", "create", "client", "--network", "n"]);
    let vip = web_service(&h, &[]);
    let at = format!("{vip}:80");
    let names = |n| spread(&h.sb("client"), &at, n);
    assert_eq!(names(20).keys().collect::<Vec<_>>(), ["web1"]);
    for i in 2..=5 {
        backend(&h, &format!("web{i}"), "n");
    }
    let seen = names(200);
    assert_eq!(seen.len(), 5, "5 backends: {seen:?}");
    assert!(!seen.contains_key("!err"));
    for i in 1..=5 {
        h.ctl(&["sandbox", "rm", &format!("web{i}")]);
    }
    assert_eq!(names(5).keys().collect::<Vec<_>>(), ["!err"]);
    for i in 6..=7 {
        backend(&h, &format!("web{i}"), "n");
    }
    let seen = names(100);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["web6", "web7"], "{seen:?}");
    h.assert_consistent();
}

pub fn udp_vip(dp: Datapath) {
    let Some(h) = dp.host() else { return };
    backends(&h, 2);
    h.ctl(&["sandbox", "create", "client", "--network", "n"]);
    let vip = web_service(&h, &[]);
    let mut seen = BTreeMap::new();
    for _ in 0..40 {
        let a = udp(Some(&h.sb("client")), &format!("{vip}:80"), 500).unwrap_or_else(|| "!err".into());
        *seen.entry(a).or_insert(0) += 1;
    }
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["web1", "web2"], "{seen:?}");
}

pub fn session_affinity_sticks(dp: Datapath) {
    let Some(h) = dp.host() else { return };
    backends(&h, 3);
    h.ctl(&["sandbox", "create", "client", "--network", "n"]);
    let vip = web_service(&h, &["--session-affinity", "client-ip:60"]);
    let seen = spread(&h.sb("client"), &format!("{vip}:80"), 60);
    assert_eq!(seen.len(), 1, "one client, one backend: {seen:?}");
    assert!(!seen.contains_key("!err"));
}

pub fn ingress_port_reaches_every_replica(dp: Datapath) {
    let Some(h) = dp.host() else { return };
    backends(&h, 3);
    web_service(&h, &["-p", "8088:8080"]);
    let out = Outside::new(&h, 71);
    let seen = spread(&out.netns(), &format!("{}:8088", out.host_ip), 150);
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["web1", "web2", "web3"],
        "{seen:?}"
    );
    // Under --lb ebpf what arrives from outside is nftables' here (the outside link
    // came after the service, so the tc routing mesh is on no device: it follows devices
    // when the ports it serves change), and inspect says so.
    let v = h.client().get("/v1/services/default/web").unwrap();
    let want = match dp {
        Datapath::Ebpf => "ebpf (east-west), nftables (ingress ports)",
        _ => dp.lb(),
    };
    assert_eq!(v["datapath"], want, "{v}");
    // The port is held: a sandbox cannot publish it.
    let o = h.netctl(&["sandbox", "create", "x", "--network", "n", "-p", "8088:80"]);
    assert!(
        !o.ok() && o.stderr.contains("service default/web"),
        "{}",
        o.stderr
    );
}

pub fn host_mode_publish(dp: Datapath) {
    let Some(h) = dp.host() else { return };
    backends(&h, 2);
    web_service(&h, &["-p", "9090:8080,mode=host"]);
    let out = Outside::new(&h, 72);
    let seen = spread(&out.netns(), &format!("{}:9090", out.host_ip), 20);
    // One host: the first backend holds the host port (Docker's mode=host per node).
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["web1"], "{seen:?}");
    h.ctl(&["sandbox", "rm", "web1"]);
    let seen = spread(&out.netns(), &format!("{}:9090", out.host_ip), 20);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["web2"], "{seen:?}");
}

pub fn hairpin_and_client_address(dp: Datapath) {
    let Some(h) = dp.host() else { return };
    h.ctl(&["network", "create", "n", "--subnet", "10.90.0.0/24"]);
    h.ctl(&[
        "sandbox",
        "create",
        "only",
        "--network",
        "n",
        "--label",
        "app=web",
    ]);
    respond(&h.sb("only"), "only", &[8080], &[]);
    respond_peer(&h.sb("only"), 7000);
    h.ctl(&["sandbox", "create", "client", "--network", "n"]);
    let vip = web_service(&h, &["--port", "70:7000"]);
    // A backend reaching its own VIP is DNATed to itself and answered.
    assert_eq!(
        tcp(Some(&h.sb("only")), &format!("{vip}:80"), 1000).as_deref(),
        Some("only")
    );
    // East-west, the backend sees the client's own address.
    let client = h.ip("client", "n");
    assert_eq!(
        tcp(Some(&h.sb("client")), &format!("{vip}:70"), 1000),
        Some(client)
    );
}

pub fn other_network_cannot_reach_the_vip(dp: Datapath) {
    let Some(h) = dp.host() else { return };
    backends(&h, 1);
    h.ctl(&["network", "create", "other", "--subnet", "10.91.0.0/24"]);
    h.ctl(&["sandbox", "create", "client", "--network", "n"]);
    h.ctl(&["sandbox", "create", "stranger", "--network", "other"]);
    let vip = web_service(&h, &[]);
    assert_eq!(
        tcp(Some(&h.sb("client")), &format!("{vip}:80"), 1000).as_deref(),
        Some("web1")
    );
    assert_eq!(tcp(Some(&h.sb("stranger")), &format!("{vip}:80"), 500), None);
    assert_eq!(udp(Some(&h.sb("stranger")), &format!("{vip}:80"), 300), None);
    // The host itself reaches it.
    assert_eq!(
        tcp(Some(&h.netns()), &format!("{vip}:80"), 1000).as_deref(),
        Some("web1")
    );
}

pub fn no_backend_rejects_at_once(dp: Datapath) {
    let Some(h) = dp.host() else { return };
    h.ctl(&["network", "create", "n", "--subnet", "10.90.0.0/24"]);
    h.ctl(&["sandbox", "create", "client", "--network", "n"]);
    let vip = web_service(&h, &[]);
    let addr: SocketAddr = format!("{vip}:80").parse().unwrap();
    let (kind, took) = netd::kernel::probe::in_netns(Some(&h.sb("client")), move || {
        let t0 = Instant::now();
        let e = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(drop);
        Ok((e.err().map(|e| e.kind()), t0.elapsed()))
    })
    .unwrap();
    println!("no backend: {kind:?} after {took:?}");
    assert_eq!(kind, Some(std::io::ErrorKind::ConnectionRefused));
    // Generous: a reset answers within a millisecond here; a timeout would take seconds.
    assert!(took < Duration::from_millis(100), "{took:?}");
}

pub fn kill9_and_restart_change_nothing(dp: Datapath) {
    let Some(mut h) = dp.host() else { return };
    backends(&h, 2);
    h.ctl(&["sandbox", "create", "client", "--network", "n"]);
    let vip = web_service(&h, &["--session-affinity", "client-ip:60", "-p", "8088:8080"]);
    h.ctl(&[
        "service",
        "create",
        "gone",
        "--network",
        "n",
        "--selector",
        "app=web",
        "--port",
        "81:8080",
    ]);
    let at = format!("{vip}:80");
    assert!(!spread(&h.sb("client"), &at, 10).contains_key("!err"));
    h.ctl(&["service", "rm", "gone"]);
    let before = datapath_text(&h);
    h.kill9();
    // The datapath is the kernel's: the VIP answers with netd dead.
    assert!(!spread(&h.sb("client"), &at, 10).contains_key("!err"));
    plant_leftover(&h, dp);
    assert_ne!(datapath_text(&h), before, "the leftover is not seen");
    h.start();
    assert_eq!(datapath_text(&h), before, "restart changed the datapath");
    assert!(!spread(&h.sb("client"), &at, 10).contains_key("!err"));
    h.assert_consistent();
}

pub fn bad_input_changes_nothing(dp: Datapath) {
    let Some(h) = dp.host() else { return };
    h.ctl(&["network", "create", "n", "--subnet", "10.90.0.0/24"]);
    h.ctl(&["sandbox", "create", "s1", "--network", "n", "-p", "8080:80"]);
    h.ctl(&[
        "service",
        "create",
        "web",
        "--network",
        "n",
        "--port",
        "80",
        "-p",
        "8081:80",
        "--vip",
        "n=10.90.0.200",
    ]);
    let before = h.snapshot();
    let cases: &[(&[&str], &str)] = &[
        (
            &["service", "create", "web", "--network", "n", "--port", "80"],
            "already exists",
        ),
        (
            &["service", "create", "x", "--network", "nope", "--port", "80"],
            "no such network: nope",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n",
                "--port",
                "80",
                "--backend",
                "ghost",
            ],
            "no such sandbox: ghost",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n",
                "--port",
                "80",
                "--vip",
                "n=10.99.0.5",
            ],
            "outside every subnet",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n",
                "--port",
                "80",
                "--vip",
                "n=10.90.0.1",
            ],
            "gateway",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n",
                "--port",
                "80",
                "--vip",
                "n=10.90.0.200",
            ],
            "taken",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n",
                "--port",
                "80",
                "--vip",
                "n=10.90.0.2",
            ],
            "taken",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n",
                "--port",
                "80",
                "-p",
                "8080:80",
            ],
            "already used by sandbox s1",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n",
                "--port",
                "80",
                "-p",
                "8081:80",
            ],
            "already used by service default/web",
        ),
        (
            &["sandbox", "create", "s2", "--network", "n", "-p", "8081:80"],
            "already published by service default/web",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n",
                "--port",
                "80",
                "--selector",
                "app",
            ],
            "expected KEY=VALUE",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n",
                "--port",
                "80",
                "--selector=-a=b",
            ],
            "selector key",
        ),
        (
            &["service", "create", "x", "--network", "n", "--port", "0"],
            "port 0",
        ),
        (&["service", "create", "x", "--network", "n"], "at least one port"),
        (
            &["service", "update", "web", "--rm-backend", "s1"],
            "not a named backend",
        ),
        (
            &["service", "update", "nope", "--add-backend", "s1"],
            "no such service",
        ),
        (&["network", "rm", "n"], "active endpoints"),
        (&["service", "rm", "nope"], "no such service"),
    ];
    for (args, want) in cases {
        let o = h.netctl(args);
        assert!(!o.ok(), "{args:?} succeeded");
        let err = o.stderr.trim();
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        assert_eq!(h.snapshot(), before, "{args:?} changed state");
    }
    // A network a service still uses is not removed.
    h.ctl(&["sandbox", "rm", "s1"]);
    let o = h.netctl(&["network", "rm", "n"]);
    assert!(
        !o.ok() && o.stderr.contains("used by services (default/web)"),
        "{}",
        o.stderr
    );
    h.assert_consistent();
}

/// The addresses in `dig NAME A` from inside `sandbox`, in answer order.
fn resolve(h: &Host, sandbox: &str, name: &str) -> Vec<String> {
    let (st, ans) = crate::dig::dig(h, sandbox, &format!("{name} A"));
    assert_eq!(st, "NOERROR", "{name}: {ans:?}");
    ans.iter()
        .filter(|l| l.contains(" IN A "))
        .filter_map(|l| l.rsplit(' ').next().map(str::to_string))
        .collect()
}

/// DNS from inside a client leads to the backends: `web` is the VIP (and reaches a
/// backend), `tasks.web` is every backend, and a dnsrr service's name gives every
/// backend first in turn, so a client taking the first answer spreads over them.
/// (The names themselves: `dns_cluster_ip.rs`.)
pub fn dns_vip_tasks_and_dnsrr(dp: Datapath) {
    // The VM lane's image has no dig; the DNS answers do not depend on the datapath.
    if crate::skip::in_vm_lane() && !crate::skip::on_path("dig") {
        crate::skip::skip_in_lane(
            &this_test(),
            "dig (bind9-dnsutils) is not in the VM lane's image (NETD_VMLANE_TOOLS=/usr/bin/dig adds it)",
        );
        return;
    }
    if crate::dig::dig_missing() {
        return;
    }
    let Some(h) = dp.host() else { return };
    backends(&h, 3);
    h.ctl(&["sandbox", "create", "client", "--network", "n"]);
    let vip = web_service(&h, &[]);
    let c = h.sb("client");
    assert_eq!(resolve(&h, "client", "web"), std::slice::from_ref(&vip));
    let by_vip = tcp(Some(&c), &format!("{vip}:80"), 1000).expect("through the VIP");
    assert!(by_vip.starts_with("web"), "{by_vip}");
    let all: BTreeSet<String> = (1..=3).map(|i| format!("web{i}")).collect();
    let tasks = resolve(&h, "client", "tasks.web");
    let reached: BTreeSet<String> = tasks
        .iter()
        .map(|ip| tcp(Some(&c), &format!("{ip}:8080"), 1000).unwrap_or_else(|| format!("!{ip}")))
        .collect();
    assert_eq!(reached, all, "tasks.web = {tasks:?}");

    h.ctl(&[
        "service",
        "create",
        "rr",
        "--network",
        "n",
        "--endpoint-mode",
        "dnsrr",
        "--selector",
        "app=web",
    ]);
    let firsts: BTreeSet<String> = (0..3)
        .map(|_| {
            let a = resolve(&h, "client", "rr");
            assert_eq!(a.len(), 3, "{a:?}");
            tcp(Some(&c), &format!("{}:8080", a[0]), 1000).unwrap_or_else(|| format!("!{}", a[0]))
        })
        .collect();
    assert_eq!(
        firsts, all,
        "three answers of rr, each first address a different backend"
    );
}

/// One test per scenario and datapath: `<datapath>::<scenario>`.
#[macro_export]
macro_rules! services_scenarios {
    ($dp:ident => $variant:expr) => {
        mod $dp {
            $crate::services_scenarios!(@each $variant;
                basic_create_and_rm,
                balances_three_backends,
                removed_backend_keeps_its_flow,
                scales_1_5_0_2,
                udp_vip,
                session_affinity_sticks,
                ingress_port_reaches_every_replica,
                host_mode_publish,
                hairpin_and_client_address,
                other_network_cannot_reach_the_vip,
                no_backend_rejects_at_once,
                kill9_and_restart_change_nothing,
                bad_input_changes_nothing,
                dns_vip_tasks_and_dnsrr,
            );
        }
    };
    (@each $variant:expr; $($scenario:ident),* $(,)?) => {
        $(#[test]
        fn $scenario() {
            $crate::services_suite::$scenario($variant)
        })*
    };
}
