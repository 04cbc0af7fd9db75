//! The read path over Postgres: history pages and search. Both read only channels the caller
//! is a member of, and answer a bad parameter with 400 naming it. They use their own small
//! pool with a statement timeout, so a heavy search cannot starve authentication.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use threadspace_protocol::frames::MessageFrame;
use threadspace_protocol::{ChannelId, Seq};
use threadspace_store::messages::{self, PageRequest, SearchError};
use utoipa::ToSchema;

use super::query::{bad_path, int_param, params, path_id};
use crate::caller::{caller, poster, Auth, Poster};
use crate::error::{ApiError, ErrorBody};
use crate::metrics as m;
use crate::parts::Archive;
use crate::policy::{sees_channel, Role};

/// Default history page.
pub(crate) const DEFAULT_PAGE: i64 = 50;
/// Default and largest search page.
pub(crate) const DEFAULT_HITS: i64 = 20;
pub(crate) const MAX_HITS: i64 = 100;
/// Deepest a search may page (ranked results further down are noise).
pub(crate) const MAX_SEARCH_OFFSET: i64 = 1_000;
/// Longest search query, in characters.
pub(crate) const MAX_QUERY_CHARS: usize = 256;

/// A stored message, as the WebSocket's `msg` frame carries it (docs/protocol.md).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Message {
    /// Stream sequence: the message's position in the global order.
    pub seq: u64,
    pub channel: i64,
    pub sender: i64,
    pub client_msg_id: String,
    /// Plain text: clients must never render it as HTML.
    pub body: String,
    /// Gateway time at publish, milliseconds since the Unix epoch.
    pub ts: i64,
}

impl From<MessageFrame> for Message {
    fn from(frame: MessageFrame) -> Self {
        Self {
            seq: frame.seq,
            channel: frame.channel.0,
            sender: frame.sender.0,
            client_msg_id: frame.client_msg_id,
            body: frame.body,
            ts: frame.ts,
        }
    }
}

/// One page of a channel's history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryPage {
    pub channel: i64,
    pub messages: Vec<Message>,
    /// More messages exist beyond this page in the direction asked for.
    pub has_more: bool,
}

/// A search hit: the message and its rank (higher is better).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchHit {
    pub seq: u64,
    pub channel: i64,
    pub sender: i64,
    pub client_msg_id: String,
    pub body: String,
    pub ts: i64,
    pub rank: f32,
}

/// A page of search hits, best first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// Pass as `cursor` for the next page; null when there is none.
    pub next_cursor: Option<String>,
}

/// Why a non-member is refused a channel: 404 if they do not see it (another org's, a private
/// channel or DM they are not in, anything a guest was not added to), else 403 `not_member`.
pub(crate) async fn refusal(
    auth: &Auth,
    session: &threadspace_store::directory::Session,
    channel: ChannelId,
) -> ApiError {
    let hidden = || ApiError::not_found(format!("no channel {channel} in your org"));
    match auth.directory.channel(channel).await {
        Ok(Some(c)) if c.org == session.user.org => {
            let role = Role::parse(&session.user.role).unwrap_or(Role::Guest);
            if sees_channel(role, c.kind, false) {
                not_member(channel)
            } else {
                hidden()
            }
        }
        Ok(_) => hidden(),
        Err(e) => ApiError::unavailable("directory", &e, "directory unavailable; retry later"),
    }
}

/// Whether `channel` is an archived channel of the caller's org that they are a member of.
pub(crate) async fn archived_member(
    auth: &Auth,
    session: &threadspace_store::directory::Session,
    channel: ChannelId,
) -> Result<bool, ApiError> {
    let unavailable = |e: &(dyn std::error::Error + 'static)| {
        ApiError::unavailable("directory", e, "directory unavailable; retry later")
    };
    match auth.directory.channel(channel).await.map_err(|e| unavailable(&e))? {
        Some(c) if c.org == session.user.org && c.archived => {
            auth.directory.is_member(channel, session.user.id).await.map_err(|e| unavailable(&e))
        }
        _ => Ok(false),
    }
}

pub(crate) fn not_member(channel: ChannelId) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "not_member", format!("you are not a member of channel {channel}"))
}

fn history_unavailable(what: &str, error: &(dyn std::error::Error + 'static)) -> ApiError {
    ApiError::unavailable(what, error, "history is unavailable; retry later")
}

/// A page of a channel's history, for a member (access token) or a bot token with `read` on it.
#[utoipa::path(
    get,
    path = "/v1/channels/{channel}/messages",
    tag = "history",
    params(
        ("channel" = i64, Path, description = "Channel id"),
        ("before" = Option<i64>, Query, description = "Only messages with seq below this (paging backwards)"),
        ("after" = Option<i64>, Query, description = "Only messages with seq above this (paging forwards, or filling a gap)"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200 (default 50)"),
    ),
    responses(
        (status = 200, description = "The page, oldest first", body = HistoryPage),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "The caller sees the channel (public) but is not a member (`not_member`), or a bot token without `read` on it (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No such channel the caller sees (another org's, private or a DM they are not in, or not added to as a guest)", body = ErrorBody),
        (status = 503, description = "The archive is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn messages(
    State(auth): State<Auth>,
    State(archive): State<Archive>,
    channel: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<HistoryPage>, ApiError> {
    let Path(channel) = channel.map_err(bad_path)?;
    let channel = ChannelId(path_id("channel", &channel).map_err(ApiError::invalid_parameter)?);
    let params =
        params(query.as_deref(), &["before", "after", "limit"]).map_err(ApiError::invalid_parameter)?;
    let request = (|| {
        let before = int_param(&params, "before", 1..=i64::MAX)?;
        let after = int_param(&params, "after", 0..=i64::MAX - 1)?;
        let limit = int_param(&params, "limit", 1..=messages::MAX_PAGE)?.unwrap_or(DEFAULT_PAGE);
        if let (Some(b), Some(a)) = (before, after) {
            if b <= a + 1 {
                return Err(format!("`before` ({b}) must be greater than `after` + 1 ({a} + 1)"));
            }
        }
        Ok(PageRequest { before: before.map(|s| s as Seq), after: after.map(|s| s as Seq), limit })
    })()
    .map_err(ApiError::invalid_parameter)?;
    match poster(&auth, &headers).await? {
        Poster::Person(session) => {
            // The session lists channels that are not archived; an archived one's members
            // still read its history.
            if !session.channels.iter().any(|c| c.id == channel)
                && !archived_member(&auth, &session, channel).await?
            {
                return Err(refusal(&auth, &session, channel).await);
            }
        }
        Poster::Bot(bot) => {
            if !bot.may_read(channel) {
                return Err(ApiError::forbidden(format!("this credential may not read channel {channel}")));
            }
            let member = auth.directory.is_member(channel, bot.bot).await;
            if !member
                .map_err(|e| ApiError::unavailable("directory", &e, "directory unavailable; retry later"))?
            {
                return Err(not_member(channel));
            }
        }
    }
    let client = archive.0.get().await.map_err(|e| history_unavailable("history pool", &e))?;
    let started = std::time::Instant::now();
    let page = messages::history(&client, channel, request)
        .await
        .map_err(|e| history_unavailable("history page", &e))?;
    metrics::histogram!(m::HISTORY_DURATION, "kind" => "page").record(started.elapsed().as_secs_f64());
    Ok(Json(HistoryPage {
        channel: channel.0,
        messages: page.messages.into_iter().map(Message::from).collect(),
        has_more: page.has_more,
    }))
}

/// Full-text search over the channels the caller is a member of.
#[utoipa::path(
    get,
    path = "/v1/search",
    tag = "history",
    params(
        ("q" = String, Query, description = "Words to find (at most 256 characters)"),
        ("limit" = Option<i64>, Query, description = "Hits per page, 1 to 100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("channel" = Option<i64>, Query, description = "Only this channel"),
    ),
    responses(
        (status = 200, description = "Hits, best first", body = SearchResults),
        (status = 400, description = "A parameter is invalid, or `q` has no searchable words", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "`channel` is a public channel the caller is not a member of", body = ErrorBody),
        (status = 404, description = "`channel` is not one the caller sees", body = ErrorBody),
        (status = 503, description = "The archive is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn search(
    State(auth): State<Auth>,
    State(archive): State<Archive>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<SearchResults>, ApiError> {
    let params = params(query.as_deref(), &["q", "limit", "cursor", "channel"])
        .map_err(ApiError::invalid_parameter)?;
    let q = params.get("q").map(|q| q.trim()).unwrap_or("");
    if q.is_empty() {
        return Err(ApiError::invalid_parameter("query parameter `q` is required and must not be blank"));
    }
    if q.chars().count() > MAX_QUERY_CHARS || q.contains('\0') {
        return Err(ApiError::invalid_parameter(format!(
            "query parameter `q` must be at most {MAX_QUERY_CHARS} characters, without NUL"
        )));
    }
    let (limit, offset, only) = (|| {
        let limit = int_param(&params, "limit", 1..=MAX_HITS)?.unwrap_or(DEFAULT_HITS);
        let offset = int_param(&params, "cursor", 0..=MAX_SEARCH_OFFSET)?.unwrap_or(0);
        let channel = int_param(&params, "channel", 1..=i64::MAX)?.map(ChannelId);
        Ok::<_, String>((limit, offset, channel))
    })()
    .map_err(ApiError::invalid_parameter)?;
    let session = caller(&auth, &headers).await?;
    let channels: Vec<ChannelId> = match only {
        Some(channel) if session.channels.iter().any(|c| c.id == channel) => vec![channel],
        Some(channel) => return Err(refusal(&auth, &session, channel).await),
        None => session.channels.iter().map(|c| c.id).collect(),
    };
    let client = archive.0.get().await.map_err(|e| history_unavailable("history pool", &e))?;
    let started = std::time::Instant::now();
    let hits = match messages::search(&client, session.user.org, &channels, q, limit, offset).await {
        Ok(hits) => hits,
        Err(SearchError::NoWords) => {
            return Err(ApiError::invalid_parameter(
                "query parameter `q` has no searchable words (only stop words or punctuation)",
            ))
        }
        Err(SearchError::Query(e)) => return Err(history_unavailable("search", &e)),
    };
    metrics::histogram!(m::HISTORY_DURATION, "kind" => "search").record(started.elapsed().as_secs_f64());
    let next = offset + hits.len() as i64;
    let next_cursor = (hits.len() as i64 == limit && next <= MAX_SEARCH_OFFSET).then(|| next.to_string());
    let hits = hits
        .into_iter()
        .map(|hit| {
            let message = Message::from(hit.message);
            SearchHit {
                seq: message.seq,
                channel: message.channel,
                sender: message.sender,
                client_msg_id: message.client_msg_id,
                body: message.body,
                ts: message.ts,
                rank: hit.rank,
            }
        })
        .collect();
    Ok(Json(SearchResults { hits, next_cursor }))
}
