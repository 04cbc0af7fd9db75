//! Shared gateway state: configuration, the hub, NATS and directory handles, the current key set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use metrics_exporter_prometheus::PrometheusHandle;
use threadspace_protocol::token::KeySet;
use threadspace_store::Directory;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hub::Hub;

/// Everything a request or connection task needs.
pub struct State {
    pub config: Config,
    pub gateway_id: String,
    pub hub: Hub,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub directory: Directory,
    /// Pool for history pages and search.
    pub history: threadspace_store::Pool,
    /// Read-marker writes, on the history pool: hellos keep the directory pool to themselves,
    /// so a flood of read markers can never starve connects.
    pub markers: Directory,
    pub metrics: Option<PrometheusHandle>,
    /// Parent of every connection's cancellation token.
    pub connections: CancellationToken,
    /// Every connection and request task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Bounds concurrent resume replays.
    pub replay_permits: Semaphore,
    /// Recent typists, for the per-user-and-channel typing throttle.
    pub typing: crate::typing::Throttle,
    /// Local and merged presence.
    pub presence: crate::presence::Presence,
    keys: RwLock<Arc<KeySet>>,
    keys_modified: RwLock<Option<SystemTime>>,
    draining: AtomicBool,
    epoch: Instant,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("gateway_id", &self.gateway_id).finish_non_exhaustive()
    }
}

/// Parts `State::new` needs.
pub struct StateParts {
    pub config: Config,
    pub hub: Hub,
    pub nats: async_nats::Client,
    pub directory: Directory,
    pub history: threadspace_store::Pool,
    pub metrics: Option<PrometheusHandle>,
    pub keys: KeySet,
}

impl State {
    pub fn new(parts: StateParts) -> Arc<Self> {
        let jetstream = async_nats::jetstream::new(parts.nats.clone());
        let keys_modified = modified(&parts.config.jwks);
        Arc::new(Self {
            gateway_id: parts.config.gateway_id(),
            replay_permits: Semaphore::new(parts.config.replay_concurrency.get()),
            config: parts.config,
            hub: parts.hub,
            nats: parts.nats,
            jetstream,
            directory: parts.directory,
            markers: Directory::new(parts.history.clone()),
            history: parts.history,
            metrics: parts.metrics,
            connections: CancellationToken::new(),
            tracker: TaskTracker::new(),
            typing: crate::typing::Throttle::default(),
            presence: crate::presence::Presence::new(rand::random()),
            keys: RwLock::new(Arc::new(parts.keys)),
            keys_modified: RwLock::new(keys_modified),
            draining: AtomicBool::new(false),
            epoch: Instant::now(),
        })
    }

    /// The current key set.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.read().expect("key lock is never poisoned").clone()
    }

    /// Re-reads the JWKS file if it changed; a bad file keeps the old keys and logs why.
    pub fn reload_keys_if_changed(&self) {
        let path = &self.config.jwks;
        let now = modified(path);
        if now == *self.keys_modified.read().expect("key lock is never poisoned") {
            return;
        }
        match KeySet::load(path, &self.config.token_issuer, &self.config.token_audience) {
            Ok(keys) => {
                *self.keys.write().expect("key lock is never poisoned") = Arc::new(keys);
                *self.keys_modified.write().expect("key lock is never poisoned") = now;
                tracing::info!(path = %path.display(), "token key set reloaded");
            }
            Err(error) => {
                tracing::warn!(error = %anyhow_chain(&error), "token key set changed but is invalid; keeping the old keys");
                *self.keys_modified.write().expect("key lock is never poisoned") = now;
            }
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Milliseconds since the gateway started (monotonic).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Inactivity after which a connection counts as idle, in milliseconds.
    pub fn idle_after_ms(&self) -> u64 {
        self.config.idle_after.as_millis() as u64
    }

    /// How long a connection may stay silent.
    pub fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Formats an error with its sources, `a: b: c`.
pub use threadspace_protocol::error_chain as anyhow_chain;
