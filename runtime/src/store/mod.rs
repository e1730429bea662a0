//! Durable state behind one trait.
//!
//! The executor and worker talk to a [`Store`]; [`sqlite::SqliteStore`] is the embedded
//! implementation and [`postgres::PgStore`] the PostgreSQL one (chosen by a `postgres://`
//! URL), with the same invariants; nothing above this module depends on which.
//!
//! # Invariants every backend keeps
//!
//! * One transaction per state change: an activation's events, the instance row, the
//!   consumed inbox rows and the new activity and timer rows commit together or not at all.
//! * History is append-only and dense. [`Store::commit_activation`] carries the event id it
//!   expects to append next and fails with [`StoreError::Conflict`] when history moved, so a
//!   stale worker can never interleave events.
//! * Inputs (activity results, timer firings) wait in the instance's *inbox* until an
//!   activation consumes them; only then do they enter history, in delivery order. This is
//!   what makes activation boundaries in history exact.
//! * An activity result is recorded at most once: completing removes the task row of that
//!   attempt, and a completion whose task row is gone (a duplicate run after a crash, or a
//!   late attempt after a timeout) is ignored.

pub mod census;
pub mod deploy;
mod encode;
pub mod events;
pub mod migrate;
pub mod postgres;
pub mod sqlite;

pub use census::{CensusStore, InstanceMarkers, MarkerFilter};
pub use deploy::{AliasChange, AliasRecord, DeploymentStore, ModuleUsage, NondeterminismPolicy};
pub use events::{DeadLetter, EventFilter, EventStore, LifecycleEvent, NewDeadLetter, Transition};

use pinion_abi::{ActivityOptions, Manifest};

use crate::history::{
    EventKind, HistoryEvent, HistoryExport, InstanceId, InstanceStatus, ModuleHash, Payload,
    EXPORT_FORMAT, EXPORT_VERSION,
};

/// Errors of the storage layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or is not a pinion database.
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The file.
        path: String,
        /// Why, in words.
        reason: String,
    },
    /// Another process holds a lock on the database for longer than the busy timeout.
    #[error("database is locked by another process (retry, or stop the other writer): {0}")]
    Locked(String),
    /// History moved under a writer (another worker appended first). Retrying with fresh
    /// state is correct.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A row that had to exist does not.
    #[error("not found: {0}")]
    NotFound(String),
    /// A row with this key exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// Stored data could not be decoded: the file is damaged or from a newer pinion.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The instance can take no more input: it has ended, or it is an imported history.
    #[error("instance {id} is {state}: {hint}")]
    NotAccepting {
        /// The instance.
        id: String,
        /// Its state, in words (`completed`, `an imported history`, ...).
        state: String,
        /// What the caller can do instead.
        hint: String,
    },
    /// A write broke a rule of the schema other than a duplicate key (a foreign key, a
    /// `NOT NULL`, a `CHECK`): a bug, or a damaged file. Retrying cannot help.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
    /// The store's writer thread is gone (the store is shutting down).
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Locked(_) | StoreError::Conflict(_))
    }
}

/// A deployed module as stored.
#[derive(Debug, Clone)]
pub struct ModuleRecord {
    /// SHA-256 of `bytes`.
    pub hash: ModuleHash,
    /// Size of the wasm in bytes.
    pub size: u64,
    /// What the module declared at deploy time.
    pub manifest: Manifest,
    /// Deploy time, ms since the epoch.
    pub deployed_at_ms: u64,
}

/// An instance row. Serialised as the instance object of `--json` output and the HTTP API.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InstanceRecord {
    /// Instance id.
    pub id: InstanceId,
    /// Workflow type.
    pub workflow_type: String,
    /// Pinned module.
    pub module_hash: ModuleHash,
    /// Lifecycle state.
    pub status: InstanceStatus,
    /// Creation time.
    pub created_at_ms: u64,
    /// Last change.
    pub updated_at_ms: u64,
    /// Number of events in history.
    pub event_count: u64,
    /// Result, when completed.
    pub result: Option<Payload>,
    /// Failure kind and message, when failed.
    pub failure: Option<pinion_abi::Failure>,
    /// Why the instance is blocked, when blocked.
    pub blocked_reason: Option<String>,
    /// True for a history imported from elsewhere: it never runs.
    pub imported: bool,
    /// True once a cancellation was requested (it is delivered once).
    pub cancel_requested: bool,
    /// The current run: 1, then +1 at each continue-as-new (earlier runs are archived).
    pub run: u32,
    /// The activities scheduled and not yet resolved, with their attempt and last failure.
    /// Filled in by `status` (`GET /v1/instances/{id}`), empty in lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_activities: Vec<PendingActivity>,
}

/// Filter for [`Store::list_instances`].
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    /// Only this status.
    pub status: Option<InstanceStatus>,
    /// Only this workflow type.
    pub workflow_type: Option<String>,
    /// Only instances pinned to this module.
    pub module_hash: Option<ModuleHash>,
    /// Only instances created at or after this time.
    pub created_since_ms: Option<u64>,
    /// Only these ids (empty: any).
    pub ids: Vec<InstanceId>,
    /// At most this many, newest first.
    pub limit: Option<u32>,
    /// Only instances listed after this `(created_at_ms, id)` in the listing order (newest
    /// first, then by id): keyset pagination, stable while instances are added.
    pub after: Option<(u64, InstanceId)>,
}

/// A new instance: its row and its first event.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// Instance id.
    pub id: InstanceId,
    /// Creation time.
    pub now_ms: u64,
    /// The `WorkflowStarted` event (must be that variant).
    pub started: EventKind,
}

/// An input waiting to be delivered to an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEntry {
    /// Inbox row id (delivery order).
    pub id: i64,
    /// When it arrived.
    pub time_ms: u64,
    /// The event it becomes in history.
    pub kind: EventKind,
}

/// An activity to run.
#[derive(Debug, Clone, PartialEq)]
pub struct NewActivityTask {
    /// Activity sequence number.
    pub seq: u32,
    /// Activity type.
    pub activity_type: String,
    /// Input.
    pub input: Payload,
    /// Timeout and retry policy.
    pub options: ActivityOptions,
    /// Claimed by the committing process until this time: the task is written already
    /// leased, attempt 1 started, and the committer runs that attempt itself once the
    /// commit is durable (no separate claim). `None`: written unclaimed, for any worker.
    pub lease_until_ms: Option<u64>,
}

/// A claimed activity attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityTask {
    /// Instance that scheduled it.
    pub instance_id: InstanceId,
    /// Module to run it from (the instance's pinned module).
    pub module_hash: ModuleHash,
    /// Activity sequence number.
    pub seq: u32,
    /// Activity type.
    pub activity_type: String,
    /// Input.
    pub input: Payload,
    /// Timeout and retry policy.
    pub options: ActivityOptions,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The last heartbeat details an earlier attempt recorded.
    pub heartbeat_details: Option<Payload>,
}

/// A timer to arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewTimer {
    /// Timer sequence number.
    pub seq: u32,
    /// Absolute fire time.
    pub fire_at_ms: u64,
}

/// How an activation leaves the instance.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceOutcome {
    /// Still running (waiting on activities, timers).
    Running,
    /// Completed with a result.
    Completed(Payload),
    /// Failed with an error.
    Failed(pinion_abi::Failure),
    /// Ended after a cancellation request, with the workflow's final reason.
    Cancelled(String),
    /// Ended this run; the instance starts again with this `WorkflowStarted` event (the
    /// store fills in `continued_from_run`), and these `SignalReceived` events the old run
    /// received but never read are delivered to the new run first.
    ContinuedAsNew(EventKind, Vec<EventKind>),
}

/// A child workflow to create with its parent's activation.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChild {
    /// The child's sequence number in the parent.
    pub seq: u32,
    /// The child's instance id.
    pub id: InstanceId,
    /// Its `WorkflowStarted` event, or why it cannot start (the parent then receives a
    /// `ChildWorkflowFailed` of kind `ChildStartFailed`).
    pub started: Result<EventKind, String>,
}

/// Everything one activation changes, committed in one transaction.
#[derive(Debug, Clone)]
pub struct ActivationCommit {
    /// The instance.
    pub instance_id: InstanceId,
    /// Create the instance in the same transaction, with this `WorkflowStarted` event as
    /// event 1 (an eager start: the first activation commits with the instance); fails
    /// with [`StoreError::AlreadyExists`], writing nothing, when the id is in use.
    pub create: Option<EventKind>,
    /// The id the first appended event must get (history length + 1).
    pub expected_next_event: u64,
    /// Events to append, in order (delivered inputs, the task boundary, commands).
    pub events: Vec<(u64, EventKind)>,
    /// Inbox rows consumed by this activation.
    pub consumed_inbox: Vec<i64>,
    /// Activity outcomes delivered to this activation from memory instead of the inbox,
    /// as `(seq, attempt)`: each task row is deleted in the commit, which fails with
    /// `Conflict` unless the row is still there at that attempt (a cancelled activity's or
    /// an ended instance's outcome is never recorded).
    pub resolved_activities: Vec<(u32, u32)>,
    /// Activities scheduled.
    pub new_activities: Vec<NewActivityTask>,
    /// Timers started.
    pub new_timers: Vec<NewTimer>,
    /// Timers cancelled.
    pub cancelled_timers: Vec<u32>,
    /// Activities cancelled: their task rows go, so a queued attempt never runs and a
    /// running attempt's result is discarded.
    pub cancelled_activities: Vec<u32>,
    /// Children to create (each in the same transaction).
    pub new_children: Vec<NewChild>,
    /// Children to send a cancellation to.
    pub cancelled_children: Vec<u32>,
    /// Resulting state.
    pub outcome: InstanceOutcome,
    /// Commit time.
    pub now_ms: u64,
}

/// How an activity attempt ended, as the store records it.
#[derive(Debug, Clone)]
pub enum ActivityResolution {
    /// Final: deliver this event (ActivityCompleted / Failed / TimedOut) to the instance.
    Resolve(EventKind),
    /// Retry: run attempt `next_attempt` no earlier than `visible_at_ms`.
    Retry {
        /// The next attempt number.
        next_attempt: u32,
        /// Earliest start of the retry.
        visible_at_ms: u64,
        /// How the attempt failed (shown as the activity's last failure).
        failure: pinion_abi::Failure,
        /// The failed attempt's last heartbeat details, for the next attempt (`None` keeps
        /// what an earlier attempt recorded).
        heartbeat_details: Option<Payload>,
    },
}

/// An activity that is scheduled and not yet resolved, as `pinion status` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PendingActivity {
    /// Its sequence number.
    pub seq: u32,
    /// Its type.
    pub activity_type: String,
    /// The current attempt, from 1.
    pub attempt: u32,
    /// `scheduled` (waiting for its first attempt), `running`, or `backing_off` (waiting to
    /// retry after a failure).
    pub state: PendingState,
    /// When the running attempt started.
    pub started_at_ms: Option<u64>,
    /// When the next attempt may start (the retry time while backing off).
    pub next_attempt_at_ms: Option<u64>,
    /// How the previous attempt failed.
    pub last_failure: Option<pinion_abi::Failure>,
    /// When heartbeat details were last written (they are written at most every few
    /// seconds while an attempt runs, and when it fails).
    #[serde(default)]
    pub last_heartbeat_at_ms: Option<u64>,
    /// The last heartbeat details written: how far the activity got.
    #[serde(default)]
    pub heartbeat_details: Option<Payload>,
}

/// Where a pending activity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingState {
    /// Waiting for its first attempt.
    Scheduled,
    /// An attempt is running.
    Running,
    /// Waiting to retry after a failed attempt.
    BackingOff,
}

/// Durable state of the engine. All methods are synchronous and thread-safe.
pub trait Store: DeploymentStore + EventStore + CensusStore + Send + Sync + 'static {
    /// The activities of `id` that are scheduled and not resolved, by sequence number.
    fn pending_activities(&self, id: &InstanceId) -> Result<Vec<PendingActivity>, StoreError>;

    /// Stores a module unless one with the same hash exists. Returns true when inserted.
    fn put_module(
        &self,
        hash: &ModuleHash,
        bytes: &[u8],
        manifest: &Manifest,
        now_ms: u64,
    ) -> Result<bool, StoreError>;
    /// The module's record, without its bytes.
    fn get_module(&self, hash: &ModuleHash) -> Result<Option<ModuleRecord>, StoreError>;
    /// The module's wasm bytes.
    fn module_bytes(&self, hash: &ModuleHash) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every module, newest first.
    fn list_modules(&self) -> Result<Vec<ModuleRecord>, StoreError>;

    /// Creates an instance with its `WorkflowStarted` event, runnable.
    fn create_instance(&self, new: NewInstance) -> Result<(), StoreError>;
    /// One instance.
    fn get_instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>, StoreError>;
    /// Instances matching `filter`, newest first.
    fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>, StoreError>;
    /// The instance's whole history, in order.
    fn load_history(&self, id: &InstanceId) -> Result<Vec<HistoryEvent>, StoreError>;
    /// An archived run (one that ended with continue-as-new) in the export format.
    fn archived_run(&self, id: &InstanceId, run: u32) -> Result<Option<HistoryExport>, StoreError>;
    /// Inputs waiting for the instance, in arrival order.
    fn load_inbox(&self, id: &InstanceId) -> Result<Vec<InboxEntry>, StoreError>;
    /// What an activation starts from: the instance and its inbox. A backend may read both
    /// at once and skip the inbox when the instance is not runnable (its inbox is then
    /// empty); the default reads them one after the other.
    fn activation_input(
        &self,
        id: &InstanceId,
    ) -> Result<Option<(InstanceRecord, Vec<InboxEntry>)>, StoreError> {
        let Some(rec) = self.get_instance(id)? else {
            return Ok(None);
        };
        let inbox = self.load_inbox(id)?;
        Ok(Some((rec, inbox)))
    }
    /// Up to `limit` instances that have undelivered input, oldest change first.
    fn runnable_instances(&self, limit: u32) -> Result<Vec<InstanceId>, StoreError>;
    /// The counts `/metrics` reports at `now_ms`: instances by status, blocked ones by
    /// reason, runnable ones, activity tasks by state, timers due.
    fn gauges(&self, now_ms: u64) -> Result<crate::telemetry::metrics::DatabaseGauges, StoreError>;

    /// Clears the runnable flag of an instance whose inbox is empty (a spurious wake-up).
    fn mark_idle(&self, id: &InstanceId) -> Result<(), StoreError>;
    /// Commits one activation (see [`ActivationCommit`]).
    fn commit_activation(&self, commit: ActivationCommit) -> Result<(), StoreError>;
    /// [`Store::commit_activation`] without blocking the caller: `done` receives the answer
    /// once the commit is durable (or failed), possibly on a store thread, so it must be
    /// quick. The default commits, then calls `done`.
    fn commit_activation_then(
        &self,
        commit: ActivationCommit,
        done: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
    ) {
        done(self.commit_activation(commit));
    }
    /// Marks an instance blocked, with the reason, and not runnable.
    fn block_instance(&self, id: &InstanceId, reason: &str, now_ms: u64) -> Result<(), StoreError>;

    /// Leases up to `limit` activity attempts whose time has come. A lease lasts the
    /// attempt's start-to-close timeout (`default_timeout_ms` when it sets none) plus
    /// `lease_slack_ms`, so a healthy attempt is never claimed twice.
    fn claim_activities(
        &self,
        now_ms: u64,
        limit: u32,
        lease_slack_ms: u64,
        default_timeout_ms: u64,
    ) -> Result<Vec<ActivityTask>, StoreError>;
    /// Records how a claimed attempt ended. Returns false (and changes nothing) when that
    /// attempt is no longer the current one.
    fn resolve_activity(
        &self,
        instance: &InstanceId,
        seq: u32,
        attempt: u32,
        resolution: ActivityResolution,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Writes the heartbeat details of a running attempt. Returns false (and changes
    /// nothing) when that attempt is no longer the current one: the activity was cancelled,
    /// its instance ended or was terminated, or another attempt took over.
    fn record_heartbeat(
        &self,
        instance: &InstanceId,
        seq: u32,
        attempt: u32,
        details: &Payload,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// [`Store::resolve_activity`] without blocking the caller: `done` receives the answer
    /// once the write is durable (or failed), possibly on a store thread, so it must be
    /// quick. The default waits, then calls `done`.
    #[allow(clippy::too_many_arguments)]
    fn resolve_activity_then(
        &self,
        instance: &InstanceId,
        seq: u32,
        attempt: u32,
        resolution: ActivityResolution,
        now_ms: u64,
        done: Box<dyn FnOnce(Result<bool, StoreError>) + Send>,
    ) {
        done(self.resolve_activity(instance, seq, attempt, resolution, now_ms));
    }
    /// The activity attempts leased by a process that is gone, at the worker's start-up: for
    /// the only process using a SQLite file, every leased attempt; on a database several
    /// servers share, those of servers that are gone (never a live one's). The worker records each as a
    /// failed attempt (the retry policy decides what comes next), so a crash counts as an
    /// attempt in history, in `ActivityContext::attempt()` and in the retry state alike.
    fn lost_activities(&self) -> Result<Vec<ActivityTask>, StoreError>;
    /// While the worker runs (every second): the activity attempts leased by processes
    /// that have gone since, which the worker records as lost like [`Store::lost_activities`].
    /// A store with one process per database (SQLite) has none; a shared one (PostgreSQL)
    /// returns the attempts of servers that died, and frees their instances for the others.
    fn departed_activities(&self) -> Result<Vec<ActivityTask>, StoreError> {
        Ok(Vec::new())
    }
    /// Marks an instance closing after its closing commit was refused for input that
    /// arrived meanwhile: signals are refused (`NotAccepting`) until its next activation
    /// commits, which closes it or clears the mark. Bounds the redo of a final activation
    /// under a stream of signals to one.
    fn mark_closing(&self, id: &InstanceId) -> Result<(), StoreError>;
    /// Gives back claims whose attempts never started (a worker stopping cleanly before
    /// running what an activation claimed for it): each task is unleased at that attempt,
    /// for any worker to claim, and is not counted as a lost attempt.
    fn unclaim_activities(&self, tasks: &[(InstanceId, u32, u32)]) -> Result<(), StoreError>;
    /// Earliest time something is due (a timer, or an activity attempt), if any.
    fn next_due_ms(&self) -> Result<Option<u64>, StoreError>;
    /// Moves every timer due at `now_ms` into its instance's inbox. Returns how many fired.
    fn fire_due_timers(&self, now_ms: u64) -> Result<u64, StoreError>;

    /// Queues a signal for a running or blocked instance (blocked: delivered once it is
    /// unblocked).
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::NotAccepting`] for an ended or imported instance.
    fn signal(
        &self,
        id: &InstanceId,
        name: &str,
        input: &Payload,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// Queues a cancellation request. Returns false (and changes nothing) when one was
    /// requested before: a cancellation is delivered once.
    ///
    /// # Errors
    /// As for [`Store::signal`].
    fn request_cancel(
        &self,
        id: &InstanceId,
        reason: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Ends a running or blocked instance at once: appends `WorkflowTerminated`, drops its
    /// activities, timers and undelivered input, and marks it terminated, in one
    /// transaction. A worker mid-activation then fails to commit (history moved).
    ///
    /// # Errors
    /// As for [`Store::signal`].
    fn terminate(&self, id: &InstanceId, reason: &str, now_ms: u64) -> Result<(), StoreError>;

    /// Stores an exported history as an instance that never runs (no tasks, not runnable):
    /// for replay and inspection. Fails if the id exists.
    fn import_history(&self, export: &HistoryExport, now_ms: u64) -> Result<(), StoreError>;

    /// Ended instances (completed, failed, cancelled, terminated; not imported histories)
    /// whose last change is older than `before_ms`, oldest first, at most `limit`.
    fn ended_before(
        &self,
        before_ms: u64,
        workflow_type: Option<&str>,
        limit: u32,
    ) -> Result<Vec<InstanceId>, StoreError>;
    /// Deletes these instances and everything recorded of them (history, archived runs,
    /// inbox), each only if it is still ended, in one transaction; returns how many went.
    /// Lifecycle events stay, so the event stream keeps no gaps.
    fn purge_instances(&self, ids: &[InstanceId]) -> Result<u64, StoreError>;

    /// An instance's history in the export format.
    fn export_history(&self, id: &InstanceId) -> Result<Option<HistoryExport>, StoreError> {
        let Some(rec) = self.get_instance(id)? else {
            return Ok(None);
        };
        let events = self.load_history(id)?;
        Ok(Some(HistoryExport {
            format: EXPORT_FORMAT.into(),
            version: EXPORT_VERSION,
            instance_id: rec.id,
            workflow_type: rec.workflow_type,
            module_hash: rec.module_hash,
            status: rec.status,
            run: rec.run,
            events,
        }))
    }

    /// One run's history in the export format: an archived run (one that ended with
    /// continue-as-new, status `continued_as_new`), or the current run. `None` when the
    /// instance or that run does not exist.
    fn export_run(&self, id: &InstanceId, run: u32) -> Result<Option<HistoryExport>, StoreError> {
        match self.get_instance(id)? {
            Some(rec) if rec.run == run => self.export_history(id),
            Some(rec) if run < rec.run => self.archived_run(id, run),
            _ => Ok(None),
        }
    }
}
