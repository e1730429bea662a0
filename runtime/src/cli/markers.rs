//! `pinion markers`: the marker census, over [`Api`] (the database, or a server).
//!
//! One block per workflow type and marker id: a table of the paths counted instances took,
//! then the verdicts in words (what may be deleted, whether `deprecate_patch` is safe).

use super::display::{Align, Table};
use super::print::print_json;
use super::Failure;
use crate::api::Api;
use crate::census::{MarkerKind, MarkerPath, MarkerQuery, PathCount, DEFAULT_VERSION};

/// The path's name in the table.
fn path_name(kind: MarkerKind, p: &PathCount) -> String {
    match (kind, p.path, p.version) {
        (MarkerKind::Version, _, Some(DEFAULT_VERSION)) => "DEFAULT_VERSION (no marker)".into(),
        (MarkerKind::Version, _, Some(v)) => format!("version {v}"),
        (_, MarkerPath::NoMarker, _) => "not patched (no marker)".into(),
        (_, MarkerPath::Deprecated, _) => "patched (deprecated)".into(),
        _ => "patched".into(),
    }
}

/// `pinion markers`.
pub fn markers(api: &dyn Api, json: bool, query: &MarkerQuery) -> Result<i32, Failure> {
    let census = api.markers(query)?;
    if json {
        print_json(&census);
        return Ok(0);
    }
    if census.markers.is_empty() {
        println!("no version or patch marker recorded by the selected instances");
        return Ok(0);
    }
    // Modules by short hash, with their version label when they have one.
    let labels: Vec<(String, Option<String>)> = api
        .modules()?
        .into_iter()
        .map(|m| (m.module.hash.0, m.module.version_label))
        .collect();
    let module_name =
        |h: &crate::history::ModuleHash| match labels.iter().find(|(hash, _)| *hash == h.0) {
            Some((_, Some(label))) => format!("{}({label})", h.short()),
            _ => h.short().to_owned(),
        };
    let scope = |n: u64| match (census.include_ended, n) {
        (true, 1) => "instance",
        (true, _) => "instances",
        (false, 1) => "open instance",
        (false, _) => "open instances",
    };
    for (i, m) in census.markers.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let call = match m.kind {
            MarkerKind::Version => format!("get_version(\"{}\", ..)", m.name),
            MarkerKind::Patch => format!("patched(\"{}\")", m.name),
        };
        println!(
            "{}  {}  {call}: {} {}",
            m.workflow_type,
            m.marker_id,
            m.counted,
            scope(m.counted)
        );
        let mut columns = vec![
            ("PATH", Align::Left),
            ("INSTANCES", Align::Right),
            ("RUNNING", Align::Right),
            ("BLOCKED", Align::Right),
        ];
        if census.include_ended {
            columns.push(("ENDED", Align::Right));
        }
        columns.extend([("MODULES", Align::Left), ("EXAMPLES", Align::Left)]);
        let mut t = Table::new(&columns);
        for p in &m.paths {
            let mut row = vec![
                path_name(m.kind, p),
                p.instances.to_string(),
                p.running.to_string(),
                p.blocked.to_string(),
            ];
            if census.include_ended {
                row.push(p.ended.to_string());
            }
            row.push(
                p.modules
                    .iter()
                    .map(&module_name)
                    .collect::<Vec<_>>()
                    .join(","),
            );
            row.push(p.examples.join(","));
            t.row(row);
        }
        if !m.paths.is_empty() {
            for l in t.lines() {
                println!("  {l}");
            }
        }
        for a in &m.advice {
            println!("  - {a}");
        }
    }
    Ok(0)
}
