//! What the engine knows of other nodes: their endpoints on overlay networks, which the
//! cluster agent hands over (`set_remote_names`) so the embedded DNS answers their names
//! on every node, as it does local sandboxes' (network-scoped: a sandbox sees the names
//! of the networks it is on).

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{pool_key, Engine, EngineError, Result, Undo};
use crate::dns::records::{Rec, Table};
use crate::store::Txn;

/// A remote endpoint's names (sandbox name, then aliases) and address on `network`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteName {
    pub network: String,
    pub names: Vec<String>,
    pub ip: IpAddr,
}

impl Engine {
    /// Replaces the remote endpoints' names; the DNS serves the new set before this
    /// returns. Nothing happens when the set is unchanged (the agent calls it each pass).
    pub fn set_remote_names(&mut self, mut names: Vec<RemoteName>) {
        names.sort();
        if names == self.remote_names {
            return;
        }
        self.remote_names = names;
        self.sync_dns();
    }
}

impl Engine {
    /// Points dynamic allocation on overlay network `network` at `range`, an address
    /// block the node holds (the cluster agent moves it when a block fills,
    /// `cluster::blocks::next_block`). Leases outside `range` stay.
    pub fn set_pool_range(&mut self, network: &str, range: IpNetwork) -> Result<()> {
        let net = self.network(network)?;
        if !net.is_overlay() {
            return Err(EngineError::Invalid(format!(
                "network {network} is not an overlay network"
            )));
        }
        let key = pool_key(network, false);
        let Some(pool) = self.pools.get(&key) else {
            return Err(EngineError::Invalid(format!(
                "network {network} has no IPv4 pool"
            )));
        };
        if !pool.subnet.contains(range.network()) || range.prefix() < pool.subnet.prefix() {
            return Err(EngineError::Invalid(format!(
                "range {range} is not inside {} of network {network}",
                pool.subnet
            )));
        }
        let mut undo = Undo::default();
        self.remember(&mut undo, &[], &[], std::slice::from_ref(&key));
        if let Some(p) = self.pools.get_mut(&key) {
            p.ip_range = Some(range);
        }
        let mut txn = Txn::new();
        self.put_pools(&mut txn, &[network]);
        self.commit(undo, &[], &txn, &[])?;
        tracing::info!(network, %range, "pool range moved");
        Ok(())
    }
}

pub(super) fn add_remote_names(table: &mut Table, remote: &[RemoteName]) {
    for r in remote {
        for n in &r.names {
            table.insert(&r.network, n, Rec::Addr(r.ip));
        }
        if let Some(first) = r.names.first() {
            table.insert_ptr(&r.network, r.ip, first);
        }
    }
}
