//! Helpers for netd's root-only integration tests: real namespaces with unique names,
//! removed on drop (even when a test panics).

pub mod cluster;
pub mod cri;
pub mod dig;
pub mod harness;
pub mod lan;
pub mod packet;
pub mod services_suite;
pub mod skip;

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

    /// Whether the tests can create namespaces (tests skip with `skip::no_root`).
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

    /// The calling thread's own network namespace.
    pub const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

    /// A namespace file's inode: equal for two paths to the same namespace.
    pub fn inode(p: impl AsRef<Path>) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).expect("stat namespace").ino()
    }

    /// The calling thread's id, from /proc/thread-self (`<pid>/task/<tid>`).
    pub fn thread_id() -> String {
        std::fs::read_link("/proc/thread-self")
            .expect("read /proc/thread-self")
            .to_string_lossy()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string()
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

pub mod fwtest {
    //! Helpers for the firewall tests: throwaway namespaces named `ndfw-<pid>-<n>` (made
    //! and removed with `ip netns`, so a leftover says which test run made it), and `nft`
    //! / `ip` run inside them. Tests only: netd itself never runs these commands.

    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static NEXT: AtomicUsize = AtomicUsize::new(0);

    /// A namespace made by `ip netns add`, removed by `ip netns del` on drop (also when
    /// the test panics). Links inside die with it.
    #[derive(Debug)]
    pub struct TestNs {
        pub name: String,
    }

    impl TestNs {
        /// `ip netns add ndfw-<pid>-<n>`, with `lo` up.
        pub fn create() -> TestNs {
            let name = format!(
                "ndfw-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            run("ip", &["netns", "add", &name]);
            let ns = TestNs { name };
            ns.ip(&["link", "set", "lo", "up"]);
            ns
        }

        /// Where `ip netns` bound it.
        pub fn path(&self) -> PathBuf {
            PathBuf::from("/run/netns").join(&self.name)
        }

        /// `ip -n <ns> <args>`; panics with ip's message on failure.
        pub fn ip(&self, args: &[&str]) -> String {
            let mut a = vec!["-n", self.name.as_str()];
            a.extend_from_slice(args);
            run("ip", &a)
        }

        /// `ip netns exec <ns> <args>`; panics with the command's message on failure.
        pub fn exec(&self, args: &[&str]) -> String {
            let mut a = vec!["netns", "exec", self.name.as_str()];
            a.extend_from_slice(args);
            run("ip", &a)
        }

        /// Like `exec`, but returns whether the command succeeded.
        pub fn try_exec(&self, args: &[&str]) -> bool {
            Command::new("ip")
                .args(["netns", "exec", self.name.as_str()])
                .args(args)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        }

        /// `nft <args>` inside the namespace.
        pub fn nft(&self, args: &[&str]) -> String {
            let mut a = vec!["nft"];
            a.extend_from_slice(args);
            self.exec(&a)
        }

        /// `nft -j list ruleset`, parsed.
        pub fn ruleset_json(&self) -> serde_json::Value {
            let out = self.nft(&["-j", "list", "ruleset"]);
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("nft -j output: {e}: {out}"))
        }

        /// One ping (busybox's, which every test image has) from inside the namespace,
        /// optionally from a given source address; whether a reply came.
        pub fn ping(&self, from: Option<&str>, to: &str) -> bool {
            let mut a = vec!["busybox", "ping", "-c1", "-W1"];
            if let Some(src) = from {
                a.extend_from_slice(&["-I", src]);
            }
            a.push(to);
            self.try_exec(&a)
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        }
    }

    /// Runs a command and returns its stdout; panics with its stderr on failure.
    pub fn run(cmd: &str, args: &[&str]) -> String {
        let out = Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
        assert!(
            out.status.success(),
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The elements of set or map `name` of table `family netd` in `nft -j` output, each
    /// as compact JSON text (`"veth0"`, `{"concat":["veth0","02:42:..."]}`, ...), so tests
    /// can look for a value without modelling nft's JSON schema.
    pub fn elements(ruleset: &serde_json::Value, family: &str, name: &str) -> Vec<String> {
        let items = ruleset["nftables"].as_array().cloned().unwrap_or_default();
        for it in items {
            for kind in ["set", "map"] {
                let s = &it[kind];
                if s["family"] == family && s["table"] == "netd" && s["name"] == name {
                    return s["elem"]
                        .as_array()
                        .map(|v| v.iter().map(|e| e.to_string()).collect())
                        .unwrap_or_default();
                }
            }
        }
        panic!("no set/map {family} netd {name} in ruleset");
    }

    /// The rules of chain `family netd chain` as `nft list` prints them.
    pub fn chain_text(ns: &TestNs, family: &str, chain: &str) -> String {
        ns.nft(&["list", "chain", family, "netd", chain])
    }
}
