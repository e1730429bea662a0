//! Patching, version 2: `if ctx.patched("my-patch") { B } else { A }`.
//!
//! A new execution takes the patched branch and records a patch marker. Replaying a v1
//! execution (no marker) gives `false` and the old branch, so running v1 instances can move
//! here. v1 cannot replay executions started here (it does not expect the marker): roll
//! back only while none has started.
//!
//! The four crates `patch-v1` … `patch-v4` are Temporal's patching lifecycle for workflow
//! `Patched`, moving from activity `A` to activity `B`: add the patch, deprecate it, remove
//! it. Every step registers both activities (`"a"`, `"b"`); the workflow returns what its
//! activity returned after sleeping `wait_ms`.
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml
//! --target-dir target/wasm-guests` (produces `patch_v2.wasm`), then for example
//! `pinion run patch_v2.wasm Patched --input '{"wait_ms": 1000}'`.

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

/// B when patched (new executions, and replays of executions that recorded the patch), A
/// otherwise.
async fn patched_workflow(
    ctx: WorkflowContext,
    input: Option<Input>,
) -> Result<String, WorkflowError> {
    let result: String = if ctx.patched("my-patch") {
        ctx.activity("B", &()).await?
    } else {
        ctx.activity("A", &()).await?
    };
    finish(&ctx, input, result).await
}

/// Returns `"a"`.
fn a() -> Result<String, ActivityError> {
    Ok("a".into())
}

/// Returns `"b"`.
fn b() -> Result<String, ActivityError> {
    Ok("b".into())
}

pinion_sdk::export! {
    version: "v2",
    workflows: { "Patched" => patched_workflow },
    activities: { "A" => a, "B" => b },
}
