//! Replay: run recorded histories against any module, in isolation, and say for each one
//! whether the module is compatible with it.
//!
//! A [`Replayer`] holds one compiled candidate module. It never touches a database: the
//! caller hands it [`HistoryExport`]s (read from a database opened read-only, or from
//! exported JSON files). Each history gets a fresh workflow instance with the recorded
//! random seed and logical times; no activity runs, no timer is armed, and the module gets
//! no capability beyond the deterministic workflow sandbox.
//!
//! This is the library API behind `pinion replay` and `pinion deploy --verify`, and what a
//! workflow author calls from `cargo test` (like the Replayer of Temporal's SDKs):
//!
//! ```no_run
//! use pinion_runtime::replay::{Replayer, ReplayOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let replayer = Replayer::from_file("target/wasm32-wasip1/release/app.wasm".as_ref(), ReplayOptions::default())?;
//! let report = replayer.replay_file("tests/fixtures/order-1.json".as_ref())?;
//! assert!(report.is_compatible(), "{report}");
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pinion_abi::{Command, Manifest};
use serde::{Deserialize, Serialize};

use crate::executor::{split_history, Checks, ExecError, WorkflowRun};
use crate::history::{
    EventKind, HistoryExport, InstanceStatus, ModuleHash, EXPORT_FORMAT, EXPORT_VERSION,
};
use crate::registry::{hash_bytes, RegistryError};
use crate::sandbox::{LoadedModule, Sandbox, SandboxError, SandboxLimits};

/// Errors before any history is replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The candidate module is not valid.
    #[error("candidate module: {0}")]
    Module(#[from] RegistryError),
    /// The sandbox could not be created.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A history file could not be read or parsed.
    #[error("{path}: {reason}")]
    HistoryFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Replay settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// Treat changed activity inputs as divergences, not warnings.
    pub strict_inputs: bool,
}

/// What replaying one history found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum ReplayOutcome {
    /// The module reproduces every recorded command.
    Compatible,
    /// The module does something else at `event_index`.
    Diverged {
        /// Event id where code and history part ways.
        event_index: u64,
        /// What history has there.
        recorded: String,
        /// What the code produced instead.
        produced: String,
        /// The full one-line report.
        message: String,
    },
    /// The module trapped, ran out of fuel, or the SDK refused the history.
    Failed {
        /// The activation boundary event being replayed.
        event_index: u64,
        /// Why.
        message: String,
    },
}

/// The report for one history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// The instance the history belongs to.
    pub instance_id: String,
    /// Which run of the instance: 1, then +1 at each continue-as-new (an archived run has
    /// `recorded_status` `continued_as_new`).
    #[serde(default = "first_run")]
    pub run: u32,
    /// Its workflow type.
    pub workflow_type: String,
    /// The module that recorded it.
    pub recorded_module: ModuleHash,
    /// Its status when recorded.
    pub recorded_status: InstanceStatus,
    /// Number of events.
    pub events: usize,
    /// The verdict.
    #[serde(flatten)]
    pub outcome: ReplayOutcome,
    /// Differences that are not divergences (changed inputs, timer durations, results).
    pub warnings: Vec<String>,
    /// For a completed history replayed compatibly: the result the candidate produced.
    pub result: Option<serde_json::Value>,
    /// True when that result differs from the recorded one.
    pub result_differs: bool,
}

fn first_run() -> u32 {
    1
}

impl ReplayReport {
    /// True when nothing diverged or failed.
    pub fn is_compatible(&self) -> bool {
        self.outcome == ReplayOutcome::Compatible
    }

    /// The history's name in reports: the instance id, or `<id>@run<N>` for an instance
    /// that continued as new (an archived run, or a current run after the first), as
    /// `purge --export` names the files of archived runs.
    pub fn label(&self) -> String {
        if self.run > 1 || self.recorded_status == InstanceStatus::ContinuedAsNew {
            format!("{}@run{}", self.instance_id, self.run)
        } else {
            self.instance_id.clone()
        }
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            ReplayOutcome::Compatible => write!(
                f,
                "compatible  {} ({}, {} events)",
                self.label(),
                self.workflow_type,
                self.events
            )?,
            ReplayOutcome::Diverged { message, .. } => write!(
                f,
                "diverged    {} ({}): {message}",
                self.label(),
                self.workflow_type
            )?,
            ReplayOutcome::Failed {
                event_index,
                message,
            } => write!(
                f,
                "failed      {} ({}) at event #{event_index}: {message}",
                self.label(),
                self.workflow_type
            )?,
        }
        for w in &self.warnings {
            write!(f, "\n            warning: {w}")?;
        }
        Ok(())
    }
}

/// Counts over many reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaySummary {
    /// Compatible histories.
    pub compatible: usize,
    /// Diverged histories.
    pub diverged: usize,
    /// Failed histories.
    pub failed: usize,
    /// Compatible histories whose result changed.
    pub results_differ: usize,
}

impl ReplaySummary {
    /// Adds one report.
    pub fn add(&mut self, r: &ReplayReport) {
        match r.outcome {
            ReplayOutcome::Compatible => self.compatible += 1,
            ReplayOutcome::Diverged { .. } => self.diverged += 1,
            ReplayOutcome::Failed { .. } => self.failed += 1,
        }
        if r.result_differs {
            self.results_differ += 1;
        }
    }

    /// True when nothing diverged or failed (the exit-code rule).
    pub fn ok(&self) -> bool {
        self.diverged == 0 && self.failed == 0
    }
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} compatible, {} diverged, {} failed",
            self.compatible, self.diverged, self.failed
        )?;
        if self.results_differ > 0 {
            write!(
                f,
                " ({} compatible with a different result)",
                self.results_differ
            )?;
        }
        Ok(())
    }
}

/// A candidate module, compiled once, replaying any number of histories.
pub struct Replayer {
    sandbox: Arc<Sandbox>,
    module: Arc<LoadedModule>,
    hash: ModuleHash,
    manifest: Manifest,
    options: ReplayOptions,
}

/// Reads and checks one exported history file.
///
/// # Errors
/// [`ReplayError::HistoryFile`] for unreadable files, bad JSON or an unknown format version.
pub fn read_history_file(path: &Path) -> Result<HistoryExport, ReplayError> {
    let bad = |reason: String| ReplayError::HistoryFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    parse_history(&text).map_err(bad)
}

/// Parses an exported history, rejecting other formats and versions with a clear message.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn parse_history(text: &str) -> Result<HistoryExport, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(EXPORT_FORMAT) => {}
        other => {
            return Err(format!(
                "not a pinion history export (format is {other:?}, expected {EXPORT_FORMAT:?})"
            ))
        }
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == EXPORT_VERSION as u64 => {}
        Some(v) => {
            return Err(format!("history format version {v} is not supported; this pinion reads version {EXPORT_VERSION}"))
        }
        None => return Err("the history has no numeric \"version\" field".into()),
    }
    serde_json::from_value(value).map_err(|e| format!("malformed history: {e}"))
}

/// Lists the `.json` files of a directory (sorted) or returns the path itself.
pub fn history_files(path: &Path) -> Result<Vec<PathBuf>, ReplayError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let bad = |e: std::io::Error| ReplayError::HistoryFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(bad)? {
        let p = entry.map_err(bad)?.path();
        if p.extension().is_some_and(|e| e == "json") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

impl Replayer {
    /// Compiles and validates `bytes` in a new sandbox with default limits. Nothing is
    /// stored anywhere.
    ///
    /// # Errors
    /// The module is not valid.
    pub fn from_bytes(bytes: &[u8], options: ReplayOptions) -> Result<Replayer, ReplayError> {
        let sandbox = Arc::new(Sandbox::new(SandboxLimits::default())?);
        Self::with_sandbox(sandbox, bytes, options)
    }

    /// Reads a `.wasm` file and calls [`Replayer::from_bytes`].
    ///
    /// # Errors
    /// The file cannot be read, or the module is not valid.
    pub fn from_file(path: &Path, options: ReplayOptions) -> Result<Replayer, ReplayError> {
        let bytes = std::fs::read(path).map_err(|e| ReplayError::HistoryFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes, options)
    }

    /// Like [`Replayer::from_bytes`], sharing an existing sandbox (and its compiled code).
    ///
    /// # Errors
    /// The module is not valid.
    pub fn with_sandbox(
        sandbox: Arc<Sandbox>,
        bytes: &[u8],
        options: ReplayOptions,
    ) -> Result<Replayer, ReplayError> {
        let module = sandbox.compile(bytes).map_err(RegistryError::from)?;
        let loaded = sandbox.load(module).map_err(RegistryError::from)?;
        let manifest = sandbox
            .read_manifest(&loaded)
            .map_err(RegistryError::from)?;
        Ok(Self::from_loaded(
            sandbox,
            loaded,
            hash_bytes(bytes),
            manifest,
            options,
        ))
    }

    /// A replayer for a module that is already compiled and validated (a deploy candidate,
    /// or a deployed module from the registry), so nothing is compiled again.
    pub fn from_loaded(
        sandbox: Arc<Sandbox>,
        module: LoadedModule,
        hash: ModuleHash,
        manifest: Manifest,
        options: ReplayOptions,
    ) -> Replayer {
        Replayer {
            sandbox,
            module: Arc::new(module),
            hash,
            manifest,
            options,
        }
    }

    /// The candidate's hash.
    pub fn module_hash(&self) -> &ModuleHash {
        &self.hash
    }

    /// The candidate's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Replays a history file.
    ///
    /// # Errors
    /// The file cannot be read or is not a supported history export.
    pub fn replay_file(&self, path: &Path) -> Result<ReplayReport, ReplayError> {
        Ok(self.replay(&read_history_file(path)?))
    }

    /// Replays one history and reports.
    pub fn replay(&self, history: &HistoryExport) -> ReplayReport {
        let mut report = ReplayReport {
            instance_id: history.instance_id.0.clone(),
            run: history.run,
            workflow_type: history.workflow_type.clone(),
            recorded_module: history.module_hash.clone(),
            recorded_status: history.status,
            events: history.events.len(),
            outcome: ReplayOutcome::Compatible,
            warnings: Vec::new(),
            result: None,
            result_differs: false,
        };
        match self.run(history, &mut report) {
            Ok(()) => {}
            Err(ExecError::Nondeterminism(n)) => {
                report.outcome = ReplayOutcome::Diverged {
                    event_index: n.event_index,
                    message: n.to_string(),
                    recorded: n.recorded,
                    produced: n.produced,
                }
            }
            Err(
                e @ (ExecError::Guest { event_index, .. } | ExecError::Sdk { event_index, .. }),
            ) => {
                report.outcome = ReplayOutcome::Failed {
                    event_index,
                    message: e.to_string(),
                }
            }
            Err(e @ ExecError::BadHistory { .. }) => {
                report.outcome = ReplayOutcome::Failed {
                    event_index: 0,
                    message: e.to_string(),
                }
            }
        }
        report
    }

    fn run(&self, history: &HistoryExport, report: &mut ReplayReport) -> Result<(), ExecError> {
        let checks = Checks {
            strict_inputs: self.options.strict_inputs,
        };
        let (activations, _) = split_history(&history.instance_id, &history.events)?;
        let first = history
            .events
            .first()
            .map(std::slice::from_ref)
            .unwrap_or_default();
        let (mut run, _) = WorkflowRun::rebuild_in(
            &self.sandbox,
            &self.module,
            &history.instance_id,
            first,
            checks,
            true,
        )?;
        let mut produced_result = None;
        for a in &activations {
            for c in run.replay_one(a)? {
                if let Command::CompleteWorkflow { result } = c {
                    produced_result = serde_json::from_slice::<serde_json::Value>(&result).ok();
                }
            }
        }
        report.warnings = run.warnings().to_vec();
        let recorded = history.events.iter().rev().find_map(|e| match &e.kind {
            EventKind::WorkflowCompleted { result } => Some(result.to_value()),
            _ => None,
        });
        if let (Some(recorded), Some(produced)) = (recorded, &produced_result) {
            if &recorded != produced {
                report.result_differs = true;
                report
                    .warnings
                    .push(format!("result changed from {recorded} to {produced}"));
            }
        }
        report.result = produced_result;
        Ok(())
    }
}
