//! The engine through its library API: registry, pinning, execution, retries, timers,
//! limits, with real wasm modules and real SQLite files.

use std::sync::Arc;
use std::time::Duration;

use pinion_runtime::clock::{Clock, ManualClock};
use pinion_runtime::registry::RegistryError;
use pinion_runtime::store::InstanceFilter;
use pinion_runtime::{Error, EventKind, InstanceStatus, Pinion, PinionConfig};
use serde_json::{json, Value};

use super::common::*;

const WAIT: Duration = Duration::from_secs(60);

fn deploy(p: &Pinion, guest: &str) -> String {
    p.deploy(&wasm_bytes(guest)).expect("deploy").hash.0
}

fn result_of(p: &Pinion, id: &str) -> Value {
    let rec = p.wait(id, WAIT).expect("wait");
    assert_eq!(rec.status, InstanceStatus::Completed, "{id}: {rec:?}");
    rec.result
        .expect("completed instance has a result")
        .to_value()
}

fn kinds(p: &Pinion, id: &str) -> Vec<EventKind> {
    p.history(id).unwrap().into_iter().map(|e| e.kind).collect()
}

#[test]
fn deploying_the_same_bytes_twice_gives_one_module_keyed_by_sha256() {
    let dir = TempDir::new("deploy");
    let p = open(&dir.db());
    let bytes = wasm_bytes("hello-v1");
    let first = p.deploy(&bytes).unwrap();
    let second = p.deploy(&bytes).unwrap();
    assert_eq!(first.hash, second.hash);
    assert!(first.newly_stored && !second.newly_stored);
    let expected = std::process::Command::new("sha256sum")
        .arg(wasm("hello-v1"))
        .output()
        .unwrap();
    let expected = String::from_utf8(expected.stdout).unwrap();
    assert_eq!(first.hash.0, expected.split_whitespace().next().unwrap());
    assert_eq!(p.modules().unwrap().len(), 1);
    assert_eq!(first.manifest.workflows, vec!["Hello".to_string()]);
    assert_eq!(first.manifest.activities, vec!["hello".to_string()]);
}

#[test]
fn bytes_that_are_not_wasm_are_rejected_and_nothing_is_stored() {
    let dir = TempDir::new("notwasm");
    let p = open(&dir.db());
    let err = p.deploy(b"#!/bin/sh\necho not a module\n").unwrap_err();
    assert!(
        err.to_string().contains("not a valid WebAssembly module"),
        "{err}"
    );
    assert!(matches!(err, Error::Registry(RegistryError::Invalid(_))));
    assert!(p.modules().unwrap().is_empty());
}

#[test]
fn a_wasm_module_without_the_pinion_abi_is_rejected_and_nothing_is_stored() {
    let dir = TempDir::new("noabi");
    let p = open(&dir.db());
    // The smallest valid module: magic and version, no sections.
    let err = p.deploy(b"\0asm\x01\0\0\0").unwrap_err();
    assert!(
        err.to_string()
            .contains("does not implement the pinion ABI"),
        "{err}"
    );
    assert!(err.to_string().contains("`memory`"), "{err}");
    assert!(p.modules().unwrap().is_empty());
}

sqlite_only! {
    #[test]
    fn compiled_code_is_cached_on_disk_by_hash_and_engine_fingerprint() {
        let dir = TempDir::new("cache");
        let p = open(&dir.db());
        let hash = deploy(&p, "hello-v1");
        let cache = dir.path().join("pinion.db.cache");
        let files: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(
            files[0].starts_with(&format!("{hash}.")) && files[0].ends_with(".cwasm"),
            "{files:?}"
        );
        // A reopened engine loads the cached artifact instead of compiling.
        drop(p);
        let p = open(&dir.db());
        let loaded = p
            .registry()
            .load(&pinion_runtime::ModuleHash(hash))
            .unwrap();
        assert!(loaded.module().serialize().is_ok());
    }
}

#[test]
fn starting_an_unknown_workflow_type_names_the_types_the_module_has() {
    let dir = TempDir::new("unknowntype");
    let p = open(&dir.db());
    let hash = deploy(&p, "hello-v1");
    let err = p
        .start(&start_req("Goodbye", &hash, "{}", "x"))
        .unwrap_err();
    assert!(matches!(err, Error::UnknownWorkflowType { .. }));
    assert!(
        err.to_string().contains("Goodbye") && err.to_string().contains("Hello"),
        "{err}"
    );
    assert!(p.list(&InstanceFilter::default()).unwrap().is_empty());
}

#[test]
fn input_that_is_not_json_is_rejected_before_an_instance_exists() {
    let dir = TempDir::new("badjson");
    let p = open(&dir.db());
    let hash = deploy(&p, "testkit");
    let err = p
        .start(&start_req("Echo", &hash, "{not json", "x"))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert!(matches!(p.status("x"), Err(Error::UnknownInstance(_))));
}

#[test]
fn modules_are_found_by_unique_prefix_and_ambiguity_is_an_error() {
    let dir = TempDir::new("prefix");
    let p = open(&dir.db());
    let hash = deploy(&p, "hello-v1");
    assert_eq!(p.registry().resolve(&hash[..8]).unwrap().hash.0, hash);
    assert!(matches!(
        p.registry().resolve("ffffffffffff"),
        Err(RegistryError::UnknownModule(_))
    ));
}

#[test]
fn input_that_does_not_fit_the_workflow_type_fails_the_instance_with_the_reason() {
    let dir = TempDir::new("typed");
    let p = open(&dir.db());
    let hash = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req(
        "Typed",
        &hash,
        r#"{"count": "three", "name": "x"}"#,
        "bad",
    ))
    .unwrap();
    p.start(&start_req(
        "Typed",
        &hash,
        r#"{"count": 3, "name": "x"}"#,
        "good",
    ))
    .unwrap();
    w.wake();
    let bad = p.wait("bad", WAIT).unwrap();
    assert_eq!(bad.status, InstanceStatus::Failed);
    let f = bad.failure.unwrap();
    assert_eq!(f.kind, "InvalidInput");
    assert!(
        f.message.contains("count") || f.message.contains("invalid type"),
        "{}",
        f.message
    );
    assert_eq!(result_of(&p, "good"), json!("x:3"));
}

#[test]
fn an_unknown_instance_id_is_a_clear_error() {
    let dir = TempDir::new("unknowninstance");
    let p = open(&dir.db());
    let err = p.status("no-such-instance").unwrap_err();
    assert!(matches!(err, Error::UnknownInstance(_)));
    assert!(err.to_string().contains("no-such-instance"));
}

#[test]
fn a_v1_instance_waiting_when_v2_is_deployed_completes_on_v1_code_side_by_side() {
    // Seed 004: v2's `hello` answers "ThumbsUp"; an instance started on v1 must still get
    // v1's "Approved" and succeed, while v2 instances run in the same process.
    let dir = TempDir::new("hello");
    let p = open(&dir.db());
    let v1 = deploy(&p, "hello-v1");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Hello", &v1, r#"{"wait_ms": 400}"#, "old"))
        .unwrap();
    w.wake();
    wait_until("the v1 instance to start its timer", WAIT, || {
        kinds(&p, "old")
            .iter()
            .any(|k| matches!(k, EventKind::TimerStarted { .. }))
    });
    let v2 = deploy(&p, "hello-v2");
    assert_ne!(v1, v2);
    p.start(&start_req("Hello", &v2, "{}", "new")).unwrap();
    w.wake();
    assert_eq!(result_of(&p, "old"), json!("Success"));
    assert_eq!(result_of(&p, "new"), json!("Success"));
    let old = kinds(&p, "old");
    match &old[0] {
        EventKind::WorkflowStarted { module_hash, .. } => assert_eq!(module_hash.0, v1),
        other => panic!("{other:?}"),
    }
    assert!(old.iter().any(|k| matches!(k, EventKind::ActivityCompleted { result, .. } if result.json() == r#""Approved""#)));
    let new = kinds(&p, "new");
    assert!(new.iter().any(|k| matches!(k, EventKind::ActivityCompleted { result, .. } if result.json() == r#""ThumbsUp""#)));
    assert!(
        !new.iter()
            .any(|k| matches!(k, EventKind::TimerStarted { .. })),
        "v2 no longer waits"
    );
}

#[test]
fn three_activities_run_in_parallel_within_one_activation() {
    let dir = TempDir::new("parallel");
    let p = open(&dir.db());
    let hash = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Parallel", &hash, "null", "par"))
        .unwrap();
    w.wake();
    assert_eq!(result_of(&p, "par"), json!(12));
    let k = kinds(&p, "par");
    // WorkflowStarted, WorkflowTaskCompleted, then all three scheduled before any result.
    assert!(matches!(k[1], EventKind::WorkflowTaskCompleted { .. }));
    for (i, kind) in k.iter().enumerate().take(5).skip(2) {
        assert!(
            matches!(kind, EventKind::ActivityScheduled { .. }),
            "event {}: {kind:?}",
            i + 1
        );
    }
}

#[test]
fn select_races_an_activity_against_a_timer_either_way() {
    let dir = TempDir::new("race");
    let p = open(&dir.db());
    let hash = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req(
        "Race",
        &hash,
        r#"{"activity_ms": 3000, "timer_ms": 50}"#,
        "timer-wins",
    ))
    .unwrap();
    p.start(&start_req(
        "Race",
        &hash,
        r#"{"activity_ms": 0, "timer_ms": 30000}"#,
        "activity-wins",
    ))
    .unwrap();
    w.wake();
    assert_eq!(result_of(&p, "timer-wins"), json!("timer"));
    assert_eq!(result_of(&p, "activity-wins"), json!("activity"));
    // The losing timer is cancelled, durably.
    assert!(kinds(&p, "activity-wins")
        .iter()
        .any(|k| matches!(k, EventKind::TimerCancelled { seq: 1 })));
}

#[test]
fn activities_retry_with_backoff_and_exhausted_retries_reach_the_workflow_as_typed_errors() {
    let dir = TempDir::new("retry");
    let p = open(&dir.db());
    let hash = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    let cases = [
        (
            "recovers",
            r#"{"fail_times": 2, "max_attempts": 5, "non_retryable": false}"#,
        ),
        (
            "exhausted",
            r#"{"fail_times": 10, "max_attempts": 3, "non_retryable": false}"#,
        ),
        (
            "fatal",
            r#"{"fail_times": 10, "max_attempts": 5, "non_retryable": true}"#,
        ),
    ];
    for (id, input) in cases {
        p.start(&start_req("Retry", &hash, input, id)).unwrap();
    }
    w.wake();
    assert_eq!(result_of(&p, "recovers")["attempts"], json!(3));
    let exhausted = result_of(&p, "exhausted");
    assert_eq!(exhausted["failed_kind"], json!("Flaky"));
    assert_eq!(exhausted["attempts"], json!(3));
    let fatal = result_of(&p, "fatal");
    assert_eq!(fatal["failed_kind"], json!("Flaky"));
    assert_eq!(fatal["attempts"], json!(1));
    // Retries are not history events: one scheduled, one resolution.
    let k = kinds(&p, "recovers");
    assert_eq!(
        k.iter()
            .filter(|k| matches!(k, EventKind::ActivityScheduled { .. }))
            .count(),
        1
    );
    assert!(k
        .iter()
        .any(|k| matches!(k, EventKind::ActivityCompleted { attempts: 3, .. })));
}

#[test]
fn an_activity_past_its_start_to_close_timeout_is_retried_then_reported_timed_out() {
    let dir = TempDir::new("timeout");
    let p = open(&dir.db());
    let hash = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Timeout", &hash, r#"{"ms": 5000}"#, "t"))
        .unwrap();
    w.wake();
    let r = result_of(&p, "t");
    assert_eq!(r["timed_out"], json!(true));
    assert_eq!(r["attempts"], json!(2));
    assert!(kinds(&p, "t")
        .iter()
        .any(|k| matches!(k, EventKind::ActivityTimedOut { .. })));
}

#[test]
fn a_ten_minute_timer_survives_a_restart_and_fires_on_time() {
    let dir = TempDir::new("timer");
    let clock = ManualClock::new(1_700_000_000_000);
    let hash;
    {
        let p = open_with_clock(&dir.db(), Arc::new(clock.clone()));
        hash = deploy(&p, "testkit");
        let w = p.start_worker(quiet_worker()).unwrap();
        p.start(&start_req("Sleep", &hash, r#"{"ms": 600000}"#, "sleeper"))
            .unwrap();
        w.wake();
        wait_until("the timer to be armed", WAIT, || {
            kinds(&p, "sleeper")
                .iter()
                .any(|k| matches!(k, EventKind::TimerStarted { .. }))
        });
        w.shutdown();
    } // the engine is gone: nothing but the database remains
    clock.advance(Duration::from_secs(9 * 60));
    let p = open_with_clock(&dir.db(), Arc::new(clock.clone()));
    assert_eq!(
        p.store().fire_due_timers(clock.now_ms()).unwrap(),
        0,
        "not due after 9 minutes"
    );
    clock.advance(Duration::from_secs(60));
    let w = p.start_worker(quiet_worker()).unwrap();
    w.wake();
    let r = result_of(&p, "sleeper");
    let slept = r["after"].as_u64().unwrap() - r["before"].as_u64().unwrap();
    assert_eq!(slept, 600_000, "{r}");
    let _ = hash;
}

#[test]
fn evicted_instances_are_rebuilt_by_replay_and_finish_normally() {
    let dir = TempDir::new("evict");
    let payments = PaymentService::start();
    let p = payments.open(&dir);
    let hash = deploy(&p, "orders");
    // No cache at all: every activation rebuilds the instance from history.
    let w = p
        .start_worker(pinion_runtime::WorkerConfig {
            cache_capacity: 0,
            ..quiet_worker()
        })
        .unwrap();
    let input = json!({
        "order_id": "o-1", "customer": "ada@example.com",
        "items": [{"sku": "gear", "qty": 2, "price_cents": 1250}],
        "card": "4242-4242-4242-4242", "payment_deadline_ms": 30000, "gateway_failures": 1
    });
    p.start(&start_req(
        "ProcessOrder",
        &hash,
        &input.to_string(),
        "order",
    ))
    .unwrap();
    w.wake();
    let r = result_of(&p, "order");
    assert_eq!(r["order_id"], json!("o-1"));
    assert_eq!(r["total_cents"], json!(2500));
    // The charge went through the payment service (its id is the service's), after one
    // 503, and the receipt is in the granted directory.
    assert!(r["charge_id"].as_str().unwrap().starts_with("ch_"), "{r}");
    let receipt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("receipts/o-1.json")).unwrap())
            .unwrap();
    assert_eq!(receipt["charge_id"], r["charge_id"]);
    let charge_attempts = p
        .history("order")
        .unwrap()
        .into_iter()
        .find_map(|e| match e.kind {
            pinion_runtime::EventKind::ActivityCompleted {
                seq: 2, attempts, ..
            } => Some(attempts),
            _ => None,
        });
    assert_eq!(charge_attempts, Some(2), "one 503, then the charge");
}

fn limited(dir: &crate::common::TempDir, fuel: u64, memory: usize) -> Pinion {
    let mut config = PinionConfig::new(dir.db());
    config.limits.fuel_per_activation = fuel;
    config.limits.memory_bytes = memory;
    Pinion::open(config).unwrap()
}

#[test]
fn endless_loops_panics_and_memory_hogs_block_the_instance_with_the_reason() {
    let dir = TempDir::new("limits");
    let p = limited(&dir, 300_000_000, 32 << 20);
    let hash = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    for ty in ["Spin", "Panic", "Hog"] {
        p.start(&start_req(ty, &hash, "null", ty)).unwrap();
    }
    w.wake();
    let reason = |id: &str| {
        let r = p.wait(id, WAIT).unwrap();
        assert_eq!(r.status, InstanceStatus::Blocked, "{r:?}");
        r.blocked_reason.unwrap()
    };
    let spin = reason("Spin");
    assert!(spin.contains("ran out of fuel"), "{spin}");
    let panic = reason("Panic");
    assert!(panic.contains("boom"), "{panic}");
    let hog = reason("Hog");
    assert!(
        hog.contains("exceeded its memory limit of 33554432 bytes"),
        "{hog}"
    );
}

fn order(card: &str, deadline_ms: u64, gateway_failures: u32) -> String {
    json!({
        "order_id": "o-7", "customer": "grace@example.com",
        "items": [{"sku": "cog", "qty": 3, "price_cents": 700}],
        "card": card, "payment_deadline_ms": deadline_ms, "gateway_failures": gateway_failures
    })
    .to_string()
}

#[test]
fn a_declined_card_or_a_missed_payment_deadline_releases_the_inventory_and_fails_the_order() {
    let dir = TempDir::new("orders-fail");
    let payments = PaymentService::start();
    let p = payments.open(&dir);
    let hash = deploy(&p, "orders");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req(
        "ProcessOrder",
        &hash,
        &order("4000-0000-0000-0002", 30_000, 0),
        "declined",
    ))
    .unwrap();
    // The gateway keeps failing (retryable, with backoff) past a 300 ms deadline.
    p.start(&start_req(
        "ProcessOrder",
        &hash,
        &order("4242-4242-4242-4242", 300, 8),
        "late",
    ))
    .unwrap();
    w.wake();
    for (id, kind) in [
        ("declined", "PaymentDeclined"),
        ("late", "PaymentDeadlineExceeded"),
    ] {
        let rec = p.wait(id, WAIT).unwrap();
        assert_eq!(rec.status, InstanceStatus::Failed, "{rec:?}");
        assert_eq!(rec.failure.unwrap().kind, kind);
        let compensated = kinds(&p, id).into_iter().any(|k| {
            matches!(k, EventKind::ActivityScheduled { activity_type, .. } if activity_type == "release_inventory")
        });
        assert!(compensated, "{id} did not release its inventory");
    }
    // The declined charge was not retried: it is non-retryable.
    let declined = kinds(&p, "declined");
    assert!(declined
        .iter()
        .any(|k| matches!(k, EventKind::ActivityFailed { failure, .. } if failure.attempts == 1)));
}

/// A hand-written module implementing just enough of the ABI to deploy: its manifest is
/// the postcard bytes of `Manifest { abi_version: 1, sdk_version: "t", workflows: ["W"],
/// activities: [], version_label: None }`. `pinion_abi_version` answers 1 only after
/// `_initialize` ran. `activate_result` is the result type of `pinion_activate`.
fn tiny_module(activate_result: &str) -> Vec<u8> {
    tiny_module_of_version(activate_result, "(global.get $ready)")
}

/// [`tiny_module`] whose `pinion_abi_version` returns `version` (a wasm expression).
fn tiny_module_of_version(activate_result: &str, version: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
          (memory (export "memory") 1)
          (data (i32.const 1024) "\01\01\74\01\01\57\00\00")
          (global $ready (mut i32) (i32.const 0))
          (func (export "_initialize") (global.set $ready (i32.const 1)))
          (func (export "pinion_abi_version") (result i32) {version})
          (func (export "pinion_manifest") (result i64) (i64.const 0x0000040000000008))
          (func (export "pinion_alloc") (param i32) (result i32) (i32.const 2048))
          (func (export "pinion_free") (param i32 i32))
          (func (export "pinion_activate") (param i32 i32) (result {activate_result}) unreachable)
          (func (export "pinion_run_activity") (param i32 i32) (result i64) unreachable)
          (func (export "pinion_query") (param i32 i32) (result i64) unreachable))"#
    ))
    .unwrap()
}

#[test]
fn a_wasi_reactor_is_initialised_before_its_exports_are_called() {
    let dir = TempDir::new("reactor");
    let p = open(&dir.db());
    let d = p.deploy(&tiny_module("i64")).unwrap();
    assert_eq!(d.manifest.workflows, vec!["W".to_string()]);
}

#[test]
fn a_module_of_an_abi_version_this_pinion_does_not_run_is_refused_with_the_versions_it_does() {
    let dir = TempDir::new("abi-version");
    let p = open(&dir.db());
    for (version, advice) in [("99", "upgrade pinion"), ("0", "no longer supports")] {
        let bytes = tiny_module_of_version("i64", &format!("(i32.const {version})"));
        let err = p.deploy(&bytes).unwrap_err().to_string();
        let runs = format!(
            "this pinion runs versions {} to {}",
            pinion_abi::OLDEST_ABI_VERSION,
            pinion_abi::ABI_VERSION
        );
        assert!(
            err.contains(&format!("its ABI version is {version}")),
            "{err}"
        );
        assert!(err.contains(&runs) && err.contains(advice), "{err}");
    }
    assert!(p.modules().unwrap().is_empty());
}

#[test]
fn an_abi_export_with_the_wrong_signature_is_rejected_at_deploy() {
    let dir = TempDir::new("signature");
    let p = open(&dir.db());
    let err = p.deploy(&tiny_module("i32")).unwrap_err().to_string();
    assert!(err.contains("`pinion_activate` export has type"), "{err}");
    assert!(p.modules().unwrap().is_empty());
}

#[test]
fn status_shows_a_retrying_activity_with_its_attempt_last_failure_and_next_retry() {
    use pinion_runtime::api::Api;
    use pinion_runtime::store::PendingState;
    let dir = TempDir::new("pending");
    let p = open(&dir.db());
    let hash = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req(
        "Retry",
        &hash,
        r#"{"fail_times": 1000, "max_attempts": 0, "non_retryable": false}"#,
        "forever",
    ))
    .unwrap();
    w.wake();
    let mut seen = None;
    wait_until("the third failed attempt", WAIT, || {
        let rec = Api::status(&p, "forever").unwrap();
        let pending = rec.pending_activities.first().cloned();
        let done = pending
            .as_ref()
            .is_some_and(|a| a.attempt >= 4 && a.state == PendingState::BackingOff);
        seen = pending;
        done
    });
    let a = seen.unwrap();
    assert_eq!((a.seq, a.activity_type.as_str()), (1, "flaky"));
    let f = a.last_failure.as_ref().unwrap();
    assert_eq!(f.kind, "Flaky");
    assert_eq!(
        f.message,
        format!("failing attempt {} of 1000", a.attempt - 1)
    );
    assert!(
        a.next_attempt_at_ms.unwrap() > 0 && a.started_at_ms.is_none(),
        "{a:?}"
    );
    // The CLI's status prints the same.
    let out = pinion(&dir.db(), &["status", "forever"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("#1 flaky attempt") && text.contains("last failure: Flaky: failing attempt"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&pinion(&dir.db(), &["--json", "status", "forever"]).stdout)
            .unwrap();
    assert_eq!(
        json["pending_activities"][0]["activity_type"],
        json!("flaky"),
        "{json}"
    );
    let history = pinion(&dir.db(), &["history", "forever"]);
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains("ActivityScheduled") && history.contains("#1 flaky attempt"),
        "{history}"
    );
    // A list does not carry them.
    let list = Api::list(&p, &Default::default()).unwrap();
    assert!(list.instances[0].pending_activities.is_empty());
    p.terminate("forever", "test over").unwrap();
}

#[test]
fn an_order_id_that_is_not_a_plain_name_never_names_a_receipt_file() {
    let dir = TempDir::new("orders-id");
    let payments = PaymentService::start();
    let p = payments.open(&dir);
    let hash = deploy(&p, "orders");
    let w = p.start_worker(quiet_worker()).unwrap();
    let input = json!({
        "order_id": "../escape", "customer": "ada@example.com",
        "items": [{"sku": "gear", "qty": 1, "price_cents": 100}],
        "card": "4242-4242-4242-4242", "payment_deadline_ms": 30000, "gateway_failures": 0
    });
    p.start(&start_req(
        "ProcessOrder",
        &hash,
        &input.to_string(),
        "bad-id",
    ))
    .unwrap();
    w.wake();
    let rec = p.wait("bad-id", WAIT).unwrap();
    assert_eq!(rec.status, InstanceStatus::Failed, "{rec:?}");
    assert_eq!(rec.failure.unwrap().kind, "InvalidOrderId");
    assert!(!dir.path().join("escape.json").exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("receipts"))
            .unwrap()
            .count(),
        0
    );
}

sqlite_only! {
    /// The compile cache holds code that is run as is: it is created private (0700), a
    /// directory others can write to is not used at all, and temporary files left by a killed
    /// deploy are removed.
    #[test]
    fn the_compile_cache_is_private_and_a_writable_one_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("cache-perms");
        let db = dir.db();
        let cache = PinionConfig::new(&db).cache_dir.unwrap();
        let p = open(&db);
        p.deploy(&wasm_bytes("hello-v1")).unwrap();
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let cwasm = |d: &std::path::Path| {
            std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
                .count()
        };
        assert_eq!(cwasm(&cache), 1);
        drop(p);

        // Left behind by a deploy killed mid-write (a pid that cannot exist), and one of a
        // process that is alive (this one): only the first goes.
        let dead = cache.join("abc.def.tmp999999999");
        let alive = cache.join(format!("abc.def.tmp{}", std::process::id()));
        std::fs::write(&dead, b"partial").unwrap();
        std::fs::write(&alive, b"partial").unwrap();
        let p = open(&db);
        assert!(!dead.exists(), "the abandoned temporary file is removed");
        assert!(
            alive.exists(),
            "a live process's temporary file is left alone"
        );
        std::fs::remove_file(&alive).unwrap();
        drop(p);

        // World-writable: not read, not written; modules still deploy and run.
        std::fs::remove_dir_all(&cache).unwrap();
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let p = open(&db);
        let hash = p.deploy(&wasm_bytes("foobar-v1")).unwrap().hash.0;
        p.start(&start_req("FooBar", &hash, "null", "runs"))
            .unwrap();
        let w = p.start_worker(quiet_worker()).unwrap();
        w.wake();
        let rec = p.wait("runs", Duration::from_secs(60)).unwrap();
        assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
        assert_eq!(
            cwasm(&cache),
            0,
            "nothing is written to a directory others can write"
        );
    }
}

sqlite_only! {
    /// A full disk (here the database's size limit, SQLite's `max_page_count`): writes fail
    /// with an error that says so, nothing is half-written, and once there is room again
    /// everything that was accepted runs to the end.
    #[test]
    fn a_full_database_refuses_writes_cleanly_and_loses_nothing() {
        let dir = TempDir::new("disk-full");
        let db = dir.db();
        let p = open(&db);
        let hello = p.deploy(&wasm_bytes("hello-v1")).unwrap().hash.0;
        drop(p);
        let pages: i64 = rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let mut config = PinionConfig::new(&db);
        config.sqlite.max_pages = Some(pages as u64 + 8);
        let p = Pinion::open(config).unwrap();
        // A module far bigger than the room left.
        let err = p.deploy(&wasm_bytes("testkit")).unwrap_err().to_string();
        assert!(err.contains("is full"), "{err}");
        assert_eq!(
            p.modules().unwrap().len(),
            1,
            "nothing of the module is stored"
        );
        // Instances are accepted until the room runs out, then refused with the same error.
        let mut accepted = Vec::new();
        let refused = loop {
            let id = format!("h{}", accepted.len());
            match p.start(&start_req("Hello", &hello, r#"{"wait_ms": 1}"#, &id)) {
                Ok(_) => accepted.push(id),
                Err(e) => break e.to_string(),
            }
            assert!(accepted.len() < 10_000, "the limit never hit");
        };
        assert!(refused.contains("is full"), "{refused}");
        let listed = p.list(&InstanceFilter::default()).unwrap();
        assert_eq!(
            listed.len(),
            accepted.len(),
            "a refused start leaves no instance"
        );
        for id in &accepted {
            assert!(
                !p.history(id).unwrap().is_empty(),
                "{id} has its start event"
            );
        }
        drop(p);
        // Room again: every accepted instance completes.
        let p = open(&db);
        let w = p.start_worker(quiet_worker()).unwrap();
        w.wake();
        for id in &accepted {
            let rec = p.wait(id, Duration::from_secs(60)).unwrap();
            assert_eq!(rec.status, InstanceStatus::Completed, "{id}: {rec:?}");
        }
    }
}

sqlite_only! {
    /// Deploying bytes that are already stored compiles nothing: not in the process that
    /// deployed them (its memory), and not in a new process (the compile cache).
    #[test]
    fn deploying_stored_bytes_again_compiles_nothing() {
        let dir = TempDir::new("no-recompile");
        let bytes = wasm_bytes("hello-v1");
        let p = open(&dir.db());
        let first = p.deploy(&bytes).unwrap();
        assert!(first.newly_stored);
        let after_first = p.sandbox().compiles();
        assert_eq!(after_first, 1);
        let again = p.deploy(&bytes).unwrap();
        assert!(!again.newly_stored);
        assert_eq!(again.hash, first.hash);
        assert_eq!(
            p.sandbox().compiles(),
            after_first,
            "no compile in the same process"
        );
        drop(p);
        let p = open(&dir.db());
        p.deploy(&bytes).unwrap();
        assert_eq!(
            p.sandbox().compiles(),
            0,
            "no compile in a new process either"
        );
    }
}

/// The fast path of a step: an activation claims its activities in its own commit and
/// starts them itself, and an activity's outcome goes to the next activation in memory
/// and is committed with it. With many workflows in flight at once, every history still
/// records each activity scheduled once and its outcome once, in order, and replays clean
/// against its module.
#[test]
fn steps_on_the_fast_path_record_each_outcome_once_and_every_history_replays_clean() {
    use pinion_runtime::api::Api;
    use pinion_runtime::replay::{ReplayOptions, Replayer};
    let dir = TempDir::new("fast-path");
    let p = open(&dir.db());
    let kit = deploy(&p, "testkit");
    let w = p.start_worker(quiet_worker()).unwrap();
    let n = 64;
    for i in 0..n {
        p.start(&start_req(
            "Steps",
            &kit,
            r#"{"n": 10}"#,
            &format!("fast-{i}"),
        ))
        .unwrap();
    }
    for i in 0..n {
        let rec = p.wait(&format!("fast-{i}"), WAIT).unwrap();
        assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
    }
    w.shutdown();
    let replayer = Replayer::from_file(&wasm("testkit"), ReplayOptions::default()).unwrap();
    for i in 0..n {
        let id = format!("fast-{i}");
        let (mut scheduled, mut completed) = (Vec::new(), Vec::new());
        for k in kinds(&p, &id) {
            match k {
                EventKind::ActivityScheduled { seq, .. } => scheduled.push(seq),
                EventKind::ActivityCompleted { seq, attempts, .. } => {
                    assert_eq!(attempts, 1, "{id}: activity {seq}");
                    assert!(
                        scheduled.contains(&seq),
                        "{id}: {seq} completed before scheduled"
                    );
                    completed.push(seq);
                }
                _ => {}
            }
        }
        assert_eq!(scheduled.len(), 10, "{id}: {scheduled:?}");
        assert_eq!(completed, scheduled, "{id}: each outcome once, in order");
        let history = Api::history(&p, &id, None).unwrap();
        let report = replayer.replay(&history);
        assert!(report.is_compatible(), "{id}: {report}");
    }
    // Nothing is left behind: no task, no inbox row.
    for i in 0..n {
        let id = pinion_runtime::InstanceId(format!("fast-{i}"));
        assert!(p.store().load_inbox(&id).unwrap().is_empty());
    }
}

/// A worker stopped cleanly in the middle of many steps leaves nothing only memory knew:
/// attempts claimed by an activation but not started are given back, outcomes held for
/// the next activation are written. After a restart every workflow completes and no
/// activity shows a second attempt (nothing was counted lost).
#[test]
fn a_clean_stop_mid_steps_costs_no_attempt() {
    let dir = TempDir::new("clean-stop");
    let p = open(&dir.db());
    let kit = deploy(&p, "testkit");
    let n = 64;
    for round in 0..3 {
        let w = p.start_worker(quiet_worker()).unwrap();
        if round == 0 {
            for i in 0..n {
                p.start(&start_req(
                    "Steps",
                    &kit,
                    r#"{"n": 30}"#,
                    &format!("stop-{i}"),
                ))
                .unwrap();
            }
        }
        if round < 2 {
            // Stop while steps are in flight.
            wait_until("some steps", WAIT, || {
                kinds(&p, "stop-0")
                    .iter()
                    .any(|k| matches!(k, EventKind::ActivityCompleted { .. }))
            });
            w.shutdown();
            continue;
        }
        for i in 0..n {
            let rec = p.wait(&format!("stop-{i}"), WAIT).unwrap();
            assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
        }
        w.shutdown();
    }
    for i in 0..n {
        for k in kinds(&p, &format!("stop-{i}")) {
            if let EventKind::ActivityCompleted { seq, attempts, .. } = k {
                assert_eq!(
                    attempts, 1,
                    "stop-{i}: activity {seq} ran again after a clean stop"
                );
            }
        }
    }
}

#[test]
fn a_start_with_a_worker_running_commits_the_first_activation_with_it() {
    let dir = TempDir::new("eager");
    let p = open(&dir.db());
    let hash = deploy(&p, "testkit");
    // No wake and no wait: whatever is in the database when `start` returns was committed
    // by the start itself.
    let _w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Echo", &hash, r#"{"a": 1}"#, "echo"))
        .unwrap();
    let echo = p.status("echo").unwrap();
    assert_eq!(echo.status, InstanceStatus::Completed, "{echo:?}");
    assert_eq!(echo.result.unwrap().to_value(), json!({"a": 1}));

    p.start(&start_req("Steps", &hash, r#"{"n": 3}"#, "steps"))
        .unwrap();
    let first = kinds(&p, "steps");
    assert!(
        matches!(first[0], EventKind::WorkflowStarted { .. })
            && first
                .iter()
                .any(|k| matches!(k, EventKind::ActivityScheduled { .. })),
        "{first:?}"
    );
    assert_eq!(result_of(&p, "steps"), json!(3));

    // A first activation that traps blocks the instance at once, with the reason.
    p.start(&start_req("Panic", &hash, "null", "panic"))
        .unwrap();
    let panic = p.status("panic").unwrap();
    assert_eq!(panic.status, InstanceStatus::Blocked, "{panic:?}");
    assert!(panic.blocked_reason.unwrap().contains("boom"));

    // An id in use is refused and nothing is written over it.
    let before = p.history("echo").unwrap();
    let again = p.start(&start_req("Steps", &hash, r#"{"n": 1}"#, "echo"));
    assert!(again.is_err(), "{again:?}");
    assert_eq!(p.history("echo").unwrap(), before);
    assert_eq!(
        p.status("echo").unwrap().result.unwrap().to_value(),
        json!({"a": 1})
    );
}

sqlite_only! {
    /// A file lock keyed on the SQLite file's real path; PostgreSQL uses an advisory lock.
    #[test]
    fn a_second_worker_on_the_same_file_through_a_symlink_is_refused() {
        let dir = TempDir::new("symlock");
        let real = dir.db();
        let p = open(&real);
        let _w = p.start_worker(quiet_worker()).unwrap();
        // The same file through a link to it, and through a link to its directory.
        let file_link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&real, &file_link).unwrap();
        let dir_link = dir.path().join("dirlink");
        std::os::unix::fs::symlink(dir.path(), &dir_link).unwrap();
        let through_dir = dir_link.join(real.file_name().unwrap());
        for path in [file_link, through_dir] {
            let other = open(&path);
            let refused = other.start_worker(quiet_worker());
            assert!(
                matches!(refused, Err(Error::WorkerLocked(_))),
                "{}: a second worker started",
                path.display()
            );
        }
    }
}
