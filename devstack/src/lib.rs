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

/// Picks a free TCP port on 127.0.0.1 for a server to listen on. The port is released before
/// the server binds it, so it is taken below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`): the many outgoing connections of a test run — clients,
/// pools, browsers — take their local ports from that range and can never grab it meanwhile.
/// Only another test process picking the same random port between this check and its bind
/// could: the random choice over some 22,000 ports makes that rare, not impossible. Falls back to a kernel-chosen port if none is found.
pub fn free_port() -> std::io::Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.saturating_sub(1));
    if high > low + 1_000 {
        // A per-process, per-call sequence: no two calls of one process repeat a port soon.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64)
            ^ (u64::from(std::process::id()) << 20);
        for _ in 0..200 {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut x = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            let port = low + (x % u64::from(high - low)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
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
