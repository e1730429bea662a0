//! Instance lifecycle inside a write transaction: creating an instance (top-level or child),
//! ending one (and what that does to its parent and children), terminating, and continuing
//! as new. Every function runs on the writer's connection, inside the caller's savepoint,
//! so each change commits together with the state change that caused it.

use rusqlite::{params, Connection, OptionalExtension};

use super::events::publish;
use super::{exec, map_err, push_inbox, query_one, reason_failure, to_json};
use crate::history::{EventKind, InstanceId, Payload};
use crate::store::{StoreError, Transition};

/// How an instance ended, as its parent learns it.
pub(super) enum Ending<'a> {
    Completed(&'a Payload),
    Failed(&'a pinion_abi::Failure),
}

/// Inserts a running instance with its `WorkflowStarted` event (and its parent link, when
/// the event names a parent).
pub(super) fn insert_instance(
    c: &Connection,
    id: &InstanceId,
    started: &EventKind,
    now_ms: u64,
) -> Result<(), StoreError> {
    let EventKind::WorkflowStarted {
        workflow_type,
        module_hash,
        parent,
        ..
    } = started
    else {
        return Err(StoreError::Database(
            "an instance must start with a WorkflowStarted event".into(),
        ));
    };
    // Re-checked here: a concurrent `gc` must not leave a new instance pinned to a module it
    // just deleted.
    let module_exists: bool = query_one(
        c,
        "SELECT EXISTS(SELECT 1 FROM modules WHERE hash = ?1)",
        [&module_hash.0],
        |r| r.get(0),
    )
    .map_err(map_err)?;
    if !module_exists {
        return Err(StoreError::NotFound(format!(
            "module {module_hash} (it was just garbage-collected)"
        )));
    }
    let now = now_ms as i64;
    exec(
        c,
        "INSERT INTO instances(id, workflow_type, module_hash, status, created_at_ms, updated_at_ms, event_count, runnable, parent_id, parent_seq)
         VALUES (?1, ?2, ?3, 'running', ?4, ?4, 1, 1, ?5, ?6)",
        params![
            id.0,
            workflow_type,
            module_hash.0,
            now,
            parent.as_ref().map(|p| p.id.0.clone()),
            parent.as_ref().map(|p| p.seq)
        ],
    )
    .map_err(|e| match map_err(e) {
        StoreError::AlreadyExists(_) => StoreError::AlreadyExists(format!("instance {id}")),
        other => other,
    })?;
    exec(
        c,
        "INSERT INTO events(instance_id, id, time_ms, data) VALUES (?1, 1, ?2, ?3)",
        params![id.0, now, to_json(started)?],
    )
    .map_err(map_err)?;
    publish(
        c,
        &id.0,
        &Transition::Started {
            parent: parent.clone(),
        },
        now_ms,
    )
}

/// Creates a child in its parent's transaction. When it cannot start (module unresolved,
/// id in use), the parent gets a `ChildWorkflowFailed` of kind `ChildStartFailed` instead.
pub(super) fn start_child(
    c: &Connection,
    parent: &str,
    seq: u32,
    child: &InstanceId,
    started: &Result<EventKind, String>,
    now_ms: u64,
) -> Result<(), StoreError> {
    let why = match started {
        Ok(event) => match insert_instance(c, child, event, now_ms) {
            Ok(()) => return Ok(()),
            Err(StoreError::AlreadyExists(_)) => format!("instance id {child} is already in use"),
            Err(StoreError::NotFound(what)) => format!("{what} is gone"),
            Err(e) => return Err(e),
        },
        Err(why) => why.clone(),
    };
    push_inbox(
        c,
        parent,
        now_ms,
        &EventKind::ChildWorkflowFailed {
            seq,
            child_id: child.clone(),
            failure: reason_failure("ChildStartFailed", &why),
        },
    )
}

/// Asks the parent's child `seq` to stop, if it still runs and was not asked before.
pub(super) fn cancel_child(
    c: &Connection,
    parent: &str,
    seq: u32,
    reason: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let child: Option<String> = query_one(
        c,
        "SELECT id FROM instances WHERE parent_id = ?1 AND parent_seq = ?2
         AND status IN ('running', 'blocked') AND cancel_requested = 0",
        params![parent, seq],
        |r| r.get(0),
    )
    .optional()
    .map_err(map_err)?;
    if let Some(child) = child {
        exec(
            c,
            "UPDATE instances SET cancel_requested = 1 WHERE id = ?1",
            [&child],
        )
        .map_err(map_err)?;
        push_inbox(
            c,
            &child,
            now_ms,
            &EventKind::CancelRequested {
                reason: reason.to_owned(),
            },
        )?;
    }
    Ok(())
}

/// What an instance's end does around it: its parent (if it still runs) receives the
/// child's result, and its own children that still run are terminated (the parent-close
/// policy). Call after the instance's row says it has ended.
pub(super) fn ended(
    c: &Connection,
    id: &str,
    ending: Ending<'_>,
    now_ms: u64,
) -> Result<(), StoreError> {
    let parent: Option<(Option<String>, Option<u32>)> = query_one(
        c,
        "SELECT parent_id, parent_seq FROM instances WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(map_err)?;
    if let Some((Some(parent), Some(seq))) = parent {
        let open: bool = query_one(
            c,
            "SELECT EXISTS(SELECT 1 FROM instances WHERE id = ?1 AND status IN ('running', 'blocked'))",
            [&parent],
            |r| r.get(0),
        )
        .map_err(map_err)?;
        if open {
            let child_id = InstanceId(id.to_owned());
            let event = match ending {
                Ending::Completed(result) => EventKind::ChildWorkflowCompleted {
                    seq,
                    child_id,
                    result: result.clone(),
                },
                Ending::Failed(failure) => EventKind::ChildWorkflowFailed {
                    seq,
                    child_id,
                    failure: failure.clone(),
                },
            };
            push_inbox(c, &parent, now_ms, &event)?;
        }
    }
    terminate_children(c, id, now_ms)
}

/// Terminates the instance's children that still run (the parent-close policy).
pub(super) fn terminate_children(c: &Connection, id: &str, now_ms: u64) -> Result<(), StoreError> {
    let children: Vec<String> = {
        let mut st = c
            .prepare_cached(
                "SELECT id FROM instances WHERE parent_id = ?1 AND status IN ('running', 'blocked') ORDER BY id",
            )
            .map_err(map_err)?;
        let rows = st.query_map([id], |r| r.get(0)).map_err(map_err)?;
        rows.collect::<Result<_, _>>().map_err(map_err)?
    };
    for child in children {
        terminate(c, &child, &format!("its parent {id} ended"), now_ms)?;
    }
    Ok(())
}

/// Ends a running or blocked instance at once (see `Store::terminate`), then applies
/// [`ended`] to it.
pub(super) fn terminate(
    c: &Connection,
    id: &str,
    reason: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let (count, _) = super::accepting(c, id)?;
    let event = to_json(&EventKind::WorkflowTerminated {
        reason: reason.to_owned(),
    })?;
    let failure = reason_failure("Terminated", reason);
    exec(
        c,
        "INSERT INTO events(instance_id, id, time_ms, data) VALUES (?1, ?2, ?3, ?4)",
        params![id, count + 1, now_ms as i64, event],
    )
    .map_err(map_err)?;
    clear_work(c, id)?;
    exec(
        c,
        "UPDATE instances SET event_count = ?2, updated_at_ms = ?3, runnable = 0, status = 'terminated',
         failure = ?4, blocked_reason = NULL WHERE id = ?1",
        params![id, count + 1, now_ms as i64, to_json(&failure)?],
    )
    .map_err(map_err)?;
    publish(
        c,
        id,
        &Transition::Terminated {
            reason: reason.to_owned(),
        },
        now_ms,
    )?;
    ended(c, id, Ending::Failed(&failure), now_ms)
}

/// Drops an instance's activities, timers and undelivered input.
pub(super) fn clear_work(c: &Connection, id: &str) -> Result<(), StoreError> {
    for table in ["activity_tasks", "timers", "inbox"] {
        exec(
            c,
            &format!("DELETE FROM {table} WHERE instance_id = ?1"),
            [id],
        )
        .map_err(map_err)?;
    }
    Ok(())
}

/// Archives the current run (its history goes to `runs`) and starts the next one under the
/// same id with `started` as its event 1. Signals the old run received but never read
/// (`unread`) come first in the new run's inbox, then undelivered signals and a
/// cancellation request; the old run's activities, timers and other input do not carry
/// over.
pub(super) fn continue_as_new(
    c: &Connection,
    id: &str,
    started: &EventKind,
    unread: &[EventKind],
    now_ms: u64,
) -> Result<(), StoreError> {
    let (run, workflow_type, module_hash, created): (u32, String, String, i64) = query_one(
        c,
        "SELECT run, workflow_type, module_hash, created_at_ms FROM instances WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .map_err(map_err)?;
    let events = super::history(c, &InstanceId(id.to_owned()))?;
    exec(
        c,
        "INSERT INTO runs(instance_id, run, workflow_type, module_hash, started_at_ms, ended_at_ms, events)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, run, workflow_type, module_hash, created, now_ms as i64, to_json(&events)?],
    )
    .map_err(map_err)?;
    exec(c, "DELETE FROM events WHERE instance_id = ?1", [id]).map_err(map_err)?;
    for table in ["activity_tasks", "timers"] {
        exec(
            c,
            &format!("DELETE FROM {table} WHERE instance_id = ?1"),
            [id],
        )
        .map_err(map_err)?;
    }
    // Signals and a cancellation request are for the instance, not for one run: they go to
    // the next run, after the signals the old run received but never read. The rest of the
    // inbox belonged to the old run.
    let inbox = super::event_rows(
        c,
        "SELECT id, time_ms, data FROM inbox WHERE instance_id = ?1 ORDER BY id",
        &InstanceId(id.to_owned()),
        "inbox entry",
    )?;
    exec(c, "DELETE FROM inbox WHERE instance_id = ?1", [id]).map_err(map_err)?;
    let waiting = inbox.into_iter().filter_map(|(_, time_ms, kind)| {
        matches!(
            kind,
            EventKind::SignalReceived { .. } | EventKind::CancelRequested { .. }
        )
        .then_some((time_ms, kind))
    });
    let carried: Vec<(u64, EventKind)> = unread
        .iter()
        .map(|k| (now_ms, k.clone()))
        .chain(waiting)
        .collect();
    for (time_ms, kind) in &carried {
        exec(
            c,
            "INSERT INTO inbox(instance_id, time_ms, data) VALUES (?1, ?2, ?3)",
            params![id, *time_ms as i64, to_json(kind)?],
        )
        .map_err(map_err)?;
    }
    let mut started = started.clone();
    let (new_type, new_module) = match &mut started {
        EventKind::WorkflowStarted {
            continued_from_run,
            workflow_type,
            module_hash,
            ..
        } => {
            *continued_from_run = Some(run);
            (workflow_type.clone(), module_hash.0.clone())
        }
        _ => {
            return Err(StoreError::Database(
                "continue-as-new needs a WorkflowStarted event".into(),
            ))
        }
    };
    let now = now_ms as i64;
    exec(
        c,
        "INSERT INTO events(instance_id, id, time_ms, data) VALUES (?1, 1, ?2, ?3)",
        params![id, now, to_json(&started)?],
    )
    .map_err(map_err)?;
    exec(
        c,
        "UPDATE instances SET run = ?2, workflow_type = ?3, module_hash = ?4, event_count = 1,
         runnable = 1, updated_at_ms = ?5, created_at_ms = ?5, blocked_reason = NULL, closing = 0 WHERE id = ?1",
        params![id, run + 1, new_type, new_module, now],
    )
    .map_err(map_err)?;
    publish(c, id, &Transition::ContinuedAsNew, now_ms)
}
