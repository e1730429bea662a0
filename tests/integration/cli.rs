//! The `pinion` binary, as a user drives it: exit codes, messages, JSON output, and a server
//! killed with SIGKILL mid-workflow and restarted.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn fails_with(o: &Output, code: i32, needle: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    assert!(
        stderr(o).contains(needle),
        "stderr {:?} does not mention {needle:?}",
        stderr(o)
    );
    assert!(!stderr(o).contains("panicked"), "{}", stderr(o));
}

fn deploy(db: &Path, guest: &str) -> String {
    let hash = ok(pinion(db, &["deploy", wasm(guest).to_str().unwrap()]));
    assert_eq!(hash.len(), 64, "{hash}");
    hash
}

#[test]
fn deploy_prints_the_hash_and_is_idempotent() {
    let dir = TempDir::new("cli-deploy");
    let a = deploy(&dir.db(), "foobar-v1");
    let b = deploy(&dir.db(), "foobar-v1");
    assert_eq!(a, b);
    let modules: Value =
        serde_json::from_str(&ok(pinion(&dir.db(), &["modules", "--json"]))).unwrap();
    assert_eq!(modules.as_array().unwrap().len(), 1);
    assert_eq!(modules[0]["hash"], Value::String(a));
}

#[test]
fn bad_input_gets_a_clear_message_and_a_distinct_exit_code() {
    let dir = TempDir::new("cli-bad");
    let db = dir.db();
    let not_wasm = dir.path().join("app.wasm");
    std::fs::write(&not_wasm, "this is text").unwrap();
    fails_with(
        &pinion(&db, &["deploy", not_wasm.to_str().unwrap()]),
        4,
        "not a valid WebAssembly module",
    );
    let no_abi = dir.path().join("empty.wasm");
    std::fs::write(&no_abi, b"\0asm\x01\0\0\0").unwrap();
    fails_with(
        &pinion(&db, &["deploy", no_abi.to_str().unwrap()]),
        4,
        "does not implement the pinion ABI",
    );
    fails_with(
        &pinion(&db, &["deploy", "/no/such/file.wasm"]),
        4,
        "/no/such/file.wasm",
    );
    let hash = deploy(&db, "testkit");
    fails_with(
        &pinion(&db, &["start", "Nope", "--module", &hash]),
        3,
        "no workflow type `Nope`",
    );
    fails_with(
        &pinion(
            &db,
            &["start", "Echo", "--module", &hash, "--input", "{oops"],
        ),
        4,
        "not valid JSON",
    );
    fails_with(
        &pinion(&db, &["start", "Echo", "--module", "deadbeef"]),
        3,
        "no deployed module matches",
    );
    fails_with(
        &pinion(&db, &["status", "ghost"]),
        3,
        "no instance with id `ghost`",
    );
    fails_with(
        &pinion(&db, &["list", "--status", "sleeping"]),
        2,
        "invalid value 'sleeping' for '--status <STATUS>': use running, blocked",
    );
    // Nothing half-written: only the one valid module is stored, and no instance.
    let modules: Value = serde_json::from_str(&ok(pinion(&db, &["modules", "--json"]))).unwrap();
    assert_eq!(modules.as_array().unwrap().len(), 1);
    let list: Value = serde_json::from_str(&ok(pinion(&db, &["list", "--json"]))).unwrap();
    assert!(list.as_array().unwrap().is_empty());
}

#[test]
fn a_file_that_is_not_a_database_or_cannot_be_opened_is_reported() {
    let dir = TempDir::new("cli-db");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "just some notes, certainly not SQLite ".repeat(200)).unwrap();
    fails_with(&pinion(&text, &["list"]), 5, "not a pinion database");
    fails_with(&pinion(dir.path(), &["list"]), 5, "cannot open database");
    // A database some other program made is refused, not modified.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE accounts(id INTEGER)")
        .unwrap();
    fails_with(&pinion(&other, &["list"]), 5, "not a pinion database");
}

#[test]
fn a_database_locked_by_another_process_is_reported_after_the_busy_timeout() {
    let dir = TempDir::new("cli-locked");
    let db = dir.db();
    ok(pinion(&db, &["list"]));
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let o = pinion(&db, &["deploy", wasm("hello-v1").to_str().unwrap()]);
    fails_with(&o, 5, "locked");
    conn.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn run_deploys_starts_and_prints_the_result_and_inspection_verbs_agree() {
    let dir = TempDir::new("cli-run");
    let db = dir.db();
    let out = ok(pinion(
        &db,
        &[
            "run",
            wasm("hello-v2").to_str().unwrap(),
            "Hello",
            "--id",
            "h2",
        ],
    ));
    assert_eq!(out, r#""Success""#);
    let status: Value =
        serde_json::from_str(&ok(pinion(&db, &["status", "h2", "--json"]))).unwrap();
    assert_eq!(status["status"], "completed");
    assert_eq!(ok(pinion(&db, &["result", "h2"])), r#""Success""#);
    let list: Value = serde_json::from_str(&ok(pinion(
        &db,
        &[
            "list",
            "--status",
            "completed",
            "--workflow-type",
            "Hello",
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let export: Value =
        serde_json::from_str(&ok(pinion(&db, &["history", "h2", "--json"]))).unwrap();
    assert_eq!(export["format"], "pinion-history");
    assert_eq!(export["version"], 1);
    assert_eq!(export["events"][0]["type"], "WorkflowStarted");
    let table = ok(pinion(&db, &["history", "h2"]));
    assert!(
        table.contains("ActivityScheduled") && table.contains("WorkflowCompleted"),
        "{table}"
    );
    // A failed workflow: `result` exits 6 with the reason.
    let o = pinion(
        &db,
        &[
            "run",
            wasm("testkit").to_str().unwrap(),
            "Typed",
            "--input",
            r#"{"count": -1}"#,
        ],
    );
    fails_with(&o, 6, "InvalidInput");
}

struct Server(Child);

impl Server {
    fn start(db: &Path) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_pinion"))
            .arg("--db")
            .arg(db)
            // Workers only matter here; the HTTP API listens on any free loopback port.
            .args([
                "server",
                "--activity-threads",
                "4",
                "--listen",
                "127.0.0.1:0",
                "--no-auth",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server");
        Server(child)
    }

    fn kill9(&mut self) {
        self.0.kill().expect("SIGKILL the server"); // Child::kill sends SIGKILL on Unix
        self.0.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until `n` activity results are recorded in `db`.
fn wait_for_activity_results(db: &Path, n: i64) {
    wait_until(
        "some activity results to be recorded",
        Duration::from_secs(60),
        || {
            let conn = rusqlite::Connection::open(db).unwrap();
            let recorded: i64 = conn
                .query_row(
                    "SELECT count(*) FROM events WHERE data LIKE '%\"ActivityCompleted\"%'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            recorded >= n
        },
    );
}

fn completed_count(db: &Path) -> usize {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM instances WHERE status = 'completed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    n as usize
}

#[test]
fn a_server_killed_with_sigkill_mid_workflow_finishes_everything_after_restart() {
    let dir = TempDir::new("cli-kill");
    let db = dir.db();
    let hash = deploy(&db, "testkit");
    const N: usize = 12;
    // Long enough that no workflow can finish between the tenth result and the kill,
    // however fast the steps go.
    const STEPS: u64 = 300;
    for i in 0..N {
        ok(pinion(
            &db,
            &[
                "start",
                "Steps",
                "--module",
                &hash,
                "--input",
                &format!(r#"{{"n": {STEPS}}}"#),
                "--id",
                &format!("s{i}"),
            ],
        ));
    }
    let mut server = Server::start(&db);
    // Kill it once some, but not all, work is done.
    wait_for_activity_results(&db, 10);
    server.kill9();
    assert!(
        completed_count(&db) < N,
        "the kill came too late to test anything"
    );
    let _server = Server::start(&db);
    wait_until(
        "every instance to complete after the restart",
        Duration::from_secs(120),
        || completed_count(&db) == N,
    );
    for i in 0..N {
        let id = format!("s{i}");
        assert_eq!(ok(pinion(&db, &["result", &id])), STEPS.to_string());
        let export: Value =
            serde_json::from_str(&ok(pinion(&db, &["history", &id, "--json"]))).unwrap();
        let events = export["events"].as_array().unwrap();
        // Dense ids: nothing lost, nothing duplicated.
        for (k, e) in events.iter().enumerate() {
            assert_eq!(e["id"].as_u64(), Some(k as u64 + 1), "{id}");
        }
        // Every activity scheduled once and its result recorded exactly once.
        let mut scheduled: HashMap<u64, usize> = HashMap::new();
        let mut resolved: HashMap<u64, usize> = HashMap::new();
        for e in events {
            match e["type"].as_str().unwrap() {
                "ActivityScheduled" => {
                    *scheduled.entry(e["seq"].as_u64().unwrap()).or_default() += 1
                }
                "ActivityCompleted" | "ActivityFailed" | "ActivityTimedOut" => {
                    *resolved.entry(e["seq"].as_u64().unwrap()).or_default() += 1
                }
                _ => {}
            }
        }
        assert_eq!(scheduled.len(), STEPS as usize, "{id}");
        assert!(scheduled.values().all(|&c| c == 1), "{id}: {scheduled:?}");
        assert_eq!(resolved, scheduled, "{id}");
        assert_eq!(
            events
                .iter()
                .filter(|e| e["type"] == "WorkflowCompleted")
                .count(),
            1
        );
    }
}

#[test]
fn the_readme_safe_deployment_walkthrough_works_command_by_command() {
    let dir = TempDir::new("cli-walkthrough");
    let db = dir.db();
    let (v1_file, v2_file) = (wasm("hello-v1"), wasm("hello-v2"));
    let (v1_file, v2_file) = (v1_file.to_str().unwrap(), v2_file.to_str().unwrap());
    // 1. Ship v1 behind an alias, and run it.
    let v1 = ok(pinion(&db, &["deploy", v1_file, "--alias", "hello"]));
    let _server = Server::start(&db);
    ok(pinion(
        &db,
        &[
            "start",
            "Hello",
            "--alias",
            "hello",
            "--input",
            r#"{"wait_ms": 600000}"#,
            "--id",
            "order-1",
        ],
    ));
    wait_until(
        "order-1 to wait on its timer",
        Duration::from_secs(60),
        || ok(pinion(&db, &["history", "order-1"])).contains("TimerStarted"),
    );
    // 2. Gate v2 on real histories: replay diverges, deploy --verify refuses.
    let o = pinion(&db, &["replay", "--module", v2_file]);
    assert_eq!(o.status.code(), Some(8), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("event #3: history has TimerStarted"),
        "{}",
        stdout(&o)
    );
    let o = pinion(&db, &["deploy", v2_file, "--alias", "hello", "--verify"]);
    assert_eq!(o.status.code(), Some(8));
    // 3. Deploy side by side and ramp.
    let v2 = ok(pinion(&db, &["deploy", v2_file]));
    ok(pinion(&db, &["alias", "ramp", "hello", &v2, "10"]));
    let modules: Value = serde_json::from_str(&ok(pinion(&db, &["modules", "--json"]))).unwrap();
    let state = |h: &str| {
        modules
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["hash"] == h)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(state(&v1), "current");
    assert_eq!(state(&v2), "ramping");
    ok(pinion(&db, &["alias", "set", "hello", &v2]));
    ok(pinion(
        &db,
        &["start", "Hello", "--alias", "hello", "--id", "order-2"],
    ));
    assert_eq!(
        ok(pinion(
            &db,
            &["result", "order-2", "--wait", "--timeout", "60"]
        )),
        r#""Success""#
    );
    // 4. Roll back: new starts go to v1; order-2 stayed on v2.
    ok(pinion(&db, &["alias", "set", "hello", &v1]));
    ok(pinion(
        &db,
        &[
            "start",
            "Hello",
            "--alias",
            "hello",
            "--input",
            r#"{"wait_ms": 10}"#,
            "--id",
            "order-3",
        ],
    ));
    assert_eq!(
        ok(pinion(
            &db,
            &["result", "order-3", "--wait", "--timeout", "60"]
        )),
        r#""Success""#
    );
    let status = |id: &str| -> Value {
        serde_json::from_str(&ok(pinion(&db, &["status", id, "--json"]))).unwrap()
    };
    assert_eq!(status("order-2")["module_hash"], v2.as_str());
    assert_eq!(status("order-3")["module_hash"], v1.as_str());
    let moves = ok(pinion(&db, &["alias", "history", "hello"]));
    // A header, then: set v1, ramp v2, set v2, set v1.
    assert_eq!(moves.lines().count(), 5, "{moves}");
    // order-1 still waits on v1, pinned; v1's activity "Approved" will decide it.
    assert_eq!(status("order-1")["status"], "running");
    assert_eq!(status("order-1")["module_hash"], v1.as_str());
}

#[test]
fn run_against_a_database_a_server_owns_fails_before_deploying_anything() {
    let dir = TempDir::new("cli-run-locked");
    let db = dir.db();
    ok(pinion(&db, &["list"]));
    let _server = Server::start(&db);
    wait_until(
        "the server to take the worker lock",
        Duration::from_secs(60),
        || {
            let o = pinion(&db, &["run", wasm("hello-v2").to_str().unwrap(), "Hello"]);
            o.status.code() == Some(5)
                && stderr(&o).contains("another pinion process is running workers")
        },
    );
    let modules: Value = serde_json::from_str(&ok(pinion(&db, &["modules", "--json"]))).unwrap();
    assert!(
        modules.as_array().unwrap().is_empty(),
        "nothing deployed: {modules}"
    );
    let list: Value = serde_json::from_str(&ok(pinion(&db, &["list", "--json"]))).unwrap();
    assert!(list.as_array().unwrap().is_empty(), "nothing started");
}

/// The worker lock belongs to the file (its device and inode), not to a path: a second
/// server reaching the same file through a hard link in another directory, where
/// `<path>.lock` is another file, is refused too (and starts once the first is gone).
#[test]
fn a_second_server_through_a_hard_link_in_another_directory_is_refused() {
    use std::io::BufRead as _;
    let dir = TempDir::new("cli-hardlink");
    let db = dir.db();
    // Created and checkpointed before the server runs (SQLite names its WAL by path, so
    // a hard link never sees the server's uncheckpointed pages).
    ok(pinion(&db, &["list"]));
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let link = elsewhere.join("same.db");
    std::fs::hard_link(&db, &link).unwrap();
    // A server on `path`, once it has taken the worker lock and listens (it prints the
    // address after starting its workers); None when it exited instead.
    let server = |path: &Path| -> (Server, Option<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pinion"))
            .arg("--db")
            .arg(path)
            .args(["server", "--listen", "127.0.0.1:0", "--no-auth"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a server");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let listening = out
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("listening on"));
        (Server(child), listening)
    };
    let (mut first, listening) = server(&db);
    assert!(listening.is_some(), "the first server did not start");
    let refused = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(&link)
        .args(["server", "--listen", "127.0.0.1:0", "--no-auth"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("another pinion process is running workers")
            && stderr(&refused).contains("same.db: locked by another process"),
        "{}",
        stderr(&refused)
    );
    // Once the first is gone (SIGKILL: the kernel drops its lock), the link's server runs.
    first.kill9();
    let (mut after, listening) = server(&link);
    assert!(
        listening.is_some(),
        "a server through the link did not start once the first was gone"
    );
    assert!(after.0.try_wait().unwrap().is_none(), "it keeps running");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = TempDir::new("cli-pipe");
    let db = dir.db();
    // Well over a pipe buffer (64 KiB) of output, so the writer really hits a closed pipe.
    ok(pinion(
        &db,
        &[
            "run",
            wasm("testkit").to_str().unwrap(),
            "Steps",
            "--id",
            "o",
            "--input",
            r#"{"n": 300}"#,
        ],
    ));
    assert!(ok(pinion(&db, &["history", "o", "--json"])).len() > 100_000);
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' --db '{}' history o | head -c 1",
            env!("CARGO_BIN_EXE_pinion"),
            db.display()
        ))
        .output()
        .unwrap();
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(o.stdout.len(), 1);
}

#[test]
fn signal_query_cancel_and_terminate_from_the_command_line_while_a_server_runs() {
    let dir = TempDir::new("cli-signal");
    let db = dir.db();
    let kit = ok(pinion(&db, &["deploy", wasm("testkit").to_str().unwrap()]));
    let start = |wf: &str, input: &str, id: &str| {
        ok(pinion(
            &db,
            &["start", wf, "--module", &kit, "--input", input, "--id", id],
        ))
    };
    // Sent before any worker runs: buffered durably in the database.
    start("Collect", r#"{"count": 2}"#, "c1");
    ok(pinion(&db, &["signal", "c1", "add", "--input", "40"]));
    start("Approval", r#"{"order": "o-7"}"#, "a1");
    start("Approval", r#"{"order": "o-8"}"#, "a2");
    start("Sleep", r#"{"ms": 3600000}"#, "s1");
    let _server = Server::start(&db);
    wait_until("the approval to wait", Duration::from_secs(60), || {
        stdout(&pinion(&db, &["query", "a1", "state"])) == r#""waiting""#
    });
    wait_until(
        "c1 to read the first signal",
        Duration::from_secs(60),
        || stdout(&pinion(&db, &["query", "c1", "seen"])) == "1",
    );
    let q: Value =
        serde_json::from_str(&ok(pinion(&db, &["query", "c1", "total", "--json"]))).unwrap();
    assert_eq!(q["result"], 40);
    ok(pinion(&db, &["signal", "c1", "add", "--input", "2"]));
    assert_eq!(
        ok(pinion(&db, &["result", "c1", "--wait", "--timeout", "60"])),
        "42"
    );

    ok(pinion(
        &db,
        &["signal", "a1", "approve", "--input", r#""bob""#],
    ));
    assert_eq!(
        ok(pinion(&db, &["result", "a1", "--wait", "--timeout", "60"])),
        r#""o-7 approved by bob""#
    );

    let out = ok(pinion(&db, &["cancel", "a2", "--reason", "out of stock"]));
    assert!(out.contains("cancellation requested"), "{out}");
    let o = pinion(&db, &["result", "a2", "--wait", "--timeout", "60"]);
    fails_with(&o, 6, "cancelled: Cancelled: out of stock");

    // Bulk terminate by workflow type, with a dry run first.
    let out = ok(pinion(
        &db,
        &["terminate", "--workflow-type", "Sleep", "--dry-run"],
    ));
    assert!(
        out.contains("s1: would be terminated") && out.contains("1 instance(s) selected"),
        "{out}"
    );
    let out = ok(pinion(&db, &["cancel", "s1", "--dry-run"]));
    assert_eq!(out, "s1: would be cancelled");
    let status: Value =
        serde_json::from_str(&ok(pinion(&db, &["status", "s1", "--json"]))).unwrap();
    assert_eq!(status["status"], "running", "a dry run changes nothing");
    let out = ok(pinion(
        &db,
        &[
            "terminate",
            "--workflow-type",
            "Sleep",
            "--reason",
            "bad release",
        ],
    ));
    assert!(out.contains("s1: terminated"), "{out}");
    let status: Value =
        serde_json::from_str(&ok(pinion(&db, &["status", "s1", "--json"]))).unwrap();
    assert_eq!(status["status"], "terminated");

    // Errors: unknown instance, ended instance, unknown query, bad JSON, missing target.
    fails_with(
        &pinion(&db, &["signal", "nope", "x"]),
        3,
        "no instance with id `nope`",
    );
    fails_with(&pinion(&db, &["signal", "a1", "x"]), 4, "completed");
    fails_with(&pinion(&db, &["terminate", "s1"]), 4, "terminated");
    fails_with(&pinion(&db, &["query", "a1", "nope"]), 3, "UnknownQuery");
    fails_with(
        &pinion(&db, &["signal", "c1", "x", "--input", "{oops"]),
        4,
        "not valid JSON",
    );
    let o = pinion(&db, &["cancel"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `pinion backup` while a server works on the database: the copy is a consistent
/// database of its own, and a server started on it (the restore) finishes every instance
/// it holds. A backup never overwrites a file.
#[test]
fn a_backup_taken_while_the_server_runs_restores_and_finishes_everything() {
    let dir = TempDir::new("backup");
    let db = dir.db();
    let hash = deploy(&db, "testkit");
    const N: usize = 12;
    for i in 0..N {
        ok(pinion(
            &db,
            &[
                "start",
                "Steps",
                "--module",
                &hash,
                "--input",
                r#"{"n": 10}"#,
                "--id",
                &format!("b{i}"),
            ],
        ));
    }
    let server = Server::start(&db);
    wait_for_activity_results(&db, 10);
    let copy = dir.path().join("copy.db");
    let out = ok(pinion(&db, &["backup", copy.to_str().unwrap()]));
    assert!(out.contains(&format!("({N} instances")), "{out}");
    drop(server);
    // Never over an existing file.
    let before = std::fs::read(&copy).unwrap();
    let again = pinion(&db, &["backup", copy.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(4), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    // Restore: the copy is the database.
    let _server = Server::start(&copy);
    wait_until(
        "every instance of the copy to complete",
        Duration::from_secs(120),
        || completed_count(&copy) == N,
    );
    for i in 0..N {
        let id = format!("b{i}");
        assert_eq!(ok(pinion(&copy, &["result", &id])), "10");
        let export: Value =
            serde_json::from_str(&ok(pinion(&copy, &["history", &id, "--json"]))).unwrap();
        for (k, e) in export["events"].as_array().unwrap().iter().enumerate() {
            assert_eq!(e["id"].as_u64(), Some(k as u64 + 1), "{id}");
        }
    }
    // Not a pinion database: refused, nothing written.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all, just bytes").unwrap();
    let target = dir.path().join("junk-copy.db");
    let refused = pinion(&junk, &["backup", target.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");
    assert!(!target.exists());
}

/// `pinion purge` deletes ended instances older than the cut-off (exporting them first
/// when asked), never a running one; `--dry-run` only lists; the server's `--retention`
/// does the same on its own.
#[test]
fn purge_deletes_only_old_ended_instances_and_the_server_applies_retention() {
    let dir = TempDir::new("purge");
    let db = dir.db();
    for (ty, id) in [
        ("Unchanged", "u-1"),
        ("Unchanged", "u-2"),
        ("Swapped", "s-1"),
    ] {
        ok(pinion(
            &db,
            &["run", wasm("replay-v1").to_str().unwrap(), ty, "--id", id],
        ));
    }
    let hash = deploy(&db, "testkit");
    ok(pinion(
        &db,
        &[
            "start",
            "Sleep",
            "--module",
            &hash,
            "--input",
            r#"{"ms": 600000}"#,
            "--id",
            "still-running",
        ],
    ));
    let ids = |out: String| -> Vec<String> { out.lines().map(str::to_string).collect() };

    assert!(ids(ok(pinion(&db, &["purge", "--older-than", "1h"]))).is_empty());
    let listed = ids(ok(pinion(
        &db,
        &["purge", "--older-than", "0s", "--dry-run"],
    )));
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(!listed.contains(&"still-running".to_string()));
    ok(pinion(&db, &["history", "u-1"])); // a dry run deletes nothing

    let export = dir.path().join("kept");
    let deleted = ids(ok(pinion(
        &db,
        &[
            "purge",
            "--older-than",
            "0s",
            "--workflow-type",
            "Unchanged",
            "--export",
            export.to_str().unwrap(),
        ],
    )));
    assert_eq!(deleted, ["u-1", "u-2"]);
    for id in ["u-1", "u-2"] {
        assert_eq!(pinion(&db, &["history", id]).status.code(), Some(3), "{id}");
        let file: Value =
            serde_json::from_slice(&std::fs::read(export.join(format!("{id}.json"))).unwrap())
                .unwrap();
        assert_eq!(file["instance_id"], id);
    }
    ok(pinion(&db, &["history", "s-1"]));
    ok(pinion(&db, &["status", "still-running"]));

    // The server purges on its own.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(&db)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--no-auth",
            "--retention",
            "1s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("retention to delete s-1", Duration::from_secs(60), || {
        pinion(&db, &["status", "s-1"]).status.code() == Some(3)
    });
    let _ = child.kill();
    let _ = child.wait();
    ok(pinion(&db, &["status", "still-running"]));
}

/// The crash test: 100 workflows with activities and timers, the server killed with
/// SIGKILL five times at pseudo-random moments and restarted; then every workflow completes
/// with the right result, every history replays clean against its module, and no activity
/// result is recorded twice. `scripts/crash.sh` runs it larger
/// (`PINION_CRASH_WORKFLOWS`, `PINION_CRASH_KILLS`).
#[test]
fn a_server_killed_again_and_again_at_random_moments_loses_and_repeats_nothing() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (workflows, kills) = (
        env("PINION_CRASH_WORKFLOWS", 100),
        env("PINION_CRASH_KILLS", 5),
    );
    let dir = TempDir::new("crash5");
    let db = dir.db();
    let hash = deploy(&db, "testkit");
    const STEPS: u64 = 8;
    let mut expected = Vec::new();
    for i in 0..workflows {
        let id = format!("c{i:05}");
        let (ty, input) = if i % 10 < 7 {
            ("Steps", format!(r#"{{"n": {STEPS}}}"#))
        } else {
            ("Sleep", format!(r#"{{"ms": {}}}"#, 200 + 37 * i))
        };
        ok(pinion(
            &db,
            &[
                "start", ty, "--module", &hash, "--input", &input, "--id", &id,
            ],
        ));
        expected.push((id, ty));
    }
    // Pseudo-random kill moments, from the clock; printed on failure to rerun by hand.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut x = seed | 1;
    let mut delays = Vec::new();
    for _ in 0..kills {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        delays.push(100 + x % 500);
    }
    for ms in &delays {
        let mut server = Server::start(&db);
        std::thread::sleep(Duration::from_millis(*ms));
        server.kill9();
    }
    let _server = Server::start(&db);
    wait_until(
        &format!("every workflow to complete after kills at {delays:?} ms"),
        Duration::from_secs(180 + workflows as u64 / 5),
        || completed_count(&db) == expected.len(),
    );
    for (id, ty) in &expected {
        let result: Value = serde_json::from_str(&ok(pinion(&db, &["result", id]))).unwrap();
        if *ty == "Steps" {
            assert_eq!(result, Value::from(STEPS), "{id} (kills at {delays:?})");
        } else {
            assert!(
                result["after"].as_u64() >= result["before"].as_u64(),
                "{id}"
            );
        }
        let export: Value =
            serde_json::from_str(&ok(pinion(&db, &["history", id, "--json"]))).unwrap();
        let mut resolved: HashMap<u64, usize> = HashMap::new();
        for (k, e) in export["events"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                e["id"].as_u64(),
                Some(k as u64 + 1),
                "{id}: dense event ids"
            );
            if matches!(
                e["type"].as_str(),
                Some("ActivityCompleted" | "ActivityFailed" | "ActivityTimedOut")
            ) {
                *resolved.entry(e["seq"].as_u64().unwrap()).or_default() += 1;
            }
        }
        assert!(
            resolved.values().all(|&n| n == 1),
            "{id}: an activity result recorded twice (kills at {delays:?}): {resolved:?}"
        );
    }
    let replay = ok(pinion(
        &db,
        &[
            "replay",
            "--module",
            wasm("testkit").to_str().unwrap(),
            "--status",
            "all",
        ],
    ));
    assert!(
        replay.contains(&format!("{workflows} compatible, 0 diverged, 0 failed")),
        "{replay}"
    );
}
