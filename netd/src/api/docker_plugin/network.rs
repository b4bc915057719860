//! NetworkDriver: networks, endpoints, join/leave and published ports.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{json, Map, Value};

use super::types::{
    CreateEndpointRequest, CreateNetworkRequest, EndpointRef, IpamData, NetworkOnly, PortBinding,
    TransportPort, OPT_ENABLE_IPV6, OPT_EXPOSED, OPT_GENERIC, OPT_INTERNAL, OPT_PORTMAP,
};
use super::{parse, PResult, PluginError};
use crate::driver::bridge::{format_mac, parse_mac};
use crate::engine::{DockerEndpoint, DockerNetwork, DockerPort, Engine};
use crate::model::{PortMapping, Proto};

fn bad(msg: String) -> PluginError {
    PluginError::bad(format!("netd: {msg}"))
}

fn need(method: &str, what: &str, v: &str) -> Result<(), PluginError> {
    if v.is_empty() {
        return Err(bad(format!("{method}: {what} is missing")));
    }
    Ok(())
}

fn net(what: &str, s: &str) -> Result<IpNetwork, PluginError> {
    s.trim()
        .parse()
        .map_err(|_| bad(format!("invalid {what} {s:?}: expected ADDRESS/PREFIX")))
}

fn ipam_data(family: &str, d: &[IpamData]) -> Result<Vec<(IpNetwork, IpNetwork)>, PluginError> {
    d.iter()
        .map(|x| {
            let pool = net(&format!("{family} pool"), &x.pool)?;
            let gw = net(&format!("{family} gateway"), &x.gateway)?;
            if pool.is_ipv4() != (family == "IPv4") {
                return Err(bad(format!("{family} pool {pool} is of the wrong family")));
            }
            Ok((pool, gw))
        })
        .collect()
}

fn as_bool(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "true" | "1"),
        _ => false,
    }
}

/// `-o k=v` options arrive as strings; anything else is kept in its JSON form.
fn generic(opts: &Map<String, Value>) -> Result<BTreeMap<String, String>, PluginError> {
    match opts.get(OPT_GENERIC) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => Ok(m
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect()),
        Some(_) => Err(bad(format!("{OPT_GENERIC} must be an object"))),
    }
}

pub fn create_network(e: &mut Engine, body: &[u8]) -> PResult {
    let r: CreateNetworkRequest = parse("CreateNetwork", body)?;
    need("CreateNetwork", "NetworkID", &r.network_id)?;
    let opts = r.options.unwrap_or_default();
    let generic = generic(&opts)?;
    let internal = as_bool(opts.get(OPT_INTERNAL))
        || as_bool(
            generic
                .get(OPT_INTERNAL)
                .map(|s| Value::String(s.clone()))
                .as_ref(),
        );
    let v4 = ipam_data("IPv4", r.ipv4_data.as_deref().unwrap_or_default())?;
    let v6 = ipam_data("IPv6", r.ipv6_data.as_deref().unwrap_or_default())?;
    if as_bool(opts.get(OPT_ENABLE_IPV6)) && v6.is_empty() {
        return Err(bad(
            "--ipv6 needs an IPv6 pool: add --subnet with an IPv6 prefix".into()
        ));
    }
    let mut generic = generic;
    generic.remove(OPT_INTERNAL);
    e.docker_create_network(&DockerNetwork {
        id: r.network_id,
        v4,
        v6,
        internal,
        options: generic,
    })?;
    Ok(json!({}))
}

pub fn delete_network(e: &mut Engine, body: &[u8]) -> PResult {
    let r: NetworkOnly = parse("DeleteNetwork", body)?;
    need("DeleteNetwork", "NetworkID", &r.network_id)?;
    e.docker_delete_network(&r.network_id)?;
    Ok(json!({}))
}

pub fn create_endpoint(e: &mut Engine, body: &[u8]) -> PResult {
    let r: CreateEndpointRequest = parse("CreateEndpoint", body)?;
    need("CreateEndpoint", "NetworkID", &r.network_id)?;
    need("CreateEndpoint", "EndpointID", &r.endpoint_id)?;
    let iface = r.interface.unwrap_or_default();
    let addr4 = match iface.address.trim() {
        "" => None,
        s => match net("address", s)? {
            IpNetwork::V4(v) => Some(v),
            IpNetwork::V6(_) => return Err(bad(format!("address {s} is not IPv4"))),
        },
    };
    let addr6 = match iface.address_ipv6.trim() {
        "" => None,
        s => match net("IPv6 address", s)? {
            IpNetwork::V6(v) => Some(v),
            IpNetwork::V4(_) => return Err(bad(format!("IPv6 address {s} is not IPv6"))),
        },
    };
    let mac = match iface.mac_address.trim() {
        "" => None,
        s => Some(parse_mac(&s.to_ascii_lowercase()).ok_or_else(|| {
            bad(format!(
                "invalid MAC address {s:?}: expected a unicast xx:xx:xx:xx:xx:xx"
            ))
        })?),
    };
    let chosen = e.docker_create_endpoint(&DockerEndpoint {
        network_id: r.network_id,
        endpoint_id: r.endpoint_id,
        addr4,
        addr6,
        mac,
    })?;
    // Addresses came from Docker's IPAM: echoing them back is refused by libnetwork.
    Ok(match chosen {
        Some(m) => json!({"Interface": {"MacAddress": format_mac(&m)}}),
        None => json!({"Interface": {}}),
    })
}

fn endpoint_ref(method: &str, body: &[u8]) -> Result<EndpointRef, PluginError> {
    let r: EndpointRef = parse(method, body)?;
    need(method, "NetworkID", &r.network_id)?;
    need(method, "EndpointID", &r.endpoint_id)?;
    Ok(r)
}

pub fn delete_endpoint(e: &mut Engine, body: &[u8]) -> PResult {
    let r = endpoint_ref("DeleteEndpoint", body)?;
    e.docker_delete_endpoint(&r.network_id, &r.endpoint_id)?;
    Ok(json!({}))
}

fn proto_name(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

fn proto_of(n: u8) -> Result<Proto, PluginError> {
    match n {
        6 => Ok(Proto::Tcp),
        17 => Ok(Proto::Udp),
        132 => Err(bad("SCTP ports are not supported by netd".into())),
        other => Err(bad(format!("unknown IP protocol number {other} in port mapping"))),
    }
}

fn portmap_json(ports: &[PortMapping]) -> Value {
    let v: Vec<PortBinding> = ports
        .iter()
        .map(|m| PortBinding {
            proto: proto_name(m.proto),
            ip: String::new(),
            port: m.container_port,
            host_ip: m.host_ip.map(|i| i.to_string()).unwrap_or_default(),
            host_port: m.host_port,
            host_port_end: m.host_port,
        })
        .collect();
    serde_json::to_value(v).unwrap_or(Value::Null)
}

pub fn oper_info(e: &mut Engine, body: &[u8]) -> PResult {
    let r = endpoint_ref("EndpointOperInfo", body)?;
    let sb = e.docker_endpoint(&r.network_id, &r.endpoint_id)?;
    let ep = &sb.endpoints[0];
    Ok(json!({"Value": {
        "netd.sandbox": sb.name,
        "netd.host_veth": ep.host_ifname,
        "com.docker.network.endpoint.macaddress": ep.mac,
        OPT_PORTMAP: portmap_json(&sb.ports),
    }}))
}

pub fn join(e: &mut Engine, body: &[u8]) -> PResult {
    let r = endpoint_ref("Join", body)?;
    let j = e.docker_join(&r.network_id, &r.endpoint_id)?;
    // libnetwork's types.CONNECTED (1): a route through the interface, no next hop.
    let connected = |dst: &str| json!({"Destination": dst, "RouteType": 1, "NextHop": ""});
    let mut routes = Vec::new();
    if j.device_default4 {
        routes.push(connected("0.0.0.0/0"));
    }
    if j.device_default6 {
        routes.push(connected("::/0"));
    }
    let mut out = json!({
        "InterfaceName": {"SrcName": j.src_name, "DstPrefix": "eth"},
        "StaticRoutes": routes,
        "DisableGatewayService": false,
    });
    if let Some(g) = j.gateway4 {
        out["Gateway"] = json!(g.to_string());
    }
    if let Some(g) = j.gateway6 {
        out["GatewayIPv6"] = json!(g.to_string());
    }
    Ok(out)
}

pub fn leave(e: &mut Engine, body: &[u8]) -> PResult {
    let r = endpoint_ref("Leave", body)?;
    e.docker_leave(&r.network_id, &r.endpoint_id)?;
    Ok(json!({}))
}

fn list<T: serde::de::DeserializeOwned>(opts: &Map<String, Value>, key: &str) -> Result<Vec<T>, PluginError> {
    match opts.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| bad(format!("option {key}: {e}"))),
    }
}

pub fn program(e: &mut Engine, body: &[u8]) -> PResult {
    let r = endpoint_ref("ProgramExternalConnectivity", body)?;
    let opts = r.options.unwrap_or_default();
    let map: Vec<PortBinding> = list(&opts, OPT_PORTMAP)?;
    let exposed: Vec<TransportPort> = list(&opts, OPT_EXPOSED)?;
    let mut ports = Vec::new();
    for b in &map {
        let host_ip = match b.host_ip.trim() {
            "" => None,
            s => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| bad(format!("invalid host IP {s:?} in port mapping")))?,
            ),
        };
        let p = DockerPort {
            proto: proto_of(b.proto)?,
            container_port: b.port,
            host_ip,
            host_port: b.host_port,
            host_port_end: b.host_port_end,
        };
        // libnetwork may list one binding per address family; one netd mapping covers both.
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let exposed = exposed
        .iter()
        .map(|t| Ok((t.port, proto_of(t.proto)?)))
        .collect::<Result<Vec<_>, PluginError>>()?;
    e.docker_program_ports(&r.network_id, &r.endpoint_id, &ports, &exposed)?;
    Ok(json!({}))
}

pub fn revoke(e: &mut Engine, body: &[u8]) -> PResult {
    let r = endpoint_ref("RevokeExternalConnectivity", body)?;
    e.docker_revoke_ports(&r.network_id, &r.endpoint_id)?;
    Ok(json!({}))
}
