//! Docker's libnetwork remote plugin protocol (NetworkDriver + IpamDriver), served on
//! `<plugin-dir>/netd.sock` so `docker network create -d netd --ipam-driver netd` works.
//!
//! Every call is `POST /<Kind>.<Method>` with a JSON body (empty for Activate and the
//! capability calls). Answers are JSON; errors are `{"Err": "..."}` with status 500 (the
//! docker CLI prints the text), unknown methods 404 (libnetwork treats that as "not
//! implemented" for the optional ones). `handle` is the whole protocol as a plain
//! function over the engine, so it is tested without sockets.

mod ipam;
mod network;
pub mod types;

use std::future::Future;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::net::UnixListener;

use super::server::Shared;
use super::MAX_BODY;
use crate::engine::{Engine, EngineError};
use types::CONTENT_TYPE;

/// A protocol-level failure: what the docker user reads.
#[derive(Debug)]
pub struct PluginError {
    pub status: StatusCode,
    pub msg: String,
}

impl PluginError {
    pub fn bad(msg: impl Into<String>) -> Self {
        PluginError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            msg: msg.into(),
        }
    }
}

impl From<EngineError> for PluginError {
    fn from(e: EngineError) -> Self {
        PluginError::bad(format!("netd: {e}"))
    }
}

pub type PResult = Result<Value, PluginError>;

/// Parses a request body; names the method when it is empty or not the JSON expected.
pub fn parse<T: DeserializeOwned>(method: &str, body: &[u8]) -> Result<T, PluginError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| PluginError::bad(format!("netd: {method}: request body is not UTF-8")))?;
    let t = text.trim();
    if t.is_empty() || t == "null" {
        return Err(PluginError::bad(format!(
            "netd: {method}: request body is empty; expected a JSON object"
        )));
    }
    serde_json::from_str(t).map_err(|e| PluginError::bad(format!("netd: {method}: malformed request: {e}")))
}

/// Methods answered without the engine (no lock, no state).
fn stateless(method: &str) -> Option<Value> {
    Some(match method {
        "Plugin.Activate" => json!({"Implements": ["NetworkDriver", "IpamDriver"]}),
        "NetworkDriver.GetCapabilities" => json!({"Scope": "local", "ConnectivityScope": "local"}),
        "NetworkDriver.AllocateNetwork" => json!({"Options": {}}),
        "NetworkDriver.FreeNetwork" | "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => {
            json!({})
        }
        "IpamDriver.GetCapabilities" => json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}),
        "IpamDriver.GetDefaultAddressSpaces" => json!({
            "LocalDefaultAddressSpace": ipam::LOCAL_SPACE,
            "GlobalDefaultAddressSpace": ipam::GLOBAL_SPACE,
        }),
        _ => return None,
    })
}

/// One protocol call: `path` is the request path (`/NetworkDriver.Join`).
pub fn handle(engine: &mut Engine, path: &str, body: &[u8]) -> (StatusCode, Value) {
    let method = path.trim_start_matches('/');
    if method == "Plugin.Activate" {
        // dockerd activates after each of its starts, before any other call.
        engine.docker_allow_forward();
    }
    if let Some(v) = stateless(method) {
        return (StatusCode::OK, v);
    }
    let r = match method {
        "NetworkDriver.CreateNetwork" => network::create_network(engine, body),
        "NetworkDriver.DeleteNetwork" => network::delete_network(engine, body),
        "NetworkDriver.CreateEndpoint" => network::create_endpoint(engine, body),
        "NetworkDriver.DeleteEndpoint" => network::delete_endpoint(engine, body),
        "NetworkDriver.EndpointOperInfo" => network::oper_info(engine, body),
        "NetworkDriver.Join" => network::join(engine, body),
        "NetworkDriver.Leave" => network::leave(engine, body),
        "NetworkDriver.ProgramExternalConnectivity" => network::program(engine, body),
        "NetworkDriver.RevokeExternalConnectivity" => network::revoke(engine, body),
        "IpamDriver.RequestPool" => ipam::request_pool(engine, body),
        "IpamDriver.ReleasePool" => ipam::release_pool(engine, body),
        "IpamDriver.RequestAddress" => ipam::request_address(engine, body),
        "IpamDriver.ReleaseAddress" => ipam::release_address(engine, body),
        _ => Err(PluginError {
            status: StatusCode::NOT_FOUND,
            msg: format!("netd: {method:?} is not implemented by netd's Docker plugin"),
        }),
    };
    match r {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => {
            tracing::info!(method, error = %e.msg, "docker plugin: request refused");
            (e.status, json!({ "Err": e.msg }))
        }
    }
}

fn reply(status: StatusCode, v: Value) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], v.to_string()).into_response()
}

async fn serve_one(State(st): State<Shared>, uri: Uri, b: Body) -> Response {
    let path = uri.path().to_string();
    let bytes = match to_bytes(b, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"Err": format!("netd: request body is larger than {MAX_BODY} bytes")}),
            )
        }
    };
    let method = path.trim_start_matches('/');
    if method != "Plugin.Activate" {
        if let Some(v) = stateless(method) {
            return reply(StatusCode::OK, v);
        }
    }
    let t0 = std::time::Instant::now();
    let r = tokio::task::spawn_blocking(move || {
        let mut e = st.lock().unwrap_or_else(|p| p.into_inner());
        handle(&mut e, &path, &bytes)
    })
    .await;
    let (status, v) = match r {
        Ok(x) => x,
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"Err": format!("netd: operation panicked: {e}")}),
        ),
    };
    tracing::debug!(uri = %uri, us = t0.elapsed().as_micros() as u64, status = status.as_u16(), "docker plugin call");
    reply(status, v)
}

pub fn router(engine: Shared) -> Router {
    Router::new().fallback(serve_one).with_state(engine)
}

/// Serves the plugin protocol on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    engine: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    super::server::serve_router(listener, router(engine), shutdown).await
}

#[cfg(test)]
mod tests;
