//! The wire contract between the pinion host and a workflow module.
//!
//! This crate is the one place the guest ABI is defined; the host (`pinion-runtime`) and the
//! guest SDK (`pinion-sdk`) both depend on it, so the two sides cannot drift apart. It is
//! `no_std` + `alloc` so it builds for `wasm32-wasip1` and `wasm32-unknown-unknown` alike.
//!
//! # The model
//!
//! It follows the activation/completion model of Temporal's sdk-core. The host owns history;
//! the guest owns workflow state. The host sends an [`Activation`]: a batch of [`Job`]s
//! (start, activity resolved, timer fired, ...) together with the workflow's logical time and
//! whether it is replaying. The guest applies the jobs in order, polls its single-threaded
//! executor until every future is pending, and answers with a [`Completion`]: the
//! [`Command`]s the workflow issued. Activities run in a separate instance of the same module
//! through [`ActivityInvocation`] / [`ActivityOutcome`].
//!
//! # Encoding
//!
//! Every message is encoded with [postcard](https://docs.rs/postcard) (stable, documented
//! wire format; see `docs/abi.md`). User data (workflow input and result, activity input and
//! result) travels as opaque *payload* bytes inside those messages; the SDK encodes payloads
//! as JSON so histories stay readable, diffable and importable without the module.
//!
//! Buffers cross the boundary through linear memory: the host asks the guest to allocate
//! with [`exports::ALLOC`], writes the request, calls the entry point, and receives a packed
//! `(ptr << 32) | len` ([`pack`]) pointing at the response, which it reads and then frees
//! with [`exports::FREE`].
#![no_std]
#![deny(missing_docs)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The ABI version this crate describes, and that modules built with this crate declare.
///
/// | version | what changed |
/// | --- | --- |
/// | 1 | the first release |
/// | 2 | [`ActivityOptions::heartbeat_timeout_ms`]; [`ActivityInvocation::heartbeat_details`]; the [`imports::HEARTBEAT`] host function |
///
/// A host built with this crate runs modules of every version from
/// [`OLDEST_ABI_VERSION`] to this one: it decodes an older module's messages with the frozen
/// types of that version (module [`v1`]) and converts them.
pub const ABI_VERSION: u32 = 2;

/// The oldest ABI version a host built with this crate still runs.
pub const OLDEST_ABI_VERSION: u32 = 1;

/// Names of the functions a workflow module exports.
pub mod exports {
    /// `() -> i32`: the module's [`ABI_VERSION`](super::ABI_VERSION).
    pub const ABI_VERSION: &str = "pinion_abi_version";
    /// `() -> i64`: packed pointer to a postcard [`Manifest`](super::Manifest).
    pub const MANIFEST: &str = "pinion_manifest";
    /// `(len: i32) -> i32`: allocate `len` bytes in guest memory for a request.
    pub const ALLOC: &str = "pinion_alloc";
    /// `(ptr: i32, len: i32)`: free a buffer returned by the guest or allocated by `ALLOC`.
    pub const FREE: &str = "pinion_free";
    /// `(ptr: i32, len: i32) -> i64`: apply an [`Activation`](super::Activation), return a
    /// packed pointer to a [`Completion`](super::Completion).
    pub const ACTIVATE: &str = "pinion_activate";
    /// `(ptr: i32, len: i32) -> i64`: run an [`ActivityInvocation`](super::ActivityInvocation),
    /// return a packed pointer to an [`ActivityOutcome`](super::ActivityOutcome).
    pub const RUN_ACTIVITY: &str = "pinion_run_activity";
    /// `(ptr: i32, len: i32) -> i64`: evaluate a [`QueryRequest`](super::QueryRequest) against
    /// the workflow instance this wasm instance hosts, return a packed pointer to a
    /// [`QueryResponse`](super::QueryResponse). Never changes what later activations produce.
    pub const QUERY: &str = "pinion_query";
    /// The exported linear memory.
    pub const MEMORY: &str = "memory";
}

/// Functions the host offers a module under the import module [`imports::MODULE`]. They are
/// optional: a module that never calls them does not import them, and modules built before
/// they existed load unchanged.
pub mod imports {
    /// The wasm import module name of pinion's own host functions.
    pub const MODULE: &str = "pinion";
    /// `(ptr: i32, len: i32) -> i32`: send the postcard [`HttpRequest`](super::HttpRequest)
    /// at `ptr..ptr+len` and wait for it. Returns the length of the postcard
    /// [`HttpOutcome`](super::HttpOutcome) the host staged for [`TAKE_STAGED`], or a negative
    /// number when the request did not decode. Activities only: in a workflow instance the
    /// call traps (workflows reach the world through activities).
    pub const HTTP_SEND: &str = "http_send";
    /// `(ptr: i32, len: i32) -> i32`: copy the staged bytes of the last call into
    /// `ptr..ptr+len` (`len` must equal the staged length) and drop them. Returns 0, or a
    /// negative number when nothing is staged or the length differs.
    pub const TAKE_STAGED: &str = "take_staged";
    /// `(ptr: i32, len: i32) -> i32` (ABI 2): record a heartbeat of the running activity
    /// attempt with the details (JSON bytes) at `ptr..ptr+len`. Returns 0 to go on, 1 when
    /// the attempt should stop because its workflow cancelled it (or it is no longer
    /// wanted), or a negative number when the details are out of bounds or too large.
    /// Activities only: in a workflow instance the call traps.
    pub const HEARTBEAT: &str = "heartbeat";
    /// Every function above: what a module may import from [`MODULE`].
    pub const ALL: [&str; 3] = [HTTP_SEND, TAKE_STAGED, HEARTBEAT];
}

/// An outgoing HTTP request from an activity ([`imports::HTTP_SEND`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order; a name may repeat.
    pub headers: Vec<(String, String)>,
    /// Request body (empty for none).
    pub body: Vec<u8>,
    /// Timeout for this request in milliseconds; the host never waits past the attempt's
    /// start-to-close deadline, whatever this says.
    pub timeout_ms: Option<u64>,
}

/// The answer to an [`HttpRequest`] that reached a server (any status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
    /// The URL that answered, after redirects.
    pub url: String,
}

/// Why an [`HttpRequest`] got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpErrorKind {
    /// The URL (or a redirect's target) is not granted to this activity: never retried.
    Denied,
    /// The request is malformed (bad URL, method or header): never retried.
    InvalidRequest,
    /// No answer in time (the request's timeout or the attempt's deadline).
    Timeout,
    /// The connection failed (refused, reset, DNS, TLS).
    Connect,
    /// The response body is larger than the operator's limit.
    TooLarge,
    /// Too many redirects.
    TooManyRedirects,
}

/// An HTTP call that failed before a response arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    /// What kind of failure.
    pub kind: HttpErrorKind,
    /// What happened, naming the URL (and, for [`HttpErrorKind::Denied`], the missing grant).
    pub message: String,
}

/// What [`imports::HTTP_SEND`] stages: a response or an error.
pub type HttpOutcome = Result<HttpResponse, HttpError>;

/// Packs a guest pointer and length into the `i64` returned by entry points.
pub const fn pack(ptr: u32, len: u32) -> u64 {
    ((ptr as u64) << 32) | len as u64
}

/// Splits a packed `i64` into `(ptr, len)`.
pub const fn unpack(packed: u64) -> (u32, u32) {
    ((packed >> 32) as u32, packed as u32)
}

/// What a module declares about itself. Read once, at deploy time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// Version of the `pinion-sdk` crate the module was built with.
    pub sdk_version: String,
    /// Workflow types the module exports, by name.
    pub workflows: Vec<String>,
    /// Activity types the module exports, by name.
    pub activities: Vec<String>,
    /// An optional human label for this build (for example `"v2"`).
    pub version_label: Option<String>,
}

/// One activation of a workflow instance: jobs to apply, then run until blocked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    /// The workflow's logical time in milliseconds since the Unix epoch. Recorded in history,
    /// so replay sees the same value. WASI clocks in the workflow sandbox return it too.
    pub now_ms: u64,
    /// True while the host is rebuilding state from history; the SDK suppresses logs.
    pub is_replaying: bool,
    /// Jobs in the order they must be applied: [`Job::Marker`]s first (replay only), then
    /// [`Job::Start`] (first activation only), then resolutions in the order recorded.
    pub jobs: Vec<Job>,
}

/// One thing that happened to a workflow instance, delivered in an [`Activation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Job {
    /// Start the workflow. Only in the first activation, after any [`Job::Marker`]s.
    Start {
        /// Which exported workflow to run.
        workflow_type: String,
        /// The instance id, for logging and for the workflow's own information.
        instance_id: String,
        /// Input payload (JSON bytes).
        input: Vec<u8>,
        /// Seed for the workflow's deterministic random number generator.
        random_seed: u64,
    },
    /// An activity scheduled with [`Command::ScheduleActivity`] `seq` has finished.
    ResolveActivity {
        /// Sequence number the guest gave the activity.
        seq: u32,
        /// How it ended.
        result: ActivityResult,
    },
    /// A timer started with [`Command::StartTimer`] `seq` has fired.
    FireTimer {
        /// Sequence number the guest gave the timer.
        seq: u32,
    },
    /// A marker this activation recorded when it first ran. Sent only while replaying,
    /// before every other job of the activation, once per recorded marker, so that
    /// `get_version` and `patched` can answer synchronously with the recorded value (the
    /// "peekahead" of Temporal's sdk-core).
    Marker {
        /// Marker id, as in [`Command::RecordMarker`].
        id: String,
        /// Marker data, as recorded.
        data: Vec<u8>,
    },
    /// A signal arrived. Signals are buffered per name in arrival order until the workflow
    /// reads them, so a signal sent before the workflow waits is never lost.
    Signal {
        /// Signal name.
        name: String,
        /// Signal input (JSON bytes).
        input: Vec<u8>,
    },
    /// Somebody asked the workflow to stop. Every wait started before this job (activities,
    /// timers, signals) resolves as cancelled, and pending activities and timers are
    /// cancelled with [`Command::RequestCancelActivity`] / [`Command::CancelTimer`]; the
    /// workflow may clean up and then ends with [`Command::CancelWorkflow`]. Delivered at most
    /// once per instance.
    Cancel {
        /// Why, as given by the requester.
        reason: String,
    },
    /// A child workflow started with [`Command::StartChild`] `seq` has ended (or could not
    /// start).
    ResolveChild {
        /// Sequence number the guest gave the child.
        seq: u32,
        /// How it ended.
        result: ChildResult,
    },
}

/// How a child workflow ended, as its parent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChildResult {
    /// The child returned a value (JSON payload).
    Completed(Vec<u8>),
    /// The child failed, was cancelled (kind `Cancelled`), was terminated (kind
    /// `Terminated`) or could not be started (kind `ChildStartFailed`).
    Failed(Failure),
}

/// Which module a child workflow or a continued run runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleChoice {
    /// The module the issuing instance runs on now.
    #[default]
    Current,
    /// The module this alias points at (or ramps to, for the new instance's id) when the
    /// command is executed.
    Alias(String),
    /// A deployed module, by full hash or unique prefix.
    Module(String),
}

/// How an activity ended, as seen by the workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ActivityResult {
    /// Returned a value (JSON payload).
    Completed(Vec<u8>),
    /// Failed on its last attempt, or with a non-retryable error.
    Failed(Failure),
    /// The last attempt ran past its start-to-close timeout and no retry was left.
    TimedOut(Failure),
}

/// A typed application error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The error kind, matched against [`RetryPolicy::non_retryable_error_kinds`].
    pub kind: String,
    /// Human-readable message.
    pub message: String,
    /// When true the host does not retry, whatever the policy says.
    pub non_retryable: bool,
    /// Number of attempts made (filled in by the host for activity failures).
    pub attempts: u32,
}

/// What the guest asks the host to do. Commands are matched against history on replay.
///
/// `O` is the activity options type of the ABI version: always the default,
/// [`ActivityOptions`], except in a host decoding an older module's completion
/// ([`v1::Completion`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command<O = ActivityOptions> {
    /// Schedule an activity of this module.
    ScheduleActivity {
        /// Per-instance sequence number, counting activities from 1.
        seq: u32,
        /// Exported activity name.
        activity_type: String,
        /// Input payload (JSON bytes).
        input: Vec<u8>,
        /// Timeout and retry policy.
        options: O,
    },
    /// Start a durable timer.
    StartTimer {
        /// Per-instance sequence number, counting timers from 1.
        seq: u32,
        /// How long from the activation's logical time.
        duration_ms: u64,
    },
    /// Cancel a timer that has not fired (for example the loser of a select).
    CancelTimer {
        /// The timer's sequence number.
        seq: u32,
    },
    /// Record a marker (side effects, version markers).
    RecordMarker {
        /// Marker id.
        id: String,
        /// Marker data.
        data: Vec<u8>,
    },
    /// The workflow returned a value.
    CompleteWorkflow {
        /// Result payload (JSON bytes).
        result: Vec<u8>,
    },
    /// The workflow returned an error.
    FailWorkflow {
        /// Why.
        failure: Failure,
    },
    /// Cancel an activity that has not resolved (after [`Job::Cancel`]). A queued attempt
    /// never runs; a running attempt finishes but its result is discarded.
    RequestCancelActivity {
        /// The activity's sequence number.
        seq: u32,
    },
    /// The workflow ended because it was cancelled (it returned a `Cancelled` error after
    /// [`Job::Cancel`]).
    CancelWorkflow {
        /// The cancellation's reason or the workflow's final message.
        reason: String,
    },
    /// Start a child workflow; its end arrives as [`Job::ResolveChild`].
    StartChild {
        /// Per-instance sequence number, counting children from 1.
        seq: u32,
        /// Workflow type the chosen module exports.
        workflow_type: String,
        /// Input payload (JSON bytes).
        input: Vec<u8>,
        /// The child's instance id; `None` lets the host derive `<parent id>-child-<seq>`.
        id: Option<String>,
        /// Which module the child is pinned to.
        module: ModuleChoice,
    },
    /// Ask a child that has not ended to stop (after [`Job::Cancel`]): the child receives a
    /// cancellation, and its end still arrives as [`Job::ResolveChild`].
    RequestCancelChild {
        /// The child's sequence number.
        seq: u32,
    },
    /// End this run and start the workflow again under the same instance id with a fresh
    /// history: the way a long-running instance keeps its history short and moves to new
    /// code.
    ContinueAsNew {
        /// Input of the new run (JSON bytes).
        input: Vec<u8>,
        /// Workflow type of the new run; `None` keeps the current one.
        workflow_type: Option<String>,
        /// Module of the new run.
        module: ModuleChoice,
        /// Signals this run received but never read, oldest first, as `(name, input)`: the
        /// host delivers them to the new run ahead of any signal still waiting, so none is
        /// lost across the boundary.
        unread_signals: Vec<(String, Vec<u8>)>,
    },
}

/// Options for one activity call. The default: host default timeout, default retry policy,
/// no heartbeat timeout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityOptions {
    /// Limit on one attempt's run time, in milliseconds; `None` means the host default.
    pub start_to_close_timeout_ms: Option<u64>,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// (ABI 2) An attempt that goes this long without a heartbeat (counted from its start,
    /// then from its last heartbeat) fails with kind `HeartbeatTimeout` and is retried like
    /// any timeout. `None`: heartbeats are optional and never awaited.
    #[serde(default)]
    pub heartbeat_timeout_ms: Option<u64>,
}

/// Retry policy for an activity, with the semantics of Temporal's `RetryPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Maximum number of attempts, including the first. `0` means unlimited.
    pub maximum_attempts: u32,
    /// Delay before the first retry, in milliseconds.
    pub initial_interval_ms: u64,
    /// Each delay is the previous one times this (at least 1.0).
    pub backoff_coefficient: f64,
    /// Upper bound on a delay, in milliseconds; `None` means 100 × the initial interval.
    pub maximum_interval_ms: Option<u64>,
    /// Failure kinds that are never retried.
    pub non_retryable_error_kinds: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            maximum_attempts: 0,
            initial_interval_ms: 1_000,
            backoff_coefficient: 2.0,
            maximum_interval_ms: None,
            non_retryable_error_kinds: Vec::new(),
        }
    }
}

/// The guest's answer to an [`Activation`]. `O` as in [`Command`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Completion<O = ActivityOptions> {
    /// Commands issued, in order. Empty when the workflow is only waiting.
    Commands(Vec<Command<O>>),
    /// The SDK could not apply the activation (for example an unknown workflow type). The
    /// host blocks the instance with this message; it is not a workflow failure.
    Error(String),
}

/// A request to run one activity attempt, sent to a fresh instance of the module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityInvocation {
    /// Exported activity name.
    pub activity_type: String,
    /// Input payload (JSON bytes).
    pub input: Vec<u8>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Workflow instance that scheduled it.
    pub instance_id: String,
    /// The activity's sequence number in that instance.
    pub seq: u32,
    /// (ABI 2) The details of the last heartbeat an earlier attempt of this activity
    /// recorded (JSON bytes), so a long activity resumes where it stopped; `None` on a
    /// first attempt or when no attempt heartbeated.
    pub heartbeat_details: Option<Vec<u8>>,
}

/// How one activity attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ActivityOutcome {
    /// Returned a value (JSON payload).
    Completed(Vec<u8>),
    /// Returned an error; the host decides whether to retry.
    Failed(Failure),
}

/// A request to evaluate a query handler, sent to the live workflow instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryRequest {
    /// The handler's name, as the workflow registered it.
    pub name: String,
    /// Query input (JSON bytes).
    pub input: Vec<u8>,
}

/// The answer to a [`QueryRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QueryResponse {
    /// The handler's result (JSON bytes).
    Answered(Vec<u8>),
    /// The query could not be answered: kind `UnknownQuery`, `InvalidInput`, `NotStarted` or
    /// `QueryFailed`. The instance's state is unchanged.
    Failed(Failure),
    /// The handler tried to change the workflow (issue a command or draw a random number).
    /// Queries are read-only: the SDK discarded what the handler did, but the instance's
    /// in-memory state may be disturbed, so the host must drop this wasm instance and
    /// rebuild it from history before its next activation.
    Violated(Failure),
}

impl<O> Command<O> {
    /// The same command with its activity options converted (used to bring an older ABI
    /// version's command up to date).
    pub fn map_options<P>(self, f: impl FnOnce(O) -> P) -> Command<P> {
        match self {
            Command::ScheduleActivity {
                seq,
                activity_type,
                input,
                options,
            } => Command::ScheduleActivity {
                seq,
                activity_type,
                input,
                options: f(options),
            },
            Command::StartTimer { seq, duration_ms } => Command::StartTimer { seq, duration_ms },
            Command::CancelTimer { seq } => Command::CancelTimer { seq },
            Command::RecordMarker { id, data } => Command::RecordMarker { id, data },
            Command::CompleteWorkflow { result } => Command::CompleteWorkflow { result },
            Command::FailWorkflow { failure } => Command::FailWorkflow { failure },
            Command::RequestCancelActivity { seq } => Command::RequestCancelActivity { seq },
            Command::CancelWorkflow { reason } => Command::CancelWorkflow { reason },
            Command::StartChild {
                seq,
                workflow_type,
                input,
                id,
                module,
            } => Command::StartChild {
                seq,
                workflow_type,
                input,
                id,
                module,
            },
            Command::RequestCancelChild { seq } => Command::RequestCancelChild { seq },
            Command::ContinueAsNew {
                input,
                workflow_type,
                module,
                unread_signals,
            } => Command::ContinueAsNew {
                input,
                workflow_type,
                module,
                unread_signals,
            },
        }
    }
}

/// The messages of ABI version 1 that differ from today's, frozen, and their conversions. A
/// host decodes a version-1 module's [`Completion`](v1::Completion) with these types and
/// sends it a version-1 [`ActivityInvocation`](v1::ActivityInvocation); every other message
/// is the same in both versions.
pub mod v1 {
    use super::RetryPolicy;
    use alloc::string::String;
    use alloc::vec::Vec;
    use serde::{Deserialize, Serialize};

    /// [`super::ActivityOptions`] of ABI 1: no heartbeat timeout.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ActivityOptions {
        /// As in ABI 2.
        pub start_to_close_timeout_ms: Option<u64>,
        /// As in ABI 2.
        pub retry: RetryPolicy,
    }

    impl From<ActivityOptions> for super::ActivityOptions {
        fn from(o: ActivityOptions) -> Self {
            super::ActivityOptions {
                start_to_close_timeout_ms: o.start_to_close_timeout_ms,
                retry: o.retry,
                heartbeat_timeout_ms: None,
            }
        }
    }

    /// A [`super::Completion`] of ABI 1.
    pub type Completion = super::Completion<ActivityOptions>;

    impl From<Completion> for super::Completion {
        fn from(c: Completion) -> Self {
            match c {
                super::Completion::Commands(cmds) => super::Completion::Commands(
                    cmds.into_iter()
                        .map(|c| c.map_options(Into::into))
                        .collect(),
                ),
                super::Completion::Error(e) => super::Completion::Error(e),
            }
        }
    }

    /// [`super::ActivityInvocation`] of ABI 1: no heartbeat details.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ActivityInvocation {
        /// As in ABI 2.
        pub activity_type: String,
        /// As in ABI 2.
        pub input: Vec<u8>,
        /// As in ABI 2.
        pub attempt: u32,
        /// As in ABI 2.
        pub instance_id: String,
        /// As in ABI 2.
        pub seq: u32,
    }

    impl From<&super::ActivityInvocation> for ActivityInvocation {
        fn from(i: &super::ActivityInvocation) -> Self {
            ActivityInvocation {
                activity_type: i.activity_type.clone(),
                input: i.input.clone(),
                attempt: i.attempt,
                instance_id: i.instance_id.clone(),
                seq: i.seq,
            }
        }
    }
}

/// Encodes a message with postcard.
///
/// # Errors
/// Only if a value cannot be represented (postcard rejects nothing this crate defines).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(value)
}

/// Decodes a message with postcard.
///
/// # Errors
/// When the bytes are not a valid encoding of `T`.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn pack_round_trips() {
        assert_eq!(unpack(pack(0xdead_beef, 17)), (0xdead_beef, 17));
    }

    #[test]
    fn activation_round_trips_through_postcard() {
        let a = Activation {
            now_ms: 1_700_000_000_000,
            is_replaying: true,
            jobs: vec![
                Job::FireTimer { seq: 3 },
                Job::ResolveActivity {
                    seq: 1,
                    result: ActivityResult::Completed(b"1".to_vec()),
                },
            ],
        };
        let bytes = encode(&a).unwrap();
        assert_eq!(decode::<Activation>(&bytes).unwrap(), a);
    }

    fn schedule<O>(options: O) -> Completion<O> {
        Completion::Commands(vec![
            Command::ScheduleActivity {
                seq: 1,
                activity_type: "charge".into(),
                input: b"{}".to_vec(),
                options,
            },
            Command::StartTimer {
                seq: 1,
                duration_ms: 5,
            },
        ])
    }

    #[test]
    fn a_version_1_completion_decodes_with_the_frozen_types_and_converts() {
        let old = v1::ActivityOptions {
            start_to_close_timeout_ms: Some(7),
            retry: RetryPolicy::default(),
        };
        let bytes = encode(&schedule(old)).unwrap();
        // Today's types misread it: the timer command's bytes would be taken for options.
        assert_ne!(
            decode::<Completion>(&bytes).ok(),
            Some(schedule(ActivityOptions {
                start_to_close_timeout_ms: Some(7),
                ..ActivityOptions::default()
            }))
        );
        let converted: Completion = decode::<v1::Completion>(&bytes).unwrap().into();
        assert_eq!(
            converted,
            schedule(ActivityOptions {
                start_to_close_timeout_ms: Some(7),
                retry: RetryPolicy::default(),
                heartbeat_timeout_ms: None,
            })
        );
    }

    #[test]
    fn a_version_1_invocation_is_a_prefix_of_todays() {
        let now = ActivityInvocation {
            activity_type: "charge".into(),
            input: b"1".to_vec(),
            attempt: 2,
            instance_id: "o-1".into(),
            seq: 3,
            heartbeat_details: Some(b"7".to_vec()),
        };
        let old = encode(&v1::ActivityInvocation::from(&now)).unwrap();
        assert!(encode(&now).unwrap().starts_with(&old));
    }
}
