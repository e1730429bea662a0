//! What can go wrong while a [`TestRun`](crate::TestRun) drives a workflow.

use pinion_abi::Failure;

/// An error of the harness or of the workflow under test.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The SDK refused an activation (`Completion::Error`): the engine would block the
    /// instance with this message (an unknown workflow type, for example).
    #[error("the SDK refused the activation: {0}")]
    Sdk(String),
    /// The workflow issued a command the harness does not emulate.
    #[error("the test harness does not support {0}")]
    Unsupported(String),
    /// The workflow has not ended and nothing more can happen without a signal or a
    /// cancellation from the test.
    #[error(
        "the workflow is waiting for outside input (a signal or a cancellation) and has not ended"
    )]
    Waiting,
    /// A signal or cancellation for a workflow that has ended.
    #[error("the workflow has ended: it takes no more signals or cancellations")]
    Ended,
    /// The workflow ended with a failure.
    #[error("the workflow failed: {}: {}", .0.kind, .0.message)]
    Failed(Failure),
    /// The workflow ended cancelled, with this reason.
    #[error("the workflow was cancelled: {0}")]
    Cancelled(String),
    /// The workflow continued as new with this input (JSON); the harness runs one run.
    #[error("the workflow continued as new with input {0}")]
    ContinuedAsNew(String),
    /// A query was refused (kinds `UnknownQuery`, `InvalidInput`, `QueryFailed`,
    /// `NotStarted`, `ReadOnlyViolation`).
    #[error("query failed: {}: {}", .0.kind, .0.message)]
    Query(Failure),
    /// A payload is not JSON, or does not decode into the type asked for.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing the history failed.
    #[error("writing the history to {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}
