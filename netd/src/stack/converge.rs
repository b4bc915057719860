//! Applies a stack file to a daemon: reads the stack's objects back by their labels,
//! asks `diff` what to do, then removes what goes (sandboxes before their networks),
//! creates what is missing and starts the responders that are not already running.
//! Each step is one API call and one log line naming the object; between steps a
//! Ctrl-C stops the run (the caller then removes the stack).

use std::path::{Path, PathBuf};
use std::process::Child;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use super::diff::{self, Action, Changes, Existing, ResponderSpec, Wanted, LABEL_SPEC, LABEL_STACK};
use super::file::{Instance, StackFile};
use super::record::{self, Record, Responder};
use super::{interrupted, say};
use crate::api::client::{Client, ClientError};
use crate::kernel::process::spawn_detached;
use crate::model::{NetworkRequest, SandboxRequest, ServiceRequest, DEFAULT_NAMESPACE};

/// The file's objects as requests labelled with the stack and their spec hash.
pub struct Desired {
    pub networks: Vec<NetworkRequest>,
    pub sandboxes: Vec<SandboxRequest>,
    /// The `[[service]]` sections' services (namespace `default`).
    pub services: Vec<ServiceRequest>,
    pub responders: Vec<ResponderSpec>,
    /// Whether this run makes and removes the stack's services. A node making its part
    /// of a stack placed on nodes does not: those services are the cluster's, made by
    /// the `netd up` that published the stack.
    pub manage_services: bool,
    /// The services are the cluster's (`/v1/cluster/services`): a stack placed on nodes.
    pub cluster_services: bool,
}

impl Desired {
    pub fn new(stack: &str, file: &StackFile, instances: &[Instance]) -> Desired {
        let label = |labels: &mut std::collections::BTreeMap<String, String>, spec: String| {
            labels.insert(LABEL_STACK.into(), stack.into());
            labels.insert(LABEL_SPEC.into(), spec);
        };
        let networks = file
            .network_requests()
            .into_iter()
            .map(|mut r| {
                let spec = diff::spec_hash(&r);
                label(&mut r.labels, spec);
                r
            })
            .collect();
        let sandboxes = instances
            .iter()
            .map(|i| {
                let mut r = i.req.clone();
                let spec = diff::spec_hash(&r);
                label(&mut r.labels, spec);
                r
            })
            .collect();
        let responders = instances
            .iter()
            .filter(|i| !i.tcp.is_empty() || !i.udp.is_empty())
            .map(|i| ResponderSpec {
                sandbox: i.req.name.clone(),
                tcp: i.tcp.clone(),
                udp: i.udp.clone(),
            })
            .collect();
        let services = file
            .service_requests(stack)
            .into_iter()
            .map(|mut r| {
                let spec = diff::spec_hash(&r);
                label(&mut r.labels, spec);
                r
            })
            .collect();
        Desired {
            networks,
            sandboxes,
            services,
            responders,
            manage_services: true,
            cluster_services: false,
        }
    }

    fn wanted(&self) -> (Vec<Wanted>, Vec<Wanted>) {
        let spec =
            |l: &std::collections::BTreeMap<String, String>| l.get(LABEL_SPEC).cloned().unwrap_or_default();
        let nets = self
            .networks
            .iter()
            .map(|r| Wanted {
                name: r.name.clone(),
                spec: spec(&r.labels),
                networks: vec![],
            })
            .collect();
        let sbs = self
            .sandboxes
            .iter()
            .map(|r| Wanted {
                name: r.name.clone(),
                spec: spec(&r.labels),
                networks: r.networks.iter().map(|e| e.network.clone()).collect(),
            })
            .collect();
        (nets, sbs)
    }
}

fn labels_of(v: &Value) -> std::collections::BTreeMap<String, String> {
    v["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

fn names_in(v: &Value, list: &str, key: &str) -> Vec<String> {
    v[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e[key].as_str().map(str::to_string))
        .collect()
}

/// Every network and sandbox of the daemon, as the diff sees them.
pub fn existing(c: &Client) -> anyhow::Result<(Vec<Existing>, Vec<Existing>)> {
    let conv = |v: Value, list: &str, key: &str| -> Vec<Existing> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|o| Existing {
                name: o["name"].as_str().unwrap_or_default().to_string(),
                labels: labels_of(o),
                links: names_in(o, list, key),
            })
            .collect()
    };
    let nets = c.get("/v1/networks").context("list networks")?;
    let sbs = c.get("/v1/sandboxes").context("list sandboxes")?;
    Ok((
        conv(nets, "endpoints", "sandbox"),
        conv(sbs, "endpoints", "network"),
    ))
}

/// The stack's own objects in the daemon's JSON (what `ps` shows and `down` removes).
pub fn objects_of(c: &Client, stack: &str) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
    let mine = |v: Value| -> Vec<Value> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["labels"][LABEL_STACK] == stack)
            .cloned()
            .collect()
    };
    let nets = c.get("/v1/networks").context("list networks")?;
    let sbs = c.get("/v1/sandboxes").context("list sandboxes")?;
    Ok((mine(nets), mine(sbs)))
}

/// A DELETE where "already gone" is success, as every teardown step.
pub fn delete(c: &Client, path: &str) -> Result<(), ClientError> {
    match c.delete(path) {
        Err(ClientError::Api { status: 404, .. }) => Ok(()),
        r => r.map(|_| ()),
    }
}

/// The responders a stack run knows: the record on disk and the children this process
/// started (reaped here, so a killed one does not linger as a zombie).
pub struct Responders {
    pub file: PathBuf,
    pub record: Record,
    children: Vec<Child>,
}

impl Responders {
    pub fn load(state_dir: &Path, stack: &str) -> Responders {
        let file = record::path(state_dir, stack);
        Responders {
            record: Record::load(&file),
            file,
            children: Vec::new(),
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        self.record
            .save(&self.file)
            .with_context(|| format!("write {}", self.file.display()))
    }

    /// Stops the recorded responders `which` selects (only if still the same process).
    pub fn stop(&mut self, stack: &str, which: impl Fn(&Responder) -> bool) -> anyhow::Result<()> {
        let (gone, keep): (Vec<Responder>, Vec<Responder>) =
            self.record.responders.drain(..).partition(|r| which(r));
        self.record.responders = keep;
        for r in gone {
            if r.proc.kill() {
                say(format_args!(
                    "stack {stack}: stopped responder of {} (pid {})",
                    r.sandbox, r.proc.pid
                ));
            }
            if let Some(i) = self.children.iter().position(|c| c.id() == r.proc.pid) {
                let _ = self.children.remove(i).wait();
            }
        }
        self.save()
    }

    pub fn start(&mut self, stack: &str, spec: &ResponderSpec, netns: &Path) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("find the netd binary")?;
        let mut args = vec![
            "responder".to_string(),
            "--name".into(),
            spec.sandbox.clone(),
            "--netns".into(),
            netns.display().to_string(),
        ];
        for t in &spec.tcp {
            args.extend(["--tcp".to_string(), t.to_string()]);
        }
        for u in &spec.udp {
            args.extend(["--udp".to_string(), u.to_string()]);
        }
        let (child, proc) = spawn_detached(&exe, &args).context("start responder")?;
        say(format_args!(
            "stack {stack}: started responder of {} (pid {})",
            spec.sandbox, proc.pid
        ));
        self.children.push(child);
        self.record.responders.push(Responder {
            sandbox: spec.sandbox.clone(),
            proc,
            tcp: spec.tcp.clone(),
            udp: spec.udp.clone(),
        });
        self.save()
    }

    /// Hands the children to a thread that reaps each when it ends: for a long-lived
    /// process (the daemon making its part of a cluster stack) that outlives this value.
    pub fn reap_later(&mut self) {
        let children = std::mem::take(&mut self.children);
        if !children.is_empty() {
            std::thread::spawn(move || {
                for mut c in children {
                    let _ = c.wait();
                }
            });
        }
    }

    pub fn alive(&self) -> Vec<(ResponderSpec, bool)> {
        self.record
            .responders
            .iter()
            .map(|r| (r.spec(), r.proc.alive()))
            .collect()
    }
}

/// What the daemon must do for the file, or why it must not (a name held by another
/// stack or by hand-made objects): checked before anything changes.
pub fn plan(c: &Client, stack: &str, want: &Desired) -> anyhow::Result<Changes> {
    let (have_nets, have_sbs) = existing(c)?;
    let (want_nets, want_sbs) = want.wanted();
    let changes = diff::diff(stack, &want_nets, &want_sbs, &have_nets, &have_sbs)
        .map_err(|e| anyhow!("stack {stack}: {e}"))?;
    if want.manage_services && !want.services.is_empty() {
        let have = services(c)?;
        for r in &want.services {
            if let Some(o) = have
                .iter()
                .find(|o| o["name"] == r.name.as_str() && o["namespace"] == DEFAULT_NAMESPACE)
            {
                if o["labels"][LABEL_STACK] != stack {
                    let owner = match o["labels"][LABEL_STACK].as_str() {
                        Some(s) => format!("belongs to stack {s}"),
                        None => "is not part of any stack".into(),
                    };
                    bail!(
                        "stack {stack}: service {} already exists and {owner}; remove or rename it, or name this stack's service differently (nothing was changed)",
                        r.name
                    );
                }
            }
        }
    }
    Ok(changes)
}

/// Every service of the daemon (`GET /v1/services`).
pub fn services(c: &Client) -> anyhow::Result<Vec<Value>> {
    let v = c.get("/v1/services").context("list services")?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// The stack's own services.
pub fn services_of(c: &Client, stack: &str) -> anyhow::Result<Vec<Value>> {
    Ok(services(c)?
        .into_iter()
        .filter(|o| o["labels"][LABEL_STACK] == stack)
        .collect())
}

/// Where a service is removed: the cluster's (on every node) for a service made from the
/// store, which carries the cluster's label, else the daemon's own.
fn service_path(o: &Value) -> String {
    format!(
        "/v1/{}services/{}/{}",
        if o["labels"][crate::engine::CLUSTER_SERVICE_LABEL].is_string() {
            "cluster/"
        } else {
            ""
        },
        o["namespace"].as_str().unwrap_or(DEFAULT_NAMESPACE),
        o["name"].as_str().unwrap_or_default()
    )
}

fn check_interrupt() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted by a signal");
    }
    Ok(())
}

/// Applies `changes`: responders that go are stopped, sandboxes and networks that go
/// are removed, then networks and sandboxes are created in file order, then the missing
/// responders are started. Returns each sandbox's JSON as the daemon has it now.
pub fn apply(
    c: &Client,
    stack: &str,
    want: &Desired,
    changes: &Changes,
    resp: &mut Responders,
) -> anyhow::Result<Vec<Value>> {
    let (start, stop) = diff::responders(&want.responders, &resp.alive(), changes);
    resp.stop(stack, |r| stop.contains(&r.spec()))?;
    let why = |a: &Action| match a {
        Action::Recreate(w) => format!(" (to recreate it: {w})"),
        _ => String::new(),
    };
    // Services: one that is gone from the file, changed, or on a network that is
    // recreated goes first (its VIP holds an address of that network); the file's
    // missing ones are made after the sandboxes (their backends follow by label).
    let recreated_nets: Vec<&str> = changes
        .networks
        .iter()
        .filter(|(_, a)| a.removes())
        .map(|(n, _)| n.as_str())
        .collect();
    let mut make_services = Vec::new();
    let have_services = if want.manage_services {
        services_of(c, stack)?
    } else {
        Vec::new()
    };
    for o in &have_services {
        let name = o["name"].as_str().unwrap_or_default();
        let wanted = want.services.iter().find(|r| r.name == name);
        let why = match wanted {
            None => Some("it is no longer in the file".to_string()),
            Some(r) if o["labels"][LABEL_SPEC] != r.labels[LABEL_SPEC].as_str() => {
                Some("its definition changed".into())
            }
            Some(r) => r
                .networks
                .iter()
                .find(|n| recreated_nets.contains(&n.as_str()))
                .map(|n| format!("network {n} is recreated")),
        };
        if let Some(w) = why {
            check_interrupt()?;
            delete(c, &service_path(o)).with_context(|| format!("remove service {name}"))?;
            say(format_args!("stack {stack}: removed service {name} ({w})"));
            if let Some(r) = wanted {
                make_services.push(r);
            }
        }
    }
    for r in want.services.iter().filter(|_| want.manage_services) {
        if !have_services.iter().any(|o| o["name"] == r.name.as_str()) {
            make_services.push(r);
        }
    }
    for (n, a) in changes.sandboxes.iter().filter(|(_, a)| a.removes()) {
        check_interrupt()?;
        delete(c, &format!("/v1/sandboxes/{n}")).with_context(|| format!("remove sandbox {n}"))?;
        say(format_args!("stack {stack}: removed sandbox {n}{}", why(a)));
    }
    for (n, a) in changes.networks.iter().filter(|(_, a)| a.removes()) {
        check_interrupt()?;
        delete(c, &format!("/v1/networks/{n}")).with_context(|| format!("remove network {n}"))?;
        say(format_args!("stack {stack}: removed network {n}{}", why(a)));
    }
    for r in &want.networks {
        if changes.networks.iter().any(|(n, a)| *n == r.name && a.creates()) {
            check_interrupt()?;
            let v = c
                .post("/v1/networks", &serde_json::to_value(r)?)
                .with_context(|| format!("create network {}", r.name))?;
            let subnets: Vec<&str> = v["subnets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["subnet"].as_str())
                .collect();
            say(format_args!(
                "stack {stack}: created network {} ({})",
                r.name,
                subnets.join(", ")
            ));
        }
    }
    let mut out = Vec::new();
    for r in &want.sandboxes {
        let sb = if changes.sandbox(&r.name).is_some_and(Action::creates) {
            check_interrupt()?;
            let v = c
                .post("/v1/sandboxes", &serde_json::to_value(r)?)
                .with_context(|| format!("create sandbox {}", r.name))?;
            say(format_args!("stack {stack}: created sandbox {}", r.name));
            v
        } else {
            c.get(&format!("/v1/sandboxes/{}", r.name))
                .with_context(|| format!("inspect sandbox {}", r.name))?
        };
        out.push(sb);
    }
    for r in make_services {
        check_interrupt()?;
        let path = if want.cluster_services {
            "/v1/cluster/services"
        } else {
            "/v1/services"
        };
        let v = c
            .post(path, &serde_json::to_value(r)?)
            .with_context(|| format!("create service {}", r.name))?;
        let vips: Vec<String> = v["vips"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(n, ip)| format!("{} on {n}", ip.as_str().unwrap_or_default()))
            .collect();
        say(format_args!(
            "stack {stack}: created service {}{}",
            r.name,
            if vips.is_empty() {
                String::new()
            } else {
                format!(" (VIP {})", vips.join(", "))
            }
        ));
    }
    let kept = |v: &[(String, Action)]| v.iter().filter(|(_, a)| *a == Action::Keep).count();
    let (kn, ks) = (kept(&changes.networks), kept(&changes.sandboxes));
    if kn + ks > 0 {
        say(format_args!(
            "stack {stack}: {kn} network(s) and {ks} sandbox(es) already as the file says, kept"
        ));
    }
    for spec in &start {
        check_interrupt()?;
        let sb = out
            .iter()
            .find(|s| s["name"] == spec.sandbox.as_str())
            .ok_or_else(|| anyhow!("sandbox {} vanished", spec.sandbox))?;
        let netns = PathBuf::from(sb["netns"].as_str().unwrap_or_default());
        resp.start(stack, spec, &netns)?;
    }
    Ok(out)
}

/// Removes every object of the stack and stops its recorded responders; best effort
/// (each failure is logged and the rest still goes). Returns the failures.
pub fn remove_all(c: &Client, stack: &str, resp: &mut Responders) -> Vec<String> {
    let mut failed = Vec::new();
    if let Err(e) = resp.stop(stack, |_| true) {
        failed.push(format!("{e:#}"));
    }
    let (nets, sbs) = match objects_of(c, stack) {
        Ok(v) => v,
        Err(e) => return vec![format!("{e:#}")],
    };
    // Services first: a VIP holds an address of its network.
    match services_of(c, stack) {
        Ok(svcs) => {
            for o in svcs {
                let n = o["name"].as_str().unwrap_or_default();
                match delete(c, &service_path(&o)) {
                    Ok(()) => say(format_args!("stack {stack}: removed service {n}")),
                    Err(e) => {
                        say(format_args!("stack {stack}: remove service {n}: {e}"));
                        failed.push(format!("service {n}: {e}"));
                    }
                }
            }
        }
        Err(e) => failed.push(format!("{e:#}")),
    }
    for (kind, list) in [("sandbox", &sbs), ("network", &nets)] {
        for o in list {
            let n = o["name"].as_str().unwrap_or_default();
            let path = format!(
                "/v1/{}/{n}",
                if kind == "sandbox" {
                    "sandboxes"
                } else {
                    "networks"
                }
            );
            match delete(c, &path) {
                Ok(()) => say(format_args!("stack {stack}: removed {kind} {n}")),
                Err(e) => {
                    say(format_args!("stack {stack}: remove {kind} {n}: {e}"));
                    failed.push(format!("{kind} {n}: {e}"));
                }
            }
        }
    }
    failed
}
