//! Service load balancing: one `ServiceLb` trait, a datapath per implementation
//! (`netd daemon --lb nftables|ipvs|ebpf`), all fed the same datapath-neutral
//! description of the services (`firewall::ruleset::services::FwService`: per service
//! its ports, its VIP on each network with the backends reachable there, its ingress
//! ports). The engine computes that description (pure) and hands the datapath the old
//! and the new one after every change; the datapath makes the kernel follow.
//!
//! Contract for every implementation:
//! - `sync_diff(old, new)` assumes the kernel holds `old` and costs what changed, not
//!   what exists (a backend change on one service is one small netlink transaction).
//! - `sync_full(services)` makes the kernel hold exactly `services` whatever it holds now
//!   (daemon start, after a kill -9): objects that are right are left alone, so a restart
//!   changes nothing in the data path, and leftovers of services that are gone are removed.
//! - On error nothing is half-applied (one transaction), or the error says what is.

pub mod ebpf;
pub mod ebpf_np;
pub mod ebpf_plan;
pub mod ipvs;
pub mod maglev;
pub mod nft;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::firewall::ruleset::services::FwService;
use crate::kernel::{Kernel, KernelError};

/// Which datapath balances service VIPs (`--lb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbKind {
    /// A verdict map and a chain per service port in `table inet netd` (default).
    #[default]
    Nftables,
    /// Kernel IPVS, programmed over generic netlink (`kernel::ipvs`).
    Ipvs,
    /// Socket-level load balancing by cgroup eBPF programs (`ebpf/`, `lb::ebpf`).
    Ebpf,
}

impl std::str::FromStr for LbKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nftables" | "nft" => Ok(LbKind::Nftables),
            "ipvs" => Ok(LbKind::Ipvs),
            "ebpf" => Ok(LbKind::Ebpf),
            other => Err(format!(
                "unknown load balancer {other:?}: expected nftables, ipvs or ebpf"
            )),
        }
    }
}

impl std::fmt::Display for LbKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LbKind::Nftables => "nftables",
            LbKind::Ipvs => "ipvs",
            LbKind::Ebpf => "ebpf",
        })
    }
}

/// What balances `svc` (`netctl service inspect`'s `datapath`): `None` for a service
/// without a VIP (ExternalName, dnsrr: DNS answers those). Under `--lb ebpf` a
/// service with ingress ports or NodePorts is also in the nftables datapath, which
/// balances what tc does not (`ebpf::north_south`); `tc` says whether the tc routing
/// mesh serves its ports from outside (`ebpf_np::served`).
pub fn serving(kind: LbKind, svc: Option<&FwService>, tc: bool) -> Option<String> {
    let svc = svc?;
    Some(match kind {
        LbKind::Ebpf if !svc.ingress.is_empty() && tc => {
            "ebpf (east-west), tc routing mesh (ingress ports from outside), nftables (ingress ports from this host and its sandboxes)".into()
        }
        LbKind::Ebpf if !svc.ingress.is_empty() => "ebpf (east-west), nftables (ingress ports)".into(),
        k => k.to_string(),
    })
}

/// A service datapath.
pub trait ServiceLb: Send + Sync {
    fn kind(&self) -> LbKind;
    /// Whether this datapath's tc routing mesh serves any ingress port of `svc` from
    /// outside (only the eBPF datapath has one).
    fn tc_serves(&self, _svc: &FwService) -> bool {
        false
    }
    /// Make the kernel hold exactly `services` (start, restart, repair).
    fn sync_full(&self, services: &[FwService]) -> Result<(), KernelError>;
    /// Move the kernel from `old` (what it holds) to `new`.
    fn sync_diff(&self, old: &[FwService], new: &[FwService]) -> Result<(), KernelError>;
    /// The prefixes netd allocates VIPs from (its networks' subnets): what a datapath
    /// whose kernel objects carry no owner tag (IPVS) may delete at `sync_full`. The
    /// engine passes them before every full sync.
    fn set_owned(&self, _prefixes: Vec<ipnetwork::IpNetwork>) {}
    /// Finishes work a sync left pending given what the kernel holds (`services`): IPVS
    /// deletes drained backends once they have no connection. Called on a timer.
    fn reap(&self, _services: &[FwService]) -> Result<(), KernelError> {
        Ok(())
    }
    /// The network namespaces on each network (network, namespace file), for a datapath
    /// that scopes VIPs by namespace rather than by bridge (eBPF). The engine passes them
    /// before every sync.
    fn set_members(&self, _members: &[(String, PathBuf)]) {}
    /// Every network as (name, bridge, whether its backends are all on this host: not
    /// overlay), for a datapath that must tell local backends and netd's bridges from
    /// the rest (the eBPF routing mesh). The engine passes them before every sync.
    fn set_networks(&self, _networks: &[(String, String, bool)]) {}
}

/// The datapath `kind` names, acting through `kernel`; an error (one line) for a
/// datapath this build does not have or this host cannot run. `bpf_cgroup`: the cgroup
/// v2 the eBPF programs attach to (default: the hierarchy's root); `lb_devices`: the
/// devices of the eBPF routing mesh (default: `kernel::bpf_tc::default_devices`).
pub fn datapath(
    kind: LbKind,
    kernel: Arc<dyn Kernel>,
    bpf_cgroup: Option<&Path>,
    lb_devices: Option<&[String]>,
) -> Result<Box<dyn ServiceLb>, String> {
    match kind {
        LbKind::Nftables => Ok(Box::new(nft::NftLb::new(kernel))),
        // The owned prefixes follow with `set_owned` before the first full sync.
        LbKind::Ipvs => Ok(Box::new(ipvs::IpvsLb::new(kernel, Vec::new()))),
        LbKind::Ebpf => ebpf::EbpfLb::open(kernel, bpf_cgroup, lb_devices)
            .map(|lb| Box::new(lb) as Box<dyn ServiceLb>)
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod serving_tests {
    use super::*;
    use crate::firewall::ruleset::services::{FwIngress, FwService};
    use crate::model::Proto;

    #[test]
    fn inspect_names_the_datapath_and_ebpfs_north_south_fallback() {
        assert_eq!(serving(LbKind::Ebpf, None, false), None, "no VIP, no datapath");
        let mut svc = FwService {
            namespace: "default".into(),
            name: "web".into(),
            ports: vec![(80, 8080, Proto::Tcp)],
            affinity: None,
            vips: Vec::new(),
            ingress: Vec::new(),
        };
        assert_eq!(
            serving(LbKind::Nftables, Some(&svc), false).as_deref(),
            Some("nftables")
        );
        assert_eq!(serving(LbKind::Ipvs, Some(&svc), false).as_deref(), Some("ipvs"));
        assert_eq!(serving(LbKind::Ebpf, Some(&svc), false).as_deref(), Some("ebpf"));
        svc.ingress.push(FwIngress {
            published: 8088,
            target: 8080,
            proto: Proto::Tcp,
            masquerade: false,
        });
        assert_eq!(
            serving(LbKind::Ebpf, Some(&svc), false).as_deref(),
            Some("ebpf (east-west), nftables (ingress ports)")
        );
        assert_eq!(
            serving(LbKind::Ebpf, Some(&svc), true).as_deref(),
            Some("ebpf (east-west), tc routing mesh (ingress ports from outside), nftables (ingress ports from this host and its sandboxes)")
        );
        assert_eq!(
            serving(LbKind::Nftables, Some(&svc), false).as_deref(),
            Some("nftables")
        );
    }
}
