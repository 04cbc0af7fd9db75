//! A drill's reports: the lines printed after each run, the summary across runs (per fault
//! kind: unavailability p50 and max), and the HTML page whose timelines mark every fault's
//! strike and recovery.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::style::RGBColor;

use super::faults::Struck;
use super::{DrillReport, RunReport};
use crate::output::{escape, time_plot, Line, Marker, STYLE};

/// What one run found, printed when it ends.
pub(super) fn print_run(run: &RunReport) {
    let d = &run.delivery;
    let a = &run.archive;
    println!(
        "run {} (seed {}): sent {} acked {} | deliveries owed {} lost {} duplicated {} reordered {} | archive: {} acked, {} missing, {} duplicated, unacked {} stored / {} not (drained in {:.1} s)",
        run.run + 1,
        run.seed,
        run.sent,
        run.acked,
        d.expected,
        d.lost,
        d.duplicated,
        d.out_of_order,
        a.acked,
        a.missing,
        a.duplicated,
        a.unacked_stored,
        a.unacked_not_stored,
        a.drain_ms as f64 / 1000.0
    );
    println!(
        "  deliver p99 {:.1} ms, reconnect→resumed p99 {:.1} ms",
        run.deliver_p99_ms, run.reconnect_resumed_p99_ms
    );
    for fault in &run.faults {
        let i = &fault.impact;
        println!(
            "  {:<21} {:<22} in flight {:>3} | failed {:>3} refused, {:>3} unanswered, {:>3} stalled: {:>5.1} s on gateway {} | slowest delivery {:>5.1} s | {:>4} reconnects, longest {:>5.1} s, all resumed {:>5.1} s | leader {} → {}, timeline {} → {}",
            fault.struck.kind,
            fault.struck.target,
            i.in_flight,
            i.refused,
            i.unanswered,
            i.stalled,
            i.unavailable_ms as f64 / 1000.0,
            i.unavailable_gateway.map_or("-".to_owned(), |g| g.to_string()),
            i.deliver_max_ms as f64 / 1000.0,
            i.reconnects,
            i.longest_reconnect_ms as f64 / 1000.0,
            i.all_resumed_ms as f64 / 1000.0,
            fault.struck.leader_before.as_deref().unwrap_or("?"),
            fault.struck.leader_after.as_deref().unwrap_or("?"),
            fault.struck.timeline_before.map_or("?".to_owned(), |t| t.to_string()),
            fault.struck.timeline_after.map_or("?".to_owned(), |t| t.to_string()),
        );
        if let Some(meta) = meta_leaders(&fault.struck) {
            println!("  {:<21} meta leader {meta}", "");
        }
        match fault.presence.map(|p| p.wrong_ms) {
            Some(Some(ms)) => {
                println!("  {:<21} presence wrong for at most {:.1} s", "", ms as f64 / 1000.0)
            }
            Some(None) => println!("  {:<21} presence NOT whole again 30 s after the recovery", ""),
            None => {}
        }
    }
    for (replayed, label) in [(false, "slowest live deliveries"), (true, "slowest replayed deliveries")] {
        let listed: Vec<String> = run
            .slowest_deliveries
            .iter()
            .filter(|d| d.replayed == replayed)
            .take(3)
            .map(|d| {
                format!(
                    "{:.1} s seq {} (due t={:.1}s, {}{}; sent via gateway {}, delivered by gateway {})",
                    d.took_ms as f64 / 1000.0,
                    d.seq,
                    d.due_s,
                    wall_clock(d.due_unix_ms),
                    d.during.as_ref().map_or_else(String::new, |kind| format!(", after {kind}")),
                    d.sent_via.map_or("?".to_owned(), |g| g.to_string()),
                    d.delivered_by
                )
            })
            .collect();
        if !listed.is_empty() {
            println!("  {label}: {}", listed.join("; "));
        }
    }
    if run.failures.is_empty() {
        println!("  verdict: PASS");
    } else {
        for failure in &run.failures {
            println!("  FAIL: {failure}");
        }
    }
}

/// `unix_ms` as the logs write times (RFC 3339, UTC, milliseconds).
fn wall_clock(unix_ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// One fault kind's figures across runs (ms): unavailable, longest reconnect, slowest delivery,
/// presence whole again (faults that move clients; `u64::MAX`: never).
type KindFigures = (Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>);

/// Per fault kind across runs, each sorted: unavailable ms, longest reconnect ms, slowest
/// delivery ms.
fn by_kind(drill: &DrillReport) -> BTreeMap<String, KindFigures> {
    let mut kinds: BTreeMap<String, KindFigures> = BTreeMap::new();
    for fault in drill.runs.iter().flat_map(|r| &r.faults) {
        let entry = kinds.entry(fault.struck.kind.clone()).or_default();
        entry.0.push(fault.impact.unavailable_ms);
        entry.1.push(fault.impact.longest_reconnect_ms);
        entry.2.push(fault.impact.deliver_max_ms);
        if let Some(presence) = fault.presence {
            entry.3.push(presence.wrong_ms.unwrap_or(u64::MAX));
        }
    }
    for (windows, reconnects, deliveries, presence) in kinds.values_mut() {
        windows.sort_unstable();
        reconnects.sort_unstable();
        deliveries.sort_unstable();
        presence.sort_unstable();
    }
    kinds
}

fn p50(sorted: &[u64]) -> u64 {
    sorted.get(sorted.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// The table across runs.
pub(super) fn print_summary(drill: &DrillReport) {
    let runs = &drill.runs;
    let sum = |f: &dyn Fn(&RunReport) -> u64| runs.iter().map(f).sum::<u64>();
    println!(
        "drill: {} run(s), {} passed | lost {} duplicated {} reordered {} | archive missing {} duplicated {} | worst reconnect→resumed p99 {:.1} ms",
        runs.len(),
        runs.iter().filter(|r| r.failures.is_empty()).count(),
        sum(&|r| r.delivery.lost),
        sum(&|r| r.delivery.duplicated),
        sum(&|r| r.delivery.out_of_order),
        sum(&|r| r.archive.missing as u64),
        sum(&|r| r.archive.duplicated as u64),
        runs.iter().map(|r| r.reconnect_resumed_p99_ms).fold(0.0, f64::max)
    );
    println!(
        "  {:<21} {:>5} {:>14} {:>14} {:>20} {:>21} {:>18}",
        "fault",
        "count",
        "unavail p50 s",
        "unavail max s",
        "longest resume max s",
        "slowest deliver max s",
        "presence wrong max s"
    );
    for (kind, (windows, reconnects, deliveries, presence)) in by_kind(drill) {
        println!(
            "  {:<21} {:>5} {:>14.1} {:>14.1} {:>20.1} {:>21.1} {:>18}",
            kind,
            windows.len(),
            p50(&windows) as f64 / 1000.0,
            windows.last().copied().unwrap_or(0) as f64 / 1000.0,
            reconnects.last().copied().unwrap_or(0) as f64 / 1000.0,
            deliveries.last().copied().unwrap_or(0) as f64 / 1000.0,
            presence_cell(&presence)
        );
    }
}

/// The longest presence convergence of a kind's faults: `-` for kinds that move no clients,
/// `never` if one did not converge.
fn presence_cell(sorted: &[u64]) -> String {
    match sorted.last() {
        None => "-".to_owned(),
        Some(&u64::MAX) => "never".to_owned(),
        Some(&ms) => format!("{:.1}", ms as f64 / 1000.0),
    }
}

/// The HTML page: the summary, and per run its timeline with every fault marked.
pub(super) fn write_html(drill: &DrillReport, path: &Path) -> anyhow::Result<()> {
    let mut html = String::new();
    let _ = write!(html, "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadgen drill</title><style>{STYLE}</style></head><body><h1>Failover drill</h1>");
    html.push_str("<table><tr><th>fault</th><th>count</th><th>unavailable p50 s</th><th>unavailable max s</th><th>longest resume max s</th><th>slowest delivery max s</th><th>presence wrong max s</th></tr>");
    for (kind, (windows, reconnects, deliveries, presence)) in by_kind(drill) {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
            escape(&kind),
            windows.len(),
            p50(&windows) as f64 / 1000.0,
            windows.last().copied().unwrap_or(0) as f64 / 1000.0,
            reconnects.last().copied().unwrap_or(0) as f64 / 1000.0,
            deliveries.last().copied().unwrap_or(0) as f64 / 1000.0,
            presence_cell(&presence)
        );
    }
    html.push_str("</table>");
    for run in &drill.runs {
        let verdict = if run.failures.is_empty() {
            "<span class=\"pass\">pass</span>".to_owned()
        } else {
            "<span class=\"fail\">fail</span>".to_owned()
        };
        let _ = write!(html, "<h2>Run {} (seed {}): {verdict}</h2><ul>", run.run + 1, run.seed);
        for failure in &run.failures {
            let _ = write!(html, "<li class=\"fail\">{}</li>", escape(failure));
        }
        html.push_str("</ul>");
        let series: Vec<Line> = vec![
            (
                "sends acknowledged/s".into(),
                RGBColor(44, 160, 44),
                run.timeline.iter().map(|p| (p.0, p.1 as f64)).collect(),
            ),
            (
                "sends failed/s".into(),
                RGBColor(214, 39, 40),
                run.timeline.iter().map(|p| (p.0, p.2 as f64)).collect(),
            ),
        ];
        let mut markers: Vec<Marker> = Vec::new();
        for (struck, recovered, kind) in &run.marks {
            markers.push((*struck, kind.clone(), RGBColor(214, 39, 40)));
            markers.push((*recovered, "recovered".into(), RGBColor(31, 119, 180)));
        }
        html.push_str(&time_plot("Sends per second, faults marked", "per second", false, &series, &markers)?);
        html.push_str("<table><tr><th>fault</th><th>target</th><th>actions</th><th>unavailable s</th><th>longest resume s</th><th>leader</th><th>timeline</th></tr>");
        for fault in &run.faults {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{} → {}{}</td><td>{} → {}</td></tr>",
                escape(&fault.struck.kind),
                escape(&fault.struck.target),
                escape(&fault.struck.actions.join("; ")),
                fault.impact.unavailable_ms as f64 / 1000.0,
                fault.impact.longest_reconnect_ms as f64 / 1000.0,
                escape(fault.struck.leader_before.as_deref().unwrap_or("?")),
                escape(fault.struck.leader_after.as_deref().unwrap_or("?")),
                meta_leaders(&fault.struck).map_or_else(String::new, |m| format!(" (meta leader {})", escape(&m))),
                fault.struck.timeline_before.map_or("?".to_owned(), |t| t.to_string()),
                fault.struck.timeline_after.map_or("?".to_owned(), |t| t.to_string()),
            );
        }
        html.push_str("</table>");
        if !run.slowest_deliveries.is_empty() {
            html.push_str("<table><tr><th>slowest deliveries</th><th>took s</th><th>seq</th><th>due at s</th><th>due at (UTC)</th><th>after fault</th><th>sent via gateway</th><th>delivered by gateway</th></tr>");
            for d in &run.slowest_deliveries {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    if d.replayed { "replayed" } else { "live" },
                    d.took_ms as f64 / 1000.0,
                    d.seq,
                    d.due_s,
                    wall_clock(d.due_unix_ms),
                    escape(d.during.as_deref().unwrap_or("-")),
                    d.sent_via.map_or("?".to_owned(), |g| g.to_string()),
                    d.delivered_by
                );
            }
            html.push_str("</table>");
        }
    }
    html.push_str("</body></html>");
    std::fs::write(path, html).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// `before → after` of the JetStream meta leader, for the faults that record it.
fn meta_leaders(struck: &Struck) -> Option<String> {
    let before = struck.meta_leader_before.as_deref()?;
    Some(format!("{before} → {}", struck.meta_leader_after.as_deref().unwrap_or("?")))
}
