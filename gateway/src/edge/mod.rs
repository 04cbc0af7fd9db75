//! The edge: client WebSockets. The HTTP listener's routes (upgrade, health, readiness,
//! metrics), the opening handshake, the reader and writer of each connection, frame reading
//! and message assembly. Everything a connection needs is in [`Edge`], built once by the
//! wiring (lib.rs) and shared by every connection.

pub(crate) mod assembler;
pub(crate) mod conn;
pub(crate) mod frame_reader;
pub(crate) mod handshake;
pub(crate) mod http;
pub(crate) mod read;
pub(crate) mod sessions;
pub(crate) mod wire;
pub(crate) mod write;

use std::sync::Arc;
use std::time::Duration;

use threadspace_auth::Keys;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::hub::Hub;
use crate::delivery::publish::Publisher;
use crate::delivery::replay::Replayer;
use crate::events::presence::Presence;
use crate::events::reads::Reads;
use crate::events::typing::Typing;

/// What every connection shares: its limits, and a handle on each part it talks to.
pub(crate) struct Edge {
    pub settings: Settings,
    /// Verifying keys, reloaded by the wiring's housekeeping.
    pub keys: Arc<Keys>,
    /// Sessions at `hello` (its own pool: read markers cannot starve connects), with the
    /// hello cache behind it.
    pub sessions: sessions::Sessions,
    pub hub: Arc<Hub>,
    pub publisher: Publisher,
    pub replayer: Replayer,
    pub presence: Arc<Presence>,
    pub typing: Typing,
    pub reads: Reads,
    /// Parent of every connection's cancellation token.
    pub connections: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The connection limits and timings, from the gateway's flags (`threadspace-gateway --help`).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub allowed_origins: Vec<String>,
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    pub max_body_bytes: usize,
    pub frames_per_second: u32,
    pub frame_burst: u32,
    pub flood_strikes: u32,
    pub sends_per_second: u32,
    pub send_burst: u32,
    pub hello_timeout: Duration,
    pub heartbeat: Duration,
    pub idle_timeout: Duration,
    pub idle_after: Duration,
    pub write_timeout: Duration,
    pub reconnect_spread: Duration,
}
