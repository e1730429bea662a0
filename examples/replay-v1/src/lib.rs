//! Replay lab, version 1: the baseline for every divergence kind `pinion replay` detects.
//!
//! Each workflow here has a counterpart of the same name in `replay-v2` that changes it in
//! one way. The integration tests run these v1 workflows to record golden histories
//! (`tests/fixtures/replay/`), then replay them against v1 (compatible) and v2 (the
//! divergence, or warning, each change causes).

use std::time::Duration;

use pinion_sdk::{ActivityError, WorkflowContext, WorkflowError, DEFAULT_VERSION};
use serde_json::Value;

/// v2 calls `FooRenamed` instead.
async fn type_changed(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    Ok(ctx.activity("Foo", &()).await?)
}

/// v2 drops the call to B.
async fn removed(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let a: String = ctx.activity("A", &()).await?;
    let b: String = ctx.activity("B", &()).await?;
    Ok(a + &b)
}

/// v2 calls B before A.
async fn swapped(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let a: String = ctx.activity("A", &()).await?;
    let b: String = ctx.activity("B", &()).await?;
    Ok(a + &b)
}

/// v2 replaces the timer by an activity.
async fn timer_to_activity(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    ctx.sleep(Duration::from_millis(10)).await?;
    Ok(ctx.activity("X", &()).await?)
}

/// v2 sleeps 20 ms instead of 10 ms.
async fn timer_duration(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    ctx.sleep(Duration::from_millis(10)).await?;
    Ok("slept".into())
}

/// v2 passes 2 instead of 1 to A.
async fn input_changed(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    Ok(ctx.activity("Echo", &1).await?)
}

/// v2 schedules B after A, past the recorded end of the workflow.
async fn past_end(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    Ok(ctx.activity("A", &()).await?)
}

/// v2 never completes after A.
async fn never_completes(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    Ok(ctx.activity("A", &()).await?)
}

/// v2 returns a different result from the same commands.
async fn result_changed(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let a: String = ctx.activity("A", &()).await?;
    Ok(format!("v1:{a}"))
}

/// Unchanged in v2.
async fn unchanged(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let a: String = ctx.activity("A", &()).await?;
    ctx.sleep(Duration::from_millis(5)).await?;
    Ok(a)
}

/// Records version 1 of "change", then calls A; v2 drops the `get_version` call, leaving
/// the recorded marker unmatched.
async fn version_removed(ctx: WorkflowContext, _: Value) -> Result<i32, WorkflowError> {
    let v = ctx.get_version("change", DEFAULT_VERSION, 1);
    let _: String = ctx.activity("A", &()).await?;
    Ok(v)
}

/// Records version 1 of "change", then calls A; v2 supports only versions 2 to 3.
async fn version_out_of_range(ctx: WorkflowContext, _: Value) -> Result<i32, WorkflowError> {
    let v = ctx.get_version("change", DEFAULT_VERSION, 1);
    let _: String = ctx.activity("A", &()).await?;
    Ok(v)
}

/// Seed 002's first breaking change: v2 changes activity `Flag`'s result from bool to
/// string (and `Show` takes what `Flag` returns).
async fn signature_changed(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let flag: bool = ctx.activity("Flag", &()).await?;
    Ok(ctx.activity("Show", &flag).await?)
}

fn flag() -> Result<bool, ActivityError> {
    Ok(true)
}

fn show(v: Value) -> Result<String, ActivityError> {
    Ok(v.to_string())
}

fn foo() -> Result<String, ActivityError> {
    Ok("foo".into())
}

fn a() -> Result<String, ActivityError> {
    Ok("a".into())
}

fn b() -> Result<String, ActivityError> {
    Ok("b".into())
}

fn x() -> Result<String, ActivityError> {
    Ok("x".into())
}

fn echo(v: Value) -> Result<String, ActivityError> {
    Ok(v.to_string())
}

/// Waits for signal `approve`, then calls `Echo` with it. v2 also waits for `countersign`.
async fn signal_changed(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let who: String = ctx.signal("approve").await?;
    Ok(ctx.activity("Echo", &who).await?)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CountdownInput {
    n: u32,
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
}

/// Not a divergence case: identical in v1 and v2, so the continue-as-new test can move a
/// running instance from one module to the other. Each run records the module's label and
/// continues (on `alias`'s module when given) until `n` reaches 0.
async fn countdown(
    ctx: WorkflowContext,
    mut input: CountdownInput,
) -> Result<Value, WorkflowError> {
    let label: String = ctx.activity("Echo", &ctx.version_label()).await?;
    input.labels.push(label);
    if input.n == 0 {
        return Ok(serde_json::json!(input.labels));
    }
    input.n -= 1;
    let options = match &input.alias {
        Some(a) => pinion_sdk::ContinueAsNewOptions::new().alias(a.clone()),
        None => pinion_sdk::ContinueAsNewOptions::new(),
    };
    Err(ctx.continue_as_new_with(&input, options))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LapsInput {
    n: u32,
    #[serde(default)]
    lap: u32,
}

/// Not a divergence case for a single history: runs `n + 1` times, continuing as new after
/// each; each run calls `Echo` with its lap number (0 first). v2 changes the first run
/// only, so of one recorded instance only run 1 diverges from v2.
async fn laps(ctx: WorkflowContext, mut input: LapsInput) -> Result<u32, WorkflowError> {
    let _: String = ctx.activity("Echo", &input.lap).await?;
    if input.lap >= input.n {
        return Ok(input.lap);
    }
    input.lap += 1;
    Err(ctx.continue_as_new(&input))
}

pinion_sdk::export! {
    version: "v1",
    workflows: {
        "TypeChanged" => type_changed,
        "Removed" => removed,
        "Swapped" => swapped,
        "TimerToActivity" => timer_to_activity,
        "TimerDuration" => timer_duration,
        "InputChanged" => input_changed,
        "PastEnd" => past_end,
        "NeverCompletes" => never_completes,
        "ResultChanged" => result_changed,
        "Unchanged" => unchanged,
        "SignatureChanged" => signature_changed,
        "VersionRemoved" => version_removed,
        "VersionOutOfRange" => version_out_of_range,
        "SignalChanged" => signal_changed,
        "Countdown" => countdown,
        "Laps" => laps,
    },
    activities: { "Flag" => flag, "Show" => show, "Foo" => foo, "A" => a, "B" => b, "X" => x, "Echo" => echo },
}
