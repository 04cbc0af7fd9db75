//! `loadgen`: measure a running ThreadSpace stack. See `loadgen --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use threadspace_loadgen::agents::{self, AgentArgs};
use threadspace_loadgen::bench::{self, BenchOptions};
use threadspace_loadgen::drill::{self, DrillArgs, UsageError};
use threadspace_loadgen::idle::{self, IdleOptions};
use threadspace_loadgen::login::{self, LoginOptions};
use threadspace_loadgen::presence::{self, PresenceOptions};
use threadspace_loadgen::run::{self, PlayArgs};
use threadspace_loadgen::scenario::Scenario;
use threadspace_loadgen::target::Target;
use threadspace_loadgen::writer::{self, WriterOptions};

/// What to play and where (shared by `run` and `capacity`).
#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// Preset: smoke (CI: 2,000 users, ~1 min), threadspace-75k, burst.
    #[arg(long, default_value = "smoke")]
    preset: String,
    /// Scenario file (JSON; fields over a `base` preset; see docs/loadgen.md).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Override the scenario's user count.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=200_000))]
    users: Option<u64>,
    /// Override the measured duration.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Override the random seed (same seed, same schedule).
    #[arg(long)]
    seed: Option<u64>,
    /// Start a private stack (nats-server, PostgreSQL, --gateways gateways, seeded) instead
    /// of using the one `./threadspace up` started.
    #[arg(long)]
    own_stack: bool,
    /// Gateways of the private stack.
    #[arg(long, default_value = "2", value_parser = clap::value_parser!(u64).range(1..=8))]
    gateways: u64,
    /// Extra flag for the private stack's gateways, repeatable.
    #[arg(long = "gateway-arg", allow_hyphen_values = true)]
    gateway_args: Vec<String>,
    /// Message-stream partitions of the private stack (default: the stack's 16). Each is a
    /// durable consumer per sink whose state nats-server writes and fsyncs on every ack burst.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: Option<u32>,
    #[command(flatten)]
    play: PlayArgs,
}

/// SLO thresholds (shared by `run` and `capacity`): flags, or a thresholds file.
#[derive(Debug, clap::Args)]
struct GateArgs {
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    max_delivery_p99: Duration,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    max_presence_p99: Duration,
    /// Largest failed share of requests, 0 to 1.
    #[arg(long, default_value = "0.001")]
    max_error_rate: f64,
    /// Thresholds file (JSON: max_delivery_p99, max_presence_p99, max_error_rate, and
    /// max_p99 per metric; see docs/loadgen.md) instead of the three flags above.
    #[arg(long, conflicts_with_all = ["max_delivery_p99", "max_presence_p99", "max_error_rate"])]
    thresholds: Option<PathBuf>,
}

impl GateArgs {
    fn gate(&self) -> anyhow::Result<run::Gate> {
        if let Some(path) = &self.thresholds {
            return run::Gate::load(path);
        }
        let gate = run::Gate {
            max_delivery_p99: self.max_delivery_p99,
            max_presence_p99: self.max_presence_p99,
            max_error_rate: self.max_error_rate,
            max_p99: Default::default(),
        };
        gate.validate_as(|field| format!("--{}", field.replace('_', "-")))?;
        Ok(gate)
    }
}

impl LoadArgs {
    /// The scenario with the overrides applied, and where to play it.
    async fn resolve(
        &self,
        stack_dir: &std::path::Path,
        recorded: Option<Scenario>,
    ) -> anyhow::Result<(Scenario, run::Site)> {
        let mut scenario = match &self.scenario {
            _ if recorded.is_some() => recorded.expect("checked"),
            Some(path) => Scenario::load(path)?,
            None => Scenario::preset(&self.preset).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown --preset `{}`; presets: {}",
                    self.preset,
                    Scenario::PRESETS.join(", ")
                )
            })?,
        };
        if let Some(users) = self.users {
            scenario.users = users as usize;
        }
        if let Some(duration) = self.duration {
            scenario.duration = duration;
        }
        if let Some(seed) = self.seed {
            scenario.seed = seed;
        }
        scenario.validate()?;
        let site = if self.own_stack {
            run::own_site(&scenario, self.gateways as usize, &self.gateway_args, self.partitions).await?
        } else {
            anyhow::ensure!(self.gateway_args.is_empty(), "--gateway-arg needs --own-stack");
            anyhow::ensure!(self.partitions.is_none(), "--partitions needs --own-stack");
            run::Site::Existing(Box::new(Target::open(stack_dir)?))
        };
        Ok((scenario, site))
    }

    fn options(&self, scenario: Scenario) -> run::RunOptions {
        run::RunOptions {
            scenario,
            play: self.play.clone(),
            progress_every: Duration::from_secs(5),
            settle: Duration::from_secs(5),
            record: None,
            replay: None,
        }
    }
}

/// The flags of `loadgen run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    thresholds: GateArgs,
    /// Play the users in this many child processes (user i in agent i mod N); needed above
    /// ~15,000 users (the per-process file limit).
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u64).range(1..=64))]
    agents: u64,
    /// Runtime worker threads of each agent (with --agents): one each keeps several agents
    /// on few cores from waking each other's threads.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u16).range(1..=64))]
    agent_threads: u16,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write an HdrHistogram interval log here (one histogram per metric and progress
    /// interval, tagged with the metric, values in µs).
    #[arg(long)]
    hdr_log: Option<PathBuf>,
    /// Write an HTML report with latency-by-percentile and time-series plots here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Record what every user did (connect time, each action resolved) to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Replay a recording (its scenario and every user's actions at the same offsets)
    /// against a stack seeded the same way.
    #[arg(long, conflicts_with_all = ["preset", "scenario", "users", "duration", "seed", "record"])]
    replay: Option<PathBuf>,
    /// Exit non-zero if a threshold is broken.
    #[arg(long)]
    gate: bool,
}

/// The flags of `loadgen capacity`.
#[derive(Debug, clap::Args)]
struct CapacityArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    thresholds: GateArgs,
    /// Each step multiplies the load factor by this.
    #[arg(long, default_value = "1.6")]
    growth: f64,
    #[arg(long, default_value = "8", value_parser = clap::value_parser!(u64).range(1..=30))]
    max_steps: u64,
    /// Bisection steps between the last pass and the first failure.
    #[arg(long, default_value = "2", value_parser = clap::value_parser!(u64).range(0..=10))]
    refine: u64,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write an HTML page with the knee plotted here.
    #[arg(long)]
    html: Option<PathBuf>,
}

/// Drives real ThreadSpace WebSocket clients against a stack started by `./threadspace up`.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    /// Data directory of the stack (as given to threadspace-dev --dir).
    #[arg(long, global = true, env = "THREADSPACE_LOADGEN_STACK_DIR", default_value = ".threadspace/local")]
    stack_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open N idle connections to one gateway and report its RSS growth per connection.
    Idle(IdleOptions),
    /// Open-model message load: send→ack and send→deliver latency, deliveries per CPU-second.
    Bench(BenchOptions),
    /// A burst of password logins through the api service: logins per second per api core, and
    /// the login latency under the burst.
    Login(LoginOptions),
    /// Replay a traffic scenario (preset or file) over real WebSockets, check every delivery,
    /// report latencies, and gate on SLOs.
    Run(RunArgs),
    /// Raise the scenario's message rate step by step until a threshold breaks, bisect, and
    /// report the highest sustainable rate.
    Capacity(CapacityArgs),
    /// Failover drill: steady traffic on an HA stack (3 NATS nodes at R3, PostgreSQL with
    /// standbys) while faults strike on a schedule; verdict on loss, duplicates, order, the
    /// archive, and unavailability per fault (docs/drills.md).
    Drill(DrillArgs),
    /// One agent of a `run --agents N` (started by the coordinator; not for direct use).
    #[command(hide = true)]
    Agent(AgentArgs),
    /// Presence propagation (connect, idle, active, disconnect, gateway crash) to every other
    /// member of the org, and presence CPU and heartbeat bytes (starts its own stack).
    Presence(PresenceOptions),
    /// The bridge's Postgres write path: rows/s and commit latency per batch size, next to a
    /// binary COPY of the same rows into the same table (starts its own PostgreSQL).
    Writer(WriterOptions),
}

impl Command {
    /// A flag value clap's parsers let through that the command cannot play (a usage error).
    fn usage_error(&self) -> Option<&'static str> {
        match self {
            Self::Bench(options) => options.rate_error(),
            Self::Presence(options) => options.change_rate_error(),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    let cli: Cli = match threadspace_service::parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Some(error) = cli.command.usage_error() {
        eprintln!("loadgen: {error}");
        return ExitCode::from(64);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Agent(args) = &cli.command {
        builder.worker_threads(args.threads.into());
    }
    let runtime = builder.enable_all().build().expect("tokio runtime builds");
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run(cli) => Some(outcome),
            signal = interrupted() => {
                // The run's future is dropped here: its private stack stops with it, and the
                // agents get their parent-death signal when this process exits.
                eprintln!("loadgen: {signal}: stopped the run and everything it started");
                None
            }
        }
    });
    match outcome {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(error)) if error.downcast_ref::<UsageError>().is_some() => {
            eprintln!("loadgen: {error:#}");
            ExitCode::from(64)
        }
        Some(Err(error)) => {
            eprintln!("loadgen: {error:#}");
            ExitCode::FAILURE
        }
        // Not a return: dropping the runtime would wait for a coordinator's blocking thread.
        None => std::process::exit(130),
    }
}

/// The first SIGINT or SIGTERM, named.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "interrupted (SIGINT)",
        _ = term.recv() => "terminated (SIGTERM)",
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Idle(options) => {
            idle::run(&Target::open(&cli.stack_dir)?, &options).await?;
            Ok(())
        }
        Command::Bench(options) => {
            bench::run(&Target::open(&cli.stack_dir)?, &options).await?.print();
            Ok(())
        }
        Command::Login(options) => {
            let report = login::run(&Target::open(&cli.stack_dir)?, &options).await?;
            report.print();
            anyhow::ensure!(report.failed == 0, "{} logins failed", report.failed);
            if let Some(max) = options.max_p99 {
                let p99 = Duration::from_micros(report.latency.value_at_quantile(0.99));
                anyhow::ensure!(p99 <= max, "gate failed: login p99 {p99:?} is over {max:?}");
            }
            Ok(())
        }
        Command::Run(args) => run_scenario(args, &cli.stack_dir).await,
        Command::Capacity(args) => capacity(args, &cli.stack_dir).await,
        Command::Agent(args) => agents::agent(&args).await,
        Command::Drill(args) => drill::drill(args, &cli.stack_dir).await,
        Command::Presence(options) => {
            let report = presence::run(&options).await?;
            report.gate(&options).map_err(|reason| anyhow::anyhow!("gate failed: {reason}"))
        }
        Command::Writer(options) => {
            if let Some(ratio) = options.min_copy_ratio {
                anyhow::ensure!(
                    (0.0..=1.0).contains(&ratio),
                    "--min-copy-ratio must be between 0 and 1, got {ratio}"
                );
            }
            let report = writer::run(&options).await?;
            report.print();
            report.gate(&options).map_err(|reason| anyhow::anyhow!("gate failed: {reason}"))
        }
    }
}

/// `loadgen run`: one process, or a coordinator of agents.
async fn run_scenario(args: RunArgs, stack_dir: &std::path::Path) -> anyhow::Result<()> {
    let RunArgs { load, thresholds, agents, agent_threads, report, hdr_log, html, record, replay, gate } =
        args;
    let thresholds = thresholds.gate()?;
    for path in [&report, &hdr_log, &html, &record].into_iter().flatten() {
        threadspace_loadgen::check_writable(path)?;
    }
    let replay = replay.as_deref().map(threadspace_loadgen::script::read_recording).transpose()?;
    let (scenario, site) = load.resolve(stack_dir, replay.as_ref().map(|r| r.0.clone())).await?;
    let mut options = load.options(scenario);
    options.record = record.clone();
    options.replay = replay.map(|r| r.1);
    let mut result = if agents > 1 {
        let plan = run::plan(&site, &options).await?;
        let processes = site.processes();
        let work = tempfile::tempdir()?;
        let work_path = work.path().to_path_buf();
        let agents = agents as usize;
        tokio::task::spawn_blocking(move || {
            threadspace_loadgen::agents::coordinate(
                plan,
                agents,
                agent_threads,
                &work_path,
                processes,
                record.as_deref(),
            )
        })
        .await??
    } else {
        run::run(&site, &options).await?
    };
    let passed = result.gate(&thresholds).passed;
    result.print();
    write_report(report.as_deref(), &result)?;
    if let Some(path) = &hdr_log {
        threadspace_loadgen::output::write_hdr_log(&result, path)?;
        println!("HDR histogram log written to {}", path.display());
    }
    if let Some(path) = &html {
        threadspace_loadgen::output::write_html(&result, path)?;
        println!("HTML report written to {}", path.display());
    }
    if !result.failures.is_empty() {
        anyhow::bail!("run failed: {}", result.failures.join("; "));
    }
    if gate && !passed {
        let reasons = result.gate.as_ref().map(|g| g.failures.join("; ")).unwrap_or_default();
        anyhow::bail!("gate failed: {reasons}");
    }
    Ok(())
}

/// `loadgen capacity`.
async fn capacity(args: CapacityArgs, stack_dir: &std::path::Path) -> anyhow::Result<()> {
    let CapacityArgs { load, thresholds, growth, max_steps, refine, report, html } = args;
    let thresholds = thresholds.gate()?;
    for path in [&report, &html].into_iter().flatten() {
        threadspace_loadgen::check_writable(path)?;
    }
    anyhow::ensure!(growth.is_finite() && growth > 1.0 && growth <= 10.0, "--growth must be in (1, 10]");
    let (scenario, site) = load.resolve(stack_dir, None).await?;
    let options = load.options(scenario);
    let result = threadspace_loadgen::capacity::search(
        &site,
        &options,
        &thresholds,
        growth,
        max_steps as usize,
        refine as usize,
    )
    .await?;
    if let Some(path) = &html {
        threadspace_loadgen::output::write_capacity_html(
            &result,
            thresholds.max_delivery_p99.as_secs_f64() * 1000.0,
            path,
        )?;
        println!("HTML page written to {}", path.display());
    }
    write_report(report.as_deref(), &result)
}

fn write_report(path: Option<&std::path::Path>, report: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)
            .map_err(|e| anyhow::anyhow!("cannot write the report to {}: {e}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
