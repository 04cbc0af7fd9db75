//! `threadspace-store`: operator commands for the Postgres system of record — migrate, list
//! and pre-create message partitions, apply retention (what a nightly CronJob runs).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use threadspace_store::messages;

#[derive(Parser, Debug)]
#[command(name = "threadspace-store", version, about = "ThreadSpace Postgres maintenance")]
struct Cli {
    /// Postgres URL (several hosts and `target_session_attrs=read-write` are allowed).
    #[arg(long, env = "THREADSPACE_POSTGRES_URL")]
    postgres_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply pending schema migrations.
    Migrate,
    /// List the partitions of `messages`.
    Partitions,
    /// Create partitions so that seqs up to THROUGH_SEQ, plus AHEAD more partitions, exist.
    EnsurePartitions {
        #[arg(long, default_value_t = 0)]
        through_seq: i64,
        #[arg(long, default_value_t = messages::DEFAULT_ROWS_PER_PARTITION, value_parser = clap::value_parser!(i64).range(1..))]
        rows_per_partition: i64,
        #[arg(long, default_value_t = 2)]
        ahead: u32,
    },
    /// Drop partitions whose newest message is older than KEEP (default 7 years).
    Retention {
        /// How long to keep messages, e.g. `7years`, `400days`.
        #[arg(long, default_value = "7years 2days", value_parser = parse_keep)]
        keep: Duration,
        /// Report what would be dropped without dropping anything.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_keep(text: &str) -> Result<Duration, String> {
    let keep = humantime::parse_duration(text).map_err(|e| format!("{e} (try `7years` or `400days`)"))?;
    if keep < Duration::from_secs(3600) {
        return Err("a retention shorter than one hour is refused: it would drop live history".into());
    }
    Ok(keep)
}

fn main() -> ExitCode {
    let cli: Cli = match threadspace_service::parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    threadspace_service::init_cli_logs("info");
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime builds");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("threadspace-store: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let pool = threadspace_store::pool(&cli.postgres_url, 1)?;
    let mut client = pool.get().await.context("cannot connect to postgres")?;
    match cli.command {
        Command::Migrate => {
            let applied = threadspace_store::migrate(&mut client).await?;
            println!("{applied} migration(s) applied");
        }
        Command::Partitions => {
            for p in messages::partitions(&client).await.context("cannot list partitions")? {
                println!("{}\t[{}, {})", p.name, p.seq_from, p.seq_to);
            }
        }
        Command::EnsurePartitions { through_seq, rows_per_partition, ahead } => {
            let upper = messages::ensure_partitions(&mut client, through_seq, rows_per_partition, ahead)
                .await
                .context("cannot create partitions")?;
            println!("partitions cover seqs below {upper}");
        }
        Command::Retention { keep, dry_run } => {
            let report =
                messages::apply_retention(&mut client, keep, dry_run).await.context("retention failed")?;
            let verb = if dry_run { "would drop" } else { "dropped" };
            for p in &report.dropped {
                println!("{verb} {} [{}, {})", p.name, p.seq_from, p.seq_to);
            }
            if let Some((p, why)) = &report.kept_from {
                println!("kept {} and later: {why}", p.name);
            }
            println!("{} partition(s) {verb}", report.dropped.len());
        }
    }
    Ok(())
}
