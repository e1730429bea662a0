//! Many independent jobs (replaying one history each) on a pool of threads, counted in a
//! [`Progress`] and stopped by it.
//!
//! Replay is CPU-bound and every history is independent, so `pinion replay`, `deploy
//! --verify`, `alias set --verify` and `upgrade` hand their histories to [`run_each`]: one
//! scoped thread per core takes the next index from a shared counter (no fixed split, so
//! a slow history does not hold back a whole slice), runs the job, and keeps the answers
//! with their index; the answers come back in index order, so what a caller reports does
//! not depend on the number of threads. The jobs share whatever the closure captures: the
//! one compiled module of a [`crate::replay::Replayer`] (its pre-linked instance template),
//! never compiled again per thread or per history.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::engine::{Error, Progress};

/// One thread per core (1 when that cannot be known).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Runs `job(i)` for every `i` in `0..count` on up to `threads` threads (at least one: the
/// caller's), counting each in `progress`; returns the `Some` answers in index order.
///
/// # Errors
/// The first error a job returns (the others stop before their next job);
/// [`Error::Cancelled`] once `progress` is cancelled.
pub fn run_each<T: Send>(
    count: usize,
    threads: usize,
    progress: &Progress,
    job: impl Fn(usize) -> Result<Option<T>, Error> + Sync,
) -> Result<Vec<T>, Error> {
    let threads = threads.clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let worker = || -> Result<Vec<(usize, T)>, Error> {
        let mut out = Vec::new();
        loop {
            if failed.load(Ordering::Relaxed) {
                return Ok(out);
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return Ok(out);
            }
            let answer = progress.check().and_then(|()| job(i));
            match answer {
                Ok(Some(t)) => out.push((i, t)),
                Ok(None) => {}
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            progress.step();
        }
    };
    let parts: Vec<Result<Vec<(usize, T)>, Error>> = std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads).map(|_| scope.spawn(worker)).collect();
        let mine = worker();
        others
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .chain(std::iter::once(mine))
            .collect()
    });
    let mut all = Vec::with_capacity(count);
    for part in parts {
        all.extend(part?);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_back_in_order_whatever_the_threads() {
        for threads in [1, 2, 7] {
            let p = Progress::new();
            let got = run_each(1000, threads, &p, |i| Ok((i % 3 != 0).then_some(i * 2))).unwrap();
            let want: Vec<usize> = (0..1000).filter(|i| i % 3 != 0).map(|i| i * 2).collect();
            assert_eq!(got, want, "{threads} threads");
            assert_eq!(p.done(), 1000);
        }
    }

    #[test]
    fn an_error_or_a_cancel_stops_the_pool() {
        let p = Progress::new();
        let r = run_each(100, 3, &p, |i| {
            if i == 10 {
                Err(Error::InvalidInput("boom".into()))
            } else {
                Ok(Some(i))
            }
        });
        assert!(matches!(r, Err(Error::InvalidInput(_))));
        let p = Progress::new();
        p.cancel();
        let r = run_each(100, 2, &p, |i| Ok(Some(i)));
        assert!(matches!(r, Err(Error::Cancelled { .. })));
    }
}
