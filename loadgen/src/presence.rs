//! `presence`: how fast presence changes reach the other members of an org, with thousands of
//! users connected over several gateways, and what presence costs in CPU and heartbeat bytes.
//!
//! Starts its own stack (nats-server, PostgreSQL, `--gateways` gateways on loopback), seeds
//! orgs of `--org-size` users, connects `--users` of them round-robin over the gateways, then
//! runs timed phases. In each, `--changes` subjects spread over the orgs change state at
//! `--change-rate`, and every other connected member of the subject's org records when the
//! change arrives; latency counts from the moment the change was made (the connect started,
//! the signal or close was sent, the gateway was killed), so a slow path cannot hide.
//!
//! Phases: `connect` (subjects connect), `steady` (no changes: CPU and heartbeat bytes of the
//! gateways and nats-server), `idle`, `active`, `disconnect`, then `crash`: one gateway is
//! SIGKILLed and every member on the surviving gateways must see each of its users go offline.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::builder::TypedValueParser as _;
use hdrhistogram::Histogram;
use threadspace_client::rest::metric_sum;
use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_devstack::stack::{Stack, StackOptions};
use threadspace_protocol::frames::{close_code, ClientFrame, ClientStatus, PresenceStatus, ServerFrame};
use threadspace_protocol::{OrgId, UserId};
use tokio::sync::{mpsc, Semaphore};

use crate::{cpu_time, latency_histogram, summary};

/// The flags of `loadgen presence`. (A field's `//` comment stays out of `--help`, where a doc
/// comment would be its help text.)
#[derive(Clone, Debug, clap::Args)]
pub struct PresenceOptions {
    /// Users connected (seeded in orgs of --org-size).
    #[arg(long, default_value = "10000", value_parser = clap::value_parser!(u64).range(10..=18_000).map(|n| n as usize))]
    pub users: usize,
    #[arg(long, default_value = "250", value_parser = clap::value_parser!(u64).range(2..=500).map(|n| n as usize))]
    pub org_size: usize,
    #[arg(long, default_value = "3", value_parser = clap::value_parser!(u64).range(2..=8).map(|n| n as usize))]
    pub gateways: usize,
    /// Subjects per change phase.
    #[arg(long, default_value = "400", value_parser = clap::value_parser!(u64).range(1..=5_000).map(|n| n as usize))]
    pub changes: usize,
    /// Changes per second within a phase.
    #[arg(long, default_value = "40")]
    pub change_rate: f64,
    /// How long the steady (no change) phase measures CPU and heartbeat bytes.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub steady: Duration,
    /// Skip the gateway-crash phase.
    #[arg(long)]
    pub no_crash: bool,
    // Spread client connections over 127.0.0.2 … 127.0.0.(1+n).
    #[arg(long, default_value = "4")]
    pub source_ips: u8,
    /// Extra gateway flag, repeatable (e.g. --gateway-arg=--presence-interval=1s).
    #[arg(long = "gateway-arg", allow_hyphen_values = true)]
    pub gateway_args: Vec<String>,
    /// Exit non-zero if a change phase's p99 is above this (or anything is missing).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_change_p99: Option<Duration>,
    /// Exit non-zero if the crash phase's p99 is above this.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_crash_p99: Option<Duration>,
}

impl PresenceOptions {
    /// Why `--change-rate` cannot be played, if it cannot (clap checks no range of a float).
    pub fn change_rate_error(&self) -> Option<&'static str> {
        let playable = self.change_rate.is_finite() && self.change_rate > 0.0 && self.change_rate <= 10_000.0;
        (!playable).then_some("--change-rate must be between 0 and 10000 changes per second")
    }
}

/// One phase's result.
#[derive(Debug)]
pub struct PhaseReport {
    pub name: &'static str,
    pub changes: usize,
    pub expected: u64,
    pub observed: u64,
    pub latency: Histogram<u64>,
}

/// Steady-state cost of presence.
#[derive(Debug)]
pub struct SteadyReport {
    pub users: usize,
    pub window: Duration,
    pub gateway_cpu: Duration,
    pub nats_cpu: Duration,
    pub beat_bytes_sent: f64,
    pub beat_bytes_received: f64,
    pub beats_sent: f64,
}

#[derive(Debug)]
pub struct PresenceReport {
    pub connected: usize,
    pub phases: Vec<PhaseReport>,
    pub steady: Option<SteadyReport>,
}

/// The change every observer is waiting for in the current phase.
#[derive(Default)]
struct Expect {
    phase: u32,
    changes: HashMap<UserId, (PresenceStatus, Instant)>,
}

struct Shared {
    expect: Mutex<Expect>,
    phase: AtomicU32,
    latency: Mutex<Histogram<u64>>,
    observed: AtomicU64,
}

/// What a subject's task is told to do.
#[derive(Clone, Copy, Debug)]
enum Command {
    Say(ClientStatus),
    Close,
}

/// A connected client as the driver keeps it.
struct Conn {
    user: UserId,
    org: OrgId,
    gateway: usize,
    /// Records what it sees (the population; subjects only change, so that a subject that
    /// connects or closes mid-phase does not blur the count).
    observer: bool,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

pub async fn run(options: &PresenceOptions) -> anyhow::Result<PresenceReport> {
    anyhow::ensure!(options.gateways >= 2, "--gateways must be at least 2 (a crash needs a survivor)");
    anyhow::ensure!(
        options.changes < options.users,
        "--changes ({}) must be below --users ({})",
        options.changes,
        options.users
    );
    let mut stack_options = StackOptions::for_tests(options.gateways);
    stack_options.gateway_args = options.gateway_args.clone();
    let mut stack =
        crate::target::seeded_stack(stack_options, options.users, options.org_size, "presence", 7).await?;
    let users: Vec<(UserId, OrgId)> = crate::target::first_users(&*stack.pool.get().await?, options.users)
        .await?
        .into_iter()
        .map(|i| (i.user, i.org))
        .collect();
    // Subjects: every k-th user, so they spread over orgs and gateways.
    let stride = users.len() / options.changes.max(1);
    let subjects: Vec<(UserId, OrgId)> =
        users.iter().step_by(stride.max(1)).take(options.changes).copied().collect();
    let subject_set: HashSet<UserId> = subjects.iter().map(|(u, _)| *u).collect();
    let population: Vec<(UserId, OrgId)> =
        users.iter().filter(|(u, _)| !subject_set.contains(u)).copied().collect();

    let shared = Arc::new(Shared {
        expect: Mutex::new(Expect::default()),
        phase: AtomicU32::new(0),
        latency: Mutex::new(latency_histogram()),
        observed: AtomicU64::new(0),
    });
    let mut conns: Vec<Conn> = Vec::with_capacity(users.len());
    println!("connecting {} users over {} gateways…", population.len(), options.gateways);
    let started = Instant::now();
    connect_many(&stack, options, &population, &shared, &mut conns).await?;
    println!("{} connected in {:.1} s", conns.len(), started.elapsed().as_secs_f64());
    // Let the first full snapshots settle everywhere.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut phases = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / options.change_rate);

    // connect
    let phase = begin(&shared, "connect");
    let mut subject_conns = Vec::new();
    let t0 = tokio::time::Instant::now();
    let mut expected = 0;
    for (n, &(user, org)) in subjects.iter().enumerate() {
        tokio::time::sleep_until(t0 + interval.mul_f64(n as f64)).await;
        expected += observers(&conns, org, user, None);
        shared.expect.lock().expect("lock").changes.insert(user, (PresenceStatus::Online, Instant::now()));
        let gateway = (population.len() + n) % options.gateways;
        let (url, token) = (stack.ws_url(gateway), stack.token(user, org));
        subject_conns
            .push(open(url, token, (user, org, gateway), conns.len() + n, options.source_ips, None).await?);
    }
    phases.push(finish(&shared, phase, "connect", subjects.len(), expected, Duration::from_secs(15)).await);
    conns.extend(subject_conns);

    // steady
    let steady = Some(measure_steady(&stack, options, conns.len()).await);

    // idle, active, disconnect: the subjects (now connected) change.
    for (name, command, status) in [
        ("idle", Command::Say(ClientStatus::Idle), PresenceStatus::Idle),
        ("active", Command::Say(ClientStatus::Online), PresenceStatus::Online),
        ("disconnect", Command::Close, PresenceStatus::Offline),
    ] {
        let phase = begin(&shared, name);
        let t0 = tokio::time::Instant::now();
        let mut expected = 0;
        let subject_ids: Vec<usize> =
            conns.iter().enumerate().filter(|(_, c)| subject_set.contains(&c.user)).map(|(i, _)| i).collect();
        for (n, &i) in subject_ids.iter().enumerate() {
            tokio::time::sleep_until(t0 + interval.mul_f64(n as f64)).await;
            let (user, org) = (conns[i].user, conns[i].org);
            expected += observers(&conns, org, user, None);
            shared.expect.lock().expect("lock").changes.insert(user, (status, Instant::now()));
            let _ = conns[i].commands.send(command).await;
        }
        phases.push(finish(&shared, phase, name, subject_ids.len(), expected, Duration::from_secs(15)).await);
    }
    conns.retain(|c| !subject_set.contains(&c.user));

    // crash
    if !options.no_crash {
        let phase = begin(&shared, "crash");
        let victims: Vec<(UserId, OrgId)> =
            conns.iter().filter(|c| c.gateway == 0).map(|c| (c.user, c.org)).collect();
        let mut expected = 0;
        let killed = Instant::now();
        {
            let mut expect = shared.expect.lock().expect("lock");
            for &(user, org) in &victims {
                expected += observers(&conns, org, user, Some(0));
                expect.changes.insert(user, (PresenceStatus::Offline, killed));
            }
        }
        println!("SIGKILL gateway 1 with {} users connected…", victims.len());
        stack.kill_gateway(0);
        phases.push(finish(&shared, phase, "crash", victims.len(), expected, Duration::from_secs(20)).await);
    }
    for conn in &conns {
        conn.task.abort();
    }
    Ok(PresenceReport { connected: conns.len(), phases, steady })
}

/// Members of `org` (other than `user`) connected to a gateway other than `dead`.
fn observers(conns: &[Conn], org: OrgId, user: UserId, dead: Option<usize>) -> u64 {
    conns.iter().filter(|c| c.observer && c.org == org && c.user != user && Some(c.gateway) != dead).count()
        as u64
}

fn begin(shared: &Shared, name: &str) -> u32 {
    let phase = shared.phase.fetch_add(1, Ordering::AcqRel) + 1;
    *shared.expect.lock().expect("lock") = Expect { phase, changes: HashMap::new() };
    *shared.latency.lock().expect("lock") = latency_histogram();
    shared.observed.store(0, Ordering::Release);
    println!("phase {name}…");
    phase
}

/// Waits until every expected observation arrived (or `limit` after the last change).
async fn finish(
    shared: &Shared,
    phase: u32,
    name: &'static str,
    changes: usize,
    expected: u64,
    limit: Duration,
) -> PhaseReport {
    let deadline = Instant::now() + limit;
    while shared.observed.load(Ordering::Acquire) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    debug_assert_eq!(shared.expect.lock().expect("lock").phase, phase);
    let report = PhaseReport {
        name,
        changes,
        expected,
        observed: shared.observed.load(Ordering::Acquire),
        latency: shared.latency.lock().expect("lock").clone(),
    };
    report.print();
    report
}

async fn measure_steady(stack: &Stack, options: &PresenceOptions, users: usize) -> SteadyReport {
    println!("phase steady: {users} users, no changes, {:?}…", options.steady);
    let pids: Vec<u32> = stack.gateways.iter().filter_map(|g| g.process.as_ref().map(|p| p.pid())).collect();
    let nats_pid = stack.nats.process.pid();
    let counters = |name: &'static str| async move {
        let mut total = 0.0;
        for gateway in &stack.gateways {
            total += metric_sum(gateway.port, name, "").await.unwrap_or(0.0);
        }
        total
    };
    let (sent0, received0, beats0) = (
        counters("threadspace_gateway_presence_beat_bytes_sent_total").await,
        counters("threadspace_gateway_presence_beat_bytes_received_total").await,
        counters("threadspace_gateway_presence_beats_sent_total").await,
    );
    let cpu0: Duration = pids.iter().filter_map(|&p| cpu_time(p)).sum();
    let nats0 = cpu_time(nats_pid).unwrap_or_default();
    let started = Instant::now();
    tokio::time::sleep(options.steady).await;
    let window = started.elapsed();
    let report = SteadyReport {
        users,
        window,
        gateway_cpu: pids.iter().filter_map(|&p| cpu_time(p)).sum::<Duration>().saturating_sub(cpu0),
        nats_cpu: cpu_time(nats_pid).unwrap_or_default().saturating_sub(nats0),
        beat_bytes_sent: counters("threadspace_gateway_presence_beat_bytes_sent_total").await - sent0,
        beat_bytes_received: counters("threadspace_gateway_presence_beat_bytes_received_total").await
            - received0,
        beats_sent: counters("threadspace_gateway_presence_beats_sent_total").await - beats0,
    };
    report.print();
    report
}

async fn connect_many(
    stack: &Stack,
    options: &PresenceOptions,
    users: &[(UserId, OrgId)],
    shared: &Arc<Shared>,
    conns: &mut Vec<Conn>,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(200));
    let mut pending = tokio::task::JoinSet::new();
    for (i, &(user, org)) in users.iter().enumerate() {
        let permit = permits.clone().acquire_owned().await?;
        let gateway = i % options.gateways;
        let url = stack.ws_url(gateway);
        let token = stack.token(user, org);
        let shared = shared.clone();
        let source_ips = options.source_ips;
        pending.spawn(async move {
            let _permit = permit;
            let conn = open(url, token, (user, org, gateway), i, source_ips, Some(shared)).await;
            (i, conn)
        });
        if i % 2_000 == 1_999 {
            println!("  {} opened", i + 1);
        }
    }
    let mut opened = Vec::with_capacity(users.len());
    while let Some(joined) = pending.join_next().await {
        let (i, conn) = joined?;
        opened.push((i, conn.map_err(|e| anyhow::anyhow!("connection {i} failed: {e:#}"))?));
    }
    opened.sort_unstable_by_key(|(i, _)| *i);
    conns.extend(opened.into_iter().map(|(_, c)| c));
    Ok(())
}

/// Connects one user; with `shared` it observes, without it it only obeys commands.
async fn open(
    url: String,
    token: String,
    (user, org, gateway): (UserId, OrgId, usize),
    n: usize,
    source_ips: u8,
    shared: Option<Arc<Shared>>,
) -> anyhow::Result<Conn> {
    let mut connect = ConnectOptions::new(url);
    connect.queue = 256;
    connect.local_addr = crate::source_addr(n, source_ips);
    let mut client = Client::connect(&connect).await?;
    client.hello(&token, None, Duration::from_secs(60)).await?;
    let (commands, rx) = mpsc::channel(4);
    let observer = shared.is_some();
    let task = tokio::spawn(observe(client, user, rx, shared));
    Ok(Conn { user, org, gateway, observer, commands, task })
}

/// Owns one client: records the presence changes it sees, obeys its commands.
async fn observe(
    mut client: Client,
    me: UserId,
    mut commands: mpsc::Receiver<Command>,
    shared: Option<Arc<Shared>>,
) {
    let mut phase = 0;
    let mut seen: HashSet<UserId> = HashSet::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Say(status)) => {
                    if client.send(&ClientFrame::Presence { status }).await.is_err() {
                        return;
                    }
                }
                Some(Command::Close) | None => {
                    let _ = client.close(close_code::NORMAL).await;
                    return;
                }
            },
            item = client.recv(Duration::from_secs(3600)) => match item {
                Ok(Incoming::Frame(ServerFrame::Presence { users })) => {
                    let Some(shared) = &shared else { continue };
                    let now = Instant::now();
                    let expect = shared.expect.lock().expect("lock");
                    if expect.phase != phase {
                        phase = expect.phase;
                        seen.clear();
                    }
                    for entry in users {
                        if entry.user == me {
                            continue;
                        }
                        if let Some((status, at)) = expect.changes.get(&entry.user) {
                            if *status == entry.status && seen.insert(entry.user) {
                                let micros = now.saturating_duration_since(*at).as_micros() as u64;
                                let _ = shared.latency.lock().expect("lock").record(micros.max(1));
                                shared.observed.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                    }
                }
                Ok(Incoming::Frame(_)) => {}
                _ => return,
            },
        }
    }
}

impl PhaseReport {
    pub fn missing(&self) -> u64 {
        self.expected.saturating_sub(self.observed)
    }

    pub fn print(&self) {
        println!(
            "  {:<10} {} changes, {} of {} observations ({} missing)",
            self.name,
            self.changes,
            self.observed,
            self.expected,
            self.missing()
        );
        println!("  {}", summary(&format!("{} →seen", self.name), &self.latency));
    }

    fn p99(&self) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(0.99))
    }
}

impl SteadyReport {
    pub fn print(&self) {
        let secs = self.window.as_secs_f64();
        let per_10k = 10_000.0 / self.users.max(1) as f64;
        println!(
            "  steady: {} users for {:.0} s: gateways used {:.3} CPU-s/s in total ({:.3} per 10k users), nats-server {:.3} CPU-s/s",
            self.users,
            secs,
            self.gateway_cpu.as_secs_f64() / secs,
            self.gateway_cpu.as_secs_f64() / secs * per_10k,
            self.nats_cpu.as_secs_f64() / secs
        );
        println!(
            "  heartbeats: {:.1} beats/s, {:.1} KiB/s published, {:.1} KiB/s received by all gateways ({:.1} / {:.1} KiB/s per 10k users)",
            self.beats_sent / secs,
            self.beat_bytes_sent / secs / 1024.0,
            self.beat_bytes_received / secs / 1024.0,
            self.beat_bytes_sent / secs / 1024.0 * per_10k,
            self.beat_bytes_received / secs / 1024.0 * per_10k
        );
    }
}

impl PresenceReport {
    /// Checks the run against the thresholds; the reason if it fails.
    pub fn gate(&self, options: &PresenceOptions) -> Result<(), String> {
        let mut failures = Vec::new();
        for phase in &self.phases {
            if phase.missing() > 0 {
                failures.push(format!("{}: {} observations missing", phase.name, phase.missing()));
            }
            let limit = if phase.name == "crash" { options.max_crash_p99 } else { options.max_change_p99 };
            if let Some(limit) = limit {
                if phase.p99() > limit {
                    failures.push(format!("{}: p99 {:?} over {:?}", phase.name, phase.p99(), limit));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}
