//! Drives one workflow instance: rebuilds it from history, checks determinism, and turns a
//! live activation's commands into events and tasks.
//!
//! # Determinism rules (version 1, recorded in every start event)
//!
//! Replay feeds each recorded activation's inputs to the code, with the recorded logical
//! time, and matches the commands it produces, in order, against the command events
//! recorded after that activation's `WorkflowTaskCompleted`:
//!
//! | code produces      | history has          | must match              | otherwise |
//! |--------------------|----------------------|-------------------------|-----------|
//! | ScheduleActivity   | ActivityScheduled    | seq, activity type      | divergence |
//! | StartTimer         | TimerStarted         | seq                     | divergence |
//! | CancelTimer        | TimerCancelled       | seq                     | divergence |
//! | RecordMarker       | MarkerRecorded       | marker id; for `version:` markers the recorded version lies in the produced [min, max] | divergence |
//! | (nothing / other)  | deprecated `patch:` marker | —                 | skipped (Temporal's deprecate_patch rule) |
//! | RequestCancelActivity | ActivityCancelled | seq                     | divergence |
//! | CompleteWorkflow   | WorkflowCompleted    | (kind only)             | divergence |
//! | FailWorkflow       | WorkflowFailed       | (kind only)             | divergence |
//! | CancelWorkflow     | WorkflowCancelled    | (kind only)             | divergence |
//! | StartChild         | ChildWorkflowInitiated | seq, workflow type    | divergence |
//! | RequestCancelChild | ChildCancelRequested | seq                     | divergence |
//! | ContinueAsNew      | WorkflowContinuedAsNew | (kind only)           | divergence |
//! | a command          | nothing more         | —                       | divergence (extra command) |
//! | nothing more       | a command            | —                       | divergence (missing command) |
//!
//! While replaying, each activation first receives a `Job::Marker` per marker it recorded,
//! so `get_version` and `patched` answer synchronously with the recorded value.
//!
//! A changed timer duration is *not* a divergence: the timer already started keeps its
//! recorded fire time, so the running instance is unaffected; replay reports it as a
//! warning. A changed activity or child-workflow input is a warning too (the recorded input
//! is what the activity ran with, or the child started with), or a divergence under
//! [`Checks::strict_inputs`].
//!
//! Every divergence is a [`Nondeterminism`] value, built in one place ([`nondeterminism`]), with
//! the stable code `PN001`.

use std::fmt;

use pinion_abi::{
    Activation, ActivityResult, ChildResult, Command, Completion, Failure, Job, ModuleChoice,
    QueryRequest, QueryResponse,
};

use crate::clock::random_u64;
use crate::history::{
    EventKind, HistoryEvent, InstanceId, ModuleHash, ParentRef, Payload, DETERMINISM_RULES_VERSION,
};
use crate::sandbox::{LoadedModule, Sandbox, SandboxError, WorkflowInstance};
use crate::store::{InstanceOutcome, NewActivityTask, NewChild, NewTimer};

/// A module chosen for a child or a continued run: its hash and version label.
pub type ResolvedModule = (ModuleHash, Option<String>);

/// Turns a [`ModuleChoice`] into a deployed module that exports `workflow_type`, for the
/// instance `id` (an alias ramp picks by id); `Err` says why not. The worker implements it
/// with the registry; replay never needs it.
pub type ModuleResolver<'a> =
    &'a dyn Fn(&ModuleChoice, &str, &str) -> Result<ResolvedModule, String>;

/// A determinism error: the code no longer does what history recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nondeterminism {
    /// The instance replayed.
    pub instance: InstanceId,
    /// Id of the history event where code and history part ways (for a missing command
    /// at the end of history, one past the last event).
    pub event_index: u64,
    /// What history recorded there, rendered readably (or `nothing` / `end of activation`).
    pub recorded: String,
    /// What the code did instead.
    pub produced: String,
}

impl Nondeterminism {
    /// Stable code that prefixes the message, for scripts and log searches.
    pub const CODE: &'static str = "PN001";
}

impl fmt::Display for Nondeterminism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] nondeterminism: instance {}, event #{}: history has {}, code produced {}",
            Self::CODE,
            self.instance,
            self.event_index,
            self.recorded,
            self.produced
        )
    }
}

impl std::error::Error for Nondeterminism {}

/// Errors while executing or replaying an instance.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    /// Code and history disagree.
    #[error("{0}")]
    Nondeterminism(Nondeterminism),
    /// The guest trapped, ran out of fuel or memory (at the given event, when replaying).
    #[error("workflow task failed at event #{event_index}: {error}")]
    Guest {
        /// The activation boundary event being replayed, or the next event id when live.
        event_index: u64,
        /// The sandbox error.
        error: SandboxError,
    },
    /// The SDK refused the activation (for example an unknown workflow type).
    #[error("workflow task failed at event #{event_index}: {message}")]
    Sdk {
        /// As above.
        event_index: u64,
        /// The SDK's message.
        message: String,
    },
    /// History is not well-formed.
    #[error("history of {instance} is malformed: {reason}")]
    BadHistory {
        /// The instance.
        instance: InstanceId,
        /// What is wrong.
        reason: String,
    },
}

/// One activation as recorded in history.
#[derive(Debug, Clone)]
pub struct RecordedActivation {
    /// The input events delivered, in order.
    pub inputs: Vec<HistoryEvent>,
    /// Id of its `WorkflowTaskCompleted` event.
    pub boundary_id: u64,
    /// The logical time it ran at.
    pub now_ms: u64,
    /// The command events it produced, in order.
    pub commands: Vec<HistoryEvent>,
}

/// Splits a history into its recorded activations and the inputs not yet delivered.
///
/// # Errors
/// [`ExecError::BadHistory`] if event 1 is not `WorkflowStarted` or ids are not dense.
pub fn split_history(
    instance: &InstanceId,
    history: &[HistoryEvent],
) -> Result<(Vec<RecordedActivation>, Vec<HistoryEvent>), ExecError> {
    let bad = |reason: String| ExecError::BadHistory {
        instance: instance.clone(),
        reason,
    };
    match history.first() {
        Some(HistoryEvent {
            id: 1,
            kind: EventKind::WorkflowStarted { .. },
            ..
        }) => {}
        _ => return Err(bad("event #1 is not WorkflowStarted".into())),
    }
    let mut activations: Vec<RecordedActivation> = Vec::new();
    let mut inputs: Vec<HistoryEvent> = Vec::new();
    for (i, event) in history.iter().enumerate() {
        if event.id != i as u64 + 1 {
            return Err(bad(format!(
                "event ids are not dense: position {} holds #{}",
                i + 1,
                event.id
            )));
        }
        match &event.kind {
            EventKind::WorkflowTaskCompleted { now_ms } => activations.push(RecordedActivation {
                inputs: std::mem::take(&mut inputs),
                boundary_id: event.id,
                now_ms: *now_ms,
                commands: Vec::new(),
            }),
            // Written by the host, not by the code: nothing to replay.
            EventKind::ModuleUpgraded { .. } | EventKind::WorkflowTerminated { .. } => {}
            k if k.is_input() => inputs.push(event.clone()),
            _ => match activations.last_mut() {
                Some(a) if inputs.is_empty() => a.commands.push(event.clone()),
                _ => {
                    return Err(bad(format!(
                        "command event #{} is not after a WorkflowTaskCompleted",
                        event.id
                    )))
                }
            },
        }
    }
    Ok((activations, inputs))
}

/// The activation job an input event becomes.
pub fn job_for(instance: &InstanceId, kind: &EventKind) -> Option<Job> {
    Some(match kind {
        EventKind::WorkflowStarted {
            workflow_type,
            input,
            random_seed,
            ..
        } => Job::Start {
            workflow_type: workflow_type.clone(),
            instance_id: instance.0.clone(),
            input: input.as_bytes().to_vec(),
            random_seed: *random_seed,
        },
        EventKind::ActivityCompleted { seq, result, .. } => Job::ResolveActivity {
            seq: *seq,
            result: ActivityResult::Completed(result.as_bytes().to_vec()),
        },
        EventKind::ActivityFailed { seq, failure } => Job::ResolveActivity {
            seq: *seq,
            result: ActivityResult::Failed(failure.clone()),
        },
        EventKind::ActivityTimedOut { seq, failure } => Job::ResolveActivity {
            seq: *seq,
            result: ActivityResult::TimedOut(failure.clone()),
        },
        EventKind::TimerFired { seq } => Job::FireTimer { seq: *seq },
        EventKind::SignalReceived { name, input } => Job::Signal {
            name: name.clone(),
            input: input.as_bytes().to_vec(),
        },
        EventKind::CancelRequested { reason } => Job::Cancel {
            reason: reason.clone(),
        },
        EventKind::ChildWorkflowCompleted { seq, result, .. } => Job::ResolveChild {
            seq: *seq,
            result: ChildResult::Completed(result.as_bytes().to_vec()),
        },
        EventKind::ChildWorkflowFailed { seq, failure, .. } => Job::ResolveChild {
            seq: *seq,
            result: ChildResult::Failed(failure.clone()),
        },
        _ => return None,
    })
}

/// A command rendered the way a divergence report shows it.
pub fn render_command(c: &Command) -> String {
    match c {
        Command::ScheduleActivity {
            seq, activity_type, ..
        } => {
            format!("ActivityScheduled{{type: {activity_type:?}, seq: {seq}}}")
        }
        Command::StartTimer { seq, duration_ms } => {
            format!("TimerStarted{{seq: {seq}, duration_ms: {duration_ms}}}")
        }
        Command::CancelTimer { seq } => format!("TimerCancelled{{seq: {seq}}}"),
        Command::RecordMarker { id, .. } => format!("MarkerRecorded{{id: {id:?}}}"),
        Command::CompleteWorkflow { .. } => "WorkflowCompleted".into(),
        Command::FailWorkflow { failure } => format!("WorkflowFailed{{kind: {:?}}}", failure.kind),
        Command::RequestCancelActivity { seq } => format!("ActivityCancelled{{seq: {seq}}}"),
        Command::CancelWorkflow { .. } => "WorkflowCancelled".into(),
        Command::StartChild {
            seq, workflow_type, ..
        } => format!("ChildWorkflowInitiated{{type: {workflow_type:?}, seq: {seq}}}"),
        Command::RequestCancelChild { seq } => format!("ChildCancelRequested{{seq: {seq}}}"),
        Command::ContinueAsNew { .. } => "WorkflowContinuedAsNew".into(),
    }
}

/// A recorded command event rendered the same way as [`render_command`].
pub fn render_event(k: &EventKind) -> String {
    match k {
        EventKind::ActivityScheduled {
            seq, activity_type, ..
        } => {
            format!("ActivityScheduled{{type: {activity_type:?}, seq: {seq}}}")
        }
        EventKind::TimerStarted {
            seq, duration_ms, ..
        } => format!("TimerStarted{{seq: {seq}, duration_ms: {duration_ms}}}"),
        EventKind::TimerCancelled { seq } => format!("TimerCancelled{{seq: {seq}}}"),
        EventKind::MarkerRecorded { id, .. } => format!("MarkerRecorded{{id: {id:?}}}"),
        EventKind::WorkflowCompleted { .. } => "WorkflowCompleted".into(),
        EventKind::WorkflowFailed { failure } => {
            format!("WorkflowFailed{{kind: {:?}}}", failure.kind)
        }
        EventKind::ActivityCancelled { seq } => format!("ActivityCancelled{{seq: {seq}}}"),
        EventKind::ChildWorkflowInitiated {
            seq, workflow_type, ..
        } => format!("ChildWorkflowInitiated{{type: {workflow_type:?}, seq: {seq}}}"),
        EventKind::ChildCancelRequested { seq } => format!("ChildCancelRequested{{seq: {seq}}}"),
        other => other.name().into(),
    }
}

fn command_matches(c: &Command, k: &EventKind) -> bool {
    match (c, k) {
        (
            Command::ScheduleActivity {
                seq, activity_type, ..
            },
            EventKind::ActivityScheduled {
                seq: s,
                activity_type: t,
                ..
            },
        ) => seq == s && activity_type == t,
        (Command::StartTimer { seq, .. }, EventKind::TimerStarted { seq: s, .. }) => seq == s,
        (Command::CancelTimer { seq }, EventKind::TimerCancelled { seq: s }) => seq == s,
        (Command::RecordMarker { id, .. }, EventKind::MarkerRecorded { id: i, .. }) => id == i,
        (Command::CompleteWorkflow { .. }, EventKind::WorkflowCompleted { .. }) => true,
        (Command::FailWorkflow { .. }, EventKind::WorkflowFailed { .. }) => true,
        (Command::RequestCancelActivity { seq }, EventKind::ActivityCancelled { seq: s }) => {
            seq == s
        }
        (Command::CancelWorkflow { .. }, EventKind::WorkflowCancelled { .. }) => true,
        (
            Command::StartChild {
                seq, workflow_type, ..
            },
            EventKind::ChildWorkflowInitiated {
                seq: s,
                workflow_type: t,
                ..
            },
        ) => seq == s && workflow_type == t,
        (Command::RequestCancelChild { seq }, EventKind::ChildCancelRequested { seq: s }) => {
            seq == s
        }
        (Command::ContinueAsNew { .. }, EventKind::WorkflowContinuedAsNew { .. }) => true,
        _ => false,
    }
}

/// Builds a divergence: the one constructor every check uses, so every report has the
/// same shape and code.
pub fn nondeterminism(
    instance: &InstanceId,
    event_index: u64,
    recorded: String,
    produced: String,
) -> ExecError {
    ExecError::Nondeterminism(Nondeterminism {
        instance: instance.clone(),
        event_index,
        recorded,
        produced,
    })
}

/// Builds the [`Nondeterminism`] for one mismatch: the only constructor callers use.
pub fn diverged(
    instance: &InstanceId,
    event_index: u64,
    recorded: Option<&EventKind>,
    produced: Option<&Command>,
) -> ExecError {
    nondeterminism(
        instance,
        event_index,
        recorded
            .map(render_event)
            .unwrap_or_else(|| "no further command".into()),
        produced
            .map(render_command)
            .unwrap_or_else(|| "no further command".into()),
    )
}

/// How strictly replay compares commands with history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checks {
    /// Treat a changed activity or child-workflow input as a divergence instead of a
    /// warning.
    pub strict_inputs: bool,
}

/// Compares the details rule version 1 does not diverge on (activity and child-workflow
/// input, timer duration) and returns a warning, or, for inputs under `strict_inputs`, a
/// divergence.
fn compare_details(
    instance: &InstanceId,
    cmd: &Command,
    ev: &HistoryEvent,
    checks: Checks,
) -> Result<Option<String>, ExecError> {
    match (cmd, &ev.kind) {
        (Command::ScheduleActivity { input, activity_type, seq, .. }, EventKind::ActivityScheduled { input: recorded, .. }) => {
            compare_input(instance, ev, checks, input, recorded, "ActivityScheduled", &format!("activity {activity_type:?}"), activity_type, *seq)
        }
        // As for an activity: the child already started with the recorded input, so a
        // running parent is unaffected.
        (Command::StartChild { input, workflow_type, seq, .. }, EventKind::ChildWorkflowInitiated { input: recorded, .. }) => {
            compare_input(instance, ev, checks, input, recorded, "ChildWorkflowInitiated", &format!("child workflow {workflow_type:?}"), workflow_type, *seq)
        }
        (Command::StartTimer { seq, duration_ms }, EventKind::TimerStarted { duration_ms: recorded, .. }) if duration_ms != recorded => {
            Ok(Some(format!(
                "event #{}: timer seq {seq} duration changed from {recorded} ms to {duration_ms} ms; the recorded timer keeps its fire time",
                ev.id
            )))
        }
        _ => Ok(None),
    }
}

/// A produced input against the recorded one (an activity's or a child's): `None` when
/// equal, else a warning, or under `strict_inputs` a divergence rendered with both inputs.
#[allow(clippy::too_many_arguments)]
fn compare_input(
    instance: &InstanceId,
    ev: &HistoryEvent,
    checks: Checks,
    input: &[u8],
    recorded: &Payload,
    event: &str,
    what: &str,
    type_name: &str,
    seq: u32,
) -> Result<Option<String>, ExecError> {
    let produced = Payload::from_json_bytes(input)
        .map(|p| p.json().to_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(input).into_owned());
    if produced == recorded.json() {
        return Ok(None);
    }
    if checks.strict_inputs {
        let render = |i: &str| format!("{event}{{type: {type_name:?}, seq: {seq}, input: {i}}}");
        return Err(nondeterminism(
            instance,
            ev.id,
            render(recorded.json()),
            render(&produced),
        ));
    }
    Ok(Some(format!(
        "event #{}: {what} (seq {seq}) input changed from {} to {produced}",
        ev.id,
        recorded.json()
    )))
}

/// Checks one activation's produced commands against its recorded command events,
/// appending non-divergent differences to `warnings`.
///
/// # Errors
/// The first mismatch, as a [`Nondeterminism`].
pub fn match_commands(
    instance: &InstanceId,
    rec: &RecordedActivation,
    produced: &[Command],
    checks: Checks,
    warnings: &mut Vec<String>,
) -> Result<(), ExecError> {
    let mut next = 0; // index into the recorded commands
    for cmd in produced {
        loop {
            match rec.commands.get(next) {
                Some(ev) if command_matches(cmd, &ev.kind) => {
                    check_version_range(instance, cmd, ev)?;
                    if let Some(w) = compare_details(instance, cmd, ev, checks)? {
                        warnings.push(w);
                    }
                    next += 1;
                    break;
                }
                // Temporal's rule: a deprecated patch marker the code no longer asks for is
                // skipped, so `deprecate_patch` calls can finally be deleted.
                Some(ev) if is_deprecated_patch(&ev.kind) => next += 1,
                Some(ev) => return Err(diverged(instance, ev.id, Some(&ev.kind), Some(cmd))),
                None => {
                    let at = rec.commands.last().map(|e| e.id).unwrap_or(rec.boundary_id) + 1;
                    return Err(diverged(instance, at, None, Some(cmd)));
                }
            }
        }
    }
    for ev in &rec.commands[next..] {
        if !is_deprecated_patch(&ev.kind) {
            return Err(diverged(instance, ev.id, Some(&ev.kind), None));
        }
    }
    Ok(())
}

/// Marker id prefix of `get_version` markers; data `{"version", "min", "max"}`.
pub const VERSION_MARKER: &str = "version:";
/// Marker id prefix of `patched` / `deprecate_patch` markers; data `{"deprecated"}`.
pub const PATCH_MARKER: &str = "patch:";

fn is_deprecated_patch(kind: &EventKind) -> bool {
    match kind {
        EventKind::MarkerRecorded { id, data } => {
            id.starts_with(PATCH_MARKER)
                && data.to_value().get("deprecated").and_then(|d| d.as_bool()) == Some(true)
        }
        _ => false,
    }
}

/// A recorded `get_version` value must lie in the range the code now supports.
fn check_version_range(
    instance: &InstanceId,
    cmd: &Command,
    ev: &HistoryEvent,
) -> Result<(), ExecError> {
    let (Command::RecordMarker { id, data }, EventKind::MarkerRecorded { data: recorded, .. }) =
        (cmd, &ev.kind)
    else {
        return Ok(());
    };
    if !id.starts_with(VERSION_MARKER) {
        return Ok(());
    }
    let produced: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    let field = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_i64());
    let (Some(version), Some(min), Some(max)) = (
        field(&recorded.to_value(), "version"),
        field(&produced, "min"),
        field(&produced, "max"),
    ) else {
        return Ok(());
    };
    if (min..=max).contains(&version) {
        return Ok(());
    }
    Err(nondeterminism(
        instance,
        ev.id,
        format!("MarkerRecorded{{id: {id:?}, version: {version}}}"),
        format!("MarkerRecorded{{id: {id:?}, supported: {min}..={max}}}"),
    ))
}

/// What a live activation produced, ready to commit.
#[derive(Debug, Clone)]
pub struct LiveActivation {
    /// Events to append, from the expected next id on.
    pub events: Vec<(u64, EventKind)>,
    /// Activities scheduled.
    pub new_activities: Vec<NewActivityTask>,
    /// Timers started.
    pub new_timers: Vec<NewTimer>,
    /// Timers cancelled.
    pub cancelled_timers: Vec<u32>,
    /// Activities cancelled.
    pub cancelled_activities: Vec<u32>,
    /// Children to start.
    pub new_children: Vec<NewChild>,
    /// Children asked to stop.
    pub cancelled_children: Vec<u32>,
    /// Resulting state.
    pub outcome: InstanceOutcome,
    /// Captured stdout and stderr of the activation.
    pub output: (Vec<u8>, Vec<u8>),
}

/// A workflow instance's code, positioned at the end of its history.
pub struct WorkflowRun {
    instance_id: InstanceId,
    workflow_type: String,
    parent: Option<ParentRef>,
    checks: Checks,
    warnings: Vec<String>,
    guest: WorkflowInstance,
    next_event_id: u64,
    closed: bool,
    last_now_ms: u64,
}

impl WorkflowRun {
    /// Instantiates the module and replays `history` (every recorded activation), checking
    /// each against its recorded commands. Returns the run and the undelivered inputs.
    ///
    /// # Errors
    /// The first divergence, guest failure or malformed history.
    pub fn rebuild(
        sandbox: &Sandbox,
        module: &LoadedModule,
        instance_id: &InstanceId,
        history: &[HistoryEvent],
        checks: Checks,
    ) -> Result<(WorkflowRun, Vec<HistoryEvent>), ExecError> {
        Self::rebuild_in(sandbox, module, instance_id, history, checks, false)
    }

    /// [`WorkflowRun::rebuild`] in a pooled replay slot when `for_replay` (the run must then
    /// live for one replayed history only: [`Sandbox::new_replay_workflow`]).
    ///
    /// # Errors
    /// As for [`WorkflowRun::rebuild`].
    pub fn rebuild_in(
        sandbox: &Sandbox,
        module: &LoadedModule,
        instance_id: &InstanceId,
        history: &[HistoryEvent],
        checks: Checks,
        for_replay: bool,
    ) -> Result<(WorkflowRun, Vec<HistoryEvent>), ExecError> {
        let (activations, pending) = split_history(instance_id, history)?;
        let (seed, workflow_type, parent) = match &history[0].kind {
            EventKind::WorkflowStarted {
                random_seed,
                workflow_type,
                parent,
                ..
            } => (*random_seed, workflow_type.clone(), parent.clone()),
            _ => unreachable!("split_history checked event 1"),
        };
        let guest = if for_replay {
            sandbox.new_replay_workflow(module, seed)
        } else {
            sandbox.new_workflow(module, seed)
        };
        let guest = guest.map_err(|error| ExecError::Guest {
            event_index: 1,
            error,
        })?;
        let mut run = WorkflowRun {
            instance_id: instance_id.clone(),
            workflow_type,
            parent,
            checks,
            warnings: Vec::new(),
            guest,
            next_event_id: history.len() as u64 + 1,
            closed: false,
            last_now_ms: 0,
        };
        for rec in &activations {
            run.replay_one(rec)?;
        }
        Ok((run, pending))
    }

    /// Replays one recorded activation.
    ///
    /// # Errors
    /// Divergence or guest failure.
    pub fn replay_one(&mut self, rec: &RecordedActivation) -> Result<Vec<Command>, ExecError> {
        // Markers this activation recorded come first, so `get_version` / `patched` can
        // answer synchronously with the recorded value.
        let markers = rec.commands.iter().filter_map(|e| match &e.kind {
            EventKind::MarkerRecorded { id, data } => Some(Job::Marker {
                id: id.clone(),
                data: data.as_bytes().to_vec(),
            }),
            _ => None,
        });
        let inputs = rec
            .inputs
            .iter()
            .filter_map(|e| job_for(&self.instance_id, &e.kind));
        let jobs = markers.chain(inputs).collect();
        let activation = Activation {
            now_ms: rec.now_ms,
            is_replaying: true,
            jobs,
        };
        let commands = self.activate(&activation, rec.boundary_id)?;
        let _ = self.guest.take_output(); // logs are suppressed during replay
        match_commands(
            &self.instance_id,
            rec,
            &commands,
            self.checks,
            &mut self.warnings,
        )?;
        self.last_now_ms = rec.now_ms;
        if rec.commands.iter().any(|e| e.kind.is_terminal()) {
            self.closed = true;
        }
        Ok(commands)
    }

    fn activate(
        &mut self,
        activation: &Activation,
        event_index: u64,
    ) -> Result<Vec<Command>, ExecError> {
        match self.guest.activate(activation) {
            Ok(Completion::Commands(c)) => Ok(c),
            Ok(Completion::Error(message)) => Err(ExecError::Sdk {
                event_index,
                message,
            }),
            Err(error) => Err(ExecError::Guest { event_index, error }),
        }
    }

    /// Evaluates a query handler against the state after the last activation. Never
    /// changes history; after `Err` or [`QueryResponse::Violated`] the run must be discarded
    /// (its in-memory state may no longer match history).
    ///
    /// # Errors
    /// Guest failures.
    pub fn query(&mut self, request: &QueryRequest) -> Result<QueryResponse, ExecError> {
        self.guest.query(request).map_err(|error| ExecError::Guest {
            event_index: self.next_event_id,
            error,
        })
    }

    /// Differences replay noticed that are not divergences (see [`Checks`]).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The workflow type this run executes.
    pub fn workflow_type(&self) -> &str {
        &self.workflow_type
    }

    /// The id the next appended event gets.
    pub fn next_event_id(&self) -> u64 {
        self.next_event_id
    }

    /// True once the workflow completed, failed or was cancelled.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Runs one live activation delivering `inputs` (already-recorded undelivered events
    /// and inbox entries, in order) at logical time `now_ms` (never earlier than the last
    /// activation's). On success the run advances past the returned events; on error the
    /// run must be discarded.
    ///
    /// # Errors
    /// Guest failures and SDK errors; the caller blocks the instance.
    pub fn run_live(
        &mut self,
        inputs: &[EventKind],
        inputs_recorded: usize,
        now_ms: u64,
        resolve: ModuleResolver<'_>,
    ) -> Result<LiveActivation, ExecError> {
        let now_ms = now_ms.max(self.last_now_ms);
        let jobs: Vec<Job> = inputs
            .iter()
            .filter_map(|k| job_for(&self.instance_id, k))
            .collect();
        let activation = Activation {
            now_ms,
            is_replaying: false,
            jobs,
        };
        let commands = self.activate(&activation, self.next_event_id)?;
        let output = self.guest.take_output();

        let mut next = self.next_event_id;
        let mut events = Vec::with_capacity(inputs.len() + commands.len() + 1);
        // Inputs that were already appended (the start event) are not appended again.
        for k in &inputs[inputs_recorded..] {
            events.push((next, k.clone()));
            next += 1;
        }
        events.push((next, EventKind::WorkflowTaskCompleted { now_ms }));
        next += 1;
        let mut live = LiveActivation {
            events,
            new_activities: Vec::new(),
            new_timers: Vec::new(),
            cancelled_timers: Vec::new(),
            cancelled_activities: Vec::new(),
            new_children: Vec::new(),
            cancelled_children: Vec::new(),
            outcome: InstanceOutcome::Running,
            output,
        };
        let payload = |bytes: &[u8], what: &str| {
            Payload::from_json_bytes(bytes).map_err(|e| ExecError::Sdk {
                event_index: self.next_event_id,
                message: format!("the workflow produced a {what} that is not JSON: {e}"),
            })
        };
        for cmd in commands {
            if self.closed || !matches!(live.outcome, InstanceOutcome::Running) {
                break; // nothing after the workflow's end is recorded
            }
            let kind = match cmd {
                Command::ScheduleActivity {
                    seq,
                    activity_type,
                    input,
                    options,
                } => {
                    let input = payload(&input, "activity input")?;
                    live.new_activities.push(NewActivityTask {
                        seq,
                        activity_type: activity_type.clone(),
                        input: input.clone(),
                        options: options.clone(),
                        lease_until_ms: None,
                    });
                    EventKind::ActivityScheduled {
                        seq,
                        activity_type,
                        input,
                        options,
                    }
                }
                Command::StartTimer { seq, duration_ms } => {
                    let fire_at_ms = now_ms.saturating_add(duration_ms);
                    live.new_timers.push(NewTimer { seq, fire_at_ms });
                    EventKind::TimerStarted {
                        seq,
                        duration_ms,
                        fire_at_ms,
                    }
                }
                Command::CancelTimer { seq } => {
                    live.cancelled_timers.push(seq);
                    EventKind::TimerCancelled { seq }
                }
                Command::RecordMarker { id, data } => EventKind::MarkerRecorded {
                    id,
                    data: payload(&data, "marker")?,
                },
                Command::CompleteWorkflow { result } => {
                    let result = payload(&result, "result")?;
                    live.outcome = InstanceOutcome::Completed(result.clone());
                    EventKind::WorkflowCompleted { result }
                }
                Command::FailWorkflow { failure } => {
                    live.outcome = InstanceOutcome::Failed(failure.clone());
                    EventKind::WorkflowFailed { failure }
                }
                Command::RequestCancelActivity { seq } => {
                    live.cancelled_activities.push(seq);
                    EventKind::ActivityCancelled { seq }
                }
                Command::CancelWorkflow { reason } => {
                    live.outcome = InstanceOutcome::Cancelled(reason.clone());
                    EventKind::WorkflowCancelled { reason }
                }
                Command::StartChild {
                    seq,
                    workflow_type,
                    input,
                    id,
                    module,
                } => {
                    let input = payload(&input, "child workflow input")?;
                    let child_id = InstanceId(
                        id.unwrap_or_else(|| format!("{}-child-{seq}", self.instance_id)),
                    );
                    let resolved = resolve(&module, &child_id.0, &workflow_type);
                    let module_hash = resolved.as_ref().ok().map(|(h, _)| h.clone());
                    live.new_children.push(NewChild {
                        seq,
                        id: child_id.clone(),
                        started: resolved.map(|(module_hash, version_label)| {
                            EventKind::WorkflowStarted {
                                workflow_type: workflow_type.clone(),
                                module_hash,
                                input: input.clone(),
                                random_seed: random_u64(),
                                determinism_rules: DETERMINISM_RULES_VERSION,
                                version_label,
                                parent: Some(ParentRef {
                                    id: self.instance_id.clone(),
                                    seq,
                                }),
                                continued_from_run: None,
                            }
                        }),
                    });
                    EventKind::ChildWorkflowInitiated {
                        seq,
                        child_id,
                        workflow_type,
                        input,
                        module_hash,
                    }
                }
                Command::RequestCancelChild { seq } => {
                    live.cancelled_children.push(seq);
                    EventKind::ChildCancelRequested { seq }
                }
                Command::ContinueAsNew {
                    input,
                    workflow_type,
                    module,
                    unread_signals,
                } => {
                    let mut unread = Vec::with_capacity(unread_signals.len());
                    for (name, input) in unread_signals {
                        unread.push(EventKind::SignalReceived {
                            name,
                            input: payload(&input, "signal")?,
                        });
                    }
                    let input = payload(&input, "continue-as-new input")?;
                    let workflow_type = workflow_type.unwrap_or_else(|| self.workflow_type.clone());
                    let (module_hash, version_label) =
                        resolve(&module, &self.instance_id.0, &workflow_type).map_err(|why| {
                            ExecError::Sdk {
                                event_index: self.next_event_id,
                                message: format!("cannot continue as new: {why}"),
                            }
                        })?;
                    live.outcome = InstanceOutcome::ContinuedAsNew(
                        EventKind::WorkflowStarted {
                            workflow_type: workflow_type.clone(),
                            module_hash: module_hash.clone(),
                            input: input.clone(),
                            random_seed: random_u64(),
                            determinism_rules: DETERMINISM_RULES_VERSION,
                            version_label,
                            parent: self.parent.clone(),
                            continued_from_run: None,
                        },
                        unread,
                    );
                    EventKind::WorkflowContinuedAsNew {
                        input,
                        workflow_type,
                        module_hash,
                    }
                }
            };
            live.events.push((next, kind));
            next += 1;
        }
        self.next_event_id = next;
        self.last_now_ms = now_ms;
        if !matches!(live.outcome, InstanceOutcome::Running) {
            self.closed = true;
        }
        Ok(live)
    }
}

/// A failure as the engine reports a workflow task problem (not a workflow failure).
pub fn task_failure(kind: &str, message: String) -> Failure {
    Failure {
        kind: kind.into(),
        message,
        non_retryable: true,
        attempts: 0,
    }
}
