//! Cadence versioning, step 2 (tag v0.3): new executions start on the new logic.
//!
//! `get_version("MyChange", DEFAULT_VERSION, 1)`: a new execution takes the maximum, 1,
//! records a version marker and calls `BarActivity`; replaying an execution without a marker
//! still gives `DEFAULT_VERSION` and `FooActivity`. Deploy it only once no v0.1 worker is
//! left: v0.1 cannot replay a history with a marker. Rolling back to v0.2 is safe, because
//! v0.2 supports both `DEFAULT_VERSION` and 1 with the same branches.
//!
//! The four crates `cadence-v01` … `cadence-v04` are the four git tags of Cadence's "Safe
//! deployments of Versioned workflows" (`shared/seeds/003_*.txt`): workflow `MyWorkflow`
//! moves from `FooActivity` to `BarActivity` in steps that can each be rolled back to the
//! one before without a nondeterminism error. Every step registers both activities; each
//! returns its name in lower case (`"foo"`, `"bar"`), and the workflow returns what its
//! activity returned after sleeping `wait_ms`.
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml
//! --target-dir target/wasm-guests` (produces `cadence_v03.wasm`), then for example
//! `pinion run cadence_v03.wasm MyWorkflow --input '{"wait_ms": 1000}'`.

use std::time::Duration;

use pinion_sdk::{ActivityError, WorkflowContext, WorkflowError, DEFAULT_VERSION};
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

/// Supports `DEFAULT_VERSION` (FooActivity) and 1 (BarActivity); starts on 1.
async fn my_workflow(ctx: WorkflowContext, input: Option<Input>) -> Result<String, WorkflowError> {
    let version = ctx.get_version("MyChange", DEFAULT_VERSION, 1);
    let result: String = if version == DEFAULT_VERSION {
        ctx.activity("FooActivity", &()).await?
    } else {
        ctx.activity("BarActivity", &()).await?
    };
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
    version: "v0.3",
    workflows: { "MyWorkflow" => my_workflow },
    activities: { "FooActivity" => foo_activity, "BarActivity" => bar_activity },
}
