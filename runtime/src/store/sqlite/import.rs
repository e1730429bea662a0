//! Importing an exported history (`pinion history import`): the instance row, marked
//! `imported` so it never runs, and its events, in one transaction.

use rusqlite::params;

use super::{exec, map_err, to_json, SqliteStore};
use crate::history::{EventKind, HistoryExport, InstanceStatus};
use crate::store::StoreError;

pub(super) fn import_history(
    store: &SqliteStore,
    export: &HistoryExport,
    now_ms: u64,
) -> Result<(), StoreError> {
    let mut events = Vec::with_capacity(export.events.len());
    for e in &export.events {
        events.push((e.id as i64, e.time_ms as i64, to_json(&e.kind)?));
    }
    let (id, wt, mh, status) = (
        export.instance_id.0.clone(),
        export.workflow_type.clone(),
        export.module_hash.0.clone(),
        export.status,
    );
    let run = export.run;
    let created = export.events.first().map(|e| e.time_ms).unwrap_or(now_ms) as i64;
    let (result, failure) = match export.events.last().map(|e| &e.kind) {
        Some(EventKind::WorkflowCompleted { result }) => (Some(result.json().to_owned()), None),
        Some(EventKind::WorkflowFailed { failure }) => (None, Some(to_json(failure)?)),
        Some(EventKind::WorkflowCancelled { reason }) => (
            None,
            Some(to_json(&super::reason_failure("Cancelled", reason))?),
        ),
        Some(EventKind::WorkflowTerminated { reason }) => (
            None,
            Some(to_json(&super::reason_failure("Terminated", reason))?),
        ),
        _ => (None, None),
    };
    store.write(move |c| {
        exec(c,
            "INSERT INTO instances(id, workflow_type, module_hash, status, created_at_ms, updated_at_ms, event_count,
                                   runnable, result, failure, blocked_reason, imported, run)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?10, 1, ?11)",
            params![
                id,
                wt,
                mh,
                status.as_str(),
                created,
                now_ms as i64,
                events.len() as i64,
                result,
                failure,
                (status == InstanceStatus::Blocked).then_some("imported while blocked"),
                run
            ],
        )
        .map_err(|e| match map_err(e) {
            StoreError::AlreadyExists(_) => StoreError::AlreadyExists(format!("instance {id}")),
            other => other,
        })?;
        let mut ins = c
            .prepare_cached("INSERT INTO events(instance_id, id, time_ms, data) VALUES (?1, ?2, ?3, ?4)")
            .map_err(map_err)?;
        for (eid, t, data) in &events {
            ins.execute(params![id, eid, t, data]).map_err(map_err)?;
        }
        Ok(())
    })
}
