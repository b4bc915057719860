//! Shared by the DNS integration tests: dig from inside a sandbox (Debian's
//! bind9-dnsutils), the skip when it is missing, and a fake upstream (dnsmasq in a
//! namespace of our own).

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use integration::harness::Outside;
use integration::skip::no_program;

#[allow(unused_imports)] // each test binary uses its own share of them
pub use integration::dig::{dig, dig_missing, no_dig};

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
