//! ThreadSpace gateway: terminates client WebSockets and the REST API (hyper + fastwebsockets),
//! publishes client messages to JetStream and acknowledges them after the PubAck, fans stored
//! messages out to connected members, and replays missed messages on resume.
//!
//! Shutdown sequence (see ARCHITECTURE.md): readiness fails → the listener closes → every
//! client gets `reconnect` with a jittered delay and close 1001 → tasks drain within the grace
//! period → the fanout and NATS connection stop.

pub mod config;
pub mod conn;
pub mod events;
pub mod fanout;
pub mod frame_reader;
pub mod history;
pub mod http;
pub mod hub;
pub mod limits;
pub mod membership;
pub mod metrics;
pub mod presence;
pub mod publish;
pub mod reads;
pub mod replay;
pub mod state;
pub mod typing;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use threadspace_protocol::frames::close_code;
use threadspace_protocol::token::KeySet;
use threadspace_store::Directory;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;

use crate::hub::{Hub, HubLimits};
use crate::state::{State, StateParts};

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

impl RunError {
    /// The process exit code: 64 for configuration (the key set or a URL became unusable
    /// between validation and use), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Keys(_) | Self::Store(threadspace_store::StoreError::Url(_)) => 64,
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
    let keys = KeySet::load(&config.jwks, &config.token_issuer, &config.token_audience)?;
    let gateway_id = config.gateway_id();
    let nats = connect_nats(&config, &gateway_id).await?;
    let head_read_at = std::time::SystemTime::now();
    let jetstream = async_nats::jetstream::new(nats.clone());
    let head_seq = fanout::ensure_stream(&jetstream, config.stream_replicas.get(), config.stream_max_age)
        .await
        .map_err(RunError::Stream)?;
    // A hello may wait for a directory connection almost as long as its own deadline: in a
    // reconnect storm queueing beats failing.
    let pool = threadspace_store::pool_with_wait(
        &config.postgres_url,
        config.postgres_pool.get(),
        config.hello_timeout,
    )?;
    let hub = Hub::new(
        head_seq,
        HubLimits {
            outbound_queue: config.outbound_queue.get(),
            sends_per_second: config.sends_per_second.get(),
            send_burst: config.send_burst.get(),
        },
    );
    let history = threadspace_store::pool_with_timeout(
        &config.postgres_url,
        config.history_pool.get(),
        Duration::from_secs(2),
        Some(config.history_timeout),
    )?;
    let state =
        State::new(StateParts { config, hub, nats, directory: Directory::new(pool), history, metrics, keys });
    info!(gateway_id = %state.gateway_id, head_seq, "gateway started");
    // Markers stored beyond the stream's newest message (possible before `read` was clamped)
    // would hide every later message as read: repair them before serving. Best effort: a
    // Postgres outage at start must not keep the chat path down.
    match state.markers.clamp_read_markers(head_seq, head_read_at).await {
        Ok(0) => {}
        Ok(moved) => {
            warn!(moved, head_seq, "read markers beyond the stream's newest message were lowered to it")
        }
        Err(error) => warn!(error = %state::anyhow_chain(&error), "read markers not checked at start"),
    }

    let background = CancellationToken::new();
    let fanout_task = tokio::spawn(fanout::run(state.clone(), background.clone()));
    let membership_task = tokio::spawn(membership::subscribe(state.clone(), background.clone()));
    let typing_task = tokio::spawn(typing::subscribe(state.clone(), background.clone()));
    let reads_task = tokio::spawn(reads::subscribe(state.clone(), background.clone()));
    let presence_task = tokio::spawn(presence::run(state.clone(), background.clone()));
    let housekeeping_task = tokio::spawn(housekeeping(state.clone(), background.clone()));

    ::metrics::gauge!(crate::metrics::READY).set(1.0);
    accept_loop(&state, listener, &shutdown).await;

    // Drain.
    let grace = state.config.shutdown_grace;
    state.start_draining();
    ::metrics::gauge!(crate::metrics::READY).set(0.0);
    let drain_started = tokio::time::Instant::now();
    let n = state.hub.kill_all(close_code::GOING_AWAY);
    info!(connections = n, grace = ?grace, "draining");
    state.connections.cancel();
    state.tracker.close();
    if tokio::time::timeout(grace, state.tracker.wait()).await.is_err() {
        warn!(remaining = state.hub.len(), "grace period over with connections still open");
    }
    // Presence says `bye` only once every client could have reconnected elsewhere (they were
    // told to within --reconnect-spread), so users who moved are never shown offline. Bounded
    // by the grace period, which the config keeps longer than the spread.
    let moved_by = drain_started + state.config.reconnect_spread + presence::DRAIN_MARGIN;
    let _ = tokio::time::timeout_at(drain_started + grace, tokio::time::sleep_until(moved_by)).await;
    background.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = fanout_task.await;
        let _ = membership_task.await;
        let _ = typing_task.await;
        let _ = reads_task.await;
        let _ = presence_task.await;
        let _ = housekeeping_task.await;
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), state.nats.drain()).await;
    info!("gateway stopped");
    Ok(())
}

async fn connect_nats(config: &Config, gateway_id: &str) -> Result<async_nats::Client, RunError> {
    let options = async_nats::ConnectOptions::new()
        .name(format!("threadspace-gateway {gateway_id}"))
        // The default 60 s ping would let a dead server go unnoticed for minutes.
        .ping_interval(Duration::from_secs(5))
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => info!("nats connected"),
                async_nats::Event::Disconnected => warn!("nats disconnected"),
                async_nats::Event::SlowConsumer(sid) => warn!(sid, "nats slow consumer: messages dropped"),
                other => info!(event = %other, "nats event"),
            }
        });
    options
        .connect(config.nats_url.as_str())
        .await
        .map_err(|source| RunError::Nats { url: config.nats_url.clone(), source })
}

async fn accept_loop(state: &Arc<State>, listener: TcpListener, shutdown: &CancellationToken) {
    let permits = Arc::new(Semaphore::new(state.config.max_connections.get()));
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
        if let Some(size) = state.config.socket_send_buffer {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(size as usize);
        }
        let state = state.clone();
        let shutdown = shutdown.clone();
        let ctx = Arc::new(http::ConnContext { permit: Mutex::new(Some(permit)) });
        state.tracker.clone().spawn(async move {
            let service_state = state.clone();
            let service =
                service_fn(move |request| http::handle(service_state.clone(), ctx.clone(), request));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(state.config.header_read_timeout)
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

/// Periodic chores: key-set reloads and metric upkeep.
async fn housekeeping(state: Arc<State>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let reload_state = state.clone();
        let _ = tokio::task::spawn_blocking(move || reload_state.reload_keys_if_changed()).await;
        if let Some(handle) = &state.metrics {
            handle.run_upkeep();
        }
        state.typing.prune(std::time::Instant::now());
    }
}
