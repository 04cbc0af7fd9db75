//! Membership changes: the REST handler that commits them to the directory and announces them
//! on `ctl.membership.<org>`, and the subscriber that applies announced changes to this
//! gateway's connections (so sends and fanout follow membership without a reconnect).

use std::sync::Arc;

use hyper::{Response, StatusCode};
use threadspace_protocol::frames::{ChannelKind, MemberChange};
use threadspace_protocol::stored::MembershipEvent;
use threadspace_protocol::subjects::{membership_subject, MEMBERSHIP_PREFIX};
use threadspace_protocol::{ChannelId, UserId};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::http::{error, json, Body};
use crate::metrics as m;
use crate::state::{anyhow_chain, State};

/// `PUT` (add = true) or `DELETE` `/v1/channels/{channel}/members/{user}`.
pub async fn change(
    state: &State,
    token: Option<&str>,
    channel: ChannelId,
    user: UserId,
    add: bool,
) -> Response<Body> {
    let unavailable = |e: &(dyn std::error::Error + 'static)| {
        warn!(error = %anyhow_chain(e), "directory unavailable for a membership change");
        error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "directory unavailable; retry later")
    };
    let Some(token) = token else {
        return error(
            StatusCode::UNAUTHORIZED,
            "auth_failed",
            "missing `Authorization: Bearer <token>` header",
        );
    };
    let Ok(identity) = state.keys().verify(token) else {
        return error(StatusCode::UNAUTHORIZED, "auth_failed", "token rejected");
    };
    let caller = match state.directory.session(identity.user).await {
        Ok(Some(s)) if s.user.org == identity.org && !s.deactivated => s,
        Ok(_) => return error(StatusCode::UNAUTHORIZED, "auth_failed", "token rejected"),
        Err(e) => return unavailable(&e),
    };
    let not_found =
        || error(StatusCode::NOT_FOUND, "not_found", &format!("no channel {channel} in your org"));
    let target = match state.directory.channel(channel).await {
        Ok(Some(c)) if c.org == identity.org => c,
        Ok(_) => return not_found(),
        Err(e) => return unavailable(&e),
    };
    let caller_is_member = caller.channels.iter().any(|c| c.id == channel);
    if target.kind == ChannelKind::Private && !caller_is_member {
        return not_found();
    }
    if target.archived {
        return error(StatusCode::CONFLICT, "archived", "the channel is archived");
    }
    if matches!(target.kind, ChannelKind::Dm | ChannelKind::GroupDm) {
        return error(
            StatusCode::CONFLICT,
            "fixed_membership",
            "membership of DMs and group DMs cannot change",
        );
    }
    match state.directory.user_org(user).await {
        Ok(Some(org)) if org == identity.org => {}
        Ok(_) => return error(StatusCode::NOT_FOUND, "not_found", &format!("no user {user} in your org")),
        Err(e) => return unavailable(&e),
    }
    let is_self = user == identity.user;
    let is_admin = matches!(caller.user.role.as_str(), "owner" | "admin");
    let allowed = if add {
        (target.kind == ChannelKind::Public && is_self) || caller_is_member || is_admin
    } else {
        is_self || is_admin
    };
    if !allowed {
        return error(StatusCode::FORBIDDEN, "forbidden", "you may not change this membership");
    }
    let changed = if add {
        state.directory.add_member(channel, user).await
    } else {
        state.directory.remove_member(channel, user).await
    };
    let changed = match changed {
        Ok(changed) => changed,
        Err(e) => return unavailable(&e),
    };
    let change = if add { MemberChange::Joined } else { MemberChange::Left };
    if changed {
        let event = MembershipEvent { channel, user, change };
        let payload = serde_json::to_vec(&event).expect("events serialize");
        // Core NATS is enough: a gateway that misses the event reloads membership at the
        // user's next hello. Flush so the event is out before we answer.
        let published = state.nats.publish(membership_subject(identity.org), payload.into()).await;
        if let Err(e) = published
            .map_err(async_nats::Error::from)
            .and(state.nats.flush().await.map_err(async_nats::Error::from))
        {
            warn!(error = %e, "membership event not published");
        }
        info!(%channel, %user, by = %identity.user, ?change, "membership changed");
    }
    json(
        StatusCode::OK,
        &serde_json::json!({ "channel": channel, "user": user, "change": change, "changed": changed }),
    )
}

/// Applies announced membership changes until `shutdown`.
pub async fn subscribe(state: Arc<State>, shutdown: CancellationToken) {
    let subject = format!("{MEMBERSHIP_PREFIX}.>");
    crate::events::on_each(&state.nats, subject, "membership events", shutdown, |message| {
        match serde_json::from_slice::<MembershipEvent>(&message.payload) {
            Ok(event) => {
                metrics::counter!(m::MEMBERSHIP_EVENTS).increment(1);
                state.hub.apply_membership(event.user, event.channel, event.change);
            }
            Err(e) => warn!(error = %e, subject = %message.subject, "undecodable membership event"),
        }
    })
    .await;
}
