//! CPU and memory of every component over a run: gateways, nats-server, PostgreSQL (the
//! postmaster and its backends), bridges and loadgen itself (this process and its agents).
//! A thread samples resident memory every 2 s; CPU is the difference of `/proc` counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{cpu_time, rss_kib};

const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// The processes of the system under test, by component.
#[derive(Clone, Debug, Default)]
pub struct Processes {
    pub gateways: Vec<u32>,
    pub nats: Option<u32>,
    /// The postmaster; its child processes (backends, WAL writer, …) count with it.
    pub postgres: Option<u32>,
    pub bridges: Vec<u32>,
}

impl Processes {
    /// Every pid of every component, now (Postgres backends come and go).
    fn by_component(&self) -> Vec<(&'static str, Vec<u32>)> {
        let me = std::process::id();
        let postgres = self.postgres.map(|p| [vec![p], children_of(p)].concat()).unwrap_or_default();
        // This process and its agents; a private stack's servers are children too, but count
        // as themselves.
        let theirs: Vec<u32> = [&self.gateways, &postgres, &self.bridges]
            .into_iter()
            .flatten()
            .copied()
            .chain(self.nats)
            .collect();
        let mut loadgen = vec![me];
        loadgen.extend(children_of(me).into_iter().filter(|p| !theirs.contains(p)));
        vec![
            ("gateways", self.gateways.clone()),
            ("nats-server", self.nats.into_iter().collect()),
            ("postgres", postgres),
            ("bridge", self.bridges.clone()),
            ("loadgen", loadgen),
        ]
    }
}

/// CPU time of a component's processes. loadgen's agents have exited (and been waited for) by
/// the end of a run, so loadgen counts this process plus its reaped children; the private
/// stack's servers are still running then and are not among them.
fn component_cpu(name: &str, pids: &[u32]) -> Duration {
    if name == "loadgen" {
        return cpu_time_with_reaped_children(std::process::id()).unwrap_or_default();
    }
    pids.iter().filter_map(|&p| cpu_time(p)).sum()
}

/// utime + stime + cutime + cstime of a process.
fn cpu_time_with_reaped_children(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<u64> =
        stat.rsplit_once(')')?.1.split_whitespace().skip(11).take(4).filter_map(|f| f.parse().ok()).collect();
    (fields.len() == 4).then(|| Duration::from_secs_f64(fields.iter().sum::<u64>() as f64 / 100.0))
}

/// Pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent_of(child) == Some(pid))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Resident memory of a group of processes: their private pages plus their shared pages
/// once (PostgreSQL's backends all map the same shared buffers; summing their RSS counts those
/// once per backend). Read from `status`, not `smaps`: walking page tables every few seconds
/// costs real CPU at 75,000 connections.
fn group_kib(pids: &[u32]) -> u64 {
    let private: u64 = pids.iter().filter_map(|&p| status_kib(p, "RssAnon:")).sum();
    // File pages (the binary, its libraries) and shared memory are mapped by every process of
    // the group: once each.
    let max = |field: &str| pids.iter().filter_map(|&p| status_kib(p, field)).max().unwrap_or(0);
    private + max("RssFile:") + max("RssShmem:")
}

/// One component's figures over a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ComponentUsage {
    /// CPU seconds (user + system) used during the run.
    pub cpu_seconds: f64,
    /// Average cores used (`cpu_seconds` / wall time).
    pub cores: f64,
    /// Resident memory when the run started and its peak, summed over the component's processes
    /// (PostgreSQL's shared buffers counted once, not once per backend).
    pub rss_start_kib: u64,
    pub rss_peak_kib: u64,
}

/// Measures [`Processes`] from `start` to `finish`.
pub struct Usage {
    processes: Processes,
    cpu_start: BTreeMap<&'static str, Duration>,
    rss: Arc<Mutex<BTreeMap<&'static str, (u64, u64)>>>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
    started: std::time::Instant,
}

/// What [`Usage`] measured.
#[derive(Clone, Debug, Default)]
pub struct Used {
    pub components: BTreeMap<String, ComponentUsage>,
    pub wall_seconds: f64,
}

impl Usage {
    pub fn start(processes: Processes) -> Self {
        let cpu_start = processes
            .by_component()
            .into_iter()
            .map(|(name, pids)| (name, component_cpu(name, &pids)))
            .collect();
        let rss = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let sample = {
            let (processes, rss) = (processes.clone(), rss.clone());
            move || {
                let mut rss = rss.lock().expect("rss lock");
                for (name, pids) in processes.by_component() {
                    let now = if name == "postgres" {
                        group_kib(&pids)
                    } else {
                        pids.iter().filter_map(|&p| rss_kib(p)).sum()
                    };
                    let entry = rss.entry(name).or_insert((now, now));
                    entry.1 = entry.1.max(now);
                }
            }
        };
        sample();
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(SAMPLE_EVERY);
                    sample();
                }
            })
        };
        Self { processes, cpu_start, rss, stop, sampler: Some(sampler), started: std::time::Instant::now() }
    }

    pub fn finish(mut self) -> Used {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        let wall = self.started.elapsed().as_secs_f64();
        let rss = self.rss.lock().expect("rss lock").clone();
        let components = self
            .processes
            .by_component()
            .into_iter()
            .filter(|(name, pids)| !pids.is_empty() || rss.get(name).is_some_and(|r| r.1 > 0))
            .map(|(name, pids)| {
                let cpu = component_cpu(name, &pids)
                    .saturating_sub(self.cpu_start.get(name).copied().unwrap_or_default())
                    .as_secs_f64();
                let (rss_start_kib, rss_peak_kib) = rss.get(name).copied().unwrap_or_default();
                let usage = ComponentUsage {
                    cpu_seconds: cpu,
                    cores: cpu / wall.max(1e-9),
                    rss_start_kib,
                    rss_peak_kib,
                };
                (name.to_owned(), usage)
            })
            .collect();
        Used { components, wall_seconds: wall }
    }
}

impl Drop for Usage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_this_process_as_loadgen_and_skips_absent_components() {
        let usage = Usage::start(Processes::default());
        // Burn a little CPU so the figure is not zero.
        let mut x = 0u64;
        let until = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 7);
        let used = usage.finish();
        let me = used.components.get("loadgen").expect("loadgen measured");
        assert!(me.rss_peak_kib > 0 && me.rss_peak_kib >= me.rss_start_kib, "{me:?}");
        assert!(me.cpu_seconds > 0.0, "{me:?}");
        let child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status();
        assert!(child.is_ok_and(|s| s.success()));
        let own = cpu_time(std::process::id()).expect("own cpu");
        let with_children = cpu_time_with_reaped_children(std::process::id()).expect("cpu");
        assert!(with_children > own, "a waited-for child's CPU counts: {with_children:?} vs {own:?}");
        assert!(!used.components.contains_key("gateways"), "{:?}", used.components.keys());
        assert!(parent_of(std::process::id()).is_some());
        let me = std::process::id();
        assert!(group_kib(&[me]) > 0 && group_kib(&[me]) <= rss_kib(me).expect("rss") + 64);
    }
}
