//! What the marker census reads from a store: every instance of a workflow type (or pinned
//! to a module) with the markers its current run recorded.
//!
//! The backends answer with one query that reads each instance row and only the
//! `MarkerRecorded` rows of its history (matched by the event's JSON tag, which both backends
//! write first), so the census never decodes whole histories; what the markers mean is
//! decided above the store, in [`crate::census`].

use crate::history::{EventKind, InstanceId, InstanceStatus, ModuleHash, Payload};

use super::StoreError;

/// The SQL `LIKE` pattern of a `MarkerRecorded` event's JSON: the internally tagged
/// [`EventKind`] is written with its `"type"` first.
pub(crate) const MARKER_EVENT_PATTERN: &str = r#"{"type":"MarkerRecorded"%"#;

/// Which instances [`CensusStore::instance_markers`] reads. Imported histories are never
/// included: they do not run.
#[derive(Debug, Clone, Default)]
pub struct MarkerFilter {
    /// Only this workflow type.
    pub workflow_type: Option<String>,
    /// Only instances pinned to this module.
    pub module_hash: Option<ModuleHash>,
}

/// One instance with the markers its current run recorded, in history order.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceMarkers {
    /// The instance.
    pub id: InstanceId,
    /// Its workflow type.
    pub workflow_type: String,
    /// The module it is pinned to.
    pub module_hash: ModuleHash,
    /// Its status.
    pub status: InstanceStatus,
    /// `(marker id, data)` of each `MarkerRecorded` event.
    pub markers: Vec<(String, Payload)>,
}

/// The census query. Implemented by every store backend.
pub trait CensusStore {
    /// Every instance `filter` selects (any status, not imported), by id, each with its
    /// recorded markers.
    fn instance_markers(&self, filter: &MarkerFilter) -> Result<Vec<InstanceMarkers>, StoreError>;
}

/// Folds `(instance columns, marker event JSON)` rows, ordered by instance id then event
/// id (a `LEFT JOIN`: an instance without markers comes once, with `None`), into one
/// [`InstanceMarkers`] per instance.
pub(crate) fn fold_rows(
    rows: impl IntoIterator<Item = (String, String, String, String, Option<String>)>,
) -> Result<Vec<InstanceMarkers>, StoreError> {
    let mut out: Vec<InstanceMarkers> = Vec::new();
    for (id, workflow_type, module, status, event) in rows {
        if out.last().is_none_or(|last| last.id.0 != id) {
            out.push(InstanceMarkers {
                id: InstanceId(id.clone()),
                workflow_type,
                module_hash: ModuleHash(module),
                status: InstanceStatus::parse(&status).ok_or_else(|| {
                    StoreError::Corrupt(format!("instance {id}: unknown status {status:?}"))
                })?,
                markers: Vec::new(),
            });
        }
        let Some(event) = event else { continue };
        let kind: EventKind = serde_json::from_str(&event)
            .map_err(|e| StoreError::Corrupt(format!("an event of instance {id}: {e}")))?;
        if let EventKind::MarkerRecorded { id: marker, data } = kind {
            out.last_mut()
                .expect("pushed above")
                .markers
                .push((marker, data));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(id: &str, data: &str) -> String {
        serde_json::to_string(&EventKind::MarkerRecorded {
            id: id.into(),
            data: Payload::from_json_bytes(data.as_bytes()).unwrap(),
        })
        .unwrap()
    }

    #[test]
    fn the_pattern_matches_how_a_marker_event_is_written() {
        let json = marker("patch:p", r#"{"deprecated":false}"#);
        let prefix = MARKER_EVENT_PATTERN.trim_end_matches('%');
        assert!(json.starts_with(prefix), "{json}");
    }

    #[test]
    fn rows_fold_into_one_entry_per_instance_in_order() {
        let row = |id: &str, ev: Option<String>| {
            (
                id.to_string(),
                "W".to_string(),
                "h".to_string(),
                "running".to_string(),
                ev,
            )
        };
        let got = fold_rows([
            row("a", Some(marker("version:c", r#"{"version":1}"#))),
            row("a", Some(marker("patch:p", r#"{"deprecated":true}"#))),
            row("b", None),
        ])
        .unwrap();
        assert_eq!(got.len(), 2);
        let ids: Vec<&str> = got[0].markers.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(ids, ["version:c", "patch:p"]);
        assert!(got[1].markers.is_empty());
        assert!(
            fold_rows([("x".into(), "W".into(), "h".into(), "nonsense".into(), None)]).is_err()
        );
    }
}
