//! Progress of a long local operation (replay, verify, upgrade) on stderr.
//!
//! [`watch`] runs the operation on this thread while a second one reads its [`Progress`]
//! and prints how far it got, `verified 40,000 / 100,000`: on a terminal as one line
//! rewritten in place every 200 ms, otherwise (a log, a CI job) as a plain line every 5 s.
//! Nothing is printed for an operation that ends before its first line is due, so quick
//! commands and their tests see no progress at all.

use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::time::Duration;

use crate::api::local::Prepared;
use crate::api::types::{
    AliasRamp, AliasSet, Candidate, DeployOptions, Deployment, EventQuery, GcBody, GcResponse,
    InputBody, InstancePage, ListQuery, QueryAnswer, RampBody, ReplayQuery, ReplayResponse,
    SetAliasBody, Signalled, StartBody, Started, StopBody, StopVerb, Stopped, UpgradeBody,
    UpgradeResponse,
};
use crate::api::{Api, ApiError};
use crate::census::{MarkerCensus, MarkerQuery};
use crate::engine::{Pinion, Progress};
use crate::history::HistoryExport;
use crate::rollout::ModuleStatus;
use crate::store::{AliasChange, AliasRecord, InstanceRecord, LifecycleEvent};

/// `n` with thousands separators: `100,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs `op`, printing `<verb> done / total` on stderr while it runs.
pub fn watch<R>(progress: &Progress, verb: &str, op: impl FnOnce() -> R) -> R {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut printed = false;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let (done, total) = (progress.done(), progress.total());
                if total == 0 {
                    continue;
                }
                let line = format!("{verb} {} / {}", thousands(done), thousands(total));
                let mut err = std::io::stderr().lock();
                if terminal {
                    let _ = write!(err, "\r{line}");
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
                printed = true;
            }
            if printed && terminal {
                eprintln!(
                    "\r{verb} {} / {}",
                    thousands(progress.done()),
                    thousands(progress.total())
                );
            }
        });
        let r = op();
        let _ = stop.send(());
        r
    })
}

/// The engine as the CLI's local [`Api`]: every operation as [`Pinion`]'s own, except that
/// the long ones (verifying deploys and alias moves, replay, upgrade) print their progress
/// with [`watch`] while they run.
pub struct Watched(pub Pinion);

impl Watched {
    fn long<T>(&self, verb: &str, prepared: Result<Prepared<T>, ApiError>) -> Result<T, ApiError> {
        let prepared = prepared?;
        let progress = Progress::new();
        watch(&progress, verb, || prepared(&self.0, &progress))
    }
}

impl Api for Watched {
    fn deploy(&self, wasm: &[u8], options: &DeployOptions) -> Result<Deployment, ApiError> {
        self.long(
            "verified",
            self.0.prepare_deploy(wasm.to_vec(), options.clone()),
        )
    }
    fn start(&self, body: &StartBody) -> Result<Started, ApiError> {
        Api::start(&self.0, body)
    }
    fn status(&self, id: &str) -> Result<InstanceRecord, ApiError> {
        Api::status(&self.0, id)
    }
    fn wait(&self, id: &str, timeout: Duration) -> Result<InstanceRecord, ApiError> {
        Api::wait(&self.0, id, timeout)
    }
    fn list(&self, query: &ListQuery) -> Result<InstancePage, ApiError> {
        Api::list(&self.0, query)
    }
    fn history(&self, id: &str, run: Option<u32>) -> Result<HistoryExport, ApiError> {
        Api::history(&self.0, id, run)
    }
    fn signal(&self, id: &str, name: &str, body: &InputBody) -> Result<Signalled, ApiError> {
        Api::signal(&self.0, id, name, body)
    }
    fn query(&self, id: &str, name: &str, body: &InputBody) -> Result<QueryAnswer, ApiError> {
        Api::query(&self.0, id, name, body)
    }
    fn stop(&self, verb: StopVerb, body: &StopBody) -> Result<Stopped, ApiError> {
        Api::stop(&self.0, verb, body)
    }
    fn events(&self, query: &EventQuery) -> Result<Vec<LifecycleEvent>, ApiError> {
        Api::events(&self.0, query)
    }
    fn modules(&self) -> Result<Vec<ModuleStatus>, ApiError> {
        Api::modules(&self.0)
    }
    fn markers(&self, query: &MarkerQuery) -> Result<MarkerCensus, ApiError> {
        Api::markers(&self.0, query)
    }
    fn aliases(&self) -> Result<Vec<AliasRecord>, ApiError> {
        Api::aliases(&self.0)
    }
    fn set_alias(&self, name: &str, body: &SetAliasBody) -> Result<AliasSet, ApiError> {
        self.long(
            "verified",
            self.0.prepare_set_alias(name.into(), body.clone()),
        )
    }
    fn ramp_alias(&self, name: &str, body: &RampBody) -> Result<AliasRamp, ApiError> {
        Api::ramp_alias(&self.0, name, body)
    }
    fn cancel_ramp(&self, name: &str) -> Result<AliasRamp, ApiError> {
        Api::cancel_ramp(&self.0, name)
    }
    fn alias_history(&self, name: &str) -> Result<Vec<AliasChange>, ApiError> {
        Api::alias_history(&self.0, name)
    }
    fn replay(
        &self,
        candidate: &Candidate,
        query: &ReplayQuery,
    ) -> Result<ReplayResponse, ApiError> {
        self.long(
            "replayed",
            self.0.prepare_replay(candidate.clone(), query.clone()),
        )
    }
    fn upgrade(&self, body: &UpgradeBody) -> Result<UpgradeResponse, ApiError> {
        self.long("verified", self.0.prepare_upgrade(body.clone()))
    }
    fn gc(&self, body: &GcBody) -> Result<GcResponse, ApiError> {
        Api::gc(&self.0, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(40_000), "40,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
