//! Name freshness: how long after an API call returns the change is visible to another
//! sandbox through 127.0.0.11. For each of N sandboxes: create it, then from a fixed
//! "asker" sandbox query its name until an answer comes back (timed from the API
//! response); remove it, then query until NXDOMAIN. Also an alias added by `connect` and
//! dropped by `disconnect`. Prints p50/p99/max and how often the very first query
//! already saw the change (netd updates its table before the API answers, so it should
//! be always).
//!
//!   netd-bench-dns-fresh [--netd PATH] [N]

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use netd::api::client::Client;
use serde_json::json;

struct Daemon {
    host: String,
    base: PathBuf,
    child: Option<Child>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let netns = self.base.join("netns");
        for e in std::fs::read_dir(&netns).into_iter().flatten().flatten() {
            let _ = Command::new("umount").arg("-l").arg(e.path()).status();
        }
        let _ = Command::new("umount").arg("-l").arg(&netns).status();
        let _ = std::fs::remove_dir_all(&self.base);
        let _ = Command::new("ip").args(["netns", "del", &self.host]).status();
    }
}

/// Asks `name` A once; Some(rcode, answers) or None on timeout.
fn ask(s: &UdpSocket, name: &str) -> Option<(ResponseCode, usize)> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    s.send(&m.to_vec().ok()?).ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let n = s.recv(&mut buf).ok()?;
        let r = Message::from_vec(&buf[..n]).ok()?;
        if r.metadata.id == m.metadata.id {
            return Some((r.metadata.response_code, r.answers.len()));
        }
    }
}

/// Queries until `done` holds; (µs from `t0` to the satisfying answer, tries).
fn until(
    s: &UdpSocket,
    name: &str,
    t0: Instant,
    done: impl Fn(ResponseCode, usize) -> bool,
) -> anyhow::Result<(f64, u32)> {
    let mut tries = 0;
    loop {
        tries += 1;
        if let Some((rc, n)) = ask(s, name) {
            if done(rc, n) {
                return Ok((t0.elapsed().as_secs_f64() * 1e6, tries));
            }
        }
        if t0.elapsed() > Duration::from_secs(5) {
            bail!("{name}: no fresh answer within 5 s");
        }
    }
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[i - 1]
}

fn report(what: &str, v: &mut [(f64, u32)]) {
    let first = v.iter().filter(|x| x.1 == 1).count();
    let mut us: Vec<f64> = v.iter().map(|x| x.0).collect();
    println!(
        "  {what:<28} p50 {:>7.0} us  p99 {:>7.0} us  max {:>7.0} us  first query fresh {first}/{}",
        pct(&mut us, 0.5),
        pct(&mut us, 0.99),
        pct(&mut us, 1.0),
        v.len()
    );
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut netd = PathBuf::from("target/release/netd");
    let mut n = 200usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--netd" => netd = args.next().context("--netd PATH")?.into(),
            x => n = x.parse().context("N")?,
        }
    }
    let pid = std::process::id();
    let mut d = Daemon {
        host: format!("nddns-fresh-{pid}"),
        base: PathBuf::from(format!("/run/nddns-fresh-{pid}")),
        child: None,
    };
    std::fs::create_dir_all(&d.base)?;
    let ok = Command::new("ip")
        .args(["netns", "add", &d.host])
        .status()?
        .success();
    if !ok {
        bail!("ip netns add {}", d.host);
    }
    let _ = Command::new("ip")
        .args(["-n", &d.host, "link", "set", "lo", "up"])
        .status();
    d.child = Some(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", d.host))
            .arg(&netd)
            .arg("daemon")
            .arg("--state-dir")
            .arg(d.base.join("state"))
            .arg("--socket")
            .arg(d.base.join("netd.sock"))
            .arg("--netns-dir")
            .arg(d.base.join("netns"))
            .arg("--etc-netns-dir")
            .arg(d.base.join("etc"))
            .env("NETD_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("start netd")?,
    );
    let c = Client::new(d.base.join("netd.sock"));
    let t0 = Instant::now();
    while c.get("/v1/health").is_err() {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("netd did not come up");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    c.post(
        "/v1/networks",
        &json!({"name": "f", "subnets": [{"subnet": "10.98.0.0/16"}]}),
    )?;
    c.post(
        "/v1/sandboxes",
        &json!({"name": "asker", "networks": [{"network": "f"}]}),
    )?;
    c.post("/v1/sandboxes", &json!({"name": "peer", "networks": []}))?;
    let s = netd::kernel::netns::run_in(&d.base.join("netns/asker"), || -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect("127.0.0.11:53")?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(s)
    })??;
    let (mut create, mut remove, mut connect, mut disconnect) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let name = format!("f{i}");
        c.post(
            "/v1/sandboxes",
            &json!({"name": name, "networks": [{"network": "f"}]}),
        )?;
        let t = Instant::now();
        create.push(until(&s, &name, t, |rc, a| rc == ResponseCode::NoError && a > 0)?);
        c.delete(&format!("/v1/sandboxes/{name}"))?;
        let t = Instant::now();
        remove.push(until(&s, &name, t, |rc, _| rc == ResponseCode::NXDomain)?);
        let alias = format!("al{i}");
        c.post(
            "/v1/networks/f/connect",
            &json!({"sandbox": "peer", "aliases": [alias]}),
        )?;
        let t = Instant::now();
        connect.push(until(&s, &alias, t, |rc, a| {
            rc == ResponseCode::NoError && a > 0
        })?);
        c.post("/v1/networks/f/disconnect", &json!({"sandbox": "peer"}))?;
        let t = Instant::now();
        disconnect.push(until(&s, &alias, t, |rc, _| rc == ResponseCode::NXDomain)?);
    }
    println!("  ({n} of each; goal: p99 <= 10 ms)");
    report("sandbox create -> resolves", &mut create);
    report("sandbox rm -> NXDOMAIN", &mut remove);
    report("connect --alias -> resolves", &mut connect);
    report("disconnect -> NXDOMAIN", &mut disconnect);
    Ok(())
}
