//! Several agent processes for one run: a process may hold at most ~15,000 connections (the
//! per-process file limit is 20,000), so `loadgen run --agents N` splits the users (user *i*
//! to agent *i mod N*) over N child processes of `loadgen agent` on this host.
//!
//! Protocol, over files in a work directory and one line each way on stdio:
//! 1. the coordinator writes `plan-<k>.json` (the scenario, the shared wall-clock start, the
//!    gateways, agent *k*'s users with tokens) and starts `loadgen agent --plan … --out …`;
//! 2. each agent plays its users, writes `acked-<k>.json` (its acknowledged `(seq, channel)`s)
//!    and prints `ACKED`;
//! 3. once all have, the coordinator merges them into `acked.json` and writes `CHECK` to every
//!    agent's stdin; each checks its own users against every acknowledged message, writes
//!    `part-<k>.json` and prints `DONE`;
//! 4. the coordinator merges the parts into one report.
//!
//! Every agent prints its own progress lines, prefixed `[agent k]`. Presence and typing
//! latencies are observed between users of the same agent (the time of a change is known only
//! in the process that made it); deliveries carry their send time and are measured everywhere.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use threadspace_protocol::ChannelId;

use crate::checker::check;
use crate::run::{play, Part, Plan, Report};
use crate::script::{write_recording, UserRecord};
use crate::usage::{Processes, Usage};

/// Runs `plan` over `agents` child processes of this executable.
pub fn coordinate(
    plan: Plan,
    agents: usize,
    threads: u16,
    work: &Path,
    processes: Processes,
    record: Option<&Path>,
) -> anyhow::Result<Report> {
    let exe = std::env::current_exe()?;
    let usage = Usage::start(processes);
    let mut children: Vec<(Child, ChildStdin)> = Vec::new();
    let (lines_tx, lines_rx) = mpsc::channel::<(usize, String)>();
    for k in 0..agents {
        let mut slice = plan.clone();
        slice.users = plan.users.iter().filter(|u| u.index % agents == k).cloned().collect();
        slice.agent = Some(k);
        // Each agent is its own scrape target, as agents on several hosts would be.
        slice.metrics_addr = plan.metrics_addr.map(|mut addr| {
            addr.set_port(addr.port() + k as u16);
            addr
        });
        let plan_path = work.join(format!("plan-{k}.json"));
        std::fs::write(&plan_path, serde_json::to_vec(&slice)?)?;
        // A parent-death signal (through setpriv, like the stack's processes): an interrupted
        // coordinator leaves no agent behind.
        let mut command = if Path::new("/usr/bin/setpriv").exists() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--pdeathsig", "KILL"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let mut child = command
            .args(["agent", "--index", &k.to_string(), "--threads", &threads.to_string(), "--plan"])
            .arg(&plan_path)
            .arg("--out")
            .arg(work)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start agent {k} ({}): {e}", exe.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take().expect("piped");
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((k, line)).is_err() {
                    return;
                }
            }
            let _ = tx.send((k, "EXITED".into()));
        });
        children.push((child, stdin));
    }
    drop(lines_tx);
    // Agents that died, with how: they are left out of every later step, and the report of
    // what the others did is still assembled, marked failed.
    let mut dead: Vec<Option<String>> = vec![None; agents];
    let wait_for = |word: &str, dead: &mut Vec<Option<String>>, children: &mut [(Child, ChildStdin)]| {
        let mut waiting: Vec<bool> = dead.iter().map(Option::is_none).collect();
        while waiting.iter().any(|w| *w) {
            let Ok((k, line)) = lines_rx.recv() else {
                // Every reader thread ended: no agent can still answer.
                for k in (0..agents).filter(|k| waiting[*k]) {
                    dead[k] = Some(format!("agent {k} ended before {word} without a word"));
                }
                return;
            };
            if line == word {
                waiting[k] = false;
            } else if line == "EXITED" {
                // An agent that already said `word` may exit (after DONE it does): only one we
                // still wait for has died.
                if waiting[k] {
                    waiting[k] = false;
                    dead[k] = Some(death(k, &mut children[k].0, &format!("before {word}")));
                }
            } else {
                println!("[agent {k}] {line}");
            }
        }
    };
    let alive =
        |dead: &[Option<String>]| -> Vec<usize> { (0..agents).filter(|k| dead[*k].is_none()).collect() };
    let result = (|| -> anyhow::Result<Vec<Part>> {
        wait_for("ACKED", &mut dead, &mut children);
        let mut acked: Vec<(u64, ChannelId)> = Vec::new();
        for k in alive(&dead) {
            let bytes = std::fs::read(work.join(format!("acked-{k}.json")))?;
            acked.extend(serde_json::from_slice::<Vec<(u64, ChannelId)>>(&bytes)?);
        }
        std::fs::write(work.join("acked.json"), serde_json::to_vec(&acked)?)?;
        for k in alive(&dead) {
            let stdin = &mut children[k].1;
            // An agent that exited right after ACKED cannot take the question: it is dead, the
            // others go on.
            if let Err(error) = writeln!(stdin, "CHECK").and_then(|()| stdin.flush()) {
                let when = format!("after ACKED, before CHECK ({error})");
                dead[k] = Some(death(k, &mut children[k].0, &when));
            }
        }
        wait_for("DONE", &mut dead, &mut children);
        let mut parts = Vec::new();
        for k in alive(&dead) {
            let bytes = std::fs::read(work.join(format!("part-{k}.json")))?;
            parts.push(serde_json::from_slice::<Part>(&bytes)?);
        }
        if let Some(path) = record {
            let mut records: Vec<UserRecord> = Vec::new();
            for k in alive(&dead) {
                let bytes = std::fs::read(work.join(format!("records-{k}.json")))?;
                records.extend(serde_json::from_slice::<Vec<UserRecord>>(&bytes)?);
            }
            records.sort_unstable_by_key(|r| r.user);
            write_recording(path, &plan.scenario, &records)?;
            println!("recording written to {}", path.display());
        }
        Ok(parts)
    })();
    for (child, _) in &mut children {
        if result.is_err() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
    let parts = result?;
    let mut report = Report::assemble(plan.scenario.clone(), plan.start_unix_ms, parts, usage.finish());
    if let Some(logins) = &plan.logins {
        report.latency.insert("login".into(), logins.clone());
    }
    report.failures = dead.into_iter().flatten().collect();
    if !report.failures.is_empty() {
        // The dead agents' users are missing, and the survivors received messages those users
        // sent that nobody recorded as acknowledged: the checker's figures are partial.
        report.failures.push(format!(
            "the report covers {} of {agents} agents; the checker's figures are partial",
            report.agents
        ));
    }
    Ok(report)
}

/// Reaps agent `k`, which has ended, and says (on stderr and in the returned failure) how and
/// `when` it ended.
fn death(k: usize, child: &mut Child, when: &str) -> String {
    let how = child.wait().map_or_else(|e| format!("could not be waited for ({e})"), describe_exit);
    let failure = format!("agent {k} {how} {when}");
    eprintln!("loadgen: {failure}; the report will cover the other agents");
    failure
}

/// How a child process ended, for people: "exited with status 3", "was killed by SIGKILL".
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
            Ok(signal) => format!("was killed by {signal}"),
            Err(_) => format!("was killed by signal {signal}"),
        },
        (None, None) => "ended".into(),
    }
}

/// The flags of `loadgen agent`, which [`coordinate`] passes to each agent it starts.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[arg(long)]
    pub index: usize,
    /// Runtime worker threads.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    #[arg(long)]
    pub plan: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

/// The agent side: plays the plan's users, then checks them (see the module docs).
pub async fn agent(args: &AgentArgs) -> anyhow::Result<()> {
    let AgentArgs { index, plan: plan_path, out, .. } = args;
    let plan: Plan = serde_json::from_slice(
        &std::fs::read(plan_path)
            .map_err(|e| anyhow::anyhow!("cannot read plan {}: {e}", plan_path.display()))?,
    )
    .map_err(|e| anyhow::anyhow!("plan {} is not a plan: {e}", plan_path.display()))?;
    let played = play(&plan, "").await?;
    let file = |name: &str| -> PathBuf { out.join(format!("{name}-{index}.json")) };
    if plan.record {
        std::fs::write(file("records"), serde_json::to_vec(&played.records)?)?;
    }
    std::fs::write(file("acked"), serde_json::to_vec(&played.acked)?)?;
    println!("ACKED");
    let mut line = String::new();
    tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line).map(|_| line))
        .await??
        .trim()
        .eq("CHECK")
        .then_some(())
        .ok_or_else(|| anyhow::anyhow!("the coordinator did not ask for the check"))?;
    let acked: Vec<(u64, ChannelId)> = serde_json::from_slice(&std::fs::read(out.join("acked.json"))?)?;
    let mut part = played.part;
    part.verdict = check(&acked, &played.inboxes);
    std::fs::write(file("part"), serde_json::to_vec(&part)?)?;
    println!("DONE");
    Ok(())
}
