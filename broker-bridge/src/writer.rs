//! One (sink, partition) writer loop: pull a batch from the durable consumer (`writer-p<k>` for
//! the archive, `indexer-p<k>` for the search index), decode it, write it to Postgres in one
//! idempotent statement plus a checkpoint, commit, then ack.
//!
//! **Invariants:**
//! - A message is acked only after a commit that contains it (or after its dead-letter copy
//!   was stored). A commit whose outcome is unknown is retried, never acked: the retry is
//!   idempotent, and its own checkpoint write makes it wait for WAL flush (and the synchronous
//!   standby), so its success proves the earlier commit durable too.
//! - While a batch waits for Postgres, no further batch is pulled (JetStream keeps the
//!   backlog) and the held messages get in-progress acks, so a long outage does not use up
//!   their deliveries.
//! - Undecodable or constraint-refused messages go to the dead-letter stream and are acked;
//!   they never block their partition.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::message::{AckKind, Message};
use futures_util::StreamExt as _;
use threadspace_protocol::error_chain;
use threadspace_protocol::stored::{decode_record, Record};
use threadspace_protocol::subjects::{partition_filter, MESSAGES_STREAM};
use threadspace_store::messages::{self, MessageRow, Sink};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::dead_letter::{self, DeadLetter};
use crate::metrics as m;
use crate::partitions::consumer_name;

/// Metric labels of one writer loop.
struct Labels {
    sink: &'static str,
    partition: String,
}

impl Labels {
    fn new(sink: Sink, k: u32) -> Self {
        Self { sink: sink.as_str(), partition: k.to_string() }
    }

    fn pairs(&self) -> [(&'static str, String); 2] {
        [("sink", self.sink.to_owned()), ("partition", self.partition.clone())]
    }
}

/// What every partition task shares.
pub(crate) struct Shared {
    pub config: Config,
    pub jetstream: async_nats::jetstream::Context,
    pub pool: threadspace_store::Pool,
    /// Exclusive upper seq bound the `messages` partitions are known to cover.
    pub partitions_upper: AtomicI64,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs partition `k`'s writer until `shutdown`, reopening its consumer after any failure.
/// (`sink` is the table it writes.)
pub(crate) async fn run_partition(
    shared: Arc<Shared>,
    committer: mpsc::Sender<Job>,
    sink: Sink,
    k: u32,
    shutdown: CancellationToken,
) {
    let labels = Labels::new(sink, k);
    let mut backoff = Backoff::new(shared.config.max_backoff);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let outcome = match open_consumer(&shared, sink, k).await {
            Ok(consumer) => {
                backoff.reset();
                pump(&shared, &committer, sink, k, consumer, &shutdown).await
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => return,
            Err(error) => {
                metrics::counter!(m::CONSUMER_FAILURES, &labels.pairs()).increment(1);
                warn!(sink = sink.as_str(), partition = k, error = %error_chain(error.as_ref()), "partition consumer failed; reopening");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

/// Gets the partition's durable consumer, or creates it: from the start of the stream the
/// first time, from just above the checkpoint's safe seq when it was deleted.
async fn open_consumer(shared: &Shared, sink: Sink, k: u32) -> Result<PullConsumer, Error> {
    let stream = shared.jetstream.get_stream(MESSAGES_STREAM).await?;
    let name = consumer_name(sink, k);
    match stream.consumer_info(&name).await {
        Ok(_) => return stream.get_consumer(&name).await,
        Err(error) if error.kind() == ConsumerInfoErrorKind::NotFound => {}
        Err(error) => return Err(error.into()),
    }
    let client = shared.pool.get().await?;
    let safe = messages::safe_seq(&client, sink, k).await?;
    drop(client);
    let deliver_policy = if safe > 0 {
        DeliverPolicy::ByStartSequence { start_sequence: safe as u64 + 1 }
    } else {
        DeliverPolicy::All
    };
    let config = PullConfig {
        durable_name: Some(name.clone()),
        filter_subject: partition_filter(k),
        ack_policy: AckPolicy::Explicit,
        ack_wait: shared.config.ack_wait,
        max_deliver: i64::from(shared.config.max_deliver.get()),
        max_ack_pending: (shared.config.batch_rows.get() * 2) as i64,
        deliver_policy,
        description: Some(format!("broker-bridge {} writer of partition {k}", sink.as_str())),
        ..Default::default()
    };
    let consumer = stream.create_consumer(config).await?;
    metrics::counter!(m::CONSUMERS_CREATED, "sink" => sink.as_str()).increment(1);
    info!(sink = sink.as_str(), partition = k, consumer = %name, safe_seq = safe, "durable consumer created");
    Ok(consumer)
}

/// Pulls and writes batches until `shutdown` (Ok) or a NATS failure (Err: reopen).
async fn pump(
    shared: &Shared,
    committer: &mpsc::Sender<Job>,
    sink: Sink,
    k: u32,
    mut consumer: PullConsumer,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let labels = Labels::new(sink, k);
    let mut safe_seq = 0i64;
    let mut last_info = Instant::now() - Duration::from_secs(60);
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        // Consumer info: lag gauges, the ack floor for the checkpoint, and a deleted consumer
        // noticed (an empty pull would not say so).
        if last_info.elapsed() >= Duration::from_secs(2) {
            let info = consumer.info().await?;
            let lag = info.num_pending + info.num_ack_pending as u64;
            metrics::gauge!(m::LAG_MESSAGES, &labels.pairs()).set(lag as f64);
            if lag == 0 {
                metrics::gauge!(m::LAG_SECONDS, &labels.pairs()).set(0.0);
            }
            safe_seq = info.ack_floor.stream_sequence as i64;
            last_info = Instant::now();
        }
        // Wait (up to 5 s) for one message, then take what is already pending behind it, up
        // to the batch size, without waiting for more. A batch is what arrived while the
        // previous one was written: one message at a time when quiet (no artificial delay),
        // full batches under load. An idle partition costs one pull request per 5 s.
        let mut pulled = Vec::new();
        pull(&consumer, 1, IDLE_PULL, &mut pulled).await?;
        let Some(first) = pulled.first() else { continue };
        let pending = first.info().map(|info| info.pending).unwrap_or(0) as usize;
        let room = (shared.config.batch_rows.get() - 1).min(pending);
        if room > 0 {
            pull(&consumer, room, shared.config.batch_wait, &mut pulled).await?;
        }
        write_and_ack(shared, committer, sink, k, pulled, safe_seq, shutdown).await?;
    }
}

/// How long an idle partition's pull waits for its first message.
const IDLE_PULL: Duration = Duration::from_secs(5);

/// One pull request for up to `max` messages, waiting at most `expires`.
async fn pull(
    consumer: &PullConsumer,
    max: usize,
    expires: Duration,
    into: &mut Vec<Message>,
) -> Result<(), Error> {
    let mut batch = consumer.batch().max_messages(max).expires(expires).messages().await?;
    let before = into.len();
    while let Some(next) = batch.next().await {
        match next {
            Ok(message) => into.push(message),
            Err(error) if into.len() == before => return Err(error),
            Err(_) => break,
        }
    }
    Ok(())
}

/// One pulled message, decoded or not.
struct Pulled {
    message: Message,
    seq: i64,
    stored_at: SystemTime,
    row: Result<MessageRow, String>,
}

fn decode(k: u32, n_partitions: u32, message: Message) -> Result<Pulled, Error> {
    let info = message.info()?;
    let seq = info.stream_sequence as i64;
    let nanos = info.published.unix_timestamp_nanos();
    let stored_at = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64);
    let row = decode_row(k, n_partitions, &message.subject, &message.payload, seq, stored_at);
    Ok(Pulled { message, seq, stored_at, row })
}

/// The row a stream record of partition `k` (of `n_partitions`) becomes, or why it cannot
/// become one.
pub(crate) fn decode_row(
    k: u32,
    n_partitions: u32,
    subject: &str,
    payload: &[u8],
    seq: i64,
    stored_at: SystemTime,
) -> Result<MessageRow, String> {
    // One rule for the bridge, the gateways' fanout and replay: what is not archived is never
    // delivered.
    let Record { partition, message: stored } =
        decode_record(subject, payload, n_partitions).map_err(|why| why.to_string())?;
    if partition != k {
        return Err(format!("subject {subject:?} is not in partition {k}"));
    }
    let (org, channel) = (stored.org, stored.channel);
    Ok(MessageRow {
        seq,
        org,
        channel,
        sender: stored.sender,
        client_msg_id: stored.client_msg_id,
        body: stored.body,
        sent_at: messages::time_from_ms(stored.ts),
        stored_at,
    })
}

async fn write_and_ack(
    shared: &Shared,
    committer: &mpsc::Sender<Job>,
    sink: Sink,
    k: u32,
    pulled: Vec<Message>,
    safe_seq: i64,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let labels = Labels::new(sink, k);
    let n_partitions = shared.config.partitions.get();
    let pulled: Vec<Pulled> =
        pulled.into_iter().map(|m| decode(k, n_partitions, m)).collect::<Result<_, _>>()?;
    // Each seq once (a redelivery can land in the same pull as its original).
    let mut seen = std::collections::HashSet::new();
    let rows: Vec<MessageRow> = pulled
        .iter()
        .filter_map(|p| p.row.as_ref().ok())
        .filter(|row| seen.insert(row.seq))
        .cloned()
        .collect();
    let oldest = pulled.iter().map(|p| p.stored_at).min().unwrap_or_else(SystemTime::now);
    let last_seq = pulled.iter().map(|p| p.seq).max().unwrap_or(0);
    // Lag: every earlier message of the partition is committed (one batch at a time), so the
    // oldest message of this batch is the oldest uncommitted one.
    let age = SystemTime::now().duration_since(oldest).unwrap_or_default();
    metrics::gauge!(m::LAG_SECONDS, &labels.pairs()).set(age.as_secs_f64());

    // Hand the batch to the sink's committer (which merges concurrent partitions' batches
    // into one transaction) and wait for the commit, keeping the messages in progress.
    let (reply, mut committed) = oneshot::channel();
    let row_count = rows.len();
    let job = Job { partition: k, rows, last_seq, safe_seq, reply };
    if committer.send(job).await.is_err() {
        return Ok(()); // shutting down: unacked, redelivered to the next owner
    }
    let outcome = loop {
        tokio::select! {
            outcome = &mut committed => match outcome {
                Ok(outcome) => break outcome,
                // The committer gave up at shutdown: unacked, redelivered later.
                Err(_) => return Ok(()),
            },
            _ = tokio::time::sleep(shared.config.ack_wait / 3) => {
                let age = SystemTime::now().duration_since(oldest).unwrap_or_default();
                metrics::gauge!(m::LAG_SECONDS, &labels.pairs()).set(age.as_secs_f64());
                for p in &pulled {
                    let _ = p.message.ack_with(AckKind::Progress).await;
                }
            }
        }
    };
    let committed_at = SystemTime::now();
    metrics::counter!(m::ROWS_WRITTEN, &labels.pairs()).increment(outcome.inserted);
    let existing = (row_count - outcome.refused.len()) as u64 - outcome.inserted;
    metrics::counter!(m::ROWS_EXISTING, "sink" => sink.as_str()).increment(existing);
    for p in &pulled {
        let lag = committed_at.duration_since(p.stored_at).unwrap_or_default();
        metrics::histogram!(m::STORED_TO_COMMITTED, "sink" => sink.as_str()).record(lag.as_secs_f64());
    }
    // Lag after the commit: the age of the next pending message, not 0 — else an archive
    // hours behind but draining in quick batches would read 0 at every scrape. That message is
    // not pulled yet, but it was stored after this batch's newest one, whose age bounds it from
    // above (the next batch sets the exact value as soon as it is pulled). 0 only when nothing
    // was pending behind this batch (JetStream's `pending` of its newest delivery).
    let newest = pulled.iter().max_by_key(|p| p.seq);
    let pending = newest.and_then(|p| p.message.info().ok()).map_or(0, |info| info.pending);
    let lag = match newest {
        Some(p) if pending > 0 => committed_at.duration_since(p.stored_at).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    metrics::gauge!(m::LAG_SECONDS, &labels.pairs()).set(lag.as_secs_f64());

    // Dead letters: stored (PubAck) before their originals are acked.
    for p in &pulled {
        let reason = match &p.row {
            Err(why) => Some(("undecodable", why.clone())),
            Ok(_) => {
                outcome.refused.iter().find(|(seq, _)| *seq == p.seq).map(|(_, why)| ("refused", why.clone()))
            }
        };
        if let Some((kind, why)) = reason {
            let letter = DeadLetter {
                sink,
                partition: k,
                seq: p.seq,
                subject: &p.message.subject,
                kind,
                reason: &why,
            };
            dead_letter::publish(&shared.jetstream, &letter, p.message.payload.clone(), shutdown).await?;
        }
    }
    for p in &pulled {
        if let Err(error) = p.message.ack().await {
            // Redelivered later and skipped as existing: harmless.
            warn!(sink = sink.as_str(), partition = k, seq = p.seq, %error, "ack failed");
        }
    }
    Ok(())
}

/// One partition's batch, handed to its sink's committer.
pub(crate) struct Job {
    partition: u32,
    rows: Vec<MessageRow>,
    last_seq: i64,
    safe_seq: i64,
    reply: oneshot::Sender<Outcome>,
}

/// What the commit did with one job's rows.
struct Outcome {
    inserted: u64,
    /// Rows Postgres refused (constraint or data errors), with the reason.
    refused: Vec<(i64, String)>,
}

/// The rows of several jobs, written and committed together.
struct Merged<'a> {
    rows: Vec<MessageRow>,
    jobs: &'a [Job],
}

/// Commits the batches of `sink` from every partition task of this process: waits up to
/// `--batch-wait` after the first to gather others (up to `--batch-rows` rows), writes them in
/// one transaction with a checkpoint per partition, and retries until the commit succeeds.
/// One commit serves many partitions, so commits per second stay low at any partition count.
/// Ends when every partition task has ended.
pub(crate) async fn run_committer(
    shared: Arc<Shared>,
    sink: Sink,
    mut jobs: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        let mut rows = batch[0].rows.len();
        let deadline = tokio::time::Instant::now() + shared.config.batch_wait;
        while rows < shared.config.batch_rows.get() {
            match tokio::time::timeout_at(deadline, jobs.recv()).await {
                Ok(Some(job)) => {
                    rows += job.rows.len();
                    batch.push(job);
                }
                _ => break,
            }
        }
        let Some(outcomes) = commit_with_retries(&shared, sink, &batch, &shutdown).await else {
            // Shutting down before the commit succeeded: the partitions' messages stay
            // unacked and are redelivered.
            return;
        };
        metrics::counter!(m::BATCHES, "sink" => sink.as_str()).increment(1);
        metrics::histogram!(m::BATCH_ROWS, "sink" => sink.as_str()).record(rows as f64);
        for (job, outcome) in batch.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

async fn commit_with_retries(
    shared: &Shared,
    sink: Sink,
    batch: &[Job],
    shutdown: &CancellationToken,
) -> Option<Vec<Outcome>> {
    let mut seen = std::collections::HashSet::new();
    let rows: Vec<MessageRow> =
        batch.iter().flat_map(|job| job.rows.iter()).filter(|row| seen.insert(row.seq)).cloned().collect();
    let merged = Merged { rows, jobs: batch };
    let mut backoff = Backoff::new(shared.config.max_backoff);
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        match write_batch(shared, sink, &merged).await {
            Ok((inserted, refused)) => {
                metrics::histogram!(m::COMMIT_DURATION, "sink" => sink.as_str())
                    .record(started.elapsed().as_secs_f64());
                if failures > 0 {
                    info!(sink = sink.as_str(), failures, "batch committed after retries");
                }
                let outcomes = batch
                    .iter()
                    .map(|job| Outcome {
                        inserted: job.rows.iter().filter(|r| inserted.contains(&r.seq)).count() as u64,
                        refused: refused
                            .iter()
                            .filter(|(seq, _)| job.rows.iter().any(|r| r.seq == *seq))
                            .cloned()
                            .collect(),
                    })
                    .collect();
                return Some(outcomes);
            }
            Err(fault) => {
                failures += 1;
                metrics::counter!(m::WRITE_ERRORS, "sink" => sink.as_str(), "kind" => fault.kind)
                    .increment(1);
                if failures == 1 || failures.is_multiple_of(20) {
                    warn!(sink = sink.as_str(), failures, kind = fault.kind, error = %error_chain(fault.error.as_ref()), "batch write failed; retrying (messages stay unacked in JetStream)");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

/// A failed attempt; the batch is retried. `kind` is the metric label.
struct Fault {
    kind: &'static str,
    error: Error,
}

/// A failed attempt on a connection.
struct PgFault {
    kind: &'static str,
    error: tokio_postgres::Error,
}

impl From<tokio_postgres::Error> for PgFault {
    fn from(error: tokio_postgres::Error) -> Self {
        Self { kind: "retryable", error }
    }
}

/// How a Postgres error is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The connection is unusable or points at a server that cannot take writes (read-only
    /// after a switchover, shutting down): drop it from the pool, reconnect.
    Connection,
    /// The row itself is refused (data or integrity error): dead-letter that row.
    Refused,
    /// Anything else (serialization, locks, resources): retry the same batch.
    Retry,
}

/// Classifies a Postgres error (docs/design.md §7.2: drop pooled connections on 25006, 57P0x, 08xxx).
pub(crate) fn classify(error: &tokio_postgres::Error) -> ErrorClass {
    if error.is_closed() {
        return ErrorClass::Connection;
    }
    let Some(code) = error.code() else {
        // No SQLSTATE: an I/O or protocol failure of the connection itself.
        return ErrorClass::Connection;
    };
    classify_code(code)
}

/// [`classify`] for a known SQLSTATE.
pub(crate) fn classify_code(code: &SqlState) -> ErrorClass {
    let text = code.code();
    if *code == SqlState::UNIQUE_VIOLATION {
        // Another writer inserted the same seq at the same moment: the retry finds it.
        ErrorClass::Retry
    } else if text.starts_with("08")
        || text.starts_with("57P")
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
    {
        ErrorClass::Connection
    } else if text.starts_with("22") || text.starts_with("23") {
        ErrorClass::Refused
    } else {
        ErrorClass::Retry
    }
}

/// New seqs, and refused rows with their reason.
type Written = (std::collections::HashSet<i64>, Vec<(i64, String)>);

async fn write_batch(shared: &Shared, sink: Sink, merged: &Merged<'_>) -> Result<Written, Fault> {
    let mut client = shared.pool.get().await.map_err(|e| Fault { kind: "connection", error: Box::new(e) })?;
    match write_on(shared, &mut client, sink, merged).await {
        Ok(written) => Ok(written),
        Err(fault) if classify(&fault.error) == ErrorClass::Connection => {
            // Never reuse it: after a switchover it may point at the old, read-only primary.
            drop(deadpool_postgres::Object::take(client));
            Err(Fault { kind: "connection", error: Box::new(fault.error) })
        }
        Err(fault) => Err(Fault { kind: fault.kind, error: Box::new(fault.error) }),
    }
}

async fn write_on(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
    sink: Sink,
    merged: &Merged<'_>,
) -> Result<Written, PgFault> {
    let max_seq = merged.rows.iter().map(|r| r.seq).max().unwrap_or(0);
    let rows_per_partition = i64::from(shared.config.rows_per_partition.get());
    if max_seq >= shared.partitions_upper.load(Ordering::Relaxed) - rows_per_partition {
        let upper = messages::ensure_partitions(
            client,
            max_seq,
            rows_per_partition,
            shared.config.partitions_ahead.get(),
        )
        .await
        .map_err(|error| PgFault { kind: "partition", error })?;
        shared.partitions_upper.fetch_max(upper, Ordering::Relaxed);
    }
    let tx = client.transaction().await?;
    match sink.insert(&tx, &merged.rows).await {
        Ok(inserted) => {
            let inserted: std::collections::HashSet<i64> = inserted.into_iter().collect();
            checkpoints(&tx, sink, merged, &inserted).await?;
            tx.commit().await?;
            Ok((inserted, Vec::new()))
        }
        Err(error) if classify(&error) == ErrorClass::Refused => {
            drop(tx);
            write_row_by_row(client, sink, merged).await
        }
        Err(error) => Err(error.into()),
    }
}

/// One checkpoint per partition in the batch (in its transaction).
async fn checkpoints(
    tx: &deadpool_postgres::Transaction<'_>,
    sink: Sink,
    merged: &Merged<'_>,
    inserted: &std::collections::HashSet<i64>,
) -> Result<(), tokio_postgres::Error> {
    for job in merged.jobs {
        let new = job.rows.iter().filter(|r| inserted.contains(&r.seq)).count() as u64;
        messages::checkpoint(tx, sink, job.partition, job.last_seq, job.safe_seq, new).await?;
    }
    Ok(())
}

/// Some row of the batch was refused: write each row under its own savepoint, collecting
/// the refused ones, and commit the rest with the checkpoints.
async fn write_row_by_row(
    client: &mut deadpool_postgres::Client,
    sink: Sink,
    merged: &Merged<'_>,
) -> Result<Written, PgFault> {
    let mut tx = client.transaction().await?;
    let mut inserted = std::collections::HashSet::new();
    let mut refused = Vec::new();
    for row in &merged.rows {
        let savepoint = tx.savepoint("row").await?;
        match sink.insert(&savepoint, std::slice::from_ref(row)).await {
            Ok(new) => {
                savepoint.commit().await?;
                inserted.extend(new);
            }
            Err(error) if classify(&error) == ErrorClass::Refused => {
                savepoint.rollback().await?;
                let why = error.as_db_error().map_or_else(|| error.to_string(), |db| db.message().to_owned());
                refused.push((row.seq, why));
            }
            Err(error) => return Err(error.into()),
        }
    }
    checkpoints(&tx, sink, merged, &inserted).await?;
    tx.commit().await?;
    Ok((inserted, refused))
}

/// Exponential backoff from 100 ms up to a maximum, with jitter.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self { next: Duration::from_millis(100).min(max), max }
    }

    fn reset(&mut self) {
        self.next = Duration::from_millis(100).min(self.max);
    }

    fn next(&mut self) -> Duration {
        let current = self.next;
        self.next = (self.next * 2).min(self.max);
        current.mul_f64(rand::random_range(0.5..1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_mean_a_new_primary_drop_the_connection() {
        for code in [
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_EXCEPTION,
        ] {
            assert_eq!(classify_code(&code), ErrorClass::Connection, "{}", code.code());
        }
    }

    #[test]
    fn row_errors_are_refused_and_the_rest_retried() {
        for code in [
            SqlState::CHECK_VIOLATION,
            SqlState::CHARACTER_NOT_IN_REPERTOIRE,
            SqlState::UNTRANSLATABLE_CHARACTER,
        ] {
            assert_eq!(classify_code(&code), ErrorClass::Refused, "{}", code.code());
        }
        for code in [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::DISK_FULL,
            SqlState::UNIQUE_VIOLATION,
        ] {
            assert_eq!(classify_code(&code), ErrorClass::Retry, "{}", code.code());
        }
    }

    #[test]
    fn records_decode_only_when_subject_and_payload_agree() {
        let stored = threadspace_protocol::stored::StoredMessage {
            org: threadspace_protocol::OrgId(5),
            channel: threadspace_protocol::ChannelId(9),
            sender: threadspace_protocol::UserId(2),
            client_msg_id: "c-1".into(),
            body: "hello".into(),
            ts: 1_700_000_000_123,
        };
        let payload = serde_json::to_vec(&stored).expect("serializes");
        let k = threadspace_protocol::subjects::partition_of(stored.org, 16);
        let subject = format!("msg.{k}.5.9");
        let now = SystemTime::now();
        let row = decode_row(k, 16, &subject, &payload, 42, now).expect("decodes");
        assert_eq!((row.seq, row.body.as_str(), row.stored_at), (42, "hello", now));
        assert_eq!(row.sent_at, messages::time_from_ms(1_700_000_000_123));
        let other = (k + 1) % 16;
        assert!(
            decode_row(other, 16, &subject, &payload, 42, now).is_err(),
            "a record outside the consumer's partition"
        );
        assert!(decode_row(k, 16, &format!("msg.{k}.5.10"), &payload, 42, now)
            .expect_err("wrong channel")
            .contains("channel"));
        assert!(decode_row(k, 16, &subject, b"{not json", 42, now)
            .expect_err("bad json")
            .contains("payload"));
        assert!(decode_row(k, 16, "msg.x", &payload, 42, now).is_err());
    }
}
