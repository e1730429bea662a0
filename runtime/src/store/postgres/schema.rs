//! The numbered migrations (`0001_schema.sql`, ...) that bring a PostgreSQL database to
//! this build's schema, and the check a read-only open makes instead.
//!
//! Migrations run in one transaction under a transaction-scoped advisory lock, so two
//! processes opening a new database at once apply each migration once.

use postgres::Client;

use super::map_err;
use crate::store::StoreError;

/// Numbered migrations, applied in order; `meta.schema_version` records the last one
/// applied. Never edit a released migration: add the next one.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("0001_schema.sql")),
    (2, include_str!("0002_webhook_dead_letters.sql")),
    (3, include_str!("0003_workers.sql")),
    (4, include_str!("0004_step_function.sql")),
];
/// The schema version this build reads and writes.
const SCHEMA_VERSION: u32 = 4;
/// The advisory lock key of schema migrations ("pinmig" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x7069_6e6d_6967;

fn version(c: &mut impl postgres::GenericClient) -> Result<Option<u32>, StoreError> {
    let has_meta: bool = c
        .query_one(
            "SELECT EXISTS(SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'meta')",
            &[],
        )
        .map_err(map_err)?
        .get(0);
    if !has_meta {
        return Ok(None);
    }
    let v = c
        .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
        .map_err(map_err)?
        .map(|r| r.get::<_, String>(0));
    Ok(v.and_then(|v| v.parse().ok()))
}

/// Refuses a database that is not at this build's schema version.
pub(super) fn check(c: &mut Client) -> Result<(), StoreError> {
    match version(c)? {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(v) if v < SCHEMA_VERSION => Err(StoreError::Corrupt(format!(
            "database schema version {v} is older than this pinion's ({SCHEMA_VERSION}); open it once with a command that writes (for example `pinion list`) to migrate it"
        ))),
        Some(v) => Err(StoreError::Corrupt(format!(
            "database schema version {v} is newer than this pinion supports ({SCHEMA_VERSION}); upgrade pinion"
        ))),
        None => Err(StoreError::Corrupt("the database is not a pinion database (no schema)".into())),
    }
}

/// Applies the migrations this database lacks.
pub(super) fn migrate(c: &mut Client) -> Result<(), StoreError> {
    if matches!(version(c), Ok(Some(SCHEMA_VERSION))) {
        return Ok(());
    }
    let mut t = c.transaction().map_err(map_err)?;
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .map_err(map_err)?;
    let current = match version(&mut t)? {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::Corrupt(format!(
                "database schema version {v} is newer than this pinion supports ({SCHEMA_VERSION}); upgrade pinion"
            )))
        }
        Some(v) => v,
        None => {
            // A database with tables of its own but no pinion meta row is someone else's.
            let tables: i64 = t
                .query_one(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
                    &[],
                )
                .map_err(map_err)?
                .get(0);
            if tables > 0 {
                return Err(StoreError::Corrupt(
                    "the database has tables but is not a pinion database".into(),
                ));
            }
            0
        }
    };
    for (n, sql) in MIGRATIONS.iter().filter(|(n, _)| *n > current) {
        t.batch_execute(sql).map_err(map_err)?;
        t.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&n.to_string()],
        )
        .map_err(map_err)?;
    }
    t.commit().map_err(map_err)
}
