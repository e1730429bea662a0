//! The authors' test harness (`pinion-testing`) feeds the replay gate: a history recorded
//! by a harness run of `examples/foobar-v1` on the host replays compatible against the wasm
//! build of the same crate, and diverges against `foobar-v2`, which inserts
//! `SendNotification` (the Durable Functions versioning seed), both through `Replayer` and
//! through the real `pinion replay`.

use pinion_runtime::replay::{ReplayOptions, ReplayOutcome, Replayer};
use pinion_testing::TestEnv;

use super::common::*;

/// A harness run of FooBar v1 (real activities), its history written to `dir`.
fn record_foobar(dir: &TempDir) -> std::path::PathBuf {
    let mut run = TestEnv::new(&foobar_v1::__PINION_MODULE)
        .instance_id("fb-harness")
        .start("FooBar", &());
    let result: String = run.run_to_end().unwrap();
    assert_eq!(result, "Bar got true");
    let path = dir.path().join("fb-harness.json");
    run.write_history(&path).unwrap();
    path
}

#[test]
fn a_harness_history_replays_compatible_on_the_wasm_build_and_diverges_on_a_changed_module() {
    let dir = TempDir::new("harness-replay");
    let history = record_foobar(&dir);

    let same = Replayer::from_file(&wasm("foobar-v1"), ReplayOptions::default()).unwrap();
    let report = same.replay_file(&history).unwrap();
    assert_eq!(report.outcome, ReplayOutcome::Compatible, "{report:?}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(!report.result_differs);

    let changed = Replayer::from_file(&wasm("foobar-v2"), ReplayOptions::default()).unwrap();
    let report = changed.replay_file(&history).unwrap();
    match &report.outcome {
        ReplayOutcome::Diverged {
            event_index,
            recorded,
            produced,
            ..
        } => {
            assert_eq!(*event_index, 6);
            assert_eq!(recorded, "ActivityScheduled{type: \"Bar\", seq: 2}");
            assert_eq!(
                produced,
                "ActivityScheduled{type: \"SendNotification\", seq: 2}"
            );
        }
        other => panic!("expected a divergence, got {other:?}"),
    }
}

#[test]
fn pinion_replay_reads_a_harness_history() {
    let dir = TempDir::new("harness-cli");
    let history = record_foobar(&dir);
    let history = history.to_str().unwrap();

    let v1 = wasm("foobar-v1");
    let out = pinion(
        &dir.db(),
        &[
            "replay",
            "--module",
            v1.to_str().unwrap(),
            "--history",
            history,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 compatible, 0 diverged, 0 failed"),
        "{stdout}"
    );

    let v2 = wasm("foobar-v2");
    let out = pinion(
        &dir.db(),
        &[
            "replay",
            "--module",
            v2.to_str().unwrap(),
            "--history",
            history,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(8), "{stdout}");
    assert!(
        stdout.contains("event #6: history has ActivityScheduled{type: \"Bar\", seq: 2}, code produced ActivityScheduled{type: \"SendNotification\", seq: 2}"),
        "{stdout}"
    );

    // And `pinion history import` takes it as it is.
    let out = pinion(&dir.db(), &["history", "import", history]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn day_two_s_answer_fails_day_one_s_code_without_waiting_the_five_minutes() {
    // Seed 004 (Step Functions): day 1 expects "Approved", day 2's function says "ThumbsUp".
    let mut run = TestEnv::new(&hello_v1::__PINION_MODULE)
        .mock_activity("hello", |(): ()| {
            Ok::<_, pinion_sdk::ActivityError>("ThumbsUp".to_string())
        })
        .start("Hello", &());
    match run.run_to_end::<String>() {
        Err(pinion_testing::HarnessError::Failed(f)) => {
            assert_eq!(f.kind, "Failed");
            assert!(f.message.contains("ThumbsUp"), "{}", f.message);
        }
        other => panic!("expected the workflow to fail, got {other:?}"),
    }
    assert_eq!(
        run.elapsed_ms(),
        300_000,
        "the default five-minute wait, skipped"
    );
}

/// A parent whose children the harness mocks records the history the engine would: the
/// wasm build replays it compatible (children, their ids and inputs, their ends), through
/// `Replayer` and `pinion history import`; a child started with other input diverges.
#[test]
fn a_harness_history_with_mocked_children_replays_compatible_on_the_wasm_build() {
    let dir = TempDir::new("harness-children");
    let mut run = TestEnv::new(&testkit::__PINION_MODULE)
        .instance_id("family-harness")
        .mock_child("Steps", |input: serde_json::Value| {
            Ok::<u64, pinion_testing::Failure>(input["n"].as_u64().unwrap())
        })
        .start("Family", &serde_json::json!({ "children": 2 }));
    let sum: u64 = run.run_to_end().unwrap();
    assert_eq!(sum, 1 + 2);
    assert_eq!(run.events_of("ChildWorkflowInitiated").len(), 2);
    let history = dir.path().join("family.json");
    run.write_history(&history).unwrap();

    let kit = Replayer::from_file(&wasm("testkit"), ReplayOptions::default()).unwrap();
    let report = kit.replay_file(&history).unwrap();
    assert_eq!(report.outcome, ReplayOutcome::Compatible, "{report:?}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(!report.result_differs);

    // The recorded inputs are what replay compares: one changed by hand diverges (or
    // warns) exactly as an engine history would.
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&history).unwrap()).unwrap();
    for e in doc["events"].as_array_mut().unwrap() {
        if e["type"] == "ChildWorkflowInitiated" && e["seq"] == 2 {
            e["workflow_type"] = "Echo".into();
        }
    }
    let changed = dir.path().join("family-changed.json");
    std::fs::write(&changed, doc.to_string()).unwrap();
    match kit.replay_file(&changed).unwrap().outcome {
        ReplayOutcome::Diverged {
            recorded, produced, ..
        } => {
            assert_eq!(recorded, "ChildWorkflowInitiated{type: \"Echo\", seq: 2}");
            assert_eq!(produced, "ChildWorkflowInitiated{type: \"Steps\", seq: 2}");
        }
        other => panic!("expected a divergence, got {other:?}"),
    }
    let out = pinion(&dir.db(), &["history", "import", history.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
