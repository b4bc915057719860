//! Shared by the CNI integration tests: the built `netd-cni`, a node (a host namespace,
//! with a netd daemon for delegating mode or a plugin state dir for standalone mode),
//! container namespaces that remove themselves, and direct exec of the plugin.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use integration::harness::{sh, Host};
use netd::model::Sandbox;
use serde_json::{json, Value};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// libcni's `cnitool`, built once per test process by the shared engines' script. A
/// build failure fails the test (scripts/install-deps.sh installs Go and libcni).
pub fn cnitool() -> PathBuf {
    static TOOL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = TOOL.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/engines/cnitool/build.sh");
        let o = Command::new(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if o.status.success() && path.exists() {
            Ok(path)
        } else {
            Err(format!(
                "{} failed ({}): {}",
                script.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("cnitool could not be built: {e}"),
    }
}

/// Skips the running test when the reference plugin `name` (Debian's
/// containernetworking-plugins, in /usr/lib/cni) is missing: true after the skip.
pub fn no_reference_plugin(name: &str) -> bool {
    integration::skip::no_file(
        &Path::new("/usr/lib/cni").join(name),
        "scripts/install-deps.sh installs containernetworking-plugins",
    )
}

/// `target/debug/netd-cni`, built once per test process.
pub fn cni_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(d) = integration::harness::prebuilt_dir() {
                return d;
            }
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "-q", "-p", "netd-cni"])
                .current_dir(&root)
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build -p netd-cni failed");
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            target.join("debug")
        })
        .join("netd-cni")
}

/// The directory holding `netd-cni`, for CNI_PATH.
pub fn cni_dir() -> PathBuf {
    cni_bin().parent().unwrap().to_path_buf()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Delegating,
    Standalone,
}

pub struct Node {
    pub host: Host,
    pub mode: Mode,
}

impl Node {
    pub fn new(mode: Mode) -> Node {
        let host = match mode {
            Mode::Delegating => Host::new(),
            Mode::Standalone => Host::bare(),
        };
        Node { host, mode }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.host.base.join("cni-state")
    }

    /// A network config (what one element of a conflist's `plugins` holds).
    pub fn conf(&self, name: &str, subnet: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0",
            "name": name,
            "type": "netd-cni",
            "bridge": format!("ndcni{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            "ipMasq": true,
            "ipam": {"type": "netd", "subnet": subnet},
        });
        match self.mode {
            Mode::Delegating => c["socket"] = self.host.socket().display().to_string().into(),
            Mode::Standalone => c["stateDir"] = self.state_dir().display().to_string().into(),
        }
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            c[k] = v;
        }
        c
    }

    /// Runs the plugin in the host namespace: (exit code, stdout JSON or Null, stderr).
    pub fn exec(
        &self,
        cmd: &str,
        cid: &str,
        netns: &str,
        ifname: &str,
        conf: &Value,
    ) -> (i32, Value, String) {
        exec_plugin(&self.host.netns(), &cni_bin(), cmd, cid, netns, ifname, conf)
    }

    /// ADD that must succeed; returns the result.
    pub fn add(&self, cid: &str, ns: &Netns, conf: &Value) -> Value {
        let (code, out, err) = self.exec("ADD", cid, &ns.path(), "eth0", conf);
        assert_eq!(code, 0, "ADD {cid}: {out} {err}");
        out
    }

    pub fn del(&self, cid: &str, netns: &str, conf: &Value) {
        let (code, out, err) = self.exec("DEL", cid, netns, "eth0", conf);
        assert_eq!(code, 0, "DEL {cid}: {out} {err}");
    }

    /// The sandboxes netd (daemon or plugin store) has now.
    pub fn sandboxes(&self) -> Vec<Sandbox> {
        match self.mode {
            Mode::Delegating => {
                serde_json::from_value(self.host.client().get("/v1/sandboxes").expect("list"))
                    .expect("sandboxes")
            }
            Mode::Standalone => {
                let path = self.state_dir().join("netd.json");
                let store = netd::store::FileStore::open(&path).expect("open plugin store");
                netd::store::load::<Sandbox>(&store, netd::store::Bucket::Sandboxes)
                    .expect("load")
                    .into_iter()
                    .map(|(_, s)| s)
                    .collect()
            }
        }
    }

    /// Leased addresses of every pool (key "<net>/4" -> addresses).
    pub fn leases(&self) -> BTreeMap<String, Vec<String>> {
        let pools: Vec<(String, netd::ipam::Pool)> = match self.mode {
            Mode::Delegating => {
                let v = self.host.client().get("/v1/pools").expect("pools");
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        (
                            p["key"].as_str().unwrap().to_string(),
                            serde_json::from_value(p["pool"].clone()).unwrap(),
                        )
                    })
                    .collect()
            }
            Mode::Standalone => {
                let path = self.state_dir().join("netd.json");
                let store = netd::store::FileStore::open(&path).expect("open plugin store");
                netd::store::load(&store, netd::store::Bucket::Pools).expect("load")
            }
        };
        pools
            .into_iter()
            .map(|(k, p)| (k, p.leases.keys().map(|a| a.to_string()).collect()))
            .collect()
    }

    /// Endpoint links after netd's deferred deletions had up to 2 s to finish (a DEL of
    /// a runtime's namespace does not wait for the kernel's RCU grace periods).
    pub fn settled_endpoint_links(&self) -> Vec<String> {
        for _ in 0..100 {
            let l = self.endpoint_links();
            if l.is_empty() {
                return l;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.endpoint_links()
    }

    /// Host-side links marked as netd's endpoints (veths), from the kernel.
    pub fn endpoint_links(&self) -> Vec<String> {
        self.host
            .ip_links()
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["ifalias"].as_str().is_some_and(|a| a.starts_with("netd:ep=")))
            .map(|l| l["ifname"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

pub fn exec_plugin(
    host_netns: &Path,
    bin: &Path,
    cmd: &str,
    cid: &str,
    netns: &str,
    ifname: &str,
    conf: &Value,
) -> (i32, Value, String) {
    let path = format!("{}:/usr/lib/cni", cni_dir().display());
    exec_plugin_in_path(host_netns, bin, cmd, cid, netns, ifname, conf, &path)
}

/// `exec_plugin` with a CNI_PATH of the caller's.
#[allow(clippy::too_many_arguments)]
pub fn exec_plugin_in_path(
    host_netns: &Path,
    bin: &Path,
    cmd: &str,
    cid: &str,
    netns: &str,
    ifname: &str,
    conf: &Value,
    cni_path: &str,
) -> (i32, Value, String) {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", host_netns.display()))
        .arg(bin)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", cni_path)
        .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().expect("wait plugin");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let v = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}): {stdout}"))
    };
    (
        o.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A container's network namespace as a runtime makes it: `/run/netns/ndcni-<pid>-<n>`,
/// deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!(
            "ndcni-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let o = sh(&format!("ip netns add {name} && ip -n {name} link set lo up"));
        assert!(o.ok(), "ip netns add {name}: {}", o.stderr);
        Netns { name }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    pub fn sh(&self, cmd: &str) -> integration::harness::Out {
        integration::harness::nsenter(Path::new(&self.path()), &["bash", "-c", cmd])
    }

    /// Global IPv4 addresses on `ifname` ("a.b.c.d/len").
    pub fn addrs(&self, ifname: &str) -> Vec<String> {
        let o = self.sh(&format!(
            "ip -j -4 addr show dev {ifname} scope global 2>/dev/null || echo []"
        ));
        let v: Value = serde_json::from_str(o.stdout.trim()).unwrap_or(json!([]));
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
            .collect()
    }

    /// Whether `ifname` is gone within 2 s. In delegating mode DEL returns once netd
    /// released the attachment; the daemon deletes the veth pair right after, without
    /// making the runtime wait for the kernel's RCU grace periods.
    pub fn link_gone(&self, ifname: &str) -> bool {
        for _ in 0..100 {
            if !self.sh(&format!("ip link show {ifname} 2>/dev/null")).ok() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    pub fn delete(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// The first address of an ADD result, without its prefix length.
pub fn ip_of(r: &Value) -> String {
    r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// Whether the pods `a` and `b` (namespace, ADD result) ping each other, both ways.
pub fn ping_each_other(a: (&Netns, &Value), b: (&Netns, &Value)) -> bool {
    let ping = |from: &Netns, to: &Value| {
        integration::harness::ping_from(std::path::Path::new(&from.path()), None, &ip_of(to))
    };
    ping(a.0, b.1) && ping(b.0, a.1)
}
