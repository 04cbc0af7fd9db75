//! Bots and their credentials (docs/api.md, "Integrations"): a bot is a user with the role
//! `bot` that acts only through credentials — API tokens and incoming webhooks — each scoped
//! to channels and to posting and/or reading. A credential arrives here as the SHA-256 of its
//! secret; the secret itself never reaches the store.

use threadspace_protocol::frames::MemberChange;
use threadspace_protocol::stored::{DirectoryChange, DirectoryEvent};
use threadspace_protocol::{ChannelId, OrgId, UserId};

use crate::accounts::{query, record_event, Accounts};
use crate::directory::DirectoryError;

/// A kind of credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// `Authorization: Bearer tsb_…` on the message routes.
    Token,
    /// A secret URL that posts into one channel.
    Webhook,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Webhook => "webhook",
        }
    }

    fn parse(kind: &str) -> Self {
        if kind == "webhook" {
            Self::Webhook
        } else {
            Self::Token
        }
    }
}

/// A credential to issue.
#[derive(Clone, Debug)]
pub struct NewCredential<'a> {
    pub kind: CredentialKind,
    pub name: &'a str,
    /// SHA-256 of the secret.
    pub hash: &'a [u8],
    pub channels: &'a [ChannelId],
    pub can_post: bool,
    pub can_read: bool,
    pub created_by: UserId,
}

/// A credential as admins list it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub id: i64,
    pub bot: UserId,
    pub kind: CredentialKind,
    pub name: String,
    pub channels: Vec<ChannelId>,
    pub can_post: bool,
    pub can_read: bool,
    pub created_by: UserId,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    pub revoked: bool,
}

/// A bot with its credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bot {
    pub id: UserId,
    pub handle: String,
    pub display_name: String,
    pub deactivated: bool,
    pub credentials: Vec<Credential>,
}

/// Who a presented secret acts as, when it is a live credential of an active bot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BotCaller {
    pub credential: i64,
    pub kind: CredentialKind,
    pub org: OrgId,
    pub bot: UserId,
    pub channels: Vec<ChannelId>,
    pub can_post: bool,
    pub can_read: bool,
}

impl BotCaller {
    /// Whether this credential may post to `channel` (its scope; membership is checked apart).
    pub fn may_post(&self, channel: ChannelId) -> bool {
        self.can_post && self.channels.contains(&channel)
    }

    /// Whether this credential may read `channel`'s history.
    pub fn may_read(&self, channel: ChannelId) -> bool {
        self.can_read && self.channels.contains(&channel)
    }
}

fn ids(channels: &[ChannelId]) -> Vec<i64> {
    channels.iter().map(|c| c.0).collect()
}

fn credential(row: &tokio_postgres::Row) -> Credential {
    let kind: String = row.get("kind");
    let channels: Vec<i64> = row.get("channels");
    Credential {
        id: row.get("id"),
        bot: UserId(row.get("bot_id")),
        kind: CredentialKind::parse(&kind),
        name: row.get("name"),
        channels: channels.into_iter().map(ChannelId).collect(),
        can_post: row.get("can_post"),
        can_read: row.get("can_read"),
        created_by: UserId(row.get("created_by")),
        created_at: row.get::<_, f64>("created").round() as i64,
        revoked: row.get("revoked"),
    }
}

const CREDENTIAL_COLUMNS: &str = "id, bot_id, kind, name, channels, can_post, can_read, created_by,
     extract(epoch FROM created_at)::float8 AS created, revoked_at IS NOT NULL AS revoked";

impl Accounts {
    /// Creates a bot in `org` and makes it a member of `channels`, each join with its directory
    /// event. A taken handle is [`DirectoryError::Conflict`].
    pub async fn create_bot(
        &self,
        org: OrgId,
        handle: &str,
        display_name: &str,
        channels: &[ChannelId],
    ) -> Result<(UserId, Vec<DirectoryEvent>), DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        let bot = UserId(
            tx.query_one(
                "INSERT INTO users (org_id, handle, display_name, role) VALUES ($1, $2, $3, 'bot') RETURNING id",
                &[&org.0, &handle, &display_name],
            )
            .await
            .map_err(query)?
            .get(0),
        );
        let mut channels = channels.to_vec();
        channels.sort_unstable_by_key(|c| c.0);
        channels.dedup();
        crate::accounts::refuse_archived(&tx, &channels).await?;
        // Memberships first, in one statement, then the events (the lock order of join_all).
        tx.execute(
            "INSERT INTO channel_members (channel_id, user_id) SELECT unnest($1::int8[]), $2",
            &[&ids(&channels), &bot.0],
        )
        .await
        .map_err(query)?;
        let mut events = Vec::with_capacity(channels.len());
        for &channel in &channels {
            let change = DirectoryChange::Member { channel, user: bot, change: MemberChange::Joined };
            events.push(record_event(&tx, org, change).await?);
        }
        tx.commit().await.map_err(query)?;
        Ok((bot, events))
    }

    /// The org's bots with their credentials, by id.
    pub async fn bots(&self, org: OrgId) -> Result<Vec<Bot>, DirectoryError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, handle, display_name, deactivated_at IS NOT NULL FROM users
                 WHERE org_id = $1 AND role = 'bot' ORDER BY id",
                &[&org.0],
            )
            .await
            .map_err(query)?;
        let mut bots: Vec<Bot> = rows
            .iter()
            .map(|r| Bot {
                id: UserId(r.get(0)),
                handle: r.get(1),
                display_name: r.get(2),
                deactivated: r.get(3),
                credentials: Vec::new(),
            })
            .collect();
        let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM bot_credentials WHERE org_id = $1 ORDER BY id");
        for row in client.query(&sql, &[&org.0]).await.map_err(query)? {
            let credential = credential(&row);
            if let Some(bot) = bots.iter_mut().find(|b| b.id == credential.bot) {
                bot.credentials.push(credential);
            }
        }
        Ok(bots)
    }

    /// Whether `bot` is a bot of `org` (active or not).
    pub async fn is_bot(&self, org: OrgId, bot: UserId) -> Result<bool, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM users WHERE id = $1 AND org_id = $2 AND role = 'bot'",
                &[&bot.0, &org.0],
            )
            .await
            .map_err(query)?;
        Ok(row.is_some())
    }

    /// Which of `channels` `user` is not a member of.
    pub async fn not_member_of(
        &self,
        user: UserId,
        channels: &[ChannelId],
    ) -> Result<Vec<ChannelId>, DirectoryError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT c FROM unnest($1::int8[]) AS c
                 WHERE NOT EXISTS (SELECT 1 FROM channel_members m WHERE m.channel_id = c AND m.user_id = $2)
                 ORDER BY c",
                &[&ids(channels), &user.0],
            )
            .await
            .map_err(query)?;
        Ok(rows.iter().map(|r| ChannelId(r.get(0))).collect())
    }

    /// Issues a credential for `bot`; returns its id.
    pub async fn issue_credential(
        &self,
        org: OrgId,
        bot: UserId,
        new: &NewCredential<'_>,
    ) -> Result<i64, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO bot_credentials (org_id, bot_id, kind, name, hash, channels, can_post, can_read, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                &[
                    &org.0,
                    &bot.0,
                    &new.kind.as_str(),
                    &new.name,
                    &new.hash,
                    &ids(new.channels),
                    &new.can_post,
                    &new.can_read,
                    &new.created_by.0,
                ],
            )
            .await
            .map_err(query)?;
        Ok(row.get(0))
    }

    /// Revokes credential `id` of `bot` in `org`: the credential, and whether this call
    /// revoked it (false: it already was); `None` when `bot` has no such credential.
    pub async fn revoke_credential(
        &self,
        org: OrgId,
        bot: UserId,
        id: i64,
    ) -> Result<Option<(Credential, bool)>, DirectoryError> {
        let client = self.client().await?;
        let sql = format!(
            "WITH before AS (SELECT id, revoked_at IS NULL AS live FROM bot_credentials
                             WHERE id = $1 AND org_id = $2 AND bot_id = $3),
                  revoked AS (UPDATE bot_credentials SET revoked_at = coalesce(revoked_at, now())
                              WHERE id IN (SELECT id FROM before) RETURNING *)
             SELECT {CREDENTIAL_COLUMNS}, (SELECT live FROM before) AS newly FROM revoked"
        );
        let row = client.query_opt(&sql, &[&id, &org.0, &bot.0]).await.map_err(query)?;
        Ok(row.map(|r| (credential(&r), r.get("newly"))))
    }

    /// The caller a secret stands for: a live credential of `kind` (found by the secret's
    /// SHA-256) of an active bot.
    pub async fn bot_caller(
        &self,
        kind: CredentialKind,
        hash: &[u8],
    ) -> Result<Option<BotCaller>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT c.id, c.org_id, c.bot_id, c.channels, c.can_post, c.can_read
                 FROM bot_credentials c JOIN users u ON u.id = c.bot_id
                 WHERE c.hash = $1 AND c.kind = $2 AND c.revoked_at IS NULL
                   AND u.role = 'bot' AND u.deactivated_at IS NULL",
                &[&hash, &kind.as_str()],
            )
            .await
            .map_err(query)?;
        Ok(row.map(|r| {
            let channels: Vec<i64> = r.get(3);
            BotCaller {
                credential: r.get(0),
                kind,
                org: OrgId(r.get(1)),
                bot: UserId(r.get(2)),
                channels: channels.into_iter().map(ChannelId).collect(),
                can_post: r.get(4),
                can_read: r.get(5),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(can_post: bool, can_read: bool) -> BotCaller {
        BotCaller {
            credential: 1,
            kind: CredentialKind::Token,
            org: OrgId(1),
            bot: UserId(9),
            channels: vec![ChannelId(3), ChannelId(4)],
            can_post,
            can_read,
        }
    }

    #[test]
    fn a_credential_acts_only_in_its_channels_and_only_as_its_scopes_allow() {
        let post_only = caller(true, false);
        assert!(post_only.may_post(ChannelId(3)));
        assert!(!post_only.may_post(ChannelId(5)), "outside its channels");
        assert!(!post_only.may_read(ChannelId(3)), "no read scope");
        let read_only = caller(false, true);
        assert!(read_only.may_read(ChannelId(4)));
        assert!(!read_only.may_read(ChannelId(5)));
        assert!(!read_only.may_post(ChannelId(4)), "no post scope");
    }

    #[test]
    fn credential_kinds_round_trip() {
        for kind in [CredentialKind::Token, CredentialKind::Webhook] {
            assert_eq!(CredentialKind::parse(kind.as_str()), kind);
        }
    }
}
