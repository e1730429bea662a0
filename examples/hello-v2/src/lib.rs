//! Hello, version 2: the AWS Step Functions "Approved" / "ThumbsUp" story, day 2
//! (`shared/seeds/004_*.txt`).
//!
//! Same workflow type `"Hello"` as `hello-v1`, but the wait is gone, activity `hello` now
//! answers `"ThumbsUp"`, and the decision expects `"ThumbsUp"`. Deploy it next to
//! `hello-v1`: new instances run this code, while instances started on v1 keep running v1's
//! workflow *and* v1's activity, so neither version sees the other's verdict.
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml`
//! (produces `hello_v2.wasm`).

use pinion_sdk::{ActivityError, WorkflowContext, WorkflowError};
use serde_json::Value;

/// Ask, decide. The input is accepted and ignored, so v1-style inputs still start.
async fn hello_workflow(ctx: WorkflowContext, _input: Value) -> Result<String, WorkflowError> {
    let verdict: String = ctx.activity("hello", &()).await?;
    if verdict == "ThumbsUp" {
        Ok("Success".into())
    } else {
        Err(WorkflowError::new(
            "Failed",
            format!("expected \"ThumbsUp\", got {verdict:?}"),
        ))
    }
}

/// Day 2's verdict.
fn hello() -> Result<String, ActivityError> {
    Ok("ThumbsUp".into())
}

pinion_sdk::export! {
    version: "v2",
    workflows: { "Hello" => hello_workflow },
    activities: { "hello" => hello },
}
