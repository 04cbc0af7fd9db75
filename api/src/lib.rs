//! ThreadSpace api service: the REST API (history, search, membership changes) on axum, with
//! an OpenAPI document generated from the handlers at `GET /v1/openapi.json` (docs/api.md).
//! It authenticates with the same rule as the gateway (`threadspace_auth`), reads the archive
//! and directory in Postgres, and announces membership changes on core NATS for the gateways.
//!
//! This file is the wiring: it builds the service's parts from the configuration and gives
//! each handler only the parts it extracts (see [`Parts`]).

mod caller;
pub mod config;
mod error;
mod metrics;
mod parts;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use threadspace_auth::Keys;
use threadspace_store::Directory;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;

use crate::caller::Auth;
use crate::parts::{Announcer, Archive, Draining, Parts, Telemetry};

/// Why the service could not start or run.
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
    #[error("cannot set up the Postgres pool")]
    Store(#[from] threadspace_store::StoreError),
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
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

/// Runs the service on `listener` until `shutdown` fires, then lets in-flight requests finish
/// within the grace period.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    metrics: Option<PrometheusHandle>,
) -> Result<(), RunError> {
    crate::metrics::describe();
    ::metrics::gauge!(crate::metrics::READY).set(0.0);
    let keys = Arc::new(Keys::load(&config.jwks, &config.token_issuer, &config.token_audience)?);
    let nats = threadspace_service::nats_options("threadspace-api".to_owned())
        .connect(config.nats_url.as_str())
        .await
        .map_err(|source| RunError::Nats { url: config.nats_url.clone(), source })?;
    let directory = Directory::new(threadspace_store::pool_with_wait(
        &config.postgres_url,
        config.postgres_pool.get(),
        Duration::from_secs(5),
    )?);
    let archive = threadspace_store::pool_with_timeout(
        &config.postgres_url,
        config.history_pool.get(),
        Duration::from_secs(2),
        Some(config.history_timeout),
    )?;
    let draining = CancellationToken::new();
    let parts = Parts {
        auth: Auth { keys: keys.clone(), directory },
        archive: Archive(archive),
        announcer: Announcer(nats.clone()),
        telemetry: Telemetry(metrics.clone()),
        draining: Draining(draining.clone()),
    };
    let router = routes::router(parts);
    let background = CancellationToken::new();
    let housekeeping = tokio::spawn(housekeeping(keys, metrics, background.clone()));
    ::metrics::gauge!(crate::metrics::READY).set(1.0);
    info!("api service started");

    let grace = config.shutdown_grace;
    let stopping = shutdown.clone();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        stopping.cancelled().await;
        draining.cancel();
        ::metrics::gauge!(crate::metrics::READY).set(0.0);
        info!(grace = ?grace, "draining");
    });
    let served = tokio::select! {
        served = server => served.map_err(RunError::Serve),
        // In-flight requests get the grace period once shutdown starts; then we stop anyway.
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!("grace period over with requests still in flight");
            Ok(())
        }
    };
    background.cancel();
    let _ = housekeeping.await;
    let _ = tokio::time::timeout(Duration::from_secs(2), nats.drain()).await;
    info!("api service stopped");
    served
}

/// The OpenAPI document the service serves, without starting it (for docs and tests).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    routes::api_routes().split_for_parts().1
}

/// Periodic chores: key-set reloads and metric upkeep.
async fn housekeeping(keys: Arc<Keys>, metrics: Option<PrometheusHandle>, shutdown: CancellationToken) {
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
    }
}
