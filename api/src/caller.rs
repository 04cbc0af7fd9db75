//! The caller of a REST request: its bearer token, authenticated by the one rule every entry
//! point shares (`threadspace_auth::authenticate`).

use std::sync::Arc;

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use threadspace_auth::{authenticate, AuthError, Keys};
use threadspace_protocol::token::Identity;
use threadspace_protocol::UserId;
use threadspace_store::bots::{BotCaller, CredentialKind};
use threadspace_store::directory::Session;
use threadspace_store::Directory;

use crate::error::ApiError;
use crate::limits::RateLimiter;
use crate::metrics as m;

/// What authentication needs: the verifying keys, the directory, bot credentials, and the
/// per-user and per-credential request rates (checked here, so every authenticated route has
/// them).
#[derive(Clone)]
pub(crate) struct Auth {
    pub keys: Arc<Keys>,
    pub directory: Directory,
    pub per_user: Arc<RateLimiter<UserId>>,
    /// Bot credentials, looked up by the SHA-256 of their secret.
    pub bots: threadspace_store::Accounts,
    /// The request rate per bot credential (`--rate-per-bot-credential`).
    pub per_credential: Arc<RateLimiter<i64>>,
}

/// How a bot API token starts (docs/api.md, "Integrations"): it tells one from an access
/// token at a glance, and lets secret scanners find leaked ones.
pub(crate) const BOT_TOKEN_PREFIX: &str = "tsb_";

/// How an incoming webhook's secret starts.
pub(crate) const WEBHOOK_SECRET_PREFIX: &str = "tsw_";

/// Who calls a message route: a person with an access token, or a bot with an API token.
pub(crate) enum Poster {
    Person(Session),
    Bot(BotCaller),
}

/// The caller of a message route (`POST`/`GET /v1/channels/{channel}/messages`): a bot API
/// token is looked up by its SHA-256 and rate-limited per credential; anything else is an
/// access token, checked by [`caller`].
pub(crate) async fn poster(auth: &Auth, headers: &HeaderMap) -> Result<Poster, ApiError> {
    let token = bearer(headers)?;
    if !token.starts_with(BOT_TOKEN_PREFIX) {
        return caller(auth, headers).await.map(Poster::Person);
    }
    let bot = bot_caller(auth, CredentialKind::Token, token).await?;
    Ok(Poster::Bot(bot))
}

/// The live credential of `kind` whose secret is `secret`, within its rate.
pub(crate) async fn bot_caller(
    auth: &Auth,
    kind: CredentialKind,
    secret: &str,
) -> Result<BotCaller, ApiError> {
    let hash = crate::secrets::digest(secret);
    match auth.bots.bot_caller(kind, &hash).await {
        Ok(Some(bot)) => {
            metrics::counter!(m::AUTH, "result" => "ok").increment(1);
            if let Err(wait) = auth.per_credential.check(bot.credential, std::time::Instant::now()) {
                metrics::counter!(m::RATE_LIMITED, "scope" => "bot_credential").increment(1);
                return Err(ApiError::rate_limited("too many requests with this credential", wait));
            }
            Ok(bot)
        }
        Ok(None) => {
            metrics::counter!(m::AUTH, "result" => "rejected").increment(1);
            Err(ApiError::auth_failed(match kind {
                CredentialKind::Token => "bot token rejected",
                CredentialKind::Webhook => "webhook secret rejected",
            }))
        }
        Err(e) => Err(ApiError::unavailable("directory read", &e, "directory unavailable; retry later")),
    }
}

/// The caller's session, from `Authorization: Bearer <token>`.
pub(crate) async fn caller(auth: &Auth, headers: &HeaderMap) -> Result<Session, ApiError> {
    caller_identity(auth, headers).await.map(|(_, session)| session)
}

/// The bearer token of a request.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            metrics::counter!(m::AUTH, "result" => "rejected").increment(1);
            ApiError::auth_failed("missing `Authorization: Bearer <token>` header")
        })
}

/// The caller's token identity (with its login session) and session.
pub(crate) async fn caller_identity(
    auth: &Auth,
    headers: &HeaderMap,
) -> Result<(Identity, Session), ApiError> {
    let token = bearer(headers)?;
    if token.starts_with(BOT_TOKEN_PREFIX) {
        metrics::counter!(m::AUTH, "result" => "rejected").increment(1);
        return Err(ApiError::auth_failed(
            "bot tokens are accepted only by the message routes (docs/api.md, \"Integrations\")",
        ));
    }
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
