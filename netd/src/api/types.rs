//! Request and response bodies of the local API that are not model types.

use serde::{Deserialize, Serialize};

use crate::model::{Network, NetworkRequest, Sandbox, SandboxRequest};

/// `POST /v1/attach`: the sandbox, on the network created if missing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    pub network: NetworkRequest,
    pub sandbox: SandboxRequest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attached {
    pub network: Network,
    pub sandbox: Sandbox,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectRequest {
    pub sandbox: String,
    pub ip: Option<String>,
    pub ip6: Option<String>,
    pub aliases: Vec<String>,
    pub mac: Option<String>,
    pub ifname: Option<String>,
    pub routes: Vec<crate::model::Route>,
    pub no_default_route: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DisconnectRequest {
    pub sandbox: String,
}

/// Every error answer: `{"message": "...", "reason": "..."}` with a 4xx/5xx status. The
/// message is for people; a client that acts on an error reads the status and `reason`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub message: String,
    /// Absent in the answers of a netd from before reasons (and of other servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ErrorReason>,
}

/// Which failure an error answer is, as a stable word on the wire: one per kind of
/// engine failure, plus the API's own (body, route, method).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    Invalid,
    NoSuchNetwork,
    NoSuchSandbox,
    NoSuchService,
    NotConnected,
    NoSuchPool,
    NoDns,
    /// Another object the request names (a Docker network or endpoint).
    NotFound,
    NetworkExists,
    SandboxExists,
    Conflict,
    Ipam,
    NetworkMismatch,
    KernelFailed,
    StoreFailed,
    Unsupported,
    Foreign,
    /// The request body: empty, not JSON, too large.
    BadBody,
    /// No such path in the API (what a netd from before a route answers, too).
    NoSuchRoute,
    MethodNotAllowed,
    Internal,
    /// A reason this client does not know (a newer netd's).
    #[serde(other)]
    Other,
}
