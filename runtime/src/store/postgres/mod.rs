//! The PostgreSQL [`Store`](crate::store::Store): the same traits and semantics as
//! [`crate::store::sqlite`], for a database server that several hosts can share later.
//!
//! # Why connection threads
//!
//! The store traits are synchronous and are called from plain threads *and* from inside
//! tokio tasks (an activity attempt records its retry with `resolve_activity_then`). The
//! blocking `postgres` client runs its own small runtime and must never be driven from
//! inside another one, so every connection is owned by one thread of a small fixed pool
//! ([`PgOptions::connections`]). Callers send closures over a channel, as SQLite's writer
//! does; `*_then` calls return at once and their callback runs on the connection thread
//! once the transaction has committed. PostgreSQL does its own group commit, so there is no
//! batching here: one closure, one transaction.
//!
//! # Transactions
//!
//! Every write is one `READ COMMITTED` transaction. Where SQLite relies on its single
//! writer, this backend locks rows: an activation's commit reads its instance row
//! `FOR UPDATE`, so two commits to one instance serialise and the history-length check
//! sees the latest row; claims use `FOR UPDATE SKIP LOCKED`; due timers are deleted with
//! `RETURNING`, so each fires once. Lifecycle events are buffered during the transaction
//! and written last, under a transaction-scoped advisory lock, with ids `max + 1`: dense,
//! and committed in id order (see `events.rs`). A serialization failure or deadlock rolls
//! the transaction back and runs the closure again (a few times), then reports
//! [`StoreError::Locked`], which says that retrying helps.
//!
//! Files: this one has the pool, the transaction helper and error mapping; `store.rs` the
//! [`crate::store::Store`] reads and small writes; `commit.rs` an activation's commit and
//! an activity attempt's resolution; `tasks.rs` claims, timers and signals; `lifecycle.rs`
//! creating, ending, terminating and continuing instances; `deploy.rs` the
//! [`crate::store::DeploymentStore`]; `events.rs` the outbox; `schema.rs` the numbered
//! migrations (`0001_schema.sql`, ...).

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use super::StoreError;
use crate::history::InstanceId;
pub use members::PgMember;

mod census;
mod commit;
mod deploy;
mod events;
mod lifecycle;
mod members;
mod schema;
mod store;
mod tasks;
#[cfg(test)]
mod tests;

/// Whether `db` names a PostgreSQL database (`postgres://...` or `postgresql://...`)
/// rather than a SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.split_once('@') {
        Some((a, h)) => (a, h),
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// How to open a PostgreSQL store.
///
/// Defaults: `connections = 8`, `read_only = false`.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections (and connection threads) kept open.
    pub connections: usize,
    /// Every transaction is read-only (`default_transaction_read_only`), and the schema is
    /// checked, never migrated (replay, inspection).
    pub read_only: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            connections: 8,
            read_only: false,
        }
    }
}

/// A connection and its prepared statements.
struct Conn {
    client: Client,
    stmts: HashMap<String, Statement>,
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// The PostgreSQL store. Cheap to share behind an `Arc`.
pub struct PgStore {
    url: String,
    jobs: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// This process's member id once its workers joined (see `members.rs`).
    me: members::MemberId,
    membership: members::MembershipSlot,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &redact(&self.url))
            .finish()
    }
}

/// SQLSTATEs that mean "run the transaction again".
fn retryable_state(code: &postgres::error::SqlState) -> bool {
    use postgres::error::SqlState;
    *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
}

pub(super) fn map_err(e: postgres::Error) -> StoreError {
    use postgres::error::SqlState;
    let Some(code) = e.code() else {
        return if e.is_closed() {
            StoreError::Database(format!("the connection to PostgreSQL was lost: {e}"))
        } else {
            StoreError::Database(e.to_string())
        };
    };
    let text = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), code.code()),
        None => e.to_string(),
    };
    // Raised by `pinion_commit_step` (migration 4) with the store's own wording.
    if let (Some(db), "PNCON" | "PNNFD") = (e.as_db_error(), code.code()) {
        return if code.code() == "PNCON" {
            StoreError::Conflict(db.message().to_owned())
        } else {
            StoreError::NotFound(db.message().to_owned())
        };
    }
    if retryable_state(code) {
        StoreError::Locked(format!(
            "PostgreSQL aborted the transaction (serialization failure or deadlock): {text}"
        ))
    } else if *code == SqlState::UNIQUE_VIOLATION {
        StoreError::AlreadyExists(text)
    } else if code.code().starts_with("23") {
        StoreError::Constraint(text)
    } else if *code == SqlState::DISK_FULL || *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
        StoreError::Database(format!(
            "PostgreSQL is out of space, nothing of this write was stored; free space and retry: {text}"
        ))
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        StoreError::Database(format!("the database was opened read-only: {text}"))
    } else {
        StoreError::Database(text)
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

use super::encode::{outcome_columns, reason_failure, to_json};

/// A lifecycle event waiting for the end of its transaction (see `events.rs`).
struct Outgoing {
    instance_id: String,
    kind: &'static str,
    workflow_type: String,
    module_hash: String,
    run: i64,
    at_ms: i64,
    detail: String,
}

/// One transaction on one connection, with statement caching and the outbox buffer.
pub(super) struct Tx<'a> {
    t: postgres::Transaction<'a>,
    stmts: &'a mut HashMap<String, Statement>,
    outbox: Vec<Outgoing>,
    /// Whether a statement other than a `SELECT` changed rows: the transaction is a write,
    /// counted in the commit metrics as SQLite's writes are.
    wrote: bool,
    /// The member this process joined as, if it runs workers (see `members.rs`).
    me: Option<Arc<str>>,
}

impl Tx<'_> {
    fn stmt(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.t.prepare(sql).map_err(map_err)?;
        // A bound on the cache: listing queries are built per filter.
        if self.stmts.len() > 512 {
            self.stmts.clear();
        }
        self.stmts.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    /// Runs a statement; returns the rows it changed.
    pub(super) fn exec(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let s = self.stmt(sql)?;
        let n = self.t.execute(&s, params).map_err(map_err)?;
        self.changed(sql, n > 0);
        Ok(n)
    }

    /// Counts the transaction as a write once a statement that is not a `SELECT` changed
    /// rows (a poll that takes nothing is not a commit in the metrics).
    fn changed(&mut self, sql: &str, any: bool) {
        if any && !sql.trim_start().starts_with("SELECT") {
            self.wrote = true;
        }
    }

    /// Runs a query; returns its rows.
    pub(super) fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let s = self.stmt(sql)?;
        let rows = self.t.query(&s, params).map_err(map_err)?;
        self.changed(sql, !rows.is_empty());
        Ok(rows)
    }

    /// Runs a query of at most one row.
    pub(super) fn opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let s = self.stmt(sql)?;
        let row = self.t.query_opt(&s, params).map_err(map_err)?;
        self.changed(sql, row.is_some());
        Ok(row)
    }

    /// Runs a query of exactly one row.
    pub(super) fn one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        let s = self.stmt(sql)?;
        let row = self.t.query_one(&s, params).map_err(map_err)?;
        self.changed(sql, true);
        Ok(row)
    }
}

impl Conn {
    /// A prepared statement, from the cache.
    fn stmt(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(map_err)?;
        self.stmts.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

/// Work that is one statement, a transaction of its own (see [`run_single`]): its result,
/// and whether it wrote (counted as a commit).
type SingleOp<R> = dyn FnMut(&mut Conn) -> Result<(R, bool), StoreError> + Send;

/// Where the answer of work run without waiting goes, on the connection thread.
type Done<R> = Box<dyn FnOnce(Result<R, StoreError>) + Send>;

/// Runs `attempt` again, up to a few times, while PostgreSQL aborts it for a serialization
/// failure or a deadlock; counts it as a commit when it says it wrote.
fn retrying<R>(
    mut attempt: impl FnMut() -> Result<(R, bool), StoreError>,
) -> Result<R, StoreError> {
    const TRIES: usize = 5;
    let mut tries = 0;
    loop {
        tries += 1;
        #[allow(clippy::disallowed_methods)] // a metric of real time, not workflow time
        let started = std::time::Instant::now();
        match attempt() {
            Err(StoreError::Locked(_)) if tries < TRIES => continue,
            Ok((r, wrote)) => {
                if wrote {
                    // One write per transaction: PostgreSQL groups the WAL flushes of
                    // concurrent commits itself, below what a client sees.
                    crate::telemetry::metrics::metrics().commit(1, started.elapsed());
                }
                return Ok(r);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs `op`, one statement that is a transaction of its own (no `BEGIN` and `COMMIT`
/// round trips), on `conn`, retried as [`retrying`] says.
fn run_single<R>(conn: &mut Conn, op: &mut SingleOp<R>) -> Result<R, StoreError> {
    retrying(|| op(conn))
}

/// Runs `op` in a transaction on `conn`, writes its buffered lifecycle events and commits,
/// retried as [`retrying`] says.
fn run_tx<R>(
    conn: &mut Conn,
    me: Option<Arc<str>>,
    op: &mut dyn FnMut(&mut Tx<'_>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    retrying(|| {
        let t = conn.client.transaction().map_err(map_err)?;
        let mut tx = Tx {
            t,
            stmts: &mut conn.stmts,
            outbox: Vec::new(),
            wrote: false,
            me: me.clone(),
        };
        let r = op(&mut tx)?;
        events::flush(&mut tx)?;
        let wrote = tx.wrote;
        tx.t.commit().map_err(map_err)?;
        Ok((r, wrote))
    })
}

fn connect(url: &str, options: &PgOptions) -> Result<Client, StoreError> {
    let mut client = Client::connect(url, NoTls).map_err(|e| StoreError::Open {
        path: redact(url),
        reason: e.to_string(),
    })?;
    let mut setup = String::from("SET client_min_messages = warning;");
    if options.read_only {
        setup.push_str("SET default_transaction_read_only = on;");
    }
    client.batch_execute(&setup).map_err(map_err)?;
    Ok(client)
}

/// A connection thread: runs jobs until the store closes, reconnecting when its
/// connection was lost.
fn connection_loop(
    url: String,
    options: PgOptions,
    mut conn: Conn,
    jobs: Arc<Mutex<Receiver<Job>>>,
) {
    loop {
        let job = {
            let rx = jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            rx.recv()
        };
        let Ok(job) = job else { return };
        if conn.client.is_closed() {
            match connect(&url, &options) {
                Ok(c) => {
                    conn = Conn {
                        client: c,
                        stmts: HashMap::new(),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reconnect to PostgreSQL");
                }
            }
        }
        job(&mut conn);
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`, or
    /// any form the `postgres` crate accepts), migrating its schema unless read-only.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the server cannot be reached or the database is not a
    /// pinion database (or is newer than this pinion).
    pub fn open(url: &str, options: PgOptions) -> Result<PgStore, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: redact(url),
            reason,
        };
        let mut first = connect(url, &options)?;
        if options.read_only {
            schema::check(&mut first).map_err(|e| open_err(e.to_string()))?;
        } else {
            schema::migrate(&mut first).map_err(|e| open_err(e.to_string()))?;
        }
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        let mut clients = vec![first];
        for _ in 1..options.connections.max(1) {
            clients.push(connect(url, &options)?);
        }
        for (n, client) in clients.into_iter().enumerate() {
            let (url, options, rx) = (url.to_owned(), options.clone(), rx.clone());
            let conn = Conn {
                client,
                stmts: HashMap::new(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("pinion-pg-{n}"))
                    .spawn(move || connection_loop(url, options, conn, rx))
                    .map_err(|e| open_err(format!("cannot start a connection thread: {e}")))?,
            );
        }
        Ok(PgStore {
            url: url.to_owned(),
            jobs: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
            me: members::MemberId::default(),
            membership: Mutex::new(None),
        })
    }

    /// The database URL, without its password.
    pub fn url(&self) -> String {
        redact(&self.url)
    }

    fn send(&self, job: Job) -> Result<(), Job> {
        let sender = self.jobs.lock().expect("jobs lock").clone();
        match sender {
            Some(s) => s.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// Runs `work` on a connection thread and waits for its answer.
    fn on_conn<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Conn) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(work(conn));
        });
        self.send(job).map_err(|_| StoreError::Closed)?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// Runs `work` on a connection thread without waiting: `done` gets the answer there
    /// (or `Closed` here, when the store is closed).
    fn on_conn_then<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Conn) -> Result<R, StoreError> + Send + 'static,
        done: Done<R>,
    ) {
        let done = Arc::new(Mutex::new(Some(done)));
        let d2 = done.clone();
        let job: Job = Box::new(move |conn| {
            let r = work(conn);
            if let Some(done) = d2.lock().expect("done lock").take() {
                done(r);
            }
        });
        if self.send(job).is_err() {
            if let Some(done) = done.lock().expect("done lock").take() {
                done(Err(StoreError::Closed));
            }
        }
    }

    /// Runs `op` in one transaction on a connection thread and waits for the answer.
    pub(super) fn tx<R: Send + 'static>(
        &self,
        mut op: impl FnMut(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let me = self.member_id();
        self.on_conn(move |conn| run_tx(conn, me, &mut op))
    }

    /// [`PgStore::tx`] without waiting: `done` gets the answer on the connection thread
    /// once the transaction has committed (or failed).
    pub(super) fn tx_then<R: Send + 'static>(
        &self,
        mut op: impl FnMut(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
        done: Done<R>,
    ) {
        let me = self.member_id();
        self.on_conn_then(move |conn| run_tx(conn, me, &mut op), done);
    }

    /// [`PgStore::tx`] for work that is one statement (see [`run_single`]).
    fn single<R: Send + 'static>(&self, mut op: Box<SingleOp<R>>) -> Result<R, StoreError> {
        self.on_conn(move |conn| run_single(conn, &mut *op))
    }

    /// [`PgStore::single`] without waiting, as [`PgStore::tx_then`].
    fn single_then<R: Send + 'static>(&self, mut op: Box<SingleOp<R>>, done: Done<R>) {
        self.on_conn_then(move |conn| run_single(conn, &mut *op), done);
    }

    /// Stops the connection threads after they finish the queued work. Called on drop too.
    pub fn close(&self) {
        self.jobs.lock().expect("jobs lock").take();
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// An instance id as the `&str` parameter most statements take.
fn iid(id: &InstanceId) -> &str {
    &id.0
}
