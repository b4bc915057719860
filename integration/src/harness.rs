//! A test "host": a fresh network namespace with a real `netd daemon` (the built binary)
//! running inside it, its own state dir, socket and netns dir. Dropping it kills the
//! daemon it started (by PID), unmounts every sandbox namespace, and deletes the host
//! namespace, which takes the bridges and veths in it along — also when a test panics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use netd::api::client::Client;
use nix::mount::{umount2, MntFlags};
use serde_json::Value;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The workspace's target dir with the binaries built (builds them once if missing).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
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

pub struct Host {
    pub name: String,
    pub base: PathBuf,
    child: Option<Child>,
}

impl Host {
    /// A new host namespace `ndh-<pid>-<n>` with a daemon serving in it.
    pub fn new() -> Host {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ndh-{}-{n}", std::process::id());
        let base = PathBuf::from(format!("/run/netd-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("create base dir");
        let mut h = Host {
            name,
            base,
            child: None,
        };
        assert!(
            sh(&format!("ip netns add {0} && ip -n {0} link set lo up", h.name)).ok(),
            "ip netns add"
        );
        h.start();
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
    /// Path of a sandbox's namespace.
    pub fn sb(&self, name: &str) -> PathBuf {
        self.netns_dir().join(name)
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
        ]
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join("netd.log"))
            .expect("open log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns().display()))
            .arg(bin("netd"))
            .arg("daemon")
            .args(self.dir_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start netd");
        self.child = Some(child);
        let c = self.client();
        let t0 = Instant::now();
        while c.get("/v1/health").is_err() {
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

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

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
        run(Command::new("nsenter")
            .arg(format!("--net={}", self.netns().display()))
            .args(["bash", "-c", cmd]))
    }

    /// A shell command inside a sandbox.
    pub fn sh_in(&self, sandbox: &str, cmd: &str) -> Out {
        run(Command::new("nsenter")
            .arg(format!("--net={}", self.sb(sandbox).display()))
            .args(["bash", "-c", cmd]))
    }

    pub fn ping(&self, sandbox: &str, addr: &str) -> bool {
        self.sh_in(sandbox, &format!("ping -c1 -W1 {addr} >/dev/null 2>&1"))
            .ok()
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
}

impl Default for Host {
    fn default() -> Self {
        Host::new()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
        if let Ok(rd) = std::fs::read_dir(self.netns_dir()) {
            for e in rd.flatten() {
                let _ = umount2(&e.path(), MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = umount2(&self.netns_dir(), MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.base);
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// An "outside" machine: a namespace joined to a host by a veth, `10.<k>.0.1/24` on the
/// host side and `10.<k>.0.2/24` outside, with a default route via the host.
pub struct Outside {
    pub name: String,
    pub host_ip: String,
    pub ip: String,
}

impl Outside {
    pub fn new(host: &Host, k: u8) -> Outside {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ndo-{}-{n}", std::process::id());
        let (hv, ov) = (format!("xo{}h", n % 10000), format!("xo{}o", n % 10000));
        let cmd = format!(
            "set -e; ip netns add {name}; ip -n {name} link set lo up
             ip link add {hv} netns {host} type veth peer name {ov} netns {name}
             ip -n {host} addr add 10.{k}.0.1/24 dev {hv}; ip -n {host} link set {hv} up
             ip -n {name} addr add 10.{k}.0.2/24 dev {ov}; ip -n {name} link set {ov} up
             ip -n {name} route add default via 10.{k}.0.1",
            host = host.name
        );
        let o = sh(&cmd);
        assert!(o.ok(), "outside setup: {}", o.stderr);
        Outside {
            name,
            host_ip: format!("10.{k}.0.1"),
            ip: format!("10.{k}.0.2"),
        }
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

/// Serves TCP and UDP on `port` inside `netns`, answering with `name` (threads live as
/// long as the test process; the sockets die with the namespace's last user anyway).
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

pub fn udp(netns: Option<&Path>, addr: &str, ms: u64) -> Option<String> {
    let a: SocketAddr = addr.parse().expect("socket address");
    netd::kernel::probe::udp_probe(netns, a, Duration::from_millis(ms)).ok()
}

/// Skip helper: prints why and returns true when not root.
pub fn skip() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    false
}
