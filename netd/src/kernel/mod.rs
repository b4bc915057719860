//! Every kernel call netd makes: netlink (links, addresses, routes), network namespaces,
//! sysctls and nftables. Nothing outside this folder opens a netlink socket, calls
//! `setns` or talks to nftables; the rest of netd hands `plan::Step`s and nftables
//! batches to the `Kernel` trait, which tests replace with `fake::FakeKernel`.

pub mod bpf;
pub mod bpf_tc;
pub mod bpf_types;
mod detach;
pub mod dns_socket;
mod etc_netns;
pub mod fake;
mod fake_ipvs;
pub mod iptables;
mod ipvlan;
pub mod ipvs;
pub mod linux;
mod macvlan;
pub mod netlink;
pub mod netns;
pub mod nfnetlink;
pub mod nft;
pub mod nft_elements;
pub mod nft_svc;
pub mod nft_table;
pub mod probe;
pub mod process;
mod sandbox_link;
pub mod sysctl;
pub mod udp_batch;
mod vlan;
pub mod vxlan;
pub mod watch;
pub mod wg_kernel;
pub mod wg_user;
pub mod xfrm;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

use crate::firewall::batch::Batch;
use crate::plan::{Applied, Step};

/// What a kernel call can fail with; each variant names the call and the object. Callers
/// that act on a failure (a retry, a new socket, an optional sysctl) match on variants.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// `op` in `ip` words ("add veth ndweb-1-3fa2"); `errno` what the kernel (or the
    /// socket call) answered, when there was an answer, for callers that act on it; `msg`
    /// the errno text plus the kernel's extended ack when it sent one, for people.
    #[error("netlink {op}: {msg}")]
    Netlink {
        op: String,
        errno: Option<nix::errno::Errno>,
        msg: String,
    },
    #[error("netns {path}: {msg}")]
    Netns { path: PathBuf, msg: String },
    #[error("sysctl {key}: {source}")]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// libnftables refused a batch, or an nfnetlink answer said no.
    #[error("nftables: {0}")]
    Nft(String),
    /// The nfnetlink socket itself failed (`op`: socket, bind, connect, send, recv).
    #[error("nftables: nfnetlink {op}: {source}")]
    NfnlIo {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("nftables: nfnetlink closed before answering")]
    NfnlClosed,
    /// Fewer acknowledgements than messages in a batch: the socket lost answers.
    #[error("nftables: nfnetlink batch: {acked} of {sent} changes acknowledged")]
    NfnlBatch { acked: usize, sent: usize },
    /// A link of the name netd wants exists and is someone else's.
    #[error("link {name} exists and is not netd's; remove it or pick another {pick}")]
    NotNetds { name: String, pick: &'static str },
    /// A link netd just made or looked up was gone the next moment.
    #[error("{what} vanished {when}")]
    Vanished { what: String, when: &'static str },
    #[error("parent interface {0} not found")]
    NoParent(String),
    #[error("this kernel has no {0}")]
    Unsupported(&'static str),
    /// A helper program (iptables) could not run or refused.
    #[error("{command}: {msg}")]
    Command { command: String, msg: String },
    /// An IPVS call failed (`ipvs` names the call and the service).
    #[error(transparent)]
    Ipvs(Box<ipvs::IpvsError>),
    /// A list of IPVS changes stopped part way (IPVS has no transactions).
    #[error(transparent)]
    IpvsPartial(Box<ipvs::Applied>),
    /// The userspace WireGuard device (`wg_user`): a bad request.
    #[error("wireguard {name}: {what}")]
    Wg { name: String, what: String },
    /// The userspace WireGuard device: a system call failed (`op`: create tun, ...).
    #[error("wireguard {name}: {op}: {source}")]
    WgIo {
        name: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl From<ipvs::IpvsError> for KernelError {
    fn from(e: ipvs::IpvsError) -> Self {
        KernelError::Ipvs(Box::new(e))
    }
}

impl From<ipvs::Applied> for KernelError {
    fn from(e: ipvs::Applied) -> Self {
        KernelError::IpvsPartial(Box::new(e))
    }
}

impl KernelError {
    /// Whether the nfnetlink socket is unusable after this error, so the next request
    /// needs a new one.
    pub fn spoils_nfnl_socket(&self) -> bool {
        matches!(
            self,
            KernelError::NfnlIo { .. } | KernelError::NfnlClosed | KernelError::NfnlBatch { .. }
        )
    }
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

    /// Whether the kernel has ipvlan links (CONFIG_IPVLAN). Asked before an ipvlan
    /// network is made, so a kernel without them changes nothing.
    fn ipvlan_supported(&self) -> Result<bool, KernelError> {
        Ok(true)
    }

    /// Whether the kernel has 802.1Q VLAN links (CONFIG_VLAN_8021Q), which a dotted
    /// parent (`eth0.10`) that does not exist yet needs.
    fn vlan_supported(&self) -> Result<bool, KernelError> {
        Ok(true)
    }

    /// Whether the kernel has dummy links (CONFIG_DUMMY), the parent of an internal
    /// macvlan or ipvlan network.
    fn dummy_supported(&self) -> Result<bool, KernelError> {
        Ok(true)
    }

    /// Global addresses of the host namespace's links, by link name (what reconcile
    /// compares a bridge's gateway addresses with).
    fn link_addrs(&self) -> Result<std::collections::BTreeMap<String, Vec<IpNetwork>>, KernelError>;

    /// Whether chain `family table chain` exists in the host namespace.
    fn nft_chain_exists(&self, family: &str, table: &str, chain: &str) -> Result<bool, KernelError>;

    /// Applies an nftables batch in the host namespace as one transaction.
    fn nft(&self, batch: &Batch) -> Result<(), KernelError>;

    /// Table `family name` in the host namespace (with its comment), if it exists.
    fn nft_table(&self, family: &str, name: &str) -> Result<Option<nft_table::NftTable>, KernelError>;

    /// The chains and sets of table `family table` by name: what a text batch cannot
    /// name, so a full sync can delete objects the state no longer has (service chains
    /// of services removed while netd was down).
    fn nft_objects(&self, _family: &str, _table: &str) -> Result<nft::NftObjects, KernelError> {
        Ok(nft::NftObjects::default())
    }

    /// Lets traffic of netd's bridges through dockerd's iptables FORWARD chain (see
    /// `iptables.rs`); a no-op where dockerd does not manage iptables.
    fn allow_in_docker_forward(&self) -> Result<(), KernelError> {
        Ok(())
    }

    /// Readies the host namespace for IPVS load balancing (`ipvs::SYSCTLS`); an error
    /// when the kernel has no IPVS.
    fn ipvs_setup(&self) -> Result<(), KernelError> {
        Err(KernelError::Unsupported("IPVS"))
    }

    /// Every IPVS service of the host namespace with its destinations.
    fn ipvs_table(&self) -> Result<Vec<(ipvs::Service, Vec<ipvs::Dest>)>, KernelError> {
        Err(KernelError::Unsupported("IPVS"))
    }

    /// The destinations of one IPVS service (empty when it does not exist).
    fn ipvs_dests(&self, _key: &ipvs::ServiceKey) -> Result<Vec<ipvs::Dest>, KernelError> {
        Err(KernelError::Unsupported("IPVS"))
    }

    /// Carries out IPVS changes in order, stopping at the first failure
    /// (`KernelError::IpvsPartial` says how many were done).
    fn ipvs_apply(&self, _ops: &[ipvs::Op]) -> Result<(), KernelError> {
        Err(KernelError::Unsupported("IPVS"))
    }
}

#[cfg(test)]
mod tests {
    use super::KernelError;

    #[test]
    fn socket_failures_are_told_by_variant_with_their_old_words() {
        let io = KernelError::NfnlIo {
            op: "recv",
            source: std::io::ErrorKind::ConnectionReset.into(),
        };
        assert_eq!(io.to_string(), "nftables: nfnetlink recv: connection reset");
        let batch = KernelError::NfnlBatch { acked: 1, sent: 3 };
        assert_eq!(
            batch.to_string(),
            "nftables: nfnetlink batch: 1 of 3 changes acknowledged"
        );
        for e in [io, batch, KernelError::NfnlClosed] {
            assert!(e.spoils_nfnl_socket(), "{e}");
        }
        // An answer that says no leaves the socket usable, whatever its words.
        for e in [
            KernelError::Nft("nfnetlink set netd ports: No such file or directory".into()),
            KernelError::Nft("malformed nfnetlink answer".into()),
        ] {
            assert!(!e.spoils_nfnl_socket(), "{e}");
        }
        assert_eq!(
            KernelError::NotNetds {
                name: "br0".into(),
                pick: "name"
            }
            .to_string(),
            "link br0 exists and is not netd's; remove it or pick another name"
        );
    }
}
