//! Running one activity attempt: `ActivityInvocation` in, `ActivityOutcome` out.
//!
//! The [`ActivityFn`] trait is what lets [`export!`](crate::export) accept both activity
//! signatures (`fn(In)`, `fn(ActivityContext, In)`) and the no-input form (`fn()`) under one
//! syntax: each signature implements the trait for a different marker type, so exactly one
//! impl applies to any given function and the compiler picks it.

use pinion_abi::{ActivityInvocation, ActivityOutcome, Failure};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode_json, Module};
use crate::activity::ActivityContext;
use crate::error::ActivityError;

/// A function usable as an activity. Implemented for
///
/// - `Fn(In) -> Result<Out, ActivityError>`
/// - `Fn(ActivityContext, In) -> Result<Out, ActivityError>`
/// - `Fn() -> Result<Out, ActivityError>` (the input payload is ignored)
///
/// where `In: DeserializeOwned` and `Out: Serialize`. `M` is a marker that only serves to
/// keep the three impls apart.
pub trait ActivityFn<M> {
    /// Decodes the JSON input, calls the function, encodes the JSON output.
    ///
    /// # Errors
    /// The function's own error, or a non-retryable `"InvalidInput"` / `"InvalidOutput"`.
    fn invoke(&self, ctx: ActivityContext, input: &[u8]) -> Result<Vec<u8>, ActivityError>;
}

impl<F, In, Out> ActivityFn<fn(In) -> Out> for F
where
    F: Fn(In) -> Result<Out, ActivityError>,
    In: DeserializeOwned,
    Out: Serialize,
{
    fn invoke(&self, ctx: ActivityContext, input: &[u8]) -> Result<Vec<u8>, ActivityError> {
        let input = decode_input(&ctx, input)?;
        encode_output(&ctx, &self(input)?)
    }
}

impl<F, In, Out> ActivityFn<fn(ActivityContext, In) -> Out> for F
where
    F: Fn(ActivityContext, In) -> Result<Out, ActivityError>,
    In: DeserializeOwned,
    Out: Serialize,
{
    fn invoke(&self, ctx: ActivityContext, input: &[u8]) -> Result<Vec<u8>, ActivityError> {
        let input = decode_input(&ctx, input)?;
        let name = ctx.activity_type.clone();
        let output = self(ctx, input)?;
        serde_json::to_vec(&output).map_err(|e| invalid_output(&name, &e))
    }
}

impl<F, Out> ActivityFn<fn() -> Out> for F
where
    F: Fn() -> Result<Out, ActivityError>,
    Out: Serialize,
{
    fn invoke(&self, ctx: ActivityContext, _input: &[u8]) -> Result<Vec<u8>, ActivityError> {
        encode_output(&ctx, &self()?)
    }
}

fn decode_input<In: DeserializeOwned>(
    ctx: &ActivityContext,
    input: &[u8],
) -> Result<In, ActivityError> {
    decode_json(input).map_err(|e| {
        ActivityError::non_retryable(
            "InvalidInput",
            format!("invalid input for activity \"{}\": {e}", ctx.activity_type),
        )
    })
}

fn encode_output<Out: Serialize>(
    ctx: &ActivityContext,
    output: &Out,
) -> Result<Vec<u8>, ActivityError> {
    serde_json::to_vec(output).map_err(|e| invalid_output(&ctx.activity_type, &e))
}

fn invalid_output(activity_type: &str, e: &serde_json::Error) -> ActivityError {
    ActivityError::non_retryable(
        "InvalidOutput",
        format!("the result of activity \"{activity_type}\" does not serialise to JSON: {e}"),
    )
}

/// Calls `f` as an activity; the macro's glue, generic so each registered function gets its
/// own monomorphised entry with a plain `fn` pointer type.
pub fn invoke_activity<M, F: ActivityFn<M>>(
    ctx: ActivityContext,
    input: &[u8],
    f: F,
) -> Result<Vec<u8>, ActivityError> {
    f.invoke(ctx, input)
}

/// Runs one activity attempt.
///
/// An unknown activity name is a non-retryable `"UnknownActivity"` failure rather than an
/// error of the call: the host records it like any failure and the workflow can see it.
pub fn run_activity(module: &Module, invocation: ActivityInvocation) -> ActivityOutcome {
    let ActivityInvocation {
        activity_type,
        input,
        attempt,
        instance_id,
        seq,
        heartbeat_details,
    } = invocation;
    let Some(def) = module.activities.iter().find(|a| a.name == activity_type) else {
        return ActivityOutcome::Failed(Failure {
            message: format!(
                "unknown activity type \"{activity_type}\"; this module exports: {}",
                module
                    .activities
                    .iter()
                    .map(|a| a.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            kind: "UnknownActivity".into(),
            non_retryable: true,
            attempts: attempt,
        });
    };
    let ctx = ActivityContext {
        attempt,
        instance_id,
        activity_type,
        seq,
        heartbeat_details,
    };
    match (def.run)(ctx, &input) {
        Ok(output) => ActivityOutcome::Completed(output),
        Err(e) => ActivityOutcome::Failed(e.into_failure(attempt)),
    }
}
