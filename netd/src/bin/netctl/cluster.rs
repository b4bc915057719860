//! netctl's cluster verbs: `network create -d overlay`, `network rm` of an overlay
//! network, and `node ls`. They talk to `/v1/cluster/…`, which only a daemon started
//! with `--cluster` serves.

use anyhow::bail;
use netd::api::client::{Client, ClientError};
use netd::api::types::ErrorReason;
use serde_json::{json, Value};

const NO_CLUSTER: &str =
    "overlay networks need a cluster: start netd with --cluster etcd://HOST:PORT --node NAME --advertise-addr IP";

fn no_route(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Api {
            reason: Some(ErrorReason::NoSuchRoute),
            ..
        }
    )
}

/// What `network create -d overlay` accepts of the bridge flags.
pub struct Create<'a> {
    pub name: &'a str,
    pub subnet: &'a [String],
    pub gateway: &'a [String],
    pub internal: bool,
    /// `-o block_prefix=N`: the size of the address blocks nodes claim.
    pub block_prefix: Option<u8>,
    /// `-o encrypted[=ipsec|wireguard]` (empty for the bare option).
    pub encrypted: Option<String>,
    /// Flags an overlay network does not take (named in the error).
    pub refused: Vec<&'static str>,
}

pub fn create_overlay(c: &Client, a: &Create<'_>) -> anyhow::Result<()> {
    if let Some(f) = a.refused.first() {
        bail!("{f} is not supported for overlay networks");
    }
    if a.subnet.len() > 1 || a.gateway.len() > 1 {
        bail!("an overlay network takes one --subnet and one --gateway");
    }
    let body = json!({
        "name": a.name,
        "subnet": a.subnet.first(),
        "gateway": a.gateway.first(),
        "internal": a.internal,
        "block_prefix": a.block_prefix,
        "encrypted": a.encrypted,
    });
    match c.post("/v1/cluster/networks", &body) {
        Ok(v) => {
            println!("{}", v["name"].as_str().unwrap_or(a.name));
            Ok(())
        }
        Err(e) if no_route(&e) => bail!(NO_CLUSTER),
        Err(e) => Err(e.into()),
    }
}

/// `network rm NAME`: the cluster's when it is an overlay network, else the engine's.
pub fn remove(c: &Client, name: &str) -> anyhow::Result<()> {
    match c.delete(&format!("/v1/cluster/networks/{name}")) {
        Ok(_) => Ok(()),
        Err(ClientError::Api { status: 404, .. }) => {
            c.delete(&format!("/v1/networks/{name}"))?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `service create` whose networks include an overlay network: the cluster's.
/// `Ok(None)` when no network of `req` is an overlay network (the engine's then).
pub fn create_service(
    c: &Client,
    req: &netd::model::ServiceRequest,
) -> anyhow::Result<Option<serde_json::Value>> {
    let mut overlay = false;
    for n in &req.networks {
        let v = match c.get(&format!("/v1/networks/{n}")) {
            Ok(v) => v,
            // An overlay network this node does not hold (no endpoint here) is the
            // store's; anything else unknown is the engine's one-line answer (404).
            Err(ClientError::Api { status: 404, .. }) => match c.get(&format!("/v1/cluster/networks/{n}")) {
                Ok(_) => serde_json::json!({"driver": "overlay"}),
                Err(_) => c.get(&format!("/v1/networks/{n}"))?,
            },
            Err(e) => return Err(e.into()),
        };
        overlay |= v["driver"] == "overlay";
    }
    if !overlay {
        return Ok(None);
    }
    match c.post("/v1/cluster/services", &serde_json::to_value(req)?) {
        Ok(v) => Ok(Some(v)),
        Err(e) if no_route(&e) => bail!(NO_CLUSTER),
        Err(e) => Err(e.into()),
    }
}

/// `service update`: the cluster's when it is a cluster service (every node follows),
/// else the engine's.
pub fn update_service(
    c: &Client,
    namespace: &str,
    name: &str,
    up: &netd::engine::ServiceUpdate,
) -> anyhow::Result<serde_json::Value> {
    let body = serde_json::to_value(up)?;
    match c.patch(&format!("/v1/cluster/services/{namespace}/{name}"), &body) {
        Ok(v) => Ok(v["request"].clone()),
        Err(ClientError::Api { status: 404, .. }) => {
            Ok(c.post(&format!("/v1/services/{namespace}/{name}"), &body)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// `service rm`: the cluster's when it is a cluster service, else the engine's.
pub fn remove_service(c: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    match c.delete(&format!("/v1/cluster/services/{namespace}/{name}")) {
        Ok(_) => Ok(()),
        Err(ClientError::Api { status: 404, .. }) => {
            c.delete(&format!("/v1/services/{namespace}/{name}"))?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// An overlay network of the store that this node does not hold (no local endpoint), in
/// the shape of the engine's network view: no bridge, no endpoints, `local: false`.
fn stored_view(rec: &Value) -> Value {
    json!({
        "name": rec["name"],
        "driver": "overlay",
        "bridge": "-",
        "subnets": [{"subnet": rec["subnet"], "gateway": rec["gateway"]}],
        "internal": rec["internal"],
        "vni": rec["vni"],
        "created_by": rec["created_by"],
        "endpoints": [],
        "local": false,
        "encryption": rec["encryption"],
    })
}

/// `network ls`: the engine's networks, then the store's overlay networks this node does
/// not hold (a daemon without `--cluster` has none).
pub fn with_stored(c: &Client, local: Value) -> anyhow::Result<Value> {
    let stored = match c.get("/v1/cluster/networks") {
        Ok(v) => v,
        Err(e) if no_route(&e) => return Ok(local),
        Err(e) => return Err(e.into()),
    };
    let mut all = local.as_array().cloned().unwrap_or_default();
    for rec in stored.as_array().into_iter().flatten() {
        if !all.iter().any(|n| n["name"] == rec["name"]) {
            all.push(stored_view(rec));
        }
    }
    Ok(Value::Array(all))
}

/// `network inspect`: the engine's view, else the store's record of an overlay network
/// this node does not hold.
pub fn inspect_networks(c: &Client, names: &[String]) -> anyhow::Result<()> {
    if names.is_empty() {
        bail!("inspect needs at least one name");
    }
    let mut out = Vec::new();
    for n in names {
        match c.get(&format!("/v1/networks/{n}")) {
            Ok(mut v) => {
                // A held overlay network: the cluster's word on its encryption beside it.
                if v["driver"] == "overlay" {
                    if let Ok(cv) = c.get(&format!("/v1/cluster/networks/{n}")) {
                        if !cv["encryption"].is_null() {
                            v["encryption"] = cv["encryption"].clone();
                        }
                    }
                }
                out.push(v)
            }
            Err(ClientError::Api { status: 404, .. }) => {
                match c.get(&format!("/v1/cluster/networks/{n}")) {
                    Ok(v) => out.push(stored_view(&v)),
                    // No cluster, or not an overlay network either: the engine's answer.
                    Err(_) => out.push(c.get(&format!("/v1/networks/{n}"))?),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
    Ok(())
}

/// The answer of a `/v1/cluster/…` call, or the one-line reason a daemon without
/// `--cluster` has none.
fn in_cluster(r: Result<Value, ClientError>) -> anyhow::Result<Value> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if no_route(&e) => {
            bail!("this netd is not in a cluster (start it with --cluster etcd://HOST:PORT)")
        }
        Err(e) => Err(e.into()),
    }
}

/// `cluster rotate-keys`.
pub fn rotate_keys(c: &Client, as_json: bool) -> anyhow::Result<()> {
    let v = in_cluster(c.post("/v1/cluster/rotate-keys", &json!({})))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if !v["key_epoch"].is_null() {
            println!(
                "IPsec: key epoch {} sends; keys accepted: {}",
                v["key_epoch"], v["keys"]
            );
        }
        let wg = &v["wireguard"];
        if !wg.is_null() {
            println!("WireGuard: key epoch {}", wg["key_epoch"]);
            for n in wg["nodes"].as_array().into_iter().flatten() {
                println!(
                    "  {:<20} {}",
                    n["node"].as_str().unwrap_or("?"),
                    n["public_key"].as_str().unwrap_or("?")
                );
            }
        }
    }
    Ok(())
}

pub fn node_ls(c: &Client, as_json: bool) -> anyhow::Result<()> {
    let v = in_cluster(c.get("/v1/cluster/nodes"))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<20} {:<16} {:<8} ENDPOINTS", "NAME", "ADDRESS", "STATE");
    for n in v.as_array().into_iter().flatten() {
        let s = |k: &str| {
            n[k].as_str()
                .map(str::to_string)
                .unwrap_or_else(|| n[k].to_string())
        };
        println!(
            "{:<20} {:<16} {:<8} {}",
            s("name"),
            s("addr"),
            s("state"),
            n["endpoints"]
        );
    }
    Ok(())
}
