//! `login`: a burst of password logins through the api service — what a morning's reconnect
//! wave or a mass re-login after "sign out everywhere" costs: logins per second per core of the
//! api service, and each login's latency under the burst (argon2id verification queues behind
//! `--hash-concurrency`). Seeded users log in with their seeded password
//! (`threadspace_store::seed::SEED_PASSWORD`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::builder::TypedValueParser as _;
use hdrhistogram::Histogram;
use threadspace_client::rest::http_send_within;
use tokio::sync::Semaphore;

use crate::target::Target;
use crate::{cpu_time, latency_histogram, summary};

/// The flags of `loadgen login`.
#[derive(Clone, Debug, clap::Args)]
pub struct LoginOptions {
    /// Distinct seeded users who log in, once each.
    #[arg(long, default_value = "1000", value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub users: usize,
    /// Logins in flight at once (1000 with --users 1000: the whole burst at once).
    #[arg(long, default_value = "1000", value_parser = clap::value_parser!(u32).range(1..=10_000).map(|n| n as usize))]
    pub concurrency: usize,
    /// Fail (exit 1) if the login p99 is above this.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_p99: Option<Duration>,
}

/// What a burst measured.
#[derive(Debug)]
pub struct LoginReport {
    pub ok: usize,
    pub failed: usize,
    pub wall: Duration,
    pub latency: Histogram<u64>,
    /// CPU the api service used during the burst.
    pub api_cpu: Duration,
}

impl LoginReport {
    /// Successful logins per second of api CPU: what one core sustains.
    pub fn per_core_second(&self) -> f64 {
        self.ok as f64 / self.api_cpu.as_secs_f64().max(1e-9)
    }

    pub fn print(&self) {
        println!(
            "logins: {} ok, {} failed in {:.2} s → {:.0} logins/s",
            self.ok,
            self.failed,
            self.wall.as_secs_f64(),
            self.ok as f64 / self.wall.as_secs_f64().max(1e-9)
        );
        println!("{}", summary("login", &self.latency));
        println!(
            "api CPU {:.2} s in total → {:.1} logins per api CPU-second (per core)",
            self.api_cpu.as_secs_f64(),
            self.per_core_second()
        );
    }
}

/// Seeded users (orgs named `<prefix>-<n>` by `threadspace-dev seed`, whose users share the
/// seed password): `(org slug, email)`, the first `n` by id.
async fn seeded_logins(target: &Target, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let client = threadspace_store::connect(target.state.postgres_url()).await?;
    let rows = client
        .query(
            "SELECT o.slug, u.email FROM users u JOIN orgs o ON o.id = u.org_id
             WHERE u.email IS NOT NULL AND u.password_hash IS NOT NULL AND u.deactivated_at IS NULL
                 AND o.slug ~ '-[0-9]+$'
             ORDER BY u.id LIMIT $1",
            &[&(n as i64)],
        )
        .await?;
    anyhow::ensure!(
        rows.len() == n,
        "only {} seeded users can log in; seed more with `./threadspace seed --orgs N`",
        rows.len()
    );
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub async fn run(target: &Target, options: &LoginOptions) -> anyhow::Result<LoginReport> {
    let api = target.state.api.as_ref().ok_or_else(|| anyhow::anyhow!("the stack runs no api service"))?;
    let (port, pid) = (api.port, api.pid);
    let logins = seeded_logins(target, options.users).await?;
    println!("{} logins through {} ({} at a time)…", logins.len(), api.url, options.concurrency);
    let latency = Arc::new(Mutex::new(latency_histogram()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let permits = Arc::new(Semaphore::new(options.concurrency));
    let cpu_before = cpu_time(pid).unwrap_or_default();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (slug, email) in logins {
        let (latency, failed, permits) = (latency.clone(), failed.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire().await.expect("never closed");
            let body = serde_json::json!({"org": slug, "email": email, "password": threadspace_store::seed::SEED_PASSWORD})
                .to_string();
            let t0 = Instant::now();
            let body = Some(("application/json", body.as_bytes()));
            // A burst queues behind argon2: minutes, not the usual 10 s.
            let answer =
                http_send_within(port, "POST", "/v1/auth/login", None, body, Duration::from_secs(300)).await;
            let took = t0.elapsed();
            match answer {
                Some(response) if response.status == 200 => {
                    let micros = took.as_micros().clamp(1, 300_000_000) as u64;
                    latency.lock().expect("never poisoned").record(micros).expect("within bounds");
                }
                other => failed.lock().expect("never poisoned").push(other.map(|r| r.status)),
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let wall = started.elapsed();
    let api_cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu_before);
    let failed = std::mem::take(&mut *failed.lock().expect("never poisoned"));
    if !failed.is_empty() {
        let statuses: Vec<String> =
            failed.iter().take(5).map(|s| s.map_or("no answer".into(), |s| s.to_string())).collect();
        println!("{} logins failed (first answers: {})", failed.len(), statuses.join(", "));
    }
    let latency = Arc::try_unwrap(latency)
        .map(|m| m.into_inner().expect("never poisoned"))
        .unwrap_or_else(|a| a.lock().expect("never poisoned").clone());
    Ok(LoginReport { ok: latency.len() as usize, failed: failed.len(), wall, latency, api_cpu })
}
