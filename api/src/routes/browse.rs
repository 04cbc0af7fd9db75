//! Reading who is who: the org's people (search and pages), one person, and the caller's
//! channel list with the members of their DMs — what a client needs to put names on ids
//! (docs/api.md, "People" and "Channels"). Who may read what is `crate::policy`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use threadspace_protocol::frames::ChannelKind;
use threadspace_protocol::{ChannelId, UserId};
use utoipa::ToSchema;

use super::accounts::{user_view, UserView};
use super::people::role_of;
use super::query::{bad_path, int_param, params, path_id};
use crate::caller::{caller, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::parts::Changes;
use crate::policy::{may, sees_person, Action, Role};

/// Default and largest page of people.
const DEFAULT_PEOPLE: i64 = 50;
const MAX_PEOPLE: i64 = 200;
/// Longest people search text, in characters.
const MAX_PEOPLE_QUERY: usize = 100;

/// A page of the org's people, in id order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct People {
    pub users: Vec<UserView>,
    /// Pass as `after` for the next page; null on the last.
    pub next_after: Option<i64>,
}

/// One of the caller's channels.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MyChannel {
    pub id: i64,
    /// `public`, `private`, `dm` or `group_dm`.
    pub kind: String,
    /// Public and private channels only.
    pub name: Option<String>,
    /// The caller's read marker (0: nothing read).
    pub last_read: u64,
    /// Every member (the caller included), for DMs and group DMs; null for channels.
    pub members: Option<Vec<i64>>,
}

/// The caller's channels.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MyChannels {
    pub channels: Vec<MyChannel>,
}

/// The org's people, optionally filtered, in pages.
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "people",
    params(
        ("q" = Option<String>, Query, description = "Only people whose handle or display name (owners and admins: also email) contains this, ignoring case (1 to 100 characters)"),
        ("after" = Option<i64>, Query, description = "Only people with an id above this: the previous page's `next_after`"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200 (default 50)"),
    ),
    responses(
        (status = 200, description = "A page of people, in id order", body = People),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Guests may not list the org's people", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn people(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<People>, ApiError> {
    let params = params(query.as_deref(), &["q", "after", "limit"]).map_err(ApiError::invalid_parameter)?;
    let after = int_param(&params, "after", 0..=i64::MAX).map_err(ApiError::invalid_parameter)?.unwrap_or(0);
    let limit = int_param(&params, "limit", 1..=MAX_PEOPLE)
        .map_err(ApiError::invalid_parameter)?
        .unwrap_or(DEFAULT_PEOPLE);
    let text = match params.get("q").map(|q| q.trim()) {
        None => None,
        Some(q)
            if q.is_empty() || q.chars().count() > MAX_PEOPLE_QUERY || q.chars().any(char::is_control) =>
        {
            return Err(ApiError::invalid_parameter(format!(
                "query parameter `q` must be 1 to {MAX_PEOPLE_QUERY} characters without control characters"
            )))
        }
        Some(q) => Some(q.to_owned()),
    };
    let session = caller(&auth, &headers).await?;
    let role = role_of(&session);
    if !may(role, Action::SearchPeople) {
        return Err(ApiError::forbidden("guests see only the people of their channels"));
    }
    let sees_email = role >= Role::Admin;
    let page = changes
        .store
        .people(session.user.org, text.as_deref(), sees_email, UserId(after), limit as u32)
        .await
        .map_err(ApiError::directory)?;
    let me = session.user.id;
    Ok(Json(People {
        users: page
            .people
            .into_iter()
            .map(|p| {
                let show_email = sees_email || p.user == me;
                user_view(p, show_email)
            })
            .collect(),
        next_after: page.next_after.map(|u| u.0),
    }))
}

/// One person of the caller's org.
#[utoipa::path(
    get,
    path = "/v1/users/{user}",
    tag = "people",
    params(("user" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The person", body = UserView),
        (status = 400, description = "`user` is not a positive integer", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 404, description = "No such person the caller sees (another org's; for a guest, anyone outside their channels)", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn person(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    user: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<UserView>, ApiError> {
    let Path(user) = user.map_err(bad_path)?;
    let user = UserId(path_id("user", &user).map_err(ApiError::invalid_parameter)?);
    let session = caller(&auth, &headers).await?;
    let hidden = || ApiError::not_found(format!("no user {user} in your org"));
    let role = role_of(&session);
    let me = session.user.id;
    let Some(account) = changes.store.account(session.user.org, user).await.map_err(ApiError::directory)?
    else {
        return Err(hidden());
    };
    let shares = if role >= Role::Member || user == me {
        false
    } else {
        changes.store.share_a_channel(me, user).await.map_err(ApiError::directory)?
    };
    if !sees_person(role, user == me, shares) {
        return Err(hidden());
    }
    Ok(Json(user_view(account, role >= Role::Admin || user == me)))
}

/// The caller's channels (not archived), with read markers and DM members.
#[utoipa::path(
    get,
    path = "/v1/channels",
    tag = "membership",
    responses(
        (status = 200, description = "The caller's channels, in id order", body = MyChannels),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn my_channels(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    headers: HeaderMap,
) -> Result<Json<MyChannels>, ApiError> {
    // The session read at authentication already holds the caller's channels with their read
    // markers; only conversations need one more read, for their members.
    let session = caller(&auth, &headers).await?;
    let conversations: Vec<ChannelId> = session
        .channels
        .iter()
        .filter(|c| matches!(c.kind, ChannelKind::Dm | ChannelKind::GroupDm))
        .map(|c| c.id)
        .collect();
    let mut members = if conversations.is_empty() {
        std::collections::HashMap::new()
    } else {
        changes.store.conversation_members(&conversations).await.map_err(ApiError::directory)?
    };
    Ok(Json(MyChannels {
        channels: session
            .channels
            .into_iter()
            .map(|c| MyChannel {
                id: c.id.0,
                kind: c.kind.as_str().to_owned(),
                members: members.remove(&c.id).map(|m| m.into_iter().map(|u| u.0).collect()),
                name: c.name,
                last_read: c.last_read,
            })
            .collect(),
    }))
}
