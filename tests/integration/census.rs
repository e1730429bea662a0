//! The marker census on real modules: instances that recorded version 1, version 2 or no
//! marker (the `census` guest), counted as they end; Temporal's patch lifecycle
//! (`patch-v1` … `patch-v4`), with `deprecate_patch` called safe exactly when replay agrees.
//! Also run on PostgreSQL (`pg.rs`).

use std::sync::Arc;
use std::time::Duration;

use pinion_runtime::census::{MarkerCensus, MarkerQuery, MarkerReport};
use pinion_runtime::clock::ManualClock;
use pinion_runtime::replay::{ReplayOutcome, Replayer};
use pinion_runtime::{EventKind, InstanceId, InstanceStatus, Pinion, WorkerGuard};

use super::common::*;

const WAIT: Duration = Duration::from_secs(60);
const HOUR_MS: u64 = 3_600_000;

/// Starts `id` and waits until it sleeps after its activity (the manual clock keeps it
/// there until advanced past `wait_ms`).
fn start_sleeping(p: &Pinion, w: &WorkerGuard, ty: &str, hash: &str, input: &str, id: &str) {
    p.start(&start_req(ty, hash, input, id)).unwrap();
    w.wake();
    wait_until("the instance to sleep after its activity", WAIT, || {
        p.history(id)
            .unwrap()
            .iter()
            .any(|e| matches!(e.kind, EventKind::TimerStarted { .. }))
    });
}

fn census(p: &Pinion, ty: &str, include_ended: bool) -> MarkerCensus {
    p.marker_census(&MarkerQuery {
        workflow_type: Some(ty.into()),
        module: None,
        include_ended,
    })
    .unwrap()
}

fn only(c: &MarkerCensus, marker_id: &str) -> MarkerReport {
    assert_eq!(c.markers.len(), 1, "{c:#?}");
    assert_eq!(c.markers[0].marker_id, marker_id);
    c.markers[0].clone()
}

/// `(version, instances)` per path.
fn versions(r: &MarkerReport) -> Vec<(i32, u64)> {
    r.paths
        .iter()
        .map(|p| (p.version.expect("a version marker"), p.instances))
        .collect()
}

fn replay(guest: &str, p: &Pinion, id: &str) -> ReplayOutcome {
    let h = p
        .store()
        .export_history(&InstanceId(id.into()))
        .unwrap()
        .unwrap();
    Replayer::from_bytes(&wasm_bytes(guest), Default::default())
        .unwrap()
        .replay(&h)
        .outcome
}

#[test]
fn the_census_counts_version_1_version_2_and_no_marker_and_changes_as_instances_end() {
    let dir = TempDir::new("census-versions");
    let clock = ManualClock::new(1_700_000_000_000);
    let p = open_with_clock(&dir.db(), Arc::new(clock.clone()));
    let hash = p.deploy(&wasm_bytes("census")).unwrap().hash.0;
    let w = p.start_worker(quiet_worker()).unwrap();
    // "one" finishes after a minute; the others sleep an hour.
    let inputs = [
        ("none-a", r#"{"version": -1, "wait_ms": 3600000}"#),
        ("none-b", r#"{"version": -1, "wait_ms": 3600000}"#),
        ("one", r#"{"version": 1, "wait_ms": 60000}"#),
        ("two-a", r#"{"version": 2, "wait_ms": 3600000}"#),
        ("two-b", r#"{"version": 2, "wait_ms": 3600000}"#),
    ];
    for (id, input) in inputs {
        start_sleeping(&p, &w, "Versioned", &hash, input, id);
    }

    let r = only(&census(&p, "Versioned", false), "version:MyChange");
    assert_eq!(r.counted, 5);
    assert_eq!(versions(&r), [(-1, 2), (1, 1), (2, 2)]);
    assert_eq!(r.versions_needed, [-1, 1, 2]);
    assert!(r.versions_deletable.is_empty());
    assert!(!r.old_branch_deletable);
    assert_eq!(r.paths[0].examples, ["none-a", "none-b"]);
    assert_eq!(r.paths[0].modules[0].0, hash);
    assert!(r
        .advice
        .iter()
        .any(|a| a.contains("keep the DEFAULT_VERSION branch")));
    assert_eq!(census(&p, "NoSuchType", false).markers, []);

    // The instances without a marker end: nothing open can reach the DEFAULT_VERSION
    // branch any more, but their histories still need it to replay.
    p.terminate("none-a", "done").unwrap();
    p.cancel("none-b", "done").unwrap();
    w.wake();
    wait_until("none-b to end cancelled", WAIT, || {
        p.status("none-b").unwrap().status == InstanceStatus::Cancelled
    });
    let r = only(&census(&p, "Versioned", false), "version:MyChange");
    assert_eq!(versions(&r), [(1, 1), (2, 2)]);
    assert!(r.old_branch_deletable);
    assert_eq!(r.versions_deletable, [-1]);
    assert!(r
        .advice
        .iter()
        .any(|a| a.contains("DEFAULT_VERSION branch can be deleted")));
    let all = only(&census(&p, "Versioned", true), "version:MyChange");
    assert_eq!(versions(&all), [(-1, 2), (1, 1), (2, 2)]);
    assert_eq!(all.paths[0].ended, 2);
    assert!(!all.old_branch_deletable);

    // "one" completes: only version 2 is still needed by open instances.
    clock.advance(Duration::from_millis(60_001));
    w.wake();
    assert_eq!(
        p.wait("one", WAIT).unwrap().status,
        InstanceStatus::Completed
    );
    let r = only(&census(&p, "Versioned", false), "version:MyChange");
    assert_eq!(versions(&r), [(2, 2)]);
    assert_eq!(r.versions_needed, [2]);
    assert_eq!(r.versions_deletable, [-1, 1]);

    // Every instance ended: the change is still listed, with nothing left to keep.
    clock.advance(Duration::from_millis(HOUR_MS));
    w.wake();
    for id in ["two-a", "two-b"] {
        assert_eq!(p.wait(id, WAIT).unwrap().status, InstanceStatus::Completed);
    }
    let r = only(&census(&p, "Versioned", false), "version:MyChange");
    assert_eq!(r.counted, 0);
    assert!(r.paths.is_empty());
    assert_eq!(r.versions_deletable, [-1, 1, 2]);
    let all = only(&census(&p, "Versioned", true), "version:MyChange");
    assert_eq!(versions(&all), [(-1, 2), (1, 1), (2, 2)]);
}

#[test]
fn deprecate_patch_is_reported_safe_only_when_replay_agrees() {
    let dir = TempDir::new("census-patch");
    let clock = ManualClock::new(1_700_000_000_000);
    let p = open_with_clock(&dir.db(), Arc::new(clock.clone()));
    let hashes: Vec<String> = ["patch-v1", "patch-v2", "patch-v3", "patch-v4"]
        .iter()
        .map(|g| p.deploy(&wasm_bytes(g)).unwrap().hash.0)
        .collect();
    let w = p.start_worker(quiet_worker()).unwrap();
    let sleep = r#"{"wait_ms": 3600000}"#;
    // Before the patch (v1: no marker), patched (v2), and deprecated (v3).
    start_sleeping(&p, &w, "Patched", &hashes[0], sleep, "before");
    start_sleeping(&p, &w, "Patched", &hashes[1], sleep, "patched");

    let r = only(&census(&p, "Patched", false), "patch:my-patch");
    assert_eq!(r.deprecate_patch_safe, Some(false));
    assert_eq!(r.patch_call_removable, Some(false));
    assert!(!r.old_branch_deletable);
    // It is not: v3 (deprecate_patch, old branch deleted) cannot replay "before".
    assert!(matches!(
        replay("patch-v3", &p, "before"),
        ReplayOutcome::Diverged { .. }
    ));
    assert_eq!(replay("patch-v3", &p, "patched"), ReplayOutcome::Compatible);

    p.terminate("before", "done").unwrap();
    start_sleeping(&p, &w, "Patched", &hashes[2], sleep, "deprecated");
    let r = only(&census(&p, "Patched", false), "patch:my-patch");
    assert_eq!(r.deprecate_patch_safe, Some(true));
    assert!(r.old_branch_deletable);
    // v3 replays every open instance.
    for id in ["patched", "deprecated"] {
        assert_eq!(
            replay("patch-v3", &p, id),
            ReplayOutcome::Compatible,
            "{id}"
        );
    }
    // But the call stays while a marker is not deprecated: v4 cannot replay "patched".
    assert_eq!(r.patch_call_removable, Some(false));
    assert!(matches!(
        replay("patch-v4", &p, "patched"),
        ReplayOutcome::Diverged { .. }
    ));
    // Counting ended instances, "before" still needs the old branch.
    let all = only(&census(&p, "Patched", true), "patch:my-patch");
    assert_eq!(all.deprecate_patch_safe, Some(false));

    p.terminate("patched", "done").unwrap();
    let r = only(&census(&p, "Patched", false), "patch:my-patch");
    assert_eq!(r.patch_call_removable, Some(true));
    assert_eq!(
        replay("patch-v4", &p, "deprecated"),
        ReplayOutcome::Compatible
    );
    let paths: Vec<_> = r.paths.iter().map(|p| (p.path, p.instances)).collect();
    assert_eq!(paths, [(pinion_runtime::census::MarkerPath::Deprecated, 1)]);

    // --module: only instances pinned to v3.
    let on_v3 = p
        .marker_census(&MarkerQuery {
            workflow_type: None,
            module: Some(hashes[2].clone()),
            include_ended: true,
        })
        .unwrap();
    assert_eq!(only(&on_v3, "patch:my-patch").counted, 1);
}
