//! Reach: activities that touch the world through what the operator grants, for the tests
//! of grants, outgoing HTTP, files, environment and secrets.
//!
//! Workflow `Call` runs one activity once (no retries unless `attempts` says so) and returns
//! `{"ok": result}` or `{"err": {"kind", "message", "attempts"}}`, so a test sees exactly what
//! the activity saw.
//!
//! | activity | input | result |
//! | --- | --- | --- |
//! | `fetch` | `{method?, url, body?, headers?}` | `{status, body, url}` for any status; HTTP failures convert with `?` |
//! | `fetch_ok` | same | as `fetch`, but an error status fails the attempt (`error_for_status`) |
//! | `write_file` | `{path, content}` | bytes written; an I/O error fails with kind `Io` |
//! | `read_file` | `{path}` | the file's text; kind `Io` on error |
//! | `list_dir` | `{path}` | sorted entry names |
//! | `env` | `{name}` | the variable's value or `null` |
//! | `env_all` | ignored | every variable name the activity sees, sorted |
//! | `leak` | `{name}` | the variable's value, after printing it to stdout and stderr (secrets must come out redacted) |
//! | `fail_with` | `{name}` | fails with a message holding the variable's value |
//! | `count` | `{to, fail_at?, pause_ms?}` | heartbeats 1..=`to` (pausing between beats), resuming after the last count an earlier attempt heartbeated; the first attempt fails (retryable) once it has counted to `fail_at`; returns `{from, to, attempt}` |
//! | `go_silent` | `{beats, silence_ms}` | heartbeats `beats` times, then (first attempt only) sleeps `silence_ms` without a heartbeat; returns `{attempt, details}` |
//! | `until_cancelled` | `{marker}` | heartbeats every 20 ms for up to a minute; when told to stop, writes `cancelled after N heartbeats` to the file `marker` and returns the cancellation |
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml`
//! (produces `reach.wasm`).

use std::time::Duration;

use pinion_sdk::http::Request;
use pinion_sdk::{
    ActivityContext, ActivityError, ActivityOptions, RetryPolicy, WorkflowContext, WorkflowError,
};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct CallInput {
    activity: String,
    #[serde(default)]
    input: Value,
    #[serde(default = "one")]
    attempts: u32,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    heartbeat_timeout_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

async fn call(ctx: WorkflowContext, input: CallInput) -> Result<Value, WorkflowError> {
    let mut options = ActivityOptions::new().retry_policy(
        RetryPolicy::new()
            .maximum_attempts(input.attempts)
            .initial_interval(Duration::from_millis(50)),
    );
    if let Some(ms) = input.timeout_ms {
        options = options.start_to_close_timeout(Duration::from_millis(ms));
    }
    if let Some(ms) = input.heartbeat_timeout_ms {
        options = options.heartbeat_timeout(Duration::from_millis(ms));
    }
    match ctx
        .activity_with::<Value>(&input.activity, &input.input, options)
        .await
    {
        Ok(v) => Ok(json!({ "ok": v })),
        Err(e) => {
            Ok(json!({ "err": { "kind": e.kind, "message": e.message, "attempts": e.attempts } }))
        }
    }
}

#[derive(Deserialize)]
struct Fetch {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

fn get() -> String {
    "GET".into()
}

fn request(f: Fetch) -> Request {
    let mut r = Request::new(f.method, f.url);
    for (k, v) in f.headers {
        r = r.header(k, v);
    }
    match f.body {
        Some(b) => r.json(&b),
        None => r,
    }
}

fn fetch(f: Fetch) -> Result<Value, ActivityError> {
    let r = request(f).send()?;
    Ok(json!({ "status": r.status(), "body": r.text(), "url": r.url() }))
}

fn fetch_ok(f: Fetch) -> Result<Value, ActivityError> {
    let r = request(f).send()?.error_for_status()?;
    Ok(json!({ "status": r.status(), "body": r.text(), "url": r.url() }))
}

fn io(e: std::io::Error) -> ActivityError {
    ActivityError::non_retryable("Io", e.to_string())
}

#[derive(Deserialize)]
struct WriteFile {
    path: String,
    content: String,
}

fn write_file(w: WriteFile) -> Result<usize, ActivityError> {
    std::fs::write(&w.path, w.content.as_bytes()).map_err(io)?;
    Ok(w.content.len())
}

#[derive(Deserialize)]
struct PathInput {
    path: String,
}

fn read_file(p: PathInput) -> Result<String, ActivityError> {
    std::fs::read_to_string(&p.path).map_err(io)
}

fn list_dir(p: PathInput) -> Result<Vec<String>, ActivityError> {
    let mut names = std::fs::read_dir(&p.path)
        .map_err(io)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    names.sort();
    Ok(names)
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

fn env(n: Name) -> Result<Option<String>, ActivityError> {
    Ok(std::env::var(&n.name).ok())
}

fn env_all() -> Result<Vec<String>, ActivityError> {
    let mut names: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    names.sort();
    Ok(names)
}

fn leak(n: Name) -> Result<Option<String>, ActivityError> {
    let v = std::env::var(&n.name).ok();
    println!("the value of {} is {:?}", n.name, v);
    eprintln!("the value of {} is {:?}", n.name, v);
    Ok(v)
}

fn fail_with(n: Name) -> Result<(), ActivityError> {
    let v = std::env::var(&n.name).unwrap_or_default();
    Err(ActivityError::non_retryable(
        "Leak",
        format!("{} is {v}", n.name),
    ))
}

#[derive(Deserialize)]
struct Count {
    to: u32,
    #[serde(default)]
    fail_at: Option<u32>,
    #[serde(default)]
    pause_ms: u64,
}

fn count(ctx: ActivityContext, c: Count) -> Result<Value, ActivityError> {
    let from: u32 = ctx.heartbeat_details()?.unwrap_or(0);
    for i in from + 1..=c.to {
        std::thread::sleep(Duration::from_millis(c.pause_ms));
        ctx.heartbeat(&i)?;
        if ctx.attempt() == 1 && Some(i) == c.fail_at {
            return Err(ActivityError::retryable(
                "Interrupted",
                format!("stopped at {i}"),
            ));
        }
    }
    Ok(json!({ "from": from, "to": c.to, "attempt": ctx.attempt() }))
}

#[derive(Deserialize)]
struct GoSilent {
    beats: u32,
    silence_ms: u64,
}

fn go_silent(ctx: ActivityContext, g: GoSilent) -> Result<Value, ActivityError> {
    let details: Option<Value> = ctx.heartbeat_details()?;
    for i in 1..=g.beats {
        ctx.heartbeat(&json!({ "beat": i, "attempt": ctx.attempt() }))?;
    }
    if ctx.attempt() == 1 {
        std::thread::sleep(Duration::from_millis(g.silence_ms));
    }
    Ok(json!({ "attempt": ctx.attempt(), "details": details }))
}

#[derive(Deserialize)]
struct Marker {
    marker: String,
}

fn until_cancelled(ctx: ActivityContext, m: Marker) -> Result<String, ActivityError> {
    for i in 1..=3_000u32 {
        if let Err(e) = ctx.heartbeat(&i) {
            if e.is_cancelled() {
                let note = format!("cancelled after {i} heartbeats");
                std::fs::write(&m.marker, &note).map_err(io)?;
            }
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok("never cancelled".into())
}

pinion_sdk::export! {
    version: "reach",
    workflows: { "Call" => call },
    activities: {
        "fetch" => fetch,
        "fetch_ok" => fetch_ok,
        "write_file" => write_file,
        "read_file" => read_file,
        "list_dir" => list_dir,
        "env" => env,
        "env_all" => env_all,
        "leak" => leak,
        "fail_with" => fail_with,
        "count" => count,
        "go_silent" => go_silent,
        "until_cancelled" => until_cancelled,
    },
}
