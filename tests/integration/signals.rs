//! Signals, queries, cancellation and termination through the library API, with the
//! testkit module's `Approval`, `Collect` and `Busy` workflows and real SQLite files.

use std::time::Duration;

use pinion_runtime::api::types::{StopBody, StopResult, StopVerb};
use pinion_runtime::api::Api;
use pinion_runtime::engine::BulkSelector;
use pinion_runtime::store::StoreError;
use pinion_runtime::{Error, EventKind, InstanceStatus, Pinion};
use serde_json::{json, Value};

use super::common::*;

const WAIT: Duration = Duration::from_secs(60);

fn deploy(p: &Pinion, guest: &str) -> String {
    p.deploy(&wasm_bytes(guest)).expect("deploy").hash.0
}

fn kinds(p: &Pinion, id: &str) -> Vec<EventKind> {
    p.history(id).unwrap().into_iter().map(|e| e.kind).collect()
}

fn names(p: &Pinion, id: &str) -> Vec<&'static str> {
    kinds(p, id).iter().map(|k| k.name()).collect()
}

fn query(p: &Pinion, id: &str, name: &str) -> Value {
    p.query(id, name, "null").expect("query").to_value()
}

/// Waits until the instance has run its first activation (so it is waiting, not new).
fn wait_started(p: &Pinion, id: &str) {
    wait_until("the first activation", WAIT, || {
        p.status(id).unwrap().event_count >= 2
    });
}

#[test]
fn signals_sent_before_the_workflow_waits_are_buffered_durably_and_delivered_in_order() {
    let dir = TempDir::new("sig-early");
    let m = {
        // No worker yet: the signals wait in the inbox, across a close and reopen.
        let p = open(&dir.db());
        let m = deploy(&p, "testkit");
        p.start(&start_req("Collect", &m, r#"{"count": 3}"#, "c1"))
            .unwrap();
        p.signal("c1", "add", "1").unwrap();
        p.signal("c1", "add", "20").unwrap();
        m
    };
    let _ = m;
    let p = open(&dir.db());
    let w = p.start_worker(quiet_worker()).unwrap();
    wait_until("the first two signals", WAIT, || {
        p.status("c1").unwrap().event_count >= 4
    });
    p.signal("c1", "add", "300").unwrap();
    let rec = p.wait("c1", WAIT).unwrap();
    w.shutdown();
    assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
    assert_eq!(rec.result.unwrap().to_value(), json!(321));
    let signals: Vec<Value> = kinds(&p, "c1")
        .into_iter()
        .filter_map(|k| match k {
            EventKind::SignalReceived { name, input } => {
                assert_eq!(name, "add");
                Some(input.to_value())
            }
            _ => None,
        })
        .collect();
    assert_eq!(signals, vec![json!(1), json!(20), json!(300)]);
}

#[test]
fn a_signal_that_races_the_final_activation_is_recorded_not_lost() {
    // Collect{count: 1} completes on its first signal; a second signal sent at once either
    // arrives with the first (and is recorded before completion) or while the final
    // activation runs, in which case the engine redoes it with the signal delivered.
    let dir = TempDir::new("sig-race");
    let p = open(&dir.db());
    let m = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    for i in 0..10 {
        let id = format!("r{i}");
        p.start(&start_req("Collect", &m, r#"{"count": 1}"#, &id))
            .unwrap();
        wait_started(&p, &id);
        p.signal(&id, "add", "1").unwrap();
        // Accepted only while the instance runs; once it has ended it is refused, never
        // silently dropped.
        let second = p.signal(&id, "add", "2");
        let rec = p.wait(&id, WAIT).unwrap();
        assert_eq!(rec.status, InstanceStatus::Completed);
        let recorded = kinds(&p, &id)
            .iter()
            .filter(|k| matches!(k, EventKind::SignalReceived { .. }))
            .count();
        match second {
            Ok(()) => assert_eq!(recorded, 2, "{id}: an accepted signal must be in history"),
            Err(Error::Store(StoreError::NotAccepting { .. })) => assert_eq!(recorded, 1),
            Err(e) => panic!("{id}: {e}"),
        }
    }
    w.shutdown();
}

#[test]
fn bad_signals_are_refused_with_clear_errors() {
    let dir = TempDir::new("sig-bad");
    let p = open(&dir.db());
    let m = deploy(&p, "testkit");
    let err = p.signal("nope", "add", "1").unwrap_err();
    assert!(matches!(err, Error::UnknownInstance(_)), "{err}");
    p.start(&start_req("Echo", &m, "1", "done")).unwrap();
    let err = p.signal("done", "add", "{not json").unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert!(
        err.to_string().contains("signal input is not valid JSON"),
        "{err}"
    );
    let err = p.signal("done", "", "1").unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.wait("done", WAIT).unwrap();
    w.shutdown();
    let err = p.signal("done", "add", "1").unwrap_err();
    assert!(
        err.to_string().contains("completed") && err.to_string().contains("no more input"),
        "{err}"
    );
    assert!(p.cancel("done", "x").is_err());
    assert!(p.terminate("done", "x").is_err());
}

#[test]
fn a_signal_completes_a_waiting_approval_and_the_query_follows_its_state() {
    let dir = TempDir::new("approval");
    let p = open(&dir.db());
    let m = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Approval", &m, r#"{"order": "o-1"}"#, "a1"))
        .unwrap();
    wait_started(&p, "a1");
    assert_eq!(query(&p, "a1", "state"), json!("waiting"));
    p.signal("a1", "approve", r#""alice""#).unwrap();
    let rec = p.wait("a1", WAIT).unwrap();
    w.shutdown();
    assert_eq!(
        rec.result.unwrap().to_value(),
        json!("o-1 approved by alice")
    );
    // Queries work on ended instances too (rebuilt by replay).
    assert_eq!(query(&p, "a1", "state"), json!("approved"));
}

#[test]
fn a_query_never_changes_history_whether_cached_or_rebuilt() {
    let dir = TempDir::new("query");
    let p = open(&dir.db());
    let m = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Collect", &m, r#"{"count": 3}"#, "q1"))
        .unwrap();
    // Before its first activation an instance has no state to ask about.
    let early = p.query("q1", "seen", "null");
    if let Err(Error::Query { kind, .. }) = &early {
        assert_eq!(kind, "NotStarted");
    }
    wait_started(&p, "q1");
    p.signal("q1", "add", "5").unwrap();
    wait_until("the signal to be read", WAIT, || {
        query(&p, "q1", "seen") == json!(1)
    });
    let before = p.history("q1").unwrap();
    for _ in 0..5 {
        assert_eq!(query(&p, "q1", "total"), json!(5));
    }
    // A second engine on the same file has no cached run: it rebuilds by replay.
    let other = open(&dir.db());
    assert_eq!(query(&other, "q1", "total"), json!(5));
    let err = other.query("q1", "nope", "null").unwrap_err();
    match &err {
        Error::Query { kind, message, .. } => {
            assert_eq!(kind, "UnknownQuery");
            assert!(
                message.contains("seen") && message.contains("total"),
                "{message}"
            );
        }
        other => panic!("{other}"),
    }
    let err = other.query("q1", "total", "{").unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert_eq!(p.history("q1").unwrap(), before, "queries appended nothing");
    // The instance still runs normally afterwards.
    p.signal("q1", "add", "6").unwrap();
    p.signal("q1", "add", "7").unwrap();
    let rec = p.wait("q1", WAIT).unwrap();
    w.shutdown();
    assert_eq!(rec.result.unwrap().to_value(), json!(18));
}

#[test]
fn cancel_stops_the_pending_activity_and_timer_runs_cleanup_and_ends_cancelled() {
    let dir = TempDir::new("cancel-busy");
    let p = open(&dir.db());
    let m = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Busy", &m, r#"{"ms": 300}"#, "b1"))
        .unwrap();
    wait_started(&p, "b1");
    assert!(p.cancel("b1", "customer changed their mind").unwrap());
    assert!(
        !p.cancel("b1", "again").unwrap(),
        "a second cancellation is a no-op"
    );
    let rec = p.wait("b1", WAIT).unwrap();
    w.shutdown();
    assert_eq!(rec.status, InstanceStatus::Cancelled, "{rec:?}");
    let failure = rec.failure.expect("the reason is kept");
    assert_eq!(failure.kind, "Cancelled");
    assert!(
        failure.message.contains("customer changed their mind"),
        "{failure:?}"
    );
    let history = kinds(&p, "b1");
    let has = |want: &EventKind| history.iter().any(|k| k == want);
    assert!(
        has(&EventKind::ActivityCancelled { seq: 1 }),
        "{history:#?}"
    );
    assert!(has(&EventKind::TimerCancelled { seq: 1 }), "{history:#?}");
    assert!(
        history.iter().any(|k| matches!(k, EventKind::ActivityScheduled { seq: 2, activity_type, .. } if activity_type == "release")),
        "cleanup ran: {history:#?}"
    );
    assert_eq!(
        history
            .iter()
            .filter(|k| matches!(k, EventKind::CancelRequested { .. }))
            .count(),
        1
    );
    assert!(matches!(
        history.last(),
        Some(EventKind::WorkflowCancelled { .. })
    ));
    assert_eq!(transitions(&p, "b1"), ["started", "cancelled"]);
    // Nothing is left behind: no timer, no activity task.
    for table in ["timers", "activity_tasks", "inbox"] {
        assert_eq!(row_count(&dir.db(), table), 0, "{table}");
    }
}

#[test]
fn a_workflow_waiting_for_a_signal_is_cancelled_after_its_cleanup() {
    let dir = TempDir::new("cancel-approval");
    let p = open(&dir.db());
    let m = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Approval", &m, r#"{"order": "o-2"}"#, "a2"))
        .unwrap();
    wait_started(&p, "a2");
    p.cancel("a2", "expired").unwrap();
    let rec = p.wait("a2", WAIT).unwrap();
    w.shutdown();
    assert_eq!(rec.status, InstanceStatus::Cancelled);
    assert_eq!(
        names(&p, "a2")[2..],
        [
            "CancelRequested",
            "WorkflowTaskCompleted",
            "ActivityScheduled",
            "ActivityCompleted",
            "WorkflowTaskCompleted",
            "WorkflowCancelled"
        ]
    );
}

#[test]
fn terminate_ends_an_instance_at_once_without_running_its_code() {
    let dir = TempDir::new("terminate");
    let p = open(&dir.db());
    let m = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Sleep", &m, r#"{"ms": 3600000}"#, "t1"))
        .unwrap();
    wait_started(&p, "t1");
    p.terminate("t1", "stuck on a bad release").unwrap();
    let rec = p.status("t1").unwrap();
    assert_eq!(rec.status, InstanceStatus::Terminated);
    assert_eq!(
        rec.failure.as_ref().map(|f| f.message.as_str()),
        Some("stuck on a bad release")
    );
    assert_eq!(
        kinds(&p, "t1").last(),
        Some(&EventKind::WorkflowTerminated {
            reason: "stuck on a bad release".into()
        })
    );
    assert_eq!(
        row_count(&dir.db(), "timers"),
        0,
        "the one-hour timer is gone"
    );
    assert!(p.signal("t1", "x", "1").is_err());
    // A refused second terminate publishes nothing: the event is part of the transition.
    assert!(p.terminate("t1", "again").is_err());
    assert_eq!(transitions(&p, "t1"), ["started", "terminated"]);
    w.shutdown();
    // A blocked instance can be terminated too (its code cannot run to observe a cancel).
    p.start(&start_req("Panic", &m, "null", "t2")).unwrap();
    let w = p.start_worker(quiet_worker()).unwrap();
    assert_eq!(p.wait("t2", WAIT).unwrap().status, InstanceStatus::Blocked);
    p.terminate("t2", "cannot be fixed").unwrap();
    w.shutdown();
    assert_eq!(p.status("t2").unwrap().status, InstanceStatus::Terminated);
    assert_eq!(transitions(&p, "t2"), ["started", "blocked", "terminated"]);
}

#[test]
fn bulk_stop_selects_running_and_blocked_instances_by_module_and_type() {
    // Seed 002's mitigation: stop every in-flight instance of the old module.
    let dir = TempDir::new("bulk");
    let p = open(&dir.db());
    let old = deploy(&p, "hello-v1");
    let kit = deploy(&p, "testkit");
    for i in 0..3 {
        p.start(&start_req(
            "Hello",
            &old,
            r#"{"wait_ms": 3600000}"#,
            &format!("old{i}"),
        ))
        .unwrap();
    }
    p.start(&start_req("Approval", &kit, r#"{"order": "x"}"#, "kit1"))
        .unwrap();
    p.start(&start_req("Echo", &kit, "1", "kit2")).unwrap();
    let w = p.start_worker(quiet_worker()).unwrap();
    p.wait("kit2", WAIT).unwrap();
    for i in 0..3 {
        wait_started(&p, &format!("old{i}"));
    }
    let by_module = BulkSelector {
        module_hash: Some(pinion_runtime::history::ModuleHash(old.clone())),
        workflow_type: None,
    };
    let selected = p.select_open(&by_module).unwrap();
    assert_eq!(selected.len(), 3);
    let stopped = Api::stop(
        &p,
        StopVerb::Cancel,
        &StopBody {
            module: Some(old.clone()),
            reason: "old release".into(),
            ..StopBody::default()
        },
    )
    .unwrap();
    assert_eq!(stopped.instances.len(), 3);
    assert!(stopped
        .instances
        .iter()
        .all(|o| o.result == StopResult::CancellationRequested));
    for i in 0..3 {
        let rec = p.wait(&format!("old{i}"), WAIT).unwrap();
        assert_eq!(rec.status, InstanceStatus::Cancelled, "{rec:?}");
    }
    assert_eq!(p.status("kit1").unwrap().status, InstanceStatus::Running);
    let by_type = BulkSelector {
        module_hash: None,
        workflow_type: Some("Approval".into()),
    };
    assert_eq!(p.select_open(&by_type).unwrap().len(), 1);
    let stopped = Api::stop(
        &p,
        StopVerb::Terminate,
        &StopBody {
            workflow_type: Some("Approval".into()),
            reason: "cleanup".into(),
            ..StopBody::default()
        },
    )
    .unwrap();
    assert_eq!(stopped.instances.len(), 1);
    assert_eq!(p.status("kit1").unwrap().status, InstanceStatus::Terminated);
    // Completed and cancelled instances are never selected again.
    assert!(p.select_open(&BulkSelector::default()).unwrap().is_empty());
    w.shutdown();
}

#[test]
fn an_instance_does_not_close_while_undelivered_input_waits_in_its_inbox() {
    use pinion_runtime::store::{ActivationCommit, InstanceOutcome};
    // The store's rule behind "an accepted signal is never lost", without racing threads:
    // a final activation that did not consume a signal which arrived meanwhile is refused.
    let dir = TempDir::new("late-input");
    let p = open(&dir.db());
    let m = deploy(&p, "testkit");
    let id = p.start(&start_req("Echo", &m, "1", "late")).unwrap();
    p.signal("late", "add", "5").unwrap();
    let inbox = p.store().load_inbox(&id).unwrap();
    assert_eq!(inbox.len(), 1);
    let commit = |consumed: Vec<i64>| ActivationCommit {
        create: None,
        instance_id: id.clone(),
        expected_next_event: 2,
        events: vec![
            (2, EventKind::WorkflowTaskCompleted { now_ms: 1 }),
            (
                3,
                EventKind::WorkflowCompleted {
                    result: pinion_runtime::Payload::null(),
                },
            ),
        ],
        consumed_inbox: consumed,
        resolved_activities: vec![],
        new_activities: vec![],
        new_timers: vec![],
        cancelled_timers: vec![],
        cancelled_activities: vec![],
        new_children: vec![],
        cancelled_children: vec![],
        outcome: InstanceOutcome::Completed(pinion_runtime::Payload::null()),
        now_ms: 1,
    };
    let err = p.store().commit_activation(commit(vec![])).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(p.status("late").unwrap().status, InstanceStatus::Running);
    assert_eq!(
        p.store().load_inbox(&id).unwrap().len(),
        1,
        "the signal is kept"
    );
    // Delivered with the activation, the same close is accepted.
    p.store()
        .commit_activation(commit(vec![inbox[0].id]))
        .unwrap();
    assert_eq!(p.status("late").unwrap().status, InstanceStatus::Completed);
}

#[test]
fn an_exported_cancelled_history_imports_with_its_reason() {
    let dir = TempDir::new("import-cancelled");
    let p = open(&dir.db());
    let m = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Approval", &m, r#"{"order": "o"}"#, "ic"))
        .unwrap();
    wait_started(&p, "ic");
    p.cancel("ic", "no stock").unwrap();
    assert_eq!(
        p.wait("ic", WAIT).unwrap().status,
        InstanceStatus::Cancelled
    );
    w.shutdown();
    let export = p
        .store()
        .export_history(&p.status("ic").unwrap().id)
        .unwrap()
        .unwrap();
    let other_dir = TempDir::new("import-cancelled-2");
    let other = open(&other_dir.db());
    other.store().import_history(&export, 1).unwrap();
    let rec = other.status("ic").unwrap();
    assert_eq!(rec.status, InstanceStatus::Cancelled);
    assert_eq!(
        rec.failure.map(|f| (f.kind, f.message)),
        Some(("Cancelled".into(), "no stock".into()))
    );
}

/// A workflow that completes on its first signal completes even while signals keep
/// streaming in. Each signal that arrives during its final activation refuses that commit,
/// so the activation is redone with it; without a bound that is a livelock. The refusal
/// marks the instance closing, further signals are refused (`not_accepting`), and the
/// redo closes it with every signal accepted before recorded.
#[test]
fn a_stream_of_signals_cannot_keep_an_instance_from_completing() {
    let dir = TempDir::new("signal-stream");
    let p = std::sync::Arc::new(open(&dir.db()));
    let m = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Collect", &m, r#"{"count": 1}"#, "busy"))
        .unwrap();
    wait_started(&p, "busy");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut accepted, mut refused) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match p.signal("busy", "add", "1") {
                        Ok(_) => accepted += 1,
                        Err(Error::Store(StoreError::NotAccepting { .. })) => refused += 1,
                        Err(e) => panic!("unexpected: {e}"),
                    }
                }
                (accepted, refused)
            })
        })
        .collect();
    let rec = p.wait("busy", WAIT);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let counts: Vec<(u64, u64)> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let rec = rec.unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
    w.shutdown();
    // Every accepted signal is in the history, none was lost; the rest were refused.
    let accepted: u64 = counts.iter().map(|c| c.0).sum();
    let recorded = kinds(&p, "busy")
        .iter()
        .filter(|k| matches!(k, EventKind::SignalReceived { .. }))
        .count() as u64;
    assert_eq!(recorded, accepted, "{counts:?}");
    assert!(counts.iter().map(|c| c.1).sum::<u64>() > 0, "{counts:?}");
}
