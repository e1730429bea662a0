//! What the verbs print, from the [`crate::api`] types: one printer per answer, used
//! whether the answer came from the database or from a server, so both modes print the
//! same text and the same `--json`.

use serde::Serialize;

use super::display::{self, time, Align, Table};

use crate::api::types::{Deployment, Verification};
use crate::history::{HistoryExport, InstanceStatus};
use crate::store::InstanceRecord;

/// Pretty JSON on stdout.
pub fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `pinion status`.
pub fn print_instance(r: &InstanceRecord, json: bool) {
    if json {
        print_json(r);
        return;
    }
    println!("instance:      {}", r.id);
    println!("workflow type: {}", r.workflow_type);
    println!("module:        {}", r.module_hash);
    println!("status:        {}", r.status);
    println!("created:       {}", time(r.created_at_ms));
    println!("updated:       {}", time(r.updated_at_ms));
    println!("events:        {}", r.event_count);
    if r.run > 1 {
        println!(
            "run:           {} (earlier runs: `pinion history ID --run N`)",
            r.run
        );
    }
    if let Some(res) = &r.result {
        println!("result:        {}", res.json());
    }
    if let Some(f) = &r.failure {
        println!("failure:       {}: {}", f.kind, display::reason(&f.message));
    }
    if let Some(b) = &r.blocked_reason {
        println!("blocked:       {}", display::reason(b));
    }
    if r.cancel_requested && !r.status.is_closed() {
        println!("cancel:        requested");
    }
    print_pending(r);
}

/// One line per pending activity of `r` (and its last failure).
pub fn print_pending(r: &InstanceRecord) {
    for a in &r.pending_activities {
        let state = match a.state {
            crate::store::PendingState::Scheduled => "scheduled".to_string(),
            crate::store::PendingState::Running => match a.started_at_ms {
                Some(t) => format!("running since {}", time(t)),
                None => "running".into(),
            },
            crate::store::PendingState::BackingOff => match a.next_attempt_at_ms {
                Some(t) => format!("retrying at {}", time(t)),
                None => "backing off".into(),
            },
        };
        println!(
            "activity:      #{} {} attempt {}, {state}",
            a.seq, a.activity_type, a.attempt
        );
        if let Some(f) = &a.last_failure {
            println!(
                "               last failure: {}: {}",
                f.kind,
                display::reason(&f.message)
            );
        }
        if let (Some(t), Some(d)) = (a.last_heartbeat_at_ms, &a.heartbeat_details) {
            let mut details = d.json().to_string();
            if details.len() > 200 {
                let cut = (0..=200)
                    .rev()
                    .find(|&i| details.is_char_boundary(i))
                    .unwrap_or(0);
                details.truncate(cut);
                details.push_str("...");
            }
            println!("               last heartbeat at {}: {details}", time(t));
        }
    }
}

/// Prints a closed instance's outcome; returns the exit code it implies.
pub fn print_outcome(r: &InstanceRecord, json: bool) -> i32 {
    if json {
        print_json(r);
    } else {
        match r.status {
            InstanceStatus::Completed => {
                println!("{}", r.result.as_ref().map(|p| p.json()).unwrap_or("null"))
            }
            InstanceStatus::Failed
            | InstanceStatus::Cancelled
            | InstanceStatus::Terminated
            | InstanceStatus::ContinuedAsNew => {
                let f = r.failure.as_ref();
                eprintln!(
                    "instance {} {}: {}: {}",
                    r.id,
                    r.status,
                    f.map(|f| f.kind.as_str()).unwrap_or("?"),
                    f.map(|f| display::reason(&f.message))
                        .unwrap_or_else(|| "?".into())
                );
            }
            InstanceStatus::Blocked => {
                eprintln!(
                    "instance {} is blocked: {}",
                    r.id,
                    r.blocked_reason
                        .as_deref()
                        .map_or_else(|| "?".into(), display::reason)
                )
            }
            InstanceStatus::Running => eprintln!("instance {} is still running", r.id),
        }
    }
    match r.status {
        InstanceStatus::Completed => 0,
        InstanceStatus::Running => 7,
        _ => 6,
    }
}

/// `pinion list`.
pub fn print_instances(rows: &[InstanceRecord], json: bool) {
    if json {
        print_json(&rows);
        return;
    }
    let mut t = Table::new(&[
        ("ID", Align::Left),
        ("WORKFLOW TYPE", Align::Left),
        ("MODULE", Align::Left),
        ("STATUS", Align::Left),
        ("EVENTS", Align::Right),
        ("CREATED", Align::Left),
    ]);
    for r in rows {
        t.row(vec![
            r.id.to_string(),
            r.workflow_type.clone(),
            r.module_hash.short().to_owned(),
            r.status.to_string(),
            r.event_count.to_string(),
            time(r.created_at_ms),
        ]);
    }
    t.print();
}

/// `pinion history ID`: the export with `--json`, else a table.
pub fn print_history(export: &HistoryExport, json: bool) {
    if json {
        print_json(export);
        return;
    }
    let mut t = Table::new(&[
        ("#", Align::Right),
        ("TIME", Align::Left),
        ("+MS", Align::Right),
        ("EVENT", Align::Left),
        ("DETAILS", Align::Left),
    ]);
    let t0 = export.events.first().map(|e| e.time_ms).unwrap_or(0);
    for e in &export.events {
        t.row(vec![
            e.id.to_string(),
            time(e.time_ms),
            format!("+{}", e.time_ms.saturating_sub(t0)),
            e.kind.name().to_string(),
            e.kind.describe(),
        ]);
    }
    t.print();
}

/// `pinion deploy`.
pub fn print_deployment(d: &Deployment, json: bool) {
    if json {
        print_json(d);
        return;
    }
    if let Some(v) = &d.verified {
        eprintln!(
            "verify: replayed {} running instance(s): {}",
            v.replayed, v.summary
        );
    }
    println!("{}", d.hash);
    eprintln!(
        "{} {} ({} bytes; workflows: {}; activities: {})",
        if d.new {
            "deployed"
        } else {
            "already deployed"
        },
        d.hash.short(),
        d.size,
        d.workflows.join(", "),
        d.activities.join(", ")
    );
    if let Some(name) = &d.alias {
        eprintln!("alias {name} -> {}", d.hash.short());
    }
    if let Some(notice) = &d.deprecation {
        eprintln!("warning: {notice}");
    }
}

/// A refused `deploy --verify` or `alias set --verify`: the incompatible reports, then
/// `what` (on stderr) with the counts.
pub fn print_refusal(v: &Verification, json: bool, what: &str) {
    if json {
        print_json(v);
        return;
    }
    for r in v.reports.iter().filter(|r| !r.is_compatible()) {
        println!("{r}");
    }
    eprintln!("{what}: {}", v.summary);
}

/// `pinion jobs`: a table; with one job, also its error (its result is in `--json`).
pub fn jobs(jobs: &[crate::api::types::JobView], one: bool) {
    let name = |j: &crate::api::types::JobView| {
        serde_json::to_value(j.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let mut t = Table::new(&[
        ("ID", Align::Left),
        ("KIND", Align::Left),
        ("STATE", Align::Left),
        ("DONE", Align::Right),
        ("SUBMITTED", Align::Left),
    ]);
    for j in jobs {
        t.row(vec![
            j.id.clone(),
            j.kind.clone(),
            name(j),
            format!("{}/{}", j.done, j.total),
            time(j.created_at_ms),
        ]);
    }
    t.print();
    if one {
        for e in jobs.iter().filter_map(|j| j.error.as_ref()) {
            println!("error: {}: {}", e.code, e.message);
        }
    }
}
