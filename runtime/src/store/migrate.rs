//! Copying a SQLite database into PostgreSQL (`pinion migrate`): everything a server needs
//! to go on where the file left off — modules and their code, aliases and their history,
//! rollout policies, instances with their histories and archived runs, inboxes (signals
//! not yet delivered), activity tasks, timers, the lifecycle-event outbox, webhook cursors
//! and dead letters.
//!
//! Both schemas have the same tables and columns (PostgreSQL's migration 1 is SQLite's
//! schema at version 10, its 2 SQLite's 11), so the copy is generic: for each table, the
//! columns PostgreSQL has are read from SQLite and written with `COPY ... BINARY`, each
//! value converted to the PostgreSQL column's type (SQLite keeps booleans as integers).
//! Columns only PostgreSQL has (which server owns an instance, leases an attempt) start
//! empty: the attempts the SQLite server had leased are lost attempts on PostgreSQL, and
//! the retry policy runs them again, as after a crash.
//!
//! The whole copy is one PostgreSQL transaction, checked row count by row count before it
//! commits, and the source is read in one SQLite read transaction: it lands whole or not at
//! all, from one consistent state of the file.

use std::path::Path;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use rusqlite::types::Value;

use super::postgres::redact;

/// The tables copied, parents before children (foreign keys hold at every row).
pub const TABLES: &[&str] = &[
    "modules",
    "module_code",
    "aliases",
    "alias_history",
    "policies",
    "instances",
    "events",
    "runs",
    "inbox",
    "activity_tasks",
    "timers",
    "lifecycle_events",
    "webhook_cursors",
    "webhook_dead_letters",
];

/// Tables of the PostgreSQL schema that are not copied: its own schema version, and its
/// servers (none while migrating).
const NOT_COPIED: &[&str] = &["meta", "workers"];

/// Why a migration did not happen. Nothing was written to the destination.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The SQLite file could not be read.
    #[error("reading {path}: {reason}")]
    Source {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The PostgreSQL database refused a read or a write.
    #[error("writing {url}: {reason}")]
    Destination {
        /// The database, without its password.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The destination holds pinion data already.
    #[error("{url} already holds data ({what}); migrate into an empty database, or pass --replace-existing to delete what it holds first")]
    NotEmpty {
        /// The database, without its password.
        url: String,
        /// What it holds.
        what: String,
    },
    /// Servers are running on the destination.
    #[error("{count} pinion server(s) run on {url}; stop them before migrating into it")]
    InUse {
        /// The database, without its password.
        url: String,
        /// How many.
        count: i64,
    },
    /// A value does not fit its PostgreSQL column (a schema this pinion does not know).
    #[error("table {table}, column {column}: {reason}")]
    Value {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What does not fit.
        reason: String,
    },
}

/// Rows copied per table, in [`TABLES`] order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrateReport {
    /// `(table, rows)`.
    pub tables: Vec<(String, u64)>,
    /// Whether the destination's previous data was deleted first.
    pub replaced: bool,
}

fn source_err(path: &Path) -> impl Fn(rusqlite::Error) -> MigrateError + '_ {
    move |e| MigrateError::Source {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Copies the SQLite database at `from` into the PostgreSQL database at `to`. Both must be
/// at this pinion's schema version (open each once first: opening migrates), the file must
/// not be written meanwhile (hold its worker lock), and `to` must hold no pinion data
/// unless `replace_existing`, which deletes it first (in the same transaction).
///
/// # Errors
/// [`MigrateError`]; nothing is written then.
pub fn sqlite_to_postgres(
    from: &Path,
    to: &str,
    replace_existing: bool,
) -> Result<MigrateReport, MigrateError> {
    let url = redact(to);
    let dest_err = |e: postgres::Error| MigrateError::Destination {
        url: url.clone(),
        reason: match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        },
    };
    let mut src = rusqlite::Connection::open_with_flags(
        from,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(source_err(from))?;
    let read = src.transaction().map_err(source_err(from))?;
    let mut pg = postgres::Client::connect(to, postgres::NoTls).map_err(dest_err)?;
    let mut tx = pg.transaction().map_err(dest_err)?;

    let tables: Vec<String> = tx
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1",
            &[],
        )
        .map_err(dest_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(t) = tables
        .iter()
        .find(|t| !TABLES.contains(&t.as_str()) && !NOT_COPIED.contains(&t.as_str()))
    {
        return Err(MigrateError::Value {
            table: t.clone(),
            column: "-".into(),
            reason: "a table this pinion does not know how to migrate (a newer schema?)".into(),
        });
    }
    let servers: i64 = tx
        .query_one("SELECT count(*) FROM workers", &[])
        .map_err(dest_err)?
        .get(0);
    if servers > 0 {
        return Err(MigrateError::InUse {
            url,
            count: servers,
        });
    }
    let mut held = Vec::new();
    for t in ["modules", "instances", "aliases", "lifecycle_events"] {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .map_err(dest_err)?
            .get(0);
        if n > 0 {
            held.push(format!("{n} {t}"));
        }
    }
    if !held.is_empty() {
        if !replace_existing {
            return Err(MigrateError::NotEmpty {
                url,
                what: held.join(", "),
            });
        }
        tx.batch_execute(&format!(
            "TRUNCATE {} RESTART IDENTITY CASCADE",
            TABLES.join(", ")
        ))
        .map_err(dest_err)?;
    }

    let mut report = MigrateReport {
        tables: Vec::new(),
        replaced: !held.is_empty(),
    };
    for &table in TABLES {
        let columns: Vec<(String, String, bool)> = tx
            .query(
                "SELECT column_name::text, data_type::text, coalesce(column_default, '') LIKE 'nextval(%'
                 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                &[&table],
            )
            .map_err(dest_err)?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let in_source: Vec<String> = read
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(source_err(from))?;
        let copied: Vec<&(String, String, bool)> = columns
            .iter()
            .filter(|(c, _, _)| in_source.contains(c))
            .collect();
        let types = copied
            .iter()
            .map(|(c, ty, _)| {
                pg_type(ty).ok_or_else(|| MigrateError::Value {
                    table: table.into(),
                    column: c.clone(),
                    reason: format!("PostgreSQL type {ty} is not one this pinion writes"),
                })
            })
            .collect::<Result<Vec<Type>, _>>()?;
        let names: Vec<&str> = copied.iter().map(|(c, _, _)| c.as_str()).collect();
        let mut stmt = read
            .prepare(&format!("SELECT {} FROM {table}", names.join(", ")))
            .map_err(source_err(from))?;
        let mut rows = stmt.query([]).map_err(source_err(from))?;
        let sink = tx
            .copy_in(&format!(
                "COPY {table} ({}) FROM STDIN BINARY",
                names.join(", ")
            ))
            .map_err(dest_err)?;
        let mut writer = BinaryCopyInWriter::new(sink, &types);
        let mut count = 0u64;
        while let Some(row) = rows.next().map_err(source_err(from))? {
            let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(names.len());
            for (i, ty) in types.iter().enumerate() {
                let v: Value = row.get(i).map_err(source_err(from))?;
                values.push(convert(v, ty).map_err(|reason| MigrateError::Value {
                    table: table.into(),
                    column: names[i].into(),
                    reason,
                })?);
            }
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|b| &**b).collect();
            writer.write(&refs).map_err(dest_err)?;
            count += 1;
        }
        writer.finish().map_err(dest_err)?;
        drop(rows);
        drop(stmt);
        // Serial ids go on after the largest copied one.
        for (c, _, _) in columns.iter().filter(|(_, _, serial)| *serial) {
            tx.batch_execute(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{c}'),
                               coalesce((SELECT max({c}) FROM {table}), 1),
                               (SELECT max({c}) FROM {table}) IS NOT NULL)"
            ))
            .map_err(dest_err)?;
        }
        let written: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .map_err(dest_err)?
            .get(0);
        if written as u64 != count {
            return Err(MigrateError::Destination {
                url,
                reason: format!("table {table}: {count} rows read but {written} written"),
            });
        }
        report.tables.push((table.to_owned(), count));
    }
    tx.commit().map_err(dest_err)?;
    Ok(report)
}

fn pg_type(data_type: &str) -> Option<Type> {
    Some(match data_type {
        "bigint" => Type::INT8,
        "integer" => Type::INT4,
        "smallint" => Type::INT2,
        "boolean" => Type::BOOL,
        "text" | "character varying" => Type::TEXT,
        "bytea" => Type::BYTEA,
        "double precision" => Type::FLOAT8,
        _ => return None,
    })
}

/// A SQLite value as the PostgreSQL column of type `ty` takes it.
fn convert(v: Value, ty: &Type) -> Result<Box<dyn ToSql + Sync>, String> {
    let mismatch = |v: &Value| {
        format!(
            "a SQLite {:?} value does not fit a {ty} column",
            v.data_type()
        )
    };
    Ok(match (v, ty) {
        (Value::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
        (Value::Null, t) if *t == Type::INT4 => Box::new(None::<i32>),
        (Value::Null, t) if *t == Type::INT2 => Box::new(None::<i16>),
        (Value::Null, t) if *t == Type::BOOL => Box::new(None::<bool>),
        (Value::Null, t) if *t == Type::TEXT => Box::new(None::<String>),
        (Value::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
        (Value::Null, t) if *t == Type::FLOAT8 => Box::new(None::<f64>),
        (Value::Integer(i), t) if *t == Type::INT8 => Box::new(i),
        (Value::Integer(i), t) if *t == Type::INT4 => {
            Box::new(i32::try_from(i).map_err(|_| format!("{i} is too large for {ty}"))?)
        }
        (Value::Integer(i), t) if *t == Type::INT2 => {
            Box::new(i16::try_from(i).map_err(|_| format!("{i} is too large for {ty}"))?)
        }
        (Value::Integer(i), t) if *t == Type::BOOL => Box::new(i != 0),
        (Value::Integer(i), t) if *t == Type::FLOAT8 => Box::new(i as f64),
        (Value::Integer(i), t) if *t == Type::TEXT => Box::new(i.to_string()),
        (Value::Real(f), t) if *t == Type::FLOAT8 => Box::new(f),
        (Value::Text(s), t) if *t == Type::TEXT => Box::new(s),
        (Value::Text(s), t) if *t == Type::BYTEA => Box::new(s.into_bytes()),
        (Value::Blob(b), t) if *t == Type::BYTEA => Box::new(b),
        (Value::Blob(b), t) if *t == Type::TEXT => {
            Box::new(String::from_utf8(b).map_err(|_| "bytes that are not UTF-8 text".to_owned())?)
        }
        (v, _) => return Err(mismatch(&v)),
    })
}
