//! Reading the directory for people and their conversations: the org's people (search and
//! pages), one person as another sees them, and a user's channel list with the members of
//! their DMs (docs/api.md, "People" and "Channels"). Who may read what is the api service's
//! policy; these queries only never cross an org.

use threadspace_protocol::frames::ChannelKind;
use threadspace_protocol::{ChannelId, OrgId, UserId};

use crate::accounts::{query, Account, Accounts};
use crate::directory::DirectoryError;

/// One page of an org's people, in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeoplePage {
    pub people: Vec<Account>,
    /// The `after` of the next page; `None` on the last.
    pub next_after: Option<UserId>,
}

/// A channel as its member lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MyChannel {
    pub id: ChannelId,
    pub kind: ChannelKind,
    pub name: Option<String>,
    /// The member's read marker (0: nothing read).
    pub last_read: u64,
    /// Every member, for DMs and group DMs (they label the conversation); `None` for channels.
    pub members: Option<Vec<UserId>>,
}

/// A `LIKE` pattern matching `text` anywhere, with its wildcards escaped.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn account(org: OrgId, row: &tokio_postgres::Row) -> Account {
    Account {
        user: UserId(row.get(0)),
        org,
        handle: row.get(1),
        display_name: row.get(2),
        email: row.get(3),
        role: row.get(4),
        deactivated: row.get(5),
    }
}

impl Accounts {
    /// The org's people with an id above `after`, at most `limit`, whose handle or display
    /// name — and, with `match_email`, email — contains `text` (case-insensitive).
    pub async fn people(
        &self,
        org: OrgId,
        text: Option<&str>,
        match_email: bool,
        after: UserId,
        limit: u32,
    ) -> Result<PeoplePage, DirectoryError> {
        let client = self.client().await?;
        let pattern = text.map(contains_pattern);
        let rows = client
            .query(
                "SELECT id, handle, display_name, email, role, deactivated_at IS NOT NULL
                 FROM users
                 WHERE org_id = $1 AND id > $2
                   AND ($3::text IS NULL OR handle ILIKE $3 OR display_name ILIKE $3
                        OR ($4 AND email ILIKE $3))
                 ORDER BY id LIMIT $5",
                &[&org.0, &after.0, &pattern, &match_email, &(i64::from(limit) + 1)],
            )
            .await
            .map_err(query)?;
        let mut people: Vec<Account> = rows.iter().map(|row| account(org, row)).collect();
        let next_after = if people.len() > limit as usize {
            people.truncate(limit as usize);
            people.last().map(|p| p.user)
        } else {
            None
        };
        Ok(PeoplePage { people, next_after })
    }

    /// Whether two users share a channel that is not archived (a guest sees only the people of
    /// their channels).
    pub async fn share_a_channel(&self, a: UserId, b: UserId) -> Result<bool, DirectoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM channel_members x JOIN channel_members y ON y.channel_id = x.channel_id
                 JOIN channels c ON c.id = x.channel_id AND c.archived_at IS NULL
                 WHERE x.user_id = $1 AND y.user_id = $2 LIMIT 1",
                &[&a.0, &b.0],
            )
            .await
            .map_err(query)?;
        Ok(row.is_some())
    }

    /// `user`'s channels that are not archived, in id order, with their read markers and, for
    /// DMs and group DMs, their members.
    pub async fn my_channels(&self, user: UserId) -> Result<Vec<MyChannel>, DirectoryError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT c.id, c.kind, c.name, coalesce(r.seq, 0),
                        CASE WHEN c.kind IN ('dm', 'group_dm') THEN
                            (SELECT array_agg(o.user_id ORDER BY o.user_id) FROM channel_members o
                             WHERE o.channel_id = c.id) END
                 FROM channel_members m
                 JOIN channels c ON c.id = m.channel_id AND c.archived_at IS NULL
                 LEFT JOIN read_markers r ON r.user_id = m.user_id AND r.channel_id = c.id
                 WHERE m.user_id = $1
                 ORDER BY c.id",
                &[&user.0],
            )
            .await
            .map_err(query)?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.get(0);
                let kind: String = row.get(1);
                Ok(MyChannel {
                    id: ChannelId(id),
                    kind: ChannelKind::parse(&kind).ok_or(DirectoryError::BadKind { channel: id, kind })?,
                    name: row.get(2),
                    last_read: row.get::<_, i64>(3) as u64,
                    members: row
                        .get::<_, Option<Vec<i64>>>(4)
                        .map(|ids| ids.into_iter().map(UserId).collect()),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn search_text_is_matched_literally() {
        assert_eq!(contains_pattern("ada"), "%ada%");
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
