//! Hostile modules against a real `pinion server`: huge lengths in WASI and host calls,
//! out-of-range response buffers, several memories, a huge table, a huge initial memory.
//! Each ends with a clear error or status, and the server keeps serving other instances.
//!
//! The modules are written in WAT here: a workflow that schedules activity `A` once and
//! completes with `"survived"` when it resolves, and an activity that makes one hostile call.
//! The activity traps if the host *accepts* the call, so a host that quietly did the
//! impossible would show up as a failed activity.

use pinion_abi::{
    ActivityOptions, ActivityOutcome, Command as Cmd, Completion, Manifest, RetryPolicy,
};
use serde_json::{json, Value};

use crate::api::{post_wasm, ApiServer};
use crate::common::*;

fn data(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

pub(crate) fn pack(ptr: u32, len: usize) -> i64 {
    pinion_abi::pack(ptr, len as u32) as i64
}

/// A module following the pinion ABI whose activity body is `activity` and whose
/// `_initialize` and `pinion_activate` may do extra things. `imports` declares what they
/// call; `memories` adds memory declarations.
pub(crate) fn module(imports: &str, activity: &str, activate_extra: &str, extra: &str) -> Vec<u8> {
    let manifest = pinion_abi::encode(&Manifest {
        abi_version: pinion_abi::ABI_VERSION,
        sdk_version: "hostile".into(),
        workflows: vec!["W".into()],
        activities: vec!["A".into()],
        version_label: None,
    })
    .unwrap();
    let schedule = pinion_abi::encode(&Completion::Commands(vec![Cmd::ScheduleActivity {
        seq: 1,
        activity_type: "A".into(),
        input: b"null".to_vec(),
        options: ActivityOptions {
            start_to_close_timeout_ms: Some(10_000),
            retry: RetryPolicy {
                maximum_attempts: 1,
                ..RetryPolicy::default()
            },
            heartbeat_timeout_ms: None,
        },
    }]))
    .unwrap();
    let complete = pinion_abi::encode(&Completion::<ActivityOptions>::Commands(vec![
        Cmd::CompleteWorkflow {
            result: b"\"survived\"".to_vec(),
        },
    ]))
    .unwrap();
    let outcome = pinion_abi::encode(&ActivityOutcome::Completed(b"null".to_vec())).unwrap();
    let wat = format!(
        r#"(module
  {imports}
  (memory (export "memory") 2)
  {extra}
  (global $n (mut i32) (i32.const 0))
  (data (i32.const 1024) "{m}")
  (data (i32.const 2048) "{s}")
  (data (i32.const 3072) "{c}")
  (data (i32.const 4096) "{o}")
  (func (export "pinion_abi_version") (result i32) i32.const {v})
  (func (export "pinion_manifest") (result i64) i64.const {pm})
  (func (export "pinion_alloc") (param i32) (result i32) i32.const 65536)
  (func (export "pinion_free") (param i32 i32))
  (func (export "pinion_activate") (param i32 i32) (result i64)
    {activate_extra}
    global.get $n
    i32.eqz
    if (result i64)
      i32.const 1
      global.set $n
      i64.const {ps}
    else
      i64.const {pc}
    end)
  (func (export "pinion_run_activity") (param i32 i32) (result i64)
    {activity})
  (func (export "pinion_query") (param i32 i32) (result i64) unreachable))"#,
        m = data(&manifest),
        s = data(&schedule),
        c = data(&complete),
        o = data(&outcome),
        v = pinion_abi::ABI_VERSION,
        pm = pack(1024, manifest.len()),
        ps = pack(2048, schedule.len()),
        pc = pack(3072, complete.len()),
    );
    wat::parse_str(&wat).unwrap_or_else(|e| panic!("{e}\n{wat}"))
}

/// An activity that makes `call` (leaving an i32 errno) and traps if it returned 0.
fn refused(call: &str) -> String {
    let outcome_len = pinion_abi::encode(&ActivityOutcome::Completed(b"null".to_vec()))
        .unwrap()
        .len();
    format!(
        "{call}\n    i32.eqz\n    if unreachable end\n    i64.const {}",
        pack(4096, outcome_len)
    )
}

const WASI: &str = "wasi_snapshot_preview1";

fn import(module: &str, name: &str, params: usize) -> String {
    format!(
        "(import \"{module}\" \"{name}\" (func ${name} (param{}) (result i32)))",
        " i32".repeat(params)
    )
}

fn deploy(server: &ApiServer, bytes: Vec<u8>) -> (u16, Value) {
    post_wasm(server, "/v1/modules", bytes)
}

fn start(server: &ApiServer, hash: &str, id: &str) {
    start_with(
        server,
        json!({ "workflow_type": "W", "module": hash, "id": id }),
    );
}

fn start_with(server: &ApiServer, body: Value) {
    let (status, body) = crate::api::http(
        "POST",
        &format!("{}/v1/instances", server.url),
        None,
        Some(("application/json", serde_json::to_vec(&body).unwrap())),
    );
    assert_eq!(status, 201, "{body}");
}

fn wait(server: &ApiServer, id: &str) -> Value {
    let (status, body) = crate::api::http(
        "GET",
        &format!("{}/v1/instances/{id}/result?wait=60", server.url),
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    body
}

fn history(server: &ApiServer, id: &str) -> Value {
    crate::api::http(
        "GET",
        &format!("{}/v1/instances/{id}/history", server.url),
        None,
        None,
    )
    .1
}

#[test]
fn huge_lengths_and_bad_buffers_end_in_clear_errors_and_the_server_keeps_serving() {
    let dir = TempDir::new("hostile");
    let server = ApiServer::start(&dir.db(), None);
    let huge = "i32.const -1";
    // (name, imports, activity body): each hostile call must be refused by the host.
    let cases: Vec<(&str, String, String)> = vec![
        (
            "poll_oneoff",
            import(WASI, "poll_oneoff", 4),
            refused(&format!("i32.const 0 i32.const 0 {huge} i32.const 8 call $poll_oneoff")),
        ),
        (
            "fd_write",
            import(WASI, "fd_write", 4),
            refused(&format!("i32.const 1 i32.const 0 {huge} i32.const 8 call $fd_write")),
        ),
        (
            "fd_read",
            import(WASI, "fd_read", 4),
            refused(&format!("i32.const 0 i32.const 0 {huge} i32.const 8 call $fd_read")),
        ),
        (
            "random_get",
            import(WASI, "random_get", 2),
            refused(&format!("i32.const 0 {huge} call $random_get")),
        ),
        (
            "environ_sizes_get",
            import(WASI, "environ_sizes_get", 2),
            refused(&format!("{huge} {huge} call $environ_sizes_get")),
        ),
        (
            "path_open",
            "(import \"wasi_snapshot_preview1\" \"path_open\" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))".into(),
            refused(&format!("i32.const 3 i32.const 0 i32.const 0 {huge} i32.const 0 i64.const 0 i64.const 0 i32.const 0 i32.const 8 call $path_open")),
        ),
        (
            "http_send",
            import("pinion", "http_send", 2),
            refused(&format!("i32.const 0 {huge} call $http_send i32.const 0 i32.lt_s")),
        ),
        (
            "http_send_out_of_bounds",
            import("pinion", "http_send", 2),
            refused("i32.const 131000 i32.const 1000 call $http_send i32.const 0 i32.lt_s"),
        ),
        (
            "take_staged",
            import("pinion", "take_staged", 2),
            refused("i32.const -1 i32.const 100 call $take_staged i32.const 0 i32.lt_s"),
        ),
    ];
    let mut ids = Vec::new();
    for (name, imports, body) in &cases {
        let (status, d) = deploy(&server, module(imports, body, "", ""));
        assert_eq!(status, 201, "{name}: {d}");
        let hash = d["hash"].as_str().unwrap().to_string();
        start(&server, &hash, name);
        ids.push(name.to_string());
    }
    // An activity whose response buffer lies outside its memory.
    let (_, d) = deploy(&server, module("", "i64.const -1", "", ""));
    start(&server, d["hash"].as_str().unwrap(), "bad_response");
    // A workflow whose activation answers with a buffer outside its memory, after writing
    // to stdout with a huge iovec count.
    let (_, d) = deploy(
        &server,
        module(
            &import(WASI, "fd_write", 4),
            "unreachable",
            &format!("i32.const 1 i32.const 0 {huge} i32.const 8 call $fd_write drop i64.const -1 return"),
            "",
        ),
    );
    start(&server, d["hash"].as_str().unwrap(), "bad_completion");

    for id in &ids {
        let r = wait(&server, id);
        assert_eq!(r["status"], json!("completed"), "{id}: {r}");
        assert_eq!(r["result"], json!("survived"), "{id}: {r}");
        let h = history(&server, id).to_string();
        // Refused with an errno (the activity completed), or stopped by a host trap that
        // says why (wasmtime-wasi traps on out-of-bounds pointers and over-limit lengths);
        // never accepted (the activity's `unreachable`) and never a crash.
        let refused = h.contains("ActivityCompleted");
        let trapped = h.contains("ActivityFailed") && !h.contains("`unreachable` instruction");
        assert!(refused || trapped, "{id}: {h}");
    }
    let r = wait(&server, "bad_response");
    assert_eq!(r["status"], json!("completed"), "{r}");
    let h = history(&server, "bad_response").to_string();
    assert!(
        h.contains("ActivityFailed") && h.contains("outside guest memory"),
        "{h}"
    );
    let r = wait(&server, "bad_completion");
    assert_eq!(r["status"], json!("blocked"), "{r}");
    assert!(
        r["blocked_reason"]
            .as_str()
            .unwrap()
            .contains("outside guest memory"),
        "{r}"
    );

    // Still serving: an ordinary module runs to completion on the same server.
    let (_, d) = deploy(&server, wasm_bytes("testkit"));
    let hash = d["hash"].as_str().unwrap().to_string();
    start_with(
        &server,
        json!({ "workflow_type": "Steps", "module": hash, "id": "after", "input": {"n": 3} }),
    );
    let r = wait(&server, "after");
    assert_eq!(r["result"], json!(3), "{r}");
    let (status, log) = server.terminate();
    assert!(status.success(), "the server exits cleanly: {log}");
}

#[test]
fn several_memories_a_huge_table_or_a_huge_memory_are_refused_at_deploy() {
    let dir = TempDir::new("hostile-deploy");
    let server = ApiServer::start(&dir.db(), None);
    let memories: String = (0..7).map(|i| format!("(memory $m{i} 1)\n")).collect();
    for (extra, says) in [
        (memories.as_str(), "multiple memories"),
        ("(table 100000000 funcref)", "table elements"),
    ] {
        let (status, body) = deploy(&server, module("", "unreachable", "", extra));
        assert!(status == 400 || status == 422, "{status} {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{says}: {msg}");
    }
    // 4 GiB of initial memory, against a 128 MiB limit.
    let big = module("", "unreachable", "", "").len();
    let _ = big;
    let wat = r#"(module (memory (export "memory") 65536)
        (func (export "pinion_abi_version") (result i32) i32.const 1)
        (func (export "pinion_manifest") (result i64) i64.const 0)
        (func (export "pinion_alloc") (param i32) (result i32) i32.const 0)
        (func (export "pinion_free") (param i32 i32))
        (func (export "pinion_activate") (param i32 i32) (result i64) unreachable)
        (func (export "pinion_run_activity") (param i32 i32) (result i64) unreachable)
        (func (export "pinion_query") (param i32 i32) (result i64) unreachable))"#;
    let (status, body) = deploy(&server, wat::parse_str(wat).unwrap());
    assert!(status == 400 || status == 422, "{status} {body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("memory limit"), "{msg}");
    // The server is still up.
    let (status, _) = deploy(&server, wasm_bytes("testkit"));
    assert_eq!(status, 201);
}

/// Modules that never stop or never stop talking: an endless loop in a workflow
/// activation, in an activity and in `_initialize` (at deploy), unbounded recursion, and
/// an activity spamming its log. Each ends with a status that says why, and the server
/// keeps serving.
#[test]
fn endless_loops_deep_recursion_and_log_spam_end_cleanly_and_the_server_keeps_serving() {
    let dir = TempDir::new("hostile-loops");
    let server = ApiServer::start(&dir.db(), None);
    let started = |name: &str, bytes: Vec<u8>| {
        let (status, d) = deploy(&server, bytes);
        assert_eq!(status, 201, "{name}: {d}");
        start(&server, d["hash"].as_str().unwrap(), name);
    };
    // Workflow code is bounded by fuel: the activation runs out and the instance blocks.
    started(
        "loop_workflow",
        module("", "unreachable", "(loop br 0)", ""),
    );
    // Unbounded recursion overflows wasm's stack: a trap, the instance blocks.
    started(
        "recursion",
        module("", "unreachable", "call $down", "(func $down call $down)"),
    );
    // Activities are bounded by their start-to-close timeout (10 s in this module): the
    // attempt is stopped, the workflow sees the timeout and completes.
    let outcome_len = pinion_abi::encode(&ActivityOutcome::Completed(b"null".to_vec()))
        .unwrap()
        .len();
    started(
        "loop_activity",
        module(
            "",
            &format!("(loop br 0) i64.const {}", pack(4096, outcome_len)),
            "",
            "",
        ),
    );
    // 4 KiB to stdout 100,000 times (400 MB): captured up to the cap, the rest dropped.
    started(
        "log_spam",
        module(
            &import(WASI, "fd_write", 4),
            &format!(
                "(local $i i32)
                 (i32.store (i32.const 8192) (i32.const 0))
                 (i32.store (i32.const 8196) (i32.const 4096))
                 (loop
                   (drop (call $fd_write (i32.const 1) (i32.const 8192) (i32.const 1) (i32.const 8200)))
                   (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br_if 0 (i32.lt_u (local.get $i) (i32.const 100000))))
                 i64.const {}",
                pack(4096, outcome_len)
            ),
            "",
            "",
        ),
    );
    // An endless `_initialize` is stopped at deploy (fuel), and nothing is stored.
    let (status, body) = deploy(
        &server,
        module(
            "",
            "unreachable",
            "",
            "(func (export \"_initialize\") (loop br 0))",
        ),
    );
    assert!(status == 400 || status == 422, "{status} {body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("fuel"),
        "{body}"
    );

    let r = wait(&server, "loop_workflow");
    assert_eq!(r["status"], json!("blocked"), "{r}");
    assert!(
        r["blocked_reason"]
            .as_str()
            .unwrap()
            .contains("ran out of fuel"),
        "{r}"
    );
    let r = wait(&server, "recursion");
    assert_eq!(r["status"], json!("blocked"), "{r}");
    assert!(
        r["blocked_reason"].as_str().unwrap().contains("stack"),
        "{r}"
    );
    let r = wait(&server, "log_spam");
    assert_eq!(r["status"], json!("completed"), "{r}");
    assert_eq!(r["result"], json!("survived"), "{r}");
    let r = wait(&server, "loop_activity");
    assert_eq!(r["status"], json!("completed"), "{r}");
    let h = history(&server, "loop_activity").to_string();
    assert!(h.contains("StartToCloseTimeout"), "{h}");
    // Still serving.
    let (status, _) = deploy(&server, wasm_bytes("testkit"));
    assert_eq!(status, 201);
}
