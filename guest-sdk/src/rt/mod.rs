//! The SDK's runtime behind the exports that [`export!`](crate::export) generates. Not a
//! public API: the macro's expansion and the SDK's own tests are its only callers, and it
//! may change in any release.
//!
//! The macro stays thin on purpose: it only builds a static [`Module`] table (names and
//! monomorphised `fn` pointers) and forwards each export here, so all logic is ordinary,
//! testable code that compiles on the host as well as on wasm.
//!
//! # Memory ownership across the boundary
//!
//! | buffer | allocated by | freed by |
//! | --- | --- | --- |
//! | request (activation, invocation) | host, through `pinion_alloc(len)` | the SDK, inside the entry point, after decoding |
//! | response (manifest, completion, outcome) | the SDK: a leaked `Box<[u8]>` (capacity == len) | host, through `pinion_free(ptr, len)` after reading |
//!
//! Entry points return the response as `(ptr << 32) | len` ([`pinion_abi::pack`]). A
//! zero-length buffer has a dangling pointer; freeing it with length 0 is a no-op, so the
//! host may treat every buffer alike. The host must not free a request buffer it passed to
//! an entry point, and must free every response exactly once.

mod activity;
mod instance;
pub(crate) mod state;

use std::cell::RefCell;

use pinion_abi::{
    Activation, ActivityInvocation, ActivityOutcome, Completion, Failure, Manifest, QueryRequest,
    QueryResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use activity::{invoke_activity, run_activity, ActivityFn};
pub use instance::{Instance, RootFuture, WorkflowResult};

use crate::activity::ActivityContext;
use crate::context::WorkflowContext;
use crate::error::{ActivityError, WorkflowError};

/// Builds a workflow's root future from its context and raw input; `Err` carries the
/// deserialisation error when the input does not fit the workflow's input type.
pub type StartFn = fn(WorkflowContext, &[u8]) -> Result<RootFuture, String>;

/// Runs an activity on raw input, returning raw output.
pub type RunFn = fn(ActivityContext, &[u8]) -> Result<Vec<u8>, ActivityError>;

/// One registered workflow type.
#[derive(Debug)]
pub struct WorkflowDef {
    /// Registered name (`Job::Start::workflow_type`).
    pub name: &'static str,
    /// Entry point.
    pub start: StartFn,
}

/// One registered activity type.
#[derive(Debug)]
pub struct ActivityDef {
    /// Registered name (`Command::ScheduleActivity::activity_type`).
    pub name: &'static str,
    /// Entry point.
    pub run: RunFn,
}

/// Everything a module registered with `export!`.
#[derive(Debug)]
pub struct Module {
    /// `Manifest::version_label`.
    pub version_label: Option<&'static str>,
    /// Workflow types, in registration order.
    pub workflows: &'static [WorkflowDef],
    /// Activity types, in registration order.
    pub activities: &'static [ActivityDef],
}

/// The module's manifest.
pub fn manifest(module: &Module) -> Manifest {
    Manifest {
        abi_version: pinion_abi::ABI_VERSION,
        sdk_version: env!("CARGO_PKG_VERSION").into(),
        workflows: module.workflows.iter().map(|w| w.name.into()).collect(),
        activities: module.activities.iter().map(|a| a.name.into()).collect(),
        version_label: module.version_label.map(Into::into),
    }
}

/// Starts workflow function `f`: decodes the input, calls `f`, and boxes the future with its
/// output encoded to JSON. The macro's glue, generic per workflow.
///
/// # Errors
/// The input's deserialisation error, as text.
pub fn start_workflow<F, Fut, In, Out>(
    ctx: WorkflowContext,
    input: &[u8],
    f: F,
) -> Result<RootFuture, String>
where
    F: FnOnce(WorkflowContext, In) -> Fut,
    Fut: std::future::Future<Output = Result<Out, WorkflowError>> + 'static,
    In: DeserializeOwned,
    Out: Serialize,
{
    let input: In = decode_json(input).map_err(|e| e.to_string())?;
    let fut = f(ctx, input);
    Ok(Box::pin(async move {
        let output = fut.await?;
        serde_json::to_vec(&output).map_err(|e| {
            WorkflowError::new(
                "InvalidOutput",
                format!("the workflow result does not serialise to JSON: {e}"),
            )
        })
    }))
}

/// Decodes a JSON payload. An empty payload reads as `null`, so a host that sends no input
/// at all works with workflows and activities whose input is `()` or an `Option`.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    serde_json::from_slice(if bytes.is_empty() { b"null" } else { bytes })
}

thread_local! {
    /// The workflow instance this wasm instance hosts. One wasm instance is one workflow
    /// instance; the host recreates the wasm instance (and replays) after eviction.
    static INSTANCE: RefCell<Instance> = const { RefCell::new(Instance::new()) };
}

/// Encodes a message. postcard rejects nothing `pinion_abi` defines; were it ever to, the
/// empty response makes the host report an undecodable reply instead of the guest trapping.
fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    pinion_abi::encode(message).unwrap_or_default()
}

/// Decodes an activation, applies it to this wasm instance's workflow, encodes the completion.
pub fn activate_bytes(module: &Module, request: &[u8]) -> Vec<u8> {
    let completion = match pinion_abi::decode::<Activation>(request) {
        Ok(activation) => {
            INSTANCE.with_borrow_mut(|instance| instance.activate(module, activation))
        }
        Err(e) => Completion::Error(format!(
            "malformed activation ({} bytes): {e}",
            request.len()
        )),
    };
    encode(&completion)
}

/// Decodes a query request, evaluates it against this wasm instance's workflow, encodes the
/// response.
pub fn query_bytes(request: &[u8]) -> Vec<u8> {
    let response = match pinion_abi::decode::<QueryRequest>(request) {
        Ok(query) => INSTANCE.with_borrow_mut(|instance| instance.query(query)),
        Err(e) => QueryResponse::Failed(Failure {
            kind: "InvalidQuery".into(),
            message: format!("malformed query request ({} bytes): {e}", request.len()),
            non_retryable: true,
            attempts: 0,
        }),
    };
    encode(&response)
}

/// Decodes an invocation, runs the activity, encodes the outcome.
pub fn run_activity_bytes(module: &Module, request: &[u8]) -> Vec<u8> {
    let outcome = match pinion_abi::decode::<ActivityInvocation>(request) {
        Ok(invocation) => run_activity(module, invocation),
        Err(e) => ActivityOutcome::Failed(Failure {
            kind: "InvalidInvocation".into(),
            message: format!(
                "malformed activity invocation ({} bytes): {e}",
                request.len()
            ),
            non_retryable: true,
            attempts: 0,
        }),
    };
    encode(&outcome)
}

/// Encoded manifest.
pub fn manifest_bytes(module: &Module) -> Vec<u8> {
    encode(&manifest(module))
}

// ---- Raw exports. Guest pointers are 32-bit wasm addresses carried in `i32`s. ----

/// `pinion_abi_version`.
pub fn abi_version() -> i32 {
    pinion_abi::ABI_VERSION as i32
}

/// `pinion_alloc`: a zeroed buffer of exactly `len` bytes, owned by the caller from now on.
pub fn alloc(len: i32) -> i32 {
    let buffer = vec![0u8; usize::try_from(len).unwrap_or(0)].into_boxed_slice();
    Box::into_raw(buffer).cast::<u8>() as usize as i32
}

/// `pinion_free`: frees a buffer from `pinion_alloc` or a response.
///
/// # Safety
/// `(ptr, len)` must be a buffer obtained from [`alloc`] or returned by an entry point, with
/// exactly that length, not yet freed.
pub unsafe fn free(ptr: i32, len: i32) {
    // SAFETY: forwarded to the caller.
    drop(unsafe { take(ptr, len) });
}

/// Reclaims ownership of a guest buffer.
///
/// # Safety
/// As for [`free`].
unsafe fn take(ptr: i32, len: i32) -> Box<[u8]> {
    let len = len as u32 as usize;
    if len == 0 {
        return Box::default();
    }
    let data = ptr as u32 as usize as *mut u8;
    // SAFETY: the caller guarantees this is a live `Box<[u8]>` of exactly `len` bytes, which
    // is what both `alloc` and `respond` hand out.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(data, len)) }
}

/// Leaks a response and packs its address for the host.
fn respond(bytes: Vec<u8>) -> i64 {
    let bytes = bytes.into_boxed_slice();
    let len = bytes.len() as u32;
    let ptr = Box::into_raw(bytes).cast::<u8>() as usize as u32;
    pinion_abi::pack(ptr, len) as i64
}

/// `pinion_manifest`.
pub fn manifest_export(module: &Module) -> i64 {
    respond(manifest_bytes(module))
}

/// `pinion_activate`.
///
/// # Safety
/// `(ptr, len)` must be a request buffer from [`alloc`]; this call takes ownership of it.
pub unsafe fn activate_export(module: &Module, ptr: i32, len: i32) -> i64 {
    // SAFETY: forwarded to the caller.
    let request = unsafe { take(ptr, len) };
    respond(activate_bytes(module, &request))
}

/// `pinion_query`.
///
/// # Safety
/// As for [`activate_export`].
pub unsafe fn query_export(ptr: i32, len: i32) -> i64 {
    // SAFETY: forwarded to the caller.
    let request = unsafe { take(ptr, len) };
    respond(query_bytes(&request))
}

/// `pinion_run_activity`.
///
/// # Safety
/// As for [`activate_export`].
pub unsafe fn run_activity_export(module: &Module, ptr: i32, len: i32) -> i64 {
    // SAFETY: forwarded to the caller.
    let request = unsafe { take(ptr, len) };
    respond(run_activity_bytes(module, &request))
}

/// True when two names in the list are equal. `const` so `export!` can reject duplicate
/// registrations at compile time.
pub const fn has_duplicate(names: &[&str]) -> bool {
    let mut i = 0;
    while i < names.len() {
        let mut j = i + 1;
        while j < names.len() {
            if str_eq(names[i], names[j]) {
                return true;
            }
            j += 1;
        }
        i += 1;
    }
    false
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
