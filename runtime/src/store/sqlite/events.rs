//! The outbox of lifecycle events: [`publish`] inside each transition's transaction, and
//! the [`EventStore`] read side.

use rusqlite::{params, Connection, OptionalExtension};

use super::{exec, map_err, query_one, to_json, SqliteStore};
use crate::history::{InstanceId, ModuleHash};
use crate::store::events::display_url;
use crate::store::{
    DeadLetter, EventFilter, EventStore, LifecycleEvent, NewDeadLetter, StoreError, Transition,
};

const DEAD_LETTER_COLUMNS: &str =
    "id, url, event, attempts, last_error, first_failed_at_ms, updated_at_ms";

fn dead_letter_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(DeadLetter, String)> {
    let url: String = r.get(1)?;
    Ok((
        DeadLetter {
            id: r.get::<_, i64>(0)? as u64,
            webhook: display_url(&url),
            event: LifecycleEvent {
                id: 0,
                instance_id: InstanceId(String::new()),
                workflow_type: String::new(),
                module_hash: ModuleHash(String::new()),
                run: 1,
                at_ms: 0,
                transition: Transition::Completed,
            },
            attempts: r.get(3)?,
            last_error: r.get(4)?,
            first_failed_at_ms: r.get::<_, i64>(5)? as u64,
            updated_at_ms: r.get::<_, i64>(6)? as u64,
            url,
        },
        r.get(2)?,
    ))
}

fn finish_dead_letter((mut d, event): (DeadLetter, String)) -> Result<DeadLetter, StoreError> {
    d.event = serde_json::from_str(&event)
        .map_err(|e| StoreError::Corrupt(format!("webhook dead letter {}: {e}", d.id)))?;
    Ok(d)
}

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

    fn add_dead_letter(&self, letter: &NewDeadLetter) -> Result<(), StoreError> {
        let l = letter.clone();
        let event = to_json(&l.event)?;
        self.write(move |c| {
            exec(
                c,
                "INSERT INTO webhook_dead_letters(url, event_seq, event, attempts, last_error, first_failed_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(url, event_seq) DO UPDATE SET attempts = attempts + excluded.attempts,
                 last_error = excluded.last_error, updated_at_ms = excluded.updated_at_ms",
                params![
                    l.url,
                    l.event.id as i64,
                    event,
                    l.attempts,
                    l.last_error,
                    l.first_failed_at_ms as i64,
                    l.now_ms as i64
                ],
            )
            .map_err(map_err)?;
            Ok(())
        })
    }

    fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM webhook_dead_letters ORDER BY id");
        self.read(|c| {
            let mut st = c.prepare_cached(&sql).map_err(map_err)?;
            let rows = st.query_map([], dead_letter_from_row).map_err(map_err)?;
            rows.map(|r| r.map_err(map_err).and_then(finish_dead_letter))
                .collect()
        })
    }

    fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM webhook_dead_letters WHERE id = ?1");
        self.read(|c| {
            query_one(c, &sql, [id as i64], dead_letter_from_row)
                .optional()
                .map_err(map_err)
        })?
        .map(finish_dead_letter)
        .transpose()
    }

    fn remove_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        self.write(move |c| {
            exec(
                c,
                "DELETE FROM webhook_dead_letters WHERE id = ?1",
                [id as i64],
            )
            .map(|n| n > 0)
            .map_err(map_err)
        })
    }

    fn dead_letter_failed(&self, id: u64, error: &str, now_ms: u64) -> Result<(), StoreError> {
        let error = error.to_owned();
        self.write(move |c| {
            exec(
                c,
                "UPDATE webhook_dead_letters SET attempts = attempts + 1, last_error = ?2, updated_at_ms = ?3
                 WHERE id = ?1",
                params![id as i64, error, now_ms as i64],
            )
            .map_err(map_err)?;
            Ok(())
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
