//! The single writer: every write to the database is a closure sent to one thread, which
//! commits whatever is queued in one transaction (group commit), each closure inside its own
//! savepoint, and answers the callers only once the commit is durable. See the parent
//! module's documentation for why.

use std::sync::mpsc::{Receiver, SyncSender};

use rusqlite::Connection;

use super::map_err;
use crate::store::StoreError;

/// One caller's write: run inside the batch transaction, then told whether it committed.
pub(super) trait WriteOp: Send {
    /// Runs the write; false when it failed (its savepoint is rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

pub(super) type WriteJob = Box<dyn WriteOp>;

pub(super) struct Op<R, F> {
    pub(super) f: Option<F>,
    pub(super) result: Option<Result<R, StoreError>>,
    pub(super) reply: Reply<R>,
}

/// Where a write's answer goes: back to a caller waiting on a channel, or into a callback
/// run on the writer thread (for callers that must not block a thread on the commit).
pub(super) enum Reply<R> {
    Channel(SyncSender<Result<R, StoreError>>),
    Callback(Box<dyn FnOnce(Result<R, StoreError>) + Send>),
}

impl<R: Send, F: FnOnce(&Connection) -> Result<R, StoreError> + Send> WriteOp for Op<R, F> {
    fn run(&mut self, conn: &Connection) -> bool {
        let r = (self.f.take().expect("write op runs once"))(conn);
        let ok = r.is_ok();
        self.result = Some(r);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = match (committed, self.result) {
            (Ok(()), Some(r)) => r,
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(StoreError::Closed),
        };
        match self.reply {
            Reply::Channel(tx) => {
                let _ = tx.send(answer);
            }
            Reply::Callback(done) => done(answer),
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}

pub(super) fn writer_loop(conn: Connection, rx: Receiver<WriteJob>, max_batch: usize) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let err = map_err(e);
            for job in batch {
                job.finish(Err(err.clone()));
            }
            continue;
        }
        for job in batch.iter_mut() {
            // Cached statements: parsing these per operation cost more than most writes.
            let savepoint = exec(&conn, "SAVEPOINT op");
            let ok = job.run(&conn);
            if savepoint.is_ok() {
                if !ok {
                    let _ = exec(&conn, "ROLLBACK TO op");
                }
                let _ = exec(&conn, "RELEASE op");
            }
        }
        let committed = conn.execute_batch("COMMIT").map_err(map_err);
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in batch {
            job.finish(committed.clone());
        }
    }
}
