//! The CNI commands over a `Netd` backend. A container is one netd sandbox in the
//! runtime's namespace (`SandboxRequest.netns`), named deterministically from the
//! container ID; each CNI attachment (network, interface) is one endpoint of it. DEL,
//! CHECK and GC find them again from the ID alone, with no state of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ipnetwork::IpNetwork;
use netd::kernel::netlink::InterfaceConfig;
use netd::model::{fnv1a, EndpointRequest, Network, NetworkRequest, Sandbox, SandboxRequest, SubnetRequest};
use serde_json::Value;

use crate::backend::{Attach, Created, Netd};
use crate::conf::NetConf;
use crate::env::Env;
use crate::error::{code, CniError, Result};
use crate::result;

// netd's (Docker's) bridge options the reference bridge keys map to.
const OPT_MASQ: &str = "com.docker.network.bridge.enable_ip_masquerade";
const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";

pub const LABEL_CONTAINER: &str = "cni.netd/container";
pub const LABEL_POD: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NS: &str = "io.kubernetes.pod.namespace";

/// netd's network for a CNI network name (netd reserves a few names Docker uses).
pub fn netd_network(name: &str) -> String {
    if matches!(name, "host" | "none" | "bridge" | "default") {
        format!("cni-{name}")
    } else {
        name.to_string()
    }
}

/// The netd sandbox of a container: stable across calls and processes. Each CNI
/// attachment of the container (one per network) is one endpoint of it.
pub fn sandbox_name(container_id: &str) -> String {
    format!("cni-{:016x}", fnv1a(container_id.as_bytes()))
}

/// A macvlan or ipvlan config without `master` hangs off the interface of the IPv4
/// default route, as the reference plugins do: the node's, looked up in the namespace
/// the plugin runs in, or with `linkInContainer` the container's (`netns`).
pub fn with_default_master<'a>(conf: &'a NetConf, netns: &str) -> Result<std::borrow::Cow<'a, NetConf>> {
    if !conf.has_master() || conf.master.as_deref().is_some_and(|m| !m.is_empty()) {
        return Ok(std::borrow::Cow::Borrowed(conf));
    }
    let (nl, whose) = if conf.master_in_container() {
        (
            netd::kernel::netlink::Netlink::open_in(Path::new(netns)),
            "the container",
        )
    } else {
        (netd::kernel::netlink::Netlink::open(), "this node")
    };
    let link = nl
        .and_then(|mut nl| nl.default_route_link())
        .map_err(|e| CniError::new(code::IO, format!("looking up the default route's interface: {e}")))?;
    let Some(master) = link else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("driver {} without \"master\": {whose} has no IPv4 default route to take the interface from; set \"master\"", conf.driver_name()),
        ));
    };
    let mut c = conf.clone();
    c.master = Some(master);
    Ok(std::borrow::Cow::Owned(c))
}

pub fn network_request(conf: &NetConf) -> Result<NetworkRequest> {
    let subnets = conf.subnets()?;
    let mut options = BTreeMap::new();
    if conf.is_overlay() {
        // The cluster's network: nothing here shapes it (`NetConf::check_overlay`).
    } else if conf.has_master() {
        if let Some(m) = &conf.master {
            options.insert("parent".to_string(), m.clone());
        }
        // The reference plugins' defaults: bridge for macvlan, l2 for ipvlan.
        let (key, default) = if conf.is_ipvlan() {
            (netd::model::OPT_IPVLAN_MODE, "l2")
        } else {
            ("macvlan_mode", "bridge")
        };
        options.insert(
            key.to_string(),
            conf.mode.clone().unwrap_or_else(|| default.into()),
        );
        if conf.master_in_container() {
            options.insert(netd::model::OPT_PARENT_IN_SANDBOX.to_string(), "true".into());
        }
    } else {
        options.insert(OPT_MASQ.to_string(), conf.ip_masq.to_string());
        if let Some(b) = &conf.bridge {
            options.insert(OPT_BRIDGE_NAME.to_string(), b.clone());
        }
        if let Some(v) = conf.vlan_id() {
            options.insert(netd::model::OPT_VLAN.to_string(), v.to_string());
        }
        if let Some(t) = conf.vlan_trunk()? {
            options.insert(
                netd::model::OPT_VLAN_TRUNK.to_string(),
                netd::model::format_vid_ranges(&t),
            );
        }
        // The reference's `promiscMode`: the bridge promiscuous, its ports without hairpin.
        if conf.promisc_mode {
            options.insert(netd::model::OPT_PROMISC.to_string(), "true".into());
        } else if conf.hairpin_mode == Some(false) {
            // Asked for in so many words: without the key netd's ports stay in hairpin
            // mode, so a pod reaches its own published port (`OPT_HAIRPIN`).
            options.insert(netd::model::OPT_HAIRPIN.to_string(), "false".into());
        }
        // The reference's `isGateway: false`: the bridge holds no address; the gateway
        // (the containers' default route, as IPAM says) is a router on the bridge's LAN.
        // `isDefaultGateway: true` implies `isGateway`, as there.
        if conf.is_gateway == Some(false) && conf.is_default_gateway != Some(true) {
            for k in [netd::model::OPT_INHIBIT_IPV4, netd::model::OPT_INHIBIT_IPV6] {
                options.insert(k.to_string(), "true".into());
            }
        }
    }
    let mut labels = BTreeMap::new();
    labels.insert("cni.netd/owner".to_string(), "netd-cni".to_string());
    Ok(NetworkRequest {
        name: netd_network(&conf.name),
        driver: Some(conf.driver_name().into()),
        ipv6: conf.ipv6 || subnets.iter().any(|s| s.subnet.is_ipv6()),
        subnets: subnets
            .iter()
            .map(|s| SubnetRequest {
                subnet: Some(s.subnet.to_string()),
                gateway: s.gateway.map(|g| g.to_string()),
                ip_range: s.ip_range.map(|r| r.to_string()),
            })
            .collect(),
        internal: false,
        mtu: conf.mtu,
        options,
        labels,
    })
}

/// The network as netd has it, created on first use. A network that exists with other
/// subnets or another bridge is a config error, not something to paper over.
pub(crate) fn ensure_network(b: &mut dyn Netd, req: &NetworkRequest) -> Result<Network> {
    let net = match b.network(&req.name)? {
        Some(n) => n,
        None => match b.create_network(req)? {
            Some(n) => n,
            None => b.network(&req.name)?.ok_or_else(|| {
                CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!("network {} appeared and vanished", req.name),
                )
            })?,
        },
    };
    match req.mismatch(&net) {
        Ok(None) => Ok(net),
        Ok(Some(why)) => Err(crate::error::mismatch(&why)),
        Err(why) => Err(crate::error::from_engine(netd::engine::EngineError::Invalid(why))),
    }
}

fn result_of(conf: &NetConf, net: &Network, sb: &Sandbox) -> Result<Value> {
    let ep = sb.endpoint(&net.name).ok_or_else(|| {
        CniError::new(
            code::NETD_FAILED,
            format!("sandbox {} has no endpoint on {}", sb.name, net.name),
        )
    })?;
    let r = result::build(&conf.cni_version, net, sb, ep, conf.dns.as_ref());
    Ok(result::chain(conf.prev_result.as_ref(), r))
}

pub fn add(b: &mut dyn Netd, conf: &NetConf, env: &Env) -> Result<Value> {
    let netns = env.netns.clone().unwrap_or_default();
    if !Path::new(&netns).exists() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("CNI_NETNS {netns} does not exist"),
        ));
    }
    let conf = &*with_default_master(conf, &netns)?;
    let net_name = netd_network(&conf.name);
    let name = sandbox_name(&env.container_id);
    let ips = conf.requested_ips(&env.args.ips)?;
    let ep_req = EndpointRequest {
        network: net_name.clone(),
        ip: ips.iter().find(|i| i.is_ipv4()).map(|i| i.to_string()),
        ip6: ips.iter().find(|i| i.is_ipv6()).map(|i| i.to_string()),
        aliases: Vec::new(),
        mac: conf.requested_mac(env.args.mac.as_deref()),
        ifname: Some(env.ifname.clone()),
        routes: conf.routes()?,
        no_default_route: conf.no_default_route(),
    };
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_CONTAINER.to_string(), env.container_id.clone());
    if let Some(p) = &env.args.pod_name {
        labels.insert(LABEL_POD.to_string(), p.clone());
    }
    if let Some(p) = &env.args.pod_namespace {
        labels.insert(LABEL_POD_NS.to_string(), p.clone());
    }
    let req = SandboxRequest {
        name: name.clone(),
        networks: vec![ep_req.clone()],
        ports: conf.port_specs()?,
        labels,
        netns: Some(netns.clone()),
        ..Default::default()
    };
    // The common case (container new) is one request in delegating mode: the network is
    // created if missing and checked, then the sandbox made.
    let net_req = network_request(conf)?;
    if let Attach::Done(net, sb) = b.attach(&net_req, &req)? {
        return result_of(conf, &net, &sb);
    }
    // The container already has a sandbox: another network's attachment, a repeated
    // ADD, or a leftover of an earlier namespace of the same container ID.
    let net = ensure_network(b, &net_req)?;
    if let Some(sb) = b.sandbox(&name)? {
        if sb.netns == netns {
            return match sb.endpoint(&net.name) {
                // A repeated ADD answers what the attachment already has.
                Some(ep) if ep.ifname == env.ifname => result_of(conf, &net, &sb),
                Some(ep) => Err(CniError::new(
                    code::NETD_REFUSED,
                    format!(
                        "container {} is already on {} as {}",
                        env.container_id, net.name, ep.ifname
                    ),
                )),
                None => {
                    let ep = b.connect(&name, &ep_req)?;
                    let r = result::build(&conf.cni_version, &net, &sb, &ep, conf.dns.as_ref());
                    Ok(result::chain(conf.prev_result.as_ref(), r))
                }
            };
        }
        b.remove_sandbox(&name)?;
    }
    match b.create_sandbox(&req)? {
        Created::Sandbox(sb) => result_of(conf, &net, &sb),
        _ => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("container {} changed during ADD", env.container_id),
        )),
    }
}

/// Removes one attachment; the sandbox goes with its last endpoint. Idempotent: a
/// missing attachment, network or namespace is success.
fn detach(b: &mut dyn Netd, sb: &Sandbox, network: &str) -> Result<()> {
    if sb.endpoints.iter().all(|e| e.network == network) {
        return b.remove_sandbox(&sb.name);
    }
    b.disconnect(&sb.name, network)?;
    // Another DEL of the same container may have raced this one.
    match b.sandbox(&sb.name)? {
        Some(now) if now.endpoints.is_empty() => b.remove_sandbox(&sb.name),
        _ => Ok(()),
    }
}

pub fn del(b: &mut dyn Netd, conf: &NetConf, env: &Env) -> Result<()> {
    let net = netd_network(&conf.name);
    let Some(sb) = b.sandbox(&sandbox_name(&env.container_id))? else {
        return Ok(());
    };
    match sb.endpoint(&net) {
        Some(ep) if ep.ifname == env.ifname => detach(b, &sb, &net),
        _ => Ok(()),
    }
}

/// `inspect(ifname, netns)`: what the interface really carries (the kernel, not netd's
/// record), `None` when it is missing.
pub fn check(
    b: &mut dyn Netd,
    conf: &NetConf,
    env: &Env,
    inspect: &dyn Fn(&str, &str) -> Option<InterfaceConfig>,
) -> Result<()> {
    if !crate::version::at_least(&conf.cni_version, "0.4.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {} does not allow CHECK (0.4.0 or later)",
                conf.cni_version
            ),
        ));
    }
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "CHECK needs prevResult"))?;
    let net_name = netd_network(&conf.name);
    let net = b.network(&net_name)?.ok_or_else(|| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("network {net_name} does not exist in netd"),
        )
    })?;
    let name = sandbox_name(&env.container_id);
    let sb = b
        .sandbox(&name)?
        .filter(|s| s.endpoint(&net.name).is_some_and(|e| e.ifname == env.ifname));
    let sb = sb.ok_or_else(|| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "no attachment of container {} on {} ({})",
                env.container_id, net.name, env.ifname
            ),
        )
    })?;
    let netns = env.netns.clone().unwrap_or_default();
    if sb.netns != netns {
        return Err(CniError::new(
            code::NETD_REFUSED,
            format!("attachment is in {}, not {netns}", sb.netns),
        ));
    }
    let ep = sb
        .endpoint(&net.name)
        .ok_or_else(|| CniError::new(code::UNKNOWN_CONTAINER, "no endpoint"))?;
    let now = result::build(&conf.cni_version, &net, &sb, ep, conf.dns.as_ref());
    result::compare(prev, &now).map_err(|m| CniError::new(code::NETD_REFUSED, m))?;
    let Some(kernel) = inspect(&env.ifname, &netns) else {
        return Err(CniError::new(
            code::NETD_REFUSED,
            format!("interface {} is missing in {netns}", env.ifname),
        ));
    };
    // As the reference plugins: a master in the container must still be there.
    if let Some(master) = net.parent.as_deref().filter(|_| net.parent_in_sandbox) {
        if inspect(master, &netns).is_none() {
            return Err(CniError::new(
                code::NETD_REFUSED,
                format!("master {master} (linkInContainer) is missing in {netns}"),
            ));
        }
    }
    let refused = |what: String| {
        CniError::new(
            code::NETD_REFUSED,
            format!("interface {} in {netns} {what}", env.ifname),
        )
    };
    for a in ep
        .ipv4
        .map(IpNetwork::V4)
        .into_iter()
        .chain(ep.ipv6.map(IpNetwork::V6))
    {
        if !kernel.addrs.contains(&a) {
            return Err(refused(format!("lacks its address {a}")));
        }
    }
    for r in &ep.routes {
        if !kernel.routes.contains(&(r.dst, r.gw)) {
            let via = r.gw.map_or(String::new(), |g| format!(" via {g}"));
            return Err(refused(format!("lacks its route to {}{via}", r.dst)));
        }
    }
    Ok(())
}

/// Removes every attachment of this network that `cni.dev/valid-attachments` does not
/// list (and so releases its addresses); returns the removed `(containerID, ifname)`s.
pub fn gc(b: &mut dyn Netd, conf: &NetConf) -> Result<Vec<(String, String)>> {
    if !crate::version::at_least(&conf.cni_version, "1.1.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {} does not allow GC (1.1.0 or later)",
                conf.cni_version
            ),
        ));
    }
    let net = netd_network(&conf.name);
    let valid: BTreeSet<(String, String)> = conf
        .valid_attachments
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let mut removed = Vec::new();
    for sb in b.sandboxes()? {
        let Some(cid) = sb.labels.get(LABEL_CONTAINER).cloned() else {
            continue;
        };
        if let Some(ep) = sb.endpoint(&net) {
            let key = (cid, ep.ifname.clone());
            if !valid.contains(&key) {
                detach(b, &sb, &net)?;
                removed.push(key);
            }
        }
    }
    Ok(removed)
}

/// STATUS: 51 when the network's pool has no address left (reachability, 50, is the
/// backend's business).
pub fn status(b: &mut dyn Netd, conf: &NetConf) -> Result<()> {
    if !crate::version::at_least(&conf.cni_version, "1.1.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {} does not allow STATUS (1.1.0 or later)",
                conf.cni_version
            ),
        ));
    }
    let net = netd_network(&conf.name);
    if b.free_addresses(&net)? == Some(0) {
        return Err(CniError::new(
            code::NO_IPS,
            format!("network {net} has no free addresses"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
