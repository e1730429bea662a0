//! Heartbeats of long activities: details carried to the next attempt (also across a
//! crash of the server), the heartbeat timeout, and cancellation reaching a running attempt.
//! The `reach` example module's `count`, `go_silent` and `until_cancelled` activities do
//! the heartbeating.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pinion_runtime::api::Api;
use pinion_runtime::config::GrantSource;
use pinion_runtime::{InstanceStatus, Pinion, PinionConfig};
use serde_json::{json, Value};

use super::common::*;
use crate::api::ApiServer;

const WAIT: Duration = Duration::from_secs(60);

fn open_granted(db: &Path, config: &Path) -> Pinion {
    let mut pc = PinionConfig::new(db);
    pc.grants = Arc::new(GrantSource::watch(config, Box::new(|e| panic!("config: {e}"))).unwrap());
    Pinion::open(pc).unwrap()
}

/// Runs workflow `Call` of the reach module with `body`; returns what the workflow saw.
fn call(p: &Pinion, hash: &str, id: &str, body: Value) -> Value {
    p.start(&start_req("Call", hash, &body.to_string(), id))
        .unwrap();
    let rec = p.wait(id, WAIT).unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
    serde_json::from_str(rec.result.unwrap().json()).unwrap()
}

#[test]
fn a_retry_resumes_from_the_last_heartbeat_of_the_failed_attempt() {
    let dir = TempDir::new("hb-resume");
    let p = open(&dir.db());
    let hash = p.deploy(&wasm_bytes("reach")).unwrap().hash.0;
    let _w = p.start_worker(quiet_worker()).unwrap();
    // The first attempt counts 1, 2, 3 and fails; the second starts after 3.
    let r = call(
        &p,
        &hash,
        "resume",
        json!({ "activity": "count", "input": { "to": 5, "fail_at": 3 }, "attempts": 3 }),
    );
    assert_eq!(r["ok"], json!({ "from": 3, "to": 5, "attempt": 2 }), "{r}");
    // Without heartbeats nothing is carried: the same activity with no failure starts at 0.
    let r = call(
        &p,
        &hash,
        "fresh",
        json!({ "activity": "count", "input": { "to": 2 } }),
    );
    assert_eq!(r["ok"], json!({ "from": 0, "to": 2, "attempt": 1 }), "{r}");
}

#[test]
fn an_attempt_that_stops_heartbeating_times_out_and_the_retry_gets_its_details() {
    let dir = TempDir::new("hb-timeout");
    let p = open(&dir.db());
    let hash = p.deploy(&wasm_bytes("reach")).unwrap().hash.0;
    let _w = p.start_worker(quiet_worker()).unwrap();
    // Two heartbeats, then a minute of silence: abandoned after 300 ms of silence, not a
    // minute, and retried; the retry sees the last details.
    let silent = json!({ "beats": 2, "silence_ms": 60_000 });
    let r = call(
        &p,
        &hash,
        "silent-retried",
        json!({ "activity": "go_silent", "input": silent, "attempts": 2,
                "heartbeat_timeout_ms": 300, "timeout_ms": 120_000 }),
    );
    assert_eq!(
        r["ok"],
        json!({ "attempt": 2, "details": { "beat": 2, "attempt": 1 } }),
        "{r}"
    );
    // With no retry left the workflow sees the heartbeat timeout, as a timeout.
    let r = call(
        &p,
        &hash,
        "silent-final",
        json!({ "activity": "go_silent", "input": silent, "attempts": 1,
                "heartbeat_timeout_ms": 300, "timeout_ms": 120_000 }),
    );
    assert_eq!(r["err"]["kind"], json!("HeartbeatTimeout"), "{r}");
    assert!(
        r["err"]["message"]
            .as_str()
            .unwrap()
            .contains("no heartbeat for 300ms"),
        "{r}"
    );
    let history = p.history("silent-final").unwrap();
    assert!(
        history.iter().any(|e| e.kind.name() == "ActivityTimedOut"),
        "a heartbeat timeout is recorded as a timeout: {history:?}"
    );
}

/// Waits until `id`'s activity 1 is running and has written a heartbeat.
fn wait_heartbeating(p: &Pinion, id: &str) {
    wait_until("the activity heartbeats", WAIT, || {
        Api::status(p, id)
            .unwrap()
            .pending_activities
            .first()
            .is_some_and(|a| a.last_heartbeat_at_ms.is_some() && a.heartbeat_details.is_some())
    });
}

/// Waits until the file at `path` has content (the activity creates it, then writes).
fn wait_for_file(path: &Path) -> String {
    wait_until(&format!("{} to be written", path.display()), WAIT, || {
        std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
    });
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn cancelling_or_terminating_the_workflow_reaches_a_heartbeating_activity() {
    let dir = TempDir::new("hb-cancel");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let config = dir.path().join("pinion.toml");
    std::fs::write(
        &config,
        format!(
            "[[grant]]\nmodules = [\"reach\"]\ndirs = [{{ host = \"{}\", guest = \"/out\", mode = \"rw\" }}]\n",
            out.display()
        ),
    )
    .unwrap();
    let p = open_granted(&dir.db(), &config);
    let hash = p.deploy(&wasm_bytes("reach")).unwrap().hash.0;
    let _w = p.start_worker(quiet_worker()).unwrap();

    // Cancel: the workflow cancels its activity, and the attempt's next heartbeat says so.
    let body = json!({ "activity": "until_cancelled", "input": { "marker": "/out/cancelled" },
                       "timeout_ms": 120_000 });
    p.start(&start_req("Call", &hash, &body.to_string(), "cancel-me"))
        .unwrap();
    wait_heartbeating(&p, "cancel-me");
    assert!(p.cancel("cancel-me", "changed my mind").unwrap());
    let note = wait_for_file(&out.join("cancelled"));
    assert!(note.starts_with("cancelled after "), "{note}");
    let rec = p.wait("cancel-me", WAIT).unwrap();
    assert!(rec.status.is_closed(), "{rec:?}");

    // Terminate: the instance ends without running its code; the attempt learns it too.
    let body = json!({ "activity": "until_cancelled", "input": { "marker": "/out/terminated" },
                       "timeout_ms": 120_000 });
    p.start(&start_req("Call", &hash, &body.to_string(), "terminate-me"))
        .unwrap();
    wait_heartbeating(&p, "terminate-me");
    p.terminate("terminate-me", "enough").unwrap();
    let note = wait_for_file(&out.join("terminated"));
    assert!(note.starts_with("cancelled after "), "{note}");
}

/// Deploys the reach module with the CLI on `db`; returns its hash.
fn deploy_reach_cli(db: &Path) -> String {
    let out = pinion(db, &["deploy", wasm("reach").to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Starts workflow `Call` of module `hash` with `body` as instance `id` through `server`.
fn start_call(db: &Path, server: &ApiServer, hash: &str, body: &Value, id: &str) {
    let body = body.to_string();
    let started = pinion(
        db,
        &[
            "--server",
            &server.url,
            "start",
            "Call",
            "--module",
            hash,
            "--input",
            &body,
            "--id",
            id,
        ],
    );
    assert!(started.status.success(), "{started:?}");
}

#[test]
fn heartbeat_details_survive_a_crash_of_the_server() {
    let dir = TempDir::new("hb-crash");
    let db = dir.db();
    let hash = deploy_reach_cli(&db);
    let server = ApiServer::start(&db, None);
    // 100 counts 100 ms apart; details are written at most every 2.4 s (80% of the
    // heartbeat timeout). The timeout is long enough that a loaded machine (the suite
    // runs tests in parallel on two cores) never misses a beat: a missed beat would be an
    // attempt of its own, and this test counts attempts.
    let body = json!({ "activity": "count", "input": { "to": 100, "pause_ms": 100 },
                       "heartbeat_timeout_ms": 3_000, "timeout_ms": 120_000, "attempts": 3 });
    start_call(&db, &server, &hash, &body, "crash");
    let written = || -> u64 {
        let out = pinion(&db, &["--server", &server.url, "--json", "status", "crash"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["pending_activities"][0]["heartbeat_details"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until("a heartbeat past 5 is written", WAIT, || written() >= 5);
    let out = pinion(&db, &["--server", &server.url, "status", "crash"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("heartbeat"),
        "status shows the heartbeat: {text}"
    );
    drop(server); // SIGKILL, mid-attempt

    let server = ApiServer::start(&db, None);
    let out = pinion(
        &db,
        &[
            "--server",
            &server.url,
            "--json",
            "result",
            "crash",
            "--wait",
            "--timeout",
            "60",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ok = &v["result"]["ok"];
    // The crashed attempt counts as an attempt: the restarted server runs attempt 2.
    assert_eq!(ok["attempt"], json!(2), "{v}");
    assert_eq!(ok["to"], json!(100), "{v}");
    let from = ok["from"].as_u64().unwrap();
    assert!(
        from >= 5,
        "the attempt after the crash resumes from the last written heartbeat, not 0: {v}"
    );
}

#[test]
fn an_attempt_cut_short_by_a_crash_counts_and_the_retry_policy_decides() {
    let dir = TempDir::new("lost-attempt");
    let db = dir.db();
    let hash = deploy_reach_cli(&db);
    let server = ApiServer::start(&db, None);
    // One attempt allowed: the crash uses it up.
    let body = json!({ "activity": "count", "input": { "to": 600, "pause_ms": 100 },
                       "timeout_ms": 120_000, "attempts": 1 });
    start_call(&db, &server, &hash, &body, "lost");
    wait_until("the attempt to run", WAIT, || {
        let out = pinion(&db, &["--server", &server.url, "--json", "status", "lost"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["pending_activities"][0]["state"] == json!("running")
    });
    drop(server); // SIGKILL, mid-attempt

    let server = ApiServer::start(&db, None);
    let out = pinion(
        &db,
        &[
            "--server",
            &server.url,
            "--json",
            "result",
            "lost",
            "--wait",
            "--timeout",
            "60",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = &v["result"]["err"];
    assert_eq!(err["kind"], json!("AttemptLost"), "{v}");
    assert_eq!(err["attempts"], json!(1), "{v}");
    assert!(
        err["message"].as_str().unwrap().contains("interrupted"),
        "{v}"
    );
    let out = pinion(&db, &["history", "lost", "--json"]);
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == json!("ActivityTimedOut")),
        "a lost attempt is recorded as a timeout: {history}"
    );
}
