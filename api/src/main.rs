//! `threadspace-api`: parse config, init telemetry, bind, serve until SIGTERM/SIGINT, drain.
//! `threadspace-api openapi` prints the OpenAPI document without starting anything.

use std::process::ExitCode;

use clap::Parser as _;
use threadspace_api::{openapi_document, run, Config};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("openapi") {
        let document = openapi_document().to_pretty_json().expect("the OpenAPI document serializes");
        println!("{document}");
        return ExitCode::SUCCESS;
    }
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(64);
        }
    };
    if let Err(error) = config.validate() {
        eprintln!("threadspace-api: {error}");
        return ExitCode::from(64);
    }
    tracing_subscriber::fmt()
        // Colours only on a terminal: log files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        builder.worker_threads(threads.into());
    }
    let runtime = builder.enable_all().build().expect("tokio runtime builds");
    runtime.block_on(async move {
        let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            .map(|b| b.install_recorder())
        {
            Ok(Ok(handle)) => Some(handle),
            _ => {
                tracing::warn!("prometheus recorder not installed; /metrics disabled");
                None
            }
        };
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, listen = %config.listen, "cannot bind");
                return ExitCode::from(69);
            }
        };
        let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(listen = %bound, "listening for HTTP (REST under /v1, OpenAPI at /v1/openapi.json)");
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        match run(config, listener, shutdown, metrics).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = %threadspace_protocol::error_chain(&error), "api service failed");
                ExitCode::from(error.exit_code())
            }
        }
    })
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
