//! How far a long operation (a replay, a verify, an upgrade) has come, and the way to stop
//! it between two instances.
//!
//! The operation sets the total once it has chosen its instances and counts each one it
//! finishes; whoever started it reads both (the API's jobs, `GET /v1/jobs/{id}`) and may
//! cancel it. A cancelled operation stops before its next instance with
//! [`Error::Cancelled`]; what it already did stays done (an upgrade's moves are each their
//! own transaction).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Error;

/// Progress and cancellation of one long operation.
#[derive(Debug, Default)]
pub struct Progress {
    total: AtomicU64,
    done: AtomicU64,
    cancelled: AtomicBool,
}

impl Progress {
    /// A fresh progress: nothing done, nothing known, not cancelled.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Adds `n` instances to the total (an operation may choose them in several rounds).
    pub fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one more instance done.
    pub fn step(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Instances done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Instances chosen so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Asks the operation to stop before its next instance.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether [`Progress::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// `Err(Error::Cancelled)` once cancelled: called by the operation before each instance.
    ///
    /// # Errors
    /// [`Error::Cancelled`] with how far it got.
    pub fn check(&self) -> Result<(), Error> {
        if self.is_cancelled() {
            return Err(Error::Cancelled {
                done: self.done(),
                total: self.total(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_stops_once_cancelled_saying_how_far_it_got() {
        let p = Progress::new();
        p.add_total(3);
        p.step();
        assert!(p.check().is_ok());
        p.cancel();
        match p.check() {
            Err(Error::Cancelled { done, total }) => assert_eq!((done, total), (1, 3)),
            other => panic!("expected Cancelled, got {other:?}"),
        }
    }
}
