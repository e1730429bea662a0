//! The two hot writes: committing an activation (`Store::commit_activation`) and recording
//! how an activity attempt ended (`Store::resolve_activity`). The rules are SQLite's
//! (`store/sqlite/mod.rs`, `commit_op`); what differs is how a stale writer is stopped:
//! the instance row is read `FOR UPDATE`, so a concurrent commit to the same instance waits
//! for this one and then sees the history length it left.
//!
//! Each function returns a closure that encodes nothing and can run again: a transaction
//! PostgreSQL aborted for a serialization failure or deadlock is retried from the start.

use super::events::publish;
use super::lifecycle::{self, Ending};
use super::tasks::push_inbox;
use super::{map_err, to_json, Conn, SingleOp, Tx};
use crate::history::{InstanceId, Payload};
use crate::store::{ActivationCommit, ActivityResolution, InstanceOutcome, StoreError, Transition};

/// What an activation commit writes, encoded once on the caller's thread.
struct Encoded {
    commit: ActivationCommit,
    event_ids: Vec<i64>,
    event_data: Vec<String>,
    activities: Vec<(i64, String, String, String, Option<i64>)>,
    status: &'static str,
    result: Option<String>,
    failure: Option<String>,
    cancelled: pinion_abi::Failure,
    /// The committing member (see `members.rs`), when servers share the database.
    me: Option<std::sync::Arc<str>>,
}

/// The statement-by-statement commit of an activation, in a transaction.
type TxOp = dyn FnMut(&mut Tx<'_>) -> Result<(), StoreError> + Send;

/// How an activation is committed: an ordinary step in one statement, anything else
/// statement by statement in a transaction.
pub(super) enum CommitOp {
    /// A step of a running instance that stays running, creates nothing and starts or
    /// cancels no child: `pinion_commit_step` (migration 4), one round trip.
    Step(Box<SingleOp<()>>),
    /// Everything else (a start, an ending, children, continue-as-new): [`apply`].
    Tx(Box<TxOp>),
}

/// The commit of one activation (see `Store::commit_activation`).
pub(super) fn commit_op(
    commit: ActivationCommit,
    me: Option<std::sync::Arc<str>>,
) -> Result<CommitOp, StoreError> {
    let mut event_ids = Vec::with_capacity(commit.events.len());
    let mut event_data = Vec::with_capacity(commit.events.len());
    for (eid, kind) in &commit.events {
        event_ids.push(*eid as i64);
        event_data.push(to_json(kind)?);
    }
    let mut activities = Vec::with_capacity(commit.new_activities.len());
    for a in &commit.new_activities {
        activities.push((
            i64::from(a.seq),
            a.activity_type.clone(),
            a.input.json().to_owned(),
            to_json(&a.options)?,
            a.lease_until_ms.map(|t| t as i64),
        ));
    }
    let crate::store::encode::OutcomeColumns {
        status,
        result,
        failure,
        cancelled,
    } = super::outcome_columns(&commit.outcome)?;
    let e = Encoded {
        commit,
        event_ids,
        event_data,
        activities,
        status,
        result,
        failure,
        cancelled,
        me,
    };
    let c = &e.commit;
    let step = c.create.is_none()
        && e.status == "running"
        && !matches!(c.outcome, InstanceOutcome::ContinuedAsNew(..))
        && c.new_children.is_empty()
        && c.cancelled_children.is_empty();
    Ok(if step {
        CommitOp::Step(Box::new(move |conn: &mut Conn| {
            step_call(conn, &e).map(|()| ((), true))
        }))
    } else {
        CommitOp::Tx(Box::new(move |tx: &mut Tx<'_>| apply(tx, &e)))
    })
}

/// The call of `pinion_commit_step`: what [`apply`] does for a step, in one statement.
const STEP_SQL: &str = "SELECT pinion_commit_step($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";

fn step_call(conn: &mut Conn, e: &Encoded) -> Result<(), StoreError> {
    let c = &e.commit;
    let id = c.instance_id.0.as_str();
    let expected = c.expected_next_event as i64;
    let now = c.now_ms as i64;
    let (resolved_seq, resolved_attempt): (Vec<i64>, Vec<i64>) = c
        .resolved_activities
        .iter()
        .map(|(s, a)| (i64::from(*s), i64::from(*a)))
        .unzip();
    let act_seq: Vec<i64> = e.activities.iter().map(|a| a.0).collect();
    let act_type: Vec<&str> = e.activities.iter().map(|a| a.1.as_str()).collect();
    let act_input: Vec<&str> = e.activities.iter().map(|a| a.2.as_str()).collect();
    let act_options: Vec<&str> = e.activities.iter().map(|a| a.3.as_str()).collect();
    let act_lease: Vec<Option<i64>> = e.activities.iter().map(|a| a.4).collect();
    let (timer_seq, timer_at): (Vec<i64>, Vec<i64>) = c
        .new_timers
        .iter()
        .map(|t| (i64::from(t.seq), t.fire_at_ms as i64))
        .unzip();
    let cancelled_timers: Vec<i64> = c.cancelled_timers.iter().map(|s| i64::from(*s)).collect();
    let cancelled_activities: Vec<i64> = c
        .cancelled_activities
        .iter()
        .map(|s| i64::from(*s))
        .collect();
    let stmt = conn.stmt(STEP_SQL)?;
    conn.client
        .execute(
            &stmt,
            &[
                &id,
                &expected,
                &e.me.as_deref(),
                &now,
                &e.event_ids,
                &e.event_data,
                &c.consumed_inbox,
                &resolved_seq,
                &resolved_attempt,
                &act_seq,
                &act_type,
                &act_input,
                &act_options,
                &act_lease,
                &timer_seq,
                &timer_at,
                &cancelled_timers,
                &cancelled_activities,
            ],
        )
        .map_err(map_err)?;
    Ok(())
}

fn apply(tx: &mut Tx<'_>, e: &Encoded) -> Result<(), StoreError> {
    let commit = &e.commit;
    let id = commit.instance_id.0.as_str();
    let now = commit.now_ms as i64;
    if let Some(started) = &commit.create {
        lifecycle::insert_instance(tx, &commit.instance_id, started, commit.now_ms)?;
    }
    let row = tx
        .opt(
            "SELECT event_count, status, module_hash, owner FROM instances WHERE id = $1 FOR UPDATE",
            &[&id],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("instance {id}")))?;
    let (count, cur_status, module, owner): (i64, String, String, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if count as u64 + 1 != commit.expected_next_event || cur_status != "running" {
        return Err(StoreError::Conflict(format!(
            "instance {id}: expected to append event {} but history has {count} events and status {cur_status}",
            commit.expected_next_event
        )));
    }
    // One member activates an instance at a time: a commit from any but its owner is
    // refused (the member was taken for gone and its instances handed over), and a free
    // instance becomes the committer's.
    if let Some(me) = e.me.as_deref() {
        match owner.as_deref() {
            Some(o) if o != me => {
                return Err(StoreError::Conflict(format!(
                    "instance {id} is owned by server {o}, not this one ({me})"
                )))
            }
            Some(_) => {}
            None => {
                tx.exec("UPDATE instances SET owner = $2 WHERE id = $1", &[&id, &me])?;
            }
        }
    }
    // One statement for all of the activation's events (a round trip each cost more than
    // the inserts themselves).
    tx.exec(
        "INSERT INTO events(instance_id, id, time_ms, data)
         SELECT $1, u.id, $3, u.data FROM unnest($2::BIGINT[], $4::TEXT[]) AS u(id, data)",
        &[&id, &e.event_ids, &now, &e.event_data],
    )?;
    if !commit.consumed_inbox.is_empty() {
        tx.exec(
            "DELETE FROM inbox WHERE instance_id = $1 AND id = ANY($2::BIGINT[])",
            &[&id, &commit.consumed_inbox],
        )?;
    }
    for (seq, attempt) in &commit.resolved_activities {
        let n = tx.exec(
            "DELETE FROM activity_tasks WHERE instance_id = $1 AND seq = $2 AND attempt = $3",
            &[&id, &i64::from(*seq), &i64::from(*attempt)],
        )?;
        if n != 1 {
            return Err(StoreError::Conflict(format!(
                "instance {id}: attempt {attempt} of activity {seq} is no longer current (cancelled, or retried elsewhere)"
            )));
        }
    }
    let start_children = |tx: &mut Tx<'_>| -> Result<(), StoreError> {
        for child in &commit.new_children {
            lifecycle::start_child(tx, id, child.seq, &child.id, &child.started, commit.now_ms)?;
        }
        for seq in &commit.cancelled_children {
            lifecycle::cancel_child(
                tx,
                id,
                *seq,
                &format!("its parent {id} was cancelled"),
                commit.now_ms,
            )?;
        }
        Ok(())
    };
    if let InstanceOutcome::ContinuedAsNew(started, unread) = &commit.outcome {
        // The old run's children cannot report to the new run, which never started them:
        // they end with the run.
        start_children(tx)?;
        lifecycle::terminate_children(tx, id, commit.now_ms)?;
        return lifecycle::continue_as_new(tx, id, started, unread, commit.now_ms);
    }
    let new_count = count + e.event_ids.len() as i64;
    if e.status == "running" {
        start_children(tx)?;
        for (seq, ty, input, options, lease) in &e.activities {
            tx.exec(
                "INSERT INTO activity_tasks(instance_id, seq, module_hash, activity_type, input, options, attempt, visible_at_ms, lease_until_ms, started_at_ms, leased_by)
                 VALUES ($1, $2, $3, $4, $5, $6, 1, $7::BIGINT, $8::BIGINT, CASE WHEN $8::BIGINT IS NULL THEN NULL ELSE $7::BIGINT END,
                         CASE WHEN $8::BIGINT IS NULL THEN NULL ELSE $9::TEXT END)",
                &[&id, seq, &module, ty, input, options, &now, lease, &e.me.as_deref()],
            )?;
        }
        for timer in &commit.new_timers {
            tx.exec(
                "INSERT INTO timers(instance_id, seq, fire_at_ms) VALUES ($1, $2, $3)",
                &[&id, &i64::from(timer.seq), &(timer.fire_at_ms as i64)],
            )?;
        }
        for seq in &commit.cancelled_timers {
            tx.exec(
                "DELETE FROM timers WHERE instance_id = $1 AND seq = $2",
                &[&id, &i64::from(*seq)],
            )?;
        }
        for seq in &commit.cancelled_activities {
            tx.exec(
                "DELETE FROM activity_tasks WHERE instance_id = $1 AND seq = $2",
                &[&id, &i64::from(*seq)],
            )?;
        }
        tx.exec(
            "UPDATE instances SET event_count = $2, updated_at_ms = $3, closing = FALSE,
               runnable = EXISTS(SELECT 1 FROM inbox WHERE instance_id = $1)
             WHERE id = $1",
            &[&id, &new_count, &now],
        )?;
        return Ok(());
    }
    // Input that arrived while this activation ran (a signal, typically) must not vanish
    // with the instance: refuse to close, so the worker redoes the activation with it.
    if tx
        .opt("SELECT 1 FROM inbox WHERE instance_id = $1 LIMIT 1", &[&id])?
        .is_some()
    {
        return Err(StoreError::Conflict(format!(
            "instance {id}: new input arrived while its final activation ran; redoing it with that input"
        )));
    }
    start_children(tx)?;
    lifecycle::clear_work(tx, id)?;
    tx.exec(
        "UPDATE instances SET event_count = $2, updated_at_ms = $3, runnable = FALSE, status = $4, result = $5, failure = $6
         WHERE id = $1",
        &[&id, &new_count, &now, &e.status, &e.result, &e.failure],
    )?;
    let (ending, transition) = match &commit.outcome {
        InstanceOutcome::Completed(p) => (Ending::Completed(p), Transition::Completed),
        InstanceOutcome::Failed(f) => {
            (Ending::Failed(f), Transition::Failed { failure: f.clone() })
        }
        _ => (
            Ending::Failed(&e.cancelled),
            Transition::Cancelled {
                reason: e.cancelled.message.clone(),
            },
        ),
    };
    publish(tx, id, &transition, commit.now_ms)?;
    lifecycle::ended(tx, id, ending, commit.now_ms)
}

/// The transaction that records an activity attempt's fate (see `Store::resolve_activity`).
pub(super) fn resolve_op(
    instance: &InstanceId,
    seq: u32,
    attempt: u32,
    resolution: ActivityResolution,
    now_ms: u64,
) -> Result<impl FnMut(&mut Tx<'_>) -> Result<bool, StoreError> + Send + 'static, StoreError> {
    let instance = instance.0.clone();
    let (seq, attempt, now) = (i64::from(seq), i64::from(attempt), now_ms as i64);
    enum Plan {
        Retry {
            next_attempt: i64,
            visible_at_ms: i64,
            failure: String,
            details: Option<String>,
        },
        Resolve(crate::history::EventKind),
    }
    let plan = match resolution {
        ActivityResolution::Retry {
            next_attempt,
            visible_at_ms,
            failure,
            heartbeat_details,
        } => Plan::Retry {
            next_attempt: i64::from(next_attempt),
            visible_at_ms: visible_at_ms as i64,
            failure: to_json(&failure)?,
            details: heartbeat_details
                .as_ref()
                .map(|d: &Payload| d.json().to_owned()),
        },
        ActivityResolution::Resolve(kind) => Plan::Resolve(kind),
    };
    Ok(move |tx: &mut Tx<'_>| {
        let current = tx.opt(
            "SELECT attempt FROM activity_tasks WHERE instance_id = $1 AND seq = $2 FOR UPDATE",
            &[&instance, &seq],
        )?;
        if current.map(|r| r.get::<_, i64>(0)) != Some(attempt) {
            return Ok(false);
        }
        match &plan {
            Plan::Retry {
                next_attempt,
                visible_at_ms,
                failure,
                details,
            } => {
                let beat_at = details.as_ref().map(|_| now);
                tx.exec(
                    "UPDATE activity_tasks SET attempt = $3, visible_at_ms = $4, lease_until_ms = NULL,
                        started_at_ms = NULL, last_failure = $5,
                        heartbeat_details = coalesce($6, heartbeat_details),
                        last_heartbeat_ms = coalesce($7, last_heartbeat_ms)
                     WHERE instance_id = $1 AND seq = $2",
                    &[&instance, &seq, next_attempt, visible_at_ms, failure, details, &beat_at],
                )?;
            }
            Plan::Resolve(kind) => {
                tx.exec(
                    "DELETE FROM activity_tasks WHERE instance_id = $1 AND seq = $2",
                    &[&instance, &seq],
                )?;
                push_inbox(tx, &instance, now_ms, kind)?;
            }
        }
        Ok(true)
    })
}
