//! The library API: what the CLI, the tests and embedding programs call.
//!
//! [`Pinion`] opens a database and offers every verb (deploy, start, status, result, list,
//! history, modules) plus [`Pinion::start_worker`] to run the work. The CLI is a thin layer
//! over this type, so anything the CLI can do a Rust program can do too.

mod control;
mod file_lock;
pub mod preflight;
mod progress;
mod retention;

pub use progress::Progress;
pub use retention::PurgeReport;

pub use control::BulkSelector;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::clock::{random_u64, Clock, SystemClock};
use crate::config::{GrantSource, Grants};
use crate::executor::ExecError;
use crate::history::{
    EventKind, HistoryEvent, InstanceId, InstanceStatus, Payload, DETERMINISM_RULES_VERSION,
};
use crate::registry::{Deployed, ModuleTarget, Registry, RegistryError, TargetError};
use crate::sandbox::{Sandbox, SandboxError, SandboxLimits};
use crate::store::postgres::{PgMember, PgOptions, PgStore};
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{InstanceFilter, InstanceRecord, ModuleRecord, NewInstance, Store, StoreError};
use crate::worker::{Shared as WorkerShared, Worker, WorkerConfig};

/// Errors of the library API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Module validation or lookup failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The sandbox could not be created.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The module does not export this workflow type.
    #[error("module {module} has no workflow type `{workflow_type}`; it exports: {}", available.join(", "))]
    UnknownWorkflowType {
        /// The module.
        module: String,
        /// What was asked for.
        workflow_type: String,
        /// What it exports.
        available: Vec<String>,
    },
    /// Bad input from the caller (workflow, signal or query input that is not JSON, a bad
    /// percentage, ...); the message says what and why.
    #[error("{0}")]
    InvalidInput(String),
    /// Instance id is not acceptable.
    #[error(
        "invalid instance id {0:?}: use 1 to 200 bytes of printable characters without spaces"
    )]
    InvalidInstanceId(String),
    /// No such instance.
    #[error("no instance with id `{0}`; `pinion list` shows the instances")]
    UnknownInstance(String),
    /// Waiting for a result timed out.
    #[error("instance {id} is still {status} after waiting {waited:?}")]
    WaitTimedOut {
        /// The instance.
        id: String,
        /// Its status when we gave up.
        status: InstanceStatus,
        /// How long we waited.
        waited: Duration,
    },
    /// No alias has this name.
    #[error("no alias named `{0}`; `pinion alias list` shows them")]
    UnknownAlias(String),
    /// The instance is an imported history; it never runs, so waiting for it is pointless.
    #[error("instance {0} is an imported history: it is kept for replay and never runs")]
    Imported(String),
    /// Another process runs a worker on this database.
    #[error("another pinion process is running workers on this database ({0}); stop it, or let it run the work")]
    WorkerLocked(String),
    /// The workflow could not answer a query.
    #[error("query {name:?} on instance {id} failed: {kind}: {message}")]
    Query {
        /// The instance.
        id: String,
        /// The query name.
        name: String,
        /// `UnknownQuery`, `InvalidInput`, `NotStarted`, `ReadOnlyViolation`, `QueryFailed`.
        kind: String,
        /// What went wrong.
        message: String,
    },
    /// The instance could not be rebuilt by replay (to answer a query).
    #[error("cannot rebuild the instance by replay: {0}")]
    Rebuild(Box<ExecError>),
    /// A long operation (replay, verify, upgrade) was cancelled before it finished; what it
    /// did before stays done.
    #[error("cancelled after {done} of {total} instances; what was done before stays done")]
    Cancelled {
        /// Instances finished.
        done: u64,
        /// Instances chosen.
        total: u64,
    },
    /// `pinion migrate` could not copy the database; nothing was written.
    #[error(transparent)]
    Migrate(#[from] crate::store::migrate::MigrateError),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl From<TargetError> for Error {
    fn from(e: TargetError) -> Error {
        match e {
            TargetError::UnknownAlias(name) => Error::UnknownAlias(name),
            TargetError::UnknownWorkflowType {
                module,
                workflow_type,
                available,
            } => Error::UnknownWorkflowType {
                module,
                workflow_type,
                available,
            },
            TargetError::Registry(r) => Error::Registry(r),
        }
    }
}

/// How to open an engine. Defaults: the real clock, default sandbox limits, sqlite with
/// `synchronous=FULL`, compiled code cached in `<db>.cache/` (for a PostgreSQL URL, no
/// disk cache).
#[derive(Clone)]
pub struct PinionConfig {
    /// The SQLite database file, or a PostgreSQL URL (`postgres://...`, see
    /// [`crate::store::postgres::is_url`]).
    pub db_path: PathBuf,
    /// SQLite options.
    pub sqlite: SqliteOptions,
    /// PostgreSQL options (used when `db_path` is a URL). `read_only` follows
    /// `sqlite.read_only` too.
    pub postgres: PgOptions,
    /// Sandbox limits.
    pub limits: SandboxLimits,
    /// Where compiled modules are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// What activities may reach (`pinion.toml`); nothing by default.
    pub grants: Arc<GrantSource>,
}

impl PinionConfig {
    /// Defaults for the database at `db_path`.
    pub fn new(db_path: impl Into<PathBuf>) -> PinionConfig {
        let db_path = db_path.into();
        let mut cache = db_path.clone().into_os_string();
        cache.push(".cache");
        // A URL has no directory to keep a cache beside.
        let cache_dir = postgres_url(&db_path)
            .is_none()
            .then(|| PathBuf::from(cache));
        PinionConfig {
            db_path,
            sqlite: SqliteOptions::default(),
            postgres: PgOptions::default(),
            limits: SandboxLimits::default(),
            cache_dir,
            clock: Arc::new(SystemClock),
            grants: Arc::new(GrantSource::fixed(Grants::none())),
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// Workflow type exported by the module.
    pub workflow_type: String,
    /// Full hash or unique prefix of a deployed module (ignored when `alias` is set).
    pub module: String,
    /// Start on the module this alias points at (or ramps to, for this instance's id).
    pub alias: Option<String>,
    /// Input as JSON text.
    pub input_json: String,
    /// Instance id; generated when `None`.
    pub id: Option<String>,
}

/// An open engine.
pub struct Pinion {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    sandbox: Arc<Sandbox>,
    clock: Arc<dyn Clock>,
    grants: Arc<GrantSource>,
    db_path: PathBuf,
    backend: Backend,
    /// The worker this engine started, if it still runs: signals wake it, queries borrow
    /// its cached runs.
    worker: Mutex<Weak<WorkerShared>>,
}

/// The PostgreSQL URL `db` names, if it names one rather than a SQLite file.
pub fn postgres_url(db: &Path) -> Option<&str> {
    db.to_str().filter(|s| crate::store::postgres::is_url(s))
}

/// The backend an engine opened, for what only the backend knows (the worker lock).
enum Backend {
    Sqlite,
    Postgres(Arc<PgStore>),
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 200 && id.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

impl Pinion {
    /// Opens (creating if needed) the database and the sandbox.
    ///
    /// # Errors
    /// [`Error::Store`] when the file cannot be opened, is not a pinion database, or is locked.
    pub fn open(config: PinionConfig) -> Result<Pinion, Error> {
        let (store, backend): (Arc<dyn Store>, Backend) = match postgres_url(&config.db_path) {
            Some(url) => {
                let mut options = config.postgres.clone();
                options.read_only |= config.sqlite.read_only;
                let pg = Arc::new(PgStore::open(url, options)?);
                (pg.clone(), Backend::Postgres(pg))
            }
            None => (
                Arc::new(SqliteStore::open(&config.db_path, config.sqlite.clone())?),
                Backend::Sqlite,
            ),
        };
        let sandbox = Arc::new(Sandbox::new(config.limits.clone())?);
        let registry = Arc::new(Registry::new(
            store.clone(),
            sandbox.clone(),
            config.clock.clone(),
            config.cache_dir.clone(),
        ));
        Ok(Pinion {
            store,
            registry,
            sandbox,
            clock: config.clock,
            grants: config.grants,
            db_path: config.db_path,
            backend,
            worker: Mutex::new(Weak::new()),
        })
    }

    /// The engine clock's time.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The database file (or PostgreSQL URL).
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The database for messages: the file, or the PostgreSQL URL without its password.
    pub fn db_display(&self) -> String {
        match &self.backend {
            Backend::Sqlite => self.db_path.display().to_string(),
            Backend::Postgres(pg) => pg.url(),
        }
    }

    /// The store (for tools that need direct access, like replay).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The grants in force for activities.
    pub fn grants(&self) -> &Arc<GrantSource> {
        &self.grants
    }

    /// Validates and stores a module.
    ///
    /// # Errors
    /// A clear validation error; nothing is stored then.
    pub fn deploy(&self, bytes: &[u8]) -> Result<Deployed, Error> {
        Ok(self.registry.deploy(bytes)?)
    }

    /// Reads a file and deploys it.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, else as [`Pinion::deploy`].
    pub fn deploy_file(&self, path: &Path) -> Result<Deployed, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.deploy(&bytes)
    }

    /// Creates an instance pinned to the module, runnable by any worker. With a worker
    /// running in this process, its first activation runs on the calling thread and
    /// commits with it: when this returns, the instance has taken its first step.
    ///
    /// # Errors
    /// Unknown module or workflow type, input that is not JSON, an id in use.
    pub fn start(&self, req: &StartRequest) -> Result<InstanceId, Error> {
        let id = match &req.id {
            Some(id) if valid_id(id) => id.clone(),
            Some(id) => return Err(Error::InvalidInstanceId(id.clone())),
            None => format!("wf-{:016x}", random_u64()),
        };
        let target = match &req.alias {
            Some(name) => ModuleTarget::Alias(name),
            None => ModuleTarget::Module(&req.module),
        };
        let module = self
            .registry
            .resolve_target(target, &id, &req.workflow_type)?;
        let input = Payload::from_json_bytes(req.input_json.as_bytes())
            .map_err(|e| Error::InvalidInput(format!("workflow input is not valid JSON: {e}")))?;
        let id = InstanceId(id);
        let now = self.clock.now_ms();
        let started = EventKind::WorkflowStarted {
            workflow_type: req.workflow_type.clone(),
            module_hash: module.hash.clone(),
            input,
            random_seed: random_u64(),
            determinism_rules: DETERMINISM_RULES_VERSION,
            version_label: module.manifest.version_label.clone(),
            parent: None,
            continued_from_run: None,
        };
        let worker = self.worker.lock().expect("worker handle lock").upgrade();
        let Some(worker) = worker else {
            self.store.create_instance(NewInstance {
                id: id.clone(),
                now_ms: now,
                started,
            })?;
            return Ok(id);
        };
        // With a worker in this process, the first activation runs here and commits with
        // the instance (docs/design.md, "Eager start").
        let eager = if worker.config.eager_start {
            crate::worker::start_eagerly(&worker, &id, &started, now)?
        } else {
            crate::worker::EagerStart::NotRun
        };
        if let crate::worker::EagerStart::Committed = eager {
            return Ok(id);
        }
        let created = self.store.create_instance(NewInstance {
            id: id.clone(),
            now_ms: now,
            started,
        });
        match eager {
            crate::worker::EagerStart::Failed(e) => {
                crate::worker::block_failed_start(&worker, &id, created.is_ok().then_some(&e))
            }
            _ => worker.workflow_wake.notify(),
        }
        created?;
        Ok(id)
    }

    /// One instance.
    ///
    /// # Errors
    /// [`Error::UnknownInstance`].
    pub fn status(&self, id: &str) -> Result<InstanceRecord, Error> {
        self.store
            .get_instance(&InstanceId(id.into()))?
            .ok_or_else(|| Error::UnknownInstance(id.into()))
    }

    /// Waits until the instance is completed, failed or blocked, up to `timeout`.
    ///
    /// # Errors
    /// [`Error::UnknownInstance`], [`Error::WaitTimedOut`].
    #[allow(clippy::disallowed_methods)] // bounds the caller's wait; not workflow time
    pub fn wait(&self, id: &str, timeout: Duration) -> Result<InstanceRecord, Error> {
        let start = std::time::Instant::now();
        let mut delay = Duration::from_millis(2);
        loop {
            let rec = self.status(id)?;
            if rec.status != InstanceStatus::Running {
                return Ok(rec);
            }
            if rec.imported {
                return Err(Error::Imported(id.into()));
            }
            if start.elapsed() >= timeout {
                return Err(Error::WaitTimedOut {
                    id: id.into(),
                    status: rec.status,
                    waited: timeout,
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    /// Instances matching `filter`.
    ///
    /// # Errors
    /// Storage errors.
    pub fn list(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>, Error> {
        Ok(self.store.list_instances(filter)?)
    }

    /// An instance's history.
    ///
    /// # Errors
    /// [`Error::UnknownInstance`].
    pub fn history(&self, id: &str) -> Result<Vec<HistoryEvent>, Error> {
        self.status(id)?;
        Ok(self.store.load_history(&InstanceId(id.into()))?)
    }

    /// Every deployed module.
    ///
    /// # Errors
    /// Storage errors.
    pub fn modules(&self) -> Result<Vec<ModuleRecord>, Error> {
        Ok(self.store.list_modules()?)
    }

    /// Starts workers for this database. On a SQLite file only one process may run
    /// workers at a time: the lock (on the file itself, see `engine/file_lock.rs`) is held
    /// until the returned [`WorkerGuard`] is dropped. On PostgreSQL any number of processes may: each joins
    /// the database's members (`store/postgres/members.rs`) until the guard is dropped, and
    /// its peers take over its work when it dies.
    ///
    /// # Errors
    /// [`Error::WorkerLocked`] when another process runs workers on the SQLite file.
    pub fn start_worker(&self, config: WorkerConfig) -> Result<WorkerGuard, Error> {
        let lock = match &self.backend {
            // Any number of servers share a PostgreSQL database: each joins, and its
            // peers take over its work when it is gone.
            Backend::Postgres(pg) => WorkerLock::Postgres(Box::new(pg.join()?)),
            Backend::Sqlite => WorkerLock::File(self.lock_file()?),
        };
        let activities = crate::worker::activity_runtime(config.activity_threads)
            .map_err(|e| SandboxError::Setup(format!("cannot start the activity runtime: {e}")))?;
        let worker = Worker::start(
            self.store.clone(),
            self.registry.clone(),
            self.sandbox.clone(),
            self.grants.clone(),
            self.clock.clone(),
            config,
            activities,
        )?;
        *self.worker.lock().expect("worker handle lock") = Arc::downgrade(worker.shared());
        let mut lock = lock;
        if let WorkerLock::Postgres(member) = &mut lock {
            // Input for this server's instances written by another server wakes it at once.
            let shared = Arc::downgrade(worker.shared());
            member.listen(Box::new(move || {
                if let Some(s) = shared.upgrade() {
                    s.workflow_wake.notify();
                    s.activity_wake.notify();
                }
            }))?;
        }
        Ok(WorkerGuard {
            worker: Some(worker),
            _lock: lock,
        })
    }

    /// Takes the worker lock of a SQLite database (`engine/file_lock.rs`).
    fn lock_file(&self) -> Result<file_lock::FileLock, Error> {
        file_lock::lock(&self.db_path, "")
    }
}

/// What a process holds while its workers run: the one-worker-process lock of a SQLite
/// file, or its membership of a PostgreSQL database.
#[allow(dead_code)] // held for its drop, never read
enum WorkerLock {
    File(file_lock::FileLock),
    Postgres(Box<PgMember>),
}

/// Copies the SQLite database `from` into the PostgreSQL database `to`
/// ([`crate::store::migrate`]): brings both to this pinion's schema first, and holds the
/// file's worker lock throughout, so no server on the file writes while it is copied.
///
/// # Errors
/// [`Error::WorkerLocked`] while a server runs on the file; [`Error::Migrate`] when the
/// destination holds data (unless `replace_existing`) or a copy fails; nothing is written
/// to the destination then.
pub fn migrate_to_postgres(
    from: &Path,
    to: &str,
    replace_existing: bool,
) -> Result<crate::store::migrate::MigrateReport, Error> {
    if !from.is_file() {
        return Err(Error::Io {
            path: from.display().to_string(),
            reason: "no such SQLite database file".into(),
        });
    }
    if !crate::store::postgres::is_url(to) {
        return Err(Error::InvalidInput(format!(
            "--to must be a PostgreSQL URL (postgres://user@host/database), not `{to}`"
        )));
    }
    let lock = file_lock::lock(from, "; stop the server before migrating")?;
    drop(SqliteStore::open(from, SqliteOptions::default())?);
    PgStore::open(to, PgOptions::default())?.close();
    let report = crate::store::migrate::sqlite_to_postgres(from, to, replace_existing)?;
    drop(lock);
    Ok(report)
}

/// Running workers plus the database's worker lock.
pub struct WorkerGuard {
    worker: Option<Worker>,
    _lock: WorkerLock,
}

impl WorkerGuard {
    /// Wakes the workers (after a start in this process).
    pub fn wake(&self) {
        if let Some(w) = &self.worker {
            w.wake();
        }
    }

    /// Stops the workers, letting in-flight tasks finish.
    pub fn shutdown(mut self) {
        if let Some(w) = self.worker.take() {
            w.shutdown();
        }
    }
}
