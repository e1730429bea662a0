//! Instance lifecycle inside a transaction: creating an instance (top-level or child),
//! ending one (and what that does to its parent and children), terminating, and continuing
//! as new. The PostgreSQL twin of `store/sqlite/lifecycle.rs`, rule for rule.
//!
//! A failed statement aborts a PostgreSQL transaction, so "insert unless the id is taken"
//! is `ON CONFLICT DO NOTHING` and a row count, never a caught duplicate-key error: a
//! child whose id is in use must fail its start and leave the parent's commit intact.

use super::events::publish;
use super::{reason_failure, to_json, Tx};
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
    tx: &mut Tx<'_>,
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
    // Locks the module row, so a concurrent `gc` cannot delete the module this instance
    // is being pinned to.
    if tx
        .opt(
            "SELECT 1 FROM modules WHERE hash = $1 FOR SHARE",
            &[&module_hash.0],
        )?
        .is_none()
    {
        return Err(StoreError::NotFound(format!(
            "module {module_hash} (it was just garbage-collected)"
        )));
    }
    let now = now_ms as i64;
    let n = tx.exec(
        "INSERT INTO instances(id, workflow_type, module_hash, status, created_at_ms, updated_at_ms, event_count, runnable, parent_id, parent_seq)
         VALUES ($1, $2, $3, 'running', $4, $4, 1, TRUE, $5, $6) ON CONFLICT (id) DO NOTHING",
        &[
            &id.0,
            workflow_type,
            &module_hash.0,
            &now,
            &parent.as_ref().map(|p| p.id.0.clone()),
            &parent.as_ref().map(|p| i64::from(p.seq)),
        ],
    )?;
    if n == 0 {
        return Err(StoreError::AlreadyExists(format!("instance {id}")));
    }
    tx.exec(
        "INSERT INTO events(instance_id, id, time_ms, data) VALUES ($1, 1, $2, $3)",
        &[&id.0, &now, &to_json(started)?],
    )?;
    publish(
        tx,
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
    tx: &mut Tx<'_>,
    parent: &str,
    seq: u32,
    child: &InstanceId,
    started: &Result<EventKind, String>,
    now_ms: u64,
) -> Result<(), StoreError> {
    let why = match started {
        Ok(event) => match insert_instance(tx, child, event, now_ms)
            .and_then(|()| super::members::notify(tx, None))
        {
            Ok(()) => return Ok(()),
            Err(StoreError::AlreadyExists(_)) => format!("instance id {child} is already in use"),
            Err(StoreError::NotFound(what)) => format!("{what} is gone"),
            Err(e) => return Err(e),
        },
        Err(why) => why.clone(),
    };
    super::tasks::push_inbox(
        tx,
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
    tx: &mut Tx<'_>,
    parent: &str,
    seq: u32,
    reason: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let child = tx.opt(
        "UPDATE instances SET cancel_requested = TRUE
         WHERE parent_id = $1 AND parent_seq = $2
           AND status IN ('running', 'blocked') AND NOT cancel_requested
         RETURNING id",
        &[&parent, &i64::from(seq)],
    )?;
    if let Some(child) = child {
        let child: String = child.get(0);
        super::tasks::push_inbox(
            tx,
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
    tx: &mut Tx<'_>,
    id: &str,
    ending: Ending<'_>,
    now_ms: u64,
) -> Result<(), StoreError> {
    let parent = tx.opt(
        "SELECT parent_id, parent_seq FROM instances WHERE id = $1",
        &[&id],
    )?;
    let parent = parent.map(|r| (r.get::<_, Option<String>>(0), r.get::<_, Option<i64>>(1)));
    if let Some((Some(parent), Some(seq))) = parent {
        let open = tx
            .opt(
                "SELECT 1 FROM instances WHERE id = $1 AND status IN ('running', 'blocked')",
                &[&parent],
            )?
            .is_some();
        if open {
            let (seq, child_id) = (seq as u32, InstanceId(id.to_owned()));
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
            super::tasks::push_inbox(tx, &parent, now_ms, &event)?;
        }
    }
    terminate_children(tx, id, now_ms)
}

/// Terminates the instance's children that still run (the parent-close policy).
pub(super) fn terminate_children(tx: &mut Tx<'_>, id: &str, now_ms: u64) -> Result<(), StoreError> {
    let children: Vec<String> = tx
        .query(
            "SELECT id FROM instances WHERE parent_id = $1 AND status IN ('running', 'blocked') ORDER BY id",
            &[&id],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for child in children {
        terminate(tx, &child, &format!("its parent {id} ended"), now_ms)?;
    }
    Ok(())
}

/// Ends a running or blocked instance at once (see `Store::terminate`), then applies
/// [`ended`] to it.
pub(super) fn terminate(
    tx: &mut Tx<'_>,
    id: &str,
    reason: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let (count, _) = super::tasks::accepting(tx, id)?;
    let event = to_json(&EventKind::WorkflowTerminated {
        reason: reason.to_owned(),
    })?;
    let failure = reason_failure("Terminated", reason);
    tx.exec(
        "INSERT INTO events(instance_id, id, time_ms, data) VALUES ($1, $2, $3, $4)",
        &[&id, &(count + 1), &(now_ms as i64), &event],
    )?;
    clear_work(tx, id)?;
    tx.exec(
        "UPDATE instances SET event_count = $2, updated_at_ms = $3, runnable = FALSE, status = 'terminated',
         failure = $4, blocked_reason = NULL WHERE id = $1",
        &[&id, &(count + 1), &(now_ms as i64), &to_json(&failure)?],
    )?;
    publish(
        tx,
        id,
        &Transition::Terminated {
            reason: reason.to_owned(),
        },
        now_ms,
    )?;
    ended(tx, id, Ending::Failed(&failure), now_ms)
}

/// Drops an instance's activities, timers and undelivered input.
pub(super) fn clear_work(tx: &mut Tx<'_>, id: &str) -> Result<(), StoreError> {
    tx.exec("DELETE FROM activity_tasks WHERE instance_id = $1", &[&id])?;
    tx.exec("DELETE FROM timers WHERE instance_id = $1", &[&id])?;
    tx.exec("DELETE FROM inbox WHERE instance_id = $1", &[&id])?;
    Ok(())
}

/// Archives the current run (its history goes to `runs`) and starts the next one under the
/// same id with `started` as its event 1. Signals the old run received but never read
/// (`unread`) come first in the new run's inbox, then undelivered signals and a
/// cancellation request; the old run's activities, timers and other input do not carry
/// over.
pub(super) fn continue_as_new(
    tx: &mut Tx<'_>,
    id: &str,
    started: &EventKind,
    unread: &[EventKind],
    now_ms: u64,
) -> Result<(), StoreError> {
    let row = tx.one(
        "SELECT run, workflow_type, module_hash, created_at_ms FROM instances WHERE id = $1",
        &[&id],
    )?;
    let (run, workflow_type, module_hash, created): (i64, String, String, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let events = super::store::history(tx, id)?;
    tx.exec(
        "INSERT INTO runs(instance_id, run, workflow_type, module_hash, started_at_ms, ended_at_ms, events)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&id, &run, &workflow_type, &module_hash, &created, &(now_ms as i64), &to_json(&events)?],
    )?;
    tx.exec("DELETE FROM events WHERE instance_id = $1", &[&id])?;
    tx.exec("DELETE FROM activity_tasks WHERE instance_id = $1", &[&id])?;
    tx.exec("DELETE FROM timers WHERE instance_id = $1", &[&id])?;
    // Signals and a cancellation request are for the instance, not for one run: they go to
    // the next run, after the signals the old run received but never read.
    let inbox = super::store::inbox_rows(tx, id)?;
    tx.exec("DELETE FROM inbox WHERE instance_id = $1", &[&id])?;
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
        tx.exec(
            "INSERT INTO inbox(instance_id, time_ms, data) VALUES ($1, $2, $3)",
            &[&id, &(*time_ms as i64), &to_json(kind)?],
        )?;
    }
    let mut started = started.clone();
    let (new_type, new_module) = match &mut started {
        EventKind::WorkflowStarted {
            continued_from_run,
            workflow_type,
            module_hash,
            ..
        } => {
            *continued_from_run = Some(run as u32);
            (workflow_type.clone(), module_hash.0.clone())
        }
        _ => {
            return Err(StoreError::Database(
                "continue-as-new needs a WorkflowStarted event".into(),
            ))
        }
    };
    let now = now_ms as i64;
    tx.exec(
        "INSERT INTO events(instance_id, id, time_ms, data) VALUES ($1, 1, $2, $3)",
        &[&id, &now, &to_json(&started)?],
    )?;
    tx.exec(
        "UPDATE instances SET run = $2, workflow_type = $3, module_hash = $4, event_count = 1,
         runnable = TRUE, updated_at_ms = $5, created_at_ms = $5, blocked_reason = NULL, closing = FALSE
         WHERE id = $1",
        &[&id, &(run + 1), &new_type, &new_module, &now],
    )?;
    publish(tx, id, &Transition::ContinuedAsNew, now_ms)
}
