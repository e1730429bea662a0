//! Activity instances: `wasmtime-wasi` preview 1 plus what the operator granted, run async.
//!
//! Each attempt gets a fresh instance of its pinned module in a store of its own (in a
//! pooled slot, reset to the module's initial state, when one is free: [`super::pool`]):
//!
//! | capability | what the attempt gets |
//! |---|---|
//! | clocks, random | real ones (`wasmtime-wasi`'s defaults) |
//! | files | the granted directories, preopened through `wasmtime-wasi` and cap-std, read-only or read-write; nothing else |
//! | environment | the granted variables and secrets; nothing else |
//! | stdout, stderr | captured (64 KiB each) as log records; secrets redacted |
//! | sockets, args, stdin | none |
//! | `pinion::http_send` | requests to the granted URL patterns ([`super::http`]) |
//! | `pinion::heartbeat` | records progress in the attempt's [`AttemptControl`]; answers whether to stop |
//!
//! The attempt runs with `call_async`: a request waiting on the network parks the attempt's
//! future, not a thread, and a busy activity yields at every epoch tick. Its start-to-close
//! timeout and its heartbeat timeout race the attempt's future; when one fires first the
//! future is dropped, which stops the guest wherever it is. What the attempt wrote before
//! is kept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pinion_abi::{exports, imports, ActivityInvocation, ActivityOutcome, HttpRequest};
use wasmtime::{Caller, Extern, Linker, Store, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::http::{self, Asker, HttpClient};
use super::limiter::GuestLimiter;
use super::MAX_CAPTURE;
use super::{setup, trap_error, GuestInstance, LoadedModule, Sandbox, SandboxError, TrapContext};
use crate::config::{Capabilities, DirMode};

/// Largest HTTP request an activity may send (URL, headers and body, encoded).
pub const MAX_HTTP_REQUEST: usize = 16 << 20;

/// Largest heartbeat details an activity may record.
pub const MAX_HEARTBEAT_DETAILS: usize = 1 << 20;

/// Longest time between two writes of an attempt's heartbeat details to the database.
pub const MAX_HEARTBEAT_PERSIST_INTERVAL: Duration = Duration::from_secs(30);

/// What an attempt shares with whoever runs it: the heartbeats it records, and whether it
/// should stop. The runner keeps a handle to cancel it; the heartbeat host function records
/// into it and hands details to `persist` at most every `persist_every` (the first one at
/// once), so a crash loses little progress and the database is not written on every beat.
pub struct AttemptControl {
    cancelled: AtomicBool,
    beat: Mutex<Beat>,
    heartbeat_timeout: Option<Duration>,
    persist_every: Duration,
    persist: Box<dyn Fn(Vec<u8>) + Send + Sync>,
}

struct Beat {
    last: Instant,
    details: Option<Vec<u8>>,
    persisted_at: Option<Instant>,
}

impl AttemptControl {
    /// A control for an attempt starting now. `persist` is called (on the attempt's task,
    /// so it must not block) with details to write durably.
    pub fn new(
        heartbeat_timeout: Option<Duration>,
        persist: impl Fn(Vec<u8>) + Send + Sync + 'static,
    ) -> AttemptControl {
        let persist_every = heartbeat_timeout
            .map(|t| t.mul_f64(0.8))
            .unwrap_or(MAX_HEARTBEAT_PERSIST_INTERVAL)
            .min(MAX_HEARTBEAT_PERSIST_INTERVAL);
        AttemptControl {
            cancelled: AtomicBool::new(false),
            beat: Mutex::new(Beat {
                last: now(),
                details: None,
                persisted_at: None,
            }),
            heartbeat_timeout,
            persist_every,
            persist: Box::new(persist),
        }
    }

    /// Asks the attempt to stop: its next heartbeat answers "cancelled".
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// The details of the attempt's last heartbeat.
    pub fn last_details(&self) -> Option<Vec<u8>> {
        self.beat.lock().expect("beat lock").details.clone()
    }

    /// Records a heartbeat, handing the details to `persist` when a write is due.
    fn record(&self, details: Vec<u8>) {
        let at = now();
        let mut beat = self.beat.lock().expect("beat lock");
        beat.last = at;
        let due = beat
            .persisted_at
            .is_none_or(|p| at.duration_since(p) >= self.persist_every);
        if due {
            beat.persisted_at = Some(at);
        }
        beat.details = Some(details.clone());
        drop(beat);
        if due {
            (self.persist)(details);
        }
    }

    /// Resolves when the attempt has gone its heartbeat timeout without a heartbeat; never,
    /// when it has none.
    async fn silence(&self) -> Duration {
        let Some(timeout) = self.heartbeat_timeout else {
            return std::future::pending().await;
        };
        loop {
            let last = self.beat.lock().expect("beat lock").last;
            let due = last + timeout;
            if now() >= due {
                return timeout;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

#[allow(clippy::disallowed_methods)] // heartbeats are measured in real time
fn now() -> Instant {
    Instant::now()
}

/// Host state of one activity attempt.
pub struct ActivityState {
    wasi: WasiP1Ctx,
    limiter: GuestLimiter,
    stderr: Capture,
    caps: Arc<Capabilities>,
    http: HttpClient,
    deadline: Instant,
    activity_type: String,
    module: String,
    /// The encoded outcome of the last `http_send`, until `take_staged` copies it.
    staged: Option<Vec<u8>>,
    control: Arc<AttemptControl>,
}

impl TrapContext for ActivityState {
    fn stderr(&self) -> Vec<u8> {
        self.stderr.snapshot()
    }
    fn limit_hit(&self) -> Option<super::limiter::Limit> {
        self.limiter.hit
    }
}

/// Output captured from an attempt: shared with the WASI context, so it survives the
/// attempt's store being dropped by a timeout. Writes past [`MAX_CAPTURE`] are counted as
/// written and dropped, as a full log would: a chatty activity must not fail on it.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// What was written.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.lock().expect("capture lock"))
    }

    fn append(&self, data: &[u8]) {
        let mut buf = self.0.lock().expect("capture lock");
        let room = MAX_CAPTURE.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
    }
}

impl wasmtime_wasi::cli::IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Result codes of the `pinion` host functions (negative: the call was refused).
mod code {
    pub const BAD_REQUEST: i32 = -1;
    pub const OUT_OF_BOUNDS: i32 = -2;
    pub const TOO_LARGE: i32 = -3;
    pub const NOTHING_STAGED: i32 = -4;
    pub const GO_ON: i32 = 0;
    pub const STOP: i32 = 1;
}

fn guest_memory(caller: &mut Caller<'_, ActivityState>) -> Option<wasmtime::Memory> {
    match caller.get_export(exports::MEMORY) {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

/// Defines `wasmtime-wasi`'s preview 1 and pinion's host functions for activities.
pub fn add_to_linker(linker: &mut Linker<ActivityState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_async(linker, |s: &mut ActivityState| &mut s.wasi)?;
    linker.func_wrap_async(
        imports::MODULE,
        imports::HTTP_SEND,
        |mut caller: Caller<'_, ActivityState>, (ptr, len): (i32, i32)| {
            Box::new(async move {
                // Bounds and size first: nothing is allocated for a length the guest made up.
                if len < 0 || len as usize > MAX_HTTP_REQUEST {
                    return Ok(code::TOO_LARGE);
                }
                let Some(mem) = guest_memory(&mut caller) else {
                    return Ok(code::OUT_OF_BOUNDS);
                };
                let (start, end) = (ptr as u32 as usize, ptr as u32 as usize + len as usize);
                let Some(bytes) = mem.data(&caller).get(start..end) else {
                    return Ok(code::OUT_OF_BOUNDS);
                };
                let Ok(request) = pinion_abi::decode::<HttpRequest>(bytes) else {
                    return Ok(code::BAD_REQUEST);
                };
                let s = caller.data();
                let (client, caps, deadline) = (s.http.clone(), s.caps.clone(), s.deadline);
                let (activity_type, module) = (s.activity_type.clone(), s.module.clone());
                let asker = Asker {
                    activity_type: &activity_type,
                    module: &module,
                };
                let outcome = http::send(&client, &caps, &asker, request, deadline).await;
                let encoded = pinion_abi::encode(&outcome)
                    .map_err(|e| wasmtime::Error::msg(format!("encoding the HTTP outcome: {e}")))?;
                let n = encoded.len() as i32;
                caller.data_mut().staged = Some(encoded);
                Ok(n)
            })
        },
    )?;
    linker.func_wrap(
        imports::MODULE,
        imports::HEARTBEAT,
        |mut caller: Caller<'_, ActivityState>, ptr: i32, len: i32| -> i32 {
            if len < 0 || len as usize > MAX_HEARTBEAT_DETAILS {
                return code::TOO_LARGE;
            }
            let Some(mem) = guest_memory(&mut caller) else {
                return code::OUT_OF_BOUNDS;
            };
            let (start, end) = (ptr as u32 as usize, ptr as u32 as usize + len as usize);
            let Some(bytes) = mem.data(&caller).get(start..end) else {
                return code::OUT_OF_BOUNDS;
            };
            if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
                return code::BAD_REQUEST; // details are JSON: they are stored and shown as such
            }
            let bytes = bytes.to_vec();
            let s = caller.data();
            s.control.record(s.caps.redact_bytes(bytes));
            if s.control.is_cancelled() {
                code::STOP
            } else {
                code::GO_ON
            }
        },
    )?;
    linker.func_wrap(
        imports::MODULE,
        imports::TAKE_STAGED,
        |mut caller: Caller<'_, ActivityState>, ptr: i32, len: i32| -> i32 {
            let Some(staged) = caller.data_mut().staged.take() else {
                return code::NOTHING_STAGED;
            };
            if len < 0 || len as usize != staged.len() {
                return code::BAD_REQUEST;
            }
            let Some(mem) = guest_memory(&mut caller) else {
                return code::OUT_OF_BOUNDS;
            };
            match mem.write(&mut caller, ptr as u32 as usize, &staged) {
                Ok(()) => 0,
                Err(_) => code::OUT_OF_BOUNDS,
            }
        },
    )?;
    Ok(())
}

/// One attempt's outcome and what it wrote, secrets redacted.
pub struct AttemptRun {
    /// How the attempt ended.
    pub result: Result<ActivityOutcome, SandboxError>,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
}

impl Sandbox {
    /// Runs one activity attempt in a fresh instance with real clocks and randomness and
    /// the capabilities `caps` grants, within `timeout` and the heartbeat timeout of
    /// `control`. Whatever the attempt returns, writes or heartbeats has the granted secrets
    /// redacted.
    pub async fn run_activity(
        &self,
        loaded: &LoadedModule,
        module_hash: &str,
        invocation: &ActivityInvocation,
        timeout: Duration,
        caps: Arc<Capabilities>,
        control: Arc<AttemptControl>,
    ) -> AttemptRun {
        let (stdout, stderr) = (Capture::default(), Capture::default());
        let attempt = self.attempt(
            loaded,
            module_hash,
            invocation,
            timeout,
            &caps,
            &stdout,
            &stderr,
            &control,
        );
        let result = tokio::select! {
            r = attempt => r,
            _ = tokio::time::sleep(timeout) => Err(SandboxError::Timeout(timeout)),
            t = control.silence() => Err(SandboxError::HeartbeatTimeout(t)),
        };
        let result = result
            .map(|o| redact_outcome(&caps, o))
            .map_err(|e| redact_error(&caps, e));
        AttemptRun {
            result,
            stdout: caps.redact_bytes(stdout.take()),
            stderr: caps.redact_bytes(stderr.take()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        loaded: &LoadedModule,
        module_hash: &str,
        invocation: &ActivityInvocation,
        timeout: Duration,
        caps: &Arc<Capabilities>,
        stdout: &Capture,
        stderr: &Capture,
        control: &Arc<AttemptControl>,
    ) -> Result<ActivityOutcome, SandboxError> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        for (k, v) in &caps.env {
            wasi.env(k, v);
        }
        for (k, v) in &caps.secrets {
            wasi.env(k, v.expose());
        }
        for d in &caps.dirs {
            let perms = match d.mode {
                DirMode::Ro => FsPerms::ReadOnly,
                DirMode::Rw => FsPerms::ReadWrite,
            };
            wasi.preopened_dir(&d.host, &d.guest, perms).map_err(|e| {
                SandboxError::Setup(format!(
                    "cannot open the granted directory {} for {}: {e:#}",
                    d.host.display(),
                    d.guest
                ))
            })?;
        }
        #[allow(clippy::disallowed_methods)] // an activity's deadline is real time
        let deadline = Instant::now() + timeout;
        let memory_bytes = self.limits.memory_bytes;
        let state = ActivityState {
            wasi: wasi.build_p1(),
            limiter: GuestLimiter::new(memory_bytes),
            stderr: stderr.clone(),
            caps: caps.clone(),
            http: self.http.clone(),
            deadline,
            activity_type: invocation.activity_type.clone(),
            module: module_hash.to_string(),
            staged: None,
            control: control.clone(),
        };
        let fail = |e, s: &Store<ActivityState>| {
            trap_error(
                e,
                &s.data().stderr.snapshot(),
                s.data().limiter.hit,
                0,
                memory_bytes,
            )
        };
        // A pooled slot when one is free; otherwise an instance of its own, as before.
        let pooled = self
            .activity_pool
            .as_ref()
            .and_then(|p| Some((p, p.prepare(&loaded.pooled_activity_pre, &loaded.module)?)));
        let (mut store, instance) = match pooled {
            Some((pool, pre)) => {
                let mut store = activity_store(pool.engine(), state)?;
                match pre.instantiate_async(&mut store).await {
                    Ok(i) => (store, i),
                    Err(e) if super::pool::exhausted(&e) => {
                        let mut state = store.into_data();
                        state.limiter = GuestLimiter::new(memory_bytes);
                        let mut store = activity_store(&self.engine, state)?;
                        match loaded.activity_pre.instantiate_async(&mut store).await {
                            Ok(i) => (store, i),
                            Err(e) => return Err(fail(e, &store)),
                        }
                    }
                    Err(e) => return Err(fail(e, &store)),
                }
            }
            None => {
                let mut store = activity_store(&self.engine, state)?;
                match loaded.activity_pre.instantiate_async(&mut store).await {
                    Ok(i) => (store, i),
                    Err(e) => return Err(fail(e, &store)),
                }
            }
        };
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            if let Err(e) = init.call_async(&mut store, ()).await {
                return Err(fail(e, &store));
            }
        }
        let mut g = GuestInstance::new(store, instance, memory_bytes)?;
        let f: TypedFunc<(i32, i32), i64> = g.func(exports::RUN_ACTIVITY)?;
        let version: TypedFunc<(), i32> = g.func(exports::ABI_VERSION)?;
        let request = match version.call_async(&mut g.store, ()).await {
            // A version-1 module reads the invocation without heartbeat details.
            Ok(1) => pinion_abi::encode(&pinion_abi::v1::ActivityInvocation::from(invocation)),
            Ok(_) => pinion_abi::encode(invocation),
            Err(e) => return Err(g.trap(e)),
        }
        .map_err(|e| SandboxError::Abi(e.to_string()))?;
        let out = g.call_with_buffer_async(&f, &request).await?;
        pinion_abi::decode::<ActivityOutcome>(&out)
            .map_err(|e| SandboxError::Abi(format!("activity outcome does not decode: {e}")))
    }
}

/// A store for one attempt on `engine`: its limiter, unlimited fuel (an attempt is bounded
/// by time), and a yield to tokio at every epoch tick so a busy activity shares the threads.
fn activity_store(
    engine: &wasmtime::Engine,
    state: ActivityState,
) -> Result<Store<ActivityState>, SandboxError> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_fuel(u64::MAX).map_err(setup)?;
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    Ok(store)
}

impl Capture {
    /// A copy of what was written so far.
    pub fn snapshot(&self) -> Vec<u8> {
        self.0.lock().expect("capture lock").clone()
    }
}

fn redact_outcome(caps: &Capabilities, o: ActivityOutcome) -> ActivityOutcome {
    if caps.secrets.is_empty() {
        return o;
    }
    match o {
        ActivityOutcome::Completed(bytes) => ActivityOutcome::Completed(caps.redact_bytes(bytes)),
        ActivityOutcome::Failed(mut f) => {
            f.message = caps.redact(&f.message);
            f.kind = caps.redact(&f.kind);
            ActivityOutcome::Failed(f)
        }
    }
}

fn redact_error(caps: &Capabilities, e: SandboxError) -> SandboxError {
    if caps.secrets.is_empty() {
        return e;
    }
    match e {
        SandboxError::Trap { message, stderr } => SandboxError::Trap {
            message: caps.redact(&message),
            stderr: caps.redact(&stderr),
        },
        SandboxError::Setup(m) => SandboxError::Setup(caps.redact(&m)),
        SandboxError::Abi(m) => SandboxError::Abi(caps.redact(&m)),
        other => other,
    }
}
