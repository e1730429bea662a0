//! Durable throughput and step latency, measured end to end on a real SQLite file.
//!
//! The workload is a module exporting a `Steps` workflow (the `testkit` example): it calls
//! an activity `n` times in sequence. Each step is one activity attempt, one activation and,
//! on the fast path, one durable commit (the activation records the step's outcome and
//! schedules the next); workflows are started by [`STARTERS`] threads, as concurrent clients
//! would. Used by `pinion bench` and `benches/throughput.rs`.
//!
//! [`run_in_flight`] measures the other thing an engine must do well: many activities
//! waiting on the network at once. It starts an HTTP server on loopback that answers every
//! request after a fixed delay, grants the module access to it, and runs `HttpSteps`
//! workflows whose activities do nothing but wait on that server. Used by
//! `pinion bench --http-wait-ms` and `benches/in_flight.rs`.
//!
//! [`verify::run_verify`] measures `deploy --verify` over many open instances
//! (`pinion bench --verify N`).

pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{Error, Pinion, PinionConfig, StartRequest};
use crate::history::EventKind;
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
    /// Threads running workflow activations.
    pub workflow_threads: usize,
    /// [`WorkerConfig::eager_start`].
    pub eager_start: bool,
    /// Run on a new database on this PostgreSQL server instead of a SQLite file.
    pub postgres: Option<String>,
    /// With `postgres`: how many `pinion server` processes run the workers (0: the
    /// benchmark process runs them).
    pub servers: usize,
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

/// Threads that start workflows, as concurrent clients would.
const STARTERS: usize = 8;

/// Runs the benchmark once.
///
/// # Errors
/// Engine errors, or a workflow that does not complete.
#[allow(clippy::disallowed_methods)] // a benchmark measures real elapsed time
pub fn run(config: &BenchConfig) -> Result<BenchReport, Error> {
    let name = format!("bench-{}-{}", config.concurrency, std::process::id());
    let db = match &config.postgres {
        Some(url) => pg::create(url, &name.replace('-', "_"))?,
        None => config.dir.join(format!("{name}.db")),
    };
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let mut pc = PinionConfig::new(&db);
    pc.sqlite.synchronous = config.synchronous;
    let p = Pinion::open(pc)?;
    let hash = p.deploy_file(&config.module)?.hash;
    let worker_config = WorkerConfig {
        max_activities: config.concurrency.clamp(4, 4096),
        workflow_threads: config.workflow_threads,
        eager_start: config.eager_start,
        poll_interval: Duration::from_millis(20),
        log: std::sync::Arc::new(|_| {}),
        ..WorkerConfig::default()
    };
    let (worker, servers) = if config.servers == 0 {
        (Some(p.start_worker(worker_config)?), None)
    } else {
        (None, Some(pg::servers(&db, config)?))
    };
    let input = format!(r#"{{"n": {}}}"#, config.steps);
    let start = Instant::now();
    let ids: Vec<String> = (0..config.workflows)
        .map(|i| format!("bench-{i}"))
        .collect();
    let mut next = 0;
    let mut in_flight = std::collections::HashSet::new();
    // Completions are read from the lifecycle-event outbox, one query per round, so the
    // harness costs the engine a read per round, not one per workflow in flight.
    let mut filter = crate::store::EventFilter {
        after: p.store().last_event_id()?,
        kinds: ["completed", "failed", "cancelled", "terminated", "blocked"]
            .map(String::from)
            .to_vec(),
        limit: 10_000,
        ..Default::default()
    };
    // Workflows are started by STARTERS threads, as that many clients would: a start
    // returns once it is durable, so one thread could start at most one workflow per
    // commit, and far fewer than `concurrency` would really be in flight.
    let (to_start, queue) = std::sync::mpsc::channel::<String>();
    let queue = std::sync::Mutex::new(queue);
    let failed: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| -> Result<(), Error> {
        for _ in 0..STARTERS {
            let (p, queue, failed, input, hash) = (&p, &queue, &failed, &input, &hash);
            scope.spawn(move || loop {
                let next = queue.lock().map(|q| q.recv());
                let Ok(Ok(id)) = next else { return };
                let started = p.start(&StartRequest {
                    alias: None,
                    workflow_type: "Steps".into(),
                    module: hash.0.clone(),
                    input_json: input.clone(),
                    id: Some(id),
                });
                if let Err(e) = started {
                    *failed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                    return;
                }
            });
        }
        let result = (|| {
            while next < config.workflows || !in_flight.is_empty() {
                if let Some(e) = failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                {
                    return Err(e);
                }
                // A start wakes the worker itself (or is its first activation already).
                while in_flight.len() < config.concurrency && next < config.workflows {
                    in_flight.insert(ids[next].clone());
                    let _ = to_start.send(ids[next].clone());
                    next += 1;
                }
                let ended = p.store().lifecycle_events(&filter)?;
                for e in &ended {
                    filter.after = e.id;
                    if !in_flight.remove(&e.instance_id.0) {
                        continue;
                    }
                    if !matches!(e.transition, crate::store::Transition::Completed) {
                        return Err(Error::Io {
                            path: e.instance_id.0.clone(),
                            reason: format!("benchmark workflow ended {}", e.transition.name()),
                        });
                    }
                }
                if ended.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(())
        })();
        drop(to_start);
        result
    })?;
    let seconds = start.elapsed().as_secs_f64();
    if let Some(worker) = worker {
        worker.shutdown();
    }
    drop(servers);
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
    if let Some(url) = &config.postgres {
        pg::drop_database(url, &name.replace('-', "_"));
    } else {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        let _ = std::fs::remove_dir_all(format!("{}.cache", db.display()));
    }
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

/// Settings of an in-flight run.
#[derive(Debug, Clone)]
pub struct InFlightConfig {
    /// The module with the `HttpSteps` workflow.
    pub module: PathBuf,
    /// Directory for the throwaway database.
    pub dir: PathBuf,
    /// Workflows, all started at once: the number of activities in flight.
    pub workflows: usize,
    /// Activities per workflow, in sequence.
    pub steps: u32,
    /// How long the loopback server takes to answer each request.
    pub wait: Duration,
    /// Threads running workflow activations.
    pub workflow_threads: usize,
    /// SQLite durability.
    pub synchronous: Synchronous,
}

/// What an in-flight run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InFlightReport {
    /// Workflows (activities in flight).
    pub workflows: usize,
    /// Activities per workflow.
    pub steps: u32,
    /// The server's delay, ms.
    pub wait_ms: u64,
    /// From the first start to the last completion, seconds.
    pub seconds: f64,
    /// Completed activities per second over the whole run.
    pub activities_per_sec: f64,
    /// The most activities the server saw waiting at once.
    pub peak_in_flight: usize,
    /// Peak resident memory of this process (engine, workers and the loopback server), MiB.
    pub peak_rss_mib: f64,
}

impl std::fmt::Display for InFlightReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} workflows x {} activities waiting {} ms each on loopback HTTP: {:.2} s = {:.0} completed activities/s; peak {} in flight; peak RSS {:.0} MiB",
            self.workflows, self.steps, self.wait_ms, self.seconds, self.activities_per_sec,
            self.peak_in_flight, self.peak_rss_mib
        )
    }
}

/// The process's peak resident set size (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn clean(db: &Path) {
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let _ = std::fs::remove_dir_all(format!("{}.cache", db.display()));
}

/// Runs the in-flight benchmark once.
///
/// # Errors
/// Engine errors, or a workflow that does not complete.
#[allow(clippy::disallowed_methods)] // a benchmark measures real elapsed time
pub fn run_in_flight(config: &InFlightConfig) -> Result<InFlightReport, Error> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let io = |reason: String| Error::Io {
        path: "in-flight benchmark".into(),
        reason,
    };
    // The slow service: answers every request after `wait`, counting requests in flight.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-http")
        .enable_all()
        .build()
        .map_err(|e| io(e.to_string()))?;
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n2, p2, wait) = (now.clone(), peak.clone(), config.wait);
    let router = axum::Router::new().route(
        "/wait",
        axum::routing::get(move || {
            let (now, peak) = (n2.clone(), p2.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(wait).await;
                now.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| io(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| io(e.to_string()))?;
    rt.spawn(async move { axum::serve(listener, router).await });

    let db = config
        .dir
        .join(format!("in-flight-{}.db", std::process::id()));
    clean(&db);
    let grants = crate::config::Grants::parse(
        &config.dir.join("bench.toml"),
        &format!("[[grant]]\nmodules = [\"bench\"]\nactivities = [\"get\"]\nhttp = [\"http://{addr}\"]\n"),
    )
    .map_err(|e| io(e.to_string()))?;
    let mut pc = PinionConfig::new(&db);
    pc.sqlite.synchronous = config.synchronous;
    pc.grants = Arc::new(crate::config::GrantSource::fixed(grants));
    let p = Pinion::open(pc)?;
    let hash = p.deploy_file(&config.module)?.hash;
    p.set_alias("bench", &hash.0)?;
    let worker = p.start_worker(WorkerConfig {
        max_activities: config.workflows.max(1),
        // Every workflow stays cached: the measurement is of waiting, not of replay.
        cache_capacity: config.workflows.max(1024),
        workflow_threads: std::env::var("PINION_BENCH_WT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2),
        poll_interval: Duration::from_millis(20),
        log: Arc::new(|_| {}),
        ..WorkerConfig::default()
    })?;
    let input = format!(r#"{{"n": {}, "url": "http://{addr}/wait"}}"#, config.steps);
    let start = Instant::now();
    // Starts from several threads, so their commits share fsyncs as workers' do.
    let next = AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= config.workflows {
                    break;
                }
                let r = p.start(&StartRequest {
                    alias: None,
                    workflow_type: "HttpSteps".into(),
                    module: hash.0.clone(),
                    input_json: input.clone(),
                    id: Some(format!("in-flight-{i}")),
                });
                if let Err(e) = r {
                    *failed.lock().expect("lock") = Some(e);
                    break;
                }
                worker.wake();
            });
        }
    });
    if let Some(e) = failed.into_inner().expect("lock") {
        return Err(e);
    }
    // Done when every workflow is completed; anything else ending them is an error.
    loop {
        let usage = p
            .store()
            .module_usage()?
            .into_iter()
            .find(|(h, _)| *h == hash)
            .map(|(_, u)| u)
            .unwrap_or_default();
        if usage.failed > 0 || usage.blocked > 0 {
            return Err(io(format!(
                "a benchmark workflow did not complete: {usage:?}"
            )));
        }
        if usage.completed as usize >= config.workflows {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = start.elapsed().as_secs_f64();
    let rss = peak_rss_mib();
    worker.shutdown();
    drop(p);
    clean(&db);
    rt.shutdown_background();
    Ok(InFlightReport {
        workflows: config.workflows,
        steps: config.steps,
        wait_ms: config.wait.as_millis() as u64,
        seconds,
        activities_per_sec: (config.workflows as f64 * f64::from(config.steps)) / seconds,
        peak_in_flight: peak.load(Ordering::SeqCst),
        peak_rss_mib: rss,
    })
}

/// The PostgreSQL runs: a database per run, and `pinion server` processes on it.
mod pg {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::BenchConfig;
    use crate::engine::Error;

    fn failed(what: &str, e: impl std::fmt::Display) -> Error {
        Error::Io {
            path: what.to_owned(),
            reason: e.to_string(),
        }
    }

    /// `url` with its database name replaced by `db`.
    pub(super) fn with_database(url: &str, db: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let host_end = base[scheme_end..]
            .find('/')
            .map_or(base.len(), |i| scheme_end + i);
        let mut out = format!("{}/{db}", &base[..host_end]);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }

    /// Creates database `name` on the server of `url` and returns its URL (as a path,
    /// the form [`crate::PinionConfig::new`] takes).
    pub(super) fn create(url: &str, name: &str) -> Result<PathBuf, Error> {
        let mut admin = postgres::Client::connect(url, postgres::NoTls)
            .map_err(|e| failed(&crate::store::postgres::redact(url), e))?;
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| failed(&format!("creating database {name}"), e))?;
        Ok(PathBuf::from(with_database(url, name)))
    }

    /// Drops the run's database (best effort: the run is over).
    pub(super) fn drop_database(url: &str, name: &str) {
        if let Ok(mut admin) = postgres::Client::connect(url, postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }

    /// `pinion server` processes on a database, killed when dropped.
    pub(super) struct Servers(Vec<Child>);

    impl Drop for Servers {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Starts `config.servers` servers on `db` (this executable) and waits until every one
    /// has joined the database.
    #[allow(clippy::disallowed_methods)] // waits real time for real processes
    pub(super) fn servers(db: &Path, config: &BenchConfig) -> Result<Servers, Error> {
        let exe = std::env::current_exe().map_err(|e| failed("this executable", e))?;
        let mut children = Servers(Vec::new());
        for _ in 0..config.servers {
            let mut cmd = Command::new(&exe);
            cmd.arg("--db")
                .arg(db)
                .args([
                    "--log",
                    "error",
                    "server",
                    "--listen",
                    "127.0.0.1:0",
                    "--no-auth",
                ])
                .arg("--workflow-threads")
                .arg(config.workflow_threads.to_string())
                .arg("--max-activities")
                .arg(config.concurrency.clamp(4, 4096).to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            if !config.eager_start {
                cmd.arg("--no-eager-start");
            }
            children.0.push(
                cmd.spawn()
                    .map_err(|e| failed(&exe.display().to_string(), e))?,
            );
        }
        let url = db.to_string_lossy().into_owned();
        let mut client = postgres::Client::connect(&url, postgres::NoTls)
            .map_err(|e| failed(&crate::store::postgres::redact(&url), e))?;
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let joined: i64 = client
                .query_one("SELECT count(*) FROM workers", &[])
                .map_err(|e| failed("counting the servers", e))?
                .get(0);
            if joined as usize >= config.servers {
                return Ok(children);
            }
            for c in &mut children.0 {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(failed("pinion server", format!("exited early: {status}")));
                }
            }
            if Instant::now() > until {
                return Err(failed(
                    "pinion server",
                    "did not join the database within 60 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_database_name_is_replaced_and_the_rest_kept() {
            assert_eq!(
                super::with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "b1"),
                "postgres://u:p@h:5432/b1?sslmode=disable"
            );
            assert_eq!(
                super::with_database("postgres://h", "b1"),
                "postgres://h/b1"
            );
        }
    }
}
