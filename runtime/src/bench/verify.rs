//! Verify at scale: how long `deploy --verify` takes over a database of open instances.
//!
//! The workload is many open instances of testkit's `Steps` workflow, each waiting on its
//! last activity (51 events: the start, 16 completed steps of three events each, and the
//! 17th step's task boundary and schedule), written directly in the documented history
//! format (imported, then turned into ordinary running instances in SQL: setup, not the
//! measurement). The measured part is what `pinion deploy --verify --verify-limit N` runs:
//! [`Pinion::verify_module`] choosing the running instances of the candidate's workflow
//! types and replaying every one against it on the pool ([`crate::pool`]). Used by
//! `pinion bench --verify N`.

#![allow(clippy::disallowed_methods)] // a benchmark measures real time

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use pinion_abi::{ActivityOptions, RetryPolicy};

use crate::engine::{Error, Pinion, PinionConfig, Progress};
use crate::history::{
    EventKind, HistoryEvent, HistoryExport, InstanceId, InstanceStatus, ModuleHash, Payload,
    DETERMINISM_RULES_VERSION, EXPORT_FORMAT, EXPORT_VERSION,
};
use crate::replay::ReplaySummary;
use crate::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use crate::store::Store;

/// Steps completed in each history (the next one is in flight): 51 events.
pub const COMPLETED_STEPS: u32 = 16;

/// One verify benchmark's settings.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// The module with the `Steps` workflow (examples/testkit).
    pub module: PathBuf,
    /// Directory for the throwaway database.
    pub dir: PathBuf,
    /// Open instances to verify.
    pub instances: usize,
    /// Replay threads (`None`: one per core).
    pub threads: Option<usize>,
    /// Replay each history on a fresh instance instead of a pooled slot (no pools at all:
    /// `activity_pool_slots = 0`), as before the replay pool, for comparison.
    pub fresh_instances: bool,
}

/// What one verify benchmark measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// Open instances verified.
    pub instances: usize,
    /// Events in each history.
    pub events_per_history: usize,
    /// Replay threads used.
    pub threads: usize,
    /// Whether each history was replayed on a fresh instance (no pooled slots).
    pub fresh_instances: bool,
    /// Seconds spent writing the histories (setup).
    pub setup_secs: f64,
    /// Seconds the verification took: choosing, reading and replaying every history.
    pub verify_secs: f64,
    /// CPU seconds (user + system, every thread of this process) the verification used:
    /// on a machine shared with other work, wall time overstates what it needs; this
    /// divided by the cores is what it takes on idle ones.
    pub verify_cpu_secs: f64,
    /// The verdicts.
    pub summary: ReplaySummary,
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verify: {} open instances of {} events, {} thread(s), {}: {:.2} s = {:.0} histories/s, {:.0} events/s, {:.2} CPU s ({}; setup {:.0} s)",
            self.instances,
            self.events_per_history,
            self.threads,
            if self.fresh_instances {
                "fresh instances"
            } else {
                "pooled slots"
            },
            self.verify_secs,
            self.instances as f64 / self.verify_secs,
            (self.instances * self.events_per_history) as f64 / self.verify_secs,
            self.verify_cpu_secs,
            self.summary,
            self.setup_secs
        )
    }
}

/// An open `Steps` history: `completed` steps done, the next one scheduled.
pub fn open_steps_history(id: &str, completed: u32, hash: &ModuleHash) -> HistoryExport {
    let mut events = Vec::new();
    let mut push = |kind: EventKind| {
        let id = events.len() as u64 + 1;
        events.push(HistoryEvent {
            id,
            time_ms: 1_700_000_000_000 + id,
            kind,
        });
    };
    let options = ActivityOptions {
        start_to_close_timeout_ms: None,
        retry: RetryPolicy::default(),
        heartbeat_timeout_ms: None,
    };
    let n = completed + 1;
    push(EventKind::WorkflowStarted {
        workflow_type: "Steps".into(),
        module_hash: hash.clone(),
        input: Payload::from_value(&serde_json::json!({ "n": n + 10 })).expect("JSON"),
        random_seed: 7,
        determinism_rules: DETERMINISM_RULES_VERSION,
        version_label: None,
        parent: None,
        continued_from_run: None,
    });
    for seq in 1..=n {
        push(EventKind::WorkflowTaskCompleted {
            now_ms: 1_700_000_000_000 + u64::from(seq),
        });
        push(EventKind::ActivityScheduled {
            seq,
            activity_type: "step".into(),
            input: Payload::from_value(&(seq - 1)).expect("JSON"),
            options: options.clone(),
        });
        if seq <= completed {
            push(EventKind::ActivityCompleted {
                seq,
                result: Payload::from_value(&seq).expect("JSON"),
                attempts: 1,
            });
        }
    }
    HistoryExport {
        format: EXPORT_FORMAT.into(),
        version: EXPORT_VERSION,
        instance_id: InstanceId(id.into()),
        workflow_type: "Steps".into(),
        module_hash: hash.clone(),
        status: InstanceStatus::Running,
        run: 1,
        events,
    }
}

/// User and system CPU seconds this process has used, every thread.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Writes the histories, then verifies the module against them, counting each history in
/// `progress` (which the CLI prints).
///
/// # Errors
/// The module cannot be read or deployed; storage errors.
pub fn run_verify(config: &VerifyConfig, progress: &Progress) -> Result<VerifyReport, Error> {
    let bytes = std::fs::read(&config.module).map_err(io(&config.module))?;
    let db = config.dir.join(format!("verify-{}.db", std::process::id()));
    let setup = Instant::now();
    let hash = {
        let p = Pinion::open(PinionConfig::new(&db))?;
        p.deploy(&bytes)?.hash
    };
    // Setup: import from every core with synchronous off, then make the imported histories
    // ordinary running instances.
    {
        let store = Arc::new(SqliteStore::open(
            &db,
            SqliteOptions {
                synchronous: Synchronous::Off,
                ..Default::default()
            },
        )?);
        let writers = crate::pool::default_threads().max(2);
        std::thread::scope(|s| -> Result<(), Error> {
            let handles: Vec<_> = (0..writers)
                .map(|t| {
                    let (store, hash) = (store.clone(), hash.clone());
                    s.spawn(move || -> Result<(), Error> {
                        for i in (t..config.instances).step_by(writers) {
                            let h =
                                open_steps_history(&format!("v-{i:06}"), COMPLETED_STEPS, &hash);
                            store.import_history(&h, 0)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            }
            Ok(())
        })?;
    }
    let c = rusqlite::Connection::open(&db).map_err(|e| Error::Io {
        path: db.display().to_string(),
        reason: e.to_string(),
    })?;
    c.execute("UPDATE instances SET imported = 0", [])
        .map_err(|e| Error::Io {
            path: db.display().to_string(),
            reason: e.to_string(),
        })?;
    drop(c);
    let setup_secs = setup.elapsed().as_secs_f64();

    let mut pc = PinionConfig::new(&db);
    if config.fresh_instances {
        pc.limits.activity_pool_slots = 0;
    }
    let p = Pinion::open(pc)?;
    let threads = config.threads.unwrap_or_else(crate::pool::default_threads);
    let started = Instant::now();
    let cpu_before = cpu_secs();
    let limit = u32::try_from(config.instances).unwrap_or(u32::MAX);
    let candidate = p.replayer_for(&hash.0)?;
    let (summary, reports) = p.verify_module_on(&candidate, limit, threads, progress)?;
    let verify_secs = started.elapsed().as_secs_f64();
    let verify_cpu_secs = cpu_secs() - cpu_before;
    drop(p);
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let _ = std::fs::remove_dir_all(format!("{}.cache", db.display()));
    Ok(VerifyReport {
        instances: reports.len(),
        events_per_history: (3 * COMPLETED_STEPS + 3) as usize,
        threads,
        fresh_instances: config.fresh_instances,
        setup_secs,
        verify_secs,
        verify_cpu_secs,
        summary,
    })
}
