//! Tidy checks: the dashboards, alerts, manifests and docs agree with the code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                files_under(&path, ext, out);
            }
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

/// `threadspace_…` metric names mentioned in a text, without histogram series suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("threadspace_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let mut name = &text[start..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(stripped) = name.strip_suffix(suffix) {
                name = stripped;
            }
        }
        names.insert(name.to_owned());
        i = end;
    }
    names
}

fn declared_metrics() -> BTreeSet<String> {
    let code = read("gateway/src/metrics.rs") + &read("broker-bridge/src/metrics.rs");
    code.lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_metric_in_dashboards_and_alerts_exists_in_code() {
    let declared = declared_metrics();
    assert!(declared.len() >= 10, "metrics.rs parsed: {declared:?}");
    let mut sources = Vec::new();
    files_under(&root().join("dashboards"), "json", &mut sources);
    files_under(&root().join("k8s"), "yaml", &mut sources);
    files_under(&root().join("prometheus"), "yaml", &mut sources);
    let mut used = BTreeSet::new();
    for path in &sources {
        used.extend(metric_names(&std::fs::read_to_string(path).expect("readable")));
    }
    assert!(!used.is_empty(), "dashboards and alerts use metrics");
    let unknown: Vec<_> = used.difference(&declared).collect();
    assert!(
        unknown.is_empty(),
        "used but not declared in gateway/ or broker-bridge/src/metrics.rs: {unknown:?}"
    );
    let bridge: Vec<_> = used.iter().filter(|m| m.starts_with("threadspace_bridge_")).collect();
    assert!(bridge.len() >= 4, "the bridge is graphed and alerted on: {bridge:?}");
}

#[test]
fn every_alert_has_a_runbook() {
    let alerts = read("k8s/alerts.yaml");
    let names: Vec<&str> = alerts.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(!names.is_empty());
    for name in names {
        let runbook = root().join(format!("runbooks/{name}.md"));
        assert!(runbook.exists(), "alert {name} has no {}", runbook.display());
        assert!(
            alerts.contains(&format!("runbook_url: runbooks/{name}.md")),
            "alert {name} links its runbook"
        );
    }
}

/// The rule lines (comments and blank lines dropped) of the `groups:` list starting at line
/// `start`, dedented by `indent`.
fn group_lines(lines: &[&str], start: usize, indent: usize, file: &str) -> Vec<String> {
    lines[start..]
        .iter()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| {
            let (pad, rest) = l.split_at(indent.min(l.len()));
            assert!(pad.trim().is_empty(), "{file}: {l:?} is not inside its groups list");
            rest.to_owned()
        })
        .collect()
}

/// promtool cannot read PrometheusRule CRDs, so the rules are tested as the plain rule file
/// prometheus/rules.yaml; k8s/alerts.yaml deploys them and must say the same.
#[test]
fn alert_crd_matches_the_promtool_rule_file() {
    let plain = read("prometheus/rules.yaml");
    let plain_lines: Vec<&str> = plain.lines().collect();
    let start = plain_lines.iter().position(|l| *l == "groups:").expect("prometheus/rules.yaml has groups:");
    let expected = group_lines(&plain_lines, start + 1, 0, "prometheus/rules.yaml");
    let crd = read("k8s/alerts.yaml");
    let mut actual = Vec::new();
    for doc in crd.split("\n---\n") {
        let lines: Vec<&str> = doc.lines().collect();
        assert!(doc.contains("kind: PrometheusRule"), "k8s/alerts.yaml: every document is a PrometheusRule");
        let start = lines.iter().position(|l| *l == "  groups:").expect("a CRD document has spec.groups");
        let group = group_lines(&lines, start + 1, 2, "k8s/alerts.yaml");
        let name = group.first().and_then(|l| l.strip_prefix("  - name: ")).expect("a group");
        assert!(
            doc.contains(&format!("metadata:\n  name: {name}\n")),
            "the CRD is named after its group {name}"
        );
        actual.extend(group);
    }
    if let Some(i) = (0..expected.len().max(actual.len())).find(|&i| expected.get(i) != actual.get(i)) {
        panic!(
            "k8s/alerts.yaml differs from prometheus/rules.yaml at rule line {i}:\n  rules.yaml: {:?}\n  alerts.yaml: {:?}\n\
             (the CRD's spec.groups must be rules.yaml's groups, indented two more spaces)",
            expected.get(i),
            actual.get(i)
        );
    }
}

#[test]
fn every_env_var_in_k8s_is_a_real_option() {
    for (config, manifest, prefix) in [
        ("gateway/src/config.rs", "k8s/gateway.yaml", "THREADSPACE_GATEWAY_"),
        ("broker-bridge/src/config.rs", "k8s/bridge.yaml", "THREADSPACE_BRIDGE_"),
        ("store/src/bin/threadspace-store.rs", "k8s/bridge.yaml", "THREADSPACE_POSTGRES_"),
    ] {
        let code = read(config);
        let options: BTreeSet<&str> =
            code.split("env = \"").skip(1).filter_map(|s| s.split('"').next()).collect();
        let text = read(manifest);
        let used: Vec<&str> = text
            .split("name: ")
            .skip(1)
            .filter_map(|s| s.split([',', ' ', '\n', '}']).next())
            .filter(|s| s.starts_with(prefix))
            .collect();
        assert!(!used.is_empty(), "{manifest} sets no {prefix}* variable");
        for var in used {
            assert!(options.contains(var), "{manifest} sets {var}, which no flag in {config} reads");
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    files_under(&root(), "rs", &mut files);
    assert!(files.len() > 20);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        assert!(text.starts_with("//!"), "{} does not start with a //! header", file.display());
    }
}

#[test]
fn readme_starts_with_the_two_commands_and_ci_runs_the_test_one() {
    let readme = read("README.md");
    let head: String = readme.lines().take(8).collect::<Vec<_>>().join("\n");
    assert!(head.contains("./threadspace up"), "{head}");
    assert!(head.contains("./threadspace test"), "{head}");
    let ci = read(".ci/run");
    assert!(ci.lines().any(|l| l.trim() == "./threadspace test"), ".ci/run calls the README's test command");
}

#[test]
fn every_error_code_is_documented() {
    let doc = read("docs/protocol.md");
    let frames = read("protocol/src/frames.rs");
    let codes: Vec<&str> = frames
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Self::"))
        .filter_map(|l| l.split("=> \"").nth(1))
        .filter_map(|l| l.split('"').next())
        .filter(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'))
        .collect();
    assert!(codes.len() >= 10, "{codes:?}");
    for code in codes {
        assert!(doc.contains(&format!("`{code}`")), "docs/protocol.md does not document `{code}`");
    }
    for code in ["1000", "1001", "1002", "1009", "1011", "4000", "4001", "4002", "4003", "4008", "4029"] {
        assert!(doc.contains(&format!("| {code} |")), "close code {code} undocumented");
        assert!(frames.contains(code), "close code {code} in docs but not in code");
    }
}

#[test]
fn every_http_error_the_gateway_answers_is_documented_with_its_status() {
    let doc = read("docs/protocol.md");
    let mut answered = BTreeSet::new();
    for file in ["gateway/src/http.rs", "gateway/src/history.rs", "gateway/src/membership.rs"] {
        let code = read(file).split_whitespace().collect::<Vec<_>>().join(" ");
        // `error(StatusCode::FORBIDDEN, "origin_not_allowed", …)`, formatting folded.
        for call in code.split("error( StatusCode::").chain(code.split("error(StatusCode::")).skip(1) {
            let Some((status, rest)) = call.split_once(',') else { continue };
            let Some(name) = rest.trim_start().strip_prefix('"').and_then(|r| r.split('"').next()) else {
                continue;
            };
            let numeric = match status.trim() {
                "BAD_REQUEST" => "400",
                "UNAUTHORIZED" => "401",
                "FORBIDDEN" => "403",
                "NOT_FOUND" => "404",
                "METHOD_NOT_ALLOWED" => "405",
                "CONFLICT" => "409",
                "SERVICE_UNAVAILABLE" => "503",
                other => panic!("{file}: status {other} has no entry in this test"),
            };
            answered.insert((numeric, name.to_owned()));
        }
    }
    assert!(answered.len() >= 8, "error answers found: {answered:?}");
    let undocumented: Vec<_> = answered
        .iter()
        .filter(|(status, name)| {
            // Documented means: the code appears on a line (table row or sentence) with its status.
            !doc.lines().any(|l| l.contains(&format!("`{name}`")) && l.contains(*status))
        })
        .collect();
    assert!(undocumented.is_empty(), "docs/protocol.md lacks these (status, code) answers: {undocumented:?}");
}

/// The names of ThreadSpace's binaries: every `[[bin]]` and `src/bin/*.rs` of the workspace.
fn workspace_binaries() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let manifest = read("Cargo.toml");
    let members = manifest.split("members = [").nth(1).and_then(|m| m.split(']').next()).expect("members");
    for member in members.split(',').map(|m| m.trim().trim_matches('"')).filter(|m| !m.is_empty()) {
        let cargo = read(&format!("{member}/Cargo.toml"));
        for block in cargo.split("[[bin]]").skip(1) {
            if let Some(name) = block.lines().find_map(|l| l.trim().strip_prefix("name = ")) {
                names.insert(name.trim_matches('"').to_owned());
            }
        }
        if let Ok(entries) = std::fs::read_dir(root().join(member).join("src/bin")) {
            for entry in entries.flatten() {
                if let Some(stem) = entry.path().file_stem() {
                    names.insert(stem.to_string_lossy().into_owned());
                }
            }
        }
    }
    names
}

#[test]
fn the_run_command_builds_every_binary_the_local_stack_starts() {
    let binaries = workspace_binaries();
    assert!(binaries.contains("threadspace-gateway"), "binaries found: {binaries:?}");
    // What devstack starts: every binary name quoted in its sources.
    let mut sources = Vec::new();
    files_under(&root().join("devstack/src"), "rs", &mut sources);
    let mut started = BTreeSet::new();
    for path in &sources {
        if path.ends_with("threadspace-dev.rs") {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("readable");
        for name in &binaries {
            if text.contains(&format!("\"{name}\"")) {
                started.insert(name.clone());
            }
        }
    }
    assert!(started.contains("threadspace-gateway"), "devstack starts gateways: {started:?}");
    // What `./threadspace up` builds before it runs threadspace-dev.
    let script = read("threadspace");
    let build = script
        .lines()
        .find(|l| l.trim_start().starts_with("cargo build --release"))
        .expect("the run command builds in release");
    let built: BTreeSet<String> = build
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1].to_owned())
        .collect();
    assert!(built.contains("threadspace-dev"), "the run command builds threadspace-dev: {build}");
    let missing: Vec<_> = started.difference(&built).collect();
    assert!(
        missing.is_empty(),
        "the local stack starts {missing:?}, which `./threadspace up` does not build ({build})"
    );
}
