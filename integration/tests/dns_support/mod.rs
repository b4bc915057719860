//! Shared by the DNS integration tests: dig from inside a sandbox (Debian's
//! bind9-dnsutils), the skip when it is missing, and a fake upstream (dnsmasq in a
//! namespace of our own).

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use integration::harness::{Host, Outside};
use integration::skip::{no_program, no_root};

/// True (after the skip) when `dig` is not installed.
pub fn dig_missing() -> bool {
    no_program("dig", "bind9-dnsutils")
}

/// True (after the skip) when the root tests cannot run or `dig` is missing.
pub fn no_dig() -> bool {
    no_root() || dig_missing()
}

/// `dig @127.0.0.11 ARGS` from inside `sandbox`: (status, answer lines).
pub fn dig(h: &Host, sandbox: &str, args: &str) -> (String, Vec<String>) {
    let o = h.sh_in(
        sandbox,
        &format!("dig @127.0.0.11 +time=3 +tries=1 +noall +comments +answer {args}"),
    );
    let status = o
        .stdout
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_string())
        .unwrap_or_else(|| format!("no answer: {} {}", o.stdout, o.stderr));
    let answers = o
        .stdout
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (status, answers)
}

/// A fake upstream dnsmasq, killed on drop.
pub struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fake upstream in `out`'s namespace: *.example.test is 192.0.2.7, plus what `extra`
/// dnsmasq options add. None (after the skip) when dnsmasq is not installed.
pub fn dnsmasq(out: &Outside, extra: &[&str]) -> Option<Dnsmasq> {
    if no_program("dnsmasq", "dnsmasq-base") {
        return None;
    }
    let child = Command::new("nsenter")
        .arg(format!("--net={}", out.netns().display()))
        .args([
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--pid-file=",
            "--user=root",
            "--address=/example.test/192.0.2.7",
        ])
        .arg(format!("--listen-address={}", out.ip))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq");
    let d = Dnsmasq(child);
    std::thread::sleep(Duration::from_millis(300));
    Some(d)
}
