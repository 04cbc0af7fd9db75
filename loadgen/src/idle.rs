//! `idle`: open many authenticated connections and hold them, to measure what an idle
//! connection costs a gateway (RSS growth ÷ connections).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::builder::TypedValueParser as _;
use threadspace_client::{Client, ConnectOptions};
use tokio::sync::Semaphore;

use crate::target::Target;
use crate::{latency_histogram, rss_kib, summary};

/// What to do: the flags of `loadgen idle`. (A field's `//` comment stays out of `--help`,
/// where a doc comment would be its help text.)
#[derive(Clone, Debug, clap::Args)]
pub struct IdleOptions {
    #[arg(long, default_value = "15000", value_parser = clap::value_parser!(u32).range(1..=19_000).map(|n| n as usize))]
    pub connections: usize,
    /// Distinct users (connections cycle over them).
    #[arg(long, default_value = "15000", value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub users: usize,
    /// Gateway number (1-based).
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub gateway: usize,
    // Connections opened at the same time.
    #[arg(long, default_value = "200", value_parser = clap::value_parser!(u32).range(1..=5000).map(|n| n as usize))]
    pub concurrency: usize,
    /// Spread connections over 127.0.0.2 … 127.0.0.(1+N); 0 uses the default address.
    #[arg(long, default_value = "4")]
    pub source_ips: u8,
    // How long to hold the connections once all are open.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
}

/// What was measured.
#[derive(Debug)]
pub struct IdleReport {
    pub connected: usize,
    pub failed: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
}

impl IdleReport {
    pub fn bytes_per_connection(&self) -> f64 {
        (self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64 * 1024.0)
            / self.connected.max(1) as f64
    }
}

pub async fn run(target: &Target, options: &IdleOptions) -> anyhow::Result<IdleReport> {
    let gateway = options
        .gateway
        .checked_sub(1)
        .and_then(|index| target.state.gateways.get(index))
        .ok_or_else(|| anyhow::anyhow!("no gateway {}", options.gateway))?;
    let identities = target.users(options.users.min(options.connections)).await?;
    let tokens: Vec<String> = identities.iter().map(|&i| target.token(i)).collect();
    let rss_before_kib =
        rss_kib(gateway.pid).ok_or_else(|| anyhow::anyhow!("cannot read gateway pid {}", gateway.pid))?;
    println!(
        "gateway {} pid {}: RSS before {} KiB; opening {} connections…",
        options.gateway, gateway.pid, rss_before_kib, options.connections
    );

    let clients = Arc::new(Mutex::new(Vec::with_capacity(options.connections)));
    let histogram = Arc::new(Mutex::new(latency_histogram()));
    let failed = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..options.connections {
        let permit = permits.clone().acquire_owned().await?;
        let mut connect = ConnectOptions::new(gateway.url.clone());
        connect.queue = 64;
        connect.local_addr = crate::source_addr(i, options.source_ips);
        let token = tokens[i % tokens.len()].clone();
        let (clients, histogram, failed) = (clients.clone(), histogram.clone(), failed.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let t0 = Instant::now();
            let result = async {
                let mut client = Client::connect(&connect).await?;
                client.hello(&token, None, Duration::from_secs(30)).await?;
                anyhow::Ok(client)
            }
            .await;
            match result {
                Ok(client) => {
                    let _ = histogram.lock().expect("histogram lock").record(t0.elapsed().as_micros() as u64);
                    clients.lock().expect("clients lock").push(client);
                }
                Err(error) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("connection failed: {error:#}");
                    }
                }
            }
        });
        if i % 1000 == 999 {
            println!("  {} opened in {:.1} s", i + 1, started.elapsed().as_secs_f64());
        }
    }
    while tasks.join_next().await.is_some() {}
    let connected = clients.lock().expect("clients lock").len();
    println!(
        "{connected} connected, {} failed, in {:.1} s",
        failed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    println!("{}", summary("connect+hello", &histogram.lock().expect("histogram lock")));
    // Let allocations settle (welcome frames written, queues idle) before reading RSS.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after_kib = rss_kib(gateway.pid).unwrap_or(0);
    let report =
        IdleReport { connected, failed: failed.load(Ordering::Relaxed), rss_before_kib, rss_after_kib };
    println!(
        "gateway RSS after: {} KiB (+{} KiB) → {:.0} bytes per idle connection",
        rss_after_kib,
        rss_after_kib.saturating_sub(rss_before_kib),
        report.bytes_per_connection()
    );
    if !options.hold.is_zero() {
        println!("holding for {:?}…", options.hold);
        tokio::time::sleep(options.hold).await;
    }
    Ok(report)
}
