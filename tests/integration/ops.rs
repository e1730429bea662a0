//! `/metrics`, `/healthz` and `/readyz` on a real server: answered without the token, and
//! the metrics say what happened (instances by status, blocked ones by reason, activations,
//! attempts, group commits).

use serde_json::json;

use super::common::*;
use crate::api::{http, post_wasm, token_file, ApiServer, TOKEN};

/// GET `path` without any token: the status and the body as text.
fn get_text(server: &ApiServer, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(format!("{}{path}", server.url))
        .call()
        .expect("HTTP request");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

/// The value of the sample `name{labels}` (or `name` without labels) in `text`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{series}` in:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_and_health_answer_without_the_token_and_count_what_happened() {
    let dir = TempDir::new("ops");
    let token = token_file(&dir);
    let server = ApiServer::start(&dir.db(), Some(&token));
    let (status, body) = get_text(&server, "/healthz");
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) = get_text(&server, "/readyz");
    assert_eq!((status, body.trim()), (200, "ready"));
    // Everything else still needs the token.
    assert_eq!(get_text(&server, "/v1/instances").0, 401);

    let (status, d) = post_wasm(&server, "/v1/modules", wasm_bytes("testkit"));
    assert_eq!(status, 201, "{d}");
    let hash = d["hash"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {TOKEN}");
    let start = |ty: &str, input: serde_json::Value, id: &str| {
        let body = json!({ "workflow_type": ty, "module": hash, "input": input, "id": id });
        let (status, b) = http(
            "POST",
            &format!("{}/v1/instances", server.url),
            Some(&auth),
            Some(("application/json", serde_json::to_vec(&body).unwrap())),
        );
        assert_eq!(status, 201, "{b}");
    };
    start("Steps", json!({"n": 3}), "steps");
    start("Panic", json!(null), "panic");
    start("Approval", json!({"order": "o-1"}), "waiting");
    let (status, r) = http(
        "GET",
        &format!("{}/v1/instances/steps/result?wait=30", server.url),
        Some(&auth),
        None,
    );
    assert_eq!(status, 200, "{r}");

    let (status, text) = get_text(&server, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains(TOKEN));
    assert_eq!(sample(&text, "pinion_instances{status=\"completed\"}"), 1.0);
    assert_eq!(sample(&text, "pinion_instances{status=\"blocked\"}"), 1.0);
    assert_eq!(sample(&text, "pinion_instances{status=\"running\"}"), 1.0);
    assert_eq!(
        sample(&text, "pinion_blocked_instances{reason=\"trap\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "pinion_blocked_instances{reason=\"nondeterminism\"}"),
        0.0
    );
    assert_eq!(sample(&text, "pinion_runnable_instances"), 0.0);
    assert_eq!(sample(&text, "pinion_timers_due"), 0.0);
    // Three starts ran their first activation in the start; Steps took three more steps.
    assert!(sample(&text, "pinion_activations_total{source=\"new\"}") >= 2.0);
    assert!(
        sample(
            &text,
            "pinion_activity_attempts_total{outcome=\"completed\"}"
        ) >= 3.0
    );
    assert!(sample(&text, "pinion_activity_attempt_duration_seconds_count") >= 3.0);
    assert!(sample(&text, "pinion_step_duration_seconds_count") >= 1.0);
    assert!(sample(&text, "pinion_commit_batch_size_count") >= 3.0);
    assert!(sample(&text, "pinion_commit_duration_seconds_count") >= 3.0);
    assert!(text.ends_with("# EOF\n"));
}
