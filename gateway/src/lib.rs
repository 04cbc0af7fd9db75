//! ThreadSpace gateway: terminates client WebSockets (hyper + fastwebsockets), publishes
//! client messages to JetStream and acknowledges them after the PubAck, fans stored messages
//! out to connected members, and replays missed messages on resume. The REST API is the api
//! service's, not the gateway's.
//!
//! The parts (ARCHITECTURE.md, "Code map"): `edge` (sockets and the per-connection tasks),
//! `delivery` (hub, fanout, publish, replay), `events` (presence, typing, reads),
//! `limits`, `metrics`, `config`. This file is the wiring: it builds each part from the
//! configuration and hands each task only the parts it uses. It is the only reader of
//! [`Config`] besides `main.rs` (a tidy test checks it).
//!
//! Shutdown sequence (see ARCHITECTURE.md): readiness fails → the listener closes → every
//! client gets `reconnect` with a jittered delay and close 1001 → tasks drain within the grace
//! period → the fanout and NATS connection stop.

pub mod config;
mod delivery;
mod edge;
mod events;
mod limits;
mod metrics;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use threadspace_auth::Keys;
use threadspace_protocol::error_chain;
use threadspace_protocol::frames::close_code;
use threadspace_store::Directory;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;
/// The buffer-less client frame reader, for the fuzz targets (docs/fuzzing.md).
pub use edge::frame_reader::{FrameReader, ReadError};

use crate::delivery::fanout::{self, Fanout};
use crate::delivery::hub::{Hub, HubLimits};
use crate::delivery::publish::Publisher;
use crate::delivery::replay::Replayer;
use crate::edge::http::{self, ConnContext, Routes};
use crate::edge::sessions::{self, Sessions};
use crate::edge::{Edge, Settings};
use crate::events::presence::{self, Presence, PresenceTask};
use crate::events::reads::Reads;
use crate::events::typing::{Throttle, Typing};
use crate::events::{reads, typing};

/// Why the gateway could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot load the token key set")]
    Keys(#[from] threadspace_protocol::token::KeyFileError),
    #[error("cannot connect to NATS at {url}")]
    Nats {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot set up the MESSAGES stream")]
    Stream(#[source] async_nats::Error),
    #[error("cannot set up the Postgres pool")]
    Store(#[from] threadspace_store::StoreError),
}

impl threadspace_service::Failure for RunError {
    /// 64 for configuration (the key set or a URL became unusable between validation and
    /// use), 1 for everything else.
    fn exit_code(&self) -> u8 {
        match self {
            Self::Keys(_) | Self::Store(threadspace_store::StoreError::Url(_)) => {
                threadspace_service::EXIT_CONFIG
            }
            _ => 1,
        }
    }
}

/// Runs the gateway on `listener` until `shutdown` fires, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    metrics: Option<PrometheusHandle>,
) -> Result<(), RunError> {
    crate::metrics::describe();
    crate::metrics::register_zero();
    ::metrics::gauge!(crate::metrics::READY).set(0.0);
    let keys = Arc::new(Keys::load(&config.jwks, &config.token_issuer, &config.token_audience)?);
    let gateway_id = config.gateway_id();
    let nats = connect_nats(&config, &gateway_id).await?;
    let head_read_at = std::time::SystemTime::now();
    let jetstream = async_nats::jetstream::new(nats.clone());
    let (head_seq, retention) =
        fanout::ensure_stream(&jetstream, config.stream_replicas.get(), config.stream_max_age)
            .await
            .map_err(RunError::Stream)?;
    // A hello may wait for a directory connection almost as long as its own deadline: in a
    // reconnect storm queueing beats failing.
    let directory = Directory::new(threadspace_store::pool_with_wait(
        &config.postgres_url,
        config.postgres_pool.get(),
        config.hello_timeout,
    )?);
    // Read-marker writes get their own small pool with a statement timeout: hellos keep the
    // directory pool to themselves, so a flood of read markers can never starve connects.
    let markers = Directory::new(threadspace_store::pool_with_timeout(
        &config.postgres_url,
        config.history_pool.get(),
        Duration::from_secs(2),
        Some(config.history_timeout),
    )?);
    let hub = Arc::new(Hub::new(
        head_seq,
        HubLimits {
            outbound_queue: config.outbound_queue.get(),
            sends_per_second: config.sends_per_second.get(),
            send_burst: config.send_burst.get(),
        },
    ));
    let presence = Arc::new(Presence::new(rand::random()));
    let throttle = Arc::new(Throttle::default());
    info!(%gateway_id, head_seq, "gateway started");
    // Markers stored beyond the stream's newest message (possible before `read` was clamped)
    // would hide every later message as read: repair them before serving. Best effort: a
    // Postgres outage at start must not keep the chat path down.
    match markers.clamp_read_markers(head_seq, head_read_at).await {
        Ok(0) => {}
        Ok(moved) => {
            warn!(moved, head_seq, "read markers beyond the stream's newest message were lowered to it")
        }
        Err(error) => warn!(error = %error_chain(&error), "read markers not checked at start"),
    }

    let partitions = config.partitions.get();
    let cache = sessions::open_cache(
        &nats,
        &jetstream,
        partitions,
        config.stream_replicas.get(),
        config.hello_cache_max_bytes,
        retention,
    )
    .await;
    let edge = Arc::new(Edge {
        settings: edge_settings(&config),
        keys: keys.clone(),
        sessions: Sessions::new(directory, cache),
        hub: hub.clone(),
        publisher: Publisher { jetstream: jetstream.clone(), partitions, timeout: config.publish_timeout },
        replayer: Replayer {
            jetstream: jetstream.clone(),
            partitions,
            max_replay: config.max_replay.get() as u64,
            permits: Semaphore::new(config.replay_concurrency.get()),
            fault_lagging_replica: config.fault_replay_lagging_replica,
        },
        presence: presence.clone(),
        typing: Typing { throttle: throttle.clone(), nats: nats.clone() },
        reads: Reads { markers, nats: nats.clone() },
        connections: CancellationToken::new(),
        tracker: TaskTracker::new(),
    });

    let background = CancellationToken::new();
    let fanout_task = tokio::spawn(fanout::run(
        Fanout {
            hub: hub.clone(),
            jetstream,
            partitions,
            fault_delay: config.fault_fanout_delay,
            fault_no_consumer: config.fault_fanout_no_consumer,
        },
        background.clone(),
    ));
    let typing_task = tokio::spawn(typing::subscribe(hub.clone(), nats.clone(), background.clone()));
    let reads_task = tokio::spawn(reads::subscribe(hub.clone(), nats.clone(), background.clone()));
    let presence_task = tokio::spawn(presence::run(
        PresenceTask {
            presence,
            hub: hub.clone(),
            nats: nats.clone(),
            gateway_id,
            interval: config.presence_interval,
            idle_after: config.idle_after,
            offline_grace: config.offline_grace,
            reconnect_spread: config.reconnect_spread,
        },
        background.clone(),
    ));
    let housekeeping_task = tokio::spawn(housekeeping(keys, throttle, metrics.clone(), background.clone()));

    ::metrics::gauge!(crate::metrics::READY).set(1.0);
    let routes = Arc::new(Routes { edge: edge.clone(), nats: nats.clone(), metrics });
    accept_loop(&config, routes, listener, &shutdown).await;

    // Drain.
    let grace = config.shutdown_grace;
    hub.start_draining();
    ::metrics::gauge!(crate::metrics::READY).set(0.0);
    let drain_started = tokio::time::Instant::now();
    let n = hub.kill_all(close_code::GOING_AWAY);
    info!(connections = n, grace = ?grace, "draining");
    edge.connections.cancel();
    edge.tracker.close();
    if tokio::time::timeout(grace, edge.tracker.wait()).await.is_err() {
        warn!(remaining = hub.len(), "grace period over with connections still open");
    }
    // Presence says `bye` only once every client could have reconnected elsewhere (they were
    // told to within --reconnect-spread), so users who moved are never shown offline. Bounded
    // by the grace period, which the config keeps longer than the spread.
    let moved_by = drain_started + config.reconnect_spread + presence::DRAIN_MARGIN;
    let _ = tokio::time::timeout_at(drain_started + grace, tokio::time::sleep_until(moved_by)).await;
    background.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = fanout_task.await;
        let _ = typing_task.await;
        let _ = reads_task.await;
        let _ = presence_task.await;
        let _ = housekeeping_task.await;
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), nats.drain()).await;
    info!("gateway stopped");
    Ok(())
}

/// The connection limits and timings the edge applies, from the flags.
fn edge_settings(config: &Config) -> Settings {
    Settings {
        allowed_origins: config.allowed_origins.clone(),
        max_frame_bytes: config.max_frame_bytes.get(),
        max_message_bytes: config.max_message_bytes.get(),
        max_body_bytes: config.max_body_bytes.get(),
        frames_per_second: config.frames_per_second.get(),
        frame_burst: config.frame_burst.get(),
        flood_strikes: config.flood_strikes.get(),
        sends_per_second: config.sends_per_second.get(),
        send_burst: config.send_burst.get(),
        hello_timeout: config.hello_timeout,
        heartbeat: config.heartbeat,
        idle_timeout: config.idle_timeout,
        idle_after: config.idle_after,
        write_timeout: config.write_timeout,
        reconnect_spread: config.reconnect_spread,
    }
}

async fn connect_nats(config: &Config, gateway_id: &str) -> Result<async_nats::Client, RunError> {
    threadspace_service::nats_options(format!("threadspace-gateway {gateway_id}"))
        .connect(
            threadspace_service::nats_addrs(&config.nats_url)
                .map_err(|e| RunError::Nats { url: config.nats_url.clone(), source: e.into() })?,
        )
        .await
        .map_err(|source| RunError::Nats { url: config.nats_url.clone(), source })
}

async fn accept_loop(
    config: &Config,
    routes: Arc<Routes>,
    listener: TcpListener,
    shutdown: &CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections.get()));
    let tracker = routes.edge.tracker.clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            ::metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        if let Some(size) = config.socket_send_buffer {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(size as usize);
        }
        let routes = routes.clone();
        let shutdown = shutdown.clone();
        let header_read_timeout = config.header_read_timeout;
        let ctx = Arc::new(ConnContext { permit: Mutex::new(Some(permit)) });
        tracker.spawn(async move {
            let service = service_fn(move |request| http::handle(routes.clone(), ctx.clone(), request));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "http connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), connection).await;
                }
            }
        });
    }
}

/// Periodic chores: key-set reloads, metric upkeep, pruning the typing throttle.
async fn housekeeping(
    keys: Arc<Keys>,
    throttle: Arc<Throttle>,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let reload = keys.clone();
        let _ = tokio::task::spawn_blocking(move || reload.reload_if_changed()).await;
        if let Some(handle) = &metrics {
            handle.run_upkeep();
        }
        throttle.prune(std::time::Instant::now());
    }
}
