//! Delegated IPAM, as the spec's "IP Allocation" section describes: an `ipam.type` that
//! is not netd's own is a plugin found in CNI_PATH, executed with the same config and
//! environment. ADD runs it first and turns its addresses into static requests on netd's
//! network (netd leases them too, so its own bookkeeping stays whole); a failed ADD
//! hands them back with the IPAM plugin's DEL; DEL runs the IPAM DEL after netd's.
//!
//! netd's built-in IPAM answers `"netd"` and an empty type (it reads host-local's keys:
//! `subnet`/`ranges`, `gateway`, `rangeStart`/`rangeEnd`). Every other type, `host-local`
//! included, is executed: the drop-in config keeps host-local's own leases in its
//! `dataDir`, exactly as with the reference `bridge` plugin.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::conf::{IpamConf, NetConf, RangeConf, RouteConf};
use crate::env::Env;
use crate::error::{code, CniError, Result};

/// The IPAM plugin to execute for this config, if any.
pub fn plugin(conf: &NetConf) -> Option<&str> {
    conf.ipam
        .as_ref()
        .map(|i| i.ipam_type.as_str())
        .filter(|t| !is_builtin(t))
}

pub fn is_builtin(ipam_type: &str) -> bool {
    matches!(ipam_type, "" | "netd")
}

/// A plugin type is a file name in CNI_PATH, nothing more.
pub fn valid_type(t: &str) -> bool {
    !t.is_empty() && t != "." && t != ".." && !t.contains('/') && !t.contains('\0')
}

fn find(plugin: &str, path: &[String]) -> Result<PathBuf> {
    path.iter()
        .map(|d| Path::new(d).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!(
                    "ipam plugin {plugin:?} not found in CNI_PATH {:?}",
                    path.join(":")
                ),
            )
        })
}

/// Runs `plugin` with `command` (the rest of the environment is inherited, as the spec
/// wants) and `stdin`; its error JSON comes back as our error, with its code.
pub fn exec(plugin: &str, command: &str, env: &Env, stdin: &[u8]) -> Result<Option<Value>> {
    let bin = find(plugin, &env.path)?;
    let io = |e: std::io::Error| CniError::new(code::IO, format!("ipam plugin {plugin}: {e}"));
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(io)?;
    if let Some(mut i) = child.stdin.take() {
        // A plugin that exits without reading its config (nothing to say for STATUS, say)
        // closes the pipe: its exit status and output decide, not our write.
        match i.write_all(stdin) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(io(e)),
            _ => {}
        }
    }
    let out = child.wait_with_output().map_err(io)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let json: Option<Value> = if text.trim().is_empty() {
        None
    } else {
        Some(serde_json::from_str(&text).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("ipam plugin {plugin} printed no JSON ({e})"),
            )
        })?)
    };
    if !out.status.success() {
        let (c, msg) = json
            .as_ref()
            .map(|j| {
                (
                    j["code"].as_u64().unwrap_or(u64::from(code::IO)),
                    j["msg"].as_str().unwrap_or("").to_string(),
                )
            })
            .unwrap_or((u64::from(code::IO), format!("exited with {}", out.status)));
        return Err(CniError::new(
            u32::try_from(c).unwrap_or(code::IO),
            format!("ipam plugin {plugin} {command}: {msg}"),
        ));
    }
    Ok(json)
}

/// The addresses of an IPAM result (any version: `ips[].address`, with or without
/// `version`), at most one per family, with their gateways.
pub fn addresses(result: &Value) -> Result<Vec<(IpNetwork, Option<IpAddr>)>> {
    let bad = |m: String| CniError::new(code::DECODE, format!("ipam result: {m}"));
    let mut out: Vec<(IpNetwork, Option<IpAddr>)> = Vec::new();
    for ip in result["ips"].as_array().into_iter().flatten() {
        let a = ip["address"].as_str().unwrap_or("");
        let net: IpNetwork = a
            .parse()
            .map_err(|_| bad(format!("address {a:?} is not a CIDR")))?;
        let gw = match ip["gateway"].as_str() {
            Some(g) => Some(
                g.parse()
                    .map_err(|_| bad(format!("gateway {g:?} is not an IP")))?,
            ),
            None => None,
        };
        if out.iter().any(|(n, _)| n.is_ipv4() == net.is_ipv4()) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "ipam result has more than one address of a family (netd gives one per family)",
            ));
        }
        out.push((net, gw));
    }
    if out.is_empty() {
        return Err(bad("no addresses".into()));
    }
    Ok(out)
}

/// The routes of an IPAM result (`routes[]`: `dst`, optional `gw`), as config routes.
pub fn routes(result: &Value) -> Vec<RouteConf> {
    result["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(RouteConf {
                dst: r["dst"].as_str()?.to_string(),
                gw: r["gw"].as_str().map(str::to_string),
            })
        })
        .collect()
}

/// The config netd works from after the IPAM plugin answered: its addresses as the
/// requested IPs and their subnets as the network's (created with them on first use),
/// and its routes as the container's.
pub fn with_addresses(
    conf: &NetConf,
    addrs: &[(IpNetwork, Option<IpAddr>)],
    routes: Vec<RouteConf>,
) -> NetConf {
    let mut c = conf.clone();
    c.runtime_config.ips = addrs.iter().map(|(n, _)| n.ip().to_string()).collect();
    // The reference: the gateway routes only with `isDefaultGateway: true`, otherwise
    // only the routes the IPAM plugin answered (`NetConf::no_default_route`).
    c.is_default_gateway = Some(conf.is_default_gateway == Some(true));
    c.args = None;
    c.ipam = Some(IpamConf {
        ipam_type: "netd".into(),
        ranges: addrs
            .iter()
            .map(|(n, gw)| {
                let subnet = IpNetwork::new(n.network(), n.prefix()).map_or(n.to_string(), |s| s.to_string());
                vec![RangeConf {
                    subnet,
                    range_start: None,
                    range_end: None,
                    gateway: gw.map(|g| g.to_string()),
                }]
            })
            .collect(),
        routes,
        ..Default::default()
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_and_delegated_types() {
        for t in ["", "netd"] {
            assert!(is_builtin(t));
        }
        for t in ["host-local", "static", "dhcp", "whereabouts"] {
            assert!(!is_builtin(t) && valid_type(t));
        }
        for t in ["../bin/sh", "/usr/bin/x", "..", ""] {
            assert!(!valid_type(t), "{t}");
        }
    }

    #[test]
    fn addresses_of_results_in_every_version() {
        let v1 = json!({"cniVersion": "1.0.0", "ips": [
            {"address": "10.9.0.5/24", "gateway": "10.9.0.254"},
            {"address": "fd00:9::5/64"}]});
        let a = addresses(&v1).unwrap();
        assert_eq!(a[0].0.to_string(), "10.9.0.5/24");
        assert_eq!(a[0].1, Some("10.9.0.254".parse().unwrap()));
        assert_eq!(a[1].1, None);
        let v03 = json!({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.9.0.6/24"}]});
        assert_eq!(addresses(&v03).unwrap().len(), 1);
        assert_eq!(addresses(&json!({"ips": []})).unwrap_err().code, code::DECODE);
        assert_eq!(
            addresses(&json!({"ips": [{"address": "x"}]})).unwrap_err().code,
            code::DECODE
        );
        let two = json!({"ips": [{"address": "10.0.0.1/24"}, {"address": "10.0.0.2/24"}]});
        assert_eq!(addresses(&two).unwrap_err().code, code::UNSUPPORTED_FIELD);
    }

    #[test]
    fn netd_config_from_the_addresses() {
        let conf = NetConf {
            ipam: Some(IpamConf {
                ipam_type: "static".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let res = json!({"ips": [{"address": "10.9.0.5/24", "gateway": "10.9.0.254"}],
                         "routes": [{"dst": "10.50.0.0/16"}, {"dst": "10.60.0.0/16", "gw": "10.9.0.1"}, {"gw": "no dst"}]});
        let a = addresses(&res).unwrap();
        let c = with_addresses(&conf, &a, routes(&res));
        assert_eq!(plugin(&c), None, "netd's own IPAM takes it from here");
        assert_eq!(c.runtime_config.ips, ["10.9.0.5"]);
        let s = c.subnets().unwrap();
        assert_eq!(s[0].subnet.to_string(), "10.9.0.0/24");
        assert_eq!(s[0].gateway.map(|g| g.to_string()), Some("10.9.0.254".into()));
        let r = c.routes().unwrap();
        assert_eq!(r.len(), 2, "the route without a dst is not one: {r:?}");
        assert_eq!((r[0].dst.to_string(), r[0].gw), ("10.50.0.0/16".into(), None));
        assert_eq!(r[1].gw.map(|g| g.to_string()), Some("10.9.0.1".into()));
        // The drop-in config: the gateway routes only with isDefaultGateway true.
        assert!(c.no_default_route());
        let dgw = NetConf {
            is_default_gateway: Some(true),
            ..conf.clone()
        };
        assert!(!with_addresses(&dgw, &a, routes(&res)).no_default_route());
    }
}
