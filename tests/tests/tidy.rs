//! Tidy checks: the dashboards, alerts, manifests and docs agree with the code.

use std::collections::{BTreeMap, BTreeSet};
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
    let code =
        read("gateway/src/metrics.rs") + &read("broker-bridge/src/metrics.rs") + &read("api/src/metrics.rs");
    // `pub(crate) const NAME: &str = "…";`, possibly wrapped by rustfmt.
    code.split("const ")
        .skip(1)
        .filter_map(|declaration| declaration.split(';').next())
        .filter(|declaration| declaration.contains(": &str ="))
        .filter_map(|declaration| declaration.split('"').nth(1))
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
        "used but not declared in gateway/, broker-bridge/ or api/src/metrics.rs: {unknown:?}"
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
        ("api/src/config.rs", "k8s/api.yaml", "THREADSPACE_API_"),
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
    for code in
        ["1000", "1001", "1002", "1009", "1011", "4000", "4001", "4002", "4003", "4004", "4008", "4029"]
    {
        assert!(doc.contains(&format!("| {code} |")), "close code {code} undocumented");
        assert!(frames.contains(code), "close code {code} in docs but not in code");
    }
}

/// Every `(status, code)` error answer constructed in `files`: calls of the form
/// `…(StatusCode::FORBIDDEN, "origin_not_allowed", …)`, formatting folded.
fn error_answers(files: &[&str]) -> BTreeSet<(&'static str, String)> {
    let mut answered = BTreeSet::new();
    for file in files {
        let code = read(file).split_whitespace().collect::<Vec<_>>().join(" ");
        for call in code.split("(StatusCode::").skip(1).chain(code.split("( StatusCode::").skip(1)) {
            let Some((status, rest)) = call.split_once(',') else { continue };
            let Some(name) = rest.trim_start().strip_prefix('"').and_then(|r| r.split('"').next()) else {
                continue;
            };
            // Error codes are snake_case words; plain-text bodies such as "draining\n" are not codes.
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                continue;
            }
            let numeric = match status.trim() {
                "OK" => continue,
                "BAD_REQUEST" => "400",
                "UNAUTHORIZED" => "401",
                "FORBIDDEN" => "403",
                "NOT_FOUND" => "404",
                "METHOD_NOT_ALLOWED" => "405",
                "CONFLICT" => "409",
                "GONE" => "410",
                "PAYLOAD_TOO_LARGE" => "413",
                "UNSUPPORTED_MEDIA_TYPE" => "415",
                "TOO_MANY_REQUESTS" => "429",
                "SERVICE_UNAVAILABLE" => "503",
                other => panic!("{file}: status {other} has no entry in this test"),
            };
            answered.insert((numeric, name.to_owned()));
        }
    }
    answered
}

/// The answers in `answered` that `doc` does not list: documented means the code appears on a
/// line (table row or sentence) with its status.
fn undocumented<'a>(
    doc: &str,
    answered: &'a BTreeSet<(&'static str, String)>,
) -> Vec<&'a (&'static str, String)> {
    answered
        .iter()
        .filter(|(status, name)| {
            !doc.lines().any(|l| l.contains(&format!("`{name}`")) && l.contains(*status))
        })
        .collect()
}

#[test]
fn every_http_error_the_gateway_answers_is_documented_with_its_status() {
    let answered = error_answers(&["gateway/src/edge/http.rs"]);
    assert!(answered.len() >= 5, "error answers found: {answered:?}");
    let missing = undocumented(&read("docs/protocol.md"), &answered);
    assert!(missing.is_empty(), "docs/protocol.md lacks these (status, code) answers: {missing:?}");
}

#[test]
fn every_error_the_api_answers_is_documented_with_its_status() {
    let mut files = Vec::new();
    files_under(&root().join("api/src"), "rs", &mut files);
    let files: Vec<String> =
        files.iter().map(|f| f.strip_prefix(root()).expect("under the root").display().to_string()).collect();
    let answered = error_answers(&files.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(answered.len() >= 8, "error answers found: {answered:?}");
    let missing = undocumented(&read("docs/api.md"), &answered);
    assert!(missing.is_empty(), "docs/api.md lacks these (status, code) answers: {missing:?}");
}

#[test]
fn the_committed_openapi_document_is_the_one_the_api_serves() {
    let generated = threadspace_api::openapi_document().to_pretty_json().expect("serializes");
    let committed = read("docs/openapi.json");
    assert!(
        committed.trim_end() == generated.trim_end(),
        "docs/openapi.json is stale: regenerate it with `cargo run -q --bin threadspace-api -- openapi > docs/openapi.json`"
    );
}

/// The module graph of one crate: `crate::…`, `super::…` and `self::…` paths in each file
/// (outside comments and unit tests), resolved to the deepest module that exists (an item of
/// the crate root, such as a re-export, is an edge to the root). Edges to oneself are
/// dropped; `mod x;` declarations are not edges.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    files_under(src, "rs", &mut files);
    let module_of = |file: &Path| -> Option<String> {
        let rel = file.strip_prefix(src).ok()?.with_extension("");
        let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        match parts.as_slice() {
            [only] if only == "main" => None,
            [first, ..] if first == "bin" => None,
            [only] if only == "lib" => Some("crate".to_owned()),
            [.., last] if last == "mod" => Some(format!("crate::{}", parts[..parts.len() - 1].join("::"))),
            _ => Some(format!("crate::{}", parts.join("::"))),
        }
    };
    let modules: BTreeMap<String, PathBuf> =
        files.iter().filter_map(|f| Some((module_of(f)?, f.clone()))).collect();
    let resolve = |path: &str| -> Option<String> {
        let mut segments: Vec<&str> = path.split("::").collect();
        while !segments.is_empty() {
            let candidate = segments.join("::");
            if modules.contains_key(&candidate) {
                return Some(candidate);
            }
            segments.pop();
        }
        None
    };
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("readable");
        // Unit-test modules (`#[cfg(test)] mod tests { use super::*; }`, by convention at the
        // end) see their own module as `super`: they are not part of the module graph. Other
        // `#[cfg(test)]` items are.
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        // One line: a `use crate::{…}` group may span several.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{} ", l.trim()))
            .collect();
        let mut edges = BTreeSet::new();
        {
            let line = code.as_str();
            for (prefix, base) in [
                ("crate::", "crate".to_owned()),
                ("super::", module.rsplit_once("::").map_or("crate".to_owned(), |(p, _)| p.to_owned())),
                ("self::", module.clone()),
            ] {
                let mut rest = line;
                while let Some(at) = rest.find(prefix) {
                    let preceded =
                        rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
                    rest = &rest[at + prefix.len()..];
                    if preceded {
                        continue;
                    }
                    let tail: String =
                        rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                    let full = format!("{base}::{}", tail.trim_end_matches(':'));
                    // `crate::{a, b}` and `super::{x, y}` groups: each item is an edge.
                    let targets: Vec<String> = if rest[tail.len()..].starts_with('{') || tail.ends_with("::")
                    {
                        let group = rest[tail.len()..].trim_start_matches('{');
                        let group = group.split('}').next().unwrap_or("");
                        group
                            .split(',')
                            .map(|item| format!("{}::{}", full.trim_end_matches("::"), item.trim()))
                            .collect()
                    } else {
                        vec![full]
                    };
                    for target in targets {
                        if let Some(to) = resolve(&target) {
                            if &to != module {
                                edges.insert(to);
                            }
                        }
                    }
                }
            }
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

/// A cycle in `graph`, if there is one (as the list of modules around it).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

/// The crates of the workspace (directories with a `Cargo.toml` and a `src/`).
fn workspace_crates() -> Vec<PathBuf> {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root())
        .expect("the root is readable")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("src").is_dir())
        .collect();
    crates.sort();
    crates
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let crates = workspace_crates();
    assert!(crates.len() >= 8, "crates found: {crates:?}");
    for krate in crates {
        let graph = module_graph(&krate.join("src"));
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{}: modules import each other in a cycle: {}", krate.display(), cycle.join(" → "));
        }
        // Folders too: the parts of a crate form layers (e.g. the gateway's edge → events →
        // delivery), so no folder reaches back into one that uses it.
        let mut folders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let top = |m: &str| m.split("::").take(2).collect::<Vec<_>>().join("::");
        for (from, tos) in &graph {
            for to in tos {
                if top(from) != top(to) {
                    folders.entry(top(from)).or_default().insert(top(to));
                }
            }
        }
        if let Some(cycle) = find_cycle(&folders) {
            panic!(
                "{}: top-level modules import each other in a cycle: {}",
                krate.display(),
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry((*a).to_owned()).or_default().insert((*b).to_owned());
            g.entry((*b).to_owned()).or_default();
        }
        g
    };
    assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c")])), None);
    let cycle = find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    // And the parser sees `use` lines, groups and `super::`: this very crate's tests dir is not
    // a crate, so check a small tree written for the purpose.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "//! x\nmod a;\nmod b;\n").expect("write");
    std::fs::write(src.join("a/mod.rs"), "//! x\nmod inner;\nuse crate::{b::Thing, b::Other};\n")
        .expect("write");
    std::fs::write(src.join("a/inner.rs"), "//! x\nuse super::Y;\n").expect("write");
    std::fs::write(
        src.join("b.rs"),
        "//! x\n// use crate::a; (a comment is not an edge)\npub fn f() { crate::a::inner::g() }\n",
    )
    .expect("write");
    let graph = module_graph(src);
    assert_eq!(graph["crate::a"], BTreeSet::from(["crate::b".to_owned()]));
    assert_eq!(graph["crate::a::inner"], BTreeSet::from(["crate::a".to_owned()]));
    assert_eq!(graph["crate::b"], BTreeSet::from(["crate::a::inner".to_owned()]));
    let cycle = find_cycle(&graph).expect("a → b → a::inner → a");
    assert!(cycle.contains(&"crate::b".to_owned()), "{cycle:?}");
}

#[test]
fn only_the_wiring_sees_the_whole_configuration_and_no_handler_takes_the_whole_service() {
    // The gateway: no god object, and only the wiring (lib.rs) and main.rs read `Config`;
    // every part gets its own settings and handles.
    let mut files = Vec::new();
    files_under(&root().join("gateway/src"), "rs", &mut files);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let name = file.strip_prefix(root()).expect("under the root").display().to_string();
        assert!(!text.contains("struct State"), "{name}: a shared State struct is back");
        if !["gateway/src/lib.rs", "gateway/src/main.rs", "gateway/src/config.rs"].contains(&name.as_str()) {
            let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
            // The word `Config` (not `stream::Config` or `OrderedConfig` of another crate).
            let mentions = code.match_indices("Config").any(|(at, _)| {
                let before = code[..at].chars().next_back();
                let after = code[at + "Config".len()..].chars().next();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                    && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            assert!(!mentions, "{name} reads the whole gateway Config; pass it what it needs");
        }
    }
    // And by the module graph: only the wiring imports the config module.
    let graph = module_graph(&root().join("gateway/src"));
    for (module, edges) in &graph {
        if module != "crate" && module != "crate::config" {
            assert!(!edges.contains("crate::config"), "{module} imports the gateway's config module");
        }
    }
    // The api service: handlers extract their parts (`State<Auth>`, `State<Archive>`…), never
    // the whole `Parts`, however it is spelled.
    let mut files = Vec::new();
    files_under(&root().join("api/src"), "rs", &mut files);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        for extracted in text.split("State<").skip(1).filter_map(|rest| rest.split('>').next()) {
            assert!(
                !extracted.contains("Parts"),
                "{}: a handler takes the whole service: State<{extracted}>",
                file.display()
            );
        }
    }
}

#[test]
fn protocol_has_no_runtime_dependencies() {
    let lock = read("Cargo.lock");
    let entry = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"threadspace-protocol\""))
        .expect("threadspace-protocol is in Cargo.lock");
    for forbidden in ["tokio", "hyper", "nix", "fastwebsockets", "httparse", "async-nats"] {
        assert!(
            !entry.lines().any(|l| l.trim().trim_matches(['"', ',']).split(' ').next() == Some(forbidden)),
            "threadspace-protocol depends on {forbidden} (ARCHITECTURE.md: the protocol crate is pure)"
        );
    }
}

#[test]
fn the_code_map_names_every_crate_and_every_part_and_nothing_that_is_gone() {
    let architecture = read("ARCHITECTURE.md");
    let map = architecture
        .split("## Code map")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("ARCHITECTURE.md has a Code map section");
    // Every crate, and every folder or file directly under a server crate's src/, is named.
    for krate in workspace_crates() {
        let name = krate.file_name().expect("a name").to_string_lossy().into_owned();
        assert!(map.contains(&format!("`{name}/`")), "the code map does not name the crate `{name}/`");
        if ["gateway", "api"].contains(&name.as_str()) {
            for entry in std::fs::read_dir(krate.join("src")).expect("readable").flatten() {
                let part = entry.file_name().to_string_lossy().into_owned();
                let shown = if entry.path().is_dir() { format!("`{part}/`") } else { format!("`{part}`") };
                assert!(map.contains(&shown), "the code map does not name {name}/src/{part} (as {shown})");
            }
        }
    }
    // Every path it names exists: `crate/…` paths, and `file.rs`/`folder/` names under the crate
    // whose bullet they are in.
    for bullet in map.split("\n- ").skip(1) {
        let Some(krate) = bullet.strip_prefix('`').and_then(|b| b.split('/').next()) else { continue };
        for quoted in bullet.split('`').skip(1).step_by(2) {
            let is_path = quoted.ends_with(".rs") || quoted.ends_with('/');
            if !is_path || quoted.contains(' ') {
                continue;
            }
            let candidates = [
                root().join(quoted),
                root().join(krate).join(quoted),
                root().join(krate).join("src").join(quoted),
            ];
            let exists = candidates.iter().any(|p| p.exists())
                || files_named(&root().join(krate), quoted.trim_end_matches('/'));
            assert!(exists, "the code map names `{quoted}` (under `{krate}/`), which does not exist");
        }
    }
}

/// Whether a file or folder called `name` exists anywhere under `dir`.
fn files_named(dir: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.flatten().any(|e| {
        let path = e.path();
        e.file_name().to_string_lossy() == name
            || (path.is_dir() && !path.ends_with("target") && files_named(&path, name))
    })
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

#[test]
fn every_harness_the_fuzz_targets_call_is_public() {
    // fuzz/ is its own workspace (AFL++), so the main build does not compile its targets; this
    // keeps the harness functions they call reachable from them.
    let harness = read("fuzz/src/harness.rs");
    let mut targets = Vec::new();
    files_under(&root().join("fuzz/fuzz_targets"), "rs", &mut targets);
    assert!(targets.len() >= 4, "fuzz targets found: {targets:?}");
    for target in targets {
        let text = std::fs::read_to_string(&target).expect("readable");
        // The call is the last mention (the module doc names it too).
        let called = text
            .rsplit_once("threadspace_fuzz::harness::")
            .and_then(|(_, rest)| rest.split('(').next())
            .unwrap_or_else(|| panic!("{} calls no harness", target.display()));
        assert!(
            harness.contains(&format!("\npub fn {called}(")),
            "{} calls harness::{called}, which is not `pub fn` in fuzz/src/harness.rs",
            target.display()
        );
    }
}

/// docs/web.md, "Security rules": the web client builds its DOM from text only and runs under
/// a policy without inline script, inline style or `eval` — so none of the ways to turn a string
/// into markup or code may appear in `web/`, and the page loads nothing from elsewhere.
#[test]
fn the_web_client_never_turns_text_into_markup_or_code() {
    let mut files = Vec::new();
    for ext in ["js", "html", "css"] {
        files_under(&root().join("web"), ext, &mut files);
    }
    assert!(files.iter().any(|f| f.ends_with("web/index.html")), "web/index.html exists");
    let forbidden = [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "setAttribute('style'",
        "style=",
        "<script>",
    ];
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let name = file.strip_prefix(root()).unwrap_or(file).display().to_string();
        for needle in forbidden {
            assert!(!text.contains(needle), "{name} contains {needle:?} (docs/web.md, Security rules)");
        }
        for remote in ["http://", "https://", "//cdn", "@import url("] {
            if name.ends_with(".html") || name.ends_with(".css") {
                assert!(!text.contains(remote), "{name} loads something remote ({remote})");
            }
        }
    }
}
