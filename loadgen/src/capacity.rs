//! `loadgen capacity`: raises the message rate of a scenario step by step on one stack until a
//! gate breaks, then bisects between the last passing and the first failing rate, and reports
//! the highest sustainable rate (the knee) with every step's figures.

use serde::Serialize;

use crate::run::{self, Gate, RunOptions, Series, Site};

/// One step of the search.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub load_factor: f64,
    pub messages_per_second: f64,
    pub delivery_p50_ms: f64,
    pub delivery_p99_ms: f64,
    pub presence_p99_ms: f64,
    pub lost: u64,
    pub passed: bool,
    pub failures: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CapacityReport {
    pub steps: Vec<Step>,
    /// The highest rate that passed, if any.
    pub sustainable_messages_per_second: Option<f64>,
    /// The lowest rate that failed, if any.
    pub breaking_messages_per_second: Option<f64>,
}

/// Searches from the scenario's own `load_factor`, multiplying by `growth` until a step fails
/// (at most `max_steps`), then `refine` bisection steps.
pub async fn search(
    site: &Site,
    options: &RunOptions,
    gate: &Gate,
    growth: f64,
    max_steps: usize,
    refine: usize,
) -> anyhow::Result<CapacityReport> {
    anyhow::ensure!(growth > 1.0, "--growth must be above 1");
    let mut steps = Vec::new();
    let mut factor = options.scenario.load_factor;
    let (mut pass, mut fail): (Option<f64>, Option<f64>) = (None, None);
    for n in 0..max_steps {
        let step = measure(site, options, gate, factor, n as u64).await?;
        let passed = step.passed;
        steps.push(step);
        if passed {
            pass = Some(factor);
            factor *= growth;
        } else {
            fail = Some(factor);
            break;
        }
    }
    if let (Some(low), Some(high)) = (pass, fail) {
        let (mut low, mut high) = (low, high);
        for n in 0..refine {
            let mid = (low + high) / 2.0;
            let step = measure(site, options, gate, mid, (max_steps + n) as u64).await?;
            if step.passed {
                low = mid;
            } else {
                high = mid;
            }
            steps.push(step);
        }
        pass = Some(low);
        fail = Some(high);
    }
    let rate = |f: f64| {
        let mut s = options.scenario.clone();
        s.load_factor = f;
        s.message_rate()
    };
    let report = CapacityReport {
        steps,
        sustainable_messages_per_second: pass.map(rate),
        breaking_messages_per_second: fail.map(rate),
    };
    report.print();
    Ok(report)
}

async fn measure(
    site: &Site,
    options: &RunOptions,
    gate: &Gate,
    factor: f64,
    n: u64,
) -> anyhow::Result<Step> {
    let mut step_options = options.clone();
    step_options.scenario.load_factor = factor;
    // A new seed per step: the same client_msg_ids within JetStream's dedup window would be
    // acknowledged as duplicates and deliver nothing.
    step_options.scenario.seed = options.scenario.seed.wrapping_add(1_000 * (n + 1));
    println!(
        "\n== capacity step {}: load factor {factor:.2} ({:.0} msg/s)",
        n + 1,
        step_options.scenario.message_rate()
    );
    let mut report = run::run(site, &step_options).await?;
    let result = report.gate(gate).clone();
    let latency =
        |series: Series, pick: fn(&run::Latency) -> f64| report.latency.get(series.name()).map_or(0.0, pick);
    let step = Step {
        load_factor: factor,
        messages_per_second: step_options.scenario.message_rate(),
        delivery_p50_ms: latency(Series::SendDeliver, |l| l.p50_ms),
        delivery_p99_ms: latency(Series::SendDeliver, |l| l.p99_ms),
        presence_p99_ms: latency(Series::Presence, |l| l.p99_ms),
        lost: report.checker.lost,
        passed: result.passed,
        failures: result.failures,
    };
    println!(
        "   → delivery p50 {:.1} ms p99 {:.1} ms, presence p99 {:.0} ms, lost {}: {}",
        step.delivery_p50_ms,
        step.delivery_p99_ms,
        step.presence_p99_ms,
        step.lost,
        if step.passed { "passed".to_owned() } else { format!("FAILED ({})", step.failures.join("; ")) }
    );
    Ok(step)
}

impl CapacityReport {
    pub fn print(&self) {
        println!("\n  msg/s     delivery p50   delivery p99   presence p99   result");
        let mut ordered = self.steps.clone();
        ordered.sort_by(|a, b| a.messages_per_second.total_cmp(&b.messages_per_second));
        let worst = ordered.iter().map(|s| s.delivery_p99_ms).fold(1.0, f64::max);
        for step in &ordered {
            // A bar of the p99: the knee shows where it turns up.
            let bar = "#".repeat(((step.delivery_p99_ms / worst) * 40.0).round() as usize);
            println!(
                "  {:>7.0}   {:>9.1} ms   {:>9.1} ms   {:>9.0} ms   {:<6} {bar}",
                step.messages_per_second,
                step.delivery_p50_ms,
                step.delivery_p99_ms,
                step.presence_p99_ms,
                if step.passed { "pass" } else { "FAIL" }
            );
        }
        match (self.sustainable_messages_per_second, self.breaking_messages_per_second) {
            (Some(ok), Some(broken)) => {
                println!("  highest sustainable rate: {ok:.0} msg/s (breaks at {broken:.0} msg/s)")
            }
            (Some(ok), None) => println!("  every step passed, up to {ok:.0} msg/s: raise --max-steps"),
            (None, _) => println!("  even the first step failed: lower the scenario's load_factor"),
        }
    }
}
