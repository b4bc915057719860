//! A test "host": a fresh network namespace with a real `netd daemon` (the built binary)
//! running inside it, its own state dir, socket and netns dir. Dropping it kills the
//! daemon it started (by PID), unmounts every sandbox namespace, and deletes the host
//! namespace, which takes the bridges and veths in it along — also when a test panics.
//!
//! The daemon is started with `nsenter --net=...`, not `ip netns exec`: the latter makes a
//! mount namespace of its own, so the namespace files netd bind-mounts would not be
//! visible to the test (or to netctl) outside it.
//!
//! Traffic helpers use `netd::kernel::probe` in-process (a thread enters the namespace),
//! so no test depends on nc/socat; ping is iputils' or busybox's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use netd::api::client::Client;
use nix::mount::{umount2, MntFlags};
use serde_json::Value;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The workspace's target dir with the binaries built (built once per test process, so a
/// stale binary is never tested).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // Prebuilt binaries (the VM lane, `scripts/vmlane-test.sh`, has no cargo).
        if let Some(d) = prebuilt_dir() {
            return d;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-q", "-p", "netd", "--bins"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p netd --bins failed");
        target.join("debug")
    });
    dir.join(name)
}

/// `NETD_TEST_BIN_DIR`: a directory with netd's binaries already built, used as is.
pub fn prebuilt_dir() -> Option<PathBuf> {
    std::env::var_os("NETD_TEST_BIN_DIR").map(PathBuf::from)
}

/// Output of a command: exit code, stdout, stderr.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

pub fn run(cmd: &mut Command) -> Out {
    let o = cmd.output().expect("spawn command");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn sh(cmd: &str) -> Out {
    run(Command::new("bash").args(["-c", cmd]))
}

/// `nsenter --net=<netns> <args...>`.
pub fn nsenter(netns: &Path, args: &[&str]) -> Out {
    // The program by its full path: busybox's nsenter (the VM lane's) runs its own
    // applet of that name before the PATH, and busybox `ip` knows no `-j`.
    let (prog, rest) = args.split_first().map_or(("true", &[][..]), |(p, r)| (*p, r));
    run(Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(crate::skip::which(prog))
        .args(rest))
}

/// One ping from inside `netns`, optionally from source address `from`; whether a reply
/// came within a second. iputils where installed, busybox otherwise.
pub fn ping_from(netns: &Path, from: Option<&str>, addr: &str) -> bool {
    static IPUTILS: OnceLock<bool> = OnceLock::new();
    let iputils = *IPUTILS.get_or_init(|| Command::new("ping").arg("-V").output().is_ok());
    let mut args = if iputils {
        vec!["ping"]
    } else {
        vec!["busybox", "ping"]
    };
    args.extend_from_slice(&["-c1", "-W1"]);
    if let Some(src) = from {
        args.extend_from_slice(&["-I", src]);
    }
    args.push(addr);
    nsenter(netns, &args).ok()
}

pub struct Host {
    pub name: String,
    pub base: PathBuf,
    /// Where the daemon serves Docker's plugin socket (default `<base>/docker-plugins`,
    /// so test daemons never touch the host's /run/docker/plugins).
    pub docker_plugin_dir: PathBuf,
    child: Option<Child>,
    /// Extra `netd daemon` arguments (e.g. `--config FILE`), used by `start`.
    pub daemon_args: Vec<String>,
}

impl Host {
    /// A new host namespace `ndh-<pid>-<n>` with a daemon serving in it.
    pub fn new() -> Host {
        let mut h = Host::bare();
        h.start();
        h
    }

    /// A host namespace and its dirs, with no daemon running (for `netd up`, which
    /// starts one in-process). Cleaned up like any host.
    pub fn bare() -> Host {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ndh-{}-{n}", std::process::id());
        let base = PathBuf::from(format!("/run/netd-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("create base dir");
        // Constructed before the namespace exists, so Drop cleans up a half-made host.
        let h = Host {
            name,
            docker_plugin_dir: base.join("docker-plugins"),
            base,
            child: None,
            daemon_args: Vec::new(),
        };
        // The name holds this process's pid: one that exists is a leftover of an earlier
        // process that had the same pid and was killed before its Drop ran.
        if h.netns().exists() {
            let _ = sh(&format!("ip netns del {}", h.name));
        }
        let o = sh(&format!("ip netns add {0} && ip -n {0} link set lo up", h.name));
        assert!(o.ok(), "ip netns add: {}", o.stderr);
        h
    }

    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
    pub fn socket(&self) -> PathBuf {
        self.base.join("netd.sock")
    }
    pub fn netns_dir(&self) -> PathBuf {
        self.base.join("netns")
    }
    /// Path of a sandbox's namespace file.
    pub fn sandbox_netns(&self, name: &str) -> PathBuf {
        self.netns_dir().join(name)
    }
    /// Short for `sandbox_netns`.
    pub fn sb(&self, name: &str) -> PathBuf {
        self.sandbox_netns(name)
    }
    pub fn client(&self) -> Client {
        Client::new(self.socket())
    }

    /// The arguments that point a netd command at this host's dirs.
    pub fn dir_args(&self) -> Vec<String> {
        vec![
            "--state-dir".into(),
            self.base.join("state").display().to_string(),
            "--socket".into(),
            self.socket().display().to_string(),
            "--netns-dir".into(),
            self.netns_dir().display().to_string(),
            "--etc-netns-dir".into(),
            self.base.join("etc").display().to_string(),
            "--docker-plugin-dir".into(),
            self.docker_plugin_dir.display().to_string(),
        ]
    }

    /// Starts `netd daemon` in the host namespace and waits until it answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join("netd.log"))
            .expect("open log");
        // nsenter execs netd without forking, so the child's PID is the daemon's.
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns().display()))
            .arg(bin("netd"))
            .arg("daemon")
            .args(self.dir_args())
            .args(&self.daemon_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start netd");
        self.child = Some(child);
        let c = self.client();
        let t0 = Instant::now();
        while c.get("/v1/health").is_err() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("netd exited with {st}: {}", self.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "netd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.base.join("netd.log")).unwrap_or_default()
    }

    /// SIGKILL to the daemon this host started (by PID), and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// kill -9, then a new daemon on the same dirs.
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    /// `netctl --socket S ARGS...`
    pub fn netctl(&self, args: &[&str]) -> Out {
        run(Command::new(bin("netctl"))
            .arg("--socket")
            .arg(self.socket())
            .args(args))
    }

    /// `netctl ...` that must succeed; returns stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let o = self.netctl(args);
        assert!(o.ok(), "netctl {args:?} failed: {}", o.stderr);
        o.stdout
    }

    /// A shell command inside the host namespace.
    pub fn sh(&self, cmd: &str) -> Out {
        nsenter(&self.netns(), &["bash", "-c", cmd])
    }

    /// A shell command inside a sandbox.
    pub fn sh_in(&self, sandbox: &str, cmd: &str) -> Out {
        nsenter(&self.sandbox_netns(sandbox), &["bash", "-c", cmd])
    }

    /// One ping from a sandbox.
    pub fn ping(&self, sandbox: &str, addr: &str) -> bool {
        ping_from(&self.sandbox_netns(sandbox), None, addr)
    }

    /// `nft -j list ruleset` inside the host, parsed.
    pub fn nft_json(&self) -> Value {
        let o = self.sh("nft -j list ruleset");
        assert!(o.ok(), "nft -j list ruleset: {}", o.stderr);
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("nft -j: {e}: {}", o.stdout))
    }

    /// `ip -j link show` inside the host, parsed.
    pub fn ip_links(&self) -> Value {
        let o = self.sh("ip -j link show");
        assert!(o.ok(), "ip -j link: {}", o.stderr);
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("ip -j link: {e}: {}", o.stdout))
    }

    /// Names of the files in the netns dir, sorted.
    pub fn netns_files(&self) -> Vec<String> {
        let mut files: Vec<String> = std::fs::read_dir(self.netns_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    pub fn sandbox(&self, name: &str) -> Value {
        self.client()
            .get(&format!("/v1/sandboxes/{name}"))
            .expect("inspect sandbox")
    }

    /// IPv4 address (no prefix) of a sandbox on a network.
    pub fn ip(&self, sandbox: &str, network: &str) -> String {
        self.addr(sandbox, network, "ipv4")
    }

    pub fn ip6(&self, sandbox: &str, network: &str) -> String {
        self.addr(sandbox, network, "ipv6")
    }

    fn addr(&self, sandbox: &str, network: &str, key: &str) -> String {
        let s = self.sandbox(sandbox);
        s["endpoints"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["network"] == network))
            .and_then(|e| e[key].as_str())
            .and_then(|a| a.split('/').next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{sandbox} has no {key} on {network}: {s}"))
    }

    /// Asserts that the store, the kernel and nftables agree and nothing leaked: every
    /// netd-marked link is a known bridge or endpoint (and every known one exists), the
    /// netns dir holds exactly the sandboxes, each sandbox's eth has exactly its store
    /// addresses, every nft set/map element belongs to a known endpoint or network, every
    /// lease has an endpoint, and no address is used twice.
    pub fn assert_consistent(&self) {
        let c = self.client();
        let sandboxes = c.get("/v1/sandboxes").expect("sandboxes");
        let networks = c.get("/v1/networks").expect("networks");
        let sbs: Vec<&Value> = sandboxes.as_array().into_iter().flatten().collect();
        let mut bridges = BTreeSet::new();
        let mut internal = BTreeSet::new();
        let mut no_icc_nets = BTreeSet::new();
        // macvlan and ipvlan networks have no bridge and no nft entries; their links are
        // inside the sandboxes (checked there below), by network: the driver.
        let mut macvlan_nets = BTreeMap::new();
        // The host link a parented network hangs off, as netd marks the one it made for
        // it (a dotted parent's 802.1Q link, an internal ipvlan network's dummy).
        let mut made_parents = BTreeSet::new();
        for n in networks.as_array().into_iter().flatten() {
            if n["driver"] == "macvlan" || n["driver"] == "ipvlan" {
                if let Some(p) = n["parent"].as_str() {
                    made_parents.insert((
                        p.to_string(),
                        format!("netd:net={}", n["name"].as_str().unwrap_or_default()),
                    ));
                }
                macvlan_nets.insert(
                    n["name"].as_str().unwrap_or_default().to_string(),
                    n["driver"].as_str().unwrap_or_default().to_string(),
                );
                continue;
            }
            let br = n["bridge"].as_str().unwrap_or_default().to_string();
            if n["internal"] == true {
                internal.insert(br.clone());
            }
            if n["icc"] == false {
                no_icc_nets.insert(n["name"].as_str().unwrap_or_default().to_string());
            }
            bridges.insert(br);
        }
        let mut want = BTreeMap::<&str, BTreeSet<String>>::new();
        let mut ips = BTreeMap::new();
        for s in &sbs {
            let name = s["name"].as_str().unwrap_or_default();
            let mut in_ns = BTreeSet::new();
            for e in s["endpoints"].as_array().into_iter().flatten() {
                let network = e["network"].as_str().unwrap_or_default();
                if let Some(driver) = macvlan_nets.get(network) {
                    let ifname = e["ifname"].as_str().unwrap_or_default();
                    let o = nsenter(
                        &self.sandbox_netns(name),
                        &["bash", "-c", &format!("ip -j -d link show {ifname}")],
                    );
                    assert!(o.ok(), "{driver} {ifname} missing in {name}: {}", o.stderr);
                    let l: Value = serde_json::from_str(&o.stdout).expect("ip -j link");
                    assert_eq!(
                        l[0]["linkinfo"]["info_kind"],
                        driver.as_str(),
                        "{name}/{ifname}: {l}"
                    );
                    assert_eq!(
                        l[0]["ifalias"].as_str(),
                        Some(format!("netd:ep={name}/{network}").as_str()),
                        "{name}/{ifname}"
                    );
                    for k in ["ipv4", "ipv6"] {
                        if let Some(ip) = e[k].as_str() {
                            let prev = ips.insert(ip.to_string(), format!("{name}/{network}"));
                            assert!(prev.is_none(), "duplicate address {ip}: {prev:?} and {name}");
                            in_ns.insert(format!("{ifname}/{ip}"));
                        }
                    }
                    continue;
                }
                let port = e["host_ifname"].as_str().unwrap_or_default().to_string();
                want.entry("ports").or_default().insert(port.clone());
                let mac = e["mac"].as_str().unwrap_or_default();
                want.entry("port_mac")
                    .or_default()
                    .insert(format!("{port} . {mac}"));
                if no_icc_nets.contains(e["network"].as_str().unwrap_or_default()) {
                    want.entry("no_icc").or_default().insert(port.clone());
                }
                for (k, set) in [("ipv4", "port_ip4"), ("ipv6", "port_ip6")] {
                    if let Some(ip) = e[k].as_str() {
                        let prev = ips.insert(ip.to_string(), format!("{name}/{}", e["network"]));
                        assert!(prev.is_none(), "duplicate address {ip}: {prev:?} and {name}");
                        let bare = ip.split('/').next().unwrap_or_default();
                        want.entry(set).or_default().insert(format!("{port} . {bare}"));
                        in_ns.insert(format!("{}/{ip}", e["ifname"].as_str().unwrap_or_default()));
                    }
                }
            }
            // The kernel's view inside the sandbox: the same global addresses.
            // Through bash: busybox's nsenter (the VM lane's) runs its own `ip` applet.
            let o = nsenter(
                &self.sandbox_netns(name),
                &["bash", "-c", "ip -j addr show scope global"],
            );
            assert!(o.ok(), "ip addr in {name}: {}", o.stderr);
            let addrs: Value = serde_json::from_str(&o.stdout).expect("ip -j addr");
            let have: BTreeSet<String> = addrs
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|l| {
                    let ifname = l["ifname"].as_str().unwrap_or_default().to_string();
                    l["addr_info"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        // `ip -j` prints `{}` for addresses the scope filter dropped.
                        .filter_map(move |a| {
                            let local = a["local"].as_str()?;
                            Some(format!("{ifname}/{local}/{}", a["prefixlen"]))
                        })
                })
                .collect();
            assert_eq!(have, in_ns, "addresses inside sandbox {name} vs the store");
        }
        // Links: every netd-marked link is known, every known link exists.
        let marked: Vec<(String, String)> = self
            .ip_links()
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| {
                let alias = l["ifalias"].as_str().filter(|a| a.starts_with("netd:"))?;
                Some((
                    l["ifname"].as_str().unwrap_or_default().to_string(),
                    alias.to_string(),
                ))
            })
            .collect();
        let have: BTreeSet<String> = marked.iter().map(|(n, _)| n.clone()).collect();
        let mut links = bridges.clone();
        links.extend(
            marked
                .into_iter()
                .filter(|m| made_parents.contains(m))
                .map(|(n, _)| n),
        );
        links.extend(want.get("ports").cloned().unwrap_or_default());
        assert_eq!(have, links, "netd links in the kernel vs the store");
        // Namespaces: exactly the sandboxes'.
        let mut names: Vec<String> = sbs
            .iter()
            .map(|s| s["name"].as_str().unwrap_or_default().to_string())
            .collect();
        names.sort();
        assert_eq!(self.netns_files(), names, "netns files vs sandboxes");
        // nftables: every set is exactly what the store implies.
        let rs = self.nft_json();
        want.insert("bridges", bridges.clone());
        want.insert("internal", internal);
        for set in [
            "bridges", "internal", "ports", "port_mac", "port_ip4", "port_ip6", "no_icc",
        ] {
            let have: BTreeSet<String> = nft_elements(&rs, set).into_iter().collect();
            assert_eq!(
                have,
                want.get(set).cloned().unwrap_or_default(),
                "nft set {set} vs the store"
            );
        }
        // Published ports DNAT only to addresses of known endpoints.
        let bare: BTreeSet<String> = ips
            .keys()
            .map(|ip| ip.split('/').next().unwrap_or_default().to_string())
            .collect();
        for map in ["pub4_addr", "pub4_any", "pub6_addr", "pub6_any"] {
            for el in nft_elements(&rs, map) {
                let target = el
                    .split(" : ")
                    .nth(1)
                    .and_then(|t| t.split(" . ").next())
                    .unwrap_or_default()
                    .to_string();
                assert!(bare.contains(&target), "nft map {map}: {el} targets no endpoint");
            }
        }
        // Leases: exactly the endpoints' addresses.
        let pools = c.get("/v1/pools").expect("pools");
        let mut leased = BTreeSet::new();
        for p in pools.as_array().into_iter().flatten() {
            let prefix = p["pool"]["subnet"]
                .as_str()
                .and_then(|s| s.split('/').nth(1))
                .unwrap_or("0")
                .to_string();
            for (ip, owner) in p["pool"]["leases"].as_object().into_iter().flatten() {
                // A service's VIP (owner `svc:<namespace>/<name>`): the service exists
                // and has that VIP.
                if let Some(key) = owner.as_str().and_then(|o| o.strip_prefix("svc:")) {
                    let svc = c.get(&format!("/v1/services/{key}")).expect("VIP owner exists");
                    let has = svc["vips"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .any(|(_, v)| v == ip);
                    assert!(has, "lease {ip} of {key}, which has no such VIP: {svc}");
                    continue;
                }
                leased.insert(format!("{ip}/{prefix}"));
            }
        }
        let addrs: BTreeSet<String> = ips.keys().cloned().collect();
        assert_eq!(leased, addrs, "leases vs endpoint addresses");
    }

    /// A snapshot taken once the host has settled: two in a row, 300 ms apart, that
    /// are equal (10 s at most, then the last one). Links made just before are still
    /// changing on the kernel's own clock for a moment (operstate through linkwatch,
    /// IPv6 autoconfiguration), more so in the VM lane under load; a bad-input check
    /// compares against this so that only what netd did can differ.
    pub fn settled_snapshot(&self) -> Vec<String> {
        let t0 = Instant::now();
        let mut last = self.snapshot();
        while t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.snapshot();
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    /// Everything a request could change, as comparable text: the API's networks,
    /// sandboxes and pools, the host's links, addresses and routes, the netns dir and
    /// the nft ruleset.
    pub fn snapshot(&self) -> Vec<String> {
        let c = self.client();
        let mut s: Vec<String> = ["/v1/networks", "/v1/sandboxes", "/v1/pools", "/v1/services"]
            .iter()
            .map(|p| c.get(p).expect("API read").to_string())
            .collect();
        for cmd in [
            "ip -j link show",
            "ip -j addr show",
            "ip -j route show table all",
            "nft list ruleset",
        ] {
            let o = self.sh(cmd);
            assert!(o.ok(), "{cmd}: {}", o.stderr);
            // An IPv6 address leaves "tentative" when the kernel's duplicate address
            // detection ends, on its own clock: not a change anyone made.
            // IPv6 link-local addresses and their local routes are the kernel's own
            // autoconfiguration: duplicate address detection removes one when an ipvlan
            // child (same MAC, same EUI-64) appears on the LAN, seconds later (seen in the
            // lane). Neither is anything netd made or changed.
            let text = o.stdout.replace("\"tentative\":true,", "");
            s.push(match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(mut v) if cmd.starts_with("ip -j") => {
                    if let Some(list) = v.as_array_mut() {
                        list.retain(|r| !r["dst"].as_str().is_some_and(|d| d.starts_with("fe80:")));
                        for l in list.iter_mut() {
                            if let Some(a) = l["addr_info"].as_array_mut() {
                                a.retain(|x| !(x["family"] == "inet6" && x["scope"] == "link"));
                            }
                        }
                    }
                    v.to_string()
                }
                _ => text,
            });
        }
        s.push(self.netns_files().join(","));
        s
    }
}

impl Default for Host {
    fn default() -> Self {
        Host::new()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
        // The responders of stacks this host's daemon made (`netd up -d`, or its part
        // of a cluster stack) run in sessions of their own: a test that failed before
        // `netd down` would leave them. Only processes the records name, if still the same.
        let state = self.base.join("state");
        for stack in netd::stack::record::names(&state) {
            let rec = netd::stack::record::Record::load(&netd::stack::record::path(&state, &stack));
            for r in rec.responders {
                r.proc.kill();
            }
        }
        // An eBPF datapath's pins (`--lb ebpf`): removing them detaches its programs
        // from the root cgroup, which every socket of the machine passes.
        if let Ok(d) = netd::kernel::bpf::pin_dir_for(Path::new(netd::kernel::bpf::PIN_ROOT), &self.netns()) {
            let _ = netd::kernel::bpf::remove_pins(&d);
        }
        if let Ok(rd) = std::fs::read_dir(self.netns_dir()) {
            for e in rd.flatten() {
                let _ = umount2(&e.path(), MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(e.path());
            }
        }
        // netd makes its netns dir a shared bind mount of itself, as iproute2 does.
        let _ = umount2(&self.netns_dir(), MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.base);
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// The elements of nft set or map `name` (of either netd table) as text: `a . b` for
/// concatenations, `key : value` for maps.
pub fn nft_elements(ruleset: &Value, name: &str) -> Vec<String> {
    fn text(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(" : "),
            Value::Object(o) if o.contains_key("concat") => o["concat"]
                .as_array()
                .map(|a| a.iter().map(text).collect::<Vec<_>>().join(" . "))
                .unwrap_or_default(),
            other => other.to_string(),
        }
    }
    let items = ruleset["nftables"].as_array().cloned().unwrap_or_default();
    for it in items {
        for kind in ["set", "map"] {
            let s = &it[kind];
            if s["table"] == "netd" && s["name"] == name {
                return s["elem"]
                    .as_array()
                    .map(|v| v.iter().map(text).collect())
                    .unwrap_or_default();
            }
        }
    }
    panic!("no nft set/map {name} in the netd tables");
}

/// An "outside" machine: a namespace joined to a host by a veth, `10.<k>.0.1/24` on the
/// host side and `10.<k>.0.2/24` outside, with a default route via the host. The
/// addresses exist only inside the two namespaces.
pub struct Outside {
    pub name: String,
    pub host_ip: String,
    pub ip: String,
    /// The host's end of the link (in the host's namespace).
    pub dev: String,
}

impl Outside {
    pub fn new(host: &Host, k: u8) -> Outside {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ndo-{}-{n}", std::process::id());
        let (hv, ov) = (format!("xo{}h", n % 10000), format!("xo{}o", n % 10000));
        let out = Outside {
            name,
            host_ip: format!("10.{k}.0.1"),
            ip: format!("10.{k}.0.2"),
            dev: hv.clone(),
        };
        // Both ends are made directly in their namespaces: nothing in the init one.
        let cmd = format!(
            "set -e; ip netns add {name}; ip -n {name} link set lo up
             ip link add {hv} netns {host} type veth peer name {ov} netns {name}
             ip -n {host} addr add 10.{k}.0.1/24 dev {hv}; ip -n {host} link set {hv} up
             ip -n {name} addr add 10.{k}.0.2/24 dev {ov}; ip -n {name} link set {ov} up
             ip -n {name} route add default via 10.{k}.0.1",
            name = out.name,
            host = host.name
        );
        let o = sh(&cmd);
        assert!(o.ok(), "outside setup: {}", o.stderr);
        out
    }

    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Serves TCP and UDP on the given ports inside `netns`, answering with `name` (threads
/// live as long as the test process; the namespace lives as long as their sockets, but
/// its links die with the host namespace).
pub fn respond(netns: &Path, name: &str, tcp: &[u16], udp: &[u16]) {
    let (tl, ul): (Vec<TcpListener>, Vec<UdpSocket>) =
        netd::kernel::probe::bind_responder(Some(netns), tcp.to_vec(), udp.to_vec()).expect("bind responder");
    for l in tl {
        let msg = format!("{name}\n");
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                let _ = s.write_all(msg.as_bytes());
            }
        });
    }
    for u in ul {
        let msg = format!("{name}\n");
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, peer)) = u.recv_from(&mut buf) {
                let _ = u.send_to(msg.as_bytes(), peer);
            }
        });
    }
}

/// Serves TCP on `port` inside `netns`, answering with the address the connection came
/// from (as the server sees it), to tell whether NAT rewrote the source.
pub fn respond_peer(netns: &Path, port: u16) {
    let (tl, _) =
        netd::kernel::probe::bind_responder(Some(netns), vec![port], vec![]).expect("bind responder");
    for l in tl {
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let peer = s
                    .peer_addr()
                    .map(|a| a.ip().to_canonical().to_string())
                    .unwrap_or_default();
                let _ = s.write_all(format!("{peer}\n").as_bytes());
            }
        });
    }
}

/// A UDP socket on `port` inside `netns` that only records who sent to it: a one-way
/// check that does not depend on the reply path.
pub fn udp_recorder(netns: &Path, port: u16) -> Arc<Mutex<Vec<SocketAddr>>> {
    let (_, mut ul) =
        netd::kernel::probe::bind_responder(Some(netns), vec![], vec![port]).expect("bind recorder");
    let u = ul.pop().expect("one socket");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, peer)) = u.recv_from(&mut buf) {
            s.lock().unwrap_or_else(|p| p.into_inner()).push(peer);
        }
    });
    seen
}

/// Sends a few datagrams from `src` (an address configured in `netns`, port 0 for any) to
/// `dst`.
pub fn udp_send_from(netns: &Path, src: &str, dst: &str) {
    let src: SocketAddr = src.parse().expect("source address");
    let dst: SocketAddr = dst.parse().expect("destination address");
    netd::kernel::probe::in_netns(Some(netns), move || {
        let s = UdpSocket::bind(src)?;
        for _ in 0..3 {
            s.send_to(b"spoof?\n", dst)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })
    .expect("send datagrams");
}

/// An echo server on `port` inside `netns` (for long-lived flow tests).
pub fn echo(netns: &Path, port: u16) {
    let (tl, _) = netd::kernel::probe::bind_responder(Some(netns), vec![port], vec![]).expect("bind echo");
    for l in tl {
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
}

/// The name a TCP peer at `addr` answers with, from inside `netns` (None = this process's
/// namespace), or None when unreachable within `ms`.
pub fn tcp(netns: Option<&Path>, addr: &str, ms: u64) -> Option<String> {
    let a: SocketAddr = addr.parse().expect("socket address");
    netd::kernel::probe::tcp_probe(netns, a, Duration::from_millis(ms)).ok()
}

/// Writes `msg` on an open flow and reads it back from an echo peer: whether the flow
/// still carries data.
pub fn roundtrip(s: &mut std::net::TcpStream, msg: &str) -> bool {
    if s.write_all(msg.as_bytes()).is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).is_ok() && buf == msg.as_bytes()
}

/// Like `tcp`, over UDP (one datagram, one answer).
pub fn udp(netns: Option<&Path>, addr: &str, ms: u64) -> Option<String> {
    let a: SocketAddr = addr.parse().expect("socket address");
    netd::kernel::probe::udp_probe(netns, a, Duration::from_millis(ms)).ok()
}

/// Opens `n` TCP connections to `addr` from inside `netns`, one after the other, and
/// counts the first line each answers with ("!err" for a failure).
pub fn spread_from(netns: &Path, addr: &str, n: usize) -> std::collections::BTreeMap<String, usize> {
    let a: SocketAddr = addr.parse().expect("address");
    netd::kernel::probe::in_netns(Some(netns), move || {
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..n {
            let name = std::net::TcpStream::connect_timeout(&a, Duration::from_millis(500))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_millis(500)))?;
                    let mut out = String::new();
                    std::io::Read::read_to_string(&mut s, &mut out)?;
                    Ok(out.trim().to_string())
                })
                .unwrap_or_else(|_| "!err".into());
            *seen.entry(name).or_insert(0) += 1;
        }
        Ok(seen)
    })
    .expect("connections")
}
