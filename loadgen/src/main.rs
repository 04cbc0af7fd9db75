//! `loadgen`: measure a running ThreadSpace stack. See `loadgen --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use threadspace_loadgen::bench::{self, BenchOptions};
use threadspace_loadgen::idle::{self, IdleOptions};
use threadspace_loadgen::presence::{self, PresenceOptions};
use threadspace_loadgen::run;
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
    /// Spread connections over 127.0.0.2 … 127.0.0.(1+N); 0 uses the default address.
    #[arg(long, default_value = "4")]
    source_ips: u8,
    /// Serve Prometheus metrics (connected, counters, last interval's p50/p99 by metric) on
    /// this address while the run lasts; with --agents N, agent k serves on port + k.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
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

    fn options(&self, scenario: Scenario, report: Option<PathBuf>) -> run::RunOptions {
        run::RunOptions {
            scenario,
            source_ips: self.source_ips,
            report,
            progress_every: Duration::from_secs(5),
            settle: Duration::from_secs(5),
            record: None,
            replay: None,
            metrics_addr: self.metrics_addr,
        }
    }
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
    Idle {
        #[arg(long, default_value = "15000", value_parser = clap::value_parser!(u32).range(1..=19_000))]
        connections: u32,
        /// Distinct users (connections cycle over them).
        #[arg(long, default_value = "15000", value_parser = clap::value_parser!(u32).range(1..))]
        users: u32,
        /// Gateway number (1-based).
        #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
        gateway: u32,
        #[arg(long, default_value = "200", value_parser = clap::value_parser!(u32).range(1..=5000))]
        concurrency: u32,
        /// Spread connections over 127.0.0.2 … 127.0.0.(1+N); 0 uses the default address.
        #[arg(long, default_value = "4")]
        source_ips: u8,
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        hold: Duration,
    },
    /// Open-model message load: send→ack and send→deliver latency, deliveries per CPU-second.
    Bench {
        #[arg(long, default_value = "2000", value_parser = clap::value_parser!(u32).range(2..=19_000))]
        users: u32,
        /// Messages per second over all senders.
        #[arg(long, default_value = "300")]
        rate: f64,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Replay a traffic scenario (preset or file) over real WebSockets, check every delivery,
    /// report latencies, and gate on SLOs.
    Run {
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
    },
    /// Raise the scenario's message rate step by step until a threshold breaks, bisect, and
    /// report the highest sustainable rate.
    Capacity {
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
    },
    /// One agent of a `run --agents N` (started by the coordinator; not for direct use).
    #[command(hide = true)]
    Agent {
        #[arg(long)]
        index: usize,
        /// Runtime worker threads.
        #[arg(long, default_value = "1", value_parser = clap::value_parser!(u16).range(1..=64))]
        threads: u16,
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Presence propagation (connect, idle, active, disconnect, gateway crash) to every other
    /// member of the org, and presence CPU and heartbeat bytes (starts its own stack).
    Presence {
        /// Users connected (seeded in orgs of --org-size).
        #[arg(long, default_value = "10000", value_parser = clap::value_parser!(u64).range(10..=18_000))]
        users: u64,
        #[arg(long, default_value = "250", value_parser = clap::value_parser!(u64).range(2..=500))]
        org_size: u64,
        #[arg(long, default_value = "3", value_parser = clap::value_parser!(u64).range(2..=8))]
        gateways: u64,
        /// Subjects per change phase.
        #[arg(long, default_value = "400", value_parser = clap::value_parser!(u64).range(1..=5_000))]
        changes: u64,
        /// Changes per second within a phase.
        #[arg(long, default_value = "40")]
        change_rate: f64,
        /// How long the steady (no change) phase measures CPU and heartbeat bytes.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        steady: Duration,
        /// Skip the gateway-crash phase.
        #[arg(long)]
        no_crash: bool,
        #[arg(long, default_value = "4")]
        source_ips: u8,
        /// Extra gateway flag, repeatable (e.g. --gateway-arg=--presence-interval=1s).
        #[arg(long = "gateway-arg", allow_hyphen_values = true)]
        gateway_args: Vec<String>,
        /// Exit non-zero if a change phase's p99 is above this (or anything is missing).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_change_p99: Option<Duration>,
        /// Exit non-zero if the crash phase's p99 is above this.
        #[arg(long, value_parser = humantime::parse_duration)]
        max_crash_p99: Option<Duration>,
    },
    /// The bridge's Postgres write path: rows/s and commit latency per batch size, next to a
    /// binary COPY of the same rows into the same table (starts its own PostgreSQL).
    Writer {
        #[arg(long, default_value = "300000", value_parser = clap::value_parser!(u64).range(5_000..=10_000_000))]
        rows: u64,
        /// Concurrent writers (bridge partitions write concurrently); COPY uses as many streams.
        #[arg(long, default_value = "2", value_parser = clap::value_parser!(u64).range(1..=64))]
        writers: u64,
        /// Batch sizes to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,5000", value_parser = clap::value_parser!(u64).range(1..=50_000))]
        batch_sizes: Vec<u64>,
        /// Exit non-zero unless every batch size reaches this fraction of COPY's rows/s (e.g. 0.5).
        #[arg(long)]
        min_copy_ratio: Option<f64>,
        /// Exit non-zero unless every batch size reaches this many rows/s.
        #[arg(long)]
        min_rows_per_second: Option<f64>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(64);
        }
    };
    if let Command::Presence { change_rate, .. } = &cli.command {
        if !(change_rate.is_finite() && *change_rate > 0.0 && *change_rate <= 10_000.0) {
            eprintln!("loadgen: --change-rate must be between 0 and 10000 changes per second");
            return ExitCode::from(64);
        }
    }
    if let Command::Bench { rate, .. } = &cli.command {
        if !(rate.is_finite() && *rate > 0.0 && *rate <= 100_000.0) {
            eprintln!("loadgen: --rate must be between 0 and 100000 messages per second");
            return ExitCode::from(64);
        }
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Agent { threads, .. } = &cli.command {
        builder.worker_threads((*threads).into());
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
    if let Command::Writer { rows, writers, batch_sizes, min_copy_ratio, min_rows_per_second } = &cli.command
    {
        if let Some(ratio) = min_copy_ratio {
            anyhow::ensure!(
                (0.0..=1.0).contains(ratio),
                "--min-copy-ratio must be between 0 and 1, got {ratio}"
            );
        }
        let options = WriterOptions {
            rows: *rows as usize,
            writers: *writers as usize,
            batch_sizes: batch_sizes.iter().map(|&b| b as usize).collect(),
            min_copy_ratio: *min_copy_ratio,
            min_rows_per_second: *min_rows_per_second,
        };
        let report = writer::run(&options).await?;
        report.print();
        return report.gate(&options).map_err(|reason| anyhow::anyhow!("gate failed: {reason}"));
    }
    if let Command::Agent { index, plan, out, .. } = &cli.command {
        return threadspace_loadgen::agents::agent(*index, plan, out).await;
    }
    if let Command::Run { .. } | Command::Capacity { .. } = &cli.command {
        return run_scenario(cli.command, &cli.stack_dir).await;
    }
    if let Command::Presence {
        users,
        org_size,
        gateways,
        changes,
        change_rate,
        steady,
        no_crash,
        source_ips,
        gateway_args,
        max_change_p99,
        max_crash_p99,
    } = &cli.command
    {
        let options = PresenceOptions {
            users: *users as usize,
            org_size: *org_size as usize,
            gateways: *gateways as usize,
            changes: *changes as usize,
            change_rate: *change_rate,
            steady: *steady,
            crash: !no_crash,
            source_ips: *source_ips,
            gateway_args: gateway_args.clone(),
            max_change_p99: *max_change_p99,
            max_crash_p99: *max_crash_p99,
        };
        let report = presence::run(&options).await?;
        return report.gate(&options).map_err(|reason| anyhow::anyhow!("gate failed: {reason}"));
    }
    let target = Target::open(&cli.stack_dir)?;
    match cli.command {
        Command::Writer { .. }
        | Command::Presence { .. }
        | Command::Run { .. }
        | Command::Capacity { .. }
        | Command::Agent { .. } => {
            unreachable!("handled above")
        }
        Command::Idle { connections, users, gateway, concurrency, source_ips, hold } => {
            let options = IdleOptions {
                connections: connections as usize,
                users: users as usize,
                gateway: gateway as usize - 1,
                concurrency: concurrency as usize,
                source_ips,
                hold,
            };
            idle::run(&target, &options).await?;
        }
        Command::Bench { users, rate, duration } => {
            let report = bench::run(&target, &BenchOptions { users: users as usize, rate, duration }).await?;
            report.print();
        }
    }
    Ok(())
}

async fn run_scenario(command: Command, stack_dir: &std::path::Path) -> anyhow::Result<()> {
    match command {
        Command::Run {
            load,
            thresholds,
            agents,
            agent_threads,
            report,
            hdr_log,
            html,
            record,
            replay,
            gate,
        } => {
            let thresholds = thresholds.gate()?;
            for path in [&report, &hdr_log, &html, &record].into_iter().flatten() {
                check_writable(path)?;
            }
            let replay = replay.as_deref().map(threadspace_loadgen::script::read_recording).transpose()?;
            let (scenario, site) = load.resolve(stack_dir, replay.as_ref().map(|r| r.0.clone())).await?;
            let mut options = load.options(scenario, report.clone());
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
        Command::Capacity { load, thresholds, growth, max_steps, refine, report, html } => {
            let thresholds = thresholds.gate()?;
            for path in [&report, &html].into_iter().flatten() {
                check_writable(path)?;
            }
            anyhow::ensure!(
                growth.is_finite() && growth > 1.0 && growth <= 10.0,
                "--growth must be in (1, 10]"
            );
            let (scenario, site) = load.resolve(stack_dir, None).await?;
            let options = load.options(scenario, None);
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
        _ => unreachable!("called for run and capacity only"),
    }
}

/// Fails before a long run, not after it, when an output file cannot be written.
fn check_writable(path: &std::path::Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    anyhow::ensure!(
        dir.is_dir(),
        "cannot write {}: directory {} does not exist",
        path.display(),
        dir.display()
    );
    anyhow::ensure!(!path.is_dir(), "cannot write {}: it is a directory", path.display());
    Ok(())
}

fn write_report(path: Option<&std::path::Path>, report: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)
            .map_err(|e| anyhow::anyhow!("cannot write the report to {}: {e}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
