//! The API's metrics: every mutating request timed by operation and result
//! (`netd_operation_duration_seconds`), and the Prometheus endpoint
//! (`netd daemon --metrics-addr`), a TCP listener of its own, apart from the API socket.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::Shared;
use crate::observe::Observer;

/// The operation an API request performs, for its latency histogram; `None` for reads.
pub fn operation(method: &Method, path: &str) -> Option<&'static str> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let op = match (method.as_str(), parts.as_slice()) {
        ("POST", ["v1", "networks"]) => "network_create",
        ("POST", ["v1", "networks", "prune"]) => "network_prune",
        ("DELETE", ["v1", "networks", _]) => "network_rm",
        ("POST", ["v1", "networks", _, "connect"]) => "network_connect",
        ("POST", ["v1", "networks", _, "disconnect"]) => "network_disconnect",
        ("POST", ["v1", "attach"]) => "attach",
        ("POST", ["v1", "sandboxes"]) => "sandbox_create",
        ("DELETE", ["v1", "sandboxes", _]) => "sandbox_rm",
        ("POST", ["v1", "services"]) => "service_create",
        ("DELETE", ["v1", "services", _, _]) => "service_rm",
        ("POST" | "PATCH", ["v1", "services", _, _]) => "service_update",
        ("POST", ["v1", "k8s", "apply"]) => "k8s_apply",
        ("POST", ["v1", "k8s", "delete"]) => "k8s_delete",
        _ => return None,
    };
    Some(op)
}

/// Times `req` when it is an operation (`operation`).
pub async fn time_operations(obs: Arc<Observer>, req: Request, next: Next) -> Response {
    let Some(op) = operation(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let t0 = Instant::now();
    let resp = next.run(req).await;
    let ok = resp.status().is_success();
    obs.metrics.operation(op, ok, t0.elapsed());
    resp
}

async fn scrape(engine: Shared, obs: Arc<Observer>) -> Response {
    let counts =
        tokio::task::spawn_blocking(move || engine.lock().unwrap_or_else(|p| p.into_inner()).model_counts())
            .await;
    match counts {
        Ok(c) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            obs.metrics.render(&c),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    engine: Shared,
    obs: Arc<Observer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(move || scrape(engine.clone(), obs.clone())));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_operations_not_reads() {
        assert_eq!(operation(&Method::POST, "/v1/networks"), Some("network_create"));
        assert_eq!(
            operation(&Method::DELETE, "/v1/sandboxes/web"),
            Some("sandbox_rm")
        );
        assert_eq!(
            operation(&Method::POST, "/v1/networks/front/connect"),
            Some("network_connect")
        );
        assert_eq!(
            operation(&Method::PATCH, "/v1/services/default/web"),
            Some("service_update")
        );
        assert_eq!(operation(&Method::GET, "/v1/networks"), None);
        assert_eq!(operation(&Method::GET, "/v1/events"), None);
    }
}
