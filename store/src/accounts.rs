//! Accounts: orgs and their first owner, users, login sessions with rotating refresh tokens,
//! single-use account tokens (invites, password resets, sign-up verifications), and every
//! directory change that must reach the gateways, recorded with its directory event in the
//! same transaction (docs/accounts.md).
//!
//! Secrets never reach this module: refresh and account tokens arrive as SHA-256 hashes,
//! passwords as argon2id PHC strings.

use std::time::Duration;

use threadspace_protocol::frames::MemberChange;
use threadspace_protocol::stored::{DirectoryChange, DirectoryEvent};
use threadspace_protocol::{ChannelId, OrgId, UserId};
use tokio_postgres::error::SqlState;
use tokio_postgres::Transaction;

use crate::directory::DirectoryError;
use crate::Pool;

/// A new user's profile and credentials.
#[derive(Clone, Debug)]
pub struct NewUser<'a> {
    pub handle: &'a str,
    pub display_name: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
}

/// What a login needs to know about an account.
#[derive(Clone, Debug)]
pub struct LoginAccount {
    pub user: UserId,
    pub org: OrgId,
    pub password_hash: Option<String>,
    pub deactivated: bool,
}

/// A user as the admin routes see them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub user: UserId,
    pub org: OrgId,
    pub handle: String,
    pub display_name: String,
    pub email: Option<String>,
    pub role: String,
    pub deactivated: bool,
    pub profile: Profile,
}

/// What a person says about themselves, each part optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub title: Option<String>,
    /// An IANA time zone name (`Europe/Berlin`).
    pub time_zone: Option<String>,
    pub avatar_url: Option<String>,
}

/// A change to one's profile: `None` leaves a field, `Some(None)` clears it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProfileChange<'a> {
    pub display_name: Option<&'a str>,
    pub title: Option<Option<&'a str>>,
    pub time_zone: Option<Option<&'a str>>,
    pub avatar_url: Option<Option<&'a str>>,
}

/// The columns [`account`] reads, in its order.
pub(crate) const ACCOUNT_COLUMNS: &str =
    "id, handle, display_name, email, role, deactivated_at IS NOT NULL, title, time_zone, avatar_url";

/// An account from a row of [`ACCOUNT_COLUMNS`].
pub(crate) fn account(org: OrgId, row: &tokio_postgres::Row) -> Account {
    Account {
        user: UserId(row.get(0)),
        org,
        handle: row.get(1),
        display_name: row.get(2),
        email: row.get(3),
        role: row.get(4),
        deactivated: row.get(5),
        profile: Profile { title: row.get(6), time_zone: row.get(7), avatar_url: row.get(8) },
    }
}

/// An org's public settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Org {
    pub id: OrgId,
    pub slug: String,
    pub name: String,
    pub signup_domain: Option<String>,
}

/// What presenting a refresh token did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// The token was current (or rotated within the grace window): its successor is stored.
    Rotated { user: UserId, org: OrgId, session: i64 },
    /// The token had been rotated before the grace window: the session is now revoked and the
    /// returned event must be published.
    Reused { user: UserId, org: OrgId, session: i64, event: DirectoryEvent },
    /// Unknown token, ended or expired session, or a deactivated user.
    Refused,
}

/// A single-use account token, consumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountToken {
    pub org: OrgId,
    pub role: Option<String>,
    pub email: Option<String>,
    pub user: Option<UserId>,
}

/// The kinds of single-use account token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Invite,
    PasswordReset,
    Signup,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Invite => "invite",
            Self::PasswordReset => "password_reset",
            Self::Signup => "signup",
        }
    }
}

/// Why a session ended (stored with it, for the audit trail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Logout,
    SignOutEverywhere,
    RefreshReused,
    PasswordChanged,
    PasswordReset,
    Deactivated,
    Admin,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::SignOutEverywhere => "sign_out_everywhere",
            Self::RefreshReused => "refresh_reused",
            Self::PasswordChanged => "password_changed",
            Self::PasswordReset => "password_reset",
            Self::Deactivated => "deactivated",
            Self::Admin => "admin",
        }
    }
}

/// Account queries over a connection pool.
#[derive(Clone)]
pub struct Accounts {
    pool: Pool,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

pub(crate) fn query(e: tokio_postgres::Error) -> DirectoryError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        let what = match e.as_db_error().and_then(|d| d.constraint()) {
            Some("orgs_slug_key") => "an org with this slug",
            Some("users_org_handle_key") => "a user with this handle",
            Some("users_org_email") => "an account with this email",
            Some("channels_org_name") => "a channel with this name",
            _ => "the record",
        };
        return DirectoryError::Conflict { what };
    }
    if e.code() == Some(&SqlState::CHECK_VIOLATION) {
        let constraint = e.as_db_error().and_then(|d| d.constraint()).unwrap_or("unknown").to_owned();
        return DirectoryError::Refused { constraint };
    }
    DirectoryError::Query(e)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The channel every new member of an org starts in (made with the org, joined on arrival):
/// it cannot be renamed or archived (docs/api.md, "Channels").
pub const DEFAULT_CHANNEL: &str = "general";

/// Refuses (`DirectoryError::Archived`) if any of `channels` is archived, holding their rows
/// shared until `tx` ends: an archive or unarchive (which updates the row) waits for the change,
/// or the change for it. Channel rows are taken before the org's row, as every directory change
/// takes them.
pub(crate) async fn refuse_archived(
    tx: &Transaction<'_>,
    channels: &[ChannelId],
) -> Result<(), DirectoryError> {
    let ids: Vec<i64> = channels.iter().map(|c| c.0).collect();
    let row = tx
        .query_one(
            "SELECT coalesce(bool_or(archived), false) FROM (
                 SELECT archived_at IS NOT NULL AS archived FROM channels WHERE id = ANY($1) ORDER BY id FOR SHARE) c",
            &[&ids],
        )
        .await
        .map_err(query)?;
    if row.get::<_, bool>(0) {
        return Err(DirectoryError::Archived);
    }
    Ok(())
}

/// Records `change` as the org's next directory event, inside `tx`: takes the org row's lock
/// (held until commit, so versions are assigned in commit order), bumps `dir_version` and
/// appends the event to the outbox.
pub(crate) async fn record_event(
    tx: &Transaction<'_>,
    org: OrgId,
    change: DirectoryChange,
) -> Result<DirectoryEvent, DirectoryError> {
    let row = tx
        .query_one(
            "UPDATE orgs SET dir_version = dir_version + 1 WHERE id = $1 RETURNING dir_version",
            &[&org.0],
        )
        .await
        .map_err(query)?;
    let version: i64 = row.get(0);
    let event = DirectoryEvent { org, version: version as u64, change };
    let json = serde_json::to_string(&event.change).expect("directory changes serialize");
    tx.execute(
        "INSERT INTO directory_events (org_id, version, change) VALUES ($1, $2, $3::text::jsonb)",
        &[&org.0, &version, &json],
    )
    .await
    .map_err(query)?;
    Ok(event)
}

impl Accounts {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, DirectoryError> {
        self.pool.get().await.map_err(DirectoryError::Pool)
    }

    /// Creates an org and its first owner.
    pub async fn create_org(
        &self,
        slug: &str,
        name: &str,
        owner: &NewUser<'_>,
    ) -> Result<(OrgId, UserId), DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        let org: i64 = tx
            .query_one("INSERT INTO orgs (slug, name) VALUES ($1, $2) RETURNING id", &[&slug, &name])
            .await
            .map_err(query)?
            .get(0);
        let user = insert_user(&tx, OrgId(org), owner).await?;
        // Every org starts with #general, which every non-guest joins on arrival.
        tx.execute(
            "WITH c AS (INSERT INTO channels (org_id, kind, name) VALUES ($1, 'public', $3) RETURNING id)
             INSERT INTO channel_members (channel_id, user_id) SELECT id, $2 FROM c",
            &[&org, &user.0, &DEFAULT_CHANNEL],
        )
        .await
        .map_err(query)?;
        tx.commit().await.map_err(query)?;
        Ok((OrgId(org), user))
    }

    /// Creates a user in `org` (invite accepted, sign-up verified). Anyone but a guest joins
    /// the org's `#general` channel; returns the event of that, to publish.
    pub async fn create_user(
        &self,
        org: OrgId,
        user: &NewUser<'_>,
    ) -> Result<(UserId, Option<DirectoryEvent>), DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        let id = insert_user(&tx, org, user).await?;
        let mut event = None;
        if user.role != "guest" {
            let general = tx
                .query_opt(
                    "SELECT id FROM channels WHERE org_id = $1 AND name = $2 AND archived_at IS NULL",
                    &[&org.0, &DEFAULT_CHANNEL],
                )
                .await
                .map_err(query)?;
            if let Some(row) = general {
                let channel = ChannelId(row.get(0));
                tx.execute(
                    "INSERT INTO channel_members (channel_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&channel.0, &id.0],
                )
                .await
                .map_err(query)?;
                let change = DirectoryChange::Member { channel, user: id, change: MemberChange::Joined };
                event = Some(record_event(&tx, org, change).await?);
            }
        }
        tx.commit().await.map_err(query)?;
        Ok((id, event))
    }

    /// An org by slug.
    pub async fn org_by_slug(&self, slug: &str) -> Result<Option<Org>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT id, slug, name, signup_domain FROM orgs WHERE slug = $1", &[&slug])
            .await
            .map_err(query)?;
        Ok(row.map(|r| Org { id: OrgId(r.get(0)), slug: r.get(1), name: r.get(2), signup_domain: r.get(3) }))
    }

    /// An org by id.
    pub async fn org(&self, org: OrgId) -> Result<Option<Org>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT id, slug, name, signup_domain FROM orgs WHERE id = $1", &[&org.0])
            .await
            .map_err(query)?;
        Ok(row.map(|r| Org { id: OrgId(r.get(0)), slug: r.get(1), name: r.get(2), signup_domain: r.get(3) }))
    }

    /// Sets (or clears) the domain whose verified addresses may sign up.
    pub async fn set_signup_domain(&self, org: OrgId, domain: Option<&str>) -> Result<(), DirectoryError> {
        let client = self.client().await?;
        client
            .execute("UPDATE orgs SET signup_domain = $2 WHERE id = $1", &[&org.0, &domain])
            .await
            .map_err(query)?;
        Ok(())
    }

    /// The account a login names: `email` (lower-case) in the org with `slug`.
    pub async fn login_account(
        &self,
        slug: &str,
        email: &str,
    ) -> Result<Option<LoginAccount>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT u.id, u.org_id, u.password_hash, u.deactivated_at IS NOT NULL
                 FROM users u JOIN orgs o ON o.id = u.org_id WHERE o.slug = $1 AND u.email = $2",
                &[&slug, &email],
            )
            .await
            .map_err(query)?;
        Ok(row.map(|r| LoginAccount {
            user: UserId(r.get(0)),
            org: OrgId(r.get(1)),
            password_hash: r.get(2),
            deactivated: r.get(3),
        }))
    }

    /// A user of `org` (`None` for another org's user: cross-org ids do not exist).
    pub async fn account(&self, org: OrgId, user: UserId) -> Result<Option<Account>, DirectoryError> {
        let client = self.client().await?;
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM users WHERE id = $1 AND org_id = $2");
        let row = client.query_opt(&sql, &[&user.0, &org.0]).await.map_err(query)?;
        Ok(row.map(|r| account(org, &r)))
    }

    /// Sets `user`'s profile fields that `change` names (`Some(None)` clears one); returns
    /// the account as it is now.
    pub async fn update_profile(
        &self,
        org: OrgId,
        user: UserId,
        change: &ProfileChange<'_>,
    ) -> Result<Option<Account>, DirectoryError> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE users SET
                 display_name = coalesce($3, display_name),
                 title = CASE WHEN $4 THEN $5 ELSE title END,
                 time_zone = CASE WHEN $6 THEN $7 ELSE time_zone END,
                 avatar_url = CASE WHEN $8 THEN $9 ELSE avatar_url END
             WHERE id = $1 AND org_id = $2 RETURNING {ACCOUNT_COLUMNS}"
        );
        let row = client
            .query_opt(
                &sql,
                &[
                    &user.0,
                    &org.0,
                    &change.display_name,
                    &change.title.is_some(),
                    &change.title.flatten(),
                    &change.time_zone.is_some(),
                    &change.time_zone.flatten(),
                    &change.avatar_url.is_some(),
                    &change.avatar_url.flatten(),
                ],
            )
            .await
            .map_err(query)?;
        Ok(row.map(|r| account(org, &r)))
    }

    /// The user's password hash.
    pub async fn password_hash(&self, user: UserId) -> Result<Option<String>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT password_hash FROM users WHERE id = $1", &[&user.0])
            .await
            .map_err(query)?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Starts a login session for `user` with its first refresh token — if the account is
    /// still active and its password hash is still `verified_hash` (the one the caller checked
    /// the password against): a reset, change or deactivation committed while the password was
    /// being verified wins, and `None` is returned. The user row is locked for the check.
    pub async fn start_session(
        &self,
        user: UserId,
        verified_hash: &str,
        refresh_hash: &[u8],
        lifetime: Duration,
    ) -> Result<Option<i64>, DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        let still = tx
            .query_opt(
                "SELECT 1 FROM users WHERE id = $1 AND deactivated_at IS NULL AND password_hash = $2 FOR SHARE",
                &[&user.0, &verified_hash],
            )
            .await
            .map_err(query)?;
        if still.is_none() {
            return Ok(None);
        }
        let session: i64 = tx
            .query_one(
                "INSERT INTO auth_sessions (user_id, expires_at)
                 VALUES ($1, now() + make_interval(secs => $2)) RETURNING id",
                &[&user.0, &secs(lifetime)],
            )
            .await
            .map_err(query)?
            .get(0);
        tx.execute(
            "INSERT INTO refresh_tokens (hash, session_id) VALUES ($1, $2)",
            &[&refresh_hash, &session],
        )
        .await
        .map_err(query)?;
        tx.commit().await.map_err(query)?;
        Ok(Some(session))
    }

    /// Presents the refresh token hashed as `presented`: rotates it to `successor` if it is
    /// current, or if it was rotated less than `grace` ago and not reissued before (two tabs
    /// refreshing at once get one successor each); otherwise — rotated earlier, or a third use —
    /// revokes the whole session (a stolen token replayed).
    pub async fn refresh(
        &self,
        presented: &[u8],
        successor: &[u8],
        grace: Duration,
    ) -> Result<Refresh, DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        let row = tx
            .query_opt(
                "SELECT t.session_id, s.user_id, u.org_id,
                        t.rotated_at IS NOT NULL
                            AND (t.rotated_at < now() - make_interval(secs => $2) OR t.reissued_at IS NOT NULL),
                        s.revoked_at IS NULL AND s.expires_at > now() AND u.deactivated_at IS NULL
                 FROM refresh_tokens t
                 JOIN auth_sessions s ON s.id = t.session_id
                 JOIN users u ON u.id = s.user_id
                 WHERE t.hash = $1
                 FOR UPDATE OF t, s",
                &[&presented, &secs(grace)],
            )
            .await
            .map_err(query)?;
        let Some(row) = row else { return Ok(Refresh::Refused) };
        let (session, user, org): (i64, UserId, OrgId) = (row.get(0), UserId(row.get(1)), OrgId(row.get(2)));
        let (reused, live): (bool, bool) = (row.get(3), row.get(4));
        if !live {
            return Ok(Refresh::Refused);
        }
        if reused {
            let event = end_sessions(&tx, org, user, Some(session), EndReason::RefreshReused).await?;
            tx.commit().await.map_err(query)?;
            return Ok(Refresh::Reused { user, org, session, event });
        }
        // First use: rotated. A second use within the grace window (the other tab): one more
        // successor, once — a third use, or any use after the window, is reuse.
        tx.execute(
            "UPDATE refresh_tokens SET rotated_at = coalesce(rotated_at, now()),
                    reissued_at = CASE WHEN rotated_at IS NULL THEN NULL ELSE now() END
             WHERE hash = $1",
            &[&presented],
        )
        .await
        .map_err(query)?;
        tx.execute("INSERT INTO refresh_tokens (hash, session_id) VALUES ($1, $2)", &[&successor, &session])
            .await
            .map_err(query)?;
        tx.execute("UPDATE auth_sessions SET last_used_at = now() WHERE id = $1", &[&session])
            .await
            .map_err(query)?;
        tx.commit().await.map_err(query)?;
        Ok(Refresh::Rotated { user, org, session })
    }

    /// Ends one session of `user` (logout), or all of them with `session: None` (sign out
    /// everywhere: also refuses every access token issued until now). Returns the event to
    /// publish.
    pub async fn end_sessions(
        &self,
        org: OrgId,
        user: UserId,
        session: Option<i64>,
        reason: EndReason,
    ) -> Result<DirectoryEvent, DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        let event = end_sessions(&tx, org, user, session, reason).await?;
        tx.commit().await.map_err(query)?;
        Ok(event)
    }

    /// Replaces the user's password and ends all their sessions, refusing every access token
    /// issued until now. Returns the event to publish.
    pub async fn set_password(
        &self,
        org: OrgId,
        user: UserId,
        password_hash: &str,
        reason: EndReason,
    ) -> Result<DirectoryEvent, DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        tx.execute("UPDATE users SET password_hash = $2 WHERE id = $1", &[&user.0, &password_hash])
            .await
            .map_err(query)?;
        let event = end_sessions(&tx, org, user, None, reason).await?;
        tx.commit().await.map_err(query)?;
        Ok(event)
    }

    /// Sets a user's role. Returns the event, or `None` if the role already was `role`.
    pub async fn set_role(
        &self,
        org: OrgId,
        user: UserId,
        from: &str,
        role: &str,
    ) -> Result<Option<DirectoryEvent>, DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        // Only from the role the caller's permission was checked against: a concurrent change
        // must not let an admin change an admin.
        match locked_role(&tx, org, user).await?.as_deref() {
            Some(now) if now == role => return Ok(None),
            Some(now) if now == from => {}
            _ => return Err(DirectoryError::Conflict { what: "a newer change of this user's role" }),
        }
        tx.execute("UPDATE users SET role = $2 WHERE id = $1", &[&user.0, &role]).await.map_err(query)?;
        revoke_invites_by(&tx, user).await?;
        let event = record_event(&tx, org, DirectoryChange::Role { user, role: role.to_owned() }).await?;
        tx.commit().await.map_err(query)?;
        Ok(Some(event))
    }

    /// Deactivates (ending every session) or reactivates a user. Returns the event, or `None`
    /// if nothing changed.
    pub async fn set_active(
        &self,
        org: OrgId,
        user: UserId,
        role: &str,
        active: bool,
    ) -> Result<Option<DirectoryEvent>, DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        // Only while the user still has the role the caller's permission was checked against.
        if locked_role(&tx, org, user).await?.as_deref() != Some(role) {
            return Err(DirectoryError::Conflict { what: "a newer change of this user's role" });
        }
        let n = if active {
            tx.execute(
                // Never an erased person, nor one being erased (docs/api.md, "Data rights").
                "UPDATE users SET deactivated_at = NULL
                 WHERE id = $1 AND org_id = $2 AND deactivated_at IS NOT NULL AND erased_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM data_jobs j WHERE j.kind = 'erase_user' AND j.subject_id = $1
                                     AND j.state IN ('queued', 'running'))",
                &[&user.0, &org.0],
            )
            .await
        } else {
            tx.execute(
                "UPDATE users SET deactivated_at = now(), tokens_not_before = now()
                 WHERE id = $1 AND org_id = $2 AND deactivated_at IS NULL",
                &[&user.0, &org.0],
            )
            .await
        }
        .map_err(query)?;
        if n == 0 {
            return Ok(None);
        }
        if !active {
            tx.execute(
                "UPDATE auth_sessions SET revoked_at = now(), revoked_reason = 'deactivated'
                 WHERE user_id = $1 AND revoked_at IS NULL",
                &[&user.0],
            )
            .await
            .map_err(query)?;
            revoke_invites_by(&tx, user).await?;
        }
        let change = if active {
            DirectoryChange::Reactivated { user }
        } else {
            DirectoryChange::Deactivated { user }
        };
        let event = record_event(&tx, org, change).await?;
        tx.commit().await.map_err(query)?;
        Ok(Some(event))
    }

    /// Adds `user` to or removes them from `channel`. Returns the event, or `None` if the
    /// membership already was as asked.
    pub async fn set_member(
        &self,
        org: OrgId,
        channel: ChannelId,
        user: UserId,
        change: MemberChange,
    ) -> Result<Option<DirectoryEvent>, DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        refuse_archived(&tx, &[channel]).await?;
        let n = match change {
            MemberChange::Joined => {
                tx.execute(
                    "INSERT INTO channel_members (channel_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&channel.0, &user.0],
                )
                .await
            }
            MemberChange::Left => {
                tx.execute(
                    "DELETE FROM channel_members WHERE channel_id = $1 AND user_id = $2",
                    &[&channel.0, &user.0],
                )
                .await
            }
        }
        .map_err(query)?;
        if n == 0 {
            return Ok(None);
        }
        let event = record_event(&tx, org, DirectoryChange::Member { channel, user, change }).await?;
        tx.commit().await.map_err(query)?;
        Ok(Some(event))
    }

    /// Stores a single-use token (hashed) of `kind`, valid for `lifetime`.
    #[allow(clippy::too_many_arguments)]
    pub async fn issue_token(
        &self,
        hash: &[u8],
        kind: TokenKind,
        org: OrgId,
        role: Option<&str>,
        email: Option<&str>,
        user: Option<UserId>,
        created_by: Option<UserId>,
        lifetime: Duration,
    ) -> Result<(), DirectoryError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO account_tokens (hash, kind, org_id, role, email, user_id, created_by, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))",
                &[
                    &hash,
                    &kind.as_str(),
                    &org.0,
                    &role,
                    &email,
                    &user.map(|u| u.0),
                    &created_by.map(|u| u.0),
                    &secs(lifetime),
                ],
            )
            .await
            .map_err(query)?;
        Ok(())
    }

    /// Consumes a single-use token of `kind`: `None` if unknown, used or expired.
    pub async fn use_token(
        &self,
        hash: &[u8],
        kind: TokenKind,
    ) -> Result<Option<AccountToken>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE account_tokens SET used_at = now()
                 WHERE hash = $1 AND kind = $2 AND used_at IS NULL AND expires_at > now()
                 RETURNING org_id, role, email, user_id",
                &[&hash, &kind.as_str()],
            )
            .await
            .map_err(query)?;
        Ok(row.map(|r| AccountToken {
            org: OrgId(r.get(0)),
            role: r.get(1),
            email: r.get(2),
            user: r.get::<_, Option<i64>>(3).map(UserId),
        }))
    }

    /// Gives a consumed token back (the account it would create was refused: a taken handle),
    /// so the link still works once corrected.
    pub async fn unuse_token(&self, hash: &[u8]) -> Result<(), DirectoryError> {
        let client = self.client().await?;
        client
            .execute("UPDATE account_tokens SET used_at = NULL WHERE hash = $1", &[&hash])
            .await
            .map_err(query)?;
        Ok(())
    }
}

/// The user's role, with the row locked until the transaction ends (`None`: no such user in
/// `org`).
async fn locked_role(
    tx: &Transaction<'_>,
    org: OrgId,
    user: UserId,
) -> Result<Option<String>, DirectoryError> {
    let row = tx
        // NO KEY UPDATE: a concurrent insert referencing the user (a membership's foreign key
        // takes KEY SHARE) must not wait on this lock while holding the org's.
        .query_opt(
            "SELECT role FROM users WHERE id = $1 AND org_id = $2 FOR NO KEY UPDATE",
            &[&user.0, &org.0],
        )
        .await
        .map_err(query)?;
    Ok(row.map(|r| r.get(0)))
}

/// Invites a user created and nobody accepted yet die with their creator's deactivation or role
/// change: an invite must not outlive the authority that made it.
async fn revoke_invites_by(tx: &Transaction<'_>, creator: UserId) -> Result<(), DirectoryError> {
    tx.execute(
        "UPDATE account_tokens SET expires_at = least(expires_at, now())
         WHERE created_by = $1 AND kind = 'invite' AND used_at IS NULL",
        &[&creator.0],
    )
    .await
    .map_err(query)?;
    Ok(())
}

async fn insert_user(tx: &Transaction<'_>, org: OrgId, user: &NewUser<'_>) -> Result<UserId, DirectoryError> {
    let id: i64 = tx
        .query_one(
            "INSERT INTO users (org_id, handle, display_name, email, password_hash, role)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[&org.0, &user.handle, &user.display_name, &user.email, &user.password_hash, &user.role],
        )
        .await
        .map_err(query)?
        .get(0);
    Ok(UserId(id))
}

async fn end_sessions(
    tx: &Transaction<'_>,
    org: OrgId,
    user: UserId,
    session: Option<i64>,
    reason: EndReason,
) -> Result<DirectoryEvent, DirectoryError> {
    match session {
        Some(session) => {
            tx.execute(
                "UPDATE auth_sessions SET revoked_at = now(), revoked_reason = $3
                 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
                &[&session, &user.0, &reason.as_str()],
            )
            .await
        }
        None => {
            tx.execute("UPDATE users SET tokens_not_before = now() WHERE id = $1", &[&user.0])
                .await
                .map_err(query)?;
            tx.execute(
                "UPDATE auth_sessions SET revoked_at = now(), revoked_reason = $2
                 WHERE user_id = $1 AND revoked_at IS NULL",
                &[&user.0, &reason.as_str()],
            )
            .await
        }
    }
    .map_err(query)?;
    record_event(tx, org, DirectoryChange::SessionsEnded { user, session }).await
}

/// The directory-event outbox, read and stamped by the api service's publisher.
pub mod outbox {
    use super::*;

    /// Takes the org's publisher lock for the transaction (one publisher per org at a time, so
    /// events enter the stream in version order) and returns its unpublished events, oldest first.
    pub async fn lock_pending(
        tx: &Transaction<'_>,
        org: OrgId,
    ) -> Result<Vec<DirectoryEvent>, DirectoryError> {
        tx.execute("SELECT pg_advisory_xact_lock(hashtextextended('directory-feed', $1))", &[&org.0])
            .await
            .map_err(query)?;
        let rows = tx
            .query(
                "SELECT version, change::text FROM directory_events
                 WHERE org_id = $1 AND published_at IS NULL ORDER BY version",
                &[&org.0],
            )
            .await
            .map_err(query)?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let version: i64 = row.get(0);
            let change: String = row.get(1);
            match serde_json::from_str(&change) {
                Ok(change) => events.push(DirectoryEvent { org, version: version as u64, change }),
                Err(error) => {
                    // Written by a newer release (then rolled back) or by hand: this release can
                    // never publish it, and it must not hold the org's later events back.
                    // Gateways need no gap-free versions.
                    tracing::error!(%org, version, %error, "directory event this release cannot read; skipped");
                    tx.execute(
                        "UPDATE directory_events SET published_at = now() WHERE org_id = $1 AND version = $2",
                        &[&org.0, &version],
                    )
                    .await
                    .map_err(query)?;
                }
            }
        }
        Ok(events)
    }

    /// Stamps an event published at stream sequence `seq`.
    pub async fn mark_published(
        tx: &Transaction<'_>,
        org: OrgId,
        version: u64,
        seq: u64,
    ) -> Result<(), DirectoryError> {
        tx.execute(
            "UPDATE directory_events SET published_at = now(), stream_seq = $3 WHERE org_id = $1 AND version = $2",
            &[&org.0, &(version as i64), &(seq as i64)],
        )
        .await
        .map_err(query)?;
        Ok(())
    }

    /// Orgs with unpublished events older than `age` (left by a crash between commit and publish).
    pub async fn stale_orgs(
        client: &tokio_postgres::Client,
        age: Duration,
    ) -> Result<Vec<OrgId>, DirectoryError> {
        let rows = client
            .query(
                "SELECT DISTINCT org_id FROM directory_events
                 WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1)",
                &[&secs(age)],
            )
            .await
            .map_err(query)?;
        Ok(rows.into_iter().map(|r| OrgId(r.get(0))).collect())
    }
}
