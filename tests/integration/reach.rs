//! Activities that reach the world through grants: outgoing HTTP to a real service on
//! loopback, preopened directories, environment variables and secrets, and what happens to
//! everything that is not granted. The `reach` example module does the reaching.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use pinion_runtime::config::GrantSource;
use pinion_runtime::{InstanceStatus, Pinion, PinionConfig};
use serde_json::{json, Value};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(60);

/// A real HTTP service on loopback, on its own tokio runtime; dropped with the test.
pub struct Service {
    pub base: String,
    _rt: tokio::runtime::Runtime,
}

impl Service {
    pub fn start(router: Router) -> Service {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, router).await });
        Service {
            base: format!("http://{addr}"),
            _rt: rt,
        }
    }
}

/// The test service: a greeting, an echo, redirects in and out, a failing endpoint.
fn service() -> Service {
    let router = Router::new()
        .route("/hello", get(|| async { "hi from loopback" }))
        .route(
            "/echo",
            post(|headers: HeaderMap, body: String| async move {
                let who = headers
                    .get("x-who")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                axum::Json(json!({ "who": who, "got": body }))
            }),
        )
        .route(
            "/redirect-in",
            get(|| async { Redirect::temporary("/hello") }),
        )
        .route(
            // 127.0.0.2 is loopback too, but not granted: the hop must be refused before
            // anything connects to it.
            "/redirect-out",
            get(|| async { Redirect::temporary("http://127.0.0.2:9/stolen") }),
        )
        .route(
            "/unavailable",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "try later") }),
        )
        .route(
            "/big",
            get(|| async { "x".repeat(64 << 10).into_response() }),
        )
        .fallback(|r: Request| async move { (StatusCode::NOT_FOUND, r.uri().to_string()) });
    Service::start(router)
}

/// Opens an engine whose grants come from `config` (watched for changes).
fn open_granted(db: &Path, config: &Path) -> Pinion {
    let mut pc = PinionConfig::new(db);
    pc.grants = Arc::new(GrantSource::watch(config, Box::new(|e| panic!("config: {e}"))).unwrap());
    Pinion::open(pc).unwrap()
}

/// Runs `activity` of the reach module once through workflow `Call` and returns what the
/// workflow saw: `{"ok": ...}` or `{"err": {kind, message, attempts}}`.
fn call(p: &Pinion, hash: &str, id: &str, activity: &str, input: Value) -> Value {
    call_with(p, hash, id, json!({ "activity": activity, "input": input }))
}

fn call_with(p: &Pinion, hash: &str, id: &str, body: Value) -> Value {
    p.start(&start_req("Call", hash, &body.to_string(), id))
        .unwrap();
    let rec = p.wait(id, WAIT).unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{rec:?}");
    serde_json::from_str(rec.result.unwrap().json()).unwrap()
}

fn deploy_reach(p: &Pinion) -> String {
    p.deploy(&wasm_bytes("reach")).unwrap().hash.0
}

#[test]
fn granted_http_reaches_a_loopback_service_and_everything_else_is_refused() {
    let svc = service();
    let dir = TempDir::new("reach-http");
    let config = dir.path().join("pinion.toml");
    // `fetch` may reach the service; `fetch_ok` only through the second grant's pattern.
    std::fs::write(
        &config,
        format!(
            "[[grant]]\nmodules = [\"label:reach\"]\nactivities = [\"fetch\"]\nhttp = [\"{0}\"]\n\
             [[grant]]\nmodules = [\"reach\"]\nactivities = [\"fetch_ok\"]\nhttp = [\"{0}/unavailable\"]\n",
            svc.base
        ),
    )
    .unwrap();
    let p = open_granted(&dir.db(), &config);
    let hash = deploy_reach(&p);
    let _w = p.start_worker(quiet_worker()).unwrap();

    let r = call(
        &p,
        &hash,
        "get",
        "fetch",
        json!({ "url": format!("{}/hello", svc.base) }),
    );
    assert_eq!(r["ok"]["status"], json!(200), "{r}");
    assert_eq!(r["ok"]["body"], json!("hi from loopback"));

    let r = call(
        &p,
        &hash,
        "post",
        "fetch",
        json!({ "method": "POST", "url": format!("{}/echo", svc.base),
                "headers": [["x-who", "reach"]], "body": {"amount": 5} }),
    );
    let echoed: Value = serde_json::from_str(r["ok"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed, json!({ "who": "reach", "got": "{\"amount\":5}" }));

    // A same-origin redirect is followed (and checked): the answer comes from /hello.
    let r = call(
        &p,
        &hash,
        "redirect-in",
        "fetch",
        json!({ "url": format!("{}/redirect-in", svc.base) }),
    );
    assert_eq!(r["ok"]["body"], json!("hi from loopback"), "{r}");
    assert!(r["ok"]["url"].as_str().unwrap().ends_with("/hello"), "{r}");

    // A host that is not granted: refused, not retried, and the message names the URL and
    // what to add.
    let other = "http://127.0.0.1:9/x";
    let r = call(&p, &hash, "denied", "fetch", json!({ "url": other }));
    assert_eq!(r["err"]["kind"], json!("HttpDenied"), "{r}");
    assert_eq!(r["err"]["attempts"], json!(1), "{r}");
    let msg = r["err"]["message"].as_str().unwrap();
    assert!(
        msg.contains(other) && msg.contains("\"http://127.0.0.1:9\""),
        "{msg}"
    );
    assert!(
        msg.contains(&svc.base),
        "the message lists the grants in force: {msg}"
    );

    // A granted service redirecting to a host that is not granted: refused at the hop.
    let r = call(
        &p,
        &hash,
        "redirect-out",
        "fetch",
        json!({ "url": format!("{}/redirect-out", svc.base) }),
    );
    assert_eq!(r["err"]["kind"], json!("HttpDenied"), "{r}");
    let msg = r["err"]["message"].as_str().unwrap();
    assert!(
        msg.contains("redirect to http://127.0.0.2:9/stolen"),
        "{msg}"
    );

    // Grants are per activity type: `fetch_ok` may reach /unavailable only, and a 503 is an
    // ordinary retryable error (two attempts made).
    let r = call(
        &p,
        &hash,
        "hello-not-granted",
        "fetch_ok",
        json!({ "url": format!("{}/hello", svc.base) }),
    );
    assert_eq!(r["err"]["kind"], json!("HttpDenied"), "{r}");
    let r = call_with(
        &p,
        &hash,
        "unavailable",
        json!({ "activity": "fetch_ok", "input": { "url": format!("{}/unavailable", svc.base) }, "attempts": 2 }),
    );
    assert_eq!(r["err"]["kind"], json!("HttpServerError"), "{r}");
    assert_eq!(r["err"]["attempts"], json!(2), "{r}");

    // The workflow type itself never reaches the network: the module's workflow linker has
    // no way to, and nothing above needed it. A connection refused on a granted origin is
    // a retryable connection error.
    drop(svc);
}

#[test]
fn connection_errors_are_retryable_and_a_response_over_the_limit_is_refused() {
    let svc = service();
    let dir = TempDir::new("reach-limits");
    // A port nothing listens on, granted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let config = dir.path().join("pinion.toml");
    std::fs::write(
        &config,
        format!(
            "[[grant]]\nmodules = [\"reach\"]\nhttp = [\"{}\", \"{closed_url}\"]\n",
            svc.base
        ),
    )
    .unwrap();
    let mut pc = PinionConfig::new(dir.db());
    pc.grants = Arc::new(GrantSource::watch(&config, Box::new(|e| panic!("{e}"))).unwrap());
    pc.limits.http_response_bytes = 16 << 10;
    let p = Pinion::open(pc).unwrap();
    let hash = deploy_reach(&p);
    let _w = p.start_worker(quiet_worker()).unwrap();

    let r = call_with(
        &p,
        &hash,
        "refused",
        json!({ "activity": "fetch", "input": { "url": format!("{closed_url}/x") }, "attempts": 2 }),
    );
    assert_eq!(r["err"]["kind"], json!("HttpConnect"), "{r}");
    assert_eq!(r["err"]["attempts"], json!(2), "retried: {r}");

    let r = call(
        &p,
        &hash,
        "big",
        "fetch",
        json!({ "url": format!("{}/big", svc.base) }),
    );
    assert_eq!(r["err"]["kind"], json!("HttpTooLarge"), "{r}");
    assert!(
        r["err"]["message"]
            .as_str()
            .unwrap()
            .contains("16384 bytes"),
        "{r}"
    );
}

#[test]
fn granted_directories_are_the_only_files_an_activity_can_touch() {
    let dir = TempDir::new("reach-files");
    let data = dir.path().join("data");
    let ro = dir.path().join("ro");
    let outside = dir.path().join("outside");
    for d in [&data, &ro, &outside] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(ro.join("price.txt"), "12.50").unwrap();
    std::fs::write(outside.join("secret.txt"), "not yours").unwrap();
    std::os::unix::fs::symlink(&outside, data.join("escape")).unwrap();
    let config = dir.path().join("pinion.toml");
    std::fs::write(
        &config,
        "[[grant]]\nmodules = [\"reach\"]\ndirs = [{ host = \"data\", guest = \"/data\", mode = \"rw\" }, { host = \"ro\", guest = \"/ro\" }]\n",
    )
    .unwrap();
    let p = open_granted(&dir.db(), &config);
    let hash = deploy_reach(&p);
    let _w = p.start_worker(quiet_worker()).unwrap();
    let write = |id: &str, path: &str| {
        call(
            &p,
            &hash,
            id,
            "write_file",
            json!({ "path": path, "content": "receipt" }),
        )
    };

    let r = write("w-ok", "/data/receipt.txt");
    assert_eq!(r["ok"], json!(7), "{r}");
    assert_eq!(
        std::fs::read_to_string(data.join("receipt.txt")).unwrap(),
        "receipt"
    );
    let r = call(
        &p,
        &hash,
        "r-ro",
        "read_file",
        json!({ "path": "/ro/price.txt" }),
    );
    assert_eq!(r["ok"], json!("12.50"), "{r}");
    let r = call(&p, &hash, "ls", "list_dir", json!({ "path": "/data" }));
    assert_eq!(r["ok"], json!(["escape", "receipt.txt"]), "{r}");

    // Read-only stays read-only; nothing outside the grants is reachable, whatever the path.
    for (id, path) in [
        ("w-ro", "/ro/new.txt"),
        ("w-dotdot", "/data/../outside/new.txt"),
        ("w-abs", "/tmp/pinion-reach-new.txt"),
        ("w-symlink", "/data/escape/new.txt"),
        ("w-rel", "new.txt"),
    ] {
        let r = write(id, path);
        assert_eq!(r["err"]["kind"], json!("Io"), "{id} {path}: {r}");
    }
    for (id, path) in [
        ("r-symlink", "/data/escape/secret.txt"),
        ("r-dotdot", "/data/../outside/secret.txt"),
        ("r-etc", "/etc/passwd"),
    ] {
        let r = call(&p, &hash, id, "read_file", json!({ "path": path }));
        assert_eq!(r["err"]["kind"], json!("Io"), "{id} {path}: {r}");
    }
    assert!(!ro.join("new.txt").exists());
    assert!(!outside.join("new.txt").exists());
    assert!(!Path::new("/tmp/pinion-reach-new.txt").exists());
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing was written outside the grant"
    );
}

#[test]
fn without_a_grant_an_activity_sees_no_files_no_environment_and_no_network() {
    let svc = service();
    let dir = TempDir::new("reach-none");
    let p = open(&dir.db());
    let hash = deploy_reach(&p);
    let _w = p.start_worker(quiet_worker()).unwrap();
    let r = call(&p, &hash, "env", "env_all", Value::Null);
    assert_eq!(
        r["ok"],
        json!([]),
        "the server's own environment is not leaked: {r}"
    );
    let r = call(
        &p,
        &hash,
        "http",
        "fetch",
        json!({ "url": format!("{}/hello", svc.base) }),
    );
    assert_eq!(r["err"]["kind"], json!("HttpDenied"), "{r}");
    assert!(
        r["err"]["message"]
            .as_str()
            .unwrap()
            .contains("granted no HTTP at all"),
        "{r}"
    );
    let r = call(
        &p,
        &hash,
        "file",
        "read_file",
        json!({ "path": "/etc/hostname" }),
    );
    assert_eq!(r["err"]["kind"], json!("Io"), "{r}");
}
