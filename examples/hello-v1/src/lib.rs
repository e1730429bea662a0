//! Hello, version 1: the AWS Step Functions "Approved" / "ThumbsUp" story, day 1
//! (`shared/seeds/004_*.txt`).
//!
//! The workflow waits (5 minutes by default), asks activity `hello` for a verdict and
//! succeeds only if the verdict is `"Approved"`. Version 2 (`hello-v2`) changes both the
//! activity (it answers `"ThumbsUp"`) and the decision. In Step Functions a day-1 execution
//! still waiting when day 2 is deployed calls the *new* function and fails; in pinion an
//! instance is pinned to the module it started on, so it calls this module's `hello` and
//! succeeds.
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml`
//! (produces `hello_v1.wasm`), then for example
//! `pinion run hello_v1.wasm Hello --input '{"wait_ms": 1000}'`.

use std::time::Duration;

use pinion_sdk::{ActivityError, WorkflowContext, WorkflowError};
use serde::Deserialize;

/// Workflow input. Every field is optional; no input at all means the defaults.
#[derive(Debug, Deserialize)]
struct HelloInput {
    /// How long to wait before asking, in milliseconds (the article's `Wait: 300` seconds).
    #[serde(default = "default_wait_ms")]
    wait_ms: u64,
}

fn default_wait_ms() -> u64 {
    300_000
}

/// Wait, ask, decide.
async fn hello_workflow(
    ctx: WorkflowContext,
    input: Option<HelloInput>,
) -> Result<String, WorkflowError> {
    let wait_ms = input.map_or_else(default_wait_ms, |i| i.wait_ms);
    ctx.info(format!("waiting {wait_ms} ms before asking for a verdict"));
    ctx.sleep(Duration::from_millis(wait_ms)).await?;
    let verdict: String = ctx.activity("hello", &()).await?;
    if verdict == "Approved" {
        Ok("Success".into())
    } else {
        Err(WorkflowError::new(
            "Failed",
            format!("expected \"Approved\", got {verdict:?}"),
        ))
    }
}

/// Day 1's verdict.
fn hello() -> Result<String, ActivityError> {
    Ok("Approved".into())
}

pinion_sdk::export! {
    version: "v1",
    workflows: { "Hello" => hello_workflow },
    activities: { "hello" => hello },
}
