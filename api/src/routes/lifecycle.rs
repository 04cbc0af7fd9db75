//! A channel's life after creation (docs/api.md, "Channels"): reading it, renaming it, setting
//! its topic and purpose, archiving and unarchiving it. Every change is a directory event, so
//! live clients get a `channel` frame at its place in the stream (docs/protocol.md); an archived
//! channel is read-only: it leaves everyone's channels, takes no messages and no membership
//! changes, and its history stays readable by its members. Who may is `crate::policy`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use threadspace_protocol::frames::ChannelKind;
use threadspace_protocol::ChannelId;
use threadspace_store::accounts::DEFAULT_CHANNEL;
use threadspace_store::audit::AuditEntry;
use threadspace_store::channels::{ChannelState, ChannelUpdate, UpdateOutcome};
use threadspace_store::directory::Session;
use tracing::info;
use utoipa::ToSchema;

use super::accounts::publish;
use super::people::role_of;
use super::query::{bad_path, path_id};
use crate::audit::record;
use crate::body::{self, Body};
use crate::caller::{caller, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::limits::ClientIp;
use crate::parts::Changes;
use crate::policy::{may, sees_channel, Action};

/// Longest topic or purpose, in characters.
const MAX_TEXT: usize = 250;

/// A channel as it is now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChannelView {
    pub id: i64,
    /// `public`, `private`, `dm` or `group_dm`.
    pub kind: String,
    /// Public and private channels only.
    pub name: Option<String>,
    /// "" when none.
    pub topic: String,
    /// "" when none.
    pub purpose: String,
    pub archived: bool,
    /// Who created it; null for DMs and group DMs.
    pub created_by: Option<i64>,
    /// How many members it has.
    pub members: i64,
}

impl From<ChannelState> for ChannelView {
    fn from(c: ChannelState) -> Self {
        Self {
            id: c.id.0,
            kind: c.kind.as_str().to_owned(),
            name: c.name,
            topic: c.topic,
            purpose: c.purpose,
            archived: c.archived,
            created_by: c.created_by.map(|u| u.0),
            members: c.members,
        }
    }
}

/// A channel after a change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChannelChanged {
    pub channel: ChannelView,
    /// Whether this request changed anything (false: it already was so).
    pub changed: bool,
    /// Stream sequence of the change's directory event: messages above it follow it. Null when
    /// nothing changed or the event is not published yet.
    pub position: Option<u64>,
}

/// What to change; a field left out (or null) stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelPatch {
    /// A new name: 1–80 of `a-z 0-9 _ -`, starting with a letter or digit; unique in the org.
    #[serde(default)]
    pub name: Option<String>,
    /// Up to 250 characters, no control characters; "" clears it.
    #[serde(default)]
    pub topic: Option<String>,
    /// Up to 250 characters, no control characters; "" clears it.
    #[serde(default)]
    pub purpose: Option<String>,
}

/// A channel the caller sees, and whether they are in it. Their session lists only channels
/// that are not archived, so membership of an archived one is read from the directory.
/// Anything they do not see is 404, like another org's.
pub(crate) async fn seen(
    auth: &Auth,
    changes: &Changes,
    session: &Session,
    channel: ChannelId,
) -> Result<(ChannelState, bool), ApiError> {
    let hidden = || ApiError::not_found(format!("no channel {channel} in your org"));
    let state = changes.store.channel_state(session.user.org, channel).await.map_err(ApiError::directory)?;
    let state = state.ok_or_else(hidden)?;
    let is_member = if state.archived {
        auth.directory
            .is_member(channel, session.user.id)
            .await
            .map_err(|e| ApiError::unavailable("directory", &e, "directory unavailable; retry later"))?
    } else {
        session.channels.iter().any(|c| c.id == channel)
    };
    if sees_channel(role_of(session), state.kind, is_member) {
        Ok((state, is_member))
    } else {
        Err(hidden())
    }
}

fn conflict(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, message)
}

/// Refuses a change of `state` unless it is a named channel the caller may change.
fn changeable(session: &Session, state: &ChannelState, what: &str) -> Result<(), ApiError> {
    if !matches!(state.kind, ChannelKind::Public | ChannelKind::Private) {
        return Err(conflict(
            "not_a_channel",
            format!("channel {} is a DM or group DM: it has no {what}", state.id),
        ));
    }
    let action = Action::ManageChannel { created_by_caller: state.created_by == Some(session.user.id) };
    if !may(role_of(session), action) {
        return Err(ApiError::forbidden(format!(
            "a {} may change only channels they created",
            session.user.role
        )));
    }
    Ok(())
}

/// A topic or purpose: trimmed, at most [`MAX_TEXT`] characters, no control characters.
fn text<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    let value = value.trim();
    if value.chars().count() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(body::invalid(field, "must be at most 250 characters without control characters"));
    }
    Ok(value)
}

/// A channel: its name, kind, topic, purpose, whether it is archived, its member count.
#[utoipa::path(
    get,
    path = "/v1/channels/{channel}",
    tag = "membership",
    params(("channel" = i64, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The channel", body = ChannelView),
        (status = 400, description = "The path parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 404, description = "No such channel the caller sees", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn channel(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    channel: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<ChannelView>, ApiError> {
    let Path(channel) = channel.map_err(bad_path)?;
    let channel = ChannelId(path_id("channel", &channel).map_err(ApiError::invalid_parameter)?);
    let session = caller(&auth, &headers).await?;
    let (state, _) = seen(&auth, &changes, &session, channel).await?;
    Ok(Json(state.into()))
}

/// Renames a channel, or sets its topic or purpose. Members see the change live (`channel`
/// frame, `change: updated`).
#[utoipa::path(
    patch,
    path = "/v1/channels/{channel}",
    tag = "membership",
    params(("channel" = i64, Path, description = "Channel id")),
    request_body = ChannelPatch,
    responses(
        (status = 200, description = "The channel now", body = ChannelChanged),
        (status = 400, description = "A parameter or field is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "The caller may not change this channel", body = ErrorBody),
        (status = 404, description = "No such channel the caller sees", body = ErrorBody),
        (status = 409, description = "The name is taken (`conflict`), the channel is archived (`archived`), a DM (`not_a_channel`), or the org's default channel being renamed (`default_channel`)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    channel: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    Body(request): Body<ChannelPatch>,
) -> Result<Json<ChannelChanged>, ApiError> {
    let Path(channel) = channel.map_err(bad_path)?;
    let channel = ChannelId(path_id("channel", &channel).map_err(ApiError::invalid_parameter)?);
    let session = caller(&auth, &headers).await?;
    let name = request.name.as_deref().map(|n| body::channel_name("name", n.trim())).transpose()?;
    let topic = request.topic.as_deref().map(|t| text("topic", t)).transpose()?;
    let purpose = request.purpose.as_deref().map(|p| text("purpose", p)).transpose()?;
    if name.is_none() && topic.is_none() && purpose.is_none() {
        return Err(body::invalid("name", "or `topic` or `purpose` must be given"));
    }
    let (state, _) = seen(&auth, &changes, &session, channel).await?;
    if state.archived {
        return Err(conflict("archived", format!("channel {channel} is archived: unarchive it first")));
    }
    changeable(&session, &state, "name, topic or purpose")?;
    if name.is_some_and(|n| Some(n) != state.name.as_deref())
        && state.name.as_deref() == Some(DEFAULT_CHANNEL)
    {
        return Err(conflict(
            "default_channel",
            format!("#{DEFAULT_CHANNEL} is where everyone starts: it keeps its name"),
        ));
    }
    let update = ChannelUpdate { name, topic, purpose };
    let outcome = changes
        .store
        .update_channel(session.user.org, channel, &update)
        .await
        .map_err(ApiError::directory)?;
    let event = match outcome {
        UpdateOutcome::Archived => {
            return Err(conflict("archived", format!("channel {channel} was archived meanwhile")))
        }
        UpdateOutcome::Unchanged => None,
        UpdateOutcome::Changed(event) => Some(event),
    };
    let position = match &event {
        Some(event) => publish(&changes, event).await,
        None => None,
    };
    if event.is_some() {
        let fields: Vec<&str> =
            [("name", name.is_some()), ("topic", topic.is_some()), ("purpose", purpose.is_some())]
                .into_iter()
                .filter_map(|(field, given)| given.then_some(field))
                .collect();
        info!(%channel, by = %session.user.id, ?fields, "channel updated");
        let entry =
            AuditEntry::new(session.user.org, Some(session.user.id), "channel.updated").channel(channel);
        // Not the values: a private channel's name and topic are not for the log's readers.
        record(&changes, entry.from(ip).detail(json!({"fields": fields}))).await;
    }
    let state = reread(&changes, &session, channel).await?;
    Ok(Json(ChannelChanged { channel: state.into(), changed: event.is_some(), position }))
}

/// The channel after the caller changed it (they saw it before; the session they were
/// authenticated with predates the change, so it is not asked again).
async fn reread(changes: &Changes, session: &Session, channel: ChannelId) -> Result<ChannelState, ApiError> {
    let state = changes.store.channel_state(session.user.org, channel).await.map_err(ApiError::directory)?;
    state.ok_or_else(|| ApiError::not_found(format!("no channel {channel} in your org")))
}

/// Archives a channel: read-only from its place in the stream on; its history stays.
#[utoipa::path(
    post,
    path = "/v1/channels/{channel}/archive",
    tag = "membership",
    params(("channel" = i64, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The channel, archived", body = ChannelChanged),
        (status = 400, description = "The path parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "The caller may not archive this channel", body = ErrorBody),
        (status = 404, description = "No such channel the caller sees", body = ErrorBody),
        (status = 409, description = "A DM (`not_a_channel`), or the org's default channel (`default_channel`)", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn archive(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    channel: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<ChannelChanged>, ApiError> {
    set_archived(&auth, &changes, ip, channel, headers, true).await
}

/// Unarchives a channel: its members have it back, and it takes messages again.
#[utoipa::path(
    post,
    path = "/v1/channels/{channel}/unarchive",
    tag = "membership",
    params(("channel" = i64, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The channel, not archived", body = ChannelChanged),
        (status = 400, description = "The path parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "The caller may not unarchive this channel", body = ErrorBody),
        (status = 404, description = "No such channel the caller sees", body = ErrorBody),
        (status = 409, description = "A DM (`not_a_channel`)", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn unarchive(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    channel: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<ChannelChanged>, ApiError> {
    set_archived(&auth, &changes, ip, channel, headers, false).await
}

async fn set_archived(
    auth: &Auth,
    changes: &Changes,
    ip: std::net::IpAddr,
    channel: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    archived: bool,
) -> Result<Json<ChannelChanged>, ApiError> {
    let Path(channel) = channel.map_err(bad_path)?;
    let channel = ChannelId(path_id("channel", &channel).map_err(ApiError::invalid_parameter)?);
    let session = caller(auth, &headers).await?;
    let (state, _) = seen(auth, changes, &session, channel).await?;
    changeable(&session, &state, "archive")?;
    if archived && state.name.as_deref() == Some(DEFAULT_CHANNEL) {
        return Err(conflict(
            "default_channel",
            format!("#{DEFAULT_CHANNEL} is where everyone starts: it cannot be archived"),
        ));
    }
    let event =
        changes.store.set_archived(session.user.org, channel, archived).await.map_err(ApiError::directory)?;
    let position = match &event {
        Some(event) => publish(changes, event).await,
        None => None,
    };
    if event.is_some() {
        info!(%channel, by = %session.user.id, archived, "channel archive state changed");
        let action = if archived { "channel.archived" } else { "channel.unarchived" };
        let entry = AuditEntry::new(session.user.org, Some(session.user.id), action).channel(channel);
        record(changes, entry.from(ip)).await;
    }
    let state = reread(changes, &session, channel).await?;
    Ok(Json(ChannelChanged { channel: state.into(), changed: event.is_some(), position }))
}
