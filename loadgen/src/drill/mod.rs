//! `loadgen drill`: plays steady traffic on an HA stack while faults strike on a schedule, and
//! gives a verdict (docs/drills.md): every acknowledged message delivered exactly once and in
//! order to every online member (the run's checker), the archive equal to the acknowledged
//! set, every fault proven to have struck, and per fault the window in which sends failed and
//! how long clients took to resume — gated on `--max-unavailable`.
//!
//! This module is the driver (flags, schedule per run, the runs, the gate); the faults are in
//! `faults`, the archive and impact measures in `verdict`, the printed and HTML reports in
//! `report`.

pub mod faults;
mod meta_leader;
mod presence;
mod probe;
mod report;
pub mod verdict;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use threadspace_devstack::stack::StackOptions;

use self::faults::{FaultKind, Observer, Planned, Struck, Timings, Topology};
use self::verdict::{Archive, Impact};
use crate::checker::{check, Verdict};
use crate::run::{self, PlayArgs, RunOptions, Series, Site};
use crate::scenario::Scenario;
use crate::target::Target;
use crate::unix_micros;

/// Time between a fault's recovery and the next strike at the least, so that one fault's
/// window never holds the last one's aftermath.
const QUIET_GAP: Duration = Duration::from_secs(5);

/// A flag value the drill cannot play: `loadgen` exits 64 (usage) with it.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The flags of `loadgen drill`.
#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// Faults, in order: KIND[:N][@OFFSET], comma-separated, or `all`. OFFSET counts from the
    /// end of the ramp (default: --fault-interval after the previous fault); N picks gateway
    /// or bridge N (default: the gateway with the most clients, a bridge chosen from the seed). Kinds: gateway-kill, gateway-rolling,
    /// nats-leader-kill, nats-meta-leader-kill, nats-leader-wipe, nats-follower-kill,
    /// nats-follower-wipe, nats-pause, bridge-kill, pg-failover, pg-stop, pg-stop-gateway-kill.
    #[arg(long, default_value = "gateway-kill,nats-leader-kill,bridge-kill")]
    faults: String,
    /// Time between faults without an explicit offset.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    fault_interval: Duration,
    /// Shuffle the faults and jitter their times (±25 % of the interval) from each run's seed.
    #[arg(long)]
    shuffle: bool,
    /// How long a killed process stays down before it is started again.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    down_for: Duration,
    /// How long nats-pause keeps the leader stopped (SIGSTOP) before SIGCONT.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pause_for: Duration,
    /// How long pg-stop keeps the PostgreSQL primary down.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pg_stop_for: Duration,
    /// How long a wiped NATS node is expected to take to copy the stream back, for the run's
    /// length (the drill waits for the real catch-up either way): 10–92 s on this machine as
    /// the stream grew over 20 runs, a few seconds on a fresh stack.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    catch_up_for: Duration,
    /// Drills in a row on the same stack, run k with seed --seed + k.
    #[arg(long, default_value = "1")]
    runs: u32,
    /// Seed of the first run (traffic, targets, and with --shuffle the schedule).
    #[arg(long, default_value = "1")]
    seed: u64,
    /// Traffic preset (see `loadgen run`); `drill` is ~48 msg/s from 300 users.
    #[arg(long, default_value = "drill")]
    preset: String,
    /// Override the preset's user count.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=20_000))]
    users: Option<u64>,
    /// Length of each run after the ramp (default: until 15 s after the last fault recovers).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// A send acknowledged later than this counts as stalled.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    stall: Duration,
    /// The longest a fault may keep sends failing, or one client from resuming.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    max_unavailable: Duration,
    /// Exit 1 if a message is lost, duplicated or reordered, the archive differs from the
    /// acknowledged set, a window exceeds --max-unavailable, or a fault cannot prove it struck.
    #[arg(long)]
    gate: bool,
    /// Drill the stack `./threadspace up --ha` started (in --stack-dir) instead of starting a
    /// private one; every scheduled kind then needs a --fault-command.
    #[arg(long)]
    existing_stack: bool,
    /// KIND=COMMAND, repeatable: strike KIND by running COMMAND with `sh -c` instead of
    /// loadgen's own action (`{kind}` and `{target}` are replaced), e.g.
    /// `gateway-kill=kubectl delete pod -l app=gateway --wait=false`.
    #[arg(long = "fault-command")]
    fault_commands: Vec<String>,
    /// Replicas of the private stack's streams. 1 is unsafe: nats-leader-wipe then deletes
    /// the stream's only copy, and the gate fails (docs/drills.md, "An unsafe configuration").
    #[arg(long, default_value = "3", value_parser = clap::value_parser!(u64).range(1..=3))]
    stream_replicas: u64,
    /// How long the private stack's MESSAGES stream keeps records (the gateways'
    /// `--stream-max-age`, 7 days unless given; at least 5m). A short one keeps the stream
    /// small however many runs came before, so a wiped NATS node copies it back in seconds
    /// (docs/drills.md, "Twenty runs").
    #[arg(long, value_parser = humantime::parse_duration)]
    stream_max_age: Option<Duration>,
    /// Keep the private stack's data and logs in this directory (a fresh one) instead of a
    /// temporary directory removed at the end.
    #[arg(long)]
    keep_stack_dir: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write an HTML report (timelines with every fault and recovery marked) here.
    #[arg(long)]
    html: Option<PathBuf>,
}

/// One run of a drill.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run: u32,
    pub seed: u64,
    pub users: usize,
    pub sent: u64,
    pub acked: u64,
    pub faults: Vec<FaultReport>,
    /// The delivery checker: every acknowledged message to every online member.
    pub delivery: Verdict,
    /// Users whose reconnects failed for 45 s (their chain broke).
    pub broken_chains: usize,
    pub archive: Archive,
    pub deliver_p99_ms: f64,
    pub reconnect_resumed_p99_ms: f64,
    /// Acknowledged sends per second and failed sends per second, per second of the run.
    pub timeline: Vec<(f64, u64, u64)>,
    /// Seconds since the ramp began of each fault's strike and recovery.
    pub marks: Vec<(f64, f64, String)>,
    /// The slowest live deliveries, then the slowest replayed ones, traced to their gateways
    /// and faults (see [`verdict::slowest`]).
    pub slowest_deliveries: Vec<verdict::TracedDelivery>,
    /// Why the run fails the gate (empty: it passes).
    pub failures: Vec<String>,
}

/// One fault of a run: what struck, what proves it, and what it did to the clients.
#[derive(Clone, Debug, Serialize)]
pub struct FaultReport {
    #[serde(with = "crate::scenario::humantime_serde")]
    pub planned_at: Duration,
    #[serde(flatten)]
    pub struck: Struck,
    pub impact: Impact,
    /// Presence convergence, for faults that move clients (gateway kills and restarts); `None`
    /// for the others.
    pub presence: Option<PresenceConvergence>,
    /// What is missing from its proof (empty: it provably struck).
    pub unproven: Vec<String>,
}

/// How fast presence became whole again after a fault that moved clients.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PresenceConvergence {
    /// The longest stretch (ms) in which some gateway showed some user of an org as offline
    /// although every user stayed connected (0: never); `None`: presence was not whole again
    /// 30 s after the recovery.
    pub wrong_ms: Option<u64>,
}

/// Every run of a drill.
#[derive(Clone, Debug, Serialize)]
pub struct DrillReport {
    pub runs: Vec<RunReport>,
    pub max_unavailable_ms: u64,
}

/// Checks the flags and builds every run's schedule before anything starts.
fn plan_runs(args: &DrillArgs, topology: Topology) -> Result<(Scenario, Vec<Vec<Planned>>), UsageError> {
    let usage = |m: String| UsageError(m);
    if args.runs == 0 {
        return Err(usage("--runs 0: a drill needs at least one run".into()));
    }
    for (flag, value) in [
        ("--fault-interval", args.fault_interval),
        ("--stall", args.stall),
        ("--max-unavailable", args.max_unavailable),
    ] {
        if value.is_zero() {
            return Err(usage(format!("{flag} must be above 0")));
        }
    }
    let mut scenario = Scenario::preset(&args.preset).ok_or_else(|| {
        usage(format!("unknown --preset `{}`; presets: {}", args.preset, Scenario::PRESETS.join(", ")))
    })?;
    if let Some(users) = args.users {
        scenario.users = users as usize;
    }
    let planned = faults::parse_schedule(&args.faults, args.fault_interval, topology).map_err(usage)?;
    if let Some(meta) = planned.iter().find(|p| p.kind == FaultKind::NatsMetaLeaderKill) {
        if args.stream_replicas < 3 {
            return Err(usage(format!(
                "{} needs --stream-replicas 3: the JetStream meta leader must hold a copy of MESSAGES to lead it",
                meta.kind.name()
            )));
        }
    }
    if let Some(own) = planned.iter().find(|p| p.kind.own_stack_only() && args.existing_stack) {
        return Err(usage(format!(
            "--existing-stack: {} needs loadgen's own stack (it moves the MESSAGES leader onto the JetStream meta leader, read from the nodes' monitoring ports); leave it out of --faults",
            own.kind.name()
        )));
    }
    if let Some(age) = args.stream_max_age {
        if args.existing_stack {
            return Err(usage(
                "--stream-max-age sets up loadgen's private stack; a stack it did not start keeps its own"
                    .into(),
            ));
        }
        if age < Duration::from_secs(300) {
            return Err(usage(format!(
                "--stream-max-age {} is under 5m: the gateways refuse it (it bounds resume replay)",
                humantime::format_duration(age)
            )));
        }
    }
    if args.shuffle && args.faults.contains('@') {
        return Err(usage(
            "--shuffle picks the times itself: drop the @OFFSETs from --faults, or --shuffle".into(),
        ));
    }
    let timings = timings(args);
    // A user keeps reconnecting for 45 s: every fault must end sooner (a hello whose login
    // session has no copy in the hello cache needs PostgreSQL).
    for (flag, value) in
        [("--down-for", args.down_for), ("--pause-for", args.pause_for), ("--pg-stop-for", args.pg_stop_for)]
    {
        if value > Duration::from_secs(30) {
            return Err(usage(format!(
                "{flag} {} is over 30 s: clients give up reconnecting after 45 s",
                humantime::format_duration(value)
            )));
        }
    }
    let mut schedules = Vec::new();
    let mut longest = Duration::ZERO;
    for run in 0..args.runs {
        let seed = args.seed.wrapping_add(u64::from(run));
        let schedule =
            if args.shuffle { faults::shuffle(&planned, args.fault_interval, seed) } else { planned.clone() };
        // Each fault waits for the previous one's recovery plus a quiet gap (see `one_run`).
        let mut finish = Duration::ZERO;
        for p in &schedule {
            let start = p.at.max(finish + QUIET_GAP);
            finish = start + faults::expected_length(p.kind, &timings, topology.gateways);
        }
        let needed = finish + Duration::from_secs(15);
        if let Some(duration) = args.duration {
            let length = |p: &Planned| faults::expected_length(p.kind, &timings, topology.gateways);
            if let Some(outside) =
                schedule.iter().find(|p| p.at + length(p) + Duration::from_secs(2) > duration)
            {
                return Err(usage(format!(
                    "--faults: {} at {} (and its ~{} recovery) is outside the run (--duration {} after the ramp)",
                    outside.kind.name(),
                    humantime::format_duration(outside.at),
                    humantime::format_duration(length(outside)),
                    humantime::format_duration(duration)
                )));
            }
        }
        longest = longest.max(needed);
        schedules.push(schedule);
    }
    scenario.duration = args.duration.unwrap_or(longest);
    scenario.validate().map_err(|e| usage(format!("{e:#}")))?;
    Ok((scenario, schedules))
}

fn timings(args: &DrillArgs) -> Timings {
    Timings {
        down_for: args.down_for,
        pause_for: args.pause_for,
        pg_stop_for: args.pg_stop_for,
        catch_up_for: args.catch_up_for,
        drain: Duration::from_secs(3),
    }
}

/// `KIND=COMMAND` flags, by kind.
fn fault_commands(args: &DrillArgs) -> Result<HashMap<&'static str, String>, UsageError> {
    let mut commands = HashMap::new();
    for entry in &args.fault_commands {
        let (kind, command) = entry
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--fault-command {entry:?}: expected KIND=COMMAND")))?;
        let kind = FaultKind::ALL.into_iter().find(|k| k.name() == kind.trim()).ok_or_else(|| {
            UsageError(format!("--fault-command {entry:?}: unknown fault kind {:?}", kind.trim()))
        })?;
        if command.trim().is_empty() {
            return Err(UsageError(format!("--fault-command {entry:?}: the command is empty")));
        }
        commands.insert(kind.name(), command.trim().to_owned());
    }
    Ok(commands)
}

/// `loadgen drill`.
pub async fn drill(args: DrillArgs, stack_dir: &std::path::Path) -> anyhow::Result<()> {
    let commands = fault_commands(&args)?;
    let target = if args.existing_stack { Some(Target::open(stack_dir)?) } else { None };
    let topology = match &target {
        Some(t) => Topology { gateways: t.state.gateways.len(), bridges: t.state.bridges.len() },
        None => Topology { gateways: 3, bridges: 2 },
    };
    let (scenario, schedules) = plan_runs(&args, topology)?;
    if target.is_some() {
        for schedule in &schedules {
            if let Some(missing) = schedule.iter().find(|p| !commands.contains_key(p.kind.name())) {
                return Err(UsageError(format!(
                    "--existing-stack: loadgen cannot strike {} on a stack it did not start; give --fault-command {}=COMMAND",
                    missing.kind.name(),
                    missing.kind.name()
                ))
                .into());
            }
        }
    }
    for path in [&args.report, &args.html].into_iter().flatten() {
        crate::check_writable(path)?;
    }
    let mut site = match target {
        Some(target) => Site::Existing(Box::new(target)),
        None => {
            let mut options = StackOptions::ha();
            options.stream_replicas = args.stream_replicas as usize;
            if let Some(age) = args.stream_max_age {
                options
                    .gateway_args
                    .extend(["--stream-max-age".to_owned(), humantime::format_duration(age).to_string()]);
            }
            if let Some(dir) = &args.keep_stack_dir {
                if dir.exists() && dir.read_dir()?.next().is_some() {
                    return Err(UsageError(format!(
                        "--keep-stack-dir {}: not empty; give a new directory",
                        dir.display()
                    ))
                    .into());
                }
                options.dir = Some(dir.clone());
            }
            let stack = crate::target::seeded_stack(
                options,
                scenario.users,
                scenario.org_size,
                "drill",
                scenario.seed,
            )
            .await?;
            Site::Own(Box::new(stack))
        }
    };
    let mut runs = Vec::new();
    for (run, schedule) in schedules.iter().enumerate() {
        let mut scenario = scenario.clone();
        scenario.seed = args.seed.wrapping_add(run as u64);
        println!(
            "drill run {}/{} (seed {}): {}",
            run + 1,
            schedules.len(),
            scenario.seed,
            schedule
                .iter()
                .map(|p| format!("{}@{}", p.kind.name(), humantime::format_duration(p.at)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let report = one_run(&args, &mut site, scenario, schedule, &commands, run as u32).await?;
        report::print_run(&report);
        runs.push(report);
    }
    let drill = DrillReport { runs, max_unavailable_ms: args.max_unavailable.as_millis() as u64 };
    report::print_summary(&drill);
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&drill)?)
            .map_err(|e| anyhow::anyhow!("cannot write the report to {}: {e}", path.display()))?;
        println!("report written to {}", path.display());
    }
    if let Some(path) = &args.html {
        report::write_html(&drill, path)?;
        println!("HTML report written to {}", path.display());
    }
    let failures: Vec<String> = drill
        .runs
        .iter()
        .flat_map(|r| r.failures.iter().map(move |f| format!("run {} (seed {}): {f}", r.run + 1, r.seed)))
        .collect();
    if args.gate && !failures.is_empty() {
        anyhow::bail!("gate failed: {}", failures.join("; "));
    }
    Ok(())
}

/// Plays one run while its faults strike, then judges it.
async fn one_run(
    args: &DrillArgs,
    site: &mut Site,
    scenario: Scenario,
    schedule: &[Planned],
    commands: &HashMap<&'static str, String>,
    run: u32,
) -> anyhow::Result<RunReport> {
    let seed = scenario.seed;
    let options = RunOptions {
        scenario,
        play: PlayArgs { source_ips: 4, metrics_addr: None },
        progress_every: Duration::from_secs(5),
        settle: Duration::from_secs(5),
        record: None,
        replay: None,
    };
    let mut plan = run::plan(site, &options).await?;
    plan.track = true;
    // This run's ids: its seed and a tag of its start (see `Plan::tag`).
    plan.tag = format!("r{:x}", plan.start_unix_ms % 0x1000_0000);
    let suffix = format!("y{seed:x}{}", plan.tag);
    let start_us = plan.start_unix_ms * 1000;
    let ramp_end_us = start_us + plan.ramp().as_micros() as u64;
    let end_us = ramp_end_us + plan.scenario.duration.as_micros() as u64;
    let users = plan.users.len();
    let observers = presence::Observers::new(
        plan.ws_urls.clone(),
        plan.users.iter().map(|u| (u.identity.org, u.identity.user, u.token.clone())),
    );
    let probe = probe::Probe::start(
        plan.ws_urls.clone(),
        plan.users[0].identity,
        plan.users[0].token.clone(),
        suffix.clone(),
    );
    let topology = Topology {
        gateways: plan.ws_urls.len(),
        bridges: match &*site {
            Site::Own(stack) => stack.bridges.len(),
            Site::Existing(target) => target.state.bridges.len(),
        },
    };
    let playing = tokio::spawn(async move { run::play(&plan, "").await });
    let (postgres_url, nats_url) = site_urls(site);
    let observer = Observer { nats_url, postgres_url: postgres_url.clone() };
    let timings = timings(args);
    let mut struck_all: Vec<Struck> = Vec::new();
    let mut presence_all: Vec<Option<PresenceConvergence>> = Vec::new();
    for planned in schedule {
        let after_last = struck_all.last().map_or(0, |s| s.recovered_us + QUIET_GAP.as_micros() as u64);
        let due = (ramp_end_us + planned.at.as_micros() as u64).max(after_last);
        tokio::time::sleep(Duration::from_micros(due.saturating_sub(unix_micros()))).await;
        let busiest = match planned.kind.targets() {
            Some("gateway") if planned.target.is_none() => {
                faults::busiest_gateway(&gateway_ports(site)).await
            }
            _ => None,
        };
        let planned = &faults::resolve(planned, topology, seed, busiest);
        // Faults that move clients: watch presence from just before the strike.
        let (recovered, watching) = tokio::sync::watch::channel(false);
        let watch = planned
            .kind
            .moves_clients()
            .then(|| tokio::spawn(presence::converge(observers.clone(), watching)));
        let struck = match (commands.get(planned.kind.name()), &mut *site) {
            (Some(command), _) => faults::strike_hook(command, planned, &observer, &probe).await,
            (None, Site::Own(stack)) => faults::strike_own(stack, planned, &timings, seed, &probe).await,
            (None, Site::Existing(_)) => unreachable!("checked before the drill began"),
        };
        let _ = recovered.send(true);
        let presence = match watch {
            Some(watch) => Some(PresenceConvergence { wrong_ms: watch.await.ok().flatten() }),
            None => None,
        };
        presence_all.push(presence);
        let at = |us: u64| us.saturating_sub(start_us) as f64 / 1e6;
        println!(
            "  t={:>5.1}s {} struck {} ({}); recovered at t={:.1}s{}",
            at(struck.struck_us),
            struck.kind,
            struck.target,
            struck.actions.join("; "),
            at(struck.recovered_us),
            struck.error.as_ref().map_or_else(String::new, |e| format!(" — FAILED: {e}"))
        );
        struck_all.push(struck);
    }
    let mut played = playing.await.map_err(|e| anyhow::anyhow!("the traffic task died: {e}"))??;
    // The probe's sends are judged like everyone's: the archive, and delivery to the members.
    let probe_sends = probe.finish(Duration::from_secs(1)).await;
    for send in &probe_sends {
        if let run::SendOutcome::Acked { seq, .. } = send.outcome {
            played.acked.push((seq, send.channel));
        }
    }
    played.sends.extend(probe_sends);
    let postgres_url = site_urls(site).0;
    let archive = verdict::archive(&postgres_url, &played.sends, &suffix, Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| verdict::Archive::unreadable(&e));
    let delivery = check(&played.acked, &played.inboxes);
    let broken_chains = played.inboxes.iter().filter(|i| i.broken_at.is_some()).count();
    let mut faults = Vec::new();
    for (i, struck) in struck_all.iter().enumerate() {
        let until =
            struck_all.get(i + 1).map_or(end_us + 5_000_000, |next| next.slot_start()).max(struck.struck_us);
        let mut impact = verdict::impact(struck, until, &played.sends, &played.reconnects, args.stall);
        let (from_s, until_s) = (
            (struck.slot_start().saturating_sub(start_us)) as f64 / 1e6,
            until.saturating_sub(start_us) as f64 / 1e6,
        );
        let period = options.progress_every.as_secs_f64();
        impact.deliver_max_ms = played
            .part
            .timeline
            .iter()
            .filter(|tick| tick.at_s > from_s && tick.at_s - period < until_s)
            .map(|tick| run::max_ms(&tick.histograms[Series::SendDeliver]) as u64)
            .max()
            .unwrap_or(0);
        let mut unproven = unproven(struck, &impact, schedule[i].kind);
        if struck.struck_us + 2_000_000 > end_us {
            unproven.push(format!(
                "it struck {:.1} s before the traffic ended: too late to measure (schedule it earlier, or a longer --duration)",
                end_us.saturating_sub(struck.struck_us) as f64 / 1e6
            ));
        }
        let presence = presence_all[i];
        faults.push(FaultReport {
            planned_at: schedule[i].at,
            struck: struck.clone(),
            impact,
            presence,
            unproven,
        });
    }
    let mut report = RunReport {
        run,
        seed,
        users,
        sent: played.part.totals.sent,
        acked: played.part.totals.acked,
        faults,
        delivery,
        broken_chains,
        archive,
        deliver_p99_ms: run::p99_ms(&played.part.histograms[Series::SendDeliver]),
        reconnect_resumed_p99_ms: run::p99_ms(&played.part.histograms[Series::ReconnectResumed]),
        timeline: timeline(&played.sends, start_us),
        marks: struck_all
            .iter()
            .map(|s| {
                let at = |us: u64| us.saturating_sub(start_us) as f64 / 1e6;
                (at(s.struck_us), at(s.recovered_us), s.kind.clone())
            })
            .collect(),
        slowest_deliveries: verdict::slowest(&played.slowest, &played.sends, &struck_all, start_us),
        failures: Vec::new(),
    };
    report.failures = judge(&report, &played.sends, args.max_unavailable);
    if let Site::Own(stack) = site {
        if let Err(e) = healthy(stack).await {
            report.failures.push(format!("the stack did not end healthy: {e:#}"));
        }
    }
    Ok(report)
}

/// The PostgreSQL and NATS URLs every client of the site uses.
/// The HTTP ports of the stack's gateways (where `/metrics` is served).
fn gateway_ports(site: &Site) -> Vec<u16> {
    match site {
        Site::Own(stack) => stack.gateways.iter().map(|g| g.port).collect(),
        Site::Existing(target) => target.state.gateways.iter().map(|g| g.port).collect(),
    }
}

fn site_urls(site: &Site) -> (String, String) {
    match site {
        Site::Own(stack) => (stack.postgres_url(), stack.nats_url()),
        Site::Existing(target) => {
            (target.state.postgres_url().to_owned(), target.state.nats_url().to_owned())
        }
    }
}

/// What is missing from a fault's proof that it struck.
fn unproven(struck: &Struck, impact: &Impact, kind: FaultKind) -> Vec<String> {
    let mut missing = Vec::new();
    if let Some(error) = &struck.error {
        missing.push(format!("its action failed: {error}"));
    }
    if struck.struck_us == 0 {
        missing.push("it never struck".into());
    }
    if impact.in_flight == 0 {
        missing.push("no send was in flight when it struck".into());
    }
    let leader_moved = struck.leader_before.is_some()
        && struck.leader_after.is_some()
        && struck.leader_before != struck.leader_after;
    if matches!(kind, FaultKind::NatsLeaderKill | FaultKind::NatsMetaLeaderKill) && !leader_moved {
        missing.push(format!(
            "the MESSAGES leader did not change (before {:?}, after {:?})",
            struck.leader_before, struck.leader_after
        ));
    }
    if kind == FaultKind::NatsMetaLeaderKill {
        let (before, after) = (&struck.meta_leader_before, &struck.meta_leader_after);
        if before.is_none() || before != &struck.leader_before {
            missing.push(format!(
                "the node struck did not lead the meta group (meta leader {before:?}, MESSAGES leader {:?})",
                struck.leader_before
            ));
        } else if after.is_none() || after == before {
            missing.push(format!("the meta leader did not change (before {before:?}, after {after:?})"));
        }
    }
    let timeline_moved =
        matches!((struck.timeline_before, struck.timeline_after), (Some(a), Some(b)) if b > a);
    // Its point is clients reconnecting while PostgreSQL is down; the gate judges how fast.
    if kind == FaultKind::PgStopGatewayKill && impact.reconnects == 0 {
        missing.push("no client reconnected while PostgreSQL was down".into());
    }
    if kind == FaultKind::PgFailover && !timeline_moved {
        missing.push(format!(
            "the PostgreSQL timeline did not advance (before {:?}, after {:?})",
            struck.timeline_before, struck.timeline_after
        ));
    }
    missing
}

/// Why a run fails the gate, each reason naming the fault it happened during.
fn judge(report: &RunReport, sends: &[run::SendRecord], max_unavailable: Duration) -> Vec<String> {
    let mut failures = Vec::new();
    let during = |at_us: u64| -> String {
        let fault =
            report.faults.iter().rev().find(|f| f.struck.struck_us != 0 && f.struck.slot_start() <= at_us);
        fault.map_or_else(
            || "before the first fault".to_owned(),
            |f| format!("during {} ({})", f.struck.kind, f.struck.target),
        )
    };
    // A seq can be acknowledged twice when a stream lost its data and started over: the later
    // ack is the one a fanout skipped.
    let mut acked_at: HashMap<u64, u64> = HashMap::new();
    for send in sends {
        if let run::SendOutcome::Acked { seq, at_us } = send.outcome {
            let at = acked_at.entry(seq).or_insert(at_us);
            *at = (*at).max(at_us);
        }
    }
    let d = &report.delivery;
    if d.lost > 0 {
        let (_, seq) = d.lost_examples[0];
        let when = acked_at.get(&seq).map_or_else(String::new, |at| format!(", the first {}", during(*at)));
        failures.push(format!("{} deliveries lost (seq {seq}{when})", d.lost));
    }
    if d.duplicated > 0 {
        failures.push(format!("{} deliveries duplicated", d.duplicated));
    }
    if d.out_of_order > 0 {
        failures.push(format!("{} deliveries out of order", d.out_of_order));
    }
    if d.unexpected > 0 {
        failures.push(format!("{} deliveries to users not in the channel", d.unexpected));
    }
    if report.broken_chains > 0 {
        failures.push(format!("{} users could not reconnect for 45 s", report.broken_chains));
    }
    let a = &report.archive;
    if let Some(why) = &a.unreadable {
        failures.push(format!("the archive could not be read: {why}"));
    } else if !a.drained {
        failures.push(format!(
            "the bridges did not archive every acknowledged message within {:.0} s ({} missing so far)",
            a.drain_ms as f64 / 1000.0,
            a.missing
        ));
    }
    if a.unreadable.is_none() && !a.exact() {
        let when =
            a.first_missing_acked_us.map_or_else(String::new, |at| format!(", the first {}", during(at)));
        failures.push(format!(
            "the archive is not the acknowledged set: {} missing, {} duplicated, {} at another seq, {} unknown{when} (e.g. {})",
            a.missing,
            a.duplicated,
            a.seq_mismatch,
            a.phantom,
            a.examples.first().cloned().unwrap_or_default()
        ));
    }
    let max_ms = max_unavailable.as_millis() as u64;
    for fault in &report.faults {
        let name = format!("{} ({})", fault.struck.kind, fault.struck.target);
        for missing in &fault.unproven {
            failures.push(format!("{name} is not proven to have struck: {missing}"));
        }
        let i = &fault.impact;
        if i.unavailable_ms > max_ms {
            failures.push(format!(
                "{name}: sends failed for {:.1} s on gateway {} (--max-unavailable {:.1} s)",
                i.unavailable_ms as f64 / 1000.0,
                i.unavailable_gateway.unwrap_or(0),
                max_ms as f64 / 1000.0
            ));
        }
        if i.longest_reconnect_ms > max_ms {
            failures.push(format!(
                "{name}: a client took {:.1} s to resume (--max-unavailable {:.1} s)",
                i.longest_reconnect_ms as f64 / 1000.0,
                max_ms as f64 / 1000.0
            ));
        }
        if i.deliver_max_ms > max_ms {
            failures.push(format!(
                "{name}: a message took {:.1} s to be delivered (--max-unavailable {:.1} s)",
                i.deliver_max_ms as f64 / 1000.0,
                max_ms as f64 / 1000.0
            ));
        }
        if i.never_resumed > 0 {
            failures.push(format!("{name}: {} reconnects never resumed", i.never_resumed));
        }
        match fault.presence.map(|p| p.wrong_ms) {
            Some(None) => {
                failures.push(format!("{name}: presence was not whole again 30 s after the recovery"))
            }
            Some(Some(ms)) if ms > max_ms => failures.push(format!(
                "{name}: presence showed connected users offline for {:.1} s (--max-unavailable {:.1} s)",
                ms as f64 / 1000.0,
                max_ms as f64 / 1000.0
            )),
            _ => {}
        }
    }
    failures
}

/// Per second since the start: sends acknowledged in time, and sends that failed.
fn timeline(sends: &[run::SendRecord], start_us: u64) -> Vec<(f64, u64, u64)> {
    let mut seconds: std::collections::BTreeMap<u64, (u64, u64)> = std::collections::BTreeMap::new();
    for send in sends {
        let second = send.intended_us.saturating_sub(start_us) / 1_000_000;
        let entry = seconds.entry(second).or_default();
        match send.outcome {
            run::SendOutcome::Acked { .. } => entry.0 += 1,
            _ => entry.1 += 1,
        }
    }
    seconds.into_iter().map(|(s, (ok, failed))| (s as f64, ok, failed)).collect()
}

/// Every process of loadgen's stack is alive (not just started once), the primary has a
/// quorum standby streaming, and the streams keep their replicas.
async fn healthy(stack: &mut threadspace_devstack::Stack) -> anyhow::Result<()> {
    fn alive(process: Option<&mut threadspace_devstack::process::ManagedProcess>) -> bool {
        process.is_some_and(|p| p.exited().is_none())
    }
    for (i, g) in stack.gateways.iter_mut().enumerate() {
        anyhow::ensure!(alive(g.process.as_mut()), "gateway {} is not running", i + 1);
    }
    for (i, b) in stack.bridges.iter_mut().enumerate() {
        anyhow::ensure!(alive(b.process.as_mut()), "bridge {} is not running", i + 1);
    }
    for i in 0..stack.nats_nodes() {
        let node = stack.nats_node(i);
        anyhow::ensure!(node.process.exited().is_none(), "nats-server {} is not running", node.name);
    }
    anyhow::ensure!(stack.postgres.process.exited().is_none(), "the PostgreSQL primary is not running");
    for standby in &mut stack.standbys {
        anyhow::ensure!(
            standby.process.exited().is_none(),
            "the standby on port {} is not running",
            standby.port
        );
    }
    if !stack.standbys.is_empty() {
        let client = threadspace_store::connect(&stack.postgres.url).await?;
        let row = client
            .query_one("SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')", &[])
            .await?;
        anyhow::ensure!(
            row.get::<_, i64>(0) > 0,
            "the PostgreSQL primary has no synchronous standby streaming"
        );
    }
    stack.verify_replicas().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        drill: DrillArgs,
    }

    fn plan(args: &[&str]) -> Result<(Scenario, Vec<Vec<Planned>>), UsageError> {
        let cli =
            Cli::try_parse_from(std::iter::once("drill").chain(args.iter().copied())).expect("flags parse");
        plan_runs(&cli.drill, Topology { gateways: 3, bridges: 2 })
    }

    #[test]
    fn runs_are_planned_with_fresh_seeds_and_a_length_that_covers_the_faults() {
        let (scenario, schedules) = plan(&["--runs", "3", "--shuffle", "--faults", "all"]).expect("valid");
        assert_eq!(schedules.len(), 3);
        assert_ne!(schedules[0], schedules[1], "each run has its own seed");
        let last = schedules.iter().map(|s| s.last().expect("valid").at).max().expect("valid");
        assert!(scenario.duration > last, "{:?} vs {last:?}", scenario.duration);
    }

    #[test]
    fn bad_drills_are_refused_with_the_reason() {
        let error = |args: &[&str]| plan(args).expect_err("refused").0;
        assert!(error(&["--runs", "0"]).contains("--runs 0"));
        assert!(error(&["--faults", "gateway-kill,disk-fill"]).contains("unknown fault kind \"disk-fill\""));
        assert!(error(&["--faults", "gateway-kill:9"]).contains("there is no gateway 9"));
        assert!(error(&["--faults", "bridge-kill@90s", "--duration", "60s"]).contains("outside the run"));
        assert!(error(&["--stall", "0s"]).contains("--stall must be above 0"));
        assert!(error(&["--preset", "nope"]).contains("unknown --preset"));
        assert!(error(&["--stream-max-age", "1m"]).contains("--stream-max-age 1m is under 5m"));
        assert!(error(&["--stream-max-age", "10m", "--existing-stack"]).contains("a stack it did not start"));
        assert!(error(&["--faults", "all", "--existing-stack"])
            .contains("nats-meta-leader-kill needs loadgen's own stack"));
    }

    #[test]
    fn a_meta_leader_kill_proves_it_took_the_meta_leader() {
        let impact = Impact { in_flight: 1, ..Impact::default() };
        let struck = |meta_before: Option<&str>, meta_after: Option<&str>| Struck {
            kind: "nats-meta-leader-kill".into(),
            struck_us: 1,
            leader_before: Some("n1".into()),
            leader_after: Some("n2".into()),
            meta_leader_before: meta_before.map(Into::into),
            meta_leader_after: meta_after.map(Into::into),
            ..Struck::default()
        };
        let missing = |meta_before, meta_after| {
            unproven(&struck(meta_before, meta_after), &impact, FaultKind::NatsMetaLeaderKill).join("; ")
        };
        assert_eq!(missing(Some("n1"), Some("n3")), "");
        assert!(missing(Some("n3"), Some("n2")).contains("the node struck did not lead the meta group"));
        assert!(missing(None, Some("n2")).contains("the node struck did not lead the meta group"));
        assert!(missing(Some("n1"), Some("n1")).contains("the meta leader did not change"));
        assert!(missing(Some("n1"), None).contains("the meta leader did not change"));
        // The stream leader must move too, as for any leader kill.
        let stayed = Struck { leader_after: Some("n1".into()), ..struck(Some("n1"), Some("n3")) };
        let missing = unproven(&stayed, &impact, FaultKind::NatsMetaLeaderKill).join("; ");
        assert!(missing.contains("the MESSAGES leader did not change"), "{missing}");
        // A plain leader kill asks nothing of the meta group.
        assert!(unproven(&struck(None, None), &impact, FaultKind::NatsLeaderKill).is_empty());
    }
}
