//! The caller of a REST request: its bearer token, authenticated by the one rule every entry
//! point shares (`threadspace_auth::authenticate`).

use std::sync::Arc;

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use threadspace_auth::{authenticate, AuthError, Keys};
use threadspace_store::directory::Session;
use threadspace_store::Directory;

use crate::error::ApiError;
use crate::metrics as m;

/// What authentication needs: the verifying keys and the directory.
#[derive(Clone)]
pub(crate) struct Auth {
    pub keys: Arc<Keys>,
    pub directory: Directory,
}

/// The caller's session, from `Authorization: Bearer <token>`.
pub(crate) async fn caller(auth: &Auth, headers: &HeaderMap) -> Result<Session, ApiError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            metrics::counter!(m::AUTH, "result" => "rejected").increment(1);
            ApiError::auth_failed("missing `Authorization: Bearer <token>` header")
        })?;
    match authenticate(&auth.keys.current(), &auth.directory, token).await {
        Ok(session) => {
            metrics::counter!(m::AUTH, "result" => "ok").increment(1);
            Ok(session)
        }
        Err(error @ AuthError::Unavailable(_)) => {
            Err(ApiError::unavailable("directory read", &error, "directory unavailable; retry later"))
        }
        Err(error) => {
            metrics::counter!(m::AUTH, "result" => "rejected").increment(1);
            tracing::debug!(error = %threadspace_protocol::error_chain(&error), "token rejected");
            Err(ApiError::auth_failed("token rejected"))
        }
    }
}
