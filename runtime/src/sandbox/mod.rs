//! The wasmtime sandbox: one engine, deterministic workflow instances, activity instances.
//!
//! One engine compiles each module once; a [`LoadedModule`] is linked twice, against two
//! different worlds:
//!
//! * **workflows** ([`wasi`]): a hand-written, deterministic WASI surface (logical clock,
//!   seeded PRNG, no files, environment or sockets), called synchronously;
//! * **activities** ([`activity`]): `wasmtime-wasi`'s preview 1 with real clocks and random,
//!   plus exactly what the operator's grants give the attempt (preopened directories,
//!   environment, secrets, outgoing HTTP through [`http`]), called asynchronously on tokio,
//!   so an activity waiting on the network holds no thread. Their instances live in pooled
//!   slots of a second engine ([`pool`]) that stay mapped between attempts.
//!
//! # Determinism and limits are configured here
//!
//! * NaN canonicalisation on, threads off, relaxed SIMD in deterministic mode: the same
//!   wasm produces the same bits on every machine. Multi-memory off.
//! * Fuel: each workflow activation gets [`SandboxLimits::fuel_per_activation`]; an infinite
//!   loop becomes a deterministic `OutOfFuel` error instead of a hung worker.
//! * Memory: all memories and tables of an instance together are bounded by one
//!   [`limiter::GuestLimiter`] ([`SandboxLimits::memory_bytes`]).
//! * Epochs: a ticker thread bumps the epoch every [`EPOCH_TICK`]; an activity yields to
//!   tokio at every tick, so a busy activity cannot starve waiting ones, and its
//!   start-to-close timeout is a tokio timeout around the whole attempt.

pub mod activity;
pub mod http;
pub mod limiter;
mod pool;
mod stacks;
pub mod wasi;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pinion_abi::{exports, imports, Activation, Completion, Manifest, QueryRequest, QueryResponse};
use wasmtime::{
    Config, Engine, Instance, InstancePre, Linker, Memory, Module, OptLevel, Store, Trap, TypedFunc,
};

use limiter::{GuestLimiter, Limit};

pub use wasi::SplitMix64;

/// How often the epoch advances; the granularity of activity timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Errors from compiling, linking and running guest code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SandboxError {
    /// The bytes are not a valid wasm module.
    #[error("not a valid WebAssembly module: {0}")]
    InvalidWasm(String),
    /// The module does not follow the pinion ABI (missing export, wrong version, bad manifest).
    #[error("module does not implement the pinion ABI: {0}")]
    Abi(String),
    /// Guest code trapped (a panic, an unreachable, a bad memory access).
    #[error("guest trapped: {message}{}", stderr_suffix(stderr))]
    Trap {
        /// The trap.
        message: String,
        /// What the guest wrote to stderr during the call (its panic message, usually).
        stderr: String,
    },
    /// The activation used all its fuel (an endless loop, or far too much work).
    #[error("workflow activation ran out of fuel ({0} units); is there an endless loop?")]
    OutOfFuel(u64),
    /// The instance hit its memory limit.
    #[error("guest exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    /// The instance's tables hit their limit (all tables together).
    #[error("guest exceeded its limit of {0} table elements")]
    TableLimit(usize),
    /// An activity attempt ran past its start-to-close timeout.
    #[error("activity ran past its start-to-close timeout of {0:?}")]
    Timeout(Duration),
    /// An activity attempt went longer than its heartbeat timeout without a heartbeat.
    #[error("activity sent no heartbeat for {0:?} (its heartbeat timeout)")]
    HeartbeatTimeout(Duration),
    /// The engine itself could not be set up.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
}

fn stderr_suffix(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!("; guest stderr: {t}")
    }
}

/// Resource limits. Defaults: 1e9 fuel per activation, 128 MiB per instance, activity
/// timeout 5 minutes when the workflow sets none, HTTP responses up to 16 MiB, 256 pooled
/// activity slots.
#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// Fuel (roughly, wasm instructions) one workflow activation may use.
    pub fuel_per_activation: u64,
    /// Linear memory limit per instance (all its memories together), in bytes.
    pub memory_bytes: usize,
    /// Start-to-close timeout of an activity whose options set none.
    pub default_activity_timeout: Duration,
    /// Largest HTTP response body an activity may receive, in bytes.
    pub http_response_bytes: usize,
    /// Activity instances kept in pooled, reusable slots ([`pool`]); attempts beyond them
    /// run in instances of their own as before. 0 turns the pool off.
    pub activity_pool_slots: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            fuel_per_activation: 1_000_000_000,
            memory_bytes: 128 << 20,
            default_activity_timeout: Duration::from_secs(300),
            http_response_bytes: 16 << 20,
            activity_pool_slots: 256,
        }
    }
}

/// Per-instance host state of a workflow instance.
#[derive(Debug)]
pub struct GuestState {
    limiter: GuestLimiter,
    /// The current activation's logical time: what the WASI clocks return.
    pub now_ms: u64,
    /// Deterministic random source for `random_get`, seeded from the start event.
    pub rng: SplitMix64,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
}

/// Captured output above this size is truncated: logs are for people, not for bulk data.
pub const MAX_CAPTURE: usize = 64 << 10;

impl GuestState {
    fn new(rng: SplitMix64, memory_bytes: usize) -> GuestState {
        GuestState {
            limiter: GuestLimiter::new(memory_bytes),
            now_ms: 0,
            rng,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn capture_room(&self, fd: i32) -> usize {
        let buf = if fd == 1 { &self.stdout } else { &self.stderr };
        MAX_CAPTURE.saturating_sub(buf.len())
    }

    fn capture(&mut self, fd: i32, data: &[u8]) {
        let buf = if fd == 1 {
            &mut self.stdout
        } else {
            &mut self.stderr
        };
        let room = MAX_CAPTURE.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// A module compiled and linked (for workflows and for activities), ready to instantiate
/// cheaply.
#[derive(Clone)]
pub struct LoadedModule {
    module: Module,
    pre: InstancePre<GuestState>,
    activity_pre: InstancePre<activity::ActivityState>,
    pooled_activity_pre: pool::PooledPre,
    pooled_workflow_pre: pool::PooledWorkflowPre,
}

impl LoadedModule {
    /// The compiled module.
    pub fn module(&self) -> &Module {
        &self.module
    }
}

/// The wasmtime engine with pinion's configuration and linker.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<GuestState>,
    activity_linker: Linker<activity::ActivityState>,
    /// Pooled slots for activity instances; `None` when turned off or refused by the host.
    activity_pool: Option<pool::ActivityPool>,
    /// Pooled slots for replay's workflow instances, made on first use; `None` inside
    /// when turned off (no activity pool either) or refused by the host.
    replay_pool: std::sync::OnceLock<Option<pool::ReplayPool>>,
    limits: SandboxLimits,
    http: http::HttpClient,
    ticker_stop: Arc<AtomicBool>,
    /// Compiles allowed at once (one per core): a burst of deploys or replays of big
    /// modules queues instead of taking every core and the blocking pool's threads.
    compile_slots: Slots,
    compiles: std::sync::atomic::AtomicU64,
}

/// A counting semaphore for threads.
struct Slots {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            free: std::sync::Mutex::new(n.max(1)),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Waits for a slot; it is given back when the guard drops.
    fn take(&self) -> SlotGuard<'_> {
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *free -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self
            .0
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn trap_error(
    e: wasmtime::Error,
    stderr: &[u8],
    limit_hit: Option<Limit>,
    fuel_budget: u64,
    memory_bytes: usize,
) -> SandboxError {
    let stderr = String::from_utf8_lossy(stderr).into_owned();
    if let Some(trap) = e.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel => return SandboxError::OutOfFuel(fuel_budget),
            Trap::Interrupt => return SandboxError::Timeout(Duration::ZERO),
            _ => {}
        }
    }
    // Allocation failure inside the guest after `memory.grow` was refused shows up as an
    // abort with this message from Rust's allocator; a refused initial memory or table
    // as an instantiation error.
    match limit_hit {
        Some(Limit::Table) => return SandboxError::TableLimit(limiter::TABLE_ELEMENTS),
        Some(Limit::Memory) => return SandboxError::MemoryLimit(memory_bytes),
        None if stderr.contains("memory allocation of") => {
            return SandboxError::MemoryLimit(memory_bytes)
        }
        None => {}
    }
    SandboxError::Trap {
        message: format!("{e:#}"),
        stderr,
    }
}

impl Sandbox {
    /// Creates the engine and starts its epoch ticker.
    ///
    /// # Errors
    /// [`SandboxError::Setup`] if wasmtime rejects the configuration.
    pub fn new(limits: SandboxLimits) -> Result<Sandbox, SandboxError> {
        let mut config = engine_config();
        config.with_host_stack(Arc::new(stacks::PoolHandle(stacks::StackPool::new(256))));
        let engine = Engine::new(&config).map_err(|e| SandboxError::Setup(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(setup)?;
        let mut activity_linker = Linker::new(&engine);
        activity::add_to_linker(&mut activity_linker).map_err(setup)?;
        // A host that refuses the pool's address space (`ulimit -v`) still runs every
        // attempt, on the main engine.
        let activity_pool = (limits.activity_pool_slots > 0)
            .then(|| {
                pool::ActivityPool::new(
                    engine_config(),
                    limits.activity_pool_slots,
                    limits.memory_bytes,
                )
                .ok()
            })
            .flatten();
        let http =
            http::HttpClient::new(limits.http_response_bytes).map_err(SandboxError::Setup)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let stop = ticker_stop.clone();
        let ticking: Vec<Engine> = std::iter::once(engine.clone())
            .chain(activity_pool.as_ref().map(|p| p.engine().clone()))
            .collect();
        std::thread::Builder::new()
            .name("pinion-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for e in &ticking {
                        e.increment_epoch();
                    }
                }
            })
            .map_err(|e| SandboxError::Setup(e.to_string()))?;
        Ok(Sandbox {
            engine,
            linker,
            activity_linker,
            activity_pool,
            replay_pool: std::sync::OnceLock::new(),
            limits,
            http,
            ticker_stop,
            compile_slots: Slots::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ),
            compiles: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether activity attempts use pooled slots ([`SandboxLimits::activity_pool_slots`]).
    pub fn activity_pool_enabled(&self) -> bool {
        self.activity_pool.is_some()
    }

    /// How many modules this sandbox has compiled (cache hits are not compiles).
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The limits in force.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// A string identifying the engine's compiled-code compatibility (wasmtime version,
    /// target, settings): compiled artifacts are cached under it.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        use std::hash::{Hash, Hasher};
        /// SHA-256 as a `Hasher`: stable across Rust releases, unlike `DefaultHasher`.
        struct Stable(sha2::Sha256);
        impl Hasher for Stable {
            fn write(&mut self, bytes: &[u8]) {
                self.0.update(bytes);
            }
            fn finish(&self) -> u64 {
                let d = self.0.clone().finalize();
                u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
            }
        }
        let mut h = Stable(sha2::Sha256::new());
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Compiles wasm bytes.
    ///
    /// # Errors
    /// [`SandboxError::InvalidWasm`] when the bytes are not valid wasm.
    pub fn compile(&self, bytes: &[u8]) -> Result<Module, SandboxError> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(SandboxError::InvalidWasm(
                "the file does not start with the wasm magic bytes `\\0asm`".into(),
            ));
        }
        let _slot = self.compile_slots.take();
        self.compiles.fetch_add(1, Ordering::Relaxed);
        Module::new(&self.engine, bytes).map_err(|e| SandboxError::InvalidWasm(format!("{e:#}")))
    }

    /// Links a compiled module: checks its imports and exports against the ABI.
    ///
    /// # Errors
    /// [`SandboxError::Abi`] naming the offending import or missing export.
    pub fn load(&self, module: Module) -> Result<LoadedModule, SandboxError> {
        for import in module.imports() {
            let known = match import.module() {
                wasi::WASI => true,
                m if m == imports::MODULE => imports::ALL.contains(&import.name()),
                _ => false,
            };
            if !known {
                return Err(SandboxError::Abi(format!(
                    "it imports `{}::{}`; pinion provides `{}` functions and `{}::{{{}}}`; was it built with a newer pinion-sdk?",
                    import.module(),
                    import.name(),
                    wasi::WASI,
                    imports::MODULE,
                    imports::ALL.join(", "),
                )));
            }
        }
        use wasmtime::ValType::{I32, I64};
        // Every ABI export, with the signature the host calls it with: a module that gets
        // one wrong is rejected here, not when its first instance runs.
        let signatures: [(&str, &[wasmtime::ValType], &[wasmtime::ValType]); 7] = [
            (exports::ABI_VERSION, &[], &[I32]),
            (exports::MANIFEST, &[], &[I64]),
            (exports::ALLOC, &[I32], &[I32]),
            (exports::FREE, &[I32, I32], &[]),
            (exports::ACTIVATE, &[I32, I32], &[I64]),
            (exports::RUN_ACTIVITY, &[I32, I32], &[I64]),
            (exports::QUERY, &[I32, I32], &[I64]),
        ];
        if !matches!(
            module.get_export(exports::MEMORY),
            Some(wasmtime::ExternType::Memory(_))
        ) {
            return Err(SandboxError::Abi(format!(
                "it has no `{}` export; build it with pinion-sdk's `export!` macro",
                exports::MEMORY
            )));
        }
        for (name, params, results) in signatures {
            let Some(export) = module.get_export(name) else {
                return Err(SandboxError::Abi(format!(
                    "it has no `{name}` export; build it with pinion-sdk's `export!` macro"
                )));
            };
            let wasmtime::ExternType::Func(ty) = export else {
                return Err(SandboxError::Abi(format!(
                    "its `{name}` export is not a function"
                )));
            };
            let same = |a: &mut dyn ExactSizeIterator<Item = wasmtime::ValType>,
                        b: &[wasmtime::ValType]| {
                a.len() == b.len() && a.zip(b).all(|(x, y)| wasmtime::ValType::eq(&x, y))
            };
            if !same(&mut ty.params(), params) || !same(&mut ty.results(), results) {
                return Err(SandboxError::Abi(format!(
                    "its `{name}` export has type {ty}, expected params {params:?} and results {results:?}"
                )));
            }
        }
        let mut linker = self.linker.clone();
        wasi::define_missing(&mut linker, &module)
            .map_err(|e| SandboxError::Abi(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| SandboxError::Abi(format!("{e:#}")))?;
        let activity_pre = self
            .activity_linker
            .instantiate_pre(&module)
            .map_err(|e| SandboxError::Abi(format!("{e:#}")))?;
        Ok(LoadedModule {
            module,
            pre,
            activity_pre,
            pooled_activity_pre: pool::PooledPre::default(),
            pooled_workflow_pre: pool::PooledWorkflowPre::default(),
        })
    }

    fn instantiate(
        &self,
        loaded: &LoadedModule,
        rng: SplitMix64,
    ) -> Result<GuestInstance<GuestState>, SandboxError> {
        self.instantiate_on(&self.engine, &loaded.pre, rng)?
            .ok_or_else(|| SandboxError::Setup("the main engine has no pool to exhaust".into()))
    }

    /// Instantiates `pre` (of `engine`); `Ok(None)` when `engine` is a pool whose slots
    /// are all taken.
    fn instantiate_on(
        &self,
        engine: &Engine,
        pre: &InstancePre<GuestState>,
        rng: SplitMix64,
    ) -> Result<Option<GuestInstance<GuestState>>, SandboxError> {
        let mut store = Store::new(engine, GuestState::new(rng, self.limits.memory_bytes));
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(self.limits.fuel_per_activation)
            .map_err(setup)?;
        // Workflows are bounded by fuel, not time: the epoch never interrupts them.
        store.epoch_deadline_trap();
        store.set_epoch_deadline(1 << 40);
        let memory_bytes = self.limits.memory_bytes;
        let fail = |e, s: &Store<GuestState>| {
            trap_error(e, &s.data().stderr, s.data().limiter.hit, 0, memory_bytes)
        };
        let instance = match pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) if pool::exhausted(&e) => return Ok(None),
            Err(e) => return Err(fail(e, &store)),
        };
        // A WASI "reactor" initialises its runtime in `_initialize`, once, before any export.
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            if let Err(e) = init.call(&mut store, ()) {
                return Err(fail(e, &store));
            }
        }
        GuestInstance::new(store, instance, memory_bytes).map(Some)
    }

    /// The replay pool: one slot per replay thread and as many again (a slot is reset while
    /// its thread starts the next history), made on first use. `None` when the activity
    /// pool is turned off (`activity_pool_slots = 0` turns both off) or the host refuses.
    fn replay_pool(&self) -> Option<&pool::ReplayPool> {
        self.replay_pool
            .get_or_init(|| {
                if self.limits.activity_pool_slots == 0 {
                    return None;
                }
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let slots = u32::try_from(cores * 2).unwrap_or(u32::MAX).max(4);
                pool::ReplayPool::new(engine_config(), slots, self.limits.memory_bytes).ok()
            })
            .as_ref()
    }

    /// Reads a module's ABI version and manifest, in a throwaway workflow-mode instance.
    ///
    /// # Errors
    /// [`SandboxError::Abi`] when the version is wrong or the manifest does not decode.
    pub fn read_manifest(&self, loaded: &LoadedModule) -> Result<Manifest, SandboxError> {
        let mut g = self.instantiate(loaded, SplitMix64::new(0))?;
        let f: TypedFunc<(), i32> = g.func(exports::ABI_VERSION)?;
        let version = f.call(&mut g.store, ()).map_err(|e| g.trap(e))? as u32;
        check_abi_version(version)?;
        let f: TypedFunc<(), i64> = g.func(exports::MANIFEST)?;
        let packed = f.call(&mut g.store, ()).map_err(|e| g.trap(e))?;
        let bytes = g.take_buffer(packed as u64)?;
        let manifest: Manifest = pinion_abi::decode(&bytes)
            .map_err(|e| SandboxError::Abi(format!("its manifest does not decode: {e}")))?;
        if manifest.abi_version != version {
            return Err(SandboxError::Abi(format!(
                "its manifest declares ABI version {}, but its `{}` export returns {version}",
                manifest.abi_version,
                exports::ABI_VERSION,
            )));
        }
        Ok(manifest)
    }

    /// A fresh workflow instance whose WASI random is seeded with `seed`.
    ///
    /// # Errors
    /// When instantiation traps (a start function that panics, memory limits).
    pub fn new_workflow(
        &self,
        loaded: &LoadedModule,
        seed: u64,
    ) -> Result<WorkflowInstance, SandboxError> {
        let inner = self.instantiate(loaded, SplitMix64::new(seed ^ 0x5EED))?;
        self.workflow_of(inner)
    }

    /// A workflow instance around an instantiated module: its exports looked up once.
    fn workflow_of(
        &self,
        mut inner: GuestInstance<GuestState>,
    ) -> Result<WorkflowInstance, SandboxError> {
        let activate = inner.func(exports::ACTIVATE)?;
        let query = inner.func(exports::QUERY)?;
        let abi_version = inner.abi_version()?;
        Ok(WorkflowInstance {
            inner,
            activate,
            query,
            fuel: self.limits.fuel_per_activation,
            abi_version,
        })
    }

    /// [`Sandbox::new_workflow`] for replay, in a warm pooled slot of the replay pool when
    /// there is one free (its memory stays mapped and only the pages the last history wrote
    /// are reset), else as `new_workflow` does. The instance must live for one history
    /// only: a slot is held until it drops.
    ///
    /// # Errors
    /// As for [`Sandbox::new_workflow`].
    pub fn new_replay_workflow(
        &self,
        loaded: &LoadedModule,
        seed: u64,
    ) -> Result<WorkflowInstance, SandboxError> {
        let pooled = self.replay_pool().and_then(|pool| {
            pool.prepare(&loaded.pooled_workflow_pre, &loaded.module)
                .map(|pre| (pool, pre))
        });
        let Some((pool, pre)) = pooled else {
            return self.new_workflow(loaded, seed);
        };
        let Some(inner) =
            self.instantiate_on(pool.engine(), pre, SplitMix64::new(seed ^ 0x5EED))?
        else {
            return self.new_workflow(loaded, seed);
        };
        self.workflow_of(inner)
    }
}

/// Guest ABI versions this runtime still runs but a later release will not (see the
/// compatibility promise in docs/abi.md): deploying a module of one is answered with a
/// notice. None today.
pub const DEPRECATED_ABI_VERSIONS: &[u32] = &[];

/// The notice for deploying a module of ABI `version`, when that version is deprecated.
pub fn abi_deprecation(version: u32) -> Option<String> {
    deprecation_among(version, DEPRECATED_ABI_VERSIONS)
}

fn deprecation_among(version: u32, deprecated: &[u32]) -> Option<String> {
    deprecated.contains(&version).then(|| {
        format!(
            "guest ABI {version} is deprecated: this pinion still runs it, a later release will not; rebuild the module with pinion-sdk {} (ABI {}) and move its instances there with `pinion upgrade`",
            env!("CARGO_PKG_VERSION"),
            pinion_abi::ABI_VERSION
        )
    })
}

/// Refuses an ABI version this runtime does not run, naming the ones it does.
fn check_abi_version(version: u32) -> Result<(), SandboxError> {
    use pinion_abi::{ABI_VERSION, OLDEST_ABI_VERSION};
    if (OLDEST_ABI_VERSION..=ABI_VERSION).contains(&version) {
        return Ok(());
    }
    let advice = if version > ABI_VERSION {
        "it was built with a newer pinion-sdk; upgrade pinion, or rebuild the module with an SDK of this pinion's version"
    } else {
        "it was built with an SDK this pinion no longer supports; rebuild it with a current pinion-sdk"
    };
    Err(SandboxError::Abi(format!(
        "its ABI version is {version}, this pinion runs versions {OLDEST_ABI_VERSION} to {ABI_VERSION}; {advice}"
    )))
}

/// The settings every engine of the sandbox shares: they decide the compiled code, so the
/// pooled activity engine can load what the main engine compiled.
fn engine_config() -> Config {
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .wasm_multi_memory(false)
        .cranelift_opt_level(OptLevel::Speed);
    config
}

fn setup(e: wasmtime::Error) -> SandboxError {
    SandboxError::Setup(format!("{e:#}"))
}

/// What the sandbox needs to know of a store's state to explain a trap.
pub(crate) trait TrapContext {
    /// What the guest wrote to stderr so far.
    fn stderr(&self) -> Vec<u8>;
    /// Which limit the limiter enforced, if any.
    fn limit_hit(&self) -> Option<Limit>;
}

impl TrapContext for GuestState {
    fn stderr(&self) -> Vec<u8> {
        self.stderr.clone()
    }
    fn limit_hit(&self) -> Option<Limit> {
        self.limiter.hit
    }
}

/// A live instance and the ABI functions every kind uses.
pub(crate) struct GuestInstance<T: 'static> {
    store: Store<T>,
    instance: Instance,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    free: TypedFunc<(i32, i32), ()>,
    memory_bytes: usize,
}

impl<T: TrapContext + 'static> GuestInstance<T> {
    fn new(
        mut store: Store<T>,
        instance: Instance,
        memory_bytes: usize,
    ) -> Result<GuestInstance<T>, SandboxError> {
        let memory = instance
            .get_memory(&mut store, exports::MEMORY)
            .ok_or_else(|| SandboxError::Abi("it exports no memory".into()))?;
        let alloc = instance
            .get_typed_func(&mut store, exports::ALLOC)
            .map_err(|e| {
                SandboxError::Abi(format!("`{}` has the wrong type: {e}", exports::ALLOC))
            })?;
        let free = instance
            .get_typed_func(&mut store, exports::FREE)
            .map_err(|e| {
                SandboxError::Abi(format!("`{}` has the wrong type: {e}", exports::FREE))
            })?;
        Ok(GuestInstance {
            store,
            instance,
            memory,
            alloc,
            free,
            memory_bytes,
        })
    }

    fn func<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
    ) -> Result<TypedFunc<P, R>, SandboxError> {
        self.instance
            .get_typed_func(&mut self.store, name)
            .map_err(|e| {
                SandboxError::Abi(format!("`{name}` is missing or has the wrong type: {e}"))
            })
    }

    /// The ABI version the module declares (checked to be one this runtime runs).
    fn abi_version(&mut self) -> Result<u32, SandboxError> {
        let f: TypedFunc<(), i32> = self.func(exports::ABI_VERSION)?;
        let version = f.call(&mut self.store, ()).map_err(|e| self.trap(e))? as u32;
        check_abi_version(version)?;
        Ok(version)
    }

    fn trap(&self, e: wasmtime::Error) -> SandboxError {
        let s = self.store.data();
        trap_error(e, &s.stderr(), s.limit_hit(), 0, self.memory_bytes)
    }

    /// Copies a guest response out and frees it.
    fn take_buffer(&mut self, packed: u64) -> Result<Vec<u8>, SandboxError> {
        let (ptr, len) = pinion_abi::unpack(packed);
        let out = self.read_response(ptr, len)?;
        self.free
            .call(&mut self.store, (ptr as i32, len as i32))
            .map_err(|e| self.trap(e))?;
        Ok(out)
    }

    /// Copies `ptr..ptr+len` out of guest memory, checking the range before allocating
    /// anything: the length is the guest's word, not the host's to trust.
    fn read_response(&self, ptr: u32, len: u32) -> Result<Vec<u8>, SandboxError> {
        let (start, end) = (ptr as usize, ptr as usize + len as usize);
        self.memory
            .data(&self.store)
            .get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                SandboxError::Abi(format!(
                    "response buffer {ptr:#x}+{len} is outside guest memory"
                ))
            })
    }

    /// Writes `request` into guest memory, calls `f(ptr, len)`, and returns its response.
    fn call_with_buffer(
        &mut self,
        f: &TypedFunc<(i32, i32), i64>,
        request: &[u8],
    ) -> Result<Vec<u8>, SandboxError> {
        let ptr = self
            .alloc
            .call(&mut self.store, request.len() as i32)
            .map_err(|e| self.trap(e))?;
        self.memory
            .write(&mut self.store, ptr as u32 as usize, request)
            .map_err(|_| {
                SandboxError::Abi("pinion_alloc returned a buffer outside guest memory".into())
            })?;
        let packed = f
            .call(&mut self.store, (ptr, request.len() as i32))
            .map_err(|e| self.trap(e))?;
        self.take_buffer(packed as u64)
    }
}

impl<T: TrapContext + Send + 'static> GuestInstance<T> {
    /// [`GuestInstance::call_with_buffer`] for stores whose host functions are async.
    async fn call_with_buffer_async(
        &mut self,
        f: &TypedFunc<(i32, i32), i64>,
        request: &[u8],
    ) -> Result<Vec<u8>, SandboxError> {
        let ptr = match self
            .alloc
            .call_async(&mut self.store, request.len() as i32)
            .await
        {
            Ok(p) => p,
            Err(e) => return Err(self.trap(e)),
        };
        self.memory
            .write(&mut self.store, ptr as u32 as usize, request)
            .map_err(|_| {
                SandboxError::Abi("pinion_alloc returned a buffer outside guest memory".into())
            })?;
        let packed = match f
            .call_async(&mut self.store, (ptr, request.len() as i32))
            .await
        {
            Ok(p) => p as u64,
            Err(e) => return Err(self.trap(e)),
        };
        let (ptr, len) = pinion_abi::unpack(packed);
        let out = self.read_response(ptr, len)?;
        if let Err(e) = self
            .free
            .call_async(&mut self.store, (ptr as i32, len as i32))
            .await
        {
            return Err(self.trap(e));
        }
        Ok(out)
    }
}

/// A workflow instance kept alive between activations.
pub struct WorkflowInstance {
    inner: GuestInstance<GuestState>,
    activate: TypedFunc<(i32, i32), i64>,
    query: TypedFunc<(i32, i32), i64>,
    fuel: u64,
    /// Which ABI version's messages the module speaks.
    abi_version: u32,
}

impl WorkflowInstance {
    /// Applies one activation. The WASI clock reads `activation.now_ms` throughout.
    ///
    /// # Errors
    /// Traps, fuel exhaustion, memory limits, or a completion that does not decode.
    pub fn activate(&mut self, activation: &Activation) -> Result<Completion, SandboxError> {
        self.inner.store.data_mut().now_ms = activation.now_ms;
        self.inner.store.set_fuel(self.fuel).map_err(setup)?;
        let request =
            pinion_abi::encode(activation).map_err(|e| SandboxError::Abi(e.to_string()))?;
        let f = self.activate.clone();
        let out = self
            .inner
            .call_with_buffer(&f, &request)
            .map_err(|e| match e {
                SandboxError::OutOfFuel(_) => SandboxError::OutOfFuel(self.fuel),
                other => other,
            })?;
        let decoded = if self.abi_version == 1 {
            pinion_abi::decode::<pinion_abi::v1::Completion>(&out).map(Completion::from)
        } else {
            pinion_abi::decode::<Completion>(&out)
        };
        decoded.map_err(|e| SandboxError::Abi(format!("completion does not decode: {e}")))
    }

    /// Evaluates a query handler. Whatever the handler does to the host side of the sandbox
    /// is undone: the WASI random stream is restored (a draw would otherwise shift every
    /// later draw of the workflow) and its output is discarded. The guest refuses commands
    /// itself (`QueryResponse::Violated`).
    ///
    /// # Errors
    /// Traps, fuel exhaustion, memory limits, or a response that does not decode. After an
    /// error the instance must be discarded.
    pub fn query(&mut self, request: &QueryRequest) -> Result<QueryResponse, SandboxError> {
        let saved_rng = self.inner.store.data().rng.clone();
        let saved_output = self.take_output();
        self.inner.store.set_fuel(self.fuel).map_err(setup)?;
        let bytes = pinion_abi::encode(request).map_err(|e| SandboxError::Abi(e.to_string()))?;
        let f = self.query.clone();
        let out = self
            .inner
            .call_with_buffer(&f, &bytes)
            .map_err(|e| match e {
                SandboxError::OutOfFuel(_) => SandboxError::OutOfFuel(self.fuel),
                other => other,
            });
        let state = self.inner.store.data_mut();
        state.rng = saved_rng;
        (state.stdout, state.stderr) = saved_output;
        pinion_abi::decode(&out?)
            .map_err(|e| SandboxError::Abi(format!("query response does not decode: {e}")))
    }

    /// Takes what the guest wrote to stdout and stderr since the last call.
    pub fn take_output(&mut self) -> (Vec<u8>, Vec<u8>) {
        let s = self.inner.store.data_mut();
        (std::mem::take(&mut s.stdout), std::mem::take(&mut s.stderr))
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_deprecated_abi_version_gets_a_notice_that_says_what_to_do() {
        assert_eq!(super::deprecation_among(2, &[1]), None);
        let notice = super::deprecation_among(1, &[1]).unwrap();
        assert!(notice.contains("guest ABI 1 is deprecated"), "{notice}");
        assert!(notice.contains("pinion upgrade"), "{notice}");
        for v in super::DEPRECATED_ABI_VERSIONS {
            assert!(*v >= pinion_abi::OLDEST_ABI_VERSION && *v < pinion_abi::ABI_VERSION);
        }
    }

    #[test]
    fn no_more_compiles_run_at_once_than_there_are_slots() {
        let slots = Arc::new(Slots::new(2));
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (slots, now, peak) = (slots.clone(), now.clone(), peak.clone());
                std::thread::spawn(move || {
                    let _slot = slots.take();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "{peak} compiles at once");
    }
}
