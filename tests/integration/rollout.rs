//! Safe rollout: aliases, ramping, rollback, drain status, garbage collection, verified
//! upgrades and the non-determinism policy, on real modules. Timers run on a manual clock so
//! instances stay mid-flight exactly as long as a test needs.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use pinion_runtime::clock::ManualClock;
use pinion_runtime::rollout::{ramp_bucket, ModuleState, UpgradeSelector};
use pinion_runtime::store::NondeterminismPolicy;
use pinion_runtime::{EventKind, InstanceStatus, Pinion, StartRequest};
use serde_json::{json, Value};

use super::common::*;

const WAIT: Duration = Duration::from_secs(60);

fn engine(dir: &crate::common::TempDir) -> (Pinion, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    (open_with_clock(&dir.db(), Arc::new(clock.clone())), clock)
}

fn deploy(p: &Pinion, guest: &str) -> String {
    p.deploy(&wasm_bytes(guest)).unwrap().hash.0
}

fn by_alias(ty: &str, alias: &str, id: &str, input: &str) -> StartRequest {
    StartRequest {
        alias: Some(alias.into()),
        workflow_type: ty.into(),
        module: String::new(),
        input_json: input.into(),
        id: Some(id.into()),
    }
}

fn pinned(p: &Pinion, id: &str) -> String {
    p.status(id).unwrap().module_hash.0
}

fn has_event(p: &Pinion, id: &str, f: impl Fn(&EventKind) -> bool) -> bool {
    p.history(id).unwrap().iter().any(|e| f(&e.kind))
}

fn timer_started(k: &EventKind) -> bool {
    matches!(k, EventKind::TimerStarted { .. })
}

#[test]
fn start_by_alias_pins_the_module_the_alias_points_at_that_moment() {
    let dir = TempDir::new("alias");
    let (p, _) = engine(&dir);
    let (v1, v2) = (deploy(&p, "hello-v1"), deploy(&p, "hello-v2"));
    p.set_alias("hello", &v1[..10]).unwrap();
    p.start(&by_alias("Hello", "hello", "a", "{}")).unwrap();
    p.set_alias("hello", &v2).unwrap();
    p.start(&by_alias("Hello", "hello", "b", "{}")).unwrap();
    assert_eq!(pinned(&p, "a"), v1);
    assert_eq!(pinned(&p, "b"), v2);
    let history = p.store().alias_history("hello").unwrap();
    let moves: Vec<_> = history
        .iter()
        .map(|c| (c.action.as_str(), c.module_hash.clone().unwrap().0))
        .collect();
    assert_eq!(moves, vec![("set", v1.clone()), ("set", v2.clone())]);
    assert!(matches!(
        p.start(&by_alias("Hello", "nope", "c", "{}")),
        Err(pinion_runtime::Error::UnknownAlias(_))
    ));
}

#[test]
fn ramping_splits_new_instances_by_id_deterministically_and_set_completes_it() {
    let dir = TempDir::new("ramp");
    let (p, _) = engine(&dir);
    let (v1, v2) = (deploy(&p, "foobar-v1"), deploy(&p, "foobar-v2"));
    p.set_alias("fb", &v1).unwrap();
    p.ramp_alias("fb", &v2, 30).unwrap();
    let alias = p.store().get_alias("fb").unwrap().unwrap();
    let mut on_v2 = 0;
    for i in 0..200 {
        let id = format!("order-{i}");
        p.start(&by_alias("FooBar", "fb", &id, "null")).unwrap();
        let expected = if ramp_bucket(&id) < 30 { &v2 } else { &v1 };
        assert_eq!(&pinned(&p, &id), expected, "{id}");
        // The same id always gets the same answer: a retried start lands on the same module.
        assert_eq!(alias.module_for(&id).0, *expected);
        on_v2 += (pinned(&p, &id) == v2) as usize;
    }
    assert!(
        (40..=80).contains(&on_v2),
        "about 30% of 200 on the ramp, got {on_v2}"
    );
    let ramping = p
        .module_statuses()
        .unwrap()
        .into_iter()
        .find(|m| m.module.hash.0 == v2)
        .unwrap();
    assert_eq!(ramping.status, ModuleState::Ramping);
    assert_eq!(ramping.ramping, vec![("fb".to_string(), 30)]);
    // Cancel: everything back to v1. Set: the rollout completes on v2.
    p.cancel_ramp("fb").unwrap();
    p.start(&by_alias("FooBar", "fb", "after-cancel", "null"))
        .unwrap();
    assert_eq!(pinned(&p, "after-cancel"), v1);
    p.ramp_alias("fb", &v2, 100).unwrap();
    p.set_alias("fb", &v2).unwrap();
    assert_eq!(p.store().get_alias("fb").unwrap().unwrap().ramp, None);
    p.start(&by_alias("FooBar", "fb", "after-set", "null"))
        .unwrap();
    assert_eq!(pinned(&p, "after-set"), v2);
}

#[test]
fn rolling_back_an_alias_never_moves_running_instances_onto_old_code() {
    // Seed 003's failure: a new-version execution rescheduled onto an old worker. Here the
    // "new" module is hello-v1 (it waits on a timer); the "old" one is hello-v2.
    let dir = TempDir::new("rollback");
    let (p, clock) = engine(&dir);
    let (old, new) = (deploy(&p, "hello-v2"), deploy(&p, "hello-v1"));
    p.set_alias("prod", &old).unwrap();
    p.set_alias("prod", &new).unwrap();
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&by_alias(
        "Hello",
        "prod",
        "on-new",
        r#"{"wait_ms": 60000}"#,
    ))
    .unwrap();
    w.wake();
    wait_until("on-new to wait on its timer", WAIT, || {
        has_event(&p, "on-new", timer_started)
    });
    p.set_alias("prod", &old).unwrap(); // rollback
    p.start(&by_alias("Hello", "prod", "after-rollback", "{}"))
        .unwrap();
    w.wake();
    assert_eq!(
        p.wait("after-rollback", WAIT).unwrap().status,
        InstanceStatus::Completed
    );
    clock.advance(Duration::from_secs(61));
    let rec = p.wait("on-new", WAIT).unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
    assert_eq!(
        rec.module_hash.0, new,
        "still pinned to the module it started on"
    );
    assert!(has_event(
        &p,
        "on-new",
        |k| matches!(k, EventKind::ActivityCompleted { result, .. } if result.json() == r#""Approved""#)
    ));
    assert_eq!(pinned(&p, "after-rollback"), old);
}

#[test]
fn modules_report_aliases_counts_and_drain_state_and_gc_collects_only_drained_modules() {
    let dir = TempDir::new("drain");
    let (p, clock) = engine(&dir);
    let current = deploy(&p, "hello-v2");
    let draining = deploy(&p, "hello-v1");
    let drained = deploy(&p, "foobar-v1");
    p.set_alias("prod", &current).unwrap();
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req(
        "Hello",
        &draining,
        r#"{"wait_ms": 60000}"#,
        "waiting",
    ))
    .unwrap();
    p.start(&start_req("FooBar", &drained, "null", "done"))
        .unwrap();
    w.wake();
    assert_eq!(
        p.wait("done", WAIT).unwrap().status,
        InstanceStatus::Completed
    );
    wait_until("the waiting instance's timer", WAIT, || {
        has_event(&p, "waiting", timer_started)
    });
    let state = |h: &str| {
        p.module_statuses()
            .unwrap()
            .into_iter()
            .find(|m| m.module.hash.0 == h)
            .unwrap()
    };
    assert_eq!(state(&current).status, ModuleState::Current);
    assert_eq!(state(&current).aliases, vec!["prod".to_string()]);
    assert_eq!(
        (state(&draining).status, state(&draining).instances.running),
        (ModuleState::Draining, 1)
    );
    assert_eq!(
        (state(&drained).status, state(&drained).instances.completed),
        (ModuleState::Drained, 1)
    );
    assert_eq!(state(&drained).module.version_label.as_deref(), Some("v1"));
    // Instances record the label of the module they started on.
    match &p.history("done").unwrap()[0].kind {
        EventKind::WorkflowStarted { version_label, .. } => {
            assert_eq!(version_label.as_deref(), Some("v1"))
        }
        other => panic!("{other:?}"),
    }

    let dry = p.gc(true, None).unwrap();
    assert_eq!(
        dry.iter().map(|h| h.0.clone()).collect::<Vec<_>>(),
        vec![drained.clone()]
    );
    assert_eq!(p.modules().unwrap().len(), 3, "a dry run deletes nothing");
    let kept = dir.path().join("collected");
    let gone = p.gc(false, Some(&kept)).unwrap();
    assert_eq!(gone.len(), 1);
    assert!(p.registry().resolve(&drained).is_err());
    assert!(
        p.registry().resolve(&draining).is_ok(),
        "a module pinned by a running instance is never collected"
    );
    assert!(
        p.registry().resolve(&current).is_ok(),
        "an aliased module is never collected"
    );
    // The collected module's completed history still replays, from the exported file.
    let replayer = pinion_runtime::replay::Replayer::from_file(
        &kept.join(format!("{drained}.wasm")),
        Default::default(),
    )
    .unwrap();
    let history = p
        .store()
        .export_history(&pinion_runtime::InstanceId("done".into()))
        .unwrap()
        .unwrap();
    assert!(replayer.replay(&history).is_compatible());
    // Once the last instance finishes, the old module drains too.
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        p.wait("waiting", WAIT).unwrap().status,
        InstanceStatus::Completed
    );
    assert_eq!(state(&draining).status, ModuleState::Drained);
}

#[test]
fn upgrade_moves_only_compatible_instances_and_records_it_in_history() {
    let dir = TempDir::new("upgrade");
    let (p, clock) = engine(&dir);
    let (v1, v2) = (deploy(&p, "replay-v1"), deploy(&p, "replay-v2"));
    let w = p.start_worker(quiet_worker()).unwrap();
    // Both wait on a timer that only the manual clock can fire.
    p.start(&start_req("Unchanged", &v1, "null", "fits"))
        .unwrap();
    p.start(&start_req("TimerToActivity", &v1, "null", "breaks"))
        .unwrap();
    w.wake();
    wait_until("both timers", WAIT, || {
        has_event(&p, "fits", timer_started) && has_event(&p, "breaks", timer_started)
    });

    let dry = p
        .upgrade(
            &v2,
            &UpgradeSelector::From(pinion_runtime::ModuleHash(v1.clone())),
            true,
            &pinion_runtime::Progress::new(),
        )
        .unwrap();
    assert_eq!(dry.len(), 2);
    assert!(dry.iter().all(|r| !r.upgraded));
    assert_eq!(pinned(&p, "fits"), v1, "a dry run moves nothing");

    let results = p
        .upgrade(
            &v2[..12],
            &UpgradeSelector::From(pinion_runtime::ModuleHash(v1.clone())),
            false,
            &pinion_runtime::Progress::new(),
        )
        .unwrap();
    let fits = results.iter().find(|r| r.instance_id == "fits").unwrap();
    let breaks = results.iter().find(|r| r.instance_id == "breaks").unwrap();
    assert!(fits.upgraded && fits.replay.is_compatible());
    assert!(!breaks.upgraded);
    assert!(breaks.replay.to_string().contains(r#"history has TimerStarted{seq: 1, duration_ms: 10}, code produced ActivityScheduled{type: "Wait", seq: 1}"#));
    assert_eq!(pinned(&p, "fits"), v2);
    assert_eq!(pinned(&p, "breaks"), v1);
    assert!(has_event(
        &p,
        "fits",
        |k| matches!(k, EventKind::ModuleUpgraded { from, to } if from.0 == v1 && to.0 == v2)
    ));
    clock.advance(Duration::from_secs(1));
    w.wake();
    assert_eq!(
        p.wait("fits", WAIT).unwrap().status,
        InstanceStatus::Completed
    );
    assert_eq!(
        p.wait("breaks", WAIT).unwrap().status,
        InstanceStatus::Completed
    );
    // The upgraded history replays compatibly against its new module.
    let h = p
        .store()
        .export_history(&pinion_runtime::InstanceId("fits".into()))
        .unwrap()
        .unwrap();
    let r =
        pinion_runtime::replay::Replayer::from_bytes(&wasm_bytes("replay-v2"), Default::default())
            .unwrap()
            .replay(&h);
    assert!(r.is_compatible(), "{r}");
}

/// Points an instance at another module behind the engine's back, so its next rebuild
/// diverges: the situation `upgrade` and the policy exist for.
fn tamper(db: &Path, id: &str, module: &str) {
    execute_sql(
        db,
        &format!("UPDATE instances SET module_hash = '{module}' WHERE id = '{id}'"),
    );
}

/// Runs a hello-v1 instance `h` to its timer, points it at hello-v2 behind the engine's
/// back, fires the timer and starts a worker: the rebuild then diverges.
fn diverging_instance(
    dir: &crate::common::TempDir,
    p: &Pinion,
    clock: &ManualClock,
    v1: &str,
    v2: &str,
) -> pinion_runtime::WorkerGuard {
    {
        let w = p.start_worker(quiet_worker()).unwrap();
        p.start(&start_req("Hello", v1, r#"{"wait_ms": 60000}"#, "h"))
            .unwrap();
        w.wake();
        wait_until("the timer", WAIT, || has_event(p, "h", timer_started));
    }
    tamper(&dir.db(), "h", v2);
    clock.advance(Duration::from_secs(61));
    let w = p.start_worker(quiet_worker()).unwrap();
    w.wake();
    w
}

#[test]
fn a_blocked_instance_is_repaired_by_upgrading_it_to_a_compatible_module() {
    let dir = TempDir::new("repair");
    let (p, clock) = engine(&dir);
    let (v1, v2) = (deploy(&p, "hello-v1"), deploy(&p, "hello-v2"));
    let w = diverging_instance(&dir, &p, &clock, &v1, &v2);
    assert_eq!(p.wait("h", WAIT).unwrap().status, InstanceStatus::Blocked);
    let results = p
        .upgrade(
            &v1,
            &UpgradeSelector::Id("h".into()),
            false,
            &pinion_runtime::Progress::new(),
        )
        .unwrap();
    assert!(results[0].upgraded, "{}", results[0].replay);
    w.wake();
    let rec = p.wait("h", WAIT).unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
    assert_eq!(rec.result.unwrap().to_value(), json!("Success"));
    assert_eq!(
        transitions(&p, "h"),
        ["started", "blocked", "upgraded", "completed"]
    );
}

#[test]
fn the_fail_policy_fails_a_diverging_instance_instead_of_blocking_it() {
    let dir = TempDir::new("policy");
    let (p, clock) = engine(&dir);
    let (v1, v2) = (deploy(&p, "hello-v1"), deploy(&p, "hello-v2"));
    p.store()
        .set_policy(
            &pinion_runtime::ModuleHash(v2.clone()),
            "Hello",
            NondeterminismPolicy::Fail,
        )
        .unwrap();
    let _w = diverging_instance(&dir, &p, &clock, &v1, &v2);
    let rec = p.wait("h", WAIT).unwrap();
    assert_eq!(rec.status, InstanceStatus::Failed);
    let f = rec.failure.unwrap();
    assert_eq!(f.kind, "Nondeterminism");
    assert!(f.message.contains("[PN001]"), "{}", f.message);
    assert_eq!(transitions(&p, "h"), ["started", "failed"]);
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn deploy_with_alias_and_verify_moves_the_alias_only_when_running_instances_replay() {
    let dir = TempDir::new("cli-alias");
    let db = dir.db();
    let o = pinion(
        &db,
        &[
            "deploy",
            wasm("hello-v1").to_str().unwrap(),
            "--alias",
            "prod",
        ],
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = pinion(
        &db,
        &[
            "start",
            "Hello",
            "--alias",
            "prod",
            "--input",
            r#"{"wait_ms": 3600000}"#,
            "--id",
            "w",
        ],
    );
    assert!(o.status.success(), "{}", out(&o));
    // Record the instance's timer with a short-lived server.
    let mut server = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(&db)
        .args(["server", "--listen", "127.0.0.1:0", "--no-auth"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the timer", WAIT, || {
        out(&pinion(&db, &["history", "w"])).contains("TimerStarted")
    });
    server.kill().unwrap();
    server.wait().unwrap();
    let before: Value = serde_json::from_str(&String::from_utf8_lossy(
        &pinion(&db, &["alias", "list", "--json"]).stdout,
    ))
    .unwrap();
    let o = pinion(
        &db,
        &[
            "deploy",
            wasm("hello-v2").to_str().unwrap(),
            "--alias",
            "prod",
            "--verify",
        ],
    );
    assert_eq!(o.status.code(), Some(8), "{}", out(&o));
    let after: Value = serde_json::from_str(&String::from_utf8_lossy(
        &pinion(&db, &["alias", "list", "--json"]).stdout,
    ))
    .unwrap();
    assert_eq!(before, after, "the alias did not move");
    // Without a conflicting running instance, deploy --alias --verify moves it.
    let o = pinion(
        &db,
        &[
            "deploy",
            wasm("hello-v1").to_str().unwrap(),
            "--alias",
            "canary",
            "--verify",
        ],
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = pinion(
        &db,
        &["alias", "ramp", "prod", "canary-does-not-exist", "10"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    // The non-determinism policy is set at deploy, per workflow type.
    let o = pinion(
        &db,
        &[
            "deploy",
            wasm("foobar-v2").to_str().unwrap(),
            "--on-nondeterminism",
            "FooBar=fail",
        ],
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = pinion(
        &db,
        &[
            "deploy",
            wasm("foobar-v1").to_str().unwrap(),
            "--on-nondeterminism",
            "sometimes",
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}", out(&o));
    let modules: Value = serde_json::from_str(&String::from_utf8_lossy(
        &pinion(&db, &["modules", "--json"]).stdout,
    ))
    .unwrap();
    assert!(
        !modules
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["workflows"][0] == "FooBar" && m["version_label"] == "v1"),
        "a rejected deploy stores nothing"
    );
    {
        let p = open(&db);
        let fb2 = p.deploy(&wasm_bytes("foobar-v2")).unwrap().hash;
        assert_eq!(
            p.store().policy(&fb2, "FooBar").unwrap(),
            NondeterminismPolicy::Fail
        );
        let hello = p.resolve_module("prod").unwrap().hash;
        assert_eq!(
            p.store().policy(&hello, "Hello").unwrap(),
            NondeterminismPolicy::Block,
            "block is the default"
        );
    }
    let modules = out(&pinion(&db, &["modules"]));
    assert!(
        modules.contains("current") && modules.contains("prod"),
        "{modules}"
    );
    let history = out(&pinion(&db, &["alias", "history", "prod"]));
    assert!(history.contains("set"), "{history}");
}

/// Two overlapping `pinion upgrade --from v1` runs: the second chose the instance while it
/// was on v1 and replays the history after the first moved it. Its commit must see that
/// the instance no longer pins v1 and record nothing, so the instance has one
/// `ModuleUpgraded` event and one `upgraded` lifecycle event.
#[test]
fn an_overlapping_second_upgrade_of_an_instance_records_nothing() {
    use pinion_runtime::{InstanceId, ModuleHash};
    let dir = TempDir::new("upgrade-twice");
    let (p, _clock) = engine(&dir);
    let (v1, v2) = (deploy(&p, "replay-v1"), deploy(&p, "replay-v2"));
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Unchanged", &v1, "null", "once"))
        .unwrap();
    w.wake();
    wait_until("the timer", WAIT, || has_event(&p, "once", timer_started));
    let id = InstanceId("once".into());
    let events = p.history("once").unwrap().len() as u64;
    let (from, to) = (ModuleHash(v1.clone()), ModuleHash(v2.clone()));
    // The first run commits.
    p.store()
        .upgrade_instance(&id, events, &from, &to, p.now_ms())
        .unwrap();
    // The second selected the instance on v1 and read its history after that commit.
    let err = p
        .store()
        .upgrade_instance(&id, events + 1, &from, &to, p.now_ms())
        .unwrap_err();
    assert!(err.to_string().contains("is no longer on module"), "{err}");
    let upgrades = p
        .history("once")
        .unwrap()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ModuleUpgraded { .. }))
        .count();
    assert_eq!(upgrades, 1);
    assert_eq!(
        transitions(&p, "once")
            .iter()
            .filter(|t| **t == "upgraded")
            .count(),
        1
    );
    assert_eq!(pinned(&p, "once"), v2);
}

/// `alias set --upgrade-compatible`: with v1's instances waiting on timers, moving the
/// alias to v2 moves exactly the instance whose history replays on v2 and leaves the
/// diverging one pinned with its divergence; `--dry-run` first shows the same split and
/// changes nothing. Through the CLI on the database file.
#[test]
fn an_alias_move_with_upgrade_compatible_moves_exactly_the_compatible_instances() {
    let dir = TempDir::new("alias-upgrade");
    let (v1, v2) = {
        let (p, _clock) = engine(&dir);
        let (v1, v2) = (deploy(&p, "replay-v1"), deploy(&p, "replay-v2"));
        p.set_alias("app", &v1).unwrap();
        let w = p.start_worker(quiet_worker()).unwrap();
        for (ty, id) in [("Unchanged", "fits"), ("TimerToActivity", "breaks")] {
            p.start(&StartRequest {
                alias: Some("app".into()),
                ..start_req(ty, "", "null", id)
            })
            .unwrap();
        }
        // A v1 instance that ended already is not considered.
        p.start(&start_req("Unchanged", &v1, "null", "ended"))
            .unwrap();
        p.terminate("ended", "done").unwrap();
        w.wake();
        wait_until("both timers", WAIT, || {
            has_event(&p, "fits", timer_started) && has_event(&p, "breaks", timer_started)
        });
        w.shutdown();
        (v1, v2)
    };
    let db = dir.db();

    let out = pinion(
        &db,
        &[
            "--json",
            "alias",
            "set",
            "app",
            &v2,
            "--upgrade-compatible",
            "--dry-run",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dry: Value = serde_json::from_slice(&out.stdout).unwrap();
    let u = &dry["upgrade"];
    assert_eq!(u["dry_run"], true, "{dry}");
    assert_eq!(u["from"], json!([v1]), "{dry}");
    assert_eq!(
        (u["moved"].as_u64(), u["stayed"].as_u64()),
        (Some(1), Some(1)),
        "{dry}"
    );
    let p = open(&db);
    assert_eq!(pinned(&p, "fits"), v1, "a dry run moves no instance");
    assert_eq!(
        p.store().get_alias("app").unwrap().unwrap().module_hash.0,
        v1,
        "nor the alias"
    );
    drop(p);

    let out = pinion(&db, &["alias", "set", "app", &v2, "--upgrade-compatible"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stdout.contains("upgraded     fits from"), "{stdout}");
    assert!(
        stdout.contains("stays        breaks:")
            && stdout.contains("history has TimerStarted{seq: 1, duration_ms: 10}"),
        "{stdout}"
    );
    assert!(stderr.contains("1 instance(s) of"), "{stderr}");
    assert!(
        stderr.contains("moved to") && stderr.contains("1 stayed pinned"),
        "{stderr}"
    );
    let p = open(&db);
    assert_eq!(
        p.store().get_alias("app").unwrap().unwrap().module_hash.0,
        v2
    );
    assert_eq!(pinned(&p, "fits"), v2);
    assert_eq!(pinned(&p, "breaks"), v1);
    assert_eq!(pinned(&p, "ended"), v1);
    assert!(has_event(
        &p,
        "fits",
        |k| matches!(k, EventKind::ModuleUpgraded { from, to } if from.0 == v1 && to.0 == v2)
    ));
    assert!(!has_event(&p, "breaks", |k| matches!(
        k,
        EventKind::ModuleUpgraded { .. }
    )));
}
