//! `pinion markers` and `GET /v1/markers` through a real server on loopback: the same
//! census as the engine's, behind the token, and the same text locally and over `--server`.

use std::process::Command;

use pinion_runtime::api::types::StartBody;
use pinion_runtime::api::Api;
use pinion_runtime::EventKind;
use serde_json::{json, Value};

use crate::api::{http, post_wasm, token_file, ApiServer, TOKEN, WAIT};
use crate::common::*;

#[test]
fn the_census_is_served_behind_the_token_and_printed_the_same_over_server() {
    let dir = TempDir::new("census-api");
    let db = dir.db();
    let token = token_file(&dir);
    let server = ApiServer::start(&db, Some(&token));
    let (_, d) = post_wasm(&server, "/v1/modules", wasm_bytes("census"));
    let hash = d["hash"].as_str().unwrap().to_owned();
    let client = server.client();
    for (id, version) in [("none", -1), ("one", 1), ("two", 2)] {
        client
            .start(&StartBody {
                workflow_type: "Versioned".into(),
                module: Some(hash.clone()),
                alias: None,
                input: json!({"version": version, "wait_ms": 3_600_000}),
                id: Some(id.into()),
            })
            .unwrap();
    }
    for id in ["none", "one", "two"] {
        wait_until("the instance to sleep", WAIT, || {
            client
                .history(id, None)
                .unwrap()
                .events
                .iter()
                .any(|e| matches!(e.kind, EventKind::TimerStarted { .. }))
        });
    }

    let url = format!("{}/v1/markers?workflow_type=Versioned", server.url);
    let (status, _) = http("GET", &url, None, None);
    assert_eq!(status, 401, "the census needs the token");
    let (status, body) = http("GET", &url, Some(&format!("Bearer {TOKEN}")), None);
    assert_eq!(status, 200, "{body}");
    let paths: Vec<(i64, u64)> = body["markers"][0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["version"].as_i64().unwrap(),
                p["instances"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(paths, [(-1, 1), (1, 1), (2, 1)]);
    assert_eq!(
        body["markers"][0]["old_branch_deletable"],
        Value::Bool(false)
    );
    let (status, body) = http(
        "GET",
        &format!("{}/v1/markers?bogus=1", server.url),
        Some(&format!("Bearer {TOKEN}")),
        None,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(
        "GET",
        &format!("{}/v1/markers?module=ffffffffffff", server.url),
        Some(&format!("Bearer {TOKEN}")),
        None,
    );
    assert_eq!(status, 404, "{body}");

    // The client decodes what the server sent.
    let c = client.markers(&Default::default()).unwrap();
    assert_eq!(c.markers[0].versions_needed, [-1, 1, 2]);

    // The CLI prints the same locally and over --server.
    let args = ["markers", "--workflow-type", "Versioned"];
    let local = pinion(&db, &args);
    let remote = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .args(["--server", &server.url, "--db", "/nonexistent/pinion.db"])
        .arg("--token-file")
        .arg(&token)
        .args(args)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&local.stdout).into_owned();
    assert!(local.status.success(), "{local:?}");
    assert_eq!(out, String::from_utf8_lossy(&remote.stdout), "{remote:?}");
    assert!(out.contains("Versioned  version:MyChange"), "{out}");
    assert!(out.contains("DEFAULT_VERSION (no marker)"), "{out}");
    assert!(out.contains("keep the DEFAULT_VERSION branch"), "{out}");

    // Usage errors exit 2; an unknown module is a clear error.
    let bad = pinion(&db, &["markers", "--include-ended=maybe"]);
    assert_eq!(bad.status.code(), Some(2));
    let unknown = pinion(&db, &["markers", "--module", "ffffffffffff"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("ffffffffffff"),
        "{unknown:?}"
    );
}
