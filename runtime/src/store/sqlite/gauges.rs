//! The database's side of `/metrics`: counts read at each scrape ([`Store::gauges`]).
//!
//! Each count reads an index, never the rows: instances by status from `instances_status`,
//! runnable ones from the partial index `instances_runnable`, blocked ones by reason from
//! `instances_status` and their rows (few, in a healthy system), activity tasks and due
//! timers from their own small tables. At a million instances the status count walks a
//! million index entries (tens of milliseconds), which is why the README asks for a scrape
//! interval of 15 s or more.
//!
//! [`Store::gauges`]: crate::store::Store::gauges

use rusqlite::Connection;

use super::map_err;
use crate::store::StoreError;
use crate::telemetry::metrics::DatabaseGauges;

fn pairs(c: &Connection, sql: &str) -> Result<Vec<(String, u64)>, StoreError> {
    let mut st = c.prepare_cached(sql).map_err(map_err)?;
    let rows = st
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .map_err(map_err)?;
    rows.map(|r| r.map_err(map_err)).collect()
}

fn count(c: &Connection, sql: &str, now_ms: u64) -> Result<u64, StoreError> {
    let mut st = c.prepare_cached(sql).map_err(map_err)?;
    let n: i64 = if sql.contains("?1") {
        st.query_row([now_ms as i64], |r| r.get(0))
    } else {
        st.query_row([], |r| r.get(0))
    }
    .map_err(map_err)?;
    Ok(n as u64)
}

/// Reads the gauges at `now_ms`.
pub(super) fn read(c: &Connection, now_ms: u64) -> Result<DatabaseGauges, StoreError> {
    Ok(DatabaseGauges {
        instances: pairs(
            c,
            "SELECT status, count(*) FROM instances WHERE imported = 0 GROUP BY status",
        )?,
        blocked_reasons: pairs(
            c,
            "SELECT coalesce(blocked_reason, ''), count(*) FROM instances
             WHERE status = 'blocked' AND imported = 0 GROUP BY blocked_reason",
        )?,
        runnable: count(c, "SELECT count(*) FROM instances WHERE runnable = 1", now_ms)?,
        tasks_ready: count(
            c,
            "SELECT count(*) FROM activity_tasks WHERE lease_until_ms IS NULL AND visible_at_ms <= ?1",
            now_ms,
        )?,
        tasks_leased: count(
            c,
            "SELECT count(*) FROM activity_tasks WHERE lease_until_ms IS NOT NULL",
            now_ms,
        )?,
        tasks_backoff: count(
            c,
            "SELECT count(*) FROM activity_tasks WHERE lease_until_ms IS NULL AND visible_at_ms > ?1",
            now_ms,
        )?,
        timers_due: count(
            c,
            "SELECT count(*) FROM timers WHERE fire_at_ms <= ?1",
            now_ms,
        )?,
    })
}
