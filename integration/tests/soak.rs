//! Soak: three clients at once on one daemon — netctl (sandbox create/rm, network
//! connect/disconnect), netd-cni in delegating mode (ADD/DEL of runtime namespaces) and
//! the Docker plugin's HTTP API spoken directly (IpamDriver.RequestAddress,
//! NetworkDriver.CreateEndpoint/Join/Leave/DeleteEndpoint, ReleaseAddress) — doing
//! `NETD_SOAK_OPS` (default 1,000) random operations while the daemon is `kill -9`ed
//! every 15-45 operations and restarted. A call cut by a kill is issued again once the
//! daemon answers, and a client whose ADD or create was cut converges by undoing it
//! (DEL, DeleteEndpoint), as a runtime would. After each restart: no address is held
//! twice, and every TCP flow opened before a kill still carries data. At the end the
//! clients remove everything, and then nothing is left: no netd links, namespaces,
//! nft elements or rules naming a removed object, no leases.
//!
//! The operations are drawn from `NETD_SOAK_SEED` (printed; random when unset); where
//! the kills land also depends on thread timing, so a replay repeats the operations, not
//! the exact interleaving.

mod cni_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cni_support::{cni_bin, exec_plugin, Netns};
use integration::harness::{bin, echo, roundtrip, Host};
use integration::skip::no_root;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// How long a client waits for the daemon to answer again after a kill.
const DAEMON_BACK: Duration = Duration::from_secs(90);

/// What became of a call: answered (success or refusal), or cut by a kill.
enum Reply {
    Ok(Value),
    Refused(String),
    Down,
}

/// Calls cut by a kill, all clients together.
static CUT: AtomicUsize = AtomicUsize::new(0);

/// Calls `f` until the daemon answers (a kill cuts a call: connection refused or reset).
fn answered(what: &str, mut f: impl FnMut() -> Reply) -> Result<Value, String> {
    let t0 = Instant::now();
    let mut first = true;
    loop {
        match f() {
            Reply::Ok(v) => return Ok(v),
            Reply::Refused(e) => return Err(e),
            Reply::Down => {
                if std::mem::take(&mut first) {
                    CUT.fetch_add(1, Ordering::Relaxed);
                }
                assert!(t0.elapsed() < DAEMON_BACK, "{what}: the daemon did not come back");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

struct Counters {
    ops: AtomicUsize,
    undone: AtomicUsize,
}

// ---- client 1: netctl ----

fn netctl(sock: &Path, args: &[&str]) -> Reply {
    let o = Command::new(bin("netctl"))
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .expect("run netctl");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if o.status.success() {
        Reply::Ok(Value::Null)
    } else if err.contains("cannot reach netd")
        || err.contains("talking to netd")
        || err.contains("bad answer")
    {
        Reply::Down
    } else {
        Reply::Refused(err)
    }
}

fn netctl_client(sock: PathBuf, seed: u64, n: usize, c: Arc<Counters>) {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..n {
        let name = format!("sk{}", rng.random_range(0..8));
        let net = ["soak2", "soak3"][rng.random_range(0..2)];
        let args: Vec<&str> = match rng.random_range(0..4) {
            0 => vec!["sandbox", "create", &name, "--network", net],
            1 => vec!["sandbox", "rm", &name],
            2 => vec!["network", "connect", net, &name],
            _ => vec!["network", "disconnect", net, &name],
        };
        // Refusals are part of random operations (rm of a missing sandbox); a call that
        // was cut is simply issued again, whatever the cut one did.
        let _ = answered("netctl", || netctl(&sock, &args));
        c.ops.fetch_add(1, Ordering::Relaxed);
    }
}

// ---- client 2: netd-cni, delegating ----

fn cni(host_ns: &Path, cmd: &str, cid: &str, ns: &Netns, conf: &Value) -> Reply {
    let (code, out, err) = exec_plugin(host_ns, &cni_bin(), cmd, cid, &ns.path(), "eth0", conf);
    if code == 0 {
        Reply::Ok(out)
    } else if ["reach netd", "talking to netd", "bad answer from netd"]
        .iter()
        .any(|m| format!("{out}{err}").contains(m))
    {
        Reply::Down
    } else {
        Reply::Refused(format!("{out} {err}"))
    }
}

/// DEL until it succeeds: DEL is idempotent, and the runtime's answer to a failed ADD.
fn cni_del(host_ns: &Path, cid: &str, ns: &Netns, conf: &Value) {
    let t0 = Instant::now();
    while !matches!(cni(host_ns, "DEL", cid, ns, conf), Reply::Ok(_)) {
        assert!(t0.elapsed() < DAEMON_BACK, "DEL {cid} never succeeded");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cni_client(host_ns: PathBuf, nss: Arc<Vec<Netns>>, conf: Value, seed: u64, n: usize, c: Arc<Counters>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut added = vec![false; nss.len()];
    for _ in 0..n {
        let i = rng.random_range(0..nss.len());
        let cid = format!("soak{i}");
        if added[i] {
            cni_del(&host_ns, &cid, &nss[i], &conf);
            added[i] = false;
        } else {
            match cni(&host_ns, "ADD", &cid, &nss[i], &conf) {
                Reply::Ok(_) => added[i] = true,
                other => {
                    if matches!(other, Reply::Down) {
                        CUT.fetch_add(1, Ordering::Relaxed);
                    } else if let Reply::Refused(e) = other {
                        println!("soak: ADD {cid} refused: {e}");
                    }
                    cni_del(&host_ns, &cid, &nss[i], &conf);
                    c.undone.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        c.ops.fetch_add(1, Ordering::Relaxed);
    }
}

// ---- client 3: the Docker plugin API ----

fn plugin(sock: &Path, method: &str, body: &Value) -> Reply {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return Reply::Down;
    };
    let body = body.to_string();
    let req = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut out).is_err() || out.is_empty() {
        return Reply::Down;
    }
    let ok = out.starts_with("HTTP/1.1 200");
    let v: Value = out
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    if ok {
        Reply::Ok(v)
    } else {
        Reply::Refused(v["Err"].as_str().unwrap_or(&out).to_string())
    }
}

struct Docker {
    sock: PathBuf,
    pool: String,
    network: String,
}

impl Docker {
    fn call(&self, method: &str, body: Value) -> Result<Value, String> {
        answered(method, || plugin(&self.sock, method, &body))
    }

    fn addr(slot: usize) -> String {
        format!("10.93.0.{}", 10 + slot)
    }

    /// RequestAddress (a fixed address per slot, so a retried request finds its own
    /// lease), CreateEndpoint, Join. Err: something was refused that a retry does not
    /// explain.
    fn create(&self, slot: usize, ep: &str) -> Result<(), String> {
        let a = Self::addr(slot);
        match self.call(
            "IpamDriver.RequestAddress",
            json!({"PoolID": self.pool, "Address": a, "Options": null}),
        ) {
            Ok(_) => {}
            Err(e) if e.contains("in use") || e.contains("allocated") || e.contains("already") => {}
            Err(e) => return Err(format!("RequestAddress {a}: {e}")),
        }
        let ce = json!({"NetworkID": self.network, "EndpointID": ep,
            "Interface": {"Address": format!("{a}/24"), "AddressIPv6": "", "MacAddress": ""},
            "Options": {"com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": []}});
        match self.call("NetworkDriver.CreateEndpoint", ce) {
            Ok(_) => {}
            Err(e) if e.contains("already exists") => {}
            Err(e) => return Err(format!("CreateEndpoint: {e}")),
        }
        self.call(
            "NetworkDriver.Join",
            json!({"NetworkID": self.network, "EndpointID": ep, "SandboxKey": "/var/run/docker/netns/soak", "Options": {}}),
        )
        .map(drop)
        .map_err(|e| format!("Join: {e}"))
    }

    /// Leave, DeleteEndpoint, ReleaseAddress; "not there" is done.
    fn delete(&self, slot: usize, ep: &str) {
        let r = json!({"NetworkID": self.network, "EndpointID": ep});
        let _ = self.call("NetworkDriver.Leave", r.clone());
        let _ = self.call("NetworkDriver.DeleteEndpoint", r);
        self.call(
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": self.pool, "Address": Self::addr(slot)}),
        )
        .expect("ReleaseAddress");
    }
}

/// 64 hex digits as dockerd's; netd names the endpoint by the first 12, so those differ.
fn endpoint_id(slot: usize, generation: usize) -> String {
    format!("{slot:04x}{generation:08x}{}", "e".repeat(52))
}

fn docker_client(d: Arc<Docker>, seed: u64, n: usize, c: Arc<Counters>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut live: Vec<Option<String>> = vec![None; 6];
    for k in 0..n {
        let slot = rng.random_range(0..live.len());
        match live[slot].take() {
            Some(ep) => d.delete(slot, &ep),
            None => {
                let ep = endpoint_id(slot, k);
                match d.create(slot, &ep) {
                    Ok(()) => live[slot] = Some(ep),
                    Err(e) => {
                        println!("soak: docker create in slot {slot} failed, undone: {e}");
                        d.delete(slot, &ep);
                        c.undone.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        c.ops.fetch_add(1, Ordering::Relaxed);
    }
    for (slot, ep) in live.iter().enumerate() {
        if let Some(ep) = ep {
            d.delete(slot, ep);
        }
    }
}

// ---- the run ----

fn open_flow(h: &Host, from: &str, to: String) -> TcpStream {
    let addr: std::net::SocketAddr = to.parse().expect("addr");
    let s = netd::kernel::probe::in_netns(Some(&h.sb(from)), move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .expect("open flow");
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    s
}

/// Every address held by a live endpoint (sandboxes, CNI pods, Docker endpoints), and
/// any held twice.
fn duplicates(h: &Host) -> Vec<String> {
    let sbs = integration::harness::run(
        Command::new(bin("netctl"))
            .arg("--socket")
            .arg(h.socket())
            .args(["sandbox", "ls", "--json"]),
    );
    assert!(sbs.ok(), "sandbox ls: {}", sbs.stderr);
    let v: Value = serde_json::from_str(&sbs.stdout).expect("sandbox ls --json");
    let mut seen = std::collections::BTreeMap::new();
    let mut dups = Vec::new();
    for s in v.as_array().into_iter().flatten() {
        for e in s["endpoints"].as_array().into_iter().flatten() {
            for k in ["ipv4", "ipv6"] {
                if let Some(a) = e[k].as_str() {
                    if let Some(prev) = seen.insert(a.to_string(), s["name"].clone()) {
                        dups.push(format!("{a}: {prev} and {}", s["name"]));
                    }
                }
            }
        }
    }
    dups
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn three_clients_with_kill9_leak_nothing_and_flows_survive() {
    if no_root() {
        return;
    }
    let seed: u64 = env_or("NETD_SOAK_SEED", rand::random());
    let total: usize = env_or("NETD_SOAK_OPS", 1000);
    println!("soak: NETD_SOAK_SEED={seed} NETD_SOAK_OPS={total}");
    let t0 = Instant::now();
    let mut h = Host::new();
    let sock = h.socket();
    for (n, subnet) in [
        ("soak1", "10.90.0.0/24"),
        ("soak2", "10.91.0.0/24"),
        ("soak3", "10.92.0.0/24"),
    ] {
        h.ctl(&["network", "create", n, "--subnet", subnet]);
    }
    // Two long-lived sandboxes that no client touches carry the flows.
    h.ctl(&["sandbox", "create", "flow1", "--network", "soak1"]);
    h.ctl(&["sandbox", "create", "flow2", "--network", "soak1"]);
    echo(&h.sb("flow2"), 7);
    let to = format!("{}:7", h.ip("flow2", "soak1"));
    let mut flows = vec![open_flow(&h, "flow1", to.clone())];
    assert!(roundtrip(&mut flows[0], "start\n"));

    let plugin_sock = h.docker_plugin_dir.join("netd.sock");
    let pool = answered("RequestPool", || {
        plugin(&plugin_sock, "IpamDriver.RequestPool",
            &json!({"AddressSpace": "netd", "Pool": "10.93.0.0/24", "SubPool": "", "Options": {}, "V6": false}))
    })
    .expect("RequestPool");
    let pool_id = pool["PoolID"].as_str().expect("PoolID").to_string();
    let gw = answered("RequestAddress", || {
        plugin(&plugin_sock, "IpamDriver.RequestAddress",
            &json!({"PoolID": pool_id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}))
    })
    .expect("gateway");
    let network_id = format!("{:0<64}", format!("5a0c{:08x}", std::process::id()));
    answered("CreateNetwork", || {
        plugin(
            &plugin_sock,
            "NetworkDriver.CreateNetwork",
            &json!({
            "NetworkID": network_id,
            "IPv4Data": [{"AddressSpace": "netd", "Pool": "10.93.0.0/24", "Gateway": gw["Address"]}],
            "IPv6Data": [],
            "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {}}}),
        )
    })
    .expect("CreateNetwork");
    let docker = Arc::new(Docker {
        sock: plugin_sock.clone(),
        pool: pool_id.clone(),
        network: network_id.clone(),
    });
    let nss: Arc<Vec<Netns>> = Arc::new((0..4).map(|_| Netns::new()).collect());
    let conf = json!({"cniVersion": "1.1.0", "name": "soakcni", "type": "netd-cni",
        "bridge": format!("ndsoak{}", std::process::id() % 10000), "ipMasq": true,
        "ipam": {"type": "netd", "subnet": "10.94.0.0/24"},
        "socket": sock.display().to_string()});
    let _ = cni_bin();

    let counters = Arc::new(Counters {
        ops: AtomicUsize::new(0),
        undone: AtomicUsize::new(0),
    });
    let per = total / 3;
    let mut clients = Vec::new();
    {
        let (c, s) = (counters.clone(), sock.clone());
        clients.push(std::thread::spawn(move || netctl_client(s, seed, per, c)));
        let (c, hn, nss, conf) = (counters.clone(), h.netns(), nss.clone(), conf.clone());
        clients.push(std::thread::spawn(move || {
            cni_client(hn, nss, conf, seed ^ 1, per, c)
        }));
        let (c, d) = (counters.clone(), docker.clone());
        clients.push(std::thread::spawn(move || {
            docker_client(d, seed ^ 2, total - 2 * per, c)
        }));
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 3);
    let mut kills = 0;
    let mut next = rng.random_range(15..45);
    while !clients.iter().all(|c| c.is_finished()) {
        if counters.ops.load(Ordering::Relaxed) < next {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        next += rng.random_range(15..45);
        if kills % 4 == 0 {
            let mut f = open_flow(&h, "flow1", to.clone());
            assert!(roundtrip(&mut f, "new\n"));
            flows.push(f);
        }
        h.restart();
        kills += 1;
        for (i, f) in flows.iter_mut().enumerate() {
            assert!(
                roundtrip(f, &format!("after kill {kills}\n")),
                "flow {i} stopped at kill {kills}"
            );
        }
        let d = duplicates(&h);
        assert!(d.is_empty(), "duplicate addresses after kill {kills}: {d:?}");
    }
    for c in clients {
        c.join().expect("client panicked");
    }
    let ops = counters.ops.load(Ordering::Relaxed);
    let (cut, undone) = (
        CUT.load(Ordering::Relaxed),
        counters.undone.load(Ordering::Relaxed),
    );
    // A kill cuts at most one call per client; an undone create is one that was cut.
    assert!(undone <= 2 * kills, "{undone} creates undone with {kills} kills");
    assert!(
        kills < 10 || cut > 0,
        "{kills} kills cut no call: they all fell between calls"
    );

    // Everything removed through the clients.
    for i in 0..8 {
        let n = format!("sk{i}");
        let _ = answered("rm", || netctl(&sock, &["sandbox", "rm", &n]));
    }
    for (i, ns) in nss.iter().enumerate() {
        cni_del(&h.netns(), &format!("soak{i}"), ns, &conf);
    }
    answered("DeleteNetwork", || {
        plugin(
            &plugin_sock,
            "NetworkDriver.DeleteNetwork",
            &json!({"NetworkID": network_id}),
        )
    })
    .expect("DeleteNetwork");
    let _ = docker.call(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": pool_id, "Address": gw["Address"]}),
    );
    docker
        .call("IpamDriver.ReleasePool", json!({"PoolID": pool_id}))
        .expect("ReleasePool");
    drop(flows);
    h.ctl(&["sandbox", "rm", "flow1", "flow2"]);
    h.ctl(&["network", "rm", "soak1", "soak2", "soak3", "soakcni"]);

    let elapsed = t0.elapsed();
    h.assert_consistent();
    let c = h.client();
    assert_eq!(c.get("/v1/sandboxes").expect("sandboxes"), json!([]));
    assert_eq!(c.get("/v1/networks").expect("networks"), json!([]));
    let pools = c.get("/v1/pools").expect("pools");
    let leases: usize = pools
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["pool"]["leases"].as_object().map_or(0, |l| l.len()))
        .sum();
    assert_eq!(leases, 0, "leases left: {pools}");
    assert!(
        !h.sh("ip -d link show").stdout.contains("netd:"),
        "netd links left"
    );
    assert_eq!(h.netns_files(), Vec::<String>::new());
    for ns in nss.iter() {
        let links = ns.sh("ip -o link show").stdout;
        assert_eq!(links.lines().count(), 1, "links left in {}: {links}", ns.name);
    }
    let rs = h.sh("nft list ruleset").stdout;
    for gone in [
        "soak1", "soak2", "soak3", "soakcni", "10.90.0.", "10.91.", "10.93.", "10.94.", "ndsk",
    ] {
        assert!(!rs.contains(gone), "nft ruleset still names {gone}:\n{rs}");
    }
    println!(
        "soak: {ops} operations by 3 clients, {kills} kill -9 + restarts, {cut} calls cut by a kill, \
         {undone} creates undone, 0 duplicate addresses, flows intact, nothing left; {:.1} s \
         (seed {seed})",
        elapsed.as_secs_f64()
    );
}
