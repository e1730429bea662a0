//! `pinion dev [CRATE]`: the author's loop. Builds the crate for wasm32-wasip1, deploys the
//! module and points an alias at it, replays the running instances of its workflow types
//! against it and prints the verdict; then does it again whenever a file of the crate
//! changes ([`super::watch`]). A worker in the same process runs the instances meanwhile,
//! so instances started on the alias make progress and record history to check.
//!
//! It reuses the operator's paths: `Pinion::deploy_file` (validation, storage by hash),
//! `Pinion::set_alias`, and `Pinion::verify_module`, the replay of `deploy --verify`. The
//! module is deployed whatever the verdict: running instances stay pinned to the module
//! they started on, so deploying is safe; the verdict says whether they could be upgraded
//! to the new code (`pinion upgrade`), i.e. whether the change breaks replay.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::print::print_json;
use super::replay::EXIT_DIVERGED;
use super::watch::Watcher;
use super::Failure;
use crate::engine::{Pinion, Progress};
use crate::worker::WorkerConfig;

/// What `pinion dev` was asked to do.
#[derive(Debug)]
pub struct DevOptions<'a> {
    /// The crate's directory.
    pub dir: &'a Path,
    /// The alias to point at each new build.
    pub alias: &'a str,
    /// How often to look for changes.
    pub interval: Duration,
    /// Replay at most this many running instances.
    pub verify_limit: u32,
    /// Run no worker (another process, a `pinion server`, runs the instances).
    pub no_worker: bool,
    /// Build, deploy and verify once, then exit.
    pub once: bool,
}

/// Set once SIGINT or SIGTERM arrives: the loop then stops at its next look, and the
/// worker finishes what it runs before the process exits 0 (as `pinion server` does).
fn stop_on_signal() -> Result<Arc<AtomicBool>, Failure> {
    let fail = |e: std::io::Error| Failure {
        code: 1,
        error: anyhow::anyhow!("cannot watch for SIGINT and SIGTERM: {e}"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(fail)?;
    // Installed before the loop starts, so an early Ctrl-C is never the default kill.
    let signals = {
        let _in = rt.enter();
        crate::api::server::Signals::install().map_err(fail)?
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("pinion-dev-signals".into())
        .spawn(move || {
            rt.block_on(signals.recv());
            flag.store(true, Ordering::SeqCst);
        })
        .map_err(fail)?;
    Ok(stop)
}

/// Runs the loop; returns with `--once` (0, 1 when the build failed, 8 on a divergence),
/// on SIGINT or SIGTERM (0), or on an error.
pub fn dev(p: &Pinion, o: &DevOptions, json: bool) -> Result<i32, Failure> {
    let dir = o.dir.canonicalize().map_err(|e| Failure {
        code: 4,
        error: anyhow::anyhow!("{}: {e}", o.dir.display()),
    })?;
    if !dir.join("Cargo.toml").is_file() {
        return Err(Failure {
            code: 4,
            error: anyhow::anyhow!(
                "{} has no Cargo.toml: give the directory of a workflow crate (pinion new creates one)",
                dir.display()
            ),
        });
    }
    let worker = if o.no_worker || o.once {
        None
    } else {
        Some(p.start_worker(WorkerConfig::default())?)
    };
    let skip: Vec<PathBuf> = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    let mut watcher = Watcher::new(&dir, skip);
    if !json {
        println!(
            "dev: watching {} (every {} ms); alias {}{}",
            dir.display(),
            o.interval.as_millis(),
            o.alias,
            if worker.is_some() {
                "; a worker runs the instances"
            } else {
                ""
            }
        );
    }
    let stop = if o.once {
        None
    } else {
        Some(stop_on_signal()?)
    };
    let stopped = || {
        let s = stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
        if s && !json {
            println!("dev: stopped");
        }
        s
    };
    let mut last_hash: Option<String> = None;
    loop {
        let code = cycle(p, o, &dir, &mut last_hash, json)?;
        if o.once {
            return Ok(code);
        }
        if stopped() {
            return Ok(0);
        }
        if let Some(w) = &worker {
            w.wake();
        }
        // What changed while it built, apart from the lock file cargo itself writes, goes
        // straight to the next build; else wait for a change. Then let the files settle
        // (an editor saving several).
        let during: Vec<PathBuf> = watcher
            .changes()
            .into_iter()
            .filter(|p| p != Path::new("Cargo.lock"))
            .collect();
        let changed = if during.is_empty() {
            loop {
                std::thread::sleep(o.interval);
                if stopped() {
                    return Ok(0);
                }
                let changed = watcher.changes();
                if !changed.is_empty() {
                    break changed;
                }
            }
        } else {
            during
        };
        std::thread::sleep(o.interval);
        let _ = watcher.changes();
        if !json {
            let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
            println!("dev: changed: {}", names.join(", "));
        }
    }
}

/// One build, deploy and verdict. Returns the `--once` exit code.
fn cycle(
    p: &Pinion,
    o: &DevOptions,
    dir: &Path,
    last_hash: &mut Option<String>,
    json: bool,
) -> Result<i32, Failure> {
    if !json {
        println!("dev: building");
    }
    let wasm = match build(dir) {
        Ok(w) => w,
        Err(why) => {
            if json {
                print_json(&json!({ "built": false, "error": why }));
            } else {
                println!("dev: build failed: {why}; waiting for the next change");
            }
            return Ok(1);
        }
    };
    let d = p.deploy_file(&wasm)?;
    p.set_alias(o.alias, &d.hash.0)?;
    let same = last_hash.as_deref() == Some(d.hash.0.as_str());
    *last_hash = Some(d.hash.0.clone());
    let replayer = p.replayer_for(&d.hash.0)?;
    let (summary, reports) = p.verify_module(&replayer, o.verify_limit, &Progress::new())?;
    if json {
        print_json(&json!({
            "built": true,
            "wasm": wasm.display().to_string(),
            "module": d.hash.0,
            "newly_stored": d.newly_stored,
            "alias": o.alias,
            "workflow_types": d.manifest.workflows,
            "summary": summary,
            "reports": reports,
        }));
    } else {
        println!(
            "dev: deployed {} ({}), alias {} -> {}",
            d.hash.short(),
            if same {
                "unchanged"
            } else if d.newly_stored {
                "new"
            } else {
                "already stored"
            },
            o.alias,
            d.hash.short()
        );
        for r in reports.iter().filter(|r| !r.is_compatible()) {
            println!("{r}");
        }
        println!(
            "dev: verdict: replayed {} running instance(s) of {}: {summary}",
            reports.len(),
            d.manifest.workflows.join(", ")
        );
        if summary.diverged > 0 {
            println!(
                "dev: running instances stay on the module they started on and new ones start on this one; \
                 to move them too, guard the change with ctx.patched or ctx.get_version (docs/sdk.md, Versioning)"
            );
        }
    }
    Ok(if summary.diverged + summary.failed > 0 {
        EXIT_DIVERGED
    } else {
        0
    })
}

/// `cargo build --release --target wasm32-wasip1` in `dir`; the crate's `.wasm`. Compiler
/// messages go to this process's stderr as cargo renders them.
fn build(dir: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo exited with {}", out.status));
    }
    let manifest = dir.join("Cargo.toml");
    let mut wasm = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let ours = msg["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path());
        let cdylib = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        if msg["reason"] == "compiler-artifact" && ours && cdylib {
            wasm = msg["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from);
        }
    }
    wasm.ok_or_else(|| {
        "the build produced no .wasm: the crate needs crate-type = [\"cdylib\"] under [lib]"
            .to_owned()
    })
}
