//! Command-line syntax (clap derive). Only parsing lives here; [`super`] validates and runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// pinion: durable WebAssembly workflows pinned by content hash.
#[derive(Debug, Parser)]
#[command(name = "pinion", version, about, long_about = None)]
pub struct Cli {
    /// SQLite database file.
    #[arg(long, global = true, env = "PINION_DB", default_value = "pinion.db")]
    pub db: PathBuf,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a module and store it by the SHA-256 of its bytes; prints the hash.
    Deploy {
        /// The .wasm file.
        file: PathBuf,
    },
    /// Start a workflow instance pinned to a deployed module.
    Start {
        /// Workflow type exported by the module.
        workflow_type: String,
        /// Module hash or unique prefix.
        #[arg(long)]
        module: String,
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
    /// Print an instance's result (exit code 0 completed, 6 failed or blocked).
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
    /// List instances, newest first.
    List {
        /// Only this status (running, blocked, completed, failed).
        #[arg(long)]
        status: Option<String>,
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
    /// Print an instance's history (a table; with --json the documented export format).
    History {
        /// Instance id.
        id: String,
    },
    /// List deployed modules.
    Modules,
    /// Run the workers for this database until stopped (SIGINT or SIGTERM).
    Server(ServerArgs),
    /// Measure durable throughput and step latency with a `Steps` workflow (ignores --db).
    Bench(BenchArgs),
}

/// `pinion bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Module exporting a `Steps` workflow (examples/testkit).
    #[arg(long)]
    pub module: PathBuf,
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

/// `pinion server` options.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Threads running workflow activations.
    #[arg(long, default_value_t = 2)]
    pub workflow_threads: usize,
    /// Threads running activities.
    #[arg(long, default_value_t = 8)]
    pub activity_threads: usize,
}
