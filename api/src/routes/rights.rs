//! Data rights over REST (docs/api.md, "Data rights"): ask for an export of one's own data or
//! (owners) of the org's, ask for a person's erasure (owners), follow the job, download the
//! export, set the org's erasure policy. The jobs themselves run in `crate::rights::worker`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use threadspace_protocol::UserId;
use threadspace_store::audit::AuditEntry;
use threadspace_store::directory::Session;
use threadspace_store::jobs::{Job, JobKind};
use threadspace_store::rights::ErasurePolicy;
use tracing::{info, warn};
use utoipa::ToSchema;

use super::people::role_of;
use super::query::{bad_path, path_id};
use crate::audit::record;
use crate::body::{self, Body};
use crate::caller::{caller, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::limits::ClientIp;
use crate::parts::{Changes, Jobs};
use crate::policy::{may, may_to, sees_job, Action};

/// An export or erasure job.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobView {
    pub id: i64,
    /// `export_user`, `export_org` or `erase_user`.
    pub kind: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// Whose data (null for an org export).
    pub user: Option<i64>,
    pub requested_by: i64,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// An export: the document's size once done.
    pub archive_bytes: Option<i64>,
    /// An export: whether the document can still be downloaded (`GET /v1/jobs/{job}/archive`).
    pub archive_available: bool,
    /// An export: when the document is deleted (milliseconds since the Unix epoch).
    pub expires_at: Option<i64>,
    /// An erasure, once done: what happened to each kind of data (`{"deleted": n}`,
    /// `{"scrubbed": n}` or `{"kept": why}`) and the `policy` it followed.
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        Self {
            id: job.id,
            kind: job.kind.as_str().to_owned(),
            state: job.state,
            user: job.subject.map(|u| u.0),
            requested_by: job.requested_by.0,
            created_at: job.created_ms,
            finished_at: job.finished_ms,
            error: job.error,
            archive_bytes: job.archive_bytes,
            archive_available: job.archive_available,
            expires_at: job.expires_ms,
            summary: job.summary,
        }
    }
}

/// The org's erasure policy.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErasurePolicyView {
    /// What an erasure does to the person's messages: `anonymise` (they stay, by "Erased
    /// user") or `delete` (gone from the archive, the search index and the stream).
    pub messages: String,
}

async fn enqueue(
    changes: &Changes,
    jobs: &Jobs,
    session: &Session,
    kind: JobKind,
    subject: Option<UserId>,
) -> Result<Job, ApiError> {
    let job = changes
        .store
        .enqueue_job(session.user.org, kind, subject, session.user.id)
        .await
        .map_err(ApiError::directory)?;
    jobs.wake.notify_one();
    info!(job = job.id, kind = kind.as_str(), by = %session.user.id, "data-rights job queued");
    Ok(job)
}

/// Asks for an export of the caller's own data. The document is produced in the background:
/// follow the job, then download it.
#[utoipa::path(
    post,
    path = "/v1/me/export",
    tag = "data rights",
    responses(
        (status = 202, description = "The export job, queued", body = JobView),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Bots have no export", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn export_me(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    State(jobs): State<Jobs>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    queue_export(&auth, &changes, &jobs, ip, &headers, JobKind::ExportUser).await
}

/// Asks for an export of the org: its people, its public channels with their members and
/// messages (docs/api.md lists it). Owners only.
#[utoipa::path(
    post,
    path = "/v1/org/export",
    tag = "data rights",
    responses(
        (status = 202, description = "The export job, queued", body = JobView),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Only owners may", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn export_org(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    State(jobs): State<Jobs>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    queue_export(&auth, &changes, &jobs, ip, &headers, JobKind::ExportOrg).await
}

/// Queues an export of the caller's own data (`ExportUser`) or of their org (`ExportOrg`), if
/// their role may, and records the request.
async fn queue_export(
    auth: &Auth,
    changes: &Changes,
    jobs: &Jobs,
    ip: std::net::IpAddr,
    headers: &HeaderMap,
    kind: JobKind,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let session = caller(auth, headers).await?;
    let (action, subject, scope) = match kind {
        JobKind::ExportOrg => (Action::ExportOrg, None, "org"),
        _ => (Action::ExportOwnData, Some(session.user.id), "user"),
    };
    if !may(role_of(&session), action) {
        return Err(ApiError::forbidden(format!("a {} may not export {scope} data", session.user.role)));
    }
    let job = enqueue(changes, jobs, &session, kind, subject).await?;
    let entry = AuditEntry::new(session.user.org, Some(session.user.id), "export.requested").from(ip);
    record(changes, entry.detail(json!({"scope": scope, "job": job.id}))).await;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// Asks for a person's erasure: they are deactivated at once, and their data is erased in the
/// background under the org's erasure policy (docs/api.md, "Data rights"). Irreversible. Owners
/// only, never themselves.
#[utoipa::path(
    post,
    path = "/v1/users/{user}/erase",
    tag = "data rights",
    params(("user" = i64, Path, description = "User id")),
    responses(
        (status = 202, description = "The erasure job, queued", body = JobView),
        (status = 400, description = "The path parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Only owners may, and never on themselves", body = ErrorBody),
        (status = 404, description = "No such user in the caller's org", body = ErrorBody),
        (status = 409, description = "The user is already erased, or an erasure of them is under way (`conflict`)", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn erase_user(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    State(jobs): State<Jobs>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    user: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let Path(user) = user.map_err(bad_path)?;
    let session = caller(&auth, &headers).await?;
    let user = UserId(path_id("user", &user).map_err(ApiError::invalid_parameter)?);
    // The role first: who may not erase anyone learns nothing about who exists.
    if !may_to(role_of(&session), Action::Erase, user == session.user.id) {
        return Err(ApiError::forbidden(if user == session.user.id {
            "you may not erase yourself: another owner can".to_owned()
        } else {
            format!("a {} may not erase people", session.user.role)
        }));
    }
    let subject = changes.store.erasure_subject(session.user.org, user).await.map_err(ApiError::directory)?;
    let subject = subject.ok_or_else(|| ApiError::not_found(format!("no user {user} in your org")))?;
    if subject.erased {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("user {user} is already erased"),
        ));
    }
    let job = enqueue(&changes, &jobs, &session, JobKind::EraseUser, Some(user)).await?;
    // At once, not when a worker gets to it: their sockets close and their tokens stop now.
    if let Err(e) = crate::rights::deactivate(&changes, &subject).await {
        warn!(%user, job = job.id, error = %threadspace_protocol::error_chain(&e),
              "could not deactivate the person yet; the erasure job will");
    }
    let entry = AuditEntry::new(session.user.org, Some(session.user.id), "user.erasure_requested").user(user);
    record(&changes, entry.from(ip).detail(json!({"job": job.id}))).await;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// The job `raw` names, if the caller may see it: whoever asked for it, and the org's owners.
async fn visible_job(changes: &Changes, session: &Session, raw: &str) -> Result<Job, ApiError> {
    let id = path_id("job", raw).map_err(ApiError::invalid_parameter)?;
    let job = changes.store.job(session.user.org, id).await.map_err(ApiError::directory)?;
    job.filter(|job| sees_job(role_of(session), job.requested_by == session.user.id))
        .ok_or_else(|| ApiError::not_found(format!("no job {id} of yours")))
}

/// An export or erasure job: its state and, when done, its outcome.
#[utoipa::path(
    get,
    path = "/v1/jobs/{job}",
    tag = "data rights",
    params(("job" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "The path parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 404, description = "No such job that the caller asked for (owners see every job of the org)", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn job(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    job: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<JobView>, ApiError> {
    let Path(job) = job.map_err(bad_path)?;
    let session = caller(&auth, &headers).await?;
    Ok(Json(visible_job(&changes, &session, &job).await?.into()))
}

/// Downloads a finished export: one JSON document (docs/api.md, "Data rights", lists its keys).
#[utoipa::path(
    get,
    path = "/v1/jobs/{job}/archive",
    tag = "data rights",
    params(("job" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The export document, as an attachment", content_type = "application/json", body = Object),
        (status = 400, description = "The path parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 404, description = "No such export that the caller asked for", body = ErrorBody),
        (status = 409, description = "The export is not done (`not_ready`: still queued or running, or it failed)", body = ErrorBody),
        (status = 410, description = "The document was deleted after its retention (`expired`): ask again", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn archive(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    job: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(job) = job.map_err(bad_path)?;
    let session = caller(&auth, &headers).await?;
    let job = visible_job(&changes, &session, &job).await?;
    // A person's export is theirs alone (owners see the job, not the document); the org's is for
    // whoever may export the org now.
    let may_download = match job.kind {
        JobKind::EraseUser => false,
        JobKind::ExportUser => job.subject == Some(session.user.id),
        JobKind::ExportOrg => may(role_of(&session), Action::ExportOrg),
    };
    if !may_download {
        return Err(ApiError::not_found(format!("job {} has no document of yours", job.id)));
    }
    if job.state != "done" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!("export {} is {}, not done", job.id, job.state),
        ));
    }
    let Some(document) =
        changes.store.job_archive(session.user.org, job.id).await.map_err(ApiError::directory)?
    else {
        return Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            format!("export {}'s document was deleted after its retention; ask for a new export", job.id),
        ));
    };
    let entry = AuditEntry::new(session.user.org, Some(session.user.id), "export.downloaded").from(ip);
    record(&changes, entry.detail(json!({"job": job.id}))).await;
    let disposition = format!("attachment; filename=\"threadspace-export-{}.json\"", job.id);
    Ok((
        [
            (CONTENT_TYPE, "application/json".to_owned()),
            (CONTENT_DISPOSITION, disposition),
            (CACHE_CONTROL, "no-store".to_owned()),
        ],
        document,
    )
        .into_response())
}

/// The org's erasure policy. Owners and admins.
#[utoipa::path(
    get,
    path = "/v1/org/erasure-policy",
    tag = "data rights",
    responses(
        (status = 200, description = "The policy", body = ErasurePolicyView),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Only owners and admins may", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn erasure_policy(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    headers: HeaderMap,
) -> Result<Json<ErasurePolicyView>, ApiError> {
    let session = caller(&auth, &headers).await?;
    if !may(role_of(&session), Action::ReadErasurePolicy) {
        return Err(ApiError::forbidden(format!("a {} may not read the erasure policy", session.user.role)));
    }
    let policy = changes.store.erasure_policy(session.user.org).await.map_err(ApiError::directory)?;
    Ok(Json(ErasurePolicyView { messages: policy.as_str().to_owned() }))
}

/// Sets what an erasure does to a person's messages. Owners only; applies to erasures that
/// start afterwards.
#[utoipa::path(
    put,
    path = "/v1/org/erasure-policy",
    tag = "data rights",
    request_body = ErasurePolicyView,
    responses(
        (status = 200, description = "The policy now", body = ErasurePolicyView),
        (status = 400, description = "A field is missing or malformed", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 403, description = "Only owners may", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The directory is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn set_erasure_policy(
    State(auth): State<Auth>,
    State(changes): State<Changes>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    Body(request): Body<ErasurePolicyView>,
) -> Result<Json<ErasurePolicyView>, ApiError> {
    let session = caller(&auth, &headers).await?;
    let policy = ErasurePolicy::parse(&request.messages)
        .ok_or_else(|| body::invalid("messages", "must be anonymise or delete"))?;
    if !may(role_of(&session), Action::SetErasurePolicy) {
        return Err(ApiError::forbidden(format!("a {} may not set the erasure policy", session.user.role)));
    }
    changes.store.set_erasure_policy(session.user.org, policy).await.map_err(ApiError::directory)?;
    let entry = AuditEntry::new(session.user.org, Some(session.user.id), "org.erasure_policy_set").from(ip);
    record(&changes, entry.detail(json!({"messages": policy.as_str()}))).await;
    Ok(Json(ErasurePolicyView { messages: policy.as_str().to_owned() }))
}
