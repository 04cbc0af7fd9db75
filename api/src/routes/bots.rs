//! Bots and their credentials, for owners and admins (docs/api.md, "Integrations"): create a
//! bot (a user with the role `bot`) in channels the caller may add it to, issue API tokens
//! scoped to some of those channels (`post`, `read`) and incoming webhooks (one channel, post
//! only), list them, revoke them. A credential's secret is shown once, in the answer that
//! issues it; only its SHA-256 is kept.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use threadspace_protocol::frames::ChannelKind;
use threadspace_protocol::{ChannelId, UserId};
use threadspace_store::audit::AuditEntry;
use threadspace_store::bots::{Bot, Credential, CredentialKind, NewCredential};
use threadspace_store::directory::Session;
use tracing::info;
use utoipa::ToSchema;

use super::people::role_of;
use super::query::{bad_path, path_id};
use crate::audit::record;
use crate::body::{self, Body};
use crate::caller::{caller, Auth, BOT_TOKEN_PREFIX, WEBHOOK_SECRET_PREFIX};
use crate::error::{ApiError, ErrorBody};
use crate::limits::ClientIp;
use crate::parts::{Changes, Credentials};
use crate::policy::{may, sees_channel, Action};

/// Most channels a bot joins at creation, or a token is scoped to.
const MAX_CHANNELS: usize = 100;

/// A bot to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewBot {
    /// As a person's handle: 1–63 of `a-z 0-9 . _ -`, unique in the org.
    pub handle: String,
    /// 1–200 characters.
    pub display_name: String,
    /// Public or private channels the bot joins (at most 100), each one the caller may add a
    /// member to.
    pub channels: Vec<i64>,
}

/// An API token to issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    /// What it is for, 1–80 characters (shown in the list).
    pub name: String,
    /// Channels it may act in (1–100), each one the bot is a member of.
    pub channels: Vec<i64>,
    /// `post`, `read` or both.
    pub scopes: Vec<String>,
}

/// An incoming webhook to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    /// What it is for, 1–80 characters.
    pub name: String,
    /// The channel it posts to; the bot must be a member of it.
    pub channel: i64,
}

/// A credential as listed (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CredentialView {
    pub id: i64,
    /// `token` or `webhook`.
    pub kind: String,
    pub name: String,
    pub channels: Vec<i64>,
    /// `post` and/or `read`.
    pub scopes: Vec<String>,
    pub created_by: i64,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    pub revoked: bool,
}

/// A credential just issued: its secret is shown only now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IssuedCredential {
    pub credential: CredentialView,
    /// A token: the bearer token (`tsb_…`). A webhook: the secret in its URL (`tsw_…`).
    pub secret: String,
    /// A webhook's URL (POST JSON `{"text": …}` to it); null for a token.
    pub url: Option<String>,
}

/// A bot with its credentials.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BotView {
    pub id: i64,
    pub handle: String,
    pub display_name: String,
    pub deactivated: bool,
    pub credentials: Vec<CredentialView>,
}

/// The org's bots.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Bots {
    pub bots: Vec<BotView>,
}

fn credential_view(credential: Credential) -> CredentialView {
    let mut scopes = Vec::new();
    if credential.can_post {
        scopes.push("post".to_owned());
    }
    if credential.can_read {
        scopes.push("read".to_owned());
    }
    CredentialView {
        id: credential.id,
        kind: credential.kind.as_str().into(),
        name: credential.name,
        channels: credential.channels.iter().map(|c| c.0).collect(),
        scopes,
        created_by: credential.created_by.0,
        created_at: credential.created_at,
        revoked: credential.revoked,
    }
}

fn bot_view(bot: Bot) -> BotView {
    BotView {
        id: bot.id.0,
        handle: bot.handle,
        display_name: bot.display_name,
        deactivated: bot.deactivated,
        credentials: bot.credentials.into_iter().map(credential_view).collect(),
    }
}

/// The caller, when they may manage bots.
async fn manager(auth: &Auth, headers: &HeaderMap) -> Result<Session, ApiError> {
    let session = caller(auth, headers).await?;
    if !may(role_of(&session), Action::ManageBots) {
        return Err(ApiError::forbidden("only owners and admins manage bots"));
    }
    Ok(session)
}

/// `channels` checked as the channels a bot may join: 1–100 distinct ids of public or private
/// channels of the caller's org that the caller sees and that are not archived.
async fn joinable(
    auth: &Auth,
    session: &Session,
    field: &str,
    channels: &[i64],
) -> Result<Vec<ChannelId>, ApiError> {
    if channels.len() > MAX_CHANNELS {
        return Err(body::invalid(
            field,
            &format!("has {} channels; at most {MAX_CHANNELS}", channels.len()),
        ));
    }
    let mut checked = Vec::with_capacity(channels.len());
    for &id in channels {
        let channel = ChannelId(id);
        let found = auth
            .directory
            .channel(channel)
            .await
            .map_err(|e| ApiError::unavailable("directory", &e, "directory unavailable; retry later"))?;
        let is_member = session.channels.iter().any(|c| c.id == channel);
        let channel_info = match found {
            Some(c) if c.org == session.user.org && sees_channel(role_of(session), c.kind, is_member) => c,
            _ => return Err(ApiError::not_found(format!("no channel {channel} in your org"))),
        };
        if !matches!(channel_info.kind, ChannelKind::Public | ChannelKind::Private) {
            return Err(body::invalid(
                field,
                &format!("channel {channel} is a DM or group DM: bots join channels only"),
            ));
        }
        if channel_info.archived {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "archived",
                format!("channel {channel} is archived"),
            ));
        }
        if !checked.contains(&channel) {
            checked.push(channel);
        }
    }
    Ok(checked)
}

/// The bot `raw` of the caller's org (404 otherwise, also for a person's id).
async fn bot_of(changes: &Changes, session: &Session, raw: &str) -> Result<UserId, ApiError> {
    let bot = UserId(path_id("bot", raw).map_err(ApiError::invalid_parameter)?);
    if changes.store.is_bot(session.user.org, bot).await.map_err(ApiError::directory)? {
        Ok(bot)
    } else {
        Err(ApiError::not_found(format!("no bot {bot} in your org")))
    }
}

/// `channels` checked as a credential's scope: 1–100 channels that the caller could have added
/// the bot to (as for a new bot: public or private, seen by the caller, not archived) and that
/// the bot is a member of. So an admin never reaches, through a bot, a channel they do not see.
async fn scope(
    (auth, changes): (&Auth, &Changes),
    session: &Session,
    bot: UserId,
    (field, channels): (&str, &[i64]),
) -> Result<Vec<ChannelId>, ApiError> {
    if channels.is_empty() {
        return Err(body::invalid(field, &format!("must name 1 to {MAX_CHANNELS} channels")));
    }
    let mut scope = joinable(auth, session, field, channels).await?;
    scope.sort_unstable_by_key(|c| c.0);
    let outside = changes.store.not_member_of(bot, &scope).await.map_err(ApiError::directory)?;
    if let Some(channel) = outside.first() {
        return Err(body::invalid(
            field,
            &format!("names channel {channel}, which the bot is not a member of (add the bot to it first)"),
        ));
    }
    Ok(scope)
}

/// What a credential grants.
struct Grant<'a> {
    kind: CredentialKind,
    name: &'a str,
    channels: &'a [ChannelId],
    can_post: bool,
    can_read: bool,
}

/// Issues a credential with a fresh secret, records it in the audit log, and returns it with
/// its secret (shown only in this answer).
async fn issue(
    changes: &Changes,
    (session, ip): (&Session, std::net::IpAddr),
    bot: UserId,
    grant: Grant<'_>,
) -> Result<(Credential, String), ApiError> {
    let prefix = match grant.kind {
        CredentialKind::Token => BOT_TOKEN_PREFIX,
        CredentialKind::Webhook => WEBHOOK_SECRET_PREFIX,
    };
    let secret = format!("{prefix}{}", crate::secrets::new_secret());
    let hash = crate::secrets::digest(&secret);
    let new = NewCredential {
        kind: grant.kind,
        name: grant.name,
        hash: &hash,
        channels: grant.channels,
        can_post: grant.can_post,
        can_read: grant.can_read,
        created_by: session.user.id,
    };
    let org = session.user.org;
    let id = changes.store.issue_credential(org, bot, &new).await.map_err(ApiError::directory)?;
    info!(%bot, credential = id, kind = new.kind.as_str(), by = %session.user.id, "bot credential issued");
    let entry = AuditEntry::new(org, Some(session.user.id), "bot.credential_issued").user(bot).from(ip);
    let detail = json!({"credential": id, "kind": new.kind.as_str(), "name": new.name,
                        "post": new.can_post, "read": new.can_read, "channels": new.channels.len()});
    record(changes, entry.detail(detail)).await;
    let credential = Credential {
        id,
        bot,
        kind: new.kind,
        name: new.name.into(),
        channels: new.channels.to_vec(),
        can_post: new.can_post,
        can_read: new.can_read,
        created_by: session.user.id,
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        revoked: false,
    };
    Ok((credential, secret))
}

/// Creates a bot and adds it to `channels`.
#[utoipa::path(
    post,
    path = "/v1/bots",
    tag = "integrations",
    request_body = NewBot,
    responses(
        (status = 201, description = "The bot, with no credentials yet", body = BotView),
        (status = 400, description = "A field is missing or invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Only owners and admins manage bots", body = ErrorBody),
        (status = 404, description = "A channel is not one the caller sees", body = ErrorBody),
        (status = 409, description = "The handle is taken (`conflict`), or a channel is archived (`archived`)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_bot(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    Body(request): Body<NewBot>,
) -> Result<(StatusCode, Json<BotView>), ApiError> {
    let session = manager(&auth, &headers).await?;
    let handle = body::handle("handle", request.handle.trim(), false)?;
    let display_name = body::name("display_name", request.display_name.trim())?;
    let channels = joinable(&auth, &session, "channels", &request.channels).await?;
    let org = session.user.org;
    let (bot, events) =
        changes.store.create_bot(org, handle, display_name, &channels).await.map_err(ApiError::directory)?;
    super::channels::publish_all(&changes, &events).await;
    info!(%bot, %org, by = %session.user.id, channels = channels.len(), "bot created");
    let entry = AuditEntry::new(org, Some(session.user.id), "bot.created").user(bot).from(ip);
    record(&changes, entry.detail(json!({"handle": handle, "channels": channels.len()}))).await;
    Ok((
        StatusCode::CREATED,
        Json(BotView {
            id: bot.0,
            handle: handle.into(),
            display_name: display_name.into(),
            deactivated: false,
            credentials: Vec::new(),
        }),
    ))
}

/// The org's bots with their credentials (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/bots",
    tag = "integrations",
    responses(
        (status = 200, description = "The bots, oldest first", body = Bots),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Only owners and admins manage bots", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_bots(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    headers: HeaderMap,
) -> Result<Json<Bots>, ApiError> {
    let session = manager(&auth, &headers).await?;
    let bots = changes.store.bots(session.user.org).await.map_err(ApiError::directory)?;
    Ok(Json(Bots { bots: bots.into_iter().map(bot_view).collect() }))
}

/// Issues an API token for a bot.
#[utoipa::path(
    post,
    path = "/v1/bots/{bot}/tokens",
    tag = "integrations",
    params(("bot" = i64, Path, description = "The bot's user id")),
    request_body = NewToken,
    responses(
        (status = 201, description = "The token; its secret is shown only now", body = IssuedCredential),
        (status = 400, description = "A field is missing or invalid (e.g. a channel the bot is not in)", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Only owners and admins manage bots", body = ErrorBody),
        (status = 404, description = "No such bot in the caller's org", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn issue_token(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    bot: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    Body(request): Body<NewToken>,
) -> Result<(StatusCode, Json<IssuedCredential>), ApiError> {
    let Path(bot) = bot.map_err(bad_path)?;
    let session = manager(&auth, &headers).await?;
    let bot = bot_of(&changes, &session, &bot).await?;
    let name = credential_name(&request.name)?;
    let (mut can_post, mut can_read) = (false, false);
    for scope in &request.scopes {
        match scope.as_str() {
            "post" => can_post = true,
            "read" => can_read = true,
            other => {
                return Err(body::invalid("scopes", &format!("has {other:?}; the scopes are post and read")))
            }
        }
    }
    if !(can_post || can_read) {
        return Err(body::invalid("scopes", "must name post, read or both"));
    }
    let channels = scope((&auth, &changes), &session, bot, ("channels", &request.channels)).await?;
    let grant = Grant { kind: CredentialKind::Token, name, channels: &channels, can_post, can_read };
    let (credential, secret) = issue(&changes, (&session, ip), bot, grant).await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedCredential { credential: credential_view(credential), secret, url: None }),
    ))
}

/// Creates an incoming webhook: a secret URL that posts into one channel as the bot.
#[utoipa::path(
    post,
    path = "/v1/bots/{bot}/webhooks",
    tag = "integrations",
    params(("bot" = i64, Path, description = "The bot's user id")),
    request_body = NewWebhook,
    responses(
        (status = 201, description = "The webhook; its URL is shown only now", body = IssuedCredential),
        (status = 400, description = "A field is missing or invalid (e.g. a channel the bot is not in)", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Only owners and admins manage bots", body = ErrorBody),
        (status = 404, description = "No such bot in the caller's org", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_webhook(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    State(credentials): State<Credentials>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    bot: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    Body(request): Body<NewWebhook>,
) -> Result<(StatusCode, Json<IssuedCredential>), ApiError> {
    let Path(bot) = bot.map_err(bad_path)?;
    let session = manager(&auth, &headers).await?;
    let bot = bot_of(&changes, &session, &bot).await?;
    let name = credential_name(&request.name)?;
    let channels = scope((&auth, &changes), &session, bot, ("channel", &[request.channel])).await?;
    let grant =
        Grant { kind: CredentialKind::Webhook, name, channels: &channels, can_post: true, can_read: false };
    let (credential, secret) = issue(&changes, (&session, ip), bot, grant).await?;
    let url = format!("{}/v1/hooks/{secret}", credentials.public_url.trim_end_matches('/'));
    Ok((
        StatusCode::CREATED,
        Json(IssuedCredential { credential: credential_view(credential), secret, url: Some(url) }),
    ))
}

/// Revokes a bot's token or webhook at once (idempotent).
#[utoipa::path(
    delete,
    path = "/v1/bots/{bot}/credentials/{credential}",
    tag = "integrations",
    params(
        ("bot" = i64, Path, description = "The bot's user id"),
        ("credential" = i64, Path, description = "The token's or webhook's id"),
    ),
    responses(
        (status = 200, description = "Revoked (also when it already was)", body = CredentialView),
        (status = 400, description = "A path parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Only owners and admins manage bots", body = ErrorBody),
        (status = 404, description = "No such bot or credential in the caller's org", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn revoke(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    ids: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<CredentialView>, ApiError> {
    let Path((bot, credential)) = ids.map_err(bad_path)?;
    let session = manager(&auth, &headers).await?;
    let bot = bot_of(&changes, &session, &bot).await?;
    let id = path_id("credential", &credential).map_err(ApiError::invalid_parameter)?;
    let org = session.user.org;
    let revoked = changes.store.revoke_credential(org, bot, id).await.map_err(ApiError::directory)?;
    let Some((revoked, newly)) = revoked else {
        return Err(ApiError::not_found(format!("no credential {id} of bot {bot}")));
    };
    if newly {
        info!(%bot, credential = id, by = %session.user.id, "bot credential revoked");
        let entry = AuditEntry::new(org, Some(session.user.id), "bot.credential_revoked").user(bot).from(ip);
        record(&changes, entry.detail(json!({"credential": id, "kind": revoked.kind.as_str()}))).await;
    }
    Ok(Json(credential_view(revoked)))
}

fn credential_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
        return Err(body::invalid("name", "must be 1 to 80 characters, none of them control characters"));
    }
    Ok(name)
}
