//! loadgen: drives real ThreadSpace WebSocket clients against running gateways and measures
//! them. Today it has the scenarios used to size the system: `idle` (gateway memory per idle
//! connection), `bench` (open-model send→deliver latency, gateway CPU per delivery and, with a
//! bridge, JetStream→Postgres lag), `presence` (propagation of presence changes and a gateway
//! crash to thousands of observers, presence CPU and heartbeat bytes) and `writer` (the bridge's Postgres write path against
//! binary COPY). The full traffic model, agents, checker and gates are issue 5.

pub mod agents;
pub mod bench;
pub mod capacity;
pub mod checker;
pub mod drill;
pub mod idle;
pub mod login;
pub mod output;
pub mod presence;
pub mod run;
pub mod scenario;
pub mod script;
pub mod target;
pub mod usage;
pub mod writer;

use std::time::Duration;

use hdrhistogram::Histogram;

/// The source address of connection `n` when spreading over `source_ips` loopback addresses
/// 127.0.0.2 … 127.0.0.(1+source_ips); `None` (the default address) for 0.
pub fn source_addr(n: usize, source_ips: u8) -> Option<std::net::IpAddr> {
    (source_ips > 0).then(|| {
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2 + (n % source_ips as usize) as u8))
    })
}

/// A latency histogram in microseconds, 1 µs to 5 min, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 300_000_000, 3).expect("static bounds are valid")
}

/// `p50 … max` of a microsecond histogram, in milliseconds.
pub fn summary(name: &str, h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return format!("{name:<16} no samples");
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "{name:<16} n={:<8} p50={:>8.2} ms  p99={:>8.2} ms  p999={:>8.2} ms  max={:>8.2} ms",
        h.len(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    )
}

/// Resident set size of a process, in KiB (from /proc).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU time (user + system) a process has used.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = nix_clock_ticks();
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

fn nix_clock_ticks() -> u64 {
    // USER_HZ is 100 on every Linux this runs on.
    100
}

/// Wall-clock microseconds since the Unix epoch (the clock intended times are on, shared by
/// every agent).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Fails before a long run, not after it, when an output file cannot be written.
pub fn check_writable(path: &std::path::Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    anyhow::ensure!(
        dir.is_dir(),
        "cannot write {}: directory {} does not exist",
        path.display(),
        dir.display()
    );
    anyhow::ensure!(!path.is_dir(), "cannot write {}: it is a directory", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process_stats() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(cpu_time(pid).is_some());
        assert!(rss_kib(u32::MAX).is_none());
    }

    #[test]
    fn summary_reports_quantiles() {
        let mut h = latency_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).expect("in range");
        }
        let text = summary("x", &h);
        assert!(text.contains("p50=  500.00 ms") || text.contains("p50=  500."), "{text}");
        assert!(summary("empty", &latency_histogram()).contains("no samples"));
    }
}
