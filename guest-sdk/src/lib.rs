//! Write pinion workflows and activities in Rust, compiled to WebAssembly.
//!
//! A pinion module is a `cdylib` crate built for `wasm32-wasip1`. It exports workflows
//! (durable, deterministic `async` functions that orchestrate) and activities (plain
//! functions that do the side effects), registered with [`export!`]:
//!
//! ```
//! use pinion_sdk::{ActivityError, WorkflowContext, WorkflowError};
//! use std::time::Duration;
//!
//! async fn hello_workflow(ctx: WorkflowContext, wait_ms: u64) -> Result<String, WorkflowError> {
//!     ctx.sleep(Duration::from_millis(wait_ms)).await?;
//!     let answer: String = ctx.activity("hello", &()).await?;
//!     if answer == "Approved" {
//!         Ok("Success".into())
//!     } else {
//!         Err(WorkflowError::new("Failed", format!("unexpected answer {answer:?}")))
//!     }
//! }
//!
//! fn hello() -> Result<String, ActivityError> {
//!     Ok("Approved".into())
//! }
//!
//! pinion_sdk::export! {
//!     version: "v1",
//!     workflows: { "Hello" => hello_workflow },
//!     activities: { "hello" => hello },
//! }
//! # fn main() {}
//! ```
//!
//! # How it runs
//!
//! The host drives a workflow by *activations* (see `pinion_abi`): a batch of jobs (start,
//! activity resolved, timer fired) with the workflow's logical time. The SDK applies the
//! jobs, polls the workflow's future once, and answers with the commands the code issued
//! (schedule activity, start or cancel timer, complete, fail). One wasm instance hosts one
//! workflow instance; after eviction the host rebuilds it by replaying history, and the code
//! must then issue the same commands in the same order. Activities run in separate, fresh
//! instances of the same module.
//!
//! # Determinism
//!
//! Workflow code must make the same decisions on replay. Use the [`WorkflowContext`] for
//! time ([`WorkflowContext::now`]), randomness ([`WorkflowContext::random_u64`],
//! [`WorkflowContext::uuid`]), waiting ([`WorkflowContext::sleep`]) and anything with side
//! effects (activities). The sandbox backs this up: in a workflow instance WASI clocks return
//! the logical time and WASI randomness is seeded from history, so even `SystemTime::now`
//! and OS-seeded RNGs replay identically; there is no filesystem, network or environment.
//! Iterate `BTreeMap`s rather than `HashMap`s when order matters to commands. See
//! `docs/sdk.md` for the full rules.
//!
//! # Changing running code
//!
//! An instance replays on whatever code rebuilds it. To change a workflow under running
//! instances, guard the change with [`WorkflowContext::get_version`] (Cadence-style version
//! numbers, with [`VersionOption`] for rollback-safe deployments) or
//! [`WorkflowContext::patched`] / [`WorkflowContext::deprecate_patch`] (Temporal-style
//! patches): the first execution records which path it took, and replay follows the record.
//!
//! # Errors and panics
//!
//! Activities return [`ActivityError`]; workflows observe [`ActivityFailed`] and return
//! [`WorkflowError`]. A panic in workflow or activity code aborts the wasm instance (a trap);
//! the panic message goes to stderr, which the host records.
#![deny(missing_docs)]

mod activity;
mod child;
mod context;
mod error;
pub mod future;
pub mod http;
mod macros;
mod options;
mod query;
mod rng;
mod signal;
mod versioning;

// Hidden: the runtime behind the generated exports. `rt/` rather than `__rt/` on disk.
#[doc(hidden)]
#[path = "rt/mod.rs"]
pub mod __rt;

pub use activity::ActivityContext;
pub use child::{ChildFuture, ChildOptions, ContinueAsNewOptions, CONTINUE_AS_NEW_KIND};
pub use context::{ActivityFuture, Level, Timer, WorkflowContext};
pub use error::{ActivityError, ActivityFailed, Cancelled, WorkflowError, CANCELLED_KIND};
pub use future::{join, join3, join_all, select, select_all, Either};
pub use options::{ActivityOptions, RetryPolicy};
/// The wire types shared with the host, for code that needs them (tests, tooling).
pub use pinion_abi as abi;
pub use signal::{CancellationFuture, SignalFuture, SignalStream, INVALID_SIGNAL_KIND};
pub use versioning::{VersionOption, DEFAULT_VERSION};
