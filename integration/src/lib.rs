//! Helpers for netd's root-only integration tests: real namespaces with unique names,
//! removed on drop (even when a test panics).

pub mod ns {
    //! Unique namespace names and a guard that removes them. Names are
    //! `ndt-<pid>-<n>`, so parallel tests and leftover runs never collide, and a stray
    //! namespace in `ip netns` says which test process made it.

    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use nix::mount::{umount2, MntFlags};

    /// Where the tests bind namespaces: iproute2's directory, so `ip netns exec` works.
    pub const NETNS_DIR: &str = "/run/netns";

    static NEXT: AtomicUsize = AtomicUsize::new(0);

    /// Whether the tests can create namespaces. Callers print "skipped: needs root"
    /// and return when not.
    pub fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// `ndt-<pid>-<n>`, unique within this process run.
    pub fn unique_name() -> String {
        format!(
            "ndt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A short unique tag for link names (which have only 15 bytes): `<pid%10000><n>`.
    pub fn unique_tag() -> String {
        format!(
            "{}{}",
            std::process::id() % 10_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Path of namespace `name` under `NETNS_DIR`.
    pub fn path_of(name: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(name)
    }

    /// Removes every namespace registered with it, in reverse order, on drop. Links
    /// inside a namespace die with it, so tests register namespaces, not links.
    #[derive(Debug, Default)]
    pub struct NsGuard {
        paths: Vec<PathBuf>,
    }

    impl NsGuard {
        pub fn new() -> Self {
            Self::default()
        }

        /// A fresh unique namespace path, registered for removal (not created).
        pub fn reserve(&mut self) -> PathBuf {
            let p = path_of(&unique_name());
            self.paths.push(p.clone());
            p
        }

        /// Registers an existing path for removal.
        pub fn track(&mut self, p: &Path) {
            self.paths.push(p.to_path_buf());
        }
    }

    impl Drop for NsGuard {
        fn drop(&mut self) {
            for p in self.paths.iter().rev() {
                remove_netns(p);
            }
        }
    }

    /// Unmounts and unlinks a namespace file; missing is fine.
    pub fn remove_netns(p: &Path) {
        let _ = umount2(p, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(p);
    }

    /// `ip netns exec <ns> <args...>`: whether it exited 0. Output goes to stderr of the
    /// test, so a failing ping explains itself.
    pub fn exec_in(ns: &Path, args: &[&str]) -> bool {
        let name = ns.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let out = Command::new("ip")
            .args(["netns", "exec", name])
            .args(args)
            .output();
        match out {
            Ok(o) => {
                if !o.status.success() {
                    eprintln!(
                        "`ip netns exec {name} {}` failed: {}{}",
                        args.join(" "),
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
                o.status.success()
            }
            Err(e) => {
                eprintln!("cannot run ip: {e}");
                false
            }
        }
    }

    /// `ping -c1 -W1 <addr>` from inside `ns`. Falls back to busybox's ping where
    /// iputils is not installed (as on the project's VM image).
    pub fn ping(ns: &Path, addr: &str) -> bool {
        let has_ping = Command::new("ping").arg("-V").output().is_ok();
        if has_ping {
            exec_in(ns, &["ping", "-c1", "-W1", addr])
        } else {
            exec_in(ns, &["busybox", "ping", "-c1", "-W1", addr])
        }
    }
}
