//! Membership changes: committed to the directory with their directory event, then published
//! into the stream (`crate::feed`), so every gateway applies the change at its place among the
//! channel's messages (docs/accounts.md, "The directory feed").
//!
//! Who may change what is `crate::policy` (docs/accounts.md, "Permission matrix"): owners,
//! admins and members may join a public channel; anyone may leave; a member may add others to
//! a channel they are in; owners and admins may add or remove anyone. DMs and group DMs have
//! fixed membership; archived channels are read-only. Another org's channels and users, and
//! channels the caller does not see, are 404.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Serialize;
use threadspace_protocol::frames::{ChannelKind, MemberChange};
use threadspace_protocol::{ChannelId, UserId};
use threadspace_store::audit::AuditEntry;
use tracing::info;
use utoipa::ToSchema;

use super::query::{bad_path, path_id};
use crate::audit::record;
use crate::caller::{caller, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::limits::ClientIp;
use crate::metrics as m;
use crate::parts::Changes;
use crate::policy::{may, Action, Role};

/// What a membership request did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MembershipChange {
    pub channel: i64,
    pub user: i64,
    pub change: Change,
    /// False when the membership already was as asked (the request is idempotent).
    pub changed: bool,
    /// The change's position in the stream: messages with a higher `seq` follow the new
    /// membership. Null when nothing changed (or publishing is delayed; the change stands).
    pub position: Option<u64>,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Change {
    Joined,
    Left,
}

/// Adds `user` to `channel`.
#[utoipa::path(
    put,
    path = "/v1/channels/{channel}/members/{user}",
    tag = "membership",
    params(("channel" = i64, Path, description = "Channel id"), ("user" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The user is a member (`changed` says whether they were already)", body = MembershipChange),
        (status = 400, description = "A path parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "The caller may not make this change", body = ErrorBody),
        (status = 404, description = "No such channel or user in the caller's org", body = ErrorBody),
        (status = 409, description = "The channel is archived, or a DM", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn add_member(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    ids: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<MembershipChange>, ApiError> {
    let Path((channel, user)) = ids.map_err(bad_path)?;
    change(&auth, &changes, (&headers, ip), (&channel, &user), true).await
}

/// Removes `user` from `channel`.
#[utoipa::path(
    delete,
    path = "/v1/channels/{channel}/members/{user}",
    tag = "membership",
    params(("channel" = i64, Path, description = "Channel id"), ("user" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The user is not a member (`changed` says whether they were)", body = MembershipChange),
        (status = 400, description = "A path parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "The caller may not make this change", body = ErrorBody),
        (status = 404, description = "No such channel or user in the caller's org", body = ErrorBody),
        (status = 409, description = "The channel is archived, or a DM", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn remove_member(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    ids: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<MembershipChange>, ApiError> {
    let Path((channel, user)) = ids.map_err(bad_path)?;
    change(&auth, &changes, (&headers, ip), (&channel, &user), false).await
}

async fn change(
    auth: &Auth,
    changes: &Changes,
    (headers, ip): (&HeaderMap, std::net::IpAddr),
    (channel, user): (&str, &str),
    add: bool,
) -> Result<Json<MembershipChange>, ApiError> {
    let channel = ChannelId(path_id("channel", channel).map_err(ApiError::invalid_parameter)?);
    let user = UserId(path_id("user", user).map_err(ApiError::invalid_parameter)?);
    let unavailable = |e: &(dyn std::error::Error + 'static)| {
        ApiError::unavailable("directory", e, "directory unavailable; retry later")
    };
    let caller = caller(auth, headers).await?;
    let org = caller.user.org;
    let directory = &auth.directory;
    // Visibility (archived channels included) has one home.
    let (target, caller_is_member) = super::lifecycle::seen(auth, changes, &caller, channel).await?;
    let role = Role::parse(&caller.user.role).unwrap_or(Role::Guest);
    if target.archived {
        return Err(ApiError::new(StatusCode::CONFLICT, "archived", "the channel is archived"));
    }
    if matches!(target.kind, ChannelKind::Dm | ChannelKind::GroupDm) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "fixed_membership",
            "membership of DMs and group DMs cannot change",
        ));
    }
    match directory.user_org(user).await {
        Ok(Some(user_org)) if user_org == org => {}
        Ok(_) => return Err(ApiError::not_found(format!("no user {user} in your org"))),
        Err(e) => return Err(unavailable(&e)),
    }
    let is_self = user == caller.user.id;
    let action = match (add, is_self) {
        (true, true) if caller_is_member => None,
        (true, true) => Some(Action::JoinPublic),
        (true, false) => Some(Action::AddMember { caller_is_member }),
        // Anyone may leave.
        (false, true) => None,
        (false, false) => Some(Action::RemoveMember),
    };
    if action.is_some_and(|action| !may(role, action)) {
        return Err(ApiError::forbidden("you may not change this membership"));
    }
    let member_change = if add { MemberChange::Joined } else { MemberChange::Left };
    let event =
        changes.store.set_member(org, channel, user, member_change).await.map_err(ApiError::directory)?;
    let label = if add { Change::Joined } else { Change::Left };
    let mut position = None;
    if let Some(event) = &event {
        metrics::counter!(m::MEMBERSHIP_CHANGES, "change" => if add { "joined" } else { "left" })
            .increment(1);
        position = super::accounts::publish(changes, event).await;
        info!(%channel, %user, by = %caller.user.id, change = ?member_change, ?position, "membership changed");
        let action = if add { "member.added" } else { "member.removed" };
        let entry = AuditEntry::new(org, Some(caller.user.id), action).user(user).channel(channel).from(ip);
        record(changes, entry).await;
    }
    Ok(Json(MembershipChange {
        channel: channel.0,
        user: user.0,
        change: label,
        changed: event.is_some(),
        position,
    }))
}
