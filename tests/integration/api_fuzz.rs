//! The OpenAPI document against a real `pinion server`, by a schema-based fuzzer:
//! schemathesis generates requests from `GET /openapi.json` (valid ones, and ones that break
//! the schema on purpose), sends them to a seeded server, and checks every answer against
//! the document: no 5xx, every status and body as described, schema-breaking requests
//! refused, schema-valid ones accepted. The server must survive it and still stop cleanly.
//!
//! schemathesis and its dependencies are pinned in `tests/fuzz/requirements.txt`;
//! `scripts/test.sh` installs them into `target/fuzz-venv`. Its settings (the checks, the
//! seeded values it draws from, the statuses a schema cannot predict) are in
//! `tests/fuzz/schemathesis.toml`. By hand, against a server of your own:
//!
//! ```sh
//! target/fuzz-venv/bin/schemathesis --config-file tests/fuzz/schemathesis.toml run \
//!     http://127.0.0.1:7077/openapi.json -H "Authorization: Bearer $TOKEN" \
//!     --checks all --request-timeout 65 --max-examples 150 --generation-deterministic \
//!     --exclude-path /v1/events
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{http, post_wasm, token_file, ApiServer, TOKEN, WAIT};
use crate::common::*;

/// Test cases per operation and phase: about 4 400 requests, about 90 s on 2 cores.
const MAX_EXAMPLES: &str = "150";
/// The whole schemathesis run is killed (and the test fails) after this.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// How to install the pinned schemathesis, from the workspace root.
const INSTALL: &str = "python3 -m venv target/fuzz-venv && \
     target/fuzz-venv/bin/pip install -r tests/fuzz/requirements.txt";

fn fuzz_dir() -> PathBuf {
    root().join("tests").join("fuzz")
}

/// The pinned schemathesis in `target/fuzz-venv`; fails, saying how to install it, when it
/// is missing or not the pinned version.
fn schemathesis() -> PathBuf {
    let requirements = std::fs::read_to_string(fuzz_dir().join("requirements.txt")).unwrap();
    let pinned = requirements
        .lines()
        .find_map(|l| l.trim().strip_prefix("schemathesis=="))
        .expect("tests/fuzz/requirements.txt pins schemathesis==VERSION");
    let exe = root()
        .join("target")
        .join("fuzz-venv")
        .join("bin")
        .join("schemathesis");
    assert!(
        exe.exists(),
        "{} is missing: the API fuzz test needs schemathesis {pinned}. Run `bash scripts/test.sh` \
         (it installs it), or from the workspace root: {INSTALL}",
        exe.display()
    );
    let out = Command::new(&exe)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}; reinstall it: {INSTALL}", exe.display()));
    let version = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        version.trim(),
        format!("schemathesis, version {pinned}"),
        "{} is not the pinned version; run `bash scripts/test.sh`, or: {INSTALL}",
        exe.display()
    );
    exe
}

fn call(server: &ApiServer, method: &str, path: &str, body: Value) -> (u16, Value) {
    http(
        method,
        &format!("{}{path}", server.url),
        Some(&format!("Bearer {TOKEN}")),
        Some(("application/json", serde_json::to_vec(&body).unwrap())),
    )
}

/// Gives the fuzzer something to find: two modules under aliases, an instance that has
/// completed and four still running (a timer, two waiting for signals, one with a signal
/// queued). `tests/fuzz/schemathesis.toml` lists these ids and names: keep them in step.
fn seed(server: &ApiServer) {
    let (status, d) = post_wasm(server, "/v1/modules?alias=testkit", wasm_bytes("testkit"));
    assert_eq!(status, 201, "{d}");
    let (status, d) = post_wasm(server, "/v1/modules", wasm_bytes("hello-v1"));
    assert_eq!(status, 201, "{d}");
    let hello = d["hash"].as_str().unwrap();
    let (status, d) = call(
        server,
        "PUT",
        "/v1/aliases/hello",
        json!({ "module": hello }),
    );
    assert_eq!(status, 200, "{d}");
    for (id, ty, alias, input) in [
        ("echo", "Echo", "testkit", json!({ "x": [1, 2] })),
        ("sleeping", "Sleep", "testkit", json!({ "ms": 600_000 })),
        ("approval", "Approval", "testkit", json!({ "order": "o-1" })),
        ("collect", "Collect", "testkit", json!({ "count": 3 })),
        ("hello-1", "Hello", "hello", json!({ "wait_ms": 600_000 })),
    ] {
        let body = json!({ "workflow_type": ty, "alias": alias, "input": input, "id": id });
        let (status, d) = call(server, "POST", "/v1/instances", body);
        assert_eq!(status, 201, "{d}");
    }
    let (status, d) = call(
        server,
        "GET",
        "/v1/instances/echo/result?wait=60",
        Value::Null,
    );
    assert_eq!((status, &d["status"]), (200, &json!("completed")), "{d}");
    let (status, d) = call(
        server,
        "POST",
        "/v1/instances/collect/signals/add",
        json!({ "input": 5 }),
    );
    assert_eq!(status, 202, "{d}");
    // Queries answer once the first activation ran.
    wait_until("the approval workflow waits for its signal", WAIT, || {
        call(
            server,
            "POST",
            "/v1/instances/approval/queries/state",
            json!({}),
        )
        .1["result"]
            == "waiting"
    });
}

/// Runs `cmd`, its output into `log`, killing it after `limit`.
fn run_bounded(mut cmd: Command, log: &Path, limit: Duration) -> std::process::ExitStatus {
    let out = File::create(log).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start schemathesis");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis still running after {limit:?}; killed. Its output:\n{}",
                tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last part of a log, for failure messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(20_000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[start..].to_owned()
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_that_breaks_the_openapi_document() {
    let exe = schemathesis();
    let dir = TempDir::new("api-fuzz");
    let server = ApiServer::start(&dir.db(), Some(&token_file(&dir)));
    let t = Instant::now();
    seed(&server);
    eprintln!("seeded in {:?}", t.elapsed());

    let log = dir.path().join("schemathesis.log");
    let har = dir.path().join("requests.har");
    let mut cmd = Command::new(&exe);
    cmd.arg("--config-file")
        .arg(fuzz_dir().join("schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/openapi.json", server.url))
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", "all"])
        // `GET /v1/events` streams until the client leaves; a fuzzer would wait on it.
        .args(["--exclude-path", "/v1/events"])
        // A long poll may take 60 s.
        .args(["--request-timeout", "65"])
        .args(["--max-examples", MAX_EXAMPLES])
        // The same test cases every run (hypothesis derandomised), one request at a time.
        .arg("--generation-deterministic")
        .args(["--workers", "1"])
        .arg("--no-color")
        .args(["--report", "har", "--report-har-path"])
        .arg(&har)
        // It writes nothing else, but if it did, it would be into the temporary directory.
        .current_dir(dir.path());
    let started = Instant::now();
    let status = run_bounded(cmd, &log, RUN_LIMIT);
    let took = started.elapsed();
    let output = tail(&log);
    assert!(
        status.success(),
        "schemathesis found failures ({status}). Its output:\n{output}"
    );

    // Separately from schemathesis's verdict: every request it sent got an answer, and none
    // was a 5xx.
    let har: Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    let entries = har["log"]["entries"].as_array().unwrap();
    let statuses: Vec<u64> = entries
        .iter()
        .map(|e| e["response"]["status"].as_u64().unwrap_or(0))
        .collect();
    let bad: Vec<String> = entries
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| !(100..500).contains(*s))
        .map(|(e, s)| format!("{s} {} {}", e["request"]["method"], e["request"]["url"]))
        .collect();
    assert!(bad.is_empty(), "answers that are not 1xx-4xx: {bad:#?}");
    assert!(
        entries.len() > 1000,
        "only {} requests were sent:\n{output}",
        entries.len()
    );
    // The seeded values were used: requests reached the seeded instances.
    let reached = entries
        .iter()
        .zip(&statuses)
        .filter(|(e, s)| {
            let url = e["request"]["url"].as_str().unwrap_or("");
            **s < 300 && url.contains("/v1/instances/approval")
        })
        .count();
    assert!(reached > 0, "no request reached the seeded instances");
    let mut slowest: Vec<(f64, String)> = entries
        .iter()
        .map(|e| {
            let t = e["time"].as_f64().unwrap_or(0.0) / 1000.0;
            (
                t,
                format!("{} {}", e["request"]["method"], e["request"]["url"]),
            )
        })
        .collect();
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    slowest.truncate(5);
    eprintln!(
        "schemathesis: {} requests in {took:?}, {} of them 2xx; the slowest: {slowest:#?}",
        entries.len(),
        statuses.iter().filter(|s| (200..300).contains(*s)).count()
    );

    // The server is still up and answers, then stops cleanly on SIGTERM.
    let (status, d) = call(&server, "GET", "/v1/modules", Value::Null);
    assert_eq!(status, 200, "{d}");
    let t = Instant::now();
    let (exit, stderr) = server.terminate();
    eprintln!("the server stopped in {:?}", t.elapsed());
    assert!(exit.success(), "the server exited with {exit}:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// What earlier fuzz runs found, kept fixed.
#[test]
fn empty_selectors_of_a_stop_are_refused() {
    let dir = TempDir::new("api-fuzz-found");
    let server = ApiServer::start(&dir.db(), Some(&token_file(&dir)));
    // The document says `minLength: 1`; `{"workflow_type": ""}` was a 200 that stopped nothing.
    for verb in ["cancel", "terminate"] {
        for body in [
            json!({ "workflow_type": "" }),
            json!({ "module": "" }),
            json!({ "id": "" }),
            json!({ "workflow_type": "", "dry_run": true }),
        ] {
            let (status, d) = call(&server, "POST", &format!("/v1/{verb}"), body.clone());
            assert_eq!(
                (status, &d["error"]["code"]),
                (422, &json!("invalid_input")),
                "{verb} {body}: {d}"
            );
        }
    }
}
