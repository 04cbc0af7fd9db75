//! The data-rights worker: takes queued jobs from Postgres (`FOR UPDATE SKIP LOCKED`, so any
//! number of api replicas share the queue), runs them through the registry, and records the
//! outcome. A job holds a lease it renews while it runs; a worker that dies leaves a lease that
//! runs out, and another worker takes the job up again (every kind's erase is idempotent). Also
//! deletes export documents past `--export-retention`.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use threadspace_protocol::error_chain;
use threadspace_store::audit::AuditEntry;
use threadspace_store::jobs::{Job, JobKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{kinds, stream, Erasure, Rights, RightsError, Scope, REGISTRY};
use crate::audit::record;
use crate::metrics as m;

/// How long a claimed job is the worker's before another may take it up.
const LEASE: Duration = Duration::from_secs(60);
/// A job is given up after this many attempts.
const MAX_ATTEMPTS: i32 = 3;
/// How long after a failed attempt a job is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// How often the queue is looked at when nobody rang.
const POLL: Duration = Duration::from_secs(5);

/// Runs jobs until `stop`; `wake` is rung when a job is queued.
pub(crate) async fn run(rights: Rights, wake: std::sync::Arc<Notify>, stop: CancellationToken) {
    let mut expiry = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = expiry.tick() => expire(&rights).await,
        }
        // Drain the queue before sleeping again.
        loop {
            let job = match rights.store().claim_job(LEASE).await {
                Ok(Some(job)) => job,
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %error_chain(&e), "data-rights queue unavailable; retrying");
                    break;
                }
            };
            tokio::select! {
                () = stop.cancelled() => return, // the lease runs out; another worker resumes it
                () = run_job(&rights, job) => {}
            }
        }
    }
}

async fn expire(rights: &Rights) {
    match rights.store().expire_exports().await {
        Ok(0) => {}
        Ok(n) => info!(deleted = n, "export documents past retention deleted"),
        Err(e) => warn!(error = %error_chain(&e), "export retention failed; retrying in an hour"),
    }
}

/// Runs one job to its end, renewing its lease meanwhile. A failure that may pass (Postgres,
/// NATS or the bridge unavailable) is retried after [`RETRY_AFTER`], up to [`MAX_ATTEMPTS`]
/// attempts in all; one that will not (the person is gone, the export too large) fails the job.
async fn run_job(rights: &Rights, job: Job) {
    let kind = job.kind.as_str();
    if job.attempts > MAX_ATTEMPTS {
        let reason = format!("gave up after {MAX_ATTEMPTS} attempts");
        finish_failed(rights, &job, &reason).await;
        return;
    }
    info!(job = job.id, kind, org = %job.org, attempt = job.attempts, "data-rights job started");
    let started = Instant::now();
    let work = async {
        match job.kind {
            JobKind::ExportUser | JobKind::ExportOrg => export(rights, &job).await,
            JobKind::EraseUser => erase(rights, &job).await,
        }
    };
    let mut renew = tokio::time::interval(LEASE / 3);
    renew.tick().await;
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            result = &mut work => break Some(result),
            _ = renew.tick() => match rights.store().renew_job(&job, LEASE).await {
                Ok(true) => {}
                // Another worker took it up: this one stops (its writes are fenced anyway).
                Ok(false) => break None,
                Err(e) => warn!(job = job.id, error = %error_chain(&e), "cannot renew the job's lease"),
            },
        }
    };
    metrics::histogram!(m::DATA_JOB_DURATION, "kind" => kind).record(started.elapsed().as_secs_f64());
    match result {
        None => warn!(job = job.id, kind, "lost the job's lease to another worker; stopped"),
        Some(Ok(())) => {
            metrics::counter!(m::DATA_JOBS, "kind" => kind, "result" => "done").increment(1);
            info!(job = job.id, kind, elapsed = ?started.elapsed(), "data-rights job done");
        }
        Some(Err(e)) if e.is_permanent() || job.attempts >= MAX_ATTEMPTS => {
            warn!(job = job.id, kind, error = %error_chain(&e), "data-rights job failed");
            finish_failed(rights, &job, &e.to_string()).await;
        }
        Some(Err(e)) => {
            warn!(job = job.id, kind, attempt = job.attempts, error = %error_chain(&e),
                  retry_in = ?RETRY_AFTER, "data-rights job attempt failed; it is retried");
            if let Err(e) = rights.store().retry_job(&job, &e.to_string(), RETRY_AFTER).await {
                warn!(job = job.id, error = %error_chain(&e), "cannot schedule the retry; the lease runs out and it is retried");
            }
        }
    }
}

async fn finish_failed(rights: &Rights, job: &Job, reason: &str) {
    metrics::counter!(m::DATA_JOBS, "kind" => job.kind.as_str(), "result" => "failed").increment(1);
    if let Err(e) = rights.store().fail_job(job, reason).await {
        warn!(job = job.id, error = %error_chain(&e), "cannot record the job's failure; its lease will run out and it is retried");
    }
}

/// Builds the export document from every kind of the registry and stores it.
async fn export(rights: &Rights, job: &Job) -> Result<(), RightsError> {
    let scope = match (job.kind, job.subject) {
        (JobKind::ExportUser, Some(user)) => Scope::User(job.org, user),
        _ => Scope::Org(job.org),
    };
    let mut document = kinds::header(job.id, scope);
    for kind in REGISTRY {
        if let Some(part) = kind.export(rights, scope).await? {
            document.insert(kind.name().to_owned(), part);
        }
    }
    // Serializing up to `--export-max-bytes` is CPU work: off the runtime.
    let bytes = tokio::task::spawn_blocking(move || serde_json::to_vec_pretty(&Value::Object(document)))
        .await
        .map_err(|_| RightsError::Contended("the export's serialization was cancelled"))?
        .expect("JSON values serialize");
    if bytes.len() > rights.max_export_bytes {
        return Err(RightsError::TooLarge { limit: rights.max_export_bytes });
    }
    let expires = SystemTime::now() + rights.export_retention;
    if !rights.store().finish_export(job, &bytes, expires).await? {
        return Err(RightsError::SubjectErased);
    }
    metrics::counter!(m::EXPORT_BYTES).increment(bytes.len() as u64);
    Ok(())
}

/// Erases a person: deactivates them, waits until every message they sent is where the kinds
/// look (the invariant of `super`), then runs every kind's erase in registry order.
async fn erase(rights: &Rights, job: &Job) -> Result<(), RightsError> {
    let user = job.subject.ok_or(RightsError::NoSubject)?;
    let subject = rights.store().erasure_subject(job.org, user).await?.ok_or(RightsError::NoSubject)?;
    if !subject.erased {
        super::deactivate(&rights.changes, &subject).await?;
    }
    tokio::time::sleep(rights.settle).await;
    let through_seq = stream::last_seq(rights).await?;
    stream::wait_for_bridge(rights, job.org, through_seq).await?;
    let policy = subject.policy;
    let found_seqs = Mutex::new(job.found_seqs.clone());
    let erasure = Erasure { job: job.clone(), subject, through_seq, found_seqs };
    let mut summary = Map::new();
    summary.insert("policy".into(), Value::from(policy.as_str()));
    for kind in REGISTRY {
        let outcome = kind.erase(rights, &erasure).await?;
        if let super::Outcome::Deleted(n) | super::Outcome::Scrubbed(n) = outcome {
            metrics::counter!(m::ERASED_RECORDS, "kind" => kind.name()).increment(n);
        }
        summary.insert(kind.name().to_owned(), outcome.to_json());
    }
    let summary = Value::Object(summary);
    rights.store().finish_erasure(job, &summary).await?;
    let entry = AuditEntry::new(job.org, Some(job.requested_by), "user.erased").user(user);
    record(&rights.changes, entry.detail(serde_json::json!({"job": job.id, "policy": policy.as_str()})))
        .await;
    info!(job = job.id, org = %job.org, %user, policy = policy.as_str(), "user erased");
    Ok(())
}
