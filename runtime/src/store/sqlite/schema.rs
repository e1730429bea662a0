//! Connections and schema: the pragmas every connection gets, and the numbered migrations
//! (`0001_schema.sql`, `0002_deployments.sql`, ...) that bring a file to this build's schema.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{map_err, SqliteOptions, SqliteStore};
use crate::store::StoreError;

/// Numbered migrations, applied in order in one transaction; `meta.schema_version` records
/// the last one applied. Never edit a released migration: add the next one.
pub(super) const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("0001_schema.sql")),
    (2, include_str!("0002_deployments.sql")),
    (3, include_str!("0003_signals.sql")),
    (4, include_str!("0004_children.sql")),
    (5, include_str!("0005_events.sql")),
    (6, include_str!("0006_activity_claims.sql")),
    (7, include_str!("0007_heartbeats.sql")),
    (8, include_str!("0008_list_indexes.sql")),
    (9, include_str!("0009_closing.sql")),
    (10, include_str!("0010_module_code.sql")),
    (11, include_str!("0011_webhook_dead_letters.sql")),
];
/// The schema version this build reads and writes.
pub(super) const SCHEMA_VERSION: u32 = 11;

impl SqliteStore {
    pub(super) fn connect(
        path: &Path,
        options: &SqliteOptions,
    ) -> Result<Connection, rusqlite::Error> {
        let flags = if options.read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(options.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(256);
        // The pragmas, in one place. journal_mode is persistent in the file; the others are
        // per connection.
        if !options.read_only {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        conn.pragma_update(None, "synchronous", options.synchronous.pragma())?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "cache_size", -16_000)?;
        if let Some(pages) = options.max_pages {
            conn.pragma_update(
                None,
                "max_page_count",
                i64::try_from(pages).unwrap_or(i64::MAX),
            )?;
        }
        Ok(conn)
    }

    /// The recorded schema version; `None` for a file that is not a pinion database.
    fn schema_version(conn: &Connection) -> Result<Option<u32>, StoreError> {
        let v: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .or_else(|e| match map_err(e) {
                StoreError::Database(m) if m.contains("no such table") => Ok(None),
                other => Err(other),
            })?;
        Ok(v.and_then(|v| v.parse().ok()))
    }

    pub(super) fn check_schema(conn: &Connection) -> Result<(), StoreError> {
        match Self::schema_version(conn)? {
            Some(SCHEMA_VERSION) => Ok(()),
            Some(v) if v < SCHEMA_VERSION => Err(StoreError::Corrupt(format!(
                "database schema version {v} is older than this pinion's ({SCHEMA_VERSION}); open it once with a command that writes (for example `pinion list`) to migrate it"
            ))),
            Some(v) => Err(StoreError::Corrupt(format!(
                "database schema version {v} is newer than this pinion supports ({SCHEMA_VERSION}); upgrade pinion"
            ))),
            None => Err(StoreError::Corrupt("the file is not a pinion database".into())),
        }
    }

    pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
        // Fast path without the write lock: already current.
        if matches!(Self::schema_version(conn), Ok(Some(SCHEMA_VERSION))) {
            return Ok(());
        }
        // Read the version inside the write transaction, so two processes opening an old
        // file at once cannot both apply the same migration.
        conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err)?;
        let result = Self::apply_migrations(conn);
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = conn.execute_batch(end).map_err(map_err);
        result.and(ended)
    }

    fn apply_migrations(conn: &Connection) -> Result<(), StoreError> {
        // An existing file with tables but no pinion meta row is someone else's database.
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(map_err)?;
        let current = if tables == 0 {
            0
        } else {
            match Self::schema_version(conn)? {
                None => {
                    return Err(StoreError::Corrupt(
                        "the file is not a pinion database".into(),
                    ))
                }
                Some(v) if v > SCHEMA_VERSION => return Self::check_schema(conn),
                Some(v) => v,
            }
        };
        for (n, migration) in MIGRATIONS.iter().filter(|(n, _)| *n > current) {
            conn.execute_batch(migration).map_err(map_err)?;
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [n.to_string()],
            )
            .map_err(map_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ModuleHash;
    use crate::store::{DeploymentStore, Store};

    /// A file at schema version 9, as the last release left it: the module's code in
    /// `modules.bytes`, before the module's manifest.
    fn version_9_file(path: &Path) {
        let c = Connection::open(path).unwrap();
        for (_, sql) in MIGRATIONS.iter().filter(|(n, _)| *n <= 9) {
            c.execute_batch(sql).unwrap();
        }
        c.execute_batch(
            "INSERT INTO meta(key, value) VALUES ('schema_version', '9');
             INSERT INTO modules(hash, bytes, size, manifest, deployed_at_ms)
             VALUES ('m1', x'0061736d01000000', 8,
                     '{\"abi_version\":2,\"sdk_version\":\"t\",\"workflows\":[\"W\"],\"activities\":[],\"version_label\":null}', 5);",
        )
        .unwrap();
    }

    #[test]
    fn migration_10_moves_module_code_out_of_the_record_and_keeps_both() {
        let dir = std::env::temp_dir().join(format!(
            "pinion-m10-{}-{}",
            std::process::id(),
            crate::clock::random_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        version_9_file(&path);
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let hash = ModuleHash("m1".into());
        assert_eq!(
            store.module_bytes(&hash).unwrap().as_deref(),
            Some(&b"\0asm\x01\0\0\0"[..])
        );
        let record = store
            .get_module(&hash)
            .unwrap()
            .expect("the record survives");
        assert_eq!((record.size, record.deployed_at_ms), (8, 5));
        assert_eq!(record.manifest.workflows, vec!["W".to_string()]);
        let columns: Vec<String> = store
            .read(|c| {
                let mut st = c
                    .prepare("SELECT name FROM pragma_table_info('modules')")
                    .map_err(map_err)?;
                let rows = st.query_map([], |r| r.get(0)).map_err(map_err)?;
                Ok(rows.map(Result::unwrap).collect())
            })
            .unwrap();
        assert!(!columns.contains(&"bytes".to_string()), "{columns:?}");
        // Deleting the module deletes its code.
        assert!(store.delete_module_if_unused(&hash).unwrap());
        let code_rows: i64 = store
            .read(|c| {
                c.query_row("SELECT count(*) FROM module_code", [], |r| r.get(0))
                    .map_err(map_err)
            })
            .unwrap();
        assert_eq!(code_rows, 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
