//! Programming service VIPs: netd's nftables batches against kube-proxy-style rules
//! loaded with `iptables-restore`, in the same run, in scratch namespaces of the
//! bench's own (docs/benchmarks.md, "Services").
//!
//! For each size N (services × 4 backends, one TCP port each):
//! - **full**: from an empty table to every service. netd: `firewall::ruleset::services::full`
//!   sent the way the daemon sends service batches, straight over nfnetlink
//!   (`kernel::nft_svc`, no libnftables and so no cache dump), one transaction. Baseline: the rules kube-proxy's iptables mode writes for the same
//!   services (`KUBE-SERVICES` → `KUBE-SVC-*` with `statistic --probability` → `KUBE-SEP-*`
//!   DNAT), one `iptables-restore --noflush` (Debian's iptables, nf_tables backend), the
//!   way kube-proxy execs it.
//! - **one change**: one backend of one service replaced by another. netd: the batch
//!   `services::diff` makes. Baseline: what kube-proxy's partial sync writes (it
//!   rewrites `KUBE-SERVICES` whole, the changed `KUBE-SVC-*`, the new `KUBE-SEP-*` and
//!   deletes the old one). Median of R rounds (the change and its reverse alternate).
//! - **bytes**: netlink bytes sent and received for the full load and for one change,
//!   counted by `strace` on a separate run of the same operation (so tracing costs no
//!   time in the timed runs): netd's path in a child of this binary (`apply` mode),
//!   iptables-restore as itself.
//!
//!
//! `datapath` mode measures the data path instead: new TCP connections per second and
//! connect latency (p50/p99) through a VIP against straight to a backend, with 10 and
//! with 10k services loaded (numbers further below).
//!
//!   netd-bench-services [--sizes 1000,5000,10000] [--rounds 15] [--no-peer]
//!   netd-bench-services datapath [--services 10,10000] [--secs 2] [--rounds 3]

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

#[allow(dead_code)]
mod daemon;
use netd::firewall::batch::Batch;
use netd::firewall::ruleset::services::{self, FwService, FwVip};
use netd::kernel::nft::Nft;
use netd::kernel::{netns, nft_elements};
use netd::model::Proto;

const BACKENDS: usize = 4;

fn sh(cmd: &str) -> anyhow::Result<()> {
    let o = Command::new("bash").args(["-c", cmd]).output()?;
    if !o.status.success() {
        bail!("{cmd}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(())
}

/// A namespace of the bench's, deleted on drop.
struct Ns(String);

impl Ns {
    fn new(name: String) -> anyhow::Result<Ns> {
        sh(&format!("ip netns add {name}"))?;
        Ok(Ns(name))
    }
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.0));
    }
}

/// Service `i`'s VIP (in 10.96.0.0/12, as a Kubernetes ClusterIP) and the address of its
/// backend `j` (in 10.128.0.0/10): distinct, never .0 or .255, for up to 60k services.
fn vip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        96 + (i / 62_500) as u8,
        (i / 250 % 250) as u8 + 1,
        (i % 250) as u8 + 1,
    ))
}

fn backend(i: usize, j: usize) -> IpAddr {
    let k = i * 8 + j; // room for replacement backends (j in 4..8)
    IpAddr::V4(Ipv4Addr::new(
        10,
        128 + (k / 250 / 250) as u8,
        (k / 250 % 250) as u8 + 1,
        (k % 250) as u8 + 1,
    ))
}

/// Service names are zero-padded (`s00042`) so the changed service's name has the same
/// length at every size and the bytes of one change can be compared across sizes.
fn fw_services(n: usize) -> Vec<FwService> {
    (0..n)
        .map(|i| FwService {
            namespace: "bench".into(),
            name: format!("s{i:05}"),
            ports: vec![(80, 8080, Proto::Tcp)],
            affinity: None,
            vips: vec![FwVip {
                network: "bench".into(),
                vip: vip(i),
                backends: (0..BACKENDS).map(|j| backend(i, j)).collect(),
                bridge: String::new(),
            }],
            ingress: vec![],
        })
        .collect()
}

/// The IPv6 twin of an IPv4 address of the bench: the four bytes at the end of
/// fd00:99::/96, so every IPv4 layout has an IPv6 one on one prefix.
fn six(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V6(std::net::Ipv6Addr::from(
            (0xfd00_0099_u128 << 96) | u128::from(u32::from(a)),
        )),
        v6 => v6,
    }
}

/// `svcs` with every VIP and backend moved to its IPv6 twin (`six`).
fn services_v6(svcs: Vec<FwService>) -> Vec<FwService> {
    let mut out = svcs;
    for v in out.iter_mut().flat_map(|s| s.vips.iter_mut()) {
        v.vip = six(v.vip);
        for b in &mut v.backends {
            *b = six(*b);
        }
    }
    out
}

/// `svcs` with the last backend of service `n/2` replaced by a new address (of the
/// VIP's family).
fn changed(svcs: &[FwService]) -> Vec<FwService> {
    let mut out = svcs.to_vec();
    let i = out.len() / 2;
    let b = backend(i, BACKENDS);
    let v = &mut out[i].vips[0];
    v.backends[BACKENDS - 1] = if v.vip.is_ipv6() { six(b) } else { b };
    out
}

// --- kube-proxy's iptables rules for the same services ---------------------------------

fn chain_id(kind: &str, i: usize, j: Option<usize>) -> String {
    // kube-proxy names chains by a hash of the service port (and endpoint); any unique
    // 16-character suffix has the same cost.
    match j {
        Some(j) => format!("KUBE-{kind}-{:016X}", (i as u64) << 8 | j as u64),
        None => format!("KUBE-{kind}-{:016X}", i as u64),
    }
}

fn ipt_services_chain(svcs: &[FwService], out: &mut String) {
    for (i, s) in svcs.iter().enumerate() {
        let v = s.vips[0].vip;
        writeln!(
            out,
            "-A KUBE-SERVICES -d {v}/32 -p tcp -m comment --comment \"bench/{} cluster IP\" -m tcp --dport 80 -j {}",
            s.name,
            chain_id("SVC", i, None)
        )
        .unwrap();
    }
}

fn ipt_service(i: usize, s: &FwService, decl: &mut String, rules: &mut String) {
    let svc = chain_id("SVC", i, None);
    writeln!(decl, ":{svc} - [0:0]").unwrap();
    let b = &s.vips[0].backends;
    for (j, ip) in b.iter().enumerate() {
        // The endpoint chain is named by the backend, so a new backend is a new chain.
        let slot = backend_slot(i, *ip);
        let sep = chain_id("SEP", i, Some(slot));
        writeln!(decl, ":{sep} - [0:0]").unwrap();
        let left = b.len() - j;
        if left > 1 {
            writeln!(
                rules,
                "-A {svc} -m comment --comment \"bench/{} -> {ip}:8080\" -m statistic --mode random --probability {:.10} -j {sep}",
                s.name,
                1.0 / left as f64
            )
            .unwrap();
        } else {
            writeln!(
                rules,
                "-A {svc} -m comment --comment \"bench/{} -> {ip}:8080\" -j {sep}",
                s.name
            )
            .unwrap();
        }
        writeln!(
            rules,
            "-A {sep} -s {ip}/32 -m comment --comment bench/{} -j KUBE-MARK-MASQ",
            s.name
        )
        .unwrap();
        writeln!(
            rules,
            "-A {sep} -p tcp -m comment --comment bench/{} -m tcp -j DNAT --to-destination {ip}:8080",
            s.name
        )
        .unwrap();
    }
}

fn backend_slot(i: usize, ip: IpAddr) -> usize {
    (0..2 * BACKENDS).find(|j| backend(i, *j) == ip).unwrap_or(0)
}

/// Everything from an empty nat table, as kube-proxy's first sync writes it.
fn ipt_full(svcs: &[FwService]) -> String {
    let (mut decl, mut rules) = (String::new(), String::new());
    decl.push_str("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n");
    rules.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE\n",
    );
    ipt_services_chain(svcs, &mut rules);
    for (i, s) in svcs.iter().enumerate() {
        ipt_service(i, s, &mut decl, &mut rules);
    }
    format!("{decl}{rules}COMMIT\n")
}

/// kube-proxy's partial sync after one endpoint change of service `i`: KUBE-SERVICES
/// rewritten whole (it always is), the service's chain rewritten, the new endpoint
/// chain made, the old one deleted.
fn ipt_change(old: &[FwService], new: &[FwService]) -> String {
    let i = new.len() / 2;
    let (mut decl, mut rules) = (String::from("*nat\n:KUBE-SERVICES - [0:0]\n"), String::new());
    ipt_services_chain(new, &mut rules);
    ipt_service(i, &new[i], &mut decl, &mut rules);
    let gone: Vec<_> = old[i].vips[0]
        .backends
        .iter()
        .filter(|b| !new[i].vips[0].backends.contains(b))
        .map(|b| chain_id("SEP", i, Some(backend_slot(i, *b))))
        .collect();
    let mut x = String::new();
    for c in gone {
        // Declared (so flushed) first, as kube-proxy does: -X needs an empty chain.
        writeln!(decl, ":{c} - [0:0]").unwrap();
        writeln!(x, "-X {c}").unwrap();
    }
    format!("{decl}{rules}{x}COMMIT\n")
}

fn iptables_restore(ns: &Path, input: &str, strace_to: Option<&Path>) -> anyhow::Result<Duration> {
    let f = std::fs::File::open(ns)?;
    let fd = f.as_raw_fd();
    let mut cmd = match strace_to {
        Some(out) => {
            let mut c = Command::new("strace");
            c.args([
                "-f",
                "-qq",
                "-yy",
                "-s0",
                "-e",
                "trace=sendmsg,recvmsg,sendto,recvfrom",
                "-o",
            ])
            .arg(out)
            .arg("iptables-restore");
            c
        }
        None => Command::new("iptables-restore"),
    };
    cmd.args(["--noflush", "-w"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    // SAFETY: setns on the child's only thread before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("iptables-restore")?;
    child.stdin.take().unwrap().write_all(input.as_bytes())?;
    let o = child.wait_with_output()?;
    let took = t0.elapsed();
    if !o.status.success() {
        bail!("iptables-restore failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(took)
}

/// (sent, received) netlink bytes in an strace log.
fn netlink_bytes(log: &Path) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(log)?;
    let (mut sent, mut recvd) = (0u64, 0u64);
    for l in text.lines() {
        if !l.contains("NETLINK") {
            continue;
        }
        let Some(n) = l
            .rsplit("= ")
            .next()
            .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        else {
            continue;
        };
        if l.contains("send") {
            sent += n;
        } else if l.contains("recv") {
            recvd += n;
        }
    }
    Ok((sent, recvd))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn kib(b: u64) -> String {
    if b < 10 * 1024 {
        format!("{b} B")
    } else {
        format!("{:.0} KiB", b as f64 / 1024.0)
    }
}

/// An nfnetlink socket in the namespace at `ns`, as the daemon keeps one.
fn conn_in(ns: &Path) -> anyhow::Result<nft_elements::Conn> {
    Ok(netns::run_in(ns, nft_elements::Conn::open)??)
}

/// Sends a service batch as `Kernel::nft` does (`kernel::nft_svc`).
fn apply(conn: &mut nft_elements::Conn, b: &Batch) -> anyhow::Result<()> {
    let cmds = b.svc_commands().context("not a service batch")?;
    if !conn.apply_svc(&cmds)? {
        bail!("the service batch could not be encoded");
    }
    Ok(())
}

/// `apply NETNS SIZE full|change`: (child mode, run under strace) load the services of
/// size N as the timed run does, and for `change` then apply one change; prints a marker
/// on stderr between setup and the measured operation.
fn apply_mode(ns: &Path, n: usize, what: &str) -> anyhow::Result<()> {
    Nft::new_in(Some(ns))?.run("add table inet netd")?;
    let mut conn = conn_in(ns)?;
    let svcs = fw_services(n);
    let full = services::full(&svcs);
    let change = services::diff(&svcs, &changed(&svcs));
    let marker = || {
        // A syscall strace records, to split setup from the operation measured.
        let _ = std::fs::metadata("/netd-bench-services-marker");
    };
    match what {
        "full" => {
            marker();
            apply(&mut conn, &full)?;
        }
        "change" => {
            apply(&mut conn, &full)?;
            marker();
            apply(&mut conn, &change)?;
        }
        other => bail!("apply: unknown operation {other}"),
    }
    Ok(())
}

/// Runs `apply` under strace in a fresh namespace: netlink bytes of the operation only.
fn nft_bytes(exe: &Path, tag: &str, n: usize, what: &str) -> anyhow::Result<(u64, u64)> {
    let ns = Ns::new(format!("ndsvcb-{}-{tag}-b", std::process::id()))?;
    let log = PathBuf::from(format!("/tmp/ndsvcb-{}-{tag}.strace", std::process::id()));
    let o = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-yy",
            "-s0",
            "-e",
            "trace=sendmsg,recvmsg,sendto,recvfrom,statx,newfstatat,stat",
            "-o",
        ])
        .arg(&log)
        .arg(exe)
        .args(["apply", &ns.path().to_string_lossy(), &n.to_string(), what])
        .output()?;
    if !o.status.success() {
        bail!("apply under strace: {}", String::from_utf8_lossy(&o.stderr));
    }
    // Keep what follows the marker.
    let text = std::fs::read_to_string(&log)?;
    let after = text
        .split_once("netd-bench-services-marker")
        .map(|(_, a)| a.to_string())
        .context("marker not in the strace log")?;
    std::fs::write(&log, after)?;
    let r = netlink_bytes(&log);
    let _ = std::fs::remove_file(&log);
    r
}

fn ipt_bytes(tag: &str, setup: Option<&str>, input: &str) -> anyhow::Result<(u64, u64)> {
    let ns = Ns::new(format!("ndsvcb-{}-{tag}-b", std::process::id()))?;
    if let Some(s) = setup {
        iptables_restore(&ns.path(), s, None)?;
    }
    let log = PathBuf::from(format!("/tmp/ndsvcb-{}-{tag}.strace", std::process::id()));
    iptables_restore(&ns.path(), input, Some(&log))?;
    let r = netlink_bytes(&log);
    let _ = std::fs::remove_file(&log);
    r
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("apply") {
        let (ns, n, what) = (
            args.get(2).context("apply NETNS SIZE full|change")?,
            args.get(3).context("size")?.parse()?,
            args.get(4).context("operation")?,
        );
        return apply_mode(Path::new(ns), n, what);
    }
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    if args.get(1).map(String::as_str) == Some("datapath") {
        let counts: Vec<usize> = opt("--services")
            .map_or("10,10000", String::as_str)
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let secs: f64 = opt("--secs").map_or(Ok(2.0), |r| r.parse())?;
        let rounds: usize = opt("--rounds").map_or(Ok(3), |r| r.parse())?;
        return datapath::run(&counts, Duration::from_secs_f64(secs), rounds);
    }
    let sizes: Vec<usize> = opt("--sizes")
        .map_or("1000,5000,10000", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let rounds: usize = opt("--rounds").map_or(Ok(15), |r| r.parse())?;
    // netd alone (no ratio): for a quick look at a size whose iptables-restore run takes
    // minutes. The goals are judged on runs with the peer.
    let no_peer = args.iter().any(|a| a == "--no-peer");
    let exe = std::env::current_exe()?;
    let pid = std::process::id();

    println!(
        "services × {BACKENDS} backends, one TCP port each; netd = service batch straight over nfnetlink (kernel::nft_svc),"
    );
    println!("kube-proxy = iptables-restore --noflush of kube-proxy-style rules ({}); {rounds} change rounds, median", {
        let v = Command::new("iptables-restore").arg("--version").output()?;
        String::from_utf8_lossy(&v.stdout).trim().to_string()
    });
    println!();
    println!(
        "{:>6} | {:>10} {:>12} {:>7} | {:>10} {:>12} {:>7} | {:>17} {:>17}",
        "N",
        "netd full",
        "kube-proxy",
        "ratio",
        "netd 1 chg",
        "kube-proxy",
        "ratio",
        "netd bytes/chg",
        "kube-proxy bytes"
    );
    let mut summary = Vec::new();
    for &n in &sizes {
        let svcs = fw_services(n);
        let svcs2 = changed(&svcs);
        // Planning (what the daemon computes before it writes), timed apart from the
        // writes: the full batch, and the diff of one change (median of 5).
        let t0 = Instant::now();
        let full = services::full(&svcs);
        let plan_full = t0.elapsed();
        let mut plan_chg = Vec::new();
        for _ in 0..5 {
            let t0 = Instant::now();
            std::hint::black_box(services::diff(&svcs, &svcs2));
            plan_chg.push(t0.elapsed());
        }
        let plan_chg = median(plan_chg);
        println!(
            "{n:>6}   netd planning: full {:.1} ms, one change {:.2} ms",
            ms(plan_full),
            ms(plan_chg)
        );
        let (fwd, back) = (services::diff(&svcs, &svcs2), services::diff(&svcs2, &svcs));
        // netd: full load, then rounds of one change (alternating there and back).
        let ns = Ns::new(format!("ndsvcb-{pid}-nft{n}"))?;
        let nft = Nft::new_in(Some(&ns.path()))?;
        nft.run("add table inet netd")?;
        let mut conn = conn_in(&ns.path())?;
        let t0 = Instant::now();
        apply(&mut conn, &full)?;
        let nft_full = plan_full + t0.elapsed();
        let mut nft_chg = Vec::new();
        for r in 0..rounds {
            let t0 = Instant::now();
            apply(&mut conn, if r % 2 == 0 { &fwd } else { &back })?;
            nft_chg.push(plan_chg + t0.elapsed());
        }
        // Proof the state is what was meant: the changed service's last slot in its
        // backend map holds the new backend.
        let listed = nft.run(&format!(
            "get element inet netd svc/pick4/tcp/n{BACKENDS} {{ {} . 80 . {} }}",
            vip(n / 2),
            BACKENDS - 1
        ))?;
        let want = if rounds % 2 == 1 {
            backend(n / 2, BACKENDS)
        } else {
            backend(n / 2, BACKENDS - 1)
        };
        if !listed.contains(&format!("{want} . 8080")) {
            bail!(
                "after {rounds} changes the backend map of s{} lacks {want}:\n{listed}",
                n / 2
            );
        }
        drop(conn);
        drop(nft);
        drop(ns);

        if no_peer {
            let nb = nft_bytes(&exe, &format!("n{n}"), n, "change")?;
            println!(
                "{n:>6} | {:>8.1}ms {:>10} {:>7} | {:>8.2}ms {:>10} {:>7} | {:>8}/{:<8}",
                ms(nft_full),
                "-",
                "-",
                ms(median(nft_chg)),
                "-",
                "-",
                kib(nb.0),
                kib(nb.1)
            );
            continue;
        }
        // kube-proxy: the same services in iptables.
        let ns = Ns::new(format!("ndsvcb-{pid}-ipt{n}"))?;
        let ipt_full_text = ipt_full(&svcs);
        let ipt_full_t = iptables_restore(&ns.path(), &ipt_full_text, None)?;
        let (ifwd, iback) = (ipt_change(&svcs, &svcs2), ipt_change(&svcs2, &svcs));
        let mut ipt_chg = Vec::new();
        for r in 0..rounds {
            ipt_chg.push(iptables_restore(
                &ns.path(),
                if r % 2 == 0 { &ifwd } else { &iback },
                None,
            )?);
        }
        let rules = Command::new("ip")
            .args(["netns", "exec", &ns.0, "iptables-save", "-t", "nat"])
            .output()?;
        let nrules = String::from_utf8_lossy(&rules.stdout)
            .lines()
            .filter(|l| l.starts_with("-A"))
            .count();
        let expect = 5 + n + n * BACKENDS * 3;
        if nrules != expect {
            bail!("iptables holds {nrules} rules, expected {expect}");
        }
        drop(ns);

        // Bytes, on separate traced runs.
        let nb = nft_bytes(&exe, &format!("n{n}"), n, "change")?;
        let nbf = nft_bytes(&exe, &format!("nf{n}"), n, "full")?;
        let ib = ipt_bytes(&format!("i{n}"), Some(&ipt_full_text), &ifwd)?;
        let ibf = ipt_bytes(&format!("if{n}"), None, &ipt_full_text)?;

        let (nc, ic) = (median(nft_chg), median(ipt_chg));
        println!(
            "{n:>6} | {:>8.1}ms {:>10.1}ms {:>6.1}× | {:>8.2}ms {:>10.2}ms {:>6.1}× | {:>8}/{:<8} {:>8}/{:<8}",
            ms(nft_full),
            ms(ipt_full_t),
            ipt_full_t.as_secs_f64() / nft_full.as_secs_f64(),
            ms(nc),
            ms(ic),
            ic.as_secs_f64() / nc.as_secs_f64(),
            kib(nb.0),
            kib(nb.1),
            kib(ib.0),
            kib(ib.1),
        );
        summary.push((n, nft_full, nc, nb, nbf, ipt_full_t, ic, ib, ibf));
    }
    println!("(netd: planning + writing; kube-proxy: iptables-restore of text made beforehand; bytes: sent/received over netlink for one change)");
    if no_peer {
        return Ok(());
    }
    println!();
    println!("full load bytes (sent/received):");
    for (n, _, _, _, nbf, _, _, _, ibf) in &summary {
        println!(
            "{n:>6}: netd {}/{}, kube-proxy {}/{}",
            kib(nbf.0),
            kib(nbf.1),
            kib(ibf.0),
            kib(ibf.1)
        );
    }
    println!();
    let (n, nft_full, _, _, _, ipt_full_t, _, _, _) = summary.last().context("no sizes")?;
    let worst_chg = summary.iter().map(|s| s.2).max().unwrap_or_default();
    let chg_bytes: Vec<u64> = summary.iter().map(|s| s.3 .0).collect();
    println!(
        "goals: full sync of {n} < 1 s: {:.0} ms ({}); one change < 5 ms at every size: worst {:.2} ms ({}); \
         change bytes independent of size: {:?} sent ({}); netd ≥ 10× kube-proxy at {n}: {:.1}× full ({})",
        ms(*nft_full),
        if nft_full.as_secs_f64() < 1.0 { "met" } else { "NOT met" },
        ms(worst_chg),
        if worst_chg < Duration::from_millis(5) { "met" } else { "NOT met" },
        chg_bytes,
        if chg_bytes.windows(2).all(|w| w[0] == w[1]) { "met" } else { "NOT met" },
        ipt_full_t.as_secs_f64() / nft_full.as_secs_f64(),
        if ipt_full_t.as_secs_f64() / nft_full.as_secs_f64() >= 10.0 { "met" } else { "NOT met" },
    );
    Ok(())
}

/// The data path: a bridge in a "host" namespace, three backends and a client in
/// namespaces of their own, the VIP on the bridge (so the host answers ARP for it) and the
/// bridge's `nf_call_iptables` on (so a backend's reply to a client on the same bridge
/// passes conntrack and is un-DNATed) — the layout netd's nftables datapath uses
/// (docs/services.md); the rules are `services::full` of the service plus N-1 others.
mod datapath {
    use super::*;
    use std::io::Read;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const BR: &str = "ndsvcbr0";
    const VIP: &str = "10.99.0.200";
    const BACKENDS: [&str; 3] = ["10.99.0.11", "10.99.0.12", "10.99.0.13"];
    const CLIENT: &str = "10.99.0.100";

    fn enter(ns: &Path) -> anyhow::Result<()> {
        let f = std::fs::File::open(ns)?;
        // SAFETY: setns on this thread only, with an fd we hold.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {}: {}", ns.display(), std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// A server in `ns` on :8080 that accepts and closes at once, until `stop`.
    fn serve(ns: PathBuf, stop: Arc<AtomicBool>) -> anyhow::Result<std::thread::JoinHandle<()>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            // [::] takes IPv4 too (v6only off): the IPv6 rows use the same servers.
            let l = enter(&ns).and_then(|()| Ok(TcpListener::bind("[::]:8080")?));
            let l = match l {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            for c in l.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                drop(c);
            }
        });
        rx.recv()??;
        Ok(h)
    }

    /// Connections to `to` from `threads` threads in the client namespace for `dur`:
    /// (connections per second, connect latencies in µs).
    fn load(client: &Path, to: SocketAddr, threads: usize, dur: Duration) -> anyhow::Result<(f64, Vec<f64>)> {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let client = client.to_path_buf();
                std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                    enter(&client)?;
                    let mut lat = Vec::new();
                    let t0 = Instant::now();
                    let mut buf = [0u8; 1];
                    while t0.elapsed() < dur {
                        let t = Instant::now();
                        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
                        lat.push(t.elapsed().as_secs_f64() * 1e6);
                        // The server closes first; then RST from here (linger 0) leaves no
                        // TIME_WAIT to run out of ports with.
                        let _ = s.read(&mut buf);
                        let _ = socket2_linger0(&s);
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in hs {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("load thread panicked"))??);
        }
        Ok((all.len() as f64 / dur.as_secs_f64(), all))
    }

    fn socket2_linger0(s: &TcpStream) -> std::io::Result<()> {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt with a valid fd and a linger struct.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &l as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as u32,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn services(n: usize) -> Vec<FwService> {
        let mut v = fw_services(n.saturating_sub(1));
        v.push(FwService {
            namespace: "bench".into(),
            name: "web".into(),
            ports: vec![(80, 8080, Proto::Tcp)],
            affinity: None,
            vips: vec![FwVip {
                network: "bench".into(),
                vip: VIP.parse().unwrap(),
                backends: BACKENDS.iter().map(|b| b.parse().unwrap()).collect(),
                bridge: String::new(),
            }],
            ingress: vec![],
        });
        v
    }

    /// Backend changes timed after the eBPF full load: the change and its reverse
    /// alternate, so the maps end as loaded.
    const EBPF_CHANGES: usize = 20;

    /// The eBPF datapath (`--lb ebpf`) programmed from the host namespace with `svcs`,
    /// the client's namespace allowed on network `bench`: the datapath, how long the
    /// full load took and each of `EBPF_CHANGES` backend changes (`changed` and back),
    /// the first right after the full load.
    fn ebpf_lb(
        host: &Path,
        client: &Path,
        svcs: Vec<FwService>,
    ) -> anyhow::Result<(netd::lb::ebpf::EbpfLb, Duration, Vec<Duration>)> {
        use netd::lb::ServiceLb;
        let (host, client) = (host.to_path_buf(), client.to_path_buf());
        std::thread::spawn(move || -> anyhow::Result<_> {
            enter(&host)?;
            let k: Arc<dyn netd::kernel::Kernel> = Arc::new(netd::kernel::fake::FakeKernel::default());
            let lb = netd::lb::ebpf::EbpfLb::open(k, None, None)?;
            lb.set_members(&[("bench".to_string(), client)]);
            let t0 = Instant::now();
            lb.sync_full(&svcs)?;
            let full = t0.elapsed();
            let changes = time_changes(&lb, &svcs, &changed(&svcs))?;
            Ok((lb, full, changes))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("eBPF thread panicked"))?
    }

    /// How long each of `EBPF_CHANGES` changes between `a` and `b` took on `lb` (there
    /// and back in turn, so the maps end as `a` left them).
    fn time_changes(
        lb: &netd::lb::ebpf::EbpfLb,
        a: &[FwService],
        b: &[FwService],
    ) -> anyhow::Result<Vec<Duration>> {
        use netd::lb::ServiceLb;
        let mut changes = Vec::with_capacity(EBPF_CHANGES);
        for i in 0..EBPF_CHANGES {
            let (from, to) = if i % 2 == 0 { (a, b) } else { (b, a) };
            let t0 = Instant::now();
            lb.sync_diff(from, to)?;
            changes.push(t0.elapsed());
        }
        Ok(changes)
    }

    /// The eBPF datapath with its routing mesh on `dev` (the outside veth of the host
    /// namespace), serving `svcs` (network `bench` local, bridge `BR`), and how long
    /// each of `EBPF_CHANGES` backend changes of the last service took (its last backend
    /// replaced by an address nothing serves, and back: its Maglev table moves).
    fn mesh_lb(
        host: &Path,
        dev: &str,
        svcs: Vec<FwService>,
    ) -> anyhow::Result<(netd::lb::ebpf::EbpfLb, Vec<Duration>)> {
        use netd::lb::ServiceLb;
        let (host, dev) = (host.to_path_buf(), dev.to_string());
        std::thread::spawn(move || -> anyhow::Result<_> {
            enter(&host)?;
            let k: Arc<dyn netd::kernel::Kernel> = Arc::new(netd::kernel::fake::FakeKernel::default());
            let lb = netd::lb::ebpf::EbpfLb::open(k, None, Some(&[dev]))?;
            lb.set_networks(&[("bench".to_string(), BR.to_string(), true)]);
            lb.sync_full(&svcs)?;
            let mut new = svcs.clone();
            if let Some(b) = new.last_mut().and_then(|s| s.vips[0].backends.last_mut()) {
                *b = "10.99.0.14".parse()?;
            }
            let changes = time_changes(&lb, &svcs, &new)?;
            Ok((lb, changes))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("eBPF thread panicked"))?
    }

    /// The published port from outside: nftables' ingress rules against the eBPF
    /// routing mesh (tc), each against direct (outside to a backend, routed through the
    /// host), in the same run on the first rig.
    fn published(rig: &Rig, dur: Duration, rounds: usize) -> anyhow::Result<()> {
        let pid = std::process::id();
        let out = Ns::new(format!("ndsvcb-{pid}-out"))?;
        let (h, o) = (&rig.host.0, &out.0);
        sh(&format!(
            "set -e; ip -n {o} link set lo up
             ip -n {h} link add ndsvco0 type veth peer name eth0 netns {o}
             ip -n {h} addr add 10.98.0.1/24 dev ndsvco0; ip -n {h} link set ndsvco0 up
             ip -n {o} addr add 10.98.0.2/24 dev eth0; ip -n {o} link set eth0 up
             ip -n {o} route add default via 10.98.0.1"
        ))?;
        let to: SocketAddr = "10.98.0.1:8088".parse()?;
        let mut svcs = services(1);
        if let Some(web) = svcs.last_mut() {
            web.ingress.push(services::FwIngress {
                published: 8088,
                target: 8080,
                proto: Proto::Tcp,
                masquerade: false,
            });
        }
        let _ = load(&out.path(), direct(), 1, Duration::from_millis(200)).context("outside to a backend")?; // warm up
        rig.nft.run("delete table inet netd").ok();
        rig.nft.run("add table inet netd")?;
        rig.nft.run(&services::full(&svcs).to_string())?;
        let mut nft = Tally::default();
        for r in 0..rounds {
            nft.round_to(&out.path(), to, direct(), dur, r % 2 == 0)
                .context("published port, nftables")?;
        }
        rig.nft.run("delete table inet netd")?;
        // nftables' NAT entries would clash with tc's flows on reused client ports.
        sh(&format!("ip netns exec {h} conntrack -F 2>/dev/null || true"))?;
        let (lb, changes) = mesh_lb(&rig.host.path(), "ndsvco0", svcs)?;
        // On an error below the pins must still go: they hold cgroup programs that every
        // socket of the machine passes.
        let pins = netd::kernel::bpf::pin_dir_for(Path::new(netd::kernel::bpf::PIN_ROOT), &rig.host.path())?;
        let r = measure_tc(&out.path(), to, dur, rounds, nft, &changes);
        drop(lb);
        netd::kernel::bpf::remove_pins(&pins)?;
        r
    }

    fn measure_tc(
        out: &Path,
        to: SocketAddr,
        dur: Duration,
        rounds: usize,
        mut nft: Tally,
        changes: &[Duration],
    ) -> anyhow::Result<()> {
        let (_, l) = load(out, to, 1, Duration::from_millis(300)).context("published port, tc")?;
        if l.is_empty() {
            bail!("no connection through the published port (tc)");
        }
        let mut tc = Tally::default();
        for r in 0..rounds {
            tc.round_to(out, to, direct(), dur, r % 2 == 0)?;
        }
        nft.row("pub nft", "");
        let ratio = tc.vip_rate() / nft.vip_rate();
        tc.row(
            "pub ebpf-tc",
            &format!(
                "   tc/nftables {ratio:.2}×; one backend change {:.3} ms (median of {}; first {:.3} ms, max {:.3} ms)",
                ms(median(changes.to_vec())),
                changes.len(),
                ms(changes[0]),
                ms(changes.iter().copied().max().unwrap_or_default()),
            ),
        );
        Ok(())
    }

    /// One data-path rig: a "host" namespace with the bridge and the VIP, three backend
    /// namespaces serving :8080 and a client namespace. Rigs are alike (same addresses,
    /// each in namespaces of its own), so two can hold two service counts side by side.
    struct Rig {
        host: Ns,
        client: Ns,
        _backends: Vec<Ns>,
        servers: Vec<std::thread::JoinHandle<()>>,
        stop: Arc<AtomicBool>,
        nft: Nft,
    }

    impl Rig {
        fn new(tag: &str) -> anyhow::Result<Rig> {
            let pid = std::process::id();
            let host = Ns::new(format!("ndsvcb-{pid}-{tag}h"))?;
            let client = Ns::new(format!("ndsvcb-{pid}-{tag}c"))?;
            let backends: Vec<Ns> = (0..BACKENDS.len())
                .map(|i| Ns::new(format!("ndsvcb-{pid}-{tag}b{i}")))
                .collect::<anyhow::Result<_>>()?;
            let h = &host.0;
            sh(&format!(
                "set -e; ip -n {h} link set lo up; ip netns exec {h} sysctl -qw net.ipv4.ip_forward=1
                 ip -n {h} link add {BR} type bridge nf_call_iptables 1
                 ip -n {h} addr add 10.99.0.1/24 dev {BR}; ip -n {h} addr add {VIP}/32 dev {BR}
                 ip -n {h} addr add {}/96 dev {BR} nodad; ip -n {h} addr add {}/128 dev {BR} nodad
                 ip -n {h} link set {BR} up",
                six("10.99.0.1".parse()?),
                six(VIP.parse()?),
            ))?;
            let attach = |ns: &Ns, ip: &str, i: usize| {
                sh(&format!(
                    "set -e; ip -n {h} link add ndsvcv{i} type veth peer name eth0 netns {n}
                     ip -n {h} link set ndsvcv{i} master {BR} up
                     ip -n {n} link set lo up; ip -n {n} addr add {ip}/24 dev eth0
                     ip -n {n} addr add {ip6}/96 dev eth0 nodad; ip -n {n} link set eth0 up
                     ip -n {n} route add default via 10.99.0.1",
                    n = ns.0,
                    ip6 = six(ip.parse().map_err(|e| anyhow::anyhow!("{ip}: {e}"))?),
                ))
            };
            for (i, (ns, ip)) in backends.iter().zip(BACKENDS).enumerate() {
                attach(ns, ip, i)?;
            }
            attach(&client, CLIENT, 9)?;
            let stop = Arc::new(AtomicBool::new(false));
            let servers = backends
                .iter()
                .map(|b| serve(b.path(), stop.clone()))
                .collect::<anyhow::Result<_>>()?;
            let nft = Nft::new_in(Some(&host.path()))?;
            let rig = Rig {
                host,
                client,
                _backends: backends,
                servers,
                stop,
                nft,
            };
            // Warm up ARP, neighbour discovery and conntrack before anything is timed.
            let _ = load(&rig.client.path(), direct(), 1, Duration::from_millis(200))?;
            let _ = load(&rig.client.path(), direct6(), 1, Duration::from_millis(200))?;
            Ok(rig)
        }

        /// `services(n)` as the daemon's nftables datapath writes them, in a fresh table;
        /// then a short run through the VIP, which must connect (proof the rules are
        /// live, not measured).
        fn load_nft(&self, n: usize) -> anyhow::Result<Duration> {
            self.nft.run("delete table inet netd").ok();
            self.nft.run("add table inet netd")?;
            let t0 = Instant::now();
            self.nft.run(&services::full(&services(n)).to_string())?;
            let loaded = t0.elapsed();
            let (_, l) = load(&self.client.path(), vip(), 1, Duration::from_millis(300))?;
            if l.is_empty() {
                bail!("no connection through the VIP with {n} services");
            }
            Ok(loaded)
        }

        fn stop(self) {
            self.stop.store(true, Ordering::Relaxed);
            // One connection to each server wakes its accept loop, which then sees `stop`.
            for b in BACKENDS {
                if let Ok(to) = format!("{b}:8080").parse() {
                    let _ = load(&self.client.path(), to, 1, Duration::from_millis(1));
                }
            }
            for s in self.servers {
                let _ = s.join();
            }
        }
    }

    fn vip() -> SocketAddr {
        SocketAddr::new(VIP.parse().unwrap(), 80)
    }

    fn direct() -> SocketAddr {
        SocketAddr::new(BACKENDS[0].parse().unwrap(), 8080)
    }

    fn vip6() -> SocketAddr {
        SocketAddr::new(six(VIP.parse().unwrap()), 80)
    }

    fn direct6() -> SocketAddr {
        SocketAddr::new(six(BACKENDS[0].parse().unwrap()), 8080)
    }

    /// CPU time the whole machine spent busy so far (user, system, interrupts, steal;
    /// all CPUs), from /proc/stat, in nanoseconds.
    fn cpu_busy_ns() -> f64 {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: f64 = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .enumerate()
            // user nice system idle iowait irq softirq steal: all but idle and iowait.
            .filter(|(i, _)| ![3, 4].contains(i) && *i < 8)
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        ticks * 1e9 / hz
    }

    /// What one configuration (a service count on one datapath) gathered over the rounds.
    #[derive(Default)]
    struct Tally {
        vip_rates: Vec<f64>,
        direct_rates: Vec<f64>,
        vip_lat: Vec<f64>,
        direct_lat: Vec<f64>,
        /// Busy CPU time of the machine per connection (ns): client, server and kernel.
        vip_cpu: Vec<f64>,
        direct_cpu: Vec<f64>,
    }

    impl Tally {
        /// One round: through the VIP and straight to a backend, in the order `vip_first`
        /// says (alternated by the caller, so a drift of the machine within a round
        /// weighs on both sides alike).
        fn round(&mut self, client: &Path, dur: Duration, vip_first: bool) -> anyhow::Result<()> {
            self.round_to(client, vip(), direct(), dur, vip_first)
        }

        /// `round` through `to` (a VIP or a published port) instead of the VIP, against
        /// `direct` (a backend).
        fn round_to(
            &mut self,
            client: &Path,
            to: SocketAddr,
            direct: SocketAddr,
            dur: Duration,
            vip_first: bool,
        ) -> anyhow::Result<()> {
            for through_vip in [vip_first, !vip_first] {
                let cpu0 = cpu_busy_ns();
                let (r, l) = load(client, if through_vip { to } else { direct }, 2, dur)?;
                let cpu = (cpu_busy_ns() - cpu0) / l.len().max(1) as f64;
                if through_vip {
                    self.vip_rates.push(r);
                    self.vip_lat.extend(l);
                    self.vip_cpu.push(cpu);
                } else {
                    self.direct_rates.push(r);
                    self.direct_lat.extend(l);
                    self.direct_cpu.push(cpu);
                }
            }
            Ok(())
        }

        fn vip_rate(&self) -> f64 {
            mean(&self.vip_rates)
        }

        /// VIP over direct: the ratio of the mean rates (the figure judged), and the
        /// median of the per-round ratios (shown beside it, as a check on outliers).
        fn ratio(&self) -> (f64, f64) {
            let mut per: Vec<f64> = self
                .vip_rates
                .iter()
                .zip(&self.direct_rates)
                .map(|(v, d)| v / d)
                .collect();
            per.sort_by(f64::total_cmp);
            (
                self.vip_rate() / mean(&self.direct_rates),
                per.get(per.len() / 2).copied().unwrap_or(f64::NAN),
            )
        }

        fn row(&mut self, label: &str, extra: &str) {
            let (ratio, median) = self.ratio();
            println!(
                "{label:>11} | {:>12.0} {:>9.0} {:>9.0} | {:>12.0} {:>9.0} {:>9.0} | {:>7.1}% (median of rounds {:.1}%); CPU/conn {:.1} µs, direct {:.1} µs{extra}",
                self.vip_rate(),
                daemon::pct(&mut self.vip_lat, 0.5),
                daemon::pct(&mut self.vip_lat, 0.99),
                mean(&self.direct_rates),
                daemon::pct(&mut self.direct_lat, 0.5),
                daemon::pct(&mut self.direct_lat, 0.99),
                100.0 * ratio,
                100.0 * median,
                mean(&self.vip_cpu) / 1e3,
                mean(&self.direct_cpu) / 1e3,
            );
        }
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    /// nftables: one rig per service count, side by side, measured round by round in
    /// turn (rig order and VIP/direct order alternate), so the comparison of 10 with 10k
    /// services shares the machine's drift; halfway the rigs swap their counts, so a
    /// difference between the rigs themselves cancels too. Then the eBPF datapath on
    /// the first rig, one count after the other, against direct.
    pub fn run(counts: &[usize], dur: Duration, rounds: usize) -> anyhow::Result<()> {
        let rigs: Vec<Rig> = (0..counts.len())
            .map(|i| Rig::new(&format!("r{i}")))
            .collect::<anyhow::Result<_>>()?;
        println!(
            "data path: {} client threads, {dur:?} per measurement, {rounds} rounds; the {} counts on {} rigs \
             side by side, measured in turn each round (orders alternate), rigs swap counts halfway",
            2,
            counts.len(),
            rigs.len()
        );
        println!(
            "{:>11} | {:>12} {:>9} {:>9} | {:>12} {:>9} {:>9} | {:>8}",
            "services", "VIP conn/s", "p50 µs", "p99 µs", "direct c/s", "p50 µs", "p99 µs", "VIP/dir"
        );
        let mut tallies: Vec<Tally> = counts.iter().map(|_| Tally::default()).collect();
        let mut loaded = vec![Vec::new(); counts.len()];
        let halves = if rigs.len() > 1 && rounds > 1 { 2 } else { 1 };
        for half in 0..halves {
            // Count c sits on rig (c + half) mod rigs.
            let rig_of = |c: usize| &rigs[(c + half) % rigs.len()];
            for (c, &n) in counts.iter().enumerate() {
                loaded[c].push(rig_of(c).load_nft(n)?);
            }
            let these = if half == 0 {
                rounds.div_ceil(halves)
            } else {
                rounds / halves
            };
            for r in 0..these {
                let order: Vec<usize> = if r % 2 == 0 {
                    (0..counts.len()).collect()
                } else {
                    (0..counts.len()).rev().collect()
                };
                for c in order {
                    tallies[c].round(&rig_of(c).client.path(), dur, (r + c) % 2 == 0)?;
                }
            }
        }
        for ((t, &n), l) in tallies.iter_mut().zip(counts).zip(&loaded) {
            let l: Vec<String> = l.iter().map(|d| format!("{:.0}", ms(*d))).collect();
            t.row(
                &n.to_string(),
                &format!("   (rules loaded in {} ms)", l.join(", ")),
            );
        }
        // Which backends answered: conntrack of a host shows the DNAT targets.
        let ct = Command::new("ip")
            .args(["netns", "exec", &rigs[0].host.0, "conntrack", "-L", "-d", VIP])
            .output()?;
        let text = String::from_utf8_lossy(&ct.stdout);
        let hits: Vec<usize> = BACKENDS
            .iter()
            .map(|b| text.matches(&format!("src={b} ")).count())
            .collect();
        println!("connections through the VIP per backend (conntrack, first rig): {hits:?}");
        let nft_rates: Vec<f64> = tallies.iter().map(Tally::vip_rate).collect();
        let worst = tallies.iter().map(|t| t.ratio().0).fold(f64::INFINITY, f64::min);
        let (first, last) = (0, counts.len() - 1);
        println!(
            "goals: VIP ≥ 85 % of direct: worst {:.1}% ({}); {} services within 10 % of {}: {:.1}% of its rate ({})",
            100.0 * worst,
            if worst >= 0.85 { "met" } else { "NOT met" },
            counts[last],
            counts[first],
            100.0 * nft_rates[last] / nft_rates[first],
            if nft_rates[last] >= 0.9 * nft_rates[first] {
                "met"
            } else {
                "NOT met"
            }
        );

        // The same service sets on the eBPF datapath (nftables' VIP rules gone), on the
        // first rig, in alternating rounds with direct again; then again with IPv6 VIPs
        // and backends (`services_v6`: the IPv6 maps and programs, connect6), against
        // direct over IPv6.
        let rig = &rigs[0];
        for nft_rig in &rigs {
            nft_rig.nft.run("delete table inet netd").ok();
        }
        for v6 in [false, true] {
            let (to, direct, fam) = if v6 {
                (vip6(), direct6(), "6")
            } else {
                (vip(), direct(), "")
            };
            for (c, &n) in counts.iter().enumerate() {
                let svcs = if v6 { services_v6(services(n)) } else { services(n) };
                let (lb, full, changes) = ebpf_lb(&rig.host.path(), &rig.client.path(), svcs)?;
                let (_, l) = load(&rig.client.path(), to, 1, Duration::from_millis(300))?;
                if l.is_empty() {
                    bail!("no connection through the VIP {to} (ebpf)");
                }
                let mut t = Tally::default();
                for r in 0..rounds {
                    t.round_to(&rig.client.path(), to, direct, dur, r % 2 == 0)?;
                }
                // nftables was measured over IPv4 only.
                let vs_nft = if v6 {
                    String::new()
                } else {
                    format!("; ebpf/nftables {:.2}×", t.vip_rate() / nft_rates[c])
                };
                t.row(
                    &format!("{n} ebpf{fam}"),
                    &format!(
                        "   ebpf: full load {:.0} ms, one backend change {:.3} ms (median of {}; first {:.3} ms, max {:.3} ms){vs_nft}",
                        ms(full),
                        ms(median(changes.clone())),
                        changes.len(),
                        ms(changes[0]),
                        ms(changes.iter().copied().max().unwrap_or_default()),
                    ),
                );
                drop(lb);
                let pins =
                    netd::kernel::bpf::pin_dir_for(Path::new(netd::kernel::bpf::PIN_ROOT), &rig.host.path())?;
                netd::kernel::bpf::remove_pins(&pins)?;
            }
        }
        // Published port 8088 from an outside namespace: nftables, then the routing mesh.
        println!("published port from outside (VIP columns: the published port):");
        published(&rigs[0], dur, rounds)?;
        for rig in rigs {
            rig.stop();
        }
        Ok(())
    }
}
