//! The outbox of lifecycle events: [`publish`] inside each transition's transaction, and
//! the [`EventStore`] read side.

use rusqlite::{params, Connection, OptionalExtension};

use super::{exec, map_err, query_one, to_json, SqliteStore};
use crate::history::{InstanceId, ModuleHash};
use crate::store::{EventFilter, EventStore, LifecycleEvent, StoreError, Transition};

/// Appends `transition` of instance `id` to the outbox, with the instance's workflow type,
/// module and run as its row says now (call after the row changed). Runs inside the
/// caller's savepoint, so the event commits exactly when the transition does.
pub(super) fn publish(
    c: &Connection,
    id: &str,
    transition: &Transition,
    now_ms: u64,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO lifecycle_events(instance_id, kind, workflow_type, module_hash, run, at_ms, detail)
         SELECT id, ?2, workflow_type, module_hash, run, ?3, ?4 FROM instances WHERE id = ?1",
        params![id, transition.name(), now_ms as i64, to_json(transition)?],
    )
    .map_err(map_err)?;
    Ok(())
}

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(LifecycleEvent, String)> {
    let detail: String = r.get(6)?;
    Ok((
        LifecycleEvent {
            id: r.get::<_, i64>(0)? as u64,
            instance_id: InstanceId(r.get(1)?),
            workflow_type: r.get(2)?,
            module_hash: ModuleHash(r.get(3)?),
            run: r.get(4)?,
            at_ms: r.get::<_, i64>(5)? as u64,
            transition: Transition::Completed,
        },
        detail,
    ))
}

impl EventStore for SqliteStore {
    fn lifecycle_events(&self, filter: &EventFilter) -> Result<Vec<LifecycleEvent>, StoreError> {
        let mut sql = String::from(
            "SELECT seq, instance_id, workflow_type, module_hash, run, at_ms, detail
             FROM lifecycle_events WHERE seq > ?",
        );
        let mut args: Vec<rusqlite::types::Value> =
            vec![(filter.after.min(i64::MAX as u64) as i64).into()];
        if let Some(until) = filter.until {
            sql.push_str(" AND seq <= ?");
            args.push((until.min(i64::MAX as u64) as i64).into());
        }
        if let Some(id) = &filter.instance_id {
            sql.push_str(" AND instance_id = ?");
            args.push(id.0.clone().into());
        }
        if let Some(t) = &filter.workflow_type {
            sql.push_str(" AND workflow_type = ?");
            args.push(t.clone().into());
        }
        if let Some(m) = &filter.module_hash {
            sql.push_str(" AND module_hash = ?");
            args.push(m.0.clone().into());
        }
        if !filter.kinds.is_empty() {
            sql.push_str(" AND kind IN (");
            for (i, k) in filter.kinds.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                args.push(k.clone().into());
            }
            sql.push(')');
        }
        sql.push_str(" ORDER BY seq LIMIT ?");
        args.push(i64::from(filter.limit).into());
        self.read(|c| {
            let mut st = c.prepare_cached(&sql).map_err(map_err)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args), event_from_row)
                .map_err(map_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (mut event, detail) = row.map_err(map_err)?;
                event.transition = serde_json::from_str(&detail).map_err(|e| {
                    StoreError::Corrupt(format!("lifecycle event {}: {e}", event.id))
                })?;
                out.push(event);
            }
            Ok(out)
        })
    }

    fn last_event_id(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            query_one(
                c,
                "SELECT COALESCE(MAX(seq), 0) FROM lifecycle_events",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(map_err)
        })
    }

    fn webhook_cursor(&self, url: &str) -> Result<Option<u64>, StoreError> {
        self.read(|c| {
            query_one(
                c,
                "SELECT delivered_seq FROM webhook_cursors WHERE url = ?1",
                [url],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|n| n.map(|n| n as u64))
            .map_err(map_err)
        })
    }

    fn set_webhook_cursor(&self, url: &str, id: u64, now_ms: u64) -> Result<(), StoreError> {
        let url = url.to_owned();
        self.write(move |c| {
            exec(
                c,
                "INSERT INTO webhook_cursors(url, delivered_seq, updated_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(url) DO UPDATE SET delivered_seq = MAX(delivered_seq, excluded.delivered_seq),
                 updated_at_ms = excluded.updated_at_ms",
                params![url, id as i64, now_ms as i64],
            )
            .map_err(map_err)?;
            Ok(())
        })
    }
}
