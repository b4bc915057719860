//! `POST /v1/attach`: a sandbox on a network that is created if missing, in one request
//! and under one engine lock (`Engine::attach`). It is what a CNI ADD needs (netd-cni's
//! delegating mode): one round trip instead of "look the network up, then create the
//! sandbox", and no window in which the network can change between the two.
//!
//! An existing network must be the one asked for (`NetworkRequest::mismatch`);
//! otherwise the answer is 412 (Precondition Failed, reason `network_mismatch`) and
//! nothing changes; a sandbox name that is taken is 409, as for `POST /v1/sandboxes`.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;

use super::{body, created, with_engine, ApiResult, Shared};
use crate::api::types::{AttachRequest, Attached};

pub(super) async fn handler(State(st): State<Shared>, b: Body) -> ApiResult<Response> {
    let req: AttachRequest = body(b).await?;
    let (network, sandbox) = with_engine(&st, move |e| e.attach(&req.network, &req.sandbox)).await?;
    Ok(created(Attached { network, sandbox }))
}
