//! The `messages` table and its search index `message_search`: the broker-bridge's idempotent
//! batch inserts and checkpoints, partition upkeep (created ahead, dropped by retention),
//! history pages and search.
//!
//! **Invariants:**
//! - `insert_batch` and `index_batch` are idempotent: a row whose `seq` exists is skipped, so
//!   a batch may be written any number of times. A batch holds each seq at most once.
//! - Partition DDL and its `message_partitions` row change in one transaction, under one
//!   advisory lock, so concurrent writers never create overlapping partitions.
//! - History and search never read outside the channels the caller passes; membership is the
//!   caller's check (the gateway passes only the user's channels).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{GenericClient, Transaction};
use futures_util::pin_mut;
use threadspace_protocol::frames::MessageFrame;
use threadspace_protocol::{ChannelId, OrgId, Seq, UserId};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

/// Advisory lock key serialising partition DDL (`"msgpart"` in ASCII).
const PARTITION_LOCK: i64 = 0x006d_7367_7061_7274;

/// Default size of one partition in seqs: ~20 days at the 5 M messages/day design load, so
/// seven years is ~130 partitions.
pub const DEFAULT_ROWS_PER_PARTITION: i64 = 100_000_000;

/// Default retention: seven years.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 365 * 24 * 3600 + 2 * 24 * 3600);

/// One message as the writer stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRow {
    pub seq: i64,
    pub org: OrgId,
    pub channel: ChannelId,
    pub sender: UserId,
    pub client_msg_id: String,
    pub body: String,
    /// Gateway time at publish.
    pub sent_at: SystemTime,
    /// JetStream's stored time.
    pub stored_at: SystemTime,
}

/// `sent_at` of a stored record: its `ts` in milliseconds since the epoch.
pub fn time_from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

// `WHERE NOT EXISTS` instead of `ON CONFLICT DO NOTHING`: the same no-op for rows that exist,
// without speculative insertion (~35% faster here). Two writers inserting the same new seq at
// once (two bridges on one partition) make one of them fail with 23505; it retries the batch.
const INSERT_BATCH: &str = "\
INSERT INTO messages (seq, org_id, channel_id, sender_id, client_msg_id, body, sent_at, stored_at)
SELECT r.* FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::text[], $6::text[],
                       $7::timestamptz[], $8::timestamptz[])
         AS r (seq, org_id, channel_id, sender_id, client_msg_id, body, sent_at, stored_at)
WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.seq = r.seq)
RETURNING seq";

/// Which table a bridge consumer writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sink {
    /// `messages`: the system of record.
    Archive,
    /// `message_search`: the full-text index.
    Search,
}

impl Sink {
    pub const ALL: [Sink; 2] = [Sink::Archive, Sink::Search];

    /// The name in `bridge_checkpoints.sink`, metric labels and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Archive => "archive",
            Self::Search => "search",
        }
    }

    /// The broker-bridge's durable consumer of this sink in stream partition `partition`:
    /// `writer-p<k>` (archive) or `indexer-p<k>` (search index). The api service reads their
    /// progress before an erasure (docs/api.md, "Data rights").
    pub fn consumer_name(self, partition: u32) -> String {
        match self {
            Self::Archive => format!("writer-p{partition}"),
            Self::Search => format!("indexer-p{partition}"),
        }
    }

    /// Writes `rows` into this sink's table; returns the seqs that were new.
    pub async fn insert<C: GenericClient>(
        self,
        client: &C,
        rows: &[MessageRow],
    ) -> Result<Vec<i64>, tokio_postgres::Error> {
        match self {
            Self::Archive => insert_batch(client, rows).await,
            Self::Search => index_batch(client, rows).await,
        }
    }
}

const INDEX_BATCH: &str = "\
INSERT INTO message_search (seq, org_id, channel_id, body_tsv)
SELECT seq, org_id, channel_id, to_tsvector('english', body)
FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[]) AS r (seq, org_id, channel_id, body)
WHERE NOT EXISTS (SELECT 1 FROM message_search s WHERE s.seq = r.seq)
RETURNING seq";

/// Adds `rows` to the search index with one statement; returns the seqs that were new.
pub async fn index_batch<C: GenericClient>(
    client: &C,
    rows: &[MessageRow],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let seq: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let org: Vec<i64> = rows.iter().map(|r| r.org.0).collect();
    let channel: Vec<i64> = rows.iter().map(|r| r.channel.0).collect();
    let body: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    let statement = client.prepare_cached(INDEX_BATCH).await?;
    let inserted = client.query(&statement, &[&seq, &org, &channel, &body]).await?;
    Ok(inserted.iter().map(|r| r.get(0)).collect())
}

/// Inserts `rows` with one statement; returns the seqs that were new (the rest existed).
pub async fn insert_batch<C: GenericClient>(
    client: &C,
    rows: &[MessageRow],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let mut seq = Vec::with_capacity(rows.len());
    let mut org = Vec::with_capacity(rows.len());
    let mut channel = Vec::with_capacity(rows.len());
    let mut sender = Vec::with_capacity(rows.len());
    let mut client_msg_id = Vec::with_capacity(rows.len());
    let mut body = Vec::with_capacity(rows.len());
    let mut sent_at = Vec::with_capacity(rows.len());
    let mut stored_at = Vec::with_capacity(rows.len());
    for row in rows {
        seq.push(row.seq);
        org.push(row.org.0);
        channel.push(row.channel.0);
        sender.push(row.sender.0);
        client_msg_id.push(row.client_msg_id.as_str());
        body.push(row.body.as_str());
        sent_at.push(row.sent_at);
        stored_at.push(row.stored_at);
    }
    let statement = client.prepare_cached(INSERT_BATCH).await?;
    let inserted = client
        .query(&statement, &[&seq, &org, &channel, &sender, &client_msg_id, &body, &sent_at, &stored_at])
        .await?;
    Ok(inserted.iter().map(|r| r.get(0)).collect())
}

/// Records a committed batch of `sink` from stream partition `partition` (in the batch's
/// transaction).
pub async fn checkpoint(
    tx: &Transaction<'_>,
    sink: Sink,
    partition: u32,
    last_seq: i64,
    safe_seq: i64,
    rows: u64,
) -> Result<(), tokio_postgres::Error> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO bridge_checkpoints AS c (sink, stream_partition, last_seq, safe_seq, rows_written)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (sink, stream_partition) DO UPDATE SET
                 last_seq = GREATEST(c.last_seq, EXCLUDED.last_seq),
                 safe_seq = GREATEST(c.safe_seq, EXCLUDED.safe_seq),
                 rows_written = c.rows_written + EXCLUDED.rows_written,
                 updated_at = now()",
        )
        .await?;
    tx.execute(&statement, &[&sink.as_str(), &(partition as i32), &last_seq, &safe_seq, &(rows as i64)])
        .await?;
    Ok(())
}

/// The safe restart point of `sink` in stream partition `partition`: every seq at or below it
/// is committed or dead-lettered. 0 when nothing was written yet.
pub async fn safe_seq<C: GenericClient>(
    client: &C,
    sink: Sink,
    partition: u32,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT safe_seq FROM bridge_checkpoints WHERE sink = $1 AND stream_partition = $2",
            &[&sink.as_str(), &(partition as i32)],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// Binary COPY of `rows` into `messages` (no conflict handling): the practical upper bound
/// the writer benchmark compares `insert_batch` against.
pub async fn copy_rows(
    client: &tokio_postgres::Transaction<'_>,
    rows: &[MessageRow],
) -> Result<u64, tokio_postgres::Error> {
    let sink = client
        .copy_in(
            "COPY messages (seq, org_id, channel_id, sender_id, client_msg_id, body, sent_at, stored_at) \
             FROM STDIN BINARY",
        )
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
        ],
    );
    pin_mut!(writer);
    for row in rows {
        writer
            .as_mut()
            .write(&[
                &row.seq,
                &row.org.0,
                &row.channel.0,
                &row.sender.0,
                &row.client_msg_id,
                &row.body,
                &row.sent_at,
                &row.stored_at,
            ])
            .await?;
    }
    writer.finish().await
}

/// One partition of `messages`: seqs in `[seq_from, seq_to)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub seq_from: i64,
    pub seq_to: i64,
}

/// Every partition, in seq order.
pub async fn partitions<C: GenericClient>(client: &C) -> Result<Vec<Partition>, tokio_postgres::Error> {
    let rows =
        client.query("SELECT name, seq_from, seq_to FROM message_partitions ORDER BY seq_from", &[]).await?;
    Ok(rows.iter().map(|r| Partition { name: r.get(0), seq_from: r.get(1), seq_to: r.get(2) }).collect())
}

/// Makes sure partitions cover every seq up to `through_seq` plus `ahead` more partitions of
/// `rows_per_partition` seqs; returns the exclusive upper bound now covered. Partitions are
/// appended after the highest existing one (the first starts at seq 1), so changing
/// `rows_per_partition` only changes partitions created from then on.
pub async fn ensure_partitions(
    client: &mut deadpool_postgres::Client,
    through_seq: i64,
    rows_per_partition: i64,
    ahead: u32,
) -> Result<i64, tokio_postgres::Error> {
    assert!(rows_per_partition > 0, "rows per partition is validated as positive");
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK]).await?;
    let mut upper: i64 =
        tx.query_one("SELECT coalesce(max(seq_to), 1) FROM message_partitions", &[]).await?.get(0);
    let wanted =
        through_seq.max(0).saturating_add(1).saturating_add(rows_per_partition.saturating_mul(ahead.into()));
    while upper < wanted {
        let (from, to) = (upper, upper.saturating_add(rows_per_partition));
        let name = format!("messages_{from:012}");
        tx.batch_execute(&format!(
            "CREATE TABLE {name} PARTITION OF messages FOR VALUES FROM ({from}) TO ({to});
             CREATE TABLE {} PARTITION OF message_search FOR VALUES FROM ({from}) TO ({to});",
            search_partition(&name)
        ))
        .await?;
        tx.execute(
            "INSERT INTO message_partitions (name, seq_from, seq_to) VALUES ($1, $2, $3)",
            &[&name, &from, &to],
        )
        .await?;
        tracing::info!(partition = %name, seq_from = from, seq_to = to, "message partition created");
        upper = to;
    }
    tx.commit().await?;
    Ok(upper)
}

/// The `message_search` partition beside `messages` partition `name`.
fn search_partition(name: &str) -> String {
    format!("message_search_{}", name.trim_start_matches("messages_"))
}

/// What retention did (or would do, in a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Partitions dropped (or to drop), oldest first.
    pub dropped: Vec<Partition>,
    /// The first partition kept, and why.
    pub kept_from: Option<(Partition, String)>,
}

/// Drops every partition whose newest message was stored before `now - keep`, oldest first,
/// stopping at the first partition that is not expired, holds the newest stored message, or
/// lies above it (those are still being written). Empty partitions below the newest message
/// (every seq in them dead-lettered) count as expired by their creation time.
pub async fn apply_retention(
    client: &mut deadpool_postgres::Client,
    keep: Duration,
    dry_run: bool,
) -> Result<RetentionReport, tokio_postgres::Error> {
    let cutoff = SystemTime::now().checked_sub(keep).unwrap_or(UNIX_EPOCH);
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK]).await?;
    let newest: Option<i64> = tx.query_one("SELECT max(seq) FROM messages", &[]).await?.get(0);
    let mut report = RetentionReport::default();
    let all = partitions(&tx).await?;
    for partition in all {
        let Some(newest_seq) = newest else {
            report.kept_from = Some((partition, "the table holds no messages".into()));
            break;
        };
        if partition.seq_to > newest_seq {
            report.kept_from =
                Some((partition, format!("holds or follows the newest message (seq {newest_seq})")));
            break;
        }
        let newest_here: Option<SystemTime> = tx
            .query_opt(&format!("SELECT stored_at FROM {} ORDER BY seq DESC LIMIT 1", partition.name), &[])
            .await?
            .map(|r| r.get(0));
        let newest_here = match newest_here {
            Some(t) => t,
            None => tx
                .query_one("SELECT created_at FROM message_partitions WHERE name = $1", &[&partition.name])
                .await?
                .get(0),
        };
        if newest_here >= cutoff {
            let age = SystemTime::now().duration_since(newest_here).unwrap_or_default();
            report.kept_from = Some((partition, format!("its newest message is {} old", humanize(age))));
            break;
        }
        if !dry_run {
            tx.batch_execute(&format!(
                "DROP TABLE {}, {}",
                partition.name,
                search_partition(&partition.name)
            ))
            .await?;
            tx.execute("DELETE FROM message_partitions WHERE name = $1", &[&partition.name]).await?;
            tracing::info!(partition = %partition.name, "expired message partition dropped");
        }
        report.dropped.push(partition);
    }
    tx.commit().await?;
    Ok(report)
}

fn humanize(age: Duration) -> String {
    let days = age.as_secs() / 86_400;
    if days > 0 {
        format!("{days}d")
    } else {
        format!("{}s", age.as_secs())
    }
}

/// Largest `limit` of a history page or search.
pub const MAX_PAGE: i64 = 200;

/// A history page request: messages of one channel with `after < seq < before`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub before: Option<Seq>,
    pub after: Option<Seq>,
    pub limit: i64,
}

/// A history page, in ascending seq order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub messages: Vec<MessageFrame>,
    /// More messages exist beyond this page in the direction of paging.
    pub has_more: bool,
}

const COLUMNS: &str =
    "seq, m.channel_id, m.sender_id, m.client_msg_id, m.body, (extract(epoch FROM m.sent_at) * 1000)::int8";

fn frame(row: &tokio_postgres::Row) -> MessageFrame {
    MessageFrame {
        seq: row.get::<_, i64>(0) as u64,
        channel: ChannelId(row.get(1)),
        sender: UserId(row.get(2)),
        client_msg_id: row.get(3),
        body: row.get(4),
        ts: row.get(5),
    }
}

/// One page of `channel`'s history, `after < seq < before`. With `after` it pages forward
/// (the oldest messages after it first); without, backward from `before` (or the newest).
pub async fn history<C: GenericClient>(
    client: &C,
    channel: ChannelId,
    request: PageRequest,
) -> Result<Page, tokio_postgres::Error> {
    let limit = request.limit.clamp(1, MAX_PAGE);
    let after = request.after.map_or(0, |s| s as i64);
    let before = request.before.map_or(i64::MAX, |s| s as i64);
    let forward = request.after.is_some();
    let order = if forward { "ASC" } else { "DESC" };
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM messages m WHERE channel_id = $1 AND seq > $2 AND seq < $3 \
             ORDER BY seq {order} LIMIT $4"
        ))
        .await?;
    let rows = client.query(&statement, &[&channel.0, &after, &before, &(limit + 1)]).await?;
    let has_more = rows.len() as i64 > limit;
    let mut messages: Vec<MessageFrame> = rows.iter().take(limit as usize).map(frame).collect();
    if !forward {
        messages.reverse();
    }
    Ok(Page { messages, has_more })
}

/// One search hit.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub message: MessageFrame,
    pub rank: f32,
}

/// Why a search could not run.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the query has no searchable words (only stop words or punctuation)")]
    NoWords,
    #[error("search query failed")]
    Query(#[from] tokio_postgres::Error),
}

/// Full-text search over `channels` of `org` (web-search syntax: words, "phrases", -not, or),
/// best match first, then newest; `offset` pages through the ranking.
pub async fn search<C: GenericClient>(
    client: &C,
    org: OrgId,
    channels: &[ChannelId],
    query: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<Hit>, SearchError> {
    let words: i32 =
        client.query_one("SELECT numnode(websearch_to_tsquery('english', $1))", &[&query]).await?.get(0);
    if words == 0 {
        return Err(SearchError::NoWords);
    }
    let channels: Vec<i64> = channels.iter().map(|c| c.0).collect();
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS}, ts_rank_cd(s.body_tsv, q) AS rank
             FROM message_search s JOIN messages m USING (seq), websearch_to_tsquery('english', $1) AS q
             WHERE s.org_id = $2 AND s.channel_id = ANY($3) AND s.body_tsv @@ q
             ORDER BY rank DESC, seq DESC LIMIT $4 OFFSET $5"
        ))
        .await?;
    let rows = client
        .query(&statement, &[&query, &org.0, &channels, &limit.clamp(1, MAX_PAGE), &offset.max(0)])
        .await?;
    Ok(rows.iter().map(|r| Hit { message: frame(r), rank: r.get(6) }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_map_to_system_time_both_sides_of_the_epoch() {
        assert_eq!(time_from_ms(1_500), UNIX_EPOCH + Duration::from_millis(1_500));
        assert_eq!(time_from_ms(-1_500), UNIX_EPOCH - Duration::from_millis(1_500));
    }

    #[test]
    fn default_retention_is_at_least_seven_years() {
        assert!(DEFAULT_RETENTION >= Duration::from_secs(7 * 365 * 24 * 3600));
    }
}
