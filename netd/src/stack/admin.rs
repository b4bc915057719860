//! `netd down`, `netd ps` and `netd ls`: a stack found again by the `netd.stack` label
//! on its networks and sandboxes, and by its record of responders. `ps` and `ls` only
//! read, so they need a daemon already serving; `down` starts one in-process when none
//! is (the objects of a foreground run that was `kill -9`ed are still in its store).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail};
use serde_json::{json, Value};

use super::converge::{self, Responders};
use super::diff::LABEL_STACK;
use super::file::StackFile;
use super::{connect, out, say, Session};
use crate::daemon::DaemonOptions;

/// The stack a command means: `--name`, else the one FILE names (`name` key or file name).
pub fn stack_name(file: Option<&Path>, name: Option<&str>) -> anyhow::Result<String> {
    match (file, name) {
        (_, Some(n)) => {
            crate::model::validate_name(n).map_err(|e| anyhow!("stack {e}"))?;
            Ok(n.to_string())
        }
        (Some(f), None) => {
            let sf = StackFile::load(f).map_err(|e| anyhow!(e))?;
            sf.stack_name(f, None).map_err(|e| anyhow!(e))
        }
        (None, None) => bail!("which stack? give its FILE or --name NAME (`netd ls` lists them)"),
    }
}

/// Removes the stack from this node and, when it was published to a cluster
/// (`netd up` of a file placed on nodes), from every node.
pub fn down(stack: &str, opts: DaemonOptions) -> anyhow::Result<()> {
    let (client, daemon) = connect(&opts, true)?;
    let published = in_cluster(&client, stack)?;
    remove(client, daemon, stack, &opts, published)
}

/// This node's part only (the daemon's `cluster::stacks`, for a stack withdrawn from
/// the cluster), against the daemon at `opts.socket`.
pub fn down_part(stack: &str, opts: &DaemonOptions) -> anyhow::Result<()> {
    let (client, daemon) = connect(opts, false)?;
    remove(client, daemon, stack, opts, false)
}

/// Whether the cluster holds the stack (false when the daemon is in none).
fn in_cluster(c: &crate::api::client::Client, stack: &str) -> anyhow::Result<bool> {
    match c.get(&format!("/v1/cluster/stacks/{stack}")) {
        Ok(_) => Ok(true),
        Err(e) if super::not_in_cluster(&e) => Ok(false),
        Err(e) => Err(anyhow!("stack {stack}: look it up in the cluster: {e}")),
    }
}

fn remove(
    client: crate::api::client::Client,
    daemon: Option<super::InProcessDaemon>,
    stack: &str,
    opts: &DaemonOptions,
    published: bool,
) -> anyhow::Result<()> {
    let mut s = Session {
        resp: Responders::load(&opts.state_dir, stack),
        client,
        stack: stack.to_string(),
        owns: false,
        published,
        daemon,
    };
    let (nets, sbs) = converge::objects_of(&s.client, stack)?;
    let svcs = converge::services_of(&s.client, stack)?;
    if !published
        && nets.is_empty()
        && sbs.is_empty()
        && svcs.is_empty()
        && s.resp.record.responders.is_empty()
    {
        say(format_args!("stack {stack}: nothing to remove"));
        return s.close();
    }
    s.owns = true;
    s.close()
}

fn responder_json(r: &super::record::Responder) -> Value {
    json!({"pid": r.proc.pid, "alive": r.proc.alive(), "tcp": r.tcp, "udp": r.udp})
}

/// What `ps` shows: the stack's networks and sandboxes (addresses, ports, responder).
pub fn ps_view(nets: &[Value], sbs: &[Value], svcs: &[Value], resp: &Responders) -> Value {
    let networks: Vec<Value> = nets
        .iter()
        .map(|n| {
            json!({
                "name": n["name"],
                "subnets": n["subnets"].as_array().into_iter().flatten().map(|s| s["subnet"].clone()).collect::<Vec<_>>(),
                "sandboxes": n["endpoints"].as_array().into_iter().flatten().map(|e| e["sandbox"].clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let sandboxes: Vec<Value> = sbs
        .iter()
        .map(|s| {
            let r = resp
                .record
                .responders
                .iter()
                .find(|r| s["name"] == r.sandbox.as_str());
            json!({
                "name": s["name"],
                "netns": s["netns"],
                "endpoints": s["endpoints"].as_array().into_iter().flatten().map(|e| json!({
                    "network": e["network"], "ipv4": e["ipv4"], "ipv6": e["ipv6"],
                })).collect::<Vec<_>>(),
                "ports": s["ports"],
                "responder": r.map(responder_json),
            })
        })
        .collect();
    let services: Vec<Value> = svcs
        .iter()
        .map(|s| {
            json!({
                "name": s["name"],
                "namespace": s["namespace"],
                "endpoint_mode": s["endpoint_mode"],
                "vips": s["vips"],
                "ports": s["ports"],
                "published": s["published"],
            })
        })
        .collect();
    json!({"networks": networks, "sandboxes": sandboxes, "services": services})
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| "-".into())
}

pub fn ps(stack: &str, as_json: bool, opts: DaemonOptions) -> anyhow::Result<()> {
    let (client, _) = connect(&opts, false)?;
    let resp = Responders::load(&opts.state_dir, stack);
    let (nets, sbs) = converge::objects_of(&client, stack)?;
    let svcs = converge::services_of(&client, stack)?;
    let mut v = ps_view(&nets, &sbs, &svcs, &resp);
    v["stack"] = json!(stack);
    if as_json {
        out(&serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut t = format!("{:<8} {:<20} {:<30} {}\n", "KIND", "NAME", "ADDRESSES", "DETAIL");
    for n in v["networks"].as_array().into_iter().flatten() {
        let subnets: Vec<String> = n["subnets"].as_array().into_iter().flatten().map(text).collect();
        let members: Vec<String> = n["sandboxes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        t.push_str(&format!(
            "{:<8} {:<20} {:<30} {}\n",
            "network",
            text(&n["name"]),
            subnets.join(","),
            members.join(",")
        ));
    }
    for s in v["sandboxes"].as_array().into_iter().flatten() {
        let addrs: Vec<String> = s["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("{}={}", text(&e["network"]), text(&e["ipv4"])))
            .collect();
        let r = &s["responder"];
        let detail = if r.is_null() {
            "-".to_string()
        } else {
            format!(
                "responder pid {} {}",
                r["pid"],
                if r["alive"] == true { "running" } else { "gone" }
            )
        };
        t.push_str(&format!(
            "{:<8} {:<20} {:<30} {}\n",
            "sandbox",
            text(&s["name"]),
            addrs.join(","),
            detail
        ));
    }
    for s in v["services"].as_array().into_iter().flatten() {
        let vips: Vec<String> = s["vips"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(n, ip)| format!("{n}={}", text(ip)))
            .collect();
        let published: Vec<String> = s["published"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}->{}/{}", p["published"], p["target"], text(&p["proto"])))
            .collect();
        t.push_str(&format!(
            "{:<8} {:<20} {:<30} {}
",
            "service",
            text(&s["name"]),
            if vips.is_empty() {
                "-".to_string()
            } else {
                vips.join(",")
            },
            if published.is_empty() {
                text(&s["endpoint_mode"])
            } else {
                format!("{} published {}", text(&s["endpoint_mode"]), published.join(","))
            }
        ));
    }
    out(t.trim_end());
    Ok(())
}

/// Every stack the daemon's labels or the records know, with its counts.
pub fn ls_view(nets: &Value, sbs: &Value, recorded: &[(String, usize)]) -> Value {
    let mut stacks: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for (i, list) in [nets, sbs].into_iter().enumerate() {
        for o in list.as_array().into_iter().flatten() {
            if let Some(s) = o["labels"][LABEL_STACK].as_str() {
                stacks.entry(s.to_string()).or_default()[i] += 1;
            }
        }
    }
    for (s, n) in recorded {
        stacks.entry(s.clone()).or_default()[2] = *n;
    }
    Value::Array(
        stacks
            .into_iter()
            .map(|(name, [n, s, r])| json!({"name": name, "networks": n, "sandboxes": s, "responders": r}))
            .collect(),
    )
}

pub fn ls(as_json: bool, opts: DaemonOptions) -> anyhow::Result<()> {
    let (client, _) = connect(&opts, false)?;
    let nets = client.get("/v1/networks")?;
    let sbs = client.get("/v1/sandboxes")?;
    let recorded: Vec<(String, usize)> = super::record::names(&opts.state_dir)
        .into_iter()
        .map(|n| {
            let alive = Responders::load(&opts.state_dir, &n)
                .record
                .responders
                .iter()
                .filter(|r| r.proc.alive())
                .count();
            (n, alive)
        })
        .collect();
    let v = ls_view(&nets, &sbs, &recorded);
    if as_json {
        out(&serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut t = format!(
        "{:<24} {:>8} {:>9} {:>10}\n",
        "NAME", "NETWORKS", "SANDBOXES", "RESPONDERS"
    );
    for s in v.as_array().into_iter().flatten() {
        t.push_str(&format!(
            "{:<24} {:>8} {:>9} {:>10}\n",
            text(&s["name"]),
            s["networks"],
            s["sandboxes"],
            s["responders"]
        ));
    }
    out(t.trim_end());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_counts_per_stack_and_ignores_unlabelled_objects() {
        let nets = json!([
            {"name": "a", "labels": {"netd.stack": "s1"}},
            {"name": "b", "labels": {}},
            {"name": "c", "labels": {"netd.stack": "s2"}},
        ]);
        let sbs = json!([
            {"name": "x", "labels": {"netd.stack": "s1"}},
            {"name": "y", "labels": {"netd.stack": "s1"}},
        ]);
        let v = ls_view(&nets, &sbs, &[("s1".into(), 2), ("s3".into(), 0)]);
        assert_eq!(
            v,
            json!([
                {"name": "s1", "networks": 1, "sandboxes": 2, "responders": 2},
                {"name": "s2", "networks": 1, "sandboxes": 0, "responders": 0},
                {"name": "s3", "networks": 0, "sandboxes": 0, "responders": 0},
            ])
        );
    }
}
