//! IpamDriver: pools and addresses from netd's IPAM, so Docker's and netctl's networks
//! never overlap.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::json;

use super::types::{AddressRequest, PoolRef, RequestPoolRequest, GATEWAY_REQUEST, OPT_REQUEST_TYPE};
use super::{parse, PResult, PluginError};
use crate::engine::Engine;
use crate::model::parse_cidr;

pub const LOCAL_SPACE: &str = "netd";
pub const GLOBAL_SPACE: &str = "netd-global";

fn cidr(what: &str, s: &str) -> Result<Option<IpNetwork>, PluginError> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    parse_cidr(what, s)
        .map(Some)
        .map_err(|e| PluginError::bad(format!("netd: {e}")))
}

fn ip(what: &str, s: &str) -> Result<Option<IpAddr>, PluginError> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    // ReleaseAddress sends a bare address; tolerate "a/len" too.
    let a = t.split('/').next().unwrap_or(t);
    a.parse()
        .map(Some)
        .map_err(|_| PluginError::bad(format!("netd: invalid {what} {t:?}: expected an IP address")))
}

pub fn request_pool(e: &mut Engine, body: &[u8]) -> PResult {
    let r: RequestPoolRequest = parse("RequestPool", body)?;
    if !r.address_space.is_empty() && r.address_space != LOCAL_SPACE && r.address_space != GLOBAL_SPACE {
        return Err(PluginError::bad(format!(
            "netd: unknown address space {:?} (netd has {LOCAL_SPACE:?})",
            r.address_space
        )));
    }
    let pool = cidr("subnet", &r.pool)?;
    let sub = cidr("ip-range", &r.sub_pool)?;
    let p = e.docker_request_pool(pool, sub, r.v6)?;
    Ok(json!({"PoolID": p.id, "Pool": p.pool.to_string(), "Data": {}}))
}

pub fn release_pool(e: &mut Engine, body: &[u8]) -> PResult {
    let r: PoolRef = parse("ReleasePool", body)?;
    if r.pool_id.is_empty() {
        return Err(PluginError::bad("netd: ReleasePool: PoolID is missing"));
    }
    e.docker_release_pool(&r.pool_id)?;
    Ok(json!({}))
}

pub fn request_address(e: &mut Engine, body: &[u8]) -> PResult {
    let r: AddressRequest = parse("RequestAddress", body)?;
    if r.pool_id.is_empty() {
        return Err(PluginError::bad("netd: RequestAddress: PoolID is missing"));
    }
    let gateway = r
        .options
        .as_ref()
        .and_then(|o| o.get(OPT_REQUEST_TYPE))
        .and_then(|v| v.as_str())
        == Some(GATEWAY_REQUEST);
    let want = ip("address", &r.address)?;
    let a = e.docker_request_address(&r.pool_id, want, gateway)?;
    Ok(json!({"Address": a.to_string(), "Data": {}}))
}

pub fn release_address(e: &mut Engine, body: &[u8]) -> PResult {
    let r: AddressRequest = parse("ReleaseAddress", body)?;
    if r.pool_id.is_empty() {
        return Err(PluginError::bad("netd: ReleaseAddress: PoolID is missing"));
    }
    let Some(a) = ip("address", &r.address)? else {
        return Err(PluginError::bad("netd: ReleaseAddress: Address is missing"));
    };
    e.docker_release_address(&r.pool_id, a)?;
    Ok(json!({}))
}
