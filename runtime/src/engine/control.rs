//! Talking to running instances: signal, cancel, terminate and query, and the selection of
//! a bulk cancel or terminate (`select_open`; the bulk verbs themselves are
//! `Api::stop`, in `api/local.rs`).
//!
//! Signals and cancellations are *input*: they wait in the instance's inbox until a worker
//! delivers them in an activation, so they are durable the moment the call returns, and they
//! reach the code in the order they arrived. Termination is not input: it ends the instance
//! in one transaction without running its code. A query runs the instance's code but
//! records nothing.

use std::sync::Arc;

use pinion_abi::{QueryRequest, QueryResponse};

use super::{Error, Pinion};
use crate::executor::{Checks, WorkflowRun};
use crate::history::{InstanceId, InstanceStatus, Payload};
use crate::store::{InstanceFilter, StoreError};
use crate::worker::Shared;

/// Which instances a bulk cancel or terminate applies to. Only running and blocked
/// instances are ever selected; every field narrows the selection.
#[derive(Debug, Clone, Default)]
pub struct BulkSelector {
    /// Instances pinned to this module (full hash).
    pub module_hash: Option<crate::history::ModuleHash>,
    /// Instances of this workflow type.
    pub workflow_type: Option<String>,
}

/// The store checks the instance inside its write (one round trip instead of a read
/// before the write); its `NotFound` is the caller's unknown id.
fn for_instance<T>(id: &InstanceId, r: Result<T, StoreError>) -> Result<T, Error> {
    r.map_err(|e| match e {
        StoreError::NotFound(_) => Error::UnknownInstance(id.0.clone()),
        other => Error::Store(other),
    })
}

fn parse_input(input_json: &str, what: &str) -> Result<Payload, Error> {
    let text = if input_json.trim().is_empty() {
        "null"
    } else {
        input_json
    };
    Payload::from_json_bytes(text.as_bytes())
        .map_err(|e| Error::InvalidInput(format!("{what} input is not valid JSON: {e}")))
}

impl Pinion {
    fn worker_shared(&self) -> Option<Arc<Shared>> {
        self.worker.lock().expect("worker handle lock").upgrade()
    }

    fn wake_worker(&self) {
        if let Some(s) = self.worker_shared() {
            s.workflow_wake.notify();
        }
    }

    /// Sends signal `name` with JSON input (empty means `null`) to a running or blocked
    /// instance. Durable when this returns; delivered in arrival order.
    ///
    /// # Errors
    /// [`Error::UnknownInstance`], [`Error::InvalidInput`], and
    /// [`crate::store::StoreError::NotAccepting`] for an instance that has ended.
    pub fn signal(&self, id: &str, name: &str, input_json: &str) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::InvalidInput("the signal name is empty".into()));
        }
        let input = parse_input(input_json, "signal")?;
        let id = InstanceId(id.to_owned());
        for_instance(
            &id,
            self.store.signal(&id, name, &input, self.clock.now_ms()),
        )?;
        self.wake_worker();
        Ok(())
    }

    /// Asks a running or blocked instance to stop. The workflow observes the cancellation,
    /// its pending activities and timers are cancelled, and it may clean up before it ends
    /// cancelled. Returns false when a cancellation was already requested.
    ///
    /// # Errors
    /// As for [`Pinion::signal`].
    pub fn cancel(&self, id: &str, reason: &str) -> Result<bool, Error> {
        let id = InstanceId(id.to_owned());
        let fresh = for_instance(
            &id,
            self.store.request_cancel(&id, reason, self.clock.now_ms()),
        )?;
        self.wake_worker();
        Ok(fresh)
    }

    /// Ends a running or blocked instance at once, without running its code.
    ///
    /// # Errors
    /// As for [`Pinion::signal`].
    pub fn terminate(&self, id: &str, reason: &str) -> Result<(), Error> {
        let id = InstanceId(id.to_owned());
        for_instance(&id, self.store.terminate(&id, reason, self.clock.now_ms()))?;
        if let Some(s) = self.worker_shared() {
            // Its running activity attempts learn it at their next heartbeat.
            s.cancel_attempts(&id, None);
        }
        Ok(())
    }

    /// The running and blocked instances a bulk operation selects, ordered by id.
    ///
    /// # Errors
    /// Storage errors.
    pub fn select_open(&self, selector: &BulkSelector) -> Result<Vec<InstanceId>, Error> {
        let mut ids = Vec::new();
        for status in [InstanceStatus::Running, InstanceStatus::Blocked] {
            let rows = self.store.list_instances(&InstanceFilter {
                status: Some(status),
                workflow_type: selector.workflow_type.clone(),
                module_hash: selector.module_hash.clone(),
                ..InstanceFilter::default()
            })?;
            ids.extend(rows.into_iter().filter(|r| !r.imported).map(|r| r.id));
        }
        ids.sort();
        Ok(ids)
    }

    /// Evaluates the workflow's query handler `name` with JSON input (empty means `null`)
    /// against the instance's state after its last activation: on the live cached run when
    /// a worker in this process has one, else on a run rebuilt by replay. Nothing is
    /// written: a query cannot change history. Works on ended instances too.
    ///
    /// # Errors
    /// [`Error::UnknownInstance`], [`Error::InvalidInput`], [`Error::Query`] when the
    /// workflow cannot answer (unknown query name, bad input, a handler that tried to change
    /// the workflow), [`Error::Rebuild`] when the instance cannot be rebuilt.
    pub fn query(&self, id: &str, name: &str, input_json: &str) -> Result<Payload, Error> {
        let input = parse_input(input_json, "query")?;
        let rec = self.status(id)?;
        let worker = self.worker_shared();
        let cached = worker
            .as_ref()
            .and_then(|w| w.take_cached(&rec.id, rec.event_count));
        // Only a run borrowed from the cache goes back: a rebuilt one may have recorded
        // input it has not been given yet (the start event, before the first activation),
        // which the worker's cache does not expect.
        let from_cache = cached.is_some();
        let mut run = match cached {
            Some(run) => run,
            None => {
                let history = self.store.load_history(&rec.id)?;
                let module = self.registry.load(&rec.module_hash)?;
                let (run, _) = WorkflowRun::rebuild(
                    &self.sandbox,
                    &module,
                    &rec.id,
                    &history,
                    Checks::default(),
                )
                .map_err(|e| Error::Rebuild(Box::new(e)))?;
                run
            }
        };
        let request = QueryRequest {
            name: name.to_owned(),
            input: input.as_bytes().to_vec(),
        };
        let failed = |f: pinion_abi::Failure| Error::Query {
            id: rec.id.0.clone(),
            name: name.to_owned(),
            kind: f.kind,
            message: f.message,
        };
        let response = run
            .query(&request)
            .map_err(|e| Error::Rebuild(Box::new(e)))?;
        let keep = |run: WorkflowRun| {
            if let (Some(w), true) = (&worker, from_cache) {
                if rec.status == InstanceStatus::Running && !run.is_closed() {
                    w.return_cached(&rec.id, run);
                }
            }
        };
        match response {
            QueryResponse::Answered(bytes) => {
                keep(run);
                Payload::from_json_bytes(&bytes).map_err(|e| Error::Query {
                    id: rec.id.0.clone(),
                    name: name.to_owned(),
                    kind: "QueryFailed".into(),
                    message: format!("the answer is not JSON: {e}"),
                })
            }
            QueryResponse::Failed(f) => {
                keep(run);
                Err(failed(f))
            }
            // The run may no longer match history: drop it (a worker rebuilds by replay).
            QueryResponse::Violated(f) => Err(failed(f)),
        }
    }
}
