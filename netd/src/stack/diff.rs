//! Convergence of a stack, as pure data: what the file wants against what the daemon
//! has, giving an action per network and sandbox (keep, create, recreate, remove), and
//! per responder (keep, start, stop). A stack's objects carry the labels
//! `netd.stack=<name>` and `netd.stack.spec=<hash of the request>`; an object of the same
//! name without our stack label (another stack's, or made by hand) is never touched: the
//! whole run is refused before anything changes, as `docker stack deploy` refuses.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::fnv1a;

/// The stack an object belongs to.
pub const LABEL_STACK: &str = "netd.stack";
/// Hash of the request the object was made from: a different hash means the file changed.
pub const LABEL_SPEC: &str = "netd.stack.spec";

/// The spec hash of a request: FNV-1a of its JSON, so it is stable across runs.
pub fn spec_hash<T: Serialize>(req: &T) -> String {
    let json = serde_json::to_vec(req).unwrap_or_default();
    format!("{:016x}", fnv1a(&json))
}

/// What the file asks for: one entry per network or sandbox, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub spec: String,
    /// For sandboxes: the networks it is attached to.
    pub networks: Vec<String>,
}

/// What the daemon has under a name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Existing {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// For networks: the sandboxes attached; for sandboxes: their networks.
    pub links: Vec<String>,
}

impl Existing {
    fn stack(&self) -> Option<&str> {
        self.labels.get(LABEL_STACK).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "action", content = "why")]
pub enum Action {
    Keep,
    Create,
    /// Removed and made again; the reason says why.
    Recreate(String),
    /// Part of the stack, no longer in the file.
    Remove,
}

impl Action {
    /// Whether the existing object goes away first.
    pub fn removes(&self) -> bool {
        matches!(self, Action::Recreate(_) | Action::Remove)
    }
    /// Whether an object is made from the file.
    pub fn creates(&self) -> bool {
        matches!(self, Action::Create | Action::Recreate(_))
    }
}

/// The actions, networks and sandboxes each in file order (removed ones last).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    pub networks: Vec<(String, Action)>,
    pub sandboxes: Vec<(String, Action)>,
}

impl Changes {
    /// Whether applying would change nothing.
    pub fn is_noop(&self) -> bool {
        self.networks
            .iter()
            .chain(&self.sandboxes)
            .all(|(_, a)| *a == Action::Keep)
    }

    pub fn sandbox(&self, name: &str) -> Option<&Action> {
        self.sandboxes.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    #[error("{kind} {name} already exists and {owner}; remove or rename it, or name this stack's {kind} differently (nothing was changed)")]
    Foreign {
        kind: &'static str,
        name: String,
        owner: String,
    },
    #[error("network {network} of stack {stack} must be {verb}, but sandbox {sandbox}, which is not the stack's, is attached to it; disconnect it first (nothing was changed)")]
    ForeignAttached {
        stack: String,
        network: String,
        verb: &'static str,
        sandbox: String,
    },
}

fn owner_text(e: &Existing) -> String {
    match e.stack() {
        Some(s) => format!("belongs to stack {s}"),
        None => "is not part of any stack".into(),
    }
}

/// The actions that take the daemon from `have` to `want` for stack `stack`. Objects of
/// other stacks and unlabelled ones are left alone; a name the file wants that one of
/// them holds is an error, and so is a network to remove with a foreign sandbox on it.
pub fn diff(
    stack: &str,
    want_networks: &[Wanted],
    want_sandboxes: &[Wanted],
    have_networks: &[Existing],
    have_sandboxes: &[Existing],
) -> Result<Changes, DiffError> {
    let ours = |e: &&Existing| e.stack() == Some(stack);
    let net_by: BTreeMap<&str, &Existing> = have_networks.iter().map(|e| (e.name.as_str(), e)).collect();
    let sb_by: BTreeMap<&str, &Existing> = have_sandboxes.iter().map(|e| (e.name.as_str(), e)).collect();
    for (kind, want, by) in [
        ("network", want_networks, &net_by),
        ("sandbox", want_sandboxes, &sb_by),
    ] {
        for w in want {
            if let Some(e) = by.get(w.name.as_str()).filter(|e| !ours(e)) {
                return Err(DiffError::Foreign {
                    kind,
                    name: w.name.clone(),
                    owner: owner_text(e),
                });
            }
        }
    }
    let mut ch = Changes::default();
    for w in want_networks {
        let a = match net_by.get(w.name.as_str()) {
            None => Action::Create,
            Some(e) if e.labels.get(LABEL_SPEC) == Some(&w.spec) => Action::Keep,
            Some(_) => Action::Recreate("its definition changed".into()),
        };
        ch.networks.push((w.name.clone(), a));
    }
    let wanted_nets: BTreeSet<&str> = want_networks.iter().map(|w| w.name.as_str()).collect();
    for e in have_networks.iter().filter(ours) {
        if !wanted_nets.contains(e.name.as_str()) {
            ch.networks.push((e.name.clone(), Action::Remove));
        }
    }
    let replaced: BTreeSet<&str> = ch
        .networks
        .iter()
        .filter(|(_, a)| a.removes())
        .map(|(n, _)| n.as_str())
        .collect();
    for w in want_sandboxes {
        let a = match sb_by.get(w.name.as_str()) {
            None => Action::Create,
            Some(e) if e.labels.get(LABEL_SPEC) != Some(&w.spec) => {
                Action::Recreate("its definition changed".into())
            }
            // Its endpoint must move to the new network: same name, new subnet or options.
            Some(e) => match e.links.iter().find(|n| replaced.contains(n.as_str())) {
                Some(n) => Action::Recreate(format!("network {n} is recreated")),
                None => Action::Keep,
            },
        };
        ch.sandboxes.push((w.name.clone(), a));
    }
    let wanted_sbs: BTreeSet<&str> = want_sandboxes.iter().map(|w| w.name.as_str()).collect();
    for e in have_sandboxes.iter().filter(ours) {
        if !wanted_sbs.contains(e.name.as_str()) {
            ch.sandboxes.push((e.name.clone(), Action::Remove));
        }
    }
    // A network that goes away must have only the stack's sandboxes on it, all leaving.
    let leaving: BTreeSet<&str> = ch
        .sandboxes
        .iter()
        .filter(|(_, a)| a.removes())
        .map(|(n, _)| n.as_str())
        .collect();
    for (net, a) in ch.networks.iter().filter(|(_, a)| a.removes()) {
        let Some(e) = net_by.get(net.as_str()) else {
            continue;
        };
        if let Some(s) = e.links.iter().find(|s| !leaving.contains(s.as_str())) {
            return Err(DiffError::ForeignAttached {
                stack: stack.into(),
                network: net.clone(),
                verb: if *a == Action::Remove {
                    "removed"
                } else {
                    "recreated"
                },
                sandbox: s.clone(),
            });
        }
    }
    Ok(ch)
}

/// A responder as recorded (or wanted): the sandbox it serves and its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderSpec {
    pub sandbox: String,
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
}

/// Which responders to start and which recorded ones to stop: a recorded responder
/// stays when it is alive, its sandbox is kept and its ports are the file's; every other
/// recorded one is stopped, and every wanted one not kept is started.
pub fn responders(
    want: &[ResponderSpec],
    recorded: &[(ResponderSpec, bool)],
    changes: &Changes,
) -> (Vec<ResponderSpec>, Vec<ResponderSpec>) {
    let mut start = Vec::new();
    let mut kept = BTreeSet::new();
    for w in want {
        let keep = changes.sandbox(&w.sandbox) == Some(&Action::Keep)
            && recorded.iter().any(|(r, alive)| *alive && r == w);
        if keep {
            kept.insert(w.sandbox.as_str());
        } else {
            start.push(w.clone());
        }
    }
    let stop = recorded
        .iter()
        .filter(|(r, alive)| !(*alive && kept.contains(r.sandbox.as_str()) && want.contains(r)))
        .map(|(r, _)| r.clone())
        .collect();
    (start, stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(name: &str, spec: &str, nets: &[&str]) -> Wanted {
        Wanted {
            name: name.into(),
            spec: spec.into(),
            networks: nets.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn have(name: &str, stack: Option<&str>, spec: &str, links: &[&str]) -> Existing {
        let mut labels = BTreeMap::new();
        if let Some(s) = stack {
            labels.insert(LABEL_STACK.to_string(), s.to_string());
            labels.insert(LABEL_SPEC.to_string(), spec.to_string());
        }
        Existing {
            name: name.into(),
            labels,
            links: links.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn names(v: &[(String, Action)], f: impl Fn(&Action) -> bool) -> Vec<&str> {
        v.iter().filter(|(_, a)| f(a)).map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn empty_host_creates_everything_in_file_order() {
        let ch = diff(
            "s",
            &[want("front", "a", &[]), want("back", "b", &[])],
            &[want("web", "w", &["front"])],
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            ch.networks,
            [("front".into(), Action::Create), ("back".into(), Action::Create)]
        );
        assert_eq!(ch.sandboxes, [("web".into(), Action::Create)]);
        assert!(!ch.is_noop());
    }

    #[test]
    fn a_second_run_on_the_same_file_keeps_everything() {
        let ch = diff(
            "s",
            &[want("front", "a", &[])],
            &[want("web", "w", &["front"])],
            &[have("front", Some("s"), "a", &["web"])],
            &[have("web", Some("s"), "w", &["front"])],
        )
        .unwrap();
        assert!(ch.is_noop(), "{ch:?}");
    }

    #[test]
    fn an_interrupted_run_is_completed() {
        // The first run made one network and nothing else before it was killed.
        let ch = diff(
            "s",
            &[want("front", "a", &[]), want("back", "b", &[])],
            &[want("web", "w", &["front"])],
            &[have("front", Some("s"), "a", &[])],
            &[],
        )
        .unwrap();
        assert_eq!(names(&ch.networks, |a| *a == Action::Keep), ["front"]);
        assert_eq!(names(&ch.networks, |a| *a == Action::Create), ["back"]);
        assert_eq!(names(&ch.sandboxes, |a| *a == Action::Create), ["web"]);
    }

    #[test]
    fn a_changed_network_takes_its_sandboxes_along() {
        let ch = diff(
            "s",
            &[want("front", "a2", &[]), want("back", "b", &[])],
            &[want("web", "w", &["front"]), want("db", "d", &["back"])],
            &[
                have("front", Some("s"), "a", &["web"]),
                have("back", Some("s"), "b", &["db"]),
            ],
            &[
                have("web", Some("s"), "w", &["front"]),
                have("db", Some("s"), "d", &["back"]),
            ],
        )
        .unwrap();
        assert!(matches!(ch.networks[0].1, Action::Recreate(_)));
        assert_eq!(ch.networks[1].1, Action::Keep);
        assert_eq!(
            ch.sandboxes[0].1,
            Action::Recreate("network front is recreated".into())
        );
        assert_eq!(ch.sandboxes[1].1, Action::Keep);
    }

    #[test]
    fn what_the_file_no_longer_has_is_removed() {
        let ch = diff(
            "s",
            &[want("front", "a", &[]), want("extra", "e", &[])],
            &[want("web", "w", &["front"])],
            &[
                have("front", Some("s"), "a", &["web", "old"]),
                have("gone", Some("s"), "g", &["old"]),
            ],
            &[
                have("web", Some("s"), "w", &["front"]),
                have("old", Some("s"), "o", &["front", "gone"]),
            ],
        )
        .unwrap();
        assert_eq!(names(&ch.networks, |a| *a == Action::Remove), ["gone"]);
        assert_eq!(names(&ch.networks, |a| *a == Action::Create), ["extra"]);
        assert_eq!(names(&ch.sandboxes, |a| *a == Action::Remove), ["old"]);
        assert_eq!(names(&ch.sandboxes, |a| *a == Action::Keep), ["web"]);
    }

    #[test]
    fn a_changed_sandbox_is_recreated() {
        let ch = diff(
            "s",
            &[want("front", "a", &[])],
            &[want("web", "w2", &["front"])],
            &[have("front", Some("s"), "a", &["web"])],
            &[have("web", Some("s"), "w", &["front"])],
        )
        .unwrap();
        assert_eq!(ch.networks[0].1, Action::Keep);
        assert!(matches!(ch.sandboxes[0].1, Action::Recreate(_)));
    }

    #[test]
    fn other_stacks_and_unlabelled_objects_are_never_touched() {
        let ch = diff(
            "s",
            &[want("front", "a", &[])],
            &[],
            &[
                have("front", Some("s"), "a", &[]),
                have("theirs", Some("t"), "x", &["their-sb"]),
                have("manual", None, "", &[]),
            ],
            &[have("their-sb", Some("t"), "y", &["theirs"])],
        )
        .unwrap();
        assert_eq!(ch.networks, [("front".into(), Action::Keep)]);
        assert!(ch.sandboxes.is_empty());
    }

    #[test]
    fn a_name_held_by_someone_else_is_refused() {
        let e = diff(
            "s",
            &[want("front", "a", &[])],
            &[],
            &[have("front", None, "", &[])],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("not part of any stack"), "{e}");
        let e = diff(
            "s",
            &[],
            &[want("web", "w", &[])],
            &[],
            &[have("web", Some("t"), "w", &[])],
        )
        .unwrap_err();
        assert_eq!(
            e,
            DiffError::Foreign {
                kind: "sandbox",
                name: "web".into(),
                owner: "belongs to stack t".into()
            }
        );
    }

    #[test]
    fn a_foreign_sandbox_on_a_leaving_network_is_refused() {
        let e = diff(
            "s",
            &[want("front", "a2", &[])],
            &[],
            &[have("front", Some("s"), "a", &["manual"])],
            &[have("manual", None, "", &["front"])],
        )
        .unwrap_err();
        assert!(
            matches!(&e, DiffError::ForeignAttached { sandbox, verb: "recreated", .. } if sandbox == "manual"),
            "{e:?}"
        );
        // A kept network may have foreign sandboxes on it.
        assert!(diff(
            "s",
            &[want("front", "a", &[])],
            &[],
            &[have("front", Some("s"), "a", &["manual"])],
            &[have("manual", None, "", &["front"])],
        )
        .is_ok());
    }

    #[test]
    fn spec_hash_is_stable_and_tells_requests_apart() {
        let a = crate::model::SandboxRequest::on("web", &["front"]);
        let mut b = a.clone();
        assert_eq!(spec_hash(&a), spec_hash(&b));
        b.ports.push("8080:80".into());
        assert_ne!(spec_hash(&a), spec_hash(&b));
        assert_eq!(spec_hash(&a).len(), 16);
    }

    fn rs(sb: &str, tcp: &[u16]) -> ResponderSpec {
        ResponderSpec {
            sandbox: sb.into(),
            tcp: tcp.to_vec(),
            udp: vec![],
        }
    }

    #[test]
    fn responders_are_kept_only_when_alive_unchanged_and_their_sandbox_is_kept() {
        let changes = Changes {
            networks: vec![],
            sandboxes: vec![
                ("a".into(), Action::Keep),
                ("b".into(), Action::Keep),
                ("c".into(), Action::Recreate("x".into())),
                ("d".into(), Action::Keep),
                ("e".into(), Action::Create),
                ("f".into(), Action::Remove),
            ],
        };
        let want = [
            rs("a", &[80]),
            rs("b", &[81]),
            rs("c", &[80]),
            rs("d", &[80]),
            rs("e", &[80]),
        ];
        let recorded = [
            (rs("a", &[80]), true),  // kept
            (rs("b", &[80]), true),  // ports changed
            (rs("c", &[80]), true),  // sandbox recreated
            (rs("d", &[80]), false), // died
            (rs("f", &[80]), true),  // sandbox removed
        ];
        let (start, stop) = responders(&want, &recorded, &changes);
        let n = |v: &[ResponderSpec]| v.iter().map(|r| r.sandbox.clone()).collect::<Vec<_>>();
        assert_eq!(n(&start), ["b", "c", "d", "e"]);
        assert_eq!(n(&stop), ["b", "c", "d", "f"]);
    }
}
