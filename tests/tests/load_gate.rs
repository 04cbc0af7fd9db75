//! The load gate can fail: `loadgen run` against a stack whose gateways hold every delivery
//! (test-only fault injection) exits non-zero and names the broken SLO. The passing run of the
//! `smoke` preset is its own step of `./threadspace test` (scripts/test.sh), where it runs alone.

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
    assert!(stderr.contains("over 500 ms"), "the reason names the threshold: {stderr}");
    // The report is written even when the gate fails, and says why.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report written")).expect("report is JSON");
    assert_eq!(report["gate"]["passed"], false);
    assert!(report["latency"]["send_deliver"]["p99_ms"].as_f64().expect("p99") > 500.0);
    assert!(report["checker"]["expected"].as_u64().expect("expected") > 0, "{report}");
}

#[test]
fn bad_scenarios_and_flags_are_refused_naming_what_is_wrong() {
    let loadgen = threadspace_devstack::tools::threadspace_bindir().join("loadgen");
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("s.json");
    std::fs::write(&scenario, r#"{"users": 1}"#).expect("write");
    for (args, named) in [
        (vec!["run", "--preset", "nope"], "--preset"),
        (vec!["run", "--users", "1"], "--users"),
        (vec!["run", "--max-error-rate", "2"], "--max-error-rate"),
        (vec!["run", "--scenario", scenario.to_str().expect("utf-8")], "users"),
        (vec!["run", "--gateway-arg=--x"], "--own-stack"),
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
