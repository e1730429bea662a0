//! Signals, queries, cancellation and termination over real HTTP against a `pinion server`
//! process: many concurrent workflows signalled through the API, and the status codes and
//! bodies of the control endpoints.

use std::collections::BTreeMap;

use pinion_runtime::api::types::{InputBody, StartBody, StopBody, StopResult, StopVerb};
use pinion_runtime::api::{Api, ErrorCode};
use pinion_runtime::InstanceStatus;
use serde_json::{json, Value};

use super::common::*;
use crate::api::{http, post_wasm, token_file, ApiServer, TOKEN, WAIT};

fn post(server: &ApiServer, path: &str, body: Value) -> (u16, Value) {
    http(
        "POST",
        &format!("{}{path}", server.url),
        Some(&format!("Bearer {TOKEN}")),
        Some(("application/json", serde_json::to_vec(&body).unwrap())),
    )
}

#[track_caller]
fn assert_code(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
}

#[test]
fn two_hundred_workflows_started_and_signalled_concurrently_over_http_all_complete() {
    const N: usize = 200;
    const THREADS: usize = 8;
    let dir = TempDir::new("api-200");
    let server = ApiServer::start(&dir.db(), Some(&token_file(&dir)));
    let (status, d) = post_wasm(&server, "/v1/modules", wasm_bytes("testkit"));
    assert_eq!(status, 201, "{d}");
    let hash = d["hash"].as_str().unwrap().to_owned();
    let client = server.client();

    // Each thread starts its share and signals each instance at once: some signals arrive
    // before the workflow waits for them (even before its first activation), some after.
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (client, hash) = (&client, &hash);
            s.spawn(move || {
                for i in (t..N).step_by(THREADS) {
                    let id = format!("order-{i}");
                    let started = client
                        .start(&StartBody {
                            workflow_type: "Approval".into(),
                            module: Some(hash.clone()),
                            alias: None,
                            input: json!({ "order": format!("o{i}") }),
                            id: Some(id.clone()),
                        })
                        .unwrap();
                    assert_eq!(started.id.0, id);
                    let sent = client
                        .signal(
                            &id,
                            "approve",
                            &InputBody {
                                input: json!(format!("approver-{i}")),
                            },
                        )
                        .unwrap();
                    assert_eq!(
                        (sent.id.0.as_str(), sent.signal.as_str()),
                        (&id[..], "approve")
                    );
                }
            });
        }
    });

    // Every instance completes with the approver its own signal named.
    let results: BTreeMap<usize, String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let client = &client;
                s.spawn(move || {
                    (t..N)
                        .step_by(THREADS)
                        .map(|i| {
                            let r = client.wait(&format!("order-{i}"), WAIT).unwrap();
                            assert_eq!(r.status, InstanceStatus::Completed, "{r:?}");
                            let result = r.result.unwrap().to_value();
                            (i, result.as_str().unwrap().to_owned())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(results.len(), N);
    for (i, r) in &results {
        assert_eq!(r, &format!("o{i} approved by approver-{i}"));
    }
    // Each signal is in its instance's history exactly once, and the query sees the end.
    for i in [0, N / 2, N - 1] {
        let id = format!("order-{i}");
        let h = client.history(&id, None).unwrap();
        let signals = h
            .events
            .iter()
            .filter(|e| e.kind.name() == "SignalReceived")
            .count();
        assert_eq!(signals, 1, "{id}");
        let answer = client.query(&id, "state", &InputBody::default()).unwrap();
        assert_eq!(answer.result, json!("approved"));
    }
    let (exit, _) = server.terminate();
    assert!(exit.success());
}

#[test]
fn signal_query_cancel_and_terminate_endpoints_answer_with_documented_codes() {
    let dir = TempDir::new("api-control");
    let server = ApiServer::start(&dir.db(), Some(&token_file(&dir)));
    let (_, d) = post_wasm(&server, "/v1/modules", wasm_bytes("testkit"));
    let hash = d["hash"].as_str().unwrap().to_owned();
    for (id, ty, input) in [
        ("a1", "Approval", json!({"order": "o1"})),
        ("a2", "Approval", json!({"order": "o2"})),
        ("c1", "Collect", json!({"count": 2})),
        ("s1", "Sleep", json!({"ms": 600000})),
        ("s2", "Sleep", json!({"ms": 600000})),
    ] {
        let body = json!({ "workflow_type": ty, "module": hash, "input": input, "id": id });
        assert_eq!(post(&server, "/v1/instances", body).0, 201);
    }

    // Signal: 202 with what was queued; a body is optional (input null).
    let answer = post(
        &server,
        "/v1/instances/c1/signals/add",
        json!({ "input": 40 }),
    );
    assert_eq!(answer, (202, json!({ "id": "c1", "signal": "add" })));
    let client = server.client();
    wait_until("c1 reads its first signal", WAIT, || {
        client
            .query("c1", "seen", &InputBody::default())
            .is_ok_and(|a| a.result == json!(1))
    });
    // Query: 200 with the handler's answer; nothing is written.
    let events = client.status("c1").unwrap().event_count;
    let answer = post(&server, "/v1/instances/c1/queries/total", json!({}));
    assert_eq!(
        answer,
        (200, json!({ "id": "c1", "query": "total", "result": 40 }))
    );
    assert_eq!(client.status("c1").unwrap().event_count, events);
    assert_eq!(
        post(
            &server,
            "/v1/instances/c1/signals/add",
            json!({ "input": 2 })
        )
        .0,
        202
    );
    assert_eq!(
        client.wait("c1", WAIT).unwrap().result.unwrap().to_value(),
        json!(42)
    );

    // Cancel one: the workflow cleans up (activity `release`) and ends cancelled.
    let answer = post(
        &server,
        "/v1/instances/a1/cancel",
        json!({ "reason": "out of stock" }),
    );
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(
        answer.1,
        json!({ "dry_run": false, "failed": 0,
                "instances": [{ "id": "a1", "result": "cancellation_requested" }] })
    );
    let r = client.wait("a1", WAIT).unwrap();
    assert_eq!(r.status, InstanceStatus::Cancelled);
    assert_eq!(r.failure.unwrap().message, "out of stock");

    // Bulk: a dry run lists and changes nothing; then terminate by workflow type.
    let dry = client
        .stop(
            StopVerb::Terminate,
            &StopBody {
                workflow_type: Some("Sleep".into()),
                dry_run: true,
                ..StopBody::default()
            },
        )
        .unwrap();
    let ids: Vec<_> = dry.instances.iter().map(|o| o.id.0.as_str()).collect();
    assert_eq!(ids, ["s1", "s2"]);
    assert!(dry
        .instances
        .iter()
        .all(|o| o.result == StopResult::WouldTerminate));
    assert_eq!(client.status("s1").unwrap().status, InstanceStatus::Running);
    let answer = post(
        &server,
        "/v1/terminate",
        json!({ "workflow_type": "Sleep", "module": &hash[..10], "reason": "bad release" }),
    );
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["failed"], 0);
    for id in ["s1", "s2"] {
        let r = client.status(id).unwrap();
        assert_eq!(r.status, InstanceStatus::Terminated);
        assert_eq!(r.failure.unwrap().message, "bad release");
    }

    // Errors, each with its documented status and code.
    assert_code(
        &post(&server, "/v1/instances/nope/signals/x", json!({})),
        404,
        "not_found",
    );
    assert_code(
        &post(&server, "/v1/instances/c1/signals/add", json!({})),
        409,
        "not_accepting",
    );
    assert_code(
        &post(&server, "/v1/instances/s1/terminate", json!({})),
        409,
        "not_accepting",
    );
    assert_code(
        &post(&server, "/v1/instances/c1/queries/nope", json!({})),
        404,
        "not_found",
    );
    assert_code(
        &post(
            &server,
            "/v1/instances/a2/queries/state",
            json!({ "input": [1] }),
        ),
        422,
        "invalid_input",
    );
    assert_code(
        &post(&server, "/v1/instances/a2/signals/x", json!({ "inptu": 1 })),
        422,
        "invalid_input",
    );
    assert_code(
        &post(&server, "/v1/cancel", json!({})),
        422,
        "invalid_input",
    );
    assert_code(
        &post(
            &server,
            "/v1/cancel",
            json!({ "id": "a2", "workflow_type": "Approval" }),
        ),
        422,
        "invalid_input",
    );
    assert_code(
        &post(&server, "/v1/terminate", json!({ "module": "ffff" })),
        404,
        "not_found",
    );
    // The typed client maps them to the CLI's exit codes.
    let e = client
        .signal("c1", "add", &InputBody::default())
        .unwrap_err();
    assert_eq!(
        (e.code(), e.code().exit_code()),
        (ErrorCode::NotAccepting, 4)
    );
    // a2 is still waiting: none of the refused requests touched it.
    assert_eq!(client.status("a2").unwrap().status, InstanceStatus::Running);
}
