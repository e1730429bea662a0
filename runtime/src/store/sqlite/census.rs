//! [`CensusStore`] on SQLite: instance rows joined with their `MarkerRecorded` events.
//!
//! The join walks each selected instance's events by the primary key `(instance_id, id)` and
//! keeps the rows whose JSON starts with the marker tag; nothing is decoded but markers.

use rusqlite::params;

use super::{map_err, SqliteStore};
use crate::store::census::{fold_rows, MARKER_EVENT_PATTERN};
use crate::store::{CensusStore, InstanceMarkers, MarkerFilter, StoreError};

impl CensusStore for SqliteStore {
    fn instance_markers(&self, filter: &MarkerFilter) -> Result<Vec<InstanceMarkers>, StoreError> {
        let workflow_type = filter.workflow_type.clone();
        let module = filter.module_hash.as_ref().map(|h| h.0.clone());
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT i.id, i.workflow_type, i.module_hash, i.status, e.data
                     FROM instances i
                     LEFT JOIN events e ON e.instance_id = i.id AND e.data LIKE ?3
                     WHERE i.imported = 0
                       AND (?1 IS NULL OR i.workflow_type = ?1)
                       AND (?2 IS NULL OR i.module_hash = ?2)
                     ORDER BY i.id, e.id",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map(params![workflow_type, module, MARKER_EVENT_PATTERN], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(map_err)?;
            let rows: Vec<_> = rows.collect::<Result<_, _>>().map_err(map_err)?;
            fold_rows(rows)
        })
    }
}
