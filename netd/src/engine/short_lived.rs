//! Opening the engine for a single operation in a short-lived process (the CNI plugin's
//! standalone mode runs one per ADD/DEL, under a file lock on the state dir).
//!
//! A full reconcile lists every netd link and rewrites the whole ruleset: its cost grows
//! with the number of endpoints, and paying it on every exec would make each ADD slower
//! the more containers a node has. Every operation commits kernel, firewall and store
//! together or undoes itself, so after a clean exit the store describes the kernel. What
//! can still break that is outside netd's control (a reboot, `nft flush ruleset`, a
//! bridge deleted by hand) or a crash mid-operation, which the caller detects with a
//! marker file. `open_trusting` checks cheap invariants (netd's nftables table and each
//! network's bridge exist) and falls back to a full reconcile when one fails; a store
//! without networks is reconciled too, which is cheap and creates netd's tables. Other
//! drift (a veth removed by hand) shows as a failing operation, after which the caller
//! reconciles and retries.

use std::sync::Arc;

use super::{Engine, EngineConfig, ReconcileReport, Result};
use crate::kernel::Kernel;
use crate::store::Store;

impl Engine {
    /// Loads the store and trusts it to match the kernel unless a cheap check says
    /// otherwise (or `force_reconcile`, after a crash). Returns the reconcile report when
    /// one ran.
    pub fn open_trusting(
        kernel: Arc<dyn Kernel>,
        store: Arc<dyn Store>,
        cfg: EngineConfig,
        force_reconcile: bool,
    ) -> Result<(Engine, Option<ReconcileReport>)> {
        let mut e = Engine::load(kernel, store, cfg)?;
        // Looked up under RCU, not by route-socket requests: those wait for RTNL, which
        // the link deletion of the DEL before (its detached process) may hold.
        let k = e.kernel.clone();
        let listed = |name: &str| k.host_link_listed(name).unwrap_or(false);
        // One `nft list tables` (names only, so its cost does not grow with endpoints):
        // after `nft flush ruleset` an operation's delta would recreate the table with
        // only its own elements, so a missing table has to be noticed before.
        let table = e.kernel.nft_table("inet", crate::firewall::TABLE).ok().flatten();
        e.check_owner(table.as_ref())?;
        let healthy = !force_reconcile
            && !e.networks.is_empty()
            && table.is_some()
            && e.networks
                .values()
                .all(|n| n.has_parent() || listed(&n.bridge))
            // A VLAN network's gateway is a link of its own (`<bridge>.<vlan>`).
            && e.networks
                .values()
                .filter(|n| n.vlan.is_some())
                .all(|n| listed(&n.l3_link()));
        if healthy {
            e.fw = e.desired_fw();
            return Ok((e, None));
        }
        let report = e.reconcile()?;
        e.last_reconcile = report.clone();
        Ok((e, Some(report)))
    }
}
