//! `pinion events`: lifecycle events, on the database or through a server.
//!
//! `--follow` polls with the id of the last event printed (`after`), so losing the server
//! costs nothing: once the server has answered, an unreachable or unavailable server is
//! retried (backing off up to [`FOLLOW_RETRY_MAX`]) with that same id, and the stream
//! continues with the next event, none repeated and none lost. A server that cannot be
//! reached at all on the first request is an error, so a wrong URL fails at once.

use std::io::Write as _;
use std::time::Duration;

use super::args::EventsArgs;
use super::display::{self, time, Align, Table};
use super::Failure;
use crate::api::types::EventQuery;
use crate::api::{Api, ErrorCode};
use crate::store::{LifecycleEvent, Transition};

/// How long `--follow` waits between polls when nothing new came.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// The longest wait between attempts to reach a lost server.
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(5);

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
    // The widths of the first answer, kept for what `--follow` streams after it (lines
    // already printed cannot be realigned).
    let mut widths: Option<Vec<usize>> = None;
    let mut lost: Option<Duration> = None;
    loop {
        let batch = match api.events(&query) {
            Ok(batch) => batch,
            Err(e) if args.follow && widths.is_some() && e.code() == ErrorCode::Unavailable => {
                let wait = match lost {
                    None => {
                        eprintln!(
                            "pinion events: {}; retrying after event {}",
                            e.message(),
                            query.after
                        );
                        FOLLOW_POLL
                    }
                    Some(w) => (w * 2).min(FOLLOW_RETRY_MAX),
                };
                lost = Some(wait);
                std::thread::sleep(wait);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if lost.take().is_some() {
            eprintln!(
                "pinion events: reconnected; continuing after event {}",
                query.after
            );
        }
        let mut table = table();
        for e in &batch {
            if json {
                println!("{}", serde_json::to_string(e).unwrap_or_default());
            } else {
                table.row(cells(e));
            }
        }
        // The header after the first answer, so a refused query prints only its error.
        let w = widths.get_or_insert_with(|| {
            let w = table.widths();
            if !json {
                println!("{}", table.header(&w));
            }
            w
        });
        if !json {
            for row in table.rows() {
                println!("{}", table.line(row, w));
            }
        }
        if let Some(e) = batch.last() {
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

fn table() -> Table {
    Table::new(&[
        ("ID", Align::Right),
        ("AT", Align::Left),
        ("TYPE", Align::Left),
        ("INSTANCE", Align::Left),
        ("WORKFLOW TYPE", Align::Left),
        ("MODULE", Align::Left),
        ("DETAILS", Align::Left),
    ])
}

fn cells(e: &LifecycleEvent) -> Vec<String> {
    vec![
        e.id.to_string(),
        time(e.at_ms),
        e.transition.name().to_owned(),
        e.instance_id.0.clone(),
        e.workflow_type.clone(),
        e.module_hash.short().to_owned(),
        details(e),
    ]
}

fn details(e: &LifecycleEvent) -> String {
    let first_line = |s: &str| s.lines().next().unwrap_or("").to_owned();
    match &e.transition {
        Transition::Started { parent: Some(p) } => format!("child {} of {}", p.seq, p.id),
        Transition::Started { parent: None } | Transition::Completed => String::new(),
        Transition::Failed { failure } => first_line(&format!(
            "{}: {}",
            failure.kind,
            display::reason(&failure.message)
        )),
        Transition::Cancelled { reason } | Transition::Terminated { reason } => first_line(reason),
        Transition::Blocked { reason } => first_line(&display::reason(reason)),
        Transition::Upgraded { from } => format!("from {}", from.short()),
        Transition::ContinuedAsNew => format!("run {}", e.run),
    }
}
