//! `pinion signal`, `query`, `cancel` and `terminate`: talking to running instances.

use serde_json::json;

use super::args::StopArgs;
use super::{print_json, Failure};
use crate::engine::{BulkOutcome, BulkSelector, Pinion};

/// `pinion signal ID NAME --input JSON`.
pub(super) fn signal(
    p: &Pinion,
    json: bool,
    id: &str,
    name: &str,
    input: &str,
) -> Result<i32, Failure> {
    p.signal(id, name, input)?;
    if json {
        print_json(&json!({ "id": id, "signal": name, "delivered": "queued" }));
    } else {
        println!("signal {name:?} queued for {id}");
    }
    Ok(0)
}

/// `pinion query ID NAME --input JSON`: prints the handler's answer.
pub(super) fn query(
    p: &Pinion,
    json: bool,
    id: &str,
    name: &str,
    input: &str,
) -> Result<i32, Failure> {
    let answer = p.query(id, name, input)?;
    if json {
        print_json(&json!({ "id": id, "query": name, "result": answer.to_value() }));
    } else {
        println!("{}", answer.json());
    }
    Ok(0)
}

/// Which of the two verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    Cancel,
    Terminate,
}

impl Stop {
    fn done(self) -> &'static str {
        match self {
            Stop::Cancel => "cancellation requested",
            Stop::Terminate => "terminated",
        }
    }

    fn would(self) -> &'static str {
        match self {
            Stop::Cancel => "would be cancelled",
            Stop::Terminate => "would be terminated",
        }
    }
}

/// `pinion cancel|terminate (ID | --module M --workflow-type T) [--reason R] [--dry-run]`.
pub(super) fn stop(p: &Pinion, json: bool, verb: Stop, args: &StopArgs) -> Result<i32, Failure> {
    if let (Some(id), true) = (&args.id, args.dry_run) {
        let rec = p.status(id)?;
        let state = if rec.status.is_closed() {
            format!("not stopped: it is already {}", rec.status)
        } else {
            verb.would().to_owned()
        };
        if json {
            print_json(&json!({ "dry_run": true, "instances": [id], "result": state }));
        } else {
            println!("{id}: {state}");
        }
        return Ok(0);
    }
    if let Some(id) = &args.id {
        let fresh = match verb {
            Stop::Cancel => p.cancel(id, &args.reason)?,
            Stop::Terminate => {
                p.terminate(id, &args.reason)?;
                true
            }
        };
        let state = if fresh {
            verb.done()
        } else {
            "cancellation already requested"
        };
        if json {
            print_json(&json!({ "id": id, "result": state }));
        } else {
            println!("{id}: {state}");
        }
        return Ok(0);
    }
    let selector = BulkSelector {
        module_hash: match &args.module {
            Some(m) => Some(p.resolve_module(m)?.hash),
            None => None,
        },
        workflow_type: args.workflow_type.clone(),
    };
    if args.dry_run {
        let ids = p.select_open(&selector)?;
        if json {
            print_json(&json!({ "dry_run": true, "instances": ids }));
        } else {
            for id in &ids {
                println!("{id}: {}", verb.would());
            }
            println!("{} instance(s) selected", ids.len());
        }
        return Ok(0);
    }
    let outcomes = match verb {
        Stop::Cancel => p.cancel_many(&selector, &args.reason)?,
        Stop::Terminate => p.terminate_many(&selector, &args.reason)?,
    };
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if json {
        let rows: Vec<_> = outcomes.iter().map(|o| outcome_json(verb, o)).collect();
        print_json(&json!({ "instances": rows, "failed": failed }));
    } else {
        for o in &outcomes {
            match &o.result {
                Ok(true) => println!("{}: {}", o.id, verb.done()),
                Ok(false) => println!("{}: cancellation already requested", o.id),
                Err(e) => println!("{}: not stopped: {e}", o.id),
            }
        }
        println!(
            "{} instance(s) selected, {} stopped, {failed} not",
            outcomes.len(),
            outcomes.len() - failed
        );
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn outcome_json(verb: Stop, o: &BulkOutcome) -> serde_json::Value {
    match &o.result {
        Ok(true) => json!({ "id": o.id, "result": verb.done() }),
        Ok(false) => json!({ "id": o.id, "result": "cancellation already requested" }),
        Err(e) => json!({ "id": o.id, "error": e.to_string() }),
    }
}
