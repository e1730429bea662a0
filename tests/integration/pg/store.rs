//! The PostgreSQL store's own rules, which SQLite gets from its single writer and its
//! lock file: many worker processes per database (members that take over a dead one's
//! instances and attempts), a stale commit refused,
//! two commits racing for one instance appending once, the outbox dense and in commit
//! order under concurrent writers, a due timer firing once, an attempt leased once, a
//! server killed with SIGKILL finishing everything after a restart, and opening refusing
//! what is not a pinion database.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use pinion_runtime::store::postgres::{PgOptions, PgStore};
use pinion_runtime::store::{
    ActivationCommit, EventFilter, EventStore, InstanceOutcome, NewActivityTask, NewInstance,
    NewTimer, Store, StoreError,
};
use pinion_runtime::{EventKind, InstanceId, InstanceStatus, ModuleHash, Payload};

use super::common::*;
use super::many::Server;

fn store(db: &Path) -> PgStore {
    PgStore::open(db.to_str().unwrap(), PgOptions::default()).expect("open the PostgreSQL store")
}

/// A store with module `m1` stored.
fn store_with_module(db: &Path) -> PgStore {
    let s = store(db);
    let manifest = serde_json::from_str(
        r#"{"abi_version":2,"sdk_version":"t","workflows":["W"],"activities":["a"],"version_label":null}"#,
    )
    .unwrap();
    assert!(s
        .put_module(&ModuleHash("m1".into()), b"\0asm\x01\0\0\0", &manifest, 1)
        .unwrap());
    s
}

fn started() -> EventKind {
    EventKind::WorkflowStarted {
        workflow_type: "W".into(),
        module_hash: ModuleHash("m1".into()),
        input: Payload::from_json_bytes(b"null").unwrap(),
        random_seed: 7,
        determinism_rules: 1,
        version_label: None,
        parent: None,
        continued_from_run: None,
    }
}

fn create(s: &PgStore, id: &str) {
    s.create_instance(NewInstance {
        id: InstanceId(id.into()),
        now_ms: 10,
        started: started(),
    })
    .unwrap();
}

/// An activation of `id` appending one marker event at `expected` and arming `timers`.
fn activation(id: &str, expected: u64, timers: Vec<NewTimer>) -> ActivationCommit {
    ActivationCommit {
        instance_id: InstanceId(id.into()),
        create: None,
        expected_next_event: expected,
        events: vec![(
            expected,
            EventKind::MarkerRecorded {
                id: "m".into(),
                data: Payload::from_json_bytes(b"1").unwrap(),
            },
        )],
        consumed_inbox: vec![],
        resolved_activities: vec![],
        new_activities: vec![],
        new_timers: timers,
        cancelled_timers: vec![],
        cancelled_activities: vec![],
        new_children: vec![],
        cancelled_children: vec![],
        outcome: InstanceOutcome::Running,
        now_ms: 20,
    }
}

#[test]
fn engines_share_a_postgres_database_and_a_live_one_takes_over_a_dead_ones_work() {
    let dir = TempDir::new("pg-members");
    let db = dir.db();
    // Two engines run workers on one database at once (each its own member).
    let (a, b) = (open(&db), open(&db));
    let (wa, wb) = (
        a.start_worker(quiet_worker()).unwrap(),
        b.start_worker(quiet_worker()).unwrap(),
    );
    assert_eq!(count(&db, "SELECT count(*) FROM workers"), 2);
    wa.shutdown();
    wb.shutdown();
    // Leaving deletes the member's row.
    assert_eq!(count(&db, "SELECT count(*) FROM workers"), 0);

    let one = Arc::new(store_with_module(&db));
    let two = Arc::new(store(&db));
    let m1 = one.join().unwrap();
    let _m2 = two.join().unwrap();
    let (me1, me2) = (one.member_id().unwrap(), two.member_id().unwrap());
    create(&one, "i1");
    let id = InstanceId("i1".into());
    // The first to list it owns it; the other neither lists nor activates nor commits it.
    assert_eq!(one.runnable_instances(10).unwrap(), vec![id.clone()]);
    assert!(two.runnable_instances(10).unwrap().is_empty());
    assert!(two.activation_input(&id).unwrap().is_none());
    match two.commit_activation(activation("i1", 2, vec![])) {
        Err(StoreError::Conflict(why)) => assert!(why.contains(&*me1), "{why}"),
        other => panic!("expected the other member's commit refused, got {other:?}"),
    }
    one.commit_activation(activation("i1", 2, vec![])).unwrap();
    // An attempt leased by the first member is not lost while it lives.
    let mut act = activation("i1", 3, vec![]);
    act.new_activities = vec![NewActivityTask {
        seq: 1,
        activity_type: "a".into(),
        input: Payload::from_json_bytes(b"1").unwrap(),
        options: Default::default(),
        lease_until_ms: None,
    }];
    one.commit_activation(act).unwrap();
    assert_eq!(one.claim_activities(30, 10, 1000, 1000).unwrap().len(), 1);
    assert!(two.departed_activities().unwrap().is_empty());
    assert!(
        two.lost_activities().unwrap().is_empty(),
        "a live member's lease counted lost"
    );

    // The first member's session dies as with SIGKILL (its process would take it along).
    let key: i64 = postgres::Client::connect(db.to_str().unwrap(), postgres::NoTls)
        .unwrap()
        .query_one("SELECT lock_key FROM workers WHERE id = $1", &[&&*me1])
        .unwrap()
        .get(0);
    postgres::Client::connect(db.to_str().unwrap(), postgres::NoTls)
        .unwrap()
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND objsubid = 1
               AND ((classid::bigint << 32) | objid::bigint) = $1",
            &[&key],
        )
        .unwrap();
    wait_until("the session to end", Duration::from_secs(10), || {
        count(
            &db,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ) == 1
    });
    // The live one finds its attempt lost and its instance free, and takes the instance.
    let lost = two.departed_activities().unwrap();
    assert_eq!(
        lost.iter()
            .map(|t| (t.instance_id.0.as_str(), t.seq))
            .collect::<Vec<_>>(),
        vec![("i1", 1)]
    );
    assert_eq!(count(&db, "SELECT count(*) FROM workers"), 1);
    assert_eq!(
        count(&db, "SELECT count(*) FROM instances WHERE owner IS NULL"),
        1
    );
    assert!(two.activation_input(&id).unwrap().is_some());
    // The first member (alive after all, only its session was cut) joins again under a new
    // id, and its commits to the instance it lost are refused.
    // (The attempt stays lost for every member until a worker records it.)
    assert_eq!(one.departed_activities().unwrap().len(), 1);
    let again = one.member_id().unwrap();
    assert_ne!(again, me1);
    match one.commit_activation(activation("i1", 4, vec![])) {
        Err(StoreError::Conflict(why)) => assert!(why.contains(&*me2), "{why}"),
        other => panic!("expected the lost instance's commit refused, got {other:?}"),
    }
    drop(m1);
    assert_eq!(count(&db, "SELECT count(*) FROM workers"), 1);
}

#[test]
fn a_commit_with_a_stale_history_length_is_refused_and_writes_nothing() {
    let dir = TempDir::new("pg-stale");
    let s = store_with_module(&dir.db());
    create(&s, "i1");
    let id = InstanceId("i1".into());
    s.commit_activation(activation("i1", 2, vec![])).unwrap();
    // Written by a worker that still thinks history has one event.
    let stale = s.commit_activation(activation(
        "i1",
        2,
        vec![NewTimer {
            seq: 1,
            fire_at_ms: 5,
        }],
    ));
    match stale {
        Err(e @ StoreError::Conflict(_)) => assert!(e.is_retryable()),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(s.load_history(&id).unwrap().len(), 2);
    assert_eq!(
        row_count(&dir.db(), "timers"),
        0,
        "the stale commit's timer"
    );
    assert_eq!(s.get_instance(&id).unwrap().unwrap().event_count, 2);
}

#[test]
fn two_commits_racing_for_one_instance_append_once() {
    let dir = TempDir::new("pg-race");
    let s = Arc::new(store_with_module(&dir.db()));
    for round in 0..20 {
        let id = format!("r{round}");
        create(&s, &id);
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<Result<(), StoreError>> = (0..2)
            .map(|_| {
                let (s, b, id) = (s.clone(), barrier.clone(), id.clone());
                std::thread::spawn(move || {
                    b.wait();
                    s.commit_activation(activation(&id, 2, vec![]))
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{id}: {results:?}");
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(StoreError::Conflict(_)))));
        assert_eq!(s.load_history(&InstanceId(id)).unwrap().len(), 2);
    }
}

#[test]
fn lifecycle_event_ids_are_dense_and_in_commit_order_under_concurrent_writers() {
    let dir = TempDir::new("pg-outbox");
    let s = Arc::new(store_with_module(&dir.db()));
    let (threads, each) = (6, 25);
    // A reader polling while the writers run must never see an id after a gap.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let batch = s
                    .lifecycle_events(&EventFilter {
                        after: seen,
                        limit: 1000,
                        ..EventFilter::default()
                    })
                    .unwrap();
                for e in batch {
                    assert_eq!(e.id, seen + 1, "a reader saw an id after a gap");
                    seen = e.id;
                }
            }
            seen
        })
    };
    let writers: Vec<_> = (0..threads)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..each {
                    let id = format!("o{t}-{i}");
                    create(&s, &id);
                    s.terminate(&InstanceId(id), "done", 30).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.join().unwrap();
    let all = s
        .lifecycle_events(&EventFilter {
            limit: 10_000,
            ..EventFilter::default()
        })
        .unwrap();
    let n = (threads * each * 2) as u64;
    assert_eq!(s.last_event_id().unwrap(), n);
    let ids: Vec<u64> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=n).collect::<Vec<_>>());
    // Each instance's own events in the order they happened.
    for t in 0..threads {
        for i in 0..each {
            let id = format!("o{t}-{i}");
            assert_eq!(transitions_of(&all, &id), ["started", "terminated"], "{id}");
        }
    }
}

fn transitions_of(all: &[pinion_runtime::store::LifecycleEvent], id: &str) -> Vec<&'static str> {
    all.iter()
        .filter(|e| e.instance_id.0 == id)
        .map(|e| e.transition.name())
        .collect()
}

#[test]
fn a_due_timer_fires_once_when_two_callers_fire_at_once() {
    let dir = TempDir::new("pg-timers");
    let s = Arc::new(store_with_module(&dir.db()));
    let instances = 30;
    for i in 0..instances {
        let id = format!("t{i}");
        create(&s, &id);
        s.commit_activation(activation(
            &id,
            2,
            vec![NewTimer {
                seq: 1,
                fire_at_ms: 100,
            }],
        ))
        .unwrap();
    }
    let barrier = Arc::new(Barrier::new(3));
    let fired: u64 = (0..3)
        .map(|_| {
            let (s, b) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                s.fire_due_timers(100).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(fired, instances);
    for i in 0..instances {
        let inbox = s.load_inbox(&InstanceId(format!("t{i}"))).unwrap();
        assert_eq!(inbox.len(), 1, "t{i}: {inbox:?}");
        assert_eq!(inbox[0].kind, EventKind::TimerFired { seq: 1 });
    }
    assert_eq!(s.next_due_ms().unwrap(), None);
}

#[test]
fn concurrent_claims_never_lease_one_attempt_twice() {
    let dir = TempDir::new("pg-claims");
    let s = Arc::new(store_with_module(&dir.db()));
    let tasks = 40u32;
    create(&s, "c1");
    let mut commit = activation("c1", 2, vec![]);
    commit.new_activities = (1..=tasks)
        .map(|seq| NewActivityTask {
            seq,
            activity_type: "a".into(),
            input: Payload::from_json_bytes(b"{}").unwrap(),
            options: Default::default(),
            lease_until_ms: None,
        })
        .collect();
    s.commit_activation(commit).unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let claimed: Vec<u32> = (0..4)
        .map(|_| {
            let (s, b) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                let mut mine = Vec::new();
                loop {
                    let got = s.claim_activities(50, 3, 1000, 60_000).unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|t| t.seq));
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let distinct: HashSet<u32> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), tasks as usize, "leased twice: {claimed:?}");
    assert_eq!(distinct.len(), tasks as usize);
    // Every one is now leased by no member: a live worker would count them lost.
    assert_eq!(s.lost_activities().unwrap().len(), tasks as usize);
}

#[test]
fn a_read_only_store_refuses_writes_and_a_foreign_database_is_not_taken_over() {
    let dir = TempDir::new("pg-open");
    drop(store_with_module(&dir.db()));
    let url = dir.db().to_str().unwrap().to_owned();
    let ro = PgStore::open(
        &url,
        PgOptions {
            read_only: true,
            ..PgOptions::default()
        },
    )
    .unwrap();
    assert_eq!(ro.list_modules().unwrap().len(), 1);
    let err = ro
        .create_instance(NewInstance {
            id: InstanceId("x".into()),
            now_ms: 1,
            started: started(),
        })
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    drop(ro);
    // A database with tables of its own and no pinion schema is refused, untouched.
    let other = TempDir::new("pg-foreign");
    let other_url = other.db().to_str().unwrap().to_owned();
    postgres::Client::connect(&other_url, postgres::NoTls)
        .unwrap()
        .batch_execute("CREATE TABLE customers (id INT)")
        .unwrap();
    let err = PgStore::open(&other_url, PgOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not a pinion database"), "{err}");
    assert_eq!(row_count(&other.db(), "customers"), 0);
}

fn count(db: &Path, sql: &str) -> i64 {
    postgres::Client::connect(db.to_str().unwrap(), postgres::NoTls)
        .unwrap()
        .query_one(sql, &[])
        .unwrap()
        .get(0)
}

#[test]
fn a_server_on_postgres_killed_with_sigkill_mid_workflow_finishes_everything_after_restart() {
    let dir = TempDir::new("pg-kill");
    let db = dir.db();
    let p = open(&db);
    let kit = p.deploy(&wasm_bytes("testkit")).unwrap().hash.0;
    const N: usize = 8;
    // Long enough that no workflow can finish between the tenth result and the kill,
    // however fast the steps go (ten steps each once did, once steps got faster).
    const STEPS: u64 = 300;
    for i in 0..N {
        p.start(&start_req(
            "Steps",
            &kit,
            &format!(r#"{{"n": {STEPS}}}"#),
            &format!("s{i}"),
        ))
        .unwrap();
    }
    let completed = "SELECT count(*) FROM instances WHERE status = 'completed'";
    let server = Server::start(&db, 4);
    wait_until("some activity results", Duration::from_secs(60), || {
        count(
            &db,
            "SELECT count(*) FROM events WHERE data LIKE '%\"ActivityCompleted\"%'",
        ) >= 10
    });
    drop(server);
    assert!(
        count(&db, completed) < N as i64,
        "the kill came too late to test anything"
    );
    let _server = Server::start(&db, 4);
    wait_until(
        "every instance to complete after the restart",
        Duration::from_secs(120),
        || count(&db, completed) == N as i64,
    );
    for i in 0..N {
        let id = format!("s{i}");
        let rec = p.status(&id).unwrap();
        assert_eq!(rec.status, InstanceStatus::Completed);
        let history = p.history(&id).unwrap();
        for (k, e) in history.iter().enumerate() {
            assert_eq!(e.id, k as u64 + 1, "{id}: dense ids");
        }
        let scheduled = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ActivityScheduled { .. }))
            .count();
        let resolved = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ActivityCompleted { .. }))
            .count();
        assert_eq!(
            (scheduled, resolved),
            (STEPS as usize, STEPS as usize),
            "{id}"
        );
    }
}

/// The runtime upgrade check reads PostgreSQL too: a server on a database whose running
/// instances pin a module this pinion cannot run (here: its code now claims ABI 99) exits
/// 9 naming it, before it changes anything.
#[test]
fn the_server_refuses_a_postgres_database_pinning_modules_it_cannot_run() {
    let dir = TempDir::new("pg-upgrade-check");
    let db = dir.db();
    let p = open(&db);
    let hash = p.deploy(&wasm_bytes("hello-v1")).unwrap().hash.0;
    for id in ["pinned-1", "pinned-2"] {
        p.start(&start_req("Hello", &hash, "null", id)).unwrap();
    }
    drop(p);
    let future = wat::parse_str(
        r#"(module (memory (export "memory") 1)
          (func (export "pinion_abi_version") (result i32) i32.const 99)
          (func (export "pinion_manifest") (result i64) i64.const 0)
          (func (export "pinion_alloc") (param i32) (result i32) i32.const 0)
          (func (export "pinion_free") (param i32 i32))
          (func (export "pinion_activate") (param i32 i32) (result i64) unreachable)
          (func (export "pinion_run_activity") (param i32 i32) (result i64) unreachable)
          (func (export "pinion_query") (param i32 i32) (result i64) unreachable))"#,
    )
    .unwrap();
    let mut c = postgres::Client::connect(db.to_str().unwrap(), postgres::NoTls).unwrap();
    c.execute(
        "UPDATE module_code SET bytes = $1 WHERE hash = $2",
        &[&future, &hash],
    )
    .unwrap();
    let events_before = count(&db, "SELECT count(*) FROM events");
    let out = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(&db)
        .args(["server", "--listen", "127.0.0.1:0", "--no-auth"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{stderr}");
    assert!(stderr.contains(&hash), "{stderr}");
    assert!(stderr.contains("2 instance(s)"), "{stderr}");
    assert!(stderr.contains("its ABI version is 99"), "{stderr}");
    assert_eq!(count(&db, "SELECT count(*) FROM events"), events_before);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM instances WHERE status = 'running'"
        ),
        2
    );
}

/// An ordinary step commits in one statement (`pinion_commit_step`, migration 4) with the
/// same rules as the statement-by-statement path: a step that breaks one is refused whole.
#[test]
fn a_refused_step_writes_nothing_and_a_good_one_writes_everything() {
    let dir = TempDir::new("pg-step");
    let db = dir.db();
    let s = store_with_module(&db);
    create(&s, "st");
    let mut first = activation(
        "st",
        2,
        vec![NewTimer {
            seq: 1,
            fire_at_ms: 500,
        }],
    );
    first.new_activities = vec![NewActivityTask {
        seq: 1,
        activity_type: "a".into(),
        input: Payload::from_json_bytes(b"1").unwrap(),
        options: Default::default(),
        lease_until_ms: Some(1_000),
    }];
    s.commit_activation(first).unwrap();
    // Events, timers and activity tasks of the instance.
    let rows = || {
        let n = |what: &str| {
            count(
                &db,
                &format!("SELECT count(*) FROM {what} WHERE instance_id = 'st'"),
            )
        };
        (n("events"), n("timers"), n("activity_tasks"))
    };
    assert_eq!(rows(), (2, 1, 1));
    // The next step: resolves attempt `attempt` of activity 1, cancels timer 1, arms 2.
    let next = |attempt: u32| {
        let mut a = activation(
            "st",
            3,
            vec![NewTimer {
                seq: 2,
                fire_at_ms: 900,
            }],
        );
        a.resolved_activities = vec![(1, attempt)];
        a.cancelled_timers = vec![1];
        a
    };
    // Resolving an attempt that is not the current one (2, where 1 runs): refused, and the
    // step's event, its new timer and its cancellation of the first are not written.
    match s.commit_activation(next(2)) {
        Err(StoreError::Conflict(why)) => assert!(why.contains("no longer current"), "{why}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(rows(), (2, 1, 1));
    // The same step with the right attempt writes all of it.
    s.commit_activation(next(1)).unwrap();
    assert_eq!(rows(), (3, 1, 0));
    assert_eq!(
        count(&db, "SELECT event_count FROM instances WHERE id = 'st'"),
        3
    );
    // A step of an instance that does not exist is not found.
    assert!(matches!(
        s.commit_activation(activation("nobody", 2, vec![])),
        Err(StoreError::NotFound(_))
    ));
}
