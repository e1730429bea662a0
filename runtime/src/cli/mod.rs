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
mod dev;
pub mod display;
mod events;
mod markers;
mod new;
mod print;
mod progress;
mod replay;
mod rollout;
mod watch;
mod webhooks;

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde_json::json;

use crate::api::types::{DeployOptions, ListQuery, StartBody, UpgradeBody, MAX_PAGE};
use crate::api::webhooks::Webhook;
use crate::api::{Api, ApiError, Client, ErrorCode, ServerConfig, Token};
use crate::bench::BenchConfig;
use crate::config::GrantSource;
use crate::engine::{Error, Pinion, PinionConfig, StartRequest};
use crate::store::sqlite::Synchronous;
use crate::worker::WorkerConfig;
use args::{Cli, Command, WebhooksAction};
use control::Stop;
use print::{print_json, print_outcome};

/// A CLI failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code.
    pub code: i32,
    /// The message for stderr.
    pub error: anyhow::Error,
}

/// The exit code of an engine error (the table in [`crate::api::error`]).
fn exit_code(e: &Error) -> i32 {
    ErrorCode::of(e).exit_code()
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            code: exit_code(&e),
            error: e.into(),
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        let code = e.code();
        let message = e.message();
        Failure {
            code: code.exit_code(),
            error: if code == ErrorCode::Unauthorized {
                anyhow::Error::new(Unauthorized(message))
            } else {
                anyhow::anyhow!(message)
            },
        }
    }
}

/// A server refused the request's token (or its lack of one): [`main`] adds which flag or
/// variable to fix, which only it knows.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unauthorized(String);

/// What to do about an `unauthorized` answer, naming where the token came from.
fn token_advice(cli: &Cli) -> String {
    let server = cli.server.as_deref().unwrap_or("the server");
    match (&cli.token_file, std::env::var_os("PINION_TOKEN")) {
        (Some(f), _) => format!(
            "{server} refused the token in --token-file {}: check that it is the server's token",
            f.display()
        ),
        (None, Some(_)) => format!(
            "{server} refused the token in $PINION_TOKEN: check that it is the server's token, or give --token-file FILE"
        ),
        (None, None) => format!(
            "{server} needs a token and none was given: pass --token-file FILE (or set $PINION_TOKEN_FILE), or set $PINION_TOKEN"
        ),
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
    let filter = crate::telemetry::filter_source(cli.log_filter.as_deref());
    if let Err(e) = crate::telemetry::install(&filter, cli.log_format) {
        eprintln!("error: {e}");
        return 2;
    }
    display::init(display::Display {
        time: cli.time,
        verbose: cli.verbose,
    });
    let advice = token_advice(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(mut f) => {
            if f.error.downcast_ref::<Unauthorized>().is_some() {
                f.error = f.error.context(advice);
            }
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

/// Exit code of `server` and `run` when the database pins modules this pinion cannot run.
const EXIT_UNRUNNABLE_MODULES: i32 = 9;

/// The runtime upgrade check ([`crate::engine::preflight`]): refuses, before the database
/// is opened for writing (and migrated), when running or blocked instances pin modules
/// this pinion cannot run, naming them.
fn check_pinned_modules(cli: &Cli) -> Result<(), Failure> {
    use crate::engine::preflight::unrunnable_pinned_modules;
    let config = PinionConfig::new(&cli.db);
    let sandbox = crate::sandbox::Sandbox::new(config.limits.clone()).map_err(Error::from)?;
    let unrunnable = unrunnable_pinned_modules(&cli.db, &sandbox, config.cache_dir.as_deref())
        .map_err(|e| Failure {
            code: 5,
            error: anyhow::anyhow!(e),
        })?;
    if unrunnable.is_empty() {
        return Ok(());
    }
    let instances: u64 = unrunnable.iter().map(|m| m.instances).sum();
    let mut msg = format!(
        "this pinion ({}, guest ABI {} to {}) cannot run {} module(s) that {instances} running or blocked instance(s) of {} are pinned to; nothing was changed:",
        env!("CARGO_PKG_VERSION"),
        pinion_abi::OLDEST_ABI_VERSION,
        pinion_abi::ABI_VERSION,
        unrunnable.len(),
        match crate::engine::postgres_url(&cli.db) {
            Some(url) => crate::store::postgres::redact(url),
            None => cli.db.display().to_string(),
        },
    );
    for m in &unrunnable {
        msg.push_str(&format!(
            "\n  {} ({}, ABI {}): {} instance(s): {}",
            m.hash,
            m.version_label.as_deref().unwrap_or("no label"),
            m.abi_version.map_or("?".to_string(), |v| v.to_string()),
            m.instances,
            m.reason
        ));
    }
    msg.push_str(
        "\nKeep running the pinion that ran them until they end (or upgrade them to a module this pinion runs with that pinion's `pinion upgrade`), \
         or start anyway with --allow-unrunnable-modules: their instances will be blocked.",
    );
    Err(Failure {
        code: EXIT_UNRUNNABLE_MODULES,
        error: anyhow::anyhow!(msg),
    })
}

fn open(cli: &Cli) -> Result<Pinion, Failure> {
    let mut config = PinionConfig::new(&cli.db);
    if let Some(path) = &cli.config {
        let report = Box::new(|e: &crate::config::ConfigError| {
            eprintln!("pinion: the configuration changed but is not valid, the previous grants stay in force: {e}");
        });
        config.grants =
            std::sync::Arc::new(GrantSource::watch(path, report).map_err(|e| Failure {
                code: 4,
                error: anyhow::anyhow!(e),
            })?);
    }
    Ok(Pinion::open(config)?)
}

/// Runs one benchmark per level: a line as each report comes, or one JSON array at the end.
fn run_reports<T: std::fmt::Display + serde::Serialize>(
    levels: &[usize],
    json: bool,
    mut run: impl FnMut(usize) -> Result<T, Error>,
) -> Result<i32, Failure> {
    let mut reports = Vec::new();
    for &level in levels {
        let report = run(level)?;
        if !json {
            println!("{report}");
        }
        reports.push(report);
    }
    if json {
        print_json(&reports);
    }
    Ok(0)
}

/// Raises the soft limit on open files to the hard limit: every activity waiting on the
/// network holds a socket, and the usual soft limit of 1024 is below what a server with
/// thousands of activities in flight needs.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn usage(msg: impl std::fmt::Display) -> Failure {
    Failure {
        code: 2,
        error: anyhow::anyhow!("{msg}"),
    }
}

/// The token from `--token-file`, else `$PINION_TOKEN`.
fn client_token(cli: &Cli) -> Result<Option<Token>, Failure> {
    let token = match &cli.token_file {
        Some(path) => Some(Token::from_file(path)),
        None => match std::env::var("PINION_TOKEN") {
            Ok(t) => Some(Token::new(&t, "in $PINION_TOKEN")),
            Err(_) => None,
        },
    };
    token.transpose().map_err(|e| Failure {
        code: 4,
        error: e.into(),
    })
}

/// Where the verb runs: a server (`--server`), else the database file.
fn api(cli: &Cli) -> Result<Box<dyn Api>, Failure> {
    match &cli.server {
        Some(url) => {
            let mut client = Client::with_ca(url, client_token(cli)?, cli.ca_file.as_deref())?;
            client.show_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
            Ok(Box::new(client))
        }
        None => Ok(Box::new(progress::Watched(open(cli)?))),
    }
}

/// Refuses `--server` for verbs that need the database (or files) on this machine.
fn local_only(cli: &Cli, what: &str) -> Result<(), Failure> {
    match cli.server {
        Some(_) => Err(usage(format!(
            "{what} works on a database file only: drop --server (and unset PINION_SERVER)"
        ))),
        None => Ok(()),
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
            let bytes = std::fs::read(file).map_err(|e| Error::Io {
                path: file.display().to_string(),
                reason: e.to_string(),
            })?;
            let options = DeployOptions {
                alias: alias.clone(),
                verify: *verify,
                verify_limit: *verify_limit,
                on_nondeterminism: on_nondeterminism.clone(),
            };
            match api(&cli)?.deploy(&bytes, &options) {
                Ok(d) => {
                    print::print_deployment(&d, json);
                    Ok(0)
                }
                Err(ApiError::Refused(v)) => {
                    print::print_refusal(
                        &v,
                        json,
                        "not deployed: the module is incompatible with running instances",
                    );
                    Ok(replay::EXIT_DIVERGED)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::New { path, sdk_path } => new::new_crate(path, sdk_path.as_deref(), json),
        Command::Dev {
            dir,
            alias,
            interval_ms,
            verify_limit,
            no_worker,
            once,
        } => {
            local_only(&cli, "`pinion dev` (it builds and deploys on this machine)")?;
            let options = dev::DevOptions {
                dir,
                alias,
                interval: Duration::from_millis(*interval_ms),
                verify_limit: *verify_limit,
                no_worker: *no_worker,
                once: *once,
            };
            dev::dev(&open(&cli)?, &options, json)
        }
        Command::Start {
            workflow_type,
            module,
            alias,
            start,
        } => {
            if module.is_none() && alias.is_none() {
                return Err(usage(
                    "start needs a module: give --module HASH (a deployed module's hash or a prefix of 4+ characters) or --alias NAME",
                ));
            }
            let input = control::json_input(&start.input, "workflow")?;
            let started = api(&cli)?.start(&StartBody {
                workflow_type: workflow_type.clone(),
                module: module.clone(),
                alias: alias.clone(),
                input,
                id: start.id.clone(),
            })?;
            if json {
                print_json(&started);
            } else {
                println!("{}", started.id);
            }
            Ok(0)
        }
        Command::Run {
            file,
            workflow_type,
            start,
            timeout,
        } => {
            local_only(&cli, "`pinion run` (it runs the workflow in this process)")?;
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
            print::print_instance(&api(&cli)?.status(id)?, json);
            Ok(0)
        }
        Command::Result { id, wait, timeout } => {
            let api = api(&cli)?;
            let r = if *wait {
                api.wait(id, Duration::from_secs(*timeout))?
            } else {
                api.status(id)?
            };
            Ok(print_outcome(&r, json))
        }
        Command::List {
            status,
            workflow_type,
            module,
            limit,
        } => {
            let status = *status;
            let api = api(&cli)?;
            let mut query = ListQuery {
                status,
                workflow_type: workflow_type.clone(),
                module: module.clone(),
                limit: None,
                cursor: None,
            };
            // Page through until `limit` rows (a server caps each page).
            let mut rows = Vec::new();
            while rows.len() < *limit as usize {
                let want = (*limit as usize - rows.len()) as u32;
                query.limit = Some(if cli.server.is_some() {
                    want.min(MAX_PAGE)
                } else {
                    want
                });
                let page = api.list(&query)?;
                rows.extend(page.instances);
                match page.next_cursor {
                    Some(c) => query.cursor = Some(c),
                    None => break,
                }
            }
            print::print_instances(&rows, json);
            Ok(0)
        }
        Command::History(args) => {
            if let Some(action) = &args.action {
                local_only(&cli, "`pinion history export|import`")?;
                return replay::history_action(&cli.db, json, action);
            }
            let Some(id) = &args.id else {
                return Err(Failure {
                    code: 4,
                    error: anyhow::anyhow!("give an instance id, or `export` / `import`"),
                });
            };
            let api = api(&cli)?;
            print::print_history(&api.history(id, args.run)?, json);
            // The text form ends with what is still in flight: the retries history does
            // not record until the activity resolves.
            if !json && args.run.is_none() {
                let rec = api.status(id)?;
                print::print_pending(&rec);
            }
            Ok(0)
        }
        Command::Events(args) => events::events(api(&cli)?.as_ref(), json, args),
        Command::Replay(args) => {
            // Exported history files are replayed here, whatever --server says.
            if cli.server.is_some() && args.history.is_empty() {
                replay::replay_remote(api(&cli)?.as_ref(), json, args)
            } else {
                replay::replay(&cli.db, json, args)
            }
        }
        Command::Signal { id, name, input } => {
            control::signal(api(&cli)?.as_ref(), json, id, name, input)
        }
        Command::Query { id, name, input } => {
            control::query(api(&cli)?.as_ref(), json, id, name, input)
        }
        Command::Cancel(args) => control::stop(api(&cli)?.as_ref(), json, Stop::Cancel, args),
        Command::Terminate(args) => control::stop(api(&cli)?.as_ref(), json, Stop::Terminate, args),
        Command::Modules => rollout::modules(api(&cli)?.as_ref(), json),
        Command::Markers {
            workflow_type,
            module,
            include_ended,
        } => {
            let query = crate::census::MarkerQuery {
                workflow_type: workflow_type.clone(),
                module: module.clone(),
                include_ended: *include_ended,
            };
            markers::markers(api(&cli)?.as_ref(), json, &query)
        }
        Command::Alias { action } => rollout::alias(api(&cli)?.as_ref(), json, action),
        Command::Gc {
            dry_run,
            export_modules,
        } => match export_modules {
            Some(dir) => {
                local_only(&cli, "`pinion gc --export-modules` (it writes files here)")?;
                rollout::gc_exporting(&open(&cli)?, json, *dry_run, dir)
            }
            None => rollout::gc(api(&cli)?.as_ref(), json, *dry_run),
        },
        Command::Upgrade {
            to,
            id,
            from,
            workflow_type,
            dry_run,
        } => {
            if id.is_none() && from.is_none() && workflow_type.is_none() {
                return Err(usage(
                    "choose the instances: --id ID, --from MODULE or --workflow-type T",
                ));
            }
            let body = UpgradeBody {
                to: to.clone(),
                id: id.clone(),
                from: from.clone(),
                workflow_type: workflow_type.clone(),
                dry_run: *dry_run,
            };
            rollout::upgrade(api(&cli)?.as_ref(), json, &body)
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
            if let Some(instances) = args.verify {
                let config = crate::bench::verify::VerifyConfig {
                    module: args.module.clone(),
                    dir: args.dir.clone(),
                    instances,
                    threads: args.threads,
                    fresh_instances: args.fresh_instances,
                };
                let progress = crate::engine::Progress::new();
                let report = progress::watch(&progress, "verified", || {
                    crate::bench::verify::run_verify(&config, &progress)
                })?;
                if json {
                    print_json(&report);
                } else {
                    println!("{report}");
                }
                return Ok(0);
            }
            if let Some(wait_ms) = args.http_wait_ms {
                raise_fd_limit();
                return run_reports(&args.concurrency, json, |workflows| {
                    crate::bench::run_in_flight(&crate::bench::InFlightConfig {
                        module: args.module.clone(),
                        dir: args.dir.clone(),
                        workflows: workflows.max(1),
                        steps: args.steps,
                        wait: Duration::from_millis(wait_ms),
                        workflow_threads: args.workflow_threads,
                        synchronous,
                    })
                });
            }
            run_reports(&args.concurrency, json, |concurrency| {
                crate::bench::run(&BenchConfig {
                    module: args.module.clone(),
                    dir: args.dir.clone(),
                    steps: args.steps,
                    concurrency: concurrency.max(1),
                    workflows: args.workflows.unwrap_or((concurrency * 20).max(50)),
                    synchronous,
                    workflow_threads: args.workflow_threads,
                    eager_start: !args.no_eager_start,
                    postgres: args.postgres.clone(),
                    servers: args.servers.unwrap_or(0) as usize,
                })
            })
        }
        Command::Purge {
            older_than,
            workflow_type,
            export,
            dry_run,
        } => {
            local_only(&cli, "`pinion purge`")?;
            let older_than = replay::parse_duration(older_than).map_err(|e| Failure {
                code: 4,
                error: anyhow::anyhow!("--older-than: {e}"),
            })?;
            let p = open(&cli)?;
            let report = p.purge(
                older_than,
                workflow_type.as_deref(),
                export.as_deref(),
                *dry_run,
            )?;
            if json {
                print_json(&report);
            } else {
                for id in &report.instances {
                    println!("{id}");
                }
                let verb = if *dry_run { "would delete" } else { "deleted" };
                eprintln!("{verb} {} instance(s)", report.instances.len());
                if let Some(dir) = export.as_ref().filter(|_| !*dry_run) {
                    eprintln!(
                        "exported {} histories to {}",
                        report.exported,
                        dir.display()
                    );
                }
            }
            Ok(0)
        }
        Command::Migrate {
            from,
            to,
            replace_existing,
        } => {
            local_only(&cli, "`pinion migrate`")?;
            let report = crate::engine::migrate_to_postgres(from, to, *replace_existing)?;
            if json {
                print_json(&report);
            } else {
                if report.replaced {
                    eprintln!(
                        "deleted what {} held before",
                        crate::store::postgres::redact(to)
                    );
                }
                for (table, rows) in &report.tables {
                    println!("{table:<22} {rows:>10} rows");
                }
                eprintln!(
                    "copied {} into {}; start servers with --db {}",
                    from.display(),
                    crate::store::postgres::redact(to),
                    crate::store::postgres::redact(to)
                );
            }
            Ok(0)
        }
        Command::Webhooks {
            action: WebhooksAction::DeadLetters { redeliver },
        } => webhooks::dead_letters(&cli, json, *redeliver),
        Command::Jobs { id, cancel } => {
            let Some(url) = &cli.server else {
                return Err(usage(
                    "`pinion jobs` lists a server's jobs: give --server URL (or PINION_SERVER)",
                ));
            };
            let client = Client::with_ca(url, client_token(&cli)?, cli.ca_file.as_deref())?;
            let jobs = match (id, cancel) {
                (Some(id), true) => vec![client.cancel_job(id)?],
                (Some(id), false) => vec![client.job(id, Duration::ZERO)?],
                (None, _) => client.jobs()?,
            };
            if json {
                match (id, jobs.first()) {
                    (Some(_), Some(j)) => print_json(j),
                    _ => print_json(&jobs),
                }
            } else {
                crate::cli::print::jobs(&jobs, id.is_some());
            }
            Ok(0)
        }
        Command::Backup { file } => {
            local_only(&cli, "`pinion backup` (it copies the database file)")?;
            if crate::engine::postgres_url(&cli.db).is_some() {
                return Err(usage(
                    "`pinion backup` copies a SQLite file; back up a PostgreSQL database with its own tools (pg_dump, or continuous archiving)",
                ));
            }
            let report = crate::store::sqlite::backup(&cli.db, file).map_err(Error::from)?;
            if json {
                print_json(&json!({
                    "file": file,
                    "bytes": report.bytes,
                    "instances": report.instances,
                }));
            } else {
                println!(
                    "backed up {} ({} instances, {} bytes) to {}",
                    cli.db.display(),
                    report.instances,
                    report.bytes,
                    file.display()
                );
            }
            Ok(0)
        }
        Command::Server(args) => {
            // Check the flags before touching the database.
            let bad = |e: crate::api::auth::TokenError| Failure {
                code: 4,
                error: e.into(),
            };
            let mut tokens = match &args.tokens_file {
                Some(path) => crate::api::auth::Tokens::from_file(path).map_err(bad)?,
                None => crate::api::auth::Tokens::new(),
            };
            if let Some(path) = &cli.token_file {
                let token = Token::from_file(path).map_err(bad)?;
                tokens.add("token-file", crate::api::auth::Role::Admin, token);
            }
            let mut config =
                ServerConfig::new(args.listen, Some(tokens), args.no_auth).map_err(usage)?;
            config.header_read_timeout = Duration::from_millis(args.header_read_timeout_ms);
            if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
                config.tls = Some(crate::api::tls::acceptor(cert, key).map_err(|e| Failure {
                    code: 4,
                    error: anyhow::anyhow!(e),
                })?);
            }
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            if let Some(r) = &args.retention {
                config.retention = Some(replay::parse_duration(r).map_err(|e| Failure {
                    code: 4,
                    error: anyhow::anyhow!("--retention: {e}"),
                })?);
            }
            config.webhook_give_up =
                replay::parse_duration(&args.webhook_give_up_after).map_err(|e| Failure {
                    code: 4,
                    error: anyhow::anyhow!("--webhook-give-up-after: {e}"),
                })?;
            config.max_connections = args.max_connections as usize;
            config.request_timeout = Duration::from_millis(args.request_timeout_ms);
            if let Some(path) = &args.webhook_secret_file {
                let secret = Token::from_file(path).map_err(|e| Failure {
                    code: 4,
                    error: anyhow::anyhow!("--webhook-secret-file: {e}"),
                })?;
                for url in &args.webhooks {
                    config
                        .webhooks
                        .push(Webhook::new(url, secret.clone()).map_err(|e| Failure {
                            code: 4,
                            error: anyhow::anyhow!(e),
                        })?);
                }
            }
            raise_fd_limit();
            if !args.allow_unrunnable_modules {
                check_pinned_modules(&cli)?;
            }
            let p = open(&cli)?;
            let worker = p.start_worker(WorkerConfig {
                workflow_threads: args.workflow_threads,
                activity_threads: args.activity_threads,
                max_activities: args.max_activities,
                eager_start: !args.no_eager_start,
                ..WorkerConfig::default()
            })?;
            println!(
                "pinion server running on {} (workflow threads: {}, activity threads: {}, activities in flight: up to {})",
                p.db_display(),
                args.workflow_threads,
                args.activity_threads,
                args.max_activities
            );
            crate::api::serve(p, worker, config, |addr| {
                println!("pinion server listening on {scheme}://{addr}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            })
            .map_err(|e| Failure {
                code: 1,
                error: e.into(),
            })?;
            Ok(0)
        }
    }
}
