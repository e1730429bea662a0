//! Verify at scale: 10,000 stored histories (some diverging, in three ways) give the same
//! verdicts, in the same order, on one replay thread and on several, both through
//! `replay_stored` and through `verify_module` (what `deploy --verify` and `alias set
//! --verify` run).

use std::sync::Arc;

use pinion_runtime::bench::verify::{open_steps_history, COMPLETED_STEPS};
use pinion_runtime::rollout::StoredRun;
use pinion_runtime::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use pinion_runtime::store::{InstanceFilter, Store};
use pinion_runtime::{EventKind, Payload, Progress};

use super::common::*;

const HISTORIES: usize = 10_000;

/// History `i`: every 7th schedules another activity at step 3 (a divergence), every 13th
/// asks for 2 steps only (the code completes where history schedules step 3: another
/// divergence), every 17th has an input the workflow cannot decode (it fails where history
/// schedules: a third); the rest are compatible.
fn history(i: usize, hash: &pinion_runtime::ModuleHash) -> pinion_runtime::history::HistoryExport {
    let mut h = open_steps_history(&format!("h-{i:05}"), COMPLETED_STEPS, hash);
    for e in &mut h.events {
        match &mut e.kind {
            EventKind::ActivityScheduled {
                seq: 3,
                activity_type,
                ..
            } if i.is_multiple_of(7) => *activity_type = "other".into(),
            EventKind::WorkflowStarted { input, .. } if i.is_multiple_of(13) => {
                *input = Payload::from_value(&serde_json::json!({"n": 2})).unwrap()
            }
            EventKind::WorkflowStarted { input, .. } if i.is_multiple_of(17) => {
                *input = Payload::from_value(&"not steps").unwrap()
            }
            _ => {}
        }
    }
    h
}

#[test]
fn verify_over_10000_histories_gives_the_same_verdicts_on_one_thread_and_on_several() {
    let dir = TempDir::new("verify-scale");
    let db = dir.db();
    let hash = open(&db).deploy(&wasm_bytes("testkit")).unwrap().hash;
    {
        // Setup, not the subject: written fast, then made ordinary running instances.
        let store = Arc::new(
            SqliteStore::open(
                &db,
                SqliteOptions {
                    synchronous: Synchronous::Off,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        std::thread::scope(|s| {
            for t in 0..4 {
                let (store, hash) = (store.clone(), hash.clone());
                s.spawn(move || {
                    for i in (t..HISTORIES).step_by(4) {
                        store.import_history(&history(i, &hash), 0).unwrap();
                    }
                });
            }
        });
    }
    execute_sql(&db, "UPDATE instances SET imported = 0");

    let p = open(&db);
    let replayer = p.replayer_for(&hash.0).unwrap();
    let mut runs: Vec<StoredRun> = p
        .store()
        .list_instances(&InstanceFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| StoredRun::current(r.id))
        .collect();
    runs.sort_by(|a, b| a.instance.0.cmp(&b.instance.0));
    assert_eq!(runs.len(), HISTORIES);

    let one = p
        .replay_stored_on(&replayer, &runs, 1, &Progress::new())
        .unwrap();
    let progress = Progress::new();
    let several = p.replay_stored_on(&replayer, &runs, 4, &progress).unwrap();
    assert_eq!(progress.done(), HISTORIES as u64);
    assert_eq!(one.0, several.0, "the same counts");
    assert!(one.1 == several.1, "the same reports, in the same order");
    let ids: Vec<&str> = several.1.iter().map(|r| r.instance_id.as_str()).collect();
    let want: Vec<&str> = runs.iter().map(|r| r.instance.0.as_str()).collect();
    assert_eq!(ids, want);
    // The verdicts really differ, and each history got its own.
    let (summary, reports) = &several;
    assert!(summary.compatible > 0 && summary.diverged > 0, "{summary}");
    let first_divergences: std::collections::BTreeSet<String> = reports
        .iter()
        .filter_map(|r| match &r.outcome {
            pinion_runtime::replay::ReplayOutcome::Diverged { produced, .. } => {
                Some(produced.split('{').next().unwrap_or("").to_owned())
            }
            _ => None,
        })
        .collect();
    assert!(first_divergences.len() >= 2, "{first_divergences:?}");
    for (i, r) in reports.iter().enumerate() {
        let expect_ok = !i.is_multiple_of(7) && !i.is_multiple_of(13) && !i.is_multiple_of(17);
        assert_eq!(r.is_compatible(), expect_ok, "h-{i:05}: {r}");
    }

    // The deploy --verify path: the running instances of the module's types.
    let v1 = p
        .verify_module_on(&replayer, HISTORIES as u32, 1, &Progress::new())
        .unwrap();
    let v3 = p
        .verify_module_on(&replayer, HISTORIES as u32, 3, &Progress::new())
        .unwrap();
    assert_eq!(v1.0, v3.0);
    assert!(v1.1 == v3.1);
    assert_eq!(v1.0, *summary);
}
