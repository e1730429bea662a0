//! The activation driver: one [`Instance`] per wasm instance, turning each
//! [`Activation`] into a [`Completion`].
//!
//! Per activation, in this order:
//!
//! 1. The first activation must begin with `Job::Start`, after any `Job::Marker`s (a replayed
//!    first activation that recorded markers delivers them ahead of `Start`). It looks up the
//!    workflow type, seeds the PRNG, stores those markers (before the workflow function is
//!    called, so nothing can ask for one too early) and builds the root future (decoding the
//!    input; a bad input fails the workflow with `InvalidInput` instead of starting it).
//! 2. Logical time and the replay flag are taken from the activation.
//! 3. Jobs are applied in order, each filling an activity or timer slot or storing a marker
//!    for `get_version` / `patched` (see `versioning.rs`).
//! 4. The root future is polled **once**, with a no-op waker. One poll is enough: every SDK
//!    leaf future reads its slot when polled, and slots change only in step 3, so after one
//!    poll every branch is either finished or waiting on a job that has not arrived.
//! 5. If the root future finished, `CompleteWorkflow` or `FailWorkflow` is appended and the
//!    instance is closed: later activations return no commands.
//! 6. The commands issued during steps 1–5 are returned in the order they were issued.
//!
//! A job the workflow cannot have asked for (a second start, a resolution for a sequence
//! number never issued, a double resolution, a marker delivered twice or with malformed
//! data) yields `Completion::Error`: the host and the code disagree about history, which
//! the host must surface rather than paper over. Where a marker sits among the other jobs
//! is not checked: markers are only read when the root future is polled, after every job
//! has been applied, so their position cannot change an outcome.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use pinion_abi::{Activation, Command, Completion, Failure, Job, QueryRequest, QueryResponse};
use std::cell::RefCell;

use super::state::{QueryError, Shared, SharedRef};
use super::Module;
use crate::context::WorkflowContext;
use crate::error::WorkflowError;

/// What a workflow's root future yields: the JSON result, or the error to fail with.
pub type WorkflowResult = Result<Vec<u8>, WorkflowError>;

/// A started workflow, type-erased.
pub type RootFuture = Pin<Box<dyn Future<Output = WorkflowResult>>>;

/// A started instance.
struct Running {
    shared: SharedRef,
    /// `None` once the workflow finished (or failed to start).
    root: Option<RootFuture>,
}

/// The state of one workflow instance inside the module.
///
/// The exported `pinion_activate` uses one per wasm instance (in a thread-local); tests can
/// create as many as they like.
#[derive(Default)]
pub struct Instance {
    run: Option<Running>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("started", &self.run.is_some())
            .field(
                "finished",
                &self.run.as_ref().is_some_and(|r| r.root.is_none()),
            )
            .finish()
    }
}

impl Instance {
    /// An instance that has not been started.
    pub const fn new() -> Self {
        Instance { run: None }
    }

    /// Applies an activation and returns the commands it produced.
    pub fn activate(&mut self, module: &Module, activation: Activation) -> Completion {
        match self.apply(module, activation) {
            Ok(commands) => Completion::Commands(commands),
            Err(message) => Completion::Error(message),
        }
    }

    fn apply(&mut self, module: &Module, activation: Activation) -> Result<Vec<Command>, String> {
        let Activation {
            now_ms,
            is_replaying,
            jobs,
        } = activation;
        let mut jobs = jobs.into_iter().peekable();
        let run =
            match &mut self.run {
                Some(run) => run,
                None => {
                    let mut markers = Vec::new();
                    while let Some(Job::Marker { id, data }) =
                        jobs.next_if(|job| matches!(job, Job::Marker { .. }))
                    {
                        markers.push((id, data));
                    }
                    match jobs.next() {
                        Some(Job::Start {
                            workflow_type,
                            instance_id,
                            input,
                            random_seed,
                        }) => {
                            let mut state = Shared::new(random_seed, now_ms, is_replaying);
                            for (id, data) in markers {
                                state.markers.deliver(id, &data)?;
                            }
                            let shared = Rc::new(RefCell::new(state));
                            let root = start(module, &shared, workflow_type, instance_id, &input)?;
                            self.run.insert(Running { shared, root })
                        }
                        Some(other) => {
                            return Err(format!(
                            "the first activation must start the workflow, but its first job{} \
                             is {}",
                            if markers.is_empty() { "" } else { " after the markers" },
                            job_name(&other)
                        ));
                        }
                        None if markers.is_empty() => {
                            return Err(
                                "the first activation has no jobs; it must start the workflow"
                                    .into(),
                            )
                        }
                        None => {
                            return Err("the first activation has markers but no Start job; it \
                                    must start the workflow"
                                .into())
                        }
                    }
                }
            };

        {
            let mut shared = run.shared.borrow_mut();
            if shared.closed {
                // Finished: whatever the host still delivers changes nothing.
                return Ok(shared.take_commands());
            }
            shared.now_ms = now_ms;
            shared.replaying = is_replaying;
            for job in jobs {
                match job {
                    Job::Start { .. } => return Err("the workflow was already started".into()),
                    Job::ResolveActivity { seq, result } => shared.resolve_activity(seq, result)?,
                    Job::FireTimer { seq } => shared.fire_timer(seq)?,
                    Job::Marker { id, data } => shared.markers.deliver(id, &data)?,
                    Job::Signal { name, input } => shared.deliver_signal(name, input),
                    Job::Cancel { reason } => shared.cancel(reason)?,
                    Job::ResolveChild { seq, result } => shared.resolve_child(seq, result)?,
                }
            }
        }

        if let Some(root) = run.root.as_mut() {
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(result) = root.as_mut().poll(&mut cx) {
                run.root = None;
                let mut shared = run.shared.borrow_mut();
                let command = match result {
                    Ok(result) => Command::CompleteWorkflow { result },
                    // A cancellation error ends the instance cancelled only when a
                    // cancellation was requested; otherwise it is an ordinary failure.
                    Err(e) if e.is_cancelled() && shared.cancel_reason.is_some() => {
                        Command::CancelWorkflow { reason: e.message }
                    }
                    Err(e) if e.kind == crate::CONTINUE_AS_NEW_KIND => {
                        match shared.continue_as_new.take() {
                            Some(Command::ContinueAsNew {
                                input,
                                workflow_type,
                                module,
                                ..
                            }) => Command::ContinueAsNew {
                                input,
                                workflow_type,
                                module,
                                // Taken at the end, so signals that arrived after the call
                                // to `continue_as_new` are carried too.
                                unread_signals: shared.take_unread_signals(),
                            },
                            Some(other) => other,
                            None => Command::FailWorkflow {
                                failure: e.into_failure(),
                            },
                        }
                    }
                    Err(e) => Command::FailWorkflow {
                        failure: e.into_failure(),
                    },
                };
                shared.push(command);
                shared.closed = true;
            }
        }
        Ok(run.shared.borrow_mut().take_commands())
    }
}

impl Instance {
    /// Evaluates a query handler against the current state. Nothing the handler does reaches
    /// the next activation: commands are dropped and reported as a violation.
    pub fn query(&mut self, request: QueryRequest) -> QueryResponse {
        let failed = |kind: &str, message: String| {
            QueryResponse::Failed(Failure {
                kind: kind.into(),
                message,
                non_retryable: true,
                attempts: 0,
            })
        };
        let Some(run) = &self.run else {
            return failed(
                "NotStarted",
                "the workflow has not run its first activation yet".into(),
            );
        };
        // The handler is taken out while it runs: it may borrow the shared state itself.
        let handler = {
            let mut shared = run.shared.borrow_mut();
            match shared.queries.0.remove(&request.name) {
                Some(h) => {
                    shared.in_query = true;
                    shared.query_violation = None;
                    h
                }
                None => {
                    let known: Vec<&str> = shared.queries.0.keys().map(String::as_str).collect();
                    return failed(
                        "UnknownQuery",
                        format!(
                            "the workflow has no query handler named \"{}\"; registered: {}",
                            request.name,
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
            }
        };
        let answer = handler(&request.input);
        let mut shared = run.shared.borrow_mut();
        shared.in_query = false;
        shared.queries.0.insert(request.name.clone(), handler);
        if let Some(what) = shared.query_violation.take() {
            return QueryResponse::Violated(Failure {
                kind: "ReadOnlyViolation".into(),
                message: format!(
                    "query handler \"{}\" tried to {what}; query handlers may only read workflow state",
                    request.name
                ),
                non_retryable: true,
                attempts: 0,
            });
        }
        match answer {
            Ok(bytes) => QueryResponse::Answered(bytes),
            Err(QueryError::InvalidInput(e)) => failed(
                "InvalidInput",
                format!(
                    "input of query \"{}\" does not fit the handler: {e}",
                    request.name
                ),
            ),
            Err(QueryError::InvalidOutput(e)) => failed(
                "QueryFailed",
                format!(
                    "the answer of query \"{}\" does not serialise to JSON: {e}",
                    request.name
                ),
            ),
        }
    }
}

/// Builds the root future for `Job::Start`; `Ok(None)` when the input was rejected and the
/// instance already failed.
fn start(
    module: &Module,
    shared: &SharedRef,
    workflow_type: String,
    instance_id: String,
    input: &[u8],
) -> Result<Option<RootFuture>, String> {
    let Some(def) = module.workflows.iter().find(|w| w.name == workflow_type) else {
        return Err(format!(
            "unknown workflow type \"{workflow_type}\"; this module exports: {}",
            module
                .workflows
                .iter()
                .map(|w| w.name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let ctx = WorkflowContext::new(
        shared.clone(),
        instance_id,
        workflow_type.clone(),
        module.version_label,
    );
    match (def.start)(ctx, input) {
        Ok(root) => Ok(Some(root)),
        Err(serde_error) => {
            let mut shared = shared.borrow_mut();
            shared.push(Command::FailWorkflow {
                failure: Failure {
                    kind: "InvalidInput".into(),
                    message: format!(
                        "invalid input for workflow \"{workflow_type}\": {serde_error}"
                    ),
                    non_retryable: true,
                    attempts: 0,
                },
            });
            shared.closed = true;
            Ok(None)
        }
    }
}

fn job_name(job: &Job) -> &'static str {
    match job {
        Job::Start { .. } => "Start",
        Job::ResolveActivity { .. } => "ResolveActivity",
        Job::FireTimer { .. } => "FireTimer",
        Job::Marker { .. } => "Marker",
        Job::Signal { .. } => "Signal",
        Job::Cancel { .. } => "Cancel",
        Job::ResolveChild { .. } => "ResolveChild",
    }
}
