//! [`Store`] for PostgreSQL: reads, the small writes, and the delegation of the larger
//! ones to `commit.rs`, `tasks.rs` and `lifecycle.rs`. Row decoding lives here too, in one
//! place with the column lists.

use pinion_abi::Manifest;
use postgres::types::ToSql;
use postgres::Row;

use super::commit::{commit_op, resolve_op, CommitOp};
use super::events::publish;
use super::tasks::heartbeat_payload;
use super::{corrupt, iid, lifecycle, map_err, reason_failure, tasks, to_json, PgStore, Tx};
use crate::history::{
    EventKind, HistoryEvent, HistoryExport, InstanceId, InstanceStatus, ModuleHash, Payload,
};
use crate::store::{
    ActivationCommit, ActivityResolution, ActivityTask, InboxEntry, InstanceFilter, InstanceRecord,
    ModuleRecord, NewInstance, PendingActivity, PendingState, Store, StoreError, Transition,
};

const INSTANCE_COLUMNS: &str = "id, workflow_type, module_hash, status, created_at_ms, updated_at_ms, event_count, result, failure, blocked_reason, imported, cancel_requested, run";

/// `Store::activation_input` in one statement: the instance, then `runnable` and `owner`,
/// then (only when runnable) its inbox's ids, times and data as three arrays, in order.
static ACTIVATION_INPUT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {INSTANCE_COLUMNS}, runnable, owner,
           CASE WHEN runnable THEN ARRAY(SELECT id FROM inbox WHERE instance_id = i.id ORDER BY id) END,
           CASE WHEN runnable THEN ARRAY(SELECT time_ms FROM inbox WHERE instance_id = i.id ORDER BY id) END,
           CASE WHEN runnable THEN ARRAY(SELECT data FROM inbox WHERE instance_id = i.id ORDER BY id) END
         FROM instances i WHERE id = $1"
    )
});

/// How many free instances a member takes per look (see `runnable_instances`).
const FREE_PER_POLL: i64 = 64;

fn instance_of(row: &Row) -> Result<InstanceRecord, StoreError> {
    let status: String = row.get(3);
    let result: Option<String> = row.get(7);
    let failure: Option<String> = row.get(8);
    Ok(InstanceRecord {
        id: InstanceId(row.get(0)),
        workflow_type: row.get(1),
        module_hash: ModuleHash(row.get(2)),
        status: InstanceStatus::parse(&status).unwrap_or(InstanceStatus::Blocked),
        created_at_ms: row.get::<_, i64>(4) as u64,
        updated_at_ms: row.get::<_, i64>(5) as u64,
        event_count: row.get::<_, i64>(6) as u64,
        result: result
            .map(|r| Payload::from_json_bytes(r.as_bytes()))
            .transpose()
            .map_err(|e| corrupt("instance result", e))?,
        failure: failure
            .map(|f| serde_json::from_str(&f))
            .transpose()
            .map_err(|e| corrupt("instance failure", e))?,
        blocked_reason: row.get(9),
        imported: row.get(10),
        cancel_requested: row.get(11),
        run: row.get::<_, i64>(12) as u32,
        pending_activities: Vec::new(),
    })
}

fn module_of(row: &Row) -> Result<ModuleRecord, StoreError> {
    let manifest: String = row.get(2);
    Ok(ModuleRecord {
        hash: ModuleHash(row.get(0)),
        size: row.get::<_, i64>(1) as u64,
        manifest: serde_json::from_str(&manifest).map_err(|e| corrupt("module manifest", e))?,
        deployed_at_ms: row.get::<_, i64>(3) as u64,
    })
}

/// Rows of `(id, time_ms, event)` of an instance's history or inbox, in order.
fn event_rows(
    tx: &mut Tx<'_>,
    sql: &str,
    id: &str,
    what: &str,
) -> Result<Vec<(i64, u64, EventKind)>, StoreError> {
    tx.query(sql, &[&id])?
        .iter()
        .map(|r| {
            let (rid, t, data): (i64, i64, String) = (r.get(0), r.get(1), r.get(2));
            let kind = serde_json::from_str(&data)
                .map_err(|e| corrupt(&format!("{what} {rid} of {id}"), e))?;
            Ok((rid, t as u64, kind))
        })
        .collect()
}

/// An instance's history, in order.
pub(super) fn history(tx: &mut Tx<'_>, id: &str) -> Result<Vec<HistoryEvent>, StoreError> {
    let sql = "SELECT id, time_ms, data FROM events WHERE instance_id = $1 ORDER BY id";
    Ok(event_rows(tx, sql, id, "event")?
        .into_iter()
        .map(|(eid, time_ms, kind)| HistoryEvent {
            id: eid as u64,
            time_ms,
            kind,
        })
        .collect())
}

/// An instance's inbox, in delivery order.
pub(super) fn inbox_rows(
    tx: &mut Tx<'_>,
    id: &str,
) -> Result<Vec<(i64, u64, EventKind)>, StoreError> {
    let sql = "SELECT id, time_ms, data FROM inbox WHERE instance_id = $1 ORDER BY id";
    event_rows(tx, sql, id, "inbox entry")
}

fn inbox_entries(rows: Vec<(i64, u64, EventKind)>) -> Vec<InboxEntry> {
    rows.into_iter()
        .map(|(id, time_ms, kind)| InboxEntry { id, time_ms, kind })
        .collect()
}

/// The query of `Store::list_instances` and its arguments: newest first, then by id.
fn list_sql(filter: &InstanceFilter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE TRUE");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(s) = filter.status {
        args.push(Box::new(s.as_str().to_owned()));
        sql.push_str(&format!(" AND status = ${}", args.len()));
    }
    if let Some(t) = &filter.workflow_type {
        args.push(Box::new(t.clone()));
        sql.push_str(&format!(" AND workflow_type = ${}", args.len()));
    }
    if let Some(m) = &filter.module_hash {
        args.push(Box::new(m.0.clone()));
        sql.push_str(&format!(" AND module_hash = ${}", args.len()));
    }
    if let Some(t) = filter.created_since_ms {
        args.push(Box::new(t as i64));
        sql.push_str(&format!(" AND created_at_ms >= ${}", args.len()));
    }
    if !filter.ids.is_empty() {
        let ids: Vec<String> = filter.ids.iter().map(|i| i.0.clone()).collect();
        args.push(Box::new(ids));
        sql.push_str(&format!(" AND id = ANY(${})", args.len()));
    }
    if let Some((created, id)) = &filter.after {
        args.push(Box::new(*created as i64));
        args.push(Box::new(id.0.clone()));
        let (c, i) = (args.len() - 1, args.len());
        sql.push_str(&format!(
            " AND (created_at_ms < ${c} OR (created_at_ms = ${c} AND id > ${i}))"
        ));
    }
    sql.push_str(" ORDER BY created_at_ms DESC, id");
    if let Some(l) = filter.limit {
        sql.push_str(&format!(" LIMIT {l}"));
    }
    (sql, args)
}

/// [`list_sql`], for the query-plan test.
#[cfg(test)]
pub(super) fn list_sql_for_tests(
    filter: &InstanceFilter,
) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    list_sql(filter)
}

fn pending_of(r: &Row) -> Result<PendingActivity, StoreError> {
    let lease: Option<i64> = r.get(4);
    let started: Option<i64> = r.get(5);
    let failure: Option<String> = r.get(6);
    let details: Option<String> = r.get(8);
    let last_failure: Option<pinion_abi::Failure> = failure
        .map(|f| serde_json::from_str(&f))
        .transpose()
        .map_err(|e| corrupt("activity failure", e))?;
    let state = if lease.is_some() {
        PendingState::Running
    } else if last_failure.is_some() {
        PendingState::BackingOff
    } else {
        PendingState::Scheduled
    };
    Ok(PendingActivity {
        seq: r.get::<_, i64>(0) as u32,
        activity_type: r.get(1),
        attempt: r.get::<_, i64>(2) as u32,
        state,
        started_at_ms: started.filter(|_| lease.is_some()).map(|t| t as u64),
        next_attempt_at_ms: lease.is_none().then_some(r.get::<_, i64>(3) as u64),
        last_failure,
        last_heartbeat_at_ms: r.get::<_, Option<i64>>(7).map(|t| t as u64),
        heartbeat_details: details.map(|d| heartbeat_payload(&d)).transpose()?,
    })
}

fn pairs(tx: &mut Tx<'_>, sql: &str) -> Result<Vec<(String, u64)>, StoreError> {
    Ok(tx
        .query(sql, &[])?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect())
}

fn count(tx: &mut Tx<'_>, sql: &str, now: Option<i64>) -> Result<u64, StoreError> {
    let row = match now {
        Some(now) => tx.one(sql, &[&now])?,
        None => tx.one(sql, &[])?,
    };
    Ok(row.get::<_, i64>(0) as u64)
}

impl Store for PgStore {
    fn pending_activities(&self, id: &InstanceId) -> Result<Vec<PendingActivity>, StoreError> {
        let id = id.0.clone();
        self.tx(move |tx| {
            tx.query(
                "SELECT seq, activity_type, attempt, visible_at_ms, lease_until_ms, started_at_ms, last_failure,
                        last_heartbeat_ms, heartbeat_details
                 FROM activity_tasks WHERE instance_id = $1 ORDER BY seq",
                &[&id],
            )?
            .iter()
            .map(pending_of)
            .collect()
        })
    }

    fn put_module(
        &self,
        hash: &ModuleHash,
        bytes: &[u8],
        manifest: &Manifest,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (hash, bytes, manifest) = (hash.0.clone(), bytes.to_vec(), to_json(manifest)?);
        self.tx(move |tx| {
            let n = tx.exec(
                "INSERT INTO modules(hash, size, manifest, deployed_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (hash) DO NOTHING",
                &[&hash, &(bytes.len() as i64), &manifest, &(now_ms as i64)],
            )?;
            if n == 1 {
                tx.exec(
                    "INSERT INTO module_code(hash, bytes) VALUES ($1, $2)",
                    &[&hash, &bytes],
                )?;
            }
            Ok(n == 1)
        })
    }

    fn get_module(&self, hash: &ModuleHash) -> Result<Option<ModuleRecord>, StoreError> {
        let hash = hash.0.clone();
        self.tx(move |tx| {
            tx.opt(
                "SELECT hash, size, manifest, deployed_at_ms FROM modules WHERE hash = $1",
                &[&hash],
            )?
            .as_ref()
            .map(module_of)
            .transpose()
        })
    }

    fn module_bytes(&self, hash: &ModuleHash) -> Result<Option<Vec<u8>>, StoreError> {
        let hash = hash.0.clone();
        self.tx(move |tx| {
            Ok(tx
                .opt("SELECT bytes FROM module_code WHERE hash = $1", &[&hash])?
                .map(|r| r.get(0)))
        })
    }

    fn list_modules(&self) -> Result<Vec<ModuleRecord>, StoreError> {
        self.tx(|tx| {
            tx.query(
                "SELECT hash, size, manifest, deployed_at_ms FROM modules ORDER BY deployed_at_ms DESC, hash",
                &[],
            )?
            .iter()
            .map(module_of)
            .collect()
        })
    }

    fn create_instance(&self, new: NewInstance) -> Result<(), StoreError> {
        self.tx(move |tx| {
            lifecycle::insert_instance(tx, &new.id, &new.started, new.now_ms)?;
            // Free for any server: wake them.
            super::members::notify(tx, None)
        })
    }

    fn get_instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        let id = id.0.clone();
        self.tx(move |tx| {
            tx.opt(
                &format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = $1"),
                &[&id],
            )?
            .as_ref()
            .map(instance_of)
            .transpose()
        })
    }

    fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>, StoreError> {
        let (sql, args) = list_sql(filter);
        self.tx(move |tx| {
            let params: Vec<&(dyn ToSql + Sync)> =
                args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect();
            tx.query(&sql, &params)?.iter().map(instance_of).collect()
        })
    }

    fn load_history(&self, id: &InstanceId) -> Result<Vec<HistoryEvent>, StoreError> {
        let id = id.0.clone();
        self.tx(move |tx| history(tx, &id))
    }

    fn archived_run(&self, id: &InstanceId, run: u32) -> Result<Option<HistoryExport>, StoreError> {
        let key = id.0.clone();
        let row: Option<(String, String, String)> = self.tx(move |tx| {
            Ok(tx
                .opt(
                    "SELECT workflow_type, module_hash, events FROM runs WHERE instance_id = $1 AND run = $2",
                    &[&key, &i64::from(run)],
                )?
                .map(|r| (r.get(0), r.get(1), r.get(2))))
        })?;
        let Some((workflow_type, module_hash, events)) = row else {
            return Ok(None);
        };
        Ok(Some(HistoryExport {
            format: crate::history::EXPORT_FORMAT.into(),
            version: crate::history::EXPORT_VERSION,
            instance_id: id.clone(),
            workflow_type,
            module_hash: ModuleHash(module_hash),
            status: InstanceStatus::ContinuedAsNew,
            run,
            events: serde_json::from_str(&events)
                .map_err(|e| corrupt(&format!("run {run} of instance {id}"), e))?,
        }))
    }

    fn load_inbox(&self, id: &InstanceId) -> Result<Vec<InboxEntry>, StoreError> {
        let id = id.0.clone();
        self.tx(move |tx| inbox_rows(tx, &id).map(inbox_entries))
    }

    fn activation_input(
        &self,
        id: &InstanceId,
    ) -> Result<Option<(InstanceRecord, Vec<InboxEntry>)>, StoreError> {
        // Once per activation: one statement, a transaction of its own (one round trip),
        // reads the instance and, only when it is runnable (every write that adds to an
        // inbox sets `runnable` with it), its inbox. With several servers on the database,
        // an instance another server owns is not this one's to activate (`None`): its
        // input reaches the owner. A free instance is taken in a transaction instead.
        let me = self.member_id();
        let key = id.0.clone();
        let read = self.single(Box::new(move |conn: &mut super::Conn| {
            let stmt = conn.stmt(&ACTIVATION_INPUT_SQL)?;
            let row = conn.client.query_opt(&stmt, &[&key]).map_err(map_err)?;
            Ok((row, false))
        }))?;
        let Some(row) = read else {
            return Ok(None);
        };
        let owner: Option<String> = row.get(14);
        match (&me, owner) {
            (Some(me), Some(o)) if *o != **me => return Ok(None),
            (Some(_), None) => return self.take_and_read(id),
            _ => {}
        }
        let rec = instance_of(&row)?;
        let ids: Option<Vec<i64>> = row.get(15);
        let times: Option<Vec<i64>> = row.get(16);
        let data: Option<Vec<String>> = row.get(17);
        let mut inbox = Vec::new();
        for ((rid, t), d) in ids
            .unwrap_or_default()
            .into_iter()
            .zip(times.unwrap_or_default())
            .zip(data.unwrap_or_default())
        {
            let kind = serde_json::from_str(&d)
                .map_err(|e| corrupt(&format!("inbox entry {rid} of {}", id.0), e))?;
            inbox.push(InboxEntry {
                id: rid,
                time_ms: t as u64,
                kind,
            });
        }
        Ok(Some((rec, inbox)))
    }

    fn runnable_instances(&self, limit: u32) -> Result<Vec<InstanceId>, StoreError> {
        let Some(me) = self.member_id() else {
            return self.tx(move |tx| {
                Ok(tx
                    .query(
                        "SELECT id FROM instances WHERE runnable ORDER BY updated_at_ms LIMIT $1",
                        &[&i64::from(limit)],
                    )?
                    .iter()
                    .map(|r| InstanceId(r.get(0)))
                    .collect())
            });
        };
        // A member lists the runnable instances it owns, and takes free ones up to `limit`
        // (rows another transaction holds are skipped, so two members never take one).
        self.tx(move |tx| {
            let me = &*me;
            let mut ids: Vec<InstanceId> = tx
                .query(
                    "SELECT id FROM instances WHERE runnable AND owner = $1 ORDER BY updated_at_ms LIMIT $2",
                    &[&me, &i64::from(limit)],
                )?
                .iter()
                .map(|r| InstanceId(r.get(0)))
                .collect();
            // Free instances are taken a few at a time, so that servers polling together
            // share a burst of starts instead of the first one taking them all.
            let room = (i64::from(limit) - ids.len() as i64).min(FREE_PER_POLL);
            if room > 0 {
                ids.extend(
                    tx.query(
                        "UPDATE instances SET owner = $1 WHERE id IN (
                           SELECT id FROM instances WHERE runnable AND owner IS NULL
                           ORDER BY updated_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED)
                         RETURNING id",
                        &[&me, &room],
                    )?
                    .iter()
                    .map(|r| InstanceId(r.get(0))),
                );
            }
            Ok(ids)
        })
    }

    fn gauges(&self, now_ms: u64) -> Result<crate::telemetry::metrics::DatabaseGauges, StoreError> {
        let now = now_ms as i64;
        self.tx(move |tx| {
            Ok(crate::telemetry::metrics::DatabaseGauges {
                instances: pairs(
                    tx,
                    "SELECT status, count(*) FROM instances WHERE NOT imported GROUP BY status",
                )?,
                blocked_reasons: pairs(
                    tx,
                    "SELECT coalesce(blocked_reason, ''), count(*) FROM instances
                     WHERE status = 'blocked' AND NOT imported GROUP BY blocked_reason",
                )?,
                runnable: count(tx, "SELECT count(*) FROM instances WHERE runnable", None)?,
                tasks_ready: count(
                    tx,
                    "SELECT count(*) FROM activity_tasks WHERE lease_until_ms IS NULL AND visible_at_ms <= $1",
                    Some(now),
                )?,
                tasks_leased: count(
                    tx,
                    "SELECT count(*) FROM activity_tasks WHERE lease_until_ms IS NOT NULL",
                    None,
                )?,
                tasks_backoff: count(
                    tx,
                    "SELECT count(*) FROM activity_tasks WHERE lease_until_ms IS NULL AND visible_at_ms > $1",
                    Some(now),
                )?,
                timers_due: count(
                    tx,
                    "SELECT count(*) FROM timers WHERE fire_at_ms <= $1",
                    Some(now),
                )?,
            })
        })
    }

    fn mark_idle(&self, id: &InstanceId) -> Result<(), StoreError> {
        let id = id.0.clone();
        self.tx(move |tx| {
            // Locked before the check, so the check's snapshot includes any input whose
            // push held the lock before us (READ COMMITTED re-reads only the updated row,
            // not the subquery, after waiting for a lock).
            tx.opt("SELECT 1 FROM instances WHERE id = $1 FOR UPDATE", &[&id])?;
            tx.exec(
                "UPDATE instances SET runnable = FALSE
                 WHERE id = $1 AND NOT EXISTS(SELECT 1 FROM inbox WHERE instance_id = $1)",
                &[&id],
            )?;
            Ok(())
        })
    }

    fn commit_activation(&self, commit: ActivationCommit) -> Result<(), StoreError> {
        match commit_op(commit, self.member_id())? {
            CommitOp::Step(op) => self.single(op),
            CommitOp::Tx(op) => self.tx(op),
        }
    }

    fn commit_activation_then(
        &self,
        commit: ActivationCommit,
        done: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
    ) {
        match commit_op(commit, self.member_id()) {
            Ok(CommitOp::Step(op)) => self.single_then(op, done),
            Ok(CommitOp::Tx(op)) => self.tx_then(op, done),
            Err(e) => done(Err(e)),
        }
    }

    fn block_instance(&self, id: &InstanceId, reason: &str, now_ms: u64) -> Result<(), StoreError> {
        let (id, reason) = (id.0.clone(), reason.to_owned());
        self.tx(move |tx| {
            let Some(was) = tx.opt(
                "SELECT status FROM instances WHERE id = $1 AND status IN ('running', 'blocked') FOR UPDATE",
                &[&id],
            )?
            else {
                return Err(StoreError::NotFound(format!("running instance {id}")));
            };
            let was: String = was.get(0);
            tx.exec(
                "UPDATE instances SET status = 'blocked', blocked_reason = $2, runnable = FALSE,
                   updated_at_ms = $3, closing = FALSE WHERE id = $1",
                &[&id, &reason, &(now_ms as i64)],
            )?;
            // Published once, when it stops; a blocked instance blocked again stays blocked.
            if was == "running" {
                publish(
                    tx,
                    &id,
                    &Transition::Blocked {
                        reason: reason.clone(),
                    },
                    now_ms,
                )?;
            }
            Ok(())
        })
    }

    fn claim_activities(
        &self,
        now_ms: u64,
        limit: u32,
        lease_slack_ms: u64,
        default_timeout_ms: u64,
    ) -> Result<Vec<ActivityTask>, StoreError> {
        let me = self.member_id();
        self.tx(move |tx| {
            tasks::claim(
                tx,
                me.as_deref(),
                now_ms,
                limit,
                lease_slack_ms,
                default_timeout_ms,
            )
        })
    }

    fn resolve_activity(
        &self,
        instance: &InstanceId,
        seq: u32,
        attempt: u32,
        resolution: ActivityResolution,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.tx(resolve_op(instance, seq, attempt, resolution, now_ms)?)
    }

    fn record_heartbeat(
        &self,
        instance: &InstanceId,
        seq: u32,
        attempt: u32,
        details: &Payload,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (instance, details) = (instance.0.clone(), details.json().to_owned());
        self.tx(move |tx| {
            let n = tx.exec(
                "UPDATE activity_tasks SET heartbeat_details = $4, last_heartbeat_ms = $5
                 WHERE instance_id = $1 AND seq = $2 AND attempt = $3",
                &[
                    &instance,
                    &i64::from(seq),
                    &i64::from(attempt),
                    &details,
                    &(now_ms as i64),
                ],
            )?;
            Ok(n == 1)
        })
    }

    fn resolve_activity_then(
        &self,
        instance: &InstanceId,
        seq: u32,
        attempt: u32,
        resolution: ActivityResolution,
        now_ms: u64,
        done: Box<dyn FnOnce(Result<bool, StoreError>) + Send>,
    ) {
        match resolve_op(instance, seq, attempt, resolution, now_ms) {
            Ok(op) => self.tx_then(op, done),
            Err(e) => done(Err(e)),
        }
    }

    fn lost_activities(&self) -> Result<Vec<ActivityTask>, StoreError> {
        self.reap()
    }

    fn departed_activities(&self) -> Result<Vec<ActivityTask>, StoreError> {
        self.reap()
    }

    fn mark_closing(&self, id: &InstanceId) -> Result<(), StoreError> {
        let id = id.0.clone();
        self.tx(move |tx| {
            tx.exec(
                "UPDATE instances SET closing = TRUE WHERE id = $1 AND status = 'running'",
                &[&id],
            )?;
            Ok(())
        })
    }

    fn unclaim_activities(&self, claims: &[(InstanceId, u32, u32)]) -> Result<(), StoreError> {
        let claims: Vec<(String, i64, i64)> = claims
            .iter()
            .map(|(id, seq, attempt)| (id.0.clone(), i64::from(*seq), i64::from(*attempt)))
            .collect();
        self.tx(move |tx| {
            for (id, seq, attempt) in &claims {
                tx.exec(
                    "UPDATE activity_tasks SET lease_until_ms = NULL, started_at_ms = NULL
                     WHERE instance_id = $1 AND seq = $2 AND attempt = $3",
                    &[id, seq, attempt],
                )?;
            }
            Ok(())
        })
    }

    fn next_due_ms(&self) -> Result<Option<u64>, StoreError> {
        self.tx(tasks::next_due)
    }

    fn fire_due_timers(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.tx(move |tx| tasks::fire_due(tx, now_ms))
    }

    fn signal(
        &self,
        id: &InstanceId,
        name: &str,
        input: &Payload,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let (id, kind) = (
            id.0.clone(),
            EventKind::SignalReceived {
                name: name.to_owned(),
                input: input.clone(),
            },
        );
        self.tx(move |tx| tasks::signal(tx, &id, &kind, now_ms))
    }

    fn request_cancel(
        &self,
        id: &InstanceId,
        reason: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (id, kind) = (
            id.0.clone(),
            EventKind::CancelRequested {
                reason: reason.to_owned(),
            },
        );
        self.tx(move |tx| tasks::request_cancel(tx, &id, &kind, now_ms))
    }

    fn terminate(&self, id: &InstanceId, reason: &str, now_ms: u64) -> Result<(), StoreError> {
        let (id, reason) = (id.0.clone(), reason.to_owned());
        self.tx(move |tx| lifecycle::terminate(tx, &id, &reason, now_ms))
    }

    fn import_history(&self, export: &HistoryExport, now_ms: u64) -> Result<(), StoreError> {
        let mut events = Vec::with_capacity(export.events.len());
        for e in &export.events {
            events.push((e.id as i64, e.time_ms as i64, to_json(&e.kind)?));
        }
        let (result, failure) = match export.events.last().map(|e| &e.kind) {
            Some(EventKind::WorkflowCompleted { result }) => (Some(result.json().to_owned()), None),
            Some(EventKind::WorkflowFailed { failure }) => (None, Some(to_json(failure)?)),
            Some(EventKind::WorkflowCancelled { reason }) => {
                (None, Some(to_json(&reason_failure("Cancelled", reason))?))
            }
            Some(EventKind::WorkflowTerminated { reason }) => {
                (None, Some(to_json(&reason_failure("Terminated", reason))?))
            }
            _ => (None, None),
        };
        let created = export.events.first().map(|e| e.time_ms).unwrap_or(now_ms) as i64;
        let export = export.clone();
        self.tx(move |tx| {
            let id = iid(&export.instance_id);
            let blocked = (export.status == InstanceStatus::Blocked).then_some("imported while blocked");
            let n = tx.exec(
                "INSERT INTO instances(id, workflow_type, module_hash, status, created_at_ms, updated_at_ms, event_count,
                                       runnable, result, failure, blocked_reason, imported, run)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE, $8, $9, $10, TRUE, $11)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &id,
                    &export.workflow_type,
                    &export.module_hash.0,
                    &export.status.as_str(),
                    &created,
                    &(now_ms as i64),
                    &(events.len() as i64),
                    &result,
                    &failure,
                    &blocked,
                    &i64::from(export.run),
                ],
            )?;
            if n == 0 {
                return Err(StoreError::AlreadyExists(format!("instance {id}")));
            }
            for (eid, t, data) in &events {
                tx.exec(
                    "INSERT INTO events(instance_id, id, time_ms, data) VALUES ($1, $2, $3, $4)",
                    &[&id, eid, t, data],
                )?;
            }
            Ok(())
        })
    }

    fn ended_before(
        &self,
        before_ms: u64,
        workflow_type: Option<&str>,
        limit: u32,
    ) -> Result<Vec<InstanceId>, StoreError> {
        let workflow_type = workflow_type.map(str::to_owned);
        self.tx(move |tx| {
            Ok(tx
                .query(
                    "SELECT id FROM instances
                     WHERE status IN ('completed', 'failed', 'cancelled', 'terminated') AND NOT imported
                       AND updated_at_ms < $1 AND ($2::TEXT IS NULL OR workflow_type = $2)
                     ORDER BY updated_at_ms, id LIMIT $3",
                    &[&(before_ms as i64), &workflow_type, &i64::from(limit)],
                )?
                .iter()
                .map(|r| InstanceId(r.get(0)))
                .collect())
        })
    }

    fn purge_instances(&self, ids: &[InstanceId]) -> Result<u64, StoreError> {
        let ids: Vec<String> = ids.iter().map(|i| i.0.clone()).collect();
        self.tx(move |tx| {
            let mut purged = 0;
            for id in &ids {
                let n = tx.exec(
                    "DELETE FROM instances WHERE id = $1 AND NOT imported
                       AND status IN ('completed', 'failed', 'cancelled', 'terminated')",
                    &[id],
                )?;
                if n == 0 {
                    continue;
                }
                for table in ["events", "inbox", "activity_tasks", "timers", "runs"] {
                    tx.exec(
                        &format!("DELETE FROM {table} WHERE instance_id = $1"),
                        &[id],
                    )?;
                }
                purged += 1;
            }
            Ok(purged)
        })
    }
}

impl PgStore {
    /// [`Store::activation_input`] of an instance no member owns: takes it (unless another
    /// member just did) and reads it, in one transaction.
    fn take_and_read(
        &self,
        id: &InstanceId,
    ) -> Result<Option<(InstanceRecord, Vec<InboxEntry>)>, StoreError> {
        let id = id.0.clone();
        let me = self.member_id();
        self.tx(move |tx| {
            let Some(row) = tx.opt(
                &format!("SELECT {INSTANCE_COLUMNS}, runnable, owner FROM instances WHERE id = $1"),
                &[&id],
            )?
            else {
                return Ok(None);
            };
            if let Some(me) = &me {
                let owner: Option<String> = row.get(14);
                let mine = match owner {
                    Some(o) => *o == **me,
                    None => {
                        tx.exec(
                            "UPDATE instances SET owner = $2 WHERE id = $1 AND owner IS NULL",
                            &[&id, &&**me],
                        )? == 1
                    }
                };
                if !mine {
                    return Ok(None);
                }
            }
            let rec = instance_of(&row)?;
            let inbox = if row.get::<_, bool>(13) {
                inbox_entries(inbox_rows(tx, &id)?)
            } else {
                Vec::new()
            };
            Ok(Some((rec, inbox)))
        })
    }
}
