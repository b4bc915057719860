//! Attach/detach benchmark against the reference CNI bridge + host-local plugins, run in
//! the same invocation so the ratio compares like with like.
//!
//! netd: a daemon (release build) inside a fresh "host" namespace; N sandboxes created
//! without networks, then N `connect` and N `disconnect` API calls, each timed from the
//! client's side of the unix socket (request written to response read). Reference:
//! `../shared/engines/cni-ref-bench.sh N` (ADD and DEL by direct exec, each in a fresh
//! netns). Then daemon RSS with 1,000 endpoints and the time a restarted daemon takes to
//! reconcile them.
//!
//!   netd-bench-attach [N] [--ref-script PATH] [--endpoints 1000]

mod daemon;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use daemon::{pct, timed, Daemon};
use netd::api::client::Client;
use serde_json::json;

impl Daemon {
    /// The daemon's resident set size.
    fn rss_kb(&self) -> u64 {
        let pid = self.child.as_ref().map(|c| c.id()).unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))
            })
            .unwrap_or(0)
    }
}

fn reference(script: &Path, n: usize) -> anyhow::Result<(f64, f64, f64, f64)> {
    let out = Command::new("bash")
        .arg(script)
        .arg(n.to_string())
        .output()
        .context("run reference bench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("add_p50_ms="))
        .with_context(|| {
            format!(
                "reference bench printed no result: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let get = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    Ok((
        get("add_p50_ms"),
        get("add_p99_ms"),
        get("del_p50_ms"),
        get("del_p99_ms"),
    ))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let opt = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let endpoints: usize = opt("--endpoints").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?;
    let netd = dir.join("netd");
    let ref_script = opt("--ref-script").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/engines/cni-ref-bench.sh")
    });
    let pid = std::process::id();
    let host = format!("ndbench-{pid}");
    Command::new("ip").args(["netns", "add", &host]).status()?;
    Command::new("ip")
        .args(["-n", &host, "link", "set", "lo", "up"])
        .status()?;
    let mut d = Daemon {
        host,
        lan: None,
        base: PathBuf::from(format!("/run/netd-bench-{pid}")),
        netd,
        args: vec![],
        child: None,
    };
    d.start()?;
    let c = Client::new(d.socket());
    c.post(
        "/v1/networks",
        &json!({"name": "bench", "subnets": [{"subnet": "10.123.0.0/16"}]}),
    )?;
    for i in 0..n {
        c.post("/v1/sandboxes", &json!({ "name": format!("s{i}") }))?;
    }
    let mut add = Vec::new();
    for i in 0..n {
        add.push(timed(|| {
            c.post(
                "/v1/networks/bench/connect",
                &json!({ "sandbox": format!("s{i}") }),
            )?;
            Ok(())
        })?);
    }
    let mut del = Vec::new();
    for i in 0..n {
        del.push(timed(|| {
            c.post(
                "/v1/networks/bench/disconnect",
                &json!({ "sandbox": format!("s{i}") }),
            )?;
            Ok(())
        })?);
    }
    for i in 0..n {
        c.delete(&format!("/v1/sandboxes/s{i}"))?;
    }
    let (na50, na99, nd50, nd99) = (
        pct(&mut add, 0.5),
        pct(&mut add, 0.99),
        pct(&mut del, 0.5),
        pct(&mut del, 0.99),
    );
    println!("netd (API connect/disconnect, n={n}): attach p50 {na50:.2} ms p99 {na99:.2} ms | detach p50 {nd50:.2} ms p99 {nd99:.2} ms");
    match reference(&ref_script, n) {
        Ok((ra50, ra99, rd50, rd99)) => {
            println!("reference bridge+host-local (n={n}): ADD p50 {ra50:.2} ms p99 {ra99:.2} ms | DEL p50 {rd50:.2} ms p99 {rd99:.2} ms");
            println!(
                "ratio netd/reference: attach p50 {:.3} (goal <= 0.200) p99 {:.3} | detach p50 {:.3} (goal <= 0.200) p99 {:.3}",
                na50 / ra50,
                na99 / ra99,
                nd50 / rd50,
                nd99 / rd99
            );
        }
        Err(e) => println!("reference: not measured ({e:#})"),
    }

    // RSS and reconcile with many endpoints.
    let t = Instant::now();
    for i in 0..endpoints {
        c.post(
            "/v1/sandboxes",
            &json!({ "name": format!("e{i}"), "networks": [{"network": "bench"}] }),
        )?;
    }
    let fill = t.elapsed();
    let rss = d.rss_kb();
    println!(
        "daemon RSS with {endpoints} endpoints: {:.1} MB (goal <= 50 MB); created in {:.1} s",
        rss as f64 / 1024.0,
        fill.as_secs_f64()
    );
    d.kill9();
    let up = d.start()?;
    let info = Client::new(d.socket()).get("/v1/info")?;
    let rec_ms = info["reconcile"]["millis"].as_u64().unwrap_or(0);
    let recreated = info["reconcile"]["recreated"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    println!(
        "restart after kill -9 with {endpoints} endpoints: reconcile {rec_ms} ms, ready (start to first API answer) {:.0} ms, objects recreated {recreated} (goal: reconcile <= 2000 ms, 0 recreated)",
        up.as_secs_f64() * 1000.0
    );
    Ok(())
}
