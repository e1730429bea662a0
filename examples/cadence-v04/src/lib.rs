//! Cadence versioning, step 3 (tag v0.4): the old logic is gone.
//!
//! `get_version("MyChange", 1, 1)`: only version 1 is supported, and the workflow always
//! calls `BarActivity`. Deploy it only once every execution that took `DEFAULT_VERSION` has
//! finished: replaying one here finds no marker where the code requires one, and the host
//! reports a nondeterminism error (the SDK issues a marker `{"version": -1, ..}` that
//! history lacks). Rolling back to v0.3 is safe: v0.3 supports version 1.
//!
//! The four crates `cadence-v01` … `cadence-v04` are the four git tags of Cadence's "Safe
//! deployments of Versioned workflows" (`shared/seeds/003_*.txt`): workflow `MyWorkflow`
//! moves from `FooActivity` to `BarActivity` in steps that can each be rolled back to the
//! one before without a nondeterminism error. Every step registers both activities; each
//! returns its name in lower case (`"foo"`, `"bar"`), and the workflow returns what its
//! activity returned after sleeping `wait_ms`.
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml
//! --target-dir target/wasm-guests` (produces `cadence_v04.wasm`), then for example
//! `pinion run cadence_v04.wasm MyWorkflow --input '{"wait_ms": 1000}'`.

use std::time::Duration;

use pinion_sdk::{ActivityError, WorkflowContext, WorkflowError};
use serde::Deserialize;

/// Workflow input. No input at all, or `{}`, means no wait.
#[derive(Debug, Default, Deserialize)]
struct Input {
    /// How long to sleep after the activity, in milliseconds, so that a test can keep an
    /// instance in flight while it deploys the next step.
    #[serde(default)]
    wait_ms: u64,
}

/// Sleeps for the input's `wait_ms` (a zero-length timer when there is none, so every run
/// has the same shape), then returns the activity's result.
async fn finish(
    ctx: &WorkflowContext,
    input: Option<Input>,
    result: String,
) -> Result<String, WorkflowError> {
    let wait_ms = input.unwrap_or_default().wait_ms;
    ctx.sleep(Duration::from_millis(wait_ms)).await?;
    Ok(result)
}

/// Supports version 1 only: BarActivity.
async fn my_workflow(ctx: WorkflowContext, input: Option<Input>) -> Result<String, WorkflowError> {
    // The call stays: it records the marker v0.3 needs to replay this execution, and it
    // makes replaying a pre-change execution fail loudly instead of calling the wrong activity.
    let _ = ctx.get_version("MyChange", 1, 1);
    let result: String = ctx.activity("BarActivity", &()).await?;
    finish(&ctx, input, result).await
}

/// Returns `"foo"`.
fn foo_activity() -> Result<String, ActivityError> {
    Ok("foo".into())
}

/// Returns `"bar"`.
fn bar_activity() -> Result<String, ActivityError> {
    Ok("bar".into())
}

pinion_sdk::export! {
    version: "v0.4",
    workflows: { "MyWorkflow" => my_workflow },
    activities: { "FooActivity" => foo_activity, "BarActivity" => bar_activity },
}
