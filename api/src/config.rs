//! api service configuration: one clap `Config`, every flag also settable as
//! `THREADSPACE_API_<NAME>`. Validated before anything binds; a bad value exits 64 naming its
//! flag.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use threadspace_service::{check_connections, Jwks};

/// ThreadSpace api service: the REST API (history, search, membership changes) and its
/// OpenAPI document at /v1/openapi.json. Clients authenticate with the same bearer tokens as
/// on the WebSocket.
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

    /// NATS server URL(s), comma-separated (membership changes are announced there).
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

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "THREADSPACE_API_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Tokio worker threads (default: one per core).
    #[arg(long, env = "THREADSPACE_API_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=512))]
    pub worker_threads: Option<u16>,
}

pub use threadspace_service::ConfigError;

impl Config {
    /// The URLs and files the service needs, checked before anything starts (each error names
    /// its flag; the binary exits 64).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let jwks = Jwks { path: &self.jwks, issuer: &self.token_issuer, audience: &self.token_audience };
        check_connections(&self.postgres_url, &self.nats_url, Some(jwks))?;
        if self.history_timeout.is_zero() {
            return Err(ConfigError("--history-timeout must be greater than zero".into()));
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
        let mut args = vec!["threadspace-api", "--postgres-url", postgres_url, "--jwks", "/nonexistent"];
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
        let config = parse("not a url at all ==", &[]).expect("parses");
        let error = config.validate().expect_err("not a postgres URL");
        assert!(error.to_string().contains("--postgres-url"), "{error}");
    }
}
