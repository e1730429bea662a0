//! [`DeploymentStore`] for SQLite: aliases, usage counts, garbage collection, upgrades and
//! policies (tables from migration 0002).

use rusqlite::{params, OptionalExtension};

use super::{exec, map_err, query_one, to_json, SqliteStore};
use crate::history::{EventKind, InstanceId, ModuleHash};
use crate::store::deploy::{
    AliasChange, AliasRecord, DeploymentStore, ModuleUsage, NondeterminismPolicy,
};
use crate::store::{StoreError, Transition};

fn record_change(
    c: &rusqlite::Connection,
    name: &str,
    action: &str,
    hash: Option<&str>,
    percent: Option<u8>,
    now_ms: u64,
) -> Result<(), StoreError> {
    exec(c,
        "INSERT INTO alias_history(name, action, module_hash, ramp_percent, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, action, hash, percent, now_ms as i64],
    )
    .map_err(map_err)?;
    Ok(())
}

fn alias_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AliasRecord> {
    let ramp_hash: Option<String> = r.get(2)?;
    let ramp_percent: Option<u8> = r.get(3)?;
    Ok(AliasRecord {
        name: r.get(0)?,
        module_hash: ModuleHash(r.get(1)?),
        ramp: ramp_hash.zip(ramp_percent).map(|(h, p)| (ModuleHash(h), p)),
        updated_at_ms: r.get::<_, i64>(4)? as u64,
    })
}

impl DeploymentStore for SqliteStore {
    fn set_alias(&self, name: &str, hash: &ModuleHash, now_ms: u64) -> Result<(), StoreError> {
        let (name, hash) = (name.to_owned(), hash.0.clone());
        self.write(move |c| {
            exec(c,
                "INSERT INTO aliases(name, module_hash, ramp_hash, ramp_percent, updated_at_ms) VALUES (?1, ?2, NULL, NULL, ?3)
                 ON CONFLICT(name) DO UPDATE SET module_hash = excluded.module_hash, ramp_hash = NULL, ramp_percent = NULL,
                                                 updated_at_ms = excluded.updated_at_ms",
                params![name, hash, now_ms as i64],
            )
            .map_err(map_err)?;
            record_change(c, &name, "set", Some(&hash), None, now_ms)
        })
    }

    fn ramp_alias(
        &self,
        name: &str,
        hash: &ModuleHash,
        percent: u8,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let (name, hash) = (name.to_owned(), hash.0.clone());
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE aliases SET ramp_hash = ?2, ramp_percent = ?3, updated_at_ms = ?4 WHERE name = ?1",
                    params![name, hash, percent, now_ms as i64],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("alias {name}")));
            }
            record_change(c, &name, "ramp", Some(&hash), Some(percent), now_ms)
        })
    }

    fn cancel_ramp(&self, name: &str, now_ms: u64) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE aliases SET ramp_hash = NULL, ramp_percent = NULL, updated_at_ms = ?2 WHERE name = ?1",
                    params![name, now_ms as i64],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("alias {name}")));
            }
            record_change(c, &name, "ramp-cancel", None, None, now_ms)
        })
    }

    fn get_alias(&self, name: &str) -> Result<Option<AliasRecord>, StoreError> {
        self.read(|c| {
            query_one(c,
                "SELECT name, module_hash, ramp_hash, ramp_percent, updated_at_ms FROM aliases WHERE name = ?1",
                [name],
                alias_from_row,
            )
            .optional()
            .map_err(map_err)
        })
    }

    fn list_aliases(&self) -> Result<Vec<AliasRecord>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare("SELECT name, module_hash, ramp_hash, ramp_percent, updated_at_ms FROM aliases ORDER BY name")
                .map_err(map_err)?;
            let rows = st.query_map([], alias_from_row).map_err(map_err)?;
            rows.collect::<Result<_, _>>().map_err(map_err)
        })
    }

    fn alias_history(&self, name: &str) -> Result<Vec<AliasChange>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare("SELECT action, module_hash, ramp_percent, at_ms FROM alias_history WHERE name = ?1 ORDER BY id")
                .map_err(map_err)?;
            let rows = st
                .query_map([name], |r| {
                    Ok(AliasChange {
                        action: r.get(0)?,
                        module_hash: r.get::<_, Option<String>>(1)?.map(ModuleHash),
                        ramp_percent: r.get(2)?,
                        at_ms: r.get::<_, i64>(3)? as u64,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<Result<_, _>>().map_err(map_err)
        })
    }

    fn aliases_of_module(&self, hash: &ModuleHash) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT name FROM alias_history WHERE module_hash = ?1 \
                     UNION SELECT name FROM aliases WHERE module_hash = ?1 OR ramp_hash = ?1 \
                     ORDER BY name",
                )
                .map_err(map_err)?;
            let rows = st.query_map([&hash.0], |r| r.get(0)).map_err(map_err)?;
            rows.collect::<Result<_, _>>().map_err(map_err)
        })
    }

    fn module_usage(&self) -> Result<Vec<(ModuleHash, ModuleUsage)>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare("SELECT module_hash, status, count(*) FROM instances WHERE imported = 0 GROUP BY module_hash, status")
                .map_err(map_err)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)? as u64)))
                .map_err(map_err)?;
            let mut out: Vec<(ModuleHash, ModuleUsage)> = Vec::new();
            for row in rows {
                let (hash, status, n) = row.map_err(map_err)?;
                let idx = match out.iter().position(|(h, _)| h.0 == hash) {
                    Some(i) => i,
                    None => {
                        out.push((ModuleHash(hash), ModuleUsage::default()));
                        out.len() - 1
                    }
                };
                let u = &mut out[idx].1;
                match status.as_str() {
                    "running" => u.running += n,
                    "blocked" => u.blocked += n,
                    "completed" => u.completed += n,
                    _ => u.failed += n,
                }
            }
            Ok(out)
        })
    }

    fn delete_module_if_unused(&self, hash: &ModuleHash) -> Result<bool, StoreError> {
        let hash = hash.0.clone();
        self.write(move |c| {
            let in_use: bool = c
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM instances WHERE module_hash = ?1 AND status IN ('running', 'blocked') AND imported = 0)
                         OR EXISTS(SELECT 1 FROM aliases WHERE module_hash = ?1 OR ramp_hash = ?1)",
                    [&hash],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            if in_use {
                return Ok(false);
            }
            exec(c, "DELETE FROM policies WHERE module_hash = ?1", [&hash]).map_err(map_err)?;
            Ok(exec(c, "DELETE FROM modules WHERE hash = ?1", [&hash]).map_err(map_err)? == 1)
        })
    }

    fn upgrade_instance(
        &self,
        id: &InstanceId,
        expected_events: u64,
        expected_from: &ModuleHash,
        to: &ModuleHash,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let (id, expected_from, to) = (id.0.clone(), expected_from.0.clone(), to.0.clone());
        self.write(move |c| {
            let (count, status, from): (i64, String, String) = c
                .query_row("SELECT event_count, status, module_hash FROM instances WHERE id = ?1", [&id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
                .map_err(map_err)?
                .ok_or_else(|| StoreError::NotFound(format!("instance {id}")))?;
            if count as u64 != expected_events || !matches!(status.as_str(), "running" | "blocked") {
                return Err(StoreError::Conflict(format!(
                    "instance {id} changed while it was being verified ({count} events, {status}); run the upgrade again"
                )));
            }
            if from != expected_from {
                return Err(StoreError::Conflict(format!(
                    "instance {id} is no longer on module {expected_from}: it was moved to {from} meanwhile (another upgrade?); nothing recorded"
                )));
            }
            let event = to_json(&EventKind::ModuleUpgraded { from: ModuleHash(from.clone()), to: ModuleHash(to.clone()) })?;
            exec(c,
                "INSERT INTO events(instance_id, id, time_ms, data) VALUES (?1, ?2, ?3, ?4)",
                params![id, count + 1, now_ms as i64, event],
            )
            .map_err(map_err)?;
            // A blocked instance runs again: its waiting inputs (or its undelivered start)
            // are delivered by the next activation, on the new module.
            exec(c,
                "UPDATE instances SET module_hash = ?2, event_count = ?3, status = 'running', blocked_reason = NULL,
                        runnable = 1, updated_at_ms = ?4 WHERE id = ?1",
                params![id, to, count + 1, now_ms as i64],
            )
            .map_err(map_err)?;
            exec(c, "UPDATE activity_tasks SET module_hash = ?2 WHERE instance_id = ?1", params![id, to]).map_err(map_err)?;
            super::events::publish(c, &id, &Transition::Upgraded { from: ModuleHash(from) }, now_ms)
        })
    }

    fn set_policy(
        &self,
        hash: &ModuleHash,
        workflow_type: &str,
        policy: NondeterminismPolicy,
    ) -> Result<(), StoreError> {
        let (hash, wt) = (hash.0.clone(), workflow_type.to_owned());
        self.write(move |c| {
            exec(
                c,
                "INSERT INTO policies(module_hash, workflow_type, policy) VALUES (?1, ?2, ?3)
                 ON CONFLICT(module_hash, workflow_type) DO UPDATE SET policy = excluded.policy",
                params![hash, wt, policy.as_str()],
            )
            .map_err(map_err)?;
            Ok(())
        })
    }

    fn policy(
        &self,
        hash: &ModuleHash,
        workflow_type: &str,
    ) -> Result<NondeterminismPolicy, StoreError> {
        self.read(|c| {
            let p: Option<String> = c
                .query_row(
                    "SELECT policy FROM policies WHERE module_hash = ?1 AND workflow_type = ?2",
                    params![hash.0, workflow_type],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)?;
            Ok(p.as_deref()
                .and_then(NondeterminismPolicy::parse)
                .unwrap_or(NondeterminismPolicy::Block))
        })
    }

    fn fail_instance(
        &self,
        id: &InstanceId,
        failure: &pinion_abi::Failure,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let (id, failure, failure_json) = (id.0.clone(), failure.clone(), to_json(failure)?);
        self.write(move |c| {
            super::lifecycle::clear_work(c, &id)?;
            let n = exec(c,
                "UPDATE instances SET status = 'failed', failure = ?2, runnable = 0, updated_at_ms = ?3
                 WHERE id = ?1 AND status IN ('running', 'blocked')",
                params![id, failure_json, now_ms as i64],
            )
            .map_err(map_err)?;
            if n == 1 {
                super::events::publish(c, &id, &Transition::Failed { failure: failure.clone() }, now_ms)?;
                super::lifecycle::ended(c, &id, super::lifecycle::Ending::Failed(&failure), now_ms)?;
            }
            Ok(())
        })
    }
}
