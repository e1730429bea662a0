//! The runtime upgrade check: before `pinion server` (or `pinion run`) opens a database for
//! writing, which migrates its schema and starts running its instances, it makes sure this
//! runtime can still run every module that a running or blocked instance is pinned to. A
//! pinion that dropped a guest ABI version, or a host import, would otherwise block those
//! instances one by one, after the database had been migrated past what the previous pinion
//! can open.
//!
//! The check reads the database with a plain read-only connection (a read-only transaction
//! on PostgreSQL), without the schema version check and without migrating (it reads a module's code from where the file's
//! schema keeps it: `modules.bytes` before migration 10, `module_code` since), and
//! loads each pinned module exactly as a worker would: compile (through the compile cache,
//! so the server does not compile it again), link, and read its ABI version and manifest.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::history::ModuleHash;
use crate::registry::{load_cached, RegistryError};
use crate::sandbox::Sandbox;

/// A module that running or blocked instances pin and that this runtime cannot run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnrunnableModule {
    /// Its hash.
    pub hash: String,
    /// Its version label, if it has one.
    pub version_label: Option<String>,
    /// The ABI version its stored manifest declares.
    pub abi_version: Option<u32>,
    /// Running and blocked instances pinned to it.
    pub instances: u64,
    /// Why it cannot run.
    pub reason: String,
}

/// The check could not read the database.
#[derive(Debug, thiserror::Error)]
#[error("cannot check the modules pinned in {path}: {message}")]
pub struct PreflightError {
    path: String,
    message: String,
}

/// The modules that running or blocked instances of the database at `db` (a SQLite file
/// or a PostgreSQL URL) pin and that `sandbox` cannot run, with how many instances pin
/// each. Empty when there is no database yet or it holds no instances.
///
/// # Errors
/// When the database exists but cannot be read.
pub fn unrunnable_pinned_modules(
    db: &Path,
    sandbox: &Sandbox,
    cache_dir: Option<&Path>,
) -> Result<Vec<UnrunnableModule>, PreflightError> {
    let fail = |message: String| PreflightError {
        path: match crate::engine::postgres_url(db) {
            Some(url) => crate::store::postgres::redact(url),
            None => db.display().to_string(),
        },
        message,
    };
    let pinned = match crate::engine::postgres_url(db) {
        Some(url) => pinned_on_postgres(url).map_err(fail)?,
        None => pinned_in_sqlite(db).map_err(fail)?,
    };
    let mut out = Vec::new();
    for (hash, instances, stored) in pinned {
        let Some((bytes, manifest)) = stored else {
            out.push(UnrunnableModule {
                hash,
                version_label: None,
                abi_version: None,
                instances,
                reason: "the module is not stored in this database".into(),
            });
            continue;
        };
        let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap_or_default();
        let h = ModuleHash(hash.clone());
        let checked = load_cached(sandbox, cache_dir, &h, || Ok(bytes.into()))
            .and_then(|loaded| Ok(sandbox.read_manifest(&loaded)?));
        if let Err(e) = checked {
            out.push(UnrunnableModule {
                hash,
                version_label: manifest["version_label"].as_str().map(str::to_owned),
                abi_version: manifest["abi_version"].as_u64().map(|v| v as u32),
                instances,
                reason: match e {
                    RegistryError::Invalid(e) => e.to_string(),
                    other => other.to_string(),
                },
            });
        }
    }
    Ok(out)
}

/// A pinned module: its hash, how many running or blocked instances pin it, and its code
/// and manifest JSON when the database has them.
type Pinned = (String, u64, Option<(Vec<u8>, String)>);

/// The pinned modules of a SQLite file, read without the schema check and without
/// migrating.
fn pinned_in_sqlite(db: &Path) -> Result<Vec<Pinned>, String> {
    if !db.exists() {
        return Ok(Vec::new());
    }
    let e = |e: rusqlite::Error| e.to_string();
    let c = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(e)?;
    c.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(e)?;
    let has_instances: bool = c
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'instances')",
            [],
            |r| r.get(0),
        )
        .map_err(e)?;
    if !has_instances {
        return Ok(Vec::new());
    }
    let pinned: Vec<(String, u64)> = {
        let mut st = c
            .prepare(
                "SELECT module_hash, count(*) FROM instances
                 WHERE status IN ('running', 'blocked') AND imported = 0
                 GROUP BY module_hash ORDER BY module_hash",
            )
            .map_err(e)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)?
    };
    // Since migration 10 a module's code is in `module_code`; before, in `modules.bytes`.
    let split: bool = c
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'module_code')",
            [],
            |r| r.get(0),
        )
        .map_err(e)?;
    let read_module = if split {
        "SELECT c.bytes, m.manifest FROM modules m JOIN module_code c ON c.hash = m.hash WHERE m.hash = ?1"
    } else {
        "SELECT bytes, manifest FROM modules WHERE hash = ?1"
    };
    let mut out = Vec::new();
    for (hash, instances) in pinned {
        let stored = c
            .query_row(read_module, [&hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(e)?;
        out.push((hash, instances, stored));
    }
    Ok(out)
}

/// The pinned modules of a PostgreSQL database, read in a read-only transaction without
/// the schema check and without migrating; nothing for a database without pinion's tables.
fn pinned_on_postgres(url: &str) -> Result<Vec<Pinned>, String> {
    let e = |e: postgres::Error| e.to_string();
    let mut c = postgres::Client::connect(url, postgres::NoTls).map_err(e)?;
    let mut t = c.build_transaction().read_only(true).start().map_err(e)?;
    let has_instances: bool = t
        .query_one(
            "SELECT EXISTS(SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'instances')",
            &[],
        )
        .map_err(e)?
        .get(0);
    if !has_instances {
        return Ok(Vec::new());
    }
    let rows = t
        .query(
            "SELECT i.module_hash, i.n, c.bytes, m.manifest
             FROM (SELECT module_hash, count(*) AS n FROM instances
                   WHERE status IN ('running', 'blocked') AND NOT imported
                   GROUP BY module_hash) i
             LEFT JOIN modules m ON m.hash = i.module_hash
             LEFT JOIN module_code c ON c.hash = i.module_hash
             ORDER BY i.module_hash",
            &[],
        )
        .map_err(e)?;
    Ok(rows
        .iter()
        .map(|r| {
            let bytes: Option<Vec<u8>> = r.get(2);
            let manifest: Option<String> = r.get(3);
            (r.get(0), r.get::<_, i64>(1) as u64, bytes.zip(manifest))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxLimits;

    /// The check reads a module's code from `modules.bytes` in a file from before
    /// migration 10 and from `module_code` after it: either way it finds the code (here not
    /// wasm, so the module is reported for its bytes, not as missing).
    #[test]
    fn the_check_reads_module_code_before_and_after_migration_10() {
        let dir = std::env::temp_dir().join(format!(
            "pinion-preflight-{}-{}",
            std::process::id(),
            crate::clock::random_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sandbox = Sandbox::new(SandboxLimits {
            activity_pool_slots: 0,
            ..SandboxLimits::default()
        })
        .unwrap();
        let instance =
            "CREATE TABLE instances(id TEXT, module_hash TEXT, status TEXT, imported INTEGER);
             INSERT INTO instances VALUES ('i1', 'm1', 'running', 0);";
        let layouts = [
            "CREATE TABLE modules(hash TEXT PRIMARY KEY, bytes BLOB, size INTEGER, manifest TEXT);
             INSERT INTO modules VALUES ('m1', x'00112233445566778899', 10, '{}');",
            "CREATE TABLE modules(hash TEXT PRIMARY KEY, size INTEGER, manifest TEXT);
             CREATE TABLE module_code(hash TEXT PRIMARY KEY, bytes BLOB);
             INSERT INTO modules VALUES ('m1', 10, '{}');
             INSERT INTO module_code VALUES ('m1', x'00112233445566778899');",
        ];
        for (i, layout) in layouts.iter().enumerate() {
            let path = dir.join(format!("l{i}.db"));
            let c = Connection::open(&path).unwrap();
            c.execute_batch(instance).unwrap();
            c.execute_batch(layout).unwrap();
            drop(c);
            let found = unrunnable_pinned_modules(&path, &sandbox, None).unwrap();
            assert_eq!(found.len(), 1, "layout {i}: {found:?}");
            assert_eq!(found[0].instances, 1);
            assert!(
                found[0].reason.contains("magic bytes"),
                "layout {i}: {}",
                found[0].reason
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
