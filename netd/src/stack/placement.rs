//! Which part of a stack file this node makes. A file for a cluster names a node per
//! sandbox (`node = "h2"`); `netd up` on a node makes that node's sandboxes and skips
//! the others, which `netd up` of the same file on their node makes. Overlay networks
//! are the cluster's: whichever node comes first makes them, the others find them.
//!
//! Pure: the caller brings the cluster's live nodes (`GET /v1/cluster/nodes`). Every
//! check runs before anything is made, so a bad name changes nothing.

use super::file::{Instance, StackFile};

/// The cluster as seen from the daemon `netd up` talks to.
#[derive(Debug, Clone)]
pub struct Nodes {
    /// This daemon's `--node`.
    pub local: String,
    /// Every node whose lease is alive, this one included.
    pub alive: Vec<String>,
}

/// The split of a stack's sandboxes between this node and the others.
#[derive(Debug)]
pub struct Placement {
    pub here: Vec<Instance>,
    /// (sandbox, node) made by `netd up` on that node.
    pub elsewhere: Vec<(String, String)>,
}

/// Whether the file places sandboxes on nodes: `netd up` of it then publishes it to the
/// cluster, whose other nodes make their parts (`cluster::stacks`).
pub fn is_placed(file: &StackFile) -> bool {
    file.sandboxes.iter().any(|s| s.node.is_some()) || file.services.iter().any(|s| s.is_placed())
}

/// Whether the file needs a cluster: a sandbox names a node or a network is overlay.
pub fn needs_cluster(file: &StackFile) -> Option<String> {
    if let Some(s) = file.sandboxes.iter().find(|s| s.node.is_some()) {
        return Some(format!("sandbox {} is placed on a node", s.name));
    }
    if let Some(s) = file.services.iter().find(|s| s.is_placed()) {
        return Some(format!("service {} is placed on nodes", s.name));
    }
    file.networks
        .iter()
        .find(|n| n.is_overlay())
        .map(|n| format!("network {} is an overlay network", n.name))
}

/// Splits `instances` (from `file`) between this node and the others; `nodes` is None
/// when the daemon is not in a cluster.
pub fn place(file: &StackFile, instances: Vec<Instance>, nodes: Option<&Nodes>) -> Result<Placement, String> {
    let Some(nodes) = nodes else {
        if let Some(why) = needs_cluster(file) {
            return Err(format!(
                "{why}, but this netd is not in a cluster (start it with --cluster etcd://HOST:PORT --node NAME)"
            ));
        }
        return Ok(Placement {
            here: instances,
            elsewhere: Vec::new(),
        });
    };
    if !is_placed(file) {
        return Ok(Placement {
            here: instances,
            elsewhere: Vec::new(),
        });
    }
    // With some sandboxes placed, one without a node would be made by every node's
    // `netd up`: the same name on several nodes.
    if let Some(s) = file.sandboxes.iter().find(|s| s.node.is_none()) {
        return Err(format!(
            "sandbox {} names no node while others do: in a stack placed on nodes every sandbox says node = \"NAME\"",
            s.name
        ));
    }
    if let Some(s) = file.services.iter().find(|s| !s.is_placed()) {
        return Err(format!(
            "service {} names no node while others do: in a stack placed on nodes every service says node = \"NAME\" or nodes = [...]",
            s.name
        ));
    }
    // A service of a placed stack is the cluster's (one VIP, replicas on several nodes).
    let overlay: Vec<&str> = file
        .networks
        .iter()
        .filter(|n| n.is_overlay())
        .map(|n| n.name.as_str())
        .collect();
    for s in &file.services {
        if let Some(n) = s.networks.iter().find(|n| !overlay.contains(&n.as_str())) {
            return Err(format!(
                "service {}: network {n} is not an overlay network; a service of a stack placed on nodes is the cluster's, on overlay networks only",
                s.name
            ));
        }
    }
    for i in &instances {
        let node = i.node.as_deref().unwrap_or_default();
        if !nodes.alive.iter().any(|n| n == node) {
            let what = if i.req.labels.contains_key(super::file::LABEL_SERVICE) {
                format!("service {} (replica {})", i.service, i.req.name)
            } else {
                format!("sandbox {}", i.req.name)
            };
            return Err(format!(
                "{what}: node {node} is not in the cluster (nodes: {})",
                nodes.alive.join(", ")
            ));
        }
    }
    let (here, there): (Vec<Instance>, Vec<Instance>) = instances
        .into_iter()
        .partition(|i| i.node.as_deref() == Some(nodes.local.as_str()));
    Ok(Placement {
        here,
        elsewhere: there
            .into_iter()
            .map(|i| (i.req.name, i.node.unwrap_or_default()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
name = "vote"
[[network]]
name = "ov"
driver = "overlay"
subnet = "10.90.0.0/24"
[[sandbox]]
name = "web"
node = "h1"
replicas = 2
networks = ["ov"]
[[sandbox]]
name = "db"
node = "h2"
networks = ["ov"]
"#;

    fn nodes(local: &str) -> Nodes {
        Nodes {
            local: local.into(),
            alive: vec!["h1".into(), "h2".into(), "h3".into()],
        }
    }

    fn names(p: &Placement) -> Vec<&str> {
        p.here.iter().map(|i| i.req.name.as_str()).collect()
    }

    #[test]
    fn each_node_takes_its_own_sandboxes_and_skips_the_others() {
        let f = StackFile::from_text(FILE).unwrap();
        let p = place(&f, f.instances().unwrap(), Some(&nodes("h1"))).unwrap();
        assert_eq!(names(&p), ["web-1", "web-2"]);
        assert_eq!(p.elsewhere, [("db".to_string(), "h2".to_string())]);
        let p = place(&f, f.instances().unwrap(), Some(&nodes("h2"))).unwrap();
        assert_eq!(names(&p), ["db"]);
        let p = place(&f, f.instances().unwrap(), Some(&nodes("h3"))).unwrap();
        assert!(p.here.is_empty() && p.elsewhere.len() == 3);
        // Overlay networks are not the daemon's own: no bridge request for them.
        assert!(f.network_requests().is_empty());
        assert_eq!(f.overlay_networks()[0]["subnet"], "10.90.0.0/24");
    }

    #[test]
    fn bad_placements_are_one_line_errors() {
        let f = StackFile::from_text(&FILE.replace("node = \"h2\"", "node = \"h9\"")).unwrap();
        let e = place(&f, f.instances().unwrap(), Some(&nodes("h1"))).unwrap_err();
        assert_eq!(e, "sandbox db: node h9 is not in the cluster (nodes: h1, h2, h3)");
        let f = StackFile::from_text(FILE).unwrap();
        let e = place(&f, f.instances().unwrap(), None).unwrap_err();
        assert!(
            e.starts_with("sandbox web is placed on a node, but this netd is not in a cluster"),
            "{e}"
        );
        let f = StackFile::from_text(&FILE.replace("node = \"h2\"\n", "")).unwrap();
        let e = place(&f, f.instances().unwrap(), Some(&nodes("h1"))).unwrap_err();
        assert!(e.starts_with("sandbox db names no node while others do"), "{e}");
        let f = StackFile::from_text(&FILE.replace("driver = \"overlay\"", "driver = \"ipvlan\"")).unwrap();
        assert_eq!(
            f.instances().unwrap_err(),
            "network ov: driver ipvlan is not one a stack makes (bridge or overlay)"
        );
        let f =
            StackFile::from_text(&FILE.replace("driver = \"overlay\"", "driver = \"overlay\"\nipv6 = true"))
                .unwrap();
        assert_eq!(
            f.instances().unwrap_err(),
            "network ov: ipv6 is not supported for overlay networks"
        );
        let e = FILE.replace("node = \"h2\"", "node = \"H 2\"");
        let err = StackFile::from_text(&e).unwrap().instances().unwrap_err();
        assert!(err.starts_with("sandbox db: node "), "{err}");
    }

    const SERVICE: &str = r#"
[[network]]
name = "ov"
driver = "overlay"
[[network]]
name = "br"
[[sandbox]]
name = "client"
node = "h3"
networks = ["ov"]
[[service]]
name = "api"
replicas = 3
nodes = ["h1", "h2"]
networks = ["ov"]
"#;

    #[test]
    fn a_service_spreads_its_replicas_over_its_nodes_in_turn() {
        let f = StackFile::from_text(SERVICE).unwrap();
        let p = place(&f, f.instances().unwrap(), Some(&nodes("h1"))).unwrap();
        assert_eq!(names(&p), ["api-1", "api-3"]);
        let p = place(&f, f.instances().unwrap(), Some(&nodes("h2"))).unwrap();
        assert_eq!(names(&p), ["api-2"]);
        let one = SERVICE.replace("nodes = [\"h1\", \"h2\"]", "node = \"h2\"");
        let f = StackFile::from_text(&one).unwrap();
        let p = place(&f, f.instances().unwrap(), Some(&nodes("h2"))).unwrap();
        assert_eq!(names(&p), ["api-1", "api-2", "api-3"]);
        assert!(is_placed(&f));
    }

    #[test]
    fn bad_service_placements_are_one_line_errors() {
        let place_err = |text: &str| {
            let f = StackFile::from_text(text).unwrap();
            match f.instances() {
                Ok(i) => place(&f, i, Some(&nodes("h1"))).unwrap_err(),
                Err(e) => e,
            }
        };
        assert_eq!(
            place_err(&SERVICE.replace("\"h2\"]", "\"h9\"]")),
            "service api (replica api-2): node h9 is not in the cluster (nodes: h1, h2, h3)"
        );
        assert!(place_err(&SERVICE.replace("nodes = [\"h1\", \"h2\"]\n", ""))
            .starts_with("service api names no node while others do"));
        assert_eq!(
            place_err(&SERVICE.replace(
                "replicas = 3\nnodes = [\"h1\", \"h2\"]\nnetworks = [\"ov\"]",
                "replicas = 3\nnodes = [\"h1\", \"h2\"]\nnetworks = [\"br\"]"
            )),
            "service api: network br is not an overlay network; a service of a stack placed on nodes is the cluster's, on overlay networks only"
        );
        assert_eq!(
            place_err(&SERVICE.replace("nodes = [", "node = \"h1\"\nnodes = [")),
            "service api: give node (all replicas there) or nodes (spread over them), not both"
        );
        let f = StackFile::from_text(SERVICE).unwrap();
        assert!(place(&f, f.instances().unwrap(), None)
            .unwrap_err()
            .starts_with("sandbox client is placed on a node, but this netd is not in a cluster"));
    }

    #[test]
    fn a_file_without_nodes_is_made_whole_here_as_before() {
        let f = StackFile::from_text(
            "[[network]]\nname = \"n\"\n[[sandbox]]\nname = \"a\"\nnetworks = [\"n\"]\n",
        )
        .unwrap();
        let p = place(&f, f.instances().unwrap(), None).unwrap();
        assert_eq!(names(&p), ["a"]);
        let p = place(&f, f.instances().unwrap(), Some(&nodes("h1"))).unwrap();
        assert_eq!(names(&p), ["a"]);
    }
}
