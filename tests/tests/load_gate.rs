//! The load gate can fail: `loadgen run` against a stack whose gateways hold every delivery
//! (test-only fault injection) exits non-zero and names the broken SLO. A recorded run replays
//! the same actions, and a thresholds file gates it. The passing run of the `smoke` preset is
//! its own step of `./threadspace test` (scripts/test.sh), where it runs alone.

use std::process::Command;

#[test]
fn a_degraded_gateway_fails_the_gate_with_a_clear_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    let loadgen = threadspace_devstack::tools::threadspace_bindir().join("loadgen");
    let output = Command::new(&loadgen)
        .args(["run", "--own-stack", "--preset", "smoke", "--users", "200", "--duration", "10s", "--gate"])
        .arg("--gateway-arg=--fault-fanout-delay=700ms")
        .arg("--report")
        .arg(&report)
        .output()
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the gate passed a degraded stack:\n{stdout}\n{stderr}");
    assert!(stderr.contains("gate failed") && stderr.contains("delivery p99"), "{stderr}");
    assert!(stderr.contains("over 500ms"), "the reason names the threshold: {stderr}");
    // The report is written even when the gate fails, and says why.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report written")).expect("report is JSON");
    assert_eq!(report["gate"]["passed"], false);
    assert!(report["latency"]["send_deliver"]["p99_ms"].as_f64().expect("p99") > 500.0);
    assert!(report["checker"]["expected"].as_u64().expect("expected") > 0, "{report}");
}

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("report written")).expect("report is JSON")
}

#[test]
fn a_recorded_run_replays_its_actions_and_a_thresholds_file_gates_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loadgen = threadspace_devstack::tools::threadspace_bindir().join("loadgen");
    let (recording, first, second) =
        (dir.path().join("run.rec"), dir.path().join("first.json"), dir.path().join("second.json"));
    let output = Command::new(&loadgen)
        .args([
            "run",
            "--own-stack",
            "--preset",
            "smoke",
            "--users",
            "200",
            "--duration",
            "8s",
            "--seed",
            "5",
        ])
        .arg("--record")
        .arg(&recording)
        .arg("--report")
        .arg(&first)
        .output()
        .expect("loadgen runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(&recording).expect("recording written");
    let sends = text.matches("\"send\"").count() as u64;
    assert_eq!(text.lines().count(), 201, "a header and one line per user");
    assert_eq!(report(&first)["sent"].as_u64(), Some(sends), "the recording holds every send");
    assert!(sends > 20, "{sends} sends recorded");
    // The smoke preset's first 100 users logged in with their password over HTTP.
    assert_eq!(report(&first)["latency"]["login"]["count"], 100, "the run's login latency");

    // A ceiling no real stack meets, from a thresholds file: the replay's gate must name it.
    let thresholds = dir.path().join("slo.json");
    std::fs::write(&thresholds, r#"{"max_p99": {"send_ack": "1us"}}"#).expect("write");
    let (hlog, html) = (dir.path().join("second.hlog"), dir.path().join("second.html"));
    let output = Command::new(&loadgen)
        .args(["run", "--own-stack", "--gate"])
        .arg("--replay")
        .arg(&recording)
        .arg("--thresholds")
        .arg(&thresholds)
        .arg("--report")
        .arg(&second)
        .arg("--hdr-log")
        .arg(&hlog)
        .arg("--html")
        .arg(&html)
        .output()
        .expect("loadgen runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "an impossible send_ack ceiling passed");
    assert!(stderr.contains("send_ack p99") && stderr.contains("over 1us"), "{stderr}");
    let replayed = report(&second);
    let sent = replayed["sent"].as_u64().expect("sent");
    // An action due in the last instant before the end may miss it on a busy machine.
    assert!(sent <= sends && sent + 2 >= sends, "replayed {sent} of {sends} recorded sends");
    assert_eq!(replayed["scenario"]["seed"], 5, "the recording's scenario is used");
    assert_eq!(replayed["checker"]["lost"], 0);
    assert_eq!(replayed["gate"]["thresholds"]["max_p99"]["send_ack"], "1us");
    assert!(std::fs::read_to_string(&hlog).expect("hlog").contains("send_deliver"));
    assert!(std::fs::read_to_string(&html).expect("html").contains("<svg"));
}

#[test]
fn bad_scenarios_and_flags_are_refused_naming_what_is_wrong() {
    let loadgen = threadspace_devstack::tools::threadspace_bindir().join("loadgen");
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("s.json");
    std::fs::write(&scenario, r#"{"users": 1}"#).expect("write");
    let thresholds = dir.path().join("t.json");
    std::fs::write(&thresholds, r#"{"max_p99": {"sendack": "1s"}}"#).expect("write");
    let recording = dir.path().join("r.rec");
    std::fs::write(&recording, "not json\n").expect("write");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    let missing_dir = dir.path().join("no-such-dir").join("r.html");
    for (args, named) in [
        (vec!["run".to_owned(), "--preset".into(), "nope".into()], "--preset"),
        (vec!["run".into(), "--users".into(), "1".into()], "--users"),
        (vec!["run".into(), "--max-error-rate".into(), "2".into()], "--max-error-rate"),
        (vec!["run".into(), "--scenario".into(), path(&scenario)], "users"),
        (vec!["run".into(), "--gateway-arg=--x".into()], "--own-stack"),
        (vec!["run".into(), "--thresholds".into(), path(&thresholds)], "sendack"),
        (
            vec![
                "run".into(),
                "--thresholds".into(),
                path(&thresholds),
                "--max-delivery-p99".into(),
                "1s".into(),
            ],
            "--thresholds",
        ),
        (vec!["run".into(), "--replay".into(), path(&recording)], "line 1"),
        (
            vec!["run".into(), "--replay".into(), path(&recording), "--preset".into(), "burst".into()],
            "--replay",
        ),
        (vec!["run".into(), "--html".into(), path(&missing_dir)], "does not exist"),
        (vec!["run".into(), "--metrics-addr".into(), "nowhere".into()], "--metrics-addr"),
    ] {
        let output = Command::new(&loadgen)
            .args(&args)
            .env("THREADSPACE_LOADGEN_STACK_DIR", dir.path())
            .output()
            .expect("loadgen runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

/// The pid of the running `loadgen agent --index <index>` whose parent is `parent`.
fn agent_pid(parent: u32, index: usize) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_agent = args.iter().any(|a| a == "agent")
            && args.windows(2).any(|w| w[0] == "--index" && w[1] == index.to_string());
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Field 4 of /proc/<pid>/stat, after the parenthesised command name.
        let ppid =
            stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if is_agent && ppid == Some(parent) {
            return Some(pid);
        }
    }
    None
}

/// `loadgen run` of a 150-user smoke over `agents` agents for `duration`, reporting to `report`.
fn smoke_over_agents(
    loadgen: &std::path::Path,
    duration: &str,
    agents: u32,
    report: &std::path::Path,
) -> Command {
    let mut command = Command::new(loadgen);
    command
        .args(["run", "--own-stack", "--preset", "smoke", "--users", "150", "--duration", duration])
        .args(["--agents", &agents.to_string()])
        .arg("--report")
        .arg(report);
    command
}

#[test]
fn agents_that_finish_at_different_times_pass_and_a_dead_agent_still_leaves_a_failed_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loadgen = threadspace_devstack::tools::threadspace_bindir().join("loadgen");
    // Three agents end one after another: the coordinator must not take a finished agent's exit
    // for a failure.
    let ok = dir.path().join("ok.json");
    let output = smoke_over_agents(&loadgen, "5s", 3, &ok).arg("--gate").output().expect("loadgen runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "three agents, nothing wrong, yet: {stderr}");
    assert_eq!(report(&ok)["agents"], 3);

    // Agent 1 is SIGKILLed half-way: the run fails, naming it and the signal, and the report of
    // what the other agents did is written all the same.
    let failed = dir.path().join("failed.json");
    let child = smoke_over_agents(&loadgen, "20s", 2, &failed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("loadgen starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let victim = loop {
        assert!(std::time::Instant::now() < deadline, "agent 1 never started");
        if let Some(pid) = agent_pid(child.id(), 1) {
            break pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    std::thread::sleep(std::time::Duration::from_secs(8));
    let killed = Command::new("kill").args(["-KILL", &victim.to_string()]).status().expect("kill runs");
    assert!(killed.success(), "agent 1 (pid {victim}) is killed");
    let output = child.wait_with_output().expect("loadgen ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a run that lost an agent must fail");
    assert!(stderr.contains("agent 1") && stderr.contains("SIGKILL"), "{stderr}");
    let report = report(&failed);
    let failures = report["failures"].to_string();
    assert!(failures.contains("agent 1") && failures.contains("SIGKILL"), "{report}");
    assert_eq!(report["agents"], 1, "the surviving agent's part is in the report");
    assert!(report["sent"].as_u64().unwrap_or(0) > 0, "{report}");
}
