//! macvlan attach/detach next to bridge attach/detach in the same run and the same
//! daemon, and what reconcile costs with many macvlan endpoints (it looks inside every
//! sandbox, where a bridge endpoint is checked from the host's link dump).
//!
//! A daemon (release build) in a fresh "host" namespace with a veth as the macvlan
//! parent (its peer in a "LAN" namespace); networks `br` (bridge) and `mv` (macvlan);
//! N sandboxes without networks, then for each sandbox a connect to both networks, in
//! alternating order, each call timed from the client's side of the unix socket, then
//! the disconnects the same way. Then E sandboxes on each network in turn, kill -9,
//! restart: reconcile time and objects recreated.
//!
//!   netd-bench-macvlan [N] [--endpoints E]

mod daemon;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use daemon::{pct, timed, Daemon};
use netd::api::client::Client;
use serde_json::json;

fn sh(cmd: &str) -> anyhow::Result<()> {
    let o = Command::new("bash").args(["-c", cmd]).output()?;
    if !o.status.success() {
        bail!("{cmd}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(())
}

/// kill -9, start, and what the new daemon's reconcile reported: (ms, recreated).
fn restart(d: &mut Daemon) -> anyhow::Result<(u64, usize)> {
    d.kill9();
    d.start()?;
    let info = Client::new(d.socket()).get("/v1/info")?;
    Ok((
        info["reconcile"]["millis"].as_u64().unwrap_or(0),
        info["reconcile"]["recreated"].as_array().map_or(0, Vec::len),
    ))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let endpoints: usize = args
        .iter()
        .position(|a| a == "--endpoints")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let exe = std::env::current_exe()?;
    let netd = exe.parent().context("exe dir")?.join("netd");
    let pid = std::process::id();
    let mut d = Daemon {
        host: format!("ndmvbench-{pid}"),
        lan: Some(format!("ndmvbench-{pid}-lan")),
        base: PathBuf::from(format!("/run/netd-mvbench-{pid}")),
        netd,
        args: vec!["--docker-plugin-dir", "none"],
        child: None,
    };
    sh(&format!(
        "set -e; ip netns add {h}; ip -n {h} link set lo up; ip netns add {l}
         ip link add mvb{pid} netns {h} type veth peer name lan0 netns {l}
         ip -n {h} link set mvb{pid} up; ip -n {l} link set lan0 up
         ip -n {l} addr add 10.124.0.1/16 dev lan0",
        h = d.host,
        l = d.lan.as_deref().unwrap_or_default()
    ))?;
    d.start()?;
    let c = Client::new(d.socket());
    c.post(
        "/v1/networks",
        &json!({"name": "br", "subnets": [{"subnet": "10.123.0.0/16"}]}),
    )?;
    c.post(
        "/v1/networks",
        &json!({"name": "mv", "driver": "macvlan", "options": {"parent": format!("mvb{pid}")},
                "subnets": [{"subnet": "10.124.0.0/16", "gateway": "10.124.0.1"}]}),
    )?;
    for i in 0..n {
        c.post("/v1/sandboxes", &json!({ "name": format!("s{i}") }))?;
    }
    let (mut add_br, mut add_mv, mut del_br, mut del_mv) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let order = |i: usize| {
        if i.is_multiple_of(2) {
            ["br", "mv"]
        } else {
            ["mv", "br"]
        }
    };
    for i in 0..n {
        for net in order(i) {
            let ms = timed(|| {
                c.post(
                    &format!("/v1/networks/{net}/connect"),
                    &json!({ "sandbox": format!("s{i}") }),
                )?;
                Ok(())
            })?;
            if net == "br" { &mut add_br } else { &mut add_mv }.push(ms);
        }
    }
    for i in 0..n {
        for net in order(i) {
            let ms = timed(|| {
                c.post(
                    &format!("/v1/networks/{net}/disconnect"),
                    &json!({ "sandbox": format!("s{i}") }),
                )?;
                Ok(())
            })?;
            if net == "br" { &mut del_br } else { &mut del_mv }.push(ms);
        }
    }
    for i in 0..n {
        c.delete(&format!("/v1/sandboxes/s{i}"))?;
    }
    let p = |v: &mut Vec<f64>| (pct(v, 0.5), pct(v, 0.99));
    let ((ab50, ab99), (am50, am99)) = (p(&mut add_br), p(&mut add_mv));
    let ((db50, db99), (dm50, dm99)) = (p(&mut del_br), p(&mut del_mv));
    println!("bridge  (API connect/disconnect, n={n}): attach p50 {ab50:.2} ms p99 {ab99:.2} ms | detach p50 {db50:.2} ms p99 {db99:.2} ms");
    println!("macvlan (API connect/disconnect, n={n}): attach p50 {am50:.2} ms p99 {am99:.2} ms | detach p50 {dm50:.2} ms p99 {dm99:.2} ms");
    println!(
        "ratio macvlan/bridge: attach p50 {:.2} p99 {:.2} | detach p50 {:.2} p99 {:.2}",
        am50 / ab50,
        am99 / ab99,
        dm50 / db50,
        dm99 / db99
    );

    // Reconcile with E endpoints of one driver, then of the other.
    for net in ["br", "mv"] {
        for i in 0..endpoints {
            c.post(
                "/v1/sandboxes",
                &json!({ "name": format!("{net}{i}"), "networks": [{"network": net}] }),
            )?;
        }
        let (ms, recreated) = restart(&mut d)?;
        let c = Client::new(d.socket());
        println!("restart after kill -9 with {endpoints} {net} endpoints: reconcile {ms} ms, objects recreated {recreated} (goal 0)");
        for i in 0..endpoints {
            c.delete(&format!("/v1/sandboxes/{net}{i}"))?;
        }
    }
    Ok(())
}
