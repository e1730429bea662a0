//! [`ActivityContext`]: what an activity may know about the call it is serving.
//!
//! Activities are plain synchronous functions, run by the host in a fresh instance of the
//! module with real clocks, real randomness and whatever capabilities the operator grants.
//! Most need nothing but their input; those that do (to vary behaviour by attempt, or to
//! build an idempotency key from the instance id and sequence number) take an
//! `ActivityContext` as their first parameter. Both forms register the same way, see
//! [`export!`](crate::export).
//!
//! # Heartbeats
//!
//! A long activity calls [`ActivityContext::heartbeat`] as it makes progress, with details
//! that say how far it got (any JSON value). That does three things:
//!
//! - with a [heartbeat timeout](crate::ActivityOptions::heartbeat_timeout), it proves the
//!   attempt is alive: one that falls silent for longer is abandoned and retried;
//! - the last details reach the next attempt ([`ActivityContext::heartbeat_details`]), so a
//!   retry resumes where the failed attempt stopped instead of starting over;
//! - it is where the attempt learns that its workflow cancelled it: `heartbeat` returns a
//!   non-retryable `"Cancelled"` error, which `?` turns into the end of the activity.
//!
//! ```
//! use pinion_sdk::{ActivityContext, ActivityError};
//!
//! fn copy_rows(ctx: ActivityContext, total: u64) -> Result<u64, ActivityError> {
//!     // Resume after the last row an earlier attempt reported.
//!     let mut done: u64 = ctx.heartbeat_details()?.unwrap_or(0);
//!     while done < total {
//!         done += 1; // ... copy one row ...
//!         ctx.heartbeat(&done)?;
//!     }
//!     Ok(done)
//! }
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ActivityError, CANCELLED_KIND};

/// Facts about the current activity attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityContext {
    pub(crate) attempt: u32,
    pub(crate) instance_id: String,
    pub(crate) activity_type: String,
    pub(crate) seq: u32,
    pub(crate) heartbeat_details: Option<Vec<u8>>,
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

    /// Records a heartbeat: the attempt is alive, and `details` (any JSON-serialisable
    /// value) say how far it got. The host keeps the latest details for the next attempt
    /// and writes them to the database at most every few seconds (and always when the
    /// attempt fails), so a crash loses at most that much progress.
    ///
    /// # Errors
    /// A non-retryable error of kind [`CANCELLED_KIND`] when the attempt should stop: its
    /// workflow cancelled the activity, or the instance was terminated. Return it (`?`)
    /// after any clean-up; what the attempt returns then is discarded. A non-retryable
    /// `"InvalidHeartbeatDetails"` when `details` do not serialise or exceed 1 MiB.
    ///
    /// Outside a pinion activity (a native build, for example a unit test) a heartbeat is
    /// accepted and forgotten.
    pub fn heartbeat<T: Serialize + ?Sized>(&self, details: &T) -> Result<(), ActivityError> {
        let bytes = serde_json::to_vec(details).map_err(|e| {
            ActivityError::non_retryable(
                "InvalidHeartbeatDetails",
                format!("heartbeat details do not serialise to JSON: {e}"),
            )
        })?;
        match host::heartbeat(&bytes) {
            0 => Ok(()),
            1 => Err(ActivityError::non_retryable(
                CANCELLED_KIND,
                format!(
                    "activity \"{}\" (seq {}) of {} was cancelled",
                    self.activity_type, self.seq, self.instance_id
                ),
            )),
            code => Err(ActivityError::non_retryable(
                "InvalidHeartbeatDetails",
                format!(
                    "the host refused the heartbeat (code {code}): details of {} bytes; the limit is 1 MiB",
                    bytes.len()
                ),
            )),
        }
    }

    /// The details of the last heartbeat an earlier attempt of this activity recorded, or
    /// `None` on a first attempt or when no attempt has heartbeated yet.
    ///
    /// # Errors
    /// A non-retryable `"InvalidHeartbeatDetails"` when the recorded details do not decode
    /// as `T` (the activity's code changed the type it heartbeats).
    pub fn heartbeat_details<T: DeserializeOwned>(&self) -> Result<Option<T>, ActivityError> {
        let Some(bytes) = &self.heartbeat_details else {
            return Ok(None);
        };
        serde_json::from_slice(bytes).map(Some).map_err(|e| {
            ActivityError::non_retryable(
                "InvalidHeartbeatDetails",
                format!(
                    "the last heartbeat details of activity \"{}\" do not decode: {e}",
                    self.activity_type
                ),
            )
        })
    }
}

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "pinion")]
    extern "C" {
        #[link_name = "heartbeat"]
        fn pinion_heartbeat(ptr: *const u8, len: i32) -> i32;
    }

    pub(super) fn heartbeat(details: &[u8]) -> i32 {
        // SAFETY: the host reads `details` during the call and keeps no reference to it.
        unsafe { pinion_heartbeat(details.as_ptr(), details.len() as i32) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    pub(super) fn heartbeat(_details: &[u8]) -> i32 {
        0
    }
}
