//! [`TestRun`]: one workflow instance, driven the way the engine's worker drives it, with
//! the clock skipped forward whenever the only thing left is to wait.
//!
//! The loop (`advance`), until the workflow ends or the deadline is reached:
//!
//! 1. inputs waiting (the start, activity results, fired timers, signals, a cancellation)
//!    → one activation delivers them all, in arrival order, and its commands are applied:
//!    activities are queued, timers armed at `now + duration`, cancelled ones dropped;
//! 2. else, activity attempts due now → each runs (mock or real), in sequence order: a
//!    success or a final failure becomes an input; a retryable failure schedules the next
//!    attempt after the policy's backoff (the engine's `backoff_ms`);
//! 3. else, the clock jumps to the earliest timer or retry (not past the deadline), and
//!    the timers due then fire;
//! 4. else nothing can happen without the test: the run is idle.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pinion_abi::{
    Activation, ActivityInvocation, ActivityOptions, ActivityOutcome, ActivityResult,
    ActivityResult as R, ChildResult, Command, Completion, Failure, Job, QueryRequest,
    QueryResponse, RetryPolicy,
};
use pinion_sdk::__rt::{self, Instance, Module};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::env::{ActivityCall, ChildCall, ChildMock, Mock, TestEnv};
use crate::error::HarnessError;
use crate::history::{self, canonical, canonical_bytes, Recorder};

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The workflow returned this value (JSON).
    Completed(Value),
    /// The workflow failed.
    Failed(Failure),
    /// The workflow ended cancelled, with this reason.
    Cancelled(String),
    /// The workflow continued as new with this input (JSON).
    ContinuedAsNew(Value),
}

/// One activity attempt the run made.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The activity's sequence number.
    pub seq: u32,
    /// The activity type.
    pub activity_type: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// Logical time the attempt ran at.
    pub at_ms: u64,
    /// `None` when the attempt succeeded, else its failure.
    pub failure: Option<Failure>,
    /// After a retryable failure: the backoff before the next attempt, in ms.
    pub retry_in_ms: Option<u64>,
}

/// An activity scheduled and not yet resolved.
#[derive(Debug)]
struct Pending {
    activity_type: String,
    input: Vec<u8>,
    options: ActivityOptions,
    attempt: u32,
    due_ms: u64,
}

/// A mocked child that has not ended: how and when it will.
#[derive(Debug)]
struct PendingChild {
    child_id: String,
    due_ms: u64,
    result: ChildResult,
}

/// One input waiting for the next activation: its job and the event it is recorded as
/// (`None` for the start, recorded when the run was created).
type Input = (Job, Option<Value>);

/// A running workflow instance under test. Created by [`TestEnv::start`].
pub struct TestRun {
    module: &'static Module,
    mocks: BTreeMap<String, Mock>,
    child_mocks: BTreeMap<String, ChildMock>,
    instance_id: String,
    workflow_type: String,
    module_hash: String,
    start_ms: u64,
    now_ms: u64,
    instance: Instance,
    inbox: Vec<Input>,
    activities: BTreeMap<u32, Pending>,
    timers: BTreeMap<u32, u64>,
    children: BTreeMap<u32, PendingChild>,
    recorder: Recorder,
    commands: Vec<Command>,
    attempts: Vec<Attempt>,
    outcome: Option<Outcome>,
    blocked: Option<String>,
}

impl std::fmt::Debug for TestRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRun")
            .field("instance_id", &self.instance_id)
            .field("workflow_type", &self.workflow_type)
            .field("now_ms", &self.now_ms)
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// The engine's retry delay before attempt `attempt + 1` (`runtime/src/worker.rs`,
/// `backoff_ms`; the two must agree).
fn backoff_ms(policy: &RetryPolicy, attempt: u32) -> u64 {
    let coefficient = policy.backoff_coefficient.max(1.0);
    let max = policy
        .maximum_interval_ms
        .unwrap_or(policy.initial_interval_ms.saturating_mul(100));
    let delay =
        policy.initial_interval_ms as f64 * coefficient.powi(attempt.saturating_sub(1) as i32);
    (delay.min(max as f64)) as u64
}

impl TestRun {
    pub(crate) fn new(env: TestEnv, workflow_type: &str, input: &[u8]) -> TestRun {
        let input = canonical(input).expect("serde_json wrote JSON");
        let mut recorder = Recorder::default();
        recorder.push(
            env.start_ms,
            history::started(
                workflow_type,
                &env.module_hash,
                &input,
                env.random_seed,
                env.module.version_label,
            ),
        );
        let start = Job::Start {
            workflow_type: workflow_type.to_owned(),
            instance_id: env.instance_id.clone(),
            input: input.to_string().into_bytes(),
            random_seed: env.random_seed,
        };
        TestRun {
            module: env.module,
            mocks: env.mocks,
            child_mocks: env.child_mocks,
            instance_id: env.instance_id,
            workflow_type: workflow_type.to_owned(),
            module_hash: env.module_hash,
            start_ms: env.start_ms,
            now_ms: env.start_ms,
            instance: Instance::new(),
            inbox: vec![(start, None)],
            activities: BTreeMap::new(),
            timers: BTreeMap::new(),
            children: BTreeMap::new(),
            recorder,
            commands: Vec::new(),
            attempts: Vec::new(),
            outcome: None,
            blocked: None,
        }
    }

    // ---- driving ----

    /// Runs until the workflow ends or waits only for the test (a signal, a cancellation),
    /// skipping every timer and retry backoff on the way.
    ///
    /// # Errors
    /// The SDK refused an activation, or the workflow issued a command the harness does not
    /// emulate.
    pub fn run_until_idle(&mut self) -> Result<(), HarnessError> {
        self.advance(None)
    }

    /// Runs for `duration` of logical time: everything due within it happens (timers fire,
    /// retries run), then the clock stands at exactly `now + duration` unless the workflow
    /// ended first. The way to send a signal "half an hour in".
    ///
    /// # Errors
    /// As for [`TestRun::run_until_idle`].
    pub fn run_for(&mut self, duration: Duration) -> Result<(), HarnessError> {
        let deadline = self.now_ms + duration.as_millis() as u64;
        self.advance(Some(deadline))?;
        if self.outcome.is_none() {
            self.now_ms = self.now_ms.max(deadline);
        }
        Ok(())
    }

    /// Runs until the workflow ends and returns its result, decoded as `T`.
    ///
    /// # Errors
    /// [`HarnessError::Waiting`] when it waits for a signal or cancellation the test has not
    /// sent; [`HarnessError::Failed`], [`HarnessError::Cancelled`] or
    /// [`HarnessError::ContinuedAsNew`] for those ends; the errors of
    /// [`TestRun::run_until_idle`].
    pub fn run_to_end<T: DeserializeOwned>(&mut self) -> Result<T, HarnessError> {
        self.run_until_idle()?;
        self.result()
    }

    /// The result so far: as [`TestRun::run_to_end`], without running.
    ///
    /// # Errors
    /// As for [`TestRun::run_to_end`].
    pub fn result<T: DeserializeOwned>(&self) -> Result<T, HarnessError> {
        if let Some(reason) = &self.blocked {
            return Err(HarnessError::Sdk(reason.clone()));
        }
        match &self.outcome {
            None => Err(HarnessError::Waiting),
            Some(Outcome::Completed(v)) => Ok(serde_json::from_value(v.clone())?),
            Some(Outcome::Failed(f)) => Err(HarnessError::Failed(f.clone())),
            Some(Outcome::Cancelled(r)) => Err(HarnessError::Cancelled(r.clone())),
            Some(Outcome::ContinuedAsNew(v)) => Err(HarnessError::ContinuedAsNew(v.to_string())),
        }
    }

    /// Sends signal `name` with `input` (JSON). It is delivered by the next activation, which
    /// the next `run_*` call makes.
    ///
    /// # Errors
    /// [`HarnessError::Ended`] once the workflow has ended (the engine refuses such a
    /// signal too); [`HarnessError::Json`] when `input` does not serialise.
    pub fn signal<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        input: &T,
    ) -> Result<(), HarnessError> {
        self.refuse_if_ended()?;
        let input = serde_json::to_value(input)?;
        self.inbox.push((
            Job::Signal {
                name: name.to_owned(),
                input: input.to_string().into_bytes(),
            },
            Some(json!({ "type": "SignalReceived", "name": name, "input": input })),
        ));
        Ok(())
    }

    fn refuse_if_ended(&self) -> Result<(), HarnessError> {
        match self.outcome {
            Some(_) => Err(HarnessError::Ended),
            None => Ok(()),
        }
    }

    /// Requests cancellation with `reason`; delivered by the next activation. A second
    /// request changes nothing, as in the engine.
    ///
    /// # Errors
    /// [`HarnessError::Ended`] once the workflow has ended.
    pub fn cancel(&mut self, reason: &str) -> Result<(), HarnessError> {
        self.refuse_if_ended()?;
        let already = self
            .inbox
            .iter()
            .any(|(j, _)| matches!(j, Job::Cancel { .. }))
            || self
                .recorder
                .events
                .iter()
                .any(|e| e["type"] == "CancelRequested");
        if !already {
            self.inbox.push((
                Job::Cancel {
                    reason: reason.to_owned(),
                },
                Some(json!({ "type": "CancelRequested", "reason": reason })),
            ));
        }
        Ok(())
    }

    /// Asks query `name` with `input` against the state after the last activation, as
    /// `pinion query` does. Leaves no trace in history.
    ///
    /// # Errors
    /// [`HarnessError::Query`] when the SDK refuses it (no such handler, bad input, a handler
    /// that tried to change the workflow, asked before the first activation);
    /// [`HarnessError::Json`] when the answer does not decode as `Out`.
    pub fn query<In: Serialize + ?Sized, Out: DeserializeOwned>(
        &mut self,
        name: &str,
        input: &In,
    ) -> Result<Out, HarnessError> {
        let request = QueryRequest {
            name: name.to_owned(),
            input: serde_json::to_vec(input)?,
        };
        match self.instance.query(request) {
            QueryResponse::Answered(bytes) => Ok(serde_json::from_slice(&bytes)?),
            QueryResponse::Failed(f) | QueryResponse::Violated(f) => Err(HarnessError::Query(f)),
        }
    }

    fn advance(&mut self, deadline: Option<u64>) -> Result<(), HarnessError> {
        if let Some(reason) = &self.blocked {
            return Err(HarnessError::Sdk(reason.clone()));
        }
        while self.outcome.is_none() {
            if !self.inbox.is_empty() {
                self.activate()?;
                continue;
            }
            let due: Vec<u32> = self
                .activities
                .iter()
                .filter(|(_, a)| a.due_ms <= self.now_ms)
                .map(|(seq, _)| *seq)
                .collect();
            if !due.is_empty() {
                for seq in due {
                    self.attempt(seq);
                }
                continue;
            }
            if self.end_due_children() {
                continue;
            }
            let next = self
                .timers
                .values()
                .chain(self.activities.values().map(|a| &a.due_ms))
                .chain(self.children.values().map(|c| &c.due_ms))
                .min()
                .copied();
            match next {
                Some(t) if deadline.is_none_or(|d| t <= d) => {
                    self.now_ms = self.now_ms.max(t);
                    self.fire_due_timers();
                    self.end_due_children();
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn fire_due_timers(&mut self) {
        let mut due: Vec<(u64, u32)> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= self.now_ms)
            .map(|(seq, at)| (*at, *seq))
            .collect();
        due.sort_unstable();
        for (_, seq) in due {
            self.timers.remove(&seq);
            self.inbox.push((
                Job::FireTimer { seq },
                Some(json!({ "type": "TimerFired", "seq": seq })),
            ));
        }
    }

    /// Delivers the end of every mocked child due now, in sequence order; whether any was.
    fn end_due_children(&mut self) -> bool {
        let due: Vec<u32> = self
            .children
            .iter()
            .filter(|(_, c)| c.due_ms <= self.now_ms)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &due {
            let child = self.children.remove(seq).expect("listed above");
            let event = match &child.result {
                ChildResult::Completed(bytes) => json!({
                    "type": "ChildWorkflowCompleted", "seq": seq, "child_id": child.child_id,
                    "result": canonical(bytes).unwrap_or(Value::Null),
                }),
                ChildResult::Failed(f) => json!({
                    "type": "ChildWorkflowFailed", "seq": seq, "child_id": child.child_id,
                    "failure": history::failure(f),
                }),
            };
            self.inbox.push((
                Job::ResolveChild {
                    seq: *seq,
                    result: child.result,
                },
                Some(event),
            ));
        }
        !due.is_empty()
    }

    /// One activation with everything in the inbox.
    fn activate(&mut self) -> Result<(), HarnessError> {
        let inputs = std::mem::take(&mut self.inbox);
        let now = self.now_ms;
        let mut jobs = Vec::with_capacity(inputs.len());
        for (job, event) in inputs {
            if let Some(event) = event {
                self.recorder.push(now, event);
            }
            jobs.push(job);
        }
        let activation = Activation {
            now_ms: now,
            is_replaying: false,
            jobs,
        };
        let commands = match self.instance.activate(self.module, activation) {
            Completion::Commands(c) => c,
            Completion::Error(e) => {
                self.blocked = Some(e.clone());
                return Err(HarnessError::Sdk(e));
            }
        };
        self.recorder.push(
            now,
            json!({ "type": "WorkflowTaskCompleted", "now_ms": now }),
        );
        for command in commands {
            let event = history::command_event(
                &command,
                now,
                &self.module_hash,
                &self.workflow_type,
                &self.instance_id,
            )?;
            self.apply(&command)?;
            self.recorder.push(now, event);
            self.commands.push(command);
        }
        Ok(())
    }

    fn apply(&mut self, command: &Command) -> Result<(), HarnessError> {
        match command {
            Command::ScheduleActivity {
                seq,
                activity_type,
                input,
                options,
            } => {
                self.activities.insert(
                    *seq,
                    Pending {
                        activity_type: activity_type.clone(),
                        input: canonical_bytes(input)?,
                        options: options.clone(),
                        attempt: 1,
                        due_ms: self.now_ms,
                    },
                );
            }
            Command::StartTimer { seq, duration_ms } => {
                self.timers.insert(*seq, self.now_ms + duration_ms);
            }
            Command::CancelTimer { seq } => {
                self.timers.remove(seq);
            }
            Command::RequestCancelActivity { seq } => {
                self.activities.remove(seq);
            }
            Command::RecordMarker { .. } => {}
            Command::CompleteWorkflow { result } => {
                self.end(Outcome::Completed(canonical(result)?));
            }
            Command::FailWorkflow { failure } => self.end(Outcome::Failed(failure.clone())),
            Command::CancelWorkflow { reason } => self.end(Outcome::Cancelled(reason.clone())),
            Command::ContinueAsNew { input, .. } => {
                self.end(Outcome::ContinuedAsNew(canonical(input)?));
            }
            Command::StartChild {
                seq,
                workflow_type,
                input,
                id,
                ..
            } => {
                let call = ChildCall {
                    workflow_type: workflow_type.clone(),
                    seq: *seq,
                    child_id: history::child_id(&self.instance_id, *seq, id.as_deref()),
                    parent_id: self.instance_id.clone(),
                };
                let Some(mock) = self.child_mocks.get_mut(workflow_type) else {
                    return Err(HarnessError::Unsupported(format!(
                        "a child workflow that is not mocked (the workflow started a \"{workflow_type}\" child): \
                         stand in for it with TestEnv::mock_child, and test its own workflow with a TestEnv of its own"
                    )));
                };
                let result = match (mock.f)(&call, &canonical_bytes(input)?) {
                    Ok(bytes) => ChildResult::Completed(canonical_bytes(&bytes)?),
                    Err(f) => ChildResult::Failed(f),
                };
                self.children.insert(
                    *seq,
                    PendingChild {
                        child_id: call.child_id,
                        due_ms: self.now_ms.saturating_add(mock.takes_ms),
                        result,
                    },
                );
            }
            Command::RequestCancelChild { seq } => {
                // A child that honours its cancellation ends at once, as the engine would
                // record it (the reason the engine gives the child).
                if let Some(child) = self.children.get_mut(seq) {
                    child.due_ms = self.now_ms;
                    child.result = ChildResult::Failed(Failure {
                        kind: "Cancelled".into(),
                        message: format!("its parent {} was cancelled", self.instance_id),
                        non_retryable: true,
                        attempts: 0,
                    });
                }
            }
        }
        Ok(())
    }

    fn end(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
        self.activities.clear();
        self.timers.clear();
        // Children still running are terminated with their parent.
        self.children.clear();
        self.inbox.clear();
    }

    /// Runs one attempt of activity `seq` and decides its fate as the worker does.
    fn attempt(&mut self, seq: u32) {
        let Some(task) = self.activities.get(&seq) else {
            return;
        };
        let call = ActivityCall {
            activity_type: task.activity_type.clone(),
            seq,
            attempt: task.attempt,
            instance_id: self.instance_id.clone(),
        };
        let outcome = match self.mocks.get_mut(&task.activity_type) {
            Some(mock) => match mock(&call, &task.input) {
                Ok(bytes) => ActivityOutcome::Completed(bytes),
                Err(e) => ActivityOutcome::Failed(Failure {
                    kind: e.kind,
                    message: e.message,
                    non_retryable: e.non_retryable,
                    attempts: call.attempt,
                }),
            },
            None => __rt::run_activity(
                self.module,
                ActivityInvocation {
                    activity_type: call.activity_type.clone(),
                    input: task.input.clone(),
                    attempt: call.attempt,
                    instance_id: call.instance_id.clone(),
                    seq,
                    heartbeat_details: None,
                },
            ),
        };
        let mut record = Attempt {
            seq,
            activity_type: call.activity_type,
            attempt: call.attempt,
            at_ms: self.now_ms,
            failure: None,
            retry_in_ms: None,
        };
        let resolved = match outcome {
            ActivityOutcome::Completed(bytes) => match canonical(&bytes) {
                Ok(result) => Some((
                    R::Completed(result.to_string().into_bytes()),
                    json!({ "type": "ActivityCompleted", "seq": seq, "result": result,
                            "attempts": call.attempt }),
                )),
                Err(e) => {
                    let f = Failure {
                        kind: "InvalidOutput".into(),
                        message: format!("the activity's result is not JSON: {e}"),
                        non_retryable: true,
                        attempts: call.attempt,
                    };
                    record.failure = Some(f.clone());
                    Some(failed(seq, f))
                }
            },
            ActivityOutcome::Failed(f) => {
                record.failure = Some(f.clone());
                let policy = &self.activities[&seq].options.retry;
                let exhausted =
                    policy.maximum_attempts != 0 && call.attempt >= policy.maximum_attempts;
                if f.non_retryable
                    || exhausted
                    || policy.non_retryable_error_kinds.contains(&f.kind)
                {
                    Some(failed(seq, f))
                } else {
                    let delay = backoff_ms(policy, call.attempt);
                    record.retry_in_ms = Some(delay);
                    let task = self.activities.get_mut(&seq).expect("looked up above");
                    task.attempt += 1;
                    task.due_ms = self.now_ms + delay;
                    None
                }
            }
        };
        self.attempts.push(record);
        if let Some((result, event)) = resolved {
            self.activities.remove(&seq);
            self.inbox
                .push((Job::ResolveActivity { seq, result }, Some(event)));
        }
    }

    // ---- inspecting ----

    /// How the run ended, `None` while it runs.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Every command the workflow produced, in order, across all activations.
    pub fn commands(&self) -> &[Command] {
        &self.commands
    }

    /// Every activity attempt made, in order, with failures and backoffs.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// The recorded events, each a JSON object with `id`, `time_ms`, `type` and the type's
    /// fields, as in an export.
    pub fn events(&self) -> &[Value] {
        &self.recorder.events
    }

    /// The recorded events of one `type` (`"TimerStarted"`, `"ActivityCompleted"`, ...).
    pub fn events_of(&self, event_type: &str) -> Vec<&Value> {
        self.recorder
            .events
            .iter()
            .filter(|e| e["type"] == event_type)
            .collect()
    }

    /// The history as an export document (`pinion history export`'s format).
    pub fn history(&self) -> Value {
        let status = match (&self.outcome, &self.blocked) {
            (_, Some(_)) => "blocked",
            (None, None) => "running",
            (Some(Outcome::Completed(_)), _) => "completed",
            (Some(Outcome::Failed(_)), _) => "failed",
            (Some(Outcome::Cancelled(_)), _) => "cancelled",
            (Some(Outcome::ContinuedAsNew(_)), _) => "continued_as_new",
        };
        self.recorder.export(
            &self.instance_id,
            &self.workflow_type,
            &self.module_hash,
            status,
        )
    }

    /// Writes [`TestRun::history`] to `path` (pretty JSON), for `pinion replay --history`
    /// and `pinion history import`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_history(&self, path: impl AsRef<Path>) -> Result<(), HarnessError> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(&self.history())?;
        std::fs::write(path, text + "\n").map_err(|source| HarnessError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// The logical time now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Logical time since the run started, in ms.
    pub fn elapsed_ms(&self) -> u64 {
        self.now_ms - self.start_ms
    }
}

fn failed(seq: u32, f: Failure) -> (ActivityResult, Value) {
    (
        R::Failed(f.clone()),
        json!({ "type": "ActivityFailed", "seq": seq, "failure": history::failure(&f) }),
    )
}
