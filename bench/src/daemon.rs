//! Shared by the netd-bench binaries: a netd daemon (release build) run inside a
//! namespace of the bench's own, started and killed at will, and everything it made
//! removed on drop; percentiles and timing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use netd::api::client::Client;

pub struct Daemon {
    /// The namespace the daemon runs in (deleted on drop).
    pub host: String,
    /// A second namespace of the bench's, deleted on drop too.
    pub lan: Option<String>,
    pub base: PathBuf,
    pub netd: PathBuf,
    /// Daemon options beyond the state, socket and namespace directories.
    pub args: Vec<&'static str>,
    pub child: Option<Child>,
}

impl Daemon {
    pub fn socket(&self) -> PathBuf {
        self.base.join("netd.sock")
    }

    /// Starts the daemon and waits for its health check: the time that took.
    pub fn start(&mut self) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg(&self.netd)
            .arg("daemon")
            .arg("--state-dir")
            .arg(self.base.join("state"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--netns-dir")
            .arg(self.base.join("netns"))
            .arg("--etc-netns-dir")
            .arg(self.base.join("etc"))
            .args(&self.args)
            .env("NETD_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("start netd")?;
        self.child = Some(child);
        let c = Client::new(self.socket());
        while c.get("/v1/health").is_err() {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("netd did not come up");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(t0.elapsed())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let netns = self.base.join("netns");
        if let Ok(rd) = std::fs::read_dir(&netns) {
            for e in rd.flatten() {
                let p = e.path();
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default();
                // SAFETY: plain umount2 on a path we created.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                let _ = std::fs::remove_file(&p);
            }
        }
        let c = std::ffi::CString::new(netns.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: as above.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir_all(&self.base);
        for ns in std::iter::once(&self.host).chain(&self.lan) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The `q` quantile (0..=1) of `v` (sorted in place), nearest rank.
pub fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[i - 1]
}

/// How long `f` took, in milliseconds.
pub fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}
