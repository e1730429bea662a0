//! Long operations that do not hold a request: replays, verifies and upgrades run as jobs
//! (`job=true`, what the CLI uses over `--server`) that report progress and keep their
//! result; and a request that runs past the server's request timeout is answered `504`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::common::*;
use crate::api::{http, ApiServer, WAIT};

fn call(server: &ApiServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    http(
        method,
        &format!("{}{path}", server.url),
        None,
        body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap())),
    )
}

/// Waits (long-polling) until the job has finished; its last view.
fn finished(server: &ApiServer, id: &str) -> Value {
    let mut job = Value::Null;
    wait_until("the job to finish", WAIT, || {
        let (status, j) = call(server, "GET", &format!("/v1/jobs/{id}?wait=5"), None);
        assert_eq!(status, 200, "{j}");
        job = j;
        ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap())
    });
    job
}

#[test]
fn replays_and_upgrades_run_as_jobs_that_count_their_instances_and_keep_their_result() {
    let dir = TempDir::new("jobs");
    let server = ApiServer::start(&dir.db(), None);
    let (status, d) = http(
        "POST",
        &format!("{}/v1/modules", server.url),
        None,
        Some(("application/wasm", wasm_bytes("testkit"))),
    );
    assert_eq!(status, 201, "{d}");
    let hash = d["hash"].as_str().unwrap().to_owned();
    for i in 0..5 {
        let body = json!({"workflow_type": "Sleep", "module": hash, "input": {"ms": 600000}, "id": format!("s{i}")});
        assert_eq!(call(&server, "POST", "/v1/instances", Some(body)).0, 201);
    }
    wait_until("the five timers", WAIT, || {
        (0..5).all(|i| {
            let (_, h) = call(&server, "GET", &format!("/v1/instances/s{i}/history"), None);
            h.to_string().contains("TimerStarted")
        })
    });

    // A replay job answers at once with the job; its result is the replay's answer.
    let (status, job) = call(
        &server,
        "POST",
        &format!("/v1/replay?job=true&module={hash}"),
        None,
    );
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["kind"], "replay");
    let id = job["id"].as_str().unwrap().to_owned();
    let done = finished(&server, &id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        (done["done"].as_u64(), done["total"].as_u64()),
        (Some(5), Some(5))
    );
    let reports = done["result"]["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 5);
    assert_eq!(done["result"]["summary"]["compatible"], 5, "{done}");

    // An upgrade job, dry run, to the module they are on: nothing to move, counted as such.
    let (status, up) = call(
        &server,
        "POST",
        "/v1/upgrade?job=true",
        Some(json!({"to": hash, "workflow_type": "Sleep", "dry_run": true})),
    );
    assert_eq!(status, 202, "{up}");
    let up = finished(&server, up["id"].as_str().unwrap());
    assert_eq!(up["state"], "succeeded", "{up}");
    assert_eq!(up["total"], 0);
    assert_eq!(up["result"]["results"], json!([]));

    // What a request gets wrong is refused at once, as without a job.
    let (status, bad) = call(&server, "POST", "/v1/replay?job=true&module=ffffff", None);
    assert_eq!(
        (status, &bad["error"]["code"]),
        (404, &json!("not_found")),
        "{bad}"
    );

    // A job that fails while running keeps its error, in the error shape: a deploy whose
    // verification finds an instance the new module cannot continue.
    let (status, v1) = http(
        "POST",
        &format!("{}/v1/modules", server.url),
        None,
        Some(("application/wasm", wasm_bytes("hello-v1"))),
    );
    assert_eq!(status, 201, "{v1}");
    let body = json!({"workflow_type": "Hello", "module": v1["hash"], "input": {"wait_ms": 600000}, "id": "hello"});
    assert_eq!(call(&server, "POST", "/v1/instances", Some(body)).0, 201);
    wait_until("hello's timer", WAIT, || {
        let (_, h) = call(&server, "GET", "/v1/instances/hello/history", None);
        h.to_string().contains("TimerStarted")
    });
    let (status, bad) = http(
        "POST",
        &format!("{}/v1/modules?verify=true&job=true", server.url),
        None,
        Some(("application/wasm", wasm_bytes("hello-v2"))),
    );
    assert_eq!(status, 202, "{bad}");
    let bad = finished(&server, bad["id"].as_str().unwrap());
    assert_eq!(bad["state"], "failed", "{bad}");
    assert_eq!(bad["error"]["code"], "verification_failed", "{bad}");
    assert_eq!(bad["error"]["details"]["summary"]["diverged"], 1, "{bad}");

    // The list, newest first and without results; cancelling a finished job changes
    // nothing; an unknown job is not found.
    let (_, list) = call(&server, "GET", "/v1/jobs", None);
    let kinds: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["deploy", "upgrade", "replay"]);
    assert!(list["jobs"][2].get("result").is_none());
    let (status, same) = call(&server, "POST", &format!("/v1/jobs/{id}/cancel"), None);
    assert_eq!((status, &same["state"]), (200, &json!("succeeded")));
    // Ids are `job-<n>-<this server process's tag>`.
    let tag = id.rsplit_once('-').unwrap().1.to_owned();
    let (status, nope) = call(&server, "GET", &format!("/v1/jobs/job-999-{tag}"), None);
    assert_eq!((status, &nope["error"]["code"]), (404, &json!("not_found")));

    // The CLI lists them and shows one; it runs its own replay as a job too.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pinion"))
            .args(["--server", &server.url])
            .args(args)
            .env_remove("PINION_SERVER")
            .output()
            .unwrap()
    };
    let o = cli(&["replay", "--module", &hash]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(&["jobs"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert_eq!(out.lines().count(), 1 + 4, "{out}");
    assert!(
        out.lines()
            .nth(1)
            .unwrap()
            .starts_with(&format!("job-4-{tag}")),
        "{out}"
    );
    let o = cli(&["jobs", &format!("job-3-{tag}")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("failed") && out.contains("verification_failed"),
        "{out}"
    );
    let o = cli(&["jobs", &format!("job-9-{tag}"), "--cancel"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let o = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .args(["--db"])
        .arg(dir.db())
        .args(["jobs"])
        .env_remove("PINION_SERVER")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "jobs are a server's: {o:?}");
}

#[test]
fn a_request_still_unanswered_at_the_request_timeout_gets_504_and_the_server_goes_on() {
    let dir = TempDir::new("request-timeout");
    let server = ApiServer::start_full(&dir.db(), None, &[], &["--request-timeout-ms", "300"], &[]);
    // A client that announces a body and never sends most of it.
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(
        b"POST /v1/replay HTTP/1.1\r\nHost: x\r\nContent-Type: application/wasm\r\nContent-Length: 100000\r\n\r\n\0asm",
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("}}") {
        match slow.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains(r#""code":"timed_out""#), "{answer}");
    assert!(answer.contains("job=true"), "it says what to do: {answer}");
    // Others are served meanwhile and after.
    let (status, _) = call(&server, "GET", "/v1/jobs", None);
    assert_eq!(status, 200);
}
