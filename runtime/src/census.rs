//! The marker census: for every version or patch marker of a workflow type, the instances
//! by the path they recorded, and what that allows deleting (`pinion markers`,
//! `GET /v1/markers`).
//!
//! The SDK records a change point's decision as a marker (`docs/sdk.md`, Versioning):
//! `get_version` writes `version:<change>` with `{"version": v, ...}` (nothing when the
//! execution took `DEFAULT_VERSION`), `patched` writes `patch:<id>` with
//! `{"deprecated": false}`, `deprecate_patch` the same with `true`. So for each marker id
//! known from any history of a workflow type, an instance of that type is on one path:
//!
//! | marker | history has | path |
//! |---|---|---|
//! | `version:C` | `{"version": v}` | version `v` |
//! | `version:C` | no marker | `DEFAULT_VERSION` (no marker) |
//! | `patch:P` | `{"deprecated": false}` | patched |
//! | `patch:P` | `{"deprecated": true}` | patched, deprecated |
//! | `patch:P` | no marker | not patched |
//!
//! An instance without the marker either passed the change point before the change existed
//! or has not reached it yet; history alone cannot tell which, so the census counts it on
//! the old path. That errs on the safe side: a branch is called deletable only when no
//! counted instance can need it.
//!
//! Counted instances are the open ones (running and blocked), or with `include_ended`
//! every instance, because replaying an ended history needs the old branch too. A marker
//! id is listed when any history of the type recorded it, ended ones included, so a change
//! whose instances have all ended still shows up, with nothing left to keep.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::engine::{Error, Pinion};
use crate::history::{InstanceStatus, ModuleHash};
use crate::store::{InstanceMarkers, MarkerFilter};

/// `DEFAULT_VERSION` of the SDK: the version of an execution that recorded no marker.
pub const DEFAULT_VERSION: i32 = -1;

/// How many instance ids each path lists as examples.
pub const EXAMPLES: usize = 5;

/// What to count (the flags of `pinion markers`, the query of `GET /v1/markers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerQuery {
    /// Only this workflow type.
    #[serde(default)]
    pub workflow_type: Option<String>,
    /// Only instances pinned to this module (hash, prefix or alias).
    #[serde(default)]
    pub module: Option<String>,
    /// Count ended instances too (completed, failed, cancelled, terminated).
    #[serde(default)]
    pub include_ended: bool,
}

/// The census: one entry per workflow type and marker id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkerCensus {
    /// Whether ended instances were counted.
    pub include_ended: bool,
    /// By workflow type, then marker id.
    pub markers: Vec<MarkerReport>,
}

/// What kind of change point a marker id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerKind {
    /// `get_version` (`version:<change>`).
    Version,
    /// `patched` / `deprecate_patch` (`patch:<id>`).
    Patch,
}

/// A path an instance took at a change point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerPath {
    /// No marker: `DEFAULT_VERSION`, or not patched.
    NoMarker,
    /// A version marker (its number is in [`PathCount::version`]).
    Version,
    /// A patch marker, not deprecated.
    Patched,
    /// A patch marker recorded by `deprecate_patch`.
    Deprecated,
}

/// The instances on one path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathCount {
    /// Which path.
    pub path: MarkerPath,
    /// For a version marker, the version (`-1`, `DEFAULT_VERSION`, for no marker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    /// Counted instances on it.
    pub instances: u64,
    /// Of those, running.
    pub running: u64,
    /// Of those, blocked.
    pub blocked: u64,
    /// Of those, ended (only with `include_ended`).
    pub ended: u64,
    /// The modules they are pinned to.
    pub modules: Vec<ModuleHash>,
    /// Up to [`EXAMPLES`] of their ids.
    pub examples: Vec<String>,
}

/// One change point of one workflow type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkerReport {
    /// The workflow type.
    pub workflow_type: String,
    /// The marker id as recorded (`version:MyChange`, `patch:my-patch`).
    pub marker_id: String,
    /// Version or patch.
    pub kind: MarkerKind,
    /// The change id or patch id (the marker id without its prefix).
    pub name: String,
    /// Counted instances of the type.
    pub counted: u64,
    /// The paths counted instances took (a path nobody took is left out), old to new.
    pub paths: Vec<PathCount>,
    /// True when no counted instance can reach the old branch (no marker: the
    /// `DEFAULT_VERSION` branch, or the not-patched branch): it may be deleted.
    pub old_branch_deletable: bool,
    /// For a patch: `deprecate_patch` may replace `patched` (no counted instance took the
    /// not-patched path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecate_patch_safe: Option<bool>,
    /// For a patch: the call may go altogether (no counted instance has a marker that is
    /// not deprecated, nor none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_call_removable: Option<bool>,
    /// For a version: the versions counted instances recorded, ascending (`-1` for none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions_needed: Vec<i32>,
    /// For a version: versions some history recorded (or `-1`, lacked) that no counted
    /// instance needs: their branches may be deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions_deletable: Vec<i32>,
    /// The verdicts in words, one sentence each.
    pub advice: Vec<String>,
}

/// Splits a marker id into its kind and name; `None` for markers the SDK's versioning
/// does not write.
fn kind_of(marker_id: &str) -> Option<(MarkerKind, &str)> {
    if let Some(name) = marker_id.strip_prefix("version:") {
        Some((MarkerKind::Version, name))
    } else {
        marker_id
            .strip_prefix("patch:")
            .map(|name| (MarkerKind::Patch, name))
    }
}

/// The path of a recorded marker's data (`None` when it does not parse as the SDK writes
/// it: the first marker of the id in a history decides).
fn path_of(kind: MarkerKind, data: &serde_json::Value) -> Option<(MarkerPath, Option<i32>)> {
    match kind {
        MarkerKind::Version => {
            let v = i32::try_from(data.get("version")?.as_i64()?).ok()?;
            Some((MarkerPath::Version, Some(v)))
        }
        MarkerKind::Patch => match data.get("deprecated")?.as_bool()? {
            true => Some((MarkerPath::Deprecated, None)),
            false => Some((MarkerPath::Patched, None)),
        },
    }
}

fn is_open(status: InstanceStatus) -> bool {
    matches!(status, InstanceStatus::Running | InstanceStatus::Blocked)
}

fn version_name(v: i32) -> String {
    if v == DEFAULT_VERSION {
        "DEFAULT_VERSION".into()
    } else {
        v.to_string()
    }
}

/// Counts `instances` (every instance the filter selected, any status).
pub fn census(instances: &[InstanceMarkers], include_ended: bool) -> MarkerCensus {
    // Every marker id of each type, from any history; and what each history recorded.
    let mut ids: BTreeMap<(&str, &str), BTreeSet<i32>> = BTreeMap::new();
    for inst in instances {
        for (id, data) in &inst.markers {
            let Some((kind, _)) = kind_of(id) else {
                continue;
            };
            let seen = ids.entry((&inst.workflow_type, id)).or_default();
            let value: serde_json::Value = serde_json::from_str(data.json()).unwrap_or_default();
            if let Some((_, Some(v))) = path_of(kind, &value) {
                seen.insert(v);
            }
        }
    }
    let scope = if include_ended {
        "instance"
    } else {
        "open instance"
    };
    let mut markers = Vec::new();
    for ((ty, marker_id), mut seen) in ids {
        let (kind, name) = kind_of(marker_id).expect("kept above");
        let mut paths: BTreeMap<(MarkerPath, Option<i32>), PathCount> = BTreeMap::new();
        let mut counted = 0;
        for inst in instances.iter().filter(|i| i.workflow_type == ty) {
            let recorded = inst.markers.iter().find(|(m, _)| m == marker_id);
            let key = match recorded {
                None => (
                    MarkerPath::NoMarker,
                    (kind == MarkerKind::Version).then_some(DEFAULT_VERSION),
                ),
                Some((_, data)) => {
                    let value: serde_json::Value =
                        serde_json::from_str(data.json()).unwrap_or_default();
                    match path_of(kind, &value) {
                        Some(p) => p,
                        None => continue,
                    }
                }
            };
            if key.0 == MarkerPath::NoMarker && kind == MarkerKind::Version {
                seen.insert(DEFAULT_VERSION);
            }
            if !include_ended && !is_open(inst.status) {
                continue;
            }
            counted += 1;
            let p = paths.entry(key).or_insert_with(|| PathCount {
                path: key.0,
                version: key.1,
                instances: 0,
                running: 0,
                blocked: 0,
                ended: 0,
                modules: Vec::new(),
                examples: Vec::new(),
            });
            p.instances += 1;
            match inst.status {
                InstanceStatus::Running => p.running += 1,
                InstanceStatus::Blocked => p.blocked += 1,
                _ => p.ended += 1,
            }
            if !p.modules.contains(&inst.module_hash) {
                p.modules.push(inst.module_hash.clone());
            }
            if p.examples.len() < EXAMPLES {
                p.examples.push(inst.id.0.clone());
            }
        }
        let count = |path: MarkerPath| -> u64 {
            paths
                .values()
                .filter(|p| p.path == path)
                .map(|p| p.instances)
                .sum()
        };
        let unmarked = count(MarkerPath::NoMarker);
        let mut report = MarkerReport {
            workflow_type: ty.to_string(),
            marker_id: marker_id.to_string(),
            kind,
            name: name.to_string(),
            counted,
            paths: Vec::new(),
            old_branch_deletable: unmarked == 0,
            deprecate_patch_safe: None,
            patch_call_removable: None,
            versions_needed: Vec::new(),
            versions_deletable: Vec::new(),
            advice: Vec::new(),
        };
        match kind {
            MarkerKind::Patch => {
                let patched = count(MarkerPath::Patched);
                report.deprecate_patch_safe = Some(unmarked == 0);
                report.patch_call_removable = Some(unmarked == 0 && patched == 0);
                report.advice = patch_advice(name, scope, unmarked, patched);
            }
            MarkerKind::Version => {
                let needed: BTreeSet<i32> = paths.keys().filter_map(|k| k.1).collect();
                report.versions_deletable = seen.difference(&needed).copied().collect();
                report.versions_needed = needed.into_iter().collect();
                report.advice = version_advice(name, scope, &report, unmarked);
            }
        }
        report.paths = paths.into_values().collect();
        markers.push(report);
    }
    MarkerCensus {
        include_ended,
        markers,
    }
}

/// `n` of `scope` in words: "1 open instance", "2 open instances".
fn many(n: u64, scope: &str) -> String {
    if n == 1 {
        format!("1 {scope}")
    } else {
        format!("{n} {scope}s")
    }
}

fn patch_advice(name: &str, scope: &str, unmarked: u64, patched: u64) -> Vec<String> {
    let mut out = Vec::new();
    if unmarked > 0 {
        out.push(format!(
            "keep `if patched(\"{name}\") {{ new }} else {{ old }}`: {} took the not-patched \
             path (no marker: started before the patch, or not at it yet); deprecate_patch is \
             not safe yet",
            many(unmarked, scope)
        ));
        return out;
    }
    out.push(format!(
        "deprecate_patch(\"{name}\") is safe and the old (not-patched) branch can be deleted: \
         no {scope} can reach it"
    ));
    if patched > 0 {
        out.push(format!(
            "keep the deprecate_patch(\"{name}\") call: {} recorded the patch marker without \
             deprecating it",
            many(patched, scope)
        ));
    } else {
        out.push(format!(
            "the deprecate_patch(\"{name}\") call can be removed too: no {scope} recorded a \
             marker that is not deprecated"
        ));
    }
    out
}

fn version_advice(name: &str, scope: &str, r: &MarkerReport, unmarked: u64) -> Vec<String> {
    let mut out = Vec::new();
    let Some(&lowest) = r.versions_needed.first() else {
        out.push(format!(
            "no {scope} took any path of \"{name}\": only the version new executions take is \
             needed, every other branch can be deleted"
        ));
        return out;
    };
    let names = |vs: &[i32]| -> String {
        vs.iter()
            .map(|v| version_name(*v))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push(format!(
        "{scope}s need \"{name}\" version(s) {}",
        names(&r.versions_needed)
    ));
    if unmarked > 0 {
        out.push(format!(
            "keep the DEFAULT_VERSION branch: {} no marker (started before the change, or not \
             at it yet)",
            match unmarked {
                1 => format!("1 {scope} has"),
                n => format!("{n} {scope}s have"),
            }
        ));
    } else {
        out.push(format!(
            "the DEFAULT_VERSION branch can be deleted: no {scope} can reach it \
             (get_version(\"{name}\", {lowest}, max))"
        ));
    }
    // DEFAULT_VERSION's verdict is the line above.
    let gone: Vec<i32> = r
        .versions_deletable
        .iter()
        .copied()
        .filter(|v| *v != DEFAULT_VERSION)
        .collect();
    if !gone.is_empty() {
        out.push(format!(
            "no {scope} needs \"{name}\" version(s) {}: their branches can be deleted",
            names(&gone)
        ));
    }
    out
}

impl Pinion {
    /// The marker census of the instances `query` selects.
    ///
    /// # Errors
    /// Unknown module; storage errors.
    pub fn marker_census(&self, query: &MarkerQuery) -> Result<MarkerCensus, Error> {
        let module_hash = match &query.module {
            Some(m) => Some(self.resolve_module(m)?.hash),
            None => None,
        };
        let instances = self.store().instance_markers(&MarkerFilter {
            workflow_type: query.workflow_type.clone(),
            module_hash,
        })?;
        Ok(census(&instances, query.include_ended))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{InstanceId, Payload};

    fn inst(id: &str, status: InstanceStatus, markers: &[(&str, &str)]) -> InstanceMarkers {
        InstanceMarkers {
            id: InstanceId(id.into()),
            workflow_type: "W".into(),
            module_hash: ModuleHash("h".into()),
            status,
            markers: markers
                .iter()
                .map(|(m, d)| {
                    (
                        m.to_string(),
                        Payload::from_json_bytes(d.as_bytes()).unwrap(),
                    )
                })
                .collect(),
        }
    }

    const V1: (&str, &str) = ("version:c", r#"{"version":1,"min":-1,"max":2}"#);
    const V2: (&str, &str) = ("version:c", r#"{"version":2,"min":-1,"max":2}"#);
    const PATCHED: (&str, &str) = ("patch:p", r#"{"deprecated":false}"#);
    const DEPRECATED: (&str, &str) = ("patch:p", r#"{"deprecated":true}"#);
    use InstanceStatus::{Blocked, Completed, Running};

    fn report<'a>(c: &'a MarkerCensus, id: &str) -> &'a MarkerReport {
        c.markers.iter().find(|m| m.marker_id == id).unwrap()
    }

    #[test]
    fn versions_are_counted_by_path_and_ended_ones_only_on_request() {
        let all = [
            inst("a", Running, &[V1]),
            inst("b", Blocked, &[V2]),
            inst("c", Running, &[]),
            inst("d", Completed, &[V1]),
            inst("e", Completed, &[]),
        ];
        let open = census(&all, false);
        let r = report(&open, "version:c");
        assert_eq!(r.counted, 3);
        assert_eq!(r.versions_needed, [-1, 1, 2]);
        assert!(!r.old_branch_deletable);
        let paths: Vec<_> = r.paths.iter().map(|p| (p.version, p.instances)).collect();
        assert_eq!(paths, [(Some(-1), 1), (Some(1), 1), (Some(2), 1)]);
        assert_eq!(r.paths[2].blocked, 1);

        // Without the open unmarked one, DEFAULT_VERSION can go, and so can 1 once "a" ends.
        let later = [
            inst("a", Completed, &[V1]),
            inst("b", Running, &[V2]),
            inst("c", Completed, &[]),
        ];
        let r = census(&later, false);
        let r = report(&r, "version:c");
        assert!(r.old_branch_deletable);
        assert_eq!(r.versions_needed, [2]);
        assert_eq!(r.versions_deletable, [-1, 1]);
        // Counting ended ones, everything is still needed.
        let r = census(&later, true);
        let r = report(&r, "version:c");
        assert_eq!(r.versions_needed, [-1, 1, 2]);
        assert!(r.versions_deletable.is_empty());
        assert_eq!(r.paths[0].ended, 1);
    }

    #[test]
    fn deprecate_patch_is_safe_only_without_unpatched_instances() {
        let before = [inst("old", Running, &[]), inst("new", Running, &[PATCHED])];
        let r = census(&before, false);
        let r = report(&r, "patch:p");
        assert_eq!(r.deprecate_patch_safe, Some(false));
        assert_eq!(r.patch_call_removable, Some(false));
        assert!(r.advice[0].contains("not safe"), "{:?}", r.advice);

        let after = [
            inst("old", Completed, &[]),
            inst("new", Running, &[PATCHED]),
            inst("newer", Running, &[DEPRECATED]),
        ];
        let r = census(&after, false);
        let r = report(&r, "patch:p");
        assert_eq!(r.deprecate_patch_safe, Some(true));
        assert_eq!(r.patch_call_removable, Some(false));
        // Ended histories still need the old branch to replay.
        let r = census(&after, true);
        assert_eq!(report(&r, "patch:p").deprecate_patch_safe, Some(false));

        let last = [inst("newer", Running, &[DEPRECATED])];
        let r = census(&last, false);
        assert_eq!(report(&r, "patch:p").patch_call_removable, Some(true));
    }

    #[test]
    fn a_marker_whose_instances_all_ended_is_listed_with_nothing_to_keep() {
        let r = census(
            &[
                inst("a", Completed, &[V1]),
                inst("x", Running, &[("side:1", "1")]),
            ],
            false,
        );
        assert_eq!(r.markers.len(), 1, "other markers are not change points");
        let r = &r.markers[0];
        assert_eq!(r.counted, 1, "the running instance lacks the marker");
        assert_eq!(r.versions_needed, [-1]);
        let r = census(&[inst("a", Completed, &[V1])], false);
        assert_eq!(r.markers[0].counted, 0);
        assert!(r.markers[0].paths.is_empty());
        assert!(r.markers[0].old_branch_deletable);
        assert_eq!(r.markers[0].versions_deletable, [1]);
    }
}
