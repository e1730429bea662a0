//! Patching, version 3: `ctx.deprecate_patch("my-patch")`, then `B`.
//!
//! Deploy it once no execution from before the patch (v1's, or v2's unpatched replays) is
//! running: only the patched branch is left. It still records the marker, flagged
//! deprecated, so v2 can replay its executions (`patched` is true when any patch marker is
//! recorded) and a rollback to v2 is safe. It replays v2's executions too: the marker is
//! matched by id.
//!
//! The four crates `patch-v1` … `patch-v4` are Temporal's patching lifecycle for workflow
//! `Patched`, moving from activity `A` to activity `B`: add the patch, deprecate it, remove
//! it. Every step registers both activities (`"a"`, `"b"`); the workflow returns what its
//! activity returned after sleeping `wait_ms`.
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml
//! --target-dir target/wasm-guests` (produces `patch_v3.wasm`), then for example
//! `pinion run patch_v3.wasm Patched --input '{"wait_ms": 1000}'`.

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

/// B, still recording the (deprecated) patch marker.
async fn patched_workflow(
    ctx: WorkflowContext,
    input: Option<Input>,
) -> Result<String, WorkflowError> {
    ctx.deprecate_patch("my-patch");
    let result: String = ctx.activity("B", &()).await?;
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
    version: "v3",
    workflows: { "Patched" => patched_workflow },
    activities: { "A" => a, "B" => b },
}
