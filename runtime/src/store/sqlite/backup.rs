//! `pinion backup`: a consistent copy of a live database, with SQLite's online backup API.
//!
//! The copy is taken in one step (`sqlite3_backup_step(-1)`), inside one read transaction
//! of the source, so it is the database as of one moment even while a server keeps
//! committing (WAL lets the writer go on meanwhile); a copy in small steps would restart
//! whenever the server wrote, which under load is always. It is written to a temporary file
//! beside the target (mode 0600), checked, and renamed into place, so the target is either
//! absent or a whole database. Restoring is using the copy as the database file.

use std::path::Path;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{map_err, SqliteStore};
use crate::store::StoreError;

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupReport {
    /// The copy's size in bytes.
    pub bytes: u64,
    /// Instances in the copy.
    pub instances: u64,
}

/// Copies the pinion database at `db` to `target`, which must not exist.
///
/// # Errors
/// [`StoreError::Open`] when `db` is not a pinion database of this version;
/// [`StoreError::AlreadyExists`] when `target` exists; [`StoreError::Database`] when the
/// copy cannot be written.
pub fn backup(db: &Path, target: &Path) -> Result<BackupReport, StoreError> {
    let open_err = |reason: String| StoreError::Open {
        path: db.display().to_string(),
        reason,
    };
    if !db.exists() {
        return Err(open_err("no such file".into()));
    }
    if target.exists() {
        return Err(StoreError::AlreadyExists(format!(
            "{} exists; give a new file name (a backup never overwrites)",
            target.display()
        )));
    }
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_err(e.to_string()))?;
    src.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(map_err)?;
    SqliteStore::check_schema(&src).map_err(|e| open_err(e.to_string()))?;

    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let tmp = target.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = copy(&src, &tmp).and_then(|instances| {
        std::fs::rename(&tmp, target).map_err(|e| {
            StoreError::Database(format!("cannot move the copy to {}: {e}", target.display()))
        })?;
        let bytes = std::fs::metadata(target).map(|m| m.len()).unwrap_or(0);
        Ok(BackupReport { bytes, instances })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes the copy to `tmp` and checks it; returns its instance count.
fn copy(src: &Connection, tmp: &Path) -> Result<u64, StoreError> {
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(tmp)
            .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", tmp.display())))?;
    }
    let mut dst = Connection::open(tmp).map_err(map_err)?;
    {
        let backup = Backup::new(src, &mut dst).map_err(map_err)?;
        loop {
            match backup.step(-1).map_err(map_err)? {
                StepResult::Done => break,
                // A writer held the lock for a moment: try again.
                StepResult::More | StepResult::Busy | StepResult::Locked => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                _ => {}
            }
        }
    }
    // The copy is a database in its own right: self-contained (no WAL beside it) and whole.
    dst.pragma_update(None, "journal_mode", "DELETE")
        .map_err(map_err)?;
    let ok: String = dst
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(map_err)?;
    if ok != "ok" {
        return Err(StoreError::Corrupt(format!(
            "the copy fails its check: {ok}"
        )));
    }
    let instances: i64 = dst
        .query_row("SELECT count(*) FROM instances", [], |r| r.get(0))
        .map_err(map_err)?;
    Ok(instances as u64)
}
