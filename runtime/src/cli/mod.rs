//! The `pinion` command line: parse ([`args`]), validate, call the library, print.
//!
//! Exit codes (stable, documented in the README):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other error |
//! | 2 | bad command-line syntax (from clap) |
//! | 3 | not found: unknown instance, module or workflow type |
//! | 4 | invalid input: not a module, not JSON, bad id |
//! | 5 | database unavailable: locked, unreadable, not a pinion database |
//! | 6 | the workflow did not complete: failed, cancelled, terminated or blocked (`result`, `run`) |
//! | 7 | timed out waiting |
//! | 8 | replay found a divergence or failure (`replay`, `deploy --verify`) |

pub mod args;
mod control;
mod replay;
mod rollout;

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde_json::json;

use crate::bench::BenchConfig;
use crate::engine::{Error, Pinion, PinionConfig, StartRequest};
use crate::history::{HistoryExport, InstanceStatus, EXPORT_FORMAT, EXPORT_VERSION};
use crate::registry::RegistryError;
use crate::rollout::UpgradeSelector as Selector;
use crate::store::sqlite::Synchronous;
use crate::store::{InstanceFilter, InstanceRecord, StoreError};
use crate::worker::WorkerConfig;
use args::{Cli, Command};

/// A CLI failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code.
    pub code: i32,
    /// The message for stderr.
    pub error: anyhow::Error,
}

fn exit_code(e: &Error) -> i32 {
    match e {
        Error::UnknownInstance(_) | Error::UnknownWorkflowType { .. } | Error::UnknownAlias(_) => 3,
        Error::Registry(
            RegistryError::UnknownModule(_) | RegistryError::AmbiguousModule { .. },
        ) => 3,
        Error::Registry(RegistryError::Invalid(_) | RegistryError::BadManifest(_)) => 4,
        Error::InvalidInput(_)
        | Error::InvalidInstanceId(_)
        | Error::Io { .. }
        | Error::Imported(_) => 4,
        Error::Store(StoreError::AlreadyExists(_) | StoreError::NotAccepting { .. }) => 4,
        Error::Query { kind, .. } if kind == "UnknownQuery" => 3,
        Error::Query { kind, .. } if kind == "InvalidInput" => 4,
        Error::Rebuild(_) => 8,
        Error::Store(StoreError::Open { .. } | StoreError::Locked(_) | StoreError::Corrupt(_)) => 5,
        Error::Registry(RegistryError::Store(StoreError::Locked(_))) => 5,
        Error::WorkerLocked(_) => 5,
        Error::WaitTimedOut { .. } => 7,
        _ => 1,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            code: exit_code(&e),
            error: e.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure { code: 1, error }
    }
}

/// Runs the CLI with the process's arguments; returns the exit code.
pub fn main() -> i32 {
    // `pinion history ID | head` must end quietly, like any Unix tool, not panic on EPIPE.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(code) => code,
        Err(f) => {
            if json {
                println!(
                    "{}",
                    json!({ "error": format!("{:#}", f.error), "exit_code": f.code })
                );
            } else {
                eprintln!("error: {:#}", f.error);
            }
            f.code
        }
    }
}

fn open(cli: &Cli) -> Result<Pinion, Failure> {
    Ok(Pinion::open(PinionConfig::new(&cli.db))?)
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn instance_json(r: &InstanceRecord) -> serde_json::Value {
    json!({
        "id": r.id,
        "workflow_type": r.workflow_type,
        "module_hash": r.module_hash,
        "status": r.status,
        "created_at_ms": r.created_at_ms,
        "updated_at_ms": r.updated_at_ms,
        "event_count": r.event_count,
        "result": r.result.as_ref().map(|p| p.to_value()),
        "failure": r.failure,
        "blocked_reason": r.blocked_reason,
        "imported": r.imported,
        "cancel_requested": r.cancel_requested,
    })
}

fn print_instance(r: &InstanceRecord) {
    println!("instance:      {}", r.id);
    println!("workflow type: {}", r.workflow_type);
    println!("module:        {}", r.module_hash);
    println!("status:        {}", r.status);
    println!("events:        {}", r.event_count);
    if let Some(res) = &r.result {
        println!("result:        {}", res.json());
    }
    if let Some(f) = &r.failure {
        println!("failure:       {}: {}", f.kind, f.message);
    }
    if let Some(b) = &r.blocked_reason {
        println!("blocked:       {b}");
    }
    if r.cancel_requested && !r.status.is_closed() {
        println!("cancel:        requested");
    }
}

/// Prints a closed instance's outcome; returns the exit code it implies.
fn print_outcome(r: &InstanceRecord, json: bool) -> i32 {
    if json {
        print_json(&instance_json(r));
    } else {
        match r.status {
            InstanceStatus::Completed => {
                println!("{}", r.result.as_ref().map(|p| p.json()).unwrap_or("null"))
            }
            InstanceStatus::Failed | InstanceStatus::Cancelled | InstanceStatus::Terminated => {
                let f = r.failure.as_ref();
                eprintln!(
                    "instance {} {}: {}: {}",
                    r.id,
                    r.status,
                    f.map(|f| f.kind.as_str()).unwrap_or("?"),
                    f.map(|f| f.message.as_str()).unwrap_or("?")
                );
            }
            InstanceStatus::Blocked => {
                eprintln!(
                    "instance {} is blocked: {}",
                    r.id,
                    r.blocked_reason.as_deref().unwrap_or("?")
                )
            }
            InstanceStatus::Running => eprintln!("instance {} is still running", r.id),
        }
    }
    match r.status {
        InstanceStatus::Completed => 0,
        InstanceStatus::Running => 7,
        _ => 6,
    }
}

fn run(cli: Cli) -> Result<i32, Failure> {
    let json = cli.json;
    match &cli.command {
        Command::Deploy {
            file,
            verify,
            verify_limit,
            alias,
            on_nondeterminism,
        } => {
            let p = open(&cli)?;
            let bytes = std::fs::read(file).map_err(|e| Error::Io {
                path: file.display().to_string(),
                reason: e.to_string(),
            })?;
            // Validate everything (module and flags), and verify, before anything is stored;
            // the module is compiled once for all three.
            let validated = p.registry().validate(&bytes).map_err(Error::from)?;
            let policies = rollout::parse_policies(&validated.1.workflows, on_nondeterminism)?;
            if *verify {
                let candidate = crate::replay::Replayer::from_loaded(
                    p.sandbox().clone(),
                    validated.2.clone(),
                    validated.0.clone(),
                    validated.1.clone(),
                    Default::default(),
                );
                let (summary, reports) = p.verify_module(&candidate, *verify_limit)?;
                if !summary.ok() {
                    if json {
                        print_json(
                            &json!({ "verified": false, "module": candidate.module_hash(), "summary": summary, "reports": reports }),
                        );
                    } else {
                        for r in reports.iter().filter(|r| !r.is_compatible()) {
                            println!("{r}");
                        }
                        eprintln!("not deployed: the module is incompatible with running instances: {summary}");
                    }
                    return Ok(replay::EXIT_DIVERGED);
                }
                if !json {
                    eprintln!(
                        "verify: replayed {} running instance(s): {summary}",
                        reports.len()
                    );
                }
            }
            let d = p
                .registry()
                .store_validated(&bytes, validated)
                .map_err(Error::from)?;
            rollout::apply_policies(&p, &d.hash, &policies)?;
            if let Some(name) = alias {
                p.set_alias(name, &d.hash.0)?;
                if !json {
                    eprintln!("alias {name} -> {}", d.hash.short());
                }
            }
            if json {
                print_json(&json!({
                    "hash": d.hash, "size": d.size, "new": d.newly_stored,
                    "workflows": d.manifest.workflows, "activities": d.manifest.activities,
                    "version_label": d.manifest.version_label, "sdk_version": d.manifest.sdk_version,
                }));
            } else {
                println!("{}", d.hash);
                eprintln!(
                    "{} {} ({} bytes; workflows: {}; activities: {})",
                    if d.newly_stored {
                        "deployed"
                    } else {
                        "already deployed"
                    },
                    d.hash.short(),
                    d.size,
                    d.manifest.workflows.join(", "),
                    d.manifest.activities.join(", ")
                );
            }
            Ok(0)
        }
        Command::Start {
            workflow_type,
            module,
            alias,
            start,
        } => {
            let p = open(&cli)?;
            let id = p.start(&StartRequest {
                alias: alias.clone(),
                workflow_type: workflow_type.clone(),
                module: module.clone().unwrap_or_default(),
                input_json: start.input.clone(),
                id: start.id.clone(),
            })?;
            if json {
                print_json(&json!({ "id": id }));
            } else {
                println!("{id}");
            }
            Ok(0)
        }
        Command::Run {
            file,
            workflow_type,
            start,
            timeout,
        } => {
            let p = open(&cli)?;
            // Take the worker lock first: if a server owns this database, fail before
            // deploying or starting anything.
            let worker = p.start_worker(WorkerConfig::default())?;
            let d = p.deploy_file(file)?;
            if !json {
                eprintln!(
                    "deployed {} ({})",
                    d.hash,
                    if d.newly_stored {
                        "new"
                    } else {
                        "already present"
                    }
                );
            }
            let id = p.start(&StartRequest {
                alias: None,
                workflow_type: workflow_type.clone(),
                module: d.hash.0.clone(),
                input_json: start.input.clone(),
                id: start.id.clone(),
            })?;
            if !json {
                eprintln!("started {id}: {workflow_type} pinned to {}", d.hash.short());
            }

            worker.wake();
            let rec = p.wait(&id.0, Duration::from_secs(*timeout));
            worker.shutdown();
            let rec = rec?;
            if !json {
                eprintln!("{id} {} after {} events", rec.status, rec.event_count);
            }
            Ok(print_outcome(&rec, json))
        }
        Command::Status { id } => {
            let p = open(&cli)?;
            let r = p.status(id)?;
            if json {
                print_json(&instance_json(&r));
            } else {
                print_instance(&r);
            }
            Ok(0)
        }
        Command::Result { id, wait, timeout } => {
            let p = open(&cli)?;
            let r = if *wait {
                p.wait(id, Duration::from_secs(*timeout))?
            } else {
                p.status(id)?
            };
            Ok(print_outcome(&r, json))
        }
        Command::List {
            status,
            workflow_type,
            module,
            limit,
        } => {
            let p = open(&cli)?;
            let status = match status {
                None => None,
                Some(s) => Some(InstanceStatus::parse(s).ok_or_else(|| Failure {
                    code: 4,
                    error: anyhow::anyhow!(
                        "unknown status `{s}`; use running, blocked, completed, failed, cancelled or terminated"
                    ),
                })?),
            };
            let module_hash = match module {
                Some(m) => Some(p.registry().resolve(m).map_err(Error::from)?.hash),
                None => None,
            };
            let rows = p.list(&InstanceFilter {
                status,
                workflow_type: workflow_type.clone(),
                module_hash,
                limit: Some(*limit),
                ..Default::default()
            })?;
            if json {
                print_json(&serde_json::Value::Array(
                    rows.iter().map(instance_json).collect(),
                ));
            } else {
                println!(
                    "{:<28} {:<20} {:<12} {:<10} {:>6}",
                    "ID", "WORKFLOW TYPE", "MODULE", "STATUS", "EVENTS"
                );
                for r in &rows {
                    println!(
                        "{:<28} {:<20} {:<12} {:<10} {:>6}",
                        r.id,
                        r.workflow_type,
                        r.module_hash.short(),
                        r.status,
                        r.event_count
                    );
                }
            }
            Ok(0)
        }
        Command::History(args) => {
            if let Some(action) = &args.action {
                return replay::history_action(&cli.db, json, action);
            }
            let Some(id) = &args.id else {
                return Err(Failure {
                    code: 4,
                    error: anyhow::anyhow!("give an instance id, or `export` / `import`"),
                });
            };
            let p = open(&cli)?;
            let rec = p.status(id)?;
            let events = p.history(id)?;
            if json {
                let export = HistoryExport {
                    format: EXPORT_FORMAT.into(),
                    version: EXPORT_VERSION,
                    instance_id: rec.id.clone(),
                    workflow_type: rec.workflow_type.clone(),
                    module_hash: rec.module_hash.clone(),
                    status: rec.status,
                    events,
                };
                println!(
                    "{}",
                    serde_json::to_string_pretty(&export).context("encoding history")?
                );
            } else {
                println!("{:>4}  {:<13}  {:<22}  DETAILS", "#", "TIME (ms)", "EVENT");
                let t0 = events.first().map(|e| e.time_ms).unwrap_or(0);
                for e in &events {
                    println!(
                        "{:>4}  {:<13}  {:<22}  {}",
                        e.id,
                        format!("+{}", e.time_ms.saturating_sub(t0)),
                        e.kind.name(),
                        e.kind.describe()
                    );
                }
            }
            Ok(0)
        }
        Command::Signal { id, name, input } => control::signal(&open(&cli)?, json, id, name, input),
        Command::Query { id, name, input } => control::query(&open(&cli)?, json, id, name, input),
        Command::Cancel(args) => control::stop(&open(&cli)?, json, control::Stop::Cancel, args),
        Command::Terminate(args) => {
            control::stop(&open(&cli)?, json, control::Stop::Terminate, args)
        }
        Command::Replay(args) => replay::replay(&cli.db, json, args),
        Command::Modules => rollout::modules(&open(&cli)?, json),
        Command::Alias { action } => rollout::alias(&open(&cli)?, json, action),
        Command::Gc {
            dry_run,
            export_modules,
        } => rollout::gc(&open(&cli)?, json, *dry_run, export_modules.as_deref()),
        Command::Upgrade {
            to,
            id,
            from,
            workflow_type,
            dry_run,
        } => {
            let p = open(&cli)?;
            let selector = match (id, from, workflow_type) {
                (Some(id), _, _) => Selector::Id(id.clone()),
                (_, Some(from), _) => Selector::From(p.resolve_module(from)?.hash),
                (_, _, Some(t)) => Selector::WorkflowType(t.clone()),
                _ => {
                    return Err(Failure {
                        code: 2,
                        error: anyhow::anyhow!(
                            "choose the instances: --id ID, --from MODULE or --workflow-type T"
                        ),
                    })
                }
            };
            rollout::upgrade(&p, json, to, selector, *dry_run)
        }
        Command::Bench(args) => {
            let synchronous = match args.synchronous.as_str() {
                "full" => Synchronous::Full,
                "normal" => Synchronous::Normal,
                "off" => Synchronous::Off,
                other => {
                    return Err(Failure {
                        code: 4,
                        error: anyhow::anyhow!(
                            "unknown synchronous mode `{other}`; use full, normal or off"
                        ),
                    })
                }
            };
            std::fs::create_dir_all(&args.dir)
                .with_context(|| format!("creating {}", args.dir.display()))?;
            let mut reports = Vec::new();
            for &concurrency in &args.concurrency {
                let report = crate::bench::run(&BenchConfig {
                    module: args.module.clone(),
                    dir: args.dir.clone(),
                    steps: args.steps,
                    concurrency: concurrency.max(1),
                    workflows: args.workflows.unwrap_or((concurrency * 20).max(50)),
                    synchronous,
                })?;
                if !json {
                    println!("{report}");
                }
                reports.push(report);
            }
            if json {
                print_json(&serde_json::to_value(&reports).context("encoding report")?);
            }
            Ok(0)
        }
        Command::Server(args) => {
            let p = open(&cli)?;
            let stop =
                std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
            let s2 = stop.clone();
            ctrlc::set_handler(move || {
                *s2.0.lock().expect("stop lock") = true;
                s2.1.notify_all();
            })
            .context("installing the SIGINT/SIGTERM handler")?;
            let worker = p.start_worker(WorkerConfig {
                workflow_threads: args.workflow_threads,
                activity_threads: args.activity_threads,
                ..WorkerConfig::default()
            })?;
            println!(
                "pinion server running on {} (workflow threads: {}, activity threads: {})",
                p.db_path().display(),
                args.workflow_threads,
                args.activity_threads
            );
            let mut stopped = stop.0.lock().expect("stop lock");
            while !*stopped {
                stopped = stop.1.wait(stopped).expect("stop lock");
            }
            drop(stopped);
            eprintln!("pinion server: stopping; in-flight tasks finish first");
            worker.shutdown();
            Ok(0)
        }
    }
}
