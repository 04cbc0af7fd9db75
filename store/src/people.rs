//! Reading the directory for people and their conversations: the org's people (search and
//! pages), one person as another sees them, and a user's channel list with the members of
//! their DMs (docs/api.md, "People" and "Channels"). Who may read what is the api service's
//! policy; these queries only never cross an org.

use std::collections::HashMap;

use threadspace_protocol::{ChannelId, OrgId, UserId};

use crate::accounts::{account, query, Account, Accounts, ACCOUNT_COLUMNS};
use crate::directory::DirectoryError;

/// One page of an org's people, in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeoplePage {
    pub people: Vec<Account>,
    /// The `after` of the next page; `None` on the last.
    pub next_after: Option<UserId>,
}

/// A `LIKE` pattern matching `text` anywhere, with its wildcards escaped.
pub(crate) fn contains_pattern(text: &str) -> String {
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
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users
             WHERE org_id = $1 AND id > $2
               AND ($3::text IS NULL OR handle ILIKE $3 OR display_name ILIKE $3
                    OR ($4 AND email ILIKE $3))
             ORDER BY id LIMIT $5"
        );
        let statement = client.prepare_cached(&sql).await.map_err(query)?;
        let rows = client
            .query(&statement, &[&org.0, &after.0, &pattern, &match_email, &(i64::from(limit) + 1)])
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

    /// The members of each DM and group DM among `channels` (other kinds are left out), by
    /// user id: what labels a conversation in the caller's channel list.
    pub async fn conversation_members(
        &self,
        channels: &[ChannelId],
    ) -> Result<HashMap<ChannelId, Vec<UserId>>, DirectoryError> {
        let client = self.client().await?;
        let ids: Vec<i64> = channels.iter().map(|c| c.0).collect();
        let statement = client
            .prepare_cached(
                "SELECT m.channel_id, array_agg(m.user_id ORDER BY m.user_id)
                 FROM channel_members m JOIN channels c ON c.id = m.channel_id
                 WHERE m.channel_id = ANY($1) AND c.kind IN ('dm', 'group_dm')
                 GROUP BY m.channel_id",
            )
            .await
            .map_err(query)?;
        let rows = client.query(&statement, &[&ids]).await.map_err(query)?;
        Ok(rows
            .iter()
            .map(|row| {
                let members: Vec<i64> = row.get(1);
                (ChannelId(row.get(0)), members.into_iter().map(UserId).collect())
            })
            .collect())
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
