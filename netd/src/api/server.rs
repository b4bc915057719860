//! The API server. Handlers parse the body themselves (so malformed JSON and oversized
//! bodies get the same JSON error shape as everything else) and run engine operations on
//! the blocking pool under the engine lock.

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixListener;

pub mod attach;
pub mod error;
pub mod events;
pub mod observe;

use super::types::{ConnectRequest, DisconnectRequest, ErrorReason};
use super::MAX_BODY;
use crate::engine::{Engine, EngineError};
use crate::model::{EndpointRequest, NetworkRequest, SandboxRequest, ServiceRequest};
pub use error::ApiError;

pub type Shared = Arc<Mutex<Engine>>;

type ApiResult<T> = Result<T, ApiError>;

async fn body<T: DeserializeOwned>(b: Body) -> ApiResult<T> {
    let bytes = to_bytes(b, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorReason::BadBody,
            format!("request body is larger than {MAX_BODY} bytes"),
        )
    })?;
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorReason::BadBody,
            "request body is empty; expected JSON",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorReason::BadBody,
            format!("malformed JSON: {e}"),
        )
    })
}

/// Runs `f` with the engine locked, off the async workers (kernel calls block).
async fn with_engine<T: Send + 'static>(
    st: &Shared,
    f: impl FnOnce(&mut Engine) -> Result<T, EngineError> + Send + 'static,
) -> ApiResult<T> {
    let st = st.clone();
    let op = move || {
        let mut e = st.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut e)
    };
    // On the daemon's multi-threaded runtime the operation runs on this worker thread,
    // whose other tasks move elsewhere meanwhile: no hand-over to a blocking-pool thread
    // and back (two wake-ups, ~0.1 ms per request here). Elsewhere (a current-thread
    // runtime in tests) it goes to the blocking pool.
    if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        let r = tokio::task::block_in_place(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)));
        return r
            .map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorReason::Internal,
                    "operation panicked",
                )
            })?
            .map_err(ApiError::from);
    }
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorReason::Internal,
                format!("operation panicked: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn info(State(st): State<Shared>) -> ApiResult<Json<serde_json::Value>> {
    with_engine(&st, |e| {
        Ok(serde_json::json!({
            "networks": e.networks().count(),
            "sandboxes": e.sandboxes().count(),
            "endpoints": e.sandboxes().map(|s| s.endpoints.len()).sum::<usize>(),
            "netns_dir": e.config().netns_dir,
            "pid": std::process::id(),
            "reconcile": e.last_reconcile(),
        }))
    })
    .await
    .map(Json)
}

async fn list_networks(State(st): State<Shared>) -> ApiResult<Response> {
    let v = with_engine(&st, |e| {
        let names: Vec<String> = e.networks().map(|n| n.name.clone()).collect();
        names
            .iter()
            .map(|n| e.network_view(n))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(Json(v).into_response())
}

async fn create_network(State(st): State<Shared>, b: Body) -> ApiResult<Response> {
    let req: NetworkRequest = body(b).await?;
    Ok(created(with_engine(&st, move |e| e.create_network(&req)).await?))
}

async fn get_network(State(st): State<Shared>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(Json(with_engine(&st, move |e| e.network_view(&name)).await?).into_response())
}

async fn delete_network(State(st): State<Shared>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    with_engine(&st, move |e| e.remove_network(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune_networks(State(st): State<Shared>) -> ApiResult<Response> {
    let removed = with_engine(&st, |e| e.prune_networks()).await?;
    Ok(Json(serde_json::json!({ "removed": removed })).into_response())
}

async fn connect(State(st): State<Shared>, Path(net): Path<String>, b: Body) -> ApiResult<Response> {
    let r: ConnectRequest = body(b).await?;
    let req = EndpointRequest {
        network: net.clone(),
        ip: r.ip,
        ip6: r.ip6,
        aliases: r.aliases,
        mac: r.mac,
        ifname: r.ifname,
        routes: r.routes,
        no_default_route: r.no_default_route,
    };
    Ok(created(
        with_engine(&st, move |e| e.connect(&net, &req, &r.sandbox)).await?,
    ))
}

async fn disconnect(State(st): State<Shared>, Path(net): Path<String>, b: Body) -> ApiResult<StatusCode> {
    let r: DisconnectRequest = body(b).await?;
    with_engine(&st, move |e| e.disconnect(&net, &r.sandbox)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_pools(State(st): State<Shared>) -> ApiResult<Response> {
    let v = with_engine(&st, |e| {
        Ok(e.pools()
            .map(|(k, p)| serde_json::json!({ "key": k, "pool": p }))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(v).into_response())
}

async fn list_sandboxes(State(st): State<Shared>) -> ApiResult<Response> {
    Ok(Json(with_engine(&st, |e| Ok(e.sandboxes().cloned().collect::<Vec<_>>())).await?).into_response())
}

async fn create_sandbox(State(st): State<Shared>, b: Body) -> ApiResult<Response> {
    let req: SandboxRequest = body(b).await?;
    Ok(created(with_engine(&st, move |e| e.create_sandbox(&req)).await?))
}

async fn get_sandbox(State(st): State<Shared>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(Json(with_engine(&st, move |e| e.sandbox(&name).cloned()).await?).into_response())
}

async fn delete_sandbox(State(st): State<Shared>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    with_engine(&st, move |e| e.remove_sandbox(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The DNS records a sandbox sees (`netctl dns ls`).
async fn sandbox_dns(State(st): State<Shared>, Path(name): Path<String>) -> ApiResult<Response> {
    let v = with_engine(&st, move |e| {
        e.sandbox(&name)?;
        let d = e.dns().ok_or(EngineError::NoDnsServer)?;
        d.listing(&name).ok_or_else(|| EngineError::NoDns(name.clone()))
    })
    .await?;
    Ok(Json(v).into_response())
}

/// Services with their live backends (`ServiceView`).
async fn list_services(State(st): State<Shared>) -> ApiResult<Response> {
    let v = with_engine(&st, |e| {
        Ok(e.services().map(|s| e.service_view(s)).collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(v).into_response())
}

/// `POST` or `PATCH /v1/services/{namespace}/{name}`: `ServiceUpdate`.
async fn update_service(
    State(st): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    b: Body,
) -> ApiResult<Response> {
    let up: crate::engine::ServiceUpdate = body(b).await?;
    let v = with_engine(&st, move |e| {
        let s = e.update_service(&ns, &name, &up)?;
        Ok(e.service_view(&s))
    })
    .await?;
    Ok(Json(v).into_response())
}

async fn create_service(State(st): State<Shared>, b: Body) -> ApiResult<Response> {
    let req: ServiceRequest = body(b).await?;
    Ok(created(with_engine(&st, move |e| e.create_service(&req)).await?))
}

async fn get_service(
    State(st): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let v = with_engine(&st, move |e| e.service(&ns, &name).map(|s| e.service_view(s))).await?;
    Ok(Json(v).into_response())
}

async fn delete_service(
    State(st): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    with_engine(&st, move |e| e.remove_service(&ns, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/k8s/apply`: a Kubernetes object (or `List`), or a JSON array of them.
async fn k8s_apply(State(st): State<Shared>, b: Body) -> ApiResult<Response> {
    let docs: serde_json::Value = body(b).await?;
    Ok(Json(with_engine(&st, move |e| e.apply_k8s(&docs)).await?).into_response())
}

/// `POST /v1/k8s/delete`: the same input; deletes the objects it names.
async fn k8s_delete(State(st): State<Shared>, b: Body) -> ApiResult<Response> {
    let docs: serde_json::Value = body(b).await?;
    Ok(Json(with_engine(&st, move |e| e.delete_k8s(&docs)).await?).into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorReason::NoSuchRoute,
        "no such API endpoint",
    )
}

pub fn router(engine: Shared) -> Router {
    // Set before serving (`daemon::run`); an engine without one serves no events.
    let obs = engine
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .observer()
        .cloned();
    let events_obs = obs.clone();
    let r = Router::new()
        .route(
            "/v1/events",
            get(move |uri: axum::http::Uri| events::handler(events_obs.clone(), uri)),
        )
        .route("/v1/health", get(health))
        .route("/v1/info", get(info))
        .route("/v1/networks", get(list_networks).post(create_network))
        .route("/v1/networks/prune", post(prune_networks))
        .route("/v1/networks/{name}", get(get_network).delete(delete_network))
        .route("/v1/networks/{name}/connect", post(connect))
        .route("/v1/networks/{name}/disconnect", post(disconnect))
        .route("/v1/attach", post(attach::handler))
        .route("/v1/pools", get(list_pools))
        .route("/v1/sandboxes", get(list_sandboxes).post(create_sandbox))
        .route("/v1/sandboxes/{name}", get(get_sandbox).delete(delete_sandbox))
        .route("/v1/sandboxes/{name}/dns", get(sandbox_dns))
        .route("/v1/services", get(list_services).post(create_service))
        .route(
            "/v1/services/{namespace}/{name}",
            get(get_service)
                .delete(delete_service)
                .post(update_service)
                .patch(update_service),
        )
        .route("/v1/k8s/apply", post(k8s_apply))
        .route("/v1/k8s/delete", post(k8s_delete))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorReason::MethodNotAllowed,
                "method not allowed on this API endpoint",
            )
        })
        .with_state(engine);
    match obs {
        Some(o) => r.layer(axum::middleware::from_fn(move |req, next| {
            observe::time_operations(o.clone(), req, next)
        })),
        None => r,
    }
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    engine: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(engine), shutdown).await
}

/// Serves `router` on a unix `listener` until `shutdown` resolves (the API and the Docker
/// plugin socket alike).
pub async fn serve_router(
    listener: UnixListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
