//! The CLI's `--server` mode against local mode, verb by verb, and stopping a server:
//! SIGTERM, a workflow in flight, a long poll in flight.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use pinion_runtime::api::types::StartBody;
use pinion_runtime::api::{routes, Api, ErrorCode};
use pinion_runtime::InstanceStatus;
use serde_json::{json, Value};

use crate::api::{http, post_wasm, token_file, ApiServer, TOKEN, WAIT};
use crate::common::*;

/// Runs the CLI with `args` against the database, then against the server (token from
/// the file, or `$PINION_TOKEN`), and asserts the same exit code, stdout and stderr.
fn same_both_ways(db: &Path, server: &ApiServer, token: &Path, args: &[&str]) -> String {
    let local = pinion(db, args);
    let mut remote = Command::new(env!("CARGO_BIN_EXE_pinion"));
    remote.args(["--server", &server.url]);
    if args.len().is_multiple_of(2) {
        remote.arg("--token-file").arg(token);
    } else {
        remote.env("PINION_TOKEN", TOKEN);
    }
    // A database path that does not exist: nothing may be read from it.
    let remote = remote
        .args(["--db", "/nonexistent/pinion.db"])
        .args(args)
        .output()
        .unwrap();
    let text = |o: &Output| {
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(text(&remote), text(&local), "pinion {}", args.join(" "));
    text(&local).1
}

#[test]
fn the_cli_with_server_prints_and_exits_exactly_as_it_does_locally() {
    let dir = TempDir::new("api-cli");
    let db = dir.db();
    let token = token_file(&dir);
    let server = ApiServer::start(&db, Some(&token));
    let remote = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pinion"))
            .args(["--server", &server.url, "--token-file"])
            .arg(&token)
            .args(args)
            .output()
            .unwrap()
    };
    let v1 = wasm("hello-v1");
    let o = remote(&["deploy", v1.to_str().unwrap(), "--alias", "hello"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v1_hash = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    for (id, wait_ms) in [("fast", "1"), ("slow", "600000")] {
        let input = format!(r#"{{"wait_ms": {wait_ms}}}"#);
        let o = remote(&[
            "start", "Hello", "--alias", "hello", "--input", &input, "--id", id,
        ]);
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), id);
    }
    let o = remote(&["result", "fast", "--wait", "--timeout", "60"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "\"Success\"");
    wait_until("slow's timer", WAIT, || {
        String::from_utf8_lossy(&pinion(&db, &["history", "slow"]).stdout).contains("TimerStarted")
    });
    let v2 = wasm("hello-v2");
    let v2 = v2.to_str().unwrap();
    for args in [
        &["status", "fast"][..],
        &["status", "fast", "--json"],
        &["status", "nope"],
        &["status", "nope", "--json"],
        &["result", "fast"],
        &["result", "slow"],
        &["result", "slow", "--wait", "--timeout", "0"],
        &["list"],
        &["list", "--json", "--limit", "1"],
        &["list", "--status", "completed", "--json"],
        &["list", "--status", "bogus"],
        &["history", "fast"],
        &["history", "fast", "--json"],
        &["modules"],
        &["modules", "--json"],
        &["alias", "list"],
        &["alias", "list", "--json"],
        &["alias", "history", "nope"],
        &["replay", "--module", v2, "--status", "all"],
        &["replay", "--module", v2, "--json"],
        &[
            "replay",
            "--module",
            &v1_hash[..10],
            "--id",
            "fast",
            "--json",
        ],
        &[
            "upgrade",
            "--to",
            "hello",
            "--workflow-type",
            "Hello",
            "--dry-run",
        ],
        &[
            "upgrade",
            "--to",
            "hello",
            "--from",
            "nope",
            "--dry-run",
            "--json",
        ],
        &["gc", "--dry-run"],
        &["gc", "--dry-run", "--json"],
        &["deploy", v2, "--verify"],
        &["deploy", v2, "--verify", "--json"],
        &["signal", "slow", "poke", "--input", "1"],
        &["signal", "slow", "poke", "--json"],
        &["signal", "fast", "poke"],
        &["signal", "nope", "poke"],
        &["signal", "slow", "poke", "--input", "{oops"],
        &["query", "fast", "nope"],
        &["query", "nope", "x", "--json"],
        &["cancel", "slow", "--dry-run"],
        &["cancel", "fast", "--dry-run", "--json"],
        &["cancel", "fast"],
        &["terminate", "--workflow-type", "Hello", "--dry-run"],
        &["terminate", "--module", "hello", "--dry-run", "--json"],
        &["terminate", "--module", "nope", "--dry-run"],
    ] {
        same_both_ways(&db, &server, &token, args);
    }
    // The refused deploy stored nothing, either way.
    let modules: Value = serde_json::from_str(&same_both_ways(
        &db,
        &server,
        &token,
        &["modules", "--json"],
    ))
    .unwrap();
    assert_eq!(modules.as_array().unwrap().len(), 1);
    // Changes made through the server are the database's.
    let o = remote(&["deploy", v2]);
    let v2_hash = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let o = remote(&["alias", "ramp", "hello", &v2_hash, "25", "--json"]);
    let ramp: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        ramp,
        json!({ "alias": "hello", "ramp": { "module": v2_hash, "percent": 25 } })
    );
    same_both_ways(
        &db,
        &server,
        &token,
        &["alias", "history", "hello", "--json"],
    );
    same_both_ways(&db, &server, &token, &["modules"]);
    // Verbs that need files here refuse --server with a usage error.
    let o = remote(&["history", "export", "fast"]);
    assert_eq!(o.status.code(), Some(2));
    let client = server.client();
    assert_eq!(
        client.status("slow").unwrap().status,
        InstanceStatus::Running
    );
    // Stopping through the server: the answer the CLI prints, and the instance's end.
    let o = remote(&["terminate", "slow", "--reason", "done testing", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stopped: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        stopped["instances"][0],
        json!({ "id": "slow", "result": "terminated" })
    );
    let slow = client.status("slow").unwrap();
    assert_eq!(slow.status, InstanceStatus::Terminated);
    assert_eq!(slow.failure.unwrap().message, "done testing");
    let started = client
        .start(&StartBody {
            workflow_type: "Hello".into(),
            module: None,
            alias: Some("hello".into()),
            input: json!({ "wait_ms": 1 }),
            id: Some("typed".into()),
        })
        .unwrap();
    assert_eq!(started.id.0, "typed");
    assert_eq!(
        client.wait("typed", WAIT).unwrap().status,
        InstanceStatus::Completed
    );
}

#[test]
fn sigterm_stops_the_server_with_exit_0_and_a_workflow_in_flight_finishes_after_restart() {
    let dir = TempDir::new("api-sigterm");
    let db = dir.db();
    let token = token_file(&dir);
    let server = ApiServer::start(&db, Some(&token));
    let client = server.client();
    let (_, d) = post_wasm(&server, "/v1/modules", wasm_bytes("hello-v1"));
    let hash = d["hash"].as_str().unwrap().to_owned();
    client
        .start(&StartBody {
            workflow_type: "Hello".into(),
            module: Some(hash),
            alias: None,
            input: json!({ "wait_ms": 2000 }),
            id: Some("mid".into()),
        })
        .unwrap();
    wait_until("the instance's timer", WAIT, || {
        client
            .history("mid", None)
            .is_ok_and(|h| h.events.iter().any(|e| e.kind.name() == "TimerStarted"))
    });
    assert_eq!(
        client.status("mid").unwrap().status,
        InstanceStatus::Running
    );
    let (exit, stderr) = server.terminate();
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    // The server is gone: its port refuses, and a client says the server is unavailable.
    assert_eq!(
        client.status("mid").unwrap_err().code(),
        ErrorCode::Unavailable
    );

    let server = ApiServer::start(&db, Some(&token));
    let rec = server.client().wait("mid", WAIT).unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed);
    assert_eq!(rec.result.unwrap().json(), "\"Success\"");
    let (exit, _) = server.terminate();
    assert!(exit.success());
}

#[test]
fn a_long_poll_in_flight_at_shutdown_answers_at_once_with_the_instance_as_it_is() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    let dir = TempDir::new("api-drain");
    let p = open(&dir.db());
    let hash = p.deploy(&wasm_bytes("hello-v1")).unwrap().hash;
    // No worker runs: the instance stays running.
    p.start(&start_req("Hello", &hash.0, "null", "w")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The router the server serves, with a counter of requests that reached it.
    let entered = Arc::new(AtomicUsize::new(0));
    let counter = entered.clone();
    let (_head_tx, head_rx) = tokio::sync::watch::channel(0);
    let state = routes::AppState::new(Arc::new(p), Arc::new(|| {}), stop_rx.clone(), head_rx);
    let app = routes::router(state, None).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            counter.fetch_add(1, SeqCst);
            next.run(req)
        },
    ));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut stopping = stop_rx;
    let server = rt.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopping.wait_for(|s| *s).await;
            })
            .await
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(http(
            "GET",
            &format!("{url}/v1/instances/w/result?wait=60"),
            None,
            None,
        ));
    });
    wait_until("the long poll to reach the router", WAIT, || {
        entered.load(SeqCst) == 1
    });
    stop_tx.send(true).unwrap();
    // Far sooner than the 60 s it asked for.
    let (status, rec) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the long poll answers when the server stops");
    assert_eq!((status, &rec["status"]), (200, &json!("running")));
    rt.block_on(server)
        .unwrap()
        .expect("graceful shutdown completes");
}
