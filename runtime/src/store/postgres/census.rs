//! [`CensusStore`] on PostgreSQL: instance rows joined with their `MarkerRecorded` events,
//! the same query as SQLite's (`store/sqlite/census.rs`).

use super::PgStore;
use crate::store::census::{fold_rows, MARKER_EVENT_PATTERN};
use crate::store::{CensusStore, InstanceMarkers, MarkerFilter, StoreError};

impl CensusStore for PgStore {
    fn instance_markers(&self, filter: &MarkerFilter) -> Result<Vec<InstanceMarkers>, StoreError> {
        let workflow_type = filter.workflow_type.clone();
        let module = filter.module_hash.as_ref().map(|h| h.0.clone());
        let rows = self.tx(move |tx| {
            let rows = tx.query(
                "SELECT i.id, i.workflow_type, i.module_hash, i.status, e.data
                 FROM instances i
                 LEFT JOIN events e ON e.instance_id = i.id AND e.data LIKE $3
                 WHERE NOT i.imported
                   AND ($1::TEXT IS NULL OR i.workflow_type = $1)
                   AND ($2::TEXT IS NULL OR i.module_hash = $2)
                 ORDER BY i.id, e.id",
                &[&workflow_type, &module, &MARKER_EVENT_PATTERN],
            )?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect::<Vec<(String, String, String, String, Option<String>)>>())
        })?;
        fold_rows(rows)
    }
}
