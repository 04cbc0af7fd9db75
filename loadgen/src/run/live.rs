//! The Prometheus endpoint of a running `loadgen run` (`--metrics-addr`): counters and the
//! latest interval's latency quantiles, updated at every progress tick. With `--agents N`,
//! agent *k* serves on the given port + *k* (as agents on several hosts would, each its own
//! scrape target); the `agent` label tells them apart.

use std::net::SocketAddr;
use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use metrics_exporter_prometheus::PrometheusBuilder;

use super::report::Tick;
use super::series::from_buckets;

static SERVING: OnceLock<SocketAddr> = OnceLock::new();

/// Serves `/metrics` on `addr` for the rest of the process (once; later calls with the same
/// address are no-ops, so capacity steps share it).
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    if let Some(serving) = SERVING.get() {
        anyhow::ensure!(*serving == addr, "metrics are already served on {serving}");
        return Ok(());
    }
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    describe_gauge!("loadgen_connected", "Simulated users connected now.");
    describe_counter!("loadgen_messages_sent_total", "Messages sent by simulated users.");
    describe_counter!("loadgen_messages_acked_total", "Messages acknowledged by the gateways.");
    describe_counter!("loadgen_deliveries_total", "Loadgen messages delivered to simulated users.");
    describe_counter!("loadgen_failures_total", "Failed requests (connects, hellos, sends, reads, history).");
    describe_counter!("loadgen_reconnects_total", "Reconnections (churn and closes).");
    describe_gauge!(
        "loadgen_latency_p50_seconds",
        Unit::Seconds,
        "Median latency over the last progress interval, by metric."
    );
    describe_gauge!(
        "loadgen_latency_p99_seconds",
        Unit::Seconds,
        "p99 latency over the last progress interval, by metric."
    );
    describe_gauge!(
        "loadgen_latency_max_seconds",
        Unit::Seconds,
        "Largest latency in the last progress interval, by metric."
    );
    let _ = SERVING.set(addr);
    Ok(())
}

/// Publishes one tick (a no-op unless [`serve`] was called).
pub fn publish(agent: &str, tick: &Tick) {
    if SERVING.get().is_none() {
        return;
    }
    let a = || agent.to_owned();
    gauge!("loadgen_connected", "agent" => a()).set(tick.connected as f64);
    counter!("loadgen_messages_sent_total", "agent" => a()).absolute(tick.sent);
    counter!("loadgen_messages_acked_total", "agent" => a()).absolute(tick.acked);
    counter!("loadgen_deliveries_total", "agent" => a()).absolute(tick.delivered);
    counter!("loadgen_failures_total", "agent" => a()).absolute(tick.failures);
    counter!("loadgen_reconnects_total", "agent" => a()).absolute(tick.reconnects);
    for (series, buckets) in tick.histograms.iter() {
        if buckets.is_empty() {
            continue;
        }
        let h = from_buckets([buckets]);
        let seconds = |micros: u64| micros as f64 / 1e6;
        let metric = || series.name().to_owned();
        gauge!("loadgen_latency_p50_seconds", "agent" => a(), "metric" => metric())
            .set(seconds(h.value_at_quantile(0.5)));
        gauge!("loadgen_latency_p99_seconds", "agent" => a(), "metric" => metric())
            .set(seconds(h.value_at_quantile(0.99)));
        gauge!("loadgen_latency_max_seconds", "agent" => a(), "metric" => metric()).set(seconds(h.max()));
    }
}
