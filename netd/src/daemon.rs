//! Daemon start-up: state dir and its lock, store, kernel, engine (with reconcile), the
//! API socket and the reconcile loop, then serve until shutdown.

use std::collections::BTreeSet;
use std::fs;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tokio::net::UnixListener;

use crate::api::server::{serve_router, Shared};
use crate::engine::{Engine, EngineConfig};
use crate::ipam::IpamConfig;
use crate::kernel::linux::LinuxKernel;
use crate::kernel::watch::{Changes, Watch};
use crate::kernel::Kernel;
use crate::store::RedbStore;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/netd";
pub const DEFAULT_SOCKET: &str = "/run/netd/netd.sock";
/// Where dockerd looks for plugin sockets; netd serves `netd.sock` there.
pub const DEFAULT_DOCKER_PLUGIN_DIR: &str = "/run/docker/plugins";

/// The optional `--config` file (TOML). Command-line flags win over it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub netns_dir: Option<PathBuf>,
    pub etc_netns_dir: Option<PathBuf>,
    /// Group allowed to use the socket (mode becomes 0660).
    pub socket_group: Option<String>,
    pub ipam: Option<IpamConfig>,
    /// `[low, high]` host ports for `-P`.
    pub ephemeral_ports: Option<(u16, u16)>,
    /// Where Kubernetes ClusterIPs come from (default 10.96.0.0/12).
    pub service_cidr: Option<ipnetwork::IpNetwork>,
    /// The embedded DNS server (`[dns]`: ttl, cluster_domain, upstreams, timeout_ms, ...).
    pub dns: Option<crate::dns::DnsSettings>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        let text = fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse config {}", path.display()))
    }
}

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub engine: EngineConfig,
    /// The reconcile loop's pass runs when the kernel reports a change, this long after
    /// the first report (`kernel::watch`)...
    pub repair_debounce: Duration,
    /// ...and at least this often, looking inside every sandbox: a report can be lost.
    pub repair_every: Duration,
    /// Serve Docker's libnetwork plugin protocol at `<dir>/netd.sock` (`None`: not at all).
    pub docker_plugin_dir: Option<PathBuf>,
    pub dns: crate::dns::DnsSettings,
    /// `--cluster etcd://… --node … --advertise-addr …`: overlay networks (`cluster`).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Serve Prometheus metrics here (`--metrics-addr`; `check_metrics_addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Refuses a metrics address off loopback unless `public` (`--metrics-public`): the
/// metrics name every network, sandbox and service of the host.
pub fn check_metrics_addr(addr: std::net::SocketAddr, public: bool) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && !public {
        bail!("--metrics-addr {addr} is not a loopback address; add --metrics-public to serve metrics to the network");
    }
    Ok(())
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            state_dir: DEFAULT_STATE_DIR.into(),
            socket: DEFAULT_SOCKET.into(),
            socket_group: None,
            engine: EngineConfig::default(),
            repair_debounce: Duration::from_millis(50),
            repair_every: Duration::from_secs(10),
            docker_plugin_dir: Some(DEFAULT_DOCKER_PLUGIN_DIR.into()),
            dns: crate::dns::DnsSettings::default(),
            metrics_addr: None,
            cluster: None,
        }
    }
}

/// Holds the state dir's lock for as long as the daemon runs: two daemons on one state
/// dir would hand out the same addresses.
pub struct StateLock {
    _file: fs::File,
}

pub fn lock_state_dir(dir: &Path) -> anyhow::Result<StateLock> {
    fs::create_dir_all(dir).with_context(|| format!("create state dir {}", dir.display()))?;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("netd.lock"))
        .with_context(|| format!("open lock in {}", dir.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!("another netd is already using state dir {}", dir.display());
    }
    Ok(StateLock { _file: f })
}

fn bind_socket(path: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another daemon is serving {}", path.display());
        }
        fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    if let Some(g) = group {
        let gid = nix::unistd::Group::from_name(g)
            .ok()
            .flatten()
            .with_context(|| format!("no such group {g}"))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(l)
}

/// Opens everything and serves until `shutdown` resolves. The kernel is the calling
/// process's network namespace: run the daemon under `nsenter --net=...` to give it
/// another "host".
pub async fn run(
    opts: DaemonOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _lock = lock_state_dir(&opts.state_dir)?;
    let store = Arc::new(RedbStore::open(&opts.state_dir.join("netd.redb"))?);
    let kernel: Arc<dyn Kernel> = Arc::new(LinuxKernel::current().context("open kernel interfaces")?);
    let mut cfg = opts.engine.clone();
    // The name on the nftables tables this daemon makes (`EngineConfig::owner`).
    cfg.owner = format!(
        "netd daemon {}",
        fs::canonicalize(&opts.state_dir)
            .unwrap_or_else(|_| opts.state_dir.clone())
            .display()
    );
    let host_resolv = fs::read_to_string(&cfg.host_resolv_conf).unwrap_or_default();
    let dns = Arc::new(
        crate::dns::Dns::new(opts.dns.clone(), &host_resolv, dns_runtime()?).context("dns settings")?,
    );
    tracing::info!(upstreams = ?dns.upstreams(), "dns: serving {} in every sandbox", crate::dns::LISTEN);
    let obs = Arc::new(crate::observe::Observer::default());
    dns.set_observer(obs.clone());
    let metrics = match opts.metrics_addr {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("metrics address {a}"))?,
        ),
        None => None,
    };
    let o = obs.clone();
    let (engine, report) = tokio::task::spawn_blocking(move || {
        Engine::open(kernel, store, cfg).map(|(mut e, r)| {
            // After reconcile, so every sandbox's names answer again after a restart.
            e.set_dns(dns);
            e.set_observer(o);
            (e, r)
        })
    })
    .await
    .context("engine start-up panicked")??;
    tracing::info!(
        removed = ?report.removed,
        recreated = ?report.recreated,
        ms = report.millis as u64,
        "state loaded and reconciled"
    );
    let engine = Arc::new(Mutex::new(engine));
    let listener = bind_socket(&opts.socket, opts.socket_group.as_deref())?;
    tracing::info!(socket = %opts.socket.display(), state_dir = %opts.state_dir.display(), "netd ready");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let plugin = start_docker_plugin(&opts, &engine, stop_rx.clone());
    let metrics = metrics.map(|l| start_metrics(l, &engine, obs, stop_rx.clone()));
    let stop_rx2 = stop_rx.clone();
    let stop_rx3 = stop_rx.clone();
    let watcher = tokio::spawn(repair_loop(
        engine.clone(),
        opts.repair_debounce,
        opts.repair_every,
        stop_rx,
    ));
    let mut router = crate::api::server::router(engine.clone());
    let cluster = match &opts.cluster {
        Some(c) => {
            let (agent, store) = match crate::cluster::agent::start(c, engine.clone(), stop_rx2).await {
                Ok(started) => started,
                Err(e) => {
                    // A refused start leaves nothing behind: no socket a client could
                    // take for a running daemon.
                    let _ = stop_tx.send(true);
                    let _ = fs::remove_file(&opts.socket);
                    if let Some((_, path)) = &plugin {
                        let _ = fs::remove_file(path);
                    }
                    return Err(e);
                }
            };
            // Stacks placed on nodes: this node makes its part of each (`cluster::stacks`).
            let stacks = Arc::new(crate::cluster::stacks::Stacks::new(
                Arc::clone(&store),
                &c.node,
                &opts,
            ));
            tokio::spawn(Arc::clone(&stacks).run(stop_rx3));
            router = crate::cluster::api::wrap(router, agent).merge(crate::cluster::stacks::router(stacks));
            Some(store)
        }
        None => None,
    };
    let res = serve_router(listener, router, shutdown).await;
    let _ = stop_tx.send(true);
    if let Some(store) = cluster {
        // The node and its endpoints leave now rather than when the lease runs out.
        if let Err(e) = store.leave().await {
            tracing::warn!(error = %e, "cluster: could not leave cleanly; the lease will expire");
        }
    }
    let _ = watcher.await;
    if let Some(task) = metrics {
        let _ = task.await;
    }
    if let Some((task, path)) = plugin {
        let _ = task.await;
        let _ = fs::remove_file(path);
    }
    let _ = fs::remove_file(&opts.socket);
    res.context("API server")
}

/// The reconcile loop: repairs what was changed behind netd's back (a deleted veth,
/// bridge, address, route, nftables table or chain) when the kernel reports a change,
/// and every `every` in case a report was lost. Each pass takes the engine's lock like
/// an API call, so it never runs in the middle of one.
async fn repair_loop(
    engine: Shared,
    debounce: Duration,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // `tx` stays here too, so `recv` waits (and the timer still runs) without a watcher.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Changes>();
    let sender = tx.clone();
    let watch = match Watch::start(debounce, move |c| drop(sender.send(c))) {
        Ok(w) => {
            tracing::info!(
                debounce_ms = debounce.as_millis() as u64,
                "reconcile loop: watching links, addresses, routes and nftables"
            );
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, every_s = every.as_secs(), "reconcile loop: cannot watch the kernel; repairing on a timer only");
            None
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut inside_all = false;
    let mut first = true;
    loop {
        let mut changes = Changes::default();
        if !first {
            tokio::select! {
                Some(c) = rx.recv() => changes = c,
                _ = tick.tick() => inside_all = true,
                _ = shutdown.changed() => return,
            }
        }
        while let Ok(more) = rx.try_recv() {
            changes.merge(more);
        }
        // The first pass only learns the sandboxes to watch (start-up reconciled).
        let learn_only = std::mem::take(&mut first);
        let e = engine.clone();
        let all = std::mem::take(&mut inside_all);
        let pass = tokio::task::spawn_blocking(move || {
            let mut g = e.lock().unwrap_or_else(|p| p.into_inner());
            // Runtimes' namespaces (CNI) are theirs: a socket in one would keep it
            // alive after the runtime removed it. Their host sides are still watched.
            let own: BTreeSet<PathBuf> = g
                .sandboxes()
                .filter(|s| !s.external && !s.netns.is_empty())
                .map(|s| PathBuf::from(&s.netns))
                .collect();
            if !learn_only {
                g.repair(if all { &own } else { &changes.sandboxes });
            }
            if all {
                g.reap_services();
            }
            own
        })
        .await;
        match (pass, &watch) {
            (Ok(own), Some(w)) => w.watch_sandboxes(own),
            (Ok(_), None) => {}
            (Err(e), _) => tracing::error!(error = %e, "reconcile pass panicked"),
        }
    }
}

/// Serves Docker's plugin protocol next to the API. A plugin socket that cannot be bound
/// (another netd serves it) is logged, not fatal: the API works without it.
fn start_docker_plugin(
    opts: &DaemonOptions,
    engine: &crate::api::server::Shared,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<(tokio::task::JoinHandle<()>, PathBuf)> {
    let path = opts.docker_plugin_dir.as_ref()?.join("netd.sock");
    let listener = match bind_socket(&path, None) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(socket = %path.display(), error = %format!("{e:#}"), "Docker plugin not served");
            return None;
        }
    };
    tracing::info!(socket = %path.display(), "Docker plugin (NetworkDriver, IpamDriver) ready");
    let engine = engine.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = crate::api::docker_plugin::serve(listener, engine, shutdown).await {
            tracing::error!(error = %e, "Docker plugin server failed");
        }
    });
    Some((task, path))
}

/// Serves Prometheus metrics on `l` until `stop`.
fn start_metrics(
    l: tokio::net::TcpListener,
    engine: &Shared,
    obs: Arc<crate::observe::Observer>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    if let Ok(a) = l.local_addr() {
        tracing::info!(addr = %a, "metrics: serving /metrics");
    }
    let engine = engine.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = crate::api::server::observe::serve_metrics(l, engine, obs, shutdown).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    })
}

/// The DNS server's own single-threaded runtime on a thread of its own: answers stay
/// on one thread (no work-stealing hand-offs between the API's workers and the DNS
/// sockets), so a burst of API work does not sit in front of a name lookup.
fn dns_runtime() -> anyhow::Result<tokio::runtime::Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("dns runtime")?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("netd-dns".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))
        .context("dns thread")?;
    Ok(handle)
}
