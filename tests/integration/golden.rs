//! Modules pinned today keep running on every later pinion: binary modules built with each
//! released guest ABI version, committed under `tests/fixtures/modules/abi<N>/` with the
//! histories they recorded:
//!
//! - ABI 1: before outgoing HTTP, heartbeats and the `pinion` host imports existed;
//! - ABI 2: activity options with a heartbeat timeout, heartbeat details for retries
//!   (`reach.wasm` heartbeats in its recorded history).
//!
//! Each still deploys, runs new instances to completion, survives a worker restart mid-run,
//! and replays its recorded history cleanly.

use std::path::PathBuf;
use std::time::Duration;

use pinion_runtime::replay::{ReplayOptions, Replayer};
use pinion_runtime::InstanceStatus;
use serde_json::json;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(60);

fn fixture(abi: u32, file: &str) -> PathBuf {
    root()
        .join(format!("tests/fixtures/modules/abi{abi}"))
        .join(file)
}

/// (module file, workflow type, input, recorded history)
type Golden = (&'static str, &'static str, String, &'static str);

/// The modules every ABI version's fixtures have.
fn common_modules() -> Vec<Golden> {
    vec![
        (
            "hello_v1.wasm",
            "Hello",
            json!({"wait_ms": 10}).to_string(),
            "golden-hello.json",
        ),
        (
            "foobar_v1.wasm",
            "FooBar",
            "null".into(),
            "golden-foobar.json",
        ),
        (
            "testkit.wasm",
            "Steps",
            json!({"n": 3}).to_string(),
            "golden-testkit-steps.json",
        ),
    ]
}

fn abi1_modules() -> Vec<Golden> {
    let mut m = common_modules();
    m.push((
        "orders.wasm",
        "ProcessOrder",
        json!({"order_id": "o-g", "customer": "ada@example.com",
               "items": [{"sku": "gear", "qty": 2, "price_cents": 1250}],
               "card": "4242-4242-4242-4242", "payment_deadline_ms": 30000,
               "gateway_failures": 1})
        .to_string(),
        "golden-orders.json",
    ));
    m
}

fn abi2_modules() -> Vec<Golden> {
    let mut m = common_modules();
    m.push((
        "reach.wasm",
        "Call",
        json!({"activity": "count", "input": {"to": 4, "fail_at": 2}, "attempts": 3,
               "heartbeat_timeout_ms": 5000})
        .to_string(),
        "golden-reach-count.json",
    ));
    m
}

#[test]
fn abi1_modules_deploy_run_new_instances_and_replay_their_recorded_histories() {
    golden(1, "0.1.0", abi1_modules());
}

#[test]
fn abi2_modules_deploy_run_new_instances_and_replay_their_recorded_histories() {
    golden(2, "0.2.0", abi2_modules());
}

fn golden(abi: u32, sdk_version: &str, modules: Vec<Golden>) {
    let dir = TempDir::new(&format!("golden-abi{abi}"));
    let p = open(&dir.db());
    let mut started = Vec::new();
    for (file, workflow_type, input, _) in modules.clone() {
        let bytes = std::fs::read(fixture(abi, file)).unwrap();
        let d = p
            .deploy(&bytes)
            .unwrap_or_else(|e| panic!("{file} no longer deploys: {e}"));
        assert_eq!(d.manifest.abi_version, abi, "{file}");
        let id = format!("new-{file}");
        p.start(&start_req(workflow_type, &d.hash.0, &input, &id))
            .unwrap();
        started.push(id);
    }
    // `pinion modules` says which ABI and SDK each was built with.
    let listed = pinion_runtime::api::Api::modules(&p).unwrap();
    assert_eq!(listed.len(), modules.len());
    for m in &listed {
        assert_eq!(m.module.abi_version, abi, "{m:?}");
        assert_eq!(m.module.sdk_version, sdk_version, "{m:?}");
    }
    // Run half the work, stop the worker (as a restart would), then finish on a new one.
    {
        let w = p.start_worker(quiet_worker()).unwrap();
        w.wake();
        std::thread::sleep(Duration::from_millis(30));
        w.shutdown();
    }
    let w = p.start_worker(quiet_worker()).unwrap();
    w.wake();
    for id in &started {
        let rec = p.wait(id, WAIT).unwrap();
        assert_eq!(rec.status, InstanceStatus::Completed, "{id}: {rec:?}");
    }

    for (file, _, _, history) in modules {
        let replayer = Replayer::from_file(
            &fixture(abi, file),
            ReplayOptions {
                strict_inputs: true,
            },
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        let report = replayer
            .replay_file(&fixture(abi, "histories").join(history))
            .unwrap();
        assert!(report.is_compatible(), "{file}: {report}");
        assert!(report.warnings.is_empty(), "{file}: {report}");
        assert!(!report.result_differs, "{file}: {report}");
    }
}

/// The runtime upgrade check: a database whose running instances pin a module this pinion
/// cannot run (here a module of guest ABI 99, written over the stored bytes, as a pinion
/// that dropped an ABI version would see it) is refused by `pinion server` before anything
/// changes, naming the module and how many instances pin it.
#[test]
fn the_server_refuses_a_database_pinning_modules_it_cannot_run_and_changes_nothing() {
    use std::process::{Command, Stdio};
    let dir = TempDir::new("upgrade-check");
    let db = dir.db();
    let p = open(&db);
    let hash = p
        .deploy(&std::fs::read(fixture(2, "hello_v1.wasm")).unwrap())
        .unwrap()
        .hash
        .0;
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
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE module_code SET bytes = ?1 WHERE hash = ?2",
            rusqlite::params![future, hash],
        )
        .unwrap();
    // A new pinion has a new compile-cache fingerprint: nothing compiled is reused.
    let cache = pinion_runtime::PinionConfig::new(&db).cache_dir.unwrap();
    std::fs::remove_dir_all(&cache).unwrap();
    let before = std::fs::read(&db).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(&db)
        .args(["server", "--listen", "127.0.0.1:0", "--no-auth"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("the server started on a database pinning a module it cannot run");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(9), "{stderr}");
    assert!(stderr.contains(&hash), "{stderr}");
    assert!(stderr.contains("2 instance(s)"), "{stderr}");
    assert!(stderr.contains("its ABI version is 99"), "{stderr}");
    assert!(stderr.contains("--allow-unrunnable-modules"), "{stderr}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the refused start changed the database"
    );
}
