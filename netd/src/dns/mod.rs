//! The embedded DNS server at 127.0.0.11 in every sandbox.
//!
//! - `records`: the pure, network-scoped name table, rebuilt from the model;
//! - `services`: the names of load-balanced services (VIP, `tasks.`, dnsrr, Kubernetes
//!   names and SRV), from plain data the engine fills;
//! - `server`: one request in, one outcome out (answer, drop, or forward), pure;
//! - `listener`: the per-sandbox UDP/TCP loops on sockets bound inside each sandbox's
//!   namespace (`kernel::dns_socket` explains why sockets there rather than a DNAT);
//! - `forward`: upstream forwarding with timeouts, retries and a TTL cache;
//! - `resolv`: the per-sandbox resolv.conf.
//!
//! The engine calls `Dns::sync` at the end of every sandbox operation, under its lock
//! and before the API answers, so a name resolves before `create`/`connect` return and
//! is gone before `rm`/`disconnect` return.

mod fast;
pub mod forward;
pub mod listener;
mod observe;
pub mod records;
pub mod resolv;
pub mod server;
pub mod services;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Deserialize;

use crate::kernel::dns_socket;
use crate::model::{NetMode, Network, Sandbox};
use forward::Forwarder;
use listener::SandboxListener;
use records::{ExternalName, Listing, Table};
use services::ServiceRecords;

/// The `[dns]` section of the daemon config.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsSettings {
    /// TTL of netd's own records (Docker: 600 s).
    pub ttl: u32,
    /// Kubernetes cluster domain for `<svc>.<ns>.svc.<domain>`.
    pub cluster_domain: String,
    /// Upstream servers (`IP` or `IP:PORT`); default: the host's resolv.conf minus
    /// loopback servers.
    pub upstreams: Option<Vec<String>>,
    /// Per-try timeout and number of rounds over all upstreams.
    pub timeout_ms: u64,
    pub attempts: u32,
    /// ExternalName services (CNAMEs) until the services issue manages them.
    pub external_names: Vec<ExternalName>,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            ttl: 600,
            cluster_domain: "cluster.local".into(),
            upstreams: None,
            timeout_ms: 1000,
            attempts: 2,
            external_names: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("dns upstream {0:?}: expected IP or IP:PORT")]
    Upstream(String),
    #[error("dns cluster_domain {0:?}: expected a domain name")]
    Domain(String),
}

/// Where every sandbox's server answers (DNAT to the sockets' ephemeral ports).
pub const LISTEN: &str = "127.0.0.11:53";

fn parse_upstream(s: &str) -> Result<SocketAddr, DnsError> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| DnsError::Upstream(s.to_string()))
}

/// What the serving tasks share.
pub struct Shared {
    table: RwLock<Arc<Table>>,
    pub settings: DnsSettings,
    pub forwarder: Forwarder,
    /// Bounds forwarded queries in flight (each holds a socket until answered or timed
    /// out), so a sandbox flooding unknown names gets SERVFAIL instead of exhausting fds.
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// The daemon's metrics and events (`Dns::set_observer`, `observe.rs`).
    observer: std::sync::OnceLock<Arc<crate::observe::Observer>>,
}

/// Forwarded queries in flight, over all sandboxes.
pub const MAX_INFLIGHT: usize = 1024;

impl Shared {
    pub fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Sandboxes served now, and those whose namespace refused our sockets (by inode).
#[derive(Default)]
struct Listeners {
    up: HashMap<String, SandboxListener>,
    failed: HashMap<String, u64>,
}

pub struct Dns {
    shared: Arc<Shared>,
    listeners: Mutex<Listeners>,
    rt: tokio::runtime::Handle,
    listen: std::net::SocketAddrV4,
}

impl Dns {
    /// `host_resolv_conf` is the text of the host's resolv.conf (used when the settings
    /// name no upstreams); `rt` runs the serving tasks.
    pub fn new(
        settings: DnsSettings,
        host_resolv_conf: &str,
        rt: tokio::runtime::Handle,
    ) -> Result<Dns, DnsError> {
        let upstreams = match &settings.upstreams {
            Some(v) => v
                .iter()
                .map(|s| parse_upstream(s))
                .collect::<Result<Vec<_>, _>>()?,
            None => forward::upstreams_from_resolv_conf(host_resolv_conf),
        };
        let d = records::normalize(&settings.cluster_domain);
        if d.is_empty() || hickory_proto::rr::Name::from_ascii(&d).is_err() {
            return Err(DnsError::Domain(settings.cluster_domain.clone()));
        }
        let forwarder = Forwarder::new(
            upstreams,
            Duration::from_millis(settings.timeout_ms.max(1)),
            settings.attempts,
        );
        Ok(Dns {
            shared: Arc::new(Shared {
                table: RwLock::new(Arc::new(Table::new(&settings.cluster_domain))),
                settings,
                forwarder,
                inflight: Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT)),
                observer: std::sync::OnceLock::new(),
            }),
            listeners: Mutex::new(Listeners::default()),
            rt,
            listen: LISTEN.parse().expect("literal"),
        })
    }

    pub fn settings(&self) -> &DnsSettings {
        &self.shared.settings
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        self.shared.forwarder.upstreams()
    }

    /// The table of a model (its networks, sandboxes, the store's ExternalName
    /// services next to those of the config, and the load-balanced services): a pure
    /// function, which the engine builds while the kernel work of an operation is under
    /// way.
    pub fn table_for<'a>(
        &self,
        networks: impl IntoIterator<Item = &'a Network>,
        sandboxes: impl IntoIterator<Item = &'a Sandbox>,
        external_names: &[ExternalName],
        balanced: &[ServiceRecords],
    ) -> Table {
        let s = &self.shared.settings;
        let mut external = s.external_names.clone();
        external.extend_from_slice(external_names);
        Table::build(networks, sandboxes, &s.cluster_domain, &external, balanced)
    }

    /// Brings the listeners and the table in line with the model: listeners for new
    /// sandboxes first (so their names answer as soon as the table has them), then
    /// `table` (`table_for` of the same model), then listeners of removed sandboxes are
    /// stopped.
    pub fn publish<'a>(&self, table: Table, sandboxes: impl IntoIterator<Item = &'a Sandbox>) {
        let mut ls = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let mut keep: Vec<&str> = Vec::new();
        for sb in sandboxes {
            // A runtime-owned namespace (CNI) gets its resolver from the runtime (podman,
            // kubelet), which never points it at 127.0.0.11: no listener there, and no
            // table of ours left in a namespace we do not own. Its names still answer.
            if sb.mode != NetMode::Bridge || sb.external {
                continue;
            }
            keep.push(&sb.name);
            let path = Path::new(&sb.netns);
            // The namespace's inode: a namespace recreated by reconcile needs new sockets.
            let Ok(ino) = std::fs::metadata(path).map(|m| m.ino()) else {
                continue;
            };
            if ls.up.get(&sb.name).is_some_and(|l| l.ino == ino) {
                continue;
            }
            // Tried and failed on this very namespace: not again on every operation (that
            // made each operation pay for every broken sandbox); a new namespace retries.
            if ls.failed.get(&sb.name) == Some(&ino) {
                continue;
            }
            match self.bind(&sb.name, path, ino) {
                Ok(l) => {
                    ls.failed.remove(&sb.name);
                    ls.up.insert(sb.name.clone(), l);
                }
                Err(e) => {
                    tracing::warn!(sandbox = %sb.name, error = %e, "dns: cannot serve this sandbox");
                    ls.failed.insert(sb.name.clone(), ino);
                }
            }
        }
        *self.shared.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        ls.up.retain(|name, _| keep.contains(&name.as_str()));
        ls.failed.retain(|name, _| keep.contains(&name.as_str()));
    }

    fn bind(&self, sandbox: &str, path: &Path, ino: u64) -> Result<SandboxListener, String> {
        let (u, t) =
            dns_socket::bind_in(path, *self.listen.ip(), self.listen.port()).map_err(|e| e.to_string())?;
        let _g = self.rt.enter();
        // SAFETY: `u` owns its descriptor and nothing replaces or closes it while the
        // AsyncFd owns `u`.
        let u = unsafe { tokio::io::unix::AsyncFd::register(u) }.map_err(|e| e.to_string())?;
        let t = tokio::net::TcpListener::from_std(t).map_err(|e| e.to_string())?;
        tracing::debug!(sandbox, "dns: serving {}", self.listen);
        Ok(SandboxListener::start(self.shared.clone(), sandbox, ino, u, t))
    }

    /// The records `sandbox` sees (`netctl dns ls`).
    pub fn listing(&self, sandbox: &str) -> Option<Vec<Listing>> {
        self.shared.table().listing(sandbox)
    }

    /// Whether a listener serves `sandbox` now.
    pub fn serving(&self, sandbox: &str) -> bool {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .up
            .contains_key(sandbox)
    }

    /// The resolv.conf a sandbox with these labels gets.
    pub fn resolv_conf(&self, labels: &std::collections::BTreeMap<String, String>) -> String {
        resolv::sandbox_resolv_conf(labels, &self.shared.settings.cluster_domain)
    }
}

#[cfg(test)]
mod sync_tests;
