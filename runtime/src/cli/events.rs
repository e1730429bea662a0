//! `pinion events`: lifecycle events, on the database or through a server.

use std::io::Write as _;
use std::time::Duration;

use super::args::EventsArgs;
use super::Failure;
use crate::api::types::EventQuery;
use crate::api::Api;
use crate::store::{LifecycleEvent, Transition};

/// How long `--follow` waits between polls when nothing new came.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// `pinion events [filters] [--limit N] [--follow]`: a table, or with `--json` one JSON
/// document per line (JSON Lines, so `--follow` output can be piped event by event).
pub(super) fn events(api: &dyn Api, json: bool, args: &EventsArgs) -> Result<i32, Failure> {
    let mut query = EventQuery {
        after: args.after,
        instance_id: args.id.clone(),
        workflow_type: args.workflow_type.clone(),
        module: args.module.clone(),
        types: args.types.clone(),
        limit: args.limit,
    };
    let mut left = args.limit.map_or(u64::MAX, u64::from);
    let mut header = !json;
    loop {
        let batch = api.events(&query)?;
        // After the first answer, so a refused query prints only its error.
        if std::mem::take(&mut header) {
            println!(
                "{:>6}  {:<13}  {:<16}  {:<24}  {:<16}  {:<12}  DETAILS",
                "ID", "AT (ms)", "TYPE", "INSTANCE", "WORKFLOW TYPE", "MODULE"
            );
        }
        for e in &batch {
            print_event(e, json);
            query.after = e.id;
        }
        left = left.saturating_sub(batch.len() as u64);
        query.limit = args.limit.map(|_| left.min(u64::from(u32::MAX)) as u32);
        let _ = std::io::stdout().flush();
        if !args.follow || left == 0 {
            return Ok(0);
        }
        if batch.is_empty() {
            std::thread::sleep(FOLLOW_POLL);
        }
    }
}

fn print_event(e: &LifecycleEvent, json: bool) {
    if json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
        return;
    }
    println!(
        "{:>6}  {:<13}  {:<16}  {:<24}  {:<16}  {:<12}  {}",
        e.id,
        e.at_ms,
        e.transition.name(),
        e.instance_id.0,
        e.workflow_type,
        e.module_hash.short(),
        details(e)
    );
}

fn details(e: &LifecycleEvent) -> String {
    match &e.transition {
        Transition::Started { parent: Some(p) } => format!("child {} of {}", p.seq, p.id),
        Transition::Started { parent: None } | Transition::Completed => String::new(),
        Transition::Failed { failure } => format!("{}: {}", failure.kind, failure.message),
        Transition::Cancelled { reason }
        | Transition::Terminated { reason }
        | Transition::Blocked { reason } => reason.lines().next().unwrap_or("").to_owned(),
        Transition::Upgraded { from } => format!("from {}", from.short()),
        Transition::ContinuedAsNew => format!("run {}", e.run),
    }
}
