//! The domain of durable execution: ids, payloads, history events and instance status.
//!
//! Everything here is plain data with serde derives; it imports neither rusqlite nor
//! wasmtime, so the storage backends, the executor and the replayer all speak it without
//! depending on each other. The JSON form of [`HistoryEvent`] is the documented export
//! format (`docs/history-format.md`), so renaming a field or variant is a format change.
//!
//! # History shape
//!
//! A history is a dense, append-only sequence of events numbered from 1. Inputs to the
//! workflow (started, activity resolved, timer fired) are followed by a
//! [`EventKind::WorkflowTaskCompleted`] marking the end of the activation that delivered
//! them, followed by the events for the commands that activation produced:
//!
//! ```text
//!  1 WorkflowStarted            input of activation 1
//!  2 WorkflowTaskCompleted      boundary, carries the activation's logical time
//!  3 TimerStarted  seq=1        output of activation 1
//!  4 TimerFired    seq=1        input of activation 2
//!  5 WorkflowTaskCompleted
//!  6 ActivityScheduled seq=1
//!  ...
//! ```
//!
//! Recording the boundary (instead of inferring it) makes replay reproduce exactly the
//! batches the live run saw, which matters for `select`: two results delivered together
//! resolve differently from two results delivered one by one.

use std::fmt;

use pinion_abi::{ActivityOptions, Failure};
use serde::{Deserialize, Serialize};

/// Version of the rules the executor uses to match commands against history. Recorded in
/// every start event so the matcher can evolve without breaking old histories.
pub const DETERMINISM_RULES_VERSION: u32 = 1;

/// Identifier of a workflow instance, chosen by the caller or generated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub String);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lower-case hex SHA-256 of a module's bytes: the module's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModuleHash(pub String);

impl ModuleHash {
    /// The first 12 hex digits, for tables meant for people.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// User data (workflow or activity input and result): one JSON document, kept as compact
/// text.
///
/// Payloads cross the guest boundary as bytes and are stored and exported inline as JSON,
/// so histories stay readable without the module that wrote them. (Not `RawValue`: serde
/// cannot buffer a raw value inside the internally tagged [`EventKind`].)
#[derive(Clone, PartialEq, Eq)]
pub struct Payload(String);

impl Payload {
    /// Wraps JSON bytes, checking that they are one valid JSON document.
    ///
    /// # Errors
    /// When the bytes are not UTF-8 JSON.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Payload, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        Ok(Payload(value.to_string()))
    }

    /// Encodes a serialisable value.
    ///
    /// # Errors
    /// When `value` cannot be represented as JSON.
    pub fn from_value<T: Serialize>(value: &T) -> Result<Payload, serde_json::Error> {
        Ok(Payload(serde_json::to_value(value)?.to_string()))
    }

    /// JSON `null`.
    pub fn null() -> Payload {
        Payload("null".to_owned())
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        &self.0
    }

    /// The JSON text as bytes, as the guest expects them.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Parses into a generic JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Payload, D::Error> {
        Ok(Payload(serde_json::Value::deserialize(d)?.to_string()))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One event in an instance's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Dense event number within the instance, from 1.
    pub id: u64,
    /// When the event was recorded, in ms since the Unix epoch.
    pub time_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an event records. Serialised with an internal `"type"` tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventKind {
    /// The instance was created. Always event 1.
    WorkflowStarted {
        /// Exported workflow type.
        workflow_type: String,
        /// The module the instance is pinned to.
        module_hash: ModuleHash,
        /// Workflow input.
        input: Payload,
        /// Seed of the workflow's deterministic random numbers (SDK and WASI `random_get`).
        random_seed: u64,
        /// Version of the determinism rules in force when the instance started.
        determinism_rules: u32,
        /// The module's version label, if it declares one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version_label: Option<String>,
        /// For a child workflow: the parent instance and the child's sequence number there.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
        /// For a run started by continue-as-new: the number of the run before it (runs are
        /// numbered from 1 per instance id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        continued_from_run: Option<u32>,
    },
    /// End of one activation; the inputs before it were delivered together at `now_ms`.
    WorkflowTaskCompleted {
        /// The logical time the workflow saw during that activation.
        now_ms: u64,
    },
    /// The workflow scheduled an activity.
    ActivityScheduled {
        /// Activity sequence number within the instance.
        seq: u32,
        /// Activity type.
        activity_type: String,
        /// Activity input.
        input: Payload,
        /// Timeout and retry policy.
        options: ActivityOptions,
    },
    /// The activity returned a value.
    ActivityCompleted {
        /// Activity sequence number.
        seq: u32,
        /// Its result.
        result: Payload,
        /// Attempts it took.
        attempts: u32,
    },
    /// The activity failed for good (non-retryable error or retries exhausted).
    ActivityFailed {
        /// Activity sequence number.
        seq: u32,
        /// The last attempt's error.
        failure: Failure,
    },
    /// The activity's last attempt ran past its start-to-close timeout, with no retry left.
    ActivityTimedOut {
        /// Activity sequence number.
        seq: u32,
        /// Describes the timeout.
        failure: Failure,
    },
    /// The workflow started a durable timer.
    TimerStarted {
        /// Timer sequence number within the instance.
        seq: u32,
        /// Requested duration.
        duration_ms: u64,
        /// Absolute fire time.
        fire_at_ms: u64,
    },
    /// A timer fired.
    TimerFired {
        /// Timer sequence number.
        seq: u32,
    },
    /// The workflow cancelled a timer before it fired.
    TimerCancelled {
        /// Timer sequence number.
        seq: u32,
    },
    /// A marker (version marker, patch marker).
    MarkerRecorded {
        /// Marker id (`marker_id` in JSON: `id` is the event's number).
        #[serde(rename = "marker_id")]
        id: String,
        /// Marker data.
        data: Payload,
    },
    /// The workflow returned a value.
    WorkflowCompleted {
        /// The result.
        result: Payload,
    },
    /// The workflow returned an error.
    WorkflowFailed {
        /// The error.
        failure: Failure,
    },
    /// A signal was delivered to the workflow (`pinion signal`).
    SignalReceived {
        /// Signal name.
        name: String,
        /// Signal input.
        input: Payload,
    },
    /// Somebody asked the workflow to stop (`pinion cancel`). Delivered once.
    CancelRequested {
        /// The requester's reason.
        reason: String,
    },
    /// The workflow cancelled an activity that had not resolved (after a cancellation).
    ActivityCancelled {
        /// Activity sequence number.
        seq: u32,
    },
    /// The workflow ended because it was cancelled.
    WorkflowCancelled {
        /// The reason it gave.
        reason: String,
    },
    /// An operator ended the instance at once (`pinion terminate`). Appended by the host,
    /// not by the code: replay skips it.
    WorkflowTerminated {
        /// The operator's reason.
        reason: String,
    },
    /// The workflow started a child workflow (or tried to: `module_hash` is `None` when the
    /// module could not be resolved, and a `ChildWorkflowFailed` follows).
    ChildWorkflowInitiated {
        /// Child sequence number within the parent.
        seq: u32,
        /// The child's instance id.
        child_id: InstanceId,
        /// The child's workflow type.
        workflow_type: String,
        /// The child's input.
        input: Payload,
        /// The module the child is pinned to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        module_hash: Option<ModuleHash>,
    },
    /// A child workflow returned a value.
    ChildWorkflowCompleted {
        /// Child sequence number.
        seq: u32,
        /// The child's instance id.
        child_id: InstanceId,
        /// Its result.
        result: Payload,
    },
    /// A child workflow failed, was cancelled or terminated, or could not start (the kind
    /// says which).
    ChildWorkflowFailed {
        /// Child sequence number.
        seq: u32,
        /// The child's instance id.
        child_id: InstanceId,
        /// Why.
        failure: Failure,
    },
    /// The workflow asked a running child to stop (after its own cancellation).
    ChildCancelRequested {
        /// Child sequence number.
        seq: u32,
    },
    /// The run ended and the workflow started again under the same id with a fresh
    /// history (this one is archived as a numbered run).
    WorkflowContinuedAsNew {
        /// Input of the new run.
        input: Payload,
        /// Workflow type of the new run.
        workflow_type: String,
        /// Module of the new run.
        module_hash: ModuleHash,
    },
    /// An operator moved the instance to another module after replay proved the new
    /// module compatible with this history (`pinion upgrade`). Neither input nor command:
    /// replay skips it.
    ModuleUpgraded {
        /// The module it was pinned to.
        from: ModuleHash,
        /// The module it is pinned to from now on.
        to: ModuleHash,
    },
}

impl EventKind {
    /// The variant name, as it appears in the JSON `"type"` tag.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::WorkflowStarted { .. } => "WorkflowStarted",
            EventKind::WorkflowTaskCompleted { .. } => "WorkflowTaskCompleted",
            EventKind::ActivityScheduled { .. } => "ActivityScheduled",
            EventKind::ActivityCompleted { .. } => "ActivityCompleted",
            EventKind::ActivityFailed { .. } => "ActivityFailed",
            EventKind::ActivityTimedOut { .. } => "ActivityTimedOut",
            EventKind::TimerStarted { .. } => "TimerStarted",
            EventKind::TimerFired { .. } => "TimerFired",
            EventKind::TimerCancelled { .. } => "TimerCancelled",
            EventKind::MarkerRecorded { .. } => "MarkerRecorded",
            EventKind::WorkflowCompleted { .. } => "WorkflowCompleted",
            EventKind::WorkflowFailed { .. } => "WorkflowFailed",
            EventKind::ModuleUpgraded { .. } => "ModuleUpgraded",
            EventKind::SignalReceived { .. } => "SignalReceived",
            EventKind::CancelRequested { .. } => "CancelRequested",
            EventKind::ActivityCancelled { .. } => "ActivityCancelled",
            EventKind::WorkflowCancelled { .. } => "WorkflowCancelled",
            EventKind::WorkflowTerminated { .. } => "WorkflowTerminated",
            EventKind::ChildWorkflowInitiated { .. } => "ChildWorkflowInitiated",
            EventKind::ChildWorkflowCompleted { .. } => "ChildWorkflowCompleted",
            EventKind::ChildWorkflowFailed { .. } => "ChildWorkflowFailed",
            EventKind::ChildCancelRequested { .. } => "ChildCancelRequested",
            EventKind::WorkflowContinuedAsNew { .. } => "WorkflowContinuedAsNew",
        }
    }

    /// True for events that are delivered to the workflow as activation jobs.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            EventKind::WorkflowStarted { .. }
                | EventKind::ActivityCompleted { .. }
                | EventKind::ActivityFailed { .. }
                | EventKind::ActivityTimedOut { .. }
                | EventKind::TimerFired { .. }
                | EventKind::SignalReceived { .. }
                | EventKind::CancelRequested { .. }
                | EventKind::ChildWorkflowCompleted { .. }
                | EventKind::ChildWorkflowFailed { .. }
        )
    }

    /// True for events that record a command the workflow issued.
    pub fn is_command(&self) -> bool {
        matches!(
            self,
            EventKind::ActivityScheduled { .. }
                | EventKind::TimerStarted { .. }
                | EventKind::TimerCancelled { .. }
                | EventKind::MarkerRecorded { .. }
                | EventKind::WorkflowCompleted { .. }
                | EventKind::WorkflowFailed { .. }
                | EventKind::ActivityCancelled { .. }
                | EventKind::WorkflowCancelled { .. }
                | EventKind::ChildWorkflowInitiated { .. }
                | EventKind::ChildCancelRequested { .. }
                | EventKind::WorkflowContinuedAsNew { .. }
        )
    }

    /// True for the events that end an instance.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::WorkflowCompleted { .. }
                | EventKind::WorkflowFailed { .. }
                | EventKind::WorkflowCancelled { .. }
                | EventKind::WorkflowTerminated { .. }
                | EventKind::WorkflowContinuedAsNew { .. }
        )
    }

    /// A one-line human description, used by `pinion history` and divergence reports.
    pub fn describe(&self) -> String {
        match self {
            EventKind::WorkflowStarted {
                workflow_type,
                module_hash,
                input,
                ..
            } => {
                format!(
                    "{workflow_type} on {} input={}",
                    module_hash.short(),
                    input.json()
                )
            }
            EventKind::WorkflowTaskCompleted { now_ms } => format!("now={now_ms}"),
            EventKind::ActivityScheduled {
                seq,
                activity_type,
                input,
                ..
            } => {
                format!("seq={seq} type={activity_type:?} input={}", input.json())
            }
            EventKind::ActivityCompleted {
                seq,
                result,
                attempts,
            } => {
                format!("seq={seq} result={} attempts={attempts}", result.json())
            }
            EventKind::ActivityFailed { seq, failure }
            | EventKind::ActivityTimedOut { seq, failure } => {
                format!(
                    "seq={seq} {}: {} attempts={}",
                    failure.kind, failure.message, failure.attempts
                )
            }
            EventKind::TimerStarted {
                seq, duration_ms, ..
            } => {
                format!("seq={seq} duration={duration_ms}ms")
            }
            EventKind::TimerFired { seq }
            | EventKind::TimerCancelled { seq }
            | EventKind::ActivityCancelled { seq }
            | EventKind::ChildCancelRequested { seq } => {
                format!("seq={seq}")
            }
            EventKind::ChildWorkflowInitiated {
                seq,
                child_id,
                workflow_type,
                module_hash,
                ..
            } => format!(
                "seq={seq} child={child_id} type={workflow_type:?} module={}",
                module_hash.as_ref().map_or("(unresolved)", |m| m.short())
            ),
            EventKind::ChildWorkflowCompleted {
                seq,
                child_id,
                result,
            } => format!("seq={seq} child={child_id} result={}", result.json()),
            EventKind::ChildWorkflowFailed {
                seq,
                child_id,
                failure,
            } => format!(
                "seq={seq} child={child_id} {}: {}",
                failure.kind, failure.message
            ),
            EventKind::WorkflowContinuedAsNew {
                input,
                workflow_type,
                module_hash,
            } => format!(
                "{workflow_type} on {} input={}",
                module_hash.short(),
                input.json()
            ),
            EventKind::SignalReceived { name, input } => {
                format!("name={name:?} input={}", input.json())
            }
            EventKind::CancelRequested { reason }
            | EventKind::WorkflowCancelled { reason }
            | EventKind::WorkflowTerminated { reason } => format!("reason={reason:?}"),
            EventKind::MarkerRecorded { id, data } => format!("id={id:?} data={}", data.json()),
            EventKind::WorkflowCompleted { result } => format!("result={}", result.json()),
            EventKind::WorkflowFailed { failure } => {
                format!("{}: {}", failure.kind, failure.message)
            }
            EventKind::ModuleUpgraded { from, to } => format!("{} -> {}", from.short(), to.short()),
        }
    }
}

/// A child's link to its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    /// The parent instance.
    pub id: InstanceId,
    /// The child's sequence number in the parent.
    pub seq: u32,
}

/// Lifecycle state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Has work to do or is waiting on activities, timers, signals.
    Running,
    /// Stopped by a determinism error or a failed workflow task; waits for a fix.
    Blocked,
    /// Returned a value.
    Completed,
    /// Returned an error.
    Failed,
    /// Ended after a cancellation request.
    Cancelled,
    /// Ended by an operator (`pinion terminate`).
    Terminated,
    /// A run that ended with continue-as-new (only archived runs have it; the instance
    /// goes on in its next run). Spelt `continued_as_new` in JSON, as everywhere else;
    /// files written before that said `continuedasnew`, which still reads.
    #[serde(rename = "continued_as_new", alias = "continuedasnew")]
    ContinuedAsNew,
}

impl InstanceStatus {
    /// The lowercase name used in the database, the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Running => "running",
            InstanceStatus::Blocked => "blocked",
            InstanceStatus::Completed => "completed",
            InstanceStatus::Failed => "failed",
            InstanceStatus::Cancelled => "cancelled",
            InstanceStatus::Terminated => "terminated",
            InstanceStatus::ContinuedAsNew => "continued_as_new",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<InstanceStatus> {
        Some(match s {
            "running" => InstanceStatus::Running,
            "blocked" => InstanceStatus::Blocked,
            "completed" => InstanceStatus::Completed,
            "failed" => InstanceStatus::Failed,
            "cancelled" => InstanceStatus::Cancelled,
            "terminated" => InstanceStatus::Terminated,
            "continued_as_new" => InstanceStatus::ContinuedAsNew,
            _ => return None,
        })
    }

    /// True once the instance can never run again.
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            InstanceStatus::Completed
                | InstanceStatus::Failed
                | InstanceStatus::Cancelled
                | InstanceStatus::Terminated
                | InstanceStatus::ContinuedAsNew
        )
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name in the `format` field of an exported history.
pub const EXPORT_FORMAT: &str = "pinion-history";
/// The version of the export format this build writes and reads.
pub const EXPORT_VERSION: u32 = 1;

/// One instance's history as exported to JSON (`docs/history-format.md`). Importing it
/// needs nothing else: the module hash says which code wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryExport {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// [`EXPORT_VERSION`] when written by this build.
    pub version: u32,
    /// The instance.
    pub instance_id: InstanceId,
    /// Its workflow type.
    pub workflow_type: String,
    /// The module it is pinned to.
    pub module_hash: ModuleHash,
    /// Its status when exported (`continued_as_new` for an archived run).
    pub status: InstanceStatus,
    /// Which run of the instance this is: 1, then +1 at each continue-as-new. Omitted
    /// when 1.
    #[serde(default = "first_run", skip_serializing_if = "is_first_run")]
    pub run: u32,
    /// Every event, in order.
    pub events: Vec<HistoryEvent>,
}

fn first_run() -> u32 {
    1
}

fn is_first_run(run: &u32) -> bool {
    *run == 1
}

/// The file name of an exported history: the instance id with every byte other than ASCII
/// letters, digits, `-`, `_` and a non-leading `.` written as `%XX`, then `.json`. The
/// encoding is reversible, so two ids never share a file (`x/y`, `x_y` and `x:y` become
/// `x%2Fy.json`, `x_y.json` and `x%3Ay.json`), and no name can climb out of the directory
/// or hide itself.
pub fn history_file_name(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 5);
    for (i, b) in id.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(".json");
    out
}

/// The file name of an archived run's exported history (a run that ended with
/// continue-as-new): [`history_file_name`]'s encoding of the id, then `@run<N>.json`. An
/// id's `@` is always encoded, so this never collides with a current run's file.
pub fn run_file_name(id: &str, run: u32) -> String {
    let name = history_file_name(id);
    format!("{}@run{run}.json", name.trim_end_matches(".json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archived_run_status_is_continued_as_new_in_json_and_the_old_spelling_still_reads() {
        let s = serde_json::to_string(&InstanceStatus::ContinuedAsNew).unwrap();
        assert_eq!(s, "\"continued_as_new\"");
        let old: InstanceStatus = serde_json::from_str("\"continuedasnew\"").unwrap();
        assert_eq!(old, InstanceStatus::ContinuedAsNew);
    }

    #[test]
    fn events_serialise_with_a_type_tag_and_inline_json_payloads() {
        let e = HistoryEvent {
            id: 3,
            time_ms: 10,
            kind: EventKind::ActivityCompleted {
                seq: 1,
                result: Payload::from_json_bytes(br#"{"ok":true}"#).unwrap(),
                attempts: 2,
            },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"id":3,"time_ms":10,"type":"ActivityCompleted","seq":1,"result":{"ok":true},"attempts":2}"#
        );
        let back: HistoryEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn a_marker_event_round_trips_without_clashing_with_the_event_id() {
        let e = HistoryEvent {
            id: 4,
            time_ms: 1,
            kind: EventKind::MarkerRecorded {
                id: "version:MyChange".into(),
                data: Payload::from_json_bytes(br#"{"version":1}"#).unwrap(),
            },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(r#""marker_id":"version:MyChange""#), "{text}");
        assert_eq!(serde_json::from_str::<HistoryEvent>(&text).unwrap(), e);
    }

    #[test]
    fn payload_rejects_bytes_that_are_not_json() {
        assert!(Payload::from_json_bytes(b"{not json").is_err());
        assert!(Payload::from_json_bytes(&[0xff, 0xfe]).is_err());
    }
}
