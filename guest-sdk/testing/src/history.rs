//! The history a run records, in the export format of `pinion history export`
//! (`docs/history-format.md`, version 1): event 1 `WorkflowStarted`; per activation the
//! inputs it delivered, one `WorkflowTaskCompleted` with the logical time, then the
//! commands in the order the code issued them.

use pinion_abi::{ActivityOptions, Command, Failure};
use serde_json::{json, Value};

use crate::error::HarnessError;

/// `format` of an export document.
const EXPORT_FORMAT: &str = "pinion-history";
/// `version` of the export format written.
const EXPORT_VERSION: u32 = 1;
/// `determinism_rules` recorded in the start event (the engine's current rules).
const DETERMINISM_RULES: u32 = 1;

/// Parses JSON bytes and writes them back in the engine's canonical form (compact, object
/// keys sorted): what the engine stores and delivers. An empty payload reads as `null`.
pub(crate) fn canonical(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes)
}

/// The canonical bytes of a payload.
pub(crate) fn canonical_bytes(bytes: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    Ok(canonical(bytes)?.to_string().into_bytes())
}

/// Appends events with dense ids.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) events: Vec<Value>,
}

impl Recorder {
    /// Appends one event of `kind` (an object with `type` and the type's fields).
    pub(crate) fn push(&mut self, time_ms: u64, kind: Value) {
        let mut event = json!({ "id": self.events.len() as u64 + 1, "time_ms": time_ms });
        if let (Some(event), Value::Object(fields)) = (event.as_object_mut(), kind) {
            event.extend(fields);
        }
        self.events.push(event);
    }

    /// The export document.
    pub(crate) fn export(
        &self,
        instance_id: &str,
        workflow_type: &str,
        module_hash: &str,
        status: &str,
    ) -> Value {
        json!({
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "instance_id": instance_id,
            "workflow_type": workflow_type,
            "module_hash": module_hash,
            "status": status,
            "events": self.events,
        })
    }
}

/// The `WorkflowStarted` event.
pub(crate) fn started(
    workflow_type: &str,
    module_hash: &str,
    input: &Value,
    random_seed: u64,
    version_label: Option<&str>,
) -> Value {
    let mut event = json!({
        "type": "WorkflowStarted",
        "workflow_type": workflow_type,
        "module_hash": module_hash,
        "input": input,
        "random_seed": random_seed,
        "determinism_rules": DETERMINISM_RULES,
    });
    if let Some(label) = version_label {
        event["version_label"] = json!(label);
    }
    event
}

/// A failure's JSON.
pub(crate) fn failure(f: &Failure) -> Value {
    json!({
        "kind": f.kind,
        "message": f.message,
        "non_retryable": f.non_retryable,
        "attempts": f.attempts,
    })
}

fn options(o: &ActivityOptions) -> Value {
    json!({
        "start_to_close_timeout_ms": o.start_to_close_timeout_ms,
        "retry": {
            "maximum_attempts": o.retry.maximum_attempts,
            "initial_interval_ms": o.retry.initial_interval_ms,
            "backoff_coefficient": o.retry.backoff_coefficient,
            "maximum_interval_ms": o.retry.maximum_interval_ms,
            "non_retryable_error_kinds": o.retry.non_retryable_error_kinds,
        },
        "heartbeat_timeout_ms": o.heartbeat_timeout_ms,
    })
}

/// The id the engine gives child `seq` of `parent` when the code chose none.
pub(crate) fn child_id(parent: &str, seq: u32, chosen: Option<&str>) -> String {
    chosen.map_or_else(|| format!("{parent}-child-{seq}"), str::to_owned)
}

/// The event a command of instance `instance_id` is recorded as, at logical time `now_ms`.
/// A child is recorded on the run's own module (a harness run has one).
///
/// # Errors
/// A payload that is not JSON.
pub(crate) fn command_event(
    command: &Command,
    now_ms: u64,
    module_hash: &str,
    workflow_type: &str,
    instance_id: &str,
) -> Result<Value, HarnessError> {
    Ok(match command {
        Command::ScheduleActivity {
            seq,
            activity_type,
            input,
            options: o,
        } => json!({
            "type": "ActivityScheduled", "seq": seq, "activity_type": activity_type,
            "input": canonical(input)?, "options": options(o),
        }),
        Command::StartTimer { seq, duration_ms } => json!({
            "type": "TimerStarted", "seq": seq, "duration_ms": duration_ms,
            "fire_at_ms": now_ms + duration_ms,
        }),
        Command::CancelTimer { seq } => json!({ "type": "TimerCancelled", "seq": seq }),
        Command::RecordMarker { id, data } => json!({
            "type": "MarkerRecorded", "marker_id": id, "data": canonical(data)?,
        }),
        Command::CompleteWorkflow { result } => {
            json!({ "type": "WorkflowCompleted", "result": canonical(result)? })
        }
        Command::FailWorkflow { failure: f } => {
            json!({ "type": "WorkflowFailed", "failure": failure(f) })
        }
        Command::RequestCancelActivity { seq } => {
            json!({ "type": "ActivityCancelled", "seq": seq })
        }
        Command::CancelWorkflow { reason } => {
            json!({ "type": "WorkflowCancelled", "reason": reason })
        }
        Command::ContinueAsNew {
            input,
            workflow_type: next,
            ..
        } => json!({
            "type": "WorkflowContinuedAsNew", "input": canonical(input)?,
            "workflow_type": next.as_deref().unwrap_or(workflow_type),
            "module_hash": module_hash,
        }),
        Command::StartChild {
            seq,
            workflow_type: child_type,
            input,
            id,
            ..
        } => json!({
            "type": "ChildWorkflowInitiated", "seq": seq,
            "child_id": child_id(instance_id, *seq, id.as_deref()),
            "workflow_type": child_type, "input": canonical(input)?,
            "module_hash": module_hash,
        }),
        Command::RequestCancelChild { seq } => {
            json!({ "type": "ChildCancelRequested", "seq": seq })
        }
    })
}
