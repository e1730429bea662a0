//! The embedded [`Store`]: one SQLite file in WAL mode.
//!
//! # Why one writer thread
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` every commit costs an
//! fsync. So all writes go, as closures, over a bounded channel to a single thread that
//! owns the write connection. It takes whatever is queued (up to [`SqliteOptions::max_batch`]),
//! runs each closure inside its own `SAVEPOINT` of one `BEGIN IMMEDIATE` transaction, commits
//! once, and only then answers every caller: *group commit*. Under load many instances'
//! state changes share one fsync; a caller never hears "done" before its data is durable,
//! and one failing closure rolls back only its own savepoint. (Obelisk's db-sqlite uses the
//! same shape.)
//!
//! Reads use a small pool of separate connections; WAL lets them run beside the writer.
//!
//! Files: this one has the [`Store`] implementation; `writer.rs` the single writer thread;
//! `schema.rs` connections, pragmas and numbered migrations; `rows.rs` row decoding;
//! `import.rs` history import; `deploy.rs` the [`crate::store::DeploymentStore`] part;
//! `lifecycle.rs` creating, ending, terminating and continuing instances; `events.rs` the
//! outbox of lifecycle events ([`crate::store::EventStore`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use pinion_abi::Manifest;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    ActivationCommit, ActivityResolution, ActivityTask, InboxEntry, InstanceFilter,
    InstanceOutcome, InstanceRecord, ModuleRecord, NewInstance, PendingActivity, PendingState,
    Store, StoreError, Transition,
};
use crate::history::{EventKind, HistoryEvent, HistoryExport, InstanceId, ModuleHash, Payload};

mod backup;
mod census;
mod deploy;
mod events;
mod gauges;
mod import;
mod lifecycle;
mod rows;
mod schema;
mod writer;

pub use backup::{backup, BackupReport};

use rows::{finish_instance, finish_module, instance_from_row, module_from_row, INSTANCE_COLUMNS};
use writer::{writer_loop, Op, Reply, WriteJob};

/// `synchronous` pragma levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync on every commit (the default: no acknowledged step is ever lost).
    Full,
    /// fsync at checkpoints only; a power cut may lose the last commits.
    Normal,
    /// No fsync (benchmarks of the engine without the disk).
    Off,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        }
    }
}

/// How to open the database.
///
/// Defaults: `synchronous = Full`, `busy_timeout = 5 s`, `max_batch = 256`,
/// `read_only = false`.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// How long to wait for another process's lock before failing with `Locked`.
    pub busy_timeout: Duration,
    /// Most write closures committed in one transaction.
    pub max_batch: usize,
    /// Open without write access (replay, inspection). Writes fail.
    pub read_only: bool,
    /// Largest size of the database file, in pages of 4 KiB (SQLite's `max_page_count`);
    /// a write that would grow it further fails as if the disk were full. `None`: no
    /// limit but the disk's.
    pub max_pages: Option<u64>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_batch: 256,
            read_only: false,
            max_pages: None,
        }
    }
}

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    options: SqliteOptions,
    writer: Mutex<Option<SyncSender<WriteJob>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<ReaderPool>,
    readers_free: std::sync::Condvar,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                StoreError::Locked(e.to_string())
            }
            ErrorCode::NotADatabase => StoreError::Corrupt(format!("not a pinion database: {e}")),
            ErrorCode::DatabaseCorrupt => StoreError::Corrupt(e.to_string()),
            ErrorCode::DiskFull => StoreError::Database(format!(
                "the disk (or the database's size limit) is full, nothing of this write was stored; free space and retry: {e}"
            )),
            ErrorCode::ConstraintViolation => match f.extended_code {
                rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => {
                    StoreError::AlreadyExists(e.to_string())
                }
                _ => StoreError::Constraint(e.to_string()),
            },
            ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly => {
                StoreError::Database(e.to_string())
            }
            _ => StoreError::Database(e.to_string()),
        },
        _ => StoreError::Database(e.to_string()),
    }
}

/// `Connection::execute` through the prepared-statement cache: the hot paths run the same
/// few statements thousands of times, and re-parsing SQL showed up as ~7% of a profile.
fn exec<P: rusqlite::Params>(c: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

/// `Connection::query_row` through the prepared-statement cache.
fn query_one<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
    c: &Connection,
    sql: &str,
    params: P,
    f: F,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(params, f)
}

/// The query of `Store::list_instances` and its arguments: newest first (then by id), each
/// filter an index range (migration 8), so a page costs the same at a million instances as
/// at a thousand (see the query-plan test below).
fn list_sql(filter: &InstanceFilter) -> (String, Vec<String>) {
    let mut sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE 1 = 1");
    let mut args: Vec<String> = Vec::new();
    if let Some(s) = filter.status {
        args.push(s.as_str().into());
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    if let Some(t) = &filter.workflow_type {
        args.push(t.clone());
        sql.push_str(&format!(" AND workflow_type = ?{}", args.len()));
    }
    if let Some(m) = &filter.module_hash {
        args.push(m.0.clone());
        sql.push_str(&format!(" AND module_hash = ?{}", args.len()));
    }
    if let Some(t) = filter.created_since_ms {
        args.push(t.to_string());
        sql.push_str(&format!(
            " AND created_at_ms >= CAST(?{} AS INTEGER)",
            args.len()
        ));
    }
    if !filter.ids.is_empty() {
        let first = args.len() + 1;
        args.extend(filter.ids.iter().map(|i| i.0.clone()));
        let marks: Vec<String> = (first..=args.len()).map(|n| format!("?{n}")).collect();
        sql.push_str(&format!(" AND id IN ({})", marks.join(", ")));
    }
    if let Some((created, id)) = &filter.after {
        args.push(created.to_string());
        args.push(id.0.clone());
        let (c, i) = (args.len() - 1, args.len());
        sql.push_str(&format!(
            " AND (created_at_ms < CAST(?{c} AS INTEGER) \
             OR (created_at_ms = CAST(?{c} AS INTEGER) AND id > ?{i}))"
        ));
    }
    sql.push_str(" ORDER BY created_at_ms DESC, id");
    if let Some(l) = filter.limit {
        sql.push_str(&format!(" LIMIT {l}"));
    }
    (sql, args)
}

/// The write that records an activity attempt's fate (see `Store::resolve_activity`).
fn resolve_op(
    instance: &InstanceId,
    seq: u32,
    attempt: u32,
    resolution: ActivityResolution,
    now_ms: u64,
) -> impl FnOnce(&Connection) -> Result<bool, StoreError> + Send + 'static {
    let instance = instance.0.clone();
    move |c| {
        let current: Option<u32> = query_one(
            c,
            "SELECT attempt FROM activity_tasks WHERE instance_id = ?1 AND seq = ?2",
            params![instance, seq],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?;
        if current != Some(attempt) {
            return Ok(false);
        }
        match resolution {
            ActivityResolution::Retry {
                next_attempt,
                visible_at_ms,
                failure,
                heartbeat_details,
            } => {
                let beat_at = heartbeat_details.as_ref().map(|_| now_ms as i64);
                exec(c,
                    "UPDATE activity_tasks SET attempt = ?3, visible_at_ms = ?4, lease_until_ms = NULL,
                        started_at_ms = NULL, last_failure = ?5,
                        heartbeat_details = coalesce(?6, heartbeat_details),
                        last_heartbeat_ms = coalesce(?7, last_heartbeat_ms)
                     WHERE instance_id = ?1 AND seq = ?2",
                    params![
                        instance,
                        seq,
                        next_attempt,
                        visible_at_ms as i64,
                        to_json(&failure)?,
                        heartbeat_details.as_ref().map(Payload::json),
                        beat_at
                    ],
                )
                .map_err(map_err)?;
            }
            ActivityResolution::Resolve(kind) => {
                exec(
                    c,
                    "DELETE FROM activity_tasks WHERE instance_id = ?1 AND seq = ?2",
                    params![instance, seq],
                )
                .map_err(map_err)?;
                push_inbox(c, &instance, now_ms, &kind)?;
            }
        }
        Ok(true)
    }
}

/// The columns an [`ActivityTask`] is read from, in the order [`task_row`] reads them.
macro_rules! task_columns {
    () => {
        "instance_id, module_hash, seq, activity_type, input, options, attempt, heartbeat_details"
    };
}

/// An activity task's columns, as stored.
type TaskRow = (
    String,
    String,
    u32,
    String,
    String,
    String,
    u32,
    Option<String>,
);

fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

/// Decodes a task row (a claim's, or a lost attempt's).
fn task_of(row: TaskRow) -> Result<ActivityTask, StoreError> {
    let (iid, mh, seq, ty, input, options, attempt, details) = row;
    Ok(ActivityTask {
        instance_id: InstanceId(iid),
        module_hash: ModuleHash(mh),
        seq,
        activity_type: ty,
        input: Payload::from_json_bytes(input.as_bytes())
            .map_err(|e| corrupt("activity input", e))?,
        options: serde_json::from_str(&options).map_err(|e| corrupt("activity options", e))?,
        attempt,
        heartbeat_details: details.map(|d| heartbeat_payload(&d)).transpose()?,
    })
}

fn heartbeat_payload(json: &str) -> Result<Payload, StoreError> {
    Payload::from_json_bytes(json.as_bytes()).map_err(|e| corrupt("heartbeat details", e))
}

/// The write that commits one activation (see `Store::commit_activation`); encoding
/// happens here, on the caller's thread, so the writer thread only runs SQL.
fn commit_op(
    commit: ActivationCommit,
) -> Result<impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static, StoreError> {
    let mut encoded = Vec::with_capacity(commit.events.len());
    for (eid, kind) in &commit.events {
        encoded.push((*eid, to_json(kind)?));
    }
    let mut activities = Vec::with_capacity(commit.new_activities.len());
    for a in &commit.new_activities {
        activities.push((
            a.seq,
            a.activity_type.clone(),
            a.input.json().to_owned(),
            to_json(&a.options)?,
            a.lease_until_ms.map(|t| t as i64),
        ));
    }
    let super::encode::OutcomeColumns {
        status,
        result,
        failure,
        cancelled,
    } = outcome_columns(&commit.outcome)?;
    Ok(move |c: &Connection| {
        let id = &commit.instance_id.0;
        let now = commit.now_ms as i64;
        if let Some(started) = &commit.create {
            lifecycle::insert_instance(c, &commit.instance_id, started, commit.now_ms)?;
        }
        let (count, cur_status, module): (i64, String, String) = query_one(
            c,
            "SELECT event_count, status, module_hash FROM instances WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(map_err)?
        .ok_or_else(|| StoreError::NotFound(format!("instance {id}")))?;
        if count as u64 + 1 != commit.expected_next_event || cur_status != "running" {
            return Err(StoreError::Conflict(format!(
                "instance {id}: expected to append event {} but history has {count} events and status {cur_status}",
                commit.expected_next_event
            )));
        }
        {
            let mut ins = c
                .prepare_cached(
                    "INSERT INTO events(instance_id, id, time_ms, data) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(map_err)?;
            for (eid, data) in &encoded {
                ins.execute(params![id, *eid as i64, now, data])
                    .map_err(map_err)?;
            }
            let mut del = c
                .prepare_cached("DELETE FROM inbox WHERE id = ?1 AND instance_id = ?2")
                .map_err(map_err)?;
            for iid in &commit.consumed_inbox {
                del.execute(params![iid, id]).map_err(map_err)?;
            }
            let mut done = c
                .prepare_cached(
                    "DELETE FROM activity_tasks WHERE instance_id = ?1 AND seq = ?2 AND attempt = ?3",
                )
                .map_err(map_err)?;
            for (seq, attempt) in &commit.resolved_activities {
                if done.execute(params![id, seq, attempt]).map_err(map_err)? != 1 {
                    return Err(StoreError::Conflict(format!(
                        "instance {id}: attempt {attempt} of activity {seq} is no longer current (cancelled, or retried elsewhere)"
                    )));
                }
            }
        }
        let start_children = |c: &Connection| -> Result<(), StoreError> {
            for child in &commit.new_children {
                lifecycle::start_child(c, id, child.seq, &child.id, &child.started, commit.now_ms)?;
            }
            for seq in &commit.cancelled_children {
                lifecycle::cancel_child(
                    c,
                    id,
                    *seq,
                    &format!("its parent {id} was cancelled"),
                    commit.now_ms,
                )?;
            }
            Ok(())
        };
        if let InstanceOutcome::ContinuedAsNew(started, unread) = &commit.outcome {
            // The old run's children cannot report to the new run, which never started
            // them: they end with the run.
            start_children(c)?;
            lifecycle::terminate_children(c, id, commit.now_ms)?;
            return lifecycle::continue_as_new(c, id, started, unread, commit.now_ms);
        }
        if status == "running" {
            start_children(c)?;
            let mut ins = c
                .prepare_cached(
                    "INSERT INTO activity_tasks(instance_id, seq, module_hash, activity_type, input, options, attempt, visible_at_ms, lease_until_ms, started_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, CASE WHEN ?8 IS NULL THEN NULL ELSE ?7 END)",
                )
                .map_err(map_err)?;
            for (seq, ty, input, options, lease) in &activities {
                ins.execute(params![id, seq, module, ty, input, options, now, lease])
                    .map_err(map_err)?;
            }
            let mut t = c
                .prepare_cached(
                    "INSERT INTO timers(instance_id, seq, fire_at_ms) VALUES (?1, ?2, ?3)",
                )
                .map_err(map_err)?;
            for timer in &commit.new_timers {
                t.execute(params![id, timer.seq, timer.fire_at_ms as i64])
                    .map_err(map_err)?;
            }
            let mut d = c
                .prepare_cached("DELETE FROM timers WHERE instance_id = ?1 AND seq = ?2")
                .map_err(map_err)?;
            for seq in &commit.cancelled_timers {
                d.execute(params![id, seq]).map_err(map_err)?;
            }
            let mut d = c
                .prepare_cached("DELETE FROM activity_tasks WHERE instance_id = ?1 AND seq = ?2")
                .map_err(map_err)?;
            for seq in &commit.cancelled_activities {
                d.execute(params![id, seq]).map_err(map_err)?;
            }
            let pending: i64 = query_one(
                c,
                "SELECT EXISTS(SELECT 1 FROM inbox WHERE instance_id = ?1)",
                [id],
                |r| r.get(0),
            )
            .map_err(map_err)?;
            exec(c,
                "UPDATE instances SET event_count = ?2, updated_at_ms = ?3, runnable = ?4, closing = 0 WHERE id = ?1",
                params![id, count + encoded.len() as i64, now, pending],
            )
            .map_err(map_err)?;
        } else {
            // Input that arrived while this activation ran (a signal, typically) must not
            // vanish with the instance: refuse to close, so the worker redoes the
            // activation with that input delivered and recorded.
            let late: bool = query_one(
                c,
                "SELECT EXISTS(SELECT 1 FROM inbox WHERE instance_id = ?1)",
                [id],
                |r| r.get(0),
            )
            .map_err(map_err)?;
            if late {
                return Err(StoreError::Conflict(format!(
                    "instance {id}: new input arrived while its final activation ran; redoing it with that input"
                )));
            }
            start_children(c)?;
            lifecycle::clear_work(c, id)?;
            exec(c,
                "UPDATE instances SET event_count = ?2, updated_at_ms = ?3, runnable = 0, status = ?4, result = ?5, failure = ?6
                 WHERE id = ?1",
                params![id, count + encoded.len() as i64, now, status, result, failure],
            )
            .map_err(map_err)?;
            let (ending, transition) = match &commit.outcome {
                InstanceOutcome::Completed(p) => {
                    (lifecycle::Ending::Completed(p), Transition::Completed)
                }
                InstanceOutcome::Failed(f) => (
                    lifecycle::Ending::Failed(f),
                    Transition::Failed { failure: f.clone() },
                ),
                _ => (
                    lifecycle::Ending::Failed(&cancelled),
                    Transition::Cancelled {
                        reason: cancelled.message.clone(),
                    },
                ),
            };
            events::publish(c, id, &transition, commit.now_ms)?;
            lifecycle::ended(c, id, ending, commit.now_ms)?;
        }
        Ok(())
    })
}

/// Reader connections open at most (kept open between reads).
const MAX_READERS: usize = 32;

/// Reader connections: the idle ones, and how many are open in all.
#[derive(Default)]
struct ReaderPool {
    idle: Vec<Connection>,
    open: usize,
}

/// Rows of `(id, time_ms, event JSON)` for one instance (history and inbox share the shape).
fn event_rows(
    c: &Connection,
    sql: &str,
    id: &InstanceId,
    what: &str,
) -> Result<Vec<(i64, u64, EventKind)>, StoreError> {
    let mut st = c.prepare_cached(sql).map_err(map_err)?;
    let rows = st
        .query_map([&id.0], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(map_err)?;
    rows.map(|r| {
        let (rid, t, data) = r.map_err(map_err)?;
        let kind = serde_json::from_str(&data)
            .map_err(|e| corrupt(&format!("{what} {rid} of {id}"), e))?;
        Ok((rid, t as u64, kind))
    })
    .collect()
}

/// An instance's history, in order, on any connection (a reader, or the writer inside a
/// transaction).
fn history(c: &Connection, id: &InstanceId) -> Result<Vec<HistoryEvent>, StoreError> {
    let sql = "SELECT id, time_ms, data FROM events WHERE instance_id = ?1 ORDER BY id";
    Ok(event_rows(c, sql, id, "event")?
        .into_iter()
        .map(|(eid, time_ms, kind)| HistoryEvent {
            id: eid as u64,
            time_ms,
            kind,
        })
        .collect())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed, unless read-only) the database at `path`.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the file cannot be opened or is not a pinion database,
    /// [`StoreError::Locked`] when another process holds it past the busy timeout.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        if options.read_only && !path.exists() {
            return Err(open_err("no such file".into()));
        }
        let conn = Self::connect(&path, &options).map_err(|e| open_err(map_err(e).to_string()))?;
        if !options.read_only {
            Self::migrate(&conn).map_err(|e| match e {
                StoreError::Locked(m) => StoreError::Locked(m),
                other => open_err(other.to_string()),
            })?;
        } else {
            Self::check_schema(&conn).map_err(|e| open_err(e.to_string()))?;
        }
        let store = SqliteStore {
            path: path.clone(),
            options: options.clone(),
            writer: Mutex::new(None),
            writer_thread: Mutex::new(None),
            readers: Mutex::new(ReaderPool::default()),
            readers_free: std::sync::Condvar::new(),
        };
        if !options.read_only {
            let (tx, rx) = sync_channel::<WriteJob>(options.max_batch * 4);
            let max_batch = options.max_batch;
            let handle = std::thread::Builder::new()
                .name("pinion-sqlite-writer".into())
                .spawn(move || writer_loop(conn, rx, max_batch))
                .map_err(|e| open_err(format!("cannot start writer thread: {e}")))?;
            *store.writer.lock().expect("writer lock") = Some(tx);
            *store.writer_thread.lock().expect("writer thread lock") = Some(handle);
        } else {
            let mut pool = store.readers.lock().expect("readers lock");
            pool.idle.push(conn);
            pool.open = 1;
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        // At most MAX_READERS connections are open; a reader beyond them waits for one.
        // They are kept for reuse (a new connection re-reads the schema and prepares every
        // statement again).
        let conn = {
            let mut pool = self.readers.lock().expect("readers lock");
            loop {
                if let Some(c) = pool.idle.pop() {
                    break Some(c);
                }
                if pool.open < MAX_READERS {
                    pool.open += 1;
                    break None;
                }
                pool = self.readers_free.wait(pool).expect("readers lock");
            }
        };
        let conn = match conn {
            Some(c) => c,
            None => match Self::connect(&self.path, &self.options) {
                Ok(c) => c,
                Err(e) => {
                    self.readers.lock().expect("readers lock").open -= 1;
                    self.readers_free.notify_one();
                    return Err(map_err(e));
                }
            },
        };
        let r = f(&conn);
        self.readers.lock().expect("readers lock").idle.push(conn);
        self.readers_free.notify_one();
        r
    }

    fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let sender = self
            .writer
            .lock()
            .expect("writer lock")
            .clone()
            .ok_or_else(|| {
                if self.options.read_only {
                    StoreError::Database("the database was opened read-only".into())
                } else {
                    StoreError::Closed
                }
            })?;
        let (tx, rx) = sync_channel::<Result<R, StoreError>>(1);
        let job: WriteJob = Box::new(Op {
            f: Some(f),
            result: None,
            reply: Reply::Channel(tx),
        });
        sender.send(job).map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// [`SqliteStore::write`] without waiting: `done` gets the answer on the writer thread
    /// once the batch holding the write has committed (or failed).
    fn write_then<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        done: Box<dyn FnOnce(Result<R, StoreError>) + Send>,
    ) {
        let sender = self.writer.lock().expect("writer lock").clone();
        let Some(sender) = sender else {
            return done(Err(StoreError::Closed));
        };
        let job: WriteJob = Box::new(Op {
            f: Some(f),
            result: None,
            reply: Reply::Callback(done),
        });
        if let Err(std::sync::mpsc::SendError(job)) = sender.send(job) {
            job.finish(Err(StoreError::Closed));
        }
    }

    /// Stops the writer thread after it drains its queue. Called on drop too.
    pub fn close(&self) {
        self.writer.lock().expect("writer lock").take();
        if let Some(h) = self
            .writer_thread
            .lock()
            .expect("writer thread lock")
            .take()
        {
            let _ = h.join();
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

use super::encode::{outcome_columns, reason_failure, to_json};

fn mark_runnable(conn: &Connection, instance: &str, now_ms: u64) -> Result<(), StoreError> {
    exec(conn,
        "UPDATE instances SET runnable = 1, updated_at_ms = ?2 WHERE id = ?1 AND status = 'running'",
        params![instance, now_ms as i64],
    )
    .map_err(map_err)?;
    Ok(())
}

fn push_inbox(
    conn: &Connection,
    instance: &str,
    now_ms: u64,
    kind: &EventKind,
) -> Result<(), StoreError> {
    exec(
        conn,
        "INSERT INTO inbox(instance_id, time_ms, data) VALUES (?1, ?2, ?3)",
        params![instance, now_ms as i64, to_json(kind)?],
    )
    .map_err(map_err)?;
    mark_runnable(conn, instance, now_ms)
}

/// The state of an instance that may take input (running or blocked, not imported):
/// `(event_count, cancel_requested)`.
fn accepting(conn: &Connection, id: &str) -> Result<(i64, bool), StoreError> {
    let row: Option<(String, i64, i64, i64)> = query_one(
        conn,
        "SELECT status, event_count, imported, cancel_requested FROM instances WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()
    .map_err(map_err)?;
    let Some((status, count, imported, cancel_requested)) = row else {
        return Err(StoreError::NotFound(format!("instance {id}")));
    };
    if imported != 0 {
        return Err(StoreError::NotAccepting {
            id: id.to_owned(),
            state: "an imported history".into(),
            hint: "it is kept for replay and never runs".into(),
        });
    }
    if status != "running" && status != "blocked" {
        return Err(StoreError::NotAccepting {
            id: id.to_owned(),
            state: status,
            hint: "it has ended and takes no more input".into(),
        });
    }
    Ok((count, cancel_requested != 0))
}

impl Store for SqliteStore {
    fn put_module(
        &self,
        hash: &ModuleHash,
        bytes: &[u8],
        manifest: &Manifest,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (hash, bytes, manifest) = (hash.0.clone(), bytes.to_vec(), to_json(manifest)?);
        self.write(move |c| {
            let n = c
                .execute(
                    "INSERT OR IGNORE INTO modules(hash, size, manifest, deployed_at_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![hash, bytes.len() as i64, manifest, now_ms as i64],
                )
                .map_err(map_err)?;
            if n == 1 {
                c.execute(
                    "INSERT INTO module_code(hash, bytes) VALUES (?1, ?2)",
                    params![hash, bytes],
                )
                .map_err(map_err)?;
            }
            Ok(n == 1)
        })
    }

    fn get_module(&self, hash: &ModuleHash) -> Result<Option<ModuleRecord>, StoreError> {
        self.read(|c| {
            query_one(
                c,
                "SELECT hash, size, manifest, deployed_at_ms FROM modules WHERE hash = ?1",
                [&hash.0],
                module_from_row,
            )
            .optional()
            .map_err(map_err)?
            .map(finish_module)
            .transpose()
        })
    }

    fn module_bytes(&self, hash: &ModuleHash) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| {
            query_one(
                c,
                "SELECT bytes FROM module_code WHERE hash = ?1",
                [&hash.0],
                |r| r.get(0),
            )
            .optional()
            .map_err(map_err)
        })
    }

    fn list_modules(&self) -> Result<Vec<ModuleRecord>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare("SELECT hash, size, manifest, deployed_at_ms FROM modules ORDER BY deployed_at_ms DESC, hash")
                .map_err(map_err)?;
            let rows = st.query_map([], module_from_row).map_err(map_err)?;
            rows.map(|r| r.map_err(map_err).and_then(finish_module)).collect()
        })
    }

    fn create_instance(&self, new: NewInstance) -> Result<(), StoreError> {
        self.write(move |c| lifecycle::insert_instance(c, &new.id, &new.started, new.now_ms))
    }

    fn get_instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        self.read(|c| {
            query_one(
                c,
                &format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = ?1"),
                [&id.0],
                instance_from_row,
            )
            .optional()
            .map_err(map_err)?
            .map(finish_instance)
            .transpose()
        })
    }

    fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>, StoreError> {
        let (sql, args) = list_sql(filter);
        self.read(|c| {
            let mut st = c.prepare(&sql).map_err(map_err)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args.iter()), instance_from_row)
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err).and_then(finish_instance))
                .collect()
        })
    }

    fn load_history(&self, id: &InstanceId) -> Result<Vec<HistoryEvent>, StoreError> {
        self.read(|c| history(c, id))
    }

    fn archived_run(&self, id: &InstanceId, run: u32) -> Result<Option<HistoryExport>, StoreError> {
        let row: Option<(String, String, String)> = self.read(|c| {
            query_one(
                c,
                "SELECT workflow_type, module_hash, events FROM runs WHERE instance_id = ?1 AND run = ?2",
                params![id.0, run],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(map_err)
        })?;
        let Some((workflow_type, module_hash, events)) = row else {
            return Ok(None);
        };
        Ok(Some(HistoryExport {
            format: crate::history::EXPORT_FORMAT.into(),
            version: crate::history::EXPORT_VERSION,
            instance_id: id.clone(),
            workflow_type,
            module_hash: ModuleHash(module_hash),
            status: crate::history::InstanceStatus::ContinuedAsNew,
            run,
            events: serde_json::from_str(&events)
                .map_err(|e| corrupt(&format!("run {run} of instance {id}"), e))?,
        }))
    }

    fn load_inbox(&self, id: &InstanceId) -> Result<Vec<InboxEntry>, StoreError> {
        let sql = "SELECT id, time_ms, data FROM inbox WHERE instance_id = ?1 ORDER BY id";
        self.read(|c| event_rows(c, sql, id, "inbox entry"))
            .map(|rows| {
                rows.into_iter()
                    .map(|(eid, time_ms, kind)| InboxEntry {
                        id: eid,
                        time_ms,
                        kind,
                    })
                    .collect()
            })
    }

    fn activation_input(
        &self,
        id: &InstanceId,
    ) -> Result<Option<(InstanceRecord, Vec<InboxEntry>)>, StoreError> {
        // One reader, and no inbox query when the instance is not runnable: every write
        // that adds to an inbox sets `runnable` in the same transaction, so a clear flag
        // means an empty inbox. On the fast path of a step (the outcome delivered from
        // memory) that is the usual case.
        self.read(|c| {
            let Some((found, runnable)) = query_one(
                c,
                &format!("SELECT {INSTANCE_COLUMNS}, runnable FROM instances WHERE id = ?1"),
                [&id.0],
                |r| Ok((instance_from_row(r)?, r.get::<_, bool>(13)?)),
            )
            .optional()
            .map_err(map_err)?
            else {
                return Ok(None);
            };
            let rec = finish_instance(found)?;
            let inbox = if runnable {
                let sql = "SELECT id, time_ms, data FROM inbox WHERE instance_id = ?1 ORDER BY id";
                event_rows(c, sql, id, "inbox entry")?
                    .into_iter()
                    .map(|(eid, time_ms, kind)| InboxEntry {
                        id: eid,
                        time_ms,
                        kind,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Ok(Some((rec, inbox)))
        })
    }

    fn gauges(&self, now_ms: u64) -> Result<crate::telemetry::metrics::DatabaseGauges, StoreError> {
        self.read(|c| gauges::read(c, now_ms))
    }

    fn runnable_instances(&self, limit: u32) -> Result<Vec<InstanceId>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id FROM instances WHERE runnable = 1 ORDER BY updated_at_ms LIMIT ?1",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([limit as i64], |r| r.get::<_, String>(0))
                .map_err(map_err)?;
            rows.map(|r| r.map(InstanceId).map_err(map_err)).collect()
        })
    }

    fn pending_activities(&self, id: &InstanceId) -> Result<Vec<PendingActivity>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT seq, activity_type, attempt, visible_at_ms, lease_until_ms, started_at_ms, last_failure,
                        last_heartbeat_ms, heartbeat_details
                     FROM activity_tasks WHERE instance_id = ?1 ORDER BY seq",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([&id.0], |r| {
                    Ok((
                        r.get::<_, u32>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                    ))
                })
                .map_err(map_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, activity_type, attempt, visible, lease, started, failure, beat_at, details) =
                    row.map_err(map_err)?;
                let last_failure = match failure {
                    Some(f) => Some(
                        serde_json::from_str(&f).map_err(|e| corrupt("activity failure", e))?,
                    ),
                    None => None,
                };
                let state = if lease.is_some() {
                    PendingState::Running
                } else if last_failure.is_some() {
                    PendingState::BackingOff
                } else {
                    PendingState::Scheduled
                };
                out.push(PendingActivity {
                    seq,
                    activity_type,
                    attempt,
                    state,
                    started_at_ms: started.filter(|_| lease.is_some()).map(|t| t as u64),
                    next_attempt_at_ms: (lease.is_none()).then_some(visible as u64),
                    last_failure,
                    last_heartbeat_at_ms: beat_at.map(|t| t as u64),
                    heartbeat_details: details.map(|d| heartbeat_payload(&d)).transpose()?,
                });
            }
            Ok(out)
        })
    }

    fn commit_activation(&self, commit: ActivationCommit) -> Result<(), StoreError> {
        self.write(commit_op(commit)?)
    }

    fn commit_activation_then(
        &self,
        commit: ActivationCommit,
        done: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
    ) {
        match commit_op(commit) {
            Ok(op) => self.write_then(op, done),
            Err(e) => done(Err(e)),
        }
    }

    fn mark_idle(&self, id: &InstanceId) -> Result<(), StoreError> {
        let id = id.0.clone();
        self.write(move |c| {
            exec(c,
                "UPDATE instances SET runnable = 0 WHERE id = ?1 AND NOT EXISTS(SELECT 1 FROM inbox WHERE instance_id = ?1)",
                [&id],
            )
            .map_err(map_err)?;
            Ok(())
        })
    }

    fn block_instance(&self, id: &InstanceId, reason: &str, now_ms: u64) -> Result<(), StoreError> {
        let (id, reason) = (id.0.clone(), reason.to_owned());
        self.write(move |c| {
            let was: Option<String> = query_one(
                c,
                "SELECT status FROM instances WHERE id = ?1 AND status IN ('running', 'blocked')",
                [&id],
                |r| r.get(0),
            )
            .optional()
            .map_err(map_err)?;
            let Some(was) = was else {
                return Err(StoreError::NotFound(format!("running instance {id}")));
            };
            exec(
                c,
                "UPDATE instances SET status = 'blocked', blocked_reason = ?2, runnable = 0, updated_at_ms = ?3, closing = 0
                 WHERE id = ?1",
                params![id, reason, now_ms as i64],
            )
            .map_err(map_err)?;
            // Published once, when it stops; a blocked instance blocked again stays blocked.
            if was == "running" {
                events::publish(c, &id, &Transition::Blocked { reason }, now_ms)?;
            }
            Ok(())
        })
    }

    fn claim_activities(
        &self,
        now_ms: u64,
        limit: u32,
        lease_slack_ms: u64,
        default_timeout_ms: u64,
    ) -> Result<Vec<ActivityTask>, StoreError> {
        // Polling must not take the write lock when there is nothing to claim.
        let any: bool = self.read(|c| {
            query_one(
                c,
                "SELECT EXISTS(SELECT 1 FROM activity_tasks WHERE lease_until_ms IS NULL AND visible_at_ms <= ?1)
                     OR EXISTS(SELECT 1 FROM activity_tasks WHERE lease_until_ms IS NOT NULL AND lease_until_ms <= ?1)",
                [now_ms as i64],
                |r| r.get(0),
            )
            .map_err(map_err)
        })?;
        if !any {
            return Ok(Vec::new());
        }
        self.write(move |c| {
            let now = now_ms as i64;
            let mut st = c
                .prepare_cached(
                    // Two index ranges (see migration 6): ready tasks, then expired leases.
                    concat!(
                        "SELECT * FROM (SELECT ", task_columns!(), " FROM activity_tasks
                           WHERE lease_until_ms IS NULL AND visible_at_ms <= ?1 ORDER BY visible_at_ms LIMIT ?2)
                         UNION ALL
                         SELECT * FROM (SELECT ", task_columns!(), " FROM activity_tasks
                           WHERE lease_until_ms IS NOT NULL AND lease_until_ms <= ?1 ORDER BY lease_until_ms LIMIT ?2)
                         LIMIT ?2"
                    ),
                )
                .map_err(map_err)?;
            let rows = st
                .query_map(params![now, limit as i64], task_row)
                .map_err(map_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_err)?;
            let mut lease = c
                .prepare_cached("UPDATE activity_tasks SET lease_until_ms = ?3, started_at_ms = ?4 WHERE instance_id = ?1 AND seq = ?2")
                .map_err(map_err)?;
            let mut tasks = Vec::with_capacity(rows.len());
            for row in rows {
                let task = task_of(row)?;
                // The lease outlives the attempt's own timeout, so a healthy long attempt is
                // never claimed twice; a crashed process's attempts are counted lost at start-up.
                let until = now_ms + lease_slack_ms + task.options.start_to_close_timeout_ms.unwrap_or(default_timeout_ms);
                lease.execute(params![task.instance_id.0, task.seq, until as i64, now]).map_err(map_err)?;
                tasks.push(task);
            }
            Ok(tasks)
        })
    }

    fn resolve_activity(
        &self,
        instance: &InstanceId,
        seq: u32,
        attempt: u32,
        resolution: ActivityResolution,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.write(resolve_op(instance, seq, attempt, resolution, now_ms))
    }

    fn record_heartbeat(
        &self,
        instance: &InstanceId,
        seq: u32,
        attempt: u32,
        details: &Payload,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (instance, details) = (instance.0.clone(), details.json().to_owned());
        self.write(move |c| {
            let n = exec(
                c,
                "UPDATE activity_tasks SET heartbeat_details = ?4, last_heartbeat_ms = ?5
                 WHERE instance_id = ?1 AND seq = ?2 AND attempt = ?3",
                params![instance, seq, attempt, details, now_ms as i64],
            )
            .map_err(map_err)?;
            Ok(n == 1)
        })
    }

    fn resolve_activity_then(
        &self,
        instance: &InstanceId,
        seq: u32,
        attempt: u32,
        resolution: ActivityResolution,
        now_ms: u64,
        done: Box<dyn FnOnce(Result<bool, StoreError>) + Send>,
    ) {
        self.write_then(resolve_op(instance, seq, attempt, resolution, now_ms), done);
    }

    fn ended_before(
        &self,
        before_ms: u64,
        workflow_type: Option<&str>,
        limit: u32,
    ) -> Result<Vec<InstanceId>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id FROM instances
                     WHERE status IN ('completed', 'failed', 'cancelled', 'terminated') AND imported = 0
                       AND updated_at_ms < ?1 AND (?2 IS NULL OR workflow_type = ?2)
                     ORDER BY updated_at_ms, id LIMIT ?3",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map(params![before_ms as i64, workflow_type, limit as i64], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(map_err)?;
            rows.map(|r| r.map(InstanceId).map_err(map_err)).collect()
        })
    }

    fn purge_instances(&self, ids: &[InstanceId]) -> Result<u64, StoreError> {
        let ids: Vec<String> = ids.iter().map(|i| i.0.clone()).collect();
        self.write(move |c| {
            let mut purged = 0;
            for id in &ids {
                let n = exec(
                    c,
                    "DELETE FROM instances WHERE id = ?1 AND imported = 0
                       AND status IN ('completed', 'failed', 'cancelled', 'terminated')",
                    [id],
                )
                .map_err(map_err)?;
                if n == 0 {
                    continue;
                }
                for table in ["events", "inbox", "activity_tasks", "timers", "runs"] {
                    exec(
                        c,
                        &format!("DELETE FROM {table} WHERE instance_id = ?1"),
                        [id],
                    )
                    .map_err(map_err)?;
                }
                purged += 1;
            }
            Ok(purged)
        })
    }

    fn mark_closing(&self, id: &InstanceId) -> Result<(), StoreError> {
        let id = id.0.clone();
        self.write(move |c| {
            exec(
                c,
                "UPDATE instances SET closing = 1 WHERE id = ?1 AND status = 'running'",
                [&id],
            )
            .map_err(map_err)?;
            Ok(())
        })
    }

    fn unclaim_activities(&self, tasks: &[(InstanceId, u32, u32)]) -> Result<(), StoreError> {
        let tasks: Vec<(String, u32, u32)> = tasks
            .iter()
            .map(|(id, seq, attempt)| (id.0.clone(), *seq, *attempt))
            .collect();
        self.write(move |c| {
            for (id, seq, attempt) in &tasks {
                exec(
                    c,
                    "UPDATE activity_tasks SET lease_until_ms = NULL, started_at_ms = NULL
                     WHERE instance_id = ?1 AND seq = ?2 AND attempt = ?3",
                    params![id, seq, attempt],
                )
                .map_err(map_err)?;
            }
            Ok(())
        })
    }

    fn lost_activities(&self) -> Result<Vec<ActivityTask>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(concat!(
                    "SELECT ",
                    task_columns!(),
                    " FROM activity_tasks WHERE lease_until_ms IS NOT NULL ORDER BY instance_id, seq"
                ))
                .map_err(map_err)?;
            let rows = st.query_map([], task_row).map_err(map_err)?;
            rows.map(|row| task_of(row.map_err(map_err)?)).collect()
        })
    }

    fn next_due_ms(&self) -> Result<Option<u64>, StoreError> {
        self.read(|c| {
            query_one(c,
                "SELECT min(t) FROM (
                    SELECT min(fire_at_ms) AS t FROM timers
                    UNION ALL
                    SELECT min(visible_at_ms) FROM activity_tasks WHERE lease_until_ms IS NULL
                    UNION ALL
                    SELECT min(lease_until_ms) FROM activity_tasks WHERE lease_until_ms IS NOT NULL)",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|v| v.map(|t| t.max(0) as u64))
            .map_err(map_err)
        })
    }

    fn fire_due_timers(&self, now_ms: u64) -> Result<u64, StoreError> {
        let any: bool = self.read(|c| {
            query_one(
                c,
                "SELECT EXISTS(SELECT 1 FROM timers WHERE fire_at_ms <= ?1)",
                [now_ms as i64],
                |r| r.get(0),
            )
            .map_err(map_err)
        })?;
        if !any {
            return Ok(0);
        }
        self.write(move |c| {
            let due: Vec<(String, u32)> = {
                let mut st = c
                    .prepare_cached("SELECT instance_id, seq FROM timers WHERE fire_at_ms <= ?1 ORDER BY fire_at_ms, instance_id, seq")
                    .map_err(map_err)?;
                let rows = st.query_map([now_ms as i64], |r| Ok((r.get(0)?, r.get(1)?))).map_err(map_err)?;
                rows.collect::<Result<_, _>>().map_err(map_err)?
            };
            for (instance, seq) in &due {
                exec(c, "DELETE FROM timers WHERE instance_id = ?1 AND seq = ?2", params![instance, seq]).map_err(map_err)?;
                push_inbox(c, instance, now_ms, &EventKind::TimerFired { seq: *seq })?;
            }
            Ok(due.len() as u64)
        })
    }

    fn signal(
        &self,
        id: &InstanceId,
        name: &str,
        input: &Payload,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let (id, kind) = (
            id.0.clone(),
            EventKind::SignalReceived {
                name: name.to_owned(),
                input: input.clone(),
            },
        );
        self.write(move |c| {
            accepting(c, &id)?;
            let closing: bool = query_one(
                c,
                "SELECT closing FROM instances WHERE id = ?1",
                [&id],
                |r| r.get(0),
            )
            .map_err(map_err)?;
            if closing {
                return Err(StoreError::NotAccepting {
                    id: id.clone(),
                    state: "completing".into(),
                    hint: "its final activation is being committed and takes no more signals"
                        .into(),
                });
            }
            push_inbox(c, &id, now_ms, &kind)
        })
    }

    fn request_cancel(
        &self,
        id: &InstanceId,
        reason: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (id, kind) = (
            id.0.clone(),
            EventKind::CancelRequested {
                reason: reason.to_owned(),
            },
        );
        self.write(move |c| {
            let (_, already) = accepting(c, &id)?;
            if already {
                return Ok(false);
            }
            exec(
                c,
                "UPDATE instances SET cancel_requested = 1 WHERE id = ?1",
                [&id],
            )
            .map_err(map_err)?;
            push_inbox(c, &id, now_ms, &kind)?;
            Ok(true)
        })
    }

    fn terminate(&self, id: &InstanceId, reason: &str, now_ms: u64) -> Result<(), StoreError> {
        let (id, reason) = (id.0.clone(), reason.to_owned());
        self.write(move |c| lifecycle::terminate(c, &id, &reason, now_ms))
    }

    fn import_history(&self, export: &HistoryExport, now_ms: u64) -> Result<(), StoreError> {
        import::import_history(self, export, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Every way `pinion list` filters reads a page from an index in the list's order:
    /// no scan of the instances table, no sort of it. (At 1,000,000 instances a scan and
    /// sort took 0.5 s a page; through the index it is a few rows' worth.)
    #[test]
    fn listing_and_retention_read_an_index_in_order_and_never_scan_or_sort() {
        let dir = std::env::temp_dir().join(format!(
            "pinion-plan-{}-{}",
            std::process::id(),
            crate::clock::random_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(dir.join("p.db"), SqliteOptions::default()).unwrap();
        // Enough rows, of several types, statuses and modules, and the statistics a
        // long-lived database has, so the planner chooses as it would in production.
        store
            .write(|c| {
                c.execute_batch(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
                     INSERT INTO instances(id, workflow_type, module_hash, status, created_at_ms,
                                           updated_at_ms, event_count, runnable)
                     SELECT 'i-' || i, 'T' || (i % 7), 'm' || (i % 3),
                            CASE i % 4 WHEN 0 THEN 'running' WHEN 1 THEN 'completed'
                                       WHEN 2 THEN 'failed' ELSE 'blocked' END,
                            i, i, 1, 0 FROM n;
                     ANALYZE;",
                )
                .map_err(map_err)
            })
            .unwrap();
        let status = Some(crate::history::InstanceStatus::Completed);
        let filters = [
            InstanceFilter::default(),
            InstanceFilter {
                status,
                ..Default::default()
            },
            InstanceFilter {
                workflow_type: Some("T3".into()),
                ..Default::default()
            },
            InstanceFilter {
                module_hash: Some(ModuleHash("m1".into())),
                ..Default::default()
            },
            InstanceFilter {
                status,
                after: Some((2500, InstanceId("i-2500".into()))),
                ..Default::default()
            },
        ];
        let plan = |sql: &str, args: &[String]| -> String {
            store
                .read(|c| {
                    let mut st = c
                        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .map_err(map_err)?;
                    let rows = st
                        .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                            r.get::<_, String>(3)
                        })
                        .map_err(map_err)?;
                    Ok(rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; "))
                })
                .unwrap()
        };
        for f in filters {
            let (sql, args) = list_sql(&InstanceFilter {
                limit: Some(20),
                ..f.clone()
            });
            let p = plan(&sql, &args);
            assert!(p.contains("USING INDEX"), "{f:?}: {p}");
            assert!(!p.contains("TEMP B-TREE"), "{f:?}: sorts: {p}");
        }
        let p = plan(
            "SELECT id FROM instances
             WHERE status IN ('completed', 'failed', 'cancelled', 'terminated') AND imported = 0
               AND updated_at_ms < ?1 AND (?2 IS NULL OR workflow_type = ?2)
             ORDER BY updated_at_ms, id LIMIT ?3",
            &["100".into(), "T1".into(), "500".into()],
        );
        assert!(p.contains("instances_ended"), "retention: {p}");
        assert!(!p.contains("TEMP B-TREE"), "retention sorts: {p}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn no_more_than_max_readers_connections_read_at_once() {
        let dir = std::env::temp_dir().join(format!(
            "pinion-readers-{}-{}",
            std::process::id(),
            crate::clock::random_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store =
            Arc::new(SqliteStore::open(dir.join("r.db"), SqliteOptions::default()).unwrap());
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..MAX_READERS * 3)
            .map(|_| {
                let (store, now, peak) = (store.clone(), now.clone(), peak.clone());
                std::thread::spawn(move || {
                    store
                        .read(|c| {
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).unwrap();
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            now.fetch_sub(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= MAX_READERS, "{peak} readers at once");
        assert!(peak > 1, "reads ran one at a time: {peak}");
        assert!(store.readers.lock().unwrap().open <= MAX_READERS);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
