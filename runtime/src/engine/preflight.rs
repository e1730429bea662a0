//! The runtime upgrade check: before `pinion server` (or `pinion run`) opens a database for
//! writing, which migrates its schema and starts running its instances, it makes sure this
//! runtime can still run every module that a running or blocked instance is pinned to. A
//! pinion that dropped a guest ABI version, or a host import, would otherwise block those
//! instances one by one, after the database had been migrated past what the previous pinion
//! can open.
//!
//! The check reads the database with a plain read-only connection, without the schema
//! version check and without migrating (the columns it reads exist since migration 2), and
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

/// The modules that running or blocked instances of the database at `db` pin and that
/// `sandbox` cannot run, with how many instances pin each. Empty when there is no database
/// yet or it holds no instances.
///
/// # Errors
/// When the database exists but cannot be read.
pub fn unrunnable_pinned_modules(
    db: &Path,
    sandbox: &Sandbox,
    cache_dir: Option<&Path>,
) -> Result<Vec<UnrunnableModule>, PreflightError> {
    let fail = |message: String| PreflightError {
        path: db.display().to_string(),
        message,
    };
    if !db.exists() {
        return Ok(Vec::new());
    }
    let c = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(e.to_string()))?;
    c.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| fail(e.to_string()))?;
    let has_instances: bool = c
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'instances')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| fail(e.to_string()))?;
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
            .map_err(|e| fail(e.to_string()))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(|e| fail(e.to_string()))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| fail(e.to_string()))?
    };
    let mut out = Vec::new();
    for (hash, instances) in pinned {
        let stored: Option<(Vec<u8>, String)> = c
            .query_row(
                "SELECT bytes, manifest FROM modules WHERE hash = ?1",
                [&hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| fail(e.to_string()))?;
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
