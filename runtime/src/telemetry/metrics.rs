//! Prometheus metrics: one registry per process, counters and histograms updated where the
//! work happens, gauges read from the database at each scrape.
//!
//! Counters and histograms live in a process-wide [`Metrics`] (like `tracing`'s dispatcher,
//! a layer records without being handed anything); [`metrics`] returns it. The gauges that
//! describe the database (instances by status, blocked instances by reason, runnable
//! instances, activity tasks by state, timers due) are not kept in memory: they are read
//! with [`crate::store::Store::gauges`] when `/metrics` is scraped, so they are right
//! whichever process wrote the rows. Metric names follow Prometheus' conventions: a
//! `pinion_` prefix, `_total` counters, base units (seconds).

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// One label set: `[(name, value)]`.
type Labels = [(&'static str, &'static str); 1];

/// Where an activation's live instance came from.
#[derive(Debug, Clone, Copy)]
pub enum RunSource {
    /// The run cache held it, at the end of history.
    Hit,
    /// Rebuilt by replaying its history (a cache miss, a restart, another process's write).
    Replay,
    /// A new instance's first activation in its start (eager start).
    New,
}

/// How an activity attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum AttemptOutcome {
    /// Returned a result.
    Completed,
    /// Returned or raised a failure (retried or final).
    Failed,
    /// Ran past its start-to-close or heartbeat timeout.
    TimedOut,
}

/// Instance statuses, each reported (with 0 when there are none).
pub const STATUSES: [&str; 6] = [
    "running",
    "blocked",
    "completed",
    "failed",
    "cancelled",
    "terminated",
];

/// Kinds of blocked reasons ([`blocked_reason_kind`]), each reported.
pub const BLOCKED_KINDS: [&str; 7] = [
    "nondeterminism",
    "trap",
    "out_of_fuel",
    "memory_limit",
    "module",
    "engine",
    "other",
];

/// Activity task states, each reported.
pub const TASK_STATES: [&str; 3] = ["ready", "leased", "backoff"];

/// The process's counters and histograms.
pub struct Metrics {
    registry: Registry,
    activations: Family<Labels, Counter>,
    activation_seconds: Histogram,
    attempts: Family<Labels, Counter>,
    attempt_seconds: Histogram,
    step_seconds: Histogram,
    commit_batch: Histogram,
    commit_seconds: Histogram,
    instances: Family<Labels, Gauge>,
    blocked: Family<Labels, Gauge>,
    runnable: Gauge,
    tasks: Family<Labels, Gauge>,
    timers_due: Gauge,
}

/// What [`Metrics::encode`] reads from the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseGauges {
    /// Instances by status (statuses not listed count 0).
    pub instances: Vec<(String, u64)>,
    /// Blocked instances by reason text.
    pub blocked_reasons: Vec<(String, u64)>,
    /// Instances with input waiting.
    pub runnable: u64,
    /// Activity tasks waiting to be claimed, their time come.
    pub tasks_ready: u64,
    /// Activity tasks claimed (an attempt running, or lost with a dead process).
    pub tasks_leased: u64,
    /// Activity tasks waiting out a retry's backoff.
    pub tasks_backoff: u64,
    /// Timers whose time has come, not fired yet.
    pub timers_due: u64,
}

/// Registers `metric` under `name` and returns it: each metric is built once, in the
/// registry and in the struct.
fn reg<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn seconds() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(50e-6, 2.0, 20))
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("pinion");
        Metrics {
            activations: reg(
                &mut r,
                "activations",
                "Workflow activations run, by where their live instance came from (hit: the run cache, replay: rebuilt from history, new: a start)",
                Family::default(),
            ),
            activation_seconds: reg(
                &mut r,
                "activation_duration_seconds",
                "Time to run one workflow activation (the guest's code, not its commit)",
                seconds(),
            ),
            attempts: reg(
                &mut r,
                "activity_attempts",
                "Activity attempts ended, by outcome (completed, failed, timed_out)",
                Family::default(),
            ),
            attempt_seconds: reg(
                &mut r,
                "activity_attempt_duration_seconds",
                "Time one activity attempt ran",
                seconds(),
            ),
            step_seconds: reg(
                &mut r,
                "step_duration_seconds",
                "From an activity attempt's start to its outcome being durable in its instance's history (outcomes delivered in memory, the fast path)",
                seconds(),
            ),
            commit_batch: reg(
                &mut r,
                "commit_batch_size",
                "Writes committed together in one transaction (group commit)",
                Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            ),
            commit_seconds: reg(
                &mut r,
                "commit_duration_seconds",
                "Time of one group commit, from BEGIN to a durable COMMIT",
                seconds(),
            ),
            instances: reg(
                &mut r,
                "instances",
                "Instances by status (read from the database at each scrape)",
                Family::default(),
            ),
            blocked: reg(
                &mut r,
                "blocked_instances",
                "Blocked instances by the kind of their reason (read at each scrape)",
                Family::default(),
            ),
            runnable: reg(
                &mut r,
                "runnable_instances",
                "Instances with input waiting for an activation (read at each scrape)",
                Gauge::default(),
            ),
            tasks: reg(
                &mut r,
                "activity_tasks",
                "Activity tasks by state: ready, leased (running), backoff (read at each scrape)",
                Family::default(),
            ),
            timers_due: reg(
                &mut r,
                "timers_due",
                "Timers whose time has come and that have not fired yet (read at each scrape)",
                Gauge::default(),
            ),
            registry: r,
        }
    }

    /// Counts an activation and how long it ran.
    pub fn activation(&self, source: RunSource, took: Duration) {
        let label = match source {
            RunSource::Hit => "hit",
            RunSource::Replay => "replay",
            RunSource::New => "new",
        };
        self.activations.get_or_create(&[("source", label)]).inc();
        self.activation_seconds.observe(took.as_secs_f64());
    }

    /// Counts an ended attempt and how long it ran.
    pub fn attempt(&self, outcome: AttemptOutcome, took: Duration) {
        let label = match outcome {
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::TimedOut => "timed_out",
        };
        self.attempts.get_or_create(&[("outcome", label)]).inc();
        self.attempt_seconds.observe(took.as_secs_f64());
    }

    /// Records a step: an attempt's start to its outcome being durable.
    pub fn step(&self, took: Duration) {
        self.step_seconds.observe(took.as_secs_f64());
    }

    /// Records one group commit.
    pub fn commit(&self, writes: usize, took: Duration) {
        self.commit_batch.observe(writes as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// The metrics in the OpenMetrics text format, with the database gauges `db`.
    pub fn encode(&self, db: &DatabaseGauges) -> String {
        let count = |list: &[(String, u64)], key: &str| {
            list.iter()
                .filter(|(k, _)| k == key)
                .map(|(_, n)| *n)
                .sum::<u64>()
        };
        for status in STATUSES {
            self.instances
                .get_or_create(&[("status", status)])
                .set(count(&db.instances, status) as i64);
        }
        let mut kinds = [0u64; BLOCKED_KINDS.len()];
        for (reason, n) in &db.blocked_reasons {
            let kind = blocked_reason_kind(reason);
            if let Some(i) = BLOCKED_KINDS.iter().position(|k| *k == kind) {
                kinds[i] += n;
            }
        }
        for (kind, n) in BLOCKED_KINDS.iter().zip(kinds) {
            self.blocked
                .get_or_create(&[("reason", kind)])
                .set(n as i64);
        }
        self.runnable.set(db.runnable as i64);
        for (state, n) in
            TASK_STATES
                .iter()
                .zip([db.tasks_ready, db.tasks_leased, db.tasks_backoff])
        {
            self.tasks.get_or_create(&[("state", state)]).set(n as i64);
        }
        self.timers_due.set(db.timers_due as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The kind of a blocked reason, for the `reason` label: one of [`BLOCKED_KINDS`]. The
/// reason texts are the engine's own (worker and executor); a reason no pattern matches is
/// `other`.
pub fn blocked_reason_kind(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("nondetermin") || r.contains("diverge") || r.contains("history has") {
        "nondeterminism"
    } else if r.contains("out of fuel") {
        "out_of_fuel"
    } else if r.contains("memory limit") || r.contains("table elements") {
        "memory_limit"
    } else if r.contains("engine panicked") || r.contains("cannot commit") {
        "engine"
    } else if r.contains("cannot load pinned module") {
        "module"
    } else if r.contains("trapped") || r.contains("panicked") {
        "trap"
    } else if r.contains("pinion abi") {
        "module"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_the_engine_writes_has_its_kind() {
        let cases = [
            ("instance x, event #5: nondeterminism: history has ActivityScheduled{type: \"Bar\"}, code produced ActivityScheduled{type: \"SendNotification\"}", "nondeterminism"),
            ("guest trapped: wasm trap: wasm `unreachable` instruction executed; guest stderr: panicked at src/lib.rs:3:5: boom", "trap"),
            ("workflow activation ran out of fuel (1000000000 units); is there an endless loop?", "out_of_fuel"),
            ("guest exceeded its memory limit of 33554432 bytes", "memory_limit"),
            ("cannot load pinned module: module abc is not stored", "module"),
            ("the engine panicked while activating it (a bug in pinion; please report it): x", "engine"),
            ("cannot commit the instance's state: constraint failed", "engine"),
            ("something new", "other"),
        ];
        for (reason, kind) in cases {
            assert_eq!(blocked_reason_kind(reason), kind, "{reason}");
            assert!(BLOCKED_KINDS.contains(&kind));
        }
    }

    #[test]
    fn the_text_has_every_family_with_the_database_gauges() {
        let m = Metrics::new();
        m.activation(RunSource::Hit, Duration::from_micros(80));
        m.attempt(AttemptOutcome::Completed, Duration::from_micros(900));
        m.commit(7, Duration::from_millis(2));
        let text = m.encode(&DatabaseGauges {
            instances: vec![("running".into(), 3), ("completed".into(), 9)],
            blocked_reasons: vec![("guest trapped: boom".into(), 2)],
            runnable: 1,
            tasks_ready: 4,
            tasks_leased: 5,
            tasks_backoff: 6,
            timers_due: 8,
        });
        for line in [
            "pinion_activations_total{source=\"hit\"} 1",
            "pinion_activity_attempts_total{outcome=\"completed\"} 1",
            "pinion_commit_batch_size_count 1",
            "pinion_commit_batch_size_sum 7.0",
            "pinion_instances{status=\"running\"} 3",
            "pinion_instances{status=\"completed\"} 9",
            "pinion_instances{status=\"failed\"} 0",
            "pinion_blocked_instances{reason=\"trap\"} 2",
            "pinion_blocked_instances{reason=\"nondeterminism\"} 0",
            "pinion_runnable_instances 1",
            "pinion_activity_tasks{state=\"leased\"} 5",
            "pinion_timers_due 8",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
