//! The queue of data-rights jobs in Postgres (docs/api.md, "Data rights"): exports and
//! erasures, claimed by the api service's workers with a lease (`FOR UPDATE SKIP LOCKED`), every
//! write fenced by the attempt that claimed the job, finished exports' documents kept until they
//! expire. What a job does is `crate::rights` (the queries) and the api's registry.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use threadspace_protocol::{OrgId, UserId};

use crate::accounts::{query, Accounts};
use crate::directory::DirectoryError;

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// A person's own data.
    ExportUser,
    /// The org's people, channels and public messages.
    ExportOrg,
    /// Erase a person.
    EraseUser,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExportUser => "export_user",
            Self::ExportOrg => "export_org",
            Self::EraseUser => "erase_user",
        }
    }

    fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "export_user" => Self::ExportUser,
            "export_org" => Self::ExportOrg,
            "erase_user" => Self::EraseUser,
            _ => return None,
        })
    }
}

/// A job as stored (without its archive).
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: i64,
    pub org: OrgId,
    pub kind: JobKind,
    /// Whose data; `None` for an org export.
    pub subject: Option<UserId>,
    pub requested_by: UserId,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    pub attempts: i32,
    pub error: Option<String>,
    /// An export's size in bytes, once done.
    pub archive_bytes: Option<i64>,
    /// When an export's archive is deleted (milliseconds since the Unix epoch).
    pub expires_ms: Option<i64>,
    /// Whether the archive is still there to download.
    pub archive_available: bool,
    /// What an erasure did, per kind of data.
    pub summary: Option<Value>,
    /// Seqs of the person's messages an earlier attempt of this erasure found in the stream.
    pub found_seqs: Vec<i64>,
}

const JOB_COLUMNS: &str = "id, org_id, kind, subject_id, requested_by, state,
     (extract(epoch FROM created_at) * 1000)::bigint,
     (extract(epoch FROM finished_at) * 1000)::bigint,
     attempts, error, archive_bytes,
     (extract(epoch FROM expires_at) * 1000)::bigint,
     archive IS NOT NULL, summary::text, found_seqs";

fn job_from(row: &tokio_postgres::Row) -> Job {
    let kind: String = row.get(2);
    let summary: Option<String> = row.get(13);
    Job {
        id: row.get(0),
        org: OrgId(row.get(1)),
        kind: JobKind::parse(&kind).unwrap_or(JobKind::ExportUser),
        subject: row.get::<_, Option<i64>>(3).map(UserId),
        requested_by: UserId(row.get(4)),
        state: row.get(5),
        created_ms: row.get(6),
        finished_ms: row.get(7),
        attempts: row.get(8),
        error: row.get(9),
        archive_bytes: row.get(10),
        expires_ms: row.get(11),
        archive_available: row.get(12),
        summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
        found_seqs: row.get(14),
    }
}

/// The claim a worker holds on a running job: its id and the attempt it claimed.
const FENCE: &str = "id = $1 AND attempts = $2 AND state = 'running'";

impl Accounts {
    /// Queues a job. An erasure of a person with one already open is a conflict.
    pub async fn enqueue_job(
        &self,
        org: OrgId,
        kind: JobKind,
        subject: Option<UserId>,
        requested_by: UserId,
    ) -> Result<Job, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO data_jobs (org_id, kind, subject_id, requested_by) VALUES ($1, $2, $3, $4)
                     RETURNING {JOB_COLUMNS}"
                ),
                &[&org.0, &kind.as_str(), &subject.map(|u| u.0), &requested_by.0],
            )
            .await
            .map_err(|e| match query(e) {
                DirectoryError::Conflict { .. } => {
                    DirectoryError::Conflict { what: "an open erasure of this user" }
                }
                other => other,
            })?;
        Ok(job_from(&row))
    }

    /// A job of `org`, without its archive.
    pub async fn job(&self, org: OrgId, id: i64) -> Result<Option<Job>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM data_jobs WHERE id = $1 AND org_id = $2"),
                &[&id, &org.0],
            )
            .await
            .map_err(query)?;
        Ok(row.as_ref().map(job_from))
    }

    /// An export's document, while it is kept.
    pub async fn job_archive(&self, org: OrgId, id: i64) -> Result<Option<Vec<u8>>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT archive FROM data_jobs WHERE id = $1 AND org_id = $2 AND archive IS NOT NULL",
                &[&id, &org.0],
            )
            .await
            .map_err(query)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Takes the oldest queued job, or a running one whose worker's lease passed, for `lease`.
    pub async fn claim_job(&self, lease: Duration) -> Result<Option<Job>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE data_jobs SET state = 'running', started_at = coalesce(started_at, now()),
                         lease_until = now() + make_interval(secs => $1), attempts = attempts + 1
                     WHERE id = (SELECT id FROM data_jobs
                                 WHERE state = 'queued' OR (state = 'running' AND lease_until < now())
                                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING {JOB_COLUMNS}"
                ),
                &[&lease.as_secs_f64()],
            )
            .await
            .map_err(query)?;
        Ok(row.as_ref().map(job_from))
    }

    /// Extends a running job's lease; false if the claim `job` holds is no longer the job's
    /// (another worker took it up after the lease ran out): stop working on it.
    pub async fn renew_job(&self, job: &Job, lease: Duration) -> Result<bool, DirectoryError> {
        let client = self.client().await?;
        let n = client
            .execute(
                &format!(
                    "UPDATE data_jobs SET lease_until = now() + make_interval(secs => $3) WHERE {FENCE}"
                ),
                &[&job.id, &job.attempts, &lease.as_secs_f64()],
            )
            .await
            .map_err(query)?;
        Ok(n > 0)
    }

    /// Stores a finished export's document, kept until `expires` — unless the claim is lost, or
    /// someone the document is about was erased since the job started (it may hold their data
    /// from before): false then.
    pub async fn finish_export(
        &self,
        job: &Job,
        archive: &[u8],
        expires: SystemTime,
    ) -> Result<bool, DirectoryError> {
        let client = self.client().await?;
        let n = client
            .execute(
                &format!(
                    "UPDATE data_jobs SET state = 'done', finished_at = now(), lease_until = NULL, error = NULL,
                         archive = $3, archive_bytes = $4, expires_at = $5
                     WHERE {FENCE}
                       AND NOT EXISTS (SELECT 1 FROM users u WHERE u.erased_at >= data_jobs.started_at
                                         AND (u.id = data_jobs.subject_id
                                              OR (data_jobs.subject_id IS NULL AND u.org_id = data_jobs.org_id)))"
                ),
                &[&job.id, &job.attempts, &archive, &(archive.len() as i64), &expires],
            )
            .await
            .map_err(query)?;
        Ok(n > 0)
    }

    /// Records a finished erasure and what it did (nothing if the claim is lost).
    pub async fn finish_erasure(&self, job: &Job, summary: &Value) -> Result<(), DirectoryError> {
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "UPDATE data_jobs SET state = 'done', finished_at = now(), lease_until = NULL, error = NULL,
                         summary = $3::text::jsonb
                     WHERE {FENCE}"
                ),
                &[&job.id, &job.attempts, &summary.to_string()],
            )
            .await
            .map_err(query)?;
        Ok(())
    }

    /// Marks a job failed with `error` (words, never personal data); nothing if the claim is lost.
    pub async fn fail_job(&self, job: &Job, error: &str) -> Result<(), DirectoryError> {
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "UPDATE data_jobs SET state = 'failed', finished_at = now(), lease_until = NULL, error = $3
                     WHERE {FENCE}"
                ),
                &[&job.id, &job.attempts, &error],
            )
            .await
            .map_err(query)?;
        Ok(())
    }

    /// Records seqs of the person's messages an erasure found in the stream, for a retry (the
    /// stream's copies are deleted right after); nothing if the claim is lost.
    pub async fn note_found_seqs(&self, job: &Job, seqs: &[i64]) -> Result<(), DirectoryError> {
        let client = self.client().await?;
        client
            .execute(
                &format!("UPDATE data_jobs SET found_seqs = found_seqs || $3::int8[] WHERE {FENCE}"),
                &[&job.id, &job.attempts, &seqs],
            )
            .await
            .map_err(query)?;
        Ok(())
    }

    /// Leaves a job to be taken up again after `after` (its claim lapses then), noting why this
    /// attempt failed; nothing if the claim is lost.
    pub async fn retry_job(&self, job: &Job, error: &str, after: Duration) -> Result<(), DirectoryError> {
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "UPDATE data_jobs SET lease_until = now() + make_interval(secs => $4), error = $3 WHERE {FENCE}"
                ),
                &[&job.id, &job.attempts, &error, &after.as_secs_f64()],
            )
            .await
            .map_err(query)?;
        Ok(())
    }

    /// Deletes export documents past their time; how many went.
    pub async fn expire_exports(&self) -> Result<u64, DirectoryError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE data_jobs SET archive = NULL WHERE archive IS NOT NULL AND expires_at < now()",
                &[],
            )
            .await
            .map_err(query)
    }
}
