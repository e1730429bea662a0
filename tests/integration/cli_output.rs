//! What the `pinion` binary prints for people (issue 13, item 5): aligned tables, RFC 3339
//! times (epoch milliseconds kept in `--json`), blocked reasons that lead with the panic
//! message, errors that name the flag to fix, the module prefix rule, `unused` modules,
//! what `alias set --verify` verified, and `events --follow` across a server restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use serde_json::Value;

use crate::api::{token_file, ApiServer, TOKEN, WAIT};
use crate::common::*;

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        err(&o)
    );
    out(&o)
}

fn json(o: Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap()
}

fn deploy(db: &Path, guest: &str) -> String {
    ok(pinion(db, &["deploy", wasm(guest).to_str().unwrap()]))
        .trim()
        .to_owned()
}

/// `ms` as RFC 3339 UTC with milliseconds, computed here independently of the CLI
/// (days to civil date: Howard Hinnant's algorithm).
fn utc(ms: u64) -> String {
    let (secs, milli) = (ms / 1000, ms % 1000);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The whitespace-separated fields of a line, with their byte offsets.
fn fields(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices().chain([(line.len(), ' ')]) {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push((s, &line[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Asserts that in every row field `n` starts where `column` starts in the header
/// (left-aligned), or ends where it ends (right-aligned).
fn aligned(table: &str, column: &str, right: bool, n: usize) {
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let at = header
        .find(column)
        .unwrap_or_else(|| panic!("{column}: {header}"));
    for line in lines {
        let (start, cell) = fields(line)[n];
        if right {
            assert_eq!(start + cell.len(), at + column.len(), "{column}:\n{table}");
        } else {
            assert_eq!(start, at, "{column}:\n{table}");
        }
    }
}

#[test]
fn list_and_events_align_their_columns_whatever_the_widths_of_the_values() {
    let dir = TempDir::new("out-align");
    let db = dir.db();
    let w = wasm("testkit");
    let long_id = "an-instance-id-much-longer-than-the-column-header-0123456789";
    for (ty, id) in [
        ("Echo", "a"),
        ("Parallel", long_id),
        ("Echo", "mid-length-id"),
    ] {
        let o = pinion(&db, &["run", w.to_str().unwrap(), ty, "--id", id]);
        assert!(o.status.code().is_some(), "{}", err(&o));
    }
    let list = ok(pinion(&db, &["list"]));
    assert_eq!(list.lines().count(), 4, "{list}");
    aligned(&list, "WORKFLOW TYPE", false, 1);
    aligned(&list, "MODULE", false, 2);
    aligned(&list, "STATUS", false, 3);
    aligned(&list, "EVENTS", true, 4);
    aligned(&list, "CREATED", false, 5);
    let events = ok(pinion(&db, &["events", "--time", "utc"]));
    assert_eq!(events.lines().count(), 7, "{events}");
    aligned(&events, "ID", true, 0);
    aligned(&events, "AT", false, 1);
    aligned(&events, "INSTANCE", false, 3);
    aligned(&events, "WORKFLOW TYPE", false, 4);
    aligned(&events, "MODULE", false, 5);
}

#[test]
fn text_shows_rfc3339_times_in_utc_or_local_time_and_json_keeps_epoch_milliseconds() {
    let dir = TempDir::new("out-time");
    let db = dir.db();
    let w = wasm("testkit");
    ok(pinion(
        &db,
        &["run", w.to_str().unwrap(), "Echo", "--id", "t"],
    ));
    let rec = json(pinion(&db, &["status", "t", "--json"]));
    let created = rec["created_at_ms"].as_u64().expect("epoch ms in --json");
    let status = ok(pinion(&db, &["status", "t", "--time", "utc"]));
    assert!(
        status.contains(&format!("created:       {}\n", utc(created))),
        "{status}"
    );
    // Local time, from $TZ: the same instant with its offset; $PINION_TIME sets the default.
    let local = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(&db)
        .args(["status", "t"])
        .env("TZ", "Asia/Kolkata")
        .env_remove("PINION_TIME")
        .output()
        .unwrap();
    let shifted = utc(created + 5 * 3_600_000 + 30 * 60_000);
    let shifted = format!("{}+05:30", shifted.trim_end_matches('Z'));
    assert!(out(&local).contains(&shifted), "{}", out(&local));
    let env_utc = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(&db)
        .args(["status", "t"])
        .env("TZ", "Asia/Kolkata")
        .env("PINION_TIME", "utc")
        .output()
        .unwrap();
    assert!(out(&env_utc).contains(&utc(created)), "{}", out(&env_utc));

    let events = json(pinion(&db, &["events", "--json", "--limit", "1"]));
    assert!(events["at_ms"].is_u64(), "{events}");
    let text = ok(pinion(&db, &["events", "--time", "utc", "--limit", "1"]));
    assert!(
        text.contains(&utc(events["at_ms"].as_u64().unwrap())),
        "{text}"
    );
    let hash = rec["module_hash"].as_str().unwrap();
    ok(pinion(&db, &["alias", "set", "prod", hash]));
    let changes = json(pinion(&db, &["alias", "history", "prod", "--json"]));
    let at = changes["changes"][0]["at_ms"]
        .as_u64()
        .or_else(|| changes[0]["at_ms"].as_u64())
        .unwrap_or_else(|| panic!("epoch ms in --json: {changes}"));
    let text = ok(pinion(&db, &["alias", "history", "prod", "--time", "utc"]));
    assert!(text.contains(&utc(at)), "{text}");
    assert!(!text.contains(&at.to_string()), "no raw ms in text: {text}");
}

#[test]
fn a_blocked_reason_leads_with_the_panic_message_and_verbose_shows_the_backtrace() {
    let dir = TempDir::new("out-panic");
    let db = dir.db();
    let w = wasm("testkit");
    let run = pinion(&db, &["run", w.to_str().unwrap(), "Panic", "--id", "p"]);
    assert_eq!(run.status.code(), Some(6), "{}", err(&run));
    assert!(
        err(&run).contains("instance p is blocked: boom (guest panicked at "),
        "{}",
        err(&run)
    );
    let status = ok(pinion(&db, &["status", "p"]));
    let blocked = status
        .lines()
        .find(|l| l.starts_with("blocked:"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(blocked.starts_with("blocked:       boom ("), "{blocked}");
    assert!(blocked.contains("--verbose"), "{blocked}");
    assert!(!status.contains("wasm function"), "{status}");
    let verbose = ok(pinion(&db, &["status", "p", "--verbose"]));
    assert!(verbose.contains("wasm backtrace"), "{verbose}");
    assert!(verbose.contains("<wasm function"), "{verbose}");
    assert!(verbose.contains("boom"), "{verbose}");
    // The record keeps everything.
    let rec = json(pinion(&db, &["status", "p", "--json"]));
    assert!(rec["blocked_reason"]
        .as_str()
        .unwrap()
        .contains("wasm backtrace"));
    let events = ok(pinion(&db, &["events", "--type", "blocked"]));
    assert!(events.contains("  boom (guest panicked at "), "{events}");
}

#[test]
fn errors_name_the_flag_or_variable_to_fix() {
    let dir = TempDir::new("out-flags");
    let db = dir.db();
    let o = pinion(&db, &["start", "Echo"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("--module") && err(&o).contains("--alias"),
        "{}",
        err(&o)
    );

    let o = pinion(&db, &["list", "--status", "bogus"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("'bogus'"), "{}", err(&o));

    let token = token_file(&dir);
    let server = ApiServer::start(&db, Some(&token));
    let remote = |env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_pinion"))
            .args(["--server", &server.url, "list"])
            .env_remove("PINION_TOKEN")
            .env_remove("PINION_TOKEN_FILE")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let missing = remote(&[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        err(&missing).contains("--token-file") && err(&missing).contains("$PINION_TOKEN"),
        "{}",
        err(&missing)
    );
    let wrong = remote(&[("PINION_TOKEN", "not-the-token")]);
    assert!(
        err(&wrong).contains("refused the token in $PINION_TOKEN"),
        "{}",
        err(&wrong)
    );
    assert!(!err(&wrong).contains("not-the-token"), "{}", err(&wrong));
    assert!(remote(&[("PINION_TOKEN", TOKEN)]).status.success());
}

/// hello-v1 with a custom section appended: the same module, another hash.
fn variant(n: u32) -> Vec<u8> {
    let mut bytes = wasm_bytes("hello-v1");
    let name = b"pinion-test";
    let payload = n.to_le_bytes();
    bytes.push(0); // custom section
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&payload);
    bytes
}

#[test]
fn a_module_prefix_needs_4_characters_and_an_ambiguous_one_names_the_candidates() {
    use sha2::Digest as _;
    let dir = TempDir::new("out-prefix");
    let db = dir.db();
    // Two variants whose hashes share their first 4 hex digits (a birthday search).
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0..100_000u32)
        .find_map(|n| {
            let hash = hex::encode(sha2::Sha256::digest(variant(n)));
            seen.insert(hash[..4].to_owned(), n)
                .map(|m| (variant(m), variant(n)))
        })
        .unwrap();
    let mut hashes = Vec::new();
    for (i, bytes) in [a, b].iter().enumerate() {
        let f = dir.path().join(format!("v{i}.wasm"));
        std::fs::write(&f, bytes).unwrap();
        hashes.push(
            ok(pinion(&db, &["deploy", f.to_str().unwrap()]))
                .trim()
                .to_owned(),
        );
    }
    assert_eq!(hashes[0][..4], hashes[1][..4]);
    let o = pinion(&db, &["start", "Hello", "--module", &hashes[0][..3]]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("at least 4 characters"), "{}", err(&o));
    let o = pinion(&db, &["start", "Hello", "--module", &hashes[0][..4]]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("ambiguous"), "{}", err(&o));
    for h in &hashes {
        assert!(err(&o).contains(h.as_str()), "{}", err(&o));
    }
    // A longer prefix that tells them apart works.
    let n = (4..64).find(|&n| hashes[0][..n] != hashes[1][..n]).unwrap();
    ok(pinion(
        &db,
        &["start", "Hello", "--module", &hashes[0][..n], "--id", "x"],
    ));
    // A short alias is still an alias.
    ok(pinion(&db, &["alias", "set", "v1", &hashes[1]]));
    ok(pinion(
        &db,
        &["start", "Hello", "--alias", "v1", "--id", "y"],
    ));
    let o = pinion(&db, &["terminate", "--module", "v1", "--dry-run"]);
    assert!(
        out(&o).lines().any(|l| l.starts_with("y:")),
        "{}{}",
        out(&o),
        err(&o)
    );
}

#[test]
fn a_module_never_used_is_unused_not_drained() {
    let dir = TempDir::new("out-unused");
    let db = dir.db();
    deploy(&db, "testkit");
    let status = |db: &Path| json(pinion(db, &["modules", "--json"]))[0]["status"].clone();
    assert_eq!(status(&db), "unused");
    let text = ok(pinion(&db, &["modules"]));
    assert!(text.lines().nth(1).unwrap().contains(" unused "), "{text}");
    let w = wasm("testkit");
    ok(pinion(&db, &["run", w.to_str().unwrap(), "Echo"]));
    assert_eq!(status(&db), "drained");
}

#[test]
fn alias_set_verify_says_how_many_instances_of_which_modules_it_replayed_against_what() {
    let dir = TempDir::new("out-verify");
    let db = dir.db();
    let v1 = deploy(&db, "hello-v1");
    let v2 = deploy(&db, "hello-v2");
    // No worker runs: both stay running with their start recorded.
    for id in ["a", "b"] {
        ok(pinion(
            &db,
            &["start", "Hello", "--module", &v1, "--id", id],
        ));
    }
    let o = pinion(&db, &["alias", "set", "prod", &v2, "--verify"]);
    assert_eq!(out(&o).trim(), format!("prod -> {v2}"));
    assert!(
        err(&o).contains(&format!(
            "verify: replayed 2 running instance(s) of Hello (2 pinned to {}) against {}: 2 compatible, 0 diverged, 0 failed",
            &v1[..12],
            &v2[..12]
        )),
        "{}",
        err(&o)
    );
    let set = json(pinion(
        &db,
        &["alias", "set", "prod", &v2, "--verify", "--json"],
    ));
    assert_eq!(set["verified"]["replayed"], 2);
    assert_eq!(set["verified"]["module"], v2.as_str());
    assert_eq!(set["verified"]["pinned"][0]["module"], v1.as_str());
    assert_eq!(set["verified"]["pinned"][0]["instances"], 2);
    // Nothing to replay is said as such, not as a pass.
    let foo = deploy(&db, "foobar-v1");
    let o = pinion(&db, &["alias", "set", "foo", &foo, "--verify"]);
    assert!(err(&o).contains("nothing was checked"), "{}", err(&o));
}

#[test]
fn events_follow_continues_after_a_server_restart_without_repeating_or_losing_any() {
    let dir = TempDir::new("out-follow");
    let db = dir.db();
    let server = ApiServer::start(&db, None);
    let url = server.url.clone();
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pinion"))
            .args(["--server", &url])
            .args(args)
            .output()
            .unwrap()
    };
    let w = wasm("testkit");
    let hash = ok(cli(&["deploy", w.to_str().unwrap()])).trim().to_owned();
    let start = |id: &str| ok(cli(&["start", "Echo", "--module", &hash, "--id", id]));
    start("one");
    start("two");
    let mut follower = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .args(["--server", &url, "events", "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    let etx = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(Ok(l));
        }
    });
    let stderr = follower.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = etx.send(Err(l));
        }
    });
    let mut ids = Vec::new();
    let mut notes = Vec::new();
    let mut until = |what: &str, done: &dyn Fn(&[u64], &[String]) -> bool| {
        let deadline = std::time::Instant::now() + WAIT;
        while !done(&ids, &notes) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(Ok(line)) => {
                    let e: Value = serde_json::from_str(&line).unwrap();
                    ids.push(e["id"].as_u64().unwrap());
                }
                Ok(Err(note)) => notes.push(note),
                Err(_) => panic!("{what}: events {ids:?}, stderr {notes:?}"),
            }
        }
    };
    until("the first four events", &|ids, _| ids.len() == 4);
    let (exit, _) = server.terminate();
    assert!(exit.success());
    until("the follower to notice", &|_, notes| {
        notes.iter().any(|n| n.contains("retrying after event 4"))
    });
    let listen = url.trim_start_matches("http://");
    let server = ApiServer::start_on(&db, None, &[], &[], &[], listen);
    start("three");
    start("four");
    until(
        "the events after the restart, and the note",
        &|ids, notes| ids.len() >= 8 && notes.iter().any(|n| n.contains("reconnected")),
    );
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(ids, (1..=8).collect::<Vec<u64>>(), "stderr: {notes:?}");
    drop(server);
}
