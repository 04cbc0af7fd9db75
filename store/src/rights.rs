//! Data rights in Postgres (docs/api.md, "Data rights"): the queue of export and erasure jobs,
//! the org's erasure policy, and what each kind of data stored here contributes to an export
//! and does on an erasure. The api service's registry (`api/src/rights`) calls these; nothing
//! here decides who may ask.
//!
//! Exports are built by Postgres itself (`json_agg`), so what a document holds is exactly the
//! columns these queries name: a column added to a table reaches exports only when it is added
//! here (and to the documented list).

use std::time::{Duration, SystemTime};

use serde_json::Value;
use threadspace_protocol::{ChannelId, OrgId, UserId};

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
}

/// What an erasure does to a person's messages (the org's setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErasurePolicy {
    /// Messages stay, attributed to the scrubbed account ("Erased user").
    Anonymise,
    /// Messages are deleted from the archive, the search index and the stream.
    Delete,
}

impl ErasurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anonymise => "anonymise",
            Self::Delete => "delete",
        }
    }

    pub fn parse(policy: &str) -> Option<Self> {
        Some(match policy {
            "anonymise" => Self::Anonymise,
            "delete" => Self::Delete,
            _ => return None,
        })
    }
}

/// Who is being erased, read once when the erasure starts (the profile is scrubbed last, so a
/// retried erasure still finds the address the other kinds match on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasureSubject {
    pub org: OrgId,
    pub user: UserId,
    pub email: Option<String>,
    /// Their role now (deactivating them checks it did not change meanwhile).
    pub role: String,
    pub policy: ErasurePolicy,
    /// Already erased (a retried job): only what is left is done again.
    pub erased: bool,
    /// An erasure of them is queued or running.
    pub erasing: bool,
}

const JOB_COLUMNS: &str = "id, org_id, kind, subject_id, requested_by, state,
     (extract(epoch FROM created_at) * 1000)::bigint,
     (extract(epoch FROM finished_at) * 1000)::bigint,
     attempts, error, archive_bytes,
     (extract(epoch FROM expires_at) * 1000)::bigint,
     archive IS NOT NULL, summary::text";

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
    }
}

/// Parses the JSON text Postgres built.
fn json(text: Option<String>) -> Result<Value, DirectoryError> {
    let text = text.unwrap_or_else(|| "null".to_owned());
    serde_json::from_str(&text)
        .map_err(|e| DirectoryError::Unreadable(format!("export JSON built by postgres: {e}")))
}

/// The claim a worker holds on a running job: its id and the attempt it claimed.
const FENCE: &str = "id = $1 AND attempts = $2 AND state = 'running'";

/// How many message rows one export query reads.
pub const EXPORT_PAGE: i64 = 5_000;

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

    /// Deletes the export documents that may hold a person's data — their own exports and the
    /// org's — and fails their exports still to come; how many documents went.
    pub async fn erase_exports(&self, org: OrgId, user: UserId) -> Result<u64, DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        let n = tx
            .execute(
                "UPDATE data_jobs SET archive = NULL
                 WHERE org_id = $1 AND archive IS NOT NULL AND (kind = 'export_org' OR subject_id = $2)",
                &[&org.0, &user.0],
            )
            .await
            .map_err(query)?;
        tx.execute(
            "UPDATE data_jobs SET state = 'failed', finished_at = now(), lease_until = NULL,
                 error = 'the person was erased'
             WHERE kind = 'export_user' AND subject_id = $1 AND state IN ('queued', 'running')",
            &[&user.0],
        )
        .await
        .map_err(query)?;
        tx.commit().await.map_err(query)?;
        Ok(n)
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

    /// The org's erasure policy.
    pub async fn erasure_policy(&self, org: OrgId) -> Result<ErasurePolicy, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT erasure_policy FROM orgs WHERE id = $1", &[&org.0])
            .await
            .map_err(query)?;
        let policy: String = row.get(0);
        ErasurePolicy::parse(&policy)
            .ok_or_else(|| DirectoryError::Unreadable(format!("erasure policy {policy:?}")))
    }

    /// Sets the org's erasure policy.
    pub async fn set_erasure_policy(&self, org: OrgId, policy: ErasurePolicy) -> Result<(), DirectoryError> {
        let client = self.client().await?;
        client
            .execute("UPDATE orgs SET erasure_policy = $2 WHERE id = $1", &[&org.0, &policy.as_str()])
            .await
            .map_err(query)?;
        Ok(())
    }

    /// Who an erasure is about, and the policy it follows.
    pub async fn erasure_subject(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Option<ErasureSubject>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT u.email, o.erasure_policy, u.erased_at IS NOT NULL, u.role,
                        EXISTS (SELECT 1 FROM data_jobs j WHERE j.kind = 'erase_user' AND j.subject_id = u.id
                                  AND j.state IN ('queued', 'running'))
                 FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.id = $1 AND u.org_id = $2",
                &[&user.0, &org.0],
            )
            .await
            .map_err(query)?;
        Ok(row.map(|row| {
            let policy: String = row.get(1);
            ErasureSubject {
                org,
                user,
                email: row.get(0),
                role: row.get(3),
                policy: ErasurePolicy::parse(&policy).unwrap_or(ErasurePolicy::Anonymise),
                erased: row.get(2),
                erasing: row.get(4),
            }
        }))
    }

    // --- profile -------------------------------------------------------------------------

    /// A person's profile as exported.
    pub async fn export_profile(&self, org: OrgId, user: UserId) -> Result<Value, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT row_to_json(p)::text FROM (
                     SELECT u.id, o.slug AS org, u.handle, u.display_name, u.email, u.role, u.title,
                            u.time_zone, u.avatar_url, u.created_at, u.deactivated_at
                     FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.id = $1 AND u.org_id = $2) p",
                &[&user.0, &org.0],
            )
            .await
            .map_err(query)?;
        json(row.get(0))
    }

    /// Everyone of the org as exported (bots included, no credentials).
    pub async fn export_people(&self, org: OrgId) -> Result<Value, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce(json_agg(p ORDER BY p.id), '[]')::text FROM (
                     SELECT id, handle, display_name, email, role, title, time_zone, avatar_url,
                            created_at, deactivated_at
                     FROM users WHERE org_id = $1) p",
                &[&org.0],
            )
            .await
            .map_err(query)?;
        json(row.get(0))
    }

    /// Scrubs a person's profile: their id stays (others' history refers to it), everything
    /// else that says who they were goes. Also deactivates them. True if it changed anything.
    pub async fn erase_profile(&self, org: OrgId, user: UserId) -> Result<bool, DirectoryError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE users SET handle = 'erased-' || id, display_name = 'Erased user', email = NULL,
                     password_hash = NULL, title = NULL, time_zone = NULL, avatar_url = NULL,
                     deactivated_at = coalesce(deactivated_at, now()), tokens_not_before = now(),
                     erased_at = now()
                 WHERE id = $1 AND org_id = $2 AND erased_at IS NULL",
                &[&user.0, &org.0],
            )
            .await
            .map_err(query)?;
        Ok(n > 0)
    }

    // --- memberships and channels ----------------------------------------------------------

    /// The channels a person is in, as exported.
    pub async fn export_memberships(&self, org: OrgId, user: UserId) -> Result<Value, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce(json_agg(x ORDER BY x.id), '[]')::text FROM (
                     SELECT c.id, c.kind, c.name, m.joined_at, c.archived_at IS NOT NULL AS archived
                     FROM channel_members m JOIN channels c ON c.id = m.channel_id
                     WHERE m.user_id = $1 AND c.org_id = $2) x",
                &[&user.0, &org.0],
            )
            .await
            .map_err(query)?;
        json(row.get(0))
    }

    /// The org's public channels with their members, as exported (private channels, DMs and
    /// group DMs are not part of an org export: owners do not see those they are not in).
    pub async fn export_channels(&self, org: OrgId) -> Result<Value, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce(json_agg(x ORDER BY x.id), '[]')::text FROM (
                     SELECT c.id, c.kind, c.name, c.created_at, c.created_by,
                            c.archived_at IS NOT NULL AS archived,
                            coalesce((SELECT array_agg(m.user_id ORDER BY m.user_id)
                                      FROM channel_members m WHERE m.channel_id = c.id), '{}') AS members
                     FROM channels c WHERE c.org_id = $1 AND c.kind = 'public') x",
                &[&org.0],
            )
            .await
            .map_err(query)?;
        json(row.get(0))
    }

    /// Every channel id of the org (the archive's index is by channel).
    pub async fn org_channel_ids(&self, org: OrgId) -> Result<Vec<ChannelId>, DirectoryError> {
        let client = self.client().await?;
        let rows =
            client.query("SELECT id FROM channels WHERE org_id = $1", &[&org.0]).await.map_err(query)?;
        Ok(rows.iter().map(|r| ChannelId(r.get(0))).collect())
    }

    /// The org's public channel ids.
    pub async fn public_channel_ids(&self, org: OrgId) -> Result<Vec<ChannelId>, DirectoryError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT id FROM channels WHERE org_id = $1 AND kind = 'public'", &[&org.0])
            .await
            .map_err(query)?;
        Ok(rows.iter().map(|r| ChannelId(r.get(0))).collect())
    }

    // --- messages --------------------------------------------------------------------------

    /// One page of `channel`'s archived messages after `after_seq` (by `sender`, if given),
    /// read along the archive's `(channel_id, seq)` index: the JSON rows, the last seq (0 when
    /// the page is empty) and the rows' size as JSON text.
    pub async fn export_messages(
        &self,
        channel: ChannelId,
        sender: Option<UserId>,
        after_seq: i64,
    ) -> Result<(Vec<Value>, i64, usize), DirectoryError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT row_to_json(x)::text, x.seq FROM (
                     SELECT seq, channel_id AS channel, sender_id AS sender, client_msg_id, body, sent_at
                     FROM messages
                     WHERE channel_id = $1 AND seq > $3 AND ($2::bigint IS NULL OR sender_id = $2)
                     ORDER BY channel_id, seq LIMIT $4) x",
                &[&channel.0, &sender.map(|u| u.0), &after_seq, &EXPORT_PAGE],
            )
            .await
            .map_err(query)?;
        let last = rows.last().map_or(0, |r| r.get::<_, i64>(1));
        let bytes = rows.iter().map(|r| r.get::<_, &str>(0).len()).sum();
        let values = rows.iter().map(|r| json(r.get(0))).collect::<Result<Vec<_>, _>>()?;
        Ok((values, last, bytes))
    }

    /// Deletes a person's messages from the archive and the search index (and the search rows
    /// of `extra_seqs`, their messages the archive never took); how many archive and index
    /// rows went.
    pub async fn erase_messages(
        &self,
        channels: &[ChannelId],
        user: UserId,
        extra_seqs: &[i64],
    ) -> Result<(u64, u64), DirectoryError> {
        let mut client = self.client().await?;
        let ids: Vec<i64> = channels.iter().map(|c| c.0).collect();
        let tx = client.transaction().await.map_err(query)?;
        let indexed = tx
            .execute(
                "DELETE FROM message_search s USING messages m
                 WHERE s.seq = m.seq AND m.channel_id = ANY($1) AND m.sender_id = $2",
                &[&ids, &user.0],
            )
            .await
            .map_err(query)?
            + tx.execute("DELETE FROM message_search WHERE seq = ANY($1)", &[&extra_seqs])
                .await
                .map_err(query)?;
        let archived = tx
            .execute("DELETE FROM messages WHERE channel_id = ANY($1) AND sender_id = $2", &[&ids, &user.0])
            .await
            .map_err(query)?;
        tx.commit().await.map_err(query)?;
        Ok((archived, indexed))
    }

    // --- read markers ----------------------------------------------------------------------

    /// A person's read markers, as exported.
    pub async fn export_read_markers(&self, user: UserId) -> Result<Value, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce(json_agg(x ORDER BY x.channel), '[]')::text FROM (
                     SELECT channel_id AS channel, seq, updated_at FROM read_markers WHERE user_id = $1) x",
                &[&user.0],
            )
            .await
            .map_err(query)?;
        json(row.get(0))
    }

    /// Deletes a person's read markers; how many went.
    pub async fn erase_read_markers(&self, user: UserId) -> Result<u64, DirectoryError> {
        let client = self.client().await?;
        client.execute("DELETE FROM read_markers WHERE user_id = $1", &[&user.0]).await.map_err(query)
    }

    // --- sessions and credentials ------------------------------------------------------------

    /// A person's login sessions, as exported (no token material: only hashes are stored).
    pub async fn export_sessions(&self, user: UserId) -> Result<Value, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce(json_agg(x ORDER BY x.id), '[]')::text FROM (
                     SELECT id, created_at, last_used_at, expires_at, revoked_at, revoked_reason
                     FROM auth_sessions WHERE user_id = $1) x",
                &[&user.0],
            )
            .await
            .map_err(query)?;
        json(row.get(0))
    }

    /// Deletes a person's sessions and refresh tokens, the account tokens sent to or for them
    /// (invites to their address, resets of their password), and revokes a bot's credentials;
    /// how many rows went.
    pub async fn erase_sessions(&self, user: UserId, email: Option<&str>) -> Result<u64, DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        let refresh = tx
            .execute(
                "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM auth_sessions WHERE user_id = $1)",
                &[&user.0],
            )
            .await
            .map_err(query)?;
        let sessions =
            tx.execute("DELETE FROM auth_sessions WHERE user_id = $1", &[&user.0]).await.map_err(query)?;
        let tokens = tx
            .execute(
                "DELETE FROM account_tokens WHERE user_id = $1 OR ($2::text IS NOT NULL AND email = $2)",
                &[&user.0, &email],
            )
            .await
            .map_err(query)?;
        let credentials = tx
            .execute(
                "UPDATE bot_credentials SET revoked_at = now() WHERE bot_id = $1 AND revoked_at IS NULL",
                &[&user.0],
            )
            .await
            .map_err(query)?;
        tx.commit().await.map_err(query)?;
        Ok(refresh + sessions + tokens + credentials)
    }

    // --- audit log -------------------------------------------------------------------------

    /// The audit records a person did or that are about them, as exported.
    pub async fn export_audit(&self, org: OrgId, user: UserId) -> Result<Value, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce(json_agg(x ORDER BY x.id), '[]')::text FROM (
                     SELECT id, at, actor_id AS actor, action, target_user_id AS target_user,
                            target_channel_id AS target_channel,
                            -- Someone else's address is theirs, not this person's.
                            CASE WHEN actor_id = $2 THEN host(ip) END AS ip, detail
                     FROM audit_events
                     WHERE org_id = $1 AND (actor_id = $2 OR target_user_id = $2)) x",
                &[&org.0, &user.0],
            )
            .await
            .map_err(query)?;
        json(row.get(0))
    }

    /// Strips a person's traces from the audit log: the address of every record they did, and
    /// their email wherever a record's detail carries it (a failed login, an invite, a sign-up;
    /// such a record's address goes too). Records stay: the log is the record of the erasure
    /// itself. How many records changed.
    pub async fn erase_audit(
        &self,
        org: OrgId,
        user: UserId,
        email: Option<&str>,
    ) -> Result<u64, DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        tx.batch_execute("SET LOCAL threadspace.erasure = 'on'").await.map_err(query)?;
        let n = tx
            .execute(
                "UPDATE audit_events
                 SET ip = CASE WHEN actor_id = $2 OR actor_id IS NULL THEN NULL ELSE ip END,
                     detail = CASE WHEN $3::text IS NOT NULL AND detail->>'email' = $3
                                   THEN jsonb_set(detail, '{email}', '\"erased\"') ELSE detail END
                 WHERE org_id = $1
                   AND ((actor_id = $2 AND ip IS NOT NULL)
                        OR ($3::text IS NOT NULL AND detail->>'email' = $3))",
                &[&org.0, &user.0, &email],
            )
            .await
            .map_err(query)?;
        tx.commit().await.map_err(query)?;
        Ok(n)
    }
}
