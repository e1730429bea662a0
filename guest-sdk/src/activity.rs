//! [`ActivityContext`]: what an activity may know about the call it is serving.
//!
//! Activities are plain synchronous functions, run by the host in a fresh instance of the
//! module with real clocks, real randomness and whatever capabilities the operator grants.
//! Most need nothing but their input; those that do (to vary behaviour by attempt, or to
//! build an idempotency key from the instance id and sequence number) take an
//! `ActivityContext` as their first parameter. Both forms register the same way, see
//! [`export!`](crate::export).

/// Facts about the current activity attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityContext {
    pub(crate) attempt: u32,
    pub(crate) instance_id: String,
    pub(crate) activity_type: String,
    pub(crate) seq: u32,
}

impl ActivityContext {
    /// The attempt number, from 1. Greater than 1 when the host is retrying.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The workflow instance that scheduled this activity.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The activity's registered name.
    pub fn activity_type(&self) -> &str {
        &self.activity_type
    }

    /// The activity's sequence number in its workflow instance. Together with
    /// [`instance_id`](Self::instance_id) it identifies the call across retries, which makes
    /// it a natural idempotency key for external systems.
    pub fn seq(&self) -> u32 {
        self.seq
    }
}
