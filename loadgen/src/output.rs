//! Files a run leaves besides its JSON report: an HdrHistogram interval log (`.hlog`, readable
//! by HdrHistogram's `HistogramLogProcessor` and HistogramLogAnalyzer) and an HTML report with
//! latency-by-percentile and time-series plots; for `capacity`, an HTML page with the knee.
//! Plots are SVG drawn by `plotters` and inlined, so the page is one self-contained file.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::capacity::CapacityReport;
use crate::run::{Report, Series};

/// Writes every metric's interval histograms (tagged with the metric's name, values in µs) as
/// an HdrHistogram interval log.
pub fn write_hdr_log(report: &Report, path: &Path) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let start = UNIX_EPOCH + Duration::from_millis(report.started_unix_ms);
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "loadgen run `{}`: {} users, seed {}; one histogram per metric and interval, values in microseconds",
                report.scenario.name, report.users, report.scenario.seed
            ))
            .add_comment(&format!("metrics (tags): {}", Series::names().join(", ")))
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut serializer)?;
        for (from, to, histograms) in &report.intervals {
            for (series, h) in histograms.iter() {
                if h.is_empty() {
                    continue;
                }
                let name = series.name();
                log.write_histogram(
                    h,
                    Duration::from_secs_f64(from.max(0.0)),
                    Duration::from_secs_f64((to - from).max(0.0)),
                    Tag::new(name),
                )
                .map_err(|e| anyhow::anyhow!("cannot encode the {name} histogram: {e}"))?;
            }
        }
    }
    std::fs::write(path, out)
        .map_err(|e| anyhow::anyhow!("cannot write the HDR log to {}: {e}", path.display()))
}

/// Series drawn, with their colours.
const DRAWN: [(Series, RGBColor); 8] = [
    (Series::SendDeliver, RGBColor(31, 119, 180)),
    (Series::SendAck, RGBColor(255, 127, 14)),
    (Series::Presence, RGBColor(44, 160, 44)),
    (Series::Typing, RGBColor(214, 39, 40)),
    (Series::ReadAck, RGBColor(148, 103, 189)),
    (Series::HistoryPage, RGBColor(140, 86, 75)),
    (Series::ReconnectResumed, RGBColor(227, 119, 194)),
    (Series::HelloWelcome, RGBColor(127, 127, 127)),
];

type Draw<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// A plotted line: its legend, colour and points.
pub(crate) type Line = (String, RGBColor, Vec<(f64, f64)>);

/// A vertical line at x, labelled at its top (the end of the ramp, a fault, a recovery).
pub(crate) type Marker = (f64, String, RGBColor);

/// The marker at the end of the ramp. Purple, so it does not vanish into a grid line at a
/// round number.
fn ramp_marker(at: f64) -> Marker {
    (at, "end of ramp".into(), RGBColor(148, 103, 189))
}

/// A chart over seconds, percentiles or rates (x) and a linear or log y axis.
type Chart<'a, Y> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>;

/// A chart builder with the captions, margins and label areas every plot here shares.
fn chart_builder<'a, 'b>(area: &'a Draw<'b>, caption: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder.caption(caption, ("sans-serif", 18)).margin(12).x_label_area_size(36).y_label_area_size(64);
    builder
}

/// Draws one line with its legend entry.
fn line<Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'_, Y>,
    points: impl IntoIterator<Item = (f64, f64)>,
    style: ShapeStyle,
    label: &str,
) -> anyhow::Result<()> {
    chart
        .draw_series(LineSeries::new(points, style))
        .map_err(plot_error)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
    Ok(())
}

/// The legend box, top left.
fn legend<Y: Ranged<ValueType = f64>>(chart: &mut Chart<'_, Y>) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_error)
}

fn svg(width: u32, height: u32, draw: impl FnOnce(&Draw) -> anyhow::Result<()>) -> anyhow::Result<String> {
    let mut text = String::new();
    {
        let area = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
        area.fill(&WHITE).map_err(plot_error)?;
        draw(&area)?;
        area.present().map_err(plot_error)?;
    }
    Ok(text)
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("cannot draw the plot: {e}")
}

/// Latency by percentile, HdrHistogram style: x is `-log10(1 - q)` (0 = p0, 2 = p99, 3 = p99.9).
fn percentile_plot(histograms: &[(&str, RGBColor, &Histogram<u64>)], slo_ms: f64) -> anyhow::Result<String> {
    let series: Vec<Line> = histograms
        .iter()
        .filter(|(_, _, h)| !h.is_empty())
        .map(|(name, colour, h)| {
            let points = (0..=50)
                .map(|k| k as f64 / 10.0)
                .filter(|x| 10f64.powf(*x) <= h.len() as f64 * 10.0)
                .map(|x| (x, (h.value_at_quantile(1.0 - 10f64.powf(-x)) as f64 / 1000.0).max(0.001)))
                .collect();
            (name.to_string(), *colour, points)
        })
        .collect();
    let max_x = series.iter().flat_map(|s| s.2.iter().map(|p| p.0)).fold(2.0, f64::max);
    let (lo, hi) = bounds(series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).chain([slo_ms]));
    svg(900, 420, |area| {
        let mut chart = chart_builder(area, "Latency by percentile (whole run)")
            .build_cartesian_2d(0f64..max_x, (lo..hi).log_scale())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_labels(max_x as usize + 1)
            .x_label_formatter(&|x| percentile_label(*x))
            .y_desc("ms (log)")
            .x_desc("percentile")
            .draw()
            .map_err(plot_error)?;
        for (name, colour, points) in &series {
            line(&mut chart, points.iter().copied(), colour.stroke_width(2), name)?;
        }
        let slo = format!("delivery SLO {slo_ms} ms");
        line(&mut chart, [(0.0, slo_ms), (max_x, slo_ms)], BLACK.stroke_width(1), &slo)?;
        legend(&mut chart)
    })
}

fn percentile_label(x: f64) -> String {
    match x.round() as i64 {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        3 => "99.9%".into(),
        4 => "99.99%".into(),
        5 => "99.999%".into(),
        _ => String::new(),
    }
}

/// Log-scale bounds around positive values.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.filter(|v| *v > 0.0).fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        (0.1, 10.0)
    } else {
        (lo / 2.0, hi * 2.0)
    }
}

/// Several series over run time.
pub(crate) fn time_plot(
    caption: &str,
    y_desc: &str,
    log: bool,
    series: &[Line],
    markers: &[Marker],
) -> anyhow::Result<String> {
    let max_x = series.iter().flat_map(|s| s.2.iter().map(|p| p.0)).fold(1.0, f64::max);
    let values = || series.iter().flat_map(|s| s.2.iter().map(|p| p.1));
    svg(900, 320, |area| {
        let mut builder = chart_builder(area, caption);
        if log {
            let (lo, hi) = bounds(values());
            let chart = builder.build_cartesian_2d(0f64..max_x, (lo..hi).log_scale()).map_err(plot_error)?;
            draw_time(chart, y_desc, series, markers, (lo, hi))
        } else {
            let hi = values().fold(1.0, f64::max) * 1.1;
            let chart = builder.build_cartesian_2d(0f64..max_x, 0f64..hi).map_err(plot_error)?;
            draw_time(chart, y_desc, series, markers, (0.0, hi))
        }
    })
}

/// The mesh, lines, markers and legend of a [`time_plot`]; `(low, high)` spans the markers.
fn draw_time<Y>(
    mut chart: Chart<'_, Y>,
    y_desc: &str,
    series: &[Line],
    markers: &[Marker],
    (low, high): (f64, f64),
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("seconds since the ramp began")
        .y_desc(y_desc)
        .draw()
        .map_err(plot_error)?;
    for (name, colour, points) in series {
        line(&mut chart, points.iter().copied(), colour.stroke_width(2), name)?;
    }
    for (at, label, colour) in markers {
        chart
            .draw_series(LineSeries::new([(*at, low), (*at, high)], colour.stroke_width(2)))
            .map_err(plot_error)?;
        let text = Text::new(label.clone(), (*at, high), ("sans-serif", 12).into_font().color(colour));
        chart.draw_series(std::iter::once(text)).map_err(plot_error)?;
    }
    legend(&mut chart)
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub(crate) const STYLE: &str = "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.pass{color:#2a2}.fail{color:#c22}";

/// The HTML report of a run.
pub fn write_html(report: &Report, path: &Path) -> anyhow::Result<()> {
    let mut html = String::new();
    let s = &report.scenario;
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadgen {name}</title><style>{STYLE}</style></head><body>\
         <h1>loadgen run: {name}</h1><p>{users} users (peak {peak} connected) over {agents} process(es); ramp {ramp:.0} s, \
         then {duration:?} at {rate:.1} msg/s (load factor {lf}, seed {seed}); wall time {wall:.0} s.</p>",
        name = escape(&s.name),
        users = report.users,
        peak = report.totals.connected_peak,
        agents = report.agents,
        ramp = report.ramp_seconds,
        duration = s.duration,
        rate = s.message_rate(),
        lf = s.load_factor,
        seed = s.seed,
        wall = report.wall_seconds,
    );
    if let Some(gate) = &report.gate {
        if gate.passed {
            html.push_str("<p class=\"pass\"><b>Gate passed.</b></p>");
        } else {
            html.push_str("<p class=\"fail\"><b>Gate failed:</b></p><ul>");
            for failure in &gate.failures {
                let _ = write!(html, "<li class=\"fail\">{}</li>", escape(failure));
            }
            html.push_str("</ul>");
        }
    }
    let c = &report.checker;
    let _ = write!(
        html,
        "<h2>Deliveries</h2><p>Checker: {} of {} owed deliveries; lost {}, duplicated {}, out of order {}, unexpected {}. \
         Sent {}, acknowledged {}; {} reconnects; {} failures of {} requests.</p>",
        c.delivered,
        c.expected,
        c.lost,
        c.duplicated,
        c.out_of_order,
        c.unexpected,
        report.totals.sent,
        report.totals.acked,
        report.totals.reconnects,
        report.totals.failures,
        report.totals.requests
    );
    let latency_table =
        |html: &mut String,
         title: &str,
         latency: &std::collections::BTreeMap<String, crate::run::Latency>| {
            let _ = write!(html, "<h2>{title}</h2><table><tr><th>metric</th><th>n</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>");
            for (name, l) in latency {
                let _ = write!(
                html,
                "<tr><td>{name}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
                l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
            }
            html.push_str("</table>");
        };
    latency_table(&mut html, "Latency, whole run (ramp included; the gate judges these)", &report.latency);
    if !report.steady_latency.is_empty() {
        latency_table(
            &mut html,
            &format!("Latency after the {:.0} s ramp", report.ramp_seconds),
            &report.steady_latency,
        );
    }
    let drawn: Vec<(&str, RGBColor, &Histogram<u64>)> =
        DRAWN.iter().map(|&(series, colour)| (series.name(), colour, &report.histograms[series])).collect();
    let slo = report.gate.as_ref().map_or(500.0, |g| g.thresholds.max_delivery_p99.as_secs_f64() * 1000.0);
    html.push_str(&percentile_plot(&drawn, slo)?);
    let ramp_marker = &[ramp_marker(report.ramp_seconds)];
    let t = &report.timeline;
    let points = |f: &dyn Fn(&crate::run::TimelinePoint) -> Option<f64>| -> Vec<(f64, f64)> {
        t.iter().filter_map(|p| f(p).map(|v| (p.at_s, v))).collect()
    };
    html.push_str(&time_plot(
        "Connected users",
        "connections",
        false,
        &[("connected".into(), RGBColor(31, 119, 180), points(&|p| Some(p.connected as f64)))],
        ramp_marker,
    )?);
    html.push_str(&time_plot(
        "Throughput",
        "per second",
        false,
        &[
            ("messages sent/s".into(), RGBColor(255, 127, 14), points(&|p| Some(p.sent_per_s))),
            ("deliveries/s".into(), RGBColor(44, 160, 44), points(&|p| Some(p.delivered_per_s))),
            ("reconnects/s".into(), RGBColor(214, 39, 40), points(&|p| Some(p.reconnects_per_s))),
        ],
        ramp_marker,
    )?);
    let p99_series: Vec<Line> = DRAWN
        .iter()
        .take(4)
        .map(|&(series, colour)| {
            let name = series.name();
            (format!("{name} p99"), colour, points(&|p| p.p99_ms.get(name).copied()))
        })
        .filter(|s| !s.2.is_empty())
        .collect();
    html.push_str(&time_plot("p99 per interval", "ms (log)", true, &p99_series, ramp_marker)?);
    html.push_str("<h2>Resources</h2><table><tr><th>component</th><th>CPU s</th><th>cores</th><th>memory at start KiB</th><th>peak KiB</th></tr>");
    for (name, u) in &report.usage {
        let _ = write!(
            html,
            "<tr><td>{name}</td><td>{:.1}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
            u.cpu_seconds, u.cores, u.rss_start_kib, u.rss_peak_kib
        );
    }
    let _ = write!(
        html,
        "</table><p>Gateways: {:.0} bytes per connection. loadgen: {:.0} bytes per simulated user.</p>",
        report.gateway_bytes_per_connection, report.loadgen_bytes_per_user
    );
    if !report.errors.is_empty() {
        html.push_str("<h2>Errors and close codes</h2><table><tr><th>what</th><th>count</th></tr>");
        for (what, n) in &report.errors {
            let _ = write!(html, "<tr><td>{}</td><td>{n}</td></tr>", escape(what));
        }
        html.push_str("</table>");
    }
    html.push_str("</body></html>\n");
    std::fs::write(path, html)
        .map_err(|e| anyhow::anyhow!("cannot write the HTML report to {}: {e}", path.display()))
}

/// The HTML page of a capacity search: delivery p99 against the message rate, the SLO line and
/// the knee (the highest passing rate).
pub fn write_capacity_html(report: &CapacityReport, slo_ms: f64, path: &Path) -> anyhow::Result<()> {
    let mut steps = report.steps.clone();
    steps.sort_by(|a, b| a.messages_per_second.total_cmp(&b.messages_per_second));
    let max_x = steps.iter().map(|s| s.messages_per_second).fold(1.0, f64::max) * 1.1;
    let (lo, hi) = bounds(steps.iter().flat_map(|s| [s.delivery_p99_ms, s.delivery_p50_ms]).chain([slo_ms]));
    let plot = svg(900, 420, |area| {
        let mut chart = chart_builder(area, "Capacity search: delivery latency against message rate")
            .build_cartesian_2d(0f64..max_x, (lo..hi).log_scale())
            .map_err(plot_error)?;
        chart.configure_mesh().x_desc("messages per second").y_desc("ms (log)").draw().map_err(plot_error)?;
        let p99 = steps.iter().map(|s| (s.messages_per_second, s.delivery_p99_ms));
        line(&mut chart, p99, RGBColor(31, 119, 180).stroke_width(2), "delivery p99")?;
        let p50 = steps.iter().map(|s| (s.messages_per_second, s.delivery_p50_ms));
        line(&mut chart, p50, RGBColor(127, 127, 127).stroke_width(1), "delivery p50")?;
        chart
            .draw_series(steps.iter().map(|s| {
                let colour = if s.passed { GREEN } else { RED };
                Circle::new((s.messages_per_second, s.delivery_p99_ms), 5, colour.filled())
            }))
            .map_err(plot_error)?;
        line(
            &mut chart,
            [(0.0, slo_ms), (max_x, slo_ms)],
            BLACK.stroke_width(1),
            &format!("SLO {slo_ms} ms"),
        )?;
        if let Some(knee) = report.sustainable_messages_per_second {
            let label = format!("highest sustainable: {knee:.0} msg/s");
            line(&mut chart, [(knee, lo), (knee, hi)], GREEN.stroke_width(2), &label)?;
        }
        legend(&mut chart)
    })?;
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadgen capacity</title><style>{STYLE}</style></head><body>\
         <h1>loadgen capacity search</h1><p>{}</p>{plot}<table><tr><th>msg/s</th><th>load factor</th><th>delivery p50 ms</th>\
         <th>delivery p99 ms</th><th>presence p99 ms</th><th>lost</th><th>result</th></tr>",
        match (report.sustainable_messages_per_second, report.breaking_messages_per_second) {
            (Some(ok), Some(broken)) => format!("Highest sustainable rate: <b>{ok:.0} msg/s</b> (breaks at {broken:.0} msg/s)."),
            (Some(ok), None) => format!("Every step passed, up to {ok:.0} msg/s."),
            (None, _) => "Even the first step failed.".to_owned(),
        }
    );
    for s in &steps {
        let _ = write!(
            html,
            "<tr><td>{:.0}</td><td>{:.2}</td><td>{:.1}</td><td>{:.1}</td><td>{:.0}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            s.messages_per_second,
            s.load_factor,
            s.delivery_p50_ms,
            s.delivery_p99_ms,
            s.presence_p99_ms,
            s.lost,
            if s.passed { "pass" } else { "fail" },
            if s.passed { "pass".to_owned() } else { escape(&s.failures.join("; ")) }
        );
    }
    html.push_str("</table></body></html>\n");
    std::fs::write(path, html)
        .map_err(|e| anyhow::anyhow!("cannot write the HTML page to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    use super::*;
    use crate::run::{Part, PerSeries, Tick, Totals};
    use crate::scenario::Scenario;

    /// Two agents' parts over two 5 s intervals: deliveries of 10 ms and 30 ms.
    fn report() -> Report {
        let tick = |at_s: f64, delivered: u64, micros: u64| Tick {
            at_s,
            connected: 10,
            sent: delivered,
            acked: delivered,
            delivered,
            failures: 0,
            reconnects: 0,
            histograms: PerSeries::from_fn(|series| {
                if series == Series::SendDeliver {
                    vec![(micros, 5)]
                } else {
                    vec![]
                }
            }),
        };
        let part = || Part {
            users: 10,
            totals: Totals { connected_peak: 10, sent: 10, acked: 10, requests: 10, ..Totals::default() },
            histograms: PerSeries::from_fn(|series| {
                if series == Series::SendDeliver {
                    vec![(10_000, 5), (30_000, 5)]
                } else {
                    vec![]
                }
            }),
            errors: Default::default(),
            rss_peak_kib: 1,
            rss_growth_kib: 1,
            verdict: crate::checker::Verdict { expected: 10, delivered: 10, ..Default::default() },
            timeline: vec![tick(5.0, 5, 10_000), tick(10.0, 10, 30_000)],
        };
        let scenario = Scenario { users: 20, ramp_up: Duration::from_secs(5), ..Scenario::default() };
        let mut report =
            Report::assemble(scenario, 1_700_000_000_000, vec![part(), part()], Default::default());
        report.gate(&crate::run::Gate::default());
        report
    }

    #[test]
    fn the_timeline_merges_agents_interval_by_interval() {
        let report = report();
        assert_eq!(report.totals.connected_peak, 20, "concurrent peak, not a sum of peaks");
        assert_eq!(report.timeline.len(), 2);
        assert_eq!(report.timeline[1].connected, 20);
        assert!((report.timeline[1].delivered_per_s - 2.0).abs() < 1e-9, "{:?}", report.timeline[1]);
        // The second interval began at the end of the 5 s ramp: only its 30 ms samples are steady.
        let steady = &report.steady_latency[Series::SendDeliver.name()];
        assert_eq!(steady.count, 10);
        assert!((29.0..31.0).contains(&steady.p50_ms), "{steady:?}");
        assert_eq!(report.latency[Series::SendDeliver.name()].count, 20);
    }

    #[test]
    fn the_hdr_log_reads_back_as_tagged_interval_histograms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run.hlog");
        write_hdr_log(&report(), &path).expect("writes");
        let bytes = std::fs::read(&path).expect("read");
        let mut deserializer = Deserializer::new();
        let mut total = 0;
        let mut intervals = 0;
        for entry in IntervalLogIterator::new(&bytes) {
            if let Ok(LogEntry::Interval(interval)) = entry {
                assert_eq!(interval.tag().map(|t| t.as_str()), Some("send_deliver"));
                let encoded = base64_decode(interval.encoded_histogram());
                let h: Histogram<u64> = deserializer.deserialize(&mut encoded.as_slice()).expect("decodes");
                total += h.len();
                intervals += 1;
            }
        }
        assert_eq!((intervals, total), (2, 20));
    }

    fn base64_decode(text: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
    }

    #[test]
    fn the_html_report_has_its_plots_and_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run.html");
        write_html(&report(), &path).expect("writes");
        let html = std::fs::read_to_string(&path).expect("read");
        assert_eq!(html.matches("<svg").count(), 4, "percentiles, connected, throughput, p99 over time");
        for expected in ["Gate passed", "send_deliver", "Latency after the 5 s ramp", "lost 0"] {
            assert!(html.contains(expected), "missing {expected}");
        }
    }

    #[test]
    fn the_capacity_page_plots_the_knee() {
        let step = |rate: f64, p99: f64, passed: bool| crate::capacity::Step {
            load_factor: rate / 10.0,
            messages_per_second: rate,
            delivery_p50_ms: p99 / 4.0,
            delivery_p99_ms: p99,
            presence_p99_ms: 300.0,
            lost: 0,
            passed,
            failures: if passed { vec![] } else { vec!["delivery p99 900.0 ms is over 500ms".into()] },
        };
        let report = CapacityReport {
            steps: vec![step(100.0, 20.0, true), step(160.0, 60.0, true), step(256.0, 900.0, false)],
            sustainable_messages_per_second: Some(160.0),
            breaking_messages_per_second: Some(256.0),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("capacity.html");
        write_capacity_html(&report, 500.0, &path).expect("writes");
        let html = std::fs::read_to_string(&path).expect("read");
        assert!(html.contains("<svg") && html.contains("highest sustainable: 160 msg/s"), "{html}");
        assert!(html.contains("delivery p99 900.0 ms is over 500ms"));
    }
}
