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
    /// With TLS (`new_tls`): the directory of the certificates `openssl` made
    /// (`ca.crt`, `server.{crt,key}`, `client.{crt,key}`); etcd then wants a client
    /// certificate.
    pub tls: Option<PathBuf>,
}

impl Underlay {
    /// The namespace, its bridge and a running etcd (waited for).
    pub fn new() -> Underlay {
        Underlay::make(false)
    }

    /// As `new`, with etcd serving TLS only and asking for client certificates, all made
    /// by `openssl` under the underlay's directory.
    pub fn new_tls() -> Underlay {
        Underlay::make(true)
    }

    fn make(tls: bool) -> Underlay {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ndul-{}-{n}", std::process::id());
        let dir = PathBuf::from(format!("/run/netd-ul-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("underlay dir");
        let mut u = Underlay {
            name,
            dir,
            etcd: None,
            tls: None,
        };
        if tls {
            let certs = u.dir.join("certs");
            make_certs(&certs);
            u.tls = Some(certs);
        }
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
        let url = format!("{}://{ETCD_ADDR}:2379", self.scheme());
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .args(["etcd", "--name", "ndt", "--data-dir"])
            .arg(self.dir.join("etcd"));
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(t.join("server.crt"))
                .arg("--key-file")
                .arg(t.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(t.join("ca.crt"))
                .arg("--client-cert-auth");
        }
        let child = cmd
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
            .args(["--endpoints", &format!("{}://{ETCD_ADDR}:2379", self.scheme())])
            .args(self.tls_flags("--cacert", "--cert", "--key"))
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

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The CA, client certificate and key behind the three flags given (none without TLS).
    pub fn tls_flags(&self, ca: &str, cert: &str, key: &str) -> Vec<String> {
        match &self.tls {
            Some(t) => [(ca, "ca.crt"), (cert, "client.crt"), (key, "client.key")]
                .iter()
                .flat_map(|(f, file)| [f.to_string(), t.join(file).display().to_string()])
                .collect(),
            None => Vec::new(),
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

/// A CA, a server certificate for etcd's address and a client certificate, by `openssl`
/// (P-256 keys, a day long), in `dir`.
fn make_certs(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("certs dir");
    let o = sh(&format!(
        "set -e; cd {d}
         k='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'
         openssl req -x509 $k -keyout ca.key -out ca.crt -days 1 -subj /CN=netd-test-ca 2>/dev/null
         openssl req $k -keyout server.key -out server.csr -subj /CN=etcd 2>/dev/null
         printf 'subjectAltName=IP:{ETCD_ADDR}\nextendedKeyUsage=serverAuth,clientAuth\n' > server.ext
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile server.ext -out server.crt 2>/dev/null
         openssl req $k -keyout client.key -out client.csr -subj /CN=netd 2>/dev/null
         printf 'extendedKeyUsage=clientAuth\n' > client.ext
         openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile client.ext -out client.crt 2>/dev/null",
        d = dir.display()
    ));
    assert!(o.ok(), "openssl: {}", o.stderr);
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
        Cluster::on(Underlay::new(), n)
    }

    /// As `new` with etcd over TLS with client certificates (`Underlay::new_tls`): the
    /// daemons get `--cluster-ca`, `--cluster-cert` and `--cluster-key`.
    pub fn new_tls(n: usize) -> Cluster {
        Cluster::on(Underlay::new_tls(), n)
    }

    fn on(underlay: Underlay, n: usize) -> Cluster {
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
        host.daemon_args.extend(
            self.underlay
                .tls_flags("--cluster-ca", "--cluster-cert", "--cluster-key"),
        );
        host.start();
        self.nodes.push(Node { host, name, addr });
    }

    pub fn node(&self, i: usize) -> &Host {
        &self.nodes[i].host
    }

    /// `netctl network create -d overlay --subnet SUBNET NAME` on node `i`, then waits
    /// until every node lists it.
    pub fn overlay(&self, i: usize, name: &str, subnet: &str) {
        self.node(i)
            .ctl(&["network", "create", "-d", "overlay", "--subnet", subnet, name]);
        for n in &self.nodes {
            assert!(
                eventually(5, || has_network(&n.host, name)),
                "{name} not listed on {}: {}",
                n.name,
                n.host.log()
            );
        }
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

/// Whether `netctl network ls` on `h` lists `name` (an overlay network is listed on every
/// node, held there or not).
pub fn has_network(h: &Host, name: &str) -> bool {
    h.netctl(&["network", "ls", "-q"])
        .stdout
        .lines()
        .any(|l| l == name)
}
