//! The three error types a workflow author meets, one per boundary.
//!
//! - [`ActivityError`] is what an activity *returns*: a kind (matched by the host against
//!   [`RetryPolicy::non_retryable_error_kind`](crate::RetryPolicy::non_retryable_error_kind)),
//!   a message, and whether retrying can help.
//! - [`ActivityFailed`] is what a workflow *observes* when it awaits an activity that failed
//!   for good (last attempt failed, a non-retryable error, or every attempt timed out). It is
//!   a typed value, so a workflow can branch on `kind` and compensate.
//! - [`WorkflowError`] is what a workflow *returns* to fail the instance. `From<ActivityFailed>`
//!   lets `?` propagate an activity failure unchanged in kind.
//!
//! All three map onto [`pinion_abi::Failure`], the one failure shape the wire knows. Kinds are
//! plain strings rather than an enum because they cross the module boundary and are recorded in
//! history, where an old module's kinds must stay readable by a new host.

use std::fmt;

use pinion_abi::Failure;

/// The kind given to an [`ActivityError`] built from a bare string.
const GENERIC_ACTIVITY_KIND: &str = "ActivityError";
/// The kind given to a [`WorkflowError`] built from a bare string.
const GENERIC_WORKFLOW_KIND: &str = "WorkflowError";

/// An error returned by an activity.
///
/// Retryable errors are retried by the host according to the activity's
/// [`RetryPolicy`](crate::RetryPolicy); non-retryable ones end the activity at once and the
/// workflow sees an [`ActivityFailed`] with the same kind and message.
///
/// # Examples
/// ```
/// use pinion_sdk::ActivityError;
///
/// fn charge(card: String) -> Result<String, ActivityError> {
///     if card.starts_with("4000") {
///         return Err(ActivityError::non_retryable("CardDeclined", "the bank said no"));
///     }
///     Err(ActivityError::retryable("GatewayUnavailable", "try again later"))
/// }
/// assert!(charge("4000".into()).unwrap_err().non_retryable);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityError {
    /// Error kind, for example `"GatewayUnavailable"`.
    pub kind: String,
    /// Human-readable message.
    pub message: String,
    /// When true the host does not retry, whatever the retry policy says.
    pub non_retryable: bool,
}

impl ActivityError {
    /// An error the host may retry (subject to the retry policy).
    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            kind: kind.into(),
            message: message.into(),
            non_retryable: false,
        }
    }

    /// An error the host must not retry: the activity fails at once.
    pub fn non_retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            kind: kind.into(),
            message: message.into(),
            non_retryable: true,
        }
    }

    /// True for the error [`ActivityContext::heartbeat`](crate::ActivityContext::heartbeat)
    /// returns when the attempt should stop (kind [`CANCELLED_KIND`]).
    pub fn is_cancelled(&self) -> bool {
        self.kind == CANCELLED_KIND
    }

    /// Converts to the wire shape, stamping the attempt number the host gave this run.
    pub(crate) fn into_failure(self, attempt: u32) -> Failure {
        Failure {
            kind: self.kind,
            message: self.message,
            non_retryable: self.non_retryable,
            attempts: attempt,
        }
    }
}

impl fmt::Display for ActivityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ActivityError {}

/// A retryable error of kind `"ActivityError"` with this message.
impl From<String> for ActivityError {
    fn from(message: String) -> Self {
        ActivityError::retryable(GENERIC_ACTIVITY_KIND, message)
    }
}

/// A retryable error of kind `"ActivityError"` with this message.
impl From<&str> for ActivityError {
    fn from(message: &str) -> Self {
        ActivityError::retryable(GENERIC_ACTIVITY_KIND, message)
    }
}

/// An activity that failed for good, as the awaiting workflow sees it.
///
/// Produced when the host reports that the activity's last attempt failed, that it failed with
/// a non-retryable error, or that its attempts timed out; also when the activity's result
/// does not deserialise into the type the workflow asked for (kind `"InvalidOutput"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityFailed {
    /// The activity's registered name.
    pub activity_type: String,
    /// Error kind: the one the activity returned, or one chosen by the host or SDK
    /// (`"InvalidOutput"`, timeout kinds, `"UnknownActivity"`, ...).
    pub kind: String,
    /// Human-readable message.
    pub message: String,
    /// Number of attempts the host made (0 when unknown, as for `"InvalidOutput"`).
    pub attempts: u32,
    /// True when the activity ran past its start-to-close timeout on its last attempt.
    pub timed_out: bool,
    /// True when the failure was marked non-retryable.
    pub non_retryable: bool,
}

impl ActivityFailed {
    /// True when the activity was cancelled because the workflow was (kind `"Cancelled"`).
    pub fn is_cancelled(&self) -> bool {
        self.kind == CANCELLED_KIND
    }

    /// Builds the workflow-side view of a host-reported failure.
    pub(crate) fn from_failure(activity_type: &str, failure: Failure, timed_out: bool) -> Self {
        ActivityFailed {
            activity_type: activity_type.to_owned(),
            kind: failure.kind,
            message: failure.message,
            attempts: failure.attempts,
            timed_out,
            non_retryable: failure.non_retryable,
        }
    }
}

impl fmt::Display for ActivityFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.timed_out {
            "timed out"
        } else {
            "failed"
        };
        write!(
            f,
            "activity \"{}\" {verb} after {} attempt(s): {}: {}",
            self.activity_type, self.attempts, self.kind, self.message
        )
    }
}

impl std::error::Error for ActivityFailed {}

/// The kind of every error that reports a cancellation: [`Cancelled`], a cancelled
/// activity's [`ActivityFailed`], and the [`WorkflowError`] they become through `?`.
pub const CANCELLED_KIND: &str = "Cancelled";

/// The workflow was asked to stop (`pinion cancel`) while it waited.
///
/// Every wait that was pending when the cancellation arrived (a timer, an activity, a
/// signal) ends with this error; waits started afterwards run normally, so a workflow can
/// clean up (for example run a compensating activity) before it returns. Propagating it
/// with `?` ends the instance *cancelled* rather than failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    /// The reason the requester gave.
    pub reason: String,
}

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            f.write_str("the workflow was cancelled")
        } else {
            write!(f, "the workflow was cancelled: {}", self.reason)
        }
    }
}

impl std::error::Error for Cancelled {}

/// Kind [`CANCELLED_KIND`]: returning it (after a cancellation request) ends the instance
/// cancelled.
impl From<Cancelled> for WorkflowError {
    fn from(c: Cancelled) -> Self {
        WorkflowError::new(CANCELLED_KIND, c.reason)
    }
}

/// An error returned by a workflow: the instance fails with this kind and message.
///
/// # Examples
/// ```
/// use pinion_sdk::WorkflowError;
///
/// let e = WorkflowError::new("PaymentDeclined", "card 4000-0000-0000-0002 was declined");
/// assert_eq!(e.kind, "PaymentDeclined");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowError {
    /// Error kind, recorded in history and shown by `pinion status`.
    pub kind: String,
    /// Human-readable message.
    pub message: String,
    /// For an error made from an [`ActivityFailed`], the attempts that activity made;
    /// recorded as the failure's `attempts`, so the workflow's failure says how hard the
    /// engine tried. 0 otherwise.
    attempts: u32,
}

impl WorkflowError {
    /// A workflow error of this kind.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        WorkflowError {
            kind: kind.into(),
            message: message.into(),
            attempts: 0,
        }
    }

    /// The attempts of the activity this error came from (0 when it did not come from one).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// A [`CANCELLED_KIND`] error: returned after a cancellation request, it ends the
    /// instance cancelled with this message as the reason.
    pub fn cancelled(message: impl Into<String>) -> Self {
        WorkflowError::new(CANCELLED_KIND, message)
    }

    /// True for errors of kind [`CANCELLED_KIND`].
    pub fn is_cancelled(&self) -> bool {
        self.kind == CANCELLED_KIND
    }

    /// Converts to the wire shape. Workflows have no retry policy in ABI v1, so the flag only
    /// records intent: false for errors user code returns.
    pub(crate) fn into_failure(self) -> Failure {
        Failure {
            kind: self.kind,
            message: self.message,
            non_retryable: false,
            attempts: self.attempts,
        }
    }
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for WorkflowError {}

/// Keeps the activity's kind so callers up the chain can still match on it; the message
/// names the activity so the failure is traceable from the workflow's result alone.
impl From<ActivityFailed> for WorkflowError {
    fn from(failed: ActivityFailed) -> Self {
        let verb = if failed.timed_out {
            "timed out"
        } else {
            "failed"
        };
        let tries = match failed.attempts {
            0 => String::new(),
            1 => " after 1 attempt".into(),
            n => format!(" after {n} attempts"),
        };
        WorkflowError {
            message: format!(
                "activity \"{}\" {verb}{tries}: {}",
                failed.activity_type, failed.message
            ),
            kind: failed.kind,
            attempts: failed.attempts,
        }
    }
}

/// A workflow error of kind `"WorkflowError"` with this message.
impl From<String> for WorkflowError {
    fn from(message: String) -> Self {
        WorkflowError::new(GENERIC_WORKFLOW_KIND, message)
    }
}

/// A workflow error of kind `"WorkflowError"` with this message.
impl From<&str> for WorkflowError {
    fn from(message: &str) -> Self {
        WorkflowError::new(GENERIC_WORKFLOW_KIND, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_failure_keeps_its_kind_through_question_mark() {
        let failed = ActivityFailed {
            activity_type: "charge".into(),
            kind: "PaymentDeclined".into(),
            message: "no".into(),
            attempts: 3,
            timed_out: false,
            non_retryable: true,
        };
        let e: WorkflowError = failed.into();
        assert_eq!(e.kind, "PaymentDeclined");
        assert_eq!(e.message, "activity \"charge\" failed after 3 attempts: no");
        // The workflow's failure says how many attempts the activity got (it said 0).
        assert_eq!(e.into_failure().attempts, 3);
    }

    #[test]
    fn activity_error_stamps_the_attempt() {
        let f = ActivityError::non_retryable("Bad", "input").into_failure(3);
        assert_eq!(
            f,
            Failure {
                kind: "Bad".into(),
                message: "input".into(),
                non_retryable: true,
                attempts: 3
            }
        );
        assert!(!ActivityError::from("x").non_retryable);
    }
}
