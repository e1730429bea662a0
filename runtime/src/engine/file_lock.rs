//! The worker lock of a SQLite file: one process at a time runs workers on it.
//!
//! # Keyed on the file, not its name
//!
//! The lock is an `flock` on the database file itself, so it belongs to the file's identity
//! (device and inode), whatever path reached it: a symbolic link, a hard link in another
//! directory, or the file bind-mounted into two containers at different paths. (Keyed on
//! the path as given, two servers once ran on one file through a symlink, each clearing
//! the other's activity leases at start-up.) `flock` is the kernel's, released when the
//! process dies, SIGKILL included; on Linux it never interacts with the POSIX record locks
//! SQLite takes on the same file.
//!
//! # Why the descriptor is never closed
//!
//! Closing *any* descriptor of a file drops every POSIX record lock the process holds on
//! it, SQLite's own included (a well-known POSIX pitfall SQLite works around for its own
//! descriptors, but cannot for ours). So the descriptor opened for the lock stays open
//! for the life of the process, one per file in a process-wide table, and releasing the
//! lock is `flock(LOCK_UN)`, never `close`. The table also refuses a second lock by this
//! same process, which `flock` on one shared descriptor would grant. An entry is closed
//! only once its file is unlocked and deleted (no link left: nothing can open it again), so
//! a process that works through many short-lived databases (a test suite) does not keep a
//! descriptor per file.
//!
//! `<file>.lock` beside the file (with every symlink resolved) is still taken too, so a
//! server of an earlier pinion, which knows only that one, and this one exclude each other.
//!
//! SQLite on a network file system is not supported (its WAL mode needs shared memory);
//! there `flock` may be emulated with record locks and is not relied on.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::Error;

/// A file's identity: device and inode.
type FileId = (u64, u64);

/// One open descriptor per locked-at-least-once file, and whether this process holds its
/// lock now.
struct Held {
    file: Arc<File>,
    held: bool,
}

fn table() -> &'static Mutex<HashMap<FileId, Held>> {
    static TABLE: OnceLock<Mutex<HashMap<FileId, Held>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The worker lock of a SQLite file, held until dropped.
#[derive(Debug)]
pub(super) struct FileLock {
    id: FileId,
    file: Arc<File>,
    /// `<file>.lock`, for pinions before this one.
    _beside: File,
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let mut table = table().lock().unwrap_or_else(|p| p.into_inner());
        // Unlocked first, then marked free: a lock of this process never overlaps another.
        let _ = self.file.unlock();
        if let Some(h) = table.get_mut(&self.id) {
            h.held = false;
        }
    }
}

/// Takes the worker lock of the SQLite file `db`; `advice` ends the message when another
/// process (or this one) holds it.
///
/// # Errors
/// [`Error::WorkerLocked`] when it is held; [`Error::Io`] when the file cannot be opened.
pub(super) fn lock(db: &Path, advice: &str) -> Result<FileLock, Error> {
    let io = |path: &Path, e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let beside = beside_path(db)?;
    let beside_file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&beside)
        .map_err(|e| io(&beside, e))?;
    let locked = |what: String| Error::WorkerLocked(format!("{what}{advice}"));
    if beside_file.try_lock().is_err() {
        return Err(locked(format!("lock file {}", beside.display())));
    }
    let meta = std::fs::metadata(db).map_err(|e| io(db, e))?;
    let id = (meta.dev(), meta.ino());
    let mut table = table().lock().unwrap_or_else(|p| p.into_inner());
    table.retain(|_, h| h.held || h.file.metadata().is_ok_and(|m| m.nlink() > 0));
    let entry = match table.get_mut(&id) {
        Some(h) => h,
        None => {
            let file = File::open(db).map_err(|e| io(db, e))?;
            let opened = file.metadata().map_err(|e| io(db, e))?;
            if (opened.dev(), opened.ino()) != id {
                // Replaced between the two looks: the caller may try again.
                return Err(Error::Io {
                    path: db.display().to_string(),
                    reason: "the file was replaced while its lock was taken; try again".into(),
                });
            }
            table.entry(id).or_insert(Held {
                file: Arc::new(file),
                held: false,
            })
        }
    };
    if entry.held {
        return Err(locked(format!(
            "{}: another worker in this process holds it",
            db.display()
        )));
    }
    if entry.file.try_lock().is_err() {
        return Err(locked(format!(
            "{}: locked by another process, through this path or another one to the same file",
            db.display()
        )));
    }
    entry.held = true;
    Ok(FileLock {
        id,
        file: entry.file.clone(),
        _beside: beside_file,
    })
}

/// `<file>.lock` beside the file, with every symbolic link on the way resolved.
fn beside_path(db: &Path) -> Result<PathBuf, Error> {
    let real = std::fs::canonicalize(db).map_err(|e| Error::Io {
        path: db.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut lock = real.into_os_string();
    lock.push(".lock");
    Ok(PathBuf::from(lock))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "pinion-file-lock-{name}-{}-{:x}",
            std::process::id(),
            crate::clock::random_u64()
        ));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::create_dir_all(dir.join("b")).unwrap();
        let db = dir.join("a").join("app.db");
        std::fs::write(&db, b"not really a database").unwrap();
        (dir, db)
    }

    #[test]
    fn a_hard_link_in_another_directory_shares_the_lock_and_a_release_frees_it() {
        let (dir, db) = temp_file("hard");
        let other = dir.join("b").join("same.db");
        std::fs::hard_link(&db, &other).unwrap();
        let first = lock(&db, "").unwrap();
        let refused = lock(&other, "; stop it first").unwrap_err();
        assert!(
            matches!(&refused, Error::WorkerLocked(m) if m.contains("same.db") && m.ends_with("; stop it first")),
            "{refused:?}"
        );
        drop(first);
        let again = lock(&other, "").expect("free once released");
        assert!(matches!(lock(&db, ""), Err(Error::WorkerLocked(_))));
        drop(again);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_descriptor_of_a_deleted_unlocked_file_is_closed_at_the_next_lock() {
        let (dir, db) = temp_file("gone");
        let (dir2, other) = temp_file("next");
        let id = {
            let m = std::fs::metadata(&db).unwrap();
            (m.dev(), m.ino())
        };
        drop(lock(&db, "").unwrap());
        assert!(
            table().lock().unwrap().contains_key(&id),
            "kept while the file exists"
        );
        std::fs::remove_dir_all(dir).unwrap();
        let next = lock(&other, "").unwrap();
        assert!(
            !table().lock().unwrap().contains_key(&id),
            "closed once deleted"
        );
        drop(next);
        std::fs::remove_dir_all(dir2).unwrap();
    }

    #[test]
    fn a_descriptor_of_another_open_file_description_sees_the_lock() {
        // What another process sees: its own open of the file cannot take the lock while
        // this process holds it, and can once it is released (without a close).
        let (dir, db) = temp_file("ofd");
        let held = lock(&db, "").unwrap();
        let outsider = File::open(&db).unwrap();
        assert!(
            outsider.try_lock().is_err(),
            "the lock is on the file itself"
        );
        drop(held);
        outsider
            .try_lock()
            .expect("released by unlock, not by a close");
        drop(outsider);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
