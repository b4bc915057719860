//! Stacks placed on nodes: one `netd up -d FILE` on any node brings the whole stack up.
//!
//! That `netd up` makes its own node's part, then publishes the file
//! (`POST /v1/cluster/stacks`: `/netd/v1/stacks/<name>` with a new id). Every node's
//! daemon runs this module's loop (woken by the store's watch on `stacks/`): a stack
//! whose file places sandboxes on the node, and whose id the node has not made yet, is
//! converged here exactly as `netd up -d` of the file on this node would (`stack::up_part`, against this daemon's own socket), and the
//! outcome is put under the node's lease (`/netd/v1/stack-parts/<name>/<node>`), where
//! the first `netd up` waits for it. A stack record that goes (`netd down` on any node)
//! makes each node remove its part. Which stacks a node made (and so must remove) is kept
//! in `<state-dir>/cluster-stacks.json`, so a restart in between loses nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ClusterError, ClusterStore, StackPartRecord, StackRecord};
use crate::api::server::ApiError;
use crate::daemon::DaemonOptions;

/// A node looks for stacks to make or remove when `stacks/` changes, and at least this
/// often (a part that failed on a store error, a new lease to put the parts under).
const LOOK: Duration = Duration::from_secs(5);

pub struct Stacks<S> {
    store: Arc<S>,
    node: String,
    opts: DaemonOptions,
    /// stack → the part this node made of it (its id is the record's it followed).
    made: tokio::sync::Mutex<BTreeMap<String, StackPartRecord>>,
    file: PathBuf,
}

/// `POST /v1/cluster/stacks`: the file `netd up` ran, and what it made on this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishRequest {
    pub name: String,
    pub text: String,
    /// The sandboxes `netd up` made here.
    #[serde(default)]
    pub sandboxes: Vec<String>,
}

/// A stack and the parts the nodes reported (`GET /v1/cluster/stacks[/NAME]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackView {
    pub stack: StackRecord,
    pub parts: Vec<StackPartRecord>,
}

/// The nodes a stack file places sandboxes on; empty for a file that names none (or
/// does not parse: the `netd up` that published it had checked it).
pub fn nodes_of(text: &str) -> Vec<String> {
    let Some(all) = crate::stack::file::StackFile::from_text(text)
        .ok()
        .and_then(|f| f.instances().ok())
    else {
        return Vec::new();
    };
    let mut v: Vec<String> = all.into_iter().filter_map(|i| i.node).collect();
    v.sort();
    v.dedup();
    v
}

impl<S: ClusterStore> Stacks<S> {
    pub fn new(store: Arc<S>, node: &str, opts: &DaemonOptions) -> Stacks<S> {
        let file = opts.state_dir.join("cluster-stacks.json");
        let made = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Stacks {
            store,
            node: node.to_string(),
            opts: opts.clone(),
            made: tokio::sync::Mutex::new(made),
            file,
        }
    }

    fn save(&self, made: &BTreeMap<String, StackPartRecord>) {
        let tmp = self.file.with_extension("json.tmp");
        let res = std::fs::write(&tmp, serde_json::to_vec_pretty(made).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = res {
            tracing::warn!(file = %self.file.display(), error = %e, "cluster: cannot record the stacks made here");
        }
    }

    /// Looks every `LOOK` until `shutdown` flips.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut look = tokio::time::interval(LOOK);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut epoch = self.store.lease_epoch();
        loop {
            tokio::select! {
                _ = self.store.stacks_changed() => {}
                _ = look.tick() => {}
                _ = shutdown.changed() => return,
            }
            // A new lease took the part records with the old one: put them again.
            let relisted = self.store.lease_epoch() != epoch;
            epoch = self.store.lease_epoch();
            if let Err(e) = self.pass(relisted).await {
                tracing::warn!(error = %e, "cluster: stacks pass failed; retrying");
            }
        }
    }

    /// Makes the stacks that changed, removes the ones that went.
    pub async fn pass(&self, relisted: bool) -> Result<(), ClusterError> {
        let recs = self.store.stacks().await?;
        let mut made = self.made.lock().await;
        if relisted {
            for p in made.values() {
                self.store.put_stack_part(p).await?;
            }
        }
        for rec in &recs {
            let had = made.get(&rec.name);
            if had.is_some_and(|p| p.id == rec.id) {
                continue;
            }
            // A node the file no longer names removes what it made (an empty part).
            if had.is_none() && !nodes_of(&rec.text).contains(&self.node) {
                continue;
            }
            let part = self.make(rec).await;
            self.store.put_stack_part(&part).await?;
            made.insert(rec.name.clone(), part);
            self.save(&made);
        }
        let gone: Vec<String> = made
            .keys()
            .filter(|n| !recs.iter().any(|r| &r.name == *n))
            .cloned()
            .collect();
        for name in gone {
            self.remove(&name).await;
            self.store.delete_stack_part(&name, &self.node).await?;
            made.remove(&name);
            self.save(&made);
        }
        Ok(())
    }

    /// This node's part of `rec`, made the way `netd up -d` makes it.
    async fn make(&self, rec: &StackRecord) -> StackPartRecord {
        let (name, text, node, opts) = (
            rec.name.clone(),
            rec.text.clone(),
            self.node.clone(),
            self.opts.clone(),
        );
        let res = tokio::task::spawn_blocking(move || crate::stack::up_part(&name, &text, &node, &opts))
            .await
            .map_err(|e| anyhow::anyhow!("stack task panicked: {e}"))
            .and_then(|r| r);
        let mut part = StackPartRecord {
            stack: rec.name.clone(),
            id: rec.id.clone(),
            node: self.node.clone(),
            ok: true,
            message: String::new(),
            sandboxes: Vec::new(),
        };
        match res {
            Ok(sbs) => {
                tracing::info!(stack = %rec.name, id = %rec.id, sandboxes = ?sbs, "cluster: made this node's part of the stack");
                part.sandboxes = sbs;
            }
            Err(e) => {
                tracing::warn!(stack = %rec.name, id = %rec.id, error = %format!("{e:#}"), "cluster: cannot make this node's part of the stack");
                part.ok = false;
                part.message = format!("{e:#}");
            }
        }
        part
    }

    async fn remove(&self, name: &str) {
        let (n, opts) = (name.to_string(), self.opts.clone());
        let res = tokio::task::spawn_blocking(move || crate::stack::admin::down_part(&n, &opts)).await;
        match res {
            Ok(Ok(())) => tracing::info!(stack = %name, "cluster: removed this node's part of the stack"),
            Ok(Err(e)) => {
                tracing::warn!(stack = %name, error = %format!("{e:#}"), "cluster: cannot remove this node's part of the stack")
            }
            Err(e) => tracing::warn!(stack = %name, error = %e, "cluster: stack task panicked"),
        }
    }

    /// `netd up` made this node's part itself: publish the file for the others.
    pub async fn publish(&self, req: PublishRequest) -> Result<StackRecord, ClusterError> {
        crate::model::validate_name(&req.name).map_err(|e| ClusterError::Invalid(format!("stack {e}")))?;
        crate::stack::file::StackFile::from_text(&req.text).map_err(ClusterError::Invalid)?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let rec = StackRecord {
            name: req.name.clone(),
            id: format!("{}-{}", self.node, created.as_nanos()),
            text: req.text,
            created_by: self.node.clone(),
            created: created.as_secs(),
        };
        let mut made = self.made.lock().await;
        let part = StackPartRecord {
            stack: rec.name.clone(),
            id: rec.id.clone(),
            node: self.node.clone(),
            ok: true,
            message: String::new(),
            sandboxes: req.sandboxes,
        };
        // Part first: this node's loop must not make again what `netd up` just made.
        if nodes_of(&rec.text).contains(&self.node) || made.contains_key(&rec.name) {
            self.store.put_stack_part(&part).await?;
            made.insert(rec.name.clone(), part);
            self.save(&made);
        }
        self.store.put_stack(&rec).await?;
        tracing::info!(stack = %rec.name, id = %rec.id, "cluster: stack published for its nodes");
        Ok(rec)
    }

    /// `netd down` removed this node's part itself: the others remove theirs.
    pub async fn unpublish(&self, name: &str) -> Result<(), ClusterError> {
        let mut made = self.made.lock().await;
        if made.remove(name).is_some() {
            self.save(&made);
        }
        self.store.delete_stack_part(name, &self.node).await?;
        if !self.store.delete_stack(name).await? {
            return Err(ClusterError::NotFound(format!("no stack {name} in the cluster")));
        }
        tracing::info!(stack = %name, "cluster: stack withdrawn; each node removes its part");
        Ok(())
    }

    pub async fn view(&self, name: &str) -> Result<StackView, ClusterError> {
        let rec = self
            .store
            .stacks()
            .await?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| ClusterError::NotFound(format!("no stack {name} in the cluster")))?;
        let parts = self.store.stack_parts(name).await?;
        Ok(StackView { stack: rec, parts })
    }
}

/// `/v1/cluster/stacks`: publish (POST), list (GET), one stack with its parts (GET), and
/// withdraw (DELETE). The parts of a withdrawn stack go as their nodes remove them:
/// `GET /v1/cluster/stacks/NAME/parts` lists what is left.
pub fn router<S: ClusterStore>(stacks: Arc<Stacks<S>>) -> Router {
    Router::new()
        .route("/v1/cluster/stacks", get(list::<S>).post(publish::<S>))
        .route("/v1/cluster/stacks/{name}", get(one::<S>).delete(withdraw::<S>))
        .route("/v1/cluster/stacks/{name}/parts", get(parts::<S>))
        .with_state(stacks)
}

async fn list<S: ClusterStore>(State(s): State<Arc<Stacks<S>>>) -> Result<Response, ApiError> {
    let mut out = Vec::new();
    for rec in s.store.stacks().await? {
        let parts = s.store.stack_parts(&rec.name).await?;
        out.push(StackView { stack: rec, parts });
    }
    Ok(Json(out).into_response())
}

async fn publish<S: ClusterStore>(State(s): State<Arc<Stacks<S>>>, b: Body) -> Result<Response, ApiError> {
    let req: PublishRequest = super::api::body(b).await?;
    let rec = s.publish(req).await?;
    Ok((StatusCode::CREATED, Json(rec)).into_response())
}

async fn one<S: ClusterStore>(
    State(s): State<Arc<Stacks<S>>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(s.view(&name).await?).into_response())
}

async fn parts<S: ClusterStore>(
    State(s): State<Arc<Stacks<S>>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(s.store.stack_parts(&name).await?).into_response())
}

async fn withdraw<S: ClusterStore>(
    State(s): State<Arc<Stacks<S>>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.unpublish(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_a_file_places_sandboxes_on() {
        let text = r#"
name = "s"
[[network]]
name = "ov"
driver = "overlay"
[[sandbox]]
name = "a"
node = "h2"
networks = ["ov"]
[[sandbox]]
name = "b"
node = "h1"
networks = ["ov"]
[[sandbox]]
name = "c"
node = "h2"
networks = ["ov"]
"#;
        assert_eq!(nodes_of(text), ["h1", "h2"]);
        assert!(nodes_of("name = \"s\"\n[[sandbox]]\nname = \"a\"\n").is_empty());
        assert!(nodes_of("not toml [").is_empty());
    }
}
