//! Starts the real servers ThreadSpace runs on — `nats-server` with JetStream and PostgreSQL —
//! plus gateway processes, on loopback, in a data directory. One implementation serves the
//! end-to-end tests (free ports, temporary directory, everything killed on drop, even when a
//! test panics), loadgen, and the `threadspace-dev up` local stack (fixed ports, persistent
//! directory, processes left running until `down`).

pub mod keys;
pub mod nats;
pub mod postgres;
pub mod process;
pub mod stack;
pub mod tools;

pub use stack::{GatewayHandle, Stack, StackOptions};

/// Whether started processes belong to the caller or outlive it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed when their handle drops, and (via the parent-death signal) when the caller dies.
    Attached,
    /// Left running for `threadspace-dev down` to stop.
    Detached,
}

/// Picks a free TCP port on 127.0.0.1 (the port is released before it is used, so a race with
/// another process is possible but rare on a test machine).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Polls `check` every 50 ms until it succeeds or `timeout` passes; returns the last error.
pub async fn wait_for<T, E, F, Fut>(timeout: std::time::Duration, mut check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}
