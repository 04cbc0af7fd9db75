//! Creating and finding conversations (docs/api.md, "Channels"): named channels, DMs and group
//! DMs opened idempotently, the org's public channels for the browser, and a channel's members.
//! New members join through the directory feed, so live clients get `member` frames in stream
//! order and can post at once. Who may do what is `crate::policy`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use threadspace_protocol::frames::ChannelKind;
use threadspace_protocol::{ChannelId, UserId};
use threadspace_store::audit::AuditEntry;
use tracing::info;
use utoipa::ToSchema;

use super::accounts::publish;
use super::people::role_of;
use super::query::{bad_path, int_param, params, path_id};
use crate::audit::record;
use crate::body::{self, Body};
use crate::caller::{caller, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::limits::ClientIp;
use crate::parts::Changes;
use crate::policy::{may, Action};

/// Most people in a group DM, the caller included.
const MAX_CONVERSATION: usize = 9;
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

/// A channel to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewChannel {
    /// 1–80 of `a-z 0-9 _ -`, starting with a letter or digit; unique in the org.
    pub name: String,
    /// `public` or `private`.
    pub kind: String,
}

/// The people of a DM or group DM to open.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewConversation {
    /// The other people (1 for a DM, up to 8 for a group DM); the caller is added.
    pub members: Vec<i64>,
}

/// A conversation created or opened.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Conversation {
    pub id: i64,
    /// `public`, `private`, `dm` or `group_dm`.
    pub kind: String,
    /// Public and private channels only.
    pub name: Option<String>,
    /// Its members now (for a new channel, the creator).
    pub members: Vec<i64>,
    /// Whether this request created it (false: the DM or group DM existed).
    pub created: bool,
    /// Stream sequence of the last member joining: messages above it reach every member.
    /// Null when nothing changed or the event is not published yet.
    pub position: Option<u64>,
}

/// A public channel in the browser.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ListedChannel {
    pub id: i64,
    pub name: String,
    /// How many members it has.
    pub members: i64,
    /// Whether the caller is one of them.
    pub joined: bool,
}

/// A page of the org's public channels, by name.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChannelBrowser {
    pub channels: Vec<ListedChannel>,
    /// Pass as `after` for the next page; null on the last.
    pub next_after: Option<String>,
}

/// A page of a channel's members, by user id.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Members {
    pub channel: i64,
    pub members: Vec<i64>,
    /// Pass as `after` for the next page; null on the last.
    pub next_after: Option<i64>,
}

/// Publishes the events of a change (the last one carries every earlier one of the org) and
/// returns its stream position.
pub(crate) async fn publish_all(
    changes: &Changes,
    events: &[threadspace_protocol::stored::DirectoryEvent],
) -> Option<u64> {
    match events.last() {
        Some(last) => publish(changes, last).await,
        None => None,
    }
}

/// Creates a public or private channel; the caller is its first member.
#[utoipa::path(
    post,
    path = "/v1/channels",
    tag = "membership",
    request_body = NewChannel,
    responses(
        (status = 201, description = "The channel, with the caller as its member", body = Conversation),
        (status = 400, description = "A field is missing or invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Guests may not create channels", body = ErrorBody),
        (status = 409, description = "The name is taken in the org (`conflict`)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_channel(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    Body(request): Body<NewChannel>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    let session = caller(&auth, &headers).await?;
    let name = body::channel_name("name", request.name.trim())?;
    let kind = match request.kind.as_str() {
        "public" => ChannelKind::Public,
        "private" => ChannelKind::Private,
        _ => return Err(body::invalid("kind", "must be public or private")),
    };
    if !may(role_of(&session), Action::CreateChannel) {
        return Err(ApiError::forbidden("guests may not create channels"));
    }
    let (org, me) = (session.user.org, session.user.id);
    let (channel, events) =
        changes.store.create_channel(org, me, kind, name).await.map_err(ApiError::directory)?;
    let position = publish_all(&changes, &events).await;
    info!(%channel, %org, by = %me, name, kind = kind.as_str(), "channel created");
    let entry = AuditEntry::new(org, Some(me), "channel.created").channel(channel).from(ip);
    // A private channel's name is not for the audit log's readers (docs/accounts.md).
    let shown_name = (kind == ChannelKind::Public).then_some(name);
    record(&changes, entry.detail(json!({"name": shown_name, "kind": kind.as_str()}))).await;
    Ok((
        StatusCode::CREATED,
        Json(Conversation {
            id: channel.0,
            kind: kind.as_str().into(),
            name: Some(name.into()),
            members: vec![me.0],
            created: true,
            position,
        }),
    ))
}

/// Whether every one of `others` shares a channel with the caller.
async fn all_share_a_channel(changes: &Changes, me: UserId, others: &[UserId]) -> Result<bool, ApiError> {
    for &other in others {
        if !changes.store.share_a_channel(me, other).await.map_err(ApiError::directory)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Opens the DM or group DM of the caller and `members`: the same people always get the same
/// conversation.
#[utoipa::path(
    post,
    path = "/v1/conversations",
    tag = "membership",
    request_body = NewConversation,
    responses(
        (status = 200, description = "The conversation existed", body = Conversation),
        (status = 201, description = "The conversation was created", body = Conversation),
        (status = 400, description = "A field is missing or invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 404, description = "A member is not an active person the caller sees", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn open_conversation(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    Body(request): Body<NewConversation>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    let session = caller(&auth, &headers).await?;
    let me = session.user.id;
    let mut others: Vec<UserId> = request.members.iter().map(|&id| UserId(id)).filter(|&u| u != me).collect();
    others.sort_unstable_by_key(|u| u.0);
    others.dedup();
    if others.is_empty() {
        return Err(body::invalid("members", "must name at least one other person"));
    }
    if others.len() >= MAX_CONVERSATION {
        return Err(body::invalid("members", "may name at most 8 other people"));
    }
    if let Some(bad) = request.members.iter().find(|&&id| id <= 0) {
        return Err(body::invalid("members", &format!("{bad} is not a user id")));
    }
    let org = session.user.org;
    // People of another org, unknown or deactivated ones are all "not found".
    if changes.store.active_people(org, &others).await.map_err(ApiError::directory)? != others.len() {
        return Err(ApiError::not_found("some of `members` are not active people of your org"));
    }
    let role = role_of(&session);
    let with_strangers = !all_share_a_channel(&changes, me, &others).await?;
    if !may(role, Action::OpenConversation { with_strangers }) {
        // A guest does not see people outside their channels: as if they did not exist.
        return Err(ApiError::not_found("some of `members` are not active people of your org"));
    }
    let mut members = others.clone();
    members.push(me);
    let opened = changes.store.open_conversation(org, &members).await.map_err(ApiError::directory)?;
    let position = publish_all(&changes, &opened.events).await;
    members.sort_unstable_by_key(|u| u.0);
    if opened.created {
        info!(channel = %opened.channel, %org, by = %me, people = members.len(), "conversation opened");
        let entry = AuditEntry::new(org, Some(me), "conversation.created").channel(opened.channel).from(ip);
        // Who talks with whom is not for the audit log's readers: only how many (docs/accounts.md).
        record(&changes, entry.detail(json!({"size": members.len()}))).await;
    }
    let status = if opened.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((
        status,
        Json(Conversation {
            id: opened.channel.0,
            kind: opened.kind.as_str().into(),
            name: None,
            members: members.iter().map(|u| u.0).collect(),
            created: opened.created,
            position,
        }),
    ))
}

/// The org's public channels, by name, with member counts.
#[utoipa::path(
    get,
    path = "/v1/browse/channels",
    tag = "membership",
    params(
        ("q" = Option<String>, Query, description = "Only channels whose name contains this (1 to 80 characters)"),
        ("after" = Option<String>, Query, description = "Only channels named after this: the previous page's `next_after`"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200 (default 50)"),
        ("archived" = Option<bool>, Query, description = "`true`: the archived public channels instead (default `false`)"),
    ),
    responses(
        (status = 200, description = "A page of public channels, by name", body = ChannelBrowser),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Guests may not browse channels", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn browse(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<ChannelBrowser>, ApiError> {
    let params = params(query.as_deref(), &["q", "after", "limit", "archived"])
        .map_err(ApiError::invalid_parameter)?;
    let archived = match params.get("archived").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid_parameter(format!(
                "query parameter `archived` must be true or false, got {other:?}"
            )))
        }
    };
    let limit = int_param(&params, "limit", 1..=MAX_PAGE)
        .map_err(ApiError::invalid_parameter)?
        .unwrap_or(DEFAULT_PAGE);
    let text = |name: &str| match params.get(name).map(|v| v.trim()) {
        None => Ok(None),
        Some(v) if v.is_empty() || v.chars().count() > 80 || v.chars().any(char::is_control) => {
            Err(ApiError::invalid_parameter(format!(
                "query parameter `{name}` must be 1 to 80 characters without control characters"
            )))
        }
        Some(v) => Ok(Some(v.to_owned())),
    };
    let (q, after) = (text("q")?, text("after")?);
    let session = caller(&auth, &headers).await?;
    if !may(role_of(&session), Action::BrowseChannels) {
        return Err(ApiError::forbidden("guests see only the channels they were added to"));
    }
    let page = changes
        .store
        .public_channels(
            session.user.org,
            session.user.id,
            archived,
            q.as_deref(),
            after.as_deref(),
            limit as u32,
        )
        .await
        .map_err(ApiError::directory)?;
    Ok(Json(ChannelBrowser {
        channels: page
            .channels
            .into_iter()
            .map(|c| ListedChannel { id: c.id.0, name: c.name, members: c.members, joined: c.joined })
            .collect(),
        next_after: page.next_after,
    }))
}

/// A channel's members, by user id.
#[utoipa::path(
    get,
    path = "/v1/channels/{channel}/members",
    tag = "membership",
    params(
        ("channel" = i64, Path, description = "Channel id"),
        ("after" = Option<i64>, Query, description = "Only members with an id above this: the previous page's `next_after`"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200 (default 50)"),
    ),
    responses(
        (status = 200, description = "A page of members", body = Members),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 404, description = "No such channel the caller sees", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn members(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    channel: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Members>, ApiError> {
    let Path(channel) = channel.map_err(bad_path)?;
    let channel = ChannelId(path_id("channel", &channel).map_err(ApiError::invalid_parameter)?);
    let params = params(query.as_deref(), &["after", "limit"]).map_err(ApiError::invalid_parameter)?;
    let after = int_param(&params, "after", 0..=i64::MAX).map_err(ApiError::invalid_parameter)?.unwrap_or(0);
    let limit = int_param(&params, "limit", 1..=MAX_PAGE)
        .map_err(ApiError::invalid_parameter)?
        .unwrap_or(DEFAULT_PAGE);
    let session = caller(&auth, &headers).await?;
    super::lifecycle::seen(&auth, &changes, &session, channel).await?;
    let (members, next) = changes
        .store
        .channel_members(channel, UserId(after), limit as u32)
        .await
        .map_err(ApiError::directory)?;
    Ok(Json(Members {
        channel: channel.0,
        members: members.into_iter().map(|u| u.0).collect(),
        next_after: next.map(|u| u.0),
    }))
}
