//! Directory queries: who a user is, which channels they belong to, and membership changes.

use threadspace_protocol::frames::{ChannelInfo, ChannelKind, UserInfo};
use threadspace_protocol::{ChannelId, OrgId, UserId};

use crate::Pool;

/// Errors of directory queries. Callers branch only on "Postgres is unavailable" vs the rest.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("postgres pool unavailable")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("directory query failed")]
    Query(#[source] tokio_postgres::Error),
    #[error("stored channel {channel} has unknown kind {kind:?}")]
    BadKind { channel: i64, kind: String },
    /// A unique constraint refused the write: `what` names it for the caller.
    #[error("{what} already exists")]
    Conflict { what: &'static str },
    /// A check constraint refused a value: the caller's input, not a failure of the store.
    #[error("the value was refused by the constraint {constraint}")]
    Refused { constraint: String },
    /// The channel is archived: it takes no membership changes (checked under the channel
    /// row's lock, so no change slips past an archive).
    #[error("the channel is archived")]
    Archived,
    /// Postgres answered something this code cannot read (a bug).
    #[error("postgres returned what cannot be read: {0}")]
    Unreadable(String),
}

/// What the gateway needs to accept a `hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user: UserInfo,
    pub deactivated: bool,
    pub channels: Vec<ChannelInfo>,
    /// Access tokens issued before this (seconds since the Unix epoch) are refused.
    pub tokens_not_before: u64,
    /// Whether the login session asked about is live (true when none was asked about).
    pub session_live: bool,
    /// When the login session asked about expires (seconds since the Unix epoch); `None` when
    /// none was asked about. A copy of this read kept for later (the gateway's hello cache)
    /// stops being live at this time without any directory change.
    pub session_expires_at: Option<u64>,
    /// The org's directory version this read reflects (docs/accounts.md, "The directory feed").
    pub dir_version: u64,
}

/// A channel's directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    pub id: ChannelId,
    pub org: OrgId,
    pub kind: ChannelKind,
    pub name: Option<String>,
    pub archived: bool,
}

/// Directory access over a connection pool.
#[derive(Clone)]
pub struct Directory {
    pool: Pool,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

fn kind_of(channel: i64, kind: String) -> Result<ChannelKind, DirectoryError> {
    ChannelKind::parse(&kind).ok_or(DirectoryError::BadKind { channel, kind })
}

impl Directory {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, DirectoryError> {
        self.pool.get().await.map_err(DirectoryError::Pool)
    }

    /// The user and their (non-archived) channels; `None` if the user does not exist. With
    /// `login_session`, also whether that login session of the user is live.
    /// One prepared round trip: this runs for every `hello`, including reconnect storms.
    pub async fn session(
        &self,
        user: UserId,
        login_session: Option<i64>,
    ) -> Result<Option<Session>, DirectoryError> {
        let client = self.client().await?;
        // One snapshot: the org's version is read with the memberships it describes.
        let statement = client
            .prepare_cached(
                "WITH u AS (
                     SELECT u.*, o.dir_version,
                            coalesce(floor(extract(epoch FROM u.tokens_not_before)), 0)::bigint AS not_before,
                            ($2::bigint IS NULL OR EXISTS (
                                SELECT 1 FROM auth_sessions s WHERE s.id = $2 AND s.user_id = u.id
                                    AND s.revoked_at IS NULL AND s.expires_at > now())) AS live,
                            (SELECT floor(extract(epoch FROM s.expires_at))::bigint FROM auth_sessions s
                                WHERE s.id = $2 AND s.user_id = u.id) AS expires
                     FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.id = $1)
                 SELECT u.org_id, u.handle, u.display_name, u.role, u.deactivated_at IS NOT NULL,
                        c.id, c.kind, c.name, coalesce(r.seq, 0), u.not_before, u.live, u.dir_version,
                        u.expires
                 FROM u
                 LEFT JOIN channel_members m ON m.user_id = u.id
                 LEFT JOIN channels c ON c.id = m.channel_id AND c.archived_at IS NULL
                 LEFT JOIN read_markers r ON r.user_id = u.id AND r.channel_id = c.id
                 ORDER BY c.id",
            )
            .await
            .map_err(DirectoryError::Query)?;
        let rows =
            client.query(&statement, &[&user.0, &login_session]).await.map_err(DirectoryError::Query)?;
        let Some(first) = rows.first() else { return Ok(None) };
        let info = UserInfo {
            id: user,
            org: OrgId(first.get(0)),
            handle: first.get(1),
            display_name: first.get(2),
            role: first.get(3),
        };
        let deactivated: bool = first.get(4);
        let mut channels = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(id) = row.get::<_, Option<i64>>(5) else { continue };
            channels.push(ChannelInfo {
                id: ChannelId(id),
                kind: kind_of(id, row.get(6))?,
                name: row.get(7),
                last_read: row.get::<_, i64>(8) as u64,
            });
        }
        Ok(Some(Session {
            user: info,
            deactivated,
            channels,
            tokens_not_before: first.get::<_, i64>(9).max(0) as u64,
            session_live: first.get(10),
            dir_version: first.get::<_, i64>(11) as u64,
            session_expires_at: first.get::<_, Option<i64>>(12).map(|t| t.max(0) as u64),
        }))
    }

    /// Moves `user`'s read marker in `channel` forward to `seq` (never back). Returns the marker
    /// now stored, whether this call moved it, and whether the channel is a DM or group DM
    /// (whose other members are told). Committed before it returns.
    pub async fn mark_read(
        &self,
        user: UserId,
        channel: ChannelId,
        seq: u64,
    ) -> Result<(u64, bool, bool), DirectoryError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "WITH moved AS (
                     INSERT INTO read_markers AS r (user_id, channel_id, seq) VALUES ($1, $2, $3)
                     ON CONFLICT (user_id, channel_id) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()
                         WHERE r.seq < EXCLUDED.seq
                     RETURNING seq)
                 SELECT m.seq, m.moved, c.kind IN ('dm', 'group_dm')
                 FROM (SELECT seq, true AS moved FROM moved
                       UNION ALL
                       SELECT seq, false FROM read_markers WHERE user_id = $1 AND channel_id = $2
                           AND NOT EXISTS (SELECT 1 FROM moved)) m
                 CROSS JOIN channels c WHERE c.id = $2",
            )
            .await
            .map_err(DirectoryError::Query)?;
        let row = client
            .query_one(&statement, &[&user.0, &channel.0, &(seq as i64)])
            .await
            .map_err(DirectoryError::Query)?;
        Ok((row.get::<_, i64>(0) as u64, row.get(1), row.get(2)))
    }

    /// Lowers every read marker above the newest message to it; returns how many moved. The
    /// newest message is the higher of `stream_head` (the stream's last seq, read at
    /// `head_read_at`) and the archive's newest row, so a gateway pointed at an empty or wrong
    /// stream cannot lower real markers. Only markers last written a minute or more before
    /// `head_read_at` are touched: a newer one may come from a gateway whose head is already
    /// past ours (a rolling restart), and gateways clamp what they store. Markers past every
    /// message would mark messages not yet sent as read; the gateway runs this at start to
    /// repair any stored before `read` was clamped.
    pub async fn clamp_read_markers(
        &self,
        stream_head: u64,
        head_read_at: std::time::SystemTime,
    ) -> Result<u64, DirectoryError> {
        let client = self.client().await?;
        let head = i64::try_from(stream_head).unwrap_or(i64::MAX);
        let written_before = head_read_at - std::time::Duration::from_secs(60);
        client
            .execute(
                "WITH newest AS (SELECT GREATEST($1, (SELECT coalesce(max(seq), 0) FROM messages)) AS seq)
                 UPDATE read_markers r SET seq = newest.seq, updated_at = now()
                 FROM newest WHERE newest.seq > 0 AND r.seq > newest.seq AND r.updated_at < $2",
                &[&head, &written_before],
            )
            .await
            .map_err(DirectoryError::Query)
    }

    /// A channel by id.
    pub async fn channel(&self, channel: ChannelId) -> Result<Option<Channel>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT org_id, kind, name, archived_at IS NOT NULL FROM channels WHERE id = $1",
                &[&channel.0],
            )
            .await
            .map_err(DirectoryError::Query)?;
        row.map(|row| {
            Ok(Channel {
                id: channel,
                org: OrgId(row.get(0)),
                kind: kind_of(channel.0, row.get(1))?,
                name: row.get(2),
                archived: row.get(3),
            })
        })
        .transpose()
    }

    /// Whether `user` is a member of `channel`.
    pub async fn is_member(&self, channel: ChannelId, user: UserId) -> Result<bool, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM channel_members WHERE channel_id = $1 AND user_id = $2",
                &[&channel.0, &user.0],
            )
            .await
            .map_err(DirectoryError::Query)?;
        Ok(row.is_some())
    }

    /// The org of a user, if the user exists.
    pub async fn user_org(&self, user: UserId) -> Result<Option<OrgId>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT org_id FROM users WHERE id = $1", &[&user.0])
            .await
            .map_err(DirectoryError::Query)?;
        Ok(row.map(|r| OrgId(r.get(0))))
    }

    /// Looks a user up by org slug and handle (tools and the demo address users by name).
    pub async fn user_by_handle(
        &self,
        org_slug: &str,
        handle: &str,
    ) -> Result<Option<(UserId, OrgId)>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT u.id, u.org_id FROM users u JOIN orgs o ON o.id = u.org_id
                 WHERE o.slug = $1 AND u.handle = $2",
                &[&org_slug, &handle],
            )
            .await
            .map_err(DirectoryError::Query)?;
        Ok(row.map(|r| (UserId(r.get(0)), OrgId(r.get(1)))))
    }

    /// Looks a named channel up in an org.
    pub async fn channel_by_name(&self, org: OrgId, name: &str) -> Result<Option<ChannelId>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT id FROM channels WHERE org_id = $1 AND name = $2", &[&org.0, &name])
            .await
            .map_err(DirectoryError::Query)?;
        Ok(row.map(|r| ChannelId(r.get(0))))
    }
}
