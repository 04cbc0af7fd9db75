//! The ThreadSpace system of record in PostgreSQL: schema migrations (`migrate`), the directory
//! of orgs, users, channels and memberships (`directory`), the partitioned `messages` table
//! with history and search (`messages`), and fast bulk seeding (`seed`).
//!
//! **Invariant:** nothing on the live message path (send → JetStream → fanout) calls into this
//! crate; the gateway reads the directory only when a connection says `hello` and on REST
//! calls (membership, history, search); only the broker-bridge writes `messages`.

pub mod accounts;
pub mod audit;
pub mod bots;
pub mod channels;
pub mod directory;
pub mod jobs;
pub mod messages;
pub mod people;
pub mod rights;
pub mod seed;

use std::time::Duration;

pub use accounts::Accounts;
pub use deadpool_postgres::Pool;
pub use directory::Directory;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Errors connecting to Postgres or migrating it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid postgres url")]
    Url(#[source] tokio_postgres::Error),
    #[error("cannot connect to postgres")]
    Connect(#[source] tokio_postgres::Error),
    #[error("cannot build the connection pool")]
    Pool(#[source] deadpool_postgres::BuildError),
    #[error("migration failed")]
    Migrate(#[source] refinery::Error),
}

/// Connects one plain client (for migrations, seeding and tools); the connection task runs on
/// the current runtime and ends when the client is dropped.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let config: tokio_postgres::Config = url.parse().map_err(StoreError::Url)?;
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(StoreError::Connect)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "postgres connection ended");
        }
    });
    Ok(client)
}

/// Builds a connection pool of at most `max_size` connections, opened lazily. A caller waits
/// at most `wait` for a free connection.
pub fn pool_with_wait(url: &str, max_size: usize, wait: Duration) -> Result<Pool, StoreError> {
    pool_with_timeout(url, max_size, wait, None)
}

/// [`pool_with_wait`] whose connections cancel any statement running longer than
/// `statement_timeout` (for user-facing reads).
pub fn pool_with_timeout(
    url: &str,
    max_size: usize,
    wait: Duration,
    statement_timeout: Option<Duration>,
) -> Result<Pool, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(StoreError::Url)?;
    config.connect_timeout(Duration::from_secs(5));
    config.application_name("threadspace");
    if let Some(timeout) = statement_timeout {
        config.options(format!("-c statement_timeout={}", timeout.as_millis().max(1)));
    }
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(wait))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(StoreError::Pool)
}

/// [`pool_with_wait`] with a 5 s wait.
pub fn pool(url: &str, max_size: usize) -> Result<Pool, StoreError> {
    pool_with_wait(url, max_size, Duration::from_secs(5))
}

/// Applies every pending migration; returns how many were applied.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<usize, StoreError> {
    let report = embedded::migrations::runner().run_async(client).await.map_err(StoreError::Migrate)?;
    for migration in report.applied_migrations() {
        tracing::info!(version = migration.version(), name = migration.name(), "migration applied");
    }
    Ok(report.applied_migrations().len())
}
