//! CNI errors as the spec defines them: `{cniVersion, code, msg, details}` on stdout and a
//! non-zero exit. Codes 1–99 are the spec's; plugin-specific codes start at 100.

use serde::Serialize;

/// The spec's well-known codes (CNI 1.1, "Error" section).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADDs (netd is unreachable).
    pub const UNAVAILABLE: u32 = 50;
    /// STATUS: no addresses left in the network's pool.
    pub const NO_IPS: u32 = 51;
    /// netd refused the operation (its message says why: address taken, port in use, ...).
    pub const NETD_REFUSED: u32 = 100;
    /// A kernel or store operation failed inside netd.
    pub const NETD_FAILED: u32 = 101;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("CNI error {code}: {msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, d: impl Into<String>) -> CniError {
        self.details = d.into();
        self
    }

    /// The JSON the spec asks for, in the config's version (or ours when unknown).
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }
}

pub type Result<T> = std::result::Result<T, CniError>;

/// Maps an answer of netd's API to a CNI error.
pub fn from_client(e: netd::api::client::ClientError) -> CniError {
    use netd::api::client::ClientError as C;
    match e {
        C::Connect { .. } => CniError::new(code::TRY_AGAIN_LATER, e.to_string()),
        C::Io(_) | C::Protocol(_) => CniError::new(code::IO, e.to_string()),
        C::Api { status, message } if status < 500 => CniError::new(code::NETD_REFUSED, message),
        // netd's answer for a kernel feature it lacks (EngineError::Unsupported).
        C::Api { status: 501, message } => CniError::new(code::UNSUPPORTED_FIELD, message),
        C::Api { message, .. } => CniError::new(code::NETD_FAILED, message),
    }
}

pub fn from_engine(e: netd::engine::EngineError) -> CniError {
    use netd::engine::EngineError as E;
    match e {
        E::Invalid(m) | E::NotFound(m) | E::Conflict(m) => CniError::new(code::NETD_REFUSED, m),
        E::Kernel(m) | E::Store(m) => CniError::new(code::NETD_FAILED, m),
        E::Unsupported(m) => CniError::new(code::UNSUPPORTED_FIELD, m),
        // Another stateDir (or a daemon) manages netd's tables here: the config's fault.
        E::Foreign(m) => CniError::new(code::INVALID_CONFIG, m),
    }
}
