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

/// The one place netd's failures become CNI codes: an engine error (standalone mode) by
/// its variant, an API answer (delegating mode) by its status, as the API maps variants
/// to statuses (`netd::api::server::error`). Neither looks at a message's text.
pub fn from_engine(e: netd::engine::EngineError) -> CniError {
    use netd::engine::EngineError as E;
    let code = match &e {
        E::Invalid(_)
        | E::NoSuchNetwork(_)
        | E::NoSuchSandbox(_)
        | E::NoSuchService { .. }
        | E::NotConnected { .. }
        | E::NoSuchDockerNetwork(_)
        | E::NoSuchDockerEndpoint { .. }
        | E::NoSuchPool(_)
        | E::NoDnsServer
        | E::NoDns(_)
        | E::NetworkExists(_)
        | E::SandboxExists(_)
        | E::Conflict(_)
        | E::Ipam(_) => code::NETD_REFUSED,
        E::NetworkMismatch(why) => return mismatch(why),
        E::Kernel { .. } | E::Plan(_) | E::Store(_) | E::Panicked(_) => code::NETD_FAILED,
        E::Unsupported { .. } => code::UNSUPPORTED_FIELD,
        // Another stateDir (or a daemon) manages netd's tables here: the config's fault.
        E::Foreign { .. } => code::INVALID_CONFIG,
    };
    CniError::new(code, e.to_string())
}

/// Maps an answer of netd's API to a CNI error.
pub fn from_client(e: netd::api::client::ClientError) -> CniError {
    use netd::api::client::ClientError as C;
    match e {
        C::Connect { .. } => CniError::new(code::TRY_AGAIN_LATER, e.to_string()),
        C::Io(_) | C::Protocol(_) => CniError::new(code::IO, e.to_string()),
        // EngineError::NetworkMismatch.
        C::Api {
            status: 412, message, ..
        } => mismatch(&message),
        C::Api { status, message, .. } if status < 500 => CniError::new(code::NETD_REFUSED, message),
        // netd's answer for a kernel feature it lacks (EngineError::Unsupported).
        C::Api {
            status: 501, message, ..
        } => CniError::new(code::UNSUPPORTED_FIELD, message),
        C::Api { message, .. } => CniError::new(code::NETD_FAILED, message),
    }
}

/// netd's network differs from the config's (other subnets, bridge, VLAN, ...).
pub fn mismatch(why: &str) -> CniError {
    CniError::new(code::INVALID_CONFIG, format!("{why} (in netd)"))
}

#[cfg(test)]
mod tests {
    use netd::api::client::ClientError;
    use netd::api::types::ErrorReason;
    use netd::engine::EngineError as E;
    use netd::ipam::IpamError;
    use netd::kernel::KernelError;
    use netd::plan::PlanError;
    use netd::store::StoreError;

    use super::*;

    fn kernel() -> KernelError {
        KernelError::Other("EPERM".into())
    }

    #[test]
    fn each_engine_variant_has_its_code() {
        let cases: Vec<(E, u32)> = vec![
            (E::Invalid("bad".into()), code::NETD_REFUSED),
            (E::NoSuchNetwork("n".into()), code::NETD_REFUSED),
            (E::NoSuchSandbox("s".into()), code::NETD_REFUSED),
            (
                E::NoSuchService {
                    namespace: "ns".into(),
                    name: "x".into(),
                },
                code::NETD_REFUSED,
            ),
            (
                E::NotConnected {
                    sandbox: "s".into(),
                    network: "n".into(),
                },
                code::NETD_REFUSED,
            ),
            (E::NoSuchDockerNetwork("0123456789ab".into()), code::NETD_REFUSED),
            (
                E::NoSuchDockerEndpoint {
                    network: "0123456789ab".into(),
                    endpoint: "ba9876543210".into(),
                },
                code::NETD_REFUSED,
            ),
            (E::NoSuchPool("x".into()), code::NETD_REFUSED),
            (E::NoDnsServer, code::NETD_REFUSED),
            (E::NoDns("s".into()), code::NETD_REFUSED),
            (E::NetworkExists("n".into()), code::NETD_REFUSED),
            (E::SandboxExists("s".into()), code::NETD_REFUSED),
            (E::Conflict("port".into()), code::NETD_REFUSED),
            (
                E::Ipam(IpamError::PoolsExhausted { family: "IPv4" }),
                code::NETD_REFUSED,
            ),
            (E::NetworkMismatch("vlan".into()), code::INVALID_CONFIG),
            (E::kernel("list links")(kernel()), code::NETD_FAILED),
            (
                E::Plan(PlanError {
                    step: "create bridge b".into(),
                    source: kernel(),
                }),
                code::NETD_FAILED,
            ),
            (
                E::Store(StoreError::Io {
                    op: "commit".into(),
                    msg: "EIO".into(),
                }),
                code::NETD_FAILED,
            ),
            (E::Panicked("firewall"), code::NETD_FAILED),
            (
                E::Unsupported {
                    what: "vlan".into(),
                    feature: "VLAN filtering",
                },
                code::UNSUPPORTED_FIELD,
            ),
            (
                E::Foreign {
                    theirs: "a".into(),
                    mine: "b".into(),
                },
                code::INVALID_CONFIG,
            ),
        ];
        for (e, want) in cases {
            let text = e.to_string();
            let c = from_engine(e);
            assert_eq!(c.code, want, "{text}");
            assert!(c.msg.starts_with(&text), "{} keeps {text}", c.msg);
        }
        assert_eq!(
            from_engine(E::NetworkMismatch("network n exists with vlan 1, not 2".into())).msg,
            "network n exists with vlan 1, not 2 (in netd)"
        );
    }

    #[test]
    fn each_api_answer_has_its_code() {
        let api = |status: u16, reason: Option<ErrorReason>| ClientError::Api {
            status,
            message: format!("m{status}"),
            reason,
        };
        let cases = [
            (api(400, Some(ErrorReason::Invalid)), code::NETD_REFUSED),
            (api(404, Some(ErrorReason::NoSuchNetwork)), code::NETD_REFUSED),
            (api(409, Some(ErrorReason::SandboxExists)), code::NETD_REFUSED),
            (api(409, None), code::NETD_REFUSED),
            (api(412, Some(ErrorReason::NetworkMismatch)), code::INVALID_CONFIG),
            (api(500, Some(ErrorReason::KernelFailed)), code::NETD_FAILED),
            (api(501, Some(ErrorReason::Unsupported)), code::UNSUPPORTED_FIELD),
            (ClientError::Protocol("no end of headers".into()), code::IO),
            (
                ClientError::Connect {
                    socket: "/x".into(),
                    source: std::io::ErrorKind::NotFound.into(),
                },
                code::TRY_AGAIN_LATER,
            ),
        ];
        for (e, want) in cases {
            let text = e.to_string();
            assert_eq!(from_client(e).code, want, "{text}");
        }
        assert_eq!(from_client(api(412, None)).msg, "m412 (in netd)");
    }
}
