//! `loadgen drill` against real processes. The passing drill (a gateway kill, a NATS leader kill
//! and a bridge kill under load, gated) is its own step of `./threadspace test`
//! (scripts/test.sh), where it runs alone; here: the gate fails on a configuration that cannot
//! absorb its fault, a fault command stands in for loadgen's own action, and bad flags are
//! refused with exit 64 before anything starts.

use std::process::Command;

fn loadgen() -> Command {
    Command::new(threadspace_devstack::tools::threadspace_bindir().join("loadgen"))
}

#[test]
fn an_unsafe_stream_fails_the_gate_naming_the_fault_and_a_fault_command_strikes_instead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (report, struck) = (dir.path().join("drill.json"), dir.path().join("struck.txt"));
    // R1: the MESSAGES stream lives on one node, and nats-leader-wipe deletes it. The bridge
    // fault goes through a fault command (here one that only records its arguments).
    let output = loadgen()
        .args(["drill", "--stream-replicas", "1", "--users", "120", "--gate", "--catch-up-for", "20s"])
        .args(["--faults", "bridge-kill:2@6s,nats-leader-wipe@12s"])
        .arg(format!("--fault-command=bridge-kill=echo {{kind}} {{target}} >> {}", struck.display()))
        .arg("--report")
        .arg(&report)
        .output()
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "the gate must fail:\n{stdout}\n{stderr}");
    assert!(stderr.contains("gate failed"), "{stderr}");
    assert!(
        stderr.contains("during nats-leader-wipe") || stderr.contains("nats-leader-wipe (nats-server"),
        "the reason names the fault: {stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report written")).expect("report is JSON");
    let run = &report["runs"][0];
    let lost =
        run["delivery"]["lost"].as_u64().unwrap_or(0) + run["archive"]["missing"].as_u64().unwrap_or(0);
    assert!(
        lost > 0 || run["archive"]["seq_mismatch"].as_u64().unwrap_or(0) > 0,
        "wiping the only copy loses acknowledged messages: {run}"
    );
    let wipe = &run["faults"][1];
    assert_eq!(wipe["kind"], "nats-leader-wipe");
    let actions = wipe["actions"].to_string();
    assert!(actions.contains("SIGKILL pid") && actions.contains("deleted"), "the proof: {actions}");
    assert!(wipe["impact"]["in_flight"].as_u64().unwrap_or(0) > 0, "the probe had sends in flight: {wipe}");
    // The command ran with its placeholders filled, in place of loadgen's own kill.
    assert_eq!(std::fs::read_to_string(&struck).expect("the fault command ran"), "bridge-kill 2\n");
    assert!(
        run["faults"][0]["actions"][0].as_str().unwrap_or("").starts_with("ran: echo bridge-kill 2"),
        "{run}"
    );
}

#[test]
fn bad_drills_are_refused_with_exit_64_before_anything_starts() {
    for (args, reason) in [
        (&["--faults", "gateway-kill,disk-fill"][..], "unknown fault kind \"disk-fill\""),
        (&["--faults", "gateway-kill:7"][..], "there is no gateway 7"),
        (&["--faults", "bridge-kill@2m", "--duration", "60s"][..], "is outside the run"),
        (&["--runs", "0"][..], "--runs 0"),
        (&["--fault-command", "gateway-kill"][..], "expected KIND=COMMAND"),
        (&["--fault-command", "volcano=rm -rf /"][..], "unknown fault kind \"volcano\""),
        (
            &["--existing-stack", "--stack-dir", "/nonexistent/stack"][..],
            "no running stack recorded in /nonexistent/stack",
        ),
    ] {
        let started = std::time::Instant::now();
        let output = loadgen().arg("drill").args(args).output().expect("loadgen runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = if args.contains(&"--existing-stack") { 1 } else { 64 };
        assert_eq!(output.status.code(), Some(expected), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: the message names the problem: {stderr}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{args:?} refused before starting a stack"
        );
    }
}
