//! Creating conversations and reading who is in them (docs/api.md, "Channels"): named channels
//! (unique per org), DMs and group DMs opened idempotently — the same set of people always gets
//! the same conversation, also when two people open it at once —, the org's public channels
//! for the browser, and a channel's members. Every initial member joins through a directory
//! event in the same transaction, so gateways apply it at its place in the stream.

use threadspace_protocol::frames::{ChannelKind, MemberChange};
use threadspace_protocol::stored::{DirectoryChange, DirectoryEvent};
use threadspace_protocol::{ChannelId, OrgId, UserId};

use crate::accounts::{query, record_event, Accounts};
use crate::directory::DirectoryError;

/// A DM's or group DM's key: its members' ids, sorted, comma-separated.
pub fn conversation_key(members: &[UserId]) -> String {
    let mut ids: Vec<i64> = members.iter().map(|u| u.0).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// A conversation opened: its id, whether this call created it, and the events of its members
/// joining (empty when it existed).
#[derive(Clone, Debug)]
pub struct Opened {
    pub channel: ChannelId,
    pub kind: ChannelKind,
    pub created: bool,
    pub events: Vec<DirectoryEvent>,
}

/// A public channel as the browser lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicChannel {
    pub id: ChannelId,
    pub name: String,
    pub members: i64,
    /// Whether the caller is a member.
    pub joined: bool,
}

/// A channel as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelState {
    pub id: ChannelId,
    pub kind: ChannelKind,
    /// `None` for a DM or group DM.
    pub name: Option<String>,
    /// "" when none.
    pub topic: String,
    pub purpose: String,
    pub archived: bool,
    /// Who created it (`None` for DMs, and channels made before creators were recorded).
    pub created_by: Option<UserId>,
    pub members: i64,
}

/// What [`Accounts::update_channel`] did.
#[derive(Clone, Debug)]
pub enum UpdateOutcome {
    /// Nothing: the channel is archived (or gone).
    Archived,
    /// Nothing: it already was so.
    Unchanged,
    /// Changed, with its directory event.
    Changed(DirectoryEvent),
}

/// A change of a channel's name, topic and purpose; `None` leaves one as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChannelUpdate<'a> {
    pub name: Option<&'a str>,
    pub topic: Option<&'a str>,
    pub purpose: Option<&'a str>,
}

/// One page of the org's public channels, by name; `next_after` continues it.
#[derive(Clone, Debug)]
pub struct PublicChannels {
    pub channels: Vec<PublicChannel>,
    pub next_after: Option<String>,
}

/// Adds `members` to `channel` inside `tx`, each with its directory event.
async fn join_all(
    tx: &tokio_postgres::Transaction<'_>,
    org: OrgId,
    channel: ChannelId,
    members: &[UserId],
) -> Result<Vec<DirectoryEvent>, DirectoryError> {
    // Every membership first, in one statement: their foreign keys lock the users' rows
    // before the events take the org's row, the order every other directory change keeps.
    let ids: Vec<i64> = members.iter().map(|u| u.0).collect();
    tx.execute(
        "INSERT INTO channel_members (channel_id, user_id) SELECT $1, unnest($2::int8[])",
        &[&channel.0, &ids],
    )
    .await
    .map_err(query)?;
    let mut events = Vec::with_capacity(members.len());
    for &user in members {
        let change = DirectoryChange::Member { channel, user, change: MemberChange::Joined };
        events.push(record_event(tx, org, change).await?);
    }
    Ok(events)
}

impl Accounts {
    /// Creates a public or private channel named `name` with `creator` as its member. A taken
    /// name is [`DirectoryError::Conflict`].
    pub async fn create_channel(
        &self,
        org: OrgId,
        creator: UserId,
        kind: ChannelKind,
        name: &str,
    ) -> Result<(ChannelId, Vec<DirectoryEvent>), DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        let row = tx
            .query_one(
                "INSERT INTO channels (org_id, kind, name, created_by) VALUES ($1, $2, $3, $4) RETURNING id",
                &[&org.0, &kind.as_str(), &name, &creator.0],
            )
            .await
            .map_err(query)?;
        let channel = ChannelId(row.get(0));
        let events = join_all(&tx, org, channel, &[creator]).await?;
        tx.commit().await.map_err(query)?;
        Ok((channel, events))
    }

    /// The DM (two people) or group DM (more) of exactly `members`, created if it does not
    /// exist. Two calls at once for the same people get the same conversation: the second
    /// waits on the first's key and then finds it.
    pub async fn open_conversation(&self, org: OrgId, members: &[UserId]) -> Result<Opened, DirectoryError> {
        let key = conversation_key(members);
        let kind = if members.len() == 2 { ChannelKind::Dm } else { ChannelKind::GroupDm };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        let inserted = tx
            .query_opt(
                "INSERT INTO channels (org_id, kind, dm_key) VALUES ($1, $2, $3)
                 ON CONFLICT (org_id, dm_key) WHERE dm_key IS NOT NULL DO NOTHING RETURNING id",
                &[&org.0, &kind.as_str(), &key],
            )
            .await
            .map_err(query)?;
        let Some(row) = inserted else {
            let row = tx
                .query_one("SELECT id, kind FROM channels WHERE org_id = $1 AND dm_key = $2", &[&org.0, &key])
                .await
                .map_err(query)?;
            let id: i64 = row.get(0);
            let kind: String = row.get(1);
            let kind = ChannelKind::parse(&kind).ok_or(DirectoryError::BadKind { channel: id, kind })?;
            return Ok(Opened { channel: ChannelId(id), kind, created: false, events: Vec::new() });
        };
        let channel = ChannelId(row.get(0));
        let mut sorted = members.to_vec();
        sorted.sort_unstable_by_key(|u| u.0);
        sorted.dedup();
        let events = join_all(&tx, org, channel, &sorted).await?;
        tx.commit().await.map_err(query)?;
        Ok(Opened { channel, kind, created: true, events })
    }

    /// How many of `users` are active people (not bots) of `org`: a conversation is opened only with them.
    pub async fn active_people(&self, org: OrgId, users: &[UserId]) -> Result<usize, DirectoryError> {
        let client = self.client().await?;
        let ids: Vec<i64> = users.iter().map(|u| u.0).collect();
        let row = client
            .query_one(
                "SELECT count(*) FROM users
                 WHERE org_id = $1 AND id = ANY($2) AND deactivated_at IS NULL AND role <> 'bot'",
                &[&org.0, &ids],
            )
            .await
            .map_err(query)?;
        Ok(row.get::<_, i64>(0) as usize)
    }

    /// The org's public channels that are archived or not (`archived`), by name after `after`,
    /// whose name contains `text`; with their member counts and whether `viewer` is in each.
    pub async fn public_channels(
        &self,
        org: OrgId,
        viewer: UserId,
        archived: bool,
        text: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<PublicChannels, DirectoryError> {
        let client = self.client().await?;
        // Names are lower-case: so is what is searched for.
        let pattern = text.map(|t| crate::people::contains_pattern(&t.to_lowercase()));
        let rows = client
            .query(
                "SELECT c.id, c.name,
                        (SELECT count(*) FROM channel_members m WHERE m.channel_id = c.id),
                        EXISTS (SELECT 1 FROM channel_members m WHERE m.channel_id = c.id AND m.user_id = $2)
                 FROM channels c
                 WHERE c.org_id = $1 AND c.kind = 'public' AND (c.archived_at IS NOT NULL) = $6
                   AND ($3::text IS NULL OR c.name LIKE $3)
                   AND ($4::text IS NULL OR c.name > $4)
                 ORDER BY c.name LIMIT $5",
                &[&org.0, &viewer.0, &pattern, &after, &(i64::from(limit) + 1), &archived],
            )
            .await
            .map_err(query)?;
        let mut channels: Vec<PublicChannel> = rows
            .iter()
            .map(|r| PublicChannel {
                id: ChannelId(r.get(0)),
                name: r.get(1),
                members: r.get(2),
                joined: r.get(3),
            })
            .collect();
        let next_after = if channels.len() > limit as usize {
            channels.truncate(limit as usize);
            channels.last().map(|c| c.name.clone())
        } else {
            None
        };
        Ok(PublicChannels { channels, next_after })
    }

    /// A channel of `org` as it is now, with its member count.
    pub async fn channel_state(
        &self,
        org: OrgId,
        channel: ChannelId,
    ) -> Result<Option<ChannelState>, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT c.kind, c.name, c.topic, c.purpose, c.archived_at IS NOT NULL, c.created_by,
                        (SELECT count(*) FROM channel_members m WHERE m.channel_id = c.id)
                 FROM channels c WHERE c.id = $1 AND c.org_id = $2",
                &[&channel.0, &org.0],
            )
            .await
            .map_err(query)?;
        row.map(|row| {
            let kind: String = row.get(0);
            Ok(ChannelState {
                id: channel,
                kind: ChannelKind::parse(&kind)
                    .ok_or(DirectoryError::BadKind { channel: channel.0, kind })?,
                name: row.get(1),
                topic: row.get(2),
                purpose: row.get(3),
                archived: row.get(4),
                created_by: row.get::<_, Option<i64>>(5).map(UserId),
                members: row.get(6),
            })
        })
        .transpose()
    }

    /// Renames a channel and sets its topic and purpose (`None`: unchanged), unless it is
    /// archived, with its directory event when anything changed. A taken name is
    /// [`DirectoryError::Conflict`].
    pub async fn update_channel(
        &self,
        org: OrgId,
        channel: ChannelId,
        change: &ChannelUpdate<'_>,
    ) -> Result<UpdateOutcome, DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        let row = tx
            .query_opt(
                "WITH old AS (SELECT name, topic, purpose FROM channels
                              WHERE id = $1 AND org_id = $2 AND archived_at IS NULL FOR UPDATE)
                 UPDATE channels c
                 SET name = coalesce($3, c.name), topic = coalesce($4, c.topic), purpose = coalesce($5, c.purpose)
                 FROM old WHERE c.id = $1
                 RETURNING c.name, c.topic, c.purpose,
                           (old.name, old.topic, old.purpose) IS DISTINCT FROM (c.name, c.topic, c.purpose)",
                &[&channel.0, &org.0, &change.name, &change.topic, &change.purpose],
            )
            .await
            .map_err(query)?;
        let Some(row) = row else { return Ok(UpdateOutcome::Archived) };
        if !row.get::<_, bool>(3) {
            return Ok(UpdateOutcome::Unchanged);
        }
        let change = DirectoryChange::ChannelUpdated {
            channel,
            name: row.get(0),
            topic: row.get(1),
            purpose: row.get(2),
        };
        let event = record_event(&tx, org, change).await?;
        tx.commit().await.map_err(query)?;
        Ok(UpdateOutcome::Changed(event))
    }

    /// Archives (`archived`) or unarchives a channel, with its directory event; `None` if it
    /// already was so.
    pub async fn set_archived(
        &self,
        org: OrgId,
        channel: ChannelId,
        archived: bool,
    ) -> Result<Option<DirectoryEvent>, DirectoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query)?;
        let row = tx
            .query_opt(
                "UPDATE channels SET archived_at = CASE WHEN $3 THEN now() END
                 WHERE id = $1 AND org_id = $2 AND (archived_at IS NOT NULL) <> $3
                 RETURNING name, topic, purpose",
                &[&channel.0, &org.0, &archived],
            )
            .await
            .map_err(query)?;
        let Some(row) = row else { return Ok(None) };
        let change = if archived {
            DirectoryChange::ChannelArchived { channel }
        } else {
            // Membership changes of an archived channel are refused, so these are its members
            // from before the archive.
            let members = tx
                .query(
                    "SELECT user_id FROM channel_members WHERE channel_id = $1 ORDER BY user_id",
                    &[&channel.0],
                )
                .await
                .map_err(query)?;
            DirectoryChange::ChannelUnarchived {
                channel,
                name: row.get(0),
                topic: row.get(1),
                purpose: row.get(2),
                members: members.iter().map(|r| UserId(r.get(0))).collect(),
            }
        };
        let event = record_event(&tx, org, change).await?;
        tx.commit().await.map_err(query)?;
        Ok(Some(event))
    }

    /// A page of `channel`'s members by id, after `after`; the next page's `after`.
    pub async fn channel_members(
        &self,
        channel: ChannelId,
        after: UserId,
        limit: u32,
    ) -> Result<(Vec<UserId>, Option<UserId>), DirectoryError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT user_id FROM channel_members WHERE channel_id = $1 AND user_id > $2
                 ORDER BY user_id LIMIT $3",
                &[&channel.0, &after.0, &(i64::from(limit) + 1)],
            )
            .await
            .map_err(query)?;
        let mut members: Vec<UserId> = rows.iter().map(|r| UserId(r.get(0))).collect();
        let next = if members.len() > limit as usize {
            members.truncate(limit as usize);
            members.last().copied()
        } else {
            None
        };
        Ok((members, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_people_make_the_same_key_in_any_order() {
        let key = conversation_key(&[UserId(9), UserId(3), UserId(12), UserId(3)]);
        assert_eq!(key, "3,9,12");
        assert_eq!(conversation_key(&[UserId(12), UserId(9), UserId(3)]), key);
    }
}
