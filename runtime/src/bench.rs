//! Durable throughput and step latency, measured end to end on a real SQLite file.
//!
//! The workload is a module exporting a `Steps` workflow (the `testkit` example): it calls
//! an activity `n` times in sequence. Each step is one activity attempt plus two durable
//! commits (the activity result into the inbox, the activation that schedules the next
//! step) and one activation. Used by `pinion bench` and `benches/throughput.rs`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::engine::{Error, Pinion, PinionConfig, StartRequest};
use crate::history::{EventKind, InstanceStatus};
use crate::store::sqlite::Synchronous;
use crate::worker::WorkerConfig;

/// One benchmark run's settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The module with the `Steps` workflow.
    pub module: PathBuf,
    /// Directory for the throwaway database.
    pub dir: PathBuf,
    /// Activities per workflow.
    pub steps: u32,
    /// Workflows in flight at once.
    pub concurrency: usize,
    /// Workflows in total.
    pub workflows: usize,
    /// SQLite durability.
    pub synchronous: Synchronous,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Workflows in flight at once.
    pub concurrency: usize,
    /// Workflows completed.
    pub workflows: usize,
    /// Activities per workflow.
    pub steps: u32,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Completed workflows per second.
    pub workflows_per_sec: f64,
    /// Completed activity steps per second.
    pub steps_per_sec: f64,
    /// Median time from one step's activation to the next's, ms.
    pub step_p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub step_p99_ms: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "concurrency {:>3}: {:>5} workflows x {} steps in {:>6.2} s = {:>8.1} workflows/s, {:>8.1} steps/s; step latency p50 {:.1} ms, p99 {:.1} ms",
            self.concurrency, self.workflows, self.steps, self.seconds, self.workflows_per_sec, self.steps_per_sec,
            self.step_p50_ms, self.step_p99_ms
        )
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

/// Runs the benchmark once.
///
/// # Errors
/// Engine errors, or a workflow that does not complete.
#[allow(clippy::disallowed_methods)] // a benchmark measures real elapsed time
pub fn run(config: &BenchConfig) -> Result<BenchReport, Error> {
    let db = config.dir.join(format!(
        "bench-{}-{}.db",
        config.concurrency,
        std::process::id()
    ));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let mut pc = PinionConfig::new(&db);
    pc.sqlite.synchronous = config.synchronous;
    let p = Pinion::open(pc)?;
    let hash = p.deploy_file(&config.module)?.hash;
    let worker = p.start_worker(WorkerConfig {
        max_activities: config.concurrency.clamp(4, 4096),
        poll_interval: Duration::from_millis(20),
        log: std::sync::Arc::new(|_| {}),
        ..WorkerConfig::default()
    })?;
    let input = format!(r#"{{"n": {}}}"#, config.steps);
    let start = Instant::now();
    let mut ids = Vec::with_capacity(config.workflows);
    let mut next = 0;
    let mut in_flight: Vec<String> = Vec::new();
    while next < config.workflows || !in_flight.is_empty() {
        while in_flight.len() < config.concurrency && next < config.workflows {
            let id = format!("bench-{next}");
            p.start(&StartRequest {
                alias: None,
                workflow_type: "Steps".into(),
                module: hash.0.clone(),
                input_json: input.clone(),
                id: Some(id.clone()),
            })?;
            in_flight.push(id.clone());
            ids.push(id);
            next += 1;
        }
        worker.wake();
        let mut still = Vec::with_capacity(in_flight.len());
        for id in in_flight.drain(..) {
            let rec = p.status(&id)?;
            match rec.status {
                InstanceStatus::Running => still.push(id),
                InstanceStatus::Completed => {}
                other => {
                    return Err(Error::Io {
                        path: id,
                        reason: format!("benchmark workflow ended {other}: {rec:?}"),
                    });
                }
            }
        }
        in_flight = still;
        if !in_flight.is_empty() {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    worker.shutdown();
    let mut gaps = Vec::new();
    for id in &ids {
        let times: Vec<u64> = p
            .history(id)?
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::WorkflowTaskCompleted { .. }))
            .map(|e| e.time_ms)
            .collect();
        gaps.extend(times.windows(2).map(|w| (w[1] - w[0]) as f64));
    }
    gaps.sort_by(|a, b| a.total_cmp(b));
    drop(p);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let _ = std::fs::remove_dir_all(format!("{}.cache", db.display()));
    Ok(BenchReport {
        concurrency: config.concurrency,
        workflows: config.workflows,
        steps: config.steps,
        seconds,
        workflows_per_sec: config.workflows as f64 / seconds,
        steps_per_sec: (config.workflows as f64 * config.steps as f64) / seconds,
        step_p50_ms: percentile(&gaps, 0.50),
        step_p99_ms: percentile(&gaps, 0.99),
    })
}
