//! Command-line syntax (clap derive). Only parsing lives here; [`super`] validates and runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::display::TimeZoneChoice;
use crate::history::InstanceStatus;

/// pinion: durable WebAssembly workflows pinned by content hash.
#[derive(Debug, Parser)]
#[command(name = "pinion", version, about, long_about = None)]
pub struct Cli {
    /// SQLite database file, or a PostgreSQL URL (postgres://USER@HOST:PORT/DB).
    #[arg(long, global = true, env = "PINION_DB", default_value = "pinion.db")]
    pub db: PathBuf,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Send the command to this pinion server (http://HOST:PORT) instead of opening --db.
    /// The token comes from --token-file, else from $PINION_TOKEN.
    #[arg(long, global = true, env = "PINION_SERVER")]
    pub server: Option<String>,
    /// File holding the bearer token: the one `pinion server` requires, or the one sent
    /// to --server.
    #[arg(long, global = true, env = "PINION_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the certificate authorities to trust for an https:// --server (for a
    /// server with its own CA or a self-signed certificate); the system's roots otherwise.
    #[arg(long, global = true, env = "PINION_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The operator's configuration (pinion.toml): what activities may reach (HTTP,
    /// directories, environment, secrets). Without it activities get nothing. Re-read
    /// when it changes.
    #[arg(long, global = true, env = "PINION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Which log lines to write on stderr, as RUST_LOG directives (`info`,
    /// `warn,pinion_runtime::api=debug`, ...). Default: $PINION_LOG, else $RUST_LOG, else
    /// `warn,pinion_runtime=info,guest=info`.
    #[arg(long = "log", global = true, value_name = "FILTER")]
    pub log_filter: Option<String>,
    /// Log lines as text (RFC 3339 UTC time, level, target, message, fields) or as one JSON
    /// object per line.
    #[arg(
        long,
        global = true,
        env = "PINION_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: crate::telemetry::LogFormat,
    /// Time zone of times in text output: `local` (the system's, from $TZ or
    /// /etc/localtime) or `utc`. Times are RFC 3339; `--json` keeps epoch milliseconds.
    #[arg(long, global = true, env = "PINION_TIME", value_enum, default_value_t = TimeZoneChoice::Local)]
    pub time: TimeZoneChoice,
    /// Print long reasons whole: a trap's wasm backtrace, not just the guest's panic message.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--status` of `pinion list`: a status name, or bad syntax (exit 2).
fn parse_status(s: &str) -> Result<InstanceStatus, String> {
    InstanceStatus::parse(s).ok_or_else(|| {
        "use running, blocked, completed, failed, cancelled or terminated".to_owned()
    })
}

/// `--status` of the history filters (`replay`, `history export`): a status name or `all`,
/// or bad syntax (exit 2).
fn parse_status_filter(s: &str) -> Result<String, String> {
    if s == "all" || InstanceStatus::parse(s).is_some() {
        Ok(s.to_owned())
    } else {
        Err("use running, blocked, completed, failed, cancelled, terminated or all".to_owned())
    }
}

/// `--since` of the history filters: a duration such as `30s`, `15m`, `2h` or `7d`.
fn parse_since(s: &str) -> Result<String, String> {
    super::replay::parse_duration(s).map(|_| s.to_owned())
}

/// `--sample` of the history filters: a rate in (0, 1].
fn parse_sample(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err("use a rate greater than 0 and at most 1, such as 0.1".to_owned()),
    }
}

/// `--type` of `pinion events`: a lifecycle transition's name, or bad syntax (exit 2).
fn parse_event_type(s: &str) -> Result<String, String> {
    if crate::store::Transition::NAMES.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "use {}",
            crate::store::Transition::NAMES.join(", ")
        ))
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a module and store it by the SHA-256 of its bytes; prints the hash.
    Deploy {
        /// The .wasm file.
        file: PathBuf,
        /// First replay the histories of running instances of the module's workflow types
        /// against it; refuse to deploy if any diverges or fails.
        #[arg(long)]
        verify: bool,
        /// With --verify: replay at most this many histories (newest first).
        #[arg(long, default_value_t = 1000)]
        verify_limit: u32,
        /// Then point this alias at the module (with --verify, only if verification passed).
        #[arg(long)]
        alias: Option<String>,
        /// What a divergence does to this module's instances: `block` (default) or `fail`,
        /// for every workflow type, or `Type=fail` for one (repeatable).
        #[arg(long = "on-nondeterminism")]
        on_nondeterminism: Vec<String>,
    },
    /// Create a workflow crate in a new directory: Cargo.toml with the SDK, a workflow with
    /// an activity and a timer, and a test that uses the harness (pinion-testing).
    New {
        /// Directory to create (must not exist, or be empty); its name is the crate's.
        path: PathBuf,
        /// The pinion-sdk directory to depend on (default: the guest-sdk of the source tree
        /// this pinion was built from).
        #[arg(long, env = "PINION_SDK_PATH")]
        sdk_path: Option<PathBuf>,
    },
    /// The author's loop: build a workflow crate for wasm32-wasip1, deploy it under an
    /// alias and print the replay verdict of the running instances against it, again on
    /// every change of the crate's files. A worker in this process runs the instances.
    Dev {
        /// The crate's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The alias each new build is deployed under.
        #[arg(long, default_value = "dev")]
        alias: String,
        /// How often to look for changed files, in milliseconds.
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
        /// Replay at most this many running instances per build (newest first).
        #[arg(long, default_value_t = 1000)]
        verify_limit: u32,
        /// Run no worker: another process (`pinion server`) runs the instances.
        #[arg(long)]
        no_worker: bool,
        /// Build, deploy and print the verdict once, then exit (0; 1 if the build failed;
        /// 8 if an instance diverged).
        #[arg(long)]
        once: bool,
    },
    /// Start a workflow instance pinned to a deployed module.
    Start {
        /// Workflow type exported by the module.
        workflow_type: String,
        /// Module hash or unique prefix (at least 4 characters); this or --alias.
        #[arg(long, conflicts_with = "alias")]
        module: Option<String>,
        /// Start on the module this alias points at (or ramps to, for this instance id).
        #[arg(long)]
        alias: Option<String>,
        /// Input and id.
        #[command(flatten)]
        start: StartArgs,
    },
    /// Deploy, start and run one instance to completion in this process; print its result.
    Run {
        /// The .wasm file.
        file: PathBuf,
        /// Workflow type exported by the module.
        workflow_type: String,
        /// Input and id.
        #[command(flatten)]
        start: StartArgs,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Show an instance's state.
    Status {
        /// Instance id.
        id: String,
    },
    /// Print an instance's result (exit code 0 completed; 6 failed, cancelled, terminated
    /// or blocked).
    Result {
        /// Instance id.
        id: String,
        /// Wait until the instance completes, fails or blocks.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Send a signal to a running instance. It is stored durably and delivered in arrival
    /// order; the workflow reads it when it waits for a signal of that name.
    Signal {
        /// Instance id.
        id: String,
        /// Signal name.
        name: String,
        /// Signal input, as JSON.
        #[arg(long, default_value = "null")]
        input: String,
    },
    /// Ask a workflow's query handler about its current state. Read-only: the instance's
    /// history does not change.
    Query {
        /// Instance id.
        id: String,
        /// Query name.
        name: String,
        /// Query input, as JSON.
        #[arg(long, default_value = "null")]
        input: String,
    },
    /// Ask running instances to stop: the workflow observes the cancellation, its
    /// activities and timers are cancelled, and it ends cancelled after any cleanup.
    /// One instance by id, or every running and blocked instance matching the filters.
    Cancel(StopArgs),
    /// End running instances at once, without running their code. One instance by id, or
    /// every running and blocked instance matching the filters.
    Terminate(StopArgs),
    /// List instances, newest first.
    List {
        /// Only this status (running, blocked, completed, failed, cancelled, terminated).
        #[arg(long, value_parser = parse_status)]
        status: Option<InstanceStatus>,
        /// Only this workflow type.
        #[arg(long)]
        workflow_type: Option<String>,
        /// Only instances pinned to this module (hash or prefix).
        #[arg(long)]
        module: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Print an instance's history (a table; with --json the documented export format),
    /// or export and import histories.
    History(HistoryArgs),
    /// Lifecycle events of instances (started, completed, failed, cancelled, terminated,
    /// blocked, upgraded, continued as new), oldest first; `--follow` waits for more.
    Events(EventsArgs),
    /// Replay recorded histories against a module (a file or a deployed hash), in isolation,
    /// and report for each one compatible, diverged or failed. Exit code 0 only if none
    /// diverged or failed.
    Replay(ReplayArgs),
    /// List deployed modules: aliases, instance counts and rollout status (current,
    /// ramping, draining, drained, or unused: never pinned by an instance nor aliased).
    Modules,
    /// The marker census: for every version (`get_version`) and patch (`patched`) marker,
    /// the open instances by the path they recorded, and what may be deleted: whether
    /// `deprecate_patch` is safe, which old branches no open instance can reach any more.
    Markers {
        /// Only this workflow type.
        #[arg(long)]
        workflow_type: Option<String>,
        /// Only instances pinned to this module (hash, prefix or alias).
        #[arg(long)]
        module: Option<String>,
        /// Count ended instances too: replaying them needs the old branches as well.
        #[arg(long)]
        include_ended: bool,
    },
    /// Point names at modules: set, ramp, list, history.
    Alias {
        /// What to do.
        #[command(subcommand)]
        action: AliasAction,
    },
    /// Delete ended instances (completed, failed, cancelled, terminated) older than a
    /// duration: their histories and rows. Running, blocked and imported ones are never
    /// touched.
    Purge {
        /// How long ago an instance must have ended (`30d`, `12h`, `90m`, `0s`).
        #[arg(long)]
        older_than: String,
        /// Only instances of this workflow type.
        #[arg(long)]
        workflow_type: Option<String>,
        /// First write each history to DIR/<id>.json (as `history export`).
        #[arg(long)]
        export: Option<PathBuf>,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy a SQLite database into PostgreSQL, to run it on several servers: modules,
    /// aliases and their history, instances with their histories, inboxes, activity tasks,
    /// timers, the event outbox, webhook cursors and dead letters, in one transaction.
    /// Stop the server on the file first (ignores --db).
    Migrate {
        /// The SQLite database file.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL database (`postgres://user[:password]@host[:port]/database`).
        #[arg(long)]
        to: String,
        /// Delete what the destination holds first (otherwise a destination with pinion
        /// data is refused).
        #[arg(long)]
        replace_existing: bool,
    },
    /// Webhook deliveries: the events a webhook gave up on (dead letters).
    Webhooks {
        /// What to do.
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// A server's jobs (long replays, verifies and upgrades, which the CLI runs as jobs
    /// over --server): list them, show one, or cancel one.
    Jobs {
        /// The job to show (default: list them all, newest first).
        id: Option<String>,
        /// Cancel the job: it stops before its next instance; what it did stays done.
        #[arg(long, requires = "id")]
        cancel: bool,
    },
    /// Copy the database to FILE, consistently, while a server may be running on it
    /// (SQLite's online backup). Restore by using FILE as the database.
    Backup {
        /// The copy to write; it must not exist.
        file: PathBuf,
    },
    /// Delete modules that are drained and not aliased.
    Gc {
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// First write each collected module to DIR/<hash>.wasm, so its completed histories
        /// can still be replayed from the file.
        #[arg(long)]
        export_modules: Option<PathBuf>,
    },
    /// Move running or blocked instances to another module, each only if replaying its
    /// history against that module is compatible.
    Upgrade {
        /// Target module (hash, prefix or alias).
        #[arg(long)]
        to: String,
        /// One instance.
        #[arg(long, group = "selector")]
        id: Option<String>,
        /// Every instance pinned to this module.
        #[arg(long, group = "selector")]
        from: Option<String>,
        /// Every instance of this workflow type.
        #[arg(long, group = "selector")]
        workflow_type: Option<String>,
        /// Only report what would move.
        #[arg(long)]
        dry_run: bool,
    },
    /// Serve the HTTP API and run the workers for this database until stopped (SIGINT or
    /// SIGTERM). Needs --token-file (or --no-auth on a loopback address).
    Server(ServerArgs),
    /// Measure durable throughput and step latency with a `Steps` workflow (ignores --db).
    Bench(BenchArgs),
}

/// `pinion bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Module exporting a `Steps` workflow (examples/testkit); with --http-wait-ms, an
    /// `HttpSteps` workflow.
    #[arg(long)]
    pub module: PathBuf,
    /// Measure activities in flight instead: every activity waits this long on an HTTP
    /// server on loopback that the benchmark starts; --concurrency is then the number of
    /// workflows (activities in flight) and --steps the activities of each.
    #[arg(long)]
    pub http_wait_ms: Option<u64>,
    /// Threads running workflow activations (as `pinion server --workflow-threads`).
    #[arg(long, default_value_t = 2)]
    pub workflow_threads: usize,
    /// Activities per workflow.
    #[arg(long, default_value_t = 10)]
    pub steps: u32,
    /// Concurrency levels to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub concurrency: Vec<usize>,
    /// Workflows per concurrency level (default: 20 x concurrency, at least 50).
    #[arg(long)]
    pub workflows: Option<usize>,
    /// SQLite synchronous mode: full, normal or off.
    #[arg(long, default_value = "full")]
    pub synchronous: String,
    /// Directory for the throwaway databases.
    #[arg(long, default_value = "target/bench")]
    pub dir: PathBuf,
    /// Start workflows without running their first activation in the start (as
    /// `pinion server --no-eager-start`).
    #[arg(long)]
    pub no_eager_start: bool,
    /// Run on this PostgreSQL server instead of a SQLite file: each level gets a database
    /// of its own there (created, then dropped), so the URL's user may create databases.
    #[arg(long, value_name = "URL", conflicts_with_all = ["verify", "http_wait_ms"])]
    pub postgres: Option<String>,
    /// With --postgres: run the workers in this many `pinion server` processes on the
    /// database (the benchmark process only starts workflows and watches them finish),
    /// instead of in the benchmark process.
    #[arg(long, requires = "postgres", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub servers: Option<u32>,
    /// Measure `deploy --verify` instead: write this many open `Steps` instances of 51
    /// events each, then verify the module against all of them.
    #[arg(long, conflicts_with = "http_wait_ms")]
    pub verify: Option<usize>,
    /// With --verify: replay threads (default: one per core).
    #[arg(long, requires = "verify")]
    pub threads: Option<usize>,
    /// With --verify: replay every history on a fresh instance, not a pooled slot (as
    /// before the replay pool), for comparison.
    #[arg(long, requires = "verify")]
    pub fresh_instances: bool,
}

/// Options shared by `start` and `run`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Workflow input as JSON.
    #[arg(long, default_value = "null")]
    pub input: String,
    /// Instance id (generated when absent).
    #[arg(long)]
    pub id: Option<String>,
}

/// Which instances `cancel` and `terminate` stop.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Instance id (or use the filters for a bulk stop).
    #[arg(required_unless_present_any = ["module", "workflow_type"], conflicts_with_all = ["module", "workflow_type"])]
    pub id: Option<String>,
    /// Why (recorded in history and shown by `status`).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Bulk: instances pinned to this module (hash, prefix or alias).
    #[arg(long)]
    pub module: Option<String>,
    /// Bulk: instances of this workflow type.
    #[arg(long)]
    pub workflow_type: Option<String>,
    /// Bulk: only list the instances that would be stopped.
    #[arg(long)]
    pub dry_run: bool,
}

/// `pinion server` options.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address (IP:PORT) the HTTP API listens on; port 0 picks a free port (the bound
    /// address is printed).
    #[arg(long, default_value = "127.0.0.1:7077")]
    pub listen: std::net::SocketAddr,
    /// Serve without authentication; allowed only on a loopback address.
    #[arg(long)]
    pub no_auth: bool,
    /// Threads running workflow activations.
    #[arg(long, default_value_t = 2)]
    pub workflow_threads: usize,
    /// Threads running activity code (attempts waiting on the network hold none).
    #[arg(long, default_value_t = 2)]
    pub activity_threads: usize,
    /// Activity attempts in flight at once.
    #[arg(long, default_value_t = 1024)]
    pub max_activities: usize,
    /// Let a workflow thread run a new instance's first activation, instead of the start
    /// request (which then answers sooner for workflows whose first activation is slow,
    /// at the cost of a second commit per start).
    #[arg(long)]
    pub no_eager_start: bool,
    /// POST every lifecycle event to this URL, signed and retried (repeatable).
    #[arg(long = "webhook", requires = "webhook_secret_file")]
    pub webhooks: Vec<String>,
    /// File holding the secret that signs webhook requests (HMAC-SHA256).
    #[arg(long)]
    pub webhook_secret_file: Option<std::path::PathBuf>,
    /// Retry an event a webhook does not acknowledge for this long from its first failed
    /// attempt (`30s`, `15m`, `24h`), then record it as a dead letter (`pinion webhooks
    /// dead-letters`) and go on with the next event.
    #[arg(long, default_value = "24h")]
    pub webhook_give_up_after: String,
    /// Named tokens with roles (TOML: `[[token]] name, role = reader|operator|admin,
    /// token`; mode 0600). `--token-file` adds an admin token.
    #[arg(long)]
    pub tokens_file: Option<std::path::PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert; refused when others can read it.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Delete ended instances this long after they ended (`30d`, `12h`), checking
    /// periodically (as `pinion purge --older-than`). Without it, histories are kept.
    #[arg(long)]
    pub retention: Option<String>,
    /// Close a connection that has not sent a whole request head (request line and
    /// headers) this many milliseconds after it opened or after its previous request.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
    /// Connections served at once; further clients wait until one closes.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Answer `504 timed_out` to a request not answered this many milliseconds after its
    /// head arrived (upload included), and cancel what it ran. Long polls wait at most a
    /// minute; event streams and jobs (`job=true`, what the CLI uses) are not bound.
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Start even when running or blocked instances pin modules this pinion cannot run
    /// (see the runtime upgrade check): those instances will be blocked.
    #[arg(long)]
    pub allow_unrunnable_modules: bool,
}

/// `pinion events` arguments.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events after this id.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Only this instance's events.
    #[arg(long)]
    pub id: Option<String>,
    /// Only instances of this workflow type.
    #[arg(long)]
    pub workflow_type: Option<String>,
    /// Only instances pinned to this module (hash, prefix or alias).
    #[arg(long)]
    pub module: Option<String>,
    /// Only this type (started, completed, failed, cancelled, terminated, blocked,
    /// upgraded, continued_as_new); repeatable.
    #[arg(long = "type", value_parser = parse_event_type)]
    pub types: Vec<String>,
    /// At most this many events.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Keep waiting for new events (until interrupted).
    #[arg(long)]
    pub follow: bool,
}

/// `pinion history` arguments.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HistoryArgs {
    /// Instance id whose history to print.
    pub id: Option<String>,
    /// Print this run's history: an earlier run (one that ended with continue-as-new) or
    /// the current one (default).
    #[arg(long)]
    pub run: Option<u32>,
    /// Export or import instead.
    #[command(subcommand)]
    pub action: Option<HistoryAction>,
}

/// `pinion history export | import`.
#[derive(Debug, Subcommand)]
pub enum HistoryAction {
    /// Write histories in the documented JSON format: one instance to stdout, or with --out
    /// one `<id>.json` file per instance.
    Export {
        /// Instance id (or use --all with filters).
        id: Option<String>,
        /// Every instance matching the filters.
        #[arg(long)]
        all: bool,
        /// Filters (with --all; status defaults to all).
        #[command(flatten)]
        filter: FilterArgs,
        /// Directory to write `<id>.json` files into (`<id>@run<N>.json` for archived runs,
        /// with --all-runs).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Import exported history files (or directories of them). Imported instances are for
    /// replay and inspection: they never run.
    Import {
        /// Files or directories.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `pinion webhooks ...`.
#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// List the events webhooks gave up on (from --db, or the server's with --server), or
    /// with --redeliver send one again (needs --server: the server holds the secret).
    DeadLetters {
        /// The dead letter to redeliver (its id in the list).
        #[arg(long)]
        redeliver: Option<u64>,
    },
}

/// Which recorded histories to take from a database.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only this workflow type.
    #[arg(long)]
    pub workflow_type: Option<String>,
    /// running, blocked, completed, failed, cancelled, terminated or all.
    #[arg(long, value_parser = parse_status_filter)]
    pub status: Option<String>,
    /// Only instances started within this long (e.g. 30s, 15m, 2h, 7d).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<String>,
    /// Only these instances (repeatable).
    #[arg(long = "id")]
    pub ids: Vec<String>,
    /// At most this many (newest first).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Replay only this fraction (0 < RATE <= 1) of the matching instances, chosen by id.
    #[arg(long, value_parser = parse_sample)]
    pub sample: Option<f64>,
    /// Also take every archived run (ended with continue-as-new) of the chosen instances,
    /// each on its own: reported as `<id>@run<N>`, exported as `<id>@run<N>.json`.
    #[arg(long)]
    pub all_runs: bool,
}

/// `pinion replay` arguments.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Candidate module: a .wasm file (never stored) or a deployed hash or prefix.
    #[arg(long)]
    pub module: String,
    /// Exported history files or directories; without it, histories come from --db.
    #[arg(long, num_args = 1..)]
    pub history: Vec<PathBuf>,
    /// Filters for histories read from --db (status defaults to running).
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Treat a changed activity input as a divergence (default: a warning).
    #[arg(long)]
    pub strict_inputs: bool,
    /// Keep replaying new and changed histories until stopped (shadow mode).
    #[arg(long)]
    pub follow: bool,
    /// With --follow: how often to look for changes (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s")]
    pub interval: String,
}

/// `pinion alias ...`.
#[derive(Debug, Subcommand)]
pub enum AliasAction {
    /// Point an alias at a module (creating it); ends any ramp: the rollout is complete.
    Set {
        /// Alias name.
        name: String,
        /// Module hash or prefix.
        module: String,
        /// Refuse if the module diverges from the histories of running instances.
        #[arg(long)]
        verify: bool,
        /// With --verify: replay at most this many histories.
        #[arg(long, default_value_t = 1000)]
        verify_limit: u32,
        /// Also move every running or blocked instance of the alias's previous module (and
        /// of its ramp's) whose history replays clean against MODULE; the others stay
        /// pinned, with their divergence listed.
        #[arg(long)]
        upgrade_compatible: bool,
        /// With --upgrade-compatible: only show which instances would move; change nothing.
        #[arg(long, requires = "upgrade_compatible")]
        dry_run: bool,
    },
    /// Send PERCENT of new instances to MODULE (chosen by instance id), or --cancel.
    Ramp {
        /// Alias name.
        name: String,
        /// Module hash or prefix to ramp to.
        #[arg(required_unless_present = "cancel")]
        module: Option<String>,
        /// Share of new instances, 0-100.
        #[arg(required_unless_present = "cancel")]
        percent: Option<u8>,
        /// Stop the ramp: every new instance goes to the alias's module.
        #[arg(long, conflicts_with_all = ["module", "percent"])]
        cancel: bool,
    },
    /// List aliases.
    List,
    /// Show an alias's changes, oldest first.
    History {
        /// Alias name.
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_tree_is_consistent_and_global_display_flags_parse_after_any_verb() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["pinion", "status", "x", "--time", "utc", "-v"]).unwrap();
        assert_eq!((cli.time, cli.verbose), (TimeZoneChoice::Utc, true));
        let bad = Cli::try_parse_from(["pinion", "list", "--status", "bogus"]).unwrap_err();
        assert_eq!(bad.exit_code(), 2);
    }

    #[test]
    fn unknown_filter_values_are_bad_syntax_and_known_ones_parse() {
        for args in [
            &["pinion", "replay", "--module", "m", "--status", "bogus"][..],
            &[
                "pinion",
                "replay",
                "--module",
                "m",
                "--since",
                "5 fortnights",
            ],
            &["pinion", "replay", "--module", "m", "--sample", "1.5"],
            &["pinion", "replay", "--module", "m", "--sample", "0"],
            &["pinion", "history", "export", "--all", "--status", "done"],
            &["pinion", "events", "--type", "finished"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
            assert!(e.to_string().contains("invalid value"), "{args:?}: {e}");
        }
        for args in [
            &[
                "pinion", "replay", "--module", "m", "--status", "all", "--since", "2h",
            ][..],
            &[
                "pinion", "replay", "--module", "m", "--status", "blocked", "--sample", "1",
            ],
            &[
                "pinion",
                "events",
                "--type",
                "continued_as_new",
                "--type",
                "started",
            ],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
