//! The API's error answers: every `EngineError` variant gets its HTTP status and its
//! `reason` here, and nowhere else. The message is the error's own text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::types::{ErrorBody, ErrorReason};
use crate::engine::EngineError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub reason: ErrorReason,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: ErrorReason, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: self.message,
            reason: Some(self.reason),
        };
        (self.status, Json(body)).into_response()
    }
}

/// The status and reason of each engine failure.
pub fn status_of(e: &EngineError) -> (StatusCode, ErrorReason) {
    use ErrorReason as R;
    use StatusCode as S;
    match e {
        EngineError::Invalid(_) => (S::BAD_REQUEST, R::Invalid),
        EngineError::NoSuchNetwork(_) => (S::NOT_FOUND, R::NoSuchNetwork),
        EngineError::NoSuchSandbox(_) => (S::NOT_FOUND, R::NoSuchSandbox),
        EngineError::NoSuchService { .. } => (S::NOT_FOUND, R::NoSuchService),
        EngineError::NotConnected { .. } => (S::NOT_FOUND, R::NotConnected),
        EngineError::NoSuchDockerNetwork(_) | EngineError::NoSuchDockerEndpoint { .. } => {
            (S::NOT_FOUND, R::NotFound)
        }
        EngineError::NoSuchPool(_) => (S::NOT_FOUND, R::NoSuchPool),
        EngineError::NoDnsServer | EngineError::NoDns(_) => (S::NOT_FOUND, R::NoDns),
        EngineError::NetworkExists(_) => (S::CONFLICT, R::NetworkExists),
        EngineError::SandboxExists(_) => (S::CONFLICT, R::SandboxExists),
        EngineError::Conflict(_) => (S::CONFLICT, R::Conflict),
        EngineError::Ipam(_) => (S::CONFLICT, R::Ipam),
        // The request is fine; the network of that name is another one.
        EngineError::NetworkMismatch(_) => (S::PRECONDITION_FAILED, R::NetworkMismatch),
        EngineError::Kernel { .. } | EngineError::Plan(_) => (S::INTERNAL_SERVER_ERROR, R::KernelFailed),
        EngineError::Store(_) => (S::INTERNAL_SERVER_ERROR, R::StoreFailed),
        EngineError::Panicked(_) => (S::INTERNAL_SERVER_ERROR, R::Internal),
        EngineError::Unsupported { .. } => (S::NOT_IMPLEMENTED, R::Unsupported),
        // Another engine's tables: the caller picked the wrong netd for this namespace.
        EngineError::Foreign { .. } => (S::CONFLICT, R::Foreign),
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (status, reason) = status_of(&e);
        ApiError::new(status, reason, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::IpamError;
    use crate::kernel::KernelError;
    use crate::plan::PlanError;
    use crate::store::StoreError;

    fn kernel_error() -> KernelError {
        KernelError::Other("EPERM".into())
    }

    #[test]
    fn each_variant_has_its_status_and_reason() {
        use ErrorReason as R;
        use StatusCode as S;
        let cases: Vec<(EngineError, S, R)> = vec![
            (EngineError::Invalid("bad".into()), S::BAD_REQUEST, R::Invalid),
            (
                EngineError::NoSuchNetwork("n".into()),
                S::NOT_FOUND,
                R::NoSuchNetwork,
            ),
            (
                EngineError::NoSuchSandbox("s".into()),
                S::NOT_FOUND,
                R::NoSuchSandbox,
            ),
            (
                EngineError::NoSuchService {
                    namespace: "ns".into(),
                    name: "x".into(),
                },
                S::NOT_FOUND,
                R::NoSuchService,
            ),
            (
                EngineError::NotConnected {
                    sandbox: "s".into(),
                    network: "n".into(),
                },
                S::NOT_FOUND,
                R::NotConnected,
            ),
            (
                EngineError::NoSuchDockerNetwork("0123456789ab".into()),
                S::NOT_FOUND,
                R::NotFound,
            ),
            (
                EngineError::NoSuchDockerEndpoint {
                    network: "0123456789ab".into(),
                    endpoint: "ba9876543210".into(),
                },
                S::NOT_FOUND,
                R::NotFound,
            ),
            (EngineError::NoSuchPool("x".into()), S::NOT_FOUND, R::NoSuchPool),
            (EngineError::NoDnsServer, S::NOT_FOUND, R::NoDns),
            (EngineError::NoDns("s".into()), S::NOT_FOUND, R::NoDns),
            (
                EngineError::NetworkExists("n".into()),
                S::CONFLICT,
                R::NetworkExists,
            ),
            (
                EngineError::SandboxExists("s".into()),
                S::CONFLICT,
                R::SandboxExists,
            ),
            (EngineError::Conflict("port".into()), S::CONFLICT, R::Conflict),
            (
                EngineError::Ipam(IpamError::PoolsExhausted { family: "IPv4" }),
                S::CONFLICT,
                R::Ipam,
            ),
            (
                EngineError::NetworkMismatch("vlan".into()),
                S::PRECONDITION_FAILED,
                R::NetworkMismatch,
            ),
            (
                EngineError::kernel("list links")(kernel_error()),
                S::INTERNAL_SERVER_ERROR,
                R::KernelFailed,
            ),
            (
                EngineError::Plan(PlanError {
                    step: "create bridge b".into(),
                    source: kernel_error(),
                }),
                S::INTERNAL_SERVER_ERROR,
                R::KernelFailed,
            ),
            (
                EngineError::Store(StoreError::Io {
                    op: "commit".into(),
                    msg: "EIO".into(),
                }),
                S::INTERNAL_SERVER_ERROR,
                R::StoreFailed,
            ),
            (
                EngineError::Panicked("firewall"),
                S::INTERNAL_SERVER_ERROR,
                R::Internal,
            ),
            (
                EngineError::Unsupported {
                    what: "vlan".into(),
                    feature: "VLAN filtering",
                },
                S::NOT_IMPLEMENTED,
                R::Unsupported,
            ),
            (
                EngineError::Foreign {
                    theirs: "a".into(),
                    mine: "b".into(),
                },
                S::CONFLICT,
                R::Foreign,
            ),
        ];
        for (e, status, reason) in cases {
            let text = e.to_string();
            let a = ApiError::from(e);
            assert_eq!((a.status, a.reason), (status, reason), "{text}");
            assert_eq!(a.message, text, "the message is the error's own");
        }
    }

    #[test]
    fn messages_are_the_ones_users_know() {
        assert_eq!(
            EngineError::SandboxExists("web".into()).to_string(),
            "sandbox with name web already exists"
        );
        assert_eq!(
            EngineError::NetworkExists("front".into()).to_string(),
            "network with name front already exists"
        );
        assert_eq!(
            EngineError::NoSuchNetwork("x".into()).to_string(),
            "no such network: x"
        );
        assert_eq!(
            EngineError::NoSuchSandbox("x".into()).to_string(),
            "no such sandbox: x"
        );
        let e = EngineError::kernel("list links")(kernel_error());
        assert_eq!(e.to_string(), "list links: EPERM");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the kernel's error is chained"
        );
    }

    #[test]
    fn the_body_carries_message_and_reason() {
        let b = ErrorBody {
            message: "m".into(),
            reason: Some(ErrorReason::SandboxExists),
        };
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v, serde_json::json!({"message": "m", "reason": "sandbox_exists"}));
        // A netd from before reasons, and a reason from a newer one.
        let old: ErrorBody = serde_json::from_str(r#"{"message":"m"}"#).unwrap();
        assert_eq!(old.reason, None);
        let new: ErrorBody = serde_json::from_str(r#"{"message":"m","reason":"what_next"}"#).unwrap();
        assert_eq!(new.reason, Some(ErrorReason::Other));
    }
}
