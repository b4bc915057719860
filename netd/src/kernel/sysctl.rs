//! Sysctls under `/proc/sys`, written in the right network namespace.
//!
//! `/proc/sys/net/...` is resolved against the network namespace of the thread that
//! opens the file, not against the process or a mount. So `write`/`read` act on the
//! *calling thread's* namespace, and `write_in`/`read_in` send the work to an `NsThread`
//! (the daemon's host namespace worker). Keys use slashes (`net/ipv4/ip_forward`,
//! `net/ipv6/conf/<if>/disable_ipv6`): dotted names are ambiguous, since interface
//! names may contain dots (`eth0.100`).

use std::io::ErrorKind;
use std::path::PathBuf;

use super::netns::{NsThread, Pending};
use super::KernelError;

fn path_of(key: &str) -> Result<PathBuf, KernelError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(KernelError::Sysctl {
            key: key.to_string(),
            source: std::io::Error::new(
                ErrorKind::InvalidInput,
                "not a relative /proc/sys key like net/ipv4/ip_forward",
            ),
        });
    }
    Ok(PathBuf::from("/proc/sys").join(key))
}

/// Writes `value` to `/proc/sys/<key>` in the calling thread's namespace.
pub fn write(key: &str, value: &str) -> Result<(), KernelError> {
    let path = path_of(key)?;
    // No O_CREAT: a missing key (unknown interface, IPv6 disabled at boot) must be an
    // error, not a new file.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()))
        .map_err(|source| KernelError::Sysctl {
            key: key.to_string(),
            source,
        })
}

/// Reads `/proc/sys/<key>` in the calling thread's namespace, trailing newline removed.
pub fn read(key: &str) -> Result<String, KernelError> {
    let path = path_of(key)?;
    std::fs::read_to_string(&path)
        .map(|s| s.trim_end().to_string())
        .map_err(|source| KernelError::Sysctl {
            key: key.to_string(),
            source,
        })
}

/// `write` on the worker's namespace.
pub fn write_in(ns: &NsThread, key: &str, value: &str) -> Result<(), KernelError> {
    let (k, v) = (key.to_string(), value.to_string());
    ns.run(move || write(&k, &v))?
}

/// `write` on the worker's namespace, without waiting: the caller overlaps it with other
/// work and calls `wait` (which yields the write's own result) before relying on it.
pub fn submit_write<'a>(
    ns: &'a NsThread,
    key: &str,
    value: &str,
) -> Result<Pending<'a, Result<(), KernelError>>, KernelError> {
    let (k, v) = (key.to_string(), value.to_string());
    ns.submit(move || write(&k, &v))
}

/// `read` on the worker's namespace.
pub fn read_in(ns: &NsThread, key: &str) -> Result<String, KernelError> {
    let k = key.to_string();
    ns.run(move || read(&k))?
}

/// Several writes in one trip to the worker (each trip is a thread wake-up); stops at
/// the first failure. Keys marked optional may be missing: `(key, value, optional)`.
pub fn write_all_in(ns: &NsThread, items: &[(String, String, bool)]) -> Result<(), KernelError> {
    let items = items.to_vec();
    ns.run(move || {
        for (k, v, optional) in &items {
            match write(k, v) {
                Err(KernelError::Sysctl { source, .. })
                    if *optional && source.kind() == ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_proc_sys() {
        assert!(path_of("net/ipv4/ip_forward").is_ok());
        assert!(path_of("net/ipv4/conf/eth0.100/rp_filter").is_ok());
        for bad in ["", "/etc/passwd", "net/../../etc", "net//x", "net/./x"] {
            assert!(path_of(bad).is_err(), "{bad}");
        }
    }
}
