//! Stacks: `netd up FILE` converges the daemon to a stack file (creates what is
//! missing, recreates what differs, removes what the file no longer has; `diff` decides,
//! `converge` applies), starts a responder in every sandbox, measures who reaches whom
//! with real connections and prints it. In the foreground the stack lives as long as
//! the command: Ctrl-C, SIGTERM or a hangup removes it, `--check` removes it at once.
//! With `-d` it stays on the daemon; `netd ps`, `netd ls` and `netd down` (`admin`)
//! find it again by the `netd.stack` label on its objects.

pub mod admin;
pub mod balance;
pub mod converge;
pub mod diff;
pub mod file;
pub mod names;
pub mod placement;
pub mod record;
pub mod report;
pub mod responder;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::Value;

use crate::api::client::Client;
use crate::daemon::DaemonOptions;
use converge::{Desired, Responders};
use file::{Instance, StackFile};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From here on SIGINT, SIGTERM and SIGHUP only set a flag that the run checks between
/// steps: a foreground stack is then removed instead of the process dying half-way.
fn catch_signals() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &act) }?;
    }
    Ok(())
}

/// Whether a stop signal arrived since `catch_signals`.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A log line on stderr. Write errors are ignored, here and in `out`: after `netd up |
/// tee log` and Ctrl-C the reader is gone, and the teardown must still run to the end
/// (`println!` would panic on the broken pipe).
pub fn say(args: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr().lock(), "netd: {args}");
}

/// Output on stdout (tables, listings); errors ignored, see `say`.
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{text}");
    let _ = o.flush();
}

/// A daemon `netd up` runs itself, on its own thread, when none is already serving.
struct InProcessDaemon {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl InProcessDaemon {
    fn start(opts: DaemonOptions) -> anyhow::Result<InProcessDaemon> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(crate::daemon::run(opts, async {
                let _ = rx.await;
            }))
        });
        Ok(InProcessDaemon {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow!("daemon thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for InProcessDaemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn wait_healthy(c: &Client, d: &mut Option<InProcessDaemon>) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        if c.get("/v1/health").is_ok() {
            return Ok(());
        }
        if let Some(dd) = d {
            if dd.thread.as_ref().is_some_and(|t| t.is_finished()) {
                return dd
                    .stop()
                    .and_then(|_| Err(anyhow!("the daemon stopped during start-up")));
            }
        }
        if t0.elapsed() > Duration::from_secs(15) {
            bail!("netd did not answer on {} within 15 s", c.socket().display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A sandbox as the probes need it.
pub struct Placed {
    pub name: String,
    pub netns: PathBuf,
    /// (network, IPv4 address)
    pub addrs: Vec<(String, IpAddr)>,
    pub tcp: Vec<u16>,
    /// (host port, proto) published
    pub published: Vec<(u16, String)>,
    /// Gateway of the first network: a host address the sandbox can reach.
    pub gateway: Option<IpAddr>,
}

fn placed(inst: &Instance, sb: &Value) -> Placed {
    let mut addrs = Vec::new();
    let mut gateway = None;
    for e in sb["endpoints"].as_array().into_iter().flatten() {
        if let Some(ip) = e["ipv4"]
            .as_str()
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
        {
            addrs.push((e["network"].as_str().unwrap_or("").to_string(), ip));
        }
        if gateway.is_none() {
            gateway = e["gateway4"].as_str().and_then(|g| g.parse().ok());
        }
    }
    Placed {
        name: inst.req.name.clone(),
        netns: PathBuf::from(sb["netns"].as_str().unwrap_or("")),
        addrs,
        tcp: inst.tcp.clone(),
        published: sb["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["host_port"].as_u64()? as u16, p["proto"].as_str()?.to_string())))
            .collect(),
        gateway,
    }
}

/// The stack's services (a name per `[[sandbox]]`, its replicas as members).
fn services_of(instances: &[Instance]) -> Vec<names::Service> {
    let mut out: Vec<names::Service> = Vec::new();
    for i in instances {
        match out.iter_mut().find(|s| s.name == i.service) {
            Some(s) => s.members.push(i.req.name.clone()),
            None => out.push(names::Service {
                name: i.service.clone(),
                members: vec![i.req.name.clone()],
                tcp: i.tcp.first().copied(),
            }),
        }
    }
    out
}

/// The daemon a stack command talks to: the one serving the socket, or (`may_start`)
/// one started in this process on the given dirs, which ends with the command.
fn connect(opts: &DaemonOptions, may_start: bool) -> anyhow::Result<(Client, Option<InProcessDaemon>)> {
    let client = Client::new(&opts.socket);
    let mut daemon = None;
    if client.get("/v1/health").is_err() {
        if !may_start {
            bail!(
                "no daemon is serving {0}: a detached stack lives on a daemon; start one first \
                 (`netd daemon --socket {0} &`, or your service manager), or run `netd up FILE` \
                 in the foreground, which starts its own",
                opts.socket.display()
            );
        }
        say(format_args!(
            "no daemon on {}; starting one in this process",
            opts.socket.display()
        ));
        daemon = Some(InProcessDaemon::start(opts.clone())?);
    }
    wait_healthy(&client, &mut daemon)?;
    Ok((client, daemon))
}

/// A stack command's hold on the daemon. A foreground `netd up` owns its stack: when
/// the session closes (normally, on error, on a signal, on panic) the stack is removed,
/// then the in-process daemon, if any, is stopped.
struct Session {
    client: Client,
    stack: String,
    resp: Responders,
    owns: bool,
    /// The stack was published for other nodes (`publish`): removing it withdraws it.
    published: bool,
    daemon: Option<InProcessDaemon>,
}

impl Session {
    fn close(&mut self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        if std::mem::take(&mut self.owns) {
            say(format_args!("stack {}: removing it", self.stack));
            failed = converge::remove_all(&self.client, &self.stack, &mut self.resp);
            if std::mem::take(&mut self.published) {
                if let Err(e) = withdraw(&self.client, &self.stack) {
                    failed.push(format!("{e:#}"));
                }
            }
        }
        if let Some(mut d) = self.daemon.take() {
            d.stop()?;
        }
        if !failed.is_empty() {
            bail!(
                "stack {}: not everything was removed: {}",
                self.stack,
                failed.join("; ")
            );
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            say(format_args!("{e:#}"));
        }
    }
}

/// `netd up` as asked on the command line.
#[derive(Debug, Clone)]
pub struct UpArgs {
    pub file: PathBuf,
    /// `--name`/`-p`: overrides the file's `name` and its file name.
    pub name: Option<String>,
    pub check: bool,
    pub detach: bool,
    /// `--graph FILE`: the stack's picture once it is up (`graph::write_file`).
    pub graph: Option<PathBuf>,
}

pub fn up(a: &UpArgs, opts: DaemonOptions) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file).map_err(|e| anyhow!("read {}: {e}", a.file.display()))?;
    let stack = StackFile::load(&a.file).map_err(|e| anyhow!(e))?;
    let name = stack
        .stack_name(&a.file, a.name.as_deref())
        .map_err(|e| anyhow!(e))?;
    let instances = stack.instances().map_err(|e| anyhow!(e))?;
    for r in stack.network_requests() {
        r.parse().map_err(|e| anyhow!("network {}: {e}", r.name))?;
    }
    if !a.detach {
        catch_signals()?;
    }
    let (client, daemon) = connect(&opts, !a.detach)?;
    // This node's part of a stack placed on nodes; the rest is left to their nodes.
    let nodes = cluster_nodes(&client)?;
    let split =
        placement::place(&stack, instances, nodes.as_ref()).map_err(|e| anyhow!("stack {name}: {e}"))?;
    for (sb, node) in &split.elsewhere {
        say(format_args!(
            "stack {name}: sandbox {sb} is for node {node}, skipped here (node {node} makes it)"
        ));
    }
    let in_cluster = nodes.is_some() && placement::is_placed(&stack);
    let instances = split.here;
    let mut want = Desired::new(&name, &stack, &instances);
    want.cluster_services = in_cluster;
    let mut s = Session {
        resp: Responders::load(&opts.state_dir, &name),
        client,
        stack: name.clone(),
        owns: false,
        published: false,
        daemon,
    };
    // Refusals (a name held by someone else) come here, before anything changes.
    let changes = converge::plan(&s.client, &name, &want)?;
    ensure_overlays(&s.client, &name, &stack)?;
    s.owns = !a.detach;
    let sbs = match converge::apply(&s.client, &name, &want, &changes, &mut s.resp) {
        Ok(v) => v,
        Err(e) if a.detach => {
            say(format_args!(
                "stack {name}: stopped before it was complete; `netd up -d` again completes it, `netd down` removes it"
            ));
            return Err(e);
        }
        Err(e) => {
            let _ = s.close();
            return Err(e);
        }
    };
    if let Some(path) = &a.graph {
        let t =
            crate::graph::Topology::fetch(&s.client, &crate::graph::hostname()).map(|t| t.only_stack(&name));
        if let Err(e) = t.and_then(|t| crate::graph::write_file(&t, path)) {
            let _ = s.close();
            return Err(e.into());
        }
        say(format_args!(
            "stack {name}: picture written to {}",
            path.display()
        ));
    }
    if in_cluster {
        // The other nodes make their parts from the published file; wait for them.
        s.published = true;
        let made: Vec<String> = instances.iter().map(|i| i.req.name.clone()).collect();
        if let Err(e) = publish(&s.client, &name, &text, &made) {
            let _ = s.close();
            return Err(e);
        }
    }
    let placed_all: Vec<Placed> = instances.iter().zip(&sbs).map(|(i, sb)| placed(i, sb)).collect();
    // A placed stack's services have replicas on other nodes too: all must answer.
    let replicas = if in_cluster {
        stack.instances().map_err(|e| anyhow!(e))?
    } else {
        instances.clone()
    };
    let measured =
        wait_responders(&placed_all).map(|()| measure(&stack, &instances, &replicas, &placed_all, &name));
    let (failed, total) = match measured {
        Ok(v) => v,
        Err(e) => {
            s.close()?;
            return Err(e);
        }
    };
    if a.detach {
        out(&format!(
            "stack {name} is up on the daemon at {}; `netd ps -p {name}` lists it, `netd down -p {name}` removes it",
            opts.socket.display()
        ));
    } else if !a.check {
        out(&format!("stack {name} is up; press Ctrl-C to remove it"));
        while !interrupted() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    s.close()?;
    if a.check {
        if failed > 0 {
            bail!("{failed} of {total} expectations failed");
        }
        out(&format!("check passed: {total} expectations held"));
    }
    Ok(())
}

/// How long `netd up` waits for the other nodes to make their parts of a stack.
const PARTS_WAIT: Duration = Duration::from_secs(60);

/// Publishes the stack for the other nodes it places sandboxes on and waits until each
/// reports its part (`cluster::stacks`); a node that failed is an error naming it.
fn publish(c: &Client, stack: &str, text: &str, made_here: &[String]) -> anyhow::Result<()> {
    let body = serde_json::json!({"name": stack, "text": text, "sandboxes": made_here});
    let rec = c
        .post("/v1/cluster/stacks", &body)
        .map_err(|e| anyhow!("stack {stack}: publish it for the other nodes: {e}"))?;
    let id = rec["id"].as_str().unwrap_or_default().to_string();
    let me = rec["created_by"].as_str().unwrap_or_default().to_string();
    let wanted: Vec<String> = crate::cluster::stacks::nodes_of(text)
        .into_iter()
        .filter(|n| *n != me)
        .collect();
    let t0 = Instant::now();
    let mut reported: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    while reported.len() < wanted.len() {
        if interrupted() {
            bail!("interrupted by a signal");
        }
        if t0.elapsed() > PARTS_WAIT {
            let late: Vec<&String> = wanted.iter().filter(|n| !reported.contains(n)).collect();
            bail!(
                "stack {stack}: no word from node(s) {} within {} s (is their netd running? `netctl node ls`)",
                late.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                PARTS_WAIT.as_secs()
            );
        }
        let parts = c
            .get(&format!("/v1/cluster/stacks/{stack}/parts"))
            .map_err(|e| anyhow!("stack {stack}: read the nodes' parts: {e}"))?;
        for p in parts.as_array().into_iter().flatten() {
            let node = p["node"].as_str().unwrap_or_default().to_string();
            if p["id"] != id || !wanted.contains(&node) || reported.contains(&node) {
                continue;
            }
            if p["ok"] == true {
                let sbs: Vec<&str> = p["sandboxes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .collect();
                say(format_args!(
                    "stack {stack}: node {node} made its part ({})",
                    sbs.join(", ")
                ));
            } else {
                let msg = p["message"].as_str().unwrap_or("?");
                say(format_args!("stack {stack}: node {node} failed: {msg}"));
                failed.push(format!("node {node}: {msg}"));
            }
            reported.push(node);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !failed.is_empty() {
        bail!(
            "stack {stack}: not made on every node ({}); fix it and `netd up` again, or `netd down` removes it everywhere",
            failed.join("; ")
        );
    }
    Ok(())
}

/// This node's part of a stack published by `netd up` on another node
/// (`cluster::stacks`): what `netd up -d` of the file here makes, against the daemon at
/// `opts.socket` (the caller's own), with no probes. The names of the sandboxes made.
pub fn up_part(stack: &str, text: &str, node: &str, opts: &DaemonOptions) -> anyhow::Result<Vec<String>> {
    let file = StackFile::from_text(text).map_err(|e| anyhow!("stack {stack}: {e}"))?;
    let instances: Vec<Instance> = file
        .instances()
        .map_err(|e| anyhow!("stack {stack}: {e}"))?
        .into_iter()
        .filter(|i| i.node.as_deref() == Some(node))
        .collect();
    let client = Client::new(&opts.socket);
    let mut want = Desired::new(stack, &file, &instances);
    // The stack's services are the cluster's, made by the `netd up` that published it.
    want.services.clear();
    want.manage_services = false;
    let mut resp = Responders::load(&opts.state_dir, stack);
    let changes = converge::plan(&client, stack, &want)?;
    ensure_overlays(&client, stack, &file)?;
    let res = converge::apply(&client, stack, &want, &changes, &mut resp);
    resp.reap_later();
    res?;
    Ok(instances.into_iter().map(|i| i.req.name).collect())
}

/// The answer of a `/v1/cluster/stacks/NAME` call when the cluster has no such stack, or
/// the daemon is in no cluster (it serves no `/v1/cluster/…`).
fn not_in_cluster(e: &crate::api::client::ClientError) -> bool {
    use crate::api::types::ErrorReason;
    matches!(
        e,
        crate::api::client::ClientError::Api {
            reason: Some(ErrorReason::NoSuchRoute) | Some(ErrorReason::NoSuchNetwork),
            ..
        }
    )
}

/// Withdraws a stack from the cluster (the other nodes remove their parts) and waits up
/// to `PARTS_WAIT` for them; Ok(false) when the cluster has no such stack (or none).
fn withdraw(c: &Client, stack: &str) -> anyhow::Result<bool> {
    match c.delete(&format!("/v1/cluster/stacks/{stack}")) {
        Ok(_) => {}
        Err(e) if not_in_cluster(&e) => return Ok(false),
        Err(e) => bail!("stack {stack}: withdraw it from the cluster: {e}"),
    }
    say(format_args!(
        "stack {stack}: withdrawn from the cluster; waiting for the other nodes to remove their parts"
    ));
    let t0 = Instant::now();
    loop {
        let parts = c
            .get(&format!("/v1/cluster/stacks/{stack}/parts"))
            .map_err(|e| anyhow!("stack {stack}: read the nodes' parts: {e}"))?;
        let left: Vec<&str> = parts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["node"].as_str())
            .collect();
        if left.is_empty() {
            say(format_args!("stack {stack}: every node removed its part"));
            return Ok(true);
        }
        if t0.elapsed() > PARTS_WAIT {
            bail!(
                "stack {stack}: node(s) {} did not remove their parts within {} s; they do when their netd runs again",
                left.join(", "),
                PARTS_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cluster's live nodes as the daemon sees them; None when it is not in a cluster
/// (it serves no `/v1/cluster/…`).
fn cluster_nodes(c: &Client) -> anyhow::Result<Option<placement::Nodes>> {
    use crate::api::client::ClientError;
    use crate::api::types::ErrorReason;
    let v = match c.get("/v1/cluster/nodes") {
        Ok(v) => v,
        Err(ClientError::Api {
            reason: Some(ErrorReason::NoSuchRoute),
            ..
        }) => return Ok(None),
        Err(e) => return Err(anyhow!("list the cluster's nodes: {e}")),
    };
    let list = v.as_array().cloned().unwrap_or_default();
    let name = |n: &Value| n["name"].as_str().unwrap_or_default().to_string();
    let local = list
        .iter()
        .find(|n| n["local"] == true)
        .map(name)
        .ok_or_else(|| anyhow!("the cluster's node list does not have this node yet; try again"))?;
    Ok(Some(placement::Nodes {
        local,
        alive: list.iter().map(name).collect(),
    }))
}

/// Makes the file's overlay networks that the cluster does not have yet. They are the
/// cluster's, not the stack's: no stack label, so no `netd down` removes them while
/// another node may still have sandboxes on them (`netctl network rm` does).
fn ensure_overlays(c: &Client, stack: &str, file: &StackFile) -> anyhow::Result<()> {
    let want = file.overlay_networks();
    if want.is_empty() {
        return Ok(());
    }
    let mut have = c.get("/v1/networks").map_err(|e| anyhow!("list networks: {e}"))?;
    // The store's overlay networks too: a node holds one only while it has endpoints on it.
    let stored = c
        .get("/v1/cluster/networks")
        .map_err(|e| anyhow!("list the cluster's networks: {e}"))?;
    if let (Some(h), Some(s)) = (have.as_array_mut(), stored.as_array()) {
        for rec in s {
            if !h.iter().any(|o| o["name"] == rec["name"]) {
                h.push(serde_json::json!({"name": rec["name"], "driver": "overlay"}));
            }
        }
    }
    for body in want {
        let n = body["name"].as_str().unwrap_or_default();
        match have.as_array().into_iter().flatten().find(|o| o["name"] == n) {
            Some(o) if o["driver"] == "overlay" => {}
            Some(o) => bail!(
                "stack {stack}: network {n} exists with driver {}, not overlay; remove or rename it (nothing was changed)",
                o["driver"].as_str().unwrap_or("?")
            ),
            None => {
                c.post("/v1/cluster/networks", &body)
                    .map_err(|e| anyhow!("create overlay network {n}: {e}"))?;
                say(format_args!(
                    "stack {stack}: created overlay network {n} (the cluster's: `netctl network rm {n}` removes it)"
                ));
            }
        }
    }
    Ok(())
}

/// Responders are ready when each answers itself over loopback.
fn wait_responders(placed_all: &[Placed]) -> anyhow::Result<()> {
    let t0 = Instant::now();
    for p in placed_all {
        let Some(port) = p.tcp.first() else { continue };
        let a = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *port);
        while crate::kernel::probe::tcp_probe(Some(&p.netns), a, Duration::from_millis(200)).is_err() {
            if interrupted() {
                bail!("interrupted by a signal");
            }
            if t0.elapsed() > Duration::from_secs(5) {
                bail!("responder in {} did not start", p.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// Measures reachability and names, prints both; (failed, total) expectations.
/// `instances`: this node's; `replicas`: the whole stack's (every node's, for the
/// services' balance probes).
fn measure(
    stack: &StackFile,
    instances: &[Instance],
    replicas: &[Instance],
    placed_all: &[Placed],
    name: &str,
) -> (usize, usize) {
    let nets: Vec<(String, bool)> = stack
        .networks
        .iter()
        .map(|n| (n.name.clone(), n.icc.unwrap_or(true)))
        .collect();
    let rep = report::measure(placed_all, &nets);
    out(&rep.render(name));
    let services = services_of(instances);
    let name_probes = names::measure(placed_all, &services);
    out(&names::render(&name_probes, &services));
    let name_failures = name_probes.iter().filter(|p| !p.ok).count();
    let balanced = balanced_of(stack, replicas);
    let lb = balance::measure(placed_all, &balanced);
    if !lb.is_empty() {
        out(&balance::render(&lb));
    }
    let lb_failures = lb.iter().filter(|p| !p.ok()).count();
    (
        rep.failures() + name_failures + lb_failures,
        rep.total() + name_probes.len() + lb.len(),
    )
}

/// The stack's `[[service]]`s with their replicas, as `balance` probes them.
fn balanced_of(stack: &StackFile, instances: &[Instance]) -> Vec<balance::Balanced> {
    stack
        .services
        .iter()
        .map(|s| {
            let tcp = s.tcp.first().copied();
            balance::Balanced {
                name: s.name.clone(),
                networks: s.networks.clone(),
                replicas: instances
                    .iter()
                    .filter(|i| i.service == s.name && i.req.labels.contains_key(file::LABEL_SERVICE))
                    .map(|i| i.req.name.clone())
                    .collect(),
                tcp,
                dnsrr: s.endpoint_mode.as_deref() == Some("dnsrr"),
                ingress: s
                    .publish
                    .iter()
                    .filter_map(|spec| crate::model::parse_published(spec).ok())
                    .filter(|p| {
                        p.mode == crate::model::PublishMode::Ingress && p.proto == crate::model::Proto::Tcp
                    })
                    .filter(|p| Some(p.target) == tcp)
                    .map(|p| p.published)
                    .collect(),
            }
        })
        .collect()
}
