//! Service load balancing: one `ServiceLb` trait, a datapath per implementation
//! (`netd daemon --lb nftables|ipvs`; eBPF later), all fed the same datapath-neutral
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

pub mod ipvs;
pub mod nft;

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
}

impl std::str::FromStr for LbKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nftables" | "nft" => Ok(LbKind::Nftables),
            "ipvs" => Ok(LbKind::Ipvs),
            other => Err(format!(
                "unknown load balancer {other:?}: expected nftables or ipvs"
            )),
        }
    }
}

impl std::fmt::Display for LbKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LbKind::Nftables => "nftables",
            LbKind::Ipvs => "ipvs",
        })
    }
}

/// A service datapath.
pub trait ServiceLb: Send + Sync {
    fn kind(&self) -> LbKind;
    /// Make the kernel hold exactly `services` (start, restart, repair).
    fn sync_full(&self, services: &[FwService]) -> Result<(), KernelError>;
    /// Move the kernel from `old` (what it holds) to `new`.
    fn sync_diff(&self, old: &[FwService], new: &[FwService]) -> Result<(), KernelError>;
}

/// The datapath `kind` names, acting through `kernel`; an error (one line) for a
/// datapath this build does not have.
pub fn datapath(kind: LbKind, kernel: Arc<dyn Kernel>) -> Result<Box<dyn ServiceLb>, String> {
    match kind {
        LbKind::Nftables => Ok(Box::new(nft::NftLb::new(kernel))),
        LbKind::Ipvs => Err("load balancer ipvs: not built yet (netd daemon --lb nftables)".into()),
    }
}
