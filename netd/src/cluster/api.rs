//! The cluster's part of the local API, served beside the engine's on the same socket
//! when the daemon runs with `--cluster` (a daemon without answers 404 on these paths,
//! which netctl turns into "start netd with --cluster"):
//!
//! - `GET /v1/cluster/nodes`: the nodes whose lease is alive, with their endpoint counts;
//! - `GET|POST /v1/cluster/networks`, `GET|DELETE /v1/cluster/networks/{name}`: overlay
//!   networks in the store (a node makes its local side only when an endpoint comes).
//!
//! `wrap` also puts `materialize_first` in front of the engine's attach routes: an
//! overlay network of the store that this node does not hold yet is made before the
//! engine sees the request.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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

/// The networks an attach request names: `POST /v1/sandboxes` (each of `networks`),
/// `POST /v1/networks/{name}/connect`, `POST /v1/attach` (its network and the sandbox's
/// networks). Nothing for any other request, or a body that is not JSON (the engine's
/// handler then answers it as usual).
fn attach_networks(method: &Method, path: &str, body: &[u8]) -> Vec<String> {
    if method != Method::POST {
        return Vec::new();
    }
    if let Some(net) = path
        .strip_prefix("/v1/networks/")
        .and_then(|r| r.strip_suffix("/connect"))
    {
        return vec![net.to_string()];
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let of_sandbox = |sb: &serde_json::Value| -> Vec<String> {
        sb["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["network"].as_str().map(str::to_string))
            .collect()
    };
    let mut out = match path {
        "/v1/sandboxes" => of_sandbox(&v),
        "/v1/attach" => {
            let mut n = of_sandbox(&v["sandbox"]);
            n.extend(v["network"]["name"].as_str().map(str::to_string));
            n
        }
        _ => Vec::new(),
    };
    out.sort();
    out.dedup();
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
    for n in &nets {
        holds.push(a.hold(n));
        a.ensure_local(n).await?;
    }
    let res = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    drop(holds);
    Ok(res)
}

async fn nodes<S: ClusterStore>(State(a): State<Arc<Agent<S>>>) -> Result<Response, ApiError> {
    Ok(Json(a.nodes().await?).into_response())
}

async fn networks<S: ClusterStore>(State(a): State<Arc<Agent<S>>>) -> Result<Response, ApiError> {
    Ok(Json(a.store().networks().await?).into_response())
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
    Ok(Json(rec).into_response())
}

async fn create<S: ClusterStore>(State(a): State<Arc<Agent<S>>>, b: Body) -> Result<Response, ApiError> {
    let bytes = to_bytes(b, crate::api::MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorReason::BadBody,
            "request body too large",
        )
    })?;
    let req: OverlayRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorReason::BadBody,
            format!("malformed JSON: {e}"),
        )
    })?;
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
        let sb = br#"{"name":"a","networks":[{"network":"ov"},{"network":"br"},{"network":"ov"}]}"#;
        assert_eq!(attach_networks(&post, "/v1/sandboxes", sb), ["br", "ov"]);
        assert_eq!(attach_networks(&post, "/v1/networks/ov/connect", b"{}"), ["ov"]);
        let at = br#"{"network":{"name":"n1"},"sandbox":{"name":"a","networks":[{"network":"n1"}]}}"#;
        assert_eq!(attach_networks(&post, "/v1/attach", at), ["n1"]);
        assert!(attach_networks(&post, "/v1/sandboxes", b"not json").is_empty());
        assert!(attach_networks(&Method::GET, "/v1/networks/ov/connect", b"").is_empty());
        assert!(attach_networks(&post, "/v1/networks", br#"{"name":"x"}"#).is_empty());
        assert!(is_attach(&post, "/v1/networks/ov/connect"));
        assert!(!is_attach(&post, "/v1/networks/ov/disconnect"));
        assert!(!is_attach(&Method::DELETE, "/v1/sandboxes"));
    }
}
