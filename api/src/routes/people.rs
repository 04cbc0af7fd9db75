//! Managing people (docs/accounts.md): invites and their acceptance, roles, deactivation and
//! reactivation, the org's sign-up domain. Who may do each is `crate::policy`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use threadspace_protocol::{OrgId, UserId};
use threadspace_store::accounts::TokenKind;
use threadspace_store::audit::AuditEntry;
use threadspace_store::directory::Session;
use tracing::info;
use utoipa::ToSchema;

use super::accounts::{
    client_link, org_view, publish, redeem, send, user_view, NewAccountRequest, OrgView, UserView,
};
use super::query::{bad_path, path_id};
use crate::audit::record;
use crate::body::{self, Body};
use crate::caller::{caller, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::limits::ClientIp;
use crate::parts::{Changes, Credentials};
use crate::policy::{may, may_to, Action, Role};
use crate::secrets::{digest, new_secret};

/// An invite to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewInvite {
    /// The role the new account gets: `owner`, `admin`, `member` or `guest`.
    pub role: String,
    /// Mail the link to this address (and require it at acceptance). Without it the inviter
    /// shares the link themselves.
    #[serde(default)]
    pub email: Option<String>,
}

/// An invite link (single use, expiring). The token is shown once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Invite {
    pub token: String,
    pub link: String,
    pub role: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Accepting an invite.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InviteAcceptance {
    pub token: String,
    /// Required unless the invite named the address.
    #[serde(default)]
    pub email: Option<String>,
    pub handle: String,
    pub display_name: String,
    pub password: String,
}

/// A role to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleChange {
    /// `owner`, `admin`, `member` or `guest`.
    pub role: String,
}

/// The org's sign-up domain.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignupDomain {
    /// A domain (`example.com`) whose verified addresses may sign up as members; null: invites
    /// only. Required (null clears it).
    #[serde(deserialize_with = "Option::deserialize")]
    pub domain: Option<String>,
}

pub(crate) fn role_of(session: &Session) -> Role {
    Role::parse(&session.user.role).unwrap_or(Role::Guest)
}

fn parse_role(field: &str, value: &str) -> Result<Role, ApiError> {
    // A person's role: bots are created as bots (docs/api.md, "Integrations").
    Role::parse(value)
        .filter(|role| *role != Role::Bot)
        .ok_or_else(|| body::invalid(field, "must be one of owner, admin, member, guest"))
}

/// Creates an invite link.
#[utoipa::path(
    post,
    path = "/v1/invites",
    tag = "people",
    request_body = NewInvite,
    responses(
        (status = 201, description = "The invite; its token is shown only now", body = Invite),
        (status = 400, description = "A field is missing or malformed", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "The caller may not invite with this role", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_invite(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    State(credentials): State<Credentials>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    Body(request): Body<NewInvite>,
) -> Result<(StatusCode, Json<Invite>), ApiError> {
    let session = caller(&auth, &headers).await?;
    let role = parse_role("role", &request.role)?;
    let email = request.email.as_deref().map(|e| body::email("email", e)).transpose()?;
    let email_for_audit = email.clone();
    if !may(role_of(&session), Action::Invite(role)) {
        return Err(ApiError::forbidden(format!(
            "a {} may not invite a {}",
            session.user.role,
            role.as_str()
        )));
    }
    let token = new_secret();
    let lifetime = credentials.lifetimes.invite;
    changes
        .store
        .issue_token(
            &digest(&token),
            TokenKind::Invite,
            session.user.org,
            Some(role.as_str()),
            email.as_deref(),
            None,
            Some(session.user.id),
            lifetime,
        )
        .await
        .map_err(ApiError::directory)?;
    let org = changes.store.org(session.user.org).await.map_err(ApiError::directory)?;
    let slug = org.map(|o| o.slug).unwrap_or_default();
    let link = client_link(&credentials, "invite", &token, &slug);
    if let Some(email) = email {
        send(
            &credentials,
            email,
            "invite",
            "You are invited to ThreadSpace",
            ("invite", &slug),
            token.clone(),
        );
    }
    info!(by = %session.user.id, role = role.as_str(), "invite created");
    let entry = AuditEntry::new(session.user.org, Some(session.user.id), "invite.created")
        .from(ip)
        .detail(json!({"role": role.as_str(), "email": email_for_audit}));
    record(&changes, entry).await;
    let invite = Invite { token, link, role: role.as_str().into(), expires_in: lifetime.as_secs() };
    Ok((StatusCode::CREATED, Json(invite)))
}

/// Creates the account an invite allows.
#[utoipa::path(
    post,
    path = "/v1/invites/accept",
    tag = "people",
    request_body = InviteAcceptance,
    responses(
        (status = 201, description = "The account exists; sign in", body = UserView),
        (status = 400, description = "A field is missing or malformed, or the token is unknown, used or expired (`token_invalid`)", body = ErrorBody),
        (status = 409, description = "The handle or address is taken in the org", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn accept_invite(
    State(changes): State<Changes>,
    State(credentials): State<Credentials>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Body(request): Body<InviteAcceptance>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let account = NewAccountRequest {
        handle: &request.handle,
        display_name: &request.display_name,
        password: &request.password,
    };
    let user =
        redeem(&changes, &credentials, &request.token, TokenKind::Invite, request.email.as_deref(), account)
            .await?;
    let entry = AuditEntry::new(OrgId(user.org), Some(UserId(user.id)), "invite.accepted");
    record(&changes, entry.from(ip).detail(json!({"role": user.role, "email": user.email}))).await;
    Ok((StatusCode::CREATED, Json(user)))
}

/// The target of a people route: a user of the caller's org (another org's is 404).
async fn target(
    changes: &Changes,
    session: &Session,
    user: &str,
) -> Result<threadspace_store::accounts::Account, ApiError> {
    let user = UserId(path_id("user", user).map_err(ApiError::invalid_parameter)?);
    let account = changes.store.account(session.user.org, user).await.map_err(ApiError::directory)?;
    account.ok_or_else(|| ApiError::not_found(format!("no user {user} in your org")))
}

/// Refuses `action` on `account` unless the policy allows it, naming why.
fn allow(
    session: &Session,
    account: &threadspace_store::accounts::Account,
    action: Action,
    what: &str,
) -> Result<(), ApiError> {
    let on_self = account.user == session.user.id;
    if may_to(role_of(session), action, on_self) {
        return Ok(());
    }
    if on_self {
        return Err(ApiError::forbidden("you may not change your own role or deactivate yourself"));
    }
    Err(ApiError::forbidden(format!("a {} may not {what}", session.user.role)))
}

/// Sets a user's role.
#[utoipa::path(
    put,
    path = "/v1/users/{user}/role",
    tag = "people",
    params(("user" = i64, Path, description = "User id")),
    request_body = RoleChange,
    responses(
        (status = 200, description = "The user with their role", body = UserView),
        (status = 400, description = "A parameter or field is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "The caller may not make this change (or targets themselves)", body = ErrorBody),
        (status = 404, description = "No such user in the caller's org", body = ErrorBody),
        (status = 409, description = "The user's role changed meanwhile (`conflict`): reload and retry", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn set_role(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    user: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    Body(request): Body<RoleChange>,
) -> Result<Json<UserView>, ApiError> {
    let Path(user) = user.map_err(bad_path)?;
    let session = caller(&auth, &headers).await?;
    let to = parse_role("role", &request.role)?;
    let mut account = target(&changes, &session, &user).await?;
    let from = Role::parse(&account.role).unwrap_or(Role::Guest);
    let what = format!("change a {} into a {}", from.as_str(), to.as_str());
    allow(&session, &account, Action::ChangeRole { from, to }, &what)?;
    let event = changes
        .store
        .set_role(session.user.org, account.user, from.as_str(), to.as_str())
        .await
        .map_err(ApiError::directory)?;
    if let Some(event) = event {
        publish(&changes, &event).await;
        info!(user = %account.user, by = %session.user.id, role = to.as_str(), "role changed");
        let entry = AuditEntry::new(session.user.org, Some(session.user.id), "role.changed")
            .user(account.user)
            .from(ip)
            .detail(json!({"from": from.as_str(), "to": to.as_str()}));
        record(&changes, entry).await;
    }
    account.role = to.as_str().into();
    Ok(Json(user_view(account, true)))
}

/// Deactivates a user: their sessions end, their sockets close within seconds, and they can no
/// longer sign in. Their messages stay.
#[utoipa::path(
    post,
    path = "/v1/users/{user}/deactivate",
    tag = "people",
    params(("user" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The user, deactivated", body = UserView),
        (status = 400, description = "The path parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "The caller may not deactivate this user (or targets themselves)", body = ErrorBody),
        (status = 404, description = "No such user in the caller's org", body = ErrorBody),
        (status = 409, description = "The user's role changed meanwhile (`conflict`): reload and retry", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn deactivate(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    user: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<UserView>, ApiError> {
    let Path(user) = user.map_err(bad_path)?;
    set_active(&auth, &changes, (&headers, ip), &user, false).await
}

/// Reactivates a user: they can sign in again.
#[utoipa::path(
    post,
    path = "/v1/users/{user}/reactivate",
    tag = "people",
    params(("user" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The user, active", body = UserView),
        (status = 400, description = "The path parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "The caller may not reactivate this user (or targets themselves)", body = ErrorBody),
        (status = 404, description = "No such user in the caller's org", body = ErrorBody),
        (status = 409, description = "The user's role changed meanwhile (`conflict`): reload and retry; or they are erased or being erased (`conflict`)", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn reactivate(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    user: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<UserView>, ApiError> {
    let Path(user) = user.map_err(bad_path)?;
    set_active(&auth, &changes, (&headers, ip), &user, true).await
}

async fn set_active(
    auth: &Auth,
    changes: &Changes,
    (headers, ip): (&HeaderMap, std::net::IpAddr),
    user: &str,
    active: bool,
) -> Result<Json<UserView>, ApiError> {
    let session = caller(auth, headers).await?;
    let mut account = target(changes, &session, user).await?;
    let role = Role::parse(&account.role).unwrap_or(Role::Guest);
    let what = format!("{} a {}", if active { "reactivate" } else { "deactivate" }, role.as_str());
    allow(&session, &account, Action::SetActive(role), &what)?;
    if active {
        // An erased person, or one being erased, stays deactivated (docs/api.md, "Data rights").
        let subject = changes
            .store
            .erasure_subject(session.user.org, account.user)
            .await
            .map_err(ApiError::directory)?;
        if subject.is_some_and(|s| s.erased || s.erasing) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("user {} is erased or being erased: they cannot be reactivated", account.user),
            ));
        }
    }
    let event = changes
        .store
        .set_active(session.user.org, account.user, role.as_str(), active)
        .await
        .map_err(ApiError::directory)?;
    if let Some(event) = event {
        publish(changes, &event).await;
        info!(user = %account.user, by = %session.user.id, active, "activation changed");
        let action = if active { "user.reactivated" } else { "user.deactivated" };
        let entry =
            AuditEntry::new(session.user.org, Some(session.user.id), action).user(account.user).from(ip);
        record(changes, entry.detail(json!({"role": role.as_str()}))).await;
    }
    account.deactivated = !active;
    Ok(Json(user_view(account, true)))
}

/// Sets or clears the domain whose verified addresses may sign up.
#[utoipa::path(
    put,
    path = "/v1/org/signup-domain",
    tag = "people",
    request_body = SignupDomain,
    responses(
        (status = 200, description = "The org with its setting", body = OrgView),
        (status = 400, description = "A field is missing or malformed", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Only owners may", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn set_signup_domain(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    Body(request): Body<SignupDomain>,
) -> Result<Json<OrgView>, ApiError> {
    let session = caller(&auth, &headers).await?;
    let domain = request.domain.map(|d| d.trim().to_lowercase());
    if let Some(domain) = &domain {
        if domain.len() > 253 || !body::valid_domain(domain) {
            return Err(body::invalid("domain", "is not a domain name"));
        }
    }
    if !may(role_of(&session), Action::SetSignupDomain) {
        return Err(ApiError::forbidden("only owners may set the sign-up domain"));
    }
    let org = session.user.org;
    changes.store.set_signup_domain(org, domain.as_deref()).await.map_err(ApiError::directory)?;
    let row = changes.store.org(org).await.map_err(ApiError::directory)?;
    let row = row.ok_or_else(|| ApiError::not_found("your org no longer exists"))?;
    info!(%org, by = %session.user.id, domain = ?domain, "sign-up domain set");
    let entry = AuditEntry::new(org, Some(session.user.id), "org.signup_domain_set").from(ip);
    record(&changes, entry.detail(json!({"domain": domain}))).await;
    Ok(Json(org_view(row)))
}
