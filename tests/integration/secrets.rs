//! Environment and secrets granted to activities, through a real `pinion server` process:
//! a secret reaches the activity, and never the history, the events, the log or the
//! database file; grants change without a redeploy; a bad file is refused or, once the
//! server runs, ignored in favour of the last good one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::api::ApiServer;
use crate::common::*;

const SECRET: &str = "sk_live_7f3a9c2e51d04b88";

fn write_secrets(dir: &TempDir, mode: u32) {
    let f = dir.path().join("secrets.toml");
    std::fs::write(&f, format!("PAY_API_TOKEN = \"{SECRET}\"\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write_config(dir: &TempDir, env: &[&str]) -> std::path::PathBuf {
    let f = dir.path().join("pinion.toml");
    let env = env
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // Write to a new file and rename, as an editor or a config manager does.
    let tmp = dir.path().join("pinion.toml.new");
    std::fs::write(
        &tmp,
        format!(
            "secrets_file = \"secrets.toml\"\n\n[[grant]]\nmodules = [\"label:reach\"]\nenv = [{env}]\nsecrets = [\"PAY_API_TOKEN\"]\n"
        ),
    )
    .unwrap();
    std::fs::rename(&tmp, &f).unwrap();
    f
}

/// Runs `activity` through workflow `Call` on the server; returns what the workflow saw.
fn call(
    server: &ApiServer,
    db: &Path,
    hash: &str,
    id: &str,
    activity: &str,
    input: Value,
) -> Value {
    let body = json!({ "activity": activity, "input": input }).to_string();
    let out = pinion(
        db,
        &[
            "--server",
            &server.url,
            "start",
            "Call",
            "--module",
            hash,
            "--input",
            &body,
            "--id",
            id,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = pinion(
        db,
        &[
            "--server",
            &server.url,
            "--json",
            "result",
            id,
            "--wait",
            "--timeout",
            "60",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["result"].clone()
}

fn file_contains(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .unwrap_or(false)
}

/// The reach module deployed on `dir`'s database, and a server granting it `PAY_REGION`
/// (from its environment) and the secret `PAY_API_TOKEN`. Returns the server, the database,
/// the module's hash and the configuration file.
fn serve(dir: &TempDir) -> (ApiServer, PathBuf, String, PathBuf) {
    write_secrets(dir, 0o600);
    let config = write_config(dir, &["PAY_REGION"]);
    let db = dir.db();
    let out = pinion(&db, &["deploy", wasm("reach").to_str().unwrap()]);
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let server = ApiServer::start_with(
        &db,
        None,
        &["--config", config.to_str().unwrap()],
        &[("PAY_REGION", "eu-west")],
    );
    (server, db, hash, config)
}

#[test]
fn a_secret_reaches_the_activity_and_never_history_events_logs_or_the_database() {
    let dir = TempDir::new("secrets");
    let (server, db, hash, _) = serve(&dir);

    // The activity sees exactly what was granted, under the granted names.
    let r = call(&server, &db, &hash, "names", "env_all", Value::Null);
    assert_eq!(r, json!({ "ok": ["PAY_API_TOKEN", "PAY_REGION"] }));
    let r = call(
        &server,
        &db,
        &hash,
        "region",
        "env",
        json!({ "name": "PAY_REGION" }),
    );
    assert_eq!(r, json!({ "ok": "eu-west" }));
    // What it does with the secret is its business; what comes back is redacted.
    let r = call(
        &server,
        &db,
        &hash,
        "leak",
        "leak",
        json!({ "name": "PAY_API_TOKEN" }),
    );
    assert_eq!(
        r,
        json!({ "ok": "[secret PAY_API_TOKEN]" }),
        "the activity did read it"
    );
    let r = call(
        &server,
        &db,
        &hash,
        "fail",
        "fail_with",
        json!({ "name": "PAY_API_TOKEN" }),
    );
    assert_eq!(
        r["err"]["message"],
        json!("PAY_API_TOKEN is [secret PAY_API_TOKEN]"),
        "{r}"
    );

    // What is granted, as the server sees it: names only, never a secret's value.
    let modules = pinion(&db, &["--server", &server.url, "--json", "modules"]);
    assert!(modules.status.success());
    let modules: Value = serde_json::from_slice(&modules.stdout).unwrap();
    let grants = &modules[0]["grants"];
    let leak = grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["activity"] == "leak")
        .unwrap();
    assert_eq!(leak["env"], json!(["PAY_REGION"]), "{grants}");
    assert_eq!(leak["secrets"], json!(["PAY_API_TOKEN"]), "{grants}");
    assert_eq!(leak["grants"], json!([1]), "{grants}");
    assert!(!grants.to_string().contains(SECRET));
    let table = pinion(&db, &["--server", &server.url, "modules"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("leak") && table.contains("env PAY_REGION; secrets PAY_API_TOKEN"),
        "{table}"
    );

    let events = pinion(
        &db,
        &[
            "--server",
            &server.url,
            "--json",
            "events",
            "--limit",
            "1000",
        ],
    );
    assert!(events.status.success());
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    let export = dir.path().join("export");
    let out = pinion(
        &db,
        &[
            "history",
            "export",
            "--all",
            "--out",
            export.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(
        log.contains("the value of PAY_API_TOKEN is Some(\"[secret PAY_API_TOKEN]\")"),
        "guest output is logged, redacted: {log}"
    );
    assert!(
        !log.contains(SECRET),
        "the server log holds the secret: {log}"
    );
    let events = String::from_utf8(events.stdout).unwrap();
    assert!(
        events.contains("completed") && !events.contains(SECRET),
        "{events}"
    );
    let mut exported = 0;
    for f in std::fs::read_dir(&export).unwrap() {
        let f = f.unwrap().path();
        exported += 1;
        assert!(
            !file_contains(&f, SECRET),
            "{} holds the secret",
            f.display()
        );
    }
    assert_eq!(exported, 4);
    for suffix in ["", "-wal", "-shm"] {
        let f = format!("{}{suffix}", db.display());
        assert!(
            !file_contains(Path::new(&f), SECRET),
            "{f} holds the secret"
        );
    }
    assert!(
        file_contains(&db, "[secret PAY_API_TOKEN]")
            || file_contains(
                Path::new(&format!("{}-wal", db.display())),
                "[secret PAY_API_TOKEN]"
            ),
        "the redacted result is what was stored"
    );
}

#[test]
fn a_grant_change_applies_to_the_next_attempt_and_a_broken_edit_keeps_the_last_good_grants() {
    let dir = TempDir::new("regrant");
    let (server, db, hash, config) = serve(&dir);
    let r = call(&server, &db, &hash, "before", "env_all", Value::Null);
    assert_eq!(r, json!({ "ok": ["PAY_API_TOKEN", "PAY_REGION"] }));

    write_config(&dir, &[]);
    let r = call(&server, &db, &hash, "after", "env_all", Value::Null);
    assert_eq!(
        r,
        json!({ "ok": ["PAY_API_TOKEN"] }),
        "no redeploy, no restart"
    );

    std::fs::write(
        &config,
        "[[grant]]\nmodules = [\"label:reach\"]\nsecretz = [\"X\"]\n",
    )
    .unwrap();
    let r = call(&server, &db, &hash, "broken", "env_all", Value::Null);
    assert_eq!(
        r,
        json!({ "ok": ["PAY_API_TOKEN"] }),
        "the last good grants stay in force"
    );
    let (_, log) = server.terminate();
    assert!(
        log.contains("not valid, the previous grants stay in force")
            && log.contains("unknown field `secretz`"),
        "{log}"
    );
}

#[test]
fn a_secrets_file_others_can_read_or_a_bad_grant_stops_the_server_before_it_starts() {
    let dir = TempDir::new("badconfig");
    write_secrets(&dir, 0o644);
    let config = write_config(&dir, &[]);
    let db = dir.db();
    let serve = |extra: &[&str]| {
        let mut args = vec!["--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["server", "--listen", "127.0.0.1:0", "--no-auth"]);
        pinion(&db, &args)
    };
    let out = serve(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("mode 0644") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains(SECRET));

    write_secrets(&dir, 0o600);
    std::fs::write(
        &config,
        "[[grant]]\nmodules = [\"x\"]\nhttp = [\"api.example.com\"]\n",
    )
    .unwrap();
    let out = serve(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("grant 1") && err.contains("needs a scheme"),
        "{err}"
    );
    assert!(!db.exists(), "nothing was created");
}
