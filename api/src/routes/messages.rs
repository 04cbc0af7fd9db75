//! Sending messages over REST and through incoming webhooks (docs/api.md, "Sending messages"):
//! the same `client_msg_id` idempotency and durability as the WebSocket's `send`. A message is
//! stored through `threadspace_stream::publish`, the gateways' own rule, and answered only
//! after JetStream's PubAck; live clients get it from their gateway's fanout like any other.
//!
//! Who may post where: a person to the channels they are a member of; a bot token to the
//! channels of its scope that its bot is a member of; a webhook to its one channel. Archived
//! channels take no messages.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use threadspace_protocol::frames::{valid_body, valid_client_msg_id};
use threadspace_protocol::stored::StoredMessage;
use threadspace_protocol::{ChannelId, OrgId, UserId};
use threadspace_store::bots::{BotCaller, CredentialKind};
use threadspace_store::directory::Session;
use threadspace_stream::Published;
use utoipa::ToSchema;

use super::history::refusal;
use super::query::{bad_path, path_id};
use crate::body::{self, Body, MAX_MESSAGE_REQUEST_BYTES};
use crate::caller::{bot_caller, poster, Auth, Poster, WEBHOOK_SECRET_PREFIX};
use crate::error::{ApiError, ErrorBody};
use crate::metrics as m;
use crate::parts::Sending;

/// A message to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewMessage {
    /// The sender's id for this message, 1–64 of `A-Z a-z 0-9 _ -`: sending again with the
    /// same id within 2 minutes is a retry and stores nothing new.
    pub client_msg_id: String,
    /// Plain text, 1 byte up to the service's body limit (16 KiB by default); no U+0000.
    pub body: String,
}

/// A message posted through an incoming webhook.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookMessage {
    /// The message: plain text, as `body` of a REST send.
    pub text: String,
    /// Optional; give one to make retries safe (as `client_msg_id` of a REST send). Without
    /// it every request is a new message.
    pub client_msg_id: Option<String>,
}

/// A stored message.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SentMessage {
    /// Stream sequence: the message's position in the global order.
    pub seq: u64,
    pub channel: i64,
    pub sender: i64,
    pub client_msg_id: String,
    /// True when this was a retry of a message already stored under this `client_msg_id`.
    pub duplicate: bool,
}

/// A message that passed every check, ready to store.
struct Outgoing {
    org: OrgId,
    channel: ChannelId,
    sender: UserId,
    client_msg_id: String,
    body: String,
}

/// Checks `client_msg_id` and `body` (named `body_field` in the request).
fn checked(sending: &Sending, client_msg_id: &str, body: &str, body_field: &str) -> Result<(), ApiError> {
    if !valid_client_msg_id(client_msg_id) {
        return Err(body::invalid("client_msg_id", "must be 1 to 64 characters of A-Z a-z 0-9 _ -"));
    }
    if body.trim().is_empty() {
        return Err(body::invalid(body_field, "must not be empty"));
    }
    if body.len() > sending.max_body_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("`{body_field}` is {} bytes; the limit is {}", body.len(), sending.max_body_bytes),
        ));
    }
    valid_body(body).map_err(|why| body::invalid(body_field, why))
}

/// Where a bot may post: `channel` in its credential's scope, the bot still a member, the
/// channel not archived.
async fn bot_may_post(auth: &Auth, bot: &BotCaller, channel: ChannelId) -> Result<(), ApiError> {
    if !bot.may_post(channel) {
        return Err(ApiError::forbidden(format!("this credential may not post to channel {channel}")));
    }
    let unavailable = |e: &(dyn std::error::Error + 'static)| {
        ApiError::unavailable("directory", e, "directory unavailable; retry later")
    };
    if !auth.directory.is_member(channel, bot.bot).await.map_err(|e| unavailable(&e))? {
        return Err(super::history::not_member(channel));
    }
    open_channel(auth, channel).await
}

fn archived() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "archived", "the channel is archived: it takes no messages")
}

/// Refuses an archived channel: it is read-only.
async fn open_channel(auth: &Auth, channel: ChannelId) -> Result<(), ApiError> {
    match auth.directory.channel(channel).await {
        Ok(Some(c)) if c.archived => Err(archived()),
        Ok(_) => Ok(()),
        Err(e) => Err(ApiError::unavailable("directory", &e, "directory unavailable; retry later")),
    }
}

/// Why a person may not post to `channel`, which their session does not list: sessions list
/// only channels that are not archived, so an archived channel they are in is 409 `archived`
/// (read-only, not hidden); anything else is refused as history refuses it.
async fn person_refusal(auth: &Auth, session: &Session, channel: ChannelId) -> ApiError {
    match super::history::archived_member(auth, session, channel).await {
        Ok(true) => archived(),
        Ok(false) => refusal(auth, session, channel).await,
        Err(e) => e,
    }
}

/// Stores `message` and answers as a send is answered (201, or 200 for a retry).
async fn store(
    sending: &Sending,
    via: &'static str,
    message: Outgoing,
) -> Result<(StatusCode, Json<SentMessage>), ApiError> {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let stored = StoredMessage {
        org: message.org,
        channel: message.channel,
        sender: message.sender,
        client_msg_id: message.client_msg_id,
        body: message.body,
        ts,
    };
    let (published, latency) = threadspace_stream::publish(&sending.publisher, &stored).await;
    if let Some(latency) = latency {
        metrics::histogram!(m::PUBLISH_DURATION).record(latency.as_secs_f64());
    }
    metrics::counter!(m::MESSAGES_SENT, "via" => via, "result" => published.label()).increment(1);
    match published {
        Published::Stored { seq, duplicate } => {
            let status = if duplicate { StatusCode::OK } else { StatusCode::CREATED };
            Ok((
                status,
                Json(SentMessage {
                    seq,
                    channel: stored.channel.0,
                    sender: stored.sender.0,
                    client_msg_id: stored.client_msg_id,
                    duplicate,
                }),
            ))
        }
        Published::IdReused { seq } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "id_reused",
            format!(
                "client_msg_id {} was already used for a different message (seq {seq}); nothing was stored: send it under a new client_msg_id",
                stored.client_msg_id
            ),
        )),
        Published::Unavailable { timed_out } => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            if timed_out {
                "message not confirmed in time; retry with the same client_msg_id"
            } else {
                "message not stored; retry with the same client_msg_id"
            },
        )),
    }
}

/// Sends a message to a channel, as a person (access token) or a bot (bot token with the
/// `post` scope).
#[utoipa::path(
    post,
    path = "/v1/channels/{channel}/messages",
    tag = "history",
    params(("channel" = i64, Path, description = "Channel id")),
    request_body = NewMessage,
    responses(
        (status = 201, description = "Stored (acknowledged only after JetStream stored it)", body = SentMessage),
        (status = 200, description = "A retry: already stored under this `client_msg_id`", body = SentMessage),
        (status = 400, description = "A field is missing or invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Not a member of the channel (`not_member`), or a bot token without `post` on it (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No such channel the caller sees", body = ErrorBody),
        (status = 409, description = "The `client_msg_id` was used for another message (`id_reused`), or the channel is archived (`archived`)", body = ErrorBody),
        (status = 413, description = "The request or the message body is too large (`too_large`, `body_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "Not confirmed: retry with the same `client_msg_id`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn send(
    State(auth): State<Auth>,
    State(sending): State<Sending>,
    channel: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    Body(request): Body<NewMessage, MAX_MESSAGE_REQUEST_BYTES>,
) -> Result<(StatusCode, Json<SentMessage>), ApiError> {
    let Path(channel) = channel.map_err(bad_path)?;
    let channel = ChannelId(path_id("channel", &channel).map_err(ApiError::invalid_parameter)?);
    let (org, sender) = match poster(&auth, &headers).await? {
        Poster::Person(session) => {
            if !session.channels.iter().any(|c| c.id == channel) {
                return Err(person_refusal(&auth, &session, channel).await);
            }
            open_channel(&auth, channel).await?;
            (session.user.org, session.user.id)
        }
        Poster::Bot(bot) => {
            bot_may_post(&auth, &bot, channel).await?;
            (bot.org, bot.bot)
        }
    };
    checked(&sending, &request.client_msg_id, &request.body, "body")?;
    let message = Outgoing { org, channel, sender, client_msg_id: request.client_msg_id, body: request.body };
    store(&sending, "rest", message).await
}

/// Posts a message through an incoming webhook: the secret URL is the credential.
#[utoipa::path(
    post,
    path = "/v1/hooks/{secret}",
    tag = "integrations",
    params(("secret" = String, Path, description = "The webhook's secret, as in the URL it was created with")),
    request_body = WebhookMessage,
    responses(
        (status = 201, description = "Stored in the webhook's channel", body = SentMessage),
        (status = 200, description = "A retry: already stored under this `client_msg_id`", body = SentMessage),
        (status = 400, description = "A field is missing or invalid", body = ErrorBody),
        (status = 401, description = "No live webhook has this secret (`auth_failed`)", body = ErrorBody),
        (status = 403, description = "The webhook's bot is no longer a member of its channel (`not_member`)", body = ErrorBody),
        (status = 409, description = "The `client_msg_id` was used for another message, or the channel is archived", body = ErrorBody),
        (status = 413, description = "The request or the text is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "Not confirmed: retry with the same `client_msg_id`", body = ErrorBody),
    )
)]
pub(crate) async fn webhook(
    State(auth): State<Auth>,
    State(sending): State<Sending>,
    secret: Result<Path<String>, PathRejection>,
    Body(request): Body<WebhookMessage, MAX_MESSAGE_REQUEST_BYTES>,
) -> Result<(StatusCode, Json<SentMessage>), ApiError> {
    let Path(secret) = secret.map_err(bad_path)?;
    if !secret.starts_with(WEBHOOK_SECRET_PREFIX) {
        return Err(ApiError::auth_failed("webhook secret rejected"));
    }
    let hook = bot_caller(&auth, CredentialKind::Webhook, &secret).await?;
    let &[channel] = hook.channels.as_slice() else {
        return Err(ApiError::auth_failed("webhook secret rejected"));
    };
    bot_may_post(&auth, &hook, channel).await?;
    let client_msg_id =
        request.client_msg_id.unwrap_or_else(|| format!("hook-{}", crate::secrets::new_secret()));
    checked(&sending, &client_msg_id, &request.text, "text")?;
    let message = Outgoing { org: hook.org, channel, sender: hook.bot, client_msg_id, body: request.text };
    store(&sending, "webhook", message).await
}
