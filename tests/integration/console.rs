//! The web console (`/ui`) in a real browser: Debian's headless Chromium, driven through
//! chromedriver's W3C WebDriver HTTP API, against a real `pinion server` with a token.
//!
//! The scenarios sign in with the token, start an instance and signal it through the
//! console (with its confirmation) until the instance page shows it completed, watch the
//! instances page follow the event stream, and open a blocked instance's divergence
//! report. Every wait polls the page's DOM with a bounded timeout. Screenshots go to
//! `target/console/*.png` (two of them are `docs/console-*.png`).
//!
//! Chromium and chromedriver are required, never skipped: `scripts/test.sh` installs them
//! (`apt-get install chromium chromium-driver`). The page-load figure of README's
//! Performance section comes from the ignored test at the bottom, which fills a database
//! with 100,000 instances; it prints what it measured and asserts nothing about speed.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{http, token_file, ApiServer, TOKEN};
use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless Chromium session.
struct Browser {
    driver: Child,
    session: String,
    agent: ureq::Agent,
    _profile: TempDir,
}

impl Browser {
    fn start() -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: apt-get install chromium chromium-driver (scripts/test.sh does)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        // It prints "ChromeDriver was started successfully on port N." once it listens.
        let stdout = driver.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("started successfully") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(WAIT).expect("chromedriver starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let profile = TempDir::new("chromium-profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1200,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let url = format!("http://127.0.0.1:{port}/session");
        let v = send(&agent, "POST", &url, Some(caps));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Browser {
            driver,
            session: format!("http://127.0.0.1:{port}/session/{session}"),
            agent,
            _profile: profile,
        }
    }

    /// One WebDriver command on the session; panics on a WebDriver error.
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = self.try_cmd(method, path, body);
        if let Some(e) = v.get("error") {
            panic!("WebDriver {method} {path}: {e}: {}", v["message"]);
        }
        v
    }

    /// The command's `value`: the answer, or the error object.
    fn try_cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        send(&self.agent, method, &url, body)["value"].take()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> Option<String> {
        let v = self.try_cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// The text of the first element matching `css`, or None (absent, or gone mid-read
    /// because a live update replaced it).
    fn text(&self, css: &str) -> Option<String> {
        let el = self.find(css)?;
        let v = self.try_cmd("GET", &format!("/element/{el}/text"), None);
        v.as_str().map(str::to_owned)
    }

    /// Polls until `css` exists and its text satisfies `ok`; returns the text.
    fn wait_text(&self, what: &str, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(t) = self.text(css).filter(|t| ok(t)) {
                return t;
            }
            if start.elapsed() > WAIT {
                self.screenshot("timeout");
                panic!(
                    "timed out after {WAIT:?} waiting for {what} ({css}: {:?}); screenshot in target/console/timeout.png",
                    self.text(css)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for(&self, what: &str, css: &str) -> String {
        self.wait_text(what, css, |_| true)
    }

    fn click(&self, css: &str) {
        let el = self
            .find(css)
            .unwrap_or_else(|| panic!("no {css} to click"));
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let el = self
            .find(css)
            .unwrap_or_else(|| panic!("no {css} to type into"));
        self.cmd("POST", &format!("/element/{el}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn displayed(&self, css: &str) -> bool {
        self.find(css).is_some_and(|el| {
            self.try_cmd("GET", &format!("/element/{el}/displayed"), None) == json!(true)
        })
    }

    fn script(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }

    /// Saves the window as `target/console/NAME.png`.
    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("base64 PNG"));
        let dir = root().join("target/console");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Opens the console and signs in with the test token.
    fn sign_in(&self, server: &ApiServer) {
        self.goto(&format!("{}/ui", server.url));
        self.wait_for("the sign-in form", "#login-form");
        self.type_into("#token", TOKEN);
        self.click("#login-submit");
        self.wait_for("the instances page", "#instances-body .pager");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.try_cmd("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn send(agent: &ureq::Agent, method: &str, url: &str, body: Option<Value>) -> Value {
    let resp = match method {
        "GET" => agent.get(url).call(),
        "DELETE" => agent.delete(url).call(),
        _ => agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body.unwrap_or(json!({})).to_string().as_bytes()),
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("WebDriver answer not JSON ({e}): {text}"))
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !b"=\r\n".contains(c)).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn auth() -> String {
    format!("Bearer {TOKEN}")
}

fn deploy(server: &ApiServer, guest: &str, alias: Option<&str>) -> String {
    let query = alias.map(|a| format!("?alias={a}")).unwrap_or_default();
    let (status, d) = http(
        "POST",
        &format!("{}/v1/modules{query}", server.url),
        Some(&auth()),
        Some(("application/wasm", wasm_bytes(guest))),
    );
    assert!(status == 201 || status == 200, "{status} {d}");
    d["hash"].as_str().unwrap().to_owned()
}

fn start(server: &ApiServer, body: Value) {
    let (status, v) = http(
        "POST",
        &format!("{}/v1/instances", server.url),
        Some(&auth()),
        Some(("application/json", body.to_string().into_bytes())),
    );
    assert_eq!(status, 201, "{v}");
}

fn instance(server: &ApiServer, id: &str) -> Value {
    let (status, v) = http(
        "GET",
        &format!("{}/v1/instances/{id}", server.url),
        Some(&auth()),
        None,
    );
    assert_eq!(status, 200, "{v}");
    v
}

#[test]
fn console_assets_are_served_without_a_token_with_security_headers_and_the_api_still_needs_one() {
    let dir = TempDir::new("console-assets");
    let server = ApiServer::start(&dir.db(), Some(&token_file(&dir)));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for path in pinion_runtime::api::ui::paths() {
        let resp = agent.get(format!("{}{path}", server.url)).call().unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        assert!(header("set-cookie").is_empty(), "{path}: no cookies");
        let want = if path.ends_with(".js") {
            "text/javascript"
        } else if path.ends_with(".css") {
            "text/css"
        } else {
            "text/html"
        };
        assert!(header("content-type").starts_with(want), "{path}");
    }
    // The data stays behind the token.
    let (status, _) = http("GET", &format!("{}/v1/instances", server.url), None, None);
    assert_eq!(status, 401);
    let (status, _) = http("GET", &format!("{}/ui/secret", server.url), None, None);
    assert_eq!(
        status, 401,
        "only the console's own files are outside the token check"
    );
}

#[test]
fn console_signs_in_starts_an_instance_signals_it_with_confirmation_and_shows_it_completed() {
    let dir = TempDir::new("console-signal");
    let server = ApiServer::start(&dir.db(), Some(&token_file(&dir)));
    deploy(&server, "testkit", Some("testkit"));
    let b = Browser::start();

    // Sign in: a wrong token is refused, the right one opens the instances page.
    b.goto(&format!("{}/ui", server.url));
    b.wait_for("the sign-in form", "#login-form");
    b.type_into("#token", "not-the-token");
    b.click("#login-submit");
    b.wait_text("the refusal", "#login-error", |t| t.contains("refused"));
    b.screenshot("login");
    b.type_into("#token", TOKEN);
    b.click("#login-submit");
    b.wait_for("the instances page", "#instances-body .pager");
    assert_eq!(
        b.script("return sessionStorage.getItem('pinion.token')"),
        json!(TOKEN),
        "the token is kept in the session"
    );
    assert_eq!(b.script("return document.cookie"), json!(""));

    // Start an Approval through the console's form.
    b.click("#start summary");
    b.type_into("#start-type", "Approval");
    b.type_into("#start-target", "testkit");
    b.type_into("#start-input", r#"{"order": "o-1"}"#);
    b.type_into("#start-id", "order-1");
    b.click("#start-submit");
    b.wait_text("the instance running", "#instance-status", |t| {
        t == "running"
    });
    b.wait_for(
        "the first activation in the timeline",
        "#timeline li[data-type='WorkflowTaskCompleted']",
    );

    // Signal it; going back from the confirmation sends nothing.
    b.type_into("#signal-name", "approve");
    b.type_into("#signal-input", r#""<b>alice</b>""#);
    b.click("#signal-send");
    let question = b.wait_text("the confirmation", "#confirm-text", |t| !t.is_empty());
    assert!(question.contains("approve"), "{question}");
    assert!(b.displayed("#confirm"));
    b.click("#confirm-back");
    b.wait_text("nothing sent", "#action-message", |t| t == "Nothing sent.");
    assert_eq!(instance(&server, "order-1")["status"], json!("running"));
    b.click("#signal-send");
    b.wait_text("the confirmation", "#confirm-text", |t| !t.is_empty());
    b.click("#confirm-ok");

    b.wait_text("the instance completed", "#instance-status", |t| {
        t == "completed"
    });
    let result = b.wait_for("the result", "#instance-result");
    // The signal's input, markup included, is shown as text, never parsed as HTML.
    assert_eq!(result, r#""o-1 approved by <b>alice</b>""#);
    let signal = b.wait_for(
        "the signal in the timeline",
        "#timeline li[data-type='SignalReceived']",
    );
    assert!(signal.contains("approve"), "{signal}");
    assert_eq!(
        b.script("return document.querySelectorAll('#instance-result b, #timeline b b').length"),
        json!(0)
    );
    b.screenshot("instance-completed");
    assert_eq!(instance(&server, "order-1")["status"], json!("completed"));

    // The instances page follows the event stream: an instance started elsewhere appears
    // without a reload.
    b.goto(&format!("{}/ui#/instances", server.url));
    b.wait_text("order-1 in the list", "tr[data-id='order-1']", |t| {
        t.contains("completed")
    });
    b.wait_text("the stream", "#live", |t| t == "live");
    start(
        &server,
        json!({"workflow_type": "Echo", "alias": "testkit", "input": {"x": 1}, "id": "echo-1"}),
    );
    b.wait_text("echo-1 in the list, live", "tr[data-id='echo-1']", |t| {
        t.contains("completed")
    });
    b.screenshot("instances");
}

/// A Hello instance on hello-v1 waiting on its timer, then pointed at hello-v2 behind the
/// engine's back (what pinning prevents in normal operation, as in `rollout.rs`); a signal
/// makes the server rebuild it, and the rebuild diverges at event #3. Returns the server.
fn blocked_instance(dir: &TempDir, token: &Path) -> ApiServer {
    let server = ApiServer::start(&dir.db(), Some(token));
    deploy(&server, "hello-v1", Some("hello"));
    let v2 = deploy(&server, "hello-v2", None);
    start(
        &server,
        json!({"workflow_type": "Hello", "alias": "hello", "input": {"wait_ms": 600000}, "id": "h"}),
    );
    wait_until("the timer", WAIT, || {
        instance(&server, "h")["event_count"] == json!(3)
    });
    let (status, _) = server.terminate();
    assert!(status.success());
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    conn.execute(
        "UPDATE instances SET module_hash = ?1 WHERE id = 'h'",
        [&v2],
    )
    .unwrap();
    drop(conn);
    let server = ApiServer::start(&dir.db(), Some(token));
    let (status, v) = http(
        "POST",
        &format!("{}/v1/instances/h/signals/poke", server.url),
        Some(&auth()),
        None,
    );
    assert_eq!(status, 202, "{v}");
    wait_until("the instance blocked", WAIT, || {
        instance(&server, "h")["status"] == json!("blocked")
    });
    server
}

#[test]
fn console_shows_a_blocked_instances_divergence_report_at_its_event() {
    let dir = TempDir::new("console-blocked");
    let server = blocked_instance(&dir, &token_file(&dir));
    let b = Browser::start();
    b.sign_in(&server);
    b.wait_text("h blocked in the list", "tr[data-id='h']", |t| {
        t.contains("blocked")
    });
    b.click("tr[data-id='h'] a");
    b.wait_text("the instance blocked", "#instance-status", |t| {
        t == "blocked"
    });
    assert_eq!(b.wait_for("the event index", "#div-index"), "#3");
    let recorded = b.wait_for("what history has", "#div-recorded");
    assert_eq!(recorded, "TimerStarted{seq: 1, duration_ms: 600000}");
    let produced = b.wait_for("what the code produced", "#div-produced");
    assert_eq!(produced, r#"ActivityScheduled{type: "hello", seq: 1}"#);
    let reason = b.wait_for("the report", "#blocked-reason");
    assert!(
        reason.starts_with("[PN001] nondeterminism: instance h, event #3"),
        "{reason}"
    );
    // The timeline marks the event where code and history part.
    let marked = b.wait_for("the diverged event", "#timeline li.diverged");
    assert!(marked.starts_with("#3"), "{marked}");
    assert!(marked.contains("TimerStarted"), "{marked}");
    assert!(marked.contains("code produced"), "{marked}");
    b.screenshot("blocked");
}

/// Not a test of speed (nothing here is asserted about it): the figure for README's
/// Performance section. Fills a database with 100,000 completed instances (one real
/// instance copied in SQL, with its history and its two lifecycle events), then loads the
/// instances page in Chromium five times and prints how long each took, from navigation
/// until the first page is rendered, and what the page reports for its API call and its
/// render.
///
/// `cargo nextest run -p pinion-runtime --test integration --run-ignored only -E 'test(console_page_load)' --no-capture`
#[test]
#[ignore = "a measurement: run it by name"]
fn console_page_load_with_100000_instances() {
    const N: u32 = 100_000;
    let dir = TempDir::new("console-perf");
    let token = token_file(&dir);
    let server = ApiServer::start(&dir.db(), Some(&token));
    deploy(&server, "testkit", Some("testkit"));
    start(
        &server,
        json!({"workflow_type": "Echo", "alias": "testkit", "input": {"n": 0}, "id": "seed"}),
    );
    wait_until("the seed completed", WAIT, || {
        instance(&server, "seed")["status"] == json!("completed")
    });
    let filled = Instant::now();
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    conn.execute_batch(&format!(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {N} - 1)
         INSERT INTO instances (id, workflow_type, module_hash, status, created_at_ms,
                updated_at_ms, event_count, runnable, result, failure, blocked_reason, run)
           SELECT printf('bulk-%06d', i), workflow_type, module_hash, status,
                  created_at_ms - {N} + i, updated_at_ms - {N} + i, event_count, 0, result,
                  failure, blocked_reason, run
           FROM instances, n WHERE id = 'seed';
         INSERT INTO events (instance_id, id, time_ms, data)
           SELECT i.id, e.id, e.time_ms, e.data FROM instances i, events e
           WHERE i.id LIKE 'bulk-%' AND e.instance_id = 'seed';
         INSERT INTO lifecycle_events (instance_id, kind, workflow_type, module_hash, run,
                at_ms, detail)
           SELECT i.id, l.kind, l.workflow_type, l.module_hash, l.run, l.at_ms, l.detail
           FROM instances i, lifecycle_events l
           WHERE i.id LIKE 'bulk-%' AND l.instance_id = 'seed' ORDER BY i.id, l.seq;
         COMMIT;"
    ))
    .unwrap();
    let count: u32 = conn
        .query_row("SELECT count(*) FROM instances", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, N);
    drop(conn);
    println!("filled {N} instances in {:.1?}", filled.elapsed());

    let b = Browser::start();
    b.sign_in(&server);
    for (label, hash) in [
        ("first page (50)", "#/instances"),
        (
            "status=completed, type=Echo",
            "#/instances?status=completed&workflow_type=Echo&limit=50",
        ),
        ("first page (500)", "#/instances?limit=500"),
    ] {
        let mut times = Vec::new();
        for _ in 0..5 {
            // A fresh document each time: scripts parsed, session read, API called, rendered.
            b.goto("about:blank");
            let t0 = Instant::now();
            b.goto(&format!("{}/ui{hash}", server.url));
            let timing = b.wait_text("the rendered page", "#list-timing", |t| !t.is_empty());
            times.push((t0.elapsed(), timing));
        }
        for (t, timing) in &times {
            println!(
                "{label}: page loaded and rendered in {} ms ({})",
                t.as_millis(),
                timing.trim_start_matches("· ")
            );
        }
        let mut ms: Vec<u128> = times.iter().map(|(t, _)| t.as_millis()).collect();
        ms.sort_unstable();
        println!("{label}: median {} ms over 5 loads", ms[2]);
    }
}
