//! Sandbox operations: create, remove, connect, disconnect.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use super::{new_id, now, pool_key, Engine, EngineError, Result, Undo};
use crate::driver::bridge::{format_mac, mac_for, parse_mac};
use crate::driver::{endpoint_down, endpoint_up};
use crate::model::{
    host_veth_name, validate_ifname, validate_name, Endpoint, EndpointRequest, NetMode, Network,
    ParsedSandbox, Sandbox, SandboxRequest,
};
use crate::plan::Step;
use crate::store::{Bucket, Txn};

/// Written to the store before a sandbox's namespace is made, so a crash between the two
/// leaves something reconcile can find and remove.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PendingSandbox {
    pub netns: String,
}

fn owner(sandbox: &str, network: &str) -> String {
    format!("{sandbox}/{network}")
}

fn parse_ip(what: &str, s: &str) -> Result<IpAddr> {
    s.trim()
        .parse()
        .map_err(|_| EngineError::Invalid(format!("invalid {what} {s:?}: expected an IP address")))
}

impl Engine {
    /// Whether `ep` (the sandbox's first endpoint or not) puts a default route of the
    /// family into its sandbox: the gateway's (`driver::endpoint_up`), or one of its own.
    fn carries_default_route(&self, ep: &Endpoint, first: bool, v4: bool) -> bool {
        let own = ep
            .routes
            .iter()
            .any(|r| r.dst.prefix() == 0 && r.dst.is_ipv4() == v4);
        let gateway = if v4 {
            ep.gateway4.is_some()
        } else {
            ep.gateway6.is_some()
        };
        let internal = self.networks.get(&ep.network).is_some_and(|n| n.internal);
        own || (gateway && ep.carries_gateway_routes(first, internal))
    }

    fn netns_path(&self, name: &str) -> PathBuf {
        self.cfg.netns_dir.join(name)
    }

    fn resolv_dir(&self, name: &str) -> PathBuf {
        self.cfg.etc_netns_dir.join(name)
    }

    /// Allocates addresses and names for one endpoint. The caller has remembered the
    /// network's pools in its `Undo`.
    fn build_endpoint(
        &mut self,
        sandbox: &str,
        net: &Network,
        req: &EndpointRequest,
        default_ifname: String,
        taken: &[Endpoint],
    ) -> Result<Endpoint> {
        let ifname = match &req.ifname {
            Some(n) => {
                validate_ifname(n).map_err(|e| EngineError::Invalid(e.to_string()))?;
                if taken.iter().any(|e| &e.ifname == n) {
                    return Err(EngineError::Conflict(format!(
                        "sandbox {sandbox} already has an interface {n}"
                    )));
                }
                n.clone()
            }
            None => default_ifname,
        };
        for a in &req.aliases {
            validate_name(a).map_err(|e| EngineError::Invalid(format!("alias {e}")))?;
        }
        let (mut want4, mut want6) = (None, None);
        for s in req.ip.iter().chain(req.ip6.iter()) {
            match parse_ip("IP address", s)? {
                IpAddr::V4(v) => want4 = Some(IpAddr::V4(v)),
                IpAddr::V6(v) => want6 = Some(IpAddr::V6(v)),
            }
        }
        if req.mac.is_some() && net.is_ipvlan() {
            return Err(EngineError::Invalid(format!(
                "network {} uses the ipvlan driver: its endpoints have the MAC address of parent {}, none of their own",
                net.name,
                net.parent.as_deref().unwrap_or("-")
            )));
        }
        let mac = match &req.mac {
            Some(m) => Some(parse_mac(m).ok_or_else(|| {
                EngineError::Invalid(format!(
                    "invalid MAC address {m:?}: expected a unicast xx:xx:xx:xx:xx:xx"
                ))
            })?),
            None => None,
        };
        if want6.is_some() && !net.ipv6 {
            return Err(EngineError::Invalid(format!(
                "network {} has no IPv6 subnet",
                net.name
            )));
        }
        let who = owner(sandbox, &net.name);
        let mut ep = Endpoint {
            network: net.name.clone(),
            ifname,
            // A macvlan or ipvlan endpoint has nothing on the host side.
            host_ifname: if net.has_parent() {
                String::new()
            } else {
                host_veth_name(sandbox, &net.name)
            },
            mac: String::new(),
            ipv4: None,
            ipv6: None,
            gateway4: None,
            gateway6: None,
            aliases: req.aliases.clone(),
            routes: Vec::new(),
            no_default_route: req.no_default_route,
        };
        let key4 = self.v4_pool_key_for(&net.name, want4);
        if let Some(pool) = self.pools.get_mut(&key4) {
            let ip = pool.allocate(&who, want4)?;
            if let (IpAddr::V4(ip), IpAddr::V4(gw)) = (ip, pool.gateway) {
                ep.ipv4 = Some(
                    Ipv4Network::new(ip, pool.prefix_len())
                        .map_err(|e| EngineError::Invalid(e.to_string()))?,
                );
                ep.gateway4 = Some(gw);
            }
        }
        if let Some(pool) = self.pools.get_mut(&pool_key(&net.name, true)) {
            let ip = pool.allocate(&who, want6)?;
            if let (IpAddr::V6(ip), IpAddr::V6(gw)) = (ip, pool.gateway) {
                ep.ipv6 = Some(
                    Ipv6Network::new(ip, pool.prefix_len())
                        .map_err(|e| EngineError::Invalid(e.to_string()))?,
                );
                ep.gateway6 = Some(gw);
            }
        }
        ep.routes = ep.extra_routes(&req.routes).map_err(EngineError::Invalid)?;
        // One default route per family in a sandbox: the kernel refuses a second (with
        // a half-made endpoint to undo), so say so before anything is made.
        let first = taken.is_empty();
        for v4 in [true, false] {
            if !self.carries_default_route(&ep, first, v4) {
                continue;
            }
            if let Some(other) = taken
                .iter()
                .enumerate()
                .find(|(i, e)| self.carries_default_route(e, *i == 0, v4))
            {
                return Err(EngineError::Invalid(format!(
                    "a second {} default route: sandbox {sandbox} has one through network {} already",
                    if v4 { "IPv4" } else { "IPv6" },
                    other.1.network
                )));
            }
        }
        // An ipvlan child has its parent's MAC: none to record (Docker records none either).
        if !net.is_ipvlan() {
            let mac = mac.unwrap_or_else(|| mac_for(ep.ipv4.map(|n| IpAddr::V4(n.ip()))));
            ep.mac = format_mac(&mac);
        }
        Ok(ep)
    }

    fn release_endpoint(&mut self, sandbox: &str, network: &str) {
        for k in self.pool_keys_of(network) {
            if let Some(p) = self.pools.get_mut(&k) {
                p.release_owner(&owner(sandbox, network));
            }
        }
    }

    pub(super) fn put_pools(&self, txn: &mut Txn, networks: &[&str]) {
        for n in networks {
            for k in self.pool_keys_of(n) {
                if let Some(p) = self.pools.get(&k) {
                    txn.put(Bucket::Pools, &k, p);
                }
            }
        }
    }

    pub(super) fn pool_keys(&self, networks: &[&str]) -> Vec<String> {
        networks.iter().flat_map(|n| self.pool_keys_of(n)).collect()
    }

    pub fn create_sandbox(&mut self, req: &SandboxRequest) -> Result<Sandbox> {
        let t0 = std::time::Instant::now();
        // A successful commit has given the DNS server the new model (`commit`).
        let r = self.create_sandbox_inner(req);
        tracing::debug!(sandbox = %req.name, us = t0.elapsed().as_micros() as u64, ok = r.is_ok(), "create sandbox");
        r
    }

    fn create_sandbox_inner(&mut self, req: &SandboxRequest) -> Result<Sandbox> {
        // Before the request's own checks: a name that is taken was a valid one.
        if self.sandboxes.contains_key(&req.name) {
            return Err(EngineError::SandboxExists(req.name.clone()));
        }
        let ParsedSandbox {
            mode,
            networks,
            expose,
        } = req.parse().map_err(EngineError::Invalid)?;
        if let Some(p) = &req.netns {
            if !self.kernel.netns_alive(Path::new(p)) {
                return Err(EngineError::Invalid(format!("{p} is not a network namespace")));
            }
            if let Some(other) = self.sandboxes.values().find(|s| &s.netns == p) {
                return Err(EngineError::Conflict(format!(
                    "namespace {p} is already sandbox {}",
                    other.name
                )));
            }
        }
        for n in &networks {
            self.network(n)?;
        }
        let names: Vec<&str> = networks.iter().map(String::as_str).collect();
        let first = names.first().map(|n| self.networks[*n].clone());
        if !req.ports.is_empty() || req.publish_all {
            Self::check_no_ports_on_macvlan(first.as_ref(), &req.name)?;
        }
        if let Some(n) = first.as_ref().filter(|n| n.internal && !req.ports.is_empty()) {
            return Err(EngineError::Invalid(format!(
                "cannot publish ports on internal network {}: it has no way in or out",
                n.name
            )));
        }

        let mut undo = Undo::default();
        let keys = self.pool_keys(&names);
        self.remember(&mut undo, &[], &[&req.name], &keys);
        let mut endpoints = Vec::new();
        let mut sb = Sandbox {
            name: req.name.clone(),
            id: new_id(),
            mode,
            netns: match &req.netns {
                Some(p) => p.clone(),
                None => self.netns_path(&req.name).display().to_string(),
            },
            external: req.netns.is_some(),
            endpoints: Vec::new(),
            ports: Vec::new(),
            publish_all: req.publish_all,
            expose: expose.clone(),
            labels: req.labels.clone(),
            created: now(),
        };
        for e in &req.networks {
            if mode != NetMode::Bridge {
                break;
            }
            let net = self.networks[&e.network].clone();
            let taken = sb.endpoints.clone();
            match self.build_endpoint(&req.name, &net, e, sb.next_ifname(), &taken) {
                Ok(ep) => {
                    sb.endpoints.push(ep.clone());
                    endpoints.push(ep);
                }
                Err(err) => {
                    self.rollback(undo);
                    return Err(err);
                }
            }
        }
        let host_ip = first.as_ref().and_then(|n| n.host_binding_ipv4).map(IpAddr::V4);
        sb.ports = match self.resolve_ports(&req.name, &req.ports, req.publish_all, &expose, host_ip) {
            Ok(p) => p,
            Err(err) => {
                self.rollback(undo);
                return Err(err);
            }
        };

        let netns = PathBuf::from(&sb.netns);
        if !sb.external && (self.kernel.netns_alive(&netns) || netns.exists()) {
            self.rollback(undo);
            return Err(EngineError::Conflict(format!(
                "{} already exists (a namespace netd does not know); remove it with `ip netns del {}`",
                netns.display(),
                req.name
            )));
        }
        let mut steps = Vec::new();
        if sb.external {
            // The runtime owns the namespace: nothing to create, nothing to journal.
        } else if mode == NetMode::Host {
            steps.push(Step::BindHostNetns { path: netns.clone() });
        } else {
            steps.push(Step::CreateNetns { path: netns.clone() });
        }
        for (i, ep) in sb.endpoints.iter().enumerate() {
            let net = &self.networks[&ep.network];
            steps.push(endpoint_up(net, &sb.name, &netns, ep, i == 0));
        }
        let pending_key = format!("sandbox/{}", sb.name);
        let mut pending = Txn::new();
        pending.put(
            Bucket::Pending,
            &pending_key,
            &PendingSandbox {
                netns: sb.netns.clone(),
            },
        );
        // Never for an external namespace: reconcile deletes what a pending record names,
        // and that namespace is the runtime's.
        if !sb.external {
            if let Err(e) = self.store.commit(&pending) {
                self.rollback(undo);
                return Err(e.into());
            }
        }
        // A runtime's namespace (CNI) has its runtime's resolv.conf: nothing would read
        // ours, named after netd's sandbox, not after the runtime's namespace.
        if mode != NetMode::Host && !sb.external {
            steps.push(self.resolv_conf_step(&sb.name, &sb.labels));
        }
        let mut txn = Txn::new();
        txn.put(Bucket::Sandboxes, &sb.name, &sb);
        if !sb.external {
            txn.delete(Bucket::Pending, &pending_key);
        }
        self.sandboxes.insert(sb.name.clone(), sb.clone());
        self.put_pools(&mut txn, &names);
        if let Err(e) = self.commit(undo, &steps, &txn, &[]) {
            let mut clear = Txn::new();
            clear.delete(Bucket::Pending, &pending_key);
            let _ = self.store.commit(&clear);
            return Err(e);
        }
        tracing::info!(sandbox = %sb.name, netns = %sb.netns, endpoints = sb.endpoints.len(), ports = sb.ports.len(), "sandbox created");
        Ok(sb)
    }

    pub fn remove_sandbox(&mut self, name: &str) -> Result<()> {
        let sb = self.sandbox(name)?.clone();
        let names: Vec<&str> = sb.endpoints.iter().map(|e| e.network.as_str()).collect();
        let mut undo = Undo::default();
        let keys = self.pool_keys(&names);
        self.remember(&mut undo, &[], &[name], &keys);
        for n in &names {
            self.release_endpoint(name, n);
        }
        self.sandboxes.remove(name);
        let mut txn = Txn::new();
        txn.delete(Bucket::Sandboxes, name);
        self.put_pools(&mut txn, &names);
        let mut teardown: Vec<Step> = sb
            .endpoints
            .iter()
            .map(|e| endpoint_down(self.networks.get(&e.network), e, Path::new(&sb.netns)))
            .collect();
        let pending_key = format!("sandbox/{name}");
        if !sb.external {
            // The namespace outlives the record until the teardown below; a crash in
            // between would leave a namespace file nothing refers to (links carry an alias
            // reconcile can match, a namespace file does not). Reconcile removes what this
            // names. An external namespace is its runtime's: never deleted here.
            txn.put(
                Bucket::Pending,
                &pending_key,
                &PendingSandbox {
                    netns: sb.netns.clone(),
                },
            );
            teardown.push(Step::DeleteNetns {
                path: PathBuf::from(&sb.netns),
            });
            teardown.push(Step::DeleteResolvConf {
                dir: self.resolv_dir(name),
            });
        }
        self.commit(undo, &[], &txn, &teardown)?;
        // `rm` promises nothing is left when it returns; only detach defers deletions.
        // And CNI's DEL of a runtime's namespace: the runtime only needs the addresses
        // released, and a later ADD that needs the same link name waits for it.
        if !sb.external {
            self.reaper
                .wait_for(sb.endpoints.iter().map(|e| e.host_ifname.as_str()));
        }
        // Kept when the namespace could not be removed, so the next reconcile retries.
        let path = PathBuf::from(&sb.netns);
        if !sb.external && !self.kernel.netns_alive(&path) && !path.exists() {
            let mut clear = Txn::new();
            clear.delete(Bucket::Pending, &pending_key);
            if let Err(e) = self.store.commit(&clear) {
                tracing::warn!(sandbox = %name, error = %e, "could not clear the pending record; reconcile will");
            }
        }
        tracing::info!(sandbox = %name, "sandbox removed");
        Ok(())
    }

    pub fn connect(&mut self, network: &str, req: &EndpointRequest, sandbox: &str) -> Result<Endpoint> {
        let net = self.network(network)?.clone();
        let sb = self.sandbox(sandbox)?.clone();
        if sb.mode != NetMode::Bridge {
            return Err(EngineError::Invalid(format!(
                "sandbox {sandbox} uses network mode {:?}; it cannot join networks",
                sb.mode
            )));
        }
        if sb.endpoint(network).is_some() {
            return Err(EngineError::Conflict(format!(
                "sandbox {sandbox} is already connected to network {network}"
            )));
        }
        let mut undo = Undo::default();
        let keys = self.pool_keys(&[network]);
        self.remember(&mut undo, &[], &[sandbox], &keys);
        let ep = match self.build_endpoint(sandbox, &net, req, sb.next_ifname(), &sb.endpoints) {
            Ok(ep) => ep,
            Err(e) => {
                self.rollback(undo);
                return Err(e);
            }
        };
        let mut new_sb = sb.clone();
        new_sb.endpoints.push(ep.clone());
        let step = endpoint_up(&net, sandbox, Path::new(&sb.netns), &ep, sb.endpoints.is_empty());
        let mut txn = Txn::new();
        txn.put(Bucket::Sandboxes, sandbox, &new_sb);
        self.sandboxes.insert(sandbox.to_string(), new_sb);
        self.put_pools(&mut txn, &[network]);
        self.commit(undo, &[step], &txn, &[])?;
        tracing::info!(sandbox, network, ifname = %ep.ifname, ipv4 = ?ep.ipv4, "connected");
        Ok(ep)
    }

    pub fn disconnect(&mut self, network: &str, sandbox: &str) -> Result<()> {
        let net = self.network(network)?.clone();
        let sb = self.sandbox(sandbox)?.clone();
        let Some(ep) = sb.endpoint(network).cloned() else {
            return Err(EngineError::NotConnected {
                sandbox: sandbox.into(),
                network: network.into(),
            });
        };
        let mut undo = Undo::default();
        let keys = self.pool_keys(&[network]);
        self.remember(&mut undo, &[], &[sandbox], &keys);
        self.release_endpoint(sandbox, network);
        let mut new_sb = sb.clone();
        new_sb.endpoints.retain(|e| e.network != network);
        if new_sb.endpoints.is_empty() {
            new_sb.ports.clear();
        }
        let mut txn = Txn::new();
        txn.put(Bucket::Sandboxes, sandbox, &new_sb);
        self.sandboxes.insert(sandbox.to_string(), new_sb);
        self.put_pools(&mut txn, &[network]);
        let down = endpoint_down(Some(&net), &ep, Path::new(&sb.netns));
        self.commit(undo, &[], &txn, &[down])?;
        tracing::info!(sandbox, network, "disconnected");
        Ok(())
    }

    /// The step that writes `/etc/netns/<name>/resolv.conf`: the host's resolvers minus
    /// loopback ones (they are unreachable from a sandbox), as Docker does. With the
    /// embedded DNS server attached, it points at 127.0.0.11 instead.
    fn resolv_conf_step(&self, name: &str, labels: &std::collections::BTreeMap<String, String>) -> Step {
        let dir = self.resolv_dir(name);
        if let Some(d) = &self.dns {
            return Step::WriteResolvConf {
                dir,
                contents: d.resolv_conf(labels),
            };
        }
        let host = std::fs::read_to_string(&self.cfg.host_resolv_conf).unwrap_or_default();
        let contents = crate::dns::resolv::copy_for_sandbox(&host);
        Step::WriteResolvConf { dir, contents }
    }
}
