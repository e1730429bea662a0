//! Lifecycle events: the outbox of instance transitions.
//!
//! Every transition of an instance (started, completed, failed, cancelled, terminated,
//! blocked, upgraded, continued as new) is appended to the outbox *in the transaction that
//! makes it*, so readers see exactly the committed transitions, in commit order, each with a
//! dense increasing id to resume after. Readers are the server's `/v1/events` stream, the
//! webhook deliverers and `pinion events`; none of them can miss a transition, whichever
//! process made it.

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::history::{InstanceId, ModuleHash, ParentRef};

/// What happened to the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transition {
    /// Created (by `start`, or by its parent as a child workflow).
    Started {
        /// The parent, for a child workflow.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    /// Returned a result.
    Completed,
    /// Returned an error, or failed by its non-determinism policy.
    Failed {
        /// The failure.
        failure: pinion_abi::Failure,
    },
    /// Ended after observing a cancellation.
    Cancelled {
        /// The reason given with the cancellation.
        reason: String,
    },
    /// Ended at once by `terminate` (or by its parent's end).
    Terminated {
        /// Why.
        reason: String,
    },
    /// Stopped by a determinism error; waits for an upgrade.
    Blocked {
        /// The divergence report.
        reason: String,
    },
    /// Moved to another module by a verified upgrade (`module_hash` is the new one).
    Upgraded {
        /// The module it was pinned to before.
        from: ModuleHash,
    },
    /// Ended its run with continue-as-new; the event's `run`, `workflow_type` and
    /// `module_hash` are the new run's.
    ContinuedAsNew,
}

impl Transition {
    /// Every kind's name, as in the `type` field.
    pub const NAMES: [&'static str; 8] = [
        "started",
        "completed",
        "failed",
        "cancelled",
        "terminated",
        "blocked",
        "upgraded",
        "continued_as_new",
    ];

    /// The `type` name.
    pub fn name(&self) -> &'static str {
        match self {
            Transition::Started { .. } => "started",
            Transition::Completed => "completed",
            Transition::Failed { .. } => "failed",
            Transition::Cancelled { .. } => "cancelled",
            Transition::Terminated { .. } => "terminated",
            Transition::Blocked { .. } => "blocked",
            Transition::Upgraded { .. } => "upgraded",
            Transition::ContinuedAsNew => "continued_as_new",
        }
    }
}

/// One published transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// Position in the outbox: increasing in commit order; resume after it.
    pub id: u64,
    /// The instance.
    pub instance_id: InstanceId,
    /// Its workflow type.
    pub workflow_type: String,
    /// The module it is pinned to (after the transition).
    pub module_hash: ModuleHash,
    /// Its run (1, then +1 at each continue-as-new).
    pub run: u32,
    /// When it committed, in ms since the epoch.
    pub at_ms: u64,
    /// What happened (`type` and its fields).
    #[serde(flatten)]
    pub transition: Transition,
}

/// Which events to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events after this id (0: from the start).
    pub after: u64,
    /// Only events up to this id.
    pub until: Option<u64>,
    /// Only this instance's.
    pub instance_id: Option<InstanceId>,
    /// Only instances of this workflow type.
    pub workflow_type: Option<String>,
    /// Only instances pinned to this module (after the transition).
    pub module_hash: Option<ModuleHash>,
    /// Only these kinds ([`Transition::NAMES`]; empty: all).
    pub kinds: Vec<String>,
    /// At most this many, oldest first.
    pub limit: u32,
}

/// The outbox, read side, and the webhooks' delivery positions. Every backend implements
/// it; the write side is part of each transition's transaction.
pub trait EventStore {
    /// Events matching `filter`, oldest first.
    fn lifecycle_events(&self, filter: &EventFilter) -> Result<Vec<LifecycleEvent>, StoreError>;
    /// The id of the newest event (0 when there is none).
    fn last_event_id(&self) -> Result<u64, StoreError>;
    /// The id of the last event webhook `url` acknowledged; `None` for a new webhook.
    fn webhook_cursor(&self, url: &str) -> Result<Option<u64>, StoreError>;
    /// Records that webhook `url` acknowledged every event up to `id`.
    fn set_webhook_cursor(&self, url: &str, id: u64, now_ms: u64) -> Result<(), StoreError>;
    /// Records that webhook `url` gave up on `event` (a dead letter); a second record of
    /// the same event for the same URL (sent again after a crash) updates the first.
    fn add_dead_letter(&self, letter: &NewDeadLetter) -> Result<(), StoreError>;
    /// Every dead letter, oldest first.
    fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError>;
    /// One dead letter.
    fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError>;
    /// Deletes a dead letter (redelivered); false when it was not there.
    fn remove_dead_letter(&self, id: u64) -> Result<bool, StoreError>;
    /// Counts one more failed attempt (a failed redelivery) of a dead letter.
    fn dead_letter_failed(&self, id: u64, error: &str, now_ms: u64) -> Result<(), StoreError>;
    /// Becomes the one process doing `what` (delivering one webhook) among those sharing
    /// the database, for as long as the returned [`Lead`] is held; `None` when another
    /// process leads. A database one process uses (SQLite) always grants it.
    fn lead(&self, what: &str) -> Result<Option<Box<dyn Lead>>, StoreError> {
        let _ = what;
        Ok(Some(Box::new(Sole)))
    }
}

/// The lead of [`EventStore::lead`]; given up when dropped.
pub trait Lead: Send {
    /// Whether it is still held (false once the connection holding it was lost: another
    /// process may lead now).
    fn held(&mut self) -> bool;
}

/// The lead of the only process on a database.
struct Sole;

impl Lead for Sole {
    fn held(&mut self) -> bool {
        true
    }
}

/// An event a webhook gave up on, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeadLetter {
    /// The webhook's URL.
    pub url: String,
    /// The event, as it was sent.
    pub event: LifecycleEvent,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last one failed.
    pub last_error: String,
    /// When the first attempt failed, in ms since the epoch.
    pub first_failed_at_ms: u64,
    /// When the webhook gave up.
    pub now_ms: u64,
}

/// A recorded dead letter (`GET /v1/webhooks/dead-letters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its id, to redeliver it by.
    pub id: u64,
    /// The webhook's URL, without query string or user info (either may hold a secret).
    pub webhook: String,
    /// The event that was not acknowledged.
    pub event: LifecycleEvent,
    /// Attempts made so far (redeliveries included).
    pub attempts: u32,
    /// Why the last attempt failed (`HTTP 500`, a connection error).
    pub last_error: String,
    /// When the first attempt failed, in ms since the epoch.
    pub first_failed_at_ms: u64,
    /// When it was last tried, in ms since the epoch.
    pub updated_at_ms: u64,
    /// The full URL, to deliver to; never serialised.
    #[serde(skip)]
    pub url: String,
}

/// The URL without its query string and user info, for logs and listings (either may hold
/// a secret).
pub fn display_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => no_query.to_owned(),
    }
}
