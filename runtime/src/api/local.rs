//! [`Api`] over an open engine: what the server runs for each request, and what the CLI
//! runs without `--server`. Every rule that is not the engine's own (deploy's validate →
//! verify → store → policies → alias order, replay's default filters, pagination) lives
//! here once.

use std::time::Duration;

use super::error::ApiError;
use super::types::{
    AliasRamp, AliasSet, AliasUpgrade, Candidate, Cursor, DeployOptions, Deployment, EventQuery,
    GcBody, GcResponse, InputBody, InstancePage, ListQuery, QueryAnswer, Ramp, RampBody,
    ReplayQuery, ReplayResponse, SetAliasBody, Signalled, StartBody, Started, StopBody,
    StopOutcome, StopResult, StopVerb, Stopped, UpgradeBody, UpgradeResponse, Verification,
    Verified, EVENT_BATCH,
};
use super::Api;
use crate::census::{MarkerCensus, MarkerQuery};
use crate::engine::{BulkSelector, Error, Pinion, Progress, StartRequest};
use crate::history::{HistoryExport, InstanceId, InstanceStatus, ModuleHash};
use crate::replay::{ReplayOptions, Replayer};
use crate::rollout::{ModuleStatus, StoredRun, UpgradeSelector};
use crate::store::{
    AliasChange, AliasRecord, InstanceFilter, InstanceRecord, NondeterminismPolicy,
};
use crate::store::{EventFilter, LifecycleEvent, Transition};

/// Parses deploy's policies (`fail`, or `Type=fail`) against the module's workflow types,
/// before anything is stored.
///
/// # Errors
/// `invalid_input` for an unknown policy, `not_found` for a type the module lacks.
pub fn parse_policies(
    workflows: &[String],
    specs: &[String],
) -> Result<Vec<(String, NondeterminismPolicy)>, ApiError> {
    let mut out = Vec::new();
    for spec in specs {
        let (types, policy) = match spec.split_once('=') {
            Some((t, pol)) => (vec![t.to_owned()], pol),
            None => (workflows.to_vec(), spec.as_str()),
        };
        let policy = NondeterminismPolicy::parse(policy).ok_or_else(|| {
            ApiError::InvalidInput(format!("unknown policy `{policy}`; use block or fail"))
        })?;
        for t in types {
            if !workflows.contains(&t) {
                return Err(ApiError::NotFound(format!(
                    "the module has no workflow type `{t}`"
                )));
            }
            out.push((t, policy));
        }
    }
    Ok(out)
}

/// What a dry run says of an instance it selects.
fn would(verb: StopVerb) -> StopResult {
    match verb {
        StopVerb::Cancel => StopResult::WouldCancel,
        StopVerb::Terminate => StopResult::WouldTerminate,
    }
}

impl Pinion {
    /// The outbox filter of an events query: types checked, module resolved.
    ///
    /// # Errors
    /// `bad_request` for an unknown type; `not_found` for an unknown module.
    pub fn event_filter(&self, query: &EventQuery) -> Result<EventFilter, ApiError> {
        for t in &query.types {
            if !Transition::NAMES.contains(&t.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "unknown event type `{t}`; use {}",
                    Transition::NAMES.join(", ")
                )));
            }
        }
        Ok(EventFilter {
            after: query.after,
            until: None,
            instance_id: query.instance_id.clone().map(InstanceId),
            workflow_type: query.workflow_type.clone(),
            module_hash: match &query.module {
                Some(m) => Some(self.resolve_module(m)?.hash),
                None => None,
            },
            kinds: query.types.clone(),
            limit: EVENT_BATCH,
        })
    }

    /// Reads the next batch of `filter` (up to `filter.limit` events) and moves
    /// `filter.after` past it; true when the batch was full, so more may follow. A short
    /// batch holds every matching event up to the head read just before it, so the position
    /// moves to that head (never past `filter.until`) even when the filters skipped the
    /// newest events, and the next read does not scan them again.
    ///
    /// # Errors
    /// Storage errors.
    pub fn read_events(
        &self,
        filter: &mut EventFilter,
    ) -> Result<(Vec<LifecycleEvent>, bool), Error> {
        let head = self.store().last_event_id()?;
        let batch = self.store().lifecycle_events(filter)?;
        let full = batch.len() == filter.limit as usize;
        filter.after = match (full, batch.last()) {
            (true, Some(e)) => e.id,
            (_, last) => last.map_or(0, |e| e.id).max(head).max(filter.after),
        };
        if let Some(until) = filter.until {
            filter.after = filter.after.min(until);
        }
        Ok((batch, full))
    }

    /// Cancels or terminates one instance; its errors are the call's.
    fn stop_one(&self, verb: StopVerb, id: &str, body: &StopBody) -> Result<StopOutcome, Error> {
        let (result, error) = if body.dry_run {
            let rec = Pinion::status(self, id)?;
            if rec.status.is_closed() {
                (
                    StopResult::NotStopped,
                    Some(format!("it is already {}", rec.status)),
                )
            } else if rec.imported {
                (
                    StopResult::NotStopped,
                    Some("it is an imported history, which never runs".into()),
                )
            } else {
                (would(verb), None)
            }
        } else {
            (self.stop_now(verb, id, &body.reason)?, None)
        };
        Ok(StopOutcome {
            id: InstanceId(id.into()),
            result,
            error,
        })
    }

    fn stop_now(&self, verb: StopVerb, id: &str, reason: &str) -> Result<StopResult, Error> {
        Ok(match verb {
            StopVerb::Cancel if Pinion::cancel(self, id, reason)? => {
                StopResult::CancellationRequested
            }
            StopVerb::Cancel => StopResult::AlreadyRequested,
            StopVerb::Terminate => {
                Pinion::terminate(self, id, reason)?;
                StopResult::Terminated
            }
        })
    }

    /// Cancels or terminates every instance the filters select; one instance's failure
    /// (it ended meanwhile) is its outcome, not the call's.
    fn stop_many(&self, verb: StopVerb, body: &StopBody) -> Result<Vec<StopOutcome>, Error> {
        let selector = BulkSelector {
            module_hash: match &body.module {
                Some(m) => Some(self.resolve_module(m)?.hash),
                None => None,
            },
            workflow_type: body.workflow_type.clone(),
        };
        Ok(self
            .select_open(&selector)?
            .into_iter()
            .map(|id| {
                let (result, error) = if body.dry_run {
                    (would(verb), None)
                } else {
                    match self.stop_now(verb, &id.0, &body.reason) {
                        Ok(r) => (r, None),
                        Err(e) => (StopResult::NotStopped, Some(e.to_string())),
                    }
                };
                StopOutcome { id, result, error }
            })
            .collect())
    }
}

/// A long operation (deploy with verification, alias set with verification, replay,
/// upgrade) that has been checked and is ready to run: everything a request can get wrong
/// (a bad module, an unknown name, a bad filter) was refused while preparing it, so a job
/// made of it fails only for reasons found while running. It counts its instances in the
/// [`Progress`] and stops before the next one once that is cancelled.
pub type Prepared<T> = Box<dyn FnOnce(&Pinion, &Progress) -> Result<T, ApiError> + Send>;

/// The long operations, in two steps: prepare (check the request, compile the module),
/// then run, counted in a [`Progress`] that the API's jobs read and cancel.
impl Pinion {
    /// [`Api::deploy`]: validates the module and the options (compiling it once); the
    /// prepared step verifies, then stores.
    ///
    /// # Errors
    /// `invalid_module`, or a bad policy.
    pub fn prepare_deploy(
        &self,
        wasm: Vec<u8>,
        options: DeployOptions,
    ) -> Result<Prepared<Deployment>, ApiError> {
        // Validate everything (module and options), and verify, before anything is stored;
        // the module is compiled once for all three.
        let validated = self.registry().validate(&wasm).map_err(Error::from)?;
        let policies = parse_policies(&validated.1.workflows, &options.on_nondeterminism)?;
        Ok(Box::new(move |p: &Pinion, progress: &Progress| {
            let mut verified = None;
            if options.verify {
                let candidate = Replayer::from_loaded(
                    p.sandbox().clone(),
                    validated.2.clone(),
                    validated.0.clone(),
                    validated.1.clone(),
                    ReplayOptions::default(),
                );
                let (summary, reports) =
                    p.verify_module(&candidate, options.verify_limit, progress)?;
                if !summary.ok() {
                    return Err(ApiError::Refused(Box::new(Verification {
                        verified: false,
                        module: Some(candidate.module_hash().clone()),
                        summary,
                        reports,
                    })));
                }
                verified = Some(Verified::new(
                    candidate.module_hash(),
                    &candidate.manifest().workflows,
                    options.verify_limit,
                    summary,
                    &reports,
                ));
            }
            let d = p
                .registry()
                .store_validated(&wasm, validated)
                .map_err(Error::from)?;
            for (t, policy) in &policies {
                p.store()
                    .set_policy(&d.hash, t, *policy)
                    .map_err(Error::from)?;
            }
            if let Some(name) = &options.alias {
                Pinion::set_alias(p, name, &d.hash.0)?;
            }
            Ok(Deployment {
                hash: d.hash,
                size: d.size,
                new: d.newly_stored,
                workflows: d.manifest.workflows,
                activities: d.manifest.activities,
                version_label: d.manifest.version_label,
                sdk_version: d.manifest.sdk_version,
                alias: options.alias.clone(),
                verified,
                deprecation: crate::sandbox::abi_deprecation(d.manifest.abi_version),
            })
        }))
    }

    /// [`Api::set_alias`]: finds the module; the prepared step verifies (when asked), then
    /// points the alias.
    ///
    /// # Errors
    /// Unknown module.
    pub fn prepare_set_alias(
        &self,
        name: String,
        body: SetAliasBody,
    ) -> Result<Prepared<AliasSet>, ApiError> {
        let replayer = if body.verify {
            Some(self.replayer_for(&body.module)?)
        } else {
            self.registry().resolve(&body.module).map_err(Error::from)?;
            None
        };
        // The modules whose instances may move: the alias's, and its ramp target's, before
        // the move.
        let target = self
            .registry()
            .resolve(&body.module)
            .map_err(Error::from)?
            .hash;
        let from: Vec<ModuleHash> = match self.store().get_alias(&name).map_err(Error::from)? {
            Some(a) if body.upgrade_compatible => std::iter::once(a.module_hash)
                .chain(a.ramp.map(|(hash, _)| hash))
                .filter(|h| *h != target)
                .fold(Vec::new(), |mut v, h| {
                    if !v.contains(&h) {
                        v.push(h);
                    }
                    v
                }),
            _ => Vec::new(),
        };
        Ok(Box::new(move |p: &Pinion, progress: &Progress| {
            let mut verified = None;
            if let Some(replayer) = replayer {
                let (summary, reports) = p.verify_module(&replayer, body.verify_limit, progress)?;
                if !summary.ok() {
                    return Err(ApiError::Refused(Box::new(Verification {
                        verified: false,
                        module: None,
                        summary,
                        reports,
                    })));
                }
                verified = Some(Verified::new(
                    replayer.module_hash(),
                    &replayer.manifest().workflows,
                    body.verify_limit,
                    summary,
                    &reports,
                ));
            }
            let module = if body.dry_run {
                target.clone()
            } else {
                Pinion::set_alias(p, &name, &body.module)?
            };
            let upgrade = if body.upgrade_compatible {
                let mut results = Vec::new();
                for old in &from {
                    results.extend(p.upgrade(
                        &module.0,
                        &UpgradeSelector::From(old.clone()),
                        body.dry_run,
                        progress,
                    )?);
                }
                let moved = results
                    .iter()
                    .filter(|r| r.replay.is_compatible() && r.error.is_none())
                    .count() as u64;
                Some(AliasUpgrade {
                    dry_run: body.dry_run,
                    from,
                    moved,
                    stayed: results.len() as u64 - moved,
                    results,
                })
            } else {
                None
            };
            Ok(AliasSet {
                alias: name,
                module,
                verified,
                upgrade,
            })
        }))
    }

    /// [`Api::replay`]: loads the candidate and checks the filter; the prepared step
    /// replays the chosen histories, one in memory at a time.
    ///
    /// # Errors
    /// A candidate that is not a module, an unknown module, a bad status.
    pub fn prepare_replay(
        &self,
        candidate: Candidate,
        query: ReplayQuery,
    ) -> Result<Prepared<ReplayResponse>, ApiError> {
        let options = ReplayOptions {
            strict_inputs: query.strict_inputs,
        };
        let replayer = match candidate {
            Candidate::Bytes(bytes) => {
                Replayer::with_sandbox(self.sandbox().clone(), &bytes, options)?
            }
            Candidate::Module(spec) => {
                let m = self.resolve_module(&spec)?;
                let loaded = self.registry().load(&m.hash).map_err(Error::from)?;
                Replayer::from_loaded(
                    self.sandbox().clone(),
                    (*loaded).clone(),
                    m.hash,
                    m.manifest,
                    options,
                )
            }
        };
        let status = match query.status.as_deref() {
            // Asking for instances by id means those instances, whatever their status.
            None if query.ids.is_empty() => Some(InstanceStatus::Running),
            None | Some("all") => None,
            Some(s) => Some(InstanceStatus::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "unknown status `{s}`; use running, completed, failed, blocked, cancelled, terminated or all"
                ))
            })?),
        };
        let all_runs = query.all_runs;
        let filter = InstanceFilter {
            status,
            workflow_type: query.workflow_type.clone(),
            ids: query.ids.iter().map(|i| InstanceId(i.clone())).collect(),
            limit: query.limit,
            ..Default::default()
        };
        Ok(Box::new(move |p: &Pinion, progress: &Progress| {
            let exported = &replayer.manifest().workflows;
            // Without an explicit type, replay only the types the candidate exports.
            let chosen: Vec<StoredRun> = Pinion::list(p, &filter)?
                .into_iter()
                .filter(|rec| {
                    filter.workflow_type.is_some() || exported.contains(&rec.workflow_type)
                })
                .flat_map(|rec| StoredRun::of(&rec, all_runs))
                .collect();
            progress.add_total(chosen.len() as u64);
            // One history in memory per core at a time, not all of them.
            let (summary, reports) = p.replay_stored(&replayer, &chosen, progress)?;
            Ok(ReplayResponse {
                module: replayer.module_hash().clone(),
                summary,
                reports,
            })
        }))
    }

    /// [`Api::upgrade`]: checks the selector, the target module and the named instance;
    /// the prepared step replays and moves each instance.
    ///
    /// # Errors
    /// A bad selector, an unknown module or instance.
    pub fn prepare_upgrade(
        &self,
        body: UpgradeBody,
    ) -> Result<Prepared<UpgradeResponse>, ApiError> {
        let selector = match (&body.id, &body.from, &body.workflow_type) {
            (Some(id), None, None) => {
                Pinion::status(self, id)?;
                UpgradeSelector::Id(id.clone())
            }
            (None, Some(from), None) => UpgradeSelector::From(self.resolve_module(from)?.hash),
            (None, None, Some(t)) => UpgradeSelector::WorkflowType(t.clone()),
            _ => {
                return Err(ApiError::InvalidInput(
                    "choose the instances with exactly one of `id`, `from` and `workflow_type`"
                        .into(),
                ))
            }
        };
        self.resolve_module(&body.to)?;
        Ok(Box::new(move |p: &Pinion, progress: &Progress| {
            let results = Pinion::upgrade(p, &body.to, &selector, body.dry_run, progress)?;
            Ok(UpgradeResponse {
                dry_run: body.dry_run,
                results,
            })
        }))
    }
}

impl Api for Pinion {
    fn deploy(&self, wasm: &[u8], options: &DeployOptions) -> Result<Deployment, ApiError> {
        self.prepare_deploy(wasm.to_vec(), options.clone())?(self, &Progress::new())
    }

    fn start(&self, body: &StartBody) -> Result<Started, ApiError> {
        let (module, alias) = match (&body.module, &body.alias) {
            (Some(m), None) => (m.clone(), None),
            (None, Some(a)) => (String::new(), Some(a.clone())),
            _ => {
                return Err(ApiError::InvalidInput(
                    "give exactly one of `module` and `alias`".into(),
                ))
            }
        };
        let id = Pinion::start(
            self,
            &StartRequest {
                workflow_type: body.workflow_type.clone(),
                module,
                alias,
                input_json: body.input.to_string(),
                id: body.id.clone(),
            },
        )?;
        Ok(Started { id })
    }

    fn status(&self, id: &str) -> Result<InstanceRecord, ApiError> {
        let mut rec = Pinion::status(self, id)?;
        if !rec.status.is_closed() {
            rec.pending_activities = self
                .store()
                .pending_activities(&rec.id)
                .map_err(Error::from)?;
        }
        Ok(rec)
    }

    fn wait(&self, id: &str, timeout: Duration) -> Result<InstanceRecord, ApiError> {
        Ok(Pinion::wait(self, id, timeout)?)
    }

    fn list(&self, query: &ListQuery) -> Result<InstancePage, ApiError> {
        let module_hash = match &query.module {
            Some(m) => Some(self.registry().resolve(m).map_err(Error::from)?.hash),
            None => None,
        };
        let after = match &query.cursor {
            Some(c) => {
                let c = Cursor::decode(c).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "invalid cursor `{c}`: pass the `next_cursor` of a previous page"
                    ))
                })?;
                Some((c.created_at_ms, c.id))
            }
            None => None,
        };
        let limit = query.limit.unwrap_or(super::types::DEFAULT_PAGE);
        // One row more than asked says whether another page follows.
        let mut instances = Pinion::list(
            self,
            &InstanceFilter {
                status: query.status,
                workflow_type: query.workflow_type.clone(),
                module_hash,
                limit: Some(limit.saturating_add(1)),
                after,
                ..Default::default()
            },
        )?;
        let next_cursor = if instances.len() > limit as usize {
            instances.truncate(limit as usize);
            instances.last().map(|r| Cursor::after(r).encode())
        } else {
            None
        };
        Ok(InstancePage {
            instances,
            next_cursor,
        })
    }

    fn history(&self, id: &str, run: Option<u32>) -> Result<HistoryExport, ApiError> {
        let iid = InstanceId(id.into());
        let Some(run) = run else {
            return self
                .store()
                .export_history(&iid)
                .map_err(Error::from)?
                .ok_or_else(|| Error::UnknownInstance(id.into()).into());
        };
        if let Some(h) = self.store().export_run(&iid, run).map_err(Error::from)? {
            return Ok(h);
        }
        let current = Pinion::status(self, id)?.run;
        Err(ApiError::NotFound(format!(
            "instance {id} has no run {run}: its runs are 1 to {current}"
        )))
    }

    fn signal(&self, id: &str, name: &str, body: &InputBody) -> Result<Signalled, ApiError> {
        Pinion::signal(self, id, name, &body.input.to_string())?;
        Ok(Signalled {
            id: InstanceId(id.into()),
            signal: name.into(),
        })
    }

    fn query(&self, id: &str, name: &str, body: &InputBody) -> Result<QueryAnswer, ApiError> {
        let answer = Pinion::query(self, id, name, &body.input.to_string())?;
        Ok(QueryAnswer {
            id: InstanceId(id.into()),
            query: name.into(),
            result: answer.to_value(),
        })
    }

    fn stop(&self, verb: StopVerb, body: &StopBody) -> Result<Stopped, ApiError> {
        // An empty selector is a mistake, not a filter that matches nothing: without this,
        // `{"workflow_type": ""}` answered 200 with no instances.
        for (name, value) in [
            ("id", &body.id),
            ("module", &body.module),
            ("workflow_type", &body.workflow_type),
        ] {
            if value.as_deref() == Some("") {
                return Err(ApiError::InvalidInput(format!("`{name}` is empty")));
            }
        }
        let bulk = body.module.is_some() || body.workflow_type.is_some();
        let outcomes = match (&body.id, bulk) {
            (Some(id), false) => vec![self.stop_one(verb, id, body)?],
            (None, true) => self.stop_many(verb, body)?,
            _ => {
                return Err(ApiError::InvalidInput(
                    "choose the instances: `id`, or `module` and/or `workflow_type`".into(),
                ))
            }
        };
        Ok(Stopped {
            dry_run: body.dry_run,
            failed: outcomes
                .iter()
                .filter(|o| o.result == StopResult::NotStopped)
                .count(),
            instances: outcomes,
        })
    }

    fn events(&self, query: &EventQuery) -> Result<Vec<LifecycleEvent>, ApiError> {
        let mut filter = self.event_filter(query)?;
        filter.until = Some(self.store().last_event_id().map_err(Error::from)?);
        let want = query.limit.map_or(usize::MAX, |l| l as usize);
        let mut out = Vec::new();
        while out.len() < want {
            filter.limit = EVENT_BATCH.min((want - out.len()).min(u32::MAX as usize) as u32);
            let (batch, more) = self.read_events(&mut filter)?;
            out.extend(batch);
            if !more {
                break;
            }
        }
        Ok(out)
    }

    fn modules(&self) -> Result<Vec<ModuleStatus>, ApiError> {
        Ok(self.module_statuses()?)
    }

    fn markers(&self, query: &MarkerQuery) -> Result<MarkerCensus, ApiError> {
        Ok(self.marker_census(query)?)
    }

    fn aliases(&self) -> Result<Vec<AliasRecord>, ApiError> {
        Ok(self.store().list_aliases().map_err(Error::from)?)
    }

    fn set_alias(&self, name: &str, body: &SetAliasBody) -> Result<AliasSet, ApiError> {
        self.prepare_set_alias(name.into(), body.clone())?(self, &Progress::new())
    }

    fn ramp_alias(&self, name: &str, body: &RampBody) -> Result<AliasRamp, ApiError> {
        if body.percent > 100 {
            return Err(ApiError::InvalidInput(format!(
                "ramp percentage {} is over 100",
                body.percent
            )));
        }
        let module = Pinion::ramp_alias(self, name, &body.module, body.percent)?;
        Ok(AliasRamp {
            alias: name.into(),
            ramp: Some(Ramp {
                module,
                percent: body.percent,
            }),
        })
    }

    fn cancel_ramp(&self, name: &str) -> Result<AliasRamp, ApiError> {
        Pinion::cancel_ramp(self, name)?;
        Ok(AliasRamp {
            alias: name.into(),
            ramp: None,
        })
    }

    fn alias_history(&self, name: &str) -> Result<Vec<AliasChange>, ApiError> {
        let changes = self.store().alias_history(name).map_err(Error::from)?;
        if changes.is_empty() && self.store().get_alias(name).map_err(Error::from)?.is_none() {
            return Err(Error::UnknownAlias(name.into()).into());
        }
        Ok(changes)
    }

    fn replay(
        &self,
        candidate: &Candidate,
        query: &ReplayQuery,
    ) -> Result<ReplayResponse, ApiError> {
        self.prepare_replay(candidate.clone(), query.clone())?(self, &Progress::new())
    }

    fn upgrade(&self, body: &UpgradeBody) -> Result<UpgradeResponse, ApiError> {
        self.prepare_upgrade(body.clone())?(self, &Progress::new())
    }

    fn gc(&self, body: &GcBody) -> Result<GcResponse, ApiError> {
        Ok(GcResponse {
            dry_run: body.dry_run,
            modules: Pinion::gc(self, body.dry_run, None)?,
        })
    }
}
