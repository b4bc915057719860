//! Network operations: create, remove, prune.

use super::{new_id, now, pool_key, Engine, EngineError, Result, Undo};
use crate::driver;
use crate::ipam;
use crate::model::{Network, NetworkRequest, ParsedNetwork, Sandbox, SandboxRequest, Subnet};
use crate::store::{Bucket, Txn};

impl Engine {
    pub fn create_network(&mut self, req: &NetworkRequest) -> Result<Network> {
        let p = req.parse().map_err(EngineError::Invalid)?;
        if self.networks.contains_key(&p.name) {
            return Err(EngineError::NetworkExists(p.name));
        }
        self.check_link_for(&p)?;
        let routes = self
            .kernel
            .routed_prefixes()
            .map_err(EngineError::kernel("list the host's routes"))?;
        let existing: Vec<&ipam::Pool> = self.pools.values().collect();
        let mut pools = Vec::new();
        let want4 = p.subnets.iter().find(|s| s.subnet.is_ipv4());
        pools.push(ipam::new_pool(
            &self.cfg.ipam,
            &p.name,
            false,
            want4,
            &existing,
            Self::routes_for(&p, want4.is_some(), &routes),
        )?);
        // An ipvlan network's further IPv4 subnets, a pool each.
        for s in p.subnets.iter().filter(|s| s.subnet.is_ipv4()).skip(1) {
            let existing: Vec<&ipam::Pool> = self.pools.values().chain(pools.iter()).collect();
            pools.push(ipam::new_pool(
                &self.cfg.ipam,
                &p.name,
                false,
                Some(s),
                &existing,
                Self::routes_for(&p, true, &routes),
            )?);
        }
        if p.ipv6 {
            let want6 = p.subnets.iter().find(|s| s.subnet.is_ipv6());
            pools.push(ipam::new_pool(
                &self.cfg.ipam,
                &p.name,
                true,
                want6,
                &existing,
                Self::routes_for(&p, want6.is_some(), &routes),
            )?);
        }
        let subnets = pools
            .iter()
            .map(|pl| Subnet {
                subnet: pl.subnet,
                gateway: pl.gateway,
                ip_range: pl.ip_range,
            })
            .collect();
        let net = p.into_network(new_id(), subnets, req, "netctl", now());
        let mut undo = Undo::default();
        let mut extra = 0;
        let keys: Vec<String> = pools
            .iter()
            .enumerate()
            .map(|(i, pl)| match (i, pl.subnet.is_ipv6()) {
                (_, true) => pool_key(&net.name, true),
                (0, false) => pool_key(&net.name, false),
                (_, false) => {
                    extra += 1;
                    super::extra_pool_key(&net.name, extra)
                }
            })
            .collect();
        self.remember(&mut undo, &[&net.name], &[], &keys);
        let mut txn = Txn::new();
        txn.put(Bucket::Networks, &net.name, &net);
        for (k, pl) in keys.iter().zip(pools) {
            txn.put(Bucket::Pools, k, &pl);
            self.pools.insert(k.clone(), pl);
        }
        self.networks.insert(net.name.clone(), net.clone());
        let steps = self.keep_shared_bridge(&net, driver::network_up(&net));
        // The commit also gives the DNS server the new model: PTR questions for the new
        // subnet are ours from now on (NXDOMAIN, not forwarded).
        self.commit(undo, &steps, &txn, &[])?;
        tracing::info!(network = %net.name, bridge = %net.bridge, subnets = ?net.subnets.iter().map(|s| s.subnet.to_string()).collect::<Vec<_>>(), "network created");
        Ok(net)
    }

    /// A sandbox on the network `net` describes, the network created first if missing
    /// (`/v1/attach`, netd-cni's ADD). An existing network must be that network
    /// (`NetworkRequest::mismatch`); otherwise nothing changes.
    pub fn attach(&mut self, net: &NetworkRequest, sandbox: &SandboxRequest) -> Result<(Network, Sandbox)> {
        if net.driver.as_deref() == Some(crate::model::DRIVER_OVERLAY) {
            let network = self.overlay_for_attach(net)?;
            let sandbox = self.create_sandbox(sandbox)?;
            return Ok((network, sandbox));
        }
        let network = match self.networks.get(&net.name) {
            Some(n) => {
                if let Some(why) = net.mismatch(n).map_err(EngineError::Invalid)? {
                    return Err(EngineError::NetworkMismatch(why));
                }
                n.clone()
            }
            None => self.create_network(net)?,
        };
        let sandbox = self.create_sandbox(sandbox)?;
        Ok((network, sandbox))
    }

    /// An overlay network is the cluster's (the agent makes it on the node): an attach
    /// (netd-cni's ADD with `"driver": "overlay"`) joins it and never makes one. The
    /// subnets the request names, if any, must be the network's.
    fn overlay_for_attach(&self, req: &NetworkRequest) -> Result<Network> {
        let name = &req.name;
        let Some(n) = self.networks.get(name) else {
            return Err(EngineError::Invalid(format!(
                "overlay network {name} is not on this node: make it with `netctl network create -d overlay {name}` on any node of the cluster (netd daemon --cluster ...)"
            )));
        };
        if !n.is_overlay() {
            return Err(EngineError::NetworkMismatch(format!(
                "network {name} exists with driver {}, not overlay",
                n.driver
            )));
        }
        for s in req.subnets.iter().filter_map(|s| s.subnet.as_deref()) {
            if !n.subnets.iter().any(|have| have.subnet.to_string() == s) {
                let have: Vec<String> = n.subnets.iter().map(|h| h.subnet.to_string()).collect();
                return Err(EngineError::NetworkMismatch(format!(
                    "network {name} exists with subnets {have:?}, not {s}"
                )));
            }
        }
        Ok(n.clone())
    }

    /// What a new network hangs off is usable: a macvlan parent, a VLAN network's shared
    /// bridge, or a bridge name of its own that is free. For netctl's and Docker's networks.
    pub(super) fn check_link_for(&self, p: &ParsedNetwork) -> Result<()> {
        if p.parent.is_some() {
            self.check_macvlan_parent(p)
        } else if p.vlan.is_some() {
            self.check_vlan_bridge(p)
        } else if !p.vlan_trunk.is_empty() {
            self.check_trunk_bridge(p)
        } else {
            self.check_bridge_free(&p.bridge)
        }
    }

    /// A new network's bridge name must be neither another network's nor a link someone
    /// else made (after our own deferred deletions of that name are done).
    pub(super) fn check_bridge_free(&self, bridge: &str) -> Result<()> {
        if let Some(other) = self.networks.values().find(|n| n.bridge == bridge) {
            return Err(EngineError::Conflict(format!(
                "bridge name {bridge} is already used by network {}",
                other.name
            )));
        }
        self.reaper.wait_for([bridge]);
        if self.kernel.link_exists(bridge, None).unwrap_or(false) {
            return Err(EngineError::Conflict(format!(
                "a link named {bridge} already exists on the host and is not netd's; pick another name with -o com.docker.network.bridge.name=NAME"
            )));
        }
        Ok(())
    }

    pub fn remove_network(&mut self, name: &str) -> Result<()> {
        let net = self.network(name)?.clone();
        let users: Vec<&str> = self
            .sandboxes
            .values()
            .filter(|s| s.endpoint(name).is_some())
            .map(|s| s.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(EngineError::Conflict(format!(
                "network {name} has active endpoints (sandboxes: {}); disconnect or remove them first",
                users.join(", ")
            )));
        }
        let services = self.services_on(name);
        if !services.is_empty() {
            return Err(EngineError::Conflict(format!(
                "network {name} is used by services ({}); remove them first",
                services.join(", ")
            )));
        }
        // Asked of the kernel before anything changes.
        let parent_down = self.vlan_parent_down(&net)?;
        let keys = self.pool_keys_of(name);
        let mut undo = Undo::default();
        self.remember(&mut undo, &[name], &[], &keys);
        let mut txn = Txn::new();
        txn.delete(Bucket::Networks, name);
        for k in &keys {
            txn.delete(Bucket::Pools, k);
            self.pools.remove(k);
        }
        self.networks.remove(name);
        let mut down = self.keep_shared_bridge(&net, driver::network_down(&net));
        // A VLAN parent netd made is gone before this returns: a network made next on the
        // same dotted name must not find it (and take it for someone else's).
        let made_parent = if parent_down.is_empty() {
            None
        } else {
            net.parent.clone()
        };
        down.extend(parent_down);
        self.commit(undo, &[], &txn, &down)?;
        if !net.bridge.is_empty() {
            self.reaper.wait_for([net.bridge.as_str()]);
        }
        if let Some(p) = &made_parent {
            self.reaper.wait_for([p.as_str()]);
        }
        tracing::info!(network = %name, bridge = %net.bridge, "network removed");
        Ok(())
    }

    /// Removes every network without endpoints; returns their names.
    pub fn prune_networks(&mut self) -> Result<Vec<String>> {
        let unused: Vec<String> = self
            .networks
            .keys()
            .filter(|n| !self.sandboxes.values().any(|s| s.endpoint(n).is_some()))
            .filter(|n| self.services_on(n).is_empty())
            .cloned()
            .collect();
        for n in &unused {
            self.remove_network(n)?;
        }
        Ok(unused)
    }
}

#[cfg(test)]
#[path = "attach_tests.rs"]
mod attach_tests;
