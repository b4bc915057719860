//! Docker's iptables FORWARD chain next to netd's nftables tables.
//!
//! dockerd (with its default `--iptables=true`) sets the `ip filter FORWARD` policy to
//! DROP and accepts only its own bridges. With nftables every base chain on a hook must
//! accept a packet, so netd's bridges would be cut off however netd's own table decides.
//! Docker's documented place for other rules is the `DOCKER-USER` chain, evaluated first
//! in FORWARD and never flushed by dockerd: netd puts one accept per direction for its
//! bridges (`netd-+`) there and lets its own `inet netd` table do the filtering.

use std::path::Path;
use std::process::Command;

use super::KernelError;

const CHAIN: &str = "DOCKER-USER";

fn run(netns: Option<&Path>, bin: &str, args: &[&str]) -> Result<std::process::Output, KernelError> {
    let mut cmd = match netns {
        Some(p) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", p.display())).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("-w")
        .args(args)
        .output()
        .map_err(|e| KernelError::Command {
            command: format!("run {bin}"),
            msg: e.to_string(),
        })
}

/// Makes sure `DOCKER-USER` accepts traffic of bridges matching `pattern` (iptables
/// syntax, `netd-+`). Returns false when there is no such chain (no dockerd managing
/// iptables in this namespace, or no iptables at all): nothing to do then.
pub fn ensure_docker_user_accept(netns: Option<&Path>, pattern: &str) -> Result<bool, KernelError> {
    let mut found = false;
    for bin in ["iptables", "ip6tables"] {
        match run(netns, bin, &["-S", CHAIN]) {
            Ok(o) if o.status.success() => {}
            _ => continue,
        }
        found = true;
        for dir in ["-i", "-o"] {
            let rule = [dir, pattern, "-j", "ACCEPT"];
            let check: Vec<&str> = ["-C", CHAIN].iter().chain(rule.iter()).copied().collect();
            if run(netns, bin, &check)?.status.success() {
                continue;
            }
            let insert: Vec<&str> = ["-I", CHAIN, "1"].iter().chain(rule.iter()).copied().collect();
            let o = run(netns, bin, &insert)?;
            if !o.status.success() {
                return Err(KernelError::Command {
                    command: format!("{bin} -I {CHAIN} {}", rule.join(" ")),
                    msg: String::from_utf8_lossy(&o.stderr).trim().to_string(),
                });
            }
            tracing::info!("{bin} -I {CHAIN} {}", rule.join(" "));
        }
    }
    Ok(found)
}
