//! `loadgen run`: replays a [`Scenario`] over real WebSockets — one light task per simulated
//! user — measures every latency into HDR histograms from the *intended* time of each action
//! (no coordinated omission), checks every delivery ([`crate::checker`]), prints live progress,
//! writes a JSON report and gates on SLO thresholds.
//!
//! This module is the driver: where the run goes ([`Site`]), the [`Plan`] of every user, and
//! [`play`], which starts the users at their ramp slots and takes a progress tick every
//! interval. The simulated user is in `user`, the named latencies in `series`, the report in
//! `report`.

pub mod gate;
pub mod live;
mod report;
mod series;
mod user;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use threadspace_devstack::stack::{Stack, StackOptions};
use threadspace_protocol::token::Identity;
use threadspace_protocol::{ChannelId, Seq};
use tokio::time::Instant;

pub use self::gate::{Gate, GateResult};
pub use self::report::{Interval, Latency, Part, Report, Tick, TimelinePoint, Totals};
use self::series::Recorder;
pub(crate) use self::series::{max_ms, p99_ms};
pub use self::series::{Buckets, PerSeries, Series};
use self::user::{virtual_user, Counters, Shared};
pub use self::user::{ReconnectRecord, SendOutcome, SendRecord, SlowDelivery};
use crate::checker::{check, Inbox, Verdict};
use crate::scenario::Scenario;
use crate::script::{Timed, UserRecord};
use crate::target::Target;
use crate::usage::{Processes, Usage};
use crate::{rss_kib, unix_micros};

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

    /// The api service's port (history pages go there).
    fn postgres_url(&self) -> &str {
        match self {
            Self::Own(stack) => &stack.postgres.url,
            Self::Existing(target) => target.state.postgres_url(),
        }
    }

    fn api_port(&self) -> anyhow::Result<u16> {
        match self {
            Self::Own(stack) => Ok(stack.api.port),
            Self::Existing(target) => target.state.api.as_ref().map(|api| api.port).ok_or_else(|| {
                anyhow::anyhow!(
                    "the stack in {} runs no api service: restart it: `./threadspace down && ./threadspace up`",
                    target.state.dir.display()
                )
            }),
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

/// How one process plays its users: where their connections come from, and where it shows their
/// progress (flags of `run` and `capacity`).
#[derive(Clone, Debug, clap::Args)]
pub struct PlayArgs {
    /// Spread connections over 127.0.0.2 … 127.0.0.(1+N); 0 uses the default address.
    #[arg(long, default_value = "4")]
    pub source_ips: u8,
    /// Serve Prometheus metrics (connected, counters, last interval's p50/p99 by metric) on
    /// this address while the run lasts; with --agents N, agent k serves on port + k.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub scenario: Scenario,
    pub play: PlayArgs,
    pub progress_every: Duration,
    /// How long after the last send deliveries may still arrive before they count as lost.
    pub settle: Duration,
    /// Write what every user did here (a recording, see [`crate::script`]).
    pub record: Option<PathBuf>,
    /// Play these users' recorded actions instead of the scenario's random ones.
    pub replay: Option<Vec<UserRecord>>,
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
    /// The api service (REST history pages).
    pub api_port: u16,
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
    /// The password logins of the scenario's `api_logins` users, done while planning.
    #[serde(default)]
    pub logins: Option<Latency>,
    /// Keep every send and reconnect with its times (a drill's verdict needs them).
    #[serde(default)]
    pub track: bool,
    /// Appended to every `client_msg_id` (`[a-z0-9]`): a drill tags each run, so its rows in
    /// the archive are told from an earlier run's with the same seed, and JetStream's dedup
    /// window never answers its sends `duplicate`.
    #[serde(default)]
    pub tag: String,
}

impl Plan {
    /// The ramp: `ramp_up`, or longer if `connect_rate` needs it.
    pub fn ramp(&self) -> Duration {
        self.scenario.ramp()
    }
}

/// A process's users' results before the delivery check.
pub struct Played {
    pub part: Part,
    pub acked: Vec<(Seq, ChannelId)>,
    pub inboxes: Vec<Inbox>,
    /// What every user did (empty unless the plan records).
    pub records: Vec<UserRecord>,
    /// Every send and reconnect (empty unless the plan tracks them).
    pub sends: Vec<SendRecord>,
    pub reconnects: Vec<ReconnectRecord>,
    /// Every user's slowest deliveries, live and replayed (empty unless the plan tracks them).
    pub slowest: Vec<SlowDelivery>,
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
    let logging_in = scenario.api_logins.min(users.len());
    let logins = if logging_in > 0 { Some(log_in(site, &mut users[..logging_in]).await?) } else { None };
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
        api_port: site.api_port()?,
        source_ips: options.play.source_ips,
        settle_ms: options.settle.as_millis() as u64,
        progress_ms: options.progress_every.as_millis() as u64,
        users,
        record: options.record.is_some(),
        metrics_addr: options.play.metrics_addr,
        agent: None,
        logins,
        track: false,
        tag: String::new(),
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
    let mut report = Report::assemble(plan.scenario, started_unix_ms, vec![part], usage.finish());
    if let Some(logins) = plan.logins {
        report.latency.insert("login".into(), logins);
    }
    Ok(report)
}

/// Logs `users` in with their seeded password through the api service (32 at a time) and
/// gives each the access token it got; the logins' latency.
async fn log_in(site: &Site, users: &mut [PlannedUser]) -> anyhow::Result<Latency> {
    use futures_util::StreamExt as _;
    let port = site.api_port()?;
    let ids: Vec<i64> = users.iter().map(|u| u.identity.user.0).collect();
    let client = threadspace_store::connect(site.postgres_url()).await?;
    let rows = client
        .query(
            "SELECT u.id, o.slug, u.email FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.id = ANY($1)",
            &[&ids],
        )
        .await?;
    let accounts: std::collections::HashMap<i64, (String, Option<String>)> =
        rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
    println!("{} users log in through the api service…", users.len());
    let mut histogram = crate::latency_histogram();
    let attempts = users.iter().map(|user| {
        let account = accounts.get(&user.identity.user.0).cloned();
        async move {
            let (slug, email) = account.ok_or_else(|| anyhow::anyhow!("user {} vanished", user.identity.user))?;
            let email = email.ok_or_else(|| {
                anyhow::anyhow!("user {} has no email: seeded by an older release; reseed", user.identity.user)
            })?;
            let body = serde_json::json!({"org": slug, "email": email, "password": threadspace_store::seed::SEED_PASSWORD})
                .to_string();
            let t0 = Instant::now();
            let response = threadspace_client::rest::http_send(
                port,
                "POST",
                "/v1/auth/login",
                None,
                Some(("application/json", body.as_bytes())),
            )
            .await
            .ok_or_else(|| anyhow::anyhow!("login of {email}: no answer"))?;
            anyhow::ensure!(response.status == 200, "login of {email}: {} {}", response.status, response.body);
            let tokens: serde_json::Value = serde_json::from_str(&response.body)?;
            let token = tokens["access_token"].as_str().unwrap_or_default().to_owned();
            anyhow::Ok((token, t0.elapsed()))
        }
    });
    let results: Vec<anyhow::Result<(String, Duration)>> =
        futures_util::stream::iter(attempts).buffered(32).collect().await;
    for (user, result) in users.iter_mut().zip(results) {
        let (token, took) = result?;
        user.token = token;
        histogram.record((took.as_micros() as u64).clamp(1, 300_000_000)).expect("within bounds");
    }
    Ok(Latency::of(&histogram))
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
        api_port: plan.api_port,
        source_ips: plan.source_ips,
        histograms: Recorder::new(),
        counters: Counters::default(),
        errors: Mutex::default(),
        presence: Mutex::default(),
        typing: Mutex::default(),
        t0,
        end,
        record: plan.record,
        track: plan.track,
        tag: plan.tag.clone(),
        scenario: scenario.clone(),
    });
    if let Some(addr) = plan.metrics_addr {
        live::serve(addr)?;
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
                let tick = tick(&shared, t0);
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
                    p99_ms(&tick.histograms[Series::SendDeliver]),
                    p99_ms(&tick.histograms[Series::SendAck]),
                    p99_ms(&tick.histograms[Series::Presence]),
                );
                live::publish(&agent_label, &tick);
                timeline.push(tick);
            }
            _ = tokio::time::sleep_until(deadline + Duration::from_secs(30)) => {
                anyhow::bail!("virtual users did not finish 30 s after the run's end");
            }
        }
    }
    // The last, partial interval.
    timeline.push(tick(&shared, t0));
    outcomes.sort_unstable_by_key(|o| o.index);
    let acked: Vec<(Seq, ChannelId)> = outcomes.iter().flat_map(|o| o.acked.iter().copied()).collect();
    let records: Vec<UserRecord> = outcomes.iter_mut().filter_map(|o| o.record.take()).collect();
    let (mut sends, mut reconnects, mut slowest) = (Vec::new(), Vec::new(), Vec::new());
    for outcome in &mut outcomes {
        let track = std::mem::take(&mut outcome.track);
        sends.extend(track.sends);
        reconnects.extend(track.reconnects);
        slowest.extend(track.slowest);
    }
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
    let histograms = shared.histograms.whole_run();
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
    Ok(Played { part, acked, inboxes, records, sends, reconnects, slowest })
}

/// Ends the current progress interval: the counters so far and the interval's latencies.
fn tick(shared: &Shared, t0: Instant) -> Tick {
    let c = &shared.counters;
    Tick {
        at_s: Instant::now().saturating_duration_since(t0).as_secs_f64(),
        connected: c.connected.load(Ordering::Relaxed),
        sent: c.sent.load(Ordering::Relaxed),
        acked: c.acked.load(Ordering::Relaxed),
        delivered: c.delivered.load(Ordering::Relaxed),
        failures: c.failures.load(Ordering::Relaxed),
        reconnects: c.reconnects.load(Ordering::Relaxed),
        histograms: shared.histograms.take_interval(),
    }
}
