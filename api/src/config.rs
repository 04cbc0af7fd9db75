//! api service configuration: one clap `Config`, every flag also settable as
//! `THREADSPACE_API_<NAME>`. Validated before anything binds; a bad value exits 64 naming its
//! flag.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use threadspace_service::{check_connections, Jwks};

/// ThreadSpace api service: the REST API (accounts and sessions, people, history, search,
/// membership changes) and its OpenAPI document at /v1/openapi.json. It mints the access tokens
/// clients use here and on the WebSocket.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "threadspace-api",
    version,
    after_help = "`threadspace-api openapi` prints the OpenAPI document (docs/openapi.json) and exits."
)]
pub struct Config {
    /// Address to listen on for HTTP.
    #[arg(long, env = "THREADSPACE_API_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,

    /// NATS server URL(s), comma-separated (directory changes are published into the MESSAGES
    /// stream there).
    #[arg(long, env = "THREADSPACE_API_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// PostgreSQL URL of the directory and the message archive.
    #[arg(long, env = "THREADSPACE_API_POSTGRES_URL")]
    pub postgres_url: String,

    /// Postgres connections for authentication and membership changes.
    #[arg(long, env = "THREADSPACE_API_POSTGRES_POOL", default_value = "8")]
    pub postgres_pool: NonZeroUsize,

    /// Postgres connections for history pages and search (separate, so a heavy search cannot
    /// starve authentication).
    #[arg(long, env = "THREADSPACE_API_HISTORY_POOL", default_value = "8")]
    pub history_pool: NonZeroUsize,

    /// A history or search query running longer than this is cancelled (503 to the client).
    #[arg(long, env = "THREADSPACE_API_HISTORY_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub history_timeout: Duration,

    /// JWKS file with the Ed25519 public keys that sign access tokens (re-read when it changes).
    #[arg(long, env = "THREADSPACE_API_JWKS")]
    pub jwks: PathBuf,

    /// Required `iss` of access tokens.
    #[arg(long, env = "THREADSPACE_API_TOKEN_ISSUER", default_value = "threadspace")]
    pub token_issuer: String,

    /// Required `aud` of access tokens (the same tokens as the gateway's).
    #[arg(long, env = "THREADSPACE_API_TOKEN_AUDIENCE", default_value = "threadspace-gateway")]
    pub token_audience: String,

    /// Ed25519 signing key (kid + PKCS#8 PEM) the service mints access tokens with at login
    /// and refresh; its public half must be in the JWKS the gateways and this service read.
    #[arg(long, env = "THREADSPACE_API_SIGNING_KEY")]
    pub signing_key: PathBuf,

    /// Number of org partitions of the stream subjects; must match every other component
    /// (directory events go to the org's partition).
    #[arg(long, env = "THREADSPACE_API_PARTITIONS", default_value = "16")]
    pub partitions: std::num::NonZeroU32,

    /// Lifetime of an access token (short: a revoked session's tokens die with it, and the
    /// directory feed closes its sockets at once).
    #[arg(long, env = "THREADSPACE_API_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,

    /// Lifetime of a login session (its refresh-token family) from login.
    #[arg(long, env = "THREADSPACE_API_SESSION_TTL", default_value = "30days", value_parser = humantime::parse_duration)]
    pub session_ttl: Duration,

    /// A rotated refresh token presented again within this window gets a successor instead of
    /// revoking the session (two tabs refreshing at once); after it, reuse revokes the family.
    #[arg(long, env = "THREADSPACE_API_REFRESH_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub refresh_grace: Duration,

    /// How long an invite link stays valid.
    #[arg(long, env = "THREADSPACE_API_INVITE_TTL", default_value = "7days", value_parser = humantime::parse_duration)]
    pub invite_ttl: Duration,

    /// How long a password-reset or sign-up verification token stays valid.
    #[arg(long, env = "THREADSPACE_API_MAIL_TOKEN_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub mail_token_ttl: Duration,

    /// Where mail goes: a file that receives one JSON line per mail (local stacks, tests). Without
    /// it, mail is written to the log with its secret link redacted.
    #[arg(long, env = "THREADSPACE_API_MAIL_FILE")]
    pub mail_file: Option<PathBuf>,

    /// Base URL of the web client, for links in mail (invites, resets, verifications); the
    /// default suits a local stack, where the api service serves the client.
    #[arg(long, env = "THREADSPACE_API_PUBLIC_URL", default_value = "http://127.0.0.1:8090")]
    pub public_url: String,

    /// Where the web client connects its WebSocket (comma-separated; each `ws://` or `wss://`
    /// with a host, or a path on this origin such as `/v1/ws` when an ingress routes it to the
    /// gateways). The page's Content-Security-Policy allows exactly these.
    #[arg(long, env = "THREADSPACE_API_GATEWAY_URL", value_delimiter = ',', default_value = "/v1/ws")]
    pub gateway_url: Vec<String>,

    /// The web client tells the gateway its person is idle after this long without input.
    #[arg(long, env = "THREADSPACE_API_CLIENT_IDLE_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub client_idle_after: Duration,

    /// Requests per second each client IP may make (burst: 5 s worth).
    #[arg(long, env = "THREADSPACE_API_RATE_PER_IP", default_value = "50", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_per_ip: u32,

    /// Requests per second each authenticated user may make (burst: 5 s worth).
    #[arg(long, env = "THREADSPACE_API_RATE_PER_USER", default_value = "20", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_per_user: u32,

    /// Requests per second each bot credential (API token or incoming webhook) may make
    /// (burst: 5 s worth).
    #[arg(long, env = "THREADSPACE_API_RATE_PER_BOT_CREDENTIAL", default_value = "10", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_per_bot_credential: u32,

    /// Largest message body accepted over REST (sends and webhooks), in bytes; keep it equal
    /// to the gateways' `--max-body-bytes`.
    #[arg(long, env = "THREADSPACE_API_MAX_BODY_BYTES", default_value = "16384")]
    pub max_body_bytes: std::num::NonZeroUsize,

    /// How long a REST send may wait for JetStream's PubAck before answering 503 (retry with
    /// the same `client_msg_id`).
    #[arg(long, env = "THREADSPACE_API_PUBLISH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub publish_timeout: Duration,

    /// Behind a trusted proxy (an ingress): the request header it appends the client's address
    /// to (e.g. `x-forwarded-for`); its last entry is the client IP for rate limits and login
    /// delays. Leave unset when clients connect directly: a client could then forge it.
    #[arg(long, env = "THREADSPACE_API_CLIENT_IP_HEADER", value_parser = parse_header_name)]
    pub client_ip_header: Option<axum::http::HeaderName>,

    /// Password hashes computed at once (argon2id is CPU- and memory-bound; default: one per core).
    #[arg(long, env = "THREADSPACE_API_HASH_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub hash_concurrency: Option<u16>,

    /// How long audit records are kept (docs/accounts.md, "Audit log"); older ones are deleted
    /// hourly.
    #[arg(long, env = "THREADSPACE_API_AUDIT_RETENTION", default_value = "365days", value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,

    /// How long a finished export can be downloaded before its document is deleted
    /// (docs/api.md, "Data rights").
    #[arg(long, env = "THREADSPACE_API_EXPORT_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    pub export_retention: Duration,

    /// The largest export document in bytes; a larger export fails and says so.
    #[arg(long, env = "THREADSPACE_API_EXPORT_MAX_BYTES", default_value = "268435456")]
    pub export_max_bytes: std::num::NonZeroUsize,

    /// How long an erasure waits after deactivating the person before it looks for their
    /// messages: longer than any gateway's and this service's `--publish-timeout`, so no send
    /// of theirs is still in flight.
    #[arg(long, env = "THREADSPACE_API_ERASURE_SETTLE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub erasure_settle: Duration,

    /// How long an erasure waits for the broker-bridge to archive everything sent before it;
    /// the job fails after that (ask again once the bridge runs).
    #[arg(long, env = "THREADSPACE_API_ERASURE_BRIDGE_WAIT", default_value = "5min", value_parser = humantime::parse_duration)]
    pub erasure_bridge_wait: Duration,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "THREADSPACE_API_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Tokio worker threads (default: one per core).
    #[arg(long, env = "THREADSPACE_API_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=512))]
    pub worker_threads: Option<u16>,
}

pub use threadspace_service::ConfigError;

fn parse_header_name(value: &str) -> Result<axum::http::HeaderName, String> {
    axum::http::HeaderName::from_bytes(value.trim().as_bytes())
        .map_err(|_| format!("{value:?} is not an HTTP header name"))
}

impl Config {
    /// The URLs and files the service needs, checked before anything starts (each error names
    /// its flag; the binary exits 64).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let jwks = Jwks { path: &self.jwks, issuer: &self.token_issuer, audience: &self.token_audience };
        check_connections(&self.postgres_url, &self.nats_url, Some(jwks))?;
        if self.history_timeout.is_zero() {
            return Err(ConfigError("--history-timeout must be greater than zero".into()));
        }
        if self.publish_timeout.is_zero() || self.publish_timeout > Duration::from_secs(60) {
            return Err(ConfigError("--publish-timeout must be between 1 ms and 60 s".into()));
        }
        let stored_max = threadspace_protocol::stored::MAX_STORED_BODY_BYTES;
        if self.max_body_bytes.get() > stored_max {
            return Err(ConfigError(format!(
                "--max-body-bytes must be at most {stored_max} (the archive's limit: a longer body could be acked but never stored)"
            )));
        }
        threadspace_protocol::token::SigningKey::load(&self.signing_key).map_err(|e| {
            ConfigError(format!(
                "--signing-key {}: {}",
                self.signing_key.display(),
                threadspace_protocol::error_chain(&e)
            ))
        })?;
        for (flag, value) in [
            ("--access-token-ttl", self.access_token_ttl),
            ("--session-ttl", self.session_ttl),
            ("--invite-ttl", self.invite_ttl),
            ("--mail-token-ttl", self.mail_token_ttl),
        ] {
            if value < Duration::from_secs(60) || value > Duration::from_secs(366 * 86_400) {
                return Err(ConfigError(format!("{flag} must be between 1 minute and 366 days")));
            }
        }
        if self.export_retention < Duration::from_secs(60)
            || self.export_retention > Duration::from_secs(366 * 86_400)
        {
            return Err(ConfigError("--export-retention must be between 1 minute and 366 days".into()));
        }
        if self.export_max_bytes.get() > 1 << 30 {
            return Err(ConfigError("--export-max-bytes must be at most 1 GiB (1073741824)".into()));
        }
        if self.erasure_settle > Duration::from_secs(600) {
            return Err(ConfigError("--erasure-settle must be at most 10 minutes".into()));
        }
        if self.erasure_settle < self.publish_timeout {
            return Err(ConfigError(format!(
                "--erasure-settle ({}) must be at least --publish-timeout ({})",
                humantime::format_duration(self.erasure_settle),
                humantime::format_duration(self.publish_timeout)
            )));
        }
        if self.erasure_bridge_wait < Duration::from_secs(1)
            || self.erasure_bridge_wait > Duration::from_secs(86_400)
        {
            return Err(ConfigError("--erasure-bridge-wait must be between 1 second and 1 day".into()));
        }
        if self.audit_retention < Duration::from_secs(86_400)
            || self.audit_retention > Duration::from_secs(10 * 366 * 86_400)
        {
            return Err(ConfigError("--audit-retention must be between 1 day and 10 years".into()));
        }
        if self.refresh_grace > Duration::from_secs(300) {
            return Err(ConfigError("--refresh-grace must be at most 5 minutes".into()));
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return Err(ConfigError(format!(
                "--public-url {:?} must start with http:// or https://",
                self.public_url
            )));
        }
        if self.gateway_url.is_empty() {
            return Err(ConfigError("--gateway-url needs at least one URL".into()));
        }
        for url in &self.gateway_url {
            crate::web::check_gateway_url(url).map_err(|e| ConfigError(format!("--gateway-url {e}")))?;
        }
        if self.client_idle_after < Duration::from_secs(1)
            || self.client_idle_after > Duration::from_secs(86_400)
        {
            return Err(ConfigError("--client-idle-after must be between 1 second and 1 day".into()));
        }
        if self.token_issuer.is_empty() || self.token_audience.is_empty() {
            return Err(ConfigError("--token-issuer and --token-audience must not be empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(postgres_url: &str, extra: &[&str]) -> Result<Config, clap::Error> {
        let mut args = vec![
            "threadspace-api",
            "--postgres-url",
            postgres_url,
            "--jwks",
            "/nonexistent",
            "--signing-key",
            "/nonexistent.key",
        ];
        args.extend_from_slice(extra);
        Config::try_parse_from(args)
    }

    #[test]
    fn a_bad_flag_is_named() {
        let error = parse("postgres://u@127.0.0.1/db", &["--history-pool", "0"]).expect_err("zero pool");
        assert!(error.to_string().contains("--history-pool"), "{error}");
        let error =
            parse("postgres://u@127.0.0.1/db", &["--history-timeout", "soon"]).expect_err("not a duration");
        assert!(error.to_string().contains("--history-timeout"), "{error}");
    }

    #[test]
    fn validation_names_the_flag() {
        let config = parse("postgres://u@127.0.0.1/db", &[]).expect("parses");
        let error = config.validate().expect_err("the JWKS file does not exist");
        assert!(error.to_string().contains("--jwks /nonexistent"), "{error}");
        let config =
            parse("postgres://u@127.0.0.1/db", &["--nats-url", "nats://ok:4222, ::bad"]).expect("parses");
        let error = config.validate().expect_err("not a NATS URL");
        assert!(error.to_string().contains("--nats-url"), "{error}");
        let config =
            parse("postgres://u@127.0.0.1/db", &["--gateway-url", "http://x/v1/ws"]).expect("parses");
        let error = config.validate().expect_err("not a WebSocket URL");
        assert!(error.to_string().contains("--jwks"), "files are checked first: {error}");
        let config = parse("not a url at all ==", &[]).expect("parses");
        let error = config.validate().expect_err("not a postgres URL");
        assert!(error.to_string().contains("--postgres-url"), "{error}");
    }
}
