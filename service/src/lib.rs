//! How every ThreadSpace server (`threadspace-gateway`, `threadspace-api`,
//! `threadspace-bridge`) starts and stops, in one place (README.md, "Running a gateway"), and
//! how the command-line tools parse flags and log ([`parse_cli`], [`init_cli_logs`]):
//!
//! - flags: `--help`/`--version` exit 0; a flag clap refuses, or one the binary's own
//!   validation refuses, prints what was wrong and exits **64**;
//! - logs: `RUST_LOG` filter (default `info`), colours only on a terminal;
//! - a Prometheus recorder (the binary serves it at `/metrics`);
//! - the listener: an address that cannot be bound exits **69**;
//! - SIGTERM or SIGINT cancels the shutdown token the server drains on;
//! - a failure while running is logged with its causes and exits with the server's code
//!   ([`Failure::exit_code`], 1 unless it says otherwise).

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use metrics_exporter_prometheus::PrometheusHandle;
use threadspace_protocol::error_chain;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Exit code of a configuration error (BSD `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code of an address that cannot be bound (BSD `EX_UNAVAILABLE`).
pub const EXIT_BIND: u8 = 69;

/// A server's failure while running.
pub trait Failure: std::error::Error + 'static {
    /// The process exit code (64 for configuration found unusable at start, 1 by default).
    fn exit_code(&self) -> u8 {
        1
    }
}

/// Parses the command line into `C` and runs the binary's own `validate`; on any error
/// prints it (naming the flag) and returns the exit code to leave with.
pub fn configure<C: clap::Parser, E: Display>(
    binary: &str,
    validate: impl FnOnce(&C) -> Result<(), E>,
) -> Result<C, ExitCode> {
    let config = match C::try_parse() {
        Ok(config) => config,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            let _ = error.print();
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    };
    match validate(&config) {
        Ok(()) => Ok(config),
        Err(error) => {
            eprintln!("{binary}: {error}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// Parses a command-line tool's flags (`threadspace-dev`, `threadspace-store`, `loadgen`):
/// `--help`/`--version` exit 0, a flag clap refuses prints why and leaves with 64.
pub fn parse_cli<C: clap::Parser>() -> Result<C, ExitCode> {
    configure::<C, std::convert::Infallible>("", |_| Ok(()))
}

/// A command-line tool's logs: to stderr (stdout is the tool's output), filtered by
/// `RUST_LOG` or else `default_filter`, colours only on a terminal.
pub fn init_cli_logs(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// What differs between the servers' start-ups.
#[derive(Debug)]
pub struct Server<'a> {
    /// Names the failure in the log ("gateway failed").
    pub name: &'a str,
    pub listen: SocketAddr,
    /// Tokio worker threads; `None` is one per core.
    pub worker_threads: Option<u16>,
    /// What the listener serves, for the start-up log line.
    pub serves: &'a str,
    /// Histogram buckets of the Prometheus recorder, in seconds.
    pub buckets: &'a [f64],
}

/// Latency buckets from 1 ms to 10 s: the request and delivery paths.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Starts logging, the runtime, the metrics recorder and the listener, then runs `run` until
/// it returns (it drains when the shutdown token is cancelled by SIGTERM or SIGINT).
pub fn serve<C, F, Fut, E>(server: Server<'_>, config: C, run: F) -> ExitCode
where
    F: FnOnce(C, TcpListener, CancellationToken, Option<PrometheusHandle>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Failure,
{
    init_logs();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = server.worker_threads {
        builder.worker_threads(threads.into());
    }
    let runtime = builder.enable_all().build().expect("the tokio runtime builds");
    runtime.block_on(async move {
        let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(server.buckets)
            .map(|b| b.install_recorder())
        {
            Ok(Ok(handle)) => Some(handle),
            _ => {
                tracing::warn!("prometheus recorder not installed; /metrics disabled");
                None
            }
        };
        let listener = match TcpListener::bind(server.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, listen = %server.listen, "cannot bind");
                return ExitCode::from(EXIT_BIND);
            }
        };
        let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(listen = %bound, "listening: {}", server.serves);
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        match run(config, listener, shutdown, metrics).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "{} failed", server.name);
                ExitCode::from(error.exit_code())
            }
        }
    })
}

/// Logs to stdout, filtered by `RUST_LOG` (default `info`); colours only on a terminal, so log
/// files stay greppable.
pub fn init_logs() {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("the SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("the SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

/// How every server connects to NATS: named `name` (it shows in the server's connection
/// list), pinging every 5 s (the default 60 s would let a dead server go unnoticed for minutes),
/// giving up a connection attempt after 5 s, and logging connection events.
pub fn nats_options(name: String) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .name(name)
        .ping_interval(std::time::Duration::from_secs(5))
        .connection_timeout(std::time::Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("nats connected"),
                async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                async_nats::Event::SlowConsumer(sid) => {
                    tracing::warn!(sid, "nats slow consumer: messages dropped")
                }
                other => tracing::info!(event = %other, "nats event"),
            }
        })
}

/// The servers of a `--nats-url` list (comma-separated, as [`check_connections`] accepts):
/// the client connects to any of them and, when one fails, to the next.
pub fn nats_addrs(urls: &str) -> std::io::Result<Vec<async_nats::ServerAddr>> {
    urls.split(',')
        .map(|url| url.trim().parse::<async_nats::ServerAddr>().map_err(std::io::Error::other))
        .collect()
}

/// A flag value that parses but cannot be used; the message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// The verifying keys a server loads: `--jwks` with the issuer and audience tokens must carry.
#[derive(Clone, Copy, Debug)]
pub struct Jwks<'a> {
    pub path: &'a std::path::Path,
    pub issuer: &'a str,
    pub audience: &'a str,
}

/// Checks what every server connects to before it starts: `--postgres-url`, `--nats-url`
/// (comma-separated) and, for the servers that verify tokens, `--jwks` (it is re-read when it
/// changes, but must be usable at start). Each error names its flag and the bad value.
pub fn check_connections(
    postgres_url: &str,
    nats_urls: &str,
    jwks: Option<Jwks<'_>>,
) -> Result<(), ConfigError> {
    postgres_url
        .parse::<tokio_postgres::Config>()
        .map_err(|e| ConfigError(format!("--postgres-url is not a PostgreSQL URL: {e}")))?;
    for url in nats_urls.split(',') {
        url.trim()
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| ConfigError(format!("--nats-url {url:?} is not a NATS URL: {e}")))?;
    }
    if let Some(Jwks { path, issuer, audience }) = jwks {
        threadspace_protocol::token::KeySet::load(path, issuer, audience)
            .map_err(|e| ConfigError(format!("--jwks {}: {}", path.display(), error_chain(&e))))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: &str = "postgres://u@127.0.0.1:5432/db";

    #[test]
    fn connection_checks_name_the_flag_and_the_value() {
        assert!(check_connections(PG, "nats://127.0.0.1:4222, nats://127.0.0.2:4222", None).is_ok());
        let error =
            check_connections(PG, "nats://127.0.0.1:4222,nats://[::1", None).expect_err("a bad second URL");
        assert!(error.0.starts_with("--nats-url \"nats://[::1\""), "{error}");
        let error = check_connections("postgres://127.0.0.1:notaport/x", "nats://127.0.0.1", None)
            .expect_err("a bad port");
        assert!(error.0.starts_with("--postgres-url "), "{error}");
        let jwks =
            Jwks { path: std::path::Path::new("/nonexistent/jwks.json"), issuer: "iss", audience: "aud" };
        let error = check_connections(PG, "nats://127.0.0.1", Some(jwks)).expect_err("no file");
        assert!(error.0.starts_with("--jwks /nonexistent/jwks.json: "), "{error}");
        assert!(error.to_string().starts_with("invalid configuration: --jwks"), "{error}");
    }
}
