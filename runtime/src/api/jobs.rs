//! Jobs: replays, verifies and upgrades that run in the background instead of inside a
//! request (`job=true`), so no client holds a connection open for as long as they take.
//!
//! A job is submitted by the request that would have run the operation; it answers `202`
//! with the job at once. Jobs run in the blocking pool, at most one per core at a time
//! (the others wait, `queued`); at most [`MAX_ACTIVE_JOBS`] are queued or running, and the
//! newest [`KEPT_FINISHED_JOBS`] finished ones are kept for reading. Each counts its
//! instances in a [`Progress`] that `GET /v1/jobs/{id}` reports and that
//! `POST /v1/jobs/{id}/cancel` (or the server stopping) cancels; a cancelled job stops
//! before its next instance. Jobs live in the server's memory: they are read-only
//! (replay, verify) or made of independent transactions (each upgrade move), so a restart
//! loses nothing but the report.
//!
//! A job's id names the server process that runs it (`job-<n>-<tag>`, the tag random per
//! process), so an id is never reused: not by this server after a restart, nor by another
//! server on the same database. Asked for a job of another process, a server says so (the
//! client is behind a load balancer that sent it elsewhere, or the server restarted)
//! instead of answering with a different job that happens to share its number.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{watch, Semaphore};

use super::error::{ApiError, ErrorObject};
use super::types::{JobState, JobView, KEPT_FINISHED_JOBS, MAX_ACTIVE_JOBS};
use crate::engine::{Error, Pinion, Progress};

/// What a job runs: the operation, over the engine, counting in the progress.
pub type Work =
    Box<dyn FnOnce(&Pinion, &Progress) -> Result<serde_json::Value, ApiError> + Send + 'static>;

/// The server's jobs.
pub struct Jobs {
    /// This process's part of every job id.
    tag: String,
    inner: Mutex<Inner>,
    slots: Arc<Semaphore>,
    /// Bumped each time a job finishes, for `GET /v1/jobs/{id}?wait=`.
    finished: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// Oldest first.
    jobs: VecDeque<Arc<Job>>,
}

struct Job {
    id: String,
    kind: &'static str,
    created_ms: u64,
    progress: Progress,
    state: Mutex<Run>,
}

enum Run {
    Queued,
    Running {
        started_ms: u64,
    },
    Finished {
        started_ms: Option<u64>,
        finished_ms: u64,
        outcome: Result<serde_json::Value, ErrorObject>,
    },
}

impl Job {
    fn view(&self, with_result: bool) -> JobView {
        let run = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (state, started_at_ms, finished_at_ms, result, error) = match &*run {
            Run::Queued => (JobState::Queued, None, None, None, None),
            Run::Running { started_ms } => (JobState::Running, Some(*started_ms), None, None, None),
            Run::Finished {
                started_ms,
                finished_ms,
                outcome,
            } => {
                let state = match outcome {
                    Ok(_) => JobState::Succeeded,
                    Err(e) if e.code == super::ErrorCode::Cancelled => JobState::Cancelled,
                    Err(_) => JobState::Failed,
                };
                let result = match outcome {
                    Ok(v) if with_result => Some(v.clone()),
                    _ => None,
                };
                (
                    state,
                    *started_ms,
                    Some(*finished_ms),
                    result,
                    outcome.as_ref().err().cloned(),
                )
            }
        };
        JobView {
            id: self.id.clone(),
            kind: self.kind.into(),
            state,
            done: self.progress.done(),
            total: self.progress.total(),
            created_at_ms: self.created_ms,
            started_at_ms,
            finished_at_ms,
            result,
            error,
        }
    }

    fn is_finished(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            Run::Finished { .. }
        )
    }
}

impl Jobs {
    /// No jobs; `slots` run at once.
    pub fn new(slots: usize) -> Jobs {
        Jobs {
            tag: format!("{:08x}", crate::clock::random_u64() as u32),
            inner: Mutex::new(Inner::default()),
            slots: Arc::new(Semaphore::new(slots.max(1))),
            finished: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `work` as a job of `kind` and starts it when a slot is free.
    ///
    /// # Errors
    /// `unavailable` while [`MAX_ACTIVE_JOBS`] are queued or running.
    pub fn submit(
        self: &Arc<Self>,
        pinion: Arc<Pinion>,
        kind: &'static str,
        work: Work,
    ) -> Result<JobView, ApiError> {
        let job = {
            let mut inner = self.lock();
            let active = inner.jobs.iter().filter(|j| !j.is_finished()).count();
            if active >= MAX_ACTIVE_JOBS {
                return Err(ApiError::Busy(format!(
                    "{active} jobs are queued or running, the most the server takes; wait for one to finish (`GET /v1/jobs`) or cancel one"
                )));
            }
            inner.next += 1;
            let job = Arc::new(Job {
                id: format!("job-{}-{}", inner.next, self.tag),
                kind,
                created_ms: pinion.now_ms(),
                progress: Progress::new(),
                state: Mutex::new(Run::Queued),
            });
            inner.jobs.push_back(job.clone());
            // Forget the oldest finished jobs beyond the number kept.
            let mut finished = inner.jobs.iter().filter(|j| j.is_finished()).count();
            inner.jobs.retain(|j| {
                if finished > KEPT_FINISHED_JOBS && j.is_finished() {
                    finished -= 1;
                    false
                } else {
                    true
                }
            });
            job
        };
        let view = job.view(false);
        let jobs = self.clone();
        tokio::spawn(async move {
            let Ok(_slot) = jobs.slots.clone().acquire_owned().await else {
                return;
            };
            let started_ms = pinion.now_ms();
            let outcome = if job.progress.is_cancelled() {
                Err(ApiError::Engine(Error::Cancelled { done: 0, total: 0 }))
            } else {
                *job.state.lock().unwrap_or_else(PoisonError::into_inner) =
                    Run::Running { started_ms };
                let (p, j) = (pinion.clone(), job.clone());
                tokio::task::spawn_blocking(move || work(&p, &j.progress))
                    .await
                    .unwrap_or_else(|e| {
                        let why = match e.try_into_panic() {
                            Ok(p) => crate::worker::panic_message(p.as_ref()),
                            Err(e) => e.to_string(),
                        };
                        Err(ApiError::Internal(format!("the job panicked: {why}")))
                    })
            };
            *job.state.lock().unwrap_or_else(PoisonError::into_inner) = Run::Finished {
                started_ms: Some(started_ms),
                finished_ms: pinion.now_ms(),
                outcome: outcome.map_err(|e| e.body().error),
            };
            jobs.finished.send_modify(|n| *n += 1);
        });
        Ok(view)
    }

    /// Every job kept, newest first, without results.
    pub fn list(&self) -> Vec<JobView> {
        self.lock()
            .jobs
            .iter()
            .rev()
            .map(|j| j.view(false))
            .collect()
    }

    fn find(&self, id: &str) -> Result<Arc<Job>, ApiError> {
        self.lock()
            .jobs
            .iter()
            .find(|j| j.id == id)
            .cloned()
            .ok_or_else(|| {
                let ours = id
                    .rsplit_once('-')
                    .is_some_and(|(_, tag)| tag == self.tag);
                ApiError::NotFound(if ours {
                    format!(
                        "no job `{id}`; `GET /v1/jobs` lists them (the newest {KEPT_FINISHED_JOBS} finished ones are kept)"
                    )
                } else {
                    format!(
                        "no job `{id}` on this server: it was started by another server process, or by this one before it restarted. A job lives in the memory of the server that runs it; behind a load balancer, send a job's requests to the server that accepted it (sticky sessions)"
                    )
                })
            })
    }

    /// One job with its result; with `wait`, waits up to that long for it to finish (or
    /// `stop` to turn true).
    ///
    /// # Errors
    /// `not_found`.
    pub async fn get(
        &self,
        id: &str,
        wait: std::time::Duration,
        mut stop: watch::Receiver<bool>,
    ) -> Result<JobView, ApiError> {
        let job = self.find(id)?;
        let mut finished = self.finished.subscribe();
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        while !job.is_finished() && !*stop.borrow() {
            tokio::select! {
                changed = finished.changed() => if changed.is_err() { break },
                _ = stop.changed() => {}
                () = &mut deadline => break,
            }
        }
        Ok(job.view(true))
    }

    /// Asks a job to stop before its next instance (a queued one never starts).
    ///
    /// # Errors
    /// `not_found`.
    pub fn cancel(&self, id: &str) -> Result<JobView, ApiError> {
        let job = self.find(id)?;
        job.progress.cancel();
        Ok(job.view(false))
    }

    /// Cancels every job (the server is stopping).
    pub fn cancel_all(&self) {
        for j in &self.lock().jobs {
            j.progress.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::engine::PinionConfig;

    fn pinion(name: &str) -> (Arc<Pinion>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("pinion-jobs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = Pinion::open(PinionConfig::new(dir.join("t.db"))).unwrap();
        (Arc::new(p), dir)
    }

    /// Work that counts `total` instances slowly until it is cancelled.
    fn until_cancelled(total: u64) -> Work {
        Box::new(move |_, progress| {
            progress.add_total(total);
            for _ in 0..total {
                progress.check()?;
                std::thread::sleep(Duration::from_millis(5));
                progress.step();
            }
            Ok(serde_json::json!("finished"))
        })
    }

    #[test]
    fn a_job_runs_reports_progress_and_stops_when_cancelled_and_a_queued_one_never_starts() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (p, dir) = pinion("cancel");
        let (_stop_tx, stop) = watch::channel(false);
        rt.block_on(async move {
            let jobs = Arc::new(Jobs::new(1));
            let first = jobs
                .submit(p.clone(), "replay", until_cancelled(1_000_000))
                .unwrap();
            assert_eq!(first.state, JobState::Queued);
            let ran = Arc::new(AtomicBool::new(false));
            let r = ran.clone();
            let second = jobs
                .submit(
                    p.clone(),
                    "upgrade",
                    Box::new(move |_, _| {
                        r.store(true, Ordering::SeqCst);
                        Ok(serde_json::Value::Null)
                    }),
                )
                .unwrap();
            // The first runs and counts; the second waits for the only slot.
            loop {
                let v = jobs
                    .get(&first.id, Duration::ZERO, stop.clone())
                    .await
                    .unwrap();
                if v.done > 0 {
                    assert_eq!(v.state, JobState::Running);
                    assert_eq!(v.total, 1_000_000);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let queued = jobs
                .get(&second.id, Duration::ZERO, stop.clone())
                .await
                .unwrap();
            assert_eq!(queued.state, JobState::Queued);
            assert_eq!(
                jobs.list().iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
                [second.id.clone(), first.id.clone()],
                "newest first"
            );

            jobs.cancel(&second.id).unwrap();
            jobs.cancel(&first.id).unwrap();
            let done = jobs
                .get(&first.id, Duration::from_secs(30), stop.clone())
                .await
                .unwrap();
            assert_eq!(done.state, JobState::Cancelled);
            assert!(done.done < done.total, "{done:?}");
            let error = done.error.expect("a cancelled job says so");
            assert_eq!(error.code, super::super::ErrorCode::Cancelled);
            let never = jobs
                .get(&second.id, Duration::from_secs(30), stop.clone())
                .await
                .unwrap();
            assert_eq!(never.state, JobState::Cancelled);
            assert!(
                !ran.load(Ordering::SeqCst),
                "a job cancelled while queued never runs"
            );

            let unknown = format!("job-99-{}", jobs.tag);
            assert_eq!(
                jobs.get(&unknown, Duration::ZERO, stop.clone())
                    .await
                    .unwrap_err()
                    .code(),
                super::super::ErrorCode::NotFound
            );
            // Another server process (or this one after a restart) numbers its jobs from 1
            // too: its job 1 is never taken for this one's.
            let other = Arc::new(Jobs::new(1));
            let theirs = other
                .submit(
                    p.clone(),
                    "replay",
                    Box::new(|_, _| Ok(serde_json::Value::Null)),
                )
                .unwrap();
            assert!(theirs.id.starts_with("job-1-") && first.id.starts_with("job-1-"));
            assert_ne!(theirs.id, first.id);
            let e = jobs
                .get(&theirs.id, Duration::ZERO, stop)
                .await
                .unwrap_err();
            assert_eq!(e.code(), super::super::ErrorCode::NotFound);
            assert!(e.to_string().contains("another server process"), "{e}");
        });
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_finished_job_keeps_its_result_and_too_many_active_jobs_are_refused() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (p, dir) = pinion("limits");
        let (_stop_tx, stop) = watch::channel(false);
        rt.block_on(async move {
            let jobs = Arc::new(Jobs::new(1));
            let quick = jobs
                .submit(
                    p.clone(),
                    "replay",
                    Box::new(|_, progress| {
                        progress.add_total(1);
                        progress.step();
                        Ok(serde_json::json!({"answer": 42}))
                    }),
                )
                .unwrap();
            let v = jobs
                .get(&quick.id, Duration::from_secs(30), stop.clone())
                .await
                .unwrap();
            assert_eq!(v.state, JobState::Succeeded);
            assert_eq!((v.done, v.total), (1, 1));
            assert_eq!(v.result, Some(serde_json::json!({"answer": 42})));
            assert!(v.finished_at_ms.is_some());
            assert!(jobs.list()[0].result.is_none(), "lists leave results out");

            for _ in 0..MAX_ACTIVE_JOBS {
                jobs.submit(p.clone(), "replay", until_cancelled(1_000_000))
                    .unwrap();
            }
            let refused = jobs
                .submit(p.clone(), "replay", until_cancelled(1))
                .unwrap_err();
            assert_eq!(refused.code(), super::super::ErrorCode::Unavailable);
            assert!(
                refused.message().contains("wait for one to finish"),
                "{}",
                refused.message()
            );
            jobs.cancel_all();
        });
        let _ = std::fs::remove_dir_all(dir);
    }
}
