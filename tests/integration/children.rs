//! Child workflows and continue-as-new through the library API, with real modules.

use std::time::Duration;

use pinion_runtime::api::Api;
use pinion_runtime::store::Transition;
use pinion_runtime::{EventKind, InstanceStatus, Pinion};
use serde_json::{json, Value};

use super::common::*;

const WAIT: Duration = Duration::from_secs(60);

fn deploy(p: &Pinion, guest: &str) -> String {
    p.deploy(&wasm_bytes(guest)).expect("deploy").hash.0
}

fn kinds(p: &Pinion, id: &str) -> Vec<EventKind> {
    p.history(id).unwrap().into_iter().map(|e| e.kind).collect()
}

#[test]
fn a_parent_awaits_its_children_each_an_instance_with_its_own_history() {
    let dir = TempDir::new("children");
    let p = open(&dir.db());
    let kit = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Family", &kit, r#"{"children": 3}"#, "fam"))
        .unwrap();
    let rec = p.wait("fam", WAIT).unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
    // Steps(n) returns n: 1 + 2 + 3.
    assert_eq!(rec.result.unwrap().to_value(), json!(6));
    for seq in 1..=3u32 {
        let child = format!("fam-child-{seq}");
        let c = p.status(&child).unwrap();
        assert_eq!(c.status, InstanceStatus::Completed);
        assert_eq!(
            c.module_hash.0, kit,
            "pinned to the parent's module by default"
        );
        match &kinds(&p, &child)[0] {
            EventKind::WorkflowStarted { parent, .. } => {
                let parent = parent.as_ref().expect("a child knows its parent");
                assert_eq!((parent.id.0.as_str(), parent.seq), ("fam", seq));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(transitions(&p, &child), ["started", "completed"]);
    }
    let started = p
        .events(&pinion_runtime::api::types::EventQuery {
            instance_id: Some("fam-child-2".into()),
            types: vec!["started".into()],
            ..Default::default()
        })
        .unwrap();
    match &started[0].transition {
        Transition::Started {
            parent: Some(parent),
        } => {
            assert_eq!((parent.id.0.as_str(), parent.seq), ("fam", 2))
        }
        other => panic!("a child's start names its parent: {other:?}"),
    }
    let history = kinds(&p, "fam");
    assert_eq!(
        history
            .iter()
            .filter(|k| matches!(k, EventKind::ChildWorkflowInitiated { .. }))
            .count(),
        3
    );
    assert_eq!(
        history
            .iter()
            .filter(|k| matches!(k, EventKind::ChildWorkflowCompleted { .. }))
            .count(),
        3
    );
    w.shutdown();
}

#[test]
fn a_child_pinned_by_alias_runs_on_the_alias_module_and_a_missing_alias_fails_the_start() {
    let dir = TempDir::new("children-alias");
    let p = open(&dir.db());
    let kit = deploy(&p, "testkit");
    let hello = deploy(&p, "hello-v1");
    let w = p.start_worker(quiet_worker()).unwrap();
    // No alias yet: the child cannot start, and the parent sees why.
    p.start(&start_req(
        "Family",
        &kit,
        r#"{"children": 1, "alias": "kit"}"#,
        "f1",
    ))
    .unwrap();
    let rec = p.wait("f1", WAIT).unwrap();
    assert_eq!(rec.status, InstanceStatus::Failed);
    let failure = rec.failure.unwrap();
    assert_eq!(failure.kind, "ChildStartFailed");
    assert!(
        failure.message.contains("no alias named `kit`"),
        "{failure:?}"
    );
    // An alias to a module without the workflow type is refused the same way.
    p.set_alias("kit", &hello).unwrap();
    p.start(&start_req(
        "Family",
        &kit,
        r#"{"children": 1, "alias": "kit"}"#,
        "f2",
    ))
    .unwrap();
    let rec = p.wait("f2", WAIT).unwrap();
    assert!(
        rec.failure
            .unwrap()
            .message
            .contains("has no workflow type `Steps`"),
        "the child's module must export the type"
    );
    p.set_alias("kit", &kit).unwrap();
    p.start(&start_req(
        "Family",
        &kit,
        r#"{"children": 2, "alias": "kit"}"#,
        "f3",
    ))
    .unwrap();
    assert_eq!(
        p.wait("f3", WAIT).unwrap().result.unwrap().to_value(),
        json!(3)
    );
    w.shutdown();
}

#[test]
fn cancelling_a_parent_cancels_its_child_which_cleans_up_before_the_parent_ends() {
    let dir = TempDir::new("children-cancel");
    let p = open(&dir.db());
    let kit = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Family", &kit, r#"{"approval": true}"#, "pc"))
        .unwrap();
    wait_until("the child to wait for approval", WAIT, || {
        p.query("pc-child-1", "state", "null")
            .map(|v| v.to_value() == json!("waiting"))
            .unwrap_or(false)
    });
    p.cancel("pc", "order withdrawn").unwrap();
    let parent = p.wait("pc", WAIT).unwrap();
    assert_eq!(parent.status, InstanceStatus::Cancelled, "{parent:?}");
    let child = p.status("pc-child-1").unwrap();
    assert_eq!(child.status, InstanceStatus::Cancelled);
    assert!(kinds(&p, "pc-child-1")
        .iter()
        .any(|k| matches!(k, EventKind::ActivityScheduled { activity_type, .. } if activity_type == "release")));
    assert!(kinds(&p, "pc").contains(&EventKind::ChildCancelRequested { seq: 1 }));
    w.shutdown();
}

#[test]
fn terminating_a_parent_terminates_its_running_children() {
    let dir = TempDir::new("children-terminate");
    let p = open(&dir.db());
    let kit = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Family", &kit, r#"{"approval": true}"#, "pt"))
        .unwrap();
    wait_until("the child to start", WAIT, || {
        p.status("pt-child-1").is_ok()
    });
    p.terminate("pt", "stop everything").unwrap();
    assert_eq!(
        p.status("pt-child-1").unwrap().status,
        InstanceStatus::Terminated
    );
    w.shutdown();
    // Both ends are published, in the transaction's order: the parent, then its child.
    assert_eq!(transitions(&p, "pt"), ["started", "terminated"]);
    assert_eq!(transitions(&p, "pt-child-1"), ["started", "terminated"]);
    let events = p
        .events(&pinion_runtime::api::types::EventQuery {
            types: vec!["terminated".into()],
            ..Default::default()
        })
        .unwrap();
    let ids: Vec<_> = events.iter().map(|e| e.instance_id.0.as_str()).collect();
    assert_eq!(ids, ["pt", "pt-child-1"]);
    match &events[1].transition {
        Transition::Terminated { reason } => assert_eq!(reason, "its parent pt ended"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn continue_as_new_starts_a_fresh_history_and_can_move_to_the_alias_module() {
    let dir = TempDir::new("can");
    let p = open(&dir.db());
    let v1 = deploy(&p, "replay-v1");
    let v2 = deploy(&p, "replay-v2");
    p.set_alias("lab", &v1).unwrap();
    let w = p.start_worker(quiet_worker()).unwrap();
    // Same module: three runs under one id.
    p.start(&start_req("Countdown", &v1, r#"{"n": 2}"#, "cd"))
        .unwrap();
    let rec = p.wait("cd", WAIT).unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
    let labels: Vec<Value> = serde_json::from_value(rec.result.unwrap().to_value()).unwrap();
    assert_eq!(labels.len(), 3);
    // The current history is the last run's only: it starts fresh and says where from.
    let history = kinds(&p, "cd");
    match &history[0] {
        EventKind::WorkflowStarted {
            continued_from_run, ..
        } => assert_eq!(*continued_from_run, Some(2)),
        other => panic!("{other:?}"),
    }
    assert!(history.len() < 10, "{history:#?}");
    assert_eq!(
        transitions(&p, "cd"),
        [
            "started",
            "continued_as_new",
            "continued_as_new",
            "completed"
        ]
    );
    // The earlier runs are archived whole and can be read back, by number.
    assert_eq!(p.status("cd").unwrap().run, 3);
    for run in 1..=2u32 {
        let h = Api::history(&p, "cd", Some(run)).unwrap();
        assert_eq!((h.run, h.status), (run, InstanceStatus::ContinuedAsNew));
        match &h.events[0].kind {
            EventKind::WorkflowStarted {
                continued_from_run, ..
            } => assert_eq!(*continued_from_run, (run > 1).then_some(run - 1)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            h.events.last().map(|e| &e.kind),
            Some(EventKind::WorkflowContinuedAsNew { .. })
        ));
    }
    let current = Api::history(&p, "cd", Some(3)).unwrap();
    assert_eq!(
        (current.run, current.status),
        (3, InstanceStatus::Completed)
    );
    assert_eq!(current.events.len(), history.len());
    let e = Api::history(&p, "cd", Some(4)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "instance cd has no run 4: its runs are 1 to 3"
    );
    let o = pinion(&dir.db(), &["history", "cd", "--run", "1"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("WorkflowContinuedAsNew"));
    let o = pinion(&dir.db(), &["history", "cd", "--run", "9"]);
    assert_eq!(o.status.code(), Some(3));
    // Moving to new code: the alias is switched to v2 while the instance runs on v1.
    p.set_alias("lab", &v2).unwrap();
    p.start(&start_req(
        "Countdown",
        &v1,
        r#"{"n": 1, "alias": "lab"}"#,
        "mv",
    ))
    .unwrap();
    let rec = p.wait("mv", WAIT).unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
    assert_eq!(rec.module_hash.0, v2, "the instance now runs on v2");
    let labels: Vec<String> = serde_json::from_value(rec.result.unwrap().to_value()).unwrap();
    assert_eq!(labels, vec![r#""v1""#, r#""v2""#]);
    w.shutdown();
}

#[test]
fn signals_received_but_unread_when_a_run_continues_as_new_reach_the_next_run() {
    let dir = TempDir::new("can-signals");
    let p = open(&dir.db());
    let kit = deploy(&p, "testkit");
    p.start(&start_req("Rounds", &kit, r#"{"rounds": 3}"#, "r"))
        .unwrap();
    // All three arrive before the first activation, so the first run receives all of them
    // and reads only one; the other two must be carried to the next runs.
    for x in ["1", "10", "100"] {
        p.signal("r", "add", x).unwrap();
    }
    let w = p.start_worker(quiet_worker()).unwrap();
    let rec = p.wait("r", WAIT).unwrap();
    w.shutdown();
    assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
    assert_eq!(rec.result.unwrap().to_value(), json!(111));
}

/// Purging an instance that continued as new, with `--export`, writes every run, not only
/// the last: the archived runs as `<id>@run<N>.json`, so nothing replayable is lost.
#[test]
fn a_purge_with_export_writes_the_archived_runs_too() {
    let dir = TempDir::new("purge-runs");
    let p = open(&dir.db());
    let v1 = deploy(&p, "replay-v1");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Countdown", &v1, r#"{"n": 2}"#, "cd/1"))
        .unwrap();
    assert_eq!(
        p.wait("cd/1", WAIT).unwrap().status,
        InstanceStatus::Completed
    );
    w.shutdown();
    let out = dir.path().join("kept");
    let report = p
        .purge(Duration::ZERO, Some("Countdown"), Some(&out), false)
        .unwrap();
    assert_eq!(report.instances, ["cd/1"]);
    assert_eq!(report.exported, 3, "two archived runs and the last one");
    for (file, run, status) in [
        ("cd%2F1@run1.json", 1, "continued_as_new"),
        ("cd%2F1@run2.json", 2, "continued_as_new"),
        ("cd%2F1.json", 3, "completed"),
    ] {
        let h: Value = serde_json::from_slice(&std::fs::read(out.join(file)).unwrap()).unwrap();
        assert_eq!(h["instance_id"], "cd/1", "{file}");
        assert_eq!(h["run"].as_u64().unwrap_or(1), run, "{file}");
        assert_eq!(h["status"], status, "{file}");
    }
    assert!(p.status("cd/1").is_err(), "the instance is gone");
}

/// A child started with another input than the code now gives it is reported like a changed
/// activity input: a warning naming the child and both inputs, or with `strict_inputs` a
/// divergence. (The history is a real one with the recorded input edited: the same as code
/// that changed the input it passes.)
#[test]
fn a_changed_child_input_is_a_warning_or_with_strict_inputs_a_divergence() {
    use pinion_runtime::replay::{ReplayOptions, ReplayOutcome, Replayer};
    let dir = TempDir::new("child-input");
    let p = open(&dir.db());
    let kit = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Family", &kit, r#"{"children": 2}"#, "kin"))
        .unwrap();
    assert_eq!(
        p.wait("kin", WAIT).unwrap().status,
        InstanceStatus::Completed
    );
    w.shutdown();
    let mut history = Api::history(&p, "kin", None).unwrap();
    let mut edited = 0;
    for e in &mut history.events {
        if let EventKind::ChildWorkflowInitiated { seq: 2, input, .. } = &mut e.kind {
            *input = pinion_runtime::Payload::from_value(&json!({"n": 99})).unwrap();
            edited += 1;
        }
    }
    assert_eq!(edited, 1);

    let lenient = Replayer::from_file(&wasm("testkit"), ReplayOptions::default()).unwrap();
    let r = lenient.replay(&history);
    assert!(r.is_compatible(), "{r}");
    assert_eq!(r.warnings.len(), 1, "{r}");
    assert!(
        r.warnings[0]
            .contains(r#"child workflow "Steps" (seq 2) input changed from {"n":99} to {"n":2}"#),
        "{}",
        r.warnings[0]
    );

    let strict = Replayer::from_file(
        &wasm("testkit"),
        ReplayOptions {
            strict_inputs: true,
        },
    )
    .unwrap();
    match strict.replay(&history).outcome {
        ReplayOutcome::Diverged {
            recorded, produced, ..
        } => {
            assert!(recorded.contains(r#"input: {"n":99}"#), "{recorded}");
            assert!(produced.contains(r#"input: {"n":2}"#), "{produced}");
        }
        other => panic!("expected a divergence, got {other:?}"),
    }
}
