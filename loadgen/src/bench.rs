//! `bench`: an open-model send load over connected users; measures send→ack and
//! send→deliver (every recipient) from the *intended* send time, so a stalled system cannot hide
//! its latency (no coordinated omission), and counts deliveries against what was expected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::builder::TypedValueParser as _;
use hdrhistogram::Histogram;
use rand::RngExt as _;
use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_protocol::frames::{ClientFrame, ServerFrame};
use threadspace_protocol::ChannelId;
use tokio::sync::mpsc;

use crate::target::Target;
use crate::{cpu_time, latency_histogram, summary};

/// The flags of `loadgen bench`. (A field's `//` comment stays out of `--help`, where a doc
/// comment would be its help text.)
#[derive(Clone, Debug, clap::Args)]
pub struct BenchOptions {
    // Users connected (round-robin over the gateways).
    #[arg(long, default_value = "2000", value_parser = clap::value_parser!(u32).range(2..=19_000).map(|n| n as usize))]
    pub users: usize,
    /// Messages per second over all senders.
    #[arg(long, default_value = "300")]
    pub rate: f64,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

impl BenchOptions {
    /// Why `--rate` cannot be played, if it cannot (clap checks no range of a float).
    pub fn rate_error(&self) -> Option<&'static str> {
        let playable = self.rate.is_finite() && self.rate > 0.0 && self.rate <= 100_000.0;
        (!playable).then_some("--rate must be between 0 and 100000 messages per second")
    }
}

#[derive(Debug)]
pub struct BenchReport {
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub expected: u64,
    pub ack: Histogram<u64>,
    pub deliver: Histogram<u64>,
    pub gateway_cpu: Duration,
    /// Time from the last send until every expected delivery arrived (or the 15 s limit).
    pub settled_after: Duration,
    pub undecodable: u64,
    pub duplicates: u64,
    /// With a broker-bridge running: JetStream stored → Postgres committed, per message.
    pub archive: Option<ArchiveLag>,
}

/// How far behind JetStream the archive ran during the bench.
#[derive(Debug)]
pub struct ArchiveLag {
    /// Messages of this run found in Postgres.
    pub rows: i64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

struct Shared {
    epoch: Instant,
    ack: Mutex<Histogram<u64>>,
    deliver: Mutex<Histogram<u64>>,
    acked: AtomicU64,
    /// Acks that said `duplicate`: the id had been used before, so nothing new was delivered.
    duplicates: AtomicU64,
    delivered: AtomicU64,
    /// Text frames that were not valid server frames: each is a corrupted or unknown frame.
    undecodable: AtomicU64,
}

struct SendCommand {
    channel: ChannelId,
    id: String,
    intended_ns: u64,
}

pub async fn run(target: &Target, options: &BenchOptions) -> anyhow::Result<BenchReport> {
    let identities = target.users(options.users).await?;
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        ack: Mutex::new(latency_histogram()),
        deliver: Mutex::new(latency_histogram()),
        acked: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        undecodable: AtomicU64::new(0),
    });
    let gateways = &target.state.gateways;
    println!("connecting {} users over {} gateways…", identities.len(), gateways.len());
    let mut senders = Vec::new();
    let mut listeners: HashMap<ChannelId, u64> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, identity) in identities.iter().enumerate() {
        let mut connect = ConnectOptions::new(gateways[i % gateways.len()].url.clone());
        connect.queue = 1024;
        let mut client = Client::connect(&connect).await?;
        let welcome = client.hello(&target.token(*identity), None, Duration::from_secs(30)).await?;
        for channel in &welcome.channels {
            *listeners.entry(channel.id).or_default() += 1;
        }
        let general = welcome.channels.iter().find(|c| c.name.as_deref() == Some("general")).map(|c| c.id);
        let (tx, rx) = mpsc::channel::<SendCommand>(64);
        if let Some(general) = general {
            senders.push((tx, general));
        }
        tasks.spawn(client_task(client, rx, shared.clone()));
    }
    anyhow::ensure!(!senders.is_empty(), "no connected user is in a #general channel");
    let cpu_before: Vec<Duration> = gateways.iter().map(|g| cpu_time(g.pid).unwrap_or_default()).collect();

    println!("sending {:.0} msg/s for {:?}…", options.rate, options.duration);
    let interval = Duration::from_secs_f64(1.0 / options.rate);
    let start = tokio::time::Instant::now();
    let total = (options.rate * options.duration.as_secs_f64()) as u64;
    let mut expected = 0u64;
    let mut rng = rand::rng();
    let run_id: u32 = rng.random();
    let mut last_report = Instant::now();
    for n in 0..total {
        let intended = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(intended).await;
        let (tx, channel) = &senders[rng.random_range(0..senders.len())];
        let intended_ns = (intended.into_std() - shared.epoch).as_nanos() as u64;
        // Ids must be unique across runs too: a repeated id within JetStream's dedup window is
        // (correctly) acked as a duplicate and delivers nothing.
        let id = format!("lg-{run_id:08x}-{n}");
        if tx.try_send(SendCommand { channel: *channel, id, intended_ns }).is_ok() {
            expected += listeners.get(channel).copied().unwrap_or(0);
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            println!(
                "  t={:>4.0}s sent={n} acked={} delivered={} | {}",
                start.elapsed().as_secs_f64(),
                shared.acked.load(Ordering::Relaxed),
                shared.delivered.load(Ordering::Relaxed),
                summary("deliver", &shared.deliver.lock().expect("lock"))
            );
        }
    }
    // Wait for in-flight deliveries: up to 15 s for stragglers, so a late delivery is told
    // apart from a lost one.
    let send_end = Instant::now();
    let settle_deadline = send_end + Duration::from_secs(15);
    while shared.delivered.load(Ordering::Relaxed) < expected && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled_after = send_end.elapsed();
    let gateway_cpu: Duration = gateways
        .iter()
        .zip(&cpu_before)
        .map(|(g, before)| cpu_time(g.pid).unwrap_or_default().saturating_sub(*before))
        .sum();
    tasks.abort_all();
    let acked = shared.acked.load(Ordering::Relaxed);
    let archive = if target.state.bridges.is_empty() {
        None
    } else {
        Some(archive_lag(target, &format!("lg-{run_id:08x}-"), acked as i64).await?)
    };
    let report = BenchReport {
        archive,
        sent: total,
        acked,
        delivered: shared.delivered.load(Ordering::Relaxed),
        expected,
        ack: shared.ack.lock().expect("lock").clone(),
        deliver: shared.deliver.lock().expect("lock").clone(),
        gateway_cpu,
        settled_after,
        undecodable: shared.undecodable.load(Ordering::Relaxed),
        duplicates: shared.duplicates.load(Ordering::Relaxed),
    };
    Ok(report)
}

/// Waits (up to 60 s) until the run's messages are in Postgres, then measures each one's
/// JetStream stored time → Postgres commit time (`track_commit_timestamp`).
async fn archive_lag(target: &Target, prefix: &str, acked: i64) -> anyhow::Result<ArchiveLag> {
    let client = threadspace_store::connect(target.state.postgres_url()).await?;
    let tracked: String = client.query_one("SHOW track_commit_timestamp", &[]).await?.get(0);
    anyhow::ensure!(tracked == "on", "track_commit_timestamp is off; the archive lag cannot be measured");
    let pattern = format!("{prefix}%");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows: i64 = client
            .query_one("SELECT count(*) FROM messages WHERE client_msg_id LIKE $1", &[&pattern])
            .await?
            .get(0);
        if rows >= acked || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let row = client
        .query_one(
            "SELECT count(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY lag),
                    percentile_disc(0.99) WITHIN GROUP (ORDER BY lag),
                    percentile_disc(0.999) WITHIN GROUP (ORDER BY lag), max(lag)
             FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - stored_at)::float8 AS lag
                   FROM messages WHERE client_msg_id LIKE $1) t",
            &[&pattern],
        )
        .await?;
    Ok(ArchiveLag {
        rows: row.get(0),
        p50: row.get::<_, Option<f64>>(1).unwrap_or(0.0),
        p99: row.get::<_, Option<f64>>(2).unwrap_or(0.0),
        p999: row.get::<_, Option<f64>>(3).unwrap_or(0.0),
        max: row.get::<_, Option<f64>>(4).unwrap_or(0.0),
    })
}

/// Owns one client: sends what it is told, records acks and deliveries.
async fn client_task(mut client: Client, mut commands: mpsc::Receiver<SendCommand>, shared: Arc<Shared>) {
    let mut pending: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return };
                let frame = ClientFrame::Send {
                    reference: command.id.clone(),
                    channel: command.channel,
                    client_msg_id: command.id.clone(),
                    body: format!("lg {}", command.intended_ns),
                };
                pending.insert(command.id, command.intended_ns);
                if client.send(&frame).await.is_err() {
                    return;
                }
            }
            item = client.recv(Duration::from_secs(3600)) => {
                let now_ns = shared.epoch.elapsed().as_nanos() as u64;
                match item {
                    Ok(Incoming::Frame(ServerFrame::Msg(m))) => {
                        if let Some(sent) = m.body.strip_prefix("lg ").and_then(|t| t.parse::<u64>().ok()) {
                            let micros = now_ns.saturating_sub(sent) / 1000;
                            let _ = shared.deliver.lock().expect("lock").record(micros.max(1));
                            shared.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Incoming::Frame(ServerFrame::Ack { client_msg_id, duplicate, .. })) => {
                        if duplicate {
                            shared.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(sent) = pending.remove(&client_msg_id) {
                            let micros = now_ns.saturating_sub(sent) / 1000;
                            let _ = shared.ack.lock().expect("lock").record(micros.max(1));
                            shared.acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Incoming::Frame(ServerFrame::Error { code, message, .. })) => {
                        eprintln!("error frame: {}: {message}", code.as_str());
                    }
                    Ok(Incoming::Undecodable(text)) => {
                        if shared.undecodable.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("undecodable frame: {:?}", text.chars().take(200).collect::<String>());
                        }
                    }
                    Ok(Incoming::Frame(_)) => {}
                    Ok(other) => {
                        eprintln!("connection ended: {other:?}");
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

impl BenchReport {
    pub fn print(&self) {
        println!(
            "sent {} acked {} ({} duplicate) delivered {} of {} expected; {} missing {:.1} s after the last send",
            self.sent,
            self.acked,
            self.duplicates,
            self.delivered,
            self.expected,
            self.expected.saturating_sub(self.delivered),
            self.settled_after.as_secs_f64()
        );
        if self.undecodable > 0 {
            println!("{} undecodable frames received", self.undecodable);
        }
        println!("{}", summary("send→ack", &self.ack));
        println!("{}", summary("send→deliver", &self.deliver));
        if let Some(lag) = &self.archive {
            println!(
                "archive: {} of {} acked messages in Postgres; stored→committed p50={:.1} ms p99={:.1} ms p999={:.1} ms max={:.1} ms",
                lag.rows,
                self.acked,
                lag.p50 * 1000.0,
                lag.p99 * 1000.0,
                lag.p999 * 1000.0,
                lag.max * 1000.0
            );
        }
        let cpu = self.gateway_cpu.as_secs_f64();
        if cpu > 0.0 {
            println!(
                "gateway CPU {:.1} s in total → {:.0} deliveries per gateway CPU-second",
                cpu,
                self.delivered as f64 / cpu
            );
        }
    }
}
