//! `netd-cni`: the CNI plugin binary. Reads CNI_* and stdin, prints the result or the
//! spec's error JSON on stdout, exits non-zero on error.

use std::io::{Read, Write};

use netd_cni::conf::MAX_STDIN;
use netd_cni::run;

fn main() {
    // One malloc arena: each thread of a standalone operation (store commit, firewall
    // state, namespace socket) would otherwise map and trim an arena of its own for a
    // few allocations. ADD took ~4% less (bench of 3 interleaved pairs, 100 ADDs each).
    // SAFETY: mallopt is called before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let mut stdin = Vec::new();
    // One byte more than allowed, so the parser can tell "too large" from "just fits".
    let read = std::io::stdin()
        .take(MAX_STDIN as u64 + 1)
        .read_to_end(&mut stdin);
    let out = match read {
        Ok(_) => run::run(|k| std::env::var(k).ok(), &stdin),
        Err(e) => {
            netd_cni::error::CniError::new(netd_cni::error::code::IO, format!("read stdin: {e}")).into()
        }
    };
    if let Some(v) = out.stdout {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{v}");
        let _ = o.flush();
    }
    std::process::exit(out.code);
}
