//! Decoding rows into records (instances, modules): one place for the column lists and
//! the checks that stored JSON still decodes.

use rusqlite::Row;

use super::corrupt;
use crate::history::{InstanceId, InstanceStatus, ModuleHash, Payload};
use crate::store::{InstanceRecord, ModuleRecord, StoreError};

pub(super) fn instance_from_row(
    row: &Row<'_>,
) -> rusqlite::Result<(InstanceRecord, Option<String>, Option<String>)> {
    let status: String = row.get(3)?;
    Ok((
        InstanceRecord {
            id: InstanceId(row.get(0)?),
            workflow_type: row.get(1)?,
            module_hash: ModuleHash(row.get(2)?),
            status: InstanceStatus::parse(&status).unwrap_or(InstanceStatus::Blocked),
            created_at_ms: row.get::<_, i64>(4)? as u64,
            updated_at_ms: row.get::<_, i64>(5)? as u64,
            event_count: row.get::<_, i64>(6)? as u64,
            result: None,
            failure: None,
            blocked_reason: row.get(9)?,
            imported: row.get::<_, i64>(10)? != 0,
            cancel_requested: row.get::<_, i64>(11)? != 0,
            run: row.get(12)?,
            pending_activities: Vec::new(),
        },
        row.get(7)?,
        row.get(8)?,
    ))
}

pub(super) fn finish_instance(
    (mut rec, result, failure): (InstanceRecord, Option<String>, Option<String>),
) -> Result<InstanceRecord, StoreError> {
    if let Some(r) = result {
        rec.result = Some(
            Payload::from_json_bytes(r.as_bytes()).map_err(|e| corrupt("instance result", e))?,
        );
    }
    if let Some(f) = failure {
        rec.failure = Some(serde_json::from_str(&f).map_err(|e| corrupt("instance failure", e))?);
    }
    Ok(rec)
}

pub(super) const INSTANCE_COLUMNS: &str = "id, workflow_type, module_hash, status, created_at_ms, updated_at_ms, event_count, result, failure, blocked_reason, imported, cancel_requested, run";

pub(super) fn module_from_row(row: &Row<'_>) -> rusqlite::Result<(String, i64, String, i64)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

pub(super) fn finish_module(
    (hash, size, manifest, at): (String, i64, String, i64),
) -> Result<ModuleRecord, StoreError> {
    Ok(ModuleRecord {
        hash: ModuleHash(hash),
        size: size as u64,
        manifest: serde_json::from_str(&manifest).map_err(|e| corrupt("module manifest", e))?,
        deployed_at_ms: at as u64,
    })
}
