//! Every kernel call netd makes: netlink (links, addresses, routes), network namespaces,
//! sysctls and nftables. Nothing outside this folder opens a netlink socket, calls
//! `setns` or talks to nftables; the rest of netd hands `plan::Step`s and nftables
//! batches to the `Kernel` trait, which tests replace with `fake::FakeKernel`.

mod detach;
pub mod dns_socket;
mod etc_netns;
pub mod fake;
pub mod iptables;
pub mod linux;
mod macvlan;
pub mod netlink;
pub mod netns;
pub mod nfnetlink;
pub mod nft;
pub mod nft_elements;
pub mod nft_table;
pub mod probe;
mod sandbox_link;
pub mod sysctl;
pub mod udp_batch;
mod vlan;
pub mod watch;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

use crate::plan::{Applied, Step};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("netlink {op}: {msg}")]
    Netlink { op: String, msg: String },
    #[error("netns {path}: {msg}")]
    Netns { path: PathBuf, msg: String },
    #[error("sysctl {key}: {source}")]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nftables: {0}")]
    Nft(String),
    #[error("{0}")]
    Other(String),
}

/// A link netd owns, found by its `netd:` alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedLink {
    pub name: String,
    pub alias: String,
    /// "bridge", "veth", ...
    pub kind: String,
    /// Bridge the link is enslaved to, if any.
    pub master: Option<String>,
}

/// What the rest of netd needs from the kernel. One instance per daemon; it acts on the
/// daemon's own network namespace (its "host") and on sandbox namespaces by path.
pub trait Kernel: Send + Sync {
    /// Applies one plan step and says whether it made its object or found it there
    /// (ensure steps). Delete steps succeed when the object is already gone.
    fn apply(&self, step: &Step) -> Result<Applied, KernelError>;

    /// Links in the host namespace whose alias starts with `netd:`.
    fn owned_links(&self) -> Result<Vec<OwnedLink>, KernelError>;

    /// Links inside the namespace at `netns` whose alias starts with `netd:` (macvlan
    /// endpoints, which leave nothing in the host namespace). Empty for a dead namespace.
    fn owned_links_in(&self, _netns: &Path) -> Result<Vec<OwnedLink>, KernelError> {
        Ok(Vec::new())
    }

    /// Whether a link exists in the host namespace (or in `netns`).
    fn link_exists(&self, name: &str, netns: Option<&Path>) -> Result<bool, KernelError>;

    /// Whether the host namespace has a link `name`, looked up under RCU: unlike
    /// `link_exists` it never waits for RTNL, which a link deletion holds for up to an
    /// RCU grace period (10–40 ms here). For the health check of a process that runs
    /// one operation (netd-cni standalone), on links expected to exist
    /// (`Netlink::index_rcu`).
    fn host_link_listed(&self, name: &str) -> Result<bool, KernelError>;

    /// Destination prefixes of the host namespace's routes (all tables), so IPAM can skip
    /// subnets that are already in use on the host.
    fn routed_prefixes(&self) -> Result<Vec<IpNetwork>, KernelError>;

    /// Local addresses of the host namespace (for published-port reachability checks and
    /// host-IP binding validation).
    fn local_addrs(&self) -> Result<Vec<IpAddr>, KernelError>;

    /// Whether `path` is a live network namespace mount.
    fn netns_alive(&self, path: &Path) -> bool;

    /// Whether bridges can filter by VLAN (CONFIG_BRIDGE_VLAN_FILTERING), which VLAN
    /// networks need. Asked before one is made, so a kernel without it changes nothing.
    fn bridge_vlan_filtering(&self) -> Result<bool, KernelError> {
        Ok(true)
    }

    /// Global addresses of the host namespace's links, by link name (what reconcile
    /// compares a bridge's gateway addresses with).
    fn link_addrs(&self) -> Result<std::collections::BTreeMap<String, Vec<IpNetwork>>, KernelError>;

    /// Whether chain `family table chain` exists in the host namespace.
    fn nft_chain_exists(&self, family: &str, table: &str, chain: &str) -> Result<bool, KernelError>;

    /// Applies an nftables batch (nft syntax) in the host namespace as one transaction.
    fn nft(&self, batch: &str) -> Result<(), KernelError>;

    /// Table `family name` in the host namespace (with its comment), if it exists.
    fn nft_table(&self, family: &str, name: &str) -> Result<Option<nft_table::NftTable>, KernelError>;

    /// Lets traffic of netd's bridges through dockerd's iptables FORWARD chain (see
    /// `iptables.rs`); a no-op where dockerd does not manage iptables.
    fn allow_in_docker_forward(&self) -> Result<(), KernelError> {
        Ok(())
    }
}
