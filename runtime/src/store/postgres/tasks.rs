//! Work that waits: the inbox, activity tasks (claims, leases, heartbeats, lost attempts),
//! timers, and the input operators send (signals, cancellation). Each function runs inside
//! the caller's transaction.
//!
//! Claims lock the rows they lease with `FOR UPDATE SKIP LOCKED`, and due timers are
//! deleted with `RETURNING`, so when several processes share the database (a later step)
//! an attempt is leased by one of them and a timer fires once.

use super::{corrupt, to_json, Tx};
use crate::history::{EventKind, InstanceId, ModuleHash, Payload};
use crate::store::{ActivityTask, StoreError};

/// Appends to an instance's inbox and marks it runnable (if it runs).
///
/// The instance row is locked first: a commit of that instance holds the same lock from
/// its history-length check to COMMIT, so input either lands before the commit looks at
/// the inbox (and the commit sees it: a closing activation is refused, `runnable` stays
/// set) or after the commit (and marks the instance runnable). Inserting first would let
/// a commit in between miss the row.
pub(super) fn push_inbox(
    tx: &mut Tx<'_>,
    instance: &str,
    now_ms: u64,
    kind: &EventKind,
) -> Result<(), StoreError> {
    let owner: Option<String> = tx
        .opt(
            "SELECT owner FROM instances WHERE id = $1 FOR UPDATE",
            &[&instance],
        )?
        .and_then(|r| r.get(0));
    tx.exec(
        "INSERT INTO inbox(instance_id, time_ms, data) VALUES ($1, $2, $3)",
        &[&instance, &(now_ms as i64), &to_json(kind)?],
    )?;
    // Another server's instance (or a free one): wake its owner (or every server) now
    // rather than at its next poll. This server wakes its own workers in memory.
    if owner.is_none() || owner.as_deref() != tx.me.as_deref() {
        super::members::notify(tx, owner.as_deref())?;
    }
    tx.exec(
        "UPDATE instances SET runnable = TRUE, updated_at_ms = $2 WHERE id = $1 AND status = 'running'",
        &[&instance, &(now_ms as i64)],
    )?;
    Ok(())
}

/// The state of an instance that may take input (running or blocked, not imported):
/// `(event_count, cancel_requested)`. Locks the row until the transaction ends.
pub(super) fn accepting(tx: &mut Tx<'_>, id: &str) -> Result<(i64, bool), StoreError> {
    let row = tx.opt(
        "SELECT status, event_count, imported, cancel_requested FROM instances WHERE id = $1 FOR UPDATE",
        &[&id],
    )?;
    let Some(row) = row else {
        return Err(StoreError::NotFound(format!("instance {id}")));
    };
    let (status, count, imported, cancel_requested): (String, i64, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if imported {
        return Err(StoreError::NotAccepting {
            id: id.to_owned(),
            state: "an imported history".into(),
            hint: "it is kept for replay and never runs".into(),
        });
    }
    if status != "running" && status != "blocked" {
        return Err(StoreError::NotAccepting {
            id: id.to_owned(),
            state: status,
            hint: "it has ended and takes no more input".into(),
        });
    }
    Ok((count, cancel_requested))
}

/// The columns an [`ActivityTask`] is read from, in the order [`task_of`] reads them.
pub(super) const TASK_COLUMNS: &str =
    "instance_id, module_hash, seq, activity_type, input, options, attempt, heartbeat_details";

/// Decodes a task row (a claim's, or a lost attempt's).
pub(super) fn task_of(r: &postgres::Row) -> Result<ActivityTask, StoreError> {
    let input: String = r.get(4);
    let options: String = r.get(5);
    let details: Option<String> = r.get(7);
    Ok(ActivityTask {
        instance_id: InstanceId(r.get(0)),
        module_hash: ModuleHash(r.get(1)),
        seq: r.get::<_, i64>(2) as u32,
        activity_type: r.get(3),
        input: Payload::from_json_bytes(input.as_bytes())
            .map_err(|e| corrupt("activity input", e))?,
        options: serde_json::from_str(&options).map_err(|e| corrupt("activity options", e))?,
        attempt: r.get::<_, i64>(6) as u32,
        heartbeat_details: details.map(|d| heartbeat_payload(&d)).transpose()?,
    })
}

pub(super) fn heartbeat_payload(json: &str) -> Result<Payload, StoreError> {
    Payload::from_json_bytes(json.as_bytes()).map_err(|e| corrupt("heartbeat details", e))
}

/// Leases up to `limit` due attempts (see `Store::claim_activities`): ready tasks first,
/// then expired leases, skipping rows another transaction holds.
pub(super) fn claim(
    tx: &mut Tx<'_>,
    me: Option<&str>,
    now_ms: u64,
    limit: u32,
    lease_slack_ms: u64,
    default_timeout_ms: u64,
) -> Result<Vec<ActivityTask>, StoreError> {
    let now = now_ms as i64;
    let mut rows = tx.query(
        &format!(
            "SELECT {TASK_COLUMNS} FROM activity_tasks
             WHERE lease_until_ms IS NULL AND visible_at_ms <= $1
             ORDER BY visible_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED"
        ),
        &[&now, &i64::from(limit)],
    )?;
    if rows.len() < limit as usize {
        let more = tx.query(
            &format!(
                "SELECT {TASK_COLUMNS} FROM activity_tasks
                 WHERE lease_until_ms IS NOT NULL AND lease_until_ms <= $1
                 ORDER BY lease_until_ms LIMIT $2 FOR UPDATE SKIP LOCKED"
            ),
            &[&now, &((limit as usize - rows.len()) as i64)],
        )?;
        rows.extend(more);
    }
    let mut tasks = Vec::with_capacity(rows.len());
    for row in &rows {
        let task = task_of(row)?;
        // The lease outlives the attempt's own timeout, so a healthy long attempt is never
        // claimed twice; a crashed process's attempts are counted lost by a live one
        // (`members.rs`).
        let until = now_ms
            + lease_slack_ms
            + task
                .options
                .start_to_close_timeout_ms
                .unwrap_or(default_timeout_ms);
        tx.exec(
            "UPDATE activity_tasks SET lease_until_ms = $3, started_at_ms = $4, leased_by = $5 WHERE instance_id = $1 AND seq = $2",
            &[&task.instance_id.0, &i64::from(task.seq), &(until as i64), &now, &me],
        )?;
        tasks.push(task);
    }
    Ok(tasks)
}

/// Moves every timer due at `now_ms` into its instance's inbox; returns how many fired.
pub(super) fn fire_due(tx: &mut Tx<'_>, now_ms: u64) -> Result<u64, StoreError> {
    let mut due: Vec<(String, i64, i64)> = tx
        .query(
            "DELETE FROM timers WHERE fire_at_ms <= $1 RETURNING instance_id, seq, fire_at_ms",
            &[&(now_ms as i64)],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    due.sort_by(|a, b| (a.2, &a.0, a.1).cmp(&(b.2, &b.0, b.1)));
    for (instance, seq, _) in &due {
        push_inbox(
            tx,
            instance,
            now_ms,
            &EventKind::TimerFired { seq: *seq as u32 },
        )?;
    }
    Ok(due.len() as u64)
}

/// Earliest time something is due (a timer, or an activity attempt), if any.
pub(super) fn next_due(tx: &mut Tx<'_>) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> = tx
        .one(
            "SELECT LEAST(
                (SELECT min(fire_at_ms) FROM timers),
                (SELECT min(visible_at_ms) FROM activity_tasks WHERE lease_until_ms IS NULL),
                (SELECT min(lease_until_ms) FROM activity_tasks WHERE lease_until_ms IS NOT NULL))",
            &[],
        )?
        .get(0);
    Ok(v.map(|t| t.max(0) as u64))
}

/// Queues a signal (see `Store::signal`).
pub(super) fn signal(
    tx: &mut Tx<'_>,
    id: &str,
    kind: &EventKind,
    now_ms: u64,
) -> Result<(), StoreError> {
    accepting(tx, id)?;
    let closing: bool = tx
        .one("SELECT closing FROM instances WHERE id = $1", &[&id])?
        .get(0);
    if closing {
        return Err(StoreError::NotAccepting {
            id: id.to_owned(),
            state: "completing".into(),
            hint: "its final activation is being committed and takes no more signals".into(),
        });
    }
    push_inbox(tx, id, now_ms, kind)
}

/// Queues a cancellation request once (see `Store::request_cancel`).
pub(super) fn request_cancel(
    tx: &mut Tx<'_>,
    id: &str,
    kind: &EventKind,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let (_, already) = accepting(tx, id)?;
    if already {
        return Ok(false);
    }
    tx.exec(
        "UPDATE instances SET cancel_requested = TRUE WHERE id = $1",
        &[&id],
    )?;
    push_inbox(tx, id, now_ms, kind)?;
    Ok(true)
}
