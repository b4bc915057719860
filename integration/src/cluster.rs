//! A cluster of test hosts for the overlay tests: an underlay namespace
//! (`ndul-<pid>-<n>`) holding a bridge, 10.250.0.0/24 and a real etcd at 10.250.0.254,
//! and `Host`s joined to it by a veth (`eth0`, 10.250.0.I) whose daemons run with
//! `--cluster etcd://10.250.0.254:2379 --node hI --advertise-addr 10.250.0.I`.
//!
//! Every underlay is a namespace of its own, so the fixed addresses never meet another
//! test's. Dropping the cluster kills the daemons and etcd it started (by PID) and
//! deletes every namespace, also when the test panics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{sh, Host};

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub const ETCD_ADDR: &str = "10.250.0.254";

pub struct Underlay {
    pub name: String,
    dir: PathBuf,
    etcd: Option<Child>,
}

impl Underlay {
    /// The namespace, its bridge and a running etcd (waited for).
    pub fn new() -> Underlay {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ndul-{}-{n}", std::process::id());
        let dir = PathBuf::from(format!("/run/netd-ul-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("underlay dir");
        let mut u = Underlay {
            name,
            dir,
            etcd: None,
        };
        let o = sh(&format!(
            "ip netns del {0} 2>/dev/null; set -e; ip netns add {0}; ip -n {0} link set lo up
             ip -n {0} link add br0 type bridge; ip -n {0} addr add {ETCD_ADDR}/24 dev br0
             ip -n {0} link set br0 up",
            u.name
        ));
        assert!(o.ok(), "underlay: {}", o.stderr);
        u.start_etcd();
        u
    }

    /// Kills the etcd this underlay started (by PID); its data dir stays.
    pub fn stop_etcd(&mut self) {
        if let Some(mut c) = self.etcd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd on the underlay's data dir and waits until it answers.
    pub fn start_etcd(&mut self) {
        assert!(self.etcd.is_none(), "etcd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log");
        let url = format!("http://{ETCD_ADDR}:2379");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.name))
            .args(["etcd", "--name", "ndt", "--data-dir"])
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "ndt=http://127.0.0.1:2380"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.etcd = Some(child);
        let t0 = Instant::now();
        while !self.etcdctl(&["endpoint", "health"]).0 {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "etcd did not start: {}",
                std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `etcdctl ARGS` against this etcd: (success, stdout).
    pub fn etcdctl(&self, args: &[&str]) -> (bool, String) {
        let o = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg("etcdctl")
            .args(["--endpoints", &format!("http://{ETCD_ADDR}:2379")])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output();
        match o {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
            ),
            Err(_) => (false, String::new()),
        }
    }

    /// Every key under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (ok, out) = self.etcdctl(&["get", "--prefix", "--keys-only", prefix]);
        assert!(ok, "etcdctl get {prefix}");
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Default for Underlay {
    fn default() -> Self {
        Underlay::new()
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        if let Some(mut c) = self.etcd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A host of the cluster: a `Host` on the underlay.
pub struct Node {
    pub host: Host,
    pub name: String,
    pub addr: String,
}

/// Nodes first, so their daemons stop before etcd does.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub underlay: Underlay,
}

impl Cluster {
    /// `n` hosts, each with a daemon in the cluster.
    pub fn new(n: usize) -> Cluster {
        let underlay = Underlay::new();
        let mut c = Cluster {
            nodes: Vec::new(),
            underlay,
        };
        for i in 1..=n {
            c.add_node(i);
        }
        c
    }

    fn add_node(&mut self, i: usize) {
        let mut host = Host::bare();
        let addr = format!("10.250.0.{i}");
        let o = sh(&format!(
            "set -e; ip link add ul{i} netns {ul} type veth peer name eth0 netns {h}
             ip -n {ul} link set ul{i} master br0 up
             ip -n {h} addr add {addr}/24 dev eth0; ip -n {h} link set eth0 up",
            ul = self.underlay.name,
            h = host.name,
        ));
        assert!(o.ok(), "node {i}: {}", o.stderr);
        let name = format!("h{i}");
        host.daemon_args = vec![
            "--cluster".into(),
            format!("etcd://{ETCD_ADDR}:2379"),
            "--node".into(),
            name.clone(),
            "--advertise-addr".into(),
            addr.clone(),
        ];
        host.start();
        self.nodes.push(Node { host, name, addr });
    }

    pub fn node(&self, i: usize) -> &Host {
        &self.nodes[i].host
    }
}

/// Polls `f` every 50 ms until it holds or `secs` pass; whether it held.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
