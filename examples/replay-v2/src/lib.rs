//! Replay lab, version 2: each workflow changes its `replay-v1` namesake in one way, so
//! that replaying v1's histories here shows each divergence kind (see `replay-v1`).

use std::time::Duration;

use pinion_sdk::{ActivityError, WorkflowContext, WorkflowError};
use serde_json::Value;

/// Activity type changed: Foo → FooRenamed.
async fn type_changed(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    Ok(ctx.activity("FooRenamed", &()).await?)
}

/// Activity removed: B is no longer called.
async fn removed(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let a: String = ctx.activity("A", &()).await?;
    Ok(a)
}

/// Two calls swapped.
async fn swapped(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let b: String = ctx.activity("B", &()).await?;
    let a: String = ctx.activity("A", &()).await?;
    Ok(a + &b)
}

/// Timer replaced by an activity.
async fn timer_to_activity(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let _: String = ctx.activity("Wait", &()).await?;
    Ok(ctx.activity("X", &()).await?)
}

/// Timer duration changed: 10 ms → 20 ms (a warning, not a divergence).
async fn timer_duration(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    ctx.sleep(Duration::from_millis(20)).await?;
    Ok("slept".into())
}

/// Activity input changed: 1 → 2 (a warning; a divergence with --strict-inputs).
async fn input_changed(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    Ok(ctx.activity("Echo", &2).await?)
}

/// Issues a command past the recorded end: B after A.
async fn past_end(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let a: String = ctx.activity("A", &()).await?;
    let b: String = ctx.activity("B", &()).await?;
    Ok(a + &b)
}

/// Never completes: after A it waits on something that never happens.
async fn never_completes(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let a: String = ctx.activity("A", &()).await?;
    std::future::pending::<()>().await;
    Ok(a)
}

/// Same commands, different result.
async fn result_changed(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let a: String = ctx.activity("A", &()).await?;
    Ok(format!("v2:{a}"))
}

/// Unchanged from v1.
async fn unchanged(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let a: String = ctx.activity("A", &()).await?;
    ctx.sleep(Duration::from_millis(5)).await?;
    Ok(a)
}

/// Version marker removed: the `get_version("change", ..)` call v1 made is gone, so the
/// recorded marker has no counterpart.
async fn version_removed(ctx: WorkflowContext, _: Value) -> Result<i32, WorkflowError> {
    let _: String = ctx.activity("A", &()).await?;
    Ok(1)
}

/// Version out of range: v1 recorded version 1 of "change"; this code supports 2 to 3.
async fn version_out_of_range(ctx: WorkflowContext, _: Value) -> Result<i32, WorkflowError> {
    let v = ctx.get_version("change", 2, 3);
    let _: String = ctx.activity("A", &()).await?;
    Ok(v)
}

/// Seed 002's first breaking change: `Flag` now returns a string. A v1 history recorded
/// `true`, which no longer deserialises, so the workflow takes another path.
async fn signature_changed(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let flag: String = ctx.activity("Flag", &()).await?;
    Ok(ctx.activity("Show", &flag).await?)
}

fn flag() -> Result<String, ActivityError> {
    Ok("yes".into())
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

fn wait() -> Result<String, ActivityError> {
    Ok("waited".into())
}

fn echo(v: Value) -> Result<String, ActivityError> {
    Ok(v.to_string())
}

/// v1 called `Echo` right after signal `approve`; this waits for `countersign` too, so the
/// recorded `Echo` has no counterpart when only `approve` was delivered.
async fn signal_changed(ctx: WorkflowContext, _: Value) -> Result<String, WorkflowError> {
    let who: String = ctx.signal("approve").await?;
    let second: String = ctx.signal("countersign").await?;
    Ok(ctx.activity("Echo", &format!("{who}+{second}")).await?)
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

/// v1 called `Echo` in every run; this calls `A` in the first (lap 0) instead.
async fn laps(ctx: WorkflowContext, mut input: LapsInput) -> Result<u32, WorkflowError> {
    // Changed in the first run only: run 1 of a v1 instance diverges, the others do not.
    let _: String = if input.lap == 0 {
        ctx.activity("A", &()).await?
    } else {
        ctx.activity("Echo", &input.lap).await?
    };
    if input.lap >= input.n {
        return Ok(input.lap);
    }
    input.lap += 1;
    Err(ctx.continue_as_new(&input))
}

pinion_sdk::export! {
    version: "v2",
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
    activities: { "Flag" => flag, "Show" => show, "Foo" => foo, "FooRenamed" => foo, "A" => a, "B" => b, "X" => x, "Wait" => wait, "Echo" => echo },
}
