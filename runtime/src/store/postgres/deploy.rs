//! [`DeploymentStore`] for PostgreSQL: aliases, usage counts, garbage collection, upgrades
//! and policies, with SQLite's rules (`store/sqlite/deploy.rs`). Checks that must hold at
//! the moment of a write lock the rows they read (`FOR UPDATE`), where SQLite's single
//! writer made that implicit.

use super::events::publish;
use super::{lifecycle, to_json, PgStore, Tx};
use crate::history::{EventKind, InstanceId, ModuleHash};
use crate::store::deploy::{
    AliasChange, AliasRecord, DeploymentStore, ModuleUsage, NondeterminismPolicy,
};
use crate::store::{StoreError, Transition};

fn record_change(
    tx: &mut Tx<'_>,
    name: &str,
    action: &str,
    hash: Option<&str>,
    percent: Option<u8>,
    now_ms: u64,
) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO alias_history(name, action, module_hash, ramp_percent, at_ms) VALUES ($1, $2, $3, $4, $5)",
        &[&name, &action, &hash, &percent.map(i64::from), &(now_ms as i64)],
    )?;
    Ok(())
}

fn alias_of(r: &postgres::Row) -> AliasRecord {
    let ramp_hash: Option<String> = r.get(2);
    let ramp_percent: Option<i64> = r.get(3);
    AliasRecord {
        name: r.get(0),
        module_hash: ModuleHash(r.get(1)),
        ramp: ramp_hash
            .zip(ramp_percent)
            .map(|(h, p)| (ModuleHash(h), p.clamp(0, 100) as u8)),
        updated_at_ms: r.get::<_, i64>(4) as u64,
    }
}

impl DeploymentStore for PgStore {
    fn set_alias(&self, name: &str, hash: &ModuleHash, now_ms: u64) -> Result<(), StoreError> {
        let (name, hash) = (name.to_owned(), hash.0.clone());
        self.tx(move |tx| {
            tx.exec(
                "INSERT INTO aliases(name, module_hash, ramp_hash, ramp_percent, updated_at_ms) VALUES ($1, $2, NULL, NULL, $3)
                 ON CONFLICT (name) DO UPDATE SET module_hash = excluded.module_hash, ramp_hash = NULL,
                   ramp_percent = NULL, updated_at_ms = excluded.updated_at_ms",
                &[&name, &hash, &(now_ms as i64)],
            )?;
            record_change(tx, &name, "set", Some(&hash), None, now_ms)
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
        self.tx(move |tx| {
            let n = tx.exec(
                "UPDATE aliases SET ramp_hash = $2, ramp_percent = $3, updated_at_ms = $4 WHERE name = $1",
                &[&name, &hash, &i64::from(percent), &(now_ms as i64)],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("alias {name}")));
            }
            record_change(tx, &name, "ramp", Some(&hash), Some(percent), now_ms)
        })
    }

    fn cancel_ramp(&self, name: &str, now_ms: u64) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.tx(move |tx| {
            let n = tx.exec(
                "UPDATE aliases SET ramp_hash = NULL, ramp_percent = NULL, updated_at_ms = $2 WHERE name = $1",
                &[&name, &(now_ms as i64)],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("alias {name}")));
            }
            record_change(tx, &name, "ramp-cancel", None, None, now_ms)
        })
    }

    fn get_alias(&self, name: &str) -> Result<Option<AliasRecord>, StoreError> {
        let name = name.to_owned();
        self.tx(move |tx| {
            Ok(tx
                .opt(
                    "SELECT name, module_hash, ramp_hash, ramp_percent, updated_at_ms FROM aliases WHERE name = $1",
                    &[&name],
                )?
                .as_ref()
                .map(alias_of))
        })
    }

    fn list_aliases(&self) -> Result<Vec<AliasRecord>, StoreError> {
        self.tx(|tx| {
            Ok(tx
                .query(
                    "SELECT name, module_hash, ramp_hash, ramp_percent, updated_at_ms FROM aliases ORDER BY name",
                    &[],
                )?
                .iter()
                .map(alias_of)
                .collect())
        })
    }

    fn alias_history(&self, name: &str) -> Result<Vec<AliasChange>, StoreError> {
        let name = name.to_owned();
        self.tx(move |tx| {
            Ok(tx
                .query(
                    "SELECT action, module_hash, ramp_percent, at_ms FROM alias_history WHERE name = $1 ORDER BY id",
                    &[&name],
                )?
                .iter()
                .map(|r| AliasChange {
                    action: r.get(0),
                    module_hash: r.get::<_, Option<String>>(1).map(ModuleHash),
                    ramp_percent: r.get::<_, Option<i64>>(2).map(|p| p.clamp(0, 100) as u8),
                    at_ms: r.get::<_, i64>(3) as u64,
                })
                .collect())
        })
    }

    fn aliases_of_module(&self, hash: &ModuleHash) -> Result<Vec<String>, StoreError> {
        let hash = hash.0.clone();
        self.tx(move |tx| {
            Ok(tx
                .query(
                    "SELECT name FROM alias_history WHERE module_hash = $1
                     UNION SELECT name FROM aliases WHERE module_hash = $1 OR ramp_hash = $1
                     ORDER BY name",
                    &[&hash],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn module_usage(&self) -> Result<Vec<(ModuleHash, ModuleUsage)>, StoreError> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT module_hash, status, count(*) FROM instances WHERE NOT imported
                 GROUP BY module_hash, status ORDER BY module_hash, status",
                &[],
            )?;
            let mut out: Vec<(ModuleHash, ModuleUsage)> = Vec::new();
            for r in &rows {
                let (hash, status, n): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
                if out.last().map(|(h, _)| h.0 != hash).unwrap_or(true) {
                    out.push((ModuleHash(hash), ModuleUsage::default()));
                }
                let u = &mut out.last_mut().expect("pushed above").1;
                let n = n as u64;
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
        self.tx(move |tx| {
            // The module row locked first: an instance being pinned to it meanwhile holds
            // a share lock on it (see `lifecycle::insert_instance`), so one of the two waits.
            if tx
                .opt("SELECT 1 FROM modules WHERE hash = $1 FOR UPDATE", &[&hash])?
                .is_none()
            {
                return Ok(false);
            }
            let in_use: bool = tx
                .one(
                    "SELECT EXISTS(SELECT 1 FROM instances WHERE module_hash = $1 AND status IN ('running', 'blocked') AND NOT imported)
                         OR EXISTS(SELECT 1 FROM aliases WHERE module_hash = $1 OR ramp_hash = $1)",
                    &[&hash],
                )?
                .get(0);
            if in_use {
                return Ok(false);
            }
            tx.exec("DELETE FROM policies WHERE module_hash = $1", &[&hash])?;
            Ok(tx.exec("DELETE FROM modules WHERE hash = $1", &[&hash])? == 1)
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
        self.tx(move |tx| {
            let row = tx
                .opt(
                    "SELECT event_count, status, module_hash FROM instances WHERE id = $1 FOR UPDATE",
                    &[&id],
                )?
                .ok_or_else(|| StoreError::NotFound(format!("instance {id}")))?;
            let (count, status, from): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
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
            let event = to_json(&EventKind::ModuleUpgraded {
                from: ModuleHash(from.clone()),
                to: ModuleHash(to.clone()),
            })?;
            tx.exec(
                "INSERT INTO events(instance_id, id, time_ms, data) VALUES ($1, $2, $3, $4)",
                &[&id, &(count + 1), &(now_ms as i64), &event],
            )?;
            // A blocked instance runs again: its waiting inputs (or its undelivered start)
            // are delivered by the next activation, on the new module.
            tx.exec(
                "UPDATE instances SET module_hash = $2, event_count = $3, status = 'running', blocked_reason = NULL,
                   runnable = TRUE, updated_at_ms = $4 WHERE id = $1",
                &[&id, &to, &(count + 1), &(now_ms as i64)],
            )?;
            tx.exec(
                "UPDATE activity_tasks SET module_hash = $2 WHERE instance_id = $1",
                &[&id, &to],
            )?;
            publish(
                tx,
                &id,
                &Transition::Upgraded {
                    from: ModuleHash(from.clone()),
                },
                now_ms,
            )
        })
    }

    fn set_policy(
        &self,
        hash: &ModuleHash,
        workflow_type: &str,
        policy: NondeterminismPolicy,
    ) -> Result<(), StoreError> {
        let (hash, wt) = (hash.0.clone(), workflow_type.to_owned());
        self.tx(move |tx| {
            tx.exec(
                "INSERT INTO policies(module_hash, workflow_type, policy) VALUES ($1, $2, $3)
                 ON CONFLICT (module_hash, workflow_type) DO UPDATE SET policy = excluded.policy",
                &[&hash, &wt, &policy.as_str()],
            )?;
            Ok(())
        })
    }

    fn policy(
        &self,
        hash: &ModuleHash,
        workflow_type: &str,
    ) -> Result<NondeterminismPolicy, StoreError> {
        let (hash, wt) = (hash.0.clone(), workflow_type.to_owned());
        self.tx(move |tx| {
            let p: Option<String> = tx
                .opt(
                    "SELECT policy FROM policies WHERE module_hash = $1 AND workflow_type = $2",
                    &[&hash, &wt],
                )?
                .map(|r| r.get(0));
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
        self.tx(move |tx| {
            lifecycle::clear_work(tx, &id)?;
            let n = tx.exec(
                "UPDATE instances SET status = 'failed', failure = $2, runnable = FALSE, updated_at_ms = $3
                 WHERE id = $1 AND status IN ('running', 'blocked')",
                &[&id, &failure_json, &(now_ms as i64)],
            )?;
            if n == 1 {
                publish(
                    tx,
                    &id,
                    &Transition::Failed {
                        failure: failure.clone(),
                    },
                    now_ms,
                )?;
                lifecycle::ended(tx, &id, lifecycle::Ending::Failed(&failure), now_ms)?;
            }
            Ok(())
        })
    }
}
