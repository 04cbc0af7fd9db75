//! Reading the audit log (docs/accounts.md, "Audit log"): owners and admins page through their
//! org's records, newest first, with filters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use threadspace_protocol::UserId;
use threadspace_store::audit::{AuditQuery, AuditRecord};
use utoipa::ToSchema;

use super::people::role_of;
use super::query::{int_param, params};
use crate::caller::{caller, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::parts::Changes;
use crate::policy::{may, Action};

const DEFAULT_RECORDS: i64 = 50;
const MAX_RECORDS: i64 = 200;

/// One recorded action.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditEvent {
    pub id: i64,
    /// When, in milliseconds since the Unix epoch.
    pub at: i64,
    /// Who did it; null when nobody signed in did (a failed login, a sign-up).
    pub actor: Option<i64>,
    /// `area.verb`: the list is in docs/accounts.md.
    pub action: String,
    pub target_user: Option<i64>,
    pub target_channel: Option<i64>,
    /// The client's address.
    pub ip: Option<String>,
    /// What else there is to say (a role's `from` and `to`, a failed login's `email`…).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditLog {
    pub events: Vec<AuditEvent>,
    /// Pass as `before` for the next page; null on the last.
    pub next_before: Option<i64>,
}

impl From<AuditRecord> for AuditEvent {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id,
            at: r.at_ms,
            actor: r.actor.map(|u| u.0),
            action: r.action,
            target_user: r.target_user.map(|u| u.0),
            target_channel: r.target_channel.map(|c| c.0),
            ip: r.ip.map(|ip| ip.to_string()),
            detail: r.detail,
        }
    }
}

/// An `action` filter: `area.verb` or an `area`, of `a-z` and `_`.
fn valid_action(action: &str) -> bool {
    let mut parts = action.split('.');
    let word = |w: Option<&str>| {
        w.is_some_and(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    };
    let area = parts.next();
    match (parts.next(), parts.next()) {
        (None, _) => word(area),
        (verb @ Some(_), None) => word(area) && word(verb),
        _ => false,
    }
}

/// The org's audit log.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "people",
    params(
        ("action" = Option<String>, Query, description = "Only this action (`role.changed`) or area (`login`)"),
        ("actor" = Option<i64>, Query, description = "Only actions by this user"),
        ("target" = Option<i64>, Query, description = "Only actions on this user"),
        ("since" = Option<i64>, Query, description = "Only actions at or after this time (milliseconds since the Unix epoch)"),
        ("until" = Option<i64>, Query, description = "Only actions before this time (milliseconds since the Unix epoch)"),
        ("before" = Option<i64>, Query, description = "Only records with an id below this: the previous page's `next_before`"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200 (default 50)"),
    ),
    responses(
        (status = 200, description = "A page of records, newest first", body = AuditLog),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Only owners and admins read the audit log", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn audit_log(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<AuditLog>, ApiError> {
    let allowed = ["action", "actor", "target", "since", "until", "before", "limit"];
    let params = params(query.as_deref(), &allowed).map_err(ApiError::invalid_parameter)?;
    let filter = (|| {
        let time = |name| {
            // Up to the end of year 9999: Postgres's timestamps end not far after.
            int_param(&params, name, 0..=253_402_300_799_999)
                .map(|ms| ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms as u64)))
        };
        let action = params.get("action").cloned();
        if let Some(action) = &action {
            if !valid_action(action) {
                return Err(format!(
                    "query parameter `action` must be an action such as `role.changed` or an area such as `login`, got {action:?}"
                ));
            }
        }
        let since: Option<SystemTime> = time("since")?;
        let until: Option<SystemTime> = time("until")?;
        if let (Some(since), Some(until)) = (since, until) {
            if until <= since {
                return Err("`until` must be after `since`".to_owned());
            }
        }
        Ok(AuditQuery {
            action,
            actor: int_param(&params, "actor", 1..=i64::MAX)?.map(UserId),
            target_user: int_param(&params, "target", 1..=i64::MAX)?.map(UserId),
            since,
            until,
            before: int_param(&params, "before", 1..=i64::MAX)?,
            limit: int_param(&params, "limit", 1..=MAX_RECORDS)?.unwrap_or(DEFAULT_RECORDS) as u32,
        })
    })()
    .map_err(ApiError::invalid_parameter)?;
    let session = caller(&auth, &headers).await?;
    if !may(role_of(&session), Action::ReadAudit) {
        return Err(ApiError::forbidden("only owners and admins read the audit log"));
    }
    let page = changes.store.audit_log(session.user.org, &filter).await.map_err(ApiError::directory)?;
    Ok(Json(AuditLog {
        events: page.records.into_iter().map(AuditEvent::from).collect(),
        next_before: page.next_before,
    }))
}

#[cfg(test)]
mod tests {
    use super::valid_action;

    #[test]
    fn actions_and_areas_are_words_of_a_to_z() {
        for good in ["login", "login.failed", "role.changed", "org.signup_domain_set"] {
            assert!(valid_action(good), "{good}");
        }
        for bad in ["", ".", "login.", ".failed", "Login", "a.b.c", "login failed", "a%"] {
            assert!(!valid_action(bad), "{bad}");
        }
    }
}
