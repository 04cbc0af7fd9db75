//! Accounts and sessions (docs/accounts.md): create an org with its owner, log in, rotate
//! refresh tokens, log out, sign out everywhere, change and reset a password, sign up by a
//! verified address at the org's domain, and who am I.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use threadspace_protocol::stored::DirectoryEvent;
use threadspace_protocol::token::Identity;
use threadspace_protocol::{OrgId, UserId};
use threadspace_store::accounts::{EndReason, NewUser, ProfileChange, Refresh, TokenKind};
use threadspace_store::audit::AuditEntry;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::audit::record;
use crate::body::{self, Body};
use crate::caller::{caller, caller_identity, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::limits::ClientIp;
use crate::mail::Mail;
use crate::metrics as m;
use crate::parts::{Changes, Credentials};
use crate::secrets::{digest, new_secret};

/// A new org and its first owner.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewOrg {
    /// 1–63 of `a-z 0-9 -`; the org's name in logins and links.
    pub slug: String,
    /// 1–200 characters.
    pub name: String,
    pub owner: NewAccount,
}

/// A new account's profile and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAccount {
    pub email: String,
    /// 1–63 of `a-z 0-9 . _ -`, unique in the org.
    pub handle: String,
    /// 1–200 characters.
    pub display_name: String,
    /// 8–256 characters.
    pub password: String,
}

/// An org.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OrgView {
    pub id: i64,
    pub slug: String,
    pub name: String,
    /// Addresses at this domain may sign up as members (null: invites only).
    pub signup_domain: Option<String>,
}

/// A user as their org sees them.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserView {
    pub id: i64,
    pub org: i64,
    pub handle: String,
    pub display_name: String,
    /// Visible to the user themselves and to owners and admins; null otherwise.
    pub email: Option<String>,
    /// `owner`, `admin`, `member`, `guest` or `bot` (docs/api.md, "Integrations").
    pub role: String,
    pub deactivated: bool,
    /// What they do ("Site reliability"), set by themselves; null when unset.
    pub title: Option<String>,
    /// An IANA time zone name (`Europe/Berlin`); null when unset.
    pub time_zone: Option<String>,
    /// An http(s) URL of their picture; null when unset. Not fetched by the service.
    pub avatar_url: Option<String>,
}

/// An org created with its owner.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Created {
    pub org: OrgView,
    pub user: UserView,
}

/// Email and password login into an org.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    /// The org's slug.
    pub org: String,
    pub email: String,
    pub password: String,
}

/// An access token and the refresh token that renews it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Tokens {
    /// Bearer token for REST and the WebSocket `hello`; short-lived.
    pub access_token: String,
    /// Seconds until `access_token` expires.
    pub expires_in: u64,
    /// Single-use: `POST /v1/auth/refresh` returns its successor.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub user_id: i64,
    pub org_id: i64,
    /// The login session; ending it (logout) closes the sockets opened with its tokens.
    pub session_id: i64,
}

/// A refresh token to rotate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    pub refresh_token: String,
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordChange {
    pub current_password: String,
    /// 8–256 characters.
    pub new_password: String,
}

/// Who asks for a reset mail, or a sign-up verification mail.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddressInOrg {
    /// The org's slug.
    pub org: String,
    pub email: String,
}

/// A password reset with the mailed token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetCompletion {
    pub token: String,
    /// 8–256 characters.
    pub new_password: String,
}

/// A sign-up completed with the mailed verification token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignupCompletion {
    pub token: String,
    pub handle: String,
    pub display_name: String,
    pub password: String,
}

/// The caller and their org.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Me {
    pub user: UserView,
    pub org: OrgView,
    /// The login session of the token (null for an operator-minted token).
    pub session_id: Option<i64>,
}

pub(crate) fn org_view(org: threadspace_store::accounts::Org) -> OrgView {
    OrgView { id: org.id.0, slug: org.slug, name: org.name, signup_domain: org.signup_domain }
}

pub(crate) fn user_view(account: threadspace_store::accounts::Account, show_email: bool) -> UserView {
    UserView {
        id: account.user.0,
        org: account.org.0,
        handle: account.handle,
        display_name: account.display_name,
        email: if show_email { account.email } else { None },
        role: account.role,
        deactivated: account.deactivated,
        title: account.profile.title,
        time_zone: account.profile.time_zone,
        avatar_url: account.profile.avatar_url,
    }
}

fn hash_failed(e: crate::secrets::HashError) -> ApiError {
    ApiError::unavailable("password hashing", &e, "password hashing unavailable; retry later")
}

/// Publishes a committed directory change (`Feed::announce`): its position, or `None` if the
/// sweeper will publish it.
pub(crate) async fn publish(changes: &Changes, event: &DirectoryEvent) -> Option<u64> {
    changes.feed.announce(event).await
}

/// Hashes a new password, timed.
async fn hash(credentials: &Credentials, password: &str) -> Result<String, ApiError> {
    let started = Instant::now();
    let hashed = credentials.passwords.hash(password.to_owned()).await.map_err(hash_failed);
    metrics::histogram!(m::PASSWORD_HASH_DURATION).record(started.elapsed().as_secs_f64());
    hashed
}

/// Starts a login session and mints its first tokens, provided the account is still active
/// with the password hash `verified_hash` was checked against (a reset, change or deactivation
/// that committed meanwhile wins: `login_failed`).
async fn issue(
    credentials: &Credentials,
    changes: &Changes,
    (user, org): (UserId, OrgId),
    verified_hash: &str,
) -> Result<Tokens, ApiError> {
    let refresh = new_secret();
    let session = changes
        .store
        .start_session(user, verified_hash, &digest(&refresh), credentials.lifetimes.session)
        .await
        .map_err(ApiError::directory)?
        .ok_or_else(login_failed)?;
    Ok(tokens(credentials, user, org, session, refresh))
}

fn login_failed() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "login_failed", "wrong org, email or password")
}

fn tokens(credentials: &Credentials, user: UserId, org: OrgId, session: i64, refresh: String) -> Tokens {
    let identity = Identity { user, org, session: Some(session), issued_at: 0 };
    Tokens {
        access_token: credentials.minter.mint(identity),
        expires_in: credentials.minter.ttl.as_secs(),
        refresh_token: format!("{session}.{refresh}"),
        token_type: "Bearer".into(),
        user_id: user.0,
        org_id: org.0,
        session_id: session,
    }
}

/// Creates an org and its first owner (open to anyone; rate-limited per IP).
#[utoipa::path(
    post,
    path = "/v1/orgs",
    tag = "accounts",
    request_body = NewOrg,
    responses(
        (status = 201, description = "The org and its owner; log in next", body = Created),
        (status = 400, description = "A field is missing, malformed or out of range", body = ErrorBody),
        (status = 409, description = "The slug is taken", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn create_org(
    State(changes): State<Changes>,
    State(credentials): State<Credentials>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Body(request): Body<NewOrg>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let slug = body::handle("slug", &request.slug, true)?;
    let name = body::name("name", &request.name)?;
    let owner = &request.owner;
    let email = body::email("owner.email", &owner.email)?;
    let handle = body::handle("owner.handle", &owner.handle, false)?;
    let display_name = body::name("owner.display_name", &owner.display_name)?;
    body::password("owner.password", &owner.password)?;
    let password_hash = hash(&credentials, &owner.password).await?;
    let new = NewUser { handle, display_name, email: &email, password_hash: &password_hash, role: "owner" };
    let (org, user) = changes.store.create_org(slug, name, &new).await.map_err(ApiError::directory)?;
    info!(%org, %user, "org created");
    record(&changes, AuditEntry::new(org, Some(user), "org.created").from(ip)).await;
    let created = Created {
        org: OrgView { id: org.0, slug: slug.to_owned(), name: name.to_owned(), signup_domain: None },
        user: UserView {
            id: user.0,
            org: org.0,
            handle: handle.to_owned(),
            display_name: display_name.to_owned(),
            email: Some(email),
            role: "owner".into(),
            deactivated: false,
            title: None,
            time_zone: None,
            avatar_url: None,
        },
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// Logs in with email and password.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "accounts",
    request_body = Login,
    responses(
        (status = 200, description = "Logged in", body = Tokens),
        (status = 400, description = "A field is missing or malformed", body = ErrorBody),
        (status = 401, description = "Wrong org, email or password, or a deactivated account (`login_failed`; which one is not said)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn login(
    State(changes): State<Changes>,
    State(credentials): State<Credentials>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Body(request): Body<Login>,
) -> Result<Json<Tokens>, ApiError> {
    let email = body::email("email", &request.email)?;
    let org = body::handle("org", &request.org, true)?;
    let account_key = format!("{org}/{email}");
    if let Err(wait) = credentials.throttle.attempt(&account_key, ip, Instant::now()) {
        metrics::counter!(m::LOGINS, "result" => "throttled").increment(1);
        metrics::counter!(m::RATE_LIMITED, "scope" => "login").increment(1);
        return Err(ApiError::rate_limited("too many failed logins", wait));
    }
    let account = changes.store.login_account(&request.org, &email).await.map_err(ApiError::directory)?;
    let stored = account.as_ref().filter(|a| !a.deactivated).and_then(|a| a.password_hash.clone());
    let started = Instant::now();
    let matched = credentials.passwords.verify(request.password, stored).await.map_err(hash_failed)?;
    metrics::histogram!(m::PASSWORD_HASH_DURATION).record(started.elapsed().as_secs_f64());
    let known = account.as_ref().map(|a| (a.org, a.user));
    let Some(account) = account.filter(|_| matched) else {
        credentials.throttle.failed(ip, Instant::now());
        metrics::counter!(m::LOGINS, "result" => "failed").increment(1);
        info!(ip = %ip, "login failed");
        // Recorded for the org named, whether or not the account exists (the same work
        // either way: the answer's timing must not tell).
        if let Ok(Some(named)) = changes.store.org_by_slug(org).await {
            let mut entry =
                AuditEntry::new(named.id, None, "login.failed").from(ip).detail(json!({"email": email}));
            if let Some((_, user)) = known.filter(|(org, _)| *org == named.id) {
                entry = entry.user(user);
            }
            record(&changes, entry).await;
        }
        return Err(login_failed());
    };
    credentials.throttle.succeeded(&account_key, ip);
    metrics::counter!(m::LOGINS, "result" => "ok").increment(1);
    let verified = account.password_hash.as_deref().unwrap_or_default();
    let tokens = issue(&credentials, &changes, (account.user, account.org), verified).await?;
    info!(user = %account.user, session = tokens.session_id, "logged in");
    let entry = AuditEntry::new(account.org, Some(account.user), "login.succeeded")
        .from(ip)
        .detail(json!({"session": tokens.session_id}));
    record(&changes, entry).await;
    Ok(Json(tokens))
}

/// Trades a refresh token for a new access token and the refresh token's successor.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "accounts",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens; the presented refresh token is used up", body = Tokens),
        (status = 400, description = "A field is missing or malformed", body = ErrorBody),
        (status = 401, description = "Unknown, expired or ended (`refresh_refused`), or reused after rotation, which ends the session (`refresh_reused`)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn refresh(
    State(changes): State<Changes>,
    State(credentials): State<Credentials>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Body(request): Body<RefreshRequest>,
) -> Result<Json<Tokens>, ApiError> {
    let refused =
        || ApiError::new(StatusCode::UNAUTHORIZED, "refresh_refused", "the refresh token is not valid");
    let secret = request.refresh_token.split_once('.').map(|(_, secret)| secret).ok_or_else(refused)?;
    let successor = new_secret();
    let outcome = changes
        .store
        .refresh(&digest(secret), &digest(&successor), credentials.lifetimes.refresh_grace)
        .await
        .map_err(ApiError::directory)?;
    match outcome {
        Refresh::Rotated { user, org, session } => {
            metrics::counter!(m::REFRESHES, "result" => "rotated").increment(1);
            Ok(Json(tokens(&credentials, user, org, session, successor)))
        }
        Refresh::Reused { user, session, event, .. } => {
            metrics::counter!(m::REFRESHES, "result" => "reused").increment(1);
            warn!(%user, session, "a rotated refresh token was presented again; session revoked");
            publish(&changes, &event).await;
            let entry = AuditEntry::new(event.org, Some(user), "session.refresh_reused")
                .from(ip)
                .detail(json!({"session": session}));
            record(&changes, entry).await;
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "refresh_reused",
                "this refresh token was already used; the session has been ended — sign in again",
            ))
        }
        Refresh::Refused => {
            metrics::counter!(m::REFRESHES, "result" => "refused").increment(1);
            Err(refused())
        }
    }
}

/// Ends the calling token's login session; its sockets close within seconds.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "accounts",
    responses(
        (status = 204, description = "The session ended"),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn logout(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (identity, session) = caller_identity(&auth, &headers).await?;
    // A token without a session (operator-minted) ends every session, like sign-out everywhere.
    let reason = if identity.session.is_some() { EndReason::Logout } else { EndReason::SignOutEverywhere };
    let event = changes
        .store
        .end_sessions(session.user.org, session.user.id, identity.session, reason)
        .await
        .map_err(ApiError::directory)?;
    publish(&changes, &event).await;
    info!(user = %session.user.id, session = ?identity.session, "logged out");
    let entry = AuditEntry::new(session.user.org, Some(session.user.id), "session.logged_out")
        .from(ip)
        .detail(json!({"session": identity.session}));
    record(&changes, entry).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the caller and refuses every access token issued until now.
#[utoipa::path(
    post,
    path = "/v1/auth/sign-out-everywhere",
    tag = "accounts",
    responses(
        (status = 204, description = "Every session ended"),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn sign_out_everywhere(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let session = caller(&auth, &headers).await?;
    let event = changes
        .store
        .end_sessions(session.user.org, session.user.id, None, EndReason::SignOutEverywhere)
        .await
        .map_err(ApiError::directory)?;
    publish(&changes, &event).await;
    info!(user = %session.user.id, "signed out everywhere");
    let entry = AuditEntry::new(session.user.org, Some(session.user.id), "session.signed_out_everywhere");
    record(&changes, entry.from(ip)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the caller's password: every session ends (the caller's sockets too, with 4004) and
/// a new session starts for the caller, whose tokens are the answer.
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "accounts",
    request_body = PasswordChange,
    responses(
        (status = 200, description = "Changed; every session ended, the caller's included; these are the tokens of the caller's new session", body = Tokens),
        (status = 400, description = "A field is missing or malformed, or the new password is too short or long", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "`current_password` is wrong", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn change_password(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    State(credentials): State<Credentials>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    Body(request): Body<PasswordChange>,
) -> Result<Json<Tokens>, ApiError> {
    let session = caller(&auth, &headers).await?;
    body::password("new_password", &request.new_password)?;
    let (user, org) = (session.user.id, session.user.org);
    // A stolen access token must not become a fast password oracle: the login delays apply.
    let key = format!("password:{user}");
    if let Err(wait) = credentials.throttle.attempt(&key, ip, Instant::now()) {
        metrics::counter!(m::RATE_LIMITED, "scope" => "login").increment(1);
        return Err(ApiError::rate_limited("too many wrong passwords", wait));
    }
    let stored = changes.store.password_hash(user).await.map_err(ApiError::directory)?;
    let matched =
        credentials.passwords.verify(request.current_password, stored).await.map_err(hash_failed)?;
    if !matched {
        credentials.throttle.failed(ip, Instant::now());
        return Err(ApiError::forbidden("`current_password` is wrong"));
    }
    credentials.throttle.succeeded(&key, ip);
    let password_hash = hash(&credentials, &request.new_password).await?;
    let event = changes
        .store
        .set_password(org, user, &password_hash, EndReason::PasswordChanged)
        .await
        .map_err(ApiError::directory)?;
    publish(&changes, &event).await;
    info!(%user, "password changed");
    record(&changes, AuditEntry::new(org, Some(user), "password.changed").from(ip)).await;
    // tokens_not_before is compared in whole seconds, so tokens minted now still pass.
    Ok(Json(issue(&credentials, &changes, (user, org), &password_hash).await?))
}

/// Mails a password-reset link if the address has an account; always answers 202, so the
/// answer does not tell whether it does.
#[utoipa::path(
    post,
    path = "/v1/auth/password-reset",
    tag = "accounts",
    request_body = AddressInOrg,
    responses(
        (status = 202, description = "If the account exists, a reset link is on its way"),
        (status = 400, description = "A field is missing or malformed", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn request_reset(
    State(changes): State<Changes>,
    State(credentials): State<Credentials>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Body(request): Body<AddressInOrg>,
) -> Result<StatusCode, ApiError> {
    let email = mail_request(&credentials, "reset", &request, ip)?;
    let account = changes.store.login_account(&request.org, &email).await.map_err(ApiError::directory)?;
    if let Some(account) = account.filter(|a| !a.deactivated) {
        let token = new_secret();
        changes
            .store
            .issue_token(
                &digest(&token),
                TokenKind::PasswordReset,
                account.org,
                None,
                None,
                Some(account.user),
                None,
                credentials.lifetimes.mail_token,
            )
            .await
            .map_err(ApiError::directory)?;
        send(
            &credentials,
            email,
            "password_reset",
            "Reset your ThreadSpace password",
            ("reset", &request.org),
            token,
        );
    }
    Ok(StatusCode::ACCEPTED)
}

/// A link into the web client's `page` (docs/web.md) carrying a single-use `token` and the
/// org's slug, which the client needs to sign in afterwards. Tokens and slugs are URL-safe.
pub(crate) fn client_link(credentials: &Credentials, page: &str, token: &str, org: &str) -> String {
    format!("{}/#/{page}?token={token}&org={org}", credentials.public_url.trim_end_matches('/'))
}

/// Mails `to` a link into the web client's `page` with `token`.
pub(crate) fn send(
    credentials: &Credentials,
    to: String,
    kind: &'static str,
    subject: &str,
    (page, org): (&str, &str),
    token: String,
) {
    let link = client_link(credentials, page, &token, org);
    metrics::counter!(m::MAILS, "kind" => kind).increment(1);
    // Off the runtime, and not awaited: the answer must not wait on (or be timed by) delivery.
    let mailer = credentials.mailer.clone();
    let mail = Mail { to, kind, subject: subject.to_owned(), link, token };
    tokio::task::spawn_blocking(move || mailer.send(mail));
}

/// Sets a new password with a mailed reset token; every session of the account ends.
#[utoipa::path(
    post,
    path = "/v1/auth/password-reset/complete",
    tag = "accounts",
    request_body = ResetCompletion,
    responses(
        (status = 204, description = "The password is set; sign in with it"),
        (status = 400, description = "A field is missing or malformed, or the token is unknown, used or expired (`token_invalid`)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn complete_reset(
    State(changes): State<Changes>,
    State(credentials): State<Credentials>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Body(request): Body<ResetCompletion>,
) -> Result<StatusCode, ApiError> {
    body::password("new_password", &request.new_password)?;
    // The token first: hashing is the expensive part, and nobody without a valid token may
    // make the service hash.
    let hashed = digest(&request.token);
    let used =
        changes.store.use_token(&hashed, TokenKind::PasswordReset).await.map_err(ApiError::directory)?;
    let Some(token) = used else { return Err(token_invalid()) };
    let user = token.user.ok_or_else(token_invalid)?;
    let password_hash = match hash(&credentials, &request.new_password).await {
        Ok(hash) => hash,
        Err(e) => {
            let _ = changes.store.unuse_token(&hashed).await;
            return Err(e);
        }
    };
    let event = changes
        .store
        .set_password(token.org, user, &password_hash, EndReason::PasswordReset)
        .await
        .map_err(ApiError::directory)?;
    publish(&changes, &event).await;
    info!(%user, "password reset");
    record(&changes, AuditEntry::new(token.org, Some(user), "password.reset").from(ip)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks a request for a mail (`what`: reset, sign-up) and counts it against the mail
/// throttle — every request counts, a failure or not: a repeated mail is an annoyance to its
/// recipient. Returns the address, lower-cased.
fn mail_request(
    credentials: &Credentials,
    what: &str,
    request: &AddressInOrg,
    ip: std::net::IpAddr,
) -> Result<String, ApiError> {
    let email = body::email("email", &request.email)?;
    let org = body::handle("org", &request.org, true)?;
    let key = format!("{what}:{org}/{email}");
    if let Err(wait) = credentials.mail_throttle.attempt(&key, ip, Instant::now()) {
        metrics::counter!(m::RATE_LIMITED, "scope" => "login").increment(1);
        return Err(ApiError::rate_limited(&format!("too many {what} requests"), wait));
    }
    credentials.mail_throttle.failed(ip, Instant::now());
    Ok(email)
}

pub(crate) fn token_invalid() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "token_invalid", "the token is unknown, already used or expired")
}

/// Mails a sign-up verification link to an address at the org's sign-up domain.
#[utoipa::path(
    post,
    path = "/v1/signup",
    tag = "accounts",
    request_body = AddressInOrg,
    responses(
        (status = 202, description = "A verification link is on its way"),
        (status = 400, description = "A field is missing or malformed", body = ErrorBody),
        (status = 403, description = "The org does not allow sign-up from this address's domain (`signup_closed`)", body = ErrorBody),
        (status = 404, description = "No such org", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn signup(
    State(changes): State<Changes>,
    State(credentials): State<Credentials>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Body(request): Body<AddressInOrg>,
) -> Result<StatusCode, ApiError> {
    let email = mail_request(&credentials, "sign-up", &request, ip)?;
    let org = changes.store.org_by_slug(&request.org).await.map_err(ApiError::directory)?;
    let Some(org) = org else { return Err(ApiError::not_found(format!("no org {:?}", request.org))) };
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if org.signup_domain.as_deref() != Some(domain) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "signup_closed",
            "this org does not allow sign-up from this address; ask for an invite",
        ));
    }
    let token = new_secret();
    changes
        .store
        .issue_token(
            &digest(&token),
            TokenKind::Signup,
            org.id,
            Some("member"),
            Some(&email),
            None,
            None,
            credentials.lifetimes.mail_token,
        )
        .await
        .map_err(ApiError::directory)?;
    send(
        &credentials,
        email,
        "signup",
        "Verify your address to join ThreadSpace",
        ("signup", &org.slug),
        token,
    );
    Ok(StatusCode::ACCEPTED)
}

/// Creates the account of a verified sign-up.
#[utoipa::path(
    post,
    path = "/v1/signup/complete",
    tag = "accounts",
    request_body = SignupCompletion,
    responses(
        (status = 201, description = "The account exists; sign in", body = UserView),
        (status = 400, description = "A field is missing or malformed, or the token is unknown, used or expired (`token_invalid`)", body = ErrorBody),
        (status = 409, description = "The handle or address is taken", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn complete_signup(
    State(changes): State<Changes>,
    State(credentials): State<Credentials>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Body(request): Body<SignupCompletion>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let account = NewAccountRequest {
        handle: &request.handle,
        display_name: &request.display_name,
        password: &request.password,
    };
    let user = redeem(&changes, &credentials, &request.token, TokenKind::Signup, None, account).await?;
    let entry = AuditEntry::new(OrgId(user.org), Some(UserId(user.id)), "signup.completed");
    record(&changes, entry.from(ip).detail(json!({"email": user.email}))).await;
    Ok((StatusCode::CREATED, Json(user)))
}

/// The profile part of an invite acceptance or sign-up.
pub(crate) struct NewAccountRequest<'a> {
    pub handle: &'a str,
    pub display_name: &'a str,
    pub password: &'a str,
}

/// Consumes an invite or sign-up token and creates the account it allows. The address is the
/// token's when it names one (verified or invited), else `email`.
pub(crate) async fn redeem(
    changes: &Changes,
    credentials: &Credentials,
    token: &str,
    kind: TokenKind,
    email: Option<&str>,
    account: NewAccountRequest<'_>,
) -> Result<UserView, ApiError> {
    let handle = body::handle("handle", account.handle, false)?;
    let display_name = body::name("display_name", account.display_name)?;
    body::password("password", account.password)?;
    let email = email.map(|e| body::email("email", e)).transpose()?;
    // The token first: nobody without a valid one may make the service hash.
    let hashed = digest(token);
    let used = changes.store.use_token(&hashed, kind).await.map_err(ApiError::directory)?;
    let Some(grant) = used else { return Err(token_invalid()) };
    let password_hash = match hash(credentials, account.password).await {
        Ok(hash) => hash,
        Err(e) => {
            let _ = changes.store.unuse_token(&hashed).await;
            return Err(e);
        }
    };
    let email = match (grant.email, email) {
        (Some(granted), Some(given)) if granted != given => {
            changes.store.unuse_token(&hashed).await.map_err(ApiError::directory)?;
            return Err(body::invalid("email", "must be the invited address"));
        }
        (Some(granted), _) => granted,
        (None, Some(given)) => given,
        (None, None) => {
            changes.store.unuse_token(&hashed).await.map_err(ApiError::directory)?;
            return Err(body::invalid("email", "is required"));
        }
    };
    let role = grant.role.unwrap_or_else(|| "member".into());
    let new = NewUser { handle, display_name, email: &email, password_hash: &password_hash, role: &role };
    let user = match changes.store.create_user(grant.org, &new).await {
        Ok((user, joined)) => {
            if let Some(event) = joined {
                publish(changes, &event).await;
            }
            user
        }
        Err(e) => {
            // Give the link back: the person can pick another handle.
            let _ = changes.store.unuse_token(&hashed).await;
            return Err(ApiError::directory(e));
        }
    };
    info!(%user, org = %grant.org, role, "account created");
    Ok(UserView {
        id: user.0,
        org: grant.org.0,
        handle: handle.to_owned(),
        display_name: display_name.to_owned(),
        email: Some(email),
        role,
        deactivated: false,
        title: None,
        time_zone: None,
        avatar_url: None,
    })
}

/// The caller, their org and their login session.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "accounts",
    responses(
        (status = 200, description = "Who the token speaks for", body = Me),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn me(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    headers: HeaderMap,
) -> Result<Json<Me>, ApiError> {
    let (identity, session) = caller_identity(&auth, &headers).await?;
    let (user, org) = (session.user.id, session.user.org);
    let account = changes.store.account(org, user).await.map_err(ApiError::directory)?;
    let org_row = changes.store.org(org).await.map_err(ApiError::directory)?;
    let (Some(account), Some(org_row)) = (account, org_row) else {
        return Err(ApiError::auth_failed("token rejected"));
    };
    Ok(Json(Me { user: user_view(account, true), org: org_view(org_row), session_id: identity.session }))
}

/// A change to one's own profile: only the fields present change; `null` (or an empty
/// string) clears `title`, `time_zone` or `avatar_url`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileUpdate {
    /// 1–200 characters; it cannot be cleared (`null` is refused).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub display_name: Option<Option<String>>,
    /// Up to 100 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub title: Option<Option<String>>,
    /// An IANA time zone name such as `Europe/Berlin`, `America/Argentina/Buenos_Aires` or `UTC`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub time_zone: Option<Option<String>>,
    /// An `http://` or `https://` URL, at most 2,048 bytes.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub avatar_url: Option<Option<String>>,
}

/// A field that is present, even as `null` (absent fields stay `None` by `default`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// `value` trimmed, or `None` when it clears the field (null, empty or only whitespace).
fn cleared(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// An IANA zone name's shape: `Area/Location[/Sub]` or a single name (`UTC`), of letters,
/// digits and `_ + -`. The service does not carry the zone database; clients look it up.
fn valid_time_zone(zone: &str) -> bool {
    zone.len() <= 64
        && zone.split('/').count() <= 3
        && zone.split('/').enumerate().all(|(i, part)| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'))
                && (i > 0 || part.as_bytes()[0].is_ascii_alphabetic())
        })
}

/// Changes the caller's own profile.
#[utoipa::path(
    patch,
    path = "/v1/me/profile",
    tag = "people",
    request_body = ProfileUpdate,
    responses(
        (status = 200, description = "The caller, as they are now", body = UserView),
        (status = 400, description = "A field is invalid, or the body changes nothing", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update_profile(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    headers: HeaderMap,
    Body(request): Body<ProfileUpdate>,
) -> Result<Json<UserView>, ApiError> {
    let session = caller(&auth, &headers).await?;
    if request.display_name.is_none()
        && request.title.is_none()
        && request.time_zone.is_none()
        && request.avatar_url.is_none()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "body: name at least one of display_name, title, time_zone, avatar_url",
        ));
    }
    let display_name = match &request.display_name {
        Some(None) => return Err(body::invalid("display_name", "cannot be cleared")),
        Some(Some(name)) => Some(body::name("display_name", name)?),
        None => None,
    };
    let title = request.title.as_ref().map(cleared);
    if let Some(Some(title)) = title {
        if title.chars().count() > 100 || title.chars().any(char::is_control) {
            return Err(body::invalid(
                "title",
                "must be at most 100 characters, none of them control characters",
            ));
        }
    }
    let time_zone = request.time_zone.as_ref().map(cleared);
    if let Some(Some(zone)) = time_zone {
        if !valid_time_zone(zone) {
            return Err(body::invalid(
                "time_zone",
                "must be an IANA time zone name such as Europe/Berlin or UTC",
            ));
        }
    }
    let avatar_url = request.avatar_url.as_ref().map(cleared);
    if let Some(Some(url)) = avatar_url {
        let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        if host.is_none_or(str::is_empty)
            || url.len() > 2048
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(body::invalid(
                "avatar_url",
                "must be an http:// or https:// URL of at most 2048 bytes without spaces",
            ));
        }
    }
    let change = ProfileChange { display_name, title, time_zone, avatar_url };
    let (org, user) = (session.user.org, session.user.id);
    let account = changes.store.update_profile(org, user, &change).await.map_err(ApiError::directory)?;
    let account = account.ok_or_else(|| ApiError::auth_failed("token rejected"))?;
    info!(%user, "profile updated");
    Ok(Json(user_view(account, true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_are_checked_by_shape() {
        for zone in
            ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "America/Port-au-Prince"]
        {
            assert!(valid_time_zone(zone), "{zone}");
        }
        for zone in [
            "",
            "/Berlin",
            "Europe//Berlin",
            "Europe/Berlin/",
            "1Europe/Berlin",
            "Europe/Ber lin",
            "a/b/c/d",
            "<script>",
        ] {
            assert!(!valid_time_zone(zone), "{zone}");
        }
    }

    #[test]
    fn a_profile_field_is_absent_null_or_set() {
        let update: ProfileUpdate =
            serde_json::from_str(r#"{"title": null, "time_zone": "UTC"}"#).expect("decodes");
        assert_eq!(update.title, Some(None), "null clears");
        assert_eq!(update.time_zone, Some(Some("UTC".into())));
        assert_eq!(update.avatar_url, None, "absent leaves it");
        assert_eq!(cleared(&Some("  ".into())), None, "whitespace clears");
    }
}
