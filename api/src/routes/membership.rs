//! Membership changes: commit to the directory, then announce on `ctl.membership.<org>` so
//! every gateway applies the change to its live connections (sends and fanout follow it
//! without a reconnect).
//!
//! Who may change what (docs/api.md): anyone may join a public channel or leave any channel;
//! a member may add others to a channel they are in; owners and admins may add or remove
//! anyone. DMs and group DMs have fixed membership; archived channels are read-only. Another
//! org's channels and users, and private channels the caller is not in, are 404.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use threadspace_protocol::frames::{ChannelKind, MemberChange};
use threadspace_protocol::stored::MembershipEvent;
use threadspace_protocol::subjects::membership_subject;
use threadspace_protocol::{ChannelId, UserId};
use tracing::{info, warn};
use utoipa::ToSchema;

use super::query::{bad_path, path_id};
use crate::caller::{caller, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::metrics as m;
use crate::parts::Announcer;

/// What a membership request did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MembershipChange {
    pub channel: i64,
    pub user: i64,
    pub change: Change,
    /// False when the membership already was as asked (the request is idempotent).
    pub changed: bool,
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
    State(announcer): State<Announcer>,
    ids: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<MembershipChange>, ApiError> {
    let Path((channel, user)) = ids.map_err(bad_path)?;
    change(&auth, &announcer, &headers, (&channel, &user), true).await
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
    State(announcer): State<Announcer>,
    ids: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<MembershipChange>, ApiError> {
    let Path((channel, user)) = ids.map_err(bad_path)?;
    change(&auth, &announcer, &headers, (&channel, &user), false).await
}

async fn change(
    auth: &Auth,
    announcer: &Announcer,
    headers: &HeaderMap,
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
    let not_found = || ApiError::not_found(format!("no channel {channel} in your org"));
    let target = match directory.channel(channel).await {
        Ok(Some(c)) if c.org == org => c,
        Ok(_) => return Err(not_found()),
        Err(e) => return Err(unavailable(&e)),
    };
    let caller_is_member = caller.channels.iter().any(|c| c.id == channel);
    if target.kind == ChannelKind::Private && !caller_is_member {
        return Err(not_found());
    }
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
    let is_admin = matches!(caller.user.role.as_str(), "owner" | "admin");
    let allowed = if add {
        (target.kind == ChannelKind::Public && is_self) || caller_is_member || is_admin
    } else {
        is_self || is_admin
    };
    if !allowed {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "you may not change this membership"));
    }
    let changed = if add {
        directory.add_member(channel, user).await
    } else {
        directory.remove_member(channel, user).await
    }
    .map_err(|e| unavailable(&e))?;
    let (change, label) =
        if add { (MemberChange::Joined, Change::Joined) } else { (MemberChange::Left, Change::Left) };
    if changed {
        metrics::counter!(m::MEMBERSHIP_CHANGES, "change" => if add { "joined" } else { "left" })
            .increment(1);
        let event = MembershipEvent { channel, user, change };
        let payload = serde_json::to_vec(&event).expect("events serialize");
        // Core NATS is enough: a gateway that misses the event reloads membership at the
        // user's next hello. Flush so the event is out before we answer.
        let nats = &announcer.0;
        let published = nats.publish(membership_subject(org), payload.into()).await;
        if let Err(e) = published
            .map_err(async_nats::Error::from)
            .and(nats.flush().await.map_err(async_nats::Error::from))
        {
            warn!(error = %e, "membership event not published");
        }
        info!(%channel, %user, by = %caller.user.id, ?change, "membership changed");
    }
    Ok(Json(MembershipChange { channel: channel.0, user: user.0, change: label, changed }))
}
