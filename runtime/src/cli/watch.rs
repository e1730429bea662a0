//! Polling a crate's files for changes, for `pinion dev`.
//!
//! Polling, not file-system notifications (the `notify` crate): a workflow crate has a
//! handful of files, so reading their metadata twice a second costs nothing; polling
//! behaves the same on every platform and file system (bind mounts, network shares,
//! containers, editors that replace files by renaming), which notification back ends do
//! not; and it needs no new dependency. The price is up to one interval of latency, small
//! next to a wasm build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What a file looked like: modification time and size.
type Stamp = (Option<SystemTime>, u64);

/// The files of a crate and their stamps, target directories and hidden entries aside.
#[derive(Debug)]
pub struct Watcher {
    root: PathBuf,
    skip: Vec<PathBuf>,
    last: BTreeMap<PathBuf, Stamp>,
}

impl Watcher {
    /// Watches `root`, except `skip` (build output) and any `target` directory or hidden
    /// entry (`.git`, editor swap files).
    pub fn new(root: &Path, skip: Vec<PathBuf>) -> Watcher {
        let mut w = Watcher {
            root: root.to_path_buf(),
            skip,
            last: BTreeMap::new(),
        };
        w.last = w.scan();
        w
    }

    /// The files added, removed or modified since the last call (or since [`Watcher::new`]),
    /// relative to the root.
    pub fn changes(&mut self) -> Vec<PathBuf> {
        let now = self.scan();
        let mut changed: Vec<PathBuf> = now
            .iter()
            .filter(|(p, s)| self.last.get(*p) != Some(s))
            .map(|(p, _)| p.clone())
            .chain(self.last.keys().filter(|p| !now.contains_key(*p)).cloned())
            .collect();
        changed.sort();
        changed.dedup();
        self.last = now;
        changed
            .into_iter()
            .map(|p| {
                p.strip_prefix(&self.root)
                    .map(Path::to_path_buf)
                    .unwrap_or(p)
            })
            .collect()
    }

    fn scan(&self) -> BTreeMap<PathBuf, Stamp> {
        let mut files = BTreeMap::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') || self.skip.iter().any(|s| path.starts_with(s)) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    if !(dir == self.root && name == "target") {
                        dirs.push(path);
                    }
                } else {
                    files.insert(path, (meta.modified().ok(), meta.len()));
                }
            }
        }
        files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_modified_added_and_removed_files_but_not_build_output() {
        let dir = std::env::temp_dir().join(format!("pinion-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::create_dir_all(dir.join("target/release")).unwrap();
        std::fs::write(dir.join("src/lib.rs"), "a").unwrap();
        let mut w = Watcher::new(&dir, vec![]);
        assert!(w.changes().is_empty());

        std::fs::write(dir.join("src/lib.rs"), "ab").unwrap(); // size changes too
        std::fs::write(dir.join("src/more.rs"), "x").unwrap();
        std::fs::write(dir.join("target/release/out.wasm"), "w").unwrap();
        std::fs::write(dir.join(".lib.rs.swp"), "s").unwrap();
        assert_eq!(
            w.changes(),
            vec![PathBuf::from("src/lib.rs"), PathBuf::from("src/more.rs")]
        );
        assert!(w.changes().is_empty(), "reported once");

        std::fs::remove_file(dir.join("src/more.rs")).unwrap();
        assert_eq!(w.changes(), vec![PathBuf::from("src/more.rs")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
