//! `dig` from inside a sandbox (Debian's bind9-dnsutils) against netd's DNS, and the
//! skip when it is missing: for the DNS tests and the service suite.

use crate::harness::Host;
use crate::skip::{no_program, no_root};

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
