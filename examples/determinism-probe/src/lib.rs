//! Determinism probe: shows what the sandbox does to ordinary non-deterministic Rust.
//!
//! Workflow `"Probe"` reads the wall clock with `std::time::SystemTime::now()` and draws a
//! `u64` from the OS RNG (the `getrandom` crate, i.e. WASI `random_get`), next to the
//! context's `now_ms()` and `random_u64()`; sleeps 1 ms on a durable timer; reads clock and
//! OS RNG again. In a workflow instance the host answers WASI clocks with the logical time
//! and WASI randomness from a PRNG seeded in history, so all of these replay identically:
//! `sys_before == ctx_now_before`, and replaying the history yields the same JSON.
//!
//! Workflow `"ProbeActivity"` calls activity `"wall_clock"` twice. Activities run with the
//! real clock and real randomness, so the two results differ from each other and from any
//! workflow-side value: that is where non-determinism belongs.
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml`
//! (produces `determinism_probe.wasm`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pinion_sdk::{ActivityError, WorkflowContext, WorkflowError};
use serde_json::{json, Value};

/// Milliseconds since the epoch from the WASI wall clock (logical time inside a workflow).
#[allow(
    clippy::disallowed_methods,
    reason = "reading the raw WASI clock is the point of this probe"
)]
fn sys_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A `u64` from WASI `random_get` (seeded PRNG inside a workflow, real entropy in activities).
fn os_random() -> Result<u64, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

fn os_random_or_fail() -> Result<u64, WorkflowError> {
    os_random().map_err(|e| WorkflowError::new("RandomUnavailable", e.to_string()))
}

async fn probe(ctx: WorkflowContext, _input: Value) -> Result<Value, WorkflowError> {
    let sys_before = sys_now_ms();
    let os_random_before = os_random_or_fail()?;
    let ctx_now_before = ctx.now_ms();
    let ctx_random = ctx.random_u64();
    ctx.sleep(Duration::from_millis(1)).await?;
    let sys_after = sys_now_ms();
    let os_random_after = os_random_or_fail()?;
    Ok(json!({
        "sys_before": sys_before,
        "os_random_before": os_random_before,
        "ctx_now_before": ctx_now_before,
        "ctx_random": ctx_random,
        "sys_after": sys_after,
        "os_random_after": os_random_after,
        "ctx_now_after": ctx.now_ms(),
    }))
}

async fn probe_activity(ctx: WorkflowContext, _input: Value) -> Result<Value, WorkflowError> {
    let first: Value = ctx.activity("wall_clock", &()).await?;
    let second: Value = ctx.activity("wall_clock", &()).await?;
    Ok(json!({ "first": first, "second": second }))
}

/// The real clock and real randomness, as an activity sees them.
fn wall_clock() -> Result<Value, ActivityError> {
    let os_random =
        os_random().map_err(|e| ActivityError::retryable("RandomUnavailable", e.to_string()))?;
    Ok(json!({ "sys_now_ms": sys_now_ms(), "os_random": os_random }))
}

pinion_sdk::export! {
    version: "v1",
    workflows: { "Probe" => probe, "ProbeActivity" => probe_activity },
    activities: { "wall_clock" => wall_clock },
}
