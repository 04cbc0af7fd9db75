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
    /// Seconds for `Retry-After` (429).
    retry_after: Option<u64>,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable code (docs/api.md, "Errors"): `invalid_parameter`, `invalid_body`,
    /// `invalid_field`, `unsupported_media_type`, `too_large`, `auth_failed`, `login_failed`,
    /// `refresh_refused`, `refresh_reused`, `token_invalid`, `not_member`, `forbidden`, `signup_closed`,
    /// `not_found`, `conflict`, `archived`, `fixed_membership`, `method_not_allowed`,
    /// `rate_limited`, `unavailable`.
    pub code: String,
    /// What was wrong, for a person.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// 429: a rate limit or a failure delay; the client may retry after `wait`.
    pub(crate) fn rate_limited(what: &str, wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: format!("{what}; retry in {seconds} s"),
            retry_after: Some(seconds),
        }
    }

    /// 403: the caller may not do this.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 503 for a failed directory query; a refused unique key is 409 `conflict` instead, and a
    /// value a check constraint refused (a validator here let it through) 400 `invalid_field`.
    pub(crate) fn directory(error: threadspace_store::directory::DirectoryError) -> Self {
        match error {
            threadspace_store::directory::DirectoryError::Conflict { what } => {
                Self::new(StatusCode::CONFLICT, "conflict", format!("{what} already exists"))
            }
            threadspace_store::directory::DirectoryError::Refused { constraint } => {
                tracing::warn!(constraint, "a value passed validation but not the schema's check");
                Self::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_field",
                    format!("a value was refused ({constraint})"),
                )
            }
            threadspace_store::directory::DirectoryError::Archived => {
                Self::new(StatusCode::CONFLICT, "archived", "the channel is archived")
            }
            other => Self::unavailable("directory", &other, "directory unavailable; retry later"),
        }
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
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
