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
    /// Records that the write did not run, and why.
    fn fail(&mut self, e: StoreError);
    /// The write's own error, once it ran and failed.
    fn error(&self) -> Option<StoreError>;
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

    fn fail(&mut self, e: StoreError) {
        self.f = None;
        self.result = Some(Err(e));
    }

    fn error(&self) -> Option<StoreError> {
        match &self.result {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        }
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
        #[allow(clippy::disallowed_methods)] // a commit's duration is real time
        let started = std::time::Instant::now();
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE") {
            let err = map_err(e);
            for job in batch {
                job.finish(Err(err.clone()));
            }
            continue;
        }
        // Each write runs in its own savepoint, so a failing one is undone alone. If SQLite
        // rolls the whole transaction back itself (disk full, I/O error), or a savepoint
        // cannot be set or undone, the batch is over: nothing of it is committed, every
        // write in it is told so, and none runs outside a transaction.
        let mut aborted: Option<StoreError> = None;
        for job in batch.iter_mut() {
            if let Some(e) = &aborted {
                job.fail(e.clone());
                continue;
            }
            // Cached statements: parsing these per operation cost more than most writes.
            if let Err(e) = exec(&conn, "SAVEPOINT op") {
                let e = map_err(e);
                job.fail(e.clone());
                aborted = Some(e);
                continue;
            }
            let ok = job.run(&conn);
            if conn.is_autocommit() {
                // Keep the cause (a full disk, say) in the answer: it is what to act on.
                aborted = Some(match job.error() {
                    Some(StoreError::Database(cause)) => StoreError::Database(format!(
                        "{cause} (SQLite rolled back the whole transaction: nothing of this batch was written)"
                    )),
                    Some(other) => other,
                    None => StoreError::Database(
                        "SQLite rolled back the transaction; nothing of this batch was written".into(),
                    ),
                });
                continue;
            }
            let undone = if ok {
                Ok(0)
            } else {
                exec(&conn, "ROLLBACK TO op")
            };
            if let Err(e) = undone.and_then(|_| exec(&conn, "RELEASE op")) {
                aborted = Some(map_err(e));
            }
        }
        let committed = match aborted {
            Some(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Err(e)
            }
            None => {
                let c = exec(&conn, "COMMIT").map(|_| ()).map_err(map_err);
                if c.is_err() && !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                c
            }
        };
        if committed.is_ok() {
            crate::telemetry::metrics::metrics().commit(batch.len(), started.elapsed());
        }
        for job in batch {
            job.finish(committed.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    type Answer = std::sync::mpsc::Receiver<Result<(), StoreError>>;
    type Write = Box<dyn FnOnce(&Connection) -> Result<(), StoreError> + Send>;

    fn job(
        f: impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    ) -> (WriteJob, Answer) {
        let (tx, rx) = sync_channel(1);
        let op: WriteJob = Box::new(Op {
            f: Some(f),
            result: None,
            reply: Reply::Channel(tx),
        });
        (op, rx)
    }

    fn insert(v: i64) -> impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static {
        move |c| {
            c.execute("INSERT INTO t(v) VALUES (?1)", [v])
                .map(|_| ())
                .map_err(map_err)
        }
    }

    /// Runs `jobs` as one batch on a fresh database; returns the answers and the rows.
    fn batch(jobs: Vec<Write>) -> (Vec<Result<(), StoreError>>, Vec<i64>) {
        let dir = std::env::temp_dir().join(format!(
            "pinion-writer-{}-{}",
            std::process::id(),
            crate::clock::random_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t(v INTEGER PRIMARY KEY CHECK (v >= 0))")
            .unwrap();
        let (tx, rx) = sync_channel::<WriteJob>(16);
        let mut answers = Vec::new();
        for f in jobs {
            let (j, a) = job(f);
            tx.send(j).unwrap();
            answers.push(a);
        }
        drop(tx);
        writer_loop(conn, rx, 256);
        let answers = answers.into_iter().map(|a| a.recv().unwrap()).collect();
        let check = Connection::open(&path).unwrap();
        let mut st = check.prepare("SELECT v FROM t ORDER BY v").unwrap();
        let rows = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<Vec<i64>, _>>()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (answers, rows)
    }

    #[test]
    fn a_failing_write_is_undone_alone_and_the_others_commit() {
        let (answers, rows) = batch(vec![
            Box::new(insert(1)),
            Box::new(insert(1)),  // duplicate key
            Box::new(insert(-5)), // CHECK
            Box::new(insert(2)),
        ]);
        assert!(answers[0].is_ok() && answers[3].is_ok());
        assert!(
            matches!(answers[1], Err(StoreError::AlreadyExists(_))),
            "{answers:?}"
        );
        assert!(
            matches!(answers[2], Err(StoreError::Constraint(_))),
            "{answers:?}"
        );
        assert_eq!(rows, [1, 2]);
    }

    #[test]
    fn when_the_transaction_is_rolled_back_under_the_batch_nothing_commits_and_everyone_is_told() {
        // The middle write ends the transaction, as SQLite does itself on some disk-full
        // and I/O errors. The write after it must not run in autocommit mode.
        let (answers, rows) = batch(vec![
            Box::new(insert(1)),
            Box::new(|c: &Connection| c.execute_batch("ROLLBACK").map_err(map_err)),
            Box::new(insert(2)),
        ]);
        assert!(answers.iter().all(Result::is_err), "{answers:?}");
        assert!(
            rows.is_empty(),
            "nothing of the batch may be written: {rows:?}"
        );
    }
}
