//! ThreadSpace api service: the REST API (accounts and sessions, people, history, search,
//! membership changes) on axum, with an OpenAPI document generated from the handlers at
//! `GET /v1/openapi.json` (docs/api.md, docs/accounts.md). It authenticates with the same rule
//! as the gateway (`threadspace_auth`), owns the token signing key (login, refresh), reads and
//! writes the directory and reads the archive in Postgres, and publishes directory changes into
//! the message stream for the gateways (`feed`).
//!
//! This file is the wiring: it builds the service's parts from the configuration and gives
//! each handler only the parts it extracts (see [`Parts`]).

mod audit;
mod body;
mod caller;
pub mod config;
mod error;
mod feed;
mod limits;
mod mail;
mod metrics;
mod parts;
mod policy;
mod rights;
mod routes;
mod secrets;
mod web;

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
use crate::feed::Feed;
use crate::limits::{FailureThrottle, RateLimiter};
use crate::mail::{FileMailer, LogMailer, Mailer};
use crate::parts::{
    Archive, Changes, Credentials, Draining, Jobs, Lifetimes, Minter, Parts, Sending, Telemetry,
};
use crate::secrets::Passwords;

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
    let signing_key = threadspace_protocol::token::SigningKey::load(&config.signing_key)?;
    let nats = threadspace_service::nats_options("threadspace-api".to_owned())
        .connect(
            threadspace_service::nats_addrs(&config.nats_url)
                .map_err(|e| RunError::Nats { url: config.nats_url.clone(), source: e.into() })?,
        )
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
    let accounts_pool = threadspace_store::pool_with_wait(
        &config.postgres_url,
        config.postgres_pool.get(),
        Duration::from_secs(5),
    )?;
    // The feed's own two connections: a publisher holds one (and the org's lock) while JetStream
    // acknowledges, so a slow or leaderless stream can never take the connections logins and
    // refreshes need.
    let feed_pool = threadspace_store::pool_with_wait(&config.postgres_url, 2, Duration::from_secs(2))?;
    let feed = Feed {
        pool: feed_pool,
        jetstream: async_nats::jetstream::new(nats.clone()),
        partitions: config.partitions.get(),
    };
    feed.ensure_subjects().await;
    let mailer: Arc<dyn Mailer> = match &config.mail_file {
        Some(path) => Arc::new(FileMailer::new(path.clone())),
        None => Arc::new(LogMailer),
    };
    let hash_concurrency = config.hash_concurrency.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        usize::from,
    );
    let minter = Arc::new(Minter::new(
        config.signing_key.clone(),
        signing_key,
        config.token_issuer.clone(),
        config.token_audience.clone(),
        config.access_token_ttl,
    ));
    let draining = CancellationToken::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let audit_store = threadspace_store::Accounts::new(accounts_pool);
    let parts = Parts {
        auth: Auth {
            keys: keys.clone(),
            directory,
            per_user: Arc::new(RateLimiter::new(config.rate_per_user)),
            bots: audit_store.clone(),
            per_credential: Arc::new(RateLimiter::new(config.rate_per_bot_credential)),
        },
        sending: Sending {
            publisher: threadspace_stream::Publisher {
                jetstream: feed.jetstream.clone(),
                partitions: config.partitions.get(),
                timeout: config.publish_timeout,
            },
            max_body_bytes: config.max_body_bytes.get(),
        },
        archive: Archive(archive),
        changes: Changes { store: audit_store.clone(), feed: feed.clone() },
        credentials: Credentials {
            passwords: Passwords::new(hash_concurrency),
            minter: minter.clone(),
            mailer,
            throttle: Arc::new(FailureThrottle::new()),
            mail_throttle: Arc::new(FailureThrottle::new()),
            lifetimes: Lifetimes {
                session: config.session_ttl,
                refresh_grace: config.refresh_grace,
                invite: config.invite_ttl,
                mail_token: config.mail_token_ttl,
            },
            public_url: config.public_url.as_str().into(),
        },
        telemetry: Telemetry(metrics.clone()),
        draining: Draining(draining.clone()),
        jobs: Jobs { wake: wake.clone() },
    };
    let rights = rights::Rights {
        changes: parts.changes.clone(),
        settle: config.erasure_settle,
        bridge_wait: config.erasure_bridge_wait,
        max_export_bytes: config.export_max_bytes.get(),
        export_retention: config.export_retention,
    };
    let limits = routes::IpLimits {
        per_ip: Arc::new(RateLimiter::new(config.rate_per_ip)),
        client_ip_header: config.client_ip_header.clone(),
    };
    let web = web::WebClient::new(&config.gateway_url, config.client_idle_after);
    let router = routes::router(parts, limits, web);
    let background = CancellationToken::new();
    let housekeeping = tokio::spawn(housekeeping(keys, minter, metrics, background.clone()));
    let sweeper = tokio::spawn(feed::sweep(feed, background.clone()));
    let pruner = tokio::spawn(audit::prune(audit_store, config.audit_retention, background.clone()));
    let jobs = tokio::spawn(rights::worker::run(rights, wake, background.clone()));
    ::metrics::gauge!(crate::metrics::READY).set(1.0);
    info!("api service started");

    let grace = config.shutdown_grace;
    let stopping = shutdown.clone();
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
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
    let _ = sweeper.await;
    let _ = pruner.await;
    let _ = jobs.await;
    let _ = tokio::time::timeout(Duration::from_secs(2), nats.drain()).await;
    info!("api service stopped");
    served
}

/// The OpenAPI document the service serves, without starting it (for docs and tests).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    routes::split().1
}

/// Periodic chores: key-set and signing-key reloads, metric upkeep.
async fn housekeeping(
    keys: Arc<Keys>,
    minter: Arc<Minter>,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (reload, minter) = (keys.clone(), minter.clone());
        let _ = tokio::task::spawn_blocking(move || {
            reload.reload_if_changed();
            minter.reload_if_changed(&reload.current());
        })
        .await;
        if let Some(handle) = &metrics {
            handle.run_upkeep();
        }
    }
}
