//! The determinism sandbox and the determinism checks, on real modules.

use std::sync::Arc;
use std::time::Duration;

use pinion_abi::Command;
use pinion_runtime::clock::ManualClock;
use pinion_runtime::executor::{split_history, ExecError, WorkflowRun};
use pinion_runtime::{EventKind, HistoryEvent, InstanceId, InstanceStatus, ModuleHash, Pinion};
use serde_json::Value;

use super::common::*;

const WAIT: Duration = Duration::from_secs(60);

fn run_to_completion(p: &Pinion, ty: &str, hash: &str, input: &str, id: &str) -> Value {
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req(ty, hash, input, id)).unwrap();
    w.wake();
    let rec = p.wait(id, WAIT).unwrap();
    w.shutdown();
    assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
    rec.result.unwrap().to_value()
}

/// Replays a whole history against `hash` and returns the result the code produced.
fn replay_result(
    p: &Pinion,
    hash: &str,
    id: &str,
    history: &[HistoryEvent],
) -> Result<Value, ExecError> {
    let module = p.registry().load(&ModuleHash(hash.into())).unwrap();
    let instance = InstanceId(id.into());
    let (activations, _) = split_history(&instance, history).unwrap();
    // Rebuild checks every activation; then replay again one by one to see the result.
    WorkflowRun::rebuild(p.sandbox(), &module, &instance, history, Default::default())?;
    let (mut run, _) = WorkflowRun::rebuild(
        p.sandbox(),
        &module,
        &instance,
        &history[..1],
        Default::default(),
    )?;
    let mut result = Value::Null;
    for a in &activations {
        for c in run.replay_one(a)? {
            if let Command::CompleteWorkflow { result: bytes } = c {
                result = serde_json::from_slice(&bytes).unwrap();
            }
        }
    }
    Ok(result)
}

#[test]
fn system_time_and_os_random_in_workflow_code_replay_to_the_same_values() {
    let dir = TempDir::new("probe");
    let p = open(&dir.db());
    let hash = p.deploy(&wasm_bytes("determinism-probe")).unwrap().hash.0;
    let live = run_to_completion(&p, "Probe", &hash, "null", "probe");
    let history = p.history("probe").unwrap();

    // SystemTime::now() in the workflow is the activation's logical time from history.
    let nows: Vec<u64> = history
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::WorkflowTaskCompleted { now_ms } => Some(now_ms),
            _ => None,
        })
        .collect();
    assert_eq!(live["sys_before"].as_u64(), Some(nows[0]), "{live}");
    assert_eq!(live["ctx_now_before"].as_u64(), Some(nows[0]), "{live}");
    assert_eq!(live["sys_after"].as_u64(), Some(nows[1]), "{live}");

    // Replaying the history (fresh instance, no cache) reproduces every value exactly,
    // including the OS-seeded random numbers.
    let replayed = replay_result(&p, &hash, "probe", &history).unwrap();
    assert_eq!(replayed, live);

    // A second instance gets a different seed, hence different random values.
    let other = run_to_completion(&p, "Probe", &hash, "null", "probe-2");
    assert_ne!(other["os_random_before"], live["os_random_before"]);
    assert_ne!(other["ctx_random"], live["ctx_random"]);
}

#[test]
fn activities_see_the_real_clock_and_real_randomness() {
    let dir = TempDir::new("probe-activity");
    let clock = ManualClock::new(1_000_000); // the engine's clock is frozen in 1970...
    let p = open_with_clock(&dir.db(), Arc::new(clock));
    let hash = p.deploy(&wasm_bytes("determinism-probe")).unwrap().hash.0;
    let r = run_to_completion(&p, "ProbeActivity", &hash, "null", "pa");
    let (a, b) = (&r["first"], &r["second"]);
    // ...but activities read the machine's clock: after 2020-01-01.
    assert!(a["sys_now_ms"].as_u64().unwrap() > 1_577_836_800_000, "{r}");
    assert_ne!(a["os_random"], b["os_random"], "{r}");
}

#[test]
fn foobar_v2_replayed_on_a_v1_history_reports_the_inserted_activity_precisely() {
    // Seed 002: v2 inserts SendNotification between Foo and Bar.
    let dir = TempDir::new("foobar");
    let p = open(&dir.db());
    let v1 = p.deploy(&wasm_bytes("foobar-v1")).unwrap().hash.0;
    let v2 = p.deploy(&wasm_bytes("foobar-v2")).unwrap().hash.0;
    run_to_completion(&p, "FooBar", &v1, "null", "fb");
    let history = p.history("fb").unwrap();
    assert!(replay_result(&p, &v1, "fb", &history).is_ok());
    let err = replay_result(&p, &v2, "fb", &history).unwrap_err();
    let ExecError::Nondeterminism(n) = &err else {
        panic!("expected a divergence, got {err}")
    };
    let bar = history
        .iter()
        .find(|e| matches!(&e.kind, EventKind::ActivityScheduled { activity_type, .. } if activity_type == "Bar"))
        .unwrap();
    assert_eq!(n.event_index, bar.id);
    assert_eq!(n.recorded, r#"ActivityScheduled{type: "Bar", seq: 2}"#);
    assert_eq!(
        n.produced,
        r#"ActivityScheduled{type: "SendNotification", seq: 2}"#
    );
    assert_eq!(
        err.to_string(),
        format!(
            r#"[PN001] nondeterminism: instance fb, event #{}: history has ActivityScheduled{{type: "Bar", seq: 2}}, code produced ActivityScheduled{{type: "SendNotification", seq: 2}}"#,
            bar.id
        )
    );
}

#[test]
fn a_divergence_found_while_rebuilding_a_live_instance_blocks_it_with_the_report() {
    let dir = TempDir::new("block");
    let clock = ManualClock::new(1_700_000_000_000);
    let p = open_with_clock(&dir.db(), Arc::new(clock.clone()));
    let v1 = p.deploy(&wasm_bytes("hello-v1")).unwrap().hash.0;
    let v2 = p.deploy(&wasm_bytes("hello-v2")).unwrap().hash.0;
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Hello", &v1, r#"{"wait_ms": 60000}"#, "h"))
        .unwrap();
    w.wake();
    wait_until("the timer", WAIT, || p.history("h").unwrap().len() >= 3);
    w.shutdown();
    drop(p);
    // Simulate the code under the instance changing (what pinning prevents in normal
    // operation): point the instance at v2's bytes behind the engine's back.
    execute_sql(
        &dir.db(),
        &format!("UPDATE instances SET module_hash = '{v2}' WHERE id = 'h'"),
    );
    clock.advance(Duration::from_secs(61));
    let p = open_with_clock(&dir.db(), Arc::new(clock));
    let w = p.start_worker(quiet_worker()).unwrap();
    w.wake();
    let rec = p.wait("h", WAIT).unwrap();
    assert_eq!(rec.status, InstanceStatus::Blocked);
    let reason = rec.blocked_reason.unwrap();
    assert!(
        reason.starts_with(
            "[PN001] nondeterminism: instance h, event #3: history has TimerStarted{seq: 1"
        ),
        "{reason}"
    );
    assert!(
        reason.ends_with(r#"code produced ActivityScheduled{type: "hello", seq: 1}"#),
        "{reason}"
    );
    // Blocked means blocked: history did not grow, and the undelivered timer firing is kept
    // for when the instance is repaired.
    assert_eq!(
        p.history("h").unwrap().len(),
        3,
        "started, task completed, timer started"
    );
    let inbox = p.store().load_inbox(&InstanceId("h".into())).unwrap();
    assert_eq!(inbox.len(), 1);
    assert!(matches!(inbox[0].kind, EventKind::TimerFired { seq: 1 }));
}
