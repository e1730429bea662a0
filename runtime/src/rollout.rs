//! Safe rollout on top of pinning and replay: aliases with deterministic ramping, drain
//! status per module, garbage collection of drained modules, and verified upgrades of
//! running instances.
//!
//! Nothing here changes what a running instance executes except [`Pinion::upgrade`], and
//! that only after replaying the instance's whole history against the target module. Moving
//! an alias (forward, or back in a rollback) only decides where *new* instances start.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::{Error, Pinion, Progress};
use crate::history::{InstanceId, InstanceStatus, ModuleHash};
use crate::registry::RegistryError;
use crate::replay::{ReplayOptions, ReplayOutcome, ReplayReport, ReplaySummary, Replayer};
use crate::store::{InstanceFilter, InstanceRecord, ModuleRecord, ModuleUsage};

pub use crate::store::deploy::ramp_bucket;

/// One stored history to replay: an instance's current run, or one numbered run of it
/// (an archived run, ended with continue-as-new, or the current one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRun {
    /// The instance.
    pub instance: InstanceId,
    /// `None` for the current run.
    pub run: Option<u32>,
}

impl StoredRun {
    /// The current run of `instance`.
    pub fn current(instance: InstanceId) -> StoredRun {
        StoredRun {
            instance,
            run: None,
        }
    }

    /// The histories of `rec`'s instance: its current run, preceded by every archived run
    /// (1 to the current run - 1) when `all_runs`.
    pub fn of(rec: &InstanceRecord, all_runs: bool) -> Vec<StoredRun> {
        let mut out = Vec::new();
        if all_runs {
            out.extend((1..rec.run).map(|run| StoredRun {
                instance: rec.id.clone(),
                run: Some(run),
            }));
        }
        out.push(StoredRun::current(rec.id.clone()));
        out
    }
}

/// Where a module stands in rollouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleState {
    /// An alias points at it: new instances start on it.
    Current,
    /// An alias ramps to it: a share of new instances start on it.
    Ramping,
    /// No alias targets it, but running or blocked instances still pin it.
    Draining,
    /// No alias targets it and no running or blocked instance pins it, but some instance
    /// ran on it: safe to collect.
    Drained,
    /// No alias targets it and no instance (of any status) pins it: deployed and never
    /// used, or its instances were all purged. Also collected by `gc`.
    Unused,
}

impl ModuleState {
    /// True when `gc` may delete the module: nothing targets or runs on it.
    pub fn collectable(self) -> bool {
        matches!(self, ModuleState::Drained | ModuleState::Unused)
    }
}

/// A module with its aliases, usage and state (one row of `pinion modules`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleStatus {
    /// The module.
    #[serde(flatten)]
    pub module: ModuleSummary,
    /// Aliases pointing at it.
    pub aliases: Vec<String>,
    /// Aliases ramping to it, with their share.
    pub ramping: Vec<(String, u8)>,
    /// Instances pinning it, by status.
    pub instances: ModuleUsage,
    /// Current, ramping, draining, drained or unused.
    pub status: ModuleState,
    /// What the grants in force give each of its activity types (only those given
    /// anything); secrets by name only.
    pub grants: Vec<ActivityGrants>,
}

/// What one activity type of a module is granted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityGrants {
    /// The activity type.
    pub activity: String,
    /// 1-based numbers of the `[[grant]]` entries that match it.
    pub grants: Vec<usize>,
    /// Allowed URL patterns.
    pub http: Vec<String>,
    /// Preopened directories.
    pub dirs: Vec<crate::config::DirGrant>,
    /// Environment variables, by name.
    pub env: Vec<String>,
    /// Secrets, by name.
    pub secrets: Vec<String>,
}

impl ActivityGrants {
    fn of(activity: String, caps: crate::config::Capabilities) -> ActivityGrants {
        ActivityGrants {
            activity,
            grants: caps.grants,
            http: caps.http.iter().map(|p| p.as_str().to_string()).collect(),
            dirs: caps.dirs,
            env: caps.env.into_iter().map(|(k, _)| k).collect(),
            secrets: caps.secrets.into_iter().map(|(k, _)| k).collect(),
        }
    }
}

/// The parts of a module record people read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleSummary {
    /// Hash.
    pub hash: ModuleHash,
    /// Size in bytes.
    pub size: u64,
    /// Version label.
    pub version_label: Option<String>,
    /// Workflow types.
    pub workflows: Vec<String>,
    /// Activity types.
    pub activities: Vec<String>,
    /// Deploy time.
    pub deployed_at_ms: u64,
    /// The guest ABI version the module speaks.
    #[serde(default)]
    pub abi_version: u32,
    /// The `pinion-sdk` version it was built with.
    #[serde(default)]
    pub sdk_version: String,
}

impl From<&ModuleRecord> for ModuleSummary {
    fn from(m: &ModuleRecord) -> ModuleSummary {
        ModuleSummary {
            hash: m.hash.clone(),
            size: m.size,
            version_label: m.manifest.version_label.clone(),
            workflows: m.manifest.workflows.clone(),
            activities: m.manifest.activities.clone(),
            deployed_at_ms: m.deployed_at_ms,
            abi_version: m.manifest.abi_version,
            sdk_version: m.manifest.sdk_version.clone(),
        }
    }
}

/// Which instances `upgrade` considers.
#[derive(Debug, Clone)]
pub enum UpgradeSelector {
    /// One instance.
    Id(String),
    /// Every running or blocked instance pinned to this module.
    From(ModuleHash),
    /// Every running or blocked instance of this workflow type.
    WorkflowType(String),
}

/// What `upgrade` did with one instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeResult {
    /// The instance.
    pub instance_id: String,
    /// Its module before.
    pub from: ModuleHash,
    /// True when it now runs on the target (false in a dry run or when incompatible).
    pub upgraded: bool,
    /// The replay verdict against the target.
    pub replay: ReplayReport,
    /// Why a compatible instance was nevertheless not moved (it changed meanwhile).
    pub error: Option<String>,
}

impl Pinion {
    /// Resolves a hash or prefix, or the module an alias points at.
    ///
    /// # Errors
    /// Unknown module or alias.
    pub fn resolve_module(&self, spec: &str) -> Result<ModuleRecord, Error> {
        match self.registry().resolve(spec) {
            Ok(m) => Ok(m),
            Err(RegistryError::UnknownModule(_)) => match self.store().get_alias(spec)? {
                Some(a) => Ok(self.registry().resolve(&a.module_hash.0)?),
                None => Err(RegistryError::UnknownModule(spec.into()).into()),
            },
            // A short name may be an alias (`v1`); else the prefix rule is what to fix.
            Err(e @ RegistryError::PrefixTooShort(_)) => match self.store().get_alias(spec)? {
                Some(a) => Ok(self.registry().resolve(&a.module_hash.0)?),
                None => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Replays the running instances of the candidate's workflow types (at most `limit`,
    /// newest first) against it, without storing anything, counting each in `progress`,
    /// on every core.
    ///
    /// # Errors
    /// Storage errors; [`Error::Cancelled`] once `progress` is cancelled.
    pub fn verify_module(
        &self,
        candidate: &Replayer,
        limit: u32,
        progress: &Progress,
    ) -> Result<(ReplaySummary, Vec<ReplayReport>), Error> {
        self.verify_module_on(candidate, limit, crate::pool::default_threads(), progress)
    }

    /// [`Pinion::verify_module`] on `threads` threads.
    ///
    /// # Errors
    /// As for [`Pinion::verify_module`].
    pub fn verify_module_on(
        &self,
        candidate: &Replayer,
        limit: u32,
        threads: usize,
        progress: &Progress,
    ) -> Result<(ReplaySummary, Vec<ReplayReport>), Error> {
        let mut chosen: Vec<InstanceRecord> = Vec::new();
        for ty in &candidate.manifest().workflows {
            let filter = InstanceFilter {
                status: Some(InstanceStatus::Running),
                workflow_type: Some(ty.clone()),
                limit: Some(limit),
                ..Default::default()
            };
            let room = (limit as usize).saturating_sub(chosen.len());
            chosen.extend(self.list(&filter)?.into_iter().take(room));
        }
        progress.add_total(chosen.len() as u64);
        // The rows are in hand: each thread reads only the events.
        let reports = crate::pool::run_each(chosen.len(), threads, progress, |i| {
            let rec = &chosen[i];
            let events = self.store().load_history(&rec.id)?;
            if events.is_empty() {
                return Ok(None); // purged meanwhile
            }
            let history = crate::history::HistoryExport {
                format: crate::history::EXPORT_FORMAT.into(),
                version: crate::history::EXPORT_VERSION,
                instance_id: rec.id.clone(),
                workflow_type: rec.workflow_type.clone(),
                module_hash: rec.module_hash.clone(),
                status: rec.status,
                run: rec.run,
                events,
            };
            Ok(Some(candidate.replay(&history)))
        })?;
        let mut summary = ReplaySummary::default();
        reports.iter().for_each(|r| summary.add(r));
        Ok((summary, reports))
    }

    /// Replays the stored histories of `runs` against `replayer` on every core: each
    /// thread reads one history at a time from the database and replays it with the one
    /// compiled module, counting it in `progress`. Reports come back in the order of `runs`
    /// (a history that is gone is left out).
    ///
    /// # Errors
    /// Storage errors; [`Error::Cancelled`] once `progress` is cancelled.
    pub fn replay_stored(
        &self,
        replayer: &Replayer,
        ids: &[StoredRun],
        progress: &Progress,
    ) -> Result<(ReplaySummary, Vec<ReplayReport>), Error> {
        self.replay_stored_on(replayer, ids, crate::pool::default_threads(), progress)
    }

    /// [`Pinion::replay_stored`] on `threads` threads (the verdicts do not depend on it).
    ///
    /// # Errors
    /// As for [`Pinion::replay_stored`].
    pub fn replay_stored_on(
        &self,
        replayer: &Replayer,
        ids: &[StoredRun],
        threads: usize,
        progress: &Progress,
    ) -> Result<(ReplaySummary, Vec<ReplayReport>), Error> {
        let reports = crate::pool::run_each(ids.len(), threads, progress, |i| {
            let id = &ids[i];
            let h = match id.run {
                None => self.store().export_history(&id.instance)?,
                Some(run) => self.store().export_run(&id.instance, run)?,
            };
            Ok(h.map(|h| replayer.replay(&h)))
        })?;
        let mut summary = ReplaySummary::default();
        reports.iter().for_each(|r| summary.add(r));
        Ok((summary, reports))
    }

    /// A replayer for a deployed module, from the registry's compiled code.
    ///
    /// # Errors
    /// Unknown module.
    pub fn replayer_for(&self, module: &str) -> Result<Replayer, Error> {
        let m = self.resolve_module(module)?;
        let loaded = self.registry().load(&m.hash)?;
        Ok(Replayer::from_loaded(
            self.sandbox().clone(),
            (*loaded).clone(),
            m.hash,
            m.manifest,
            ReplayOptions::default(),
        ))
    }

    /// Points an alias at a module (by hash or prefix), ending any ramp.
    ///
    /// # Errors
    /// Unknown module.
    pub fn set_alias(&self, name: &str, module: &str) -> Result<ModuleHash, Error> {
        let m = self.registry().resolve(module)?;
        self.store().set_alias(name, &m.hash, self.now_ms())?;
        Ok(m.hash)
    }

    /// Ramps an alias: `percent` of new instances go to `module`.
    ///
    /// # Errors
    /// Unknown alias or module, or a percentage over 100.
    pub fn ramp_alias(&self, name: &str, module: &str, percent: u8) -> Result<ModuleHash, Error> {
        if percent > 100 {
            return Err(Error::InvalidInput(format!(
                "ramp percentage {percent} is over 100"
            )));
        }
        let m = self.registry().resolve(module)?;
        self.store()
            .ramp_alias(name, &m.hash, percent, self.now_ms())
            .map_err(|e| match e {
                crate::store::StoreError::NotFound(_) => Error::UnknownAlias(name.into()),
                other => other.into(),
            })?;
        Ok(m.hash)
    }

    /// Ends a ramp.
    ///
    /// # Errors
    /// Unknown alias.
    pub fn cancel_ramp(&self, name: &str) -> Result<(), Error> {
        self.store()
            .cancel_ramp(name, self.now_ms())
            .map_err(|e| match e {
                crate::store::StoreError::NotFound(_) => Error::UnknownAlias(name.into()),
                other => other.into(),
            })
    }

    /// Every module with its aliases, instance counts and rollout state.
    ///
    /// # Errors
    /// Storage errors.
    pub fn module_statuses(&self) -> Result<Vec<ModuleStatus>, Error> {
        let aliases = self.store().list_aliases()?;
        let usage = self.store().module_usage()?;
        let grants = self.grants().current();
        let mut out = Vec::new();
        for m in self.modules()? {
            let granted = if grants.is_empty() {
                Vec::new()
            } else {
                let facts = crate::registry::ModuleFactsOwned {
                    hash: m.hash.clone(),
                    label: m.manifest.version_label.clone(),
                    aliases: self.store().aliases_of_module(&m.hash)?,
                };
                grants
                    .for_module(&facts.as_facts(), &m.manifest.activities)
                    .into_iter()
                    .map(|(a, caps)| ActivityGrants::of(a, caps))
                    .collect()
            };
            let names: Vec<String> = aliases
                .iter()
                .filter(|a| a.module_hash == m.hash)
                .map(|a| a.name.clone())
                .collect();
            let ramping: Vec<(String, u8)> = aliases
                .iter()
                .filter_map(|a| {
                    a.ramp
                        .as_ref()
                        .filter(|(h, _)| *h == m.hash)
                        .map(|(_, p)| (a.name.clone(), *p))
                })
                .collect();
            let instances = usage
                .iter()
                .find(|(h, _)| *h == m.hash)
                .map(|(_, u)| *u)
                .unwrap_or_default();
            let status = if !names.is_empty() {
                ModuleState::Current
            } else if !ramping.is_empty() {
                ModuleState::Ramping
            } else if instances.running + instances.blocked > 0 {
                ModuleState::Draining
            } else if instances.completed + instances.failed > 0 {
                ModuleState::Drained
            } else {
                ModuleState::Unused
            };
            out.push(ModuleStatus {
                module: (&m).into(),
                aliases: names,
                ramping,
                instances,
                status,
                grants: granted,
            });
        }
        Ok(out)
    }

    /// Deletes drained and unused modules (unaliased, no running or blocked instance; re-checked
    /// in the deleting transaction). With
    /// `export_dir`, first writes each one's wasm to `<dir>/<hash>.wasm` so completed
    /// histories can still be replayed from the file. Returns the modules collected (or, in
    /// a dry run, that would be).
    ///
    /// # Errors
    /// Storage or file errors.
    pub fn gc(&self, dry_run: bool, export_dir: Option<&Path>) -> Result<Vec<ModuleHash>, Error> {
        let mut collected = Vec::new();
        for m in self.module_statuses()? {
            if !m.status.collectable() {
                continue;
            }
            let hash = m.module.hash;
            if dry_run {
                collected.push(hash);
                continue;
            }
            if let Some(dir) = export_dir {
                let io = |e: std::io::Error| Error::Io {
                    path: dir.display().to_string(),
                    reason: e.to_string(),
                };
                std::fs::create_dir_all(dir).map_err(io)?;
                if let Some(bytes) = self.store().module_bytes(&hash)? {
                    std::fs::write(dir.join(format!("{hash}.wasm")), bytes).map_err(io)?;
                }
            }
            if self.store().delete_module_if_unused(&hash)? {
                self.registry().forget(&hash);
                collected.push(hash);
            }
        }
        Ok(collected)
    }

    /// Replays each selected running or blocked instance against `to`; moves the compatible
    /// ones (unless `dry_run`), each with a `ModuleUpgraded` event. Incompatible instances
    /// stay where they are; their report says why. Each instance is counted in `progress`;
    /// a cancelled upgrade stops before the next one (the moves made stay made).
    ///
    /// # Errors
    /// Unknown target module or instance, storage errors; [`Error::Cancelled`].
    pub fn upgrade(
        &self,
        to: &str,
        selector: &UpgradeSelector,
        dry_run: bool,
        progress: &Progress,
    ) -> Result<Vec<UpgradeResult>, Error> {
        let target = self.resolve_module(to)?;
        // The registry's compiled code: bytes already stored are not compiled again.
        let replayer = self.replayer_for(&target.hash.0)?;
        let candidates: Vec<_> = match selector {
            UpgradeSelector::Id(id) => vec![self.status(id)?],
            UpgradeSelector::From(hash) => self.list(&InstanceFilter {
                module_hash: Some(hash.clone()),
                ..Default::default()
            })?,
            UpgradeSelector::WorkflowType(t) => self.list(&InstanceFilter {
                workflow_type: Some(t.clone()),
                ..Default::default()
            })?,
        };
        // Only running or blocked, not imported; and already there is nothing to do, unless
        // it is blocked, when re-verifying against its own module (say, after a limit was
        // raised) unblocks it.
        let candidates: Vec<_> = candidates
            .into_iter()
            .filter(|rec| {
                matches!(
                    rec.status,
                    InstanceStatus::Running | InstanceStatus::Blocked
                ) && !rec.imported
                    && (rec.module_hash != target.hash || rec.status == InstanceStatus::Blocked)
            })
            .collect();
        progress.add_total(candidates.len() as u64);
        // Replay on every core; then move the compatible ones, one transaction each, in the
        // order chosen. A move is checked against the history length that was replayed, so
        // an instance that took a step meanwhile is reported and left where it is.
        let replayed = crate::pool::run_each(
            candidates.len(),
            crate::pool::default_threads(),
            progress,
            |i| {
                let rec = &candidates[i];
                Ok(self
                    .store()
                    .export_history(&rec.id)?
                    .map(|h| (i, h.events.len() as u64, replayer.replay(&h))))
            },
        )?;
        let mut results = Vec::new();
        for (i, events, report) in replayed {
            progress.check()?;
            let rec = &candidates[i];
            let compatible = report.outcome == ReplayOutcome::Compatible;
            let mut error = None;
            let mut upgraded = false;
            if compatible && !dry_run {
                match self.store().upgrade_instance(
                    &rec.id,
                    events,
                    &rec.module_hash,
                    &target.hash,
                    self.now_ms(),
                ) {
                    Ok(()) => upgraded = true,
                    // It moved on while we replayed: report it, carry on with the others.
                    Err(crate::store::StoreError::Conflict(m)) => error = Some(m),
                    Err(e) => return Err(e.into()),
                }
            }
            results.push(UpgradeResult {
                instance_id: rec.id.0.clone(),
                from: rec.module_hash.clone(),
                upgraded,
                replay: report,
                error,
            });
        }
        Ok(results)
    }
}
