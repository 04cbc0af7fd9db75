//! What a run measured: each process's [`Part`] and progress [`Tick`]s, and the [`Report`]
//! merged from them (its JSON form, the printed summary, and the timeline and histograms the
//! HDR log and HTML report draw). Checking it against thresholds (`gate`) is [`Report::gate`]; the thresholds are [`super::gate`].

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::gate::{Gate, GateResult};
use super::series::{from_buckets, Buckets, PerSeries, Series};
use crate::checker::Verdict;
use crate::latency_histogram;
use crate::scenario::Scenario;
use crate::usage::{ComponentUsage, Used};

/// One latency's figures, in milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// Everything a run measured; written as the JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub started_unix_ms: u64,
    pub wall_seconds: f64,
    pub users: usize,
    /// Processes that played the users (1 without `--agents`).
    pub agents: usize,
    #[serde(flatten)]
    pub totals: Totals,
    pub latency: BTreeMap<String, Latency>,
    pub checker: Verdict,
    pub errors: BTreeMap<String, u64>,
    /// CPU and memory by component (gateways, nats-server, postgres, bridge, loadgen).
    pub usage: BTreeMap<String, ComponentUsage>,
    /// Gateways' resident memory growth over the run per connection at the peak.
    pub gateway_bytes_per_connection: f64,
    /// Peak resident memory of the processes that played the users.
    pub loadgen_rss_kib: u64,
    /// Their growth over the run per simulated user.
    pub loadgen_bytes_per_user: f64,
    pub gate: Option<GateResult>,
    /// Why the run itself failed (an agent died): the report covers what the rest did. Any
    /// entry fails the run, gate or no gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// Length of the ramp; `steady_latency` counts only intervals that began after it.
    pub ramp_seconds: f64,
    /// Latencies once every user had connected (empty if no interval began after the ramp).
    pub steady_latency: BTreeMap<String, Latency>,
    /// Progress intervals merged over every process.
    pub timeline: Vec<TimelinePoint>,
    /// The whole run's histogram of every series (for the HDR log and plots).
    #[serde(skip)]
    pub histograms: PerSeries<Histogram<u64>>,
    /// Every progress interval with its histograms.
    #[serde(skip)]
    pub intervals: Vec<Interval>,
}

/// One progress interval of the whole run: (start s, end s, the histogram of every series).
pub type Interval = (f64, f64, PerSeries<Histogram<u64>>);

/// One progress interval of the whole run.
#[derive(Clone, Debug, Serialize)]
pub struct TimelinePoint {
    /// End of the interval, seconds since the ramp began.
    pub at_s: f64,
    pub connected: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub reconnects_per_s: f64,
    pub failures: u64,
    /// Per metric with samples in the interval.
    pub p50_ms: BTreeMap<String, f64>,
    pub p99_ms: BTreeMap<String, f64>,
}

/// Counters of one process, summed over processes.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    pub connected_peak: u64,
    pub sent: u64,
    pub acked: u64,
    pub requests: u64,
    pub failures: u64,
    pub reconnects: u64,
    pub history_required: u64,
}

impl Totals {
    fn add(&mut self, other: &Self) {
        self.connected_peak += other.connected_peak;
        self.sent += other.sent;
        self.acked += other.acked;
        self.requests += other.requests;
        self.failures += other.failures;
        self.reconnects += other.reconnects;
        self.history_required += other.history_required;
    }
}

/// What one process measured (an agent's file, or the single process's result).
#[derive(Debug, Serialize, Deserialize)]
pub struct Part {
    pub users: usize,
    pub totals: Totals,
    /// Every series' buckets over the whole run.
    pub histograms: PerSeries<Buckets>,
    pub errors: BTreeMap<String, u64>,
    pub rss_peak_kib: u64,
    pub rss_growth_kib: u64,
    pub verdict: Verdict,
    /// One entry per progress interval, aligned to the shared start.
    pub timeline: Vec<Tick>,
}

/// One progress interval of one process: counters so far and the interval's latencies.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tick {
    /// End of the interval, seconds since the ramp began.
    pub at_s: f64,
    pub connected: u64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub failures: u64,
    pub reconnects: u64,
    /// Every series' buckets recorded in this interval.
    pub histograms: PerSeries<Buckets>,
}

/// Merges the processes' ticks interval by interval (they share the start and the period):
/// the timeline and each interval's histograms.
fn merge_timelines(parts: &[Part]) -> (Vec<TimelinePoint>, Vec<Interval>) {
    let len = parts.iter().map(|p| p.timeline.len()).max().unwrap_or(0);
    let mut timeline = Vec::with_capacity(len);
    let mut intervals = Vec::with_capacity(len);
    let mut previous = Tick::default();
    for i in 0..len {
        let ticks: Vec<&Tick> = parts.iter().filter_map(|p| p.timeline.get(i)).collect();
        let sum = |f: fn(&Tick) -> u64| ticks.iter().map(|t| f(t)).sum::<u64>();
        let at_s = ticks.iter().map(|t| t.at_s).fold(0.0, f64::max);
        let merged = Tick {
            at_s,
            connected: sum(|t| t.connected),
            sent: sum(|t| t.sent),
            acked: sum(|t| t.acked),
            delivered: sum(|t| t.delivered),
            failures: sum(|t| t.failures),
            reconnects: sum(|t| t.reconnects),
            histograms: PerSeries::default(),
        };
        let seconds = (at_s - previous.at_s).max(1e-3);
        let per_s = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
        let histograms =
            PerSeries::from_fn(|series| from_buckets(ticks.iter().map(|t| &t.histograms[series])));
        let quantile = |q: f64| -> BTreeMap<String, f64> {
            histograms
                .iter()
                .filter(|(_, h)| !h.is_empty())
                .map(|(series, h)| (series.name().to_string(), h.value_at_quantile(q) as f64 / 1000.0))
                .collect()
        };
        timeline.push(TimelinePoint {
            at_s,
            connected: merged.connected,
            sent_per_s: per_s(merged.sent, previous.sent),
            delivered_per_s: per_s(merged.delivered, previous.delivered),
            reconnects_per_s: per_s(merged.reconnects, previous.reconnects),
            failures: merged.failures,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
        });
        intervals.push((previous.at_s, at_s, histograms));
        previous = merged;
    }
    (timeline, intervals)
}

impl Report {
    /// Merges the parts of every process into one report.
    pub fn assemble(scenario: Scenario, started_unix_ms: u64, parts: Vec<Part>, used: Used) -> Self {
        let mut totals = Totals::default();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut checker = Verdict::default();
        let (mut rss_peak, mut rss_growth, mut users) = (0, 0, 0);
        for part in &parts {
            totals.add(&part.totals);
            for (k, v) in &part.errors {
                *errors.entry(k.clone()).or_default() += v;
            }
            checker.merge(&part.verdict);
            rss_peak += part.rss_peak_kib;
            rss_growth += part.rss_growth_kib;
            users += part.users;
        }
        let histograms =
            PerSeries::from_fn(|series| from_buckets(parts.iter().map(|p| &p.histograms[series])));
        let (timeline, intervals) = merge_timelines(&parts);
        if let Some(peak) = timeline.iter().map(|t| t.connected).max() {
            // Agents peak at different moments: the sum of their peaks overstates it.
            totals.connected_peak =
                peak.max(parts.iter().map(|p| p.totals.connected_peak).max().unwrap_or(0));
        }
        let ramp_seconds = scenario.ramp().as_secs_f64();
        let steady_latency = {
            let period = intervals.first().map_or(0.0, |(start, end, _)| end - start);
            let steady: Vec<&PerSeries<Histogram<u64>>> = intervals
                .iter()
                .filter(|(start, _, _)| *start >= ramp_seconds - 0.01 * period)
                .map(|i| &i.2)
                .collect();
            if steady.is_empty() {
                BTreeMap::new()
            } else {
                Series::ALL
                    .into_iter()
                    .map(|series| {
                        let mut h = latency_histogram();
                        for set in &steady {
                            let _ = h.add(&set[series]);
                        }
                        (series.name().to_string(), Latency::of(&h))
                    })
                    .collect()
            }
        };
        Self {
            started_unix_ms,
            wall_seconds: used.wall_seconds,
            users,
            agents: parts.len(),
            totals,
            latency: histograms
                .iter()
                .map(|(series, h)| (series.name().to_string(), Latency::of(h)))
                .collect(),
            checker,
            errors,
            gateway_bytes_per_connection: used.components.get("gateways").map_or(0.0, |g| {
                g.rss_peak_kib.saturating_sub(g.rss_start_kib) as f64 * 1024.0
                    / totals.connected_peak.max(1) as f64
            }),
            usage: used.components,
            loadgen_rss_kib: rss_peak,
            loadgen_bytes_per_user: rss_growth as f64 * 1024.0 / users.max(1) as f64,
            gate: None,
            failures: Vec::new(),
            scenario,
            ramp_seconds,
            steady_latency,
            timeline,
            histograms,
            intervals,
        }
    }

    pub fn print(&self) {
        println!(
            "\n{}: {} users (peak {} connected), {:.0} s; sent {} acked {}; {} reconnects; {} failures of {} requests",
            self.scenario.name,
            self.users,
            self.totals.connected_peak,
            self.wall_seconds,
            self.totals.sent,
            self.totals.acked,
            self.totals.reconnects,
            self.totals.failures,
            self.totals.requests
        );
        let table = |latency: &BTreeMap<String, Latency>| {
            for (name, l) in latency {
                if l.count == 0 {
                    println!("  {name:<18} no samples");
                } else {
                    println!(
                        "  {name:<18} n={:<8} p50={:>8.2} p90={:>8.2} p99={:>8.2} p999={:>8.2} max={:>8.2} ms",
                        l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
                    );
                }
            }
        };
        println!("  whole run (ramp included; the gate judges these):");
        table(&self.latency);
        if !self.steady_latency.is_empty() {
            println!("  after the {:.0} s ramp, every user connected:", self.ramp_seconds);
            table(&self.steady_latency);
        }
        let c = &self.checker;
        println!(
            "  checker: {} of {} owed deliveries; lost {}, duplicated {}, out of order {}, unexpected {}",
            c.delivered, c.expected, c.lost, c.duplicated, c.out_of_order, c.unexpected
        );
        if !self.errors.is_empty() {
            println!("  errors and closes: {:?}", self.errors);
        }
        for (name, u) in &self.usage {
            println!(
                "  {name:<12} CPU {:>7.1} s ({:.2} cores), RSS {} → peak {} KiB",
                u.cpu_seconds, u.cores, u.rss_start_kib, u.rss_peak_kib
            );
        }
        println!(
            "  memory: gateways {:.0} bytes per connection; loadgen {:.0} bytes per simulated user (peak RSS of its players {} KiB)",
            self.gateway_bytes_per_connection, self.loadgen_bytes_per_user, self.loadgen_rss_kib
        );
        if let Some(gate) = &self.gate {
            if gate.passed {
                println!("  gate: passed");
            } else {
                for failure in &gate.failures {
                    println!("  gate FAILED: {failure}");
                }
            }
        }
    }
}

impl Report {
    /// Checks the thresholds; records and returns the result.
    pub fn gate(&mut self, gate: &Gate) -> &GateResult {
        let mut failures = self.failures.clone();
        let p99 = |name: &str| self.latency.get(name).map_or(0.0, |l| l.p99_ms);
        let mut ceilings = vec![
            (Series::SendDeliver.name(), "delivery", gate.max_delivery_p99),
            (Series::Presence.name(), "presence", gate.max_presence_p99),
        ];
        ceilings.extend(gate.max_p99.iter().map(|(metric, max)| (metric.as_str(), metric.as_str(), *max)));
        for (metric, label, max) in ceilings {
            let value = p99(metric);
            if value > max.as_secs_f64() * 1000.0 {
                failures
                    .push(format!("{label} p99 {value:.1} ms is over {}", humantime::format_duration(max)));
            }
        }
        let c = &self.checker;
        if c.lost > 0 {
            failures.push(format!("{} deliveries lost (e.g. user#, seq: {:?})", c.lost, c.lost_examples));
        }
        if c.duplicated > 0 {
            failures.push(format!(
                "{} deliveries duplicated (e.g. seq, connection of each copy: {:?})",
                c.duplicated, c.duplicate_examples
            ));
        }
        if c.out_of_order > 0 {
            failures.push(format!("{} deliveries out of order", c.out_of_order));
        }
        if c.unexpected > 0 {
            failures.push(format!("{} deliveries to non-members", c.unexpected));
        }
        if c.expected == 0 {
            failures.push("no deliveries were expected: the run measured nothing".into());
        }
        let rate = self.totals.failures as f64 / self.totals.requests.max(1) as f64;
        if rate > gate.max_error_rate {
            failures.push(format!(
                "error rate {:.3} % is over {:.3} % ({} of {} requests; {:?})",
                rate * 100.0,
                gate.max_error_rate * 100.0,
                self.totals.failures,
                self.totals.requests,
                self.errors
            ));
        }
        self.gate = Some(GateResult { thresholds: gate.clone(), passed: failures.is_empty(), failures });
        self.gate.as_ref().expect("just set")
    }
}
