//! The events an operation caused, from the model before and after it (pure).
//!
//! The engine calls this once, where every operation commits (`Engine::commit`,
//! `Engine::commit_service`), with the entries the operation's undo record saved and
//! their new values: so each create, rm, connect, disconnect and publish gets its event
//! without a hook in each operation, and a failed (rolled back) operation gets none.

use crate::model::{Network, Sandbox, Service, ServiceKind};

use super::events::{Event, Kind};

pub fn network(before: Option<&Network>, after: Option<&Network>) -> Vec<Event> {
    match (before, after) {
        (None, Some(n)) => {
            let mut e = Event::new(Kind::Network, "create", &n.name).attr("driver", &n.driver);
            if !n.bridge.is_empty() {
                e = e.attr("bridge", &n.bridge);
            }
            let subnets: Vec<String> = n.subnets.iter().map(|s| s.subnet.to_string()).collect();
            if !subnets.is_empty() {
                e = e.attr("subnet", subnets.join(","));
            }
            vec![e]
        }
        (Some(n), None) => vec![Event::new(Kind::Network, "rm", &n.name)],
        _ => Vec::new(),
    }
}

fn endpoint_event(action: &str, sb: &Sandbox, e: &crate::model::Endpoint) -> Event {
    let mut ev = Event::new(Kind::Sandbox, action, &sb.name).attr("network", &e.network);
    if let Some(ip) = e.ipv4 {
        ev = ev.attr("ipv4", ip.ip());
    }
    if let Some(ip) = e.ipv6 {
        ev = ev.attr("ipv6", ip.ip());
    }
    ev
}

/// A sandbox's create/rm, then each network it joined or left and each port it
/// published or stopped publishing (create brings its first networks and ports as
/// connect and publish events too, as `docker events` shows a container's).
pub fn sandbox(before: Option<&Sandbox>, after: Option<&Sandbox>) -> Vec<Event> {
    let mut out = Vec::new();
    if let (None, Some(s)) = (before, after) {
        out.push(Event::new(Kind::Sandbox, "create", &s.name).attr("netns", &s.netns));
    }
    let empty_eps = Vec::new();
    let empty_ports = Vec::new();
    let (old_eps, old_ports) = before.map_or((&empty_eps, &empty_ports), |s| (&s.endpoints, &s.ports));
    let (new_eps, new_ports) = after.map_or((&empty_eps, &empty_ports), |s| (&s.endpoints, &s.ports));
    if let Some(s) = after {
        for e in new_eps
            .iter()
            .filter(|e| !old_eps.iter().any(|o| o.network == e.network))
        {
            out.push(endpoint_event("connect", s, e));
        }
        for p in new_ports.iter().filter(|p| !old_ports.contains(p)) {
            out.push(Event::new(Kind::Sandbox, "publish", &s.name).attr("port", p));
        }
    }
    if let Some(s) = before {
        for p in old_ports.iter().filter(|p| !new_ports.contains(p)) {
            out.push(Event::new(Kind::Sandbox, "unpublish", &s.name).attr("port", p));
        }
        for e in old_eps
            .iter()
            .filter(|e| !new_eps.iter().any(|n| n.network == e.network))
        {
            out.push(endpoint_event("disconnect", s, e));
        }
        if after.is_none() {
            out.push(Event::new(Kind::Sandbox, "rm", &s.name));
        }
    }
    out
}

pub fn service_name(s: &Service) -> String {
    format!("{}/{}", s.namespace, s.name)
}

fn service_attrs(mut e: Event, s: &Service) -> Event {
    match &s.kind {
        ServiceKind::ExternalName { target } => e.attr("external_name", target),
        ServiceKind::ClusterIp(c) => {
            let vips: Vec<String> = c.vips.iter().map(|(n, ip)| format!("{n}:{ip}")).collect();
            if !vips.is_empty() {
                e = e.attr("vips", vips.join(","));
            }
            let ports: Vec<String> = c.ports.iter().map(|p| p.to_string()).collect();
            if !ports.is_empty() {
                e = e.attr("ports", ports.join(","));
            }
            e
        }
    }
}

fn published(s: Option<&Service>) -> Vec<String> {
    match s.map(|s| &s.kind) {
        Some(ServiceKind::ClusterIp(c)) => c
            .published
            .iter()
            .map(|p| format!("{}:{}/{}", p.published, p.target, p.proto))
            .collect(),
        _ => Vec::new(),
    }
}

pub fn service(before: Option<&Service>, after: Option<&Service>) -> Vec<Event> {
    let mut out = Vec::new();
    let (old_pub, new_pub) = (published(before), published(after));
    match (before, after) {
        (None, Some(s)) => out.push(service_attrs(
            Event::new(Kind::Service, "create", &service_name(s)),
            s,
        )),
        (Some(a), Some(b)) if a != b => out.push(service_attrs(
            Event::new(Kind::Service, "update", &service_name(b)),
            b,
        )),
        _ => {}
    }
    if let Some(s) = after {
        for p in new_pub.iter().filter(|p| !old_pub.contains(p)) {
            out.push(Event::new(Kind::Service, "publish", &service_name(s)).attr("port", p));
        }
    }
    if let Some(s) = before {
        for p in old_pub.iter().filter(|p| !new_pub.contains(p)) {
            out.push(Event::new(Kind::Service, "unpublish", &service_name(s)).attr("port", p));
        }
        if after.is_none() {
            out.push(Event::new(Kind::Service, "rm", &service_name(s)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, PortMapping, Proto};

    fn sb(name: &str, nets: &[&str], ports: &[u16]) -> Sandbox {
        let mut s: Sandbox = serde_json::from_value(serde_json::json!({
            "name": name, "id": "x", "mode": "bridge", "netns": format!("/run/netns/{name}"),
            "endpoints": [], "ports": [], "publish_all": false, "expose": [], "created": 0
        }))
        .expect("a sandbox");
        for n in nets {
            let e: Endpoint = serde_json::from_value(serde_json::json!({
                "network": n, "ifname": "eth0", "host_ifname": "veth0", "mac": "", "ipv4": "10.0.0.2/24"
            }))
            .expect("an endpoint");
            s.endpoints.push(e);
        }
        for p in ports {
            s.ports.push(PortMapping {
                host_ip: None,
                host_port: *p,
                container_port: 80,
                proto: Proto::Tcp,
            });
        }
        s
    }

    fn actions(v: &[Event]) -> Vec<String> {
        v.iter().map(|e| format!("{} {}", e.action, e.name)).collect()
    }

    #[test]
    fn sandbox_lifecycle() {
        let a = sb("web", &["front"], &[8080]);
        let created = sandbox(None, Some(&a));
        assert_eq!(actions(&created), ["create web", "connect web", "publish web"]);
        assert_eq!(created[1].attributes["network"], "front");
        assert_eq!(created[1].attributes["ipv4"], "10.0.0.2");
        let b = sb("web", &["front", "back"], &[8080]);
        assert_eq!(actions(&sandbox(Some(&a), Some(&b))), ["connect web"]);
        let c = sb("web", &["back"], &[]);
        assert_eq!(
            actions(&sandbox(Some(&b), Some(&c))),
            ["unpublish web", "disconnect web"]
        );
        assert_eq!(actions(&sandbox(Some(&c), None)), ["disconnect web", "rm web"]);
        assert!(sandbox(Some(&c), Some(&c)).is_empty());
    }
}
