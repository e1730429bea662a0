//! Retention: deleting ended instances once they are old enough, by hand (`pinion purge`)
//! or by the server on its own (`pinion server --retention`), optionally exporting each
//! history to a file first.

use std::path::Path;
use std::time::Duration;

use super::{Error, Pinion};
use crate::history::{history_file_name, run_file_name, InstanceId};

/// Instances deleted (or, in a dry run, that would be) per transaction.
const PURGE_BATCH: u32 = 500;

/// What a purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    /// The instances deleted, or that a dry run would delete, oldest first.
    pub instances: Vec<String>,
    /// History files written to the export directory (one per run).
    pub exported: u64,
    /// True for a dry run: nothing was deleted or written.
    pub dry_run: bool,
}

impl Pinion {
    /// Deletes the ended instances (completed, failed, cancelled, terminated) that last
    /// changed longer than `older_than` ago, of `workflow_type` if given: their histories,
    /// archived runs and rows. Running, blocked and imported instances are never touched;
    /// lifecycle events stay. With `export`, each history is first written to
    /// `export/<id>.json` (as `pinion history export`), and each archived run of it to
    /// `export/<id>@run<N>.json`; an existing file stops the purge before anything of that
    /// instance is deleted.
    ///
    /// # Errors
    /// Storage errors; [`Error::Io`] when an export file cannot be written.
    pub fn purge(
        &self,
        older_than: Duration,
        workflow_type: Option<&str>,
        export: Option<&Path>,
        dry_run: bool,
    ) -> Result<PurgeReport, Error> {
        let before = self
            .now_ms()
            .saturating_sub(older_than.as_millis().min(u128::from(u64::MAX)) as u64);
        let mut report = PurgeReport {
            dry_run,
            ..PurgeReport::default()
        };
        if let (Some(dir), false) = (export, dry_run) {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
        }
        let mut seen = std::collections::HashSet::new();
        loop {
            let ids = self
                .store
                .ended_before(before, workflow_type, PURGE_BATCH)?
                .into_iter()
                .filter(|id| !seen.contains(&id.0))
                .collect::<Vec<InstanceId>>();
            if ids.is_empty() {
                break;
            }
            seen.extend(ids.iter().map(|i| i.0.clone()));
            if dry_run {
                report.instances.extend(ids.into_iter().map(|i| i.0));
                continue;
            }
            if let Some(dir) = export {
                for id in &ids {
                    report.exported += self.export_all_runs(id, dir)?;
                }
            }
            self.store.purge_instances(&ids)?;
            report.instances.extend(ids.into_iter().map(|i| i.0));
        }
        Ok(report)
    }
}

impl Pinion {
    /// Writes every run of `id` to `dir`: the current one as `<id>.json`, each archived
    /// one (ended with continue-as-new) as `<id>@run<N>.json`, each file new (an existing
    /// one is an error, before anything is deleted). Returns the files written.
    fn export_all_runs(&self, id: &InstanceId, dir: &Path) -> Result<u64, Error> {
        let Some(current) = self.store.export_history(id)? else {
            return Ok(0);
        };
        let mut runs = Vec::new();
        for run in 1..current.run {
            if let Some(h) = self.store.archived_run(id, run)? {
                runs.push((run_file_name(&id.0, run), h));
            }
        }
        runs.push((history_file_name(&id.0), current));
        for (name, h) in &runs {
            let path = dir.join(name);
            let json = serde_json::to_string_pretty(h)
                .map_err(|e| Error::InvalidInput(format!("encoding {id}: {e}")))?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, json.as_bytes()))
                .map_err(|e| io(&path, &e))?;
        }
        Ok(runs.len() as u64)
    }
}

fn io(path: &Path, e: &std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}
