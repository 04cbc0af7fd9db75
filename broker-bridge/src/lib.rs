//! broker-bridge: moves every stored message from the JetStream `MESSAGES` stream into the
//! partitioned Postgres `messages` table (docs/design.md §5, §7.2). One durable pull consumer per stream
//! partition (`writer-p<k>`, filter `msg.<k>.>`); several bridge processes share the
//! partitions (`--processes`, `--process-index`). Each batch is one idempotent statement plus
//! a checkpoint, committed before JetStream is acked ([`writer`] holds the invariants).
//!
//! Code map: [`config`] (flags), [`partitions`] (who owns which partition, consumer names),
//! [`writer`] (the per-partition loop, error classes),
//! [`dead_letter`] (the `MESSAGES_DLQ` stream), [`metrics`], `http` (/metrics, /healthz,
//! /readyz), [`run`] (startup and SIGTERM drain).

pub mod config;
pub mod dead_letter;
mod http;
mod metrics;
mod partitions;
mod writer;

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;
pub use threadspace_store::messages::Sink;

use crate::partitions::consumer_name;

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

impl threadspace_service::Failure for RunError {}

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
    let nats = threadspace_service::nats_options(format!("threadspace-bridge {}", config.process_index))
        .retry_on_initial_connect()
        .connect(
            threadspace_service::nats_addrs(&config.nats_url)
                .map_err(|e| RunError::Nats { url: config.nats_url.clone(), source: e.into() })?,
        )
        .await
        .map_err(|source| RunError::Nats { url: config.nats_url.clone(), source })?;
    let jetstream = async_nats::jetstream::new(nats.clone());
    dead_letter::ensure_stream(&jetstream, config.stream_replicas.get(), config.dead_letter_max_age)
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
