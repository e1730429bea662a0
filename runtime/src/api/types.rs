//! The API's request and response bodies, shared by the server, the client and the CLI.
//!
//! Responses reuse the domain types wherever one exists ([`InstanceRecord`],
//! [`HistoryExport`], [`ModuleStatus`], [`ReplayReport`], ...): the server serialises them,
//! the client deserialises them, and the CLI prints from them, so `pinion --json` prints the
//! same document whether it opened the database or asked a server. Every type here is
//! described in `openapi.json`; change both together.

use serde::{Deserialize, Serialize};

use crate::history::{InstanceId, InstanceStatus, ModuleHash};
use crate::replay::{ReplayReport, ReplaySummary};
use crate::rollout::{ModuleStatus, UpgradeResult};
use crate::store::{AliasChange, AliasRecord, InstanceRecord};

/// Largest wasm upload (`POST /v1/modules`, `POST /v1/replay`).
pub const MAX_WASM_BYTES: usize = 64 << 20;
/// Largest JSON request body.
pub const MAX_JSON_BYTES: usize = 1 << 20;
/// Instances per page when `limit` is not given.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest `limit` of one page.
pub const MAX_PAGE: u32 = 1000;
/// Longest long-poll of `GET /v1/instances/{id}/result?wait=`, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
/// Histories `verify` replays when no limit is given.
pub const DEFAULT_VERIFY_LIMIT: u32 = 1000;

fn default_verify_limit() -> u32 {
    DEFAULT_VERIFY_LIMIT
}

/// Options of a deploy (`POST /v1/modules` query parameters; `pinion deploy` flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployOptions {
    /// Point this alias at the module once stored.
    pub alias: Option<String>,
    /// First replay running instances of the module's workflow types; refuse on divergence.
    pub verify: bool,
    /// With `verify`: replay at most this many histories.
    pub verify_limit: u32,
    /// Non-determinism policies: `block`, `fail`, or `Type=block|fail`.
    pub on_nondeterminism: Vec<String>,
}

impl Default for DeployOptions {
    fn default() -> DeployOptions {
        DeployOptions {
            alias: None,
            verify: false,
            verify_limit: DEFAULT_VERIFY_LIMIT,
            on_nondeterminism: Vec::new(),
        }
    }
}

/// A stored module (`POST /v1/modules`; `pinion deploy --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// SHA-256 of the bytes.
    pub hash: ModuleHash,
    /// Size in bytes.
    pub size: u64,
    /// False when the same bytes were already deployed.
    pub new: bool,
    /// Workflow types it exports.
    pub workflows: Vec<String>,
    /// Activity types it exports.
    pub activities: Vec<String>,
    /// Its version label.
    pub version_label: Option<String>,
    /// The SDK version it was built with.
    pub sdk_version: String,
    /// The alias now pointing at it, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// What `verify` replayed, when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
    /// A notice when the module's guest ABI version is deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation: Option<String>,
}

/// A passed verification: what was replayed against what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verified {
    /// Histories replayed.
    pub replayed: usize,
    /// Their verdicts (all compatible).
    pub summary: ReplaySummary,
    /// The module they were replayed against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleHash>,
    /// The workflow types whose running instances were chosen (the module's).
    #[serde(default)]
    pub workflow_types: Vec<String>,
    /// The modules the replayed instances are pinned to, with how many of each.
    #[serde(default)]
    pub pinned: Vec<PinnedCount>,
    /// The most that were replayed (`verify_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// How many replayed instances one module pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedCount {
    /// The module.
    pub module: ModuleHash,
    /// Instances pinned to it.
    pub instances: usize,
}

impl Verified {
    /// What `verify` checked: `reports` (all compatible) of running instances of
    /// `workflow_types`, replayed against `module`, at most `limit`.
    pub fn new(
        module: &ModuleHash,
        workflow_types: &[String],
        limit: u32,
        summary: ReplaySummary,
        reports: &[ReplayReport],
    ) -> Verified {
        let mut pinned: Vec<PinnedCount> = Vec::new();
        for r in reports {
            match pinned.iter_mut().find(|p| p.module == r.recorded_module) {
                Some(p) => p.instances += 1,
                None => pinned.push(PinnedCount {
                    module: r.recorded_module.clone(),
                    instances: 1,
                }),
            }
        }
        Verified {
            replayed: reports.len(),
            summary,
            module: Some(module.clone()),
            workflow_types: workflow_types.to_vec(),
            pinned,
            limit: Some(limit),
        }
    }
}

impl std::fmt::Display for Verified {
    /// `replayed 3 running instance(s) of Hello (2 pinned to 1a2b.., 1 to 3c4d..) against
    /// 5e6f..: 3 compatible, ...`, or that there was nothing to replay.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let types = if self.workflow_types.is_empty() {
            "its workflow types".to_owned()
        } else {
            self.workflow_types.join(", ")
        };
        let against = self
            .module
            .as_ref()
            .map(|m| format!(" against {}", m.short()))
            .unwrap_or_default();
        if self.replayed == 0 {
            return write!(
                f,
                "no running instance of {types} to replay{against}: nothing was checked"
            );
        }
        write!(
            f,
            "replayed {} running instance(s) of {types}",
            self.replayed
        )?;
        if !self.pinned.is_empty() {
            let pinned: Vec<String> = self
                .pinned
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let to = if i == 0 { "pinned to " } else { "to " };
                    format!("{} {to}{}", p.instances, p.module.short())
                })
                .collect();
            write!(f, " ({})", pinned.join(", "))?;
        }
        write!(f, "{against}: {}", self.summary)?;
        if let Some(limit) = self.limit.filter(|l| *l as usize == self.replayed) {
            write!(f, " (the newest {limit}: --verify-limit)")?;
        }
        Ok(())
    }
}

/// A failed verification: the `details` of a `verification_failed` error, and what
/// `pinion deploy --verify --json` / `pinion alias set --verify --json` print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Always false here.
    pub verified: bool,
    /// The module refused (for a deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleHash>,
    /// Counts.
    pub summary: ReplaySummary,
    /// One report per history replayed.
    pub reports: Vec<ReplayReport>,
}

impl Verification {
    /// One line: what was refused and the counts.
    pub fn message(&self) -> String {
        format!(
            "the module is incompatible with running instances: {}",
            self.summary
        )
    }
}

/// `POST /v1/instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// Workflow type exported by the module.
    pub workflow_type: String,
    /// Module hash or unique prefix (exactly one of `module` and `alias`).
    #[serde(default)]
    pub module: Option<String>,
    /// Start on the module this alias points at (or ramps to, for this id).
    #[serde(default)]
    pub alias: Option<String>,
    /// Workflow input, any JSON value (default `null`).
    #[serde(default)]
    pub input: serde_json::Value,
    /// Instance id; generated when absent.
    #[serde(default)]
    pub id: Option<String>,
}

/// A started instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    /// Its id.
    pub id: InstanceId,
}

/// `GET /v1/instances` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<InstanceStatus>,
    /// Only this workflow type.
    pub workflow_type: Option<String>,
    /// Only instances pinned to this module (hash or prefix).
    pub module: Option<String>,
    /// Page size (the server allows 1 to [`MAX_PAGE`]; default [`DEFAULT_PAGE`]).
    pub limit: Option<u32>,
    /// Continue after the page that returned this cursor.
    pub cursor: Option<String>,
}

/// One page of instances, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstancePage {
    /// The instances.
    pub instances: Vec<InstanceRecord>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A position in the instance listing: the `(created_at_ms, id)` of the last row of a
/// page, opaque to clients (hex of `created_at_ms:id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the last row.
    pub created_at_ms: u64,
    /// Its id.
    pub id: InstanceId,
}

impl Cursor {
    /// The cursor after `r`.
    pub fn after(r: &InstanceRecord) -> Cursor {
        Cursor {
            created_at_ms: r.created_at_ms,
            id: r.id.clone(),
        }
    }

    /// The opaque text.
    pub fn encode(&self) -> String {
        hex::encode(format!("{}:{}", self.created_at_ms, self.id))
    }

    /// Parses [`Cursor::encode`]'s text; `None` when it is not one.
    pub fn decode(s: &str) -> Option<Cursor> {
        let text = String::from_utf8(hex::decode(s).ok()?).ok()?;
        let (ms, id) = text.split_once(':')?;
        Some(Cursor {
            created_at_ms: ms.parse().ok()?,
            id: InstanceId(id.to_owned()),
        })
    }
}

/// `GET /v1/modules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleList {
    /// Every module, newest first.
    pub modules: Vec<ModuleStatus>,
}

/// `GET /v1/aliases`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasList {
    /// Every alias, by name.
    pub aliases: Vec<AliasRecord>,
}

/// `GET /v1/aliases/{name}/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasHistory {
    /// The alias.
    pub alias: String,
    /// Its changes, oldest first.
    pub changes: Vec<AliasChange>,
}

/// `PUT /v1/aliases/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAliasBody {
    /// Module hash or prefix.
    pub module: String,
    /// Refuse if running instances' histories diverge on the module.
    #[serde(default)]
    pub verify: bool,
    /// With `verify`: replay at most this many histories.
    #[serde(default = "default_verify_limit")]
    pub verify_limit: u32,
    /// Also move every running or blocked instance of the alias's previous module (and of
    /// the module it was ramping to) whose history replays clean against the new one, each
    /// with a `ModuleUpgraded` event; the others stay pinned, their divergence reported.
    #[serde(default)]
    pub upgrade_compatible: bool,
    /// Change nothing: report where the alias would point and, with `upgrade_compatible`,
    /// which instances would move and which would stay.
    #[serde(default)]
    pub dry_run: bool,
}

/// What `upgrade_compatible` did when an alias moved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasUpgrade {
    /// True when nothing was changed (`dry_run`).
    pub dry_run: bool,
    /// The modules whose instances were considered: the alias's module and ramp target
    /// before the move, other than the new module.
    pub from: Vec<ModuleHash>,
    /// Instances moved to the new module (in a dry run: that would move).
    pub moved: u64,
    /// Instances left where they are (their replay diverged or failed, or they changed
    /// while being checked).
    pub stayed: u64,
    /// One result per instance considered.
    pub results: Vec<crate::rollout::UpgradeResult>,
}

/// An alias moved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasSet {
    /// The alias.
    pub alias: String,
    /// The module it now points at.
    pub module: ModuleHash,
    /// What `verify` replayed, when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
    /// What `upgrade_compatible` moved, when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<AliasUpgrade>,
}

/// `POST /v1/aliases/{name}/ramp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampBody {
    /// Module hash or prefix to ramp to.
    pub module: String,
    /// Share of new instances, 0 to 100.
    pub percent: u8,
}

/// An alias's ramp after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRamp {
    /// The alias.
    pub alias: String,
    /// The ramp, or `null` once cancelled.
    pub ramp: Option<Ramp>,
}

/// A ramp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ramp {
    /// The module ramped to.
    pub module: ModuleHash,
    /// Its share of new instances.
    pub percent: u8,
}

/// The candidate of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    /// Wasm bytes (never stored).
    Bytes(Vec<u8>),
    /// A deployed module: hash, prefix or alias.
    Module(String),
}

/// `POST /v1/replay` filters (the CLI's `replay --db` ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayQuery {
    /// Only this workflow type (default: the types the candidate exports).
    pub workflow_type: Option<String>,
    /// `running` (default unless `ids` is given), `completed`, `failed`, `blocked` or `all`.
    pub status: Option<String>,
    /// Only these instances.
    pub ids: Vec<String>,
    /// At most this many, newest first.
    pub limit: Option<u32>,
    /// A changed activity input is a divergence, not a warning.
    pub strict_inputs: bool,
    /// Also replay every archived run (ended with continue-as-new) of the chosen
    /// instances, each reported on its own (`<id>@run<N>`).
    pub all_runs: bool,
}

/// What a replay found (`POST /v1/replay`; `pinion replay --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayResponse {
    /// The candidate's hash.
    pub module: ModuleHash,
    /// Counts.
    pub summary: ReplaySummary,
    /// One report per history.
    pub reports: Vec<ReplayReport>,
}

/// `POST /v1/upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeBody {
    /// Target module: hash, prefix or alias.
    pub to: String,
    /// One instance (exactly one of `id`, `from`, `workflow_type`).
    #[serde(default)]
    pub id: Option<String>,
    /// Every instance pinned to this module.
    #[serde(default)]
    pub from: Option<String>,
    /// Every instance of this workflow type.
    #[serde(default)]
    pub workflow_type: Option<String>,
    /// Only report.
    #[serde(default)]
    pub dry_run: bool,
}

/// What an upgrade did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeResponse {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// One result per instance considered.
    pub results: Vec<UpgradeResult>,
}

/// `POST /v1/gc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcBody {
    /// Only list what would be deleted.
    #[serde(default)]
    pub dry_run: bool,
}

/// What gc deleted (or would).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcResponse {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The modules.
    pub modules: Vec<ModuleHash>,
}

/// `POST /v1/instances/{id}/signals/{name}` and `POST /v1/instances/{id}/queries/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputBody {
    /// The signal's or query's input, any JSON value (default `null`).
    #[serde(default)]
    pub input: serde_json::Value,
}

/// A signal queued for an instance (durable when answered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signalled {
    /// The instance.
    pub id: InstanceId,
    /// The signal's name.
    pub signal: String,
}

/// A query's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryAnswer {
    /// The instance.
    pub id: InstanceId,
    /// The query's name.
    pub query: String,
    /// What the handler returned.
    pub result: serde_json::Value,
}

/// Cancel (the workflow observes it and cleans up) or terminate (ended at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopVerb {
    /// `pinion cancel`, `POST /v1/cancel`.
    Cancel,
    /// `pinion terminate`, `POST /v1/terminate`.
    Terminate,
}

/// `POST /v1/cancel` and `POST /v1/terminate`: one instance by `id`, or every running and
/// blocked instance `module` and/or `workflow_type` select.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    /// One instance.
    #[serde(default)]
    pub id: Option<String>,
    /// Bulk: instances pinned to this module (hash, prefix or alias).
    #[serde(default)]
    pub module: Option<String>,
    /// Bulk: instances of this workflow type.
    #[serde(default)]
    pub workflow_type: Option<String>,
    /// Why (recorded in the history).
    #[serde(default)]
    pub reason: String,
    /// Only list what would be stopped.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/instances/{id}/cancel` and `.../terminate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopOneBody {
    /// Why (recorded in the history).
    #[serde(default)]
    pub reason: String,
    /// Only say whether it would be stopped.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a cancel or terminate did to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopResult {
    /// The cancellation is queued for the workflow.
    CancellationRequested,
    /// A cancellation was requested before; nothing changed.
    AlreadyRequested,
    /// The instance ended at once.
    Terminated,
    /// Dry run: it would be cancelled.
    WouldCancel,
    /// Dry run: it would be terminated.
    WouldTerminate,
    /// It was not stopped (see `error`): it ended meanwhile, for example.
    NotStopped,
}

impl StopResult {
    /// What the CLI prints after the id.
    pub fn describe(self) -> &'static str {
        match self {
            StopResult::CancellationRequested => "cancellation requested",
            StopResult::AlreadyRequested => "cancellation already requested",
            StopResult::Terminated => "terminated",
            StopResult::WouldCancel => "would be cancelled",
            StopResult::WouldTerminate => "would be terminated",
            StopResult::NotStopped => "not stopped",
        }
    }
}

/// One instance of a cancel or terminate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopOutcome {
    /// The instance.
    pub id: InstanceId,
    /// What happened.
    pub result: StopResult,
    /// Why it was not stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a cancel or terminate did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// One outcome per selected instance, by id.
    pub instances: Vec<StopOutcome>,
    /// How many were not stopped.
    pub failed: usize,
}

/// Most events one `GET /v1/events` batch reads from the outbox.
pub const EVENT_BATCH: u32 = 500;

/// `GET /v1/events` filters (`pinion events` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only events after this id (0: from the oldest kept).
    pub after: u64,
    /// Only this instance's.
    pub instance_id: Option<String>,
    /// Only instances of this workflow type.
    pub workflow_type: Option<String>,
    /// Only instances pinned to this module (hash, prefix or alias) after the transition.
    pub module: Option<String>,
    /// Only these types (`started`, `completed`, ...; empty: all).
    pub types: Vec<String>,
    /// At most this many events.
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            created_at_ms: 1_700_000_000_123,
            id: InstanceId("a:b/c d".into()),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "zz",
            "3a",
            &hex::encode("x:1"),
            &hex::encode([0xff, 0xfe]),
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}

/// Jobs queued or running at once; a further job is refused with `unavailable`.
pub const MAX_ACTIVE_JOBS: usize = 64;
/// Finished jobs kept for `GET /v1/jobs` (the oldest are forgotten first).
pub const KEPT_FINISHED_JOBS: usize = 100;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a free job slot (one per core).
    Queued,
    /// Running; `done` of `total` instances so far.
    Running,
    /// Finished; `result` holds what the request would have answered.
    Succeeded,
    /// Finished with an error; `error` holds it (as an error response's `error`).
    Failed,
    /// Cancelled before it finished; what it did before stays done.
    Cancelled,
}

impl JobState {
    /// Whether the job has finished (succeeded, failed or cancelled).
    pub fn finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A long operation run in the background (`job=true` on replay, upgrade, and deploy or
/// alias set with `verify`): `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    /// `job-N`, unique while the server runs (jobs do not survive a restart).
    pub id: String,
    /// `replay`, `upgrade`, `deploy` or `alias_set`.
    pub kind: String,
    /// Where it is.
    pub state: JobState,
    /// Instances finished.
    pub done: u64,
    /// Instances chosen (known once the job has chosen them).
    pub total: u64,
    /// When it was submitted (epoch ms).
    pub created_at_ms: u64,
    /// When it started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// What the request would have answered (only in `GET /v1/jobs/{id}`, once succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why it failed or was cancelled, as an error response's `error` object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<super::error::ErrorObject>,
}

/// `GET /v1/jobs`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobList {
    /// The jobs, without their results.
    pub jobs: Vec<JobView>,
}
