//! netd as Docker's network and IPAM plugin, driven by a real dockerd (Debian's 20.10,
//! started by `../shared/engines/dockerd.sh` in the test host's namespace with its own
//! state) and the real `/usr/bin/docker` CLI. Each test has its own host namespace,
//! dockerd and netd; everything goes when the test ends, also on failure.
//!
//! Skipped with a printed reason (a failure under NETD_TEST_REQUIRE=1) when not root,
//! when docker is not installed, or when dockerd cannot start here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use integration::harness::{run, tcp, Host, Out, Outside};
use integration::skip::{no_file, no_root, skip, this_test};
use serde_json::Value;

fn engines_dir() -> PathBuf {
    std::env::var_os("NETD_SHARED_ENGINES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/engines"))
}

struct Docker {
    h: Host,
    engine: PathBuf,
}

impl Docker {
    fn start() -> Option<Docker> {
        if no_root() {
            return None;
        }
        let script = engines_dir().join("dockerd.sh");
        for (p, hint) in [
            (
                PathBuf::from("/usr/bin/docker"),
                "scripts/install-deps.sh installs docker.io",
            ),
            (
                PathBuf::from("/usr/sbin/dockerd"),
                "scripts/install-deps.sh installs docker.io",
            ),
            (script, "../shared/engines, beside the repository"),
        ] {
            if no_file(&p, hint) {
                return None;
            }
        }
        let mut h = Host::bare();
        let engine = h.base.join("engine");
        h.docker_plugin_dir = engine.join("dockerd/run-docker/plugins");
        let d = Docker { h, engine };
        let o = d.script("start");
        if !o.ok() {
            skip(
                &this_test(),
                format!("dockerd cannot start here: {} {}", o.stdout, o.stderr),
            );
            return None;
        }
        let mut d = d;
        d.h.start();
        Some(d)
    }

    fn script(&self, arg: &str) -> Out {
        run(Command::new(engines_dir().join("dockerd.sh"))
            .arg(arg)
            .env("NETD_ENGINE_DIR", &self.engine)
            .env("NETD_ENGINE_NETNS", &self.h.name))
    }

    /// `dockerd.sh restart`; on a loaded machine dockerd may answer only after the
    /// script's 30 s, so give it a minute more before calling it a failure.
    fn restart_dockerd(&self) {
        let o = self.script("restart");
        if !o.ok() {
            println!(
                "dockerd.sh restart: {} {}; waiting longer",
                o.stdout.trim(),
                o.stderr.trim()
            );
            wait_for_secs("dockerd", 60, || self.docker(&["version"]).ok());
        }
    }

    fn docker(&self, args: &[&str]) -> Out {
        run(Command::new("/usr/bin/docker")
            .arg("-H")
            .arg(format!(
                "unix://{}",
                self.engine.join("dockerd/docker.sock").display()
            ))
            .args(args))
    }

    /// `docker ARGS` that must succeed; trimmed stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.ok(),
            "docker {args:?} failed: {}\nnetd log:\n{}",
            o.stderr,
            tail(&self.h.log())
        );
        o.stdout.trim().to_string()
    }

    /// `docker ARGS` that must fail; its error text.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(!o.ok(), "docker {args:?} should have failed: {}", o.stdout);
        o.stderr
    }

    fn ip(&self, c: &str, net: &str) -> String {
        self.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
            c,
        ])
    }

    fn ping(&self, c: &str, addr: &str) -> bool {
        self.docker(&["exec", c, "ping", "-c1", "-W2", addr]).ok()
    }

    /// What a `nc -ll -e echo NAME` server at addr:port answers, from container `c`.
    fn nc(&self, c: &str, addr: &str, port: u16) -> String {
        self.docker(&["exec", c, "nc", "-w2", addr, &port.to_string()])
            .stdout
            .trim()
            .to_string()
    }

    /// A container answering TCP on `port` with its name.
    fn server(&self, name: &str, extra: &[&str], port: u16) {
        let p = port.to_string();
        // nc as PID 1 ignores SIGTERM: without a short stop timeout, `dockerd.sh restart`
        // (10 s grace) kills dockerd while it still waits for its containers, leaving a
        // containerd behind that the next dockerd cannot replace.
        let mut args = vec!["run", "-d", "--stop-timeout", "1", "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["netd/busybox", "nc", "-ll", "-p", &p, "-e", "echo", name]);
        self.ok(&args);
    }

    fn netctl_json(&self, what: &str) -> Value {
        serde_json::from_str(&self.h.ctl(&[what, "ls", "--json"])).expect("netctl json")
    }

    /// Links, nft rules and leases netd holds for Docker: what must be gone at the end.
    fn leftovers(&self, subnet_prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let links = self.h.sh("ip -o link show").stdout;
        for l in links.lines() {
            if l.contains("netd-dk") || l.contains("nddk-") || l.contains("dkp") {
                out.push(format!("link: {l}"));
            }
        }
        let rules = self
            .h
            .sh("nft list table inet netd; nft list table bridge netd")
            .stdout;
        for l in rules.lines() {
            if l.contains(subnet_prefix) || l.contains("nddk-") {
                out.push(format!("nft: {}", l.trim()));
            }
        }
        let pools = self.h.client().get("/v1/pools").expect("pools");
        let text = pools.to_string();
        if text.contains(subnet_prefix) {
            out.push(format!("pool: {text}"));
        }
        for s in self.netctl_json("sandbox").as_array().into_iter().flatten() {
            out.push(format!("sandbox: {}", s["name"]));
        }
        out
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.engine.join("dockerd/dockerd.log")).unwrap_or_default();
            println!(
                "dockerd log (tail):\n{}\nnetd log (tail):\n{}",
                tail(&log),
                tail(&self.h.log())
            );
        }
        let ids = self.docker(&["ps", "-aq"]).stdout;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.docker(&args);
        }
        self.h.kill9();
        // Also deletes the host namespace (Host's own drop then finds it gone).
        let _ = self.script("stop");
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    wait_for_secs(what, 10, f)
}

fn wait_for_secs(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `docker network create -d netd --ipam-driver netd` followed by `rest`.
fn netd_create<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["network", "create", "-d", "netd", "--ipam-driver", "netd"];
    v.extend_from_slice(rest);
    v
}

#[test]
fn docker_network_reach_publish_and_cleanup() {
    let Some(d) = Docker::start() else { return };
    d.ok(&netd_create(&["--subnet", "10.231.0.0/24", "n1"]));
    let ls = d.h.ctl(&["network", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.contains("10.231.0.0/24") && l.contains("docker")),
        "network ls marks Docker's network:\n{ls}"
    );
    let ipam = d.ok(&["network", "inspect", "-f", "{{json .IPAM}}", "n1"]);
    assert!(
        ipam.contains("\"Driver\":\"netd\"") && ipam.contains("10.231.0.0/24"),
        "{ipam}"
    );

    d.server("c1", &["--network", "n1"], 80);
    d.server("c2", &["--network", "n1", "-p", "8080:80"], 80);
    let (ip1, ip2) = (d.ip("c1", "n1"), d.ip("c2", "n1"));
    assert!(ip1.starts_with("10.231.0.") && ip2.starts_with("10.231.0.") && ip1 != ip2);
    assert!(d.ping("c1", &ip2), "c1 pings c2");
    assert_eq!(d.nc("c2", &ip1, 80), "c1", "c2 reaches c1 over TCP");
    let mac = d.ok(&["exec", "c1", "cat", "/sys/class/net/eth0/address"]);
    let o: Vec<u8> = ip1.split('.').map(|x| x.parse().unwrap()).collect();
    assert_eq!(
        mac,
        format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    );
    let route = d.ok(&["exec", "c1", "ip", "route"]);
    assert!(route.contains("default via 10.231.0.1"), "{route}");

    // Anti-spoofing holds for Docker's endpoints too: a container that can change its
    // address (NET_ADMIN) gets nowhere with a source that is not its own.
    d.ok(&[
        "run",
        "-d",
        "--stop-timeout",
        "1",
        "--name",
        "sp",
        "--cap-add",
        "NET_ADMIN",
        "--network",
        "n1",
        "netd/busybox",
        "sleep",
        "1000",
    ]);
    assert!(d.ping("sp", &ip1), "sp pings with its own address");
    d.ok(&["exec", "sp", "ip", "addr", "add", "10.231.0.99/24", "dev", "eth0"]);
    assert!(
        !d.docker(&["exec", "sp", "ping", "-c1", "-W2", "-I", "10.231.0.99", &ip1])
            .ok(),
        "spoofed source address got through"
    );

    // -p 8080:80 from another machine, through the host's address.
    let out = Outside::new(&d.h, 232);
    assert_eq!(
        tcp(Some(&out.netns()), &format!("{}:8080", out.host_ip), 3000).as_deref(),
        Some("c2"),
        "published port from outside"
    );
    // -P: every exposed port on an ephemeral host port (netctl shows which).
    d.server("c3", &["--network", "n1", "-P", "--expose", "90"], 90);
    let sbs = d.netctl_json("sandbox");
    let port = sbs
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["ports"].as_array().cloned().unwrap_or_default())
        .find(|p| p["container_port"] == 90)
        .map(|p| p["host_port"].as_u64().unwrap())
        .expect("-P mapping in netd");
    assert!(port >= 49153);
    assert_eq!(
        tcp(Some(&out.netns()), &format!("{}:{port}", out.host_ip), 3000).as_deref(),
        Some("c3"),
        "-P port from outside"
    );
    // A second network is isolated from the first.
    d.ok(&netd_create(&["--subnet", "10.233.0.0/24", "n2"]));
    d.server("c4", &["--network", "n2"], 80);
    assert!(!d.ping("c4", &ip1), "networks are isolated");

    // --rm containers and removals leave nothing.
    assert!(d
        .ok(&[
            "run",
            "--rm",
            "--network",
            "n1",
            "netd/busybox",
            "ip",
            "-4",
            "addr",
            "show",
            "eth0"
        ])
        .contains("10.231.0."));
    d.ok(&["rm", "-f", "c1", "c2", "c3", "c4", "sp"]);
    d.ok(&["network", "rm", "n1", "n2"]);
    d.h.client().get("/v1/health").expect("netd alive");
    let left = [d.leftovers("10.231.0."), d.leftovers("10.233.0.")].concat();
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert!(!d.h.ctl(&["network", "ls"]).contains("docker"));
}

#[test]
fn docker_internal_ipv6_static_and_connect() {
    let Some(d) = Docker::start() else { return };
    let out = Outside::new(&d.h, 234);
    d.ok(&netd_create(&["--internal", "--subnet", "10.235.0.0/24", "int"]));
    d.ok(&netd_create(&[
        "--subnet",
        "10.236.0.0/24",
        "--ipv6",
        "--subnet",
        "fd36::/64",
        "v6",
    ]));
    // --internal: containers reach each other, nothing outside.
    d.server("i1", &["--network", "int"], 80);
    d.server("i2", &["--network", "int"], 80);
    assert_eq!(d.nc("i2", &d.ip("i1", "int"), 80), "i1");
    assert!(!d.ping("i1", &out.ip), "internal network reaches outside");
    assert!(!d.ok(&["exec", "i1", "ip", "route"]).contains("default"));
    // Like Docker's bridge, an internal network publishes nothing.
    d.server("i3", &["--network", "int", "-p", "8181:80"], 80);
    assert_eq!(
        tcp(Some(&out.netns()), &format!("{}:8181", out.host_ip), 1500),
        None
    );

    // --ip, --mac-address, IPv6.
    d.server(
        "s1",
        &[
            "--network",
            "v6",
            "--ip",
            "10.236.0.42",
            "--mac-address",
            "02:00:00:00:00:42",
        ],
        80,
    );
    d.server("s2", &["--network", "v6"], 80);
    let a = d.ok(&["exec", "s1", "ip", "addr", "show", "eth0"]);
    assert!(
        a.contains("10.236.0.42/24") && a.contains("02:00:00:00:00:42") && a.contains("fd36::"),
        "{a}"
    );
    let v6 = d.ok(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"v6\").GlobalIPv6Address}}",
        "s1",
    ]);
    assert!(v6.starts_with("fd36::"), "{v6}");
    wait_for("IPv6 DAD", || {
        d.docker(&["exec", "s2", "ping", "-6", "-c1", "-W2", &v6]).ok()
    });
    assert!(d.ping("s2", "10.236.0.42"));
    // Static address in use -> Docker's error carries netd's reason.
    let err = d.fails(&[
        "run",
        "--rm",
        "--network",
        "v6",
        "--ip",
        "10.236.0.42",
        "netd/busybox",
        "true",
    ]);
    assert!(err.contains("in use"), "{err}");

    // connect / disconnect on a running container.
    d.ok(&["network", "connect", "int", "s2"]);
    let ip = d.ip("s2", "int");
    assert!(ip.starts_with("10.235.0."), "{ip}");
    assert_eq!(d.nc("s2", &d.ip("i1", "int"), 80), "i1");
    assert!(d.ping("i1", &ip));
    d.ok(&["network", "disconnect", "int", "s2"]);
    assert!(!d.ok(&["exec", "s2", "ip", "-4", "addr"]).contains("10.235.0."));
    assert!(!d.ping("i1", &ip));
    assert!(d.ping("s2", "10.236.0.42"), "the other network still works");

    d.ok(&["rm", "-f", "i1", "i2", "i3", "s1", "s2"]);
    d.ok(&["network", "rm", "int", "v6"]);
    let left = [
        d.leftovers("10.235.0."),
        d.leftovers("10.236.0."),
        d.leftovers("fd36:"),
    ]
    .concat();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn docker_survives_dockerd_restart_and_netd_kill9() {
    let Some(mut d) = Docker::start() else { return };
    d.ok(&netd_create(&["--subnet", "10.237.0.0/24", "n"]));
    d.server("ca", &["--network", "n", "--restart", "always"], 80);
    d.server("cb", &["--network", "n", "--restart", "always"], 80);

    // kill -9 netd: containers keep talking while it is down and after.
    let ip_b = d.ip("cb", "n");
    d.h.kill9();
    assert_eq!(d.nc("ca", &ip_b, 80), "cb", "data path without netd");
    d.h.start();
    assert_eq!(d.nc("ca", &ip_b, 80), "cb", "data path after netd restart");
    d.server("cc", &["--network", "n"], 80);
    assert_eq!(d.nc("cc", &ip_b, 80), "cb", "a new container joins after kill -9");
    d.ok(&["rm", "-f", "cc"]);

    // dockerd restart: it replays nothing, netd still knows network and pool.
    d.restart_dockerd();
    wait_for("containers back", || {
        d.docker(&["exec", "ca", "true"]).ok() && d.docker(&["exec", "cb", "true"]).ok()
    });
    let (ip_a, ip_b) = (d.ip("ca", "n"), d.ip("cb", "n"));
    wait_for("a reaches b", || d.nc("ca", &ip_b, 80) == "cb");
    assert_eq!(d.nc("cb", &ip_a, 80), "ca");
    d.server("ce", &["--network", "n"], 80);
    assert_eq!(
        d.nc("ce", &ip_a, 80),
        "ca",
        "a new container joins after dockerd restart"
    );

    // And netd killed again after that: the containers dockerd re-attached keep working.
    d.h.kill9();
    let ip_b = d.ip("cb", "n");
    assert_eq!(d.nc("ca", &ip_b, 80), "cb");
    d.h.start();
    assert_eq!(d.nc("ce", &ip_b, 80), "cb");

    d.ok(&["rm", "-f", "ca", "cb", "ce"]);
    d.ok(&["network", "rm", "n"]);
    let left = d.leftovers("10.237.0.");
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn docker_bad_input_reads_well_and_changes_nothing() {
    let Some(d) = Docker::start() else { return };
    d.h.ctl(&["network", "create", "mine", "--subnet", "10.238.0.0/24"]);
    let before = d.h.ctl(&["network", "ls"]);
    let err = d.fails(&netd_create(&["--subnet", "10.238.0.0/16", "x"]));
    assert!(err.contains("overlaps with network \"mine\""), "{err}");
    let err = d.fails(&netd_create(&[
        "-o",
        "netd.driver=overlay",
        "--subnet",
        "10.239.0.0/24",
        "x",
    ]));
    assert!(err.contains("netd.driver=overlay is not supported"), "{err}");
    let err = d.fails(&netd_create(&[
        "-o",
        "netd.driver=ipvlan",
        "--subnet",
        "10.239.0.0/24",
        "x",
    ]));
    assert!(err.contains("ipvlan needs a parent interface"), "{err}");
    let err = d.fails(&netd_create(&[
        "-o",
        "com.docker.network.bridge.enable_icc=maybe",
        "--subnet",
        "10.239.0.0/24",
        "x",
    ]));
    assert!(err.contains("expected true or false"), "{err}");
    assert_eq!(
        d.h.ctl(&["network", "ls"]),
        before,
        "refused creates leave nothing"
    );
    assert!(!d
        .h
        .client()
        .get("/v1/pools")
        .unwrap()
        .to_string()
        .contains("10.239."));

    // An exhausted pool: the error names it; the container that got an address works.
    d.ok(&netd_create(&["--subnet", "10.240.0.0/30", "tiny"]));
    d.server("t1", &["--network", "tiny"], 80);
    let err = d.fails(&["run", "--rm", "--network", "tiny", "netd/busybox", "true"]);
    assert!(err.contains("no free address"), "{err}");
    // A netctl network cannot take a Docker pool either.
    let o =
        d.h.netctl(&["network", "create", "clash", "--subnet", "10.240.0.0/24"]);
    assert!(!o.ok() && o.stderr.contains("overlaps"), "{}", o.stderr);
    d.ok(&["rm", "-f", "t1"]);
    d.ok(&["network", "rm", "tiny"]);
    let left = d.leftovers("10.240.0.");
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// `-o netd.driver=macvlan -o parent=IFACE`: containers get macvlan children of a veth
/// whose peer is in a "LAN" namespace (`ndmv-<pid>-d`) holding the router address; they
/// reach each other and the LAN by real packets, also after netd's kill -9; `-p` is
/// ignored as Docker's own macvlan driver does; rm leaves no link, rule or pool.
#[test]
fn docker_macvlan_reaches_the_lan() {
    let Some(mut d) = Docker::start() else { return };
    let lan = format!("ndmv-{}-d", std::process::id());
    let parent = format!("mvd{}", std::process::id() % 100_000);
    let o = integration::harness::sh(&format!(
        "set -e; ip netns add {lan}; ip -n {lan} link set lo up
         ip link add {parent} netns {host} type veth peer name lan0 netns {lan}
         ip -n {host} link set {parent} up
         ip -n {lan} addr add 192.168.91.1/24 dev lan0; ip -n {lan} link set lan0 up",
        host = d.h.name
    ));
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _lan_guard = Gone(lan.clone());
    assert!(o.ok(), "LAN setup: {}", o.stderr);
    let lan_ns = PathBuf::from(format!("/run/netns/{lan}"));

    // Refused: no parent (Docker would make a dummy link; this kernel has none), a
    // parent that does not exist. Nothing is left of either.
    let err = d.fails(&netd_create(&[
        "-o",
        "netd.driver=macvlan",
        "--subnet",
        "10.241.0.0/24",
        "x",
    ]));
    assert!(err.contains("parent"), "{err}");
    let err = d.fails(&netd_create(&[
        "-o",
        "netd.driver=macvlan",
        "-o",
        "parent=nosuch0",
        "--subnet",
        "10.241.0.0/24",
        "x",
    ]));
    assert!(err.contains("nosuch0 not found"), "{err}");
    assert!(!d
        .h
        .client()
        .get("/v1/pools")
        .unwrap()
        .to_string()
        .contains("10.241."));

    let p = format!("parent={parent}");
    d.ok(&netd_create(&[
        "-o",
        "netd.driver=macvlan",
        "-o",
        &p,
        "--subnet",
        "192.168.91.0/24",
        "--gateway",
        "192.168.91.1",
        "mvn",
    ]));
    let nets = d.netctl_json("network");
    let n = nets
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["parent"] == parent.as_str())
        .unwrap_or_else(|| panic!("no macvlan network in {nets}"));
    assert_eq!(n["driver"], "macvlan");
    assert_eq!(n["macvlan_mode"], "bridge");

    d.server("m1", &["--network", "mvn"], 80);
    // -p on macvlan: accepted and ignored, as by Docker's macvlan driver.
    d.server("m2", &["--network", "mvn", "-p", "8091:80"], 80);
    let (ip1, ip2) = (d.ip("m1", "mvn"), d.ip("m2", "mvn"));
    assert!(ip1.starts_with("192.168.91.") && ip2.starts_with("192.168.91.") && ip1 != ip2);
    assert!(d.ping("m1", &ip2), "m1 pings m2");
    assert!(d.ping("m1", "192.168.91.1"), "m1 pings the LAN router");
    assert_eq!(d.nc("m2", &ip1, 80), "m1");
    assert!(
        integration::harness::ping_from(&lan_ns, None, &ip1),
        "the LAN reaches m1"
    );
    let route = d.ok(&["exec", "m1", "ip", "route"]);
    assert!(route.contains("default via 192.168.91.1"), "{route}");
    // The children are in the containers: nothing of them on the host, no rules.
    let links = d.h.sh("ip -d -o link show").stdout;
    assert!(!links.contains("macvlan"), "{links}");
    let rules = d.h.sh("nft list ruleset").stdout;
    assert!(
        !rules.contains("192.168.91.") && !rules.contains("8091"),
        "{rules}"
    );

    // kill -9 of netd: the data path stays, a new container still joins.
    d.h.kill9();
    assert_eq!(d.nc("m2", &ip1, 80), "m1", "data path without netd");
    d.h.start();
    d.server("m3", &["--network", "mvn"], 80);
    assert_eq!(d.nc("m3", &ip1, 80), "m1", "a new container joins after kill -9");

    d.ok(&["rm", "-f", "m1", "m2", "m3"]);
    d.ok(&["network", "rm", "mvn"]);
    let left = d.leftovers("192.168.91.");
    assert!(left.is_empty(), "left behind: {left:#?}");
    let links = d.h.sh("ip -d -o link show").stdout;
    assert!(!links.contains("macvlan") && !links.contains("netd:"), "{links}");
}
