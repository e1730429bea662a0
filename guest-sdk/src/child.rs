//! Child workflows and continue-as-new.
//!
//! A **child workflow** is an instance of its own (own history, own id, visible in
//! `pinion list`) that its parent starts and awaits. By default it runs on the parent's
//! module; [`ChildOptions`] pins it to an alias's module or to a module hash instead. The
//! parent's future resolves when the child ends. Cancelling the parent asks its running
//! children to stop and still waits for their end; when the parent ends, children still
//! running are terminated.
//!
//! **Continue-as-new** ends the current run and starts the workflow again under the same
//! instance id with a fresh history and new input, optionally on another module (an
//! alias's current one): how a long-running instance keeps its history short and moves to
//! new code. Signals the run received but never read, and signals not yet delivered, carry
//! over to the new run.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use pinion_abi::{ChildResult, Command, ModuleChoice};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::__rt::state::SharedRef;
use crate::context::WorkflowContext;
use crate::error::WorkflowError;

/// The kind of the error [`WorkflowContext::continue_as_new`] returns. Returning it from the
/// workflow function ends the run with a continue-as-new.
pub const CONTINUE_AS_NEW_KIND: &str = "ContinueAsNew";

/// Where a child (or a continued run) runs, and under which id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildOptions {
    id: Option<String>,
    module: ModuleChoice,
}

impl ChildOptions {
    /// The defaults: the parent's module, and the id `<parent id>-child-<seq>`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the child this instance id (must be unused).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Runs the child on the module this alias points at when it starts.
    pub fn alias(mut self, alias: impl Into<String>) -> Self {
        self.module = ModuleChoice::Alias(alias.into());
        self
    }

    /// Runs the child on this deployed module (full hash or unique prefix).
    pub fn module(mut self, hash: impl Into<String>) -> Self {
        self.module = ModuleChoice::Module(hash.into());
        self
    }
}

/// How to continue as new: same module by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContinueAsNewOptions {
    workflow_type: Option<String>,
    module: ModuleChoice,
}

impl ContinueAsNewOptions {
    /// The defaults: same workflow type, same module.
    pub fn new() -> Self {
        Self::default()
    }

    /// Continue on the module this alias points at (how an instance moves to new code).
    pub fn alias(mut self, alias: impl Into<String>) -> Self {
        self.module = ModuleChoice::Alias(alias.into());
        self
    }

    /// Continue on this deployed module (full hash or unique prefix).
    pub fn module(mut self, hash: impl Into<String>) -> Self {
        self.module = ModuleChoice::Module(hash.into());
        self
    }

    /// Continue as another workflow type.
    pub fn workflow_type(mut self, workflow_type: impl Into<String>) -> Self {
        self.workflow_type = Some(workflow_type.into());
        self
    }
}

impl WorkflowContext {
    /// Starts child workflow `workflow_type` on the parent's module with this input and
    /// returns a future of its result. The `StartChild` command is issued now.
    ///
    /// The future resolves to the child's result decoded as `O`, or to a [`WorkflowError`]
    /// with the child's failure kind (`Cancelled`, `Terminated`, `ChildStartFailed` when it
    /// could not be started, `InvalidOutput` when the result does not fit `O`).
    pub fn child_workflow<O: DeserializeOwned>(
        &self,
        workflow_type: &str,
        input: &(impl Serialize + ?Sized),
    ) -> ChildFuture<O> {
        self.child_workflow_with(workflow_type, input, ChildOptions::default())
    }

    /// Like [`child_workflow`](Self::child_workflow), with an id or another module.
    pub fn child_workflow_with<O: DeserializeOwned>(
        &self,
        workflow_type: &str,
        input: &(impl Serialize + ?Sized),
        options: ChildOptions,
    ) -> ChildFuture<O> {
        let shared = self.shared().clone();
        match serde_json::to_vec(input) {
            Ok(bytes) => {
                let seq = shared.borrow_mut().start_child(
                    workflow_type.to_owned(),
                    bytes,
                    options.id,
                    options.module,
                );
                ChildFuture {
                    shared,
                    workflow_type: workflow_type.to_owned(),
                    seq,
                    early: None,
                    done: false,
                    _output: PhantomData,
                }
            }
            Err(e) => ChildFuture {
                shared,
                workflow_type: workflow_type.to_owned(),
                seq: 0,
                early: Some(WorkflowError::new(
                    "InvalidInput",
                    format!("child workflow input does not serialise to JSON: {e}"),
                )),
                done: false,
                _output: PhantomData,
            },
        }
    }

    /// Ends this run and starts the workflow again with `input` and a fresh history, on the
    /// same module. Return the error it gives: `return Err(ctx.continue_as_new(&state));`
    pub fn continue_as_new(&self, input: &(impl Serialize + ?Sized)) -> WorkflowError {
        self.continue_as_new_with(input, ContinueAsNewOptions::default())
    }

    /// Like [`continue_as_new`](Self::continue_as_new), on another module or workflow type.
    pub fn continue_as_new_with(
        &self,
        input: &(impl Serialize + ?Sized),
        options: ContinueAsNewOptions,
    ) -> WorkflowError {
        match serde_json::to_vec(input) {
            Ok(input) => {
                let mut shared = self.shared().borrow_mut();
                shared.violate("continue as new");
                shared.continue_as_new = Some(Command::ContinueAsNew {
                    input,
                    workflow_type: options.workflow_type,
                    module: options.module,
                    unread_signals: Vec::new(),
                });
                WorkflowError::new(CONTINUE_AS_NEW_KIND, "continued as new")
            }
            Err(e) => WorkflowError::new(
                "InvalidInput",
                format!("continue-as-new input does not serialise to JSON: {e}"),
            ),
        }
    }
}

/// The future of a child workflow's result; see [`WorkflowContext::child_workflow`].
#[must_use = "the child is started either way; await the future to see its result"]
pub struct ChildFuture<O> {
    shared: SharedRef,
    workflow_type: String,
    seq: u32,
    early: Option<WorkflowError>,
    done: bool,
    _output: PhantomData<fn() -> O>,
}

impl<O> fmt::Debug for ChildFuture<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildFuture")
            .field("workflow_type", &self.workflow_type)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl<O> ChildFuture<O> {
    /// The child's sequence number in this instance (from 1); 0 when nothing was started.
    pub fn seq(&self) -> u32 {
        self.seq
    }
}

impl<O: DeserializeOwned> Future for ChildFuture<O> {
    type Output = Result<O, WorkflowError>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(e) = this.early.take() {
            this.done = true;
            return Poll::Ready(Err(e));
        }
        let Some(result) = this.shared.borrow_mut().take_child_result(this.seq) else {
            return Poll::Pending;
        };
        this.done = true;
        Poll::Ready(match result {
            ChildResult::Completed(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                WorkflowError::new(
                    "InvalidOutput",
                    format!(
                        "the result of child workflow \"{}\" does not deserialise into the expected type: {e}",
                        this.workflow_type
                    ),
                )
            }),
            ChildResult::Failed(f) => Err(WorkflowError::new(
                f.kind,
                format!("child workflow \"{}\": {}", this.workflow_type, f.message),
            )),
        })
    }
}

impl<O> Drop for ChildFuture<O> {
    fn drop(&mut self) {
        if !self.done && self.seq != 0 {
            if let Ok(mut shared) = self.shared.try_borrow_mut() {
                shared.abandon_child(self.seq);
            }
        }
    }
}
