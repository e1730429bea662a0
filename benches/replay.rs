//! Replay speed: events replayed per second for one 50,000-event history, for 10,000
//! short histories read from a database, cold (compile + instantiate) and warm, and for
//! 100,000 histories of about 100 events read from a database and replayed on every core
//! (`PINION_BENCH_HISTORIES` changes the count).
//!
//! Run: `cargo bench -p pinion-runtime --bench replay`. Prints figures with units; asserts
//! nothing. The histories are those of testkit's `Steps` workflow (activity `step` returns
//! its input + 1), written directly in the documented history format, so the 50,000-event
//! history takes no hours of live execution to produce; replay checks them exactly as it
//! checks recorded ones.
#![allow(clippy::disallowed_methods)] // a benchmark measures real time

#[path = "guests.rs"]
mod guests;

use std::time::Instant;

use pinion_runtime::replay::{ReplayOptions, Replayer};
use pinion_runtime::rollout::StoredRun;
use pinion_runtime::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use pinion_runtime::store::{InstanceFilter, Store};
use pinion_runtime::{InstanceId, ModuleHash, Pinion, PinionConfig, Progress};

/// Imports `count` completed `Steps` histories of `steps` activities into a new database,
/// from four threads (synchronous off: this is setup, not the measurement).
fn import_steps(db: &std::path::Path, count: usize, steps: u32, hash: &ModuleHash) {
    let store = std::sync::Arc::new(
        SqliteStore::open(
            db,
            SqliteOptions {
                synchronous: Synchronous::Off,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (store, hash) = (store.clone(), hash.clone());
            std::thread::spawn(move || {
                for i in (t..count).step_by(4) {
                    store
                        .import_history(&guests::steps_history(&format!("h-{i}"), steps, &hash), 0)
                        .unwrap();
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
}

fn main() {
    let root = guests::root();
    let module = guests::testkit_wasm();
    let bytes = std::fs::read(&module).unwrap();
    let hash = pinion_runtime::registry::hash_bytes(&bytes);

    // One long history.
    let long = guests::steps_history("long", 16_666, &hash);
    let events = long.events.len();
    let t = Instant::now();
    let replayer = Replayer::from_bytes(&bytes, ReplayOptions::default()).unwrap();
    let r = replayer.replay(&long);
    let cold = t.elapsed().as_secs_f64();
    assert!(r.is_compatible(), "{r}");
    let mut warm = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        assert!(replayer.replay(&long).is_compatible());
        warm = warm.min(t.elapsed().as_secs_f64());
    }
    println!("one history of {events} events:");
    println!(
        "  cold (compile + instantiate + replay): {cold:.3} s = {:>10.0} events/s",
        events as f64 / cold
    );
    println!(
        "  warm (best of 5):                      {warm:.3} s = {:>10.0} events/s",
        events as f64 / warm
    );

    // Many short histories in a database.
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join(format!("replay-{}.db", std::process::id()));
    let count = 10_000;
    import_steps(&db, count, 3, &hash);
    let run = |replayer: Option<&Replayer>| {
        let t = Instant::now();
        let fresh;
        let replayer = match replayer {
            Some(r) => r,
            None => {
                fresh = Replayer::from_bytes(&bytes, ReplayOptions::default()).unwrap();
                &fresh
            }
        };
        let store = SqliteStore::open(
            &db,
            SqliteOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut events = 0;
        for rec in store.list_instances(&InstanceFilter::default()).unwrap() {
            let h = store.export_history(&rec.id).unwrap().unwrap();
            events += h.events.len();
            assert!(replayer.replay(&h).is_compatible());
        }
        (t.elapsed().as_secs_f64(), events)
    };
    let (cold, n) = run(None);
    let (warm, _) = run(Some(&replayer));
    println!("{count} histories ({n} events) read from SQLite and replayed:");
    println!(
        "  cold: {cold:.2} s = {:>8.0} histories/s, {:>10.0} events/s",
        count as f64 / cold,
        n as f64 / cold
    );
    println!(
        "  warm: {warm:.2} s = {:>8.0} histories/s, {:>10.0} events/s",
        count as f64 / warm,
        n as f64 / warm
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }

    // Many histories of about 100 events, replayed from SQLite on every core, as `pinion
    // replay`, `deploy --verify` and `upgrade` do (`Pinion::replay_stored`).
    let count: usize = std::env::var("PINION_BENCH_HISTORIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let db = dir.join(format!("replay-many-{}.db", std::process::id()));
    let t = Instant::now();
    import_steps(&db, count, 33, &hash);
    let imported = t.elapsed().as_secs_f64();
    let p = Pinion::open(PinionConfig::new(&db)).unwrap();
    let ids: Vec<InstanceId> = p
        .store()
        .list_instances(&InstanceFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let events = p
        .store()
        .export_history(&ids[0])
        .unwrap()
        .unwrap()
        .events
        .len();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Instant::now();
    let runs: Vec<StoredRun> = ids.iter().cloned().map(StoredRun::current).collect();
    let (summary, reports) = p.replay_stored(&replayer, &runs, &Progress::new()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(
        (summary.compatible, reports.len()),
        (count, count),
        "{summary:?}"
    );
    println!(
        "{count} histories of {events} events (imported in {imported:.0} s) read from SQLite and replayed on {cores} cores:"
    );
    println!(
        "  warm: {secs:.2} s = {:>8.0} histories/s, {:>10.0} events/s",
        count as f64 / secs,
        (count * events) as f64 / secs
    );
    drop(p);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let _ = std::fs::remove_dir_all(format!("{}.cache", db.display()));
}
