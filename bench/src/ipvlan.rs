//! ipvlan attach/detach next to bridge and macvlan attach/detach, in the same run, the
//! same daemon and (in the VM lane, where this development kernel's missing ipvlan is
//! found) the same boot: ratios only, which is all an emulated kernel can tell.
//!
//! A daemon in a fresh "host" namespace with two veths as parents (a link has macvlan or
//! ipvlan children, not both), their peers in a "LAN" namespace; networks `br` (bridge),
//! `mv` (macvlan) and `iv` (ipvlan l2); N sandboxes without networks, then for each
//! sandbox a connect to all three networks in rotating order, each call timed from the
//! client's side of the unix socket, then the disconnects the same way.
//!
//!   netd-bench-ipvlan [N] [--netd PATH]

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

const NETS: [&str; 3] = ["br", "mv", "iv"];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let exe = std::env::current_exe()?;
    let netd = match args.iter().position(|a| a == "--netd") {
        Some(i) => PathBuf::from(args.get(i + 1).context("--netd PATH")?),
        None => exe.parent().context("exe dir")?.join("netd"),
    };
    let pid = std::process::id();
    let mut d = Daemon {
        host: format!("ndivbench-{pid}"),
        lan: Some(format!("ndivbench-{pid}-lan")),
        base: PathBuf::from(format!("/run/netd-ivbench-{pid}")),
        netd,
        args: vec!["--docker-plugin-dir", "none"],
        child: None,
    };
    sh(&format!(
        "set -e; ip netns add {h}; ip -n {h} link set lo up; ip netns add {l}
         for x in m i; do
           ip link add {p}$x netns {h} type veth peer name lan$x netns {l}
           ip -n {h} link set {p}$x up; ip -n {l} link set lan$x up
         done
         ip -n {l} addr add 10.124.0.1/16 dev lanm; ip -n {l} addr add 10.125.0.1/16 dev lani",
        h = d.host,
        l = d.lan.as_deref().unwrap_or_default(),
        p = format!("ivb{}", pid % 100_000),
    ))?;
    d.start()?;
    let c = Client::new(d.socket());
    let parent = |x: &str| format!("ivb{}{x}", pid % 100_000);
    c.post(
        "/v1/networks",
        &json!({"name": "br", "subnets": [{"subnet": "10.123.0.0/16"}]}),
    )?;
    c.post(
        "/v1/networks",
        &json!({"name": "mv", "driver": "macvlan", "options": {"parent": parent("m")},
                "subnets": [{"subnet": "10.124.0.0/16", "gateway": "10.124.0.1"}]}),
    )?;
    c.post(
        "/v1/networks",
        &json!({"name": "iv", "driver": "ipvlan", "options": {"parent": parent("i"), "ipvlan_mode": "l2"},
                "subnets": [{"subnet": "10.125.0.0/16", "gateway": "10.125.0.1"}]}),
    )?;
    for i in 0..n {
        c.post("/v1/sandboxes", &json!({ "name": format!("s{i}") }))?;
    }
    let mut add = [Vec::new(), Vec::new(), Vec::new()];
    let mut del = [Vec::new(), Vec::new(), Vec::new()];
    for (verb, times) in [("connect", &mut add), ("disconnect", &mut del)] {
        eprintln!("{verb}: {n} sandboxes x 3 networks");
        for i in 0..n {
            for k in 0..3 {
                let which = (i + k) % 3;
                let ms = timed(|| {
                    c.post(
                        &format!("/v1/networks/{}/{verb}", NETS[which]),
                        &json!({ "sandbox": format!("s{i}") }),
                    )?;
                    Ok(())
                })?;
                times[which].push(ms);
            }
        }
    }
    for i in 0..n {
        c.delete(&format!("/v1/sandboxes/s{i}"))?;
    }
    let p50 = |v: &mut Vec<f64>| pct(v, 0.5);
    let a: Vec<f64> = add.iter_mut().map(p50).collect();
    let r: Vec<f64> = del.iter_mut().map(p50).collect();
    for (k, name) in ["bridge ", "macvlan", "ipvlan "].iter().enumerate() {
        println!(
            "{name} (API connect/disconnect, n={n}): attach p50 {:.2} ms | detach p50 {:.2} ms",
            a[k], r[k]
        );
    }
    println!(
        "ratio ipvlan/bridge:  attach p50 {:.2} | detach p50 {:.2}",
        a[2] / a[0],
        r[2] / r[0]
    );
    println!(
        "ratio ipvlan/macvlan: attach p50 {:.2} | detach p50 {:.2}",
        a[2] / a[1],
        r[2] / r[1]
    );
    Ok(())
}
