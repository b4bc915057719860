//! Processes a stack starts (its responders), found again by PID in a later run
//! (`netd down`, a second `netd up`). A PID alone may have been reused by then, so a
//! process is named by its PID and its start time (field 22 of `/proc/PID/stat`, in
//! clock ticks since boot): the pair is unique for the life of the machine, and a
//! process whose pair does not match is someone else's and is never signalled.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A process by PID and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcId {
    pub pid: u32,
    pub start: u64,
}

/// (state, start time) from `/proc/PID/stat`; None when there is no such process.
fn stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // `rest` starts at field 3 (state), so field 22 is index 19.
    Some((state, fields.get(19)?.parse().ok()?))
}

impl ProcId {
    pub fn of(pid: u32) -> Option<ProcId> {
        stat(pid).map(|(_, start)| ProcId { pid, start })
    }

    /// Whether this very process still runs (a zombie has ended).
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((st, start)) if start == self.start && st != 'Z')
    }

    /// SIGKILL if it is still this process, then waits (up to 5 s) until it has ended.
    /// The caller reaps its own children; others are reaped by their parent or init.
    pub fn kill(&self) -> bool {
        if !self.alive() {
            return false;
        }
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let t0 = Instant::now();
        while self.alive() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// Starts `exe args` in a session of its own, stdio closed: it neither gets the
/// terminal's Ctrl-C or hangup nor writes to a pipe nobody reads, so it lives until it
/// is killed by PID (a detached stack's responders outlive `netd up -d`).
pub fn spawn_detached(exe: &Path, args: &[String]) -> std::io::Result<(Child, ProcId)> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    let child = cmd.spawn()?;
    let id = ProcId::of(child.id())
        .ok_or_else(|| std::io::Error::other(format!("process {} ended at once", child.id())))?;
    Ok((child, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_pid_and_start_time() {
        let (mut child, id) = spawn_detached(Path::new("/bin/sleep"), &["30".into()]).unwrap();
        assert!(id.alive());
        let other = ProcId {
            pid: id.pid,
            start: id.start + 1,
        };
        assert!(!other.alive(), "a reused PID is not the same process");
        assert!(!other.kill());
        let killer = std::thread::spawn(move || id.kill());
        let _ = child.wait();
        assert!(killer.join().unwrap());
        assert!(!id.alive());
    }

    #[test]
    fn own_process_parses() {
        let me = ProcId::of(std::process::id()).unwrap();
        assert!(me.alive() && me.start > 0);
    }
}
