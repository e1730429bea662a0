//! FooBar, version 2: the inserted-call breaking change from the Azure Durable Functions
//! versioning article (`shared/seeds/002_*.txt`).
//!
//! ```text
//! bool result = await context.CallActivityAsync<bool>("Foo");
//! await context.CallActivityAsync("SendNotification");
//! await context.CallActivityAsync("Bar", result);
//! ```
//!
//! Replaying a `foobar-v1` history that got past `Foo` against this module diverges at the
//! second command: history has `ScheduleActivity{Bar}`, this code produces
//! `ScheduleActivity{SendNotification}`. pinion reports exactly that, and keeps v1
//! instances on v1 so the change is safe to deploy side by side.
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml`
//! (produces `foobar_v2.wasm`).

use pinion_sdk::{ActivityError, WorkflowContext, WorkflowError};
use serde_json::Value;

/// Foo, SendNotification, then Bar with Foo's answer; returns Bar's output.
async fn foobar(ctx: WorkflowContext, _input: Value) -> Result<String, WorkflowError> {
    let result: bool = ctx.activity("Foo", &()).await?;
    ctx.activity::<()>("SendNotification", &()).await?;
    let bar: String = ctx.activity("Bar", &result).await?;
    Ok(bar)
}

fn foo() -> Result<bool, ActivityError> {
    Ok(true)
}

fn send_notification() -> Result<(), ActivityError> {
    eprintln!("notification sent");
    Ok(())
}

fn bar(result: bool) -> Result<String, ActivityError> {
    Ok(format!("Bar got {result}"))
}

pinion_sdk::export! {
    version: "v2",
    workflows: { "FooBar" => foobar },
    activities: { "Foo" => foo, "SendNotification" => send_notification, "Bar" => bar },
}
