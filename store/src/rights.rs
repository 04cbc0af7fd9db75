//! Data rights in Postgres (docs/api.md, "Data rights"): the org's erasure policy, and what each
//! kind of data stored here contributes to an export and does on an erasure (the job queue is
//! `crate::jobs`). The api service's registry (`api/src/rights`) calls these; nothing
//! here decides who may ask.
//!
//! Exports are built by Postgres itself (`json_agg`), so what a document holds is exactly the
//! columns these queries name: a column added to a table reaches exports only when it is added
//! here (and to the documented list).

use serde_json::Value;
use threadspace_protocol::{ChannelId, OrgId, UserId};

use crate::accounts::{query, Accounts};
use crate::directory::DirectoryError;

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

/// Parses the JSON text Postgres built.
fn json(text: Option<String>) -> Result<Value, DirectoryError> {
    let text = text.unwrap_or_else(|| "null".to_owned());
    serde_json::from_str(&text)
        .map_err(|e| DirectoryError::Unreadable(format!("export JSON built by postgres: {e}")))
}

/// How many message rows one export query reads.
pub const EXPORT_PAGE: i64 = 5_000;

impl Accounts {
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

    /// Whether the broker-bridge ever ran `sink` in stream partition `partition` (it keeps a
    /// checkpoint row from its first batch).
    pub async fn bridge_has_run(&self, sink: &str, partition: u32) -> Result<bool, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM bridge_checkpoints WHERE sink = $1 AND stream_partition = $2)",
                &[&sink, &(partition as i32)],
            )
            .await
            .map_err(query)?;
        Ok(row.get(0))
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
