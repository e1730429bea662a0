//! In-code versioning on real modules: seed 003's four steps (Cadence's GetVersion with
//! ExecuteWithVersion), and Temporal's patched / deprecate_patch truth table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pinion_runtime::clock::ManualClock;
use pinion_runtime::replay::{ReplayOutcome, Replayer};
use pinion_runtime::rollout::UpgradeSelector;
use pinion_runtime::{
    EventKind, HistoryEvent, InstanceId, InstanceStatus, ModuleHash, Pinion, WorkerGuard,
};
use serde_json::json;

use super::common::*;

const WAIT: Duration = Duration::from_secs(60);
const STEPS: [&str; 4] = ["cadence-v01", "cadence-v02", "cadence-v03", "cadence-v04"];

/// Starts `id` on `hash` and waits until it sleeps after its activity (the manual clock
/// keeps it there).
fn start_running(p: &Pinion, w: &WorkerGuard, ty: &str, hash: &str, id: &str) {
    p.start(&start_req(ty, hash, r#"{"wait_ms": 3600000}"#, id))
        .unwrap();
    w.wake();
    wait_until("the instance to sleep after its activity", WAIT, || {
        p.history(id)
            .unwrap()
            .iter()
            .any(|e| matches!(e.kind, EventKind::TimerStarted { .. }))
    });
}

fn history(p: &Pinion, id: &str) -> pinion_runtime::history::HistoryExport {
    p.store()
        .export_history(&InstanceId(id.into()))
        .unwrap()
        .unwrap()
}

fn replays(guest: &str, p: &Pinion, id: &str) -> ReplayOutcome {
    Replayer::from_bytes(&wasm_bytes(guest), Default::default())
        .unwrap()
        .replay(&history(p, id))
        .outcome
}

fn activity_of(events: &[HistoryEvent]) -> String {
    events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ActivityScheduled { activity_type, .. } => Some(activity_type.clone()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn every_step_of_seed_003_rolls_back_and_forward_safely_and_skipping_v02_does_not() {
    let dir = TempDir::new("cadence");
    let clock = ManualClock::new(1_700_000_000_000);
    let p = open_with_clock(&dir.db(), Arc::new(clock.clone()));
    let hashes: Vec<String> = STEPS
        .iter()
        .map(|g| p.deploy(&wasm_bytes(g)).unwrap().hash.0)
        .collect();
    let w = p.start_worker(quiet_worker()).unwrap();

    // One running instance started on each version, as during a gradual rollout.
    for (i, h) in hashes.iter().enumerate() {
        start_running(&p, &w, "MyWorkflow", h, &format!("on-v0{}", i + 1));
    }
    // v0.1 and v0.2 start executions on the old logic (Foo), v0.3 and v0.4 on the new (Bar).
    let ran: Vec<String> = (1..=4)
        .map(|i| activity_of(&p.history(&format!("on-v0{i}")).unwrap()))
        .collect();
    assert_eq!(
        ran,
        ["FooActivity", "FooActivity", "BarActivity", "BarActivity"]
    );

    // At each step k -> k+1, every instance that can be running then (started on v0.1..=v0.k+1,
    // minus DefaultVersion ones before v0.4, which the article requires to have finished)
    // replays on both the new module and the one before it: roll back and forward freely.
    let running_at_step = |k: usize| -> Vec<usize> {
        (0..=k)
            .filter(|&started| !(k == 3 && started < 2))
            .collect() // k is the new step's index
    };
    for k in 1..4 {
        for started in running_at_step(k) {
            let id = format!("on-v0{}", started + 1);
            for module in [k - 1, k] {
                assert_eq!(
                    replays(STEPS[module], &p, &id),
                    ReplayOutcome::Compatible,
                    "{id} on {} (step {} -> {})",
                    STEPS[module],
                    k,
                    k + 1
                );
            }
        }
    }
    // Why v0.4 waits for DefaultVersion executions to finish: it no longer supports them.
    assert!(matches!(
        replays("cadence-v04", &p, "on-v02"),
        ReplayOutcome::Diverged { .. }
    ));
    // Skipping v0.2: an execution started on v0.3 cannot be rolled back to v0.1.
    match replays("cadence-v01", &p, "on-v03") {
        ReplayOutcome::Diverged {
            recorded, produced, ..
        } => {
            assert_eq!(recorded, r#"MarkerRecorded{id: "version:MyChange"}"#);
            assert_eq!(
                produced,
                r#"ActivityScheduled{type: "FooActivity", seq: 1}"#
            );
        }
        other => panic!("expected a divergence, got {other:?}"),
    }

    // The same with the real verb: roll the v0.3 execution back to v0.2 and forward again.
    let (v02, v03) = (ModuleHash(hashes[1].clone()), ModuleHash(hashes[2].clone()));
    let back = p
        .upgrade(
            &v02.0,
            &UpgradeSelector::Id("on-v03".into()),
            false,
            &pinion_runtime::Progress::new(),
        )
        .unwrap();
    assert!(back[0].upgraded, "{}", back[0].replay);
    let forward = p
        .upgrade(
            &v03.0,
            &UpgradeSelector::Id("on-v03".into()),
            false,
            &pinion_runtime::Progress::new(),
        )
        .unwrap();
    assert!(forward[0].upgraded, "{}", forward[0].replay);
    let unsafe_back = p
        .upgrade(
            &hashes[0],
            &UpgradeSelector::Id("on-v03".into()),
            false,
            &pinion_runtime::Progress::new(),
        )
        .unwrap();
    assert!(
        !unsafe_back[0].upgraded,
        "v0.1 must refuse an execution that recorded version 1"
    );

    // Everything finishes, each on the logic it started with.
    clock.advance(Duration::from_secs(3601));
    w.wake();
    let mut results = HashMap::new();
    for i in 1..=4 {
        let id = format!("on-v0{i}");
        let rec = p.wait(&id, WAIT).unwrap();
        assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
        results.insert(id, rec.result.unwrap().to_value());
    }
    assert_eq!(results["on-v01"], json!("foo"));
    assert_eq!(results["on-v02"], json!("foo"));
    assert_eq!(results["on-v03"], json!("bar"));
    assert_eq!(results["on-v04"], json!("bar"));
}

#[test]
fn patched_and_deprecate_patch_follow_temporals_truth_table() {
    let dir = TempDir::new("patch");
    let p = open(&dir.db());
    let w = p.start_worker(quiet_worker()).unwrap();
    let guests = ["patch-v1", "patch-v2", "patch-v3", "patch-v4"];
    for (i, g) in guests.iter().enumerate() {
        let hash = p.deploy(&wasm_bytes(g)).unwrap().hash.0;
        p.start(&start_req("Patched", &hash, "{}", &format!("p{}", i + 1)))
            .unwrap();
    }
    w.wake();
    for i in 1..=4 {
        assert_eq!(
            p.wait(&format!("p{i}"), WAIT).unwrap().status,
            InstanceStatus::Completed
        );
    }
    let ok = |guest: &str, id: &str| replays(guest, &p, id) == ReplayOutcome::Compatible;
    // history has no marker, code has patched: false on replay, old path.
    assert!(ok("patch-v2", "p1"));
    // history has the marker, code has patched: true on replay.
    assert!(ok("patch-v2", "p2"));
    // history has the marker, code has deprecate_patch: allowed; and rolling v3 back to v2.
    assert!(ok("patch-v3", "p2"));
    assert!(ok("patch-v2", "p3"));
    // history has a deprecated marker, code has no call: the marker is skipped.
    assert!(ok("patch-v4", "p3"));
    // history has a (not deprecated) marker, code has no call: divergence.
    assert!(!ok("patch-v4", "p2"));
    assert!(!ok("patch-v1", "p2"));
    // deprecate_patch means the old path is gone: pre-patch histories no longer replay.
    assert!(!ok("patch-v3", "p1"));
}
