//! The cluster's part of the local API, served beside the engine's on the same socket
//! when the daemon runs with `--cluster` (a daemon without answers 404 on these paths,
//! which netctl turns into "start netd with --cluster"):
//!
//! - `GET /v1/cluster/nodes`: the nodes whose lease is alive, with their endpoint counts;
//! - `GET|POST /v1/cluster/networks`, `GET|DELETE /v1/cluster/networks/{name}`: overlay
//!   networks in the store (a node makes its local side only when an endpoint comes);
//! - `GET|POST /v1/cluster/services`, `DELETE /v1/cluster/services/{namespace}/{name}`:
//!   services on overlay networks (`services.rs`).
//!
//! `wrap` also puts `materialize_first` in front of the engine's attach routes: an
//! overlay network of the store that this node does not hold yet is made before the
//! engine sees the request.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use super::agent::OverlayRequest;
use super::{Agent, ClusterError, ClusterStore};
use crate::api::server::ApiError;
use crate::api::types::ErrorReason;

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        use ErrorReason as R;
        use StatusCode as S;
        let (status, reason) = match &e {
            ClusterError::Invalid(_) | ClusterError::BadUrl(_) => (S::BAD_REQUEST, R::Invalid),
            ClusterError::Conflict(_) => (S::CONFLICT, R::Conflict),
            ClusterError::NotFound(_) => (S::NOT_FOUND, R::NoSuchNetwork),
            ClusterError::Store { .. } => (S::SERVICE_UNAVAILABLE, R::StoreFailed),
            ClusterError::Engine(inner) => crate::api::server::error::status_of(inner),
        };
        ApiError::new(status, reason, e.to_string())
    }
}

pub fn router<S: ClusterStore>(agent: Arc<Agent<S>>) -> Router {
    Router::new()
        .route("/v1/cluster/nodes", get(nodes::<S>))
        .route("/v1/cluster/networks", get(networks::<S>).post(create::<S>))
        .route(
            "/v1/cluster/networks/{name}",
            get(network::<S>).delete(remove::<S>),
        )
        .route("/v1/cluster/rotate-keys", post(rotate_keys::<S>))
        .route(
            "/v1/cluster/services",
            get(services::<S>).post(create_service::<S>),
        )
        .route(
            "/v1/cluster/services/{namespace}/{name}",
            delete(remove_service::<S>).patch(update_service::<S>),
        )
        .with_state(agent)
}

/// The engine's routes (`engine`) with the cluster's beside them and `materialize_first`
/// in front of all.
pub fn wrap<S: ClusterStore>(engine: Router, agent: Arc<Agent<S>>) -> Router {
    engine
        .merge(router(Arc::clone(&agent)))
        .layer(axum::middleware::from_fn_with_state(
            agent,
            materialize_first::<S>,
        ))
}

/// What an attach asks of one network: addresses from its pool (endpoints without a
/// static `ip`), and static IPv4 addresses.
#[derive(Debug, Default, PartialEq, Eq)]
struct Asks {
    dynamic: usize,
    statics: Vec<Ipv4Addr>,
}

/// The networks an attach request names, with what it asks of each: `POST
/// /v1/sandboxes` (each of `networks`), `POST /v1/networks/{name}/connect`, `POST
/// /v1/attach` (the sandbox's networks, and its network with nothing asked). Nothing for
/// any other request, or a body that is not JSON (the engine's handler then answers it
/// as usual; so does it for a static address that is not IPv4).
fn attach_networks(method: &Method, path: &str, body: &[u8]) -> BTreeMap<String, Asks> {
    let mut out: BTreeMap<String, Asks> = BTreeMap::new();
    if method != Method::POST {
        return out;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return out;
    };
    let add = |out: &mut BTreeMap<String, Asks>, net: &str, e: &serde_json::Value| {
        let a = out.entry(net.to_string()).or_default();
        match e["ip"].as_str() {
            None => a.dynamic += 1,
            Some(ip) => a.statics.extend(ip.parse::<Ipv4Addr>().ok()),
        }
    };
    let of_sandbox = |sb: &serde_json::Value, out: &mut BTreeMap<String, Asks>| {
        for e in sb["networks"].as_array().into_iter().flatten() {
            if let Some(n) = e["network"].as_str() {
                add(out, n, e);
            }
        }
    };
    if let Some(net) = path
        .strip_prefix("/v1/networks/")
        .and_then(|r| r.strip_suffix("/connect"))
    {
        add(&mut out, net, &v);
        return out;
    }
    match path {
        "/v1/sandboxes" => of_sandbox(&v, &mut out),
        "/v1/attach" => {
            of_sandbox(&v["sandbox"], &mut out);
            if let Some(n) = v["network"]["name"].as_str() {
                out.entry(n.to_string()).or_default();
            }
        }
        _ => {}
    }
    out
}

fn is_attach(method: &Method, path: &str) -> bool {
    method == Method::POST
        && (path == "/v1/sandboxes"
            || path == "/v1/attach"
            || (path.starts_with("/v1/networks/") && path.ends_with("/connect")))
}

/// Makes the overlay networks an attach names on this node first (`Agent::ensure_local`),
/// holding them (`Agent::hold`) until the engine has answered, so the agent's pass cannot
/// take them away between the two. A store that cannot be reached for a network the node
/// lacks fails the request with the store's error, and nothing is made.
pub async fn materialize_first<S: ClusterStore>(
    State(a): State<Arc<Agent<S>>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !is_attach(req.method(), req.uri().path()) {
        return Ok(next.run(req).await);
    }
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, crate::api::MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorReason::BadBody,
            "request body too large",
        )
    })?;
    let nets = attach_networks(&parts.method, parts.uri.path(), &bytes);
    let mut holds = Vec::with_capacity(nets.len());
    // Attaches to overlay networks one at a time (a cheap check first: a network held
    // here that is not overlay needs none of this), so the room `make_room` found and the
    // blocks `claim_static` took are still there when the engine allocates.
    let serial = if nets.is_empty() {
        None
    } else {
        Some(a.attach_lock.lock().await)
    };
    // Static addresses first: one another node holds is refused before anything is made.
    let mut claimed = Vec::new();
    for (n, asks) in &nets {
        match a.claim_static(n, &asks.statics).await {
            Ok(b) => claimed.push((n, b)),
            Err(e) => {
                unclaim(&a, &claimed).await;
                return Err(e.into());
            }
        }
    }
    for (n, asks) in &nets {
        holds.push(a.hold(n));
        let made = match a.ensure_local(n).await {
            Ok(true) => a.make_room(n, asks.dynamic).await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            drop(holds);
            unclaim(&a, &claimed).await;
            return Err(e.into());
        }
    }
    let res = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    drop(holds);
    if !res.status().is_success() {
        unclaim(&a, &claimed).await;
    }
    drop(serial);
    Ok(res)
}

/// After a failed attach: the blocks claimed for its static addresses go back unless the
/// network is held here.
async fn unclaim<S: ClusterStore>(a: &Agent<S>, claimed: &[(&String, Vec<ipnetwork::Ipv4Network>)]) {
    for (n, b) in claimed {
        if let Err(e) = a.unclaim(n, b).await {
            tracing::warn!(network = %n, error = %e, "cluster: cannot give a block back; it stays claimed");
        }
    }
}

async fn nodes<S: ClusterStore>(State(a): State<Arc<Agent<S>>>) -> Result<Response, ApiError> {
    Ok(Json(a.nodes().await?).into_response())
}

async fn networks<S: ClusterStore>(State(a): State<Arc<Agent<S>>>) -> Result<Response, ApiError> {
    Ok(Json(a.store().networks().await?).into_response())
}

async fn services<S: ClusterStore>(State(a): State<Arc<Agent<S>>>) -> Result<Response, ApiError> {
    Ok(Json(a.services().await?).into_response())
}

async fn create_service<S: ClusterStore>(
    State(a): State<Arc<Agent<S>>>,
    b: Body,
) -> Result<Response, ApiError> {
    let req: crate::model::ServiceRequest = body(b).await?;
    let rec = a.create_service(&req).await?;
    // The node that was asked holds its load-balancer address before it answers.
    a.pass().await?;
    Ok((StatusCode::CREATED, Json(rec)).into_response())
}

async fn update_service<S: ClusterStore>(
    State(a): State<Arc<Agent<S>>>,
    Path((namespace, name)): Path<(String, String)>,
    b: Body,
) -> Result<Response, ApiError> {
    let up: crate::engine::ServiceUpdate = body(b).await?;
    let rec = a.update_service(&namespace, &name, &up).await?;
    Ok(Json(rec).into_response())
}

async fn remove_service<S: ClusterStore>(
    State(a): State<Arc<Agent<S>>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    a.delete_service(&namespace, &name).await?;
    a.pass().await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn body<T: serde::de::DeserializeOwned>(b: Body) -> Result<T, ApiError> {
    let bytes = to_bytes(b, crate::api::MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorReason::BadBody,
            "request body too large",
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorReason::BadBody,
            format!("malformed JSON: {e}"),
        )
    })
}

/// One overlay network of the store, whether or not this node holds it.
async fn network<S: ClusterStore>(
    State(a): State<Arc<Agent<S>>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let nets = a.store().networks().await?;
    let rec = nets
        .into_iter()
        .find(|n| n.name == name)
        .ok_or_else(|| ClusterError::NotFound(format!("no overlay network {name}")))?;
    let mut v = serde_json::to_value(&rec).map_err(|e| ClusterError::Invalid(e.to_string()))?;
    if let Some(enc) = a.encryption_view(&rec).await? {
        v["encryption"] = serde_json::to_value(enc).map_err(|e| ClusterError::Invalid(e.to_string()))?;
    }
    Ok(Json(v).into_response())
}

/// `netctl cluster rotate-keys`: answers once the new key sends (every node has it).
async fn rotate_keys<S: ClusterStore>(State(a): State<Arc<Agent<S>>>) -> Result<Response, ApiError> {
    let r = a.rotate_keys().await?;
    let mut v = serde_json::json!({});
    if let Some(ring) = &r.ipsec {
        v["key_epoch"] = ring.primary.into();
        v["keys"] = ring.keys.iter().map(|k| k.epoch).collect::<Vec<_>>().into();
    }
    if let Some((epoch, recs)) = &r.wireguard {
        v["wireguard"] = serde_json::json!({
            "key_epoch": epoch,
            "nodes": recs
                .iter()
                .map(|r| serde_json::json!({"node": r.node, "public_key": r.public_key, "key_epoch": r.epoch}))
                .collect::<Vec<_>>(),
        });
    }
    Ok(Json(v).into_response())
}

async fn create<S: ClusterStore>(State(a): State<Arc<Agent<S>>>, b: Body) -> Result<Response, ApiError> {
    let req: OverlayRequest = body(b).await?;
    let rec = a.create_network(&req).await?;
    // Only stored: a node makes it when a first endpoint of its own comes.
    a.pass().await?;
    Ok((StatusCode::CREATED, Json(rec)).into_response())
}

async fn remove<S: ClusterStore>(
    State(a): State<Arc<Agent<S>>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    a.delete_network(&name).await?;
    a.pass().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_networks_an_attach_names() {
        let post = Method::POST;
        let d = |dynamic: usize, statics: &[&str]| Asks {
            dynamic,
            statics: statics.iter().map(|s| s.parse().unwrap()).collect(),
        };
        let sb = br#"{"name":"a","networks":[{"network":"ov"},{"network":"br","ip":"10.0.0.9"},{"network":"ov"}]}"#;
        let got = attach_networks(&post, "/v1/sandboxes", sb);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["br", "ov"]);
        assert_eq!((&got["br"], &got["ov"]), (&d(0, &["10.0.0.9"]), &d(2, &[])));
        let got = attach_networks(&post, "/v1/networks/ov/connect", br#"{"sandbox":"a","ip":null}"#);
        assert_eq!(got["ov"], d(1, &[]));
        let at = br#"{"network":{"name":"n1"},"sandbox":{"name":"a","networks":[{"network":"n1"}]}}"#;
        assert_eq!(attach_networks(&post, "/v1/attach", at)["n1"], d(1, &[]));
        assert!(attach_networks(&post, "/v1/sandboxes", b"not json").is_empty());
        assert!(attach_networks(&Method::GET, "/v1/networks/ov/connect", b"").is_empty());
        assert!(attach_networks(&post, "/v1/networks", br#"{"name":"x"}"#).is_empty());
        assert!(is_attach(&post, "/v1/networks/ov/connect"));
        assert!(!is_attach(&post, "/v1/networks/ov/disconnect"));
        assert!(!is_attach(&Method::DELETE, "/v1/sandboxes"));
    }
}
