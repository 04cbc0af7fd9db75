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
