//! Replay against golden histories (tests/fixtures/, recorded by
//! scripts/regenerate-fixtures.sh from the v1 examples), through the library API a workflow
//! author uses in `cargo test`, and through `pinion replay`, `deploy --verify` and
//! `history export|import`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pinion_runtime::replay::{ReplayOptions, ReplayOutcome, ReplayReport, Replayer};
use serde_json::Value;

use super::common::*;

fn fixtures(dir: &str) -> PathBuf {
    root().join("tests/fixtures").join(dir)
}

fn replayer(guest: &str, strict_inputs: bool) -> Replayer {
    Replayer::from_file(&wasm(guest), ReplayOptions { strict_inputs }).unwrap()
}

fn replay_fixture(guest: &str, name: &str) -> ReplayReport {
    replayer(guest, false)
        .replay_file(&fixtures("replay").join(format!("{name}.json")))
        .unwrap()
}

fn diverged(r: &ReplayReport) -> (u64, &str, &str) {
    match &r.outcome {
        ReplayOutcome::Diverged {
            event_index,
            recorded,
            produced,
            ..
        } => (*event_index, recorded, produced),
        other => panic!("{} expected to diverge, got {other:?}", r.instance_id),
    }
}

#[test]
fn every_golden_history_is_compatible_with_the_module_that_recorded_it() {
    let r = replayer("replay-v1", true);
    let mut n = 0;
    for file in pinion_runtime::replay::history_files(&fixtures("replay")).unwrap() {
        let report = r.replay_file(&file).unwrap();
        assert!(report.is_compatible(), "{report}");
        assert!(report.warnings.is_empty(), "{report}");
        assert!(!report.result_differs);
        n += 1;
    }
    assert_eq!(n, 14);
    let foobar = replayer("foobar-v1", true)
        .replay_file(&fixtures("seeds").join("foobar-v1-completed.json"))
        .unwrap();
    assert!(foobar.is_compatible(), "{foobar}");
    let recorded: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures("seeds").join("foobar-v1-completed.json")).unwrap(),
    )
    .unwrap();
    let recorded_result = recorded["events"].as_array().unwrap().last().unwrap()["result"].clone();
    assert_eq!(
        foobar.result,
        Some(recorded_result),
        "replay reproduces the recorded result"
    );
    let hello = replayer("hello-v1", true)
        .replay_file(&fixtures("seeds").join("hello-v1-waiting.json"))
        .unwrap();
    assert!(
        hello.is_compatible(),
        "a running history replays up to its last activation: {hello}"
    );
}

#[test]
fn activity_type_changed_is_a_divergence() {
    let r = replay_fixture("replay-v2", "TypeChanged");
    assert_eq!(
        diverged(&r),
        (
            3,
            r#"ActivityScheduled{type: "Foo", seq: 1}"#,
            r#"ActivityScheduled{type: "FooRenamed", seq: 1}"#
        )
    );
}

#[test]
fn an_inserted_activity_is_a_divergence_at_the_displaced_event() {
    // Seed 002: SendNotification inserted between Foo and Bar.
    let r = replayer("foobar-v2", false)
        .replay_file(&fixtures("seeds").join("foobar-v1-completed.json"))
        .unwrap();
    assert_eq!(
        diverged(&r),
        (
            6,
            r#"ActivityScheduled{type: "Bar", seq: 2}"#,
            r#"ActivityScheduled{type: "SendNotification", seq: 2}"#
        )
    );
}

#[test]
fn a_changed_activity_result_type_is_a_divergence() {
    // Seed 002's first breaking change: Flag returned a bool, now a string.
    let r = replay_fixture("replay-v2", "SignatureChanged");
    assert_eq!(
        diverged(&r),
        (
            6,
            r#"ActivityScheduled{type: "Show", seq: 2}"#,
            r#"WorkflowFailed{kind: "InvalidOutput"}"#
        )
    );
}

#[test]
fn a_removed_activity_is_a_divergence() {
    let r = replay_fixture("replay-v2", "Removed");
    assert_eq!(
        diverged(&r),
        (
            6,
            r#"ActivityScheduled{type: "B", seq: 2}"#,
            "WorkflowCompleted"
        )
    );
}

#[test]
fn two_swapped_calls_are_a_divergence() {
    let r = replay_fixture("replay-v2", "Swapped");
    assert_eq!(
        diverged(&r),
        (
            3,
            r#"ActivityScheduled{type: "A", seq: 1}"#,
            r#"ActivityScheduled{type: "B", seq: 1}"#
        )
    );
}

#[test]
fn a_timer_replaced_by_an_activity_is_a_divergence() {
    let r = replay_fixture("replay-v2", "TimerToActivity");
    assert_eq!(
        diverged(&r),
        (
            3,
            "TimerStarted{seq: 1, duration_ms: 10}",
            r#"ActivityScheduled{type: "Wait", seq: 1}"#
        )
    );
    // Seed 004 the same way: v2 no longer waits.
    let hello = replayer("hello-v2", false)
        .replay_file(&fixtures("seeds").join("hello-v1-waiting.json"))
        .unwrap();
    assert_eq!(diverged(&hello).0, 3);
}

#[test]
fn a_changed_timer_duration_is_a_warning_not_a_divergence() {
    let r = replay_fixture("replay-v2", "TimerDuration");
    assert!(r.is_compatible(), "{r}");
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.warnings[0].contains("duration changed from 10 ms to 20 ms"),
        "{r}"
    );
}

#[test]
fn a_changed_activity_input_is_a_warning_or_with_strict_inputs_a_divergence() {
    let r = replay_fixture("replay-v2", "InputChanged");
    assert!(r.is_compatible(), "{r}");
    assert!(r.warnings[0].contains("input changed from 1 to 2"), "{r}");
    let strict = replayer("replay-v2", true)
        .replay_file(&fixtures("replay").join("InputChanged.json"))
        .unwrap();
    assert_eq!(
        diverged(&strict),
        (
            3,
            r#"ActivityScheduled{type: "Echo", seq: 1, input: 1}"#,
            r#"ActivityScheduled{type: "Echo", seq: 1, input: 2}"#
        )
    );
}

#[test]
fn commands_past_the_end_of_a_completed_history_are_a_divergence() {
    let r = replay_fixture("replay-v2", "PastEnd");
    assert_eq!(
        diverged(&r),
        (
            6,
            "WorkflowCompleted",
            r#"ActivityScheduled{type: "B", seq: 2}"#
        )
    );
}

#[test]
fn a_completed_history_whose_code_never_completes_is_a_divergence() {
    let r = replay_fixture("replay-v2", "NeverCompletes");
    assert_eq!(diverged(&r), (6, "WorkflowCompleted", "no further command"));
}

#[test]
fn a_removed_version_marker_is_a_divergence() {
    let r = replay_fixture("replay-v2", "VersionRemoved");
    assert_eq!(
        diverged(&r),
        (
            3,
            r#"MarkerRecorded{id: "version:change"}"#,
            r#"ActivityScheduled{type: "A", seq: 1}"#
        )
    );
}

#[test]
fn a_recorded_version_outside_the_supported_range_is_a_divergence() {
    let r = replay_fixture("replay-v2", "VersionOutOfRange");
    assert_eq!(
        diverged(&r),
        (
            3,
            r#"MarkerRecorded{id: "version:change", version: 1}"#,
            r#"MarkerRecorded{id: "version:change", supported: 2..=3}"#
        )
    );
}

#[test]
fn a_different_result_from_the_same_commands_is_flagged() {
    let r = replay_fixture("replay-v2", "ResultChanged");
    assert!(r.is_compatible(), "{r}");
    assert!(r.result_differs);
    assert_eq!(r.result, Some(serde_json::json!("v2:a")));
}

#[test]
fn unknown_history_format_versions_are_rejected_clearly() {
    let dir = TempDir::new("replay-version");
    let mut doc: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures("replay").join("Unchanged.json")).unwrap(),
    )
    .unwrap();
    doc["version"] = 99.into();
    let path = dir.path().join("future.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let err = replayer("replay-v1", false).replay_file(&path).unwrap_err();
    assert!(
        err.to_string()
            .contains("history format version 99 is not supported"),
        "{err}"
    );
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn replay_cli_reads_history_files_prints_a_summary_and_exits_non_zero_on_divergence() {
    let dir = TempDir::new("replay-cli");
    let db = dir.db();
    let files = fixtures("replay");
    let o = pinion(
        &db,
        &[
            "replay",
            "--module",
            wasm("replay-v2").to_str().unwrap(),
            "--history",
            files.to_str().unwrap(),
        ],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(8), "{out}{err}");
    assert!(out.contains("4 compatible, 10 diverged, 0 failed"), "{out}");
    assert!(out.contains(r#"event #3: history has ActivityScheduled{type: "Foo", seq: 1}, code produced ActivityScheduled{type: "FooRenamed", seq: 1}"#));
    let o = pinion(
        &db,
        &[
            "replay",
            "--json",
            "--module",
            wasm("replay-v1").to_str().unwrap(),
            "--history",
            files.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0));
    let report: Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(report["summary"]["compatible"], 14);
    assert_eq!(report["reports"].as_array().unwrap().len(), 14);
    // The candidate was never stored, and no database was created for file replay.
    assert!(!db.exists());
}

fn file_digest(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

#[test]
fn replay_from_a_database_filters_and_changes_nothing() {
    let dir = TempDir::new("replay-db");
    let db = dir.db();
    for wf in ["TypeChanged", "Unchanged", "TimerDuration"] {
        let o = pinion(
            &db,
            &["run", wasm("replay-v1").to_str().unwrap(), wf, "--id", wf],
        );
        assert!(o.status.success(), "{:?}", text(&o));
    }
    let before = file_digest(&db);
    let v2 = wasm("replay-v2");
    // Default status is running: none are running.
    let o = pinion(&db, &["replay", "--module", v2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).0.contains("0 compatible, 0 diverged, 0 failed"));
    let o = pinion(
        &db,
        &[
            "replay",
            "--module",
            v2.to_str().unwrap(),
            "--status",
            "completed",
            "--since",
            "1h",
        ],
    );
    assert_eq!(o.status.code(), Some(8));
    assert!(
        text(&o).0.contains("2 compatible, 1 diverged, 0 failed"),
        "{:?}",
        text(&o)
    );
    let o = pinion(
        &db,
        &[
            "replay",
            "--module",
            v2.to_str().unwrap(),
            "--status",
            "all",
            "--id",
            "Unchanged",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0));
    let report: Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(report["reports"].as_array().unwrap().len(), 1);
    // Read-only: the database file is byte-for-byte unchanged and nothing waits in its
    // write-ahead log (a read-only reader leaves an empty -wal and the -shm index).
    assert!(file_digest(&db) == before, "the database file changed");
    let wal = dir.path().join("pinion.db-wal");
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
    let modules: Value =
        serde_json::from_str(&text(&pinion(&db, &["modules", "--json"])).0).unwrap();
    assert_eq!(
        modules.as_array().unwrap().len(),
        1,
        "the candidate was not deployed"
    );
}

#[test]
fn deploy_verify_refuses_a_module_that_breaks_running_instances() {
    let dir = TempDir::new("verify");
    let db = dir.db();
    let v1 = text(&pinion(
        &db,
        &["deploy", wasm("hello-v1").to_str().unwrap()],
    ))
    .0
    .trim()
    .to_owned();
    let o = pinion(
        &db,
        &[
            "start",
            "Hello",
            "--module",
            &v1,
            "--input",
            r#"{"wait_ms": 3600000}"#,
            "--id",
            "waiting",
        ],
    );
    assert!(o.status.success());
    // Let the instance record its timer: run a server briefly.
    let mut server = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(&db)
        .args(["server", "--listen", "127.0.0.1:0", "--no-auth"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the timer", Duration::from_secs(60), || {
        text(&pinion(&db, &["history", "waiting"]))
            .0
            .contains("TimerStarted")
    });
    server.kill().unwrap();
    server.wait().unwrap();
    let o = pinion(
        &db,
        &["deploy", "--verify", wasm("hello-v2").to_str().unwrap()],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(8), "{out}{err}");
    assert!(out.contains("diverged    waiting (Hello)"), "{out}");
    assert!(err.contains("not deployed"), "{err}");
    let modules: Value =
        serde_json::from_str(&text(&pinion(&db, &["modules", "--json"])).0).unwrap();
    assert_eq!(
        modules.as_array().unwrap().len(),
        1,
        "v2 must not be stored"
    );
    // A module whose workflow types have no running instances verifies and deploys.
    let o = pinion(
        &db,
        &["deploy", "--verify", wasm("foobar-v2").to_str().unwrap()],
    );
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn histories_export_to_files_and_import_into_another_database_unchanged() {
    let dir = TempDir::new("export");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    for (wf, id) in [("Unchanged", "u1"), ("Swapped", "s1")] {
        assert!(pinion(
            &a,
            &["run", wasm("replay-v1").to_str().unwrap(), wf, "--id", id]
        )
        .status
        .success());
    }
    let out = dir.path().join("exported");
    let o = pinion(
        &a,
        &["history", "export", "--all", "--out", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(out.join("u1.json").exists() && out.join("s1.json").exists());
    let o = pinion(&b, &["history", "import", out.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    for id in ["u1", "s1"] {
        let ea: Value =
            serde_json::from_str(&text(&pinion(&a, &["history", id, "--json"])).0).unwrap();
        let eb: Value =
            serde_json::from_str(&text(&pinion(&b, &["history", id, "--json"])).0).unwrap();
        assert_eq!(ea, eb);
    }
    // Imported histories replay from the new database without their module being there.
    let o = pinion(
        &b,
        &[
            "replay",
            "--module",
            wasm("replay-v2").to_str().unwrap(),
            "--status",
            "all",
        ],
    );
    assert!(
        text(&o).0.contains("1 compatible, 1 diverged, 0 failed"),
        "{:?}",
        text(&o)
    );
    // A single export goes to stdout; a bad file imports nothing.
    let one: Value =
        serde_json::from_str(&text(&pinion(&a, &["history", "export", "u1"])).0).unwrap();
    assert_eq!(one["instance_id"], "u1");
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"format\": \"something-else\"}").unwrap();
    let c = dir.path().join("c.db");
    let o = pinion(
        &c,
        &[
            "history",
            "import",
            out.join("u1.json").to_str().unwrap(),
            junk.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(4));
    assert!(
        text(&o).1.contains("not a pinion history export"),
        "{:?}",
        text(&o)
    );
    assert!(!c.exists(), "nothing imported, not even the first file");
}

#[test]
fn follow_mode_reports_each_new_divergence_once() {
    let dir = TempDir::new("follow");
    let db = dir.db();
    assert!(pinion(
        &db,
        &[
            "run",
            wasm("replay-v1").to_str().unwrap(),
            "Unchanged",
            "--id",
            "ok"
        ]
    )
    .status
    .success());
    let mut shadow = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(&db)
        .args([
            "replay",
            "--module",
            wasm("replay-v2").to_str().unwrap(),
            "--follow",
            "--interval",
            "50ms",
            "--status",
            "all",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(pinion(
        &db,
        &[
            "run",
            wasm("replay-v1").to_str().unwrap(),
            "Swapped",
            "--id",
            "bad"
        ]
    )
    .status
    .success());
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = shadow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a divergence report");
    let report: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(report["instance_id"], "bad");
    assert_eq!(report["outcome"], "diverged");
    // Reported once: nothing more arrives over several intervals.
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
    shadow.kill().unwrap();
    let _ = shadow.wait();
}

#[test]
fn changed_signal_handling_is_a_divergence() {
    // v1 shipped right after signal `approve`; v2 also waits for `countersign`, so at the
    // activation that delivered `approve` the recorded Echo has no counterpart.
    let r = replay_fixture("replay-v2", "SignalChanged");
    assert_eq!(
        diverged(&r),
        (
            4,
            r#"ActivityScheduled{type: "Echo", seq: 1}"#,
            "no further command"
        )
    );
}

/// Ids that a lossy file-name mapping would merge (`x/y`, `x_y`, `x:y` once all became
/// `x_y.json`) export to one file each, import back as three instances, and a second
/// export into the same directory overwrites nothing.
#[test]
fn exported_history_files_never_collide_and_are_never_overwritten() {
    let dir = TempDir::new("export-names");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let hash = {
        let o = pinion(&a, &["deploy", wasm("replay-v1").to_str().unwrap()]);
        assert!(o.status.success());
        text(&o).0.trim().to_string()
    };
    let ids = ["x/y", "x_y", "x:y"];
    for id in ids {
        let o = pinion(&a, &["start", "Unchanged", "--module", &hash, "--id", id]);
        assert!(o.status.success(), "{:?}", text(&o));
    }
    let out = dir.path().join("exported");
    let export = || {
        pinion(
            &a,
            &["history", "export", "--all", "--out", out.to_str().unwrap()],
        )
    };
    let o = export();
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);
    let o = pinion(&b, &["history", "import", out.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    for id in ids {
        let o = pinion(&b, &["history", id, "--json"]);
        assert!(o.status.success(), "{id}: {:?}", text(&o));
    }
    let before = std::fs::read(out.join("x%2Fy.json")).unwrap();
    let o = export();
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("export into an empty directory"),
        "{:?}",
        text(&o)
    );
    assert_eq!(std::fs::read(out.join("x%2Fy.json")).unwrap(), before);
}

/// The labels and outcomes of a `replay --json` answer, in report order.
fn outcomes(answer: &Value) -> Vec<(String, u64, String)> {
    answer["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["instance_id"].as_str().unwrap().to_owned(),
                r["run"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Issue 18, item 3: an instance that continued as new twice has three runs; a candidate
/// that breaks only the first is found by `--all-runs` (locally, over `--server` as a job,
/// and from the exported files), reported per run, and export writes every run.
#[test]
fn all_runs_replays_and_exports_the_archived_runs_of_an_instance_that_continued_as_new() {
    let dir = TempDir::new("all-runs");
    let db = dir.db();
    let o = pinion(
        &db,
        &[
            "run",
            wasm("replay-v1").to_str().unwrap(),
            "Laps",
            "--input",
            r#"{"n": 2}"#,
            "--id",
            "lap-1",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let v2 = wasm("replay-v2");
    let v2 = v2.to_str().unwrap();
    // Without --all-runs only the current run (3) is replayed, and it is compatible.
    let o = pinion(&db, &["replay", "--module", v2, "--status", "all"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(
        text(&o).0.contains("1 compatible, 0 diverged"),
        "{:?}",
        text(&o)
    );
    // With it, each run is reported on its own, named `<id>@run<N>`: run 1 diverges.
    let expected = [
        ("lap-1".to_owned(), 1, "diverged".to_owned()),
        ("lap-1".to_owned(), 2, "compatible".to_owned()),
        ("lap-1".to_owned(), 3, "compatible".to_owned()),
    ];
    let o = pinion(
        &db,
        &["replay", "--module", v2, "--status", "all", "--all-runs"],
    );
    assert_eq!(o.status.code(), Some(8), "{:?}", text(&o));
    let (out, _) = text(&o);
    assert!(out.contains("diverged    lap-1@run1 (Laps)"), "{out}");
    assert!(
        !out.contains("lap-1@run2") && !out.contains("lap-1@run3"),
        "{out}"
    );
    assert!(out.contains("2 compatible, 1 diverged, 0 failed"), "{out}");
    let o = pinion(
        &db,
        &[
            "replay",
            "--module",
            v2,
            "--status",
            "completed",
            "--all-runs",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(8));
    let answer: Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(outcomes(&answer), expected);
    assert_eq!(answer["reports"][0]["recorded_status"], "continued_as_new");

    // Over --server: the API's replay (a job) takes the same flag.
    let server = crate::api::ApiServer::start(&db, None);
    let remote = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .args(["--server", &server.url])
        .args([
            "replay",
            "--module",
            v2,
            "--status",
            "all",
            "--all-runs",
            "--json",
        ])
        .env_remove("PINION_SERVER")
        .output()
        .unwrap();
    assert_eq!(remote.status.code(), Some(8), "{:?}", text(&remote));
    let answer: Value = serde_json::from_str(&text(&remote).0).unwrap();
    assert_eq!(outcomes(&answer), expected);
    let (status, answer) = crate::api::http(
        "POST",
        &format!("{}/v1/replay?status=all&all_runs=true", server.url),
        None,
        Some(("application/wasm", std::fs::read(v2).unwrap())),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcomes(&answer), expected);
    drop(server);

    // Export writes every run, the archived ones as `<id>@run<N>.json`; replaying the
    // directory finds the same.
    let out = dir.path().join("exported");
    let o = pinion(
        &db,
        &[
            "history",
            "export",
            "--all",
            "--all-runs",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["lap-1.json", "lap-1@run1.json", "lap-1@run2.json"]);
    let run1: Value =
        serde_json::from_slice(&std::fs::read(out.join("lap-1@run1.json")).unwrap()).unwrap();
    assert_eq!(run1["status"], "continued_as_new");
    let o = pinion(
        &db,
        &["replay", "--module", v2, "--history", out.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(8), "{:?}", text(&o));
    assert!(
        text(&o).0.contains("diverged    lap-1@run1 (Laps)"),
        "{:?}",
        text(&o)
    );
    assert!(
        text(&o).0.contains("2 compatible, 1 diverged"),
        "{:?}",
        text(&o)
    );
    // Importing the directory takes the instance (its current run) and skips the others.
    let b = dir.path().join("b.db");
    let o = pinion(&b, &["history", "import", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let imported: Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(imported["imported"], 1);
    assert_eq!(imported["skipped_archived_runs"], 2);
}
