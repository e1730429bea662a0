//! The task loops that run every runnable piece of work in the database.
//!
//! Three kinds of thread, all driven by the [`Store`], none holding state that is not
//! also durable:
//!
//! * **workflow threads** take runnable instances from a queue filled by a dispatcher,
//!   activate them (from the [`RunCache`] when the cached run is at the end of history,
//!   else rebuilt by replay) and commit the activation in one transaction;
//! * a **claim thread** claims activity attempts and starts each as a task on the
//!   activities' tokio runtime, where it runs in a fresh instance of the pinned module with
//!   the capabilities its grants give it ([`crate::config`]); an attempt waiting on the
//!   network holds no thread, so thousands can be in flight
//!   ([`WorkerConfig::max_activities`]). Its result is recorded, or its retry scheduled with
//!   backoff, from tokio's blocking pool;
//! * a **timer thread** moves due timers into their instances' inboxes.
//!
//! Because all of them commit through the store's single writer, many instances' commits
//! share one fsync (group commit) as concurrency grows.
//!
//! A crash loses only what was not committed: an activation is redone from history, an
//! activity attempt is run again (activities are at-least-once; their *results* are recorded
//! at most once, see [`crate::store`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pinion_abi::{ActivityInvocation, ActivityOutcome, Failure, ModuleChoice};

use crate::clock::Clock;
use crate::config::{Capabilities, GrantSource};
use crate::executor::{Checks, ExecError, ResolvedModule, WorkflowRun};
use crate::history::{EventKind, InstanceId, InstanceStatus, ModuleHash, Payload};
use crate::registry::{ModuleTarget, Registry};
use crate::sandbox::activity::AttemptControl;
use crate::sandbox::{Sandbox, SandboxError};
use crate::store::{
    ActivationCommit, ActivityResolution, ActivityTask, InstanceOutcome, NondeterminismPolicy,
    Store, StoreError,
};
use crate::telemetry::metrics::{metrics, AttemptOutcome as Ended, RunSource};

/// One line a guest wrote, tagged with where it came from.
#[derive(Debug, Clone)]
pub struct LogRecord<'a> {
    /// The instance.
    pub instance: &'a InstanceId,
    /// The module that ran (the instance's pinned module, or the one it was upgraded to).
    pub module: &'a ModuleHash,
    /// `"workflow"` or `"activity <type>"`.
    pub source: &'a str,
    /// The workflow type, for a workflow's output.
    pub workflow_type: Option<&'a str>,
    /// The attempt, for an activity's output.
    pub attempt: Option<u32>,
    /// 1 for stdout, 2 for stderr.
    pub stream: u8,
    /// The line, without its newline.
    pub line: &'a str,
}

/// Where guest output goes.
pub type LogSink = Arc<dyn Fn(&LogRecord<'_>) + Send + Sync>;

/// The default sink: each guest line becomes a `tracing` event of target `guest` at level
/// info, with the record's fields (see [`crate::telemetry`]).
pub fn tracing_sink() -> LogSink {
    Arc::new(|r: &LogRecord<'_>| {
        tracing::info!(
            target: "guest",
            instance = %r.instance,
            module = %r.module,
            source = r.source,
            workflow_type = r.workflow_type,
            attempt = r.attempt,
            stream = if r.stream == 1 { "stdout" } else { "stderr" },
            "{}",
            r.line
        );
    })
}

/// Worker settings. Defaults: 2 workflow threads, 1024 activity attempts in flight on 2
/// tokio threads, 1024 cached runs, 100 ms poll interval, 30 s activity lease slack, guest
/// output to the log ([`tracing_sink`]).
#[derive(Clone)]
pub struct WorkerConfig {
    /// Threads running workflow activations.
    pub workflow_threads: usize,
    /// Activity attempts in flight at once (each a tokio task, not a thread).
    pub max_activities: usize,
    /// Threads of the tokio runtime that runs activity code.
    pub activity_threads: usize,
    /// Live instances kept between activations.
    pub cache_capacity: usize,
    /// How often to look for work written by other processes.
    pub poll_interval: Duration,
    /// Lease on a claimed activity beyond its own timeout.
    pub activity_lease_slack: Duration,
    /// Guest output.
    pub log: LogSink,
    /// Run a new instance's first activation in [`crate::Pinion::start`] and commit it with
    /// the instance (one commit per start instead of two). Off, a start only creates the
    /// instance, and a workflow thread activates it: for workflows whose first activation
    /// is slow, which would otherwise make their start as slow.
    pub eager_start: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            workflow_threads: 2,
            max_activities: 1024,
            activity_threads: 2,
            cache_capacity: 1024,
            poll_interval: Duration::from_millis(100),
            activity_lease_slack: Duration::from_secs(30),
            log: tracing_sink(),
            eager_start: true,
        }
    }
}

/// A wake-up signal with a generation counter, so a notify between checks is not lost.
#[derive(Default)]
pub(crate) struct Notify {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl Notify {
    pub(crate) fn notify(&self) {
        *lock(&self.generation) += 1;
        self.cv.notify_all();
    }

    pub(crate) fn generation(&self) -> u64 {
        *lock(&self.generation)
    }

    /// Waits until notified after `seen`, or `timeout`.
    pub(crate) fn wait(&self, seen: u64, timeout: Duration) {
        let g = lock(&self.generation);
        let _ = self.cv.wait_timeout_while(g, timeout, |g| *g == seen);
    }
}

/// Live runs kept between activations, evicting the least recently used.
pub(crate) struct RunCache {
    capacity: usize,
    tick: u64,
    runs: HashMap<InstanceId, (u64, WorkflowRun)>,
}

impl RunCache {
    fn new(capacity: usize) -> RunCache {
        RunCache {
            capacity,
            tick: 0,
            runs: HashMap::new(),
        }
    }

    fn take(&mut self, id: &InstanceId) -> Option<WorkflowRun> {
        self.runs.remove(id).map(|(_, r)| r)
    }

    /// Puts a run back unless a worker thread cached a newer one meanwhile.
    fn put_if_absent(&mut self, id: InstanceId, run: WorkflowRun) {
        if !self.runs.contains_key(&id) {
            self.put(id, run);
        }
    }

    fn put(&mut self, id: InstanceId, run: WorkflowRun) {
        if self.capacity == 0 {
            return;
        }
        if self.runs.len() >= self.capacity {
            if let Some(oldest) = self
                .runs
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
            {
                self.runs.remove(&oldest);
            }
        }
        self.tick += 1;
        self.runs.insert(id, (self.tick, run));
    }
}

/// The workflow threads' work: instances to activate, the set taken (so no two threads
/// run one instance), and activations whose commit became durable, to finish.
#[derive(Default)]
struct Queue {
    ready: VecDeque<InstanceId>,
    taken: HashSet<InstanceId>,
    committed: Vec<Committed>,
    /// Final activity outcomes not written yet: each goes into its instance's next
    /// activation, committed with it (see [`deliver`]).
    deliveries: HashMap<InstanceId, Vec<Delivery>>,
    /// Instances the dispatcher found runnable in the database while a thread had them:
    /// queued again when released, so a release need not wake the dispatcher.
    skipped: HashSet<InstanceId>,
}

/// An activity's final outcome (completed, failed, timed out) held in memory for its
/// instance's next activation, which records it and deletes the task in its own commit:
/// one commit per step instead of one for the outcome and one for the activation.
struct Delivery {
    /// When the attempt started: the step ends when the outcome is durable in history.
    started: std::time::Instant,
    seq: u32,
    attempt: u32,
    event: EventKind,
}

/// An activation whose commit the store has answered.
struct Committed {
    id: InstanceId,
    after: AfterCommit,
    result: Result<(), StoreError>,
}

/// What an activation leaves to do once its commit is durable.
struct AfterCommit {
    run: WorkflowRun,
    scheduled: bool,
    timers: bool,
    cancelled: Vec<u32>,
    /// First attempts this process claimed in the commit itself (written leased), to
    /// start once it is durable; their slots in `activities_running` are taken already.
    handover: Vec<ActivityTask>,
    /// The outcomes this activation recorded; if its commit fails they are written the
    /// usual way ([`spill`]), so none is lost.
    delivered: Vec<Delivery>,
    /// The commit also creates the instance ([`start_eagerly`]).
    created: bool,
}

/// Shared by every worker thread.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub sandbox: Arc<Sandbox>,
    pub grants: Arc<GrantSource>,
    pub clock: Arc<dyn Clock>,
    pub config: WorkerConfig,
    pub stop: AtomicBool,
    pub workflow_wake: Notify,
    pub activity_wake: Notify,
    pub timer_wake: Notify,
    /// Notified only when the worker stops (for loops that otherwise just wait).
    stop_wake: Notify,
    /// Runnable instances waiting for a workflow thread, and the ones a thread took
    /// whose activation is not finished yet (running, or its commit not durable yet).
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    cache: Mutex<RunCache>,
    activities_running: AtomicUsize,
    /// Activation commits handed to the store whose callback has not come yet.
    commits_pending: AtomicUsize,
    /// Where activity attempts run.
    activity_rt: tokio::runtime::Handle,
    /// The attempts in flight, by instance and sequence number, so a workflow that cancels
    /// an activity reaches its running attempt.
    attempts: Mutex<HashMap<(InstanceId, u32), Arc<AttemptControl>>>,
}

impl Shared {
    /// Tells the running attempts of `id`'s activities `seqs` (all of them when `None`)
    /// that they are no longer wanted: each learns it at its next heartbeat.
    pub(crate) fn cancel_attempts(&self, id: &InstanceId, seqs: Option<&[u32]>) {
        let attempts = lock(&self.attempts);
        for ((instance, seq), control) in attempts.iter() {
            if instance == id && seqs.is_none_or(|s| s.contains(seq)) {
                control.cancel();
            }
        }
    }

    /// Takes the cached run of `id` if it is at the end of a history of `event_count`
    /// events (a query borrows it; [`Shared::return_cached`] gives it back).
    pub(crate) fn take_cached(&self, id: &InstanceId, event_count: u64) -> Option<WorkflowRun> {
        let mut cache = lock(&self.cache);
        let run = cache.take(id)?;
        if run.next_event_id() == event_count + 1 {
            Some(run)
        } else {
            None
        }
    }

    /// Gives back a run borrowed with [`Shared::take_cached`], or caches a freshly rebuilt
    /// one, unless a worker thread cached a newer run meanwhile.
    pub(crate) fn return_cached(&self, id: &InstanceId, run: WorkflowRun) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .put_if_absent(id.clone(), run);
    }
}

/// A running worker. Dropping it stops the threads (after their current task).
pub struct Worker {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    activities: Option<tokio::runtime::Runtime>,
}

/// The tokio runtime activity attempts run on: `threads` threads for activity code,
/// tokio's blocking pool for recording outcomes.
///
/// # Errors
/// When the OS refuses the threads.
pub fn activity_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("pinion-activity")
        .enable_all()
        .build()
}

/// How long shutdown waits for activity attempts in flight before abandoning them (they
/// run again after a restart: activities are at-least-once).
const ACTIVITY_GRACE: Duration = Duration::from_secs(10);

impl Worker {
    /// Starts the worker threads; activity attempts run on `activities` (see
    /// [`activity_runtime`]).
    ///
    /// # Errors
    /// When the store cannot release stale leases.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        sandbox: Arc<Sandbox>,
        grants: Arc<GrantSource>,
        clock: Arc<dyn Clock>,
        config: WorkerConfig,
        activities: tokio::runtime::Runtime,
    ) -> Result<Worker, StoreError> {
        // The attempts leased by processes that are gone (every lease of a SQLite file,
        // whose lock the caller holds; a dead peer's on PostgreSQL) ended without an
        // outcome.
        record_lost(&*store, &*clock, store.lost_activities()?)?;
        let shared = Arc::new(Shared {
            store,
            registry,
            sandbox,
            grants,
            clock,
            stop: AtomicBool::new(false),
            workflow_wake: Notify::default(),
            activity_wake: Notify::default(),
            timer_wake: Notify::default(),
            stop_wake: Notify::default(),
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            cache: Mutex::new(RunCache::new(config.cache_capacity)),
            activities_running: AtomicUsize::new(0),
            commits_pending: AtomicUsize::new(0),
            activity_rt: activities.handle().clone(),
            attempts: Mutex::new(HashMap::new()),
            config,
        });
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .expect("spawn worker thread")
        };
        let s = shared.clone();
        threads.push(spawn(
            "pinion-dispatch".into(),
            Box::new(move || dispatch_loop(&s)),
        ));
        for i in 0..shared.config.workflow_threads.max(1) {
            let s = shared.clone();
            threads.push(spawn(
                format!("pinion-workflow-{i}"),
                Box::new(move || workflow_loop(&s)),
            ));
        }
        let s = shared.clone();
        threads.push(spawn(
            "pinion-activity-claim".into(),
            Box::new(move || claim_loop(&s)),
        ));
        let s = shared.clone();
        threads.push(spawn(
            "pinion-timers".into(),
            Box::new(move || timer_loop(&s)),
        ));
        let s = shared.clone();
        threads.push(spawn(
            "pinion-members".into(),
            Box::new(move || departed_loop(&s)),
        ));
        Ok(Worker {
            shared,
            threads,
            activities: Some(activities),
        })
    }

    /// Wakes the workflow dispatcher (new instance started in this process).
    pub fn wake(&self) {
        self.shared.workflow_wake.notify();
    }

    /// The state shared by the worker's threads, for the engine in the same process.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops every thread after its current task and waits for them.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.workflow_wake.notify();
        self.shared.activity_wake.notify();
        self.shared.timer_wake.notify();
        self.shared.stop_wake.notify();
        self.shared.queue_cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.settle_memory();
        if let Some(rt) = self.activities.take() {
            // Attempts in flight finish if they can within the grace period; after it they
            // are abandoned, and their leases make them run again after a restart.
            #[allow(clippy::disallowed_methods)] // a shutdown grace period is real time
            let until = std::time::Instant::now() + ACTIVITY_GRACE;
            #[allow(clippy::disallowed_methods)]
            while self.shared.activities_running.load(Ordering::SeqCst) > 0
                && std::time::Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            rt.shutdown_background();
            // Outcomes of attempts that ended during the grace period and raced the stop.
            self.settle_memory();
        }
    }
}

impl Worker {
    /// After the workflow threads stopped: what only memory held is written, so a clean
    /// stop costs no attempt. Commits still in flight are waited for (bounded); the
    /// attempts claimed in them but never started are given back unleased; outcomes held
    /// for an activation that will not come now are written the usual way.
    fn settle_memory(&self) {
        let s = &self.shared;
        #[allow(clippy::disallowed_methods)] // a shutdown bound is real time
        let until = std::time::Instant::now() + Duration::from_secs(10);
        #[allow(clippy::disallowed_methods)]
        while s.commits_pending.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        let (committed, deliveries) = {
            let mut q = lock(&s.queue);
            (
                std::mem::take(&mut q.committed),
                std::mem::take(&mut q.deliveries),
            )
        };
        let mut unclaim = Vec::new();
        for c in committed {
            let n = c.after.handover.len();
            if c.result.is_ok() {
                unclaim.extend(
                    c.after
                        .handover
                        .iter()
                        .map(|t| (t.instance_id.clone(), t.seq, t.attempt)),
                );
            } else {
                write_outcomes(s, &c.id, c.after.delivered);
            }
            s.activities_running.fetch_sub(n, Ordering::SeqCst);
        }
        if !unclaim.is_empty() {
            if let Err(e) = s.store.unclaim_activities(&unclaim) {
                report("giving back claimed activities at shutdown", &e);
            }
        }
        for (id, held) in deliveries {
            write_outcomes(s, &id, held);
        }
    }
}

/// Writes held outcomes now, waiting for each (at shutdown; see [`spill`]).
fn write_outcomes(s: &Shared, id: &InstanceId, deliveries: Vec<Delivery>) {
    let now = s.clock.now_ms();
    for d in deliveries {
        if let Err(e) = s.store.resolve_activity(
            id,
            d.seq,
            d.attempt,
            ActivityResolution::Resolve(d.event),
            now,
        ) {
            report(
                &format!("recording activity {} of {id} at shutdown", d.seq),
                &e,
            );
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// Locks `m`, also after a thread panicked while holding it: the worker contains panics
/// (see [`contain`]) and goes on, so a poisoned lock must not take every thread down too.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `step` until the worker stops. A panic in a step (a bug in pinion) is reported and
/// the loop goes on after a pause, instead of ending the thread and silently stopping
/// that part of the worker (dispatch, claims or timers) until a restart.
fn keep_running(stop: &AtomicBool, name: &str, mut step: impl FnMut()) {
    while !stop.load(Ordering::SeqCst) {
        if let Err(panic) = contain(&mut step) {
            report(
                name,
                &format!("panicked (a bug in pinion; please report it), going on: {panic}"),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn stopping(s: &Shared) -> bool {
    s.stop.load(Ordering::SeqCst)
}

fn report(context: &str, e: &dyn std::fmt::Display) {
    tracing::warn!("{context}: {e}");
}

fn dispatch_loop(s: &Shared) {
    // The queue is refilled from the database only when it runs low: with thousands of
    // runnable instances, reading 512 ids after every activation cost more than the
    // activations themselves.
    let low_water = (s.config.workflow_threads.max(1) * 16).max(64);
    keep_running(&s.stop, "dispatching instances", || {
        let seen = s.workflow_wake.generation();
        let pending = lock(&s.queue).ready.len();
        if pending < low_water {
            match s.store.runnable_instances(512) {
                Ok(ids) => {
                    let mut q = lock(&s.queue);
                    for id in ids {
                        if q.taken.insert(id.clone()) {
                            q.ready.push_back(id);
                        } else {
                            q.skipped.insert(id);
                        }
                    }
                    drop(q);
                    s.queue_cv.notify_all();
                }
                Err(e) => report("listing runnable instances", &e),
            }
        }
        s.workflow_wake.wait(seen, s.config.poll_interval);
    });
}

/// Takes runnable instances and activates them. A thread does not wait for an activation's
/// commit to be durable: it hands the commit to the store and goes on with the next
/// instance, and finishes the activation (caches the run, wakes the activity and timer
/// threads, frees the instance for the next activation) when the store calls back. So the
/// activations of many instances share each fsync however few threads there are.
fn workflow_loop(s: &Arc<Shared>) {
    loop {
        let next = {
            let mut q = lock(&s.queue);
            loop {
                if stopping(s) {
                    return;
                }
                if !q.committed.is_empty() {
                    break Err(std::mem::take(&mut q.committed));
                }
                if let Some(id) = q.ready.pop_front() {
                    break Ok(id);
                }
                q = s
                    .queue_cv
                    .wait_timeout(q, s.config.poll_interval)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
        };
        let id = match next {
            Ok(id) => id,
            Err(committed) => {
                for c in committed {
                    let id = c.id.clone();
                    if let Err(panic) = contain(|| finish(s, c)) {
                        // The commit is durable; only the bookkeeping after it failed. Drop
                        // the cached run (the next activation rebuilds it by replay) and
                        // free the instance.
                        report(
                            &format!("instance {id}"),
                            &format!("the engine panicked after a commit (a bug in pinion; please report it): {panic}"),
                        );
                        lock(&s.cache).take(&id);
                        release_to_retry(s, &id);
                    }
                }
                continue;
            }
        };
        let deliveries = lock(&s.queue).deliveries.remove(&id).unwrap_or_default();
        let processed = match contain(|| process_instance(s, &id, &deliveries)) {
            Ok(r) => r,
            Err(panic) => {
                // A bug, not the instance's fault; but running it again would panic again.
                report(
                    &format!("instance {id}"),
                    &format!("the engine panicked: {panic}"),
                );
                spill(s, &id, deliveries);
                let _ = s.store.block_instance(
                    &id,
                    &format!("the engine panicked while activating it (a bug in pinion; please report it): {panic}"),
                    s.clock.now_ms(),
                );
                lock(&s.cache).take(&id);
                release(s, &id);
                continue;
            }
        };
        match processed {
            Ok(Some((commit, mut after))) => {
                after.delivered = deliveries;
                let s2 = s.clone();
                s.commits_pending.fetch_add(1, Ordering::SeqCst);
                s.store.commit_activation_then(
                    commit,
                    Box::new(move |result| {
                        let mut q = lock(&s2.queue);
                        q.committed.push(Committed { id, after, result });
                        drop(q);
                        s2.commits_pending.fetch_sub(1, Ordering::SeqCst);
                        s2.queue_cv.notify_one();
                    }),
                );
            }
            Ok(None) => {
                spill(s, &id, deliveries);
                release(s, &id);
            }
            Err(e) => {
                spill(s, &id, deliveries);
                handle_error(s, &id, e);
                release_to_retry(s, &id);
            }
        }
    }
}

/// Holds an activity's final outcome for its instance's next activation, and queues the
/// instance (unless a workflow thread has it already: then it is queued again when that
/// thread releases it). Once the worker is stopping, the outcome is written at once
/// instead, since no workflow thread may be left to take it.
fn deliver(s: &Arc<Shared>, task: &ActivityTask, event: EventKind, started: std::time::Instant) {
    let d = Delivery {
        started,
        seq: task.seq,
        attempt: task.attempt,
        event,
    };
    if stopping(s) {
        spill(s, &task.instance_id, vec![d]);
        return;
    }
    let mut q = lock(&s.queue);
    q.deliveries
        .entry(task.instance_id.clone())
        .or_default()
        .push(d);
    if q.taken.insert(task.instance_id.clone()) {
        q.ready.push_back(task.instance_id.clone());
        drop(q);
        s.queue_cv.notify_one();
    }
}

/// Writes held outcomes the usual way, each in its own write: recorded into the inbox if
/// the attempt is still current (the instance runs it in a later activation), discarded if
/// not (the activity was cancelled, the instance ended).
fn spill(s: &Arc<Shared>, id: &InstanceId, deliveries: Vec<Delivery>) {
    let now = s.clock.now_ms();
    for d in deliveries {
        let (s2, id2, seq) = (s.clone(), id.clone(), d.seq);
        s.store.resolve_activity_then(
            id,
            d.seq,
            d.attempt,
            ActivityResolution::Resolve(d.event),
            now,
            Box::new(move |recorded| match recorded {
                Ok(true) => s2.workflow_wake.notify(),
                Ok(false) => {}
                Err(e) => report(&format!("recording activity {seq} of {id2}"), &e),
            }),
        );
    }
}

/// Frees `id` for its next activation, or queues it again at once when outcomes arrived
/// for it, or the dispatcher found it runnable, while it was taken. The dispatcher is not
/// woken (that cost a database read per step): it has nothing to find.
fn release(s: &Shared, id: &InstanceId) {
    let mut q = lock(&s.queue);
    if q.deliveries.contains_key(id) || q.skipped.remove(id) {
        q.ready.push_back(id.clone());
        drop(q);
        s.queue_cv.notify_one();
        return;
    }
    q.taken.remove(id);
}

/// [`release`] after an activation that failed: the instance may still be runnable in the
/// database (a conflict, a lock held too long), so the dispatcher looks again.
fn release_to_retry(s: &Shared, id: &InstanceId) {
    release(s, id);
    s.workflow_wake.notify();
}

/// Finishes an activation whose commit the store answered.
fn finish(s: &Arc<Shared>, c: Committed) {
    let Committed {
        id,
        mut after,
        result,
    } = c;
    let handover = std::mem::take(&mut after.handover);
    let delivered = std::mem::take(&mut after.delivered);
    if after.created && result.is_err() {
        // Nothing was written, and the id belongs to whoever holds it (a start that raced
        // this one): only this start's claims are given back.
        if !handover.is_empty() {
            s.activities_running
                .fetch_sub(handover.len(), Ordering::SeqCst);
        }
        release(s, &id);
        return;
    }
    match result {
        Ok(()) => {
            for d in &delivered {
                metrics().step(d.started.elapsed());
            }
            for task in handover {
                s.activity_rt
                    .spawn(contained_attempt(Arc::clone(s), Arc::new(task)));
            }
            if !after.run.is_closed() {
                s.cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .put(id.clone(), after.run);
            }
            if !after.cancelled.is_empty() {
                s.cancel_attempts(&id, Some(&after.cancelled));
            }
            if after.scheduled {
                s.activity_wake.notify();
            }
            if after.timers {
                s.timer_wake.notify();
            }
        }
        // The run is ahead of the durable history: drop it; the next activation rebuilds.
        Err(e) => {
            if !handover.is_empty() {
                s.activities_running
                    .fetch_sub(handover.len(), Ordering::SeqCst);
                s.activity_wake.notify();
            }
            // The outcomes it carried are written on their own: the attempt that is no
            // longer current is discarded there, the others reach a later activation.
            spill(s, &id, delivered);
            // A closing activation refused for input that arrived while it ran is redone
            // with that input; meanwhile no more signals are taken, or a steady stream of
            // them would refuse every redo.
            if after.run.is_closed() && matches!(e, StoreError::Conflict(_)) {
                if let Err(e) = s.store.mark_closing(&id) {
                    report(&format!("marking instance {id} closing"), &e);
                }
            }
            handle_error(s, &id, e);
            release_to_retry(s, &id);
            return;
        }
    }
    release(s, &id);
}

fn handle_error(s: &Shared, id: &InstanceId, e: StoreError) {
    match e {
        e if e.is_retryable() => {}
        // Errors that retrying cannot fix (undecodable data, a commit that violates a
        // constraint) would re-run the instance forever: park it where an operator sees
        // it instead.
        e @ (StoreError::Corrupt(_)
        | StoreError::AlreadyExists(_)
        | StoreError::Constraint(_)
        | StoreError::NotFound(_)) => {
            report(&format!("instance {id} blocked"), &e);
            let _ = s.store.block_instance(
                id,
                &format!("cannot commit the instance's state: {e}"),
                s.clock.now_ms(),
            );
        }
        e => {
            // Database trouble (disk full, I/O): back off instead of spinning.
            report(&format!("instance {id}"), &e);
            std::thread::sleep(s.config.poll_interval);
        }
    }
}

/// Runs one activation of `id`, if it has input waiting, and returns its commit and what is
/// left to do once that is durable (`None` when there was nothing to do or the instance
/// was blocked).
fn process_instance(
    s: &Shared,
    id: &InstanceId,
    deliveries: &[Delivery],
) -> Result<Option<(ActivationCommit, AfterCommit)>, StoreError> {
    let Some((rec, inbox)) = s.store.activation_input(id)? else {
        // Gone, or another server's (on a shared database): a cached copy is stale.
        lock(&s.cache).take(id);
        return Ok(None);
    };
    if rec.status != InstanceStatus::Running {
        lock(&s.cache).take(id);
        return Ok(None);
    }
    let cached = lock(&s.cache).take(id);
    let (run, recorded_pending, source) = match cached {
        Some(run) if run.next_event_id() == rec.event_count + 1 => {
            (run, Vec::new(), RunSource::Hit)
        }
        _ => {
            let history = s.store.load_history(id)?;
            let module = match s.registry.load(&rec.module_hash) {
                Ok(m) => m,
                Err(e) => {
                    return s
                        .store
                        .block_instance(
                            id,
                            &format!("cannot load pinned module: {e}"),
                            s.clock.now_ms(),
                        )
                        .map(|()| None)
                }
            };
            match WorkflowRun::rebuild(&s.sandbox, &module, id, &history, Checks::default()) {
                Ok((run, pending)) => (
                    run,
                    pending.into_iter().map(|e| e.kind).collect::<Vec<_>>(),
                    RunSource::Replay,
                ),
                Err(e) => return block(s, id, &e).map(|()| None),
            }
        }
    };
    let recorded = recorded_pending.len();
    let mut inputs = recorded_pending;
    inputs.extend(inbox.iter().map(|e| e.kind.clone()));
    inputs.extend(deliveries.iter().map(|d| d.event.clone()));
    if inputs.is_empty() {
        s.store.mark_idle(id)?;
        lock(&s.cache).put(id.clone(), run);
        return Ok(None);
    }
    let now = s.clock.now_ms();
    let step = Step {
        module: &rec.module_hash,
        source,
        event_count: rec.event_count,
        inputs,
        recorded,
        consumed_inbox: inbox.iter().map(|e| e.id).collect(),
        resolved_activities: deliveries.iter().map(|d| (d.seq, d.attempt)).collect(),
        now,
    };
    match activate(s, id, run, step) {
        Ok(prepared) => Ok(Some(prepared)),
        Err(e) => block(s, id, &e).map(|()| None),
    }
}

/// One activation's input, for [`activate`].
struct Step<'a> {
    module: &'a ModuleHash,
    /// Where the live instance came from (for the metrics).
    source: RunSource,
    /// Events in history before this activation.
    event_count: u64,
    /// Recorded but undelivered events first (`recorded` of them), then new input.
    inputs: Vec<EventKind>,
    recorded: usize,
    consumed_inbox: Vec<i64>,
    resolved_activities: Vec<(u32, u32)>,
    now: u64,
}

/// Runs `run`'s next activation over `step`'s inputs and builds its commit, claiming the
/// new activities it has slots for.
///
/// # Errors
/// The activation failed (a divergence, a trap, fuel): the instance must be blocked.
fn activate(
    s: &Shared,
    id: &InstanceId,
    mut run: WorkflowRun,
    step: Step<'_>,
) -> Result<(ActivationCommit, AfterCommit), ExecError> {
    let _span = tracing::debug_span!(
        "activation",
        instance = %id,
        workflow_type = run.workflow_type(),
        module = %step.module,
        event = step.event_count + 1,
    )
    .entered();
    let resolve = |choice: &ModuleChoice, id: &str, workflow_type: &str| {
        resolve_module(s, step.module, choice, id, workflow_type)
    };
    #[allow(clippy::disallowed_methods)] // an activation's duration is real time
    let started = std::time::Instant::now();
    let mut live = run.run_live(&step.inputs, step.recorded, step.now, &resolve)?;
    metrics().activation(step.source, started.elapsed());
    emit(
        s,
        OutputOf {
            instance: id,
            module: step.module,
            source: "workflow",
            workflow_type: Some(run.workflow_type()),
            attempt: None,
        },
        &live.output,
    );
    let cancelled = live.cancelled_activities.clone();
    let handover = if matches!(live.outcome, InstanceOutcome::Running) {
        claim_in_commit(s, step.module, id, &mut live.new_activities, step.now)
    } else {
        Vec::new()
    };
    // The claim thread is woken only for tasks left for it.
    let scheduled = live.new_activities.len() > handover.len();
    let timers = !live.new_timers.is_empty();
    let commit = ActivationCommit {
        instance_id: id.clone(),
        create: None,
        expected_next_event: step.event_count + 1,
        events: live.events,
        consumed_inbox: step.consumed_inbox,
        resolved_activities: step.resolved_activities,
        new_activities: live.new_activities,
        new_timers: live.new_timers,
        cancelled_timers: live.cancelled_timers,
        cancelled_activities: live.cancelled_activities,
        new_children: live.new_children,
        cancelled_children: live.cancelled_children,
        outcome: live.outcome,
        now_ms: step.now,
    };
    Ok((
        commit,
        AfterCommit {
            run,
            scheduled,
            timers,
            cancelled,
            handover,
            delivered: Vec::new(),
            created: false,
        },
    ))
}

/// What [`start_eagerly`] did.
pub(crate) enum EagerStart {
    /// The instance and its first activation are durable, in one commit.
    Committed,
    /// The first activation failed: nothing was written; the caller creates the instance
    /// and blocks it with this error, rather than let a worker run it a second time.
    Failed(ExecError),
    /// Nothing was written (the worker is stopping, the module does not load, the id is
    /// in use in this process, ...): the caller creates the instance the usual way.
    NotRun,
}

/// Starts an instance on the calling thread: runs its first activation at once and commits
/// the instance, its `WorkflowStarted` event and that activation in one transaction (through
/// the group-commit writer), waiting until it is durable. A start then costs one commit
/// instead of two (create, then activate) and no hand-off to a workflow thread; the
/// activities it scheduled start as soon as the commit is durable.
///
/// # Errors
/// The commit failed (an id already in use: [`StoreError::AlreadyExists`]); nothing was
/// written.
pub(crate) fn start_eagerly(
    s: &Arc<Shared>,
    id: &InstanceId,
    started: &EventKind,
    now: u64,
) -> Result<EagerStart, StoreError> {
    let EventKind::WorkflowStarted { module_hash, .. } = started else {
        return Ok(EagerStart::NotRun);
    };
    if stopping(s) || !lock(&s.queue).taken.insert(id.clone()) {
        return Ok(EagerStart::NotRun);
    }
    let first = contain(|| -> Result<_, Option<ExecError>> {
        let module = s.registry.load(module_hash).map_err(|_| None)?;
        let history = [crate::history::HistoryEvent {
            id: 1,
            time_ms: now,
            kind: started.clone(),
        }];
        let (run, pending) =
            WorkflowRun::rebuild(&s.sandbox, &module, id, &history, Checks::default())
                .map_err(Some)?;
        let step = Step {
            module: module_hash,
            source: RunSource::New,
            event_count: 1,
            recorded: pending.len(),
            inputs: pending.into_iter().map(|e| e.kind).collect(),
            consumed_inbox: Vec::new(),
            resolved_activities: Vec::new(),
            now,
        };
        activate(s, id, run, step).map_err(Some)
    });
    let (mut commit, mut after) = match first {
        Ok(Ok(prepared)) => prepared,
        // Still taken: no workflow thread runs it before the caller has blocked it.
        Ok(Err(Some(failed))) => return Ok(EagerStart::Failed(failed)),
        Ok(Err(None)) | Err(_) => {
            release(s, id);
            return Ok(EagerStart::NotRun);
        }
    };
    commit.create = Some(started.clone());
    after.created = true;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let s2 = s.clone();
    let id2 = id.clone();
    s.commits_pending.fetch_add(1, Ordering::SeqCst);
    s.store.commit_activation_then(
        commit,
        Box::new(move |result| {
            // The caller is answered as soon as the commit is durable (or refused); the
            // bookkeeping after it is a workflow thread's, as for any activation.
            let _ = tx.send(result.clone());
            let mut q = lock(&s2.queue);
            q.committed.push(Committed {
                id: id2,
                after,
                result,
            });
            drop(q);
            s2.commits_pending.fetch_sub(1, Ordering::SeqCst);
            s2.queue_cv.notify_one();
        }),
    );
    match rx.recv() {
        Ok(Ok(())) => Ok(EagerStart::Committed),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(StoreError::Database(
            "the worker stopped before the start was committed".into(),
        )),
    }
}

/// After [`EagerStart::Failed`]: blocks the instance the caller has just created (when
/// `failed` is given; `None` when creating it failed) with the first activation's error,
/// as a workflow thread would have, and frees the id [`start_eagerly`] kept taken.
pub(crate) fn block_failed_start(s: &Shared, id: &InstanceId, failed: Option<&ExecError>) {
    if let Some(e) = failed {
        if let Err(stored) = block(s, id, e) {
            report(&format!("blocking instance {id}"), &stored);
        }
    }
    release(s, id);
}

/// Claims, within the activation's own commit, as many of its new activities as there
/// are free attempt slots: each is written leased (attempt 1 started) and returned, to be
/// run by this process once the commit is durable. This saves each step a claim (a read
/// and a separate write) and the hand-off through the claim thread; the lease means the
/// same as a claimed one (a crash counts the attempt as lost, see `Store::lost_activities`).
fn claim_in_commit(
    s: &Shared,
    module: &ModuleHash,
    id: &InstanceId,
    new: &mut [crate::store::NewActivityTask],
    now: u64,
) -> Vec<ActivityTask> {
    let free = s
        .config
        .max_activities
        .max(1)
        .saturating_sub(s.activities_running.load(Ordering::SeqCst));
    let n = free.min(new.len());
    if n == 0 {
        return Vec::new();
    }
    s.activities_running.fetch_add(n, Ordering::SeqCst);
    let slack = s.config.activity_lease_slack.as_millis() as u64;
    let default_timeout = s.sandbox.limits().default_activity_timeout.as_millis() as u64;
    new[..n]
        .iter_mut()
        .map(|a| {
            let timeout = a
                .options
                .start_to_close_timeout_ms
                .unwrap_or(default_timeout);
            a.lease_until_ms = Some(now + slack + timeout);
            ActivityTask {
                instance_id: id.clone(),
                module_hash: module.clone(),
                seq: a.seq,
                activity_type: a.activity_type.clone(),
                input: a.input.clone(),
                options: a.options.clone(),
                attempt: 1,
                heartbeat_details: None,
            }
        })
        .collect()
}

/// Resolves the module a child or a continued run asks for (see
/// [`crate::executor::ModuleResolver`]).
fn resolve_module(
    s: &Shared,
    current: &ModuleHash,
    choice: &ModuleChoice,
    id: &str,
    workflow_type: &str,
) -> Result<ResolvedModule, String> {
    let target = match choice {
        ModuleChoice::Current => ModuleTarget::Module(&current.0),
        ModuleChoice::Module(spec) => ModuleTarget::Module(spec),
        ModuleChoice::Alias(name) => ModuleTarget::Alias(name),
    };
    let module = s
        .registry
        .resolve_target(target, id, workflow_type)
        .map_err(|e| e.to_string())?;
    Ok((module.hash, module.manifest.version_label))
}

/// Stops an instance that cannot go on: blocked (waiting for an upgrade), or failed when
/// its workflow type's non-determinism policy says `fail` and the cause is a divergence.
fn block(s: &Shared, id: &InstanceId, e: &ExecError) -> Result<(), StoreError> {
    if let ExecError::Nondeterminism(_) = e {
        if let Some(rec) = s.store.get_instance(id)? {
            if s.store.policy(&rec.module_hash, &rec.workflow_type)? == NondeterminismPolicy::Fail {
                report(&format!("instance {id} failed (policy fail)"), e);
                let failure = pinion_abi::Failure {
                    kind: "Nondeterminism".into(),
                    message: e.to_string(),
                    non_retryable: true,
                    attempts: 0,
                };
                return s.store.fail_instance(id, &failure, s.clock.now_ms());
            }
        }
    }
    report(&format!("instance {id} blocked"), e);
    s.store.block_instance(id, &e.to_string(), s.clock.now_ms())
}

/// Where a guest's output came from, for [`emit`].
struct OutputOf<'a> {
    instance: &'a InstanceId,
    module: &'a ModuleHash,
    source: &'a str,
    workflow_type: Option<&'a str>,
    attempt: Option<u32>,
}

fn emit(s: &Shared, of: OutputOf<'_>, (stdout, stderr): &(Vec<u8>, Vec<u8>)) {
    for (stream, bytes) in [(1u8, stdout), (2u8, stderr)] {
        for line in String::from_utf8_lossy(bytes).lines() {
            (s.config.log)(&LogRecord {
                instance: of.instance,
                module: of.module,
                source: of.source,
                workflow_type: of.workflow_type,
                attempt: of.attempt,
                stream,
                line,
            });
        }
    }
}

fn claim_loop(s: &Arc<Shared>) {
    let slack = s.config.activity_lease_slack.as_millis() as u64;
    keep_running(&s.stop, "claiming activities", || {
        let seen = s.activity_wake.generation();
        let free = s
            .config
            .max_activities
            .max(1)
            .saturating_sub(s.activities_running.load(Ordering::SeqCst));
        let mut claimed = 0;
        if free > 0 {
            match s.store.claim_activities(
                s.clock.now_ms(),
                free.min(512) as u32,
                slack,
                s.sandbox.limits().default_activity_timeout.as_millis() as u64,
            ) {
                Ok(tasks) => {
                    claimed = tasks.len();
                    for t in tasks {
                        s.activities_running.fetch_add(1, Ordering::SeqCst);
                        s.activity_rt
                            .spawn(contained_attempt(s.clone(), Arc::new(t)));
                    }
                }
                Err(e) => report("claiming activities", &e),
            }
        }
        if claimed == 0 {
            s.activity_wake
                .wait(seen, s.config.poll_interval.min(Duration::from_millis(50)));
        }
    });
}

/// Runs [`attempt`] so that a panic in the engine while running it (a bug) is recorded as a
/// failed attempt, retried by its policy, instead of leaving it leased until a restart.
async fn contained_attempt(s: Arc<Shared>, task: Arc<ActivityTask>) {
    use futures_util::FutureExt;
    use tracing::Instrument;
    let span = tracing::debug_span!(
        "attempt",
        instance = %task.instance_id,
        activity_type = %task.activity_type,
        seq = task.seq,
        attempt = task.attempt,
        module = %task.module_hash,
    );
    let run = std::panic::AssertUnwindSafe(attempt(s.clone(), task.clone()).instrument(span));
    let Err(panic) = run.catch_unwind().await else {
        return;
    };
    let message = panic_message(panic.as_ref());
    report(
        &format!("activity {} of {}", task.seq, task.instance_id),
        &format!(
            "the engine panicked while running attempt {}: {message}",
            task.attempt
        ),
    );
    s.attempts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&(task.instance_id.clone(), task.seq));
    let now = s.clock.now_ms();
    let outcome = AttemptOutcome {
        result: Err(Failure {
            kind: "EnginePanicked".into(),
            message: format!("the engine panicked while running this attempt (a bug in pinion; please report it): {message}"),
            non_retryable: false,
            attempts: task.attempt,
        }),
        timed_out: false,
    };
    let resolution = resolution_of(&task, outcome, None, now);
    if let Err(e) =
        s.store
            .resolve_activity(&task.instance_id, task.seq, task.attempt, resolution, now)
    {
        report("recording a panicked attempt", &e);
    }
    s.activities_running.fetch_sub(1, Ordering::SeqCst);
    s.activity_wake.notify();
    s.workflow_wake.notify();
}

/// What a panic said.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// Runs `f`, turning a panic into an error carrying its message.
fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()))
}

/// One activity attempt, from claim to recorded outcome.
async fn attempt(s: Arc<Shared>, task: Arc<ActivityTask>) {
    #[allow(clippy::disallowed_methods)] // a step's duration is real time
    let started = std::time::Instant::now();
    let key = (task.instance_id.clone(), task.seq);
    let control = attempt_control(&s, &task);
    s.attempts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key.clone(), control.clone());
    let outcome = run_attempt(&s, &task, control.clone()).await;
    lock(&s.attempts).remove(&key);
    let now = s.clock.now_ms();
    let details = control
        .last_details()
        .and_then(|d| Payload::from_json_bytes(&d).ok());
    let resolution = resolution_of(&task, outcome, details, now);
    if let ActivityResolution::Resolve(event) = resolution {
        // A final outcome goes to the instance's next activation, which records it in its
        // own commit; the attempt's slot is free now.
        deliver(&s, &task, event, started);
        free_slot(&s);
        return;
    }
    // A retry is recorded without parking a thread on the commit: the store calls back
    // once it is durable, and the bookkeeping there is a counter and a notification.
    let s2 = s.clone();
    let (seq, id) = (task.seq, task.instance_id.clone());
    s.store.resolve_activity_then(
        &task.instance_id,
        task.seq,
        task.attempt,
        resolution,
        now,
        Box::new(move |recorded| {
            if let Err(e) = recorded {
                report(&format!("recording activity {seq} of {id}"), &e);
            }
            // The retry may be due at once (no backoff): the claim thread looks now.
            s2.activities_running.fetch_sub(1, Ordering::SeqCst);
            s2.activity_wake.notify();
        }),
    );
}

/// Frees the slot of an attempt that ended for good; wakes the claim thread only if every
/// slot was taken (it may have tasks waiting for one): otherwise this gives it nothing new
/// to find, and waking it cost a database read per step.
fn free_slot(s: &Shared) {
    let before = s.activities_running.fetch_sub(1, Ordering::SeqCst);
    if before >= s.config.max_activities.max(1) {
        s.activity_wake.notify();
    }
}

/// The failure kind of an attempt whose process stopped before it finished.
pub const LOST_KIND: &str = "AttemptLost";

/// How an attempt ended, before the retry policy is applied.
struct AttemptOutcome {
    result: Result<Payload, Failure>,
    timed_out: bool,
}

/// The attempt's control: its heartbeat timeout, and heartbeat details written through
/// the store from tokio's blocking pool. A write that finds the attempt no longer current
/// (the activity was cancelled, the instance ended or was terminated) cancels it.
fn attempt_control(s: &Arc<Shared>, task: &ActivityTask) -> Arc<AttemptControl> {
    let timeout = task.options.heartbeat_timeout_ms.map(Duration::from_millis);
    Arc::new_cyclic(|me: &std::sync::Weak<AttemptControl>| {
        let (me, s) = (me.clone(), s.clone());
        let (id, seq, attempt) = (task.instance_id.clone(), task.seq, task.attempt);
        AttemptControl::new(timeout, move |details| {
            let Ok(details) = Payload::from_json_bytes(&details) else {
                return;
            };
            let (me, s, id) = (me.clone(), s.clone(), id.clone());
            tokio::task::spawn_blocking(move || {
                let now = s.clock.now_ms();
                match s.store.record_heartbeat(&id, seq, attempt, &details, now) {
                    Ok(true) => {}
                    Ok(false) => {
                        if let Some(control) = me.upgrade() {
                            control.cancel();
                        }
                    }
                    Err(e) => report(
                        &format!("recording a heartbeat of activity {seq} of {id}"),
                        &e,
                    ),
                }
            });
        })
    })
}

async fn run_attempt(
    s: &Shared,
    task: &ActivityTask,
    control: Arc<AttemptControl>,
) -> AttemptOutcome {
    #[allow(clippy::disallowed_methods)] // an attempt's duration is real time
    let started = std::time::Instant::now();
    let failure = |kind: &str, message: String, non_retryable: bool| Failure {
        kind: kind.into(),
        message,
        non_retryable,
        attempts: task.attempt,
    };
    let module = match s.registry.load(&task.module_hash) {
        Ok(m) => m,
        Err(e) => {
            return AttemptOutcome {
                result: Err(failure("ModuleUnavailable", e.to_string(), true)),
                timed_out: false,
            }
        }
    };
    let caps = capabilities(s, &task.module_hash, &task.activity_type);
    let source = format!("activity {}", task.activity_type);
    let timeout = task
        .options
        .start_to_close_timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(s.sandbox.limits().default_activity_timeout);
    let invocation = ActivityInvocation {
        activity_type: task.activity_type.clone(),
        input: task.input.as_bytes().to_vec(),
        attempt: task.attempt,
        instance_id: task.instance_id.0.clone(),
        seq: task.seq,
        heartbeat_details: task
            .heartbeat_details
            .as_ref()
            .map(|d| d.as_bytes().to_vec()),
    };
    let run = s
        .sandbox
        .run_activity(
            &module,
            &task.module_hash.0,
            &invocation,
            timeout,
            caps,
            control,
        )
        .await;
    emit(
        s,
        OutputOf {
            instance: &task.instance_id,
            module: &task.module_hash,
            source: &source,
            workflow_type: None,
            attempt: Some(task.attempt),
        },
        &(run.stdout, run.stderr),
    );
    let (result, timed_out) = match run.result {
        Ok(ActivityOutcome::Completed(bytes)) => match Payload::from_json_bytes(&bytes) {
            Ok(p) => (Ok(p), false),
            Err(e) => (
                Err(failure(
                    "InvalidOutput",
                    format!("activity result is not JSON: {e}"),
                    true,
                )),
                false,
            ),
        },
        Ok(ActivityOutcome::Failed(f)) => (
            Err(Failure {
                attempts: task.attempt,
                ..f
            }),
            false,
        ),
        Err(SandboxError::Timeout(t)) => (
            Err(failure(
                "StartToCloseTimeout",
                format!("attempt {} ran past {t:?}", task.attempt),
                false,
            )),
            true,
        ),
        Err(SandboxError::HeartbeatTimeout(t)) => (
            Err(failure(
                "HeartbeatTimeout",
                format!(
                    "attempt {} sent no heartbeat for {t:?} (its heartbeat timeout)",
                    task.attempt
                ),
                false,
            )),
            true,
        ),
        Err(e @ SandboxError::Setup(_)) => {
            (Err(failure("ActivitySetup", e.to_string(), false)), false)
        }
        Err(e) => (Err(failure("ActivityTrapped", e.to_string(), false)), false),
    };
    let ended = match (&result, timed_out) {
        (Ok(_), _) => Ended::Completed,
        (Err(_), true) => Ended::TimedOut,
        (Err(_), false) => Ended::Failed,
    };
    metrics().attempt(ended, started.elapsed());
    AttemptOutcome { result, timed_out }
}

/// What the grants in force give an attempt of `activity_type` from module `hash`.
fn capabilities(s: &Shared, hash: &ModuleHash, activity_type: &str) -> Arc<Capabilities> {
    let grants = s.grants.current();
    if grants.is_empty() {
        return Arc::new(Capabilities::default());
    }
    let facts = match s.registry.facts(hash) {
        Ok(f) => f,
        Err(e) => {
            report(&format!("reading the grants' facts of module {hash}"), &e);
            return Arc::new(Capabilities::default());
        }
    };
    Arc::new(grants.for_activity(&facts.as_facts(), activity_type))
}

/// The delay before attempt `attempt + 1`. `pinion-testing` (guest-sdk/testing/src/run.rs)
/// has a copy so authors' tests retry like the engine: change both together.
pub fn backoff_ms(policy: &pinion_abi::RetryPolicy, attempt: u32) -> u64 {
    let coefficient = policy.backoff_coefficient.max(1.0);
    let max = policy
        .maximum_interval_ms
        .unwrap_or(policy.initial_interval_ms.saturating_mul(100));
    let delay =
        policy.initial_interval_ms as f64 * coefficient.powi(attempt.saturating_sub(1) as i32);
    (delay.min(max as f64)) as u64
}

/// An attempt's fate: the result, the final failure, or the next attempt after backoff.
fn resolution_of(
    task: &ActivityTask,
    outcome: AttemptOutcome,
    heartbeat_details: Option<Payload>,
    now: u64,
) -> ActivityResolution {
    let AttemptOutcome {
        result: outcome,
        timed_out,
    } = outcome;
    match outcome {
        Ok(result) => ActivityResolution::Resolve(EventKind::ActivityCompleted {
            seq: task.seq,
            result,
            attempts: task.attempt,
        }),
        Err(f) => {
            let policy = &task.options.retry;
            let exhausted = policy.maximum_attempts != 0 && task.attempt >= policy.maximum_attempts;
            if f.non_retryable || exhausted || policy.non_retryable_error_kinds.contains(&f.kind) {
                ActivityResolution::Resolve(if timed_out {
                    EventKind::ActivityTimedOut {
                        seq: task.seq,
                        failure: f,
                    }
                } else {
                    EventKind::ActivityFailed {
                        seq: task.seq,
                        failure: f,
                    }
                })
            } else {
                ActivityResolution::Retry {
                    next_attempt: task.attempt + 1,
                    visible_at_ms: now + backoff_ms(policy, task.attempt),
                    failure: f,
                    heartbeat_details,
                }
            }
        }
    }
}

/// Records activity attempts whose process is gone as failed attempts (kind
/// [`LOST_KIND`]), which the retry policy retries (or ends) like any other, so a crash
/// counts as an attempt in history, in `ActivityContext::attempt()` and in the retry state.
fn record_lost(
    store: &dyn Store,
    clock: &dyn Clock,
    tasks: Vec<ActivityTask>,
) -> Result<(), StoreError> {
    let now = clock.now_ms();
    for task in tasks {
        let outcome = AttemptOutcome {
            result: Err(Failure {
                kind: LOST_KIND.into(),
                message: format!(
                    "attempt {} was interrupted: the process running it stopped (crash or kill) before it finished",
                    task.attempt
                ),
                non_retryable: false,
                attempts: task.attempt,
            }),
            timed_out: true,
        };
        let resolution = resolution_of(&task, outcome, None, now);
        store.resolve_activity(&task.instance_id, task.seq, task.attempt, resolution, now)?;
    }
    Ok(())
}

/// How often a worker looks for peers that are gone (servers sharing a PostgreSQL
/// database): their instances and attempts are taken over within about this long.
const DEPARTED_POLL: Duration = Duration::from_secs(1);

/// Takes over the work of processes that are gone while this one runs (see
/// [`Store::departed_activities`]; nothing to do on a SQLite file).
fn departed_loop(s: &Shared) {
    keep_running(&s.stop, "looking for servers that are gone", || {
        let seen = s.stop_wake.generation();
        match s.store.departed_activities() {
            Ok(lost) if lost.is_empty() => {}
            Ok(lost) => {
                let n = lost.len();
                match record_lost(&*s.store, &*s.clock, lost) {
                    Ok(()) => {
                        tracing::info!(attempts = n, "recorded the attempts of a server that is gone as lost; they are retried here or by another server");
                        s.activity_wake.notify();
                        s.workflow_wake.notify();
                    }
                    Err(e) => report("recording lost attempts", &e),
                }
            }
            Err(e) => report("looking for servers that are gone", &e),
        }
        s.stop_wake.wait(seen, DEPARTED_POLL);
    });
}

fn timer_loop(s: &Shared) {
    keep_running(&s.stop, "firing timers", || {
        let seen = s.timer_wake.generation();
        let now = s.clock.now_ms();
        match s.store.fire_due_timers(now) {
            Ok(n) if n > 0 => s.workflow_wake.notify(),
            Ok(_) => {}
            Err(e) => report("firing timers", &e),
        }
        let wait = match s.store.next_due_ms() {
            Ok(Some(t)) if t > now => Duration::from_millis(t - now).min(s.config.poll_interval),
            Ok(Some(_)) => Duration::from_millis(5),
            _ => s.config.poll_interval,
        };
        s.timer_wake.wait(seen, wait);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinion_abi::RetryPolicy;

    #[test]
    fn a_panic_is_contained_with_its_message_and_the_thread_goes_on() {
        assert_eq!(contain(|| 7), Ok(7));
        assert_eq!(
            contain(|| -> u8 { panic!("boom") }),
            Err("boom".to_string())
        );
        let n = 3;
        assert_eq!(
            contain(|| -> u8 { panic!("boom {n}") }),
            Err("boom 3".to_string())
        );
        // The thread that contained them is still here to run more.
        assert_eq!(contain(|| "after"), Ok("after"));
    }

    #[test]
    fn a_loop_whose_step_panics_goes_on_with_its_next_step() {
        let stop = AtomicBool::new(false);
        let mut steps = 0;
        keep_running(&stop, "test loop", || {
            steps += 1;
            if steps == 1 {
                panic!("first step fails");
            }
            stop.store(true, Ordering::SeqCst);
        });
        assert_eq!(steps, 2, "the step after the panic ran");
    }

    #[test]
    fn a_lock_poisoned_by_a_panic_is_still_usable() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }

    #[test]
    fn backoff_grows_by_the_coefficient_and_stops_at_the_maximum() {
        let p = RetryPolicy {
            maximum_attempts: 0,
            initial_interval_ms: 100,
            backoff_coefficient: 2.0,
            maximum_interval_ms: Some(500),
            non_retryable_error_kinds: vec![],
        };
        let delays: Vec<u64> = (1..=5).map(|a| backoff_ms(&p, a)).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
    }
}
