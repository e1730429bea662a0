//! The server's log: `tracing` lines on stderr, in text or JSON, filtered, with one line per
//! request and every guest line carrying its instance, module and source, never a token.

use serde_json::{json, Value};

use crate::api::{http, post_wasm, token_file, ApiServer, TOKEN};
use crate::common::*;

/// Runs FooBar v2 (its `SendNotification` activity writes "notification sent" to stderr)
/// on a server started with `log_args`, and returns everything the server logged.
fn served_log(log_args: &[&str]) -> String {
    let dir = TempDir::new("logs");
    let token = token_file(&dir);
    let server = ApiServer::start_with(&dir.db(), Some(&token), log_args, &[]);
    let (status, deployed) = post_wasm(&server, "/v1/modules", wasm_bytes("foobar-v2"));
    assert_eq!(status, 201, "{deployed}");
    let hash = deployed["hash"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {TOKEN}");
    let body = json!({ "workflow_type": "FooBar", "module": hash, "id": "logged" });
    let (status, started) = http(
        "POST",
        &format!("{}/v1/instances", server.url),
        Some(&auth),
        Some(("application/json", serde_json::to_vec(&body).unwrap())),
    );
    assert_eq!(status, 201, "{started}");
    let (status, result) = http(
        "GET",
        &format!("{}/v1/instances/logged/result?wait=30", server.url),
        Some(&auth),
        None,
    );
    assert_eq!(status, 200, "{result}");
    // A refused request is logged too.
    let (status, _) = http(
        "GET",
        &format!("{}/v1/instances?token={TOKEN}", server.url),
        Some("Bearer wrong"),
        None,
    );
    assert_eq!(status, 401);
    let (_, log) = server.terminate();
    log
}

fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[test]
fn json_logs_have_a_line_per_request_and_guest_lines_with_their_fields_and_no_token() {
    let log = served_log(&["--log-format", "json"]);
    assert!(!log.contains(TOKEN), "the token reached the log: {log}");
    let lines = json_lines(&log);
    for l in &lines {
        assert!(
            l["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{l}"
        );
        assert!(l["level"].is_string(), "{l}");
    }
    let requests: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request")
        .collect();
    let start = requests
        .iter()
        .find(|l| l["fields"]["method"] == "POST" && l["fields"]["path"] == "/v1/instances")
        .unwrap_or_else(|| panic!("no line for the start request: {log}"));
    assert_eq!(start["fields"]["status"], 201, "{start}");
    assert!(start["fields"]["ms"].as_f64().is_some(), "{start}");
    let refused = requests
        .iter()
        .find(|l| l["fields"]["status"] == 401)
        .unwrap_or_else(|| panic!("no line for the refused request: {log}"));
    assert_eq!(refused["fields"]["path"], "/v1/instances", "{refused}");
    let guest = lines
        .iter()
        .find(|l| l["target"] == "guest")
        .unwrap_or_else(|| panic!("no guest line: {log}"));
    let f = &guest["fields"];
    assert_eq!(f["message"], "notification sent", "{guest}");
    assert_eq!(f["instance"], "logged", "{guest}");
    assert_eq!(f["source"], "activity SendNotification", "{guest}");
    assert_eq!(f["attempt"], 1, "{guest}");
    assert_eq!(f["stream"], "stderr", "{guest}");
    assert_eq!(f["module"].as_str().map(str::len), Some(64), "{guest}");
}

#[test]
fn text_logs_are_timestamped_and_the_filter_drops_what_it_excludes() {
    let log = served_log(&[]);
    let request = log
        .lines()
        .find(|l| l.contains("request") && l.contains("method=POST"))
        .unwrap_or_else(|| panic!("no request line: {log}"));
    // `2026-12-04T17:30:00.123456Z  INFO pinion_runtime::api::server: request method=POST ...`
    let (time, rest) = request.split_once(' ').unwrap();
    assert!(
        time.len() >= 20 && time.ends_with('Z') && &time[10..11] == "T",
        "{request}"
    );
    assert!(rest.trim_start().starts_with("INFO"), "{request}");
    assert!(request.contains("status=201"), "{request}");
    assert!(
        log.lines()
            .any(|l| l.contains("notification sent") && l.contains("instance=logged")),
        "{log}"
    );

    let quiet = served_log(&["--log", "warn"]);
    assert!(
        !quiet.contains(" request"),
        "warn still logs requests: {quiet}"
    );
    assert!(!quiet.contains("notification sent"), "{quiet}");
}

#[test]
fn a_bad_log_filter_or_format_is_refused_with_exit_2() {
    let dir = TempDir::new("logs-bad");
    let out = pinion(&dir.db(), &["--log", "pinion_runtime=loud", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid log filter `pinion_runtime=loud`"),
        "{err}"
    );
    let out = pinion(&dir.db(), &["--log-format", "xml", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("xml") && err.contains("json"), "{err}");
}
