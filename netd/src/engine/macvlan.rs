//! Engine checks specific to networks with a parent link, macvlan and ipvlan (the
//! drivers themselves are `driver::macvlan`), and their 802.1Q parents.

use super::{Engine, EngineError, Result};
use crate::model::{vlan_parent, Network, ParsedNetwork, DRIVER_IPVLAN};
use crate::plan::Step;

impl Engine {
    /// Before a macvlan or ipvlan network is made: the kernel has the driver; unless the
    /// parent is in the sandboxes (`parent_in_sandbox`, nothing more to check here), its parent
    /// exists on the host (or, dotted, `eth0.10`, can be made: `eth0` exists and the
    /// kernel has 802.1Q), and no other such network uses it (libnetwork's rule: "network
    /// X is already using parent interface Y"; a parent is one LAN, and two networks on
    /// it would be one network split in two IPAM pools; and the kernel lets a link have
    /// macvlan or ipvlan children, not both).
    pub(super) fn check_macvlan_parent(&self, p: &ParsedNetwork) -> Result<()> {
        let Some(parent) = p.parent.as_deref() else {
            return Ok(());
        };
        if p.driver == DRIVER_IPVLAN {
            self.require(
                "an ipvlan network",
                "ipvlan support (CONFIG_IPVLAN)",
                self.kernel.ipvlan_supported(),
            )?;
        }
        if p.parent_in_sandbox {
            // Each sandbox's own link, looked up when an endpoint is made there.
            return Ok(());
        }
        if p.internal && p.driver == DRIVER_IPVLAN {
            // The network's own dummy link (`model::dummy_parent_name`), made with it.
            self.reaper.wait_for([parent]);
            return self.require(
                "an internal ipvlan network",
                "dummy links (CONFIG_DUMMY)",
                self.kernel.dummy_supported(),
            );
        }
        if let Some(other) = self.networks.values().find(|n| n.host_parent() == Some(parent)) {
            return Err(EngineError::Conflict(format!(
                "network {} is already using parent interface {parent}",
                other.name
            )));
        }
        if let Some(other) = self
            .networks
            .values()
            .find(|n| !n.has_parent() && n.bridge == parent)
        {
            return Err(EngineError::Invalid(format!(
                "parent interface {parent} is the bridge of network {}; use a host interface",
                other.name
            )));
        }
        // Our own deferred deletion of a VLAN parent of that name finishes first.
        self.reaper.wait_for([parent]);
        let exists = |name: &str| {
            self.kernel
                .link_exists(name, None)
                .map_err(EngineError::kernel(format!("look up parent interface {name}")))
        };
        if exists(parent)? {
            return Ok(());
        }
        // Missing and dotted: the 802.1Q link netd makes (`driver::macvlan::network_up`).
        let Some((link, id)) = vlan_parent(parent).map_err(EngineError::Invalid)? else {
            return Err(EngineError::Invalid(format!(
                "parent interface {parent} not found on the host"
            )));
        };
        if !exists(&link)? {
            return Err(EngineError::Invalid(format!(
                "parent interface {parent} not found on the host, nor its link {link} to make it on (vlan {id})"
            )));
        }
        self.require(
            &format!("parent {parent}"),
            "802.1Q VLAN support (CONFIG_VLAN_8021Q)",
            self.kernel.vlan_supported(),
        )
    }

    /// Refuses `what` (code 2 for CNI) when the kernel lacks `feature`.
    fn require(
        &self,
        what: &str,
        feature: &'static str,
        probe: std::result::Result<bool, crate::kernel::KernelError>,
    ) -> Result<()> {
        match probe {
            Ok(true) => Ok(()),
            Ok(false) => Err(EngineError::Unsupported {
                what: what.into(),
                feature,
            }),
            Err(e) => Err(EngineError::kernel(format!("probe {feature}"))(e)),
        }
    }

    /// The deletion of `net`'s 802.1Q or dummy parent when netd made it (it carries the
    /// network's alias) and no other network uses it; nothing otherwise.
    pub(super) fn vlan_parent_down(&self, net: &Network) -> Result<Vec<Step>> {
        let Some(parent) = net.made_parent() else {
            return Ok(Vec::new());
        };
        if self
            .networks
            .values()
            .any(|n| n.name != net.name && n.host_parent() == Some(parent))
        {
            return Ok(Vec::new());
        }
        let alias = crate::driver::network_alias(&net.name);
        let ours = self
            .kernel
            .owned_links()
            .map_err(EngineError::kernel("list netd's links"))?
            .into_iter()
            .any(|l| l.name == parent && l.alias == alias);
        Ok(if ours {
            vec![Step::DeleteLink {
                name: parent.to_string(),
                netns: None,
            }]
        } else {
            Vec::new()
        })
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
    /// network is macvlan or ipvlan has its own address on the LAN instead. Docker's
    /// drivers only log "does not support port mappings" and ignore them; netctl refuses,
    /// so the user does not believe a port is published when it is not.
    pub(super) fn check_no_ports_on_macvlan(first: Option<&Network>, sandbox: &str) -> Result<()> {
        match first {
            Some(n) if n.has_parent() => Err(EngineError::Invalid(format!(
                "cannot publish ports for sandbox {sandbox}: network {} uses the {} driver (the sandbox has its own address on the LAN of {}; reach it there)",
                n.name,
                n.driver,
                n.parent.as_deref().unwrap_or("its parent")
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "macvlan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "ipvlan_tests.rs"]
mod ipvlan_tests;
