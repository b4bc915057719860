//! The cluster's part of the local API, served beside the engine's on the same socket
//! when the daemon runs with `--cluster` (a daemon without answers 404 on these paths,
//! which netctl turns into "start netd with --cluster"):
//!
//! - `GET /v1/cluster/nodes`: the nodes whose lease is alive, with their endpoint counts;
//! - `GET|POST /v1/cluster/networks`, `DELETE /v1/cluster/networks/{name}`: overlay
//!   networks in the store (the node makes its local side before answering);
//! - `GET|POST /v1/cluster/services`, `DELETE /v1/cluster/services/{namespace}/{name}`:
//!   services on overlay networks (`services.rs`).

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
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
        .route("/v1/cluster/networks/{name}", delete(remove::<S>))
        .route(
            "/v1/cluster/services",
            get(services::<S>).post(create_service::<S>),
        )
        .route(
            "/v1/cluster/services/{namespace}/{name}",
            delete(remove_service::<S>),
        )
        .with_state(agent)
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

async fn remove_service<S: ClusterStore>(
    State(a): State<Arc<Agent<S>>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    a.delete_service(&namespace, &name).await?;
    a.pass().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn body<T: serde::de::DeserializeOwned>(b: Body) -> Result<T, ApiError> {
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
    // The node that was asked has the network before it answers.
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
