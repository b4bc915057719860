//! The ADD result in the version the config asked for, built from what netd reports for
//! the attachment; and the chaining rule for a `prevResult`.

use serde_json::{json, Value};

use crate::version;
use netd::model::{Endpoint, Network, Sandbox};

/// The result of an attachment: bridge, host-side veth, container interface, and on a
/// VLAN network the gateway link `<bridge>.<N>` last (as the reference `bridge` plugin
/// lists them); the endpoint's addresses on the container interface; the default routes
/// netd installs and the endpoint's extra ones (`ipam.routes`).
/// A macvlan or ipvlan attachment (no bridge: `bridge` is empty) has the container
/// interface only, as the reference `macvlan` and `ipvlan` plugins report it.
pub fn build(cni_version: &str, net: &Network, sb: &Sandbox, ep: &Endpoint, dns: Option<&Value>) -> Value {
    let with_family = !version::at_least(cni_version, "1.0.0");
    let mut container = json!({ "name": ep.ifname, "mac": ep.mac, "sandbox": sb.netns });
    if ep.mac.is_empty() {
        // An ipvlan child: its MAC is its master's, which netd does not record.
        container.as_object_mut().map(|c| c.remove("mac"));
    }
    // ipvlan l3: the default routes go through the interface, with no gateway.
    let device_routes = net.routes_without_gateway();
    let (interfaces, index) = if net.bridge.is_empty() {
        (json!([container]), 0)
    } else {
        let mut l = vec![
            json!({ "name": net.bridge }),
            json!({ "name": ep.host_ifname }),
            container,
        ];
        if net.vlan.is_some() {
            l.push(json!({ "name": net.l3_link() }));
        }
        (Value::Array(l), 2)
    };
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    // The routes the kernel got (`Endpoint::carries_gateway_routes`): only the sandbox's
    // first endpoint carries the default routes (a container's second network is reached
    // through its subnet route and its extra routes), none on an internal network.
    let first = sb.endpoints.first().is_none_or(|e| e.network == ep.network);
    let default_route = ep.carries_gateway_routes(first, net.internal);
    if let Some(a) = ep.ipv4 {
        let mut ip = json!({ "address": a.to_string(), "interface": index });
        if let Some(gw) = ep.gateway4 {
            ip["gateway"] = gw.to_string().into();
            if default_route && device_routes {
                routes.push(json!({ "dst": "0.0.0.0/0" }));
            } else if default_route {
                routes.push(json!({ "dst": "0.0.0.0/0", "gw": gw.to_string() }));
            }
        }
        if with_family {
            ip["version"] = "4".into();
        }
        ips.push(ip);
    }
    if let Some(a) = ep.ipv6 {
        let mut ip = json!({ "address": a.to_string(), "interface": index });
        if let Some(gw) = ep.gateway6 {
            ip["gateway"] = gw.to_string().into();
            if default_route && device_routes {
                routes.push(json!({ "dst": "::/0" }));
            } else if default_route {
                routes.push(json!({ "dst": "::/0", "gw": gw.to_string() }));
            }
        }
        if with_family {
            ip["version"] = "6".into();
        }
        ips.push(ip);
    }
    for r in &ep.routes {
        let mut route = json!({ "dst": r.dst.to_string() });
        if let Some(gw) = r.gw {
            route["gw"] = gw.to_string().into();
        }
        routes.push(route);
    }
    json!({
        "cniVersion": cni_version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": dns.cloned().unwrap_or_else(|| json!({})),
    })
}

/// A plugin that is not first in a chain passes on what came before and adds its own:
/// interfaces are appended and our `ips[].interface` indexes shifted to match.
pub fn chain(prev: Option<&Value>, ours: Value) -> Value {
    let Some(prev) = prev.filter(|p| p.is_object()) else {
        return ours;
    };
    let mut out = prev.clone();
    out["cniVersion"] = ours["cniVersion"].clone();
    let base = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut ifaces = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    ifaces.extend(ours["interfaces"].as_array().cloned().unwrap_or_default());
    out["interfaces"] = Value::Array(ifaces);
    let mut ips = prev
        .get("ips")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for mut ip in ours["ips"].as_array().cloned().unwrap_or_default() {
        if let Some(i) = ip.get("interface").and_then(Value::as_u64) {
            ip["interface"] = (i + base as u64).into();
        }
        ips.push(ip);
    }
    out["ips"] = Value::Array(ips);
    let mut routes = prev
        .get("routes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    routes.extend(ours["routes"].as_array().cloned().unwrap_or_default());
    out["routes"] = Value::Array(routes);
    if out.get("dns").is_none() {
        out["dns"] = ours["dns"].clone();
    }
    out
}

/// CHECK: what the runtime cached (prevResult) must still be what netd has. Returns the
/// first difference.
pub fn compare(prev: &Value, now: &Value) -> Result<(), String> {
    let addrs = |v: &Value| -> Vec<String> {
        let mut a: Vec<String> = v
            .get("ips")
            .and_then(Value::as_array)
            .map(|ips| {
                ips.iter()
                    .filter_map(|i| i.get("address")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        a.sort();
        a
    };
    let (p, n) = (addrs(prev), addrs(now));
    if !n.iter().all(|a| p.contains(a)) {
        return Err(format!(
            "prevResult addresses {p:?} differ from the attachment's {n:?}"
        ));
    }
    // The container interface: the one in a sandbox.
    let ours = now["interfaces"]
        .as_array()
        .and_then(|l| l.iter().find(|i| i.get("sandbox").is_some()))
        .cloned()
        .unwrap_or_default();
    let found = prev.get("interfaces").and_then(Value::as_array).is_some_and(|l| {
        l.iter()
            .any(|i| i.get("name") == ours.get("name") && i.get("sandbox") == ours.get("sandbox"))
    });
    if !found {
        return Err(format!(
            "prevResult has no interface {} in {}",
            ours["name"], ours["sandbox"]
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(vlan: Option<u16>, bridge: &str) -> (Network, Sandbox, Endpoint) {
        let net: Network = serde_json::from_value(json!({
            "name": "n", "id": "i", "driver": "bridge", "bridge": bridge, "vlan": vlan,
            "subnets": [], "ipv6": false, "internal": false, "icc": true, "masquerade": true,
            "mtu": 0, "created": 0,
        }))
        .expect("network");
        let ep: Endpoint = serde_json::from_value(json!({
            "network": "n", "ifname": "eth0", "host_ifname": "ndcni-1", "mac": "02:00:00:00:00:01",
            "ipv4": "10.1.0.2/24", "gateway4": "10.1.0.1",
        }))
        .expect("endpoint");
        let sb: Sandbox = serde_json::from_value(json!({
            "name": "s", "id": "s", "mode": "bridge", "netns": "/run/netns/x", "endpoints": [ep.clone()],
            "ports": [], "publish_all": false, "expose": [], "created": 0,
        }))
        .expect("sandbox");
        (net, sb, ep)
    }

    #[test]
    fn a_vlan_network_lists_its_gateway_link_last_and_check_still_finds_the_container() {
        let (net, sb, ep) = attachment(Some(100), "br0");
        let r = build("1.1.0", &net, &sb, &ep, None);
        let names: Vec<&str> = r["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["br0", "ndcni-1", "eth0", "br0.100"]);
        assert_eq!(r["ips"][0]["interface"], 2);
        assert_eq!(compare(&r, &r), Ok(()));
        // A result of an earlier version, without the gateway link, still checks.
        let mut old = r.clone();
        old["interfaces"].as_array_mut().unwrap().pop();
        assert_eq!(compare(&old, &r), Ok(()));

        let (plain, sb, ep) = attachment(None, "br0");
        let r = build("1.1.0", &plain, &sb, &ep, None);
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    }
}
