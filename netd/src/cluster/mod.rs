//! The cluster: nodes that share overlay networks through a cluster store (etcd).
//!
//! `netd daemon --cluster etcd://IP:PORT[,…] --node NAME --advertise-addr IP` registers
//! the node under a lease and runs an agent (`agent.rs`) that keeps the node in line with
//! the store: overlay networks the store holds are made locally where the node needs them
//! (a bridge with a VXLAN port, `driver::overlay`; see `agent::needed_networks`), local endpoints on them are published, and remote ones
//! become static FDB and neighbour entries (`fdb.rs`). Addresses come from blocks of the
//! subnet a node claims with one compare-and-set each (`blocks.rs`), so a sandbox create
//! costs no store write for its address. A daemon without `--cluster` has none of this.
//!
//! Keys live under one prefix (`keys`): `/netd/v1/nodes/<node>` and
//! `/netd/v1/endpoints/<net>/<node>/<sandbox>` are bound to the node's lease and vanish
//! with it; `/netd/v1/networks/<net>` and `/netd/v1/blocks/<net>/<cidr>` stay until the
//! network is removed. `/netd/v1/services/<namespace>/<name>` (services on overlay
//! networks, made by every node) and `/netd/v1/addrs/<net>/<ip>` (their VIPs and each
//! node's load-balancer address, from a block of the subnet no node gets) stay until
//! removed. `/netd/v1/stacks/<name>` holds a stack file placed on nodes until `netd down`,
//! and `/netd/v1/stack-parts/<name>/<node>` (lease-bound) what each node made of it
//! (`stacks.rs`).

pub mod agent;
pub mod api;
pub mod blocks;
pub mod encrypt;
pub mod fdb;
pub mod ipsec;
pub mod services;
pub mod stacks;
pub mod wireguard;

use std::future::Future;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

pub use agent::Agent;

/// What `netd daemon --cluster … --node … --advertise-addr …` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// gRPC endpoints (`http://IP:PORT`, `https://IP:PORT` with `tls`).
    pub endpoints: Vec<String>,
    pub node: String,
    pub advertise: Ipv4Addr,
    pub data_port: u16,
    pub tls: Option<ClusterTls>,
    /// Seconds between IPsec key rotations (`--key-rotation`); 0: only when asked.
    pub key_rotation_s: u64,
    /// The node's WireGuard private key (made there at first need): `<state-dir>/wireguard.key`.
    pub wg_key: std::path::PathBuf,
}

/// `--cluster-ca F [--cluster-cert F --cluster-key F]`: PEM read at start-up. The CA is
/// the one etcd's server certificate must chain to; the certificate and key, when given,
/// are the node's client identity (etcd's `--client-cert-auth`).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterTls {
    pub ca: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a key in a log line.
        f.debug_struct("ClusterTls")
            .field("identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Reads and checks the PEM files: each error is one line naming the flag and file.
    pub fn load(
        ca: &std::path::Path,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<ClusterTls, ClusterError> {
        let read = |flag: &str, p: &std::path::Path, want: &str| -> Result<Vec<u8>, ClusterError> {
            let b = std::fs::read(p)
                .map_err(|e| ClusterError::Invalid(format!("{flag} {}: {e}", p.display())))?;
            let text = String::from_utf8_lossy(&b);
            if !(text.contains("-----BEGIN ") && text.contains(want)) {
                return Err(ClusterError::Invalid(format!(
                    "{flag} {}: not a PEM file with a{want}",
                    p.display()
                )));
            }
            Ok(b)
        };
        let ca = read("--cluster-ca", ca, " CERTIFICATE-----")?;
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((
                read("--cluster-cert", c, " CERTIFICATE-----")?,
                read("--cluster-key", k, " PRIVATE KEY-----")?,
            )),
            (None, None) => None,
            _ => {
                return Err(ClusterError::Invalid(
                    "--cluster-cert and --cluster-key go together".into(),
                ))
            }
        };
        Ok(ClusterTls { ca, identity })
    }
}

/// The node's lease: keys bound to it vanish this long after the node stops renewing.
pub const LEASE_TTL_S: i64 = 10;
pub const DEFAULT_DATA_PORT: u16 = 4789;
/// VXLAN's own header, UDP, IPv4 and the inner Ethernet header.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Runs kernel work `f` on tokio's blocking pool (`what` names it should it panic).
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, crate::kernel::KernelError> + Send + 'static,
) -> Result<T, ClusterError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClusterError::Invalid(format!("{what} task panicked: {e}")))?
        .map_err(|e| ClusterError::Invalid(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("bad --cluster {0:?}: expected etcd://HOST:PORT[,HOST:PORT…] (etcds:// for TLS)")]
    BadUrl(String),
    #[error("cluster store {op}: {msg}")]
    Store { op: String, msg: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Engine(#[from] crate::engine::EngineError),
}

impl ClusterError {
    pub fn store(op: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> ClusterError {
        let op = op.into();
        move |e| ClusterError::Store {
            op,
            msg: e.to_string(),
        }
    }
}

/// `etcd://10.0.0.1:2379,10.0.0.2:2379` → `http://10.0.0.1:2379`, `http://10.0.0.2:2379`;
/// `etcds://…` → `https://…` (TLS, which needs `--cluster-ca`).
pub fn parse_cluster_url(url: &str) -> Result<Vec<String>, ClusterError> {
    let bad = || ClusterError::BadUrl(url.to_string());
    let (scheme, rest) = match url.strip_prefix("etcds://") {
        Some(r) => ("https", r),
        None => ("http", url.strip_prefix("etcd://").ok_or_else(bad)?),
    };
    let eps: Vec<String> = rest
        .split(',')
        .map(|hp| {
            let (host, port) = hp.rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
            if host.is_empty() || host.contains(['/', '@', ' ']) {
                return Err(bad());
            }
            Ok(format!("{scheme}://{host}:{port}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(eps)
}

/// The store's key layout.
pub mod keys {
    pub const PREFIX: &str = "/netd/v1/";
    pub fn node(name: &str) -> String {
        format!("{PREFIX}nodes/{name}")
    }
    pub fn nodes() -> String {
        format!("{PREFIX}nodes/")
    }
    pub fn network(name: &str) -> String {
        format!("{PREFIX}networks/{name}")
    }
    pub fn networks() -> String {
        format!("{PREFIX}networks/")
    }
    /// VNIs in use, one key each, so two creates cannot take the same one.
    pub fn vni(vni: u32) -> String {
        format!("{PREFIX}vnis/{vni}")
    }
    /// `/` in a CIDR would split the key: `10.0.0.64_26`.
    pub fn block(net: &str, block: &ipnetwork::Ipv4Network) -> String {
        format!("{PREFIX}blocks/{net}/{}_{}", block.network(), block.prefix())
    }
    pub fn blocks(net: &str) -> String {
        format!("{PREFIX}blocks/{net}/")
    }
    pub fn endpoint(net: &str, node: &str, sandbox: &str) -> String {
        format!("{PREFIX}endpoints/{net}/{node}/{sandbox}")
    }
    pub fn endpoints_of(net: &str) -> String {
        format!("{PREFIX}endpoints/{net}/")
    }
    pub fn endpoints() -> String {
        format!("{PREFIX}endpoints/")
    }
    /// A service on overlay networks: `services/<namespace>/<name>`.
    pub fn service(namespace: &str, name: &str) -> String {
        format!("{PREFIX}services/{namespace}/{name}")
    }
    pub fn services() -> String {
        format!("{PREFIX}services/")
    }
    /// An address of an overlay network taken outside the nodes' blocks (a service VIP,
    /// a node's load-balancer address), one key each so two nodes cannot take the same.
    pub fn addr(net: &str, ip: std::net::Ipv4Addr) -> String {
        format!("{PREFIX}addrs/{net}/{ip}")
    }
    pub fn addrs(net: &str) -> String {
        format!("{PREFIX}addrs/{net}/")
    }
    /// A stack file placed on nodes (`netd up` in a cluster): every node makes its part.
    pub fn stack(name: &str) -> String {
        format!("{PREFIX}stacks/{name}")
    }
    pub fn stacks() -> String {
        format!("{PREFIX}stacks/")
    }
    /// What a node made of a stack, under its lease: `stack-parts/<stack>/<node>`.
    pub fn stack_part(stack: &str, node: &str) -> String {
        format!("{PREFIX}stack-parts/{stack}/{node}")
    }
    pub fn stack_parts(stack: &str) -> String {
        format!("{PREFIX}stack-parts/{stack}/")
    }
    /// The IPsec key ring (`ipsec::KeyRing`). Under `secrets/`, the one range that holds
    /// key material: with etcd's auth on, grant it to the nodes' identity only.
    pub fn ipsec_ring() -> String {
        format!("{PREFIX}secrets/ipsec")
    }
    /// The ring version each node applied, under its lease: `ipsec-acks/<node>`.
    pub fn ipsec_ack(node: &str) -> String {
        format!("{PREFIX}ipsec-acks/{node}")
    }
    pub fn ipsec_acks() -> String {
        format!("{PREFIX}ipsec-acks/")
    }
    /// A node's WireGuard public key and port, under its lease: `wireguard/<node>`.
    pub fn wireguard(node: &str) -> String {
        format!("{PREFIX}wireguard/{node}")
    }
    pub fn wireguards() -> String {
        format!("{PREFIX}wireguard/")
    }
    /// The cluster's WireGuard key epoch (`wireguard::WgRotation`): a node whose key is
    /// older makes a new one.
    pub fn wireguard_rotation() -> String {
        format!("{PREFIX}wireguard-rotation")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub addr: Ipv4Addr,
    pub data_port: u16,
    /// Unix seconds of the daemon's start.
    pub started: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub vni: u32,
    pub internal: bool,
    /// The node it was created on.
    pub created_by: String,
    pub created: u64,
    /// Prefix length of its address blocks (`-o block_prefix=N`); `None`: /26.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_prefix: Option<u8>,
    /// `-o encrypted[=ipsec|wireguard]`: VXLAN between nodes is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<ipsec::Encryption>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub network: String,
    pub block: Ipv4Network,
    pub node: String,
}

/// A local endpoint of an overlay network, as the other nodes see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network: String,
    pub node: String,
    pub sandbox: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// The node's underlay address: the VTEP the endpoint is behind.
    pub vtep: Ipv4Addr,
    /// The sandbox name, then its aliases on the network.
    pub names: Vec<String>,
    /// The sandbox's labels: what a service's selector matches on every node.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The node's own load-balancer address on the network (`AddrRecord`), not a
    /// sandbox: it has FDB and neighbour entries like one, but no name and is no backend.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lb: bool,
}

/// A `cluster_ip` service on overlay networks: what `netctl service create` asked for
/// (its VIPs filled in), made by every node's agent from the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Changes when the service is made again under the same name.
    pub id: String,
    pub request: crate::model::ServiceRequest,
    /// The node it was created on.
    pub created_by: String,
    pub created: u64,
}

impl ServiceRecord {
    pub fn namespace(&self) -> &str {
        self.request
            .namespace
            .as_deref()
            .unwrap_or(crate::model::DEFAULT_NAMESPACE)
    }
}

/// A stack placed on nodes, as `netd up` on one of them published it: each node's
/// daemon makes the sandboxes the file places on it (`cluster::stacks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRecord {
    pub name: String,
    /// New at each `netd up`: a node makes its part again when it changes.
    pub id: String,
    /// The stack file, as given.
    pub text: String,
    /// The node `netd up` ran on.
    pub created_by: String,
    pub created: u64,
}

/// What a node made of a stack (`StackRecord::id`): put under the node's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackPartRecord {
    pub stack: String,
    pub id: String,
    pub node: String,
    pub ok: bool,
    /// Why not, when not ok.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The node's sandboxes of the stack.
    #[serde(default)]
    pub sandboxes: Vec<String>,
}

/// Who holds an address taken with `ClusterStore::claim_addr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrRecord {
    pub network: String,
    pub ip: Ipv4Addr,
    /// `svc:<namespace>/<name>` or `lb:<node>`.
    pub owner: String,
}

/// The cluster objects netd keeps in a shared store. etcd's (`store::etcd::EtcdStore`)
/// is the one implementation; the agent and the API are written against this.
pub trait ClusterStore: Send + Sync + 'static {
    /// Puts the node's record under a new lease and keeps the lease alive until the
    /// store is dropped. A lease lost (the store unreachable past the TTL) is replaced
    /// and the record put again; `lease_epoch` then changes.
    fn register_node(&self, rec: &NodeRecord) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// Changes each time the lease (and so every key bound to it) had to be replaced.
    fn lease_epoch(&self) -> u64;
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeRecord>, ClusterError>> + Send;
    fn networks(&self) -> impl Future<Output = Result<Vec<NetworkRecord>, ClusterError>> + Send;
    /// Stores `rec` with its VNI, both only if neither is taken (one transaction);
    /// `Ok(false)` when one was.
    fn create_network(&self, rec: &NetworkRecord) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    /// Removes the network, its VNI and its blocks, only while no endpoint is on it.
    fn delete_network(&self, rec: &NetworkRecord) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    fn blocks(&self, net: &str) -> impl Future<Output = Result<Vec<BlockRecord>, ClusterError>> + Send;
    /// Claims `rec.block` for `rec.node` if nobody has it (compare-and-set).
    fn claim_block(&self, rec: &BlockRecord) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    /// Deletes `rec.block`'s claim if it is still `rec` (compare-and-delete): `Ok(false)`
    /// when the key holds something else or nothing.
    fn release_block(&self, rec: &BlockRecord) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    fn endpoints(&self) -> impl Future<Output = Result<Vec<EndpointRecord>, ClusterError>> + Send;
    /// Put under the node's lease.
    fn put_endpoint(&self, rec: &EndpointRecord) -> impl Future<Output = Result<(), ClusterError>> + Send;
    fn delete_endpoint(&self, rec: &EndpointRecord) -> impl Future<Output = Result<(), ClusterError>> + Send;
    fn services(&self) -> impl Future<Output = Result<Vec<ServiceRecord>, ClusterError>> + Send;
    /// Stores `rec` with its VIPs (`addrs`), all only if none is taken (one
    /// transaction); `Ok(false)` when one was.
    fn create_service(
        &self,
        rec: &ServiceRecord,
        addrs: &[AddrRecord],
    ) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    /// Puts `new` in place of `old` if the record is still `old` (compare-and-set);
    /// `Ok(false)` when it changed meanwhile.
    fn replace_service(
        &self,
        old: &ServiceRecord,
        new: &ServiceRecord,
    ) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    /// Removes the service and its VIPs in one transaction.
    fn delete_service(
        &self,
        rec: &ServiceRecord,
        addrs: &[AddrRecord],
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
    fn addrs(&self, net: &str) -> impl Future<Output = Result<Vec<AddrRecord>, ClusterError>> + Send;
    /// Takes `rec.ip` for `rec.owner` if nobody has it (compare-and-set).
    fn claim_addr(&self, rec: &AddrRecord) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    /// Gives back `rec` (a node's load-balancer address) if it is still `rec` and
    /// `node` is not registered (one transaction: a node that came back keeps it).
    fn release_addr_of_gone(
        &self,
        rec: &AddrRecord,
        node: &str,
    ) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    fn stacks(&self) -> impl Future<Output = Result<Vec<StackRecord>, ClusterError>> + Send;
    fn put_stack(&self, rec: &StackRecord) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// Removes the stack's record; `Ok(false)` when there was none. The nodes' part
    /// records go when each node has removed its part.
    fn delete_stack(&self, name: &str) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    fn stack_parts(
        &self,
        stack: &str,
    ) -> impl Future<Output = Result<Vec<StackPartRecord>, ClusterError>> + Send;
    /// Put under the node's lease.
    fn put_stack_part(&self, rec: &StackPartRecord) -> impl Future<Output = Result<(), ClusterError>> + Send;
    fn delete_stack_part(
        &self,
        stack: &str,
        node: &str,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// The IPsec key ring, if one was made.
    fn ipsec_ring(&self) -> impl Future<Output = Result<Option<ipsec::KeyRing>, ClusterError>> + Send;
    /// Puts `new` if the ring is still `old` (`None`: there is none yet), one
    /// compare-and-set; `Ok(false)` when another node changed it first.
    fn replace_ipsec_ring(
        &self,
        old: Option<&ipsec::KeyRing>,
        new: &ipsec::KeyRing,
    ) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    fn ipsec_acks(&self) -> impl Future<Output = Result<Vec<ipsec::RingAck>, ClusterError>> + Send;
    /// Put under the node's lease.
    fn put_ipsec_ack(&self, rec: &ipsec::RingAck) -> impl Future<Output = Result<(), ClusterError>> + Send;
    fn wireguards(&self) -> impl Future<Output = Result<Vec<wireguard::WgRecord>, ClusterError>> + Send;
    /// Put under the node's lease.
    fn put_wireguard(
        &self,
        rec: &wireguard::WgRecord,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
    fn delete_wireguard(&self, node: &str) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// The WireGuard key epoch, if one was set.
    fn wireguard_rotation(
        &self,
    ) -> impl Future<Output = Result<Option<wireguard::WgRotation>, ClusterError>> + Send;
    /// Puts `new` if the epoch record is still `old` (`None`: there is none yet), one
    /// compare-and-set; `Ok(false)` when another node changed it first.
    fn replace_wireguard_rotation(
        &self,
        old: Option<&wireguard::WgRotation>,
        new: &wireguard::WgRotation,
    ) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    /// Resolves at the next change under `stacks/` (or after a reconnect of the watch).
    fn stacks_changed(&self) -> impl Future<Output = ()> + Send;
    /// Resolves at the next change under `wireguard/` (or after a reconnect of the watch).
    fn wireguard_changed(&self) -> impl Future<Output = ()> + Send;
    /// Resolves at the next change under the prefix (or after a reconnect, when changes
    /// may have been missed): the agent then re-reads what it needs.
    fn changed(&self) -> impl Future<Output = ()> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        assert_eq!(
            parse_cluster_url("etcd://10.0.0.1:2379,[::1]:2380").unwrap(),
            vec!["http://10.0.0.1:2379", "http://[::1]:2380"]
        );
        assert_eq!(
            parse_cluster_url("etcds://10.0.0.1:2379").unwrap(),
            vec!["https://10.0.0.1:2379"]
        );
        for bad in [
            "http://a:1",
            "etcd://",
            "etcd://a",
            "etcd://a:0",
            "etcd://a:x",
            "etcd://a:1,",
            "etcds://",
        ] {
            assert!(parse_cluster_url(bad).is_err(), "{bad}");
        }
        let b: Ipv4Network = "10.0.0.64/26".parse().unwrap();
        assert_eq!(keys::block("ov", &b), "/netd/v1/blocks/ov/10.0.0.64_26");
    }
}
