//! What the engine knows of other nodes: their endpoints on overlay networks, which the
//! cluster agent hands over (`set_remote_names`) so the embedded DNS answers their names
//! on every node, as it does local sandboxes' (network-scoped: a sandbox sees the names
//! of the networks it is on).

use std::net::IpAddr;

use super::Engine;
use crate::dns::records::{Rec, Table};

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
