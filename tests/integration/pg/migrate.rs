//! `pinion migrate --from app.db --to postgres://...`: a SQLite database with finished,
//! waiting and continued instances, an alias with history, a queued signal and a pending
//! timer is copied whole; on PostgreSQL it replays clean and its waiting instances go on.

use std::time::Duration;

use pinion_runtime::store::EventFilter;
use pinion_runtime::{InstanceStatus, Pinion};
use serde_json::Value;

use super::common::*;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Everything a reader sees of a database: instances with their histories, the lifecycle
/// events, aliases with their history, modules.
fn snapshot(p: &Pinion) -> Value {
    let mut instances = p
        .list(&pinion_runtime::store::InstanceFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .unwrap();
    instances.sort_by(|a, b| a.id.0.cmp(&b.id.0));
    let instances: Vec<Value> = instances
        .iter()
        .map(|r| {
            serde_json::json!({
                "record": serde_json::to_value(r).unwrap(),
                "history": serde_json::to_value(p.history(&r.id.0).unwrap()).unwrap(),
            })
        })
        .collect();
    let events = p
        .store()
        .lifecycle_events(&EventFilter {
            limit: 10_000,
            ..EventFilter::default()
        })
        .unwrap()
        .iter()
        .map(|e| serde_json::json!([e.id, e.instance_id.0, e.transition.name(), e.run, e.at_ms]))
        .collect::<Vec<_>>();
    let mut modules: Vec<String> = p
        .modules()
        .unwrap()
        .iter()
        .map(|m| m.hash.0.clone())
        .collect();
    modules.sort();
    serde_json::json!({
        "instances": instances,
        "events": events,
        "aliases": format!("{:?}", p.store().list_aliases().unwrap()),
        "alias_history": format!("{:?}", p.store().alias_history("kit").unwrap()),
        "modules": modules,
    })
}

#[test]
fn a_sqlite_database_migrated_to_postgres_is_the_same_replays_clean_and_goes_on() {
    let file = crate::common::TempDir::new("migrate-src");
    let sqlite = file.db();
    let pg = TempDir::new("migrate-dst");
    let url = pg.db();

    // The SQLite side: finished, waiting and continued instances.
    let p = open(&sqlite);
    let kit = p.deploy(&wasm_bytes("testkit")).unwrap().hash.0;
    let hello = p.deploy(&wasm_bytes("hello-v1")).unwrap().hash.0;
    p.set_alias("kit", &hello).unwrap();
    p.set_alias("kit", &kit).unwrap();
    let w = p.start_worker(quiet_worker()).unwrap();
    p.start(&start_req("Steps", &kit, r#"{"n": 3}"#, "done"))
        .unwrap();
    p.start(&start_req(
        "Approval",
        &kit,
        r#"{"order": "o-1"}"#,
        "waiting",
    ))
    .unwrap();
    p.start(&start_req("Collect", &kit, r#"{"count": 2}"#, "half"))
        .unwrap();
    p.start(&start_req("Rounds", &kit, r#"{"rounds": 2}"#, "rounds"))
        .unwrap();
    p.start(&start_req("Sleep", &kit, r#"{"ms": 10000}"#, "sleeper"))
        .unwrap();
    p.signal("rounds", "add", "5").unwrap();
    p.signal("half", "add", "1").unwrap();
    p.wait("done", Duration::from_secs(30)).unwrap();
    wait_until("rounds to continue as new", Duration::from_secs(30), || {
        p.status("rounds").unwrap().run == 2
    });
    wait_until(
        "half to take its first signal",
        Duration::from_secs(30),
        || {
            p.history("half")
                .unwrap()
                .iter()
                .any(|e| e.kind.name() == "SignalReceived")
        },
    );
    w.shutdown();
    drop(p);

    // A server on the file holds its lock: migrate refuses, naming it.
    let server = std::process::Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(&sqlite)
        .args(["server", "--listen", "127.0.0.1:0", "--no-auth"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(server);
    let lock = std::path::PathBuf::from(format!("{}.lock", sqlite.display()));
    wait_until(
        "the server to lock the file",
        Duration::from_secs(30),
        || std::fs::File::open(&lock).is_ok_and(|f| f.try_lock().is_err()),
    );
    let o = migrate(&sqlite, &url, false);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("stop the server"), "{}", stderr(&o));
    let _ = server.0.kill();
    let _ = server.0.wait();
    let _ = std::fs::remove_file(format!("{}.lock", sqlite.display()));

    // A signal queued while no worker runs: it travels in the inbox.
    let p = open(&sqlite);
    p.signal("half", "add", "2").unwrap();
    let before = snapshot(&p);
    drop(p);

    let o = migrate(&sqlite, &url, false);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("lifecycle_events"), "{}", stdout(&o));
    let q = open(&url);
    assert_eq!(
        snapshot(&q),
        before,
        "what PostgreSQL holds differs from the file"
    );
    assert_eq!(row_count(&url, "inbox"), 1, "the queued signal");
    assert_eq!(row_count(&url, "timers"), 1, "the sleeper's timer");
    drop(q);

    // Again into the same database: refused, nothing changed; then told to replace.
    let o = migrate(&sqlite, &url, false);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("already holds data"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--replace-existing"), "{}", stderr(&o));
    let o = migrate(&sqlite, &url, true);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let q = open(&url);
    assert_eq!(snapshot(&q), before);

    // Every history replays clean on PostgreSQL against the module it is pinned to.
    let o = pinion(&url, &["replay", "--module", &kit, "--status", "all"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));

    // And the instances go on there: the queued signal, the timer, a new signal.
    let w = q.start_worker(quiet_worker()).unwrap();
    q.signal("waiting", "approve", r#""ann""#).unwrap();
    q.signal("rounds", "add", "7").unwrap();
    for (id, result) in [
        ("waiting", r#""o-1 approved by ann""#),
        ("half", "3"),
        ("rounds", "12"),
    ] {
        let rec = q.wait(id, Duration::from_secs(60)).unwrap();
        assert_eq!(rec.status, InstanceStatus::Completed, "{id}");
        assert_eq!(rec.result.unwrap().json(), result, "{id}");
    }
    let rec = q.wait("sleeper", Duration::from_secs(60)).unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed);
    // New ids follow the copied ones: the outbox stays dense.
    let ids: Vec<u64> = q
        .store()
        .lifecycle_events(&EventFilter {
            limit: 10_000,
            ..EventFilter::default()
        })
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    w.shutdown();
}

#[test]
fn migrate_refuses_what_is_not_a_sqlite_file_or_not_a_postgres_url() {
    let dir = crate::common::TempDir::new("migrate-bad");
    let pg = TempDir::new("migrate-bad-dst");
    let o = migrate(&dir.path().join("nope.db"), &pg.db(), false);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no such SQLite database file"),
        "{}",
        stderr(&o)
    );
    drop(open(&dir.db()));
    let o = migrate(&dir.db(), &dir.path().join("other.db"), false);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("PostgreSQL URL"), "{}", stderr(&o));
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn migrate(from: &std::path::Path, to: &std::path::Path, replace: bool) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pinion"));
    cmd.arg("migrate")
        .arg("--from")
        .arg(from)
        .arg("--to")
        .arg(to);
    if replace {
        cmd.arg("--replace-existing");
    }
    cmd.output().unwrap()
}
