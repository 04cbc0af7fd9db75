//! How every ThreadSpace server (`threadspace-gateway`, `threadspace-api`,
//! `threadspace-bridge`) starts and stops, in one place (README.md, "Running a gateway"):
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

/// Checks `--nats-url` (comma-separated URLs); the error names the flag and the bad URL.
pub fn check_nats_urls(urls: &str) -> Result<(), String> {
    for url in urls.split(',') {
        url.trim()
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| format!("--nats-url {url:?} is not a NATS URL: {e}"))?;
    }
    Ok(())
}

/// Checks that `--jwks` is a usable key set for the issuer and audience; the error names the
/// flag, the file and why.
pub fn check_jwks(path: &std::path::Path, issuer: &str, audience: &str) -> Result<(), String> {
    threadspace_protocol::token::KeySet::load(path, issuer, audience)
        .map(|_| ())
        .map_err(|e| format!("--jwks {}: {}", path.display(), error_chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_key_checks_name_the_flag_and_the_value() {
        assert_eq!(check_nats_urls("nats://127.0.0.1:4222, nats://127.0.0.2:4222"), Ok(()));
        let error = check_nats_urls("nats://127.0.0.1:4222,nats://[::1").expect_err("a bad second URL");
        assert!(error.starts_with("--nats-url \"nats://[::1\""), "{error}");
        let error =
            check_jwks(std::path::Path::new("/nonexistent/jwks.json"), "iss", "aud").expect_err("no file");
        assert!(error.starts_with("--jwks /nonexistent/jwks.json: "), "{error}");
    }
}
