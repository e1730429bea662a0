//! The wasmtime sandbox: one engine, deterministic workflow instances, activity instances.
//!
//! # Determinism is configured here
//!
//! * NaN canonicalisation on, threads off, relaxed SIMD in deterministic mode: the same
//!   wasm produces the same bits on every machine.
//! * Fuel: each workflow activation gets [`SandboxLimits::fuel_per_activation`]; an infinite
//!   loop becomes a deterministic `OutOfFuel` error instead of a hung worker.
//! * Memory: each instance is limited to [`SandboxLimits::memory_bytes`].
//! * WASI: the module's view of the world is [`wasi`]'s table: logical clock and seeded PRNG
//!   for workflows, real ones for activities, no files, environment or sockets.
//! * Epoch interruption implements activity start-to-close timeouts: a ticker thread bumps
//!   the epoch every [`EPOCH_TICK`], an activity store traps after its deadline.

pub mod wasi;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pinion_abi::{
    exports, Activation, ActivityInvocation, ActivityOutcome, Completion, Manifest, QueryRequest,
    QueryResponse,
};
use wasmtime::{
    Config, Engine, Instance, InstancePre, Linker, Memory, Module, OptLevel, Store, StoreLimits,
    StoreLimitsBuilder, Trap, TypedFunc,
};

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
    /// An activity attempt ran past its start-to-close timeout.
    #[error("activity ran past its start-to-close timeout of {0:?}")]
    Timeout(Duration),
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
/// timeout 5 minutes when the workflow sets none.
#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// Fuel (roughly, wasm instructions) one workflow activation may use.
    pub fuel_per_activation: u64,
    /// Linear memory limit per instance, in bytes.
    pub memory_bytes: usize,
    /// Start-to-close timeout of an activity whose options set none.
    pub default_activity_timeout: Duration,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            fuel_per_activation: 1_000_000_000,
            memory_bytes: 128 << 20,
            default_activity_timeout: Duration::from_secs(300),
        }
    }
}

/// What an instance is for; decides what its WASI clock and random return.
#[derive(Debug)]
pub enum GuestKind {
    /// A workflow: logical time and seeded randomness.
    Workflow {
        /// The current activation's logical time.
        now_ms: u64,
        /// Deterministic random source for `random_get`.
        rng: SplitMix64,
    },
    /// An activity: real time and randomness, until its start-to-close deadline.
    Activity {
        /// When the attempt's timeout expires.
        deadline: std::time::Instant,
    },
}

/// Per-instance host state.
#[derive(Debug)]
pub struct GuestState {
    limits: StoreLimits,
    /// Clock and random behaviour.
    pub kind: GuestKind,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
}

/// Captured output above this size is truncated: logs are for people, not for bulk data.
const MAX_CAPTURE: usize = 64 << 10;

impl GuestState {
    fn new(kind: GuestKind, memory_bytes: usize) -> GuestState {
        GuestState {
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(1)
                .build(),
            kind,
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

/// A module compiled and linked, ready to instantiate cheaply.
#[derive(Clone)]
pub struct LoadedModule {
    module: Module,
    pre: InstancePre<GuestState>,
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
    limits: SandboxLimits,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn trap_error(
    e: wasmtime::Error,
    state: &GuestState,
    fuel_budget: u64,
    memory_bytes: usize,
) -> SandboxError {
    let stderr = String::from_utf8_lossy(&state.stderr).into_owned();
    if let Some(trap) = e.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel => return SandboxError::OutOfFuel(fuel_budget),
            Trap::Interrupt => return SandboxError::Timeout(Duration::ZERO),
            _ => {}
        }
    }
    // Allocation failure inside the guest after `memory.grow` was refused shows up as an
    // abort with this message from Rust's allocator.
    if stderr.contains("memory allocation of") {
        return SandboxError::MemoryLimit(memory_bytes);
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
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            .cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| SandboxError::Setup(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(|e| SandboxError::Setup(format!("{e:#}")))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (stop, ticking) = (ticker_stop.clone(), engine.clone());
        std::thread::Builder::new()
            .name("pinion-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| SandboxError::Setup(e.to_string()))?;
        Ok(Sandbox {
            engine,
            linker,
            limits,
            ticker_stop,
        })
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
        Module::new(&self.engine, bytes).map_err(|e| SandboxError::InvalidWasm(format!("{e:#}")))
    }

    /// Links a compiled module: checks its imports and exports against the ABI.
    ///
    /// # Errors
    /// [`SandboxError::Abi`] naming the offending import or missing export.
    pub fn load(&self, module: Module) -> Result<LoadedModule, SandboxError> {
        for import in module.imports() {
            if import.module() != wasi::WASI {
                return Err(SandboxError::Abi(format!(
                    "it imports `{}::{}`; pinion provides only `{}` functions",
                    import.module(),
                    import.name(),
                    wasi::WASI
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
        Ok(LoadedModule { module, pre })
    }

    fn instantiate(
        &self,
        loaded: &LoadedModule,
        kind: GuestKind,
    ) -> Result<GuestInstance, SandboxError> {
        let workflow = matches!(kind, GuestKind::Workflow { .. });
        let mut store = Store::new(
            &self.engine,
            GuestState::new(kind, self.limits.memory_bytes),
        );
        store.limiter(|s| &mut s.limits);
        store
            .set_fuel(if workflow {
                self.limits.fuel_per_activation
            } else {
                u64::MAX
            })
            .map_err(setup)?;
        store.epoch_deadline_trap();
        // An activity's whole attempt, `_initialize` included, is bounded by its timeout;
        // workflows are bounded by fuel instead.
        let ticks = match &store.data().kind {
            #[allow(clippy::disallowed_methods)] // an activity's deadline is real time
            GuestKind::Activity { deadline } => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                (left.as_millis() / EPOCH_TICK.as_millis()) as u64 + 2
            }
            GuestKind::Workflow { .. } => 1 << 40,
        };
        store.set_epoch_deadline(ticks);
        let instance = loaded
            .pre
            .instantiate(&mut store)
            .map_err(|e| trap_error(e, store.data(), 0, self.limits.memory_bytes))?;
        // A WASI "reactor" initialises its runtime in `_initialize`, once, before any export.
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ())
                .map_err(|e| trap_error(e, store.data(), 0, self.limits.memory_bytes))?;
        }
        GuestInstance::new(store, instance, self.limits.memory_bytes)
    }

    /// Reads a module's ABI version and manifest, in a throwaway workflow-mode instance.
    ///
    /// # Errors
    /// [`SandboxError::Abi`] when the version is wrong or the manifest does not decode.
    pub fn read_manifest(&self, loaded: &LoadedModule) -> Result<Manifest, SandboxError> {
        let mut g = self.instantiate(
            loaded,
            GuestKind::Workflow {
                now_ms: 0,
                rng: SplitMix64::new(0),
            },
        )?;
        let f: TypedFunc<(), i32> = g.func(exports::ABI_VERSION)?;
        let version = f.call(&mut g.store, ()).map_err(|e| g.trap(e))? as u32;
        if version != pinion_abi::ABI_VERSION {
            return Err(SandboxError::Abi(format!(
                "its ABI version is {version}, this pinion speaks version {}; rebuild it with a matching pinion-sdk",
                pinion_abi::ABI_VERSION
            )));
        }
        let f: TypedFunc<(), i64> = g.func(exports::MANIFEST)?;
        let packed = f.call(&mut g.store, ()).map_err(|e| g.trap(e))?;
        let bytes = g.take_buffer(packed as u64)?;
        let manifest: Manifest = pinion_abi::decode(&bytes)
            .map_err(|e| SandboxError::Abi(format!("its manifest does not decode: {e}")))?;
        if manifest.abi_version != pinion_abi::ABI_VERSION {
            return Err(SandboxError::Abi(format!(
                "its manifest declares ABI version {}, this pinion speaks version {}",
                manifest.abi_version,
                pinion_abi::ABI_VERSION
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
        let mut inner = self.instantiate(
            loaded,
            GuestKind::Workflow {
                now_ms: 0,
                rng: SplitMix64::new(seed ^ 0x5EED),
            },
        )?;
        let activate = inner.func(exports::ACTIVATE)?;
        let query = inner.func(exports::QUERY)?;
        Ok(WorkflowInstance {
            inner,
            activate,
            query,
            fuel: self.limits.fuel_per_activation,
        })
    }

    /// Runs one activity attempt in a fresh instance with real clocks and randomness.
    /// Returns the outcome and what the activity wrote to stdout and stderr.
    ///
    /// # Errors
    /// [`SandboxError::Timeout`] past `timeout`; [`SandboxError::Trap`] on a panic.
    pub fn run_activity(
        &self,
        loaded: &LoadedModule,
        invocation: &ActivityInvocation,
        timeout: Duration,
    ) -> (Result<ActivityOutcome, SandboxError>, Vec<u8>, Vec<u8>) {
        #[allow(clippy::disallowed_methods)] // an activity's deadline is real time
        let deadline = std::time::Instant::now() + timeout;
        let mut g = match self.instantiate(loaded, GuestKind::Activity { deadline }) {
            Ok(g) => g,
            Err(e) => return (Err(e), Vec::new(), Vec::new()),
        };
        let result = (|| {
            let f: TypedFunc<(i32, i32), i64> = g.func(exports::RUN_ACTIVITY)?;
            let request =
                pinion_abi::encode(invocation).map_err(|e| SandboxError::Abi(e.to_string()))?;
            let out = g.call_with_buffer(&f, &request).map_err(|e| match e {
                SandboxError::Timeout(_) => SandboxError::Timeout(timeout),
                other => other,
            })?;
            pinion_abi::decode::<ActivityOutcome>(&out)
                .map_err(|e| SandboxError::Abi(format!("activity outcome does not decode: {e}")))
        })();
        let state = g.store.into_data();
        (result, state.stdout, state.stderr)
    }
}

fn setup(e: wasmtime::Error) -> SandboxError {
    SandboxError::Setup(format!("{e:#}"))
}

/// A live instance and the ABI functions every kind uses.
struct GuestInstance {
    store: Store<GuestState>,
    instance: Instance,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    free: TypedFunc<(i32, i32), ()>,
    memory_bytes: usize,
}

impl GuestInstance {
    fn new(
        mut store: Store<GuestState>,
        instance: Instance,
        memory_bytes: usize,
    ) -> Result<GuestInstance, SandboxError> {
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

    fn trap(&self, e: wasmtime::Error) -> SandboxError {
        let fuel = self.store.data();
        trap_error(e, fuel, 0, self.memory_bytes)
    }

    /// Copies a guest response out and frees it.
    fn take_buffer(&mut self, packed: u64) -> Result<Vec<u8>, SandboxError> {
        let (ptr, len) = pinion_abi::unpack(packed);
        let mut out = vec![0u8; len as usize];
        self.memory
            .read(&self.store, ptr as usize, &mut out)
            .map_err(|_| {
                SandboxError::Abi(format!(
                    "response buffer {ptr:#x}+{len} is outside guest memory"
                ))
            })?;
        self.free
            .call(&mut self.store, (ptr as i32, len as i32))
            .map_err(|e| self.trap(e))?;
        Ok(out)
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

/// A workflow instance kept alive between activations.
pub struct WorkflowInstance {
    inner: GuestInstance,
    activate: TypedFunc<(i32, i32), i64>,
    query: TypedFunc<(i32, i32), i64>,
    fuel: u64,
}

impl WorkflowInstance {
    /// Applies one activation. The WASI clock reads `activation.now_ms` throughout.
    ///
    /// # Errors
    /// Traps, fuel exhaustion, memory limits, or a completion that does not decode.
    pub fn activate(&mut self, activation: &Activation) -> Result<Completion, SandboxError> {
        if let GuestKind::Workflow { now_ms, .. } = &mut self.inner.store.data_mut().kind {
            *now_ms = activation.now_ms;
        }
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
        pinion_abi::decode(&out)
            .map_err(|e| SandboxError::Abi(format!("completion does not decode: {e}")))
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
        let saved_rng = match &self.inner.store.data().kind {
            GuestKind::Workflow { rng, .. } => Some(rng.clone()),
            GuestKind::Activity { .. } => None,
        };
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
        if let (GuestKind::Workflow { rng, .. }, Some(saved)) = (&mut state.kind, saved_rng) {
            *rng = saved;
        }
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
