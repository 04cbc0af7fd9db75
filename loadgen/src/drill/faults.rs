//! The faults a drill injects (docs/drills.md, "Faults"): their names, the schedule
//! (`KIND[:TARGET][@OFFSET]`, fixed or shuffled from the seed), and how each is struck and
//! recovered — on loadgen's own HA stack by its own actions, or through an operator's
//! `--fault-command KIND=COMMAND` on any other stack.
//!
//! **Invariant:** every fault records what proves it struck (the PID and signal, the NATS
//! stream leader and the PostgreSQL timeline before and after); the verdict fails a fault
//! whose proof is missing, so a drill whose fault silently missed cannot pass.

use std::time::Duration;

use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{RngExt as _, SeedableRng as _};
use serde::Serialize;
use threadspace_devstack::nats;
use threadspace_devstack::stack::Stack;
use threadspace_protocol::subjects::MESSAGES_STREAM;

use super::meta_leader;
use super::probe::Probe;
use crate::unix_micros;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL one gateway; start it again after `--down-for`.
    GatewayKill,
    /// SIGTERM every gateway in turn, each started again before the next (a rolling restart).
    GatewayRolling,
    /// SIGKILL the NATS node leading the MESSAGES stream; start it again after `--down-for`.
    NatsLeaderKill,
    /// Move the MESSAGES leader onto the JetStream meta leader (a stepdown that prefers it),
    /// then SIGKILL that node; start it again after `--down-for`. Until the meta group has a
    /// new leader no consumer can be created, nor a record read (docs/drills.md).
    NatsMetaLeaderKill,
    /// SIGKILL the stream leader and delete its JetStream data; it rejoins empty. At R3 the
    /// others hold every message; at R1 this is the stream's only copy (the unsafe demo).
    NatsLeaderWipe,
    /// SIGKILL a NATS node that follows; start it again after `--down-for`.
    NatsFollowerKill,
    /// SIGKILL a follower and delete its JetStream data; it rejoins empty and catches up.
    NatsFollowerWipe,
    /// SIGSTOP the stream leader for `--pause-for`, then SIGCONT (a paused node).
    NatsPause,
    /// SIGKILL a bridge (always mid-batch under load); start it again after `--down-for`.
    BridgeKill,
    /// SIGKILL the PostgreSQL primary, promote a standby, rebuild the old primary as a standby.
    PgFailover,
    /// Stop the PostgreSQL primary (fast shutdown) for `--pg-stop-for`, then start it again.
    PgStop,
    /// Stop the PostgreSQL primary and SIGKILL a gateway at once; the gateway starts again
    /// after `--down-for`, PostgreSQL after `--pg-stop-for`. The gateway's clients reconnect
    /// while PostgreSQL is down: their hellos must be answered from the hello cache.
    PgStopGatewayKill,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        Self::GatewayKill,
        Self::GatewayRolling,
        Self::NatsLeaderKill,
        Self::NatsMetaLeaderKill,
        Self::NatsLeaderWipe,
        Self::NatsFollowerKill,
        Self::NatsFollowerWipe,
        Self::NatsPause,
        Self::BridgeKill,
        Self::PgFailover,
        Self::PgStop,
        Self::PgStopGatewayKill,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::GatewayKill => "gateway-kill",
            Self::GatewayRolling => "gateway-rolling",
            Self::NatsLeaderKill => "nats-leader-kill",
            Self::NatsMetaLeaderKill => "nats-meta-leader-kill",
            Self::NatsLeaderWipe => "nats-leader-wipe",
            Self::NatsFollowerKill => "nats-follower-kill",
            Self::NatsFollowerWipe => "nats-follower-wipe",
            Self::NatsPause => "nats-pause",
            Self::BridgeKill => "bridge-kill",
            Self::PgFailover => "pg-failover",
            Self::PgStop => "pg-stop",
            Self::PgStopGatewayKill => "pg-stop-gateway-kill",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether it disconnects clients, whose presence must then become whole again.
    pub fn moves_clients(self) -> bool {
        matches!(self, Self::GatewayKill | Self::GatewayRolling | Self::PgStopGatewayKill)
    }

    /// Whether only loadgen's own stack can strike it: it needs the nodes' monitoring ports
    /// (the meta leader) and moves the stream's leader first, which a fault command cannot
    /// be told to do.
    pub fn own_stack_only(self) -> bool {
        self == Self::NatsMetaLeaderKill
    }

    /// Which processes a `:TARGET` picks among (`None`: the fault picks by role).
    pub fn targets(self) -> Option<&'static str> {
        match self {
            Self::GatewayKill | Self::PgStopGatewayKill => Some("gateway"),
            Self::BridgeKill => Some("bridge"),
            _ => None,
        }
    }
}

/// One fault of the schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub kind: FaultKind,
    /// 0-based gateway or bridge index, when named (`gateway-kill:2` is index 1).
    pub target: Option<usize>,
    /// After the end of the ramp.
    #[serde(with = "crate::scenario::humantime_serde")]
    pub at: Duration,
}

/// The sizes of the stack a schedule is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Topology {
    pub gateways: usize,
    pub bridges: usize,
}

/// Parses `--faults`: `KIND[:TARGET][@OFFSET]`, comma-separated, or `all`. Faults without an
/// offset come `interval` apart after the previous one (the first `interval` after the ramp).
pub fn parse_schedule(spec: &str, interval: Duration, topology: Topology) -> Result<Vec<Planned>, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("--faults is empty: name at least one fault kind".into());
    }
    let entries: Vec<String> = if spec == "all" {
        FaultKind::ALL.iter().map(|k| k.name().to_owned()).collect()
    } else {
        spec.split(',').map(|s| s.trim().to_owned()).collect()
    };
    let mut planned = Vec::new();
    let mut previous = Duration::ZERO;
    for entry in entries {
        let (head, at) = match entry.split_once('@') {
            Some((head, at)) => {
                let at = humantime::parse_duration(at).map_err(|e| {
                    format!("--faults entry {entry:?}: offset {at:?} is not a duration ({e})")
                })?;
                (head, Some(at))
            }
            None => (entry.as_str(), None),
        };
        let (name, target) = match head.split_once(':') {
            Some((name, target)) => (name, Some(target)),
            None => (head, None),
        };
        let kind = FaultKind::parse(name).ok_or_else(|| {
            let kinds: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!("--faults: unknown fault kind {name:?}; kinds: {}, or all", kinds.join(", "))
        })?;
        let target = match (target, kind.targets()) {
            (None, _) => None,
            (Some(t), None) => {
                return Err(format!(
                    "--faults entry {entry:?}: {name} picks its node by role and takes no :{t}"
                ))
            }
            (Some(t), Some(what)) => {
                let count = if what == "gateway" { topology.gateways } else { topology.bridges };
                let n: usize = t
                    .parse()
                    .map_err(|_| format!("--faults entry {entry:?}: {t:?} is not a {what} number"))?;
                if n == 0 || n > count {
                    return Err(format!(
                        "--faults entry {entry:?}: there is no {what} {n}; the stack has {count} (numbered from 1)"
                    ));
                }
                Some(n - 1)
            }
        };
        let at = at.unwrap_or(previous + interval);
        if at < previous {
            return Err(format!(
                "--faults entry {entry:?}: at {} it comes before the fault it follows ({})",
                humantime::format_duration(at),
                humantime::format_duration(previous)
            ));
        }
        previous = at;
        planned.push(Planned { kind, target, at });
    }
    Ok(planned)
}

/// The schedule shuffled and its times jittered (±25 % of `interval`) from `seed`, keeping
/// the faults at least `interval / 2` apart.
pub fn shuffle(planned: &[Planned], interval: Duration, seed: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    let mut kinds: Vec<(FaultKind, Option<usize>)> = planned.iter().map(|p| (p.kind, p.target)).collect();
    kinds.shuffle(&mut rng);
    let quarter = interval.as_secs_f64() / 4.0;
    let mut at = Duration::ZERO;
    kinds
        .into_iter()
        .map(|(kind, target)| {
            let step = interval.as_secs_f64() + rng.random_range(-quarter..=quarter);
            // Whole milliseconds: the schedule is printed and read by people.
            at += Duration::from_millis((step.max(interval.as_secs_f64() / 2.0) * 1000.0) as u64);
            Planned { kind, target, at }
        })
        .collect()
}

/// `planned` with its gateway or bridge chosen when the schedule left it open, so the probe can
/// send through the gateway about to be struck: the gateway with the most clients (`busiest`,
/// when known: a gateway that clients left, after a rolling restart, would test no
/// reconnect), otherwise one chosen from `seed`.
pub fn resolve(planned: &Planned, topology: Topology, seed: u64, busiest: Option<usize>) -> Planned {
    let mut rng = StdRng::seed_from_u64(seed ^ planned.at.as_millis() as u64);
    let (count, busiest) = match planned.kind.targets() {
        Some("gateway") => (topology.gateways, busiest.filter(|&i| i < topology.gateways)),
        Some(_) => (topology.bridges, None),
        None => return planned.clone(),
    };
    let target = planned.target.or(busiest).or_else(|| (count > 0).then(|| rng.random_range(0..count)));
    Planned { target, ..planned.clone() }
}

/// The gateway (0-based) with the most open connections, by each one's
/// `threadspace_gateway_connections` on `/metrics`; `None` if none answers.
pub async fn busiest_gateway(ports: &[u16]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &port) in ports.iter().enumerate() {
        let Some((200, body)) = threadspace_client::rest::http_request(port, "GET", "/metrics", None).await
        else {
            continue;
        };
        let open = body.lines().find_map(|line| {
            line.strip_prefix("threadspace_gateway_connections ").and_then(|v| v.trim().parse::<f64>().ok())
        });
        if let Some(open) = open {
            if best.is_none_or(|(_, most)| open > most) {
                best = Some((i, open));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// How long a fault takes from strike to recovery, roughly (for the run's length).
pub fn expected_length(kind: FaultKind, timings: &Timings, gateways: usize) -> Duration {
    let restart = Duration::from_secs(3);
    match kind {
        FaultKind::GatewayRolling => (timings.drain + restart) * gateways as u32,
        FaultKind::NatsPause => timings.pause_for + restart,
        FaultKind::PgStop | FaultKind::PgStopGatewayKill => timings.pg_stop_for + restart,
        FaultKind::PgFailover => Duration::from_secs(20),
        // The leader is moved onto the meta leader and left to settle before the kill.
        FaultKind::NatsMetaLeaderKill => {
            meta_leader::SETTLE + Duration::from_secs(2) + timings.down_for + restart
        }
        // A wiped node copies the whole stream back (docs/drills.md, "What the drills found").
        FaultKind::NatsFollowerWipe | FaultKind::NatsLeaderWipe => timings.down_for + timings.catch_up_for,
        _ => timings.down_for + restart,
    }
}

/// How long faults keep things down.
#[derive(Clone, Debug)]
pub struct Timings {
    pub down_for: Duration,
    pub pause_for: Duration,
    pub pg_stop_for: Duration,
    /// A wiped NATS node's expected catch-up (`--catch-up-for`).
    pub catch_up_for: Duration,
    /// A gateway's SIGTERM drain (its --reconnect-spread and more).
    pub drain: Duration,
}

/// What happened when a fault struck, and what proves it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Struck {
    pub kind: String,
    /// The process it struck, in words (`gateway 2`, `nats-server n3`, `postgres primary`).
    pub target: String,
    /// Unix µs of the strike and of the end of the recovery.
    pub struck_us: u64,
    /// Unix µs when the fault's first action began, if before the strike (0: at the strike):
    /// `nats-meta-leader-kill` moves the stream's leader first. See [`Struck::slot_start`].
    pub began_us: u64,
    pub recovered_us: u64,
    /// Every signal and action, in order (`SIGKILL pid 4711 (gateway 2)`, `started gateway 2
    /// (pid 4802)`, `ran: kubectl …`).
    pub actions: Vec<String>,
    pub leader_before: Option<String>,
    /// Read while a killed NATS node is still down; after the recovery for other faults.
    pub leader_after: Option<String>,
    /// The JetStream meta leader before the strike and while the struck node is down
    /// (`nats-meta-leader-kill` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_leader_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_leader_after: Option<String>,
    pub timeline_before: Option<u32>,
    pub timeline_after: Option<u32>,
    /// The strike or the recovery failed; the drill fails with it.
    pub error: Option<String>,
}

impl Struck {
    /// Where the fault's slot begins: at its first action, so sends, reconnects and deliveries
    /// that its preparation disturbed are charged to it, not to the fault before.
    pub fn slot_start(&self) -> u64 {
        if self.began_us == 0 {
            self.struck_us
        } else {
            self.began_us.min(self.struck_us)
        }
    }
}

/// Strikes and recovers `planned` on loadgen's own stack.
pub(super) async fn strike_own(
    stack: &mut Stack,
    planned: &Planned,
    timings: &Timings,
    seed: u64,
    probe: &Probe,
) -> Struck {
    let mut struck = Struck { kind: planned.kind.name().to_owned(), ..Struck::default() };
    struck.leader_before = leader(stack).await;
    struck.timeline_before = stack.postgres.timeline().await.ok();
    let mut rng = StdRng::seed_from_u64(seed ^ planned.at.as_millis() as u64);
    if let Err(error) = act(stack, planned, timings, &mut rng, &mut struck, probe).await {
        struck.error = Some(format!("{error:#}"));
    }
    struck.recovered_us = unix_micros();
    if struck.leader_after.is_none() {
        struck.leader_after = wait_for_leader(stack).await;
    }
    struck.timeline_after = stack.postgres.timeline().await.ok();
    struck
}

async fn act(
    stack: &mut Stack,
    planned: &Planned,
    timings: &Timings,
    rng: &mut StdRng,
    struck: &mut Struck,
    probe: &Probe,
) -> anyhow::Result<()> {
    match planned.kind {
        FaultKind::GatewayKill => {
            let i = planned.target.unwrap_or(0);
            struck.target = format!("gateway {}", i + 1);
            let pid = pid_of(stack.gateways[i].process.as_ref())?;
            strike_now(probe, i, struck).await;
            stack.kill_gateway(i);
            struck.actions.push(format!("SIGKILL pid {pid} (gateway {})", i + 1));
            tokio::time::sleep(timings.down_for).await;
            stack.start_gateway(i).await?;
            struck.actions.push(started("gateway", i, stack.gateways[i].process.as_ref()));
        }
        FaultKind::GatewayRolling => {
            struck.target = "every gateway".into();
            strike_now(probe, 0, struck).await;
            for i in 0..stack.gateways.len() {
                let pid = pid_of(stack.gateways[i].process.as_ref())?;
                let status = stack.terminate_gateway(i, timings.drain + Duration::from_secs(10));
                let how =
                    status.map_or("killed after the drain timed out".to_owned(), |s| format!("exited: {s}"));
                struck.actions.push(format!("SIGTERM pid {pid} (gateway {}), {how}", i + 1));
                stack.start_gateway(i).await?;
                struck.actions.push(started("gateway", i, stack.gateways[i].process.as_ref()));
            }
        }
        FaultKind::NatsLeaderKill
        | FaultKind::NatsMetaLeaderKill
        | FaultKind::NatsLeaderWipe
        | FaultKind::NatsFollowerKill
        | FaultKind::NatsFollowerWipe => {
            let wipe = matches!(planned.kind, FaultKind::NatsLeaderWipe | FaultKind::NatsFollowerWipe);
            let follower = matches!(planned.kind, FaultKind::NatsFollowerKill | FaultKind::NatsFollowerWipe);
            let meta = planned.kind == FaultKind::NatsMetaLeaderKill;
            if meta {
                // The move is part of the fault: what it disturbs is charged to it.
                struck.began_us = unix_micros();
                meta_leader::lead_from_meta_leader(stack, &mut struck.actions).await?;
            }
            let (node, leader) = pick_node(stack, follower, rng).await?;
            if meta {
                // Read again: either leader may have moved since the stepdown.
                let now = meta_leader::meta_leader(stack, None).await;
                anyhow::ensure!(
                    now.as_deref() == Some(leader.as_str()),
                    "the meta leader ({now:?}) no longer leads MESSAGES ({leader}) at the strike"
                );
                struck.meta_leader_before = now;
            }
            // The leader as read just before the kill (it may have moved since the first read).
            struck.leader_before = Some(leader);
            let server = stack.nats_node(node);
            struck.target = format!("nats-server {}", server.name);
            let pid = server.process.pid();
            strike_now(probe, 0, struck).await;
            server.kill();
            struck.actions.push(format!("SIGKILL pid {pid} (nats-server {})", server.name));
            let wipe_dir = server.dir.join("jetstream");
            // The survivors name the dead leader until they elect another (seconds): a
            // different name now means the meta leader moved between the read and the kill.
            // Judged after the restart: the run must end with the cluster whole.
            let missed = if meta { meta_leader::led_at_kill(stack, node).await.err() } else { None };
            let server = stack.nats_node(node);
            // A failed wipe still restarts the node: the run must end with the cluster whole.
            let wiped = if wipe { Some(server.wipe()) } else { None };
            if let Some(Ok(())) = &wiped {
                struck.actions.push(format!("deleted {}", wipe_dir.display()));
            }
            tokio::time::sleep(timings.down_for).await;
            // The leader while the struck node is still down: once it is back it may win an
            // election again, which would hide the move.
            struck.leader_after = wait_for_leader(stack).await;
            if meta {
                struck.meta_leader_after = meta_leader::wait_for_another(stack, node).await;
            }
            let server = stack.nats_node(node);
            server.start_again().await?;
            if let Some(Err(e)) = wiped {
                anyhow::bail!("cannot delete {}: {e}", server.dir.join("jetstream").display());
            }
            struck.actions.push(format!(
                "started nats-server {} (pid {})",
                server.name,
                server.process.pid()
            ));
            caught_up(stack, node, timings, struck, "the restart").await?;
            if let Some(missed) = missed {
                return Err(missed);
            }
        }
        FaultKind::NatsPause => {
            let (node, leader) = pick_node(stack, false, rng).await?;
            struck.leader_before = Some(leader);
            let server = stack.nats_node(node);
            struck.target = format!("nats-server {}", server.name);
            let pid = server.process.pid();
            strike_now(probe, 0, struck).await;
            server.process.signal(Signal::SIGSTOP);
            struck.actions.push(format!("SIGSTOP pid {pid} (nats-server {})", server.name));
            tokio::time::sleep(timings.pause_for).await;
            stack.nats_node(node).process.signal(Signal::SIGCONT);
            struck.actions.push(format!("SIGCONT pid {pid}"));
            caught_up(stack, node, timings, struck, "the SIGCONT").await?;
        }
        FaultKind::BridgeKill => {
            anyhow::ensure!(!stack.bridges.is_empty(), "the stack runs no bridge");
            let i = planned.target.unwrap_or(0);
            struck.target = format!("bridge {}", i + 1);
            let pid = pid_of(stack.bridges[i].process.as_ref())?;
            strike_now(probe, 0, struck).await;
            stack.kill_bridge(i);
            struck.actions.push(format!("SIGKILL pid {pid} (bridge {})", i + 1));
            tokio::time::sleep(timings.down_for).await;
            stack.start_bridge(i).await?;
            struck.actions.push(started("bridge", i, stack.bridges[i].process.as_ref()));
        }
        FaultKind::PgFailover => {
            struck.target = "postgres primary".into();
            let pid = stack.postgres.process.pid();
            let port = stack.postgres.port;
            strike_now(probe, 0, struck).await;
            let old = stack.fail_over_postgres().await?;
            struck.actions.push(format!("SIGKILL pid {pid} (postgres primary on port {port})"));
            struck.actions.push(format!(
                "promoted the standby on port {} (pid {})",
                stack.postgres.port,
                stack.postgres.process.pid()
            ));
            stack.rebuild_standby(old).await?;
            let rebuilt = stack.standbys.last().expect("just rebuilt");
            struck.actions.push(format!(
                "rebuilt the old primary as a standby on port {port} from a base backup (pid {})",
                rebuilt.process.pid()
            ));
        }
        FaultKind::PgStop => {
            struck.target = "postgres primary".into();
            let pid = stack.postgres.process.pid();
            strike_now(probe, 0, struck).await;
            stack.postgres.stop();
            struck.actions.push(format!("SIGINT pid {pid} (postgres primary, fast shutdown)"));
            tokio::time::sleep(timings.pg_stop_for).await;
            stack.postgres.restart().await?;
            struck.actions.push(format!("started postgres primary (pid {})", stack.postgres.process.pid()));
        }
        FaultKind::PgStopGatewayKill => {
            let i = planned.target.unwrap_or(0);
            struck.target = format!("postgres primary and gateway {}", i + 1);
            let pg_pid = stack.postgres.process.pid();
            let gateway_pid = pid_of(stack.gateways[i].process.as_ref())?;
            strike_now(probe, i, struck).await;
            let stopped = tokio::time::Instant::now();
            stack.postgres.stop();
            struck.actions.push(format!("SIGINT pid {pg_pid} (postgres primary, fast shutdown)"));
            stack.kill_gateway(i);
            struck.actions.push(format!("SIGKILL pid {gateway_pid} (gateway {})", i + 1));
            tokio::time::sleep(timings.down_for).await;
            stack.start_gateway(i).await?;
            struck.actions.push(format!(
                "{} while postgres is down",
                started("gateway", i, stack.gateways[i].process.as_ref())
            ));
            tokio::time::sleep_until(stopped + timings.pg_stop_for).await;
            stack.postgres.restart().await?;
            struck.actions.push(format!("started postgres primary (pid {})", stack.postgres.process.pid()));
        }
    }
    Ok(())
}

/// Strikes `planned` with the operator's command (`sh -c`, `{kind}` and `{target}` replaced);
/// its recovery is the command's (or the platform's) business.
pub(super) async fn strike_hook(
    command: &str,
    planned: &Planned,
    observer: &Observer,
    probe: &Probe,
) -> Struck {
    let target = planned.target.map_or_else(String::new, |t| (t + 1).to_string());
    let line = command.replace("{kind}", planned.kind.name()).replace("{target}", &target);
    let mut struck =
        Struck { kind: planned.kind.name().to_owned(), target: line.clone(), ..Struck::default() };
    struck.leader_before = observer.leader().await;
    struck.timeline_before = observer.timeline().await;
    strike_now(
        probe,
        planned.target.filter(|_| planned.kind.targets() == Some("gateway")).unwrap_or(0),
        &mut struck,
    )
    .await;
    let output = tokio::process::Command::new("sh").arg("-c").arg(&line).output().await;
    match output {
        Ok(output) if output.status.success() => struck.actions.push(format!("ran: {line} (exit 0)")),
        Ok(output) => {
            struck.error = Some(format!(
                "fault command `{line}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
        Err(e) => struck.error = Some(format!("cannot run fault command `{line}`: {e}")),
    }
    struck.recovered_us = unix_micros();
    // A leader election takes a few seconds: give it the time it would take.
    tokio::time::sleep(Duration::from_secs(5)).await;
    struck.leader_after = observer.leader().await;
    struck.timeline_after = observer.timeline().await;
    struck
}

/// Reads the stream leader and the PostgreSQL timeline of a stack loadgen did not start.
pub struct Observer {
    pub nats_url: String,
    pub postgres_url: String,
}

impl Observer {
    async fn leader(&self) -> Option<String> {
        let jetstream = nats::jetstream(&self.nats_url).await.ok()?;
        nats::stream_info(&jetstream, MESSAGES_STREAM).await.ok()?.cluster?.leader
    }

    async fn timeline(&self) -> Option<u32> {
        threadspace_devstack::postgres::timeline_at(&self.postgres_url).await.ok()
    }
}

/// Puts the probe's sends in flight through gateway `gateway` and marks the strike: the
/// caller's signal follows at once.
async fn strike_now(probe: &Probe, gateway: usize, struck: &mut Struck) {
    probe.fire(gateway).await;
    struck.struck_us = unix_micros();
}

fn pid_of(process: Option<&threadspace_devstack::process::ManagedProcess>) -> anyhow::Result<u32> {
    process.map(|p| p.pid()).ok_or_else(|| anyhow::anyhow!("the process is not running"))
}

fn started(kind: &str, i: usize, process: Option<&threadspace_devstack::process::ManagedProcess>) -> String {
    format!("started {kind} {} (pid {})", i + 1, process.map_or(0, |p| p.pid()))
}

async fn leader(stack: &Stack) -> Option<String> {
    stack.stream_leader(MESSAGES_STREAM).await.ok().flatten()
}

/// The stream's leader once it has one (up to 30 s).
async fn wait_for_leader(stack: &Stack) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(leader) = leader(stack).await {
            return Some(leader);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The NATS node to strike — the MESSAGES leader, or (`follower`) another node chosen by
/// `rng` — and the leader's name as read now.
async fn pick_node(stack: &Stack, follower: bool, rng: &mut StdRng) -> anyhow::Result<(usize, String)> {
    let nodes = stack.nats_nodes();
    anyhow::ensure!(nodes > 1 || !follower, "a single NATS node has no follower");
    let leader =
        wait_for_leader(stack).await.ok_or_else(|| anyhow::anyhow!("the MESSAGES stream has no leader"))?;
    let names: Vec<String> = stack.nats_servers().map(|n| n.name.clone()).collect();
    let lead = names.iter().position(|n| *n == leader).unwrap_or(0);
    if !follower {
        return Ok((lead, leader));
    }
    let others: Vec<usize> = (0..nodes).filter(|&i| i != lead).collect();
    Ok((others[rng.random_range(0..others.len())], leader))
}

/// Waits until node `node` is healthy by its own `/healthz` (every stream it hosts caught up)
/// and the stream reports every replica current, and records how long that took after `since`
/// (the restart, the SIGCONT) as the fault's last action. Fails after [`CATCH_UP_LIMIT`] or twice
/// `--catch-up-for`, whichever is longer.
async fn caught_up(
    stack: &mut Stack,
    node: usize,
    timings: &Timings,
    struck: &mut Struck,
    since: &str,
) -> anyhow::Result<()> {
    let limit = CATCH_UP_LIMIT.max(timings.catch_up_for * 2);
    let started = tokio::time::Instant::now();
    let jetstream = stack.jetstream().await?;
    loop {
        // The stream's info alone is not enough: it reports a replica that is still copying
        // the stream back `current` (a wiped node, within 8 s of its restart, up to 92 s before it
        // held the stream), and a drill that struck the next NATS node then took the last
        // whole copy down (docs/drills.md). The node's own /healthz fails until it caught up.
        let current = async {
            let info = nats::stream_info(&jetstream, MESSAGES_STREAM).await.ok()?;
            let cluster = info.cluster.as_ref()?;
            let peers = &cluster.replicas;
            let replicas = info.config.num_replicas.max(1);
            Some(cluster.leader.is_some() && peers.len() + 1 >= replicas && peers.iter().all(|p| p.current))
        }
        .await;
        let why = match (current, stack.nats_node(node).health().await) {
            (Some(true), Ok(())) => {
                struck.actions.push(format!(
                    "nats-server {} healthy and every replica current {:.1} s after {since}",
                    stack.nats_node(node).name,
                    started.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            (_, Err(health)) => health,
            _ => "the stream does not report every replica current".to_owned(),
        };
        anyhow::ensure!(
            started.elapsed() < limit,
            "nats-server {} did not catch up within {limit:?}: {why}",
            stack.nats_node(node).name
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How long a restarted or resumed NATS node may take to catch up before the fault fails
/// (unless twice `--catch-up-for` is longer).
const CATCH_UP_LIMIT: Duration = Duration::from_secs(150);

#[cfg(test)]
mod tests {
    use super::*;

    const TOPOLOGY: Topology = Topology { gateways: 3, bridges: 2 };

    #[test]
    fn schedules_parse_with_offsets_targets_and_defaults() {
        let s = Duration::from_secs;
        let planned = parse_schedule("gateway-kill:2, nats-leader-kill@45s,bridge-kill", s(20), TOPOLOGY)
            .expect("valid");
        assert_eq!(
            planned,
            vec![
                Planned { kind: FaultKind::GatewayKill, target: Some(1), at: s(20) },
                Planned { kind: FaultKind::NatsLeaderKill, target: None, at: s(45) },
                Planned { kind: FaultKind::BridgeKill, target: None, at: s(65) },
            ]
        );
        assert_eq!(parse_schedule("all", s(10), TOPOLOGY).expect("valid").len(), FaultKind::ALL.len());
    }

    #[test]
    fn bad_schedules_name_the_problem() {
        let s = Duration::from_secs(20);
        let error = |spec: &str| parse_schedule(spec, s, TOPOLOGY).expect_err("refused");
        assert!(error("gateway-explode").contains("unknown fault kind \"gateway-explode\""));
        assert!(error("gateway-kill:4").contains("there is no gateway 4; the stack has 3"));
        assert!(error("bridge-kill:0").contains("there is no bridge 0"));
        assert!(error("nats-leader-kill:1").contains("takes no :1"));
        assert!(error("bridge-kill@soon").contains("is not a duration"));
        assert!(error("bridge-kill@40s,gateway-kill@10s").contains("comes before"));
        assert!(error(" ").contains("--faults is empty"));
    }

    #[test]
    fn shuffling_keeps_every_fault_and_depends_on_the_seed() {
        let s = Duration::from_secs(20);
        let planned = parse_schedule("all", s, TOPOLOGY).expect("valid");
        let (a, b) = (shuffle(&planned, s, 1), shuffle(&planned, s, 2));
        assert_eq!(a, shuffle(&planned, s, 1), "the same seed, the same schedule");
        assert_ne!(a, b);
        let mut kinds: Vec<&str> = a.iter().map(|p| p.kind.name()).collect();
        kinds.sort_unstable();
        let mut all: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        all.sort_unstable();
        assert_eq!(kinds, all);
        assert!(a.windows(2).all(|w| w[1].at >= w[0].at + s / 2), "{a:?}");
    }
}
