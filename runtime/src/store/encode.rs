//! What both backends write the same way: JSON text of a value, the failure recorded for a
//! cancelled or terminated instance, and the instance-row columns of an activation's
//! outcome. One definition, so SQLite and PostgreSQL rows stay byte-for-byte alike (an
//! export, an import and a later `pinion migrate` copy them without re-encoding).

use super::{InstanceOutcome, StoreError};

/// A value as the JSON text both backends store.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Database(format!("cannot encode: {e}")))
}

/// The failure recorded for an instance that was cancelled or terminated: the kind says
/// which, the message is the reason.
pub(crate) fn reason_failure(kind: &str, reason: &str) -> pinion_abi::Failure {
    pinion_abi::Failure {
        kind: kind.into(),
        message: reason.into(),
        non_retryable: true,
        attempts: 0,
    }
}

/// The instance row's columns after an activation with this outcome.
pub(crate) struct OutcomeColumns {
    /// `status`.
    pub status: &'static str,
    /// `result`, for a completed instance.
    pub result: Option<String>,
    /// `failure`, for a failed or cancelled one.
    pub failure: Option<String>,
    /// What a parent learns of a cancelled instance (the reason is empty otherwise).
    pub cancelled: pinion_abi::Failure,
}

/// Encodes `outcome` as the instance row's columns.
pub(crate) fn outcome_columns(outcome: &InstanceOutcome) -> Result<OutcomeColumns, StoreError> {
    let cancelled = match outcome {
        InstanceOutcome::Cancelled(reason) => reason_failure("Cancelled", reason),
        _ => reason_failure("Cancelled", ""),
    };
    let (result, failure, status) = match outcome {
        InstanceOutcome::Running => (None, None, "running"),
        InstanceOutcome::Completed(p) => (Some(p.json().to_owned()), None, "completed"),
        InstanceOutcome::Failed(f) => (None, Some(to_json(f)?), "failed"),
        InstanceOutcome::Cancelled(_) => (None, Some(to_json(&cancelled)?), "cancelled"),
        InstanceOutcome::ContinuedAsNew(..) => (None, None, "continued"),
    };
    Ok(OutcomeColumns {
        status,
        result,
        failure,
        cancelled,
    })
}
