//! Gateway configuration: one clap `Config`, every flag also settable as
//! `THREADSPACE_GATEWAY_<NAME>`. Values are validated into typed values before anything binds.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use threadspace_service::{check_connections, Jwks};

/// ThreadSpace gateway: terminates client WebSockets and the REST API, publishes messages to
/// JetStream and fans stored messages out to connected members.
#[derive(Clone, Debug, Parser)]
#[command(name = "threadspace-gateway", version)]
pub struct Config {
    /// Address to listen on for WebSocket and HTTP.
    #[arg(long, env = "THREADSPACE_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Name of this gateway in logs and heartbeats (default: gw-<pid>).
    #[arg(long, env = "THREADSPACE_GATEWAY_ID")]
    pub gateway_id: Option<String>,

    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "THREADSPACE_GATEWAY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// PostgreSQL URL of the directory (users, channels, memberships).
    #[arg(long, env = "THREADSPACE_GATEWAY_POSTGRES_URL")]
    pub postgres_url: String,

    /// Postgres connections in the pool.
    #[arg(long, env = "THREADSPACE_GATEWAY_POSTGRES_POOL", default_value = "16")]
    pub postgres_pool: NonZeroUsize,

    /// Postgres connections for read-marker writes (separate from the directory pool that
    /// hellos use, so a flood of markers cannot starve connects). The flag keeps its name from
    /// when the gateway also served history; history is the api service's now.
    #[arg(long, env = "THREADSPACE_GATEWAY_HISTORY_POOL", default_value = "8")]
    pub history_pool: NonZeroUsize,

    /// A read-marker write running longer than this is cancelled (the client gets `unavailable`
    /// and retries).
    #[arg(long, env = "THREADSPACE_GATEWAY_HISTORY_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub history_timeout: Duration,

    /// JWKS file with the Ed25519 public keys that sign access tokens (re-read when it changes).
    #[arg(long, env = "THREADSPACE_GATEWAY_JWKS")]
    pub jwks: PathBuf,

    /// Required `iss` of access tokens.
    #[arg(long, env = "THREADSPACE_GATEWAY_TOKEN_ISSUER", default_value = "threadspace")]
    pub token_issuer: String,

    /// Required `aud` of access tokens.
    #[arg(long, env = "THREADSPACE_GATEWAY_TOKEN_AUDIENCE", default_value = "threadspace-gateway")]
    pub token_audience: String,

    /// Number of org partitions of the message subjects; must match every other component.
    #[arg(long, env = "THREADSPACE_GATEWAY_PARTITIONS", default_value = "16")]
    pub partitions: NonZeroU32,

    /// Replicas of the MESSAGES stream (1 locally, 3 in production). A stream found with fewer
    /// is raised to it (logged); one with more, or one the cluster cannot raise, stops the
    /// gateway with an error naming both counts.
    #[arg(long, env = "THREADSPACE_GATEWAY_STREAM_REPLICAS", default_value = "1")]
    pub stream_replicas: NonZeroUsize,

    /// Bytes of the hello cache (the last directory read of each login session, in NATS
    /// memory, at the `--stream-replicas` count), which answers hellos while Postgres is down
    /// (docs/drills.md, "Hellos without PostgreSQL"). When full, the oldest copies go. About
    /// 1 KiB per login session; every NATS node's `max_memory_store` must hold it. 0 turns the
    /// cache off: hellos then fail while Postgres is down.
    #[arg(long, env = "THREADSPACE_GATEWAY_HELLO_CACHE_MAX_BYTES", default_value = "134217728")]
    pub hello_cache_max_bytes: u64,

    /// Age after which JetStream drops messages (Postgres keeps them): the replayable tail.
    #[arg(long, env = "THREADSPACE_GATEWAY_STREAM_MAX_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub stream_max_age: Duration,

    /// Origins allowed to open WebSockets (exact match, comma-separated; `*` allows any).
    /// Requests without an Origin header (non-browser clients) are always allowed.
    #[arg(
        long,
        env = "THREADSPACE_GATEWAY_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:3000"
    )]
    pub allowed_origins: Vec<String>,

    /// Time allowed to send the HTTP request headers (slowloris guard).
    #[arg(long, env = "THREADSPACE_GATEWAY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Time allowed between the WebSocket upgrade and a valid `hello`.
    #[arg(long, env = "THREADSPACE_GATEWAY_HELLO_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub hello_timeout: Duration,

    /// Interval of server pings; also sent to clients as `heartbeat_ms`.
    #[arg(long, env = "THREADSPACE_GATEWAY_HEARTBEAT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,

    /// A connection with no client frame (pongs included) for this long is closed (4000).
    #[arg(long, env = "THREADSPACE_GATEWAY_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Interval of this gateway's presence heartbeats to the other gateways; a gateway silent
    /// for 3 intervals has its users marked offline everywhere (keep 3 × this well under 10 s).
    #[arg(long, env = "THREADSPACE_GATEWAY_PRESENCE_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub presence_interval: Duration,

    /// How long a user whose last connection here closed still counts as present before this
    /// gateway announces them offline: a reconnect within it (a page reload, a network blip)
    /// is never announced. It delays a real departure's `offline` by as much (at most 2s).
    #[arg(long, env = "THREADSPACE_GATEWAY_OFFLINE_GRACE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub offline_grace: Duration,

    /// A connection with no `send`, `typing`, `read` or `presence online` for this long counts
    /// as idle.
    #[arg(long, env = "THREADSPACE_GATEWAY_IDLE_AFTER", default_value = "10m", value_parser = humantime::parse_duration)]
    pub idle_after: Duration,

    /// Fault injection for the load gate's own tests: hold every stored message this long
    /// before fanning it out. Never set it in production.
    #[arg(long, hide = true, default_value = "0s", value_parser = humantime::parse_duration)]
    pub fault_fanout_delay: Duration,

    /// Fault injection for tests: every resume replay acts as if its consumer sat on a replica
    /// that had applied nothing yet, so the stream leader serves the whole range. Never set it
    /// in production.
    #[arg(long, hide = true)]
    pub fault_replay_lagging_replica: bool,

    /// Fault injection for tests: the fanout's consumer can never be created (as while the
    /// JetStream API waits for a meta leader), so the fanout reads every record from the
    /// stream leader. Never set it in production.
    #[arg(long, hide = true)]
    pub fault_fanout_no_consumer: bool,

    /// A write to a client socket that takes longer than this ends the connection.
    #[arg(long, env = "THREADSPACE_GATEWAY_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// Largest single WebSocket frame accepted, in bytes.
    #[arg(long, env = "THREADSPACE_GATEWAY_MAX_FRAME_BYTES", default_value = "65536")]
    pub max_frame_bytes: NonZeroUsize,

    /// Largest message assembled from fragments, in bytes.
    #[arg(long, env = "THREADSPACE_GATEWAY_MAX_MESSAGE_BYTES", default_value = "65536")]
    pub max_message_bytes: NonZeroUsize,

    /// Largest message body, in bytes.
    #[arg(long, env = "THREADSPACE_GATEWAY_MAX_BODY_BYTES", default_value = "16384")]
    pub max_body_bytes: NonZeroUsize,

    /// Frames queued for one client before it is disconnected as a slow consumer (4008).
    #[arg(long, env = "THREADSPACE_GATEWAY_OUTBOUND_QUEUE", default_value = "512")]
    pub outbound_queue: NonZeroUsize,

    /// Client frames per second per connection (all kinds, fragments included).
    #[arg(long, env = "THREADSPACE_GATEWAY_FRAMES_PER_SECOND", default_value = "50")]
    pub frames_per_second: NonZeroU32,

    /// Burst allowance on top of `frames-per-second`.
    #[arg(long, env = "THREADSPACE_GATEWAY_FRAME_BURST", default_value = "100")]
    pub frame_burst: NonZeroU32,

    /// Messages sent per second per user on this gateway (all of the user's connections).
    #[arg(long, env = "THREADSPACE_GATEWAY_SENDS_PER_SECOND", default_value = "10")]
    pub sends_per_second: NonZeroU32,

    /// Burst allowance on top of `sends-per-second`.
    #[arg(long, env = "THREADSPACE_GATEWAY_SEND_BURST", default_value = "20")]
    pub send_burst: NonZeroU32,

    /// Rate-limited frames tolerated within 10 s before the connection is closed (4029).
    #[arg(long, env = "THREADSPACE_GATEWAY_FLOOD_STRIKES", default_value = "50")]
    pub flood_strikes: NonZeroU32,

    /// Concurrent connections accepted; the TCP connection of any beyond it is closed at once,
    /// before a byte of HTTP is read (refusing costs nothing). Keep below the file limit.
    #[arg(long, env = "THREADSPACE_GATEWAY_MAX_CONNECTIONS", default_value = "18000")]
    pub max_connections: NonZeroUsize,

    /// Runtime worker threads (default: one per CPU). Match it to the CPU limit; several
    /// gateways sharing few cores run better with 1 each (fewer cross-thread wake-ups).
    #[arg(long, env = "THREADSPACE_GATEWAY_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: Option<u16>,

    /// Messages replayed to one resuming client before it is told to page history instead.
    #[arg(long, env = "THREADSPACE_GATEWAY_MAX_REPLAY", default_value = "10000")]
    pub max_replay: NonZeroUsize,

    /// Resumes replayed at the same time (a reconnect storm queues behind this).
    #[arg(long, env = "THREADSPACE_GATEWAY_REPLAY_CONCURRENCY", default_value = "64")]
    pub replay_concurrency: NonZeroUsize,

    /// How long to wait for JetStream's PubAck before answering `unavailable`.
    #[arg(long, env = "THREADSPACE_GATEWAY_PUBLISH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub publish_timeout: Duration,

    /// Total time allowed for a graceful shutdown (keep below terminationGracePeriodSeconds).
    #[arg(long, env = "THREADSPACE_GATEWAY_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Clients told to reconnect at shutdown wait a random delay up to this (spreads the storm).
    #[arg(long, env = "THREADSPACE_GATEWAY_RECONNECT_SPREAD", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reconnect_spread: Duration,

    /// SO_SNDBUF for client sockets (bytes); unset keeps the kernel's autotuning.
    #[arg(long, env = "THREADSPACE_GATEWAY_SOCKET_SEND_BUFFER")]
    pub socket_send_buffer: Option<u32>,
}

pub use threadspace_service::ConfigError;

impl Config {
    /// Cross-field checks that clap cannot express, and the URLs and files the binary needs,
    /// checked before anything starts (each error names its flag; the binary exits 64).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let jwks = Jwks { path: &self.jwks, issuer: &self.token_issuer, audience: &self.token_audience };
        check_connections(&self.postgres_url, &self.nats_url, Some(jwks))?;
        if self.max_message_bytes < self.max_frame_bytes {
            return Err(ConfigError("--max-message-bytes must be at least --max-frame-bytes".into()));
        }
        let stored_max = threadspace_protocol::stored::MAX_STORED_BODY_BYTES;
        if self.max_body_bytes.get() > stored_max {
            return Err(ConfigError(format!(
                "--max-body-bytes must be at most {stored_max} (the archive's limit: a longer body could be acked but never stored)"
            )));
        }
        if self.max_body_bytes.get() + 1024 > self.max_message_bytes.get() {
            return Err(ConfigError(
                "--max-body-bytes must leave 1024 bytes of --max-message-bytes for the frame envelope".into(),
            ));
        }
        if self.idle_timeout <= self.heartbeat {
            return Err(ConfigError("--idle-timeout must be longer than --heartbeat".into()));
        }
        if self.shutdown_grace <= self.reconnect_spread {
            return Err(ConfigError("--shutdown-grace must be longer than --reconnect-spread".into()));
        }
        for duration in [
            self.hello_timeout,
            self.heartbeat,
            self.header_read_timeout,
            self.write_timeout,
            self.publish_timeout,
            self.history_timeout,
        ] {
            if duration.is_zero() {
                return Err(ConfigError("timeouts and intervals must be greater than zero".into()));
            }
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&self.presence_interval) {
            return Err(ConfigError("--presence-interval must be between 100ms and 60s".into()));
        }
        if self.offline_grace > Duration::from_secs(2) {
            return Err(ConfigError(
                "--offline-grace must be at most 2s (it delays every offline under the 10 s presence SLO)"
                    .into(),
            ));
        }
        if self.idle_after < Duration::from_secs(1) {
            return Err(ConfigError("--idle-after must be at least 1s".into()));
        }
        if let Some(id) = &self.gateway_id {
            if !threadspace_protocol::subjects::valid_gateway_id(id) {
                return Err(ConfigError(format!(
                    "--gateway-id {id:?} must be 1 to 64 characters of [A-Za-z0-9_-] (it names a NATS subject)"
                )));
            }
        }
        if self.stream_max_age < Duration::from_secs(300) {
            return Err(ConfigError("--stream-max-age must be at least 5m (it bounds resume replay)".into()));
        }
        if self.token_issuer.is_empty() || self.token_audience.is_empty() {
            return Err(ConfigError("--token-issuer and --token-audience must not be empty".into()));
        }
        Ok(())
    }

    /// The gateway's id for logs and heartbeats.
    pub fn gateway_id(&self) -> String {
        self.gateway_id.clone().unwrap_or_else(|| format!("gw-{}", std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JWKS file that exists for the life of the test process (validate reads it).
    fn jwks() -> &'static str {
        static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        PATH.get_or_init(|| {
            let path =
                std::env::temp_dir().join(format!("threadspace-gateway-config-{}.json", std::process::id()));
            let key = threadspace_protocol::token::SigningKey::generate("config-test");
            threadspace_protocol::token::write_key_set(&path, &[&key]).expect("a temporary JWKS is written");
            path.to_string_lossy().into_owned()
        })
    }

    /// The required flags (unless `extra` gives its own) and `extra`.
    fn parse(extra: &[&str]) -> Result<Config, clap::Error> {
        let mut args = vec!["threadspace-gateway"];
        for (flag, value) in [("--postgres-url", "postgres://x@127.0.0.1/db"), ("--jwks", jwks())] {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend_from_slice(extra);
        Config::try_parse_from(args)
    }

    #[test]
    fn defaults_are_valid() {
        parse(&[]).expect("parses").validate().expect("defaults validate");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let error = parse(&["--listen", "nowhere"]).expect_err("bad address");
        assert!(error.to_string().contains("--listen"), "{error}");
        let error = parse(&["--hello-timeout", "soon"]).expect_err("bad duration");
        assert!(error.to_string().contains("--hello-timeout"), "{error}");
        let error = parse(&["--partitions", "0"]).expect_err("zero partitions");
        assert!(error.to_string().contains("--partitions"), "{error}");
        let error =
            parse(&["--max-frame-bytes", "100000"]).expect("parses").validate().expect_err("frame > message");
        assert!(error.to_string().contains("--max-message-bytes"), "{error}");
        let error =
            parse(&["--idle-timeout", "5s"]).expect("parses").validate().expect_err("idle < heartbeat");
        assert!(error.to_string().contains("--idle-timeout"), "{error}");
        for (flags, named) in [
            (&["--presence-interval", "50ms"][..], "--presence-interval"),
            (&["--presence-interval", "2m"], "--presence-interval"),
            (&["--idle-after", "500ms"], "--idle-after"),
            (&["--gateway-id", "gw.1"], "--gateway-id"),
            (&["--gateway-id", ""], "--gateway-id"),
        ] {
            let error = parse(flags).expect("parses").validate().expect_err("invalid");
            assert!(error.to_string().contains(named), "{flags:?}: {error}");
        }
        parse(&["--gateway-id", "gw-2_a"]).expect("parses").validate().expect("a valid id");
        for (flags, named) in [
            (&["--jwks", "/nonexistent/jwks.json"][..], "--jwks"),
            (&["--postgres-url", "postgres://127.0.0.1:notaport/db"], "--postgres-url"),
            (&["--nats-url", "nats://[::1"], "--nats-url"),
            (&["--offline-grace", "3s"], "--offline-grace"),
            (
                &["--max-body-bytes", "70000", "--max-message-bytes", "80000", "--max-frame-bytes", "80000"],
                "--max-body-bytes",
            ),
        ] {
            let error = parse(flags).expect("parses").validate().expect_err("invalid");
            assert!(error.to_string().contains(named), "{flags:?}: {error}");
        }
    }
}
