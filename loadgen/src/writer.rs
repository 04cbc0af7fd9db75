//! `writer`: the broker-bridge's Postgres write path in isolation. Writes the same generated
//! rows into the same partitioned `messages` table (GIN search index included) with the
//! bridge's own statement — one idempotent `INSERT … SELECT FROM UNNEST … ON CONFLICT DO
//! NOTHING` plus the checkpoint upsert per batch, one commit per batch — at several batch
//! sizes, and with one binary `COPY` of all rows (the practical limit). Runs against its own
//! throwaway PostgreSQL (same durable settings as every stack: fsync, synchronous_commit).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::builder::TypedValueParser as _;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use threadspace_devstack::postgres::Postgres;
use threadspace_devstack::Lifetime;
use threadspace_protocol::{ChannelId, OrgId, UserId};
use threadspace_store::messages::{self, MessageRow, Sink};

use crate::{latency_histogram, summary};

/// The flags of `loadgen writer`.
#[derive(Clone, Debug, clap::Args)]
pub struct WriterOptions {
    #[arg(long, default_value = "300000", value_parser = clap::value_parser!(u64).range(5_000..=10_000_000).map(|n| n as usize))]
    pub rows: usize,
    /// Concurrent writers (bridge partitions write concurrently); COPY uses as many streams.
    // Each writer is a connection with its own share of the rows.
    #[arg(long, default_value = "2", value_parser = clap::value_parser!(u64).range(1..=64).map(|n| n as usize))]
    pub writers: usize,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000", value_parser = clap::value_parser!(u64).range(1..=50_000).map(|n| n as usize))]
    pub batch_sizes: Vec<usize>,
    /// Exit non-zero unless every batch size reaches this fraction of COPY's rows/s (e.g. 0.5).
    #[arg(long)]
    pub min_copy_ratio: Option<f64>,
    /// Exit non-zero unless every batch size reaches this many rows/s.
    #[arg(long)]
    pub min_rows_per_second: Option<f64>,
}

/// One measured way of writing the rows.
#[derive(Debug)]
pub struct Mode {
    pub name: String,
    pub rows_per_second: f64,
    /// Per batch (insert + checkpoint + commit), or the whole COPY.
    pub commit: Histogram<u64>,
}

#[derive(Debug)]
pub struct WriterReport {
    pub rows: usize,
    pub writers: usize,
    pub modes: Vec<Mode>,
    pub copy_rows_per_second: f64,
}

const WORDS: &[&str] = &[
    "deploy",
    "pipeline",
    "green",
    "review",
    "merge",
    "lunch",
    "meeting",
    "standup",
    "incident",
    "rollback",
    "customer",
    "ticket",
    "release",
    "canary",
    "latency",
    "dashboard",
    "alert",
    "on-call",
    "design",
    "doc",
    "thanks",
    "please",
    "tomorrow",
    "today",
    "the",
    "a",
    "is",
    "we",
    "should",
    "could",
    "check",
    "ship",
    "postgres",
    "nats",
    "gateway",
    "bug",
    "fix",
    "test",
    "flaky",
    "build",
    "coffee",
    "sprint",
    "plan",
];

/// `n` rows shaped like chat: seqs 1..=n, 5,000 orgs, bodies of 3–30 words, stamped `now`.
pub fn generate(n: usize, seed: u64, now: SystemTime) -> Vec<MessageRow> {
    let mut rng = StdRng::seed_from_u64(seed);
    (1..=n as i64)
        .map(|seq| {
            let words = rng.random_range(3..=30);
            let body =
                (0..words).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect::<Vec<_>>().join(" ");
            let org = rng.random_range(1..=5_000);
            MessageRow {
                seq,
                org: OrgId(org),
                channel: ChannelId(org * 100 + rng.random_range(0..100)),
                sender: UserId(org * 50 + rng.random_range(0..50)),
                client_msg_id: format!("c-{seq}"),
                body,
                sent_at: now,
                stored_at: now,
            }
        })
        .collect()
}

/// Empties the table between modes and flushes dirty pages, so no mode pays for another's.
const RESET: &str = "TRUNCATE messages, message_search, bridge_checkpoints; CHECKPOINT";

pub async fn run(options: &WriterOptions) -> anyhow::Result<WriterReport> {
    let dir = tempfile::Builder::new().prefix("threadspace-writer-").tempdir()?;
    let port = threadspace_devstack::free_port()?;
    eprintln!("starting a throwaway PostgreSQL in {} …", dir.path().display());
    let postgres = Postgres::start(dir.path(), port, Lifetime::Attached).await?;
    let pool = threadspace_store::pool(&postgres.url, options.writers)?;
    let mut client = pool.get().await?;
    threadspace_store::migrate(&mut client).await?;
    messages::ensure_partitions(&mut client, options.rows as i64, 10_000_000, 1).await?;
    drop(client);
    let rows = generate(options.rows, 7, SystemTime::now());
    // Writer w takes every seq with seq % writers == w, as bridge partitions interleave.
    let slices: Vec<Arc<Vec<MessageRow>>> = (0..options.writers)
        .map(|w| Arc::new(rows.iter().filter(|r| r.seq as usize % options.writers == w).cloned().collect()))
        .collect();
    let mut modes = Vec::new();
    for &batch in &options.batch_sizes {
        let mode = timed(&pool, &slices, format!("insert batch {batch}"), move |client, slice| {
            Box::pin(async move { write_batches(client, &slice, batch, Sink::Archive).await })
        })
        .await?;
        modes.push(mode);
    }
    // The search indexer: separate consumers, so not gated against COPY, but its rate says
    // how fast search catches up after a backlog.
    let mode = timed(&pool, &slices, "search index batch 1000".into(), |client, slice| {
        Box::pin(async move { write_batches(client, &slice, 1000, Sink::Search).await })
    })
    .await?;
    modes.push(mode);
    let copy = timed(&pool, &slices, "binary COPY (one per writer)".into(), |mut client, slice| {
        Box::pin(async move {
            let t = Instant::now();
            let tx = client.transaction().await?;
            let copied = messages::copy_rows(&tx, &slice).await?;
            tx.commit().await?;
            anyhow::ensure!(copied as usize == slice.len(), "COPY wrote {copied} of {} rows", slice.len());
            Ok(vec![t.elapsed()])
        })
    })
    .await?;
    let copy_rows_per_second = copy.rows_per_second;
    modes.push(copy);
    drop(pool);
    drop(postgres);
    Ok(WriterReport { rows: rows.len(), writers: options.writers, modes, copy_rows_per_second })
}

type WriterFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Vec<Duration>>> + Send>>;

/// Empties the tables, then runs `write` on every slice concurrently (one connection each);
/// rows/s over the wall time, and each batch's commit latency.
async fn timed(
    pool: &threadspace_store::Pool,
    slices: &[Arc<Vec<MessageRow>>],
    name: String,
    write: impl Fn(deadpool_postgres::Client, Arc<Vec<MessageRow>>) -> WriterFuture,
) -> anyhow::Result<Mode> {
    pool.get().await?.batch_execute(RESET).await?;
    let mut clients = Vec::new();
    for _ in slices {
        clients.push(pool.get().await?);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (client, slice) in clients.into_iter().zip(slices) {
        tasks.spawn(write(client, slice.clone()));
    }
    let mut commit = latency_histogram();
    while let Some(result) = tasks.join_next().await {
        for latency in result?? {
            let _ = commit.record(latency.as_micros() as u64);
        }
    }
    let rows: usize = slices.iter().map(|s| s.len()).sum();
    let mode = Mode { name, rows_per_second: rows as f64 / started.elapsed().as_secs_f64(), commit };
    eprintln!("  {}: {:.0} rows/s", mode.name, mode.rows_per_second);
    Ok(mode)
}

/// The bridge's write path: one statement plus the checkpoint per batch, one commit each.
async fn write_batches(
    mut client: deadpool_postgres::Client,
    rows: &[MessageRow],
    batch: usize,
    sink: Sink,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    for chunk in rows.chunks(batch) {
        let t = Instant::now();
        let tx = client.transaction().await?;
        let inserted = sink.insert(&tx, chunk).await?;
        let last = chunk.last().map_or(0, |r| r.seq);
        let partition = (last as u32) % 16;
        messages::checkpoint(&tx, sink, partition, last, last, inserted.len() as u64).await?;
        tx.commit().await?;
        latencies.push(t.elapsed());
    }
    Ok(latencies)
}

impl WriterReport {
    pub fn print(&self) {
        println!(
            "{} rows per mode, {} concurrent writers, into partitioned `messages` (PK, (channel, seq)); \
             the search index (tsvector + GIN in `message_search`) is written by its own consumers",
            self.rows, self.writers
        );
        println!("{:<30} {:>9} {:>8}  commit latency per batch (ms)", "mode", "rows/s", "of COPY");
        for mode in &self.modes {
            println!(
                "{:<30} {:>9.0} {:>7.0}%  {}",
                mode.name,
                mode.rows_per_second,
                100.0 * mode.rows_per_second / self.copy_rows_per_second,
                summary("", &mode.commit).trim_start()
            );
        }
    }

    /// Why the report fails the thresholds, if it does.
    pub fn gate(&self, options: &WriterOptions) -> Result<(), String> {
        let mut reasons = Vec::new();
        for mode in self.modes.iter().filter(|m| m.name.starts_with("insert")) {
            // (the search index is a separate consumer and not gated against COPY)
            let ratio = mode.rows_per_second / self.copy_rows_per_second;
            if let Some(min) = options.min_copy_ratio {
                if ratio < min {
                    reasons.push(format!(
                        "{}: {:.0}% of COPY is below {:.0}%",
                        mode.name,
                        ratio * 100.0,
                        min * 100.0
                    ));
                }
            }
            if let Some(min) = options.min_rows_per_second {
                if mode.rows_per_second < min {
                    reasons
                        .push(format!("{}: {:.0} rows/s is below {min:.0}", mode.name, mode.rows_per_second));
                }
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_rows_are_reproducible_and_valid() {
        let now = SystemTime::now();
        let a = generate(100, 7, now);
        assert_eq!(a, generate(100, 7, now));
        assert!(a.iter().enumerate().all(|(i, r)| r.seq == i as i64 + 1 && !r.body.is_empty()));
        assert!(a.iter().all(|r| r.channel.0 / 100 == r.org.0));
    }

    #[test]
    fn the_gate_names_each_failing_mode() {
        let mode = |name: &str, rate: f64| Mode {
            name: name.into(),
            rows_per_second: rate,
            commit: latency_histogram(),
        };
        let report = WriterReport {
            rows: 10,
            writers: 1,
            modes: vec![
                mode("insert batch 100", 40.0),
                mode("insert batch 1000", 80.0),
                mode("binary COPY (one)", 100.0),
            ],
            copy_rows_per_second: 100.0,
        };
        let options = WriterOptions {
            rows: 10,
            writers: 1,
            batch_sizes: vec![],
            min_copy_ratio: Some(0.5),
            min_rows_per_second: Some(60.0),
        };
        let reason = report.gate(&options).expect_err("fails");
        assert!(reason.contains("insert batch 100: 40% of COPY"), "{reason}");
        assert!(reason.contains("insert batch 100: 40 rows/s"), "{reason}");
        assert!(!reason.contains("insert batch 1000"), "{reason}");
        let lenient = WriterOptions { min_copy_ratio: Some(0.3), min_rows_per_second: None, ..options };
        assert!(report.gate(&lenient).is_ok());
    }
}
