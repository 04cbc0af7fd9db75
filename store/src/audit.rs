//! The audit log (docs/accounts.md, "Audit log"): security and admin actions appended per org,
//! read back newest first with filters, and pruned by retention. Rows are never updated
//! (`V5__audit.sql` refuses it).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use threadspace_protocol::{ChannelId, OrgId, UserId};

use crate::accounts::{query, Accounts};
use crate::directory::DirectoryError;

/// One action to record.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub org: OrgId,
    /// Who did it; `None` when nobody signed in did (a failed login, a sign-up).
    pub actor: Option<UserId>,
    /// `area.verb`, from the documented list (docs/accounts.md).
    pub action: &'static str,
    pub target_user: Option<UserId>,
    pub target_channel: Option<ChannelId>,
    pub ip: Option<IpAddr>,
    /// What else there is to say (a role's from and to, a failed login's address).
    pub detail: serde_json::Value,
}

impl AuditEntry {
    /// An entry with no target, address or detail yet.
    pub fn new(org: OrgId, actor: Option<UserId>, action: &'static str) -> Self {
        Self {
            org,
            actor,
            action,
            target_user: None,
            target_channel: None,
            ip: None,
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    /// About this user.
    pub fn user(mut self, user: UserId) -> Self {
        self.target_user = Some(user);
        self
    }

    /// About this channel.
    pub fn channel(mut self, channel: ChannelId) -> Self {
        self.target_channel = Some(channel);
        self
    }

    /// From this client address.
    pub fn from(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// With this detail (a JSON object).
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A recorded action.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub actor: Option<UserId>,
    pub action: String,
    pub target_user: Option<UserId>,
    pub target_channel: Option<ChannelId>,
    pub ip: Option<IpAddr>,
    pub detail: serde_json::Value,
}

/// Which records to read: all filters optional, newest first, below `before` (an id).
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// An exact action (`role.changed`), or an area (`login`: every `login.*`).
    pub action: Option<String>,
    pub actor: Option<UserId>,
    /// Records about this user (as target).
    pub target_user: Option<UserId>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    pub before: Option<i64>,
    pub limit: u32,
}

/// A page of records, newest first; `next_before` continues it (`None` on the last page).
#[derive(Clone, Debug)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    pub next_before: Option<i64>,
}

impl Accounts {
    /// Appends one record.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), DirectoryError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO audit_events (org_id, actor_id, action, target_user_id, target_channel_id, ip, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb)",
            )
            .await
            .map_err(query)?;
        client
            .execute(
                &statement,
                &[
                    &entry.org.0,
                    &entry.actor.map(|u| u.0),
                    &entry.action,
                    &entry.target_user.map(|u| u.0),
                    &entry.target_channel.map(|c| c.0),
                    &entry.ip,
                    &entry.detail.to_string(),
                ],
            )
            .await
            .map_err(query)?;
        Ok(())
    }

    /// The org's records matching `filter`, newest first.
    pub async fn audit_log(&self, org: OrgId, filter: &AuditQuery) -> Result<AuditPage, DirectoryError> {
        let client = self.client().await?;
        let (action, area) = match filter.action.as_deref() {
            Some(a) if a.contains('.') => (Some(a.to_owned()), None),
            Some(a) => (None, Some(format!("{a}."))),
            None => (None, None),
        };
        let rows = client
            .query(
                "SELECT id, floor(extract(epoch FROM at) * 1000)::int8, actor_id, action, target_user_id,
                        target_channel_id, ip, detail::text
                 FROM audit_events
                 WHERE org_id = $1
                   AND ($2::text IS NULL OR action = $2)
                   AND ($3::text IS NULL OR starts_with(action, $3))
                   AND ($4::int8 IS NULL OR actor_id = $4)
                   AND ($5::int8 IS NULL OR target_user_id = $5)
                   AND ($6::timestamptz IS NULL OR at >= $6)
                   AND ($7::timestamptz IS NULL OR at < $7)
                   AND ($8::int8 IS NULL OR id < $8)
                 ORDER BY id DESC LIMIT $9",
                &[
                    &org.0,
                    &action,
                    &area,
                    &filter.actor.map(|u| u.0),
                    &filter.target_user.map(|u| u.0),
                    &filter.since,
                    &filter.until,
                    &filter.before,
                    &(i64::from(filter.limit) + 1),
                ],
            )
            .await
            .map_err(query)?;
        let mut records: Vec<AuditRecord> = rows
            .iter()
            .map(|row| AuditRecord {
                id: row.get(0),
                at_ms: row.get(1),
                actor: row.get::<_, Option<i64>>(2).map(UserId),
                action: row.get(3),
                target_user: row.get::<_, Option<i64>>(4).map(UserId),
                target_channel: row.get::<_, Option<i64>>(5).map(ChannelId),
                ip: row.get(6),
                detail: serde_json::from_str(row.get::<_, &str>(7)).unwrap_or_default(),
            })
            .collect();
        let next_before = if records.len() > filter.limit as usize {
            records.truncate(filter.limit as usize);
            records.last().map(|r| r.id)
        } else {
            None
        };
        Ok(AuditPage { records, next_before })
    }

    /// Deletes records older than `retention`; how many went.
    pub async fn prune_audit(&self, retention: Duration) -> Result<u64, DirectoryError> {
        let client = self.client().await?;
        let cutoff = SystemTime::now() - retention;
        client.execute("DELETE FROM audit_events WHERE at < $1", &[&cutoff]).await.map_err(query)
    }
}
