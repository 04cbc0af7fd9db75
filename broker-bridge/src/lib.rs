//! broker-bridge: moves every stored message from the JetStream `MESSAGES` stream into the
//! partitioned Postgres `messages` table (docs/design.md §5, §7.2). One durable pull consumer per stream
//! partition (`writer-p<k>`, filter `msg.<k>.>`); several bridge processes share the
//! partitions (`--processes`, `--process-index`). Each batch is one idempotent statement plus
//! a checkpoint, committed before JetStream is acked ([`writer`] holds the invariants).
//!
//! Code map: [`config`] (flags), [`writer`] (the per-partition loop, error classes),
//! [`dead_letter`] (the `MESSAGES_DLQ` stream), [`metrics`], `http` (/metrics, /healthz,
//! /readyz), [`run`] (startup and SIGTERM drain).

pub mod config;
pub mod dead_letter;
mod http;
pub mod metrics;
pub mod writer;

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;
pub use threadspace_store::messages::Sink;

use threadspace_protocol::subjects::partition_of;
use threadspace_protocol::OrgId;

/// Durable consumer name of `sink` in partition `k`: `writer-p<k>` (archive) or
/// `indexer-p<k>` (search index).
pub fn consumer_name(sink: Sink, partition: u32) -> String {
    match sink {
        Sink::Archive => format!("writer-p{partition}"),
        Sink::Search => format!("indexer-p{partition}"),
    }
}

/// Subject filter of partition `k`: `msg.<k>.>`.
pub fn partition_filter(partition: u32) -> String {
    format!("msg.{partition}.>")
}

/// The partitions a bridge process owns when `n_processes` share `n_partitions`:
/// process `index` takes every partition `k` with `k % n_processes == index`.
pub fn owned_partitions(index: u32, n_processes: u32, n_partitions: u32) -> Vec<u32> {
    (0..n_partitions).filter(|k| n_processes > 0 && k % n_processes == index).collect()
}

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect to NATS at {url}")]
    Nats {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe to max-deliveries advisories")]
    Advisories(#[source] async_nats::Error),
    #[error("cannot create the dead-letter stream")]
    DeadLetterStream(#[source] async_nats::Error),
    #[error(transparent)]
    Store(#[from] threadspace_store::StoreError),
}

/// Runs the bridge until `shutdown`, then lets in-flight batches commit (up to the grace).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    metrics: Option<PrometheusHandle>,
) -> Result<(), RunError> {
    crate::metrics::describe();
    crate::metrics::register_zero(&config.sinks, &config.owned_partitions(), config.partitions.get());
    ::metrics::gauge!(crate::metrics::READY).set(0.0);
    let nats = async_nats::ConnectOptions::new()
        .name(format!("threadspace-bridge {}", config.process_index))
        // The default 60 s ping would let a dead server go unnoticed for minutes.
        .ping_interval(Duration::from_secs(5))
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => info!("nats connected"),
                async_nats::Event::Disconnected => warn!("nats disconnected"),
                other => info!(event = %other, "nats event"),
            }
        })
        .connect(config.nats_url.as_str())
        .await
        .map_err(|source| RunError::Nats { url: config.nats_url.clone(), source })?;
    let jetstream = async_nats::jetstream::new(nats.clone());
    dead_letter::ensure_stream(&jetstream, 1, config.dead_letter_max_age)
        .await
        .map_err(RunError::DeadLetterStream)?;
    let pool = threadspace_store::pool(&config.postgres_url, config.postgres_pool.get())?;
    let owned = config.owned_partitions();
    info!(partitions = ?owned, sinks = ?config.sinks, processes = config.processes.get(), index = config.process_index, "bridge started");
    let grace = config.shutdown_grace;
    let shared = Arc::new(writer::Shared { config, jetstream, pool, partitions_upper: AtomicI64::new(0) });

    // Max-deliveries advisories, subscribed (and flushed) before any consumer pulls.
    let advisories = nats
        .subscribe(dead_letter::max_deliveries_subject())
        .await
        .map_err(|e| RunError::Advisories(e.into()))?;
    nats.flush().await.map_err(|e| RunError::Advisories(e.into()))?;
    let ours = shared
        .config
        .sinks
        .iter()
        .flat_map(|&sink| owned.iter().map(move |&k| (consumer_name(sink, k), sink, k)))
        .collect();
    let advisories = tokio::spawn(dead_letter::watch_max_deliveries(
        advisories,
        shared.jetstream.clone(),
        ours,
        shutdown.clone(),
    ));
    let writers = tokio_util::task::TaskTracker::new();
    for &sink in &shared.config.sinks {
        // One committer per sink merges the partitions' batches into few transactions.
        let (committer, jobs) = tokio::sync::mpsc::channel(owned.len().max(1));
        writers.spawn(writer::run_committer(shared.clone(), sink, jobs, shutdown.clone()));
        for &k in &owned {
            writers.spawn(writer::run_partition(
                shared.clone(),
                committer.clone(),
                sink,
                k,
                shutdown.clone(),
            ));
        }
    }
    writers.close();

    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(listener, nats.clone(), metrics, http_stop.clone()));
    ::metrics::gauge!(crate::metrics::READY).set(1.0);

    shutdown.cancelled().await;
    ::metrics::gauge!(crate::metrics::READY).set(0.0);
    info!(grace = ?grace, "shutting down: finishing in-flight batches");
    if tokio::time::timeout(grace, writers.wait()).await.is_err() {
        warn!("grace period over with a batch still in flight; its messages stay unacked and will be redelivered");
    }
    http_stop.cancel();
    let _ = http_task.await;
    let _ = advisories.await;
    let _ = tokio::time::timeout(Duration::from_secs(2), nats.drain()).await;
    info!("bridge stopped");
    Ok(())
}

/// Which partition (and so which consumer) an org's messages go through.
pub fn partition_for(org: OrgId, n_partitions: u32) -> u32 {
    partition_of(org, n_partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadspace_protocol::subjects::message_subject;
    use threadspace_protocol::ChannelId;

    #[test]
    fn processes_share_partitions_without_overlap_or_gap() {
        for n_processes in 1..6 {
            let mut all: Vec<u32> =
                (0..n_processes).flat_map(|i| owned_partitions(i, n_processes, 16)).collect();
            all.sort_unstable();
            assert_eq!(all, (0..16).collect::<Vec<_>>());
        }
    }

    #[test]
    fn an_orgs_messages_match_its_partition_filter() {
        for org in 1..200 {
            let subject = message_subject(16, OrgId(org), ChannelId(7));
            let filter = partition_filter(partition_for(OrgId(org), 16));
            assert!(subject.starts_with(filter.trim_end_matches('>')), "{subject} vs {filter}");
        }
        assert_eq!(consumer_name(Sink::Archive, 3), "writer-p3");
        assert_eq!(consumer_name(Sink::Search, 3), "indexer-p3");
    }
}
