//! The HTTP API, over real HTTP against a real `pinion server` process: authentication,
//! deploy / start / long poll / history, cursor pagination, error shapes, the OpenAPI
//! document against the router. The helpers here start servers for `api_cli.rs` too.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use pinion_runtime::api::types::ListQuery;
use pinion_runtime::api::{routes, Api, Client, ErrorCode, Token};
use pinion_runtime::clock::ManualClock;
use serde_json::{json, Value};

use crate::common::*;

pub const TOKEN: &str = "test-token-Zq81";
pub const WAIT: Duration = Duration::from_secs(60);

/// A `pinion server` process on a free loopback port.
pub struct ApiServer {
    child: Child,
    pub url: String,
    stderr: mpsc::Receiver<String>,
}

impl ApiServer {
    /// Starts a server on `db`, authenticated with `token_file` (else `--no-auth`), and
    /// waits until it prints the address it listens on.
    pub fn start(db: &Path, token_file: Option<&Path>) -> ApiServer {
        ApiServer::start_with(db, token_file, &[], &[])
    }

    /// [`ApiServer::start`] with extra arguments before `server` (such as `--config F`)
    /// and extra environment variables.
    pub fn start_with(
        db: &Path,
        token_file: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ApiServer {
        ApiServer::start_full(db, token_file, args, &[], env)
    }

    /// [`ApiServer::start_with`] with extra arguments of `server` itself (after it).
    pub fn start_full(
        db: &Path,
        token_file: Option<&Path>,
        args: &[&str],
        server_args: &[&str],
        env: &[(&str, &str)],
    ) -> ApiServer {
        ApiServer::start_on(db, token_file, args, server_args, env, "127.0.0.1:0")
    }

    /// [`ApiServer::start_full`] listening on `listen` (to restart a server on its port).
    pub fn start_on(
        db: &Path,
        token_file: Option<&Path>,
        args: &[&str],
        server_args: &[&str],
        env: &[(&str, &str)],
        listen: &str,
    ) -> ApiServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pinion"));
        cmd.arg("--db").arg(db).args(args).envs(env.iter().copied());
        if let Some(f) = token_file {
            cmd.arg("--token-file").arg(f);
        }
        cmd.args(["server", "--listen", listen, "--activity-threads", "4"])
            .args(server_args);
        if token_file.is_none() && !server_args.contains(&"--tokens-file") {
            cmd.arg("--no-auth");
        }
        let mut child = cmd
            .env_remove("PINION_SERVER")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pinion server");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("pinion server listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        // Keep stderr drained (guest logs go there) and collected for assertions.
        let (etx, erx) = mpsc::channel();
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut all = String::new();
            let _ = stderr.read_to_string(&mut all);
            let _ = etx.send(all);
        });
        let url = rx
            .recv_timeout(WAIT)
            .expect("the server prints the address it listens on");
        ApiServer {
            child,
            url,
            stderr: erx,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(Token::new(TOKEN, "test").unwrap())).unwrap()
    }

    /// Sends SIGTERM; returns the exit status and everything the server wrote to stderr.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "send SIGTERM");
        let status = self.child.wait().expect("wait for the server");
        let stderr = self.stderr.recv_timeout(WAIT).unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn token_file(dir: &TempDir) -> PathBuf {
    let f = dir.path().join("token");
    write_private(&f, &format!("{TOKEN}\n"));
    f
}

/// One raw HTTP request; returns the status and the JSON body (`Null` when empty).
pub fn http(
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    macro_rules! auth {
        ($r:expr) => {
            match auth {
                Some(a) => $r.header("Authorization", a),
                None => $r,
            }
        };
    }
    let resp = match (method, body) {
        ("GET", _) => auth!(agent.get(url)).call(),
        ("DELETE", _) => auth!(agent.delete(url)).call(),
        (m, body) => {
            let r = match m {
                "PUT" => agent.put(url),
                "PATCH" => agent.patch(url),
                _ => agent.post(url),
            };
            let r = auth!(r);
            match body {
                Some((ctype, bytes)) => r.header("Content-Type", ctype).send(&bytes[..]),
                None => r.send_empty(),
            }
        }
    };
    let mut resp = resp.expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, value)
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn get(server: &ApiServer, path: &str) -> (u16, Value) {
    http(
        "GET",
        &format!("{}{path}", server.url),
        Some(&bearer()),
        None,
    )
}

fn post_json(server: &ApiServer, method: &str, path: &str, body: Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(&body).unwrap();
    http(
        method,
        &format!("{}{path}", server.url),
        Some(&bearer()),
        Some(("application/json", bytes)),
    )
}

pub fn post_wasm(server: &ApiServer, path: &str, bytes: Vec<u8>) -> (u16, Value) {
    http(
        "POST",
        &format!("{}{path}", server.url),
        Some(&bearer()),
        Some(("application/wasm", bytes)),
    )
}

/// Asserts an error answer: the status, and exactly `{"error": {"code", "message"}}`
/// with the code that status stands for.
#[track_caller]
fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
    let keys: BTreeSet<_> = body["error"].as_object().unwrap().keys().cloned().collect();
    assert!(
        keys.iter()
            .all(|k| ["code", "message", "details"].contains(&k.as_str())),
        "{body}"
    );
    let code = ErrorCode::parse(code).expect("a documented code");
    assert_eq!(code.status().as_u16(), status);
}

#[test]
fn requests_without_the_right_bearer_token_get_401_and_the_token_is_never_printed() {
    let dir = TempDir::new("api-auth");
    let server = ApiServer::start(&dir.db(), Some(&token_file(&dir)));
    let url = format!("{}/v1/modules", server.url);
    for auth in [
        None,
        Some("Bearer wrong-token".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
    ] {
        let answer = http("GET", &url, auth.as_deref(), None);
        assert_error(&answer, 401, "unauthorized");
        assert!(!answer.1.to_string().contains("wrong-token"));
    }
    // Unknown routes too: the route table is not probed without the token.
    assert_error(
        &http("GET", &format!("{}/nope", server.url), None, None),
        401,
        "unauthorized",
    );
    assert_error(&get(&server, "/nope"), 404, "not_found");
    let (status, body) = get(&server, "/v1/modules");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "modules": [] }));
    let (exit, stderr) = server.terminate();
    assert!(exit.success());
    assert!(!stderr.contains(TOKEN), "{stderr}");
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinion"))
        .args(args)
        .env_remove("PINION_SERVER")
        .output()
        .unwrap()
}

#[test]
fn the_server_refuses_to_start_without_a_token_unless_no_auth_on_loopback() {
    let dir = TempDir::new("api-noauth");
    let db = dir.db();
    let db = db.to_str().unwrap();
    let no_token = run(&["--db", db, "server", "--listen", "127.0.0.1:0"]);
    assert_eq!(no_token.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("--token-file"));
    let public = run(&["--db", db, "server", "--listen", "0.0.0.0:0", "--no-auth"]);
    assert_eq!(public.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&public.stderr).contains("loopback"));
    let empty = dir.path().join("empty");
    write_private(&empty, " \n");
    let o = run(&[
        "--db",
        db,
        "--token-file",
        empty.to_str().unwrap(),
        "server",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("empty"));
    // None of them touched the database.
    assert!(!dir.db().exists());
}

#[test]
fn deploy_start_long_poll_and_history_over_http() {
    let dir = TempDir::new("api-flow");
    let server = ApiServer::start(&dir.db(), Some(&token_file(&dir)));
    let (status, d) = post_wasm(&server, "/v1/modules", wasm_bytes("testkit"));
    assert_eq!(status, 201, "{d}");
    assert_eq!(d["new"], true);
    let hash = d["hash"].as_str().unwrap().to_owned();
    let (status, again) = post_wasm(&server, "/v1/modules", wasm_bytes("testkit"));
    assert_eq!((status, &again["new"]), (200, &json!(false)));

    let start = json!({ "workflow_type": "Echo", "module": &hash[..12], "input": {"x": [1, 2]}, "id": "e/1" });
    let (status, started) = post_json(&server, "POST", "/v1/instances", start);
    assert_eq!((status, started), (201, json!({ "id": "e/1" })));
    let (status, rec) = get(&server, "/v1/instances/e%2F1/result?wait=60");
    assert_eq!(status, 200, "{rec}");
    assert_eq!(rec["status"], "completed");
    assert_eq!(rec["result"], json!({"x": [1, 2]}));
    let (_, history) = get(&server, "/v1/instances/e%2F1/history");
    assert_eq!(history["format"], "pinion-history");
    assert_eq!(history["instance_id"], "e/1");
    let events = history["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "WorkflowStarted");
    assert_eq!(events.last().unwrap()["type"], "WorkflowCompleted");
    for (k, e) in events.iter().enumerate() {
        assert_eq!(e["id"], k as u64 + 1);
    }

    // A long poll that runs out answers 200 with the instance still running.
    let start =
        json!({ "workflow_type": "Sleep", "module": hash, "input": {"ms": 600000}, "id": "s" });
    assert_eq!(post_json(&server, "POST", "/v1/instances", start).0, 201);
    let (status, rec) = get(&server, "/v1/instances/s/result?wait=1");
    assert_eq!((status, &rec["status"]), (200, &json!("running")));
    // The typed client: its wait gives up with `timed_out` (exit 7 in the CLI).
    let err = server.client().wait("s", Duration::ZERO).unwrap_err();
    assert_eq!(err.code(), ErrorCode::TimedOut);
    assert_eq!(err.code().exit_code(), 7);
}

#[test]
fn listing_pages_through_every_instance_once_with_a_cursor() {
    let dir = TempDir::new("api-pages");
    // Seven instances created in the same millisecond: the cursor must break ties by id.
    {
        let p = open_with_clock(&dir.db(), Arc::new(ManualClock::new(1_700_000_000_000)));
        let hash = p.deploy(&wasm_bytes("testkit")).unwrap().hash;
        for i in 0..7 {
            let ty = if i % 2 == 0 { "Echo" } else { "Sleep" };
            p.start(&start_req(ty, &hash.0, r#"{"ms": 1}"#, &format!("p{i}")))
                .unwrap();
        }
    }
    let server = ApiServer::start(&dir.db(), Some(&token_file(&dir)));
    let (_, all) = get(&server, "/v1/instances?limit=100");
    let expected: Vec<Value> = all["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(expected.len(), 7);
    assert_eq!(all["next_cursor"], Value::Null);

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = "/v1/instances?limit=3".to_owned();
    loop {
        let (status, page) = get(&server, &path);
        assert_eq!(status, 200, "{page}");
        let rows = page["instances"].as_array().unwrap();
        sizes.push(rows.len());
        seen.extend(rows.iter().map(|r| r["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/instances?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, expected, "every instance once, in listing order");

    // Filters combine with pages; the typed client sees the same.
    let (_, echo) = get(&server, "/v1/instances?workflow_type=Echo&limit=2");
    assert_eq!(echo["instances"].as_array().unwrap().len(), 2);
    let page = server
        .client()
        .list(&ListQuery {
            workflow_type: Some("Echo".into()),
            limit: Some(2),
            cursor: echo["next_cursor"].as_str().map(str::to_owned),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.instances.len(), 2);
    assert!(page.next_cursor.is_none());
    assert!(page.instances.iter().all(|r| r.workflow_type == "Echo"));

    for bad in [
        "cursor=zz",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "status=sleeping",
        "color=red",
    ] {
        assert_error(
            &get(&server, &format!("/v1/instances?{bad}")),
            400,
            "bad_request",
        );
    }
}

#[test]
fn errors_have_the_documented_status_code_and_shape() {
    let dir = TempDir::new("api-errors");
    let server = ApiServer::start(&dir.db(), Some(&token_file(&dir)));
    let (_, d) = post_wasm(&server, "/v1/modules", wasm_bytes("hello-v1"));
    let hash = d["hash"].as_str().unwrap().to_owned();
    let start = |body: &str| {
        http(
            "POST",
            &format!("{}/v1/instances", server.url),
            Some(&bearer()),
            Some(("application/json", body.as_bytes().to_vec())),
        )
    };

    assert_error(&get(&server, "/v1/instances/nope"), 404, "not_found");
    assert_error(
        &get(&server, "/v1/instances/nope/result?wait=61"),
        400,
        "bad_request",
    );
    assert_error(&start("[]"), 422, "invalid_input");
    assert_error(
        &get(&server, "/v1/instances/nope/history"),
        404,
        "not_found",
    );
    assert_error(&get(&server, "/v1/aliases/nope/history"), 404, "not_found");
    assert_error(&start("{not json"), 400, "bad_request");
    assert_error(&start(r#"{"module": "ab"}"#), 422, "invalid_input");
    assert_error(
        &start(&format!(
            r#"{{"workflow_type": "Hello", "module": "{hash}", "colour": 1}}"#
        )),
        422,
        "invalid_input",
    );
    assert_error(
        &start(&format!(
            r#"{{"workflow_type": "Hello", "module": "{hash}", "alias": "a"}}"#
        )),
        422,
        "invalid_input",
    );
    assert_error(
        &start(&format!(
            r#"{{"workflow_type": "Nope", "module": "{hash}"}}"#
        )),
        404,
        "not_found",
    );
    assert_error(
        &start(&format!(
            r#"{{"workflow_type": "Hello", "module": "{hash}", "id": "a b"}}"#
        )),
        422,
        "invalid_input",
    );
    let ok = format!(
        r#"{{"workflow_type": "Hello", "module": "{hash}", "id": "dup", "input": {{"wait_ms": 600000}}}}"#
    );
    assert_eq!(start(&ok).0, 201);
    assert_error(&start(&ok), 409, "already_exists");
    assert_error(
        &post_wasm(&server, "/v1/modules", b"this is text".to_vec()),
        422,
        "invalid_module",
    );
    assert_error(
        &post_wasm(&server, "/v1/modules", b"\0asm\x01\0\0\0".to_vec()),
        422,
        "invalid_module",
    );
    // Wasm routes take bodies far over the 1 MiB JSON limit.
    assert_error(
        &post_wasm(&server, "/v1/modules", vec![0u8; 2 << 20]),
        422,
        "invalid_module",
    );
    assert_error(
        &post_wasm(&server, "/v1/modules?verify=maybe", wasm_bytes("hello-v1")),
        400,
        "bad_request",
    );
    assert_error(
        &post_wasm(&server, "/v1/replay", b"not wasm".to_vec()),
        422,
        "invalid_module",
    );
    assert_error(
        &post_wasm(&server, "/v1/replay", vec![]),
        400,
        "bad_request",
    );
    let big = format!(r#"{{"to": "{}"}}"#, "x".repeat(1 << 20));
    assert_error(
        &post_json(
            &server,
            "POST",
            "/v1/upgrade",
            serde_json::from_str(&big).unwrap(),
        ),
        413,
        "payload_too_large",
    );
    assert_error(
        &post_json(&server, "POST", "/v1/upgrade", json!({ "to": hash })),
        422,
        "invalid_input",
    );
    assert_error(
        &post_json(
            &server,
            "POST",
            "/v1/aliases/a/ramp",
            json!({ "module": hash, "percent": 50 }),
        ),
        404,
        "not_found",
    );
    assert_error(
        &post_json(&server, "PUT", "/v1/aliases/a", json!({ "module": "ffff" })),
        404,
        "not_found",
    );
    assert_error(
        &http(
            "DELETE",
            &format!("{}/v1/modules", server.url),
            Some(&bearer()),
            None,
        ),
        405,
        "method_not_allowed",
    );
    assert_error(&get(&server, "/v2/modules"), 404, "not_found");
}

#[test]
fn openapi_json_describes_exactly_the_routes_the_server_serves() {
    let dir = TempDir::new("api-openapi");
    let server = ApiServer::start(&dir.db(), Some(&token_file(&dir)));
    let (status, doc) = get(&server, "/openapi.json");
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((method.to_uppercase(), path.clone()));
            // Every operation documents its success and the errors every route can give.
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.keys().any(|c| c.starts_with('2')), "{path}");
            for code in ["400", "401", "500"] {
                assert!(responses.contains_key(code), "{method} {path} lacks {code}");
            }
        }
    }
    let table = routes::table();
    let served: BTreeSet<_> = table
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, served);
    // And the router really serves each one: no route answers the fallback's
    // "no route" 404 or a 405.
    for r in &table {
        let mut path = r.path.replace("{id}", "x").replace("{name}", "x");
        if r.path == "/v1/events" {
            path.push_str("?follow=false"); // else the stream stays open
        }
        let body = match r.method {
            "GET" | "DELETE" => None,
            _ => Some(("application/json", b"{}".to_vec())),
        };
        let (status, answer) = http(
            r.method,
            &format!("{}{path}", server.url),
            Some(&bearer()),
            body,
        );
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(
            status != 405 && !message.starts_with("no route"),
            "{} {}: {status} {answer}",
            r.method,
            r.path
        );
    }
}

/// A token file others can read is refused, by the server and by the client alike, with
/// the command that fixes it; nothing is opened or sent.
#[test]
fn a_token_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("token-perms");
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let db = dir.db();
    for args in [
        vec!["server", "--listen", "127.0.0.1:0"],
        vec!["--server", "http://127.0.0.1:9", "list"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_pinion"))
            .arg("--db")
            .arg(&db)
            .arg("--token-file")
            .arg(&token)
            .args(&args)
            .env_remove("PINION_SERVER")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(stderr.contains("chmod 600"), "{args:?}: {stderr}");
        assert!(!stderr.contains(TOKEN), "the token is never printed");
    }
    assert!(!db.exists(), "nothing was opened");
}

/// Scoped tokens: a reader reads, an operator also runs instances, an admin also deploys;
/// a known token beyond its role gets 403 naming the role needed, an unknown one 401.
#[test]
fn each_token_can_do_what_its_role_allows_and_no_more() {
    let dir = TempDir::new("roles");
    let tokens = dir.path().join("tokens.toml");
    write_private(
        &tokens,
        "[[token]]\nname = \"dash\"\nrole = \"reader\"\ntoken = \"read-Zq81\"\n\
         [[token]]\nname = \"ci\"\nrole = \"operator\"\ntoken = \"run-Zq81\"\n\
         [[token]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"all-Zq81\"\n",
    );
    let server = ApiServer::start_full(
        &dir.db(),
        None,
        &[],
        &["--tokens-file", tokens.to_str().unwrap()],
        &[],
    );
    let url = |p: &str| format!("{}{p}", server.url);
    // A refused upload is answered before its body is read: send a small one there.
    let deploy = |token: &str, bytes: Vec<u8>| {
        http(
            "POST",
            &url("/v1/modules"),
            Some(&format!("Bearer {token}")),
            Some(("application/wasm", bytes)),
        )
    };
    let start = |token: &str, id: &str, hash: &str| {
        http(
            "POST",
            &url("/v1/instances"),
            Some(&format!("Bearer {token}")),
            Some((
                "application/json",
                serde_json::to_vec(&json!({ "workflow_type": "Hello", "module": hash, "id": id }))
                    .unwrap(),
            )),
        )
    };
    // Reader: reads, nothing else.
    let (s, _) = http("GET", &url("/v1/instances"), Some("Bearer read-Zq81"), None);
    assert_eq!(s, 200);
    let (s, body) = deploy("read-Zq81", b"\0asm".to_vec());
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["code"], json!("forbidden"));
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("`dash`") && msg.contains("`admin`"), "{msg}");
    assert!(!msg.contains("read-Zq81"), "the token is never echoed");
    // Operator: runs instances, cannot deploy.
    assert_eq!(deploy("run-Zq81", b"\0asm".to_vec()).0, 403);
    // Admin: deploys.
    let (s, d) = deploy("all-Zq81", wasm_bytes("hello-v1"));
    assert_eq!(s, 201, "{d}");
    let hash = d["hash"].as_str().unwrap();
    assert_eq!(start("read-Zq81", "r-1", hash).0, 403);
    assert_eq!(start("run-Zq81", "o-1", hash).0, 201);
    let (s, _) = http(
        "POST",
        &url("/v1/instances/o-1/cancel"),
        Some("Bearer run-Zq81"),
        Some(("application/json", b"{}".to_vec())),
    );
    assert!(s < 300, "operator cancels: {s}");
    // Unknown token: 401, whatever it asks.
    assert_eq!(
        http("GET", &url("/v1/instances"), Some("Bearer nope"), None).0,
        401
    );
    // The CLI reports a 403 with its message and exit code 1.
    let token = dir.path().join("reader-token");
    write_private(&token, "read-Zq81\n");
    let o = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .args(["--server", &server.url, "--token-file"])
        .arg(&token)
        .args(["deploy", wasm("hello-v1").to_str().unwrap()])
        .env_remove("PINION_SERVER")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("needs `admin`"),
        "{o:?}"
    );
}
