//! FooBar, version 1: the Azure Durable Functions versioning example
//! (`shared/seeds/002_*.txt`).
//!
//! ```text
//! bool result = await context.CallActivityAsync<bool>("Foo");
//! await context.CallActivityAsync("Bar", result);
//! ```
//!
//! `foobar-v2` inserts a call to `SendNotification` between `Foo` and `Bar`: the breaking
//! change that makes in-flight Durable Functions orchestrations fail with a non-determinism
//! error on replay. `pinion replay --module foobar_v2.wasm` reports that divergence for
//! histories recorded with this module, before anything is deployed; instances pinned to
//! this module keep running it.
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml`
//! (produces `foobar_v1.wasm`).

use pinion_sdk::{ActivityError, WorkflowContext, WorkflowError};
use serde_json::Value;

/// Foo, then Bar with Foo's answer; returns Bar's output.
async fn foobar(ctx: WorkflowContext, _input: Value) -> Result<String, WorkflowError> {
    let result: bool = ctx.activity("Foo", &()).await?;
    let bar: String = ctx.activity("Bar", &result).await?;
    Ok(bar)
}

fn foo() -> Result<bool, ActivityError> {
    Ok(true)
}

fn bar(result: bool) -> Result<String, ActivityError> {
    Ok(format!("Bar got {result}"))
}

pinion_sdk::export! {
    version: "v1",
    workflows: { "FooBar" => foobar },
    activities: { "Foo" => foo, "Bar" => bar },
}
