//! `netd up`: bring a stack file up through the API (starting a daemon in-process when
//! none answers on the socket), start a responder in every sandbox, measure who reaches
//! whom with real connections, print it, and tear everything down on Ctrl-C (or at once
//! with `--check`, whose exit status says whether every expectation held).

pub mod file;
pub mod names;
pub mod report;
pub mod responder;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::api::client::Client;
use crate::daemon::DaemonOptions;
use file::{Instance, StackFile};

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

/// What a stack run created, removed in reverse on drop (also on error or panic).
struct Running {
    client: Client,
    networks: Vec<String>,
    sandboxes: Vec<String>,
    responders: Vec<Child>,
}

impl Running {
    fn teardown(&mut self) {
        for c in &mut self.responders {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.responders.clear();
        for s in self.sandboxes.drain(..).rev() {
            if let Err(e) = self.client.delete(&format!("/v1/sandboxes/{s}")) {
                eprintln!("netd up: remove sandbox {s}: {e}");
            }
        }
        for n in self.networks.drain(..).rev() {
            if let Err(e) = self.client.delete(&format!("/v1/networks/{n}")) {
                eprintln!("netd up: remove network {n}: {e}");
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.teardown();
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

fn placed(inst: &Instance, sb: &Value, nets: &Value) -> Placed {
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
    let _ = nets;
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

fn wait_for_ctrl_c() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    Ok(())
}

pub fn up(path: &Path, check: bool, opts: DaemonOptions) -> anyhow::Result<()> {
    let stack = StackFile::load(path).map_err(|e| anyhow!(e))?;
    let instances = stack.instances().map_err(|e| anyhow!(e))?;
    for r in stack.network_requests() {
        r.parse().map_err(|e| anyhow!("network {}: {e}", r.name))?;
    }
    let client = Client::new(&opts.socket);
    let mut daemon = None;
    if client.get("/v1/health").is_err() {
        eprintln!(
            "netd up: no daemon on {}; starting one in this process",
            opts.socket.display()
        );
        daemon = Some(InProcessDaemon::start(opts.clone())?);
    }
    wait_healthy(&client, &mut daemon)?;

    let mut run = Running {
        client: client.clone(),
        networks: vec![],
        sandboxes: vec![],
        responders: vec![],
    };
    let stack_name = stack.name.clone().unwrap_or_else(|| "stack".into());
    for r in stack.network_requests() {
        client
            .post("/v1/networks", &serde_json::to_value(&r)?)
            .with_context(|| format!("create network {}", r.name))?;
        run.networks.push(r.name.clone());
    }
    let exe = std::env::current_exe().context("find the netd binary")?;
    let mut placed_all = Vec::new();
    for inst in &instances {
        let sb = client
            .post("/v1/sandboxes", &serde_json::to_value(&inst.req)?)
            .with_context(|| format!("create sandbox {}", inst.req.name))?;
        run.sandboxes.push(inst.req.name.clone());
        let p = placed(inst, &sb, &Value::Null);
        if !inst.tcp.is_empty() || !inst.udp.is_empty() {
            let mut cmd = Command::new(&exe);
            cmd.arg("responder")
                .arg("--name")
                .arg(&inst.req.name)
                .arg("--netns")
                .arg(&p.netns);
            for t in &inst.tcp {
                cmd.arg("--tcp").arg(t.to_string());
            }
            for u in &inst.udp {
                cmd.arg("--udp").arg(u.to_string());
            }
            let child = cmd.stdin(Stdio::null()).spawn().context("start responder")?;
            run.responders.push(child);
        }
        placed_all.push(p);
    }
    // Responders are ready when each answers itself over loopback.
    let t0 = Instant::now();
    for p in &placed_all {
        let Some(port) = p.tcp.first() else { continue };
        let a = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *port);
        while crate::kernel::probe::tcp_probe(Some(&p.netns), a, Duration::from_millis(200)).is_err() {
            if t0.elapsed() > Duration::from_secs(5) {
                bail!("responder in {} did not start", p.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let nets: Vec<(String, bool)> = stack
        .networks
        .iter()
        .map(|n| (n.name.clone(), n.icc.unwrap_or(true)))
        .collect();
    let rep = report::measure(&placed_all, &nets);
    println!("{}", rep.render(&stack_name));
    let services = services_of(&instances);
    let name_probes = names::measure(&placed_all, &services);
    println!("{}", names::render(&name_probes, &services));
    let name_failures = name_probes.iter().filter(|p| !p.ok).count();
    if check {
        run.teardown();
        if let Some(mut d) = daemon {
            d.stop()?;
        }
        let (failed, total) = (rep.failures() + name_failures, rep.total() + name_probes.len());
        if failed > 0 {
            bail!("{failed} of {total} expectations failed");
        }
        println!("check passed: {total} expectations held");
        return Ok(());
    }
    println!("stack {stack_name} is up; press Ctrl-C to remove it");
    wait_for_ctrl_c()?;
    eprintln!("netd up: removing stack {stack_name}");
    run.teardown();
    if let Some(mut d) = daemon {
        d.stop()?;
    }
    Ok(())
}
