//! A sandbox's `/etc/netns/<name>`, which `ip netns exec` bind-mounts over `/etc`: netd
//! writes its `resolv.conf` there. Not a kernel object, but a side effect of the plan
//! like a namespace file, so it lives beside them and tests fake it the same way.

use std::io::ErrorKind;
use std::path::Path;

use super::KernelError;

fn err(dir: &Path, what: &str, e: std::io::Error) -> KernelError {
    KernelError::Other(format!("{what} {}: {e}", dir.display()))
}

/// Writes `<dir>/resolv.conf`, making `dir` first. Written to a temporary name and
/// renamed, so a process in the sandbox never reads half a file.
pub fn write_resolv_conf(dir: &Path, contents: &str) -> Result<(), KernelError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, "create", e))?;
    let tmp = dir.join(".resolv.conf.netd");
    std::fs::write(&tmp, contents).map_err(|e| err(&tmp, "write", e))?;
    std::fs::rename(&tmp, dir.join("resolv.conf")).map_err(|e| err(dir, "rename resolv.conf in", e))
}

/// Removes `dir` and everything in it; a missing `dir` is success.
pub fn delete(dir: &Path) -> Result<(), KernelError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(err(dir, "remove", e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_then_deleted_twice() {
        let dir = std::env::temp_dir().join(format!("netd-etc-netns-{}", std::process::id()));
        let sb = dir.join("web");
        write_resolv_conf(&sb, "nameserver 127.0.0.11\n").unwrap();
        write_resolv_conf(&sb, "nameserver 127.0.0.12\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(sb.join("resolv.conf")).unwrap(),
            "nameserver 127.0.0.12\n"
        );
        delete(&sb).unwrap();
        assert!(!sb.exists());
        delete(&sb).unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
