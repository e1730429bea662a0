//! `pinion signal`, `query`, `cancel` and `terminate`: talking to running instances, on the
//! database or (with `--server`) through the HTTP API.

use super::args::StopArgs;
use super::print::print_json;
use super::Failure;
use crate::api::types::{InputBody, StopBody, StopResult, StopVerb};
use crate::api::Api;
use crate::engine::Error;

pub(super) use crate::api::types::StopVerb as Stop;

/// Parses an `--input` flag (empty means `null`); `what` names it in the error.
pub(super) fn json_input(text: &str, what: &str) -> Result<serde_json::Value, Failure> {
    let text = if text.trim().is_empty() { "null" } else { text };
    Ok(serde_json::from_str(text)
        .map_err(|e| Error::InvalidInput(format!("{what} input is not valid JSON: {e}")))?)
}

fn input(text: &str, what: &str) -> Result<InputBody, Failure> {
    Ok(InputBody {
        input: json_input(text, what)?,
    })
}

/// `pinion signal ID NAME --input JSON`.
pub(super) fn signal(
    api: &dyn Api,
    json: bool,
    id: &str,
    name: &str,
    text: &str,
) -> Result<i32, Failure> {
    let sent = api.signal(id, name, &input(text, "signal")?)?;
    if json {
        print_json(&sent);
    } else {
        println!("signal {name:?} queued for {id}");
    }
    Ok(0)
}

/// `pinion query ID NAME --input JSON`: prints the handler's answer.
pub(super) fn query(
    api: &dyn Api,
    json: bool,
    id: &str,
    name: &str,
    text: &str,
) -> Result<i32, Failure> {
    let answer = api.query(id, name, &input(text, "query")?)?;
    if json {
        print_json(&answer);
    } else {
        println!("{}", answer.result);
    }
    Ok(0)
}

/// `pinion cancel|terminate (ID | --module M --workflow-type T) [--reason R] [--dry-run]`.
/// Exits 1 when a bulk stop could not stop every selected instance.
pub(super) fn stop(
    api: &dyn Api,
    json: bool,
    verb: StopVerb,
    args: &StopArgs,
) -> Result<i32, Failure> {
    let stopped = api.stop(
        verb,
        &StopBody {
            id: args.id.clone(),
            module: args.module.clone(),
            workflow_type: args.workflow_type.clone(),
            reason: args.reason.clone(),
            dry_run: args.dry_run,
        },
    )?;
    if json {
        print_json(&stopped);
    } else {
        for o in &stopped.instances {
            match &o.error {
                Some(e) => println!("{}: {}: {e}", o.id, o.result.describe()),
                None => println!("{}: {}", o.id, o.result.describe()),
            }
        }
        if args.id.is_none() {
            let n = stopped.instances.len();
            if stopped.dry_run {
                println!("{n} instance(s) selected");
            } else {
                println!(
                    "{n} instance(s) selected, {} stopped, {} not",
                    n - stopped.failed,
                    stopped.failed
                );
            }
        }
    }
    let bulk_failed = args.id.is_none()
        && stopped
            .instances
            .iter()
            .any(|o| o.result == StopResult::NotStopped);
    Ok(if bulk_failed { 1 } else { 0 })
}
