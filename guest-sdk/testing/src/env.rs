//! [`TestEnv`]: the module under test, its mocked activities, and the instance's identity.

use std::collections::BTreeMap;

use std::time::Duration;

use pinion_abi::Failure;
use pinion_sdk::__rt::Module;
use pinion_sdk::ActivityError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::run::TestRun;

/// The module hash written into harness histories unless [`TestEnv::module_hash`] sets one:
/// a host build has no wasm bytes to hash. `pinion replay` replays a history against the
/// module it is given whatever hash the history names.
pub const DEFAULT_MODULE_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// The logical time a run starts at unless [`TestEnv::start_time_ms`] sets one:
/// 2026-01-01T00:00:00Z, in milliseconds since the Unix epoch.
pub const DEFAULT_START_MS: u64 = 1_767_225_600_000;

/// Who an activity attempt is, as a mock sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityCall {
    /// The activity type.
    pub activity_type: String,
    /// The activity's sequence number in the instance (from 1).
    pub seq: u32,
    /// The attempt number (from 1).
    pub attempt: u32,
    /// The instance id.
    pub instance_id: String,
}

/// A mock: raw JSON input in, raw JSON output or the activity's error out.
pub(crate) type Mock = Box<dyn FnMut(&ActivityCall, &[u8]) -> Result<Vec<u8>, ActivityError>>;

/// Which child a child mock stands in for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildCall {
    /// The child's workflow type.
    pub workflow_type: String,
    /// The child's sequence number in the parent (from 1).
    pub seq: u32,
    /// The child's instance id (`<parent id>-child-<seq>` unless the code chose one).
    pub child_id: String,
    /// The parent's instance id.
    pub parent_id: String,
}

/// A child mock's function: raw JSON input in, raw JSON result or the child's failure out.
pub(crate) type ChildFn = Box<dyn FnMut(&ChildCall, &[u8]) -> Result<Vec<u8>, Failure>>;

/// A child mock: how long the child takes (logical time), and what it returns.
pub(crate) struct ChildMock {
    pub(crate) takes_ms: u64,
    pub(crate) f: ChildFn,
}

/// A workflow module under test, before a run starts.
///
/// Defaults: instance id `test-1`, random seed 1, start time [`DEFAULT_START_MS`], module
/// hash [`DEFAULT_MODULE_HASH`], every activity run for real.
pub struct TestEnv {
    pub(crate) module: &'static Module,
    pub(crate) mocks: BTreeMap<String, Mock>,
    pub(crate) child_mocks: BTreeMap<String, ChildMock>,
    pub(crate) instance_id: String,
    pub(crate) random_seed: u64,
    pub(crate) start_ms: u64,
    pub(crate) module_hash: String,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("mocks", &self.mocks.keys().collect::<Vec<_>>())
            .field("child_mocks", &self.child_mocks.keys().collect::<Vec<_>>())
            .field("instance_id", &self.instance_id)
            .field("random_seed", &self.random_seed)
            .field("start_ms", &self.start_ms)
            .finish()
    }
}

impl TestEnv {
    /// The module `export!` registered: pass the static it generates at the crate root,
    /// `&my_crate::__PINION_MODULE` (or `&crate::__PINION_MODULE` from a unit test).
    pub fn new(module: &'static Module) -> TestEnv {
        TestEnv {
            module,
            mocks: BTreeMap::new(),
            child_mocks: BTreeMap::new(),
            instance_id: "test-1".into(),
            random_seed: 1,
            start_ms: DEFAULT_START_MS,
            module_hash: DEFAULT_MODULE_HASH.into(),
        }
    }

    /// Replaces activity `name` by `f`, called once per attempt with the decoded input. An
    /// `Err` is a failed attempt, retried by the activity's retry policy like a real one.
    /// The name need not be one the module exports.
    pub fn mock_activity<In, Out, F>(self, name: &str, mut f: F) -> TestEnv
    where
        In: DeserializeOwned,
        Out: Serialize,
        F: FnMut(In) -> Result<Out, ActivityError> + 'static,
    {
        self.mock_activity_with(name, move |_: &ActivityCall, input: In| f(input))
    }

    /// Like [`TestEnv::mock_activity`], with the attempt's [`ActivityCall`] (attempt number,
    /// sequence number): for a mock that fails its first attempts.
    pub fn mock_activity_with<In, Out, F>(mut self, name: &str, mut f: F) -> TestEnv
    where
        In: DeserializeOwned,
        Out: Serialize,
        F: FnMut(&ActivityCall, In) -> Result<Out, ActivityError> + 'static,
    {
        let mock: Mock = Box::new(move |call, input| {
            let bytes: &[u8] = if input.is_empty() { b"null" } else { input };
            let input: In = serde_json::from_slice(bytes).map_err(|e| {
                ActivityError::non_retryable(
                    "InvalidInput",
                    format!("invalid input for activity \"{}\": {e}", call.activity_type),
                )
            })?;
            let output = f(call, input)?;
            serde_json::to_vec(&output).map_err(|e| {
                ActivityError::non_retryable(
                    "InvalidOutput",
                    format!(
                        "the result of activity \"{}\" does not serialise to JSON: {e}",
                        call.activity_type
                    ),
                )
            })
        });
        self.mocks.insert(name.to_owned(), mock);
        self
    }

    /// Stands in for child workflow `workflow_type`: when the workflow starts such a child,
    /// `f` is called with its input, and the child ends at once (delivered by the next
    /// activation) with `f`'s value, or fails with its [`Failure`] (kind `Cancelled`,
    /// `Terminated` or any other). Children are always mocked: test the child's own
    /// workflow with a `TestEnv` of its own.
    pub fn mock_child<In, Out, F>(self, workflow_type: &str, mut f: F) -> TestEnv
    where
        In: DeserializeOwned,
        Out: Serialize,
        F: FnMut(In) -> Result<Out, Failure> + 'static,
    {
        self.mock_child_after(
            workflow_type,
            Duration::ZERO,
            move |_: &ChildCall, i: In| f(i),
        )
    }

    /// Like [`TestEnv::mock_child`], for a child that takes `takes` of logical time (skipped
    /// like a timer), called with the child's [`ChildCall`]. A child the workflow asks to
    /// stop before then (`RequestCancelChild`, which the SDK sends for every running child
    /// when the workflow is cancelled) ends `Cancelled` at once instead, as a child that
    /// honours its cancellation does, and `f` is not called.
    pub fn mock_child_after<In, Out, F>(
        mut self,
        workflow_type: &str,
        takes: Duration,
        mut f: F,
    ) -> TestEnv
    where
        In: DeserializeOwned,
        Out: Serialize,
        F: FnMut(&ChildCall, In) -> Result<Out, Failure> + 'static,
    {
        let f: ChildFn = Box::new(move |call: &ChildCall, input: &[u8]| {
            let bytes: &[u8] = if input.is_empty() { b"null" } else { input };
            let input: In = serde_json::from_slice(bytes).map_err(|e| Failure {
                kind: "InvalidInput".into(),
                message: format!(
                    "invalid input for child workflow \"{}\": {e}",
                    call.workflow_type
                ),
                non_retryable: true,
                attempts: 0,
            })?;
            let output = f(call, input)?;
            serde_json::to_vec(&output).map_err(|e| Failure {
                kind: "InvalidOutput".into(),
                message: format!(
                    "the result of child workflow \"{}\" does not serialise to JSON: {e}",
                    call.workflow_type
                ),
                non_retryable: true,
                attempts: 0,
            })
        });
        self.child_mocks.insert(
            workflow_type.to_owned(),
            ChildMock {
                takes_ms: u64::try_from(takes.as_millis()).unwrap_or(u64::MAX),
                f,
            },
        );
        self
    }

    /// The instance id (default `test-1`): what `ctx.instance_id()` returns and the history
    /// records.
    pub fn instance_id(mut self, id: &str) -> TestEnv {
        self.instance_id = id.to_owned();
        self
    }

    /// The seed of the workflow's random numbers (default 1), recorded in the start event.
    pub fn random_seed(mut self, seed: u64) -> TestEnv {
        self.random_seed = seed;
        self
    }

    /// The logical time of the first activation, in ms since the Unix epoch.
    pub fn start_time_ms(mut self, ms: u64) -> TestEnv {
        self.start_ms = ms;
        self
    }

    /// The module hash the history names (lower-case hex SHA-256 of the wasm build, as
    /// `pinion deploy` prints it); informational only.
    pub fn module_hash(mut self, hash: &str) -> TestEnv {
        self.module_hash = hash.to_owned();
        self
    }

    /// Starts workflow `workflow_type` with `input` (serialised to JSON). Nothing runs until
    /// the test calls one of the `run_*` methods, so signals sent first arrive with the
    /// start, as they would for an instance signalled before its first activation.
    ///
    /// # Panics
    /// If `input` does not serialise to JSON.
    pub fn start<I: Serialize + ?Sized>(self, workflow_type: &str, input: &I) -> TestRun {
        let input = serde_json::to_vec(input).expect("the workflow input serialises to JSON");
        TestRun::new(self, workflow_type, &input)
    }
}
