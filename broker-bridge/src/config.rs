//! Bridge configuration: flags with `THREADSPACE_BRIDGE_*` environment fallbacks.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use clap::Parser;
use threadspace_service::check_connections;
use threadspace_store::messages::Sink;

fn parse_sink(text: &str) -> Result<Sink, String> {
    Sink::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| format!("unknown sink {text:?} (expected `archive` or `search`)"))
}

/// `threadspace-bridge`: moves stored messages from JetStream into Postgres.
#[derive(Parser, Clone, Debug)]
#[command(name = "threadspace-bridge", version, about)]
pub struct Config {
    /// Address of the HTTP endpoint serving /metrics, /healthz and /readyz.
    #[arg(long, env = "THREADSPACE_BRIDGE_LISTEN", default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,

    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "THREADSPACE_BRIDGE_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Postgres URL. List several hosts with `target_session_attrs=read-write` to follow a
    /// switchover, e.g. `postgres://u:p@db-a,db-b/threadspace?target_session_attrs=read-write`.
    #[arg(long, env = "THREADSPACE_BRIDGE_POSTGRES_URL")]
    pub postgres_url: String,

    /// Postgres connections (one per concurrently writing partition is plenty).
    #[arg(long, env = "THREADSPACE_BRIDGE_POSTGRES_POOL", default_value = "8")]
    pub postgres_pool: NonZeroUsize,

    /// Partitions of the message subjects; must equal the gateways' `--partitions`.
    #[arg(long, env = "THREADSPACE_BRIDGE_PARTITIONS", default_value = "16")]
    pub partitions: NonZeroU32,

    /// How many bridge processes share the partitions ...
    #[arg(long, env = "THREADSPACE_BRIDGE_PROCESSES", default_value = "1")]
    pub processes: NonZeroU32,

    /// ... and which of them this is (0-based): it owns partitions k with k % processes == index.
    #[arg(long, env = "THREADSPACE_BRIDGE_PROCESS_INDEX", default_value = "0")]
    pub process_index: u32,

    /// What to write, comma-separated: `archive` (messages) and/or `search` (the search
    /// index). Each has its own durable consumers, so a slow index never delays the archive.
    #[arg(long, env = "THREADSPACE_BRIDGE_SINKS", value_delimiter = ',', default_value = "archive,search", value_parser = parse_sink)]
    pub sinks: Vec<Sink>,

    /// Most rows written in one batch (one statement, one commit).
    #[arg(long, env = "THREADSPACE_BRIDGE_BATCH_ROWS", default_value = "1000")]
    pub batch_rows: NonZeroUsize,

    /// A batch is the first waiting message plus what is already pending behind it (up to
    /// --batch-rows); this bounds how long the pull for those pending messages may take.
    #[arg(long, env = "THREADSPACE_BRIDGE_BATCH_WAIT", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub batch_wait: Duration,

    /// JetStream redelivers a message not acked within this long (extended while a batch waits
    /// for Postgres).
    #[arg(long, env = "THREADSPACE_BRIDGE_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,

    /// Deliveries of one message before JetStream gives up on it (finite, so a message that
    /// crashes the bridge cannot stall its partition forever).
    #[arg(long, env = "THREADSPACE_BRIDGE_MAX_DELIVER", default_value = "20")]
    pub max_deliver: NonZeroU32,

    /// Seqs per Postgres partition of `messages` (applies to partitions created from now on).
    #[arg(long, env = "THREADSPACE_BRIDGE_ROWS_PER_PARTITION", default_value = "100000000")]
    pub rows_per_partition: NonZeroU32,

    /// Partitions kept created ahead of the newest written seq.
    #[arg(long, env = "THREADSPACE_BRIDGE_PARTITIONS_AHEAD", default_value = "2")]
    pub partitions_ahead: NonZeroU32,

    /// Longest backoff between retries of a failed write.
    #[arg(long, env = "THREADSPACE_BRIDGE_MAX_BACKOFF", default_value = "5s", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,

    /// Replicas of the dead-letter stream (1 locally, 3 in production, like the gateways'
    /// MESSAGES stream). A stream found with fewer is raised to it (logged); one with more, or
    /// one the cluster cannot raise, stops the bridge with an error naming both counts.
    #[arg(long, env = "THREADSPACE_BRIDGE_STREAM_REPLICAS", default_value = "1")]
    pub stream_replicas: std::num::NonZeroUsize,

    /// How long dead-lettered messages are kept.
    #[arg(long, env = "THREADSPACE_BRIDGE_DEAD_LETTER_MAX_AGE", default_value = "30d", value_parser = humantime::parse_duration)]
    pub dead_letter_max_age: Duration,

    /// On SIGTERM: how long to let in-flight batches commit before exiting.
    #[arg(long, env = "THREADSPACE_BRIDGE_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

pub use threadspace_service::ConfigError;

impl Config {
    /// Cross-field checks that clap cannot express, and the URLs and files the binary needs,
    /// checked before anything starts (each error names its flag; the binary exits 64).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_connections(&self.postgres_url, &self.nats_url, None)?;
        if self.sinks.is_empty() {
            return Err(ConfigError("--sinks must name at least one of archive, search".into()));
        }
        if self.process_index >= self.processes.get() {
            return Err(ConfigError(format!(
                "--process-index {} must be below --processes {}",
                self.process_index, self.processes
            )));
        }
        if self.processes.get() > self.partitions.get() {
            return Err(ConfigError(
                "--processes must not exceed --partitions (a process would own nothing)".into(),
            ));
        }
        if self.batch_rows.get() > 10_000 {
            return Err(ConfigError("--batch-rows must be at most 10000".into()));
        }
        if self.batch_wait < Duration::from_millis(1) || self.batch_wait > Duration::from_secs(5) {
            return Err(ConfigError("--batch-wait must be between 1ms and 5s".into()));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(ConfigError("--ack-wait must be at least 1s".into()));
        }
        if self.max_backoff.is_zero() || self.max_backoff >= self.ack_wait {
            return Err(ConfigError(
                "--max-backoff must be greater than zero and shorter than --ack-wait".into(),
            ));
        }
        if self.rows_per_partition.get() < 10 {
            return Err(ConfigError(
                "--rows-per-partition must be at least 10 (each partition is two tables)".into(),
            ));
        }
        if self.max_deliver.get() < 2 {
            return Err(ConfigError("--max-deliver must be at least 2 (a crash must be survivable)".into()));
        }
        Ok(())
    }

    /// The partitions this process owns.
    pub fn owned_partitions(&self) -> Vec<u32> {
        crate::partitions::owned_partitions(self.process_index, self.processes.get(), self.partitions.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, clap::Error> {
        let mut args = vec!["threadspace-bridge", "--postgres-url", "postgres://x@127.0.0.1/db"];
        args.extend_from_slice(extra);
        Config::try_parse_from(args)
    }

    #[test]
    fn defaults_are_valid_and_own_every_partition() {
        let config = parse(&[]).expect("parses");
        config.validate().expect("defaults validate");
        assert_eq!(config.owned_partitions(), (0..16).collect::<Vec<_>>());
        assert_eq!(config.sinks, vec![Sink::Archive, Sink::Search]);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let error = parse(&["--batch-rows", "0"]).expect_err("zero rows");
        assert!(error.to_string().contains("--batch-rows"), "{error}");
        let error = parse(&["--sinks", "archive,disk"]).expect_err("bad sink");
        assert!(error.to_string().contains("--sinks") && error.to_string().contains("disk"), "{error}");
        let error = parse(&["--batch-wait", "soon"]).expect_err("bad duration");
        assert!(error.to_string().contains("--batch-wait"), "{error}");
        let cases: [(&[&str], &str); 6] = [
            (&["--process-index", "2", "--processes", "2"], "--process-index"),
            (&["--processes", "17"], "--processes"),
            (&["--batch-rows", "20000"], "--batch-rows"),
            (&["--max-backoff", "40s"], "--max-backoff"),
            (&["--max-deliver", "1"], "--max-deliver"),
            (&["--rows-per-partition", "5"], "--rows-per-partition"),
        ];
        for (args, flag) in cases {
            let error = parse(args).expect("parses").validate().expect_err("invalid");
            assert!(error.to_string().contains(flag), "{args:?}: {error}");
        }
    }
}
