//! Test pinion workflows with plain `cargo test`, on the host.
//!
//! A [`TestEnv`] drives a module registered with `pinion_sdk::export!` through the same SDK
//! code the wasm build runs (the activation driver behind the module's exports), playing the
//! host's part in memory:
//!
//! - **activities** run for real (the module's own functions, called like the host calls
//!   them: a fresh invocation per attempt) or are replaced by closures
//!   ([`TestEnv::mock_activity`]), and fail, retry and back off by the activity's retry
//!   policy, as the engine's worker does;
//! - **time is skipped**: when nothing is left to do but wait, the logical clock jumps to the
//!   next timer or retry, so a one-hour `ctx.sleep` takes no wall time;
//! - **signals, cancellations and queries** are sent at the points the test chooses
//!   ([`TestRun::signal`], [`TestRun::cancel`], [`TestRun::query`]);
//! - the **result**, the **commands** the workflow produced and the **history** are there to
//!   inspect, and the history is written in the export format of `pinion history export`
//!   ([`TestRun::write_history`]), so `pinion replay --module app.wasm --history FILE` and the
//!   runtime's `Replayer` check it against the wasm build: test fixtures feed the replay gate.
//!
//! ```
//! use pinion_sdk::{ActivityError, WorkflowContext, WorkflowError};
//! use pinion_testing::TestEnv;
//! use std::time::Duration;
//!
//! async fn hello(ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
//!     ctx.sleep(Duration::from_secs(3600)).await?;
//!     Ok(ctx.activity::<String>("greet", &name).await?)
//! }
//! fn greet(name: String) -> Result<String, ActivityError> {
//!     Ok(format!("hello, {name}"))
//! }
//! pinion_sdk::export! { workflows: { "Hello" => hello }, activities: { "greet" => greet } }
//!
//! # fn main() {
//! let mut run = TestEnv::new(&__PINION_MODULE).start("Hello", &"ada");
//! let answer: String = run.run_to_end().unwrap();          // the hour passes at once
//! assert_eq!(answer, "hello, ada");
//! assert_eq!(run.elapsed_ms(), 3_600_000);                 // logical time
//! # }
//! ```
//!
//! - **child workflows** are stood in for by closures ([`TestEnv::mock_child`],
//!   [`TestEnv::mock_child_after`] for one that takes logical time); the child's own
//!   workflow is tested with a `TestEnv` of its own. A child that is not mocked is an
//!   [`HarnessError::Unsupported`].
//!
//! What it does not do: run child workflows for real, activity timeouts (a mock cannot overrun its deadline;
//! return the error you want to test instead), heartbeats (they succeed and are not kept),
//! outgoing HTTP (denied on the host, as in any native build), and the sandbox's guarantees
//! (fuel, memory limits, WASI clocks): for those, run the wasm build with `pinion run`.
#![deny(missing_docs)]

mod env;
mod error;
mod history;
mod run;

pub use env::{ActivityCall, ChildCall, TestEnv, DEFAULT_MODULE_HASH, DEFAULT_START_MS};
pub use error::HarnessError;
pub use pinion_abi::{Command, Failure};
pub use run::{Attempt, Outcome, TestRun};
