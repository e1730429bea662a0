//! Shared by the benchmarks: builds the example guests (their own target dir, so this never
//! waits on the cargo running the bench) and locates files in the workspace.

use std::path::{Path, PathBuf};

use pinion_abi::{ActivityOptions, RetryPolicy};
use pinion_runtime::history::{
    HistoryExport, DETERMINISM_RULES_VERSION, EXPORT_FORMAT, EXPORT_VERSION,
};
use pinion_runtime::{EventKind, HistoryEvent, InstanceId, InstanceStatus, ModuleHash, Payload};
use std::process::Command;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runtime/ has a parent")
        .to_path_buf()
}

/// Builds the example guests and returns the path of `testkit.wasm`.
pub fn testkit_wasm() -> PathBuf {
    let target = root().join("target/wasm-guests");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(root().join("examples/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the example guests failed");
    target.join("wasm32-wasip1/release/testkit.wasm")
}

/// The history of testkit's `Steps` workflow with `n` activities (`step` returns its input
/// + 1), completed, written directly in the documented history format.
#[allow(dead_code)] // not every benchmark uses it
pub fn steps_history(id: &str, n: u32, hash: &ModuleHash) -> HistoryExport {
    let mut events = Vec::new();
    let mut push = |kind: EventKind| {
        let id = events.len() as u64 + 1;
        events.push(HistoryEvent {
            id,
            time_ms: 1_700_000_000_000 + id,
            kind,
        });
    };
    let options = ActivityOptions {
        start_to_close_timeout_ms: None,
        retry: RetryPolicy::default(),
        heartbeat_timeout_ms: None,
    };
    push(EventKind::WorkflowStarted {
        workflow_type: "Steps".into(),
        module_hash: hash.clone(),
        input: Payload::from_value(&serde_json::json!({ "n": n })).unwrap(),
        random_seed: 7,
        determinism_rules: DETERMINISM_RULES_VERSION,
        version_label: None,
        parent: None,
        continued_from_run: None,
    });
    for seq in 1..=n {
        push(EventKind::WorkflowTaskCompleted {
            now_ms: 1_700_000_000_000 + seq as u64,
        });
        push(EventKind::ActivityScheduled {
            seq,
            activity_type: "step".into(),
            input: Payload::from_value(&(seq - 1)).unwrap(),
            options: options.clone(),
        });
        push(EventKind::ActivityCompleted {
            seq,
            result: Payload::from_value(&seq).unwrap(),
            attempts: 1,
        });
    }
    push(EventKind::WorkflowTaskCompleted {
        now_ms: 1_700_000_000_000 + n as u64 + 1,
    });
    push(EventKind::WorkflowCompleted {
        result: Payload::from_value(&n).unwrap(),
    });
    HistoryExport {
        format: EXPORT_FORMAT.into(),
        version: EXPORT_VERSION,
        instance_id: InstanceId(id.into()),
        workflow_type: "Steps".into(),
        module_hash: hash.clone(),
        status: InstanceStatus::Completed,
        run: 1,
        events,
    }
}
