//! The authors' toolkit end to end: `pinion new` creates a crate outside the repository
//! whose `cargo test` (the harness) and wasm build pass, and whose module `pinion run`
//! runs to completion; and `pinion dev` (below) rebuilds, deploys and replays on save.
//!
//! The generated crates build with a nested cargo into one shared target directory,
//! `target/new-crates`, not the outer test run's (whose lock the nested cargo would wait
//! on), so the SDK and serde are compiled once for all these tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::common::*;

/// The target directory every generated crate builds into.
fn crates_target() -> PathBuf {
    root().join("target").join("new-crates")
}

/// Runs cargo with `args` in `dir`, on the shared target directory.
fn cargo(dir: &Path, args: &[&str]) -> Output {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", crates_target())
        .output()
        .expect("run cargo")
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pinion new` of crate `name` under `dir`; returns the crate's directory.
fn new_crate(dir: &TempDir, name: &str) -> PathBuf {
    let path = dir.path().join(name);
    let out = pinion(&dir.db(), &["new", path.to_str().unwrap()]);
    assert_ok("pinion new", &out);
    path
}

/// The wasm a release build of crate `name` produces.
fn built_wasm(name: &str) -> PathBuf {
    crates_target()
        .join("wasm32-wasip1")
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

#[test]
fn pinion_new_creates_a_crate_that_tests_builds_and_runs() {
    let dir = TempDir::new("new-crate");
    let path = new_crate(&dir, "greeter-flow");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "tests/workflow.rs",
        ".gitignore",
    ] {
        assert!(path.join(file).is_file(), "{file} was not created");
    }
    let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap();
    let sdk = root().join("guest-sdk").canonicalize().unwrap();
    assert!(
        manifest.contains(&format!("pinion-sdk = {{ path = \"{}\" }}", sdk.display())),
        "{manifest}"
    );

    let out = cargo(&path, &["test"]);
    assert_ok("cargo test in the new crate", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("test greets_after_an_hour_that_takes_no_time ... ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("test a_failing_greeter_is_retried ... ok"),
        "{stdout}"
    );

    assert_ok(
        "the wasm build of the new crate",
        &cargo(&path, &["build", "--release", "--target", "wasm32-wasip1"]),
    );
    let wasm = built_wasm("greeter-flow");
    let out = pinion(
        &dir.db(),
        &[
            "run",
            wasm.to_str().unwrap(),
            "Greet",
            "--input",
            r#"{"name": "Ada", "wait_ms": 10}"#,
        ],
    );
    assert_ok("pinion run on the new module", &out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "\"Hello, Ada!\""
    );
}

#[test]
fn pinion_new_never_overwrites_a_non_empty_directory() {
    let dir = TempDir::new("new-refuses");
    let path = dir.path().join("taken");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("notes.txt"), "mine").unwrap();
    let out = pinion(&dir.db(), &["new", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already exists and is not an empty directory"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(path.join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(!path.join("Cargo.toml").exists());

    // An empty directory is fine; a name cargo would refuse is bad syntax.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_ok(
        "pinion new into an empty directory",
        &pinion(&dir.db(), &["new", empty.to_str().unwrap()]),
    );
    let out = pinion(
        &dir.db(),
        &["new", dir.path().join("9lives").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = pinion(
        &dir.db(),
        &[
            "new",
            dir.path().join("elsewhere").to_str().unwrap(),
            "--sdk-path",
            dir.path().to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a pinion-sdk directory"));
}

/// The lines a `pinion dev` process prints, as they come.
struct DevProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl DevProcess {
    fn start(db: &Path, crate_dir: &Path) -> DevProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pinion"))
            .arg("--db")
            .arg(db)
            .args(["dev", "--interval-ms", "100"])
            .arg(crate_dir)
            .env("CARGO_TARGET_DIR", crates_target())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start pinion dev");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        DevProcess {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The lines up to and including the next verdict (a build can take minutes on a
    /// loaded machine: the bound is generous, and only a bound).
    fn next_verdict(&mut self) -> Vec<String> {
        let mut batch = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(600))
                .unwrap_or_else(|e| {
                    panic!("no verdict from pinion dev ({e}); so far: {:#?}", self.seen)
                });
            self.seen.push(line.clone());
            let done = line.starts_with("dev: verdict:") || line.starts_with("dev: build failed");
            batch.push(line);
            if done {
                return batch;
            }
        }
    }
}

impl DevProcess {
    /// Sends SIGINT (Ctrl-C); the exit status and the lines printed until the end.
    fn interrupt(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(rc, 0, "send SIGINT");
        let status = self.child.wait().unwrap();
        let rest: Vec<String> = self.lines.iter().collect();
        (status, rest)
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn pinion_dev_redeploys_on_save_and_shows_the_verdict_of_running_instances() {
    let dir = TempDir::new("dev-loop");
    let crate_dir = new_crate(&dir, "dev-flow");
    let lib = crate_dir.join("src/lib.rs");
    let mut dev = DevProcess::start(&dir.db(), &crate_dir);

    let first = dev.next_verdict();
    assert!(
        first.iter().any(|l| l.contains("alias dev ->")),
        "{first:#?}"
    );
    assert!(
        first
            .last()
            .unwrap()
            .contains("replayed 0 running instance(s) of Greet"),
        "{first:#?}"
    );

    // An instance on the alias; dev's worker runs its first activation (a one-hour timer).
    let out = pinion(
        &dir.db(),
        &[
            "start",
            "Greet",
            "--alias",
            "dev",
            "--id",
            "waiting",
            "--input",
            r#"{"name": "Ada", "wait_ms": 3600000}"#,
        ],
    );
    assert_ok("pinion start on the dev alias", &out);
    wait_until(
        "the instance to start its timer",
        std::time::Duration::from_secs(60),
        || {
            let out = pinion(&dir.db(), &["history", "waiting"]);
            String::from_utf8_lossy(&out.stdout).contains("TimerStarted")
        },
    );

    // A compatible change: the activity's implementation.
    edit(&lib, "Hello, {name}!", "Hi there, {name}!");
    let batch = dev.next_verdict();
    assert!(
        batch.iter().any(|l| l.contains("changed: src/lib.rs")),
        "{batch:#?}"
    );
    assert!(
        batch.iter().any(|l| l.contains("(new), alias dev ->")),
        "{batch:#?}"
    );
    assert!(
        batch.last().unwrap().ends_with(
            "replayed 1 running instance(s) of Greet: 1 compatible, 0 diverged, 0 failed"
        ),
        "{batch:#?}"
    );

    // A breaking change: an activity call inserted before the timer.
    edit(
        &lib,
        "    ctx.sleep(Duration::from_millis(input.wait_ms)).await?;",
        "    let _: String = ctx.activity(\"greet\", &input.name).await?;\n    ctx.sleep(Duration::from_millis(input.wait_ms)).await?;",
    );
    let batch = dev.next_verdict();
    assert!(
        batch.iter().any(|l| l.starts_with("diverged    waiting (Greet)")
            && l.contains("event #3: history has TimerStarted{seq: 1, duration_ms: 3600000}, code produced ActivityScheduled{type: \"greet\", seq: 1}")),
        "{batch:#?}"
    );
    assert!(
        batch
            .last()
            .unwrap()
            .ends_with("0 compatible, 1 diverged, 0 failed"),
        "{batch:#?}"
    );
    // Ctrl-C stops the loop and its worker cleanly: exit 0, not death by signal.
    let (status, rest) = dev.interrupt();
    assert_eq!(status.code(), Some(0), "{status:?}; {rest:#?}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("dev: stopped"),
        "{rest:#?}"
    );
    drop(dev);

    // --once gives the same verdict as an exit code, for scripts.
    let out = Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(dir.db())
        .args(["dev", "--once"])
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", crates_target())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
