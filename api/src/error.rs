//! The one error shape of the REST API: `{"error":{"code":…,"message":…}}` with a stable,
//! machine-readable `code` and a message that names what was wrong (docs/api.md).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use threadspace_protocol::error_chain;
use utoipa::ToSchema;

/// An error answer: its status, stable code and message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable code: `invalid_parameter`, `auth_failed`, `not_member`, `forbidden`, `not_found`,
    /// `archived`, `fixed_membership`, `method_not_allowed`, `unavailable`.
    pub code: String,
    /// What was wrong, for a person.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 400: a parameter is missing or malformed; the message names it.
    pub(crate) fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
    }

    /// 401: no usable bearer token. The client learns only this; the log says why.
    pub(crate) fn auth_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "auth_failed", message)
    }

    /// 404: nothing the caller may see goes by that name (another org's resources included).
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503: a dependency failed; `what` and the error go to the log, `message` to the client.
    pub(crate) fn unavailable(what: &str, error: &(dyn std::error::Error + 'static), message: &str) -> Self {
        tracing::warn!(error = %error_chain(error), "{what} failed");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        (self.status, Json(body)).into_response()
    }
}
