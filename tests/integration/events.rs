//! Lifecycle events over real HTTP: the `/v1/events` Server-Sent Events stream (order,
//! filters, resuming by `Last-Event-ID`, events written by another process) and webhooks
//! (signed, in order, retried until acknowledged, resumed after a restart).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use pinion_runtime::api::types::{InputBody, StartBody};
use pinion_runtime::api::{Api, Client};
use pinion_runtime::store::LifecycleEvent;
use pinion_runtime::InstanceStatus;
use serde_json::{json, Value};
use sha2::Sha256;

use super::common::*;
use crate::api::{post_wasm, token_file, ApiServer, TOKEN, WAIT};

pub(crate) fn start(client: &Client, hash: &str, ty: &str, input: Value, id: &str) {
    client
        .start(&StartBody {
            workflow_type: ty.into(),
            module: Some(hash.into()),
            alias: None,
            input,
            id: Some(id.into()),
        })
        .unwrap();
}

/// Opens `GET {path}` as an event stream and forwards each message's `(id, event, data)`
/// on the channel, until the stream ends (then the channel closes).
fn subscribe(
    server: &ApiServer,
    path: &str,
    last_event_id: Option<u64>,
) -> mpsc::Receiver<(u64, String, Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent
        .get(format!("{}{path}", server.url))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let resp = req.call().expect("open the event stream");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let reader = BufReader::new(resp.into_body().into_reader());
        let (mut id, mut event, mut data) = (0, String::new(), String::new());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if line.is_empty() {
                if !data.is_empty() {
                    let value = serde_json::from_str(&data).expect("data is JSON");
                    if tx.send((id, event.clone(), value)).is_err() {
                        return;
                    }
                    data.clear();
                }
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().expect("numeric id");
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    });
    rx
}

fn next(rx: &mpsc::Receiver<(u64, String, Value)>) -> (u64, String, Value) {
    rx.recv_timeout(WAIT).expect("the next event")
}

#[test]
fn the_event_stream_sends_every_transition_in_order_and_resumes_after_last_event_id() {
    let dir = TempDir::new("events-sse");
    let db = dir.db();
    let server = ApiServer::start(&db, Some(&token_file(&dir)));
    let (_, d) = post_wasm(&server, "/v1/modules", wasm_bytes("testkit"));
    let hash = d["hash"].as_str().unwrap().to_owned();
    let client = server.client();
    let live = subscribe(&server, "/v1/events", None);
    let completed_only = subscribe(
        &server,
        "/v1/events?type=completed&workflow_type=Echo",
        None,
    );

    start(&client, &hash, "Echo", json!(1), "e1");
    start(&client, &hash, "Approval", json!({"order": "o"}), "a1");
    start(&client, &hash, "Sleep", json!({"ms": 3_600_000}), "s1");
    assert_eq!(
        client.wait("e1", WAIT).unwrap().status,
        InstanceStatus::Completed
    );
    wait_until("a1 waits for its signal", WAIT, || {
        client
            .query("a1", "state", &InputBody::default())
            .is_ok_and(|a| a.result == json!("waiting"))
    });
    client
        .stop(
            pinion_runtime::api::types::StopVerb::Cancel,
            &pinion_runtime::api::types::StopBody {
                id: Some("a1".into()),
                reason: "changed my mind".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        client.wait("a1", WAIT).unwrap().status,
        InstanceStatus::Cancelled
    );
    // Another process writes to the same database: its transitions are streamed too.
    let o = pinion(&db, &["terminate", "s1", "--reason", "from the CLI"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Six transitions, each once, ids increasing in commit order.
    let mut got = Vec::new();
    while got.len() < 6 {
        got.push(next(&live));
    }
    let ids: Vec<u64> = got.iter().map(|(id, _, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let mut per_instance: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, event, data) in &got {
        // The SSE fields repeat the document's.
        assert_eq!(data["id"], *id);
        assert_eq!(data["type"], event.as_str());
        assert_eq!(data["module_hash"], hash.as_str());
        let e: LifecycleEvent = serde_json::from_value(data.clone()).expect("an event");
        per_instance
            .entry(e.instance_id.0)
            .or_default()
            .push(event.clone());
    }
    assert_eq!(per_instance["e1"], ["started", "completed"]);
    assert_eq!(per_instance["a1"], ["started", "cancelled"]);
    assert_eq!(per_instance["s1"], ["started", "terminated"]);
    let reason = |id: &str| {
        got.iter()
            .find(|(_, ev, d)| d["instance_id"] == id && ev != "started")
            .map(|(_, _, d)| d["reason"].clone())
            .unwrap()
    };
    assert_eq!(reason("a1"), "changed my mind");
    assert_eq!(reason("s1"), "from the CLI");

    // The filtered stream saw only e1's completion.
    let (_, event, data) = next(&completed_only);
    assert_eq!(
        (event.as_str(), &data["instance_id"]),
        ("completed", &json!("e1"))
    );
    assert!(completed_only
        .recv_timeout(Duration::from_millis(300))
        .is_err());

    // Reconnecting with Last-Event-ID resumes right after it: nothing repeated or lost.
    let resumed = subscribe(&server, "/v1/events?follow=false", Some(ids[2]));
    let rest: Vec<u64> = resumed.iter().map(|(id, _, _)| id).collect();
    assert_eq!(rest, ids[3..], "follow=false ends once caught up");
    // `after` does the same for a client that keeps its own position.
    let page = client
        .events(&pinion_runtime::api::types::EventQuery {
            after: ids[4],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, ids[5]);

    // `pinion events` prints the same events from the database file, one JSON per line.
    let o = pinion(&db, &["events", "--json", "--id", "s1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    let types: Vec<_> = lines.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["started", "terminated"]);
    assert_eq!(lines[1]["id"], ids[5]);
    // A bad filter is refused before anything is printed.
    let o = pinion(&db, &["events", "--type", "finished"]);
    assert_eq!(o.status.code(), Some(2), "an unknown type is bad syntax");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("invalid value 'finished' for '--type") && err.contains("continued_as_new"),
        "{err}"
    );

    // A stream in progress does not hold the server up on SIGTERM.
    let (exit, _) = server.terminate();
    assert!(exit.success());
    assert!(
        live.recv_timeout(WAIT).is_err(),
        "the stream ends with the server"
    );
}

/// What the receiver saw of one request: headers (lowercase names), body, the status it
/// answered.
pub(crate) type Received = (BTreeMap<String, String>, Vec<u8>, u16);

/// A webhook receiver: answers 500 to the first `fail_first` requests, then 200, and
/// forwards each request's headers and body.
pub(crate) fn receiver(fail_first: usize) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hook?token=not-for-logs",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let status = if n < fail_first { 500 } else { 200 };
            let Some((headers, body)) = read_request(&stream) else {
                continue;
            };
            let mut s = &stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if tx.send((headers, body, status)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

fn read_request(stream: &TcpStream) -> Option<(BTreeMap<String, String>, Vec<u8>)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((headers, body))
}

fn verify(secret: &str, headers: &BTreeMap<String, String>, body: &[u8]) {
    let sig = &headers["pinion-signature"];
    let (t, v1) = sig
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .unwrap_or_else(|| panic!("signature format: {sig}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&hex::decode(v1).unwrap())
        .unwrap_or_else(|_| panic!("bad signature {sig}"));
}

pub(crate) fn webhook_server(db: &Path, url: &str, secret_file: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(db)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--no-auth",
            "--webhook",
            url,
        ])
        .arg("--webhook-secret-file")
        .arg(secret_file)
        .env_remove("PINION_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut address = None;
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(a) = line.strip_prefix("pinion server listening on ") {
            address = Some(a.to_owned());
            break;
        }
    }
    (child, address.expect("the server's address"))
}

fn stop(mut child: Child) -> String {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[test]
fn webhooks_get_every_event_signed_in_order_retried_until_acknowledged_and_resumed_after_restart() {
    const SECRET: &str = "whsec-Hq27";
    let dir = TempDir::new("events-webhook");
    let db = dir.db();
    let secret = dir.path().join("webhook-secret");
    write_private(&secret, &format!("{SECRET}\n"));
    let hash = {
        let p = open(&db);
        p.deploy(&wasm_bytes("testkit")).unwrap().hash.0
    };
    let (url, hooks) = receiver(2);
    let (server, address) = webhook_server(&db, &url, &secret);
    let client = Client::new(&address, None).unwrap();
    start(&client, &hash, "Echo", json!(1), "e1");
    start(&client, &hash, "Echo", json!(2), "e2");
    // The first two attempts get 500 and are retried: event 1 arrives three times, and
    // nothing after it is sent before it is acknowledged.
    let mut delivered = Vec::new();
    let mut attempts = 0;
    while delivered.len() < 4 {
        let (headers, body, status) = hooks.recv_timeout(WAIT).expect("a webhook request");
        attempts += 1;
        verify(SECRET, &headers, &body);
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(headers["pinion-event-id"], event["id"].to_string());
        assert_eq!(
            headers["pinion-event-type"],
            event["type"].as_str().unwrap()
        );
        assert_eq!(headers["content-type"], "application/json");
        if status == 200 {
            delivered.push(event);
        } else {
            assert_eq!(
                event["id"], 1,
                "a failed event is retried before any later one"
            );
        }
    }
    assert_eq!(attempts, 6);
    let ids: Vec<u64> = delivered
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    let completed: Vec<_> = delivered
        .iter()
        .filter(|e| e["type"] == "completed")
        .map(|e| e["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(completed.len(), 2);
    let stderr = stop(server);
    assert!(stderr.contains("attempt 1 failed (HTTP 500)"), "{stderr}");
    assert!(
        !stderr.contains(SECRET) && !stderr.contains("not-for-logs"),
        "no secret in the logs: {stderr}"
    );

    // Restarted, the webhook goes on after the last acknowledged event.
    let (server, address) = webhook_server(&db, &url, &secret);
    let client = Client::new(&address, None).unwrap();
    start(&client, &hash, "Echo", json!(3), "e3");
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let (headers, body, _) = hooks.recv_timeout(WAIT).expect("a webhook request");
        verify(SECRET, &headers, &body);
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(event["instance_id"], "e3");
        ids.push(event["id"].as_u64().unwrap());
    }
    assert_eq!(ids, [5, 6]);
    stop(server);
}

/// A webhook receiver that answers 500 to every request for event `bad` while `healthy` is
/// false, and 200 to everything else; forwards what it saw.
fn picky_receiver(
    bad: u64,
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/picky", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let Some((headers, body)) = read_request(&stream) else {
                continue;
            };
            let is_bad = headers.get("pinion-event-id") == Some(&bad.to_string());
            let status = if is_bad && !healthy.load(std::sync::atomic::Ordering::SeqCst) {
                500
            } else {
                200
            };
            let mut s = &stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if tx.send((headers, body, status)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

/// The ids of the events `hooks` acknowledged, until `n` of them arrived.
fn acknowledged(hooks: &mpsc::Receiver<Received>, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let (_, body, status) = hooks.recv_timeout(WAIT).expect("a webhook request");
        if status == 200 {
            let event: Value = serde_json::from_slice(&body).unwrap();
            ids.push(event["id"].as_u64().unwrap());
        }
    }
    ids
}

/// Issue 18, item 4: an event a webhook's endpoint never acknowledges becomes a dead letter
/// after the give-up limit, the webhook goes on with the next events, another webhook is
/// unaffected; the CLI and the API list the dead letter, and once the endpoint is fixed a
/// redelivery delivers it and removes it from the list.
#[test]
fn an_event_a_webhook_never_acknowledges_is_dead_lettered_and_can_be_redelivered() {
    const SECRET: &str = "whsec-Dl41";
    let dir = TempDir::new("events-dead-letters");
    let db = dir.db();
    let secret = dir.path().join("webhook-secret");
    write_private(&secret, &format!("{SECRET}\n"));
    let hash = {
        let p = open(&db);
        p.deploy(&wasm_bytes("testkit")).unwrap().hash.0
    };
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (bad_url, bad) = picky_receiver(1, healthy.clone());
    let (good_url, good) = receiver(0);
    let secret_arg = secret.to_str().unwrap();
    let server = ApiServer::start_full(
        &db,
        None,
        &[],
        &[
            "--webhook",
            &bad_url,
            "--webhook",
            &good_url,
            "--webhook-secret-file",
            secret_arg,
            "--webhook-give-up-after",
            "1s",
        ],
        &[],
    );
    let client = server.client();
    start(&client, &hash, "Echo", json!(1), "e1");
    start(&client, &hash, "Echo", json!(2), "e2");
    // The healthy webhook gets all four events in order, whatever the other one does.
    assert_eq!(acknowledged(&good, 4), [1, 2, 3, 4]);
    // The picky one gives event 1 up after about a second and goes on with 2, 3, 4.
    assert_eq!(acknowledged(&bad, 3), [2, 3, 4]);
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pinion"))
            .args(["--server", &server.url])
            .args(args)
            .env_remove("PINION_SERVER")
            .output()
            .unwrap()
    };
    let o = cli(&["webhooks", "dead-letters", "--json"]);
    assert!(o.status.success(), "{o:?}");
    let letters: Value = serde_json::from_slice(&o.stdout).unwrap();
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["event"]["id"], 1);
    assert_eq!(letter["event"]["type"], "started");
    assert_eq!(letter["last_error"], "HTTP 500");
    assert!(letter["attempts"].as_u64().unwrap() >= 2, "{letter}");
    assert_eq!(letter["webhook"], bad_url.as_str());
    let id = letter["id"].as_u64().unwrap().to_string();
    // The database says the same without the server; the text form names the event.
    let o = pinion(&db, &["webhooks", "dead-letters"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("HTTP 500"), "{o:?}");
    let o = pinion(&db, &["webhooks", "dead-letters", "--redeliver", &id]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "redelivery needs the server: {o:?}"
    );

    // Still broken: the redelivery fails, the letter stays with one attempt more.
    let o = cli(&["webhooks", "dead-letters", "--redeliver", &id, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&r["delivered"], &r["error"]),
        (&json!(false), &json!("HTTP 500"))
    );
    let (status, list) = crate::api::http(
        "GET",
        &format!("{}/v1/webhooks/dead-letters", server.url),
        None,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        list["dead_letters"][0]["attempts"].as_u64(),
        letter["attempts"].as_u64().map(|n| n + 1)
    );

    // Fixed: redelivery delivers event 1 (signed) and the list is empty.
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let o = cli(&["webhooks", "dead-letters", "--redeliver", &id]);
    assert!(o.status.success(), "{o:?}");
    loop {
        let (headers, body, status) = bad.recv_timeout(WAIT).expect("the redelivery");
        if status == 200 {
            verify(SECRET, &headers, &body);
            assert_eq!(headers["pinion-event-id"], "1");
            break;
        }
    }
    let (status, list) = crate::api::http(
        "GET",
        &format!("{}/v1/webhooks/dead-letters", server.url),
        None,
        None,
    );
    assert_eq!((status, list), (200, json!({"dead_letters": []})));
    let (status, gone) = crate::api::http(
        "POST",
        &format!("{}/v1/webhooks/dead-letters/{id}/redeliver", server.url),
        None,
        None,
    );
    assert_eq!((status, &gone["error"]["code"]), (404, &json!("not_found")));
    // The healthy webhook saw nothing more.
    assert!(good.try_recv().is_err());
}
