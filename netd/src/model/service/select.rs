//! Which sandboxes serve a `cluster_ip` service, and at which addresses.
//!
//! A sandbox is a backend when it carries every label of the selector (a non-empty
//! selector; an empty one selects nothing, so a service with only named backends does
//! not take every sandbox) or when the service names it. It serves on each of its
//! endpoints on the service's networks, once per address family, since a VIP reaches
//! backends on its own network only (networks stay isolated, as for published ports).
//! Selection is not limited to a namespace: in netd, networks decide who reaches whom;
//! a selector can name the namespace label to narrow it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::ClusterIp;
use crate::model::Sandbox;

/// One address a service balances to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Backend {
    pub network: String,
    pub sandbox: String,
    pub ip: IpAddr,
}

/// The backends of `svc` among `sandboxes`, sorted by network, sandbox and address, so
/// the same sandboxes in any order give the same list (and the same nft chains).
///
/// A Kubernetes service (`svc.kubernetes`) has no networks: with EndpointSlices its
/// backends are their ready endpoints (the sandboxes are not looked at, as kube-proxy
/// looks at slices only); without, its selector picks sandboxes on every network.
pub fn select_backends<'a>(
    svc: &ClusterIp,
    sandboxes: impl IntoIterator<Item = &'a Sandbox>,
) -> Vec<Backend> {
    if let Some(from_slices) = svc.kubernetes.as_ref().and_then(|k| k.slice_backends()) {
        return from_slices;
    }
    let any_network = svc.kubernetes.is_some();
    let selected = |s: &Sandbox| {
        let by_labels =
            !svc.selector.is_empty() && svc.selector.iter().all(|(k, v)| s.labels.get(k) == Some(v));
        by_labels || svc.backends.contains(&s.name)
    };
    let mut out: Vec<Backend> = sandboxes
        .into_iter()
        .filter(|s| selected(s))
        .flat_map(|s| {
            s.endpoints
                .iter()
                .filter(|e| any_network || svc.networks.contains(&e.network))
                .flat_map(move |e| {
                    e.ips().map(move |ip| Backend {
                        network: e.network.clone(),
                        sandbox: s.name.clone(),
                        ip,
                    })
                })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, NetMode, ServiceRequest};
    use proptest::prelude::*;

    fn ep(net: &str, ip4: &str, ip6: Option<&str>) -> Endpoint {
        Endpoint {
            network: net.into(),
            ifname: "eth0".into(),
            host_ifname: String::new(),
            mac: String::new(),
            ipv4: Some(format!("{ip4}/24").parse().unwrap()),
            ipv6: ip6.map(|a| format!("{a}/64").parse().unwrap()),
            gateway4: None,
            gateway6: None,
            aliases: vec![],
            routes: vec![],
            no_default_route: false,
        }
    }

    fn sb(name: &str, labels: &[(&str, &str)], eps: Vec<Endpoint>) -> Sandbox {
        Sandbox {
            name: name.into(),
            id: name.into(),
            mode: NetMode::Bridge,
            netns: String::new(),
            external: false,
            endpoints: eps,
            ports: vec![],
            publish_all: false,
            expose: vec![],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created: 0,
        }
    }

    fn svc(nets: &[&str], sel: &[&str], backends: &[&str]) -> ClusterIp {
        ServiceRequest {
            name: "web".into(),
            networks: nets.iter().map(|s| s.to_string()).collect(),
            ports: vec!["80".into()],
            selector: sel.iter().map(|s| s.to_string()).collect(),
            backends: backends.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
        .cluster_ip()
        .unwrap()
    }

    fn world() -> Vec<Sandbox> {
        vec![
            sb(
                "web-2",
                &[("app", "web"), ("tier", "fe")],
                vec![ep("front", "10.0.0.3", None)],
            ),
            sb(
                "web-1",
                &[("app", "web")],
                vec![
                    ep("front", "10.0.0.2", Some("fd00::2")),
                    ep("back", "10.1.0.2", None),
                ],
            ),
            sb("db", &[("app", "db")], vec![ep("back", "10.1.0.9", None)]),
            sb(
                "other",
                &[("app", "web")],
                vec![ep("elsewhere", "10.9.0.2", None)],
            ),
            sb("bare", &[], vec![]),
        ]
    }

    fn names(b: &[Backend]) -> Vec<String> {
        b.iter()
            .map(|b| format!("{}/{}/{}", b.network, b.sandbox, b.ip))
            .collect()
    }

    #[test]
    fn selector_and_names_on_the_service_networks_only() {
        let w = world();
        assert_eq!(
            names(&select_backends(&svc(&["front"], &["app=web"], &[]), &w)),
            [
                "front/web-1/10.0.0.2",
                "front/web-1/fd00::2",
                "front/web-2/10.0.0.3"
            ]
        );
        // Every term must match.
        assert_eq!(
            names(&select_backends(
                &svc(&["front"], &["app=web", "tier=fe"], &[]),
                &w
            )),
            ["front/web-2/10.0.0.3"]
        );
        // A named backend joins whatever its labels; one off the networks adds nothing.
        assert_eq!(
            names(&select_backends(
                &svc(&["back"], &["tier=fe"], &["db", "other"]),
                &w
            )),
            ["back/db/10.1.0.9"]
        );
        // Two networks: a backend on both serves on both.
        assert_eq!(
            names(&select_backends(&svc(&["front", "back"], &["app=web"], &[]), &w)),
            [
                "back/web-1/10.1.0.2",
                "front/web-1/10.0.0.2",
                "front/web-1/fd00::2",
                "front/web-2/10.0.0.3"
            ]
        );
        // An empty selector selects nothing by itself.
        assert!(select_backends(&svc(&["front"], &[], &[]), &w).is_empty());
    }

    proptest! {
        /// The order of the sandboxes never changes the result, and each backend is on a
        /// service network of a sandbox that matches.
        #[test]
        fn order_does_not_matter(seed in proptest::collection::vec(0usize..5, 0..12)) {
            let w = world();
            let picked: Vec<Sandbox> = seed.iter().map(|&i| w[i].clone()).collect();
            let mut rev = picked.clone();
            rev.reverse();
            let s = svc(&["front", "back"], &["app=web"], &["db"]);
            let a = select_backends(&s, &picked);
            prop_assert_eq!(&a, &select_backends(&s, &rev));
            let mut sorted = a.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(&a, &sorted);
            for b in &a {
                prop_assert!(s.networks.contains(&b.network));
                prop_assert!(b.sandbox.starts_with("web-") || b.sandbox == "db");
            }
        }
    }
}
