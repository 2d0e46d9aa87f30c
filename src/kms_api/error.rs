//! Errors as OCI returns them: a status and `{"code", "message"}`.
//!
//! The codes are OCI's, chosen so that the SDK's default retry strategy (which retries 409
//! `IncorrectState`, 429 and most 5xx) only retries what can succeed later: a disabled key is
//! 403 `NotAllowed`, not 409, because retrying it for ten minutes helps nobody.

use http::StatusCode;
use kms_core::KmsError;

/// The code of a replica's answer that it lacks material a shipment left out (the primary
/// then ships the whole state).
pub(crate) const REPLICA_INCOMPLETE: &str = "ReplicaIncomplete";

/// An error answer of the KMS API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OCI error code (`NotAuthorizedOrNotFound`, `InvalidParameter`, …).
    pub code: &'static str,
    /// What went wrong, for the person reading the CLI's output.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401: missing, malformed or wrong request signature.
    pub(crate) fn not_authenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "NotAuthenticated", message)
    }

    /// 404: the resource does not exist, or the caller may not know that it does.
    pub(crate) fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotAuthorizedOrNotFound",
            format!("{what} not found, or you are not authorized to access it"),
        )
    }

    /// 400: a malformed or out-of-range parameter.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidParameter", message)
    }

    /// 400: a required parameter is absent.
    pub(crate) fn missing(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            format!("the parameter '{name}' is required"),
        )
    }

    /// 405: the path exists, the method does not.
    pub(crate) fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    /// 412: `if-match` names another version of the resource.
    pub(crate) fn etag_mismatch() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "NoEtagMatch",
            "the resource has changed since the etag given in if-match was read",
        )
    }

    /// 429: more requests at once than the server takes; the SDKs back off and retry.
    pub(crate) fn too_many_requests() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "too many requests at once; retry after a short pause",
        )
    }

    /// 500: a failure on the server's side (logged there with details).
    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "internal error; the server log has the details",
        )
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code, "message": self.message })
    }
}

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> Self {
        match e {
            KmsError::NotFound { kind, id } => ApiError::not_found(format_args!("{kind} {id}")),
            KmsError::InvalidParameter(m) => ApiError::invalid(m),
            KmsError::InvalidCiphertext(_) => ApiError::invalid(e.to_string()),
            KmsError::IncorrectState(m) => ApiError::new(StatusCode::CONFLICT, "IncorrectState", m),
            // Not IncorrectState, which the SDKs retry: this never succeeds by waiting.
            KmsError::AlreadyExists(m) => ApiError::new(StatusCode::CONFLICT, "Conflict", m),
            KmsError::ReplicaIncomplete(_) => ApiError::new(StatusCode::CONFLICT, REPLICA_INCOMPLETE, e.to_string()),
            // An IAM change outside the home region: 403 NotAllowed, as OCI's identity service.
            KmsError::AccessDenied(_) | KmsError::VaultDeleted(_) | KmsError::NotHomeRegion { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "NotAllowed", e.to_string())
            }
            KmsError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", e.to_string())
            }
            KmsError::Metadata(ref m) if m.is_unavailable() => {
                tracing::warn!(error = %e, "metadata store unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", e.to_string())
            }
            KmsError::Protection(_)
            | KmsError::RootKey(_)
            | KmsError::RegionMismatch { .. }
            | KmsError::Metadata(_)
            | KmsError::Store(_)
            | KmsError::Io { .. } => {
                tracing::error!(error = %e, "KMS API request failed on the server side");
                ApiError::internal()
            }
        }
    }
}
