//! The caller of a REST request: its bearer token, authenticated by the one rule every entry
//! point shares (`threadspace_auth::authenticate`).

use std::sync::Arc;

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use threadspace_auth::{authenticate, AuthError, Keys};
use threadspace_protocol::token::Identity;
use threadspace_protocol::UserId;
use threadspace_store::directory::Session;
use threadspace_store::Directory;

use crate::error::ApiError;
use crate::limits::RateLimiter;
use crate::metrics as m;

/// What authentication needs: the verifying keys, the directory, and the per-user request
/// rate (checked here, so every authenticated route has it).
#[derive(Clone)]
pub(crate) struct Auth {
    pub keys: Arc<Keys>,
    pub directory: Directory,
    pub per_user: Arc<RateLimiter<UserId>>,
}

/// The caller's session, from `Authorization: Bearer <token>`.
pub(crate) async fn caller(auth: &Auth, headers: &HeaderMap) -> Result<Session, ApiError> {
    caller_identity(auth, headers).await.map(|(_, session)| session)
}

/// The caller's token identity (with its login session) and session.
pub(crate) async fn caller_identity(
    auth: &Auth,
    headers: &HeaderMap,
) -> Result<(Identity, Session), ApiError> {
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
        Ok(authenticated) => {
            metrics::counter!(m::AUTH, "result" => "ok").increment(1);
            if let Err(wait) = auth.per_user.check(authenticated.1.user.id, std::time::Instant::now()) {
                metrics::counter!(m::RATE_LIMITED, "scope" => "user").increment(1);
                return Err(ApiError::rate_limited("too many requests from this user", wait));
            }
            Ok(authenticated)
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
