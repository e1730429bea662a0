//! [`WorkflowContext`]: everything a workflow may ask of the outside world.
//!
//! Workflow code must be deterministic: replaying its history must make it issue the same
//! commands in the same order. The context is the sanctioned way to do what would otherwise
//! break that: call activities, wait (durable timers), read the time (logical, from history),
//! draw random numbers (seeded from history) and log (silenced during replay).
//!
//! Commands are issued *eagerly*, when the method is called, not when the returned future is
//! first polled. That makes the command order exactly the program order, whatever
//! combinators the futures later pass through, which is what the host's determinism check
//! compares against history.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pinion_abi::ActivityResult;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::__rt::state::SharedRef;
use crate::error::{ActivityFailed, Cancelled, CANCELLED_KIND};
use crate::options::{duration_to_ms, ActivityOptions};

/// Severity of a workflow log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Detail for debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the workflow handles.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// The lowercase name used in the log line prefix, e.g. `"info"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// What never changes during an instance's life.
#[derive(Debug)]
struct Info {
    instance_id: String,
    workflow_type: String,
    version_label: Option<&'static str>,
}

/// The workflow's handle on the engine. Passed to the workflow function; cheap to clone
/// (two reference counts), so it can be moved into `async` blocks.
///
/// It is deliberately `!Send`: a workflow runs on one thread inside its wasm instance.
#[derive(Clone)]
pub struct WorkflowContext {
    shared: SharedRef,
    info: Rc<Info>,
}

impl fmt::Debug for WorkflowContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowContext")
            .field("workflow_type", &self.info.workflow_type)
            .field("instance_id", &self.info.instance_id)
            .finish_non_exhaustive()
    }
}

impl WorkflowContext {
    pub(crate) fn new(
        shared: SharedRef,
        instance_id: String,
        workflow_type: String,
        version_label: Option<&'static str>,
    ) -> Self {
        WorkflowContext {
            shared,
            info: Rc::new(Info {
                instance_id,
                workflow_type,
                version_label,
            }),
        }
    }

    /// The instance's state, for the context methods defined in other modules.
    pub(crate) fn shared(&self) -> &SharedRef {
        &self.shared
    }

    /// Schedules activity `name` with default [`ActivityOptions`] and returns a future of its
    /// result. The `ScheduleActivity` command is issued now, in program order.
    ///
    /// The input is serialised to JSON. The result is deserialised from JSON into `O`; if that
    /// fails the future resolves to an [`ActivityFailed`] of kind `"InvalidOutput"`.
    ///
    /// Dropping the future before it resolves does not cancel the activity; its result is
    /// ignored when it arrives. A cancellation of the workflow (`pinion cancel`) cancels it:
    /// the future then resolves to an [`ActivityFailed`] of kind `"Cancelled"`.
    pub fn activity<O: DeserializeOwned>(
        &self,
        name: &str,
        input: &(impl Serialize + ?Sized),
    ) -> ActivityFuture<O> {
        self.activity_with(name, input, ActivityOptions::default())
    }

    /// Like [`activity`](Self::activity), with explicit timeout and retry options.
    pub fn activity_with<O: DeserializeOwned>(
        &self,
        name: &str,
        input: &(impl Serialize + ?Sized),
        options: ActivityOptions,
    ) -> ActivityFuture<O> {
        let activity_type = name.to_owned();
        match serde_json::to_vec(input) {
            Ok(bytes) => {
                let seq = self.shared.borrow_mut().schedule_activity(
                    activity_type.clone(),
                    bytes,
                    options.into(),
                );
                ActivityFuture::scheduled(self.shared.clone(), activity_type, seq)
            }
            // Nothing was scheduled, so nothing is recorded: this is as deterministic as the
            // input value itself.
            Err(e) => ActivityFuture::failed(
                self.shared.clone(),
                ActivityFailed {
                    message: format!("activity input does not serialise to JSON: {e}"),
                    activity_type,
                    kind: "InvalidInput".into(),
                    attempts: 0,
                    timed_out: false,
                    non_retryable: true,
                },
            ),
        }
    }

    /// Starts a durable timer and returns a future that completes when it fires. The
    /// `StartTimer` command is issued now; the duration is rounded up to whole milliseconds
    /// and counted from the current logical time.
    ///
    /// Dropping the future before it fires cancels the timer (`CancelTimer`), so the loser of
    /// a [`select`](crate::select) does not linger in the host. If the workflow is cancelled
    /// while the timer is pending, the timer is cancelled and the future resolves to
    /// `Err(`[`Cancelled`]`)`, so `ctx.sleep(d).await?` stops the workflow.
    pub fn sleep(&self, duration: Duration) -> Timer {
        let seq = self
            .shared
            .borrow_mut()
            .start_timer(duration_to_ms(duration));
        Timer {
            shared: self.shared.clone(),
            seq,
            done: false,
        }
    }

    /// The workflow's logical time: the time the host recorded for the current activation.
    /// It does not advance while the workflow computes, and replays identically.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now_ms())
    }

    /// [`now`](Self::now) in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.shared.borrow().now_ms
    }

    /// 64 random bits from the instance's seeded PRNG (deterministic under replay).
    pub fn random_u64(&self) -> u64 {
        self.shared.borrow_mut().rng().next_u64()
    }

    /// A uniform random number in `lo..hi` from the seeded PRNG.
    ///
    /// # Panics
    /// When `lo >= hi`.
    pub fn random_range(&self, lo: u64, hi: u64) -> u64 {
        self.shared.borrow_mut().rng().range(lo, hi)
    }

    /// A uniform random float in `[0, 1)` from the seeded PRNG.
    pub fn random_f64(&self) -> f64 {
        self.shared.borrow_mut().rng().next_f64()
    }

    /// A random version-4-shaped UUID string (lowercase, hyphenated) from the seeded PRNG:
    /// stable under replay, so safe to use as an idempotency key for activities.
    pub fn uuid(&self) -> String {
        self.shared.borrow_mut().rng().uuid()
    }

    /// True while the host is rebuilding this instance from history.
    pub fn is_replaying(&self) -> bool {
        self.shared.borrow().replaying
    }

    /// The instance id the host gave this run.
    pub fn instance_id(&self) -> &str {
        &self.info.instance_id
    }

    /// The workflow type this instance runs (its registered name).
    pub fn workflow_type(&self) -> &str {
        &self.info.workflow_type
    }

    /// The label this module was built with: `export!`'s `version:` (for example `"v0.2"`),
    /// or `None` without one. It is fixed at compile time and names the code running *now*,
    /// which after a replay on newer code is not the code the instance started on; use it
    /// in logs, never to choose a path (that is what
    /// [`get_version`](Self::get_version) is for).
    pub fn version_label(&self) -> Option<&str> {
        self.info.version_label
    }

    /// Writes `[level] message` to stderr, which the host turns into a log record tagged
    /// with the instance. Suppressed while replaying, so each line appears once.
    pub fn log(&self, level: Level, message: impl fmt::Display) {
        if !self.is_replaying() {
            eprintln!("[{}] {message}", level.as_str());
        }
    }

    /// [`log`](Self::log) at [`Level::Debug`].
    pub fn debug(&self, message: impl fmt::Display) {
        self.log(Level::Debug, message);
    }

    /// [`log`](Self::log) at [`Level::Info`].
    pub fn info(&self, message: impl fmt::Display) {
        self.log(Level::Info, message);
    }

    /// [`log`](Self::log) at [`Level::Warn`].
    pub fn warn(&self, message: impl fmt::Display) {
        self.log(Level::Warn, message);
    }

    /// [`log`](Self::log) at [`Level::Error`].
    pub fn error(&self, message: impl fmt::Display) {
        self.log(Level::Error, message);
    }
}

/// The future of an activity's result, returned by [`WorkflowContext::activity`].
///
/// Resolves to `Ok(O)` when the activity completed and its JSON result fits `O`, or to
/// [`ActivityFailed`] otherwise.
#[must_use = "the activity is scheduled either way; await the future to see its result"]
pub struct ActivityFuture<O> {
    shared: SharedRef,
    activity_type: String,
    /// 0 when nothing was scheduled (the input did not serialise).
    seq: u32,
    early: Option<ActivityFailed>,
    done: bool,
    // `fn() -> O` keeps the future `Unpin` whatever `O` is: no `O` is stored.
    _output: PhantomData<fn() -> O>,
}

impl<O> fmt::Debug for ActivityFuture<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivityFuture")
            .field("activity_type", &self.activity_type)
            .field("seq", &self.seq)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<O> ActivityFuture<O> {
    fn scheduled(shared: SharedRef, activity_type: String, seq: u32) -> Self {
        ActivityFuture {
            shared,
            activity_type,
            seq,
            early: None,
            done: false,
            _output: PhantomData,
        }
    }

    fn failed(shared: SharedRef, failed: ActivityFailed) -> Self {
        let activity_type = failed.activity_type.clone();
        ActivityFuture {
            shared,
            activity_type,
            seq: 0,
            early: Some(failed),
            done: false,
            _output: PhantomData,
        }
    }

    /// The activity's sequence number in this instance (from 1), as sent to the host; 0 when
    /// nothing was scheduled because the input did not serialise.
    pub fn seq(&self) -> u32 {
        self.seq
    }
}

impl<O: DeserializeOwned> Future for ActivityFuture<O> {
    type Output = Result<O, ActivityFailed>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(failed) = this.early.take() {
            this.done = true;
            return Poll::Ready(Err(failed));
        }
        let Some(result) = this.shared.borrow_mut().take_activity_result(this.seq) else {
            return Poll::Pending;
        };
        this.done = true;
        Poll::Ready(match result {
            Ok(result) => decode_result(&this.activity_type, result),
            Err(reason) => Err(ActivityFailed {
                activity_type: this.activity_type.clone(),
                kind: CANCELLED_KIND.into(),
                message: format!("cancelled before it finished: {reason}"),
                attempts: 0,
                timed_out: false,
                non_retryable: true,
            }),
        })
    }
}

impl<O> Drop for ActivityFuture<O> {
    fn drop(&mut self) {
        if !self.done && self.seq != 0 {
            // try_: never panic in drop, even while unwinding from a panic that held a borrow.
            if let Ok(mut shared) = self.shared.try_borrow_mut() {
                shared.abandon_activity(self.seq);
            }
        }
    }
}

/// Turns the host's report into what the workflow awaits.
fn decode_result<O: DeserializeOwned>(
    activity_type: &str,
    result: ActivityResult,
) -> Result<O, ActivityFailed> {
    match result {
        ActivityResult::Completed(bytes) => serde_json::from_slice(&bytes).map_err(|e| ActivityFailed {
            activity_type: activity_type.to_owned(),
            kind: "InvalidOutput".into(),
            message: format!(
                "the result of activity \"{activity_type}\" does not deserialise into the expected type: {e}"
            ),
            attempts: 0,
            timed_out: false,
            non_retryable: true,
        }),
        ActivityResult::Failed(failure) => Err(ActivityFailed::from_failure(activity_type, failure, false)),
        ActivityResult::TimedOut(failure) => Err(ActivityFailed::from_failure(activity_type, failure, true)),
    }
}

/// A durable timer, returned by [`WorkflowContext::sleep`]. Completes with `Ok(())` when the
/// host fires it, or with `Err(Cancelled)` when the workflow is cancelled first; cancels the
/// timer when dropped before either.
#[must_use = "the timer is started either way; dropping this future cancels it"]
pub struct Timer {
    shared: SharedRef,
    seq: u32,
    done: bool,
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("seq", &self.seq)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Timer {
    /// The timer's sequence number in this instance (from 1), as sent to the host.
    pub fn seq(&self) -> u32 {
        self.seq
    }
}

impl Future for Timer {
    type Output = Result<(), Cancelled>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = self.shared.borrow_mut().timer_state(self.seq);
        match state {
            None => Poll::Pending,
            Some(r) => {
                self.done = true;
                Poll::Ready(r.map_err(|reason| Cancelled { reason }))
            }
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut shared) = self.shared.try_borrow_mut() {
                shared.cancel_timer(self.seq);
            }
        }
    }
}
