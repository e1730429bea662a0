//! In-code versioning: [`WorkflowContext::get_version`] (Cadence's `GetVersion`) and
//! [`WorkflowContext::patched`] / [`WorkflowContext::deprecate_patch`] (Temporal's patching).
//!
//! A running instance is replayed against whatever code rebuilds it, so a change to workflow
//! code must keep taking the *old* path for instances that took it before the change, and may
//! take the new path only for instances that had not reached the change. Both APIs solve that
//! the same way: the first execution of a change point records which path it took as a marker
//! in history (`Command::RecordMarker`), and replay reads the marker back instead of deciding
//! again. An execution that recorded no marker ran code that predates the change.
//!
//! # Protocol
//!
//! | API | marker id | marker data (JSON) |
//! | --- | --- | --- |
//! | `get_version` | `"version:" + change_id` | `{"version": v, "min": min, "max": max}` |
//! | `patched`, `deprecate_patch` | `"patch:" + patch_id` | `{"deprecated": bool}` |
//!
//! Markers must be answered *synchronously* (`get_version` returns an `i32`, not a future),
//! so the host delivers them ahead of time: when it replays an activation that recorded
//! markers, it sends one `Job::Marker` per recorded marker before the activation's other jobs
//! (before `Start` too). The SDK keeps every delivered marker for the life of the instance,
//! and the first call for an id decides from three facts: was a marker for this id delivered,
//! is this activation a replay, and what does the code ask for. The answer is cached: later
//! calls with the same id return it and issue nothing, so a change point inside a loop
//! records one marker. The host then matches each produced marker, in order, against the
//! next recorded command event, which must be a marker with the same id (a recorded
//! deprecated patch marker the code no longer produces is skipped); for version markers it
//! also checks that the recorded version lies within the produced `[min, max]`.
//!
//! # `get_version(change_id, min, max)`: history has × code does → outcome
//!
//! | history has (this activation) | code does | returns | command issued | host verdict |
//! | --- | --- | --- | --- | --- |
//! | version marker `v` | `get_version(min, max)`, `min ≤ v ≤ max` | `v` | `RecordMarker {v, min, max}` | matches |
//! | version marker `v` | `get_version(min, max)`, `v` outside | `v` | `RecordMarker {v, min, max}` | divergence: the code no longer supports `v` |
//! | version marker | no call | — | — | divergence: the recorded marker is unmatched |
//! | no marker, replaying | `get_version(min ≤ DEFAULT_VERSION, max)` | `DEFAULT_VERSION` | none | matches: the old code recorded nothing either |
//! | no marker, replaying | `get_version(min > DEFAULT_VERSION, max)` | `DEFAULT_VERSION` | `RecordMarker {-1, min, max}` | divergence: the code requires a marker that history lacks |
//! | nothing (live) | `get_version(min, max)` | `max` | `RecordMarker {max, min, max}` | recorded |
//! | nothing (live) | `… ExecuteWithVersion(v)` | `v` | `RecordMarker {v, min, max}`, or none if `v == DEFAULT_VERSION` | recorded |
//! | nothing (live) | `… ExecuteWithMinVersion` | `min` | `RecordMarker {min, min, max}`, or none if `min == DEFAULT_VERSION` | recorded |
//!
//! Choosing [`DEFAULT_VERSION`] on a first execution records *nothing*, which leaves the
//! history exactly what code without the `get_version` call would have written. That is
//! what lets a deployment ship the new code first (Cadence's step v0.2,
//! `ExecuteWithVersion(DEFAULT_VERSION)`) and still roll back to the code before it.
//!
//! # `patched(id)` / `deprecate_patch(id)`: history has × code does → outcome
//!
//! The table of Temporal's sdk-core patch machine, with this SDK's commands:
//!
//! | history has (this activation) | code does | `patched` returns | command issued | host verdict |
//! | --- | --- | --- | --- | --- |
//! | patch marker | `patched(id)` | `true` | `RecordMarker {deprecated: false}` | matches |
//! | patch marker | `deprecate_patch(id)` | — | `RecordMarker {deprecated: true}` | matches |
//! | patch marker, `deprecated: false` | no call | — | — | divergence: the recorded marker is unmatched |
//! | patch marker, `deprecated: true` | no call | — | — | the host skips the marker |
//! | no marker, replaying | `patched(id)` | `false` | none | matches: the old branch replays |
//! | no marker, replaying | `deprecate_patch(id)` | — | none | matches (the code after it must be the old code's) |
//! | nothing (live) | `patched(id)` | `true` | `RecordMarker {deprecated: false}` | recorded |
//! | nothing (live) | `deprecate_patch(id)` | — | `RecordMarker {deprecated: true}` | recorded |
//!
//! A patch marker is recorded whether the patched code is asked for with `patched` or
//! `deprecate_patch`; only the `deprecated` flag differs, and only the host reads it. The
//! SDK answers from the marker's presence alone.

use std::collections::{BTreeMap, BTreeSet};

use pinion_abi::Command;
use serde::{Deserialize, Serialize};

use crate::context::WorkflowContext;

/// The version [`WorkflowContext::get_version`] returns for an execution that ran before
/// the change point existed (Cadence's `workflow.DefaultVersion`). It is never recorded.
pub const DEFAULT_VERSION: i32 = -1;

/// Chooses what a *first* execution of [`WorkflowContext::get_version_with`] records;
/// replay always returns the recorded value, whatever the option says.
///
/// Without an option a first execution takes `max`. These options let a deployment ship
/// code that *supports* a new version before it *starts* new executions on it, so that a
/// rollback to the previous code stays safe (Cadence's `ExecuteWithVersion` and
/// `ExecuteWithMinVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionOption {
    /// A first execution takes this version. It must lie within `[min, max]`.
    /// `ExecuteWithVersion(DEFAULT_VERSION)` records nothing at all.
    ExecuteWithVersion(i32),
    /// A first execution takes `min`.
    ExecuteWithMinVersion,
}

const VERSION_PREFIX: &str = "version:";
const PATCH_PREFIX: &str = "patch:";

/// Data of a version marker the SDK records.
#[derive(Serialize)]
struct VersionData {
    version: i32,
    min: i32,
    max: i32,
}

/// What the SDK reads back from a recorded version marker: only the version decides; the
/// recorded range is the host's business.
#[derive(Deserialize)]
struct RecordedVersion {
    version: i32,
}

/// Data of a patch marker.
#[derive(Serialize, Deserialize)]
struct PatchData {
    deprecated: bool,
}

/// Per-instance marker state: what the host delivered and what the code already asked.
///
/// Delivered markers are kept by kind and by the id without its prefix, decoded as far as
/// the SDK needs them. They stay for the life of the instance: a marker is delivered with
/// the activation that recorded it, which is the activation whose code asks for it.
#[derive(Debug, Default)]
pub(crate) struct Markers {
    /// change_id → the recorded version.
    delivered_versions: BTreeMap<String, i32>,
    /// patch_ids with a recorded marker: presence is the answer.
    delivered_patches: BTreeSet<String>,
    /// Any other id: accepted, so that histories from SDKs recording other marker kinds
    /// still replay here up to the point where the host finds the code does not match.
    delivered_other: BTreeSet<String>,
    /// change_id → the version the first `get_version` call returned.
    versions: BTreeMap<String, i32>,
    /// patch_id → whether the patched code applies.
    patches: BTreeMap<String, bool>,
}

impl Markers {
    /// Applies `Job::Marker`. Malformed data for a known prefix, or an id delivered twice,
    /// means host and SDK disagree about history: an error, not a guess.
    pub(crate) fn deliver(&mut self, id: String, data: &[u8]) -> Result<(), String> {
        let malformed = |e: serde_json::Error| {
            format!(
                "marker \"{id}\" has malformed data {}: {e}",
                String::from_utf8_lossy(data)
            )
        };
        let fresh = if let Some(change_id) = id.strip_prefix(VERSION_PREFIX) {
            let recorded: RecordedVersion = serde_json::from_slice(data).map_err(malformed)?;
            self.delivered_versions
                .insert(change_id.to_owned(), recorded.version)
                .is_none()
        } else if let Some(patch_id) = id.strip_prefix(PATCH_PREFIX) {
            serde_json::from_slice::<PatchData>(data).map_err(malformed)?;
            self.delivered_patches.insert(patch_id.to_owned())
        } else {
            self.delivered_other.insert(id.clone())
        };
        if fresh {
            Ok(())
        } else {
            Err(format!("marker \"{id}\" was delivered twice"))
        }
    }

    /// Decides `get_version`; see the module docs. Returns the version and the command to
    /// issue, if any.
    fn get_version(
        &mut self,
        replaying: bool,
        change_id: &str,
        min: i32,
        max: i32,
        option: Option<VersionOption>,
    ) -> (i32, Option<Command>) {
        assert!(
            min <= max,
            "get_version(\"{change_id}\", {min}, {max}): min is greater than max"
        );
        if let Some(&version) = self.versions.get(change_id) {
            return (version, None);
        }
        let (version, record) = match self.delivered_versions.get(change_id) {
            // The host checks the range; the SDK reports what the code says it supports.
            Some(&recorded) => (recorded, true),
            // An execution from before the change point. If the code no longer supports it,
            // a marker history lacks makes the host report the divergence at this point.
            None if replaying => (DEFAULT_VERSION, DEFAULT_VERSION < min),
            None => {
                let chosen = match option {
                    None => max,
                    Some(option) => {
                        let chosen = match option {
                            VersionOption::ExecuteWithVersion(v) => v,
                            VersionOption::ExecuteWithMinVersion => min,
                        };
                        assert!(
                            (min..=max).contains(&chosen),
                            "get_version_with(\"{change_id}\", {min}, {max}, {option:?}): \
                             version {chosen} is outside [{min}, {max}]"
                        );
                        chosen
                    }
                };
                // Recording nothing for the default version keeps the history identical to
                // that of code without this call, so that code can still replay it.
                (chosen, chosen != DEFAULT_VERSION)
            }
        };
        self.versions.insert(change_id.to_owned(), version);
        let command = record.then(|| Command::RecordMarker {
            id: format!("{VERSION_PREFIX}{change_id}"),
            data: json(&VersionData { version, min, max }),
        });
        (version, command)
    }

    /// Decides `patched` (`deprecated == false`) and `deprecate_patch` (`true`); see the
    /// module docs. Returns whether the patched code applies and the command to issue. In
    /// every row of the table a marker is issued exactly when the patched code applies.
    fn patch(
        &mut self,
        replaying: bool,
        patch_id: &str,
        deprecated: bool,
    ) -> (bool, Option<Command>) {
        if let Some(&applies) = self.patches.get(patch_id) {
            return (applies, None);
        }
        let applies = self.delivered_patches.contains(patch_id) || !replaying;
        self.patches.insert(patch_id.to_owned(), applies);
        let command = applies.then(|| Command::RecordMarker {
            id: format!("{PATCH_PREFIX}{patch_id}"),
            data: json(&PatchData { deprecated }),
        });
        (applies, command)
    }
}

/// Marker data is JSON, like every payload, so histories stay readable.
fn json(value: &impl Serialize) -> Vec<u8> {
    // Plain structs of integers and booleans always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}

impl WorkflowContext {
    /// The version of change point `change_id` this execution follows, between `min` and
    /// `max` (Cadence's `workflow.GetVersion`). Branch on it to keep old executions on old
    /// code:
    ///
    /// ```
    /// # use pinion_sdk::{WorkflowContext, WorkflowError, DEFAULT_VERSION};
    /// async fn my_workflow(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    ///     let version = ctx.get_version("MyChange", DEFAULT_VERSION, 1);
    ///     if version == DEFAULT_VERSION {
    ///         return Ok(ctx.activity("FooActivity", &()).await?);
    ///     }
    ///     Ok(ctx.activity("BarActivity", &()).await?)
    /// }
    /// ```
    ///
    /// A first execution returns `max` and records it in a version marker. Replay returns the
    /// recorded version, or [`DEFAULT_VERSION`] when the execution recorded none (it ran code
    /// from before the change point). Later calls with the same `change_id` return the same
    /// value and record nothing. The full truth table is in `docs/sdk.md` ("Versioning").
    ///
    /// When replay finds a version outside `[min, max]`, or no marker while `min` excludes
    /// [`DEFAULT_VERSION`], the host reports a nondeterminism error: this code no longer
    /// supports that execution.
    ///
    /// # Panics
    /// When `min > max`.
    pub fn get_version(&self, change_id: &str, min: i32, max: i32) -> i32 {
        self.decide_version(change_id, min, max, None)
    }

    /// [`get_version`](Self::get_version), with a [`VersionOption`] choosing what a *first*
    /// execution records; replay always returns the recorded value.
    ///
    /// `ExecuteWithVersion(DEFAULT_VERSION)` makes new executions behave, and record
    /// history, exactly like code without this call, which is what makes it safe to roll
    /// back to that code (Cadence's deployment step v0.2).
    ///
    /// # Panics
    /// When `min > max`, or when a first execution's chosen version lies outside
    /// `[min, max]`: both are programming errors.
    pub fn get_version_with(
        &self,
        change_id: &str,
        min: i32,
        max: i32,
        option: VersionOption,
    ) -> i32 {
        self.decide_version(change_id, min, max, Some(option))
    }

    fn decide_version(
        &self,
        change_id: &str,
        min: i32,
        max: i32,
        option: Option<VersionOption>,
    ) -> i32 {
        let mut shared = self.shared().borrow_mut();
        let replaying = shared.replaying;
        let (version, command) = shared
            .markers
            .get_version(replaying, change_id, min, max, option);
        if let Some(command) = command {
            shared.push(command);
        }
        version
    }

    /// Whether this execution runs the code guarded by patch `patch_id` (Temporal's
    /// `workflow.patched`): `true` for new executions and for replays of executions that
    /// recorded the patch, `false` for replays of executions from before the patch.
    ///
    /// ```
    /// # use pinion_sdk::{WorkflowContext, WorkflowError};
    /// async fn patched_workflow(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    ///     if ctx.patched("my-patch") {
    ///         Ok(ctx.activity("B", &()).await?)
    ///     } else {
    ///         Ok(ctx.activity("A", &()).await?)
    ///     }
    /// }
    /// ```
    ///
    /// When it returns `true` on a first call it records a patch marker. Later calls with the
    /// same id return the same answer and record nothing. Once no execution from before the
    /// patch is running, replace the call with [`deprecate_patch`](Self::deprecate_patch).
    pub fn patched(&self, patch_id: &str) -> bool {
        self.decide_patch(patch_id, false)
    }

    /// Marks patch `patch_id` as deprecated (Temporal's `workflow.deprecatePatch`): the code
    /// keeps only the patched branch, and still records the marker (flagged deprecated) so
    /// that code that calls [`patched`](Self::patched) can replay executions of this code.
    /// The host skips recorded deprecated markers that code no longer asks for, so the call
    /// itself can be removed in the next version.
    pub fn deprecate_patch(&self, patch_id: &str) {
        self.decide_patch(patch_id, true);
    }

    fn decide_patch(&self, patch_id: &str, deprecated: bool) -> bool {
        let mut shared = self.shared().borrow_mut();
        let replaying = shared.replaying;
        let (applies, command) = shared.markers.patch(replaying, patch_id, deprecated);
        if let Some(command) = command {
            shared.push(command);
        }
        applies
    }
}
