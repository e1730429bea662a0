//! The engine tests again, on PostgreSQL: `engine.rs`, `census.rs`, `signals.rs`, `children.rs`,
//! `rollout.rs`, `determinism.rs`, `versioning.rs`, `replay.rs`, and through a real
//! `pinion server` `heartbeats.rs`, `events.rs`, `ops.rs`, `api_signals.rs` and
//! `api_jobs.rs`, compiled a second time with a `common` whose [`TempDir::new`] gives each
//! test a new database on the server `$PINION_TEST_PG` names (scripts/test.sh starts one).
//! Every test of those files runs here as `pg::<file>::<test>`, except the few marked
//! `sqlite_only!` (they test the SQLite file or the compile cache kept beside it). `store`
//! tests the PostgreSQL store's own rules: the worker lock, concurrent commits, the
//! outbox, timers, claims, a killed server, the upgrade check.

mod common {
    pub use crate::common::*;

    /// Shadows `crate::common::sqlite_only`: those tests are not compiled here.
    macro_rules! sqlite_only {
        ($($t:tt)*) => {};
    }
    pub(crate) use sqlite_only;

    /// `TempDir::new` of the PostgreSQL run: a temporary directory and a database.
    pub struct TempDir;

    impl TempDir {
        #[allow(clippy::new_ret_no_self)]
        pub fn new(tag: &str) -> crate::common::TempDir {
            crate::common::TempDir::postgres(tag)
        }
    }
}

#[path = "api_jobs.rs"]
mod api_jobs;
#[path = "api_signals.rs"]
mod api_signals;
#[path = "census.rs"]
mod census;
#[path = "children.rs"]
mod children;
#[path = "determinism.rs"]
mod determinism;
#[path = "engine.rs"]
mod engine;
#[path = "events.rs"]
mod events;
#[path = "heartbeats.rs"]
mod heartbeats;
mod many;
mod migrate;
#[path = "ops.rs"]
mod ops;
#[path = "replay.rs"]
mod replay;
#[path = "rollout.rs"]
mod rollout;
#[path = "signals.rs"]
mod signals;
mod store;
#[path = "versioning.rs"]
mod versioning;
