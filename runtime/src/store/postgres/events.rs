//! The outbox of lifecycle events: [`publish`] inside each transition's transaction,
//! [`flush`] just before its COMMIT, and the [`EventStore`] read side.
//!
//! # Why ids are assigned last, under a lock
//!
//! Readers resume after the last id they saw, so an id must never become visible after a
//! higher one (a reader would skip it) and ids must stay dense. A sequence gives neither:
//! concurrent transactions commit in any order, and a rollback burns its value. So
//! [`publish`] only buffers the row, and [`flush`] takes a transaction-scoped advisory lock,
//! reads `max(seq)`, inserts the buffered rows after it and returns; the transaction
//! commits right after, still holding the lock. Taking the lock last, after every row lock
//! of the transaction, means a holder never waits for anything but its own COMMIT, so the
//! lock cannot be part of a deadlock. The cost: transactions that publish commit one at a
//! time, which PostgreSQL's group commit absorbs.

use super::{iid, to_json, Outgoing, PgStore, Tx};
use crate::history::{InstanceId, ModuleHash};
use crate::store::events::display_url;
use crate::store::{
    DeadLetter, EventFilter, EventStore, LifecycleEvent, NewDeadLetter, StoreError, Transition,
};

const DEAD_LETTER_COLUMNS: &str =
    "id, url, event, attempts, last_error, first_failed_at_ms, updated_at_ms";

fn dead_letter(r: &postgres::Row) -> Result<DeadLetter, StoreError> {
    let id = r.get::<_, i64>(0) as u64;
    let url: String = r.get(1);
    let event: String = r.get(2);
    Ok(DeadLetter {
        id,
        webhook: display_url(&url),
        event: serde_json::from_str(&event)
            .map_err(|e| StoreError::Corrupt(format!("webhook dead letter {id}: {e}")))?,
        attempts: r.get::<_, i64>(3) as u32,
        last_error: r.get(4),
        first_failed_at_ms: r.get::<_, i64>(5) as u64,
        updated_at_ms: r.get::<_, i64>(6) as u64,
        url,
    })
}

/// The advisory lock key of the outbox ("pinevt" in ASCII).
const OUTBOX_LOCK_KEY: i64 = 0x7069_6e65_7674;

/// Records `transition` of instance `id`, with the instance's workflow type, module and
/// run as its row says now (call after the row changed); written by [`flush`].
pub(super) fn publish(
    tx: &mut Tx<'_>,
    id: &str,
    transition: &Transition,
    now_ms: u64,
) -> Result<(), StoreError> {
    let Some(row) = tx.opt(
        "SELECT workflow_type, module_hash, run FROM instances WHERE id = $1",
        &[&id],
    )?
    else {
        return Ok(());
    };
    tx.outbox.push(Outgoing {
        instance_id: id.to_owned(),
        kind: transition.name(),
        workflow_type: row.get(0),
        module_hash: row.get(1),
        run: row.get(2),
        at_ms: now_ms as i64,
        detail: to_json(transition)?,
    });
    Ok(())
}

/// Writes the transaction's buffered events with the next ids (see the module docs).
pub(super) fn flush(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    if tx.outbox.is_empty() {
        return Ok(());
    }
    tx.exec("SELECT pg_advisory_xact_lock($1)", &[&OUTBOX_LOCK_KEY])?;
    let last: i64 = tx
        .one("SELECT COALESCE(MAX(seq), 0) FROM lifecycle_events", &[])?
        .get(0);
    let rows = std::mem::take(&mut tx.outbox);
    for (n, e) in rows.iter().enumerate() {
        tx.exec(
            "INSERT INTO lifecycle_events(seq, instance_id, kind, workflow_type, module_hash, run, at_ms, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &(last + 1 + n as i64),
                &e.instance_id,
                &e.kind,
                &e.workflow_type,
                &e.module_hash,
                &e.run,
                &e.at_ms,
                &e.detail,
            ],
        )?;
    }
    Ok(())
}

impl EventStore for PgStore {
    fn lead(&self, what: &str) -> Result<Option<Box<dyn crate::store::events::Lead>>, StoreError> {
        self.try_lead(what)
    }

    fn lifecycle_events(&self, filter: &EventFilter) -> Result<Vec<LifecycleEvent>, StoreError> {
        let filter = filter.clone();
        self.tx(move |tx| {
            let rows = tx.query(
                "SELECT seq, instance_id, workflow_type, module_hash, run, at_ms, detail
                 FROM lifecycle_events
                 WHERE seq > $1 AND ($2::BIGINT IS NULL OR seq <= $2)
                   AND ($3::TEXT IS NULL OR instance_id = $3)
                   AND ($4::TEXT IS NULL OR workflow_type = $4)
                   AND ($5::TEXT IS NULL OR module_hash = $5)
                   AND (cardinality($6::TEXT[]) = 0 OR kind = ANY($6))
                 ORDER BY seq LIMIT $7",
                &[
                    &(filter.after.min(i64::MAX as u64) as i64),
                    &filter.until.map(|u| u.min(i64::MAX as u64) as i64),
                    &filter.instance_id.as_ref().map(iid),
                    &filter.workflow_type,
                    &filter.module_hash.as_ref().map(|m| m.0.as_str()),
                    &filter.kinds,
                    &i64::from(filter.limit),
                ],
            )?;
            rows.iter()
                .map(|r| {
                    let id = r.get::<_, i64>(0) as u64;
                    let detail: String = r.get(6);
                    Ok(LifecycleEvent {
                        id,
                        instance_id: InstanceId(r.get(1)),
                        workflow_type: r.get(2),
                        module_hash: ModuleHash(r.get(3)),
                        run: r.get::<_, i64>(4) as u32,
                        at_ms: r.get::<_, i64>(5) as u64,
                        transition: serde_json::from_str(&detail).map_err(|e| {
                            StoreError::Corrupt(format!("lifecycle event {id}: {e}"))
                        })?,
                    })
                })
                .collect()
        })
    }

    fn last_event_id(&self) -> Result<u64, StoreError> {
        self.tx(|tx| {
            Ok(tx
                .one("SELECT COALESCE(MAX(seq), 0) FROM lifecycle_events", &[])?
                .get::<_, i64>(0) as u64)
        })
    }

    fn webhook_cursor(&self, url: &str) -> Result<Option<u64>, StoreError> {
        let url = url.to_owned();
        self.tx(move |tx| {
            Ok(tx
                .opt(
                    "SELECT delivered_seq FROM webhook_cursors WHERE url = $1",
                    &[&url],
                )?
                .map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    fn add_dead_letter(&self, letter: &NewDeadLetter) -> Result<(), StoreError> {
        let l = letter.clone();
        let event = to_json(&l.event)?;
        self.tx(move |tx| {
            tx.exec(
                "INSERT INTO webhook_dead_letters(url, event_seq, event, attempts, last_error, first_failed_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (url, event_seq) DO UPDATE SET
                   attempts = webhook_dead_letters.attempts + excluded.attempts,
                   last_error = excluded.last_error, updated_at_ms = excluded.updated_at_ms",
                &[
                    &l.url,
                    &(l.event.id as i64),
                    &event,
                    &i64::from(l.attempts),
                    &l.last_error,
                    &(l.first_failed_at_ms as i64),
                    &(l.now_ms as i64),
                ],
            )?;
            Ok(())
        })
    }

    fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.tx(|tx| {
            let sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM webhook_dead_letters ORDER BY id");
            tx.query(&sql, &[])?.iter().map(dead_letter).collect()
        })
    }

    fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        self.tx(move |tx| {
            let sql =
                format!("SELECT {DEAD_LETTER_COLUMNS} FROM webhook_dead_letters WHERE id = $1");
            tx.opt(&sql, &[&(id.min(i64::MAX as u64) as i64)])?
                .as_ref()
                .map(dead_letter)
                .transpose()
        })
    }

    fn remove_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        self.tx(move |tx| {
            Ok(tx.exec(
                "DELETE FROM webhook_dead_letters WHERE id = $1",
                &[&(id.min(i64::MAX as u64) as i64)],
            )? > 0)
        })
    }

    fn dead_letter_failed(&self, id: u64, error: &str, now_ms: u64) -> Result<(), StoreError> {
        let error = error.to_owned();
        self.tx(move |tx| {
            tx.exec(
                "UPDATE webhook_dead_letters SET attempts = attempts + 1, last_error = $2, updated_at_ms = $3
                 WHERE id = $1",
                &[&(id.min(i64::MAX as u64) as i64), &error, &(now_ms as i64)],
            )?;
            Ok(())
        })
    }

    fn set_webhook_cursor(&self, url: &str, id: u64, now_ms: u64) -> Result<(), StoreError> {
        let url = url.to_owned();
        self.tx(move |tx| {
            tx.exec(
                "INSERT INTO webhook_cursors(url, delivered_seq, updated_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (url) DO UPDATE SET
                   delivered_seq = GREATEST(webhook_cursors.delivered_seq, excluded.delivered_seq),
                   updated_at_ms = excluded.updated_at_ms",
                &[&url, &(id as i64), &(now_ms as i64)],
            )?;
            Ok(())
        })
    }
}
