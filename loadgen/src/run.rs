//! `loadgen run`: replays a [`Scenario`] over real WebSockets — one light task per simulated
//! user — measures every latency into HDR histograms from the *intended* time of each action
//! (no coordinated omission), checks every delivery ([`crate::checker`]), prints live progress,
//! writes a JSON report and gates on SLO thresholds.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use threadspace_devstack::stack::{http_request, Stack, StackOptions};
use threadspace_protocol::client::{Client, ConnectOptions, Incoming};
use threadspace_protocol::frames::{
    close_code, ChannelInfo, ClientFrame, ClientStatus, PresenceStatus, Resume, ServerFrame,
};
use threadspace_protocol::token::Identity;
use threadspace_protocol::{ChannelId, Seq, UserId};
use tokio::time::Instant;

use crate::checker::{check, Inbox, Verdict};
pub use crate::gate::{Gate, GateResult};
use crate::scenario::Scenario;
use crate::script::{Action, Script, Timed, UserRecord};
use crate::target::Target;
use crate::usage::{ComponentUsage, Processes, Usage, Used};
use crate::{latency_histogram, rss_kib};

/// Where the run goes: its own stack, or one started by `./threadspace up`.
pub enum Site {
    Own(Box<Stack>),
    Existing(Box<Target>),
}

impl Site {
    fn ws_urls(&self) -> Vec<String> {
        match self {
            Self::Own(stack) => (0..stack.gateways.len()).map(|i| stack.ws_url(i)).collect(),
            Self::Existing(target) => target.state.gateways.iter().map(|g| g.url.clone()).collect(),
        }
    }

    fn http_ports(&self) -> Vec<u16> {
        match self {
            Self::Own(stack) => stack.gateways.iter().map(|g| g.port).collect(),
            Self::Existing(target) => target.state.gateways.iter().map(|g| g.port).collect(),
        }
    }

    /// The processes under test, for CPU and memory figures.
    pub fn processes(&self) -> Processes {
        match self {
            Self::Own(stack) => Processes {
                gateways: stack.gateways.iter().filter_map(|g| g.process.as_ref().map(|p| p.pid())).collect(),
                nats: Some(stack.nats.process.pid()),
                postgres: Some(stack.postgres.process.pid()),
                bridges: stack.bridges.iter().filter_map(|b| b.process.as_ref().map(|p| p.pid())).collect(),
            },
            Self::Existing(target) => Processes {
                gateways: target.state.gateways.iter().map(|g| g.pid).collect(),
                nats: Some(target.state.nats.pid),
                postgres: Some(target.state.postgres.pid),
                bridges: target.state.bridges.iter().map(|b| b.pid).collect(),
            },
        }
    }

    fn token(&self, identity: Identity) -> String {
        match self {
            Self::Own(stack) => stack.keys.token(identity, Duration::from_secs(6 * 3600)),
            Self::Existing(target) => target.token(identity),
        }
    }

    async fn users(&self, n: usize) -> anyhow::Result<Vec<Identity>> {
        match self {
            Self::Existing(target) => target.users(n).await,
            Self::Own(stack) => crate::target::first_users(&*stack.pool.get().await?, n).await,
        }
    }
}

/// Starts a stack of `gateways` gateways (with `gateway_args`) seeded for `scenario`.
pub async fn own_site(
    scenario: &Scenario,
    gateways: usize,
    gateway_args: &[String],
    partitions: Option<u32>,
) -> anyhow::Result<Site> {
    // The whole platform: the bridge archives what is sent, as history pages read it back.
    let mut options = StackOptions::for_tests(gateways);
    options.gateway_args = gateway_args.to_vec();
    options.bridges = 1;
    if let Some(partitions) = partitions {
        options.partitions = partitions;
    }
    let stack =
        crate::target::seeded_stack(options, scenario.users, scenario.org_size, "load", scenario.seed)
            .await?;
    Ok(Site::Own(Box::new(stack)))
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub scenario: Scenario,
    pub source_ips: u8,
    pub report: Option<PathBuf>,
    pub progress_every: Duration,
    /// How long after the last send deliveries may still arrive before they count as lost.
    pub settle: Duration,
    /// Write what every user did here (a recording, see [`crate::script`]).
    pub record: Option<PathBuf>,
    /// Play these users' recorded actions instead of the scenario's random ones.
    pub replay: Option<Vec<UserRecord>>,
    pub metrics_addr: Option<SocketAddr>,
}

/// Latencies measured, by name.
pub const METRICS: [&str; 9] = [
    "connect",
    "hello_welcome",
    "send_ack",
    "send_deliver",
    "presence",
    "typing",
    "read_ack",
    "history_page",
    "reconnect_resumed",
];

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    reconnects: AtomicU64,
    history_required: AtomicU64,
}

struct Shared {
    scenario: Scenario,
    urls: Vec<String>,
    http_ports: Vec<u16>,
    source_ips: u8,
    /// Per metric: (the whole run, the current progress interval).
    histograms: Vec<Mutex<(Histogram<u64>, Histogram<u64>)>>,
    counters: Counters,
    /// Error codes and close codes seen, by name.
    errors: Mutex<HashMap<String, u64>>,
    /// Pending presence changes: user → (status, unix µs when made).
    presence: Mutex<HashMap<UserId, (PresenceStatus, u64)>>,
    /// Latest typing per (user, channel), unix µs.
    typing: Mutex<HashMap<(UserId, ChannelId), u64>>,
    /// Start of the ramp (shared by every agent).
    t0: Instant,
    /// Sending stops here.
    end: Instant,
    /// Keep what every user does, for `--record`.
    record: bool,
}

impl Shared {
    fn record(&self, metric: usize, micros: u64) {
        let mut h = self.histograms[metric].lock().expect("histogram lock");
        let _ = h.0.record(micros.max(1));
        let _ = h.1.record(micros.max(1));
    }

    /// Ends the current interval: every metric's samples since the last call.
    fn take_interval(&self) -> Vec<Vec<(u64, u64)>> {
        self.histograms
            .iter()
            .map(|h| {
                let mut h = h.lock().expect("histogram lock");
                let buckets = buckets(&h.1);
                h.1.reset();
                buckets
            })
            .collect()
    }

    fn error(&self, what: String) {
        *self.errors.lock().expect("errors lock").entry(what).or_default() += 1;
    }
}

/// Every recorded `(value µs, count)` of a histogram.
fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}

/// A histogram from [`buckets`].
pub(crate) fn from_buckets<'a>(parts: impl IntoIterator<Item = &'a Vec<(u64, u64)>>) -> Histogram<u64> {
    let mut h = latency_histogram();
    for part in parts {
        for &(value, count) in part {
            let _ = h.record_n(value.max(1), count);
        }
    }
    h
}

/// p99 of [`buckets`], in ms (0 without samples).
fn p99_ms(buckets: &Vec<(u64, u64)>) -> f64 {
    from_buckets([buckets]).value_at_quantile(0.99) as f64 / 1000.0
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// One latency's figures, in milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// Everything a run measured; written as the JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub started_unix_ms: u64,
    pub wall_seconds: f64,
    pub users: usize,
    /// Processes that played the users (1 without `--agents`).
    pub agents: usize,
    #[serde(flatten)]
    pub totals: Totals,
    pub latency: BTreeMap<String, Latency>,
    pub checker: Verdict,
    pub errors: BTreeMap<String, u64>,
    /// CPU and memory by component (gateways, nats-server, postgres, bridge, loadgen).
    pub usage: BTreeMap<String, ComponentUsage>,
    /// Gateways' resident memory growth over the run per connection at the peak.
    pub gateway_bytes_per_connection: f64,
    /// Peak resident memory of the processes that played the users.
    pub loadgen_rss_kib: u64,
    /// Their growth over the run per simulated user.
    pub loadgen_bytes_per_user: f64,
    pub gate: Option<GateResult>,
    /// Why the run itself failed (an agent died): the report covers what the rest did. Any
    /// entry fails the run, gate or no gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// Length of the ramp; `steady_latency` counts only intervals that began after it.
    pub ramp_seconds: f64,
    /// Latencies once every user had connected (empty if no interval began after the ramp).
    pub steady_latency: BTreeMap<String, Latency>,
    /// Progress intervals merged over every process.
    pub timeline: Vec<TimelinePoint>,
    /// The whole run's histograms per metric of [`METRICS`] (for the HDR log and plots).
    #[serde(skip)]
    pub histograms: Vec<Histogram<u64>>,
    /// Per interval: (start s, end s, histograms per metric).
    #[serde(skip)]
    pub intervals: Vec<(f64, f64, Vec<Histogram<u64>>)>,
}

/// One progress interval of the whole run.
#[derive(Clone, Debug, Serialize)]
pub struct TimelinePoint {
    /// End of the interval, seconds since the ramp began.
    pub at_s: f64,
    pub connected: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub reconnects_per_s: f64,
    pub failures: u64,
    /// Per metric with samples in the interval.
    pub p50_ms: BTreeMap<String, f64>,
    pub p99_ms: BTreeMap<String, f64>,
}

/// One simulated user as a process runs it: its global index (which fixes its ramp slot and
/// random schedule), identity and token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannedUser {
    pub index: usize,
    pub identity: Identity,
    pub token: String,
    /// Replaying: when the user connects (ms after the ramp began) and what it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<(u64, Vec<Timed>)>,
}

/// Everything one process (the single-process run, or one agent) needs to play its users.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub scenario: Scenario,
    /// Wall-clock start of the ramp, shared by every agent so their users interleave.
    pub start_unix_ms: u64,
    pub ws_urls: Vec<String>,
    pub http_ports: Vec<u16>,
    pub source_ips: u8,
    pub settle_ms: u64,
    pub progress_ms: u64,
    pub users: Vec<PlannedUser>,
    /// Keep what every user does, for `--record`.
    #[serde(default)]
    pub record: bool,
    /// Serve Prometheus metrics here while the run lasts.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// Which agent plays this plan (`None`: the single process).
    #[serde(default)]
    pub agent: Option<usize>,
}

impl Plan {
    /// The ramp: `ramp_up`, or longer if `connect_rate` needs it.
    pub fn ramp(&self) -> Duration {
        self.scenario.ramp()
    }
}

/// Counters of one process, summed over processes.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    pub connected_peak: u64,
    pub sent: u64,
    pub acked: u64,
    pub requests: u64,
    pub failures: u64,
    pub reconnects: u64,
    pub history_required: u64,
}

impl Totals {
    fn add(&mut self, other: &Self) {
        self.connected_peak += other.connected_peak;
        self.sent += other.sent;
        self.acked += other.acked;
        self.requests += other.requests;
        self.failures += other.failures;
        self.reconnects += other.reconnects;
        self.history_required += other.history_required;
    }
}

/// What one process measured (an agent's file, or the single process's result).
#[derive(Debug, Serialize, Deserialize)]
pub struct Part {
    pub users: usize,
    pub totals: Totals,
    /// Per metric of [`METRICS`]: `(value µs, count)` of every recorded bucket.
    pub histograms: Vec<Vec<(u64, u64)>>,
    pub errors: BTreeMap<String, u64>,
    pub rss_peak_kib: u64,
    pub rss_growth_kib: u64,
    pub verdict: Verdict,
    /// One entry per progress interval, aligned to the shared start.
    pub timeline: Vec<Tick>,
}

/// One progress interval of one process: counters so far and the interval's latencies.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tick {
    /// End of the interval, seconds since the ramp began.
    pub at_s: f64,
    pub connected: u64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub failures: u64,
    pub reconnects: u64,
    /// Per metric of [`METRICS`]: the buckets recorded in this interval.
    pub histograms: Vec<Vec<(u64, u64)>>,
}

impl Tick {
    fn now(shared: &Shared, t0: Instant) -> Self {
        let c = &shared.counters;
        Self {
            at_s: Instant::now().saturating_duration_since(t0).as_secs_f64(),
            connected: c.connected.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            histograms: shared.take_interval(),
        }
    }
}

/// A process's users' results before the delivery check.
pub struct Played {
    pub part: Part,
    pub acked: Vec<(Seq, ChannelId)>,
    pub inboxes: Vec<Inbox>,
    /// What every user did (empty unless the plan records).
    pub records: Vec<UserRecord>,
}

/// Builds the plan of a whole run on `site` (every user, tokens minted).
pub async fn plan(site: &Site, options: &RunOptions) -> anyhow::Result<Plan> {
    let scenario = options.scenario.clone();
    let identities = site.users(scenario.users).await?;
    anyhow::ensure!(
        identities.len() == scenario.users,
        "only {} users exist for a scenario of {}",
        identities.len(),
        scenario.users
    );
    let users = identities
        .into_iter()
        .enumerate()
        .map(|(index, identity)| PlannedUser { index, identity, token: site.token(identity), recorded: None })
        .collect::<Vec<_>>();
    let mut users = users;
    if let Some(records) = &options.replay {
        for (user, record) in users.iter_mut().zip(records) {
            anyhow::ensure!(
                record.id == user.identity.user.0,
                "the recording's user {} is user id {}, but here it is {}: replay against a stack seeded like the recorded one",
                user.index,
                record.id,
                user.identity.user.0
            );
            user.recorded = Some((record.connect_ms, record.actions.clone()));
        }
    }
    Ok(Plan {
        scenario,
        // A moment to spawn agents and open their plans before the first connection is due.
        start_unix_ms: unix_micros() / 1000 + 2_000,
        ws_urls: site.ws_urls(),
        http_ports: site.http_ports(),
        source_ips: options.source_ips,
        settle_ms: options.settle.as_millis() as u64,
        progress_ms: options.progress_every.as_millis() as u64,
        users,
        record: options.record.is_some(),
        metrics_addr: options.metrics_addr,
        agent: None,
    })
}

/// Runs the scenario in this process against `site`.
pub async fn run(site: &Site, options: &RunOptions) -> anyhow::Result<Report> {
    let plan = plan(site, options).await?;
    let usage = Usage::start(site.processes());
    let started_unix_ms = plan.start_unix_ms;
    let played = play(&plan, "").await?;
    if let Some(path) = &options.record {
        crate::script::write_recording(path, &plan.scenario, &played.records)?;
        println!("recording written to {}", path.display());
    }
    let mut part = played.part;
    part.verdict = check(&played.acked, &played.inboxes);
    Ok(Report::assemble(plan.scenario, started_unix_ms, vec![part], usage.finish()))
}

/// Plays the plan's users in this process; `prefix` marks its progress lines.
pub async fn play(plan: &Plan, prefix: &str) -> anyhow::Result<Played> {
    let scenario = plan.scenario.clone();
    let rss0 = rss_kib(std::process::id()).unwrap_or(0);
    let wait_ms = plan.start_unix_ms.saturating_sub(unix_micros() / 1000);
    let t0 = Instant::now() + Duration::from_millis(wait_ms);
    let ramp = plan.ramp();
    let end = t0 + ramp + scenario.duration;
    let shared = Arc::new(Shared {
        urls: plan.ws_urls.clone(),
        http_ports: plan.http_ports.clone(),
        source_ips: plan.source_ips,
        histograms: METRICS.iter().map(|_| Mutex::new((latency_histogram(), latency_histogram()))).collect(),
        counters: Counters::default(),
        errors: Mutex::default(),
        presence: Mutex::default(),
        typing: Mutex::default(),
        t0,
        end,
        record: plan.record,
        scenario: scenario.clone(),
    });
    if let Some(addr) = plan.metrics_addr {
        crate::live::serve(addr)?;
        println!("{prefix}Prometheus metrics on http://{addr}/metrics");
    }
    let agent_label = plan.agent.map_or_else(|| "0".to_owned(), |k| k.to_string());
    println!(
        "{prefix}{}: {} of {} users over {} gateways, ramp {:?}, then {:?} at {:.1} msg/s overall (seed {})",
        scenario.name,
        plan.users.len(),
        scenario.users,
        shared.urls.len(),
        ramp,
        scenario.duration,
        scenario.message_rate(),
        scenario.seed
    );
    let mut tasks = tokio::task::JoinSet::new();
    let slot = ramp.as_secs_f64() / scenario.users as f64;
    for user in &plan.users {
        // The jitter derives from the seed and the global index: any split over agents gives
        // every user the same start.
        let mut jitter = StdRng::seed_from_u64(scenario.seed ^ (user.index as u64).wrapping_mul(0x2545_f491));
        let mut at =
            Duration::from_secs_f64(slot * user.index as f64 + jitter.random_range(0.0..slot.max(1e-9)));
        let mut recorded = None;
        if let Some((connect_ms, actions)) = &user.recorded {
            at = Duration::from_millis(*connect_ms);
            recorded = Some(actions.clone());
        }
        let shared = shared.clone();
        tasks.spawn(virtual_user(shared, user.index, user.identity, user.token.clone(), t0 + at, recorded));
    }
    let mut rss_peak = rss0;
    let mut connected_peak = 0;
    // Ticks aligned to the shared start, so that every agent's interval k covers the same time.
    let period = Duration::from_millis(plan.progress_ms.max(100));
    let mut ticker = tokio::time::interval_at(t0 + period, period);
    let mut timeline = Vec::new();
    let deadline = end + Duration::from_millis(plan.settle_ms);
    let mut outcomes = Vec::new();
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(outcome) => outcomes.push(outcome?),
                None => break,
            },
            _ = ticker.tick() => {
                let tick = Tick::now(&shared, t0);
                connected_peak = connected_peak.max(tick.connected);
                rss_peak = rss_peak.max(rss_kib(std::process::id()).unwrap_or(0));
                println!(
                    "{prefix}  t={:>5.0}s connected={} sent={} acked={} delivered={} failures={} reconnects={} | last {}s p99: deliver {:.1} ms, ack {:.1} ms, presence {:.1} ms",
                    tick.at_s,
                    tick.connected,
                    tick.sent,
                    tick.acked,
                    tick.delivered,
                    tick.failures,
                    tick.reconnects,
                    period.as_secs(),
                    p99_ms(&tick.histograms[3]),
                    p99_ms(&tick.histograms[2]),
                    p99_ms(&tick.histograms[4]),
                );
                crate::live::publish(&agent_label, &tick);
                timeline.push(tick);
            }
            _ = tokio::time::sleep_until(deadline + Duration::from_secs(30)) => {
                anyhow::bail!("virtual users did not finish 30 s after the run's end");
            }
        }
    }
    // The last, partial interval.
    timeline.push(Tick::now(&shared, t0));
    outcomes.sort_unstable_by_key(|o| o.index);
    let acked: Vec<(Seq, ChannelId)> = outcomes.iter().flat_map(|o| o.acked.iter().copied()).collect();
    let records: Vec<UserRecord> = outcomes.iter_mut().filter_map(|o| o.record.take()).collect();
    let inboxes: Vec<Inbox> = outcomes.into_iter().map(|o| o.inbox).collect();
    let c = &shared.counters;
    let totals = Totals {
        connected_peak,
        sent: c.sent.load(Ordering::Relaxed),
        acked: c.acked.load(Ordering::Relaxed),
        requests: c.requests.load(Ordering::Relaxed),
        failures: c.failures.load(Ordering::Relaxed),
        reconnects: c.reconnects.load(Ordering::Relaxed),
        history_required: c.history_required.load(Ordering::Relaxed),
    };
    let histograms =
        shared.histograms.iter().map(|h| buckets(&h.lock().expect("histogram lock").0)).collect();
    let errors = shared.errors.lock().expect("errors lock").iter().map(|(k, v)| (k.clone(), *v)).collect();
    let part = Part {
        users: plan.users.len(),
        totals,
        histograms,
        errors,
        rss_peak_kib: rss_peak,
        rss_growth_kib: rss_peak.saturating_sub(rss0),
        verdict: Verdict::default(),
        timeline,
    };
    Ok(Played { part, acked, inboxes, records })
}

/// Merges the processes' ticks interval by interval (they share the start and the period):
/// the timeline and each interval's histograms.
#[allow(clippy::type_complexity)]
fn merge_timelines(parts: &[Part]) -> (Vec<TimelinePoint>, Vec<(f64, f64, Vec<Histogram<u64>>)>) {
    let len = parts.iter().map(|p| p.timeline.len()).max().unwrap_or(0);
    let mut timeline = Vec::with_capacity(len);
    let mut intervals = Vec::with_capacity(len);
    let mut previous = Tick::default();
    for i in 0..len {
        let ticks: Vec<&Tick> = parts.iter().filter_map(|p| p.timeline.get(i)).collect();
        let sum = |f: fn(&Tick) -> u64| ticks.iter().map(|t| f(t)).sum::<u64>();
        let at_s = ticks.iter().map(|t| t.at_s).fold(0.0, f64::max);
        let merged = Tick {
            at_s,
            connected: sum(|t| t.connected),
            sent: sum(|t| t.sent),
            acked: sum(|t| t.acked),
            delivered: sum(|t| t.delivered),
            failures: sum(|t| t.failures),
            reconnects: sum(|t| t.reconnects),
            histograms: Vec::new(),
        };
        let seconds = (at_s - previous.at_s).max(1e-3);
        let per_s = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
        let histograms: Vec<Histogram<u64>> = (0..METRICS.len())
            .map(|m| from_buckets(ticks.iter().filter_map(|t| t.histograms.get(m))))
            .collect();
        let quantile = |q: f64| -> BTreeMap<String, f64> {
            METRICS
                .iter()
                .zip(&histograms)
                .filter(|(_, h)| !h.is_empty())
                .map(|(name, h)| (name.to_string(), h.value_at_quantile(q) as f64 / 1000.0))
                .collect()
        };
        timeline.push(TimelinePoint {
            at_s,
            connected: merged.connected,
            sent_per_s: per_s(merged.sent, previous.sent),
            delivered_per_s: per_s(merged.delivered, previous.delivered),
            reconnects_per_s: per_s(merged.reconnects, previous.reconnects),
            failures: merged.failures,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
        });
        intervals.push((previous.at_s, at_s, histograms));
        previous = merged;
    }
    (timeline, intervals)
}

/// What one virtual user leaves for the checker.
struct Outcome {
    index: usize,
    inbox: Inbox,
    acked: Vec<(Seq, ChannelId)>,
    /// What the user did, when the run is recorded.
    record: Option<UserRecord>,
}

/// The connection of one virtual user, and what it is waiting for.
struct Session {
    client: Client,
    /// `client_msg_id` → (channel, intended unix µs).
    pending_sends: HashMap<String, (ChannelId, u64)>,
    /// read `ref` → sent at.
    pending_reads: HashMap<String, Instant>,
}

/// One simulated user: connects at `start`, then plays its script (random or recorded) until
/// the run's end, answering and checking every frame it receives.
async fn virtual_user(
    shared: Arc<Shared>,
    index: usize,
    identity: Identity,
    token: String,
    start: Instant,
    recorded: Option<Vec<Timed>>,
) -> Outcome {
    let mut acked = Vec::new();
    tokio::time::sleep_until(start).await;
    let mut record = shared.record.then(|| UserRecord {
        user: index,
        id: identity.user.0,
        connect_ms: start.saturating_duration_since(shared.t0).as_millis() as u64,
        actions: Vec::new(),
    });
    let mut gateway = index % shared.urls.len();
    let Some((mut session, welcome_channels, head)) =
        Box::pin(connect(&shared, index, gateway, &token, None)).await
    else {
        let mut inbox = Inbox::new(0, []);
        inbox.broken_at = Some(0);
        return Outcome { index, inbox, acked, record };
    };
    shared.counters.connected.fetch_add(1, Ordering::Relaxed);
    let channels: Vec<ChannelInfo> = welcome_channels;
    let mut inbox = Inbox::new(head, channels.iter().map(|c| c.id));
    let mut script = match recorded {
        Some(actions) => Script::Recorded { t0: shared.t0, actions: actions.into() },
        None => Script::random(&shared.scenario, index, Instant::now()),
    };
    let (mut sent, mut reads) = (0u64, 0u64);
    let settle_end = shared.end + Duration::from_secs(5);
    loop {
        let sending = Instant::now() < shared.end;
        let wake = match script.due() {
            Some(due) if sending => due.min(shared.end),
            _ => settle_end,
        };
        tokio::select! {
            item = session.client.recv(Duration::from_secs(3600)) => {
                match item {
                    Ok(Incoming::Frame(frame)) => on_frame(&shared, identity.user, &mut session, &mut inbox, &mut acked, frame),
                    Ok(other) => {
                        let what = match &other {
                            Incoming::Close { code, .. } => format!("close {code}"),
                            _ => "connection failed".to_owned(),
                        };
                        shared.error(what);
                        shared.presence.lock().expect("presence lock").remove(&identity.user);
                        // The chain continues on another gateway, resuming from the cursor.
                        gateway = (gateway + 1) % shared.urls.len();
                        match Box::pin(reconnect(&shared, identity.user, index, gateway, &token, &mut inbox, &mut session)).await {
                            Ok(()) => script.reconnected(),
                            Err(()) => break,
                        }
                    }
                    Err(_) => break,
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if !sending || script.due().is_none_or(|due| due > Instant::now()) {
                    if Instant::now() >= settle_end {
                        break;
                    }
                    continue;
                }
                let Some((at, action)) = script.take(&channels, &inbox) else { continue };
                if let Some(record) = &mut record {
                    record.actions.push((at.saturating_duration_since(shared.t0).as_millis() as u64, action));
                }
                match action {
                    Action::Send { channel, typing } => {
                        // Latency counts from when the message was due, not when it went out.
                        let intended = unix_micros().saturating_sub(Instant::now().saturating_duration_since(at).as_micros() as u64);
                        if typing {
                            shared.typing.lock().expect("typing lock").insert((identity.user, channel), unix_micros());
                            let _ = session.client.send(&ClientFrame::Typing { channel }).await;
                        }
                        let id = format!("lg{index}x{sent}y{:x}", shared.scenario.seed);
                        sent += 1;
                        session.pending_sends.insert(id.clone(), (channel, intended));
                        shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
                        let frame = ClientFrame::Send { reference: id.clone(), channel, client_msg_id: id, body: format!("lg:{intended}") };
                        let _ = session.client.send(&frame).await;
                    }
                    Action::Read { channel } => {
                        if let Some(seq) = inbox.latest_in(channel) {
                            let reference = format!("rd{index}x{reads}");
                            reads += 1;
                            session.pending_reads.insert(reference.clone(), Instant::now());
                            shared.counters.requests.fetch_add(1, Ordering::Relaxed);
                            let _ = session.client.send(&ClientFrame::Read { reference, channel, seq }).await;
                        }
                    }
                    Action::Presence { idle } => {
                        let (status, seen) = if idle { (ClientStatus::Idle, PresenceStatus::Idle) } else { (ClientStatus::Online, PresenceStatus::Online) };
                        shared.presence.lock().expect("presence lock").insert(identity.user, (seen, unix_micros()));
                        let _ = session.client.send(&ClientFrame::Presence { status }).await;
                    }
                    Action::History { channel } => Box::pin(history_page(&shared, gateway, &token, channel)).await,
                    Action::Reconnect => {
                        let _ = session.client.close(close_code::NORMAL).await;
                        // The reconnect supersedes any pending presence change: its flap must not
                        // be taken for that change arriving late.
                        shared.presence.lock().expect("presence lock").remove(&identity.user);
                        gateway = (gateway + 1) % shared.urls.len();
                        if Box::pin(reconnect(&shared, identity.user, index, gateway, &token, &mut inbox, &mut session)).await.is_err() {
                            break;
                        }
                        script.reconnected();
                    }
                }
            }
        }
    }
    shared.counters.connected.fetch_sub(1, Ordering::Relaxed);
    if inbox.broken_at.is_none() && Instant::now() < settle_end {
        inbox.broken_at = Some(inbox.cursor());
    }
    let _ = session.client.close(close_code::NORMAL).await;
    Outcome { index, inbox, acked, record }
}

fn on_frame(
    shared: &Shared,
    me: UserId,
    session: &mut Session,
    inbox: &mut Inbox,
    acked: &mut Vec<(Seq, ChannelId)>,
    frame: ServerFrame,
) {
    match frame {
        ServerFrame::Msg(message) => {
            inbox.receive(message.seq, message.channel);
            if let Some(intended) = message.body.strip_prefix("lg:").and_then(|t| t.parse::<u64>().ok()) {
                shared.record(3, unix_micros().saturating_sub(intended));
                shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
        ServerFrame::Ack { client_msg_id, seq, duplicate, .. } => {
            if let Some((channel, intended)) = session.pending_sends.remove(&client_msg_id) {
                shared.record(2, unix_micros().saturating_sub(intended));
                shared.counters.acked.fetch_add(1, Ordering::Relaxed);
                if !duplicate {
                    acked.push((seq, channel));
                }
            }
        }
        ServerFrame::Presence { users } => {
            let now = unix_micros();
            let pending = shared.presence.lock().expect("presence lock");
            for entry in users {
                if entry.user == me {
                    continue;
                }
                if let Some((status, at)) = pending.get(&entry.user) {
                    if *status == entry.status {
                        shared.record(4, now.saturating_sub(*at));
                    }
                }
            }
        }
        ServerFrame::Typing { channel, user, .. } => {
            if let Some(at) = shared.typing.lock().expect("typing lock").get(&(user, channel)) {
                shared.record(5, unix_micros().saturating_sub(*at));
            }
        }
        ServerFrame::ReadAck { reference, .. } => {
            if let Some(at) = session.pending_reads.remove(&reference) {
                shared.record(6, at.elapsed().as_micros() as u64);
            }
        }
        ServerFrame::Error { code, reference, .. } => {
            shared.error(format!("error {}", code.as_str()));
            shared.counters.failures.fetch_add(1, Ordering::Relaxed);
            if let Some(reference) = reference {
                session.pending_sends.remove(&reference);
                session.pending_reads.remove(&reference);
            }
        }
        ServerFrame::HistoryRequired { .. } => {
            shared.counters.history_required.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// Connects (and resumes from `resume`); the session, the welcome's channels and head.
async fn connect(
    shared: &Shared,
    index: usize,
    gateway: usize,
    token: &str,
    resume: Option<Seq>,
) -> Option<(Session, Vec<ChannelInfo>, Seq)> {
    let mut options = ConnectOptions::new(shared.urls[gateway].clone());
    options.queue = 64;
    options.local_addr = crate::source_addr(index, shared.source_ips);
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let mut client = match Client::connect(&options).await {
        Ok(client) => client,
        Err(error) => {
            shared.error(format!("connect: {}", error_kind(&error.to_string())));
            shared.counters.failures.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    shared.record(0, started.elapsed().as_micros() as u64);
    let hello_at = Instant::now();
    match client.hello(token, resume.map(|last_seq| Resume { last_seq }), Duration::from_secs(30)).await {
        Ok(welcome) => {
            shared.record(1, hello_at.elapsed().as_micros() as u64);
            let session = Session { client, pending_sends: HashMap::new(), pending_reads: HashMap::new() };
            Some((session, welcome.channels, welcome.head_seq))
        }
        Err(error) => {
            shared.error(format!("hello: {}", error_kind(&error.to_string())));
            shared.counters.failures.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The first words of an error, as a bounded label.
fn error_kind(text: &str) -> String {
    text.split(':').next().unwrap_or(text).chars().take(60).collect()
}

/// Reconnects with the inbox's cursor and waits for `resumed` (replayed messages are checked
/// like live ones). Err if it cannot (three attempts): the chain is broken.
async fn reconnect(
    shared: &Shared,
    me: UserId,
    index: usize,
    first_gateway: usize,
    token: &str,
    inbox: &mut Inbox,
    session: &mut Session,
) -> Result<(), ()> {
    shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    for attempt in 0..3 {
        let gateway = (first_gateway + attempt) % shared.urls.len();
        let cursor = inbox.cursor();
        inbox.connection += 1;
        let Some((mut next, _, _)) = connect(shared, index, gateway, token, Some(cursor)).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        // Sends still waiting for an ack are abandoned with the old connection (a real client
        // would retry them with the same id; the checker only counts acked messages).
        let mut unused = Vec::new();
        loop {
            match next.client.recv(Duration::from_secs(30)).await {
                Ok(Incoming::Frame(ServerFrame::Resumed { .. })) => {
                    shared.record(8, started.elapsed().as_micros() as u64);
                    *session = next;
                    return Ok(());
                }
                Ok(Incoming::Frame(ServerFrame::HistoryRequired { .. })) => {
                    shared.counters.history_required.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Incoming::Frame(frame)) => on_frame(shared, me, &mut next, inbox, &mut unused, frame),
                _ => break,
            }
        }
    }
    inbox.broken_at = Some(inbox.cursor());
    shared.error("reconnect failed".into());
    Err(())
}

/// Loads the newest page of a channel over REST.
async fn history_page(shared: &Shared, gateway: usize, token: &str, channel: ChannelId) {
    let port = shared.http_ports[gateway];
    let path = format!("/v1/channels/{channel}/messages?limit=50");
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    match http_request(port, "GET", &path, Some(token)).await {
        Some((200, _)) => shared.record(7, started.elapsed().as_micros() as u64),
        Some((status, _)) => {
            shared.error(format!("history http {status}"));
            shared.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        None => {
            shared.error("history unreachable".into());
            shared.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Report {
    /// Merges the parts of every process into one report.
    pub fn assemble(scenario: Scenario, started_unix_ms: u64, parts: Vec<Part>, used: Used) -> Self {
        let mut totals = Totals::default();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut checker = Verdict::default();
        let (mut rss_peak, mut rss_growth, mut users) = (0, 0, 0);
        for part in &parts {
            totals.add(&part.totals);
            for (k, v) in &part.errors {
                *errors.entry(k.clone()).or_default() += v;
            }
            checker.merge(&part.verdict);
            rss_peak += part.rss_peak_kib;
            rss_growth += part.rss_growth_kib;
            users += part.users;
        }
        let histograms: Vec<Histogram<u64>> = (0..METRICS.len())
            .map(|m| from_buckets(parts.iter().filter_map(|p| p.histograms.get(m))))
            .collect();
        let (timeline, intervals) = merge_timelines(&parts);
        if let Some(peak) = timeline.iter().map(|t| t.connected).max() {
            // Agents peak at different moments: the sum of their peaks overstates it.
            totals.connected_peak =
                peak.max(parts.iter().map(|p| p.totals.connected_peak).max().unwrap_or(0));
        }
        let ramp_seconds = scenario.ramp().as_secs_f64();
        let steady_latency = {
            let period = intervals.first().map_or(0.0, |(start, end, _)| end - start);
            let steady: Vec<&Vec<Histogram<u64>>> = intervals
                .iter()
                .filter(|(start, _, _)| *start >= ramp_seconds - 0.01 * period)
                .map(|i| &i.2)
                .collect();
            if steady.is_empty() {
                BTreeMap::new()
            } else {
                METRICS
                    .iter()
                    .enumerate()
                    .map(|(m, name)| {
                        let mut h = latency_histogram();
                        for set in &steady {
                            let _ = h.add(&set[m]);
                        }
                        (name.to_string(), Latency::of(&h))
                    })
                    .collect()
            }
        };
        Self {
            started_unix_ms,
            wall_seconds: used.wall_seconds,
            users,
            agents: parts.len(),
            totals,
            latency: METRICS
                .iter()
                .zip(&histograms)
                .map(|(name, h)| (name.to_string(), Latency::of(h)))
                .collect(),
            checker,
            errors,
            gateway_bytes_per_connection: used.components.get("gateways").map_or(0.0, |g| {
                g.rss_peak_kib.saturating_sub(g.rss_start_kib) as f64 * 1024.0
                    / totals.connected_peak.max(1) as f64
            }),
            usage: used.components,
            loadgen_rss_kib: rss_peak,
            loadgen_bytes_per_user: rss_growth as f64 * 1024.0 / users.max(1) as f64,
            gate: None,
            failures: Vec::new(),
            scenario,
            ramp_seconds,
            steady_latency,
            timeline,
            histograms,
            intervals,
        }
    }

    pub fn print(&self) {
        println!(
            "\n{}: {} users (peak {} connected), {:.0} s; sent {} acked {}; {} reconnects; {} failures of {} requests",
            self.scenario.name,
            self.users,
            self.totals.connected_peak,
            self.wall_seconds,
            self.totals.sent,
            self.totals.acked,
            self.totals.reconnects,
            self.totals.failures,
            self.totals.requests
        );
        let table = |latency: &BTreeMap<String, Latency>| {
            for (name, l) in latency {
                if l.count == 0 {
                    println!("  {name:<18} no samples");
                } else {
                    println!(
                        "  {name:<18} n={:<8} p50={:>8.2} p90={:>8.2} p99={:>8.2} p999={:>8.2} max={:>8.2} ms",
                        l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
                    );
                }
            }
        };
        println!("  whole run (ramp included; the gate judges these):");
        table(&self.latency);
        if !self.steady_latency.is_empty() {
            println!("  after the {:.0} s ramp, every user connected:", self.ramp_seconds);
            table(&self.steady_latency);
        }
        let c = &self.checker;
        println!(
            "  checker: {} of {} owed deliveries; lost {}, duplicated {}, out of order {}, unexpected {}",
            c.delivered, c.expected, c.lost, c.duplicated, c.out_of_order, c.unexpected
        );
        if !self.errors.is_empty() {
            println!("  errors and closes: {:?}", self.errors);
        }
        for (name, u) in &self.usage {
            println!(
                "  {name:<12} CPU {:>7.1} s ({:.2} cores), RSS {} → peak {} KiB",
                u.cpu_seconds, u.cores, u.rss_start_kib, u.rss_peak_kib
            );
        }
        println!(
            "  memory: gateways {:.0} bytes per connection; loadgen {:.0} bytes per simulated user (peak RSS of its players {} KiB)",
            self.gateway_bytes_per_connection, self.loadgen_bytes_per_user, self.loadgen_rss_kib
        );
        if let Some(gate) = &self.gate {
            if gate.passed {
                println!("  gate: passed");
            } else {
                for failure in &gate.failures {
                    println!("  gate FAILED: {failure}");
                }
            }
        }
    }
}
