//! The marker census's test guest: one workflow that records the version marker its input
//! chooses, so one module can leave histories on every path of a change.
//!
//! `Versioned` calls `get_version_with("MyChange", DEFAULT_VERSION, 2,
//! ExecuteWithVersion(v))` with the input's `version` (default `DEFAULT_VERSION`, which
//! records no marker), runs activity `Old` for `DEFAULT_VERSION`, `One` for 1 and `Two` for
//! 2, then sleeps `wait_ms` so a test can keep it open. `pinion markers` then lists the open
//! instances by the path they recorded (`tests/integration/census.rs`).
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml
//! --target-dir target/wasm-guests` (produces `census.wasm`), then for example
//! `pinion run census.wasm Versioned --input '{"version": 2}'`.

use std::time::Duration;

use pinion_sdk::{ActivityError, VersionOption, WorkflowContext, WorkflowError, DEFAULT_VERSION};
use serde::Deserialize;

/// Workflow input.
#[derive(Debug, Deserialize)]
struct Input {
    /// The version a first execution takes: `DEFAULT_VERSION` (-1, no marker), 1 or 2.
    #[serde(default = "default_version")]
    version: i32,
    /// How long to sleep after the activity, in milliseconds.
    #[serde(default)]
    wait_ms: u64,
}

fn default_version() -> i32 {
    DEFAULT_VERSION
}

/// Takes the input's version of `MyChange`, runs that version's activity, sleeps.
async fn versioned(ctx: WorkflowContext, input: Input) -> Result<String, WorkflowError> {
    let version = ctx.get_version_with(
        "MyChange",
        DEFAULT_VERSION,
        2,
        VersionOption::ExecuteWithVersion(input.version),
    );
    let result: String = match version {
        DEFAULT_VERSION => ctx.activity("Old", &()).await?,
        1 => ctx.activity("One", &()).await?,
        _ => ctx.activity("Two", &()).await?,
    };
    ctx.sleep(Duration::from_millis(input.wait_ms)).await?;
    Ok(result)
}

/// Returns `"old"`.
fn old() -> Result<String, ActivityError> {
    Ok("old".into())
}

/// Returns `"one"`.
fn one() -> Result<String, ActivityError> {
    Ok("one".into())
}

/// Returns `"two"`.
fn two() -> Result<String, ActivityError> {
    Ok("two".into())
}

pinion_sdk::export! {
    version: "census",
    workflows: { "Versioned" => versioned },
    activities: { "Old" => old, "One" => one, "Two" => two },
}
