//! `threadspace-dev`: the local ThreadSpace stack for people. `up` starts nats-server,
//! PostgreSQL, gateways, the api service and a bridge on loopback in a data directory, seeds an
//! org, and runs the demo over HTTP and WebSocket (a company signs up, invites, both log in and
//! talk); `chat`, `token`, `demo`, `seed`, `rotate-keys`, `retire-keys`, `status`, `down`,
//! `clean` operate on it.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use threadspace_client::rest::http_status;
use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_devstack::keys::Keys;
use threadspace_devstack::process::alive;
use threadspace_devstack::stack::{read_state, ProcessState, StackState};
use threadspace_devstack::{Lifetime, Stack, StackOptions};
use threadspace_protocol::frames::{ClientFrame, ServerFrame};
use threadspace_protocol::token::Identity;
use threadspace_protocol::{ChannelId, OrgId, UserId};
use threadspace_store::seed::SeedSpec;

/// Runs ThreadSpace locally: NATS JetStream, PostgreSQL and gateways on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "threadspace-dev", version)]
struct Cli {
    /// Data directory of the local stack.
    #[arg(long, global = true, env = "THREADSPACE_DEV_DIR", default_value = ".threadspace/local")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the stack (if not running), seed the demo org, show a message going through.
    Up {
        /// Number of gateway processes.
        #[arg(long, default_value = "2", value_parser = clap::value_parser!(u16).range(1..=16))]
        gateways: u16,
        /// nats-server port (0 picks a free one).
        #[arg(long, default_value = "14222")]
        nats_port: u16,
        /// PostgreSQL port (0 picks a free one).
        #[arg(long, default_value = "15432")]
        postgres_port: u16,
        /// First gateway port; gateway i listens on this + i (0 picks free ones).
        #[arg(long, default_value = "18080")]
        gateway_port: u16,
        /// The api service's port (REST API and its OpenAPI document; 0 picks a free one).
        #[arg(long, default_value = "18090")]
        api_port: u16,
        /// Users in the demo org.
        #[arg(long, default_value = "20", value_parser = clap::value_parser!(u32).range(2..=500))]
        demo_users: u32,
        /// Browser origins the gateways accept WebSocket upgrades from (comma-separated, e.g.
        /// `http://localhost:18090`). The default `*` accepts every origin: fine on loopback,
        /// never in production. Clients that send no Origin are always accepted.
        #[arg(long, default_value = "*", value_delimiter = ',', value_parser = parse_origin)]
        allowed_origins: Vec<String>,
        /// The HA topology (docs/drills.md): a 3-node NATS cluster with every stream at R3,
        /// PostgreSQL with two synchronous standbys (quorum ANY 1), at least 3 gateways and 2
        /// bridges. NATS node i takes --nats-port + 10 i (routes on + 1, monitoring on + 2), standby i
        /// --postgres-port + i.
        #[arg(long)]
        ha: bool,
    },
    /// Stop every process of the stack (data is kept).
    Down,
    /// Show what is running.
    Status,
    /// Stop the stack and delete its data directory.
    Clean,
    /// The demo company `acme` signs up over HTTP (once), its two people log in and exchange
    /// a message across two gateways.
    Demo,
    /// Print an access token for a user (valid for --ttl).
    Token {
        #[arg(long, default_value = "alice")]
        user: String,
        #[arg(long, default_value = "demo-1")]
        org: String,
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Rotate the token signing key without downtime: publish a new key in the JWKS, wait until
    /// every service re-read it, then mint with it. Old tokens keep working until retire-keys.
    RotateKeys,
    /// After a rotation, once tokens of the old key expired (15 min): drop it from the JWKS.
    RetireKeys,
    /// Chat in a channel from the terminal: lines you type are sent, messages are printed.
    Chat {
        #[arg(long, default_value = "alice")]
        user: String,
        #[arg(long, default_value = "demo-1")]
        org: String,
        #[arg(long, default_value = "general")]
        channel: String,
        /// Gateway number (1-based).
        #[arg(long, default_value = "1")]
        gateway: usize,
    },
    /// Add N orgs × M users with the standard channel layout (for load tests).
    Seed {
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        orgs: u32,
        #[arg(long, default_value = "50", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        users: u32,
        #[arg(long, default_value = "org")]
        prefix: String,
        #[arg(long, default_value = "1")]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli: Cli = match threadspace_service::parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    threadspace_service::init_cli_logs("warn");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime builds");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("threadspace-dev: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = absolute(&cli.dir)?;
    match cli.command {
        Command::Up {
            gateways,
            nats_port,
            postgres_port,
            gateway_port,
            api_port,
            demo_users,
            allowed_origins,
            ha,
        } => {
            let ports = [nats_port, postgres_port, gateway_port, api_port];
            up(&dir, gateways as usize, ports, demo_users, &allowed_origins, ha).await
        }
        Command::Down => down(&dir),
        Command::Status => status(&dir).await,
        Command::Clean => {
            down(&dir)?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
            }
            println!("removed {}", dir.display());
            Ok(())
        }
        Command::Demo => demo(&dir).await,
        Command::Token { user, org, ttl } => {
            let state = running(&dir)?;
            let (identity, _) = lookup(&state, &org, &user, None).await?;
            println!("{}", keys(&dir)?.token(identity, ttl));
            Ok(())
        }
        Command::Chat { user, org, channel, gateway } => chat(&dir, &user, &org, &channel, gateway).await,
        Command::RotateKeys => {
            let mut keys = keys(&dir)?;
            let old = keys.signing.kid().to_owned();
            let next = keys.publish_next()?;
            let kid = next.kid().to_owned();
            println!(
                "Published key {kid} beside {old} in {}; waiting 6 s for every service to re-read it…",
                keys.jwks.display()
            );
            tokio::time::sleep(Duration::from_secs(6)).await;
            keys.switch(next)?;
            println!("The api service mints with {kid} within 5 s. Tokens of {old} stay valid until `./threadspace retire-keys` (run it after 15 minutes).");
            Ok(())
        }
        Command::RetireKeys => {
            let keys = keys(&dir)?;
            keys.retire_others()?;
            println!(
                "The JWKS now holds only {}; tokens of older keys are refused within 5 s.",
                keys.signing.kid()
            );
            Ok(())
        }
        Command::Seed { orgs, users, prefix, seed } => {
            let state = running(&dir)?;
            let mut client = threadspace_store::connect(state.postgres_url()).await?;
            let report = threadspace_store::seed::seed(
                &mut client,
                &SeedSpec { orgs, users_per_org: users, slug_prefix: prefix, seed },
            )
            .await?;
            println!(
                "seeded {} orgs, {} users, {} channels, {} memberships in {:.1} s",
                report.orgs,
                report.users,
                report.channels,
                report.memberships,
                report.elapsed.as_secs_f64()
            );
            Ok(())
        }
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() { path.to_owned() } else { std::env::current_dir()?.join(path) })
}

fn keys(dir: &Path) -> anyhow::Result<Keys> {
    Keys::load_or_create(&dir.join("keys")).context("cannot load the stack's token keys")
}

fn running(dir: &Path) -> anyhow::Result<StackState> {
    match read_state(dir) {
        Some(state) if alive(state.nats.pid) && alive(state.postgres.pid) => Ok(state),
        _ => bail!("no local stack is running in {}; start one with `./threadspace up`", dir.display()),
    }
}

async fn up(
    dir: &Path,
    gateways: usize,
    [nats_port, postgres_port, gateway_port, api_port]: [u16; 4],
    demo_users: u32,
    allowed_origins: &[String],
    ha: bool,
) -> anyhow::Result<()> {
    if let Some(state) = read_state(dir) {
        if every_process(&state).any(|(_, p)| alive(p.pid)) {
            if ha == state.nats_peers.is_empty() {
                let (running, asked) = if ha { ("single-node", "--ha") } else { ("--ha", "single-node") };
                bail!(
                    "a {running} stack is running in {}; stop it (`./threadspace down`) before starting a {asked} one, or pass another --dir",
                    dir.display()
                );
            }
            println!("A local stack is already running in {}:", dir.display());
            print_endpoints(&state);
            return Ok(());
        }
    }
    // One data directory holds one topology: the cluster's stream starts over at seq 1, and
    // the archive already holds the single node's seqs.
    let (single, cluster) = (dir.join("nats/jetstream").exists(), dir.join("nats/n1").exists());
    if (ha && single) || (!ha && cluster) {
        let (was, now) = if ha { ("single-node", "--ha") } else { ("--ha", "single-node") };
        bail!(
            "{} holds a {was} stack's data; a {now} stack needs its own: pass another --dir, or wipe it with `./threadspace clean`",
            dir.display()
        );
    }
    // The HA topology needs three gateways: a rolling restart keeps two.
    let gateways = if ha { gateways.max(3) } else { gateways };
    let gateway_ports = gateway_port..gateway_port.saturating_add(gateways as u16);
    if gateway_port != 0 && api_port != 0 && gateway_ports.contains(&api_port) {
        bail!(
            "--api-port {api_port} is one of the gateways' ports ({}–{}): choose another, or fewer --gateways",
            gateway_ports.start,
            gateway_ports.end - 1
        );
    }
    let nonzero = |p: u16| (p != 0).then_some(p);
    let started = Instant::now();
    if ha {
        println!(
            "Starting the HA topology: 3 nats-server nodes (JetStream cluster, sync_interval: always, streams at R3), PostgreSQL with 2 synchronous standbys (ANY 1), {gateways} gateways, the api service and 2 broker-bridges…"
        );
    } else {
        println!(
            "Starting nats-server (JetStream, sync_interval: always), PostgreSQL, {gateways} gateway(s), the api service and the broker-bridge…"
        );
    }
    if allowed_origins.iter().any(|o| o == "*") {
        println!("The gateways accept WebSocket upgrades from every browser origin (--allowed-origins to restrict).");
    } else {
        println!("The gateways accept browser origins: {}", allowed_origins.join(", "));
    }
    let topology = if ha { StackOptions::ha() } else { StackOptions::for_tests(gateways) };
    let stack = Stack::start(StackOptions {
        gateways,
        gateway_args: vec!["--allowed-origins".into(), allowed_origins.join(",")],
        dir: Some(dir.to_owned()),
        lifetime: Lifetime::Detached,
        nats_port: nonzero(nats_port),
        postgres_port: nonzero(postgres_port),
        gateway_port: nonzero(gateway_port),
        api_port: nonzero(api_port),
        partitions: 16,
        bridges: topology.bridges.max(1),
        ..topology
    })
    .await
    .context("cannot start the local stack (logs are in the data directory)")?;
    let has_demo = stack.directory().user_by_handle("demo-1", "alice").await?.is_some();
    if !has_demo {
        let report = stack
            .seed(&SeedSpec { orgs: 1, users_per_org: demo_users, slug_prefix: "demo".into(), seed: 1 })
            .await?;
        println!("Seeded the demo org `demo-1`: {} users, {} channels.", report.users, report.channels);
    }
    let state = stack.detach();
    std::fs::write(dir.join("stack.json"), serde_json::to_vec_pretty(&state)?)
        .context("cannot record the stack state")?;
    println!(
        "ThreadSpace is up after {:.1} s. Data, logs and keys: {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    print_endpoints(&state);
    println!();
    demo(dir).await?;
    println!();
    if let Some(api) = &state.api {
        println!("Chat in a browser: open {}/ and sign in to the organization `{DEMO_ORG}`", api.url);
        println!(
            "  as {} or {} with the password `{DEMO_PASSWORD}` (two browser profiles: both at once).",
            DEMO_PEOPLE[0].1, DEMO_PEOPLE[1].1
        );
    }
    println!("Chat from two terminals (type a line, press Enter):");
    println!("  ./threadspace chat --user alice --gateway 1");
    println!("  ./threadspace chat --user bob --gateway 2");
    println!("Log in over HTTP as the demo company's people (org `{DEMO_ORG}`, password `{DEMO_PASSWORD}`):");
    if let Some(api) = &state.api {
        println!(
            "  curl -s -H 'Content-Type: application/json' -d '{{\"org\":\"{DEMO_ORG}\",\"email\":\"{}\",\"password\":\"{DEMO_PASSWORD}\"}}' {}/v1/auth/login",
            DEMO_PEOPLE[0].1, api.url
        );
    }
    println!("Any WebSocket client: take the access_token it answers (or, for the seeded org `demo-1`,");
    println!("an operator token: TOKEN=$(./threadspace token --user carol)), connect, say hello:");
    println!(
        "  ws://127.0.0.1:{}/v1/ws  then send {{\"op\":\"hello\",\"token\":\"$TOKEN\"}}  (docs/protocol.md)",
        state.gateways[0].port
    );
    if let Some(api) = &state.api {
        println!("The REST API (history, search, membership), described by its OpenAPI document:");
        println!("  curl -H \"Authorization: Bearer $TOKEN\" '{}/v1/search?q=hello'", api.url);
        println!("  curl {}/v1/openapi.json", api.url);
    }
    println!(
        "Stop: ./threadspace down   Status: ./threadspace status   Wipe everything: ./threadspace clean"
    );
    Ok(())
}

/// An `--allowed-origins` entry: `*`, or a scheme and host (and port) as a browser sends it.
fn parse_origin(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value == "*" {
        return Ok(value.to_owned());
    }
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| format!("{value:?} is not an origin: expected http(s)://host[:port] or *"))?;
    if rest.is_empty() || rest.contains(['/', ' ', '?', '#']) {
        return Err(format!("{value:?} is not an origin: expected http(s)://host[:port], no path"));
    }
    Ok(value.to_owned())
}

/// Every process of a stack with its name, in the order `down` stops them within a kind.
fn every_process(state: &StackState) -> impl Iterator<Item = (String, &ProcessState)> {
    let nats = std::iter::once(&state.nats).chain(&state.nats_peers);
    let nats = nats.enumerate().map(|(i, p)| (format!("nats-server {}", i + 1), p));
    let postgres = std::iter::once(("postgres".to_owned(), &state.postgres))
        .chain(state.standbys.iter().enumerate().map(|(i, p)| (format!("postgres standby {}", i + 1), p)));
    let gateways = state.gateways.iter().enumerate().map(|(i, p)| (format!("gateway {}", i + 1), p));
    let bridges = state.bridges.iter().enumerate().map(|(i, p)| (format!("bridge {}", i + 1), p));
    let api = state.api.iter().map(|p| ("api".to_owned(), p));
    nats.chain(postgres).chain(gateways).chain(api).chain(bridges)
}

fn print_endpoints(state: &StackState) {
    for (i, node) in std::iter::once(&state.nats).chain(&state.nats_peers).enumerate() {
        let label = if state.nats_peers.is_empty() {
            "NATS       ".to_owned()
        } else {
            format!("NATS n{}    ", i + 1)
        };
        println!("  {label} {}   (pid {})", node.url, node.pid);
    }
    let redacted = redact(&state.postgres.url);
    println!("  PostgreSQL  {redacted}   (pid {})", state.postgres.pid);
    for (i, standby) in state.standbys.iter().enumerate() {
        println!("  standby {}   {}   (pid {})", i + 1, redact(&standby.url), standby.pid);
    }
    if state.nats_url.as_deref().is_some_and(|u| u.contains(',')) || !state.standbys.is_empty() {
        println!("  clients use NATS {}", state.nats_url());
        println!("          and PostgreSQL {}", redact(state.postgres_url()));
    }
    for (i, g) in state.gateways.iter().enumerate() {
        println!(
            "  gateway {}   {}   metrics http://127.0.0.1:{}/metrics   (pid {})",
            i + 1,
            g.url,
            g.port,
            g.pid
        );
    }
    if let Some(api) = &state.api {
        println!(
            "  api         {}/v1 (OpenAPI: {}/v1/openapi.json)   metrics {}/metrics   (pid {})",
            api.url, api.url, api.url, api.pid
        );
        println!("  web client  {}/", api.url);
    }
    for b in &state.bridges {
        println!("  bridge      JetStream → Postgres   metrics {}   (pid {})", b.url, b.pid);
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let Some(state) = read_state(dir) else {
        println!("no local stack recorded in {}", dir.display());
        return Ok(());
    };
    // Gateways and the api service first (they drain clients, all at once: each gateway waits
    // out --reconnect-spread), then the bridges (they finish their in-flight batch), NATS,
    // PostgreSQL (fast shutdown).
    let terminate = |kind: &str, processes: &[ProcessState]| -> Vec<(String, u32, Signal)> {
        let named = processes.iter().enumerate().map(|(i, p)| (format!("{kind} {}", i + 1), p.pid));
        named.map(|(name, pid)| (name, pid, Signal::SIGTERM)).collect()
    };
    let mut front = terminate("gateway", &state.gateways);
    front.extend(state.api.iter().map(|api| ("api".to_owned(), api.pid, Signal::SIGTERM)));
    let nats = std::iter::once(&state.nats).chain(&state.nats_peers);
    let nats = nats.enumerate().map(|(i, p)| (format!("nats-server {}", i + 1), p.pid, Signal::SIGTERM));
    // Standbys before the primary: a primary stopping first would wait for them to catch up.
    let standbys = state.standbys.iter().enumerate();
    let mut postgres: Vec<_> =
        standbys.map(|(i, p)| (format!("postgres standby {}", i + 1), p.pid, Signal::SIGINT)).collect();
    postgres.push(("postgres".into(), state.postgres.pid, Signal::SIGINT));
    let stages = [front, terminate("bridge", &state.bridges), nats.collect(), postgres];
    for stage in stages {
        let stage: Vec<_> = stage.into_iter().filter(|(_, pid, _)| *pid != 0 && alive(*pid)).collect();
        for (_, pid, signal) in &stage {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), *signal);
        }
        let deadline = Instant::now() + Duration::from_secs(25);
        for (name, pid, _) in stage {
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive(pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
                println!("stopped {name} (pid {pid}) with SIGKILL after 25 s");
            } else {
                println!("stopped {name} (pid {pid})");
            }
        }
    }
    let _ = std::fs::remove_file(dir.join("stack.json"));
    Ok(())
}

/// `status`: written once at the end, so `threadspace status | head` ends quietly.
async fn status(dir: &Path) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let Some(state) = read_state(dir) else {
        writeln!(out, "no local stack in {} (start one with `./threadspace up`)", dir.display())?;
        return print_quietly(&out);
    };
    let word = |up: bool| if up { "running" } else { "stopped" };
    for (i, node) in std::iter::once(&state.nats).chain(&state.nats_peers).enumerate() {
        writeln!(out, "nats-server {}  {}  {}", i + 1, word(alive(node.pid)), node.url)?;
    }
    let stream = match stream_leader(&state).await {
        Ok(Some((leader, replicas))) => format!("stream at R{replicas}, led by nats-server {leader}"),
        Ok(None) => "stream has no leader (a cluster without quorum?)".to_owned(),
        Err(error) => format!("unknown: {error:#}"),
    };
    writeln!(out, "MESSAGES     {stream}")?;
    writeln!(out, "postgres     {}  {}", word(alive(state.postgres.pid)), redact(&state.postgres.url))?;
    for (i, standby) in state.standbys.iter().enumerate() {
        writeln!(out, "standby {}    {}  {}", i + 1, word(alive(standby.pid)), redact(&standby.url))?;
    }
    for (i, g) in state.gateways.iter().enumerate() {
        let ready = match http_status(g.port, "/readyz").await {
            Some(200) => "ready",
            Some(_) => "not ready",
            None => "unreachable",
        };
        writeln!(out, "gateway {}    {}  {}  {ready}", i + 1, word(alive(g.pid)), g.url)?;
    }
    if let Some(api) = &state.api {
        let ready = match http_status(api.port, "/readyz").await {
            Some(200) => "ready",
            Some(_) => "not ready",
            None => "unreachable",
        };
        writeln!(out, "api          {}  {}  {ready}", word(alive(api.pid)), api.url)?;
    }
    for (i, b) in state.bridges.iter().enumerate() {
        let ready = match http_status(b.port, "/readyz").await {
            Some(200) => "ready",
            Some(_) => "not ready",
            None => "unreachable",
        };
        writeln!(out, "bridge {}     {}  {}  {ready}", i + 1, word(alive(b.pid)), b.url)?;
    }
    print_quietly(&out)
}

/// Writes `text` to stdout; a reader that went away early (a closed pipe) is not an error.
fn print_quietly(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The node leading the MESSAGES stream (`1` alone) and its replica count.
async fn stream_leader(state: &StackState) -> anyhow::Result<Option<(String, usize)>> {
    let jetstream =
        threadspace_devstack::nats::jetstream(state.nats_url()).await.map_err(anyhow::Error::msg)?;
    let stream = threadspace_protocol::subjects::MESSAGES_STREAM;
    let info =
        threadspace_devstack::nats::stream_info(&jetstream, stream).await.map_err(anyhow::Error::msg)?;
    let replicas = info.config.num_replicas.max(1);
    let Some(cluster) = &info.cluster else { return Ok(Some(("1".into(), replicas))) };
    let clustered = !state.nats_peers.is_empty();
    Ok(cluster.leader.as_deref().map(|name| (node_number(name, clustered), replicas)))
}

/// The number `status` lists the NATS node named `name` under: cluster nodes are named `n1`,
/// `n2`, …; a lone server, named after its port (`threadspace-local-14222`), is node 1.
fn node_number(name: &str, clustered: bool) -> String {
    if clustered {
        name.trim_start_matches('n').to_owned()
    } else {
        "1".to_owned()
    }
}

/// Resolves org slug + handle (and optionally a channel name) in the stack's directory.
async fn lookup(
    state: &StackState,
    org: &str,
    user: &str,
    channel: Option<&str>,
) -> anyhow::Result<(Identity, Option<ChannelId>)> {
    let pool = threadspace_store::pool(state.postgres_url(), 1)?;
    let directory = threadspace_store::Directory::new(pool);
    let (user_id, org_id): (UserId, OrgId) = directory
        .user_by_handle(org, user)
        .await?
        .with_context(|| format!("no user `{user}` in org `{org}`"))?;
    let channel_id = match channel {
        Some(name) => Some(
            directory
                .channel_by_name(org_id, name)
                .await?
                .with_context(|| format!("no channel `{name}` in org `{org}`"))?,
        ),
        None => None,
    };
    Ok((Identity::new(user_id, org_id), channel_id))
}

/// The demo company's org and its two people (`up` prints how to log in as them).
const DEMO_ORG: &str = "acme";
const DEMO_PEOPLE: [(&str, &str, &str); 2] =
    [("ada", "ada@acme.test", "Ada Lovelace"), ("grace", "grace@acme.test", "Grace Hopper")];
const DEMO_PASSWORD: &str = "threadspace-demo";

/// A JSON request to the api service; the status and the JSON answer (null when empty).
async fn api_call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let bytes = body.map(|b| b.to_string());
    let body = bytes.as_deref().map(|b| ("application/json", b.as_bytes()));
    let response = threadspace_client::rest::http_send(port, method, path, token, body)
        .await
        .with_context(|| format!("{method} {path}: no answer from the api service"))?;
    let value = if response.body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&response.body).with_context(|| format!("{method} {path}: not JSON"))?
    };
    Ok((response.status, value))
}

/// The demo, over HTTP and WebSocket only: a company signs up (org `acme` and its owner), the
/// owner invites a colleague, both log in, and they talk in #general across two gateways; the
/// api service then returns the conversation from Postgres.
async fn demo(dir: &Path) -> anyhow::Result<()> {
    let state = running(dir)?;
    let api = state.api.as_ref().context("the stack has no api service")?;
    let port = api.port;
    let [(owner_handle, owner_email, owner_name), (guest_handle, guest_email, guest_name)] = DEMO_PEOPLE;
    let body = serde_json::json!({
        "slug": DEMO_ORG, "name": "Acme Corp",
        "owner": {"email": owner_email, "handle": owner_handle, "display_name": owner_name, "password": DEMO_PASSWORD},
    });
    let (status, answer) = api_call(port, "POST", "/v1/orgs", None, Some(body)).await?;
    let created = match status {
        201 => true,
        409 => false, // an earlier `up` created it
        _ => bail!("demo: creating the org answered {status}: {answer}"),
    };
    let login = |email: &'static str| async move {
        let body = serde_json::json!({"org": DEMO_ORG, "email": email, "password": DEMO_PASSWORD});
        let (status, tokens) = api_call(port, "POST", "/v1/auth/login", None, Some(body)).await?;
        anyhow::ensure!(status == 200, "demo: login of {email} answered {status}: {tokens}");
        let token = tokens["access_token"].as_str().context("a login answers an access token")?.to_owned();
        anyhow::Ok(token)
    };
    let owner = login(owner_email).await?;
    if created {
        let invite = serde_json::json!({"role": "member", "email": guest_email});
        let (status, invite) = api_call(port, "POST", "/v1/invites", Some(&owner), Some(invite)).await?;
        anyhow::ensure!(status == 201, "demo: the invite answered {status}: {invite}");
        let accept = serde_json::json!({
            "token": invite["token"], "email": guest_email, "handle": guest_handle,
            "display_name": guest_name, "password": DEMO_PASSWORD,
        });
        let (status, user) = api_call(port, "POST", "/v1/invites/accept", None, Some(accept)).await?;
        anyhow::ensure!(status == 201, "demo: accepting the invite answered {status}: {user}");
        println!(
            "Demo: `{DEMO_ORG}` signed up with its owner {owner_email}, who invited {guest_email} (the invite mail is in {}).",
            dir.join("mail.jsonl").display()
        );
    }
    let colleague = login(guest_email).await?;
    println!("Demo: {owner_email} and {guest_email} logged in over HTTP ({}/v1/auth/login).", api.url);

    let wait = Duration::from_secs(10);
    let second = &state.gateways[state.gateways.len().min(2) - 1];
    let mut grace = Client::connect(&ConnectOptions::new(&second.url)).await?;
    let welcome = grace.hello(&colleague, None, wait).await?;
    let general = welcome
        .channels
        .iter()
        .find(|c| c.name.as_deref() == Some("general"))
        .context("the colleague is in #general")?
        .id;
    let mut ada = Client::connect(&ConnectOptions::new(&state.gateways[0].url)).await?;
    ada.hello(&owner, None, wait).await?;
    let id = format!("demo-{}", rand::random::<u32>());
    let sent = Instant::now();
    let body = "Welcome to Acme, Grace 👋";
    ada.send(&ClientFrame::Send {
        reference: "demo".into(),
        channel: general,
        client_msg_id: id.clone(),
        body: body.into(),
    })
    .await?;
    let seq = loop {
        match grace.recv(wait).await? {
            Incoming::Frame(ServerFrame::Msg(m)) if m.client_msg_id == id => break m.seq,
            Incoming::Frame(_) => {}
            other => bail!("demo: the colleague's connection ended: {other:?}"),
        }
    };
    println!(
        "Demo: {owner_handle} on {} said {body:?} in #general; JetStream stored it as seq {seq}; {guest_handle} on {} received it {} ms after the send.",
        state.gateways[0].url,
        second.url,
        sent.elapsed().as_millis()
    );
    if !state.bridges.is_empty() {
        let path = format!("/v1/channels/{general}/messages?after={}&limit=1", seq - 1);
        let deadline = Instant::now() + wait;
        loop {
            let (status, page) = api_call(port, "GET", &path, Some(&colleague), None).await?;
            if status == 200 && page.to_string().contains(&id) {
                println!(
                    "      The broker-bridge archived it in Postgres within {} ms: GET {}{path} returns it.",
                    sent.elapsed().as_millis(),
                    api.url
                );
                break;
            }
            if Instant::now() > deadline {
                bail!("demo: the message did not reach Postgres history within {wait:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

async fn chat(dir: &Path, user: &str, org: &str, channel: &str, gateway: usize) -> anyhow::Result<()> {
    let state = running(dir)?;
    let gateway_state = state
        .gateways
        .get(gateway.wrapping_sub(1))
        .with_context(|| format!("no gateway {gateway}; the stack has {}", state.gateways.len()))?;
    let (identity, channel_id) = lookup(&state, org, user, Some(channel)).await?;
    let channel_id = channel_id.expect("channel looked up");
    let token = keys(dir)?.token(identity, Duration::from_secs(8 * 3600));
    let mut client = Client::connect(&ConnectOptions::new(&gateway_state.url)).await?;
    let welcome = client.hello(&token, None, Duration::from_secs(10)).await?;
    let directory = threadspace_store::Directory::new(threadspace_store::pool(state.postgres_url(), 1)?);
    println!(
        "connected to {} as {} ({} channels); typing in #{channel}. Ctrl-D to quit.",
        gateway_state.url,
        welcome.user.display_name,
        welcome.channels.len()
    );
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut n = 0u64;
    let mut names = std::collections::HashMap::new();
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) if !line.trim().is_empty() => {
                    n += 1;
                    client.send(&ClientFrame::Send { reference: n.to_string(), channel: channel_id, client_msg_id: format!("chat-{}-{n}", std::process::id()), body: line }).await?;
                }
                Some(_) => {}
                None => return Ok(()),
            },
            item = client.recv(Duration::from_secs(3600)) => match item? {
                Incoming::Frame(ServerFrame::Msg(m)) if m.channel == channel_id => {
                    let name = match names.get(&m.sender) {
                        Some(name) => String::clone(name),
                        None => {
                            let session = directory.session(m.sender, None).await.ok().flatten();
                            let name = session.map(|s| s.user.handle).unwrap_or_else(|| m.sender.to_string());
                            names.insert(m.sender, name.clone());
                            name
                        }
                    };
                    println!("[{}] {name}: {}", m.seq, m.body);
                }
                Incoming::Frame(ServerFrame::Error { code, message, .. }) => println!("! {}: {message}", code.as_str()),
                Incoming::Frame(_) => {}
                other => bail!("connection ended: {other:?}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_numbers_nats_nodes_as_it_lists_them() {
        assert_eq!(node_number("n2", true), "2");
        assert_eq!(node_number("threadspace-local-14222", false), "1");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@127.0.0.1:5/db"), "postgres://u:***@127.0.0.1:5/db");
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn cli_rejects_bad_flags() {
        assert!(Cli::try_parse_from(["threadspace-dev", "up", "--gateways", "0"]).is_err());
        assert!(Cli::try_parse_from(["threadspace-dev", "token", "--ttl", "soon"]).is_err());
        assert!(Cli::try_parse_from(["threadspace-dev", "seed"]).is_err());
        assert!(Cli::try_parse_from(["threadspace-dev", "up"]).is_ok());
        assert!(Cli::try_parse_from([
            "threadspace-dev",
            "up",
            "--allowed-origins",
            "http://localhost:3000,https://chat.example"
        ])
        .is_ok());
        for bad in ["localhost:3000", "http://localhost:3000/app", "ftp://x"] {
            let error =
                Cli::try_parse_from(["threadspace-dev", "up", "--allowed-origins", bad]).expect_err(bad);
            assert!(error.to_string().contains("--allowed-origins"), "{bad}: {error}");
        }
    }
}
