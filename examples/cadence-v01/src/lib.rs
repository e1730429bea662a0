//! Cadence versioning, step 0 (tag v0.1): `MyWorkflow` calls `FooActivity`. There is no
//! `get_version` call yet, so no execution records a marker for "MyChange".
//!
//! The four crates `cadence-v01` … `cadence-v04` are the four git tags of Cadence's "Safe
//! deployments of Versioned workflows" (`shared/seeds/003_*.txt`): workflow `MyWorkflow`
//! moves from `FooActivity` to `BarActivity` in steps that can each be rolled back to the
//! one before without a nondeterminism error. Every step registers both activities; each
//! returns its name in lower case (`"foo"`, `"bar"`), and the workflow returns what its
//! activity returned after sleeping `wait_ms`.
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml
//! --target-dir target/wasm-guests` (produces `cadence_v01.wasm`), then for example
//! `pinion run cadence_v01.wasm MyWorkflow --input '{"wait_ms": 1000}'`.

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

/// FooActivity: the only logic v0.1 knows.
async fn my_workflow(ctx: WorkflowContext, input: Option<Input>) -> Result<String, WorkflowError> {
    let result: String = ctx.activity("FooActivity", &()).await?;
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
    version: "v0.1",
    workflows: { "MyWorkflow" => my_workflow },
    activities: { "FooActivity" => foo_activity, "BarActivity" => bar_activity },
}
