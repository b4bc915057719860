//! Docker's libnetwork remote driver and IPAM, as engine operations (the wire protocol is
//! `api::docker_plugin`).
//!
//! - IPAM pools live in the same pool map as netctl's networks (`docker_ipam`).
//! - A Docker network is a netd network named `dk-<first 12 of its ID>`, owner "docker".
//! - A Docker endpoint is an external sandbox named `dk-<first 12 of the endpoint ID>`
//!   with one endpoint, whose veth pair netd creates with both ends in its own namespace:
//!   dockerd moves the peer into the container and configures it (addresses, MAC,
//!   routes) from what `CreateEndpoint`/`Join` said. Anti-spoofing and published ports
//!   come from the same model as netctl's sandboxes, so the same nftables code serves both.
//!
//! Everything is in the store: dockerd does not replay CreateNetwork/RequestPool after a
//! restart, and a restarted netd (even after `kill -9`) must still answer Join/Leave.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::{now, pool_key, Engine, EngineError, Result, Undo};
use crate::driver::bridge::{format_mac, mac_for};
use crate::driver::{self, macvlan};
use crate::ipam;
use crate::model::{
    host_veth_name, Endpoint, NetMode, Network, NetworkRequest, PortMapping, Proto, Sandbox, Subnet,
    SubnetRequest,
};
use crate::plan::{HostVethSpec, Step};
use crate::store::{Bucket, Txn};

/// `Network::owner` of networks made through the Docker plugin.
pub const OWNER: &str = "docker";
pub(super) const IPAM_PREFIX: &str = "docker-ipam:";
/// Lease owner of addresses handed to dockerd.
pub(super) const LEASE_OWNER: &str = "docker";
/// Generic option choosing netd's driver (`-o netd.driver=bridge`).
pub const OPT_DRIVER: &str = "netd.driver";

pub fn is_ipam_pool(key: &str) -> bool {
    key.starts_with(IPAM_PREFIX)
}

/// What `RequestPool` hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerPool {
    pub id: String,
    pub pool: IpNetwork,
}

/// `CreateNetwork` as the engine sees it: Docker's IPAM result and options as strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerNetwork {
    pub id: String,
    /// (pool, gateway with the pool's prefix), per family.
    pub v4: Vec<(IpNetwork, IpNetwork)>,
    pub v6: Vec<(IpNetwork, IpNetwork)>,
    pub internal: bool,
    /// `com.docker.network.generic`.
    pub options: BTreeMap<String, String>,
}

/// `CreateEndpoint` as the engine sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerEndpoint {
    pub network_id: String,
    pub endpoint_id: String,
    pub addr4: Option<Ipv4Network>,
    pub addr6: Option<Ipv6Network>,
    pub mac: Option<[u8; 6]>,
}

/// One published port as libnetwork sends it (`HostPortEnd` > `HostPort` is a range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DockerPort {
    pub proto: Proto,
    pub container_port: u16,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub host_port_end: u16,
}

/// What `Join` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinInfo {
    pub src_name: String,
    pub gateway4: Option<IpAddr>,
    pub gateway6: Option<IpAddr>,
    /// A default route through the device itself, per family (ipvlan l3).
    pub device_default4: bool,
    pub device_default6: bool,
}

/// Docker object IDs are 64 hex digits; anything else is refused before it names a link.
pub fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(EngineError::Invalid(format!("{what} is missing")));
    }
    if id.len() < 12 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EngineError::Invalid(format!(
            "invalid {what} {:?}: expected Docker's hexadecimal ID",
            id.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

pub fn network_name(id: &str) -> String {
    format!("dk-{}", &id[..12])
}

pub fn endpoint_name(id: &str) -> String {
    format!("dk-{}", &id[..12])
}

/// The veth end dockerd moves into the container (it renames it `ethN`).
pub fn peer_name(endpoint_id: &str) -> String {
    format!("dkp{}", &endpoint_id[..12])
}

impl Engine {
    /// dockerd's FORWARD chain drops what it does not know (see `kernel::iptables`).
    /// Called when dockerd activates the plugin (after each dockerd start) and at
    /// CreateNetwork; a failure is logged, since netd's own rules are in place anyway.
    pub fn docker_allow_forward(&self) {
        if let Err(e) = self.kernel.allow_in_docker_forward() {
            tracing::warn!(error = %e, "could not open dockerd's FORWARD chain to netd's bridges");
        }
    }

    fn docker_network(&self, id: &str) -> Result<&Network> {
        check_id("NetworkID", id)?;
        self.networks
            .values()
            .find(|n| n.id == id && n.owner == OWNER)
            .ok_or_else(|| EngineError::NoSuchDockerNetwork(id[..12].to_string()))
    }

    fn docker_sandbox(&self, network_id: &str, endpoint_id: &str) -> Result<(&Network, &Sandbox)> {
        let net = self.docker_network(network_id)?;
        check_id("EndpointID", endpoint_id)?;
        let sb = self
            .sandboxes
            .get(&endpoint_name(endpoint_id))
            .filter(|s| s.id == endpoint_id && s.endpoint(&net.name).is_some())
            .ok_or_else(|| EngineError::NoSuchDockerEndpoint {
                network: network_id[..12].to_string(),
                endpoint: endpoint_id[..12].to_string(),
            })?;
        Ok((net, sb))
    }

    /// Which Docker network an endpoint belongs to, for listings.
    pub fn docker_networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values().filter(|n| n.owner == OWNER)
    }

    /// `NetworkDriver.CreateNetwork`: a bridge with Docker's gateway(s) on it.
    pub fn docker_create_network(&mut self, req: &DockerNetwork) -> Result<Network> {
        check_id("NetworkID", &req.id)?;
        let name = network_name(&req.id);
        if let Some(n) = self.networks.values().find(|n| n.id == req.id) {
            return Err(EngineError::Conflict(format!(
                "network {} already exists in netd",
                n.name
            )));
        }
        let driver = match req.options.get(OPT_DRIVER).map(String::as_str) {
            None | Some("bridge") => None,
            Some("macvlan") => Some(crate::model::DRIVER_MACVLAN.to_string()),
            Some("ipvlan") => Some(crate::model::DRIVER_IPVLAN.to_string()),
            Some(d) => {
                return Err(EngineError::Invalid(format!(
                    "option {OPT_DRIVER}={d} is not supported (supported: bridge, macvlan, ipvlan)"
                )))
            }
        };
        if req.v4.is_empty() {
            return Err(EngineError::Invalid(
                "the network has no IPv4 pool: netd networks need one (use --ipam-driver netd or --subnet)"
                    .into(),
            ));
        }
        if req.v4.len() > 1 || req.v6.len() > 1 {
            return Err(EngineError::Invalid(
                "netd networks take one subnet per address family".into(),
            ));
        }
        let mut subnets = Vec::new();
        for (pool, gw) in req.v4.iter().chain(&req.v6) {
            if pool.is_ipv4() != gw.is_ipv4() || !pool.contains(gw.ip()) {
                return Err(EngineError::Invalid(format!(
                    "gateway {gw} is outside pool {pool}"
                )));
            }
            subnets.push(SubnetRequest {
                subnet: Some(pool.to_string()),
                gateway: Some(gw.ip().to_string()),
                ip_range: None,
            });
        }
        let mut options = req.options.clone();
        options.remove(OPT_DRIVER);
        let nreq = NetworkRequest {
            name: name.clone(),
            driver,
            subnets,
            ipv6: !req.v6.is_empty(),
            internal: req.internal,
            mtu: None,
            options,
            labels: BTreeMap::from([("com.docker.network.id".to_string(), req.id.clone())]),
        };
        let p = nreq.parse().map_err(EngineError::Invalid)?;
        if p.parent_in_sandbox {
            // dockerd moves the child into the container itself, from the host.
            return Err(EngineError::Invalid(format!(
                "option {} is not for Docker networks: dockerd moves the {} link into the container from the host, so the parent must be a host link",
                crate::model::OPT_PARENT_IN_SANDBOX,
                p.driver
            )));
        }
        self.check_link_for(&p)?;
        // Pools from netd's IPAM are already reserved; with Docker's own IPAM the subnet
        // gets a netd pool here, so it is checked against (and then blocks) netd's others.
        let mut own_pools = Vec::new();
        let mut ipam_keys = Vec::new();
        for s in &p.subnets {
            let key = Self::pool_id_for(&s.subnet);
            if let Some(pl) = self.pools.get(&key) {
                if self.networks.contains_key(&pl.network) {
                    return Err(EngineError::Conflict(format!(
                        "pool {} is already used by network {}",
                        s.subnet, pl.network
                    )));
                }
                ipam_keys.push(key);
                continue;
            }
            let routes = self
                .kernel
                .routed_prefixes()
                .map_err(EngineError::kernel("list the host's routes"))?;
            let existing: Vec<&ipam::Pool> = self.pools.values().collect();
            let pl = ipam::new_pool(
                &self.cfg.ipam,
                &name,
                s.subnet.is_ipv6(),
                Some(s),
                &existing,
                Self::routes_for(&p, true, &routes),
            )?;
            own_pools.push((pool_key(&name, s.subnet.is_ipv6()), pl));
        }
        let subnets = p
            .subnets
            .iter()
            .map(|s| Subnet {
                subnet: s.subnet,
                gateway: s.gateway.unwrap_or_else(|| s.subnet.ip()),
                ip_range: None,
            })
            .collect();
        let net = p.into_network(req.id.clone(), subnets, &nreq, OWNER, now());
        let mut undo = Undo::default();
        let mut keys: Vec<String> = own_pools.iter().map(|(k, _)| k.clone()).collect();
        keys.extend(ipam_keys.iter().cloned());
        self.remember(&mut undo, &[&name], &[], &keys);
        let mut txn = Txn::new();
        txn.put(Bucket::Networks, &name, &net);
        for (k, pl) in own_pools {
            txn.put(Bucket::Pools, &k, &pl);
            self.pools.insert(k, pl);
        }
        // Name the Docker pools after their network, for overlap messages.
        for k in &ipam_keys {
            if let Some(pl) = self.pools.get_mut(k) {
                pl.network = name.clone();
                txn.put(Bucket::Pools, k, &*pl);
            }
        }
        self.networks.insert(name.clone(), net.clone());
        let steps = self.keep_shared_bridge(&net, driver::network_up(&net));
        self.commit(undo, &steps, &txn, &[])?;
        self.docker_allow_forward();
        tracing::info!(network = %name, bridge = %net.bridge, docker_id = %req.id, "docker: network created");
        Ok(net)
    }

    /// `NetworkDriver.DeleteNetwork`. Endpoints dockerd forgot (it crashed between calls)
    /// go with the network.
    pub fn docker_delete_network(&mut self, id: &str) -> Result<()> {
        let name = self.docker_network(id)?.name.clone();
        let stale: Vec<String> = self
            .sandboxes
            .values()
            .filter(|s| s.labels.get("netd.owner").map(String::as_str) == Some(OWNER))
            .filter(|s| s.endpoint(&name).is_some())
            .map(|s| s.name.clone())
            .collect();
        for s in stale {
            tracing::warn!(sandbox = %s, network = %name, "docker: removing an endpoint dockerd did not delete");
            self.remove_sandbox(&s)?;
        }
        self.remove_network(&name)
    }

    /// `NetworkDriver.CreateEndpoint`: record, anti-spoofing, and the veth pair whose
    /// peer `Join` hands to dockerd. Returns the MAC when Docker did not choose one.
    pub fn docker_create_endpoint(&mut self, req: &DockerEndpoint) -> Result<Option<[u8; 6]>> {
        let net = self.docker_network(&req.network_id)?.clone();
        check_id("EndpointID", &req.endpoint_id)?;
        let name = endpoint_name(&req.endpoint_id);
        if self.sandboxes.contains_key(&name) {
            return Err(EngineError::Conflict(format!(
                "endpoint {} already exists",
                &req.endpoint_id[..12]
            )));
        }
        let sub4 = net.subnet4();
        let sub6 = net.subnet6();
        match (req.addr4, sub4) {
            (Some(a), Some(s))
                if s.subnet.contains(IpAddr::V4(a.ip())) && a.prefix() == s.subnet.prefix() => {}
            (Some(a), Some(s)) => {
                return Err(EngineError::Invalid(format!(
                    "address {a} is not in the network's subnet {}",
                    s.subnet
                )))
            }
            (Some(a), None) => {
                return Err(EngineError::Invalid(format!(
                    "address {a}: the network has no IPv4 subnet"
                )))
            }
            (None, _) => {
                return Err(EngineError::Invalid(
                    "the endpoint has no IPv4 address (Interface.Address is missing)".into(),
                ))
            }
        }
        match (req.addr6, sub6) {
            (None, _) => {}
            (Some(a), Some(s)) if s.subnet.contains(IpAddr::V6(a.ip())) => {}
            (Some(a), _) => {
                return Err(EngineError::Invalid(format!(
                    "IPv6 address {a} is not in the network's IPv6 subnet"
                )))
            }
        }
        let gw = |s: Option<&Subnet>| s.map(|s| s.gateway);
        // As Docker's ipvlan driver: the child has its parent's MAC.
        if net.is_ipvlan() && req.mac.is_some() {
            return Err(EngineError::Invalid(
                "ipvlan interfaces do not support custom mac address assignment".into(),
            ));
        }
        let chosen_mac = req.mac.is_none() && !net.is_ipvlan();
        let mac = req
            .mac
            .unwrap_or_else(|| mac_for(req.addr4.map(|a| IpAddr::V4(a.ip()))));
        let ep = Endpoint {
            network: net.name.clone(),
            ifname: peer_name(&req.endpoint_id),
            // A macvlan child has one end only: the link dockerd moves.
            host_ifname: if net.has_parent() {
                peer_name(&req.endpoint_id)
            } else {
                host_veth_name(&name, &net.name)
            },
            mac: if net.is_ipvlan() {
                String::new()
            } else {
                format_mac(&mac)
            },
            ipv4: req.addr4,
            ipv6: req.addr6,
            gateway4: match gw(sub4) {
                Some(IpAddr::V4(g)) => Some(g),
                _ => None,
            },
            gateway6: match gw(sub6) {
                Some(IpAddr::V6(g)) => Some(g),
                _ => None,
            },
            aliases: Vec::new(),
            routes: Vec::new(),
            // dockerd installs the gateway routes itself (from Join's answer).
            no_default_route: false,
        };
        let sb = Sandbox {
            name: name.clone(),
            id: req.endpoint_id.clone(),
            mode: NetMode::Bridge,
            // The container's namespace is dockerd's (its path is only visible in dockerd's
            // mount namespace): netd never creates, enters or deletes it.
            netns: String::new(),
            external: true,
            endpoints: vec![ep.clone()],
            ports: Vec::new(),
            publish_all: false,
            expose: Vec::new(),
            labels: BTreeMap::from([
                ("netd.owner".to_string(), OWNER.to_string()),
                (
                    "com.docker.network.endpoint.id".to_string(),
                    req.endpoint_id.clone(),
                ),
            ]),
            created: now(),
        };
        let mut undo = Undo::default();
        self.remember(&mut undo, &[], &[&name], &[]);
        let mut txn = Txn::new();
        txn.put(Bucket::Sandboxes, &name, &sb);
        self.sandboxes.insert(name.clone(), sb);
        let step = host_veth(&net, &name, &ep, mac);
        self.commit(undo, &[step], &txn, &[])?;
        tracing::info!(endpoint = %name, network = %net.name, ipv4 = ?req.addr4, "docker: endpoint created");
        Ok(chosen_mac.then_some(mac))
    }

    /// `NetworkDriver.Join`: the veth name dockerd moves into the container, and the
    /// gateways. A pair that vanished since CreateEndpoint (its container's namespace
    /// died with the peer in it) is made again.
    pub fn docker_join(&mut self, network_id: &str, endpoint_id: &str) -> Result<JoinInfo> {
        let (net, sb) = self.docker_sandbox(network_id, endpoint_id)?;
        let (net, sb) = (net.clone(), sb.clone());
        let ep = sb.endpoints[0].clone();
        let host_ok = self.kernel.link_exists(&ep.host_ifname, None).unwrap_or(false);
        let peer_ok = self.kernel.link_exists(&ep.ifname, None).unwrap_or(false);
        if !(host_ok && peer_ok) {
            let mac = crate::driver::bridge::parse_mac(&ep.mac).unwrap_or_else(|| mac_for(None));
            let steps = [
                Step::DeleteLink {
                    name: ep.host_ifname.clone(),
                    netns: None,
                },
                host_veth(&net, &sb.name, &ep, mac),
            ];
            crate::plan::execute(self.kernel.as_ref(), &steps)?;
            tracing::info!(endpoint = %sb.name, "docker: veth pair made again at join");
        }
        // ipvlan l3: no gateway; the default route is the device (Docker's ipvlan answers
        // a connected default route the same way).
        let device_routes = !net.internal && net.routes_without_gateway();
        let (gateway4, gateway6) = if net.internal || device_routes {
            (None, None)
        } else {
            (ep.gateway4.map(IpAddr::V4), ep.gateway6.map(IpAddr::V6))
        };
        Ok(JoinInfo {
            src_name: ep.ifname,
            gateway4,
            gateway6,
            device_default4: device_routes && ep.ipv4.is_some(),
            device_default6: device_routes && ep.ipv6.is_some(),
        })
    }

    /// `NetworkDriver.Leave`: dockerd has moved the peer back (or its namespace is gone);
    /// the pair stays until DeleteEndpoint.
    pub fn docker_leave(&mut self, network_id: &str, endpoint_id: &str) -> Result<()> {
        self.docker_sandbox(network_id, endpoint_id).map(drop)
    }

    /// `NetworkDriver.DeleteEndpoint`: the record and its rules at once; the pair is
    /// deleted by the reaper (an RCU wait dockerd need not sit through: the name is never
    /// reused, and `network rm` waits for it).
    pub fn docker_delete_endpoint(&mut self, network_id: &str, endpoint_id: &str) -> Result<()> {
        let sb = self.docker_sandbox(network_id, endpoint_id)?.1.clone();
        let mut undo = Undo::default();
        self.remember(&mut undo, &[], &[&sb.name], &[]);
        self.sandboxes.remove(&sb.name);
        let mut txn = Txn::new();
        txn.delete(Bucket::Sandboxes, &sb.name);
        let net = self.networks.get(&sb.endpoints[0].network);
        let teardown: Vec<Step> = sb
            .endpoints
            .iter()
            .map(|e| driver::endpoint_down(net, e, std::path::Path::new("")))
            .collect();
        self.commit(undo, &[], &txn, &teardown)?;
        tracing::info!(endpoint = %sb.name, "docker: endpoint deleted");
        Ok(())
    }

    /// The endpoint's record (for EndpointOperInfo).
    pub fn docker_endpoint(&self, network_id: &str, endpoint_id: &str) -> Result<Sandbox> {
        self.docker_sandbox(network_id, endpoint_id)
            .map(|(_, s)| s.clone())
    }

    /// `NetworkDriver.ProgramExternalConnectivity`: publish ports (`-p`, `-P`) through the
    /// same DNAT rules as netctl's `-p`. Replaces what was published before.
    pub fn docker_program_ports(
        &mut self,
        network_id: &str,
        endpoint_id: &str,
        ports: &[DockerPort],
        exposed: &[(u16, Proto)],
    ) -> Result<Vec<PortMapping>> {
        let (net, sb) = self.docker_sandbox(network_id, endpoint_id)?;
        let (net, mut sb) = (net.clone(), sb.clone());
        if net.has_parent() {
            // As Docker's own macvlan driver: "does not support port mappings", logged and
            // ignored (the container has its own address on the LAN).
            if !ports.is_empty() {
                tracing::warn!(endpoint = %sb.name, "docker: macvlan does not support port mappings; ports not published");
            }
            return Ok(Vec::new());
        }
        if net.internal {
            // Docker's bridge driver ignores publications on internal networks too.
            if !ports.is_empty() {
                tracing::info!(endpoint = %sb.name, "docker: ports not published: network is internal");
            }
            return Ok(Vec::new());
        }
        let host_ip = net.host_binding_ipv4.map(IpAddr::V4);
        let mut out: Vec<PortMapping> = Vec::new();
        for p in ports {
            if p.container_port == 0 {
                return Err(EngineError::Invalid(
                    "published port with container port 0".into(),
                ));
            }
            let end = p.host_port_end.max(p.host_port);
            let mut last_err = None;
            let mut done = false;
            for hp in p.host_port..=end {
                let m = PortMapping {
                    host_ip: p.host_ip,
                    host_port: hp,
                    container_port: p.container_port,
                    proto: p.proto,
                };
                let mut want = out.clone();
                want.push(m);
                match self.resolve_mappings(&sb.name, want, host_ip) {
                    Ok(v) => {
                        out = v;
                        done = true;
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
                if hp == 0 {
                    break;
                }
            }
            if !done {
                return Err(last_err.unwrap_or_else(|| EngineError::Invalid("no host port".into())));
            }
        }
        if sb.ports == out && sb.expose == exposed {
            // The usual case (nothing published): no store write on the `docker run` path.
            return Ok(out);
        }
        sb.ports = out.clone();
        sb.expose = exposed.to_vec();
        self.save_docker_sandbox(sb)?;
        Ok(out)
    }

    /// `NetworkDriver.RevokeExternalConnectivity`.
    pub fn docker_revoke_ports(&mut self, network_id: &str, endpoint_id: &str) -> Result<()> {
        let mut sb = self.docker_sandbox(network_id, endpoint_id)?.1.clone();
        if sb.ports.is_empty() {
            return Ok(());
        }
        sb.ports.clear();
        self.save_docker_sandbox(sb)
    }

    fn save_docker_sandbox(&mut self, sb: Sandbox) -> Result<()> {
        let mut undo = Undo::default();
        self.remember(&mut undo, &[], &[&sb.name], &[]);
        let mut txn = Txn::new();
        txn.put(Bucket::Sandboxes, &sb.name, &sb);
        self.sandboxes.insert(sb.name.clone(), sb);
        self.commit(undo, &[], &txn, &[])
    }
}

/// The link dockerd moves into the container: a veth pair on the bridge, or a macvlan
/// (ipvlan) child of the parent (named like the veth peer, so `Join` answers the same way).
fn host_veth(net: &Network, sandbox: &str, ep: &Endpoint, mac: [u8; 6]) -> Step {
    if net.has_parent() {
        return macvlan::host_endpoint_up(net, sandbox, ep);
    }
    Step::CreateHostVeth(HostVethSpec {
        host_name: ep.host_ifname.clone(),
        bridge: net.bridge.clone(),
        alias: crate::driver::endpoint_alias(sandbox, &net.name),
        mtu: net.mtu,
        peer_name: ep.ifname.clone(),
        peer_mac: mac,
        vlan: net.vlan,
        hairpin: net.port_hairpin(),
        trunk: net.vlan_trunk.clone(),
    })
}

#[cfg(test)]
#[path = "docker_tests.rs"]
mod tests;
