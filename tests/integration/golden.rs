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

fn abi1_modules() -> Vec<Golden> {
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
        (
            "orders.wasm",
            "ProcessOrder",
            json!({"order_id": "o-g", "customer": "ada@example.com",
                   "items": [{"sku": "gear", "qty": 2, "price_cents": 1250}],
                   "card": "4242-4242-4242-4242", "payment_deadline_ms": 30000,
                   "gateway_failures": 1})
            .to_string(),
            "golden-orders.json",
        ),
    ]
}

fn abi2_modules() -> Vec<Golden> {
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
        (
            "reach.wasm",
            "Call",
            json!({"activity": "count", "input": {"to": 4, "fail_at": 2}, "attempts": 3,
                   "heartbeat_timeout_ms": 5000})
            .to_string(),
            "golden-reach-count.json",
        ),
    ]
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
