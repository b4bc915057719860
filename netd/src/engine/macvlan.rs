//! Engine checks specific to macvlan networks (the driver itself is `driver::macvlan`).

use super::{Engine, EngineError, Result};
use crate::model::{Network, ParsedNetwork};

impl Engine {
    /// Before a macvlan network is made: its parent exists on the host, and no other
    /// macvlan network uses it (libnetwork's rule: "network X is already using parent
    /// interface Y"; a parent is one LAN, and two networks on it would be one network
    /// split in two IPAM pools).
    pub(super) fn check_macvlan_parent(&self, p: &ParsedNetwork) -> Result<()> {
        let Some(parent) = p.parent.as_deref() else {
            return Ok(());
        };
        if let Some(other) = self
            .networks
            .values()
            .find(|n| n.is_macvlan() && n.parent.as_deref() == Some(parent))
        {
            return Err(EngineError::Conflict(format!(
                "network {} is already using parent interface {parent}",
                other.name
            )));
        }
        if let Some(other) = self
            .networks
            .values()
            .find(|n| !n.is_macvlan() && n.bridge == parent)
        {
            return Err(EngineError::Invalid(format!(
                "parent interface {parent} is the bridge of network {}; use a host interface",
                other.name
            )));
        }
        match self.kernel.link_exists(parent, None) {
            Ok(true) => Ok(()),
            Ok(false) => Err(EngineError::Invalid(format!(
                "parent interface {parent} not found on the host"
            ))),
            Err(e) => Err(EngineError::kernel(format!("look up parent interface {parent}"))(
                e,
            )),
        }
    }

    /// Host routes IPAM must keep a subnet clear of. A macvlan network's explicit
    /// subnet is the LAN of its parent, which the host usually has a route for: that is
    /// the point, not a clash (Docker checks no host routes for macvlan either).
    pub(super) fn routes_for<'a>(
        p: &ParsedNetwork,
        explicit: bool,
        routes: &'a [ipnetwork::IpNetwork],
    ) -> &'a [ipnetwork::IpNetwork] {
        if p.parent.is_some() && explicit {
            &[]
        } else {
            routes
        }
    }

    /// Published ports are DNAT rules towards a bridge address; a sandbox whose first
    /// network is macvlan has its own address on the LAN instead. Docker's macvlan driver
    /// only logs "does not support port mappings" and ignores them; netctl refuses, so
    /// the user does not believe a port is published when it is not.
    pub(super) fn check_no_ports_on_macvlan(first: Option<&Network>, sandbox: &str) -> Result<()> {
        match first {
            Some(n) if n.is_macvlan() => Err(EngineError::Invalid(format!(
                "cannot publish ports for sandbox {sandbox}: network {} uses the macvlan driver (the sandbox has its own address on the LAN of {}; reach it there)",
                n.name,
                n.parent.as_deref().unwrap_or("its parent")
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "macvlan_tests.rs"]
mod tests;
