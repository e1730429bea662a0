//! Durable state of rollouts: aliases (with ramping and history), per-module usage for
//! drain status and garbage collection, verified upgrades, and non-determinism policies.
//!
//! A separate trait from [`super::Store`]'s execution state because its callers are the
//! operator verbs (`alias`, `modules`, `gc`, `upgrade`), not the worker loops; every backend
//! implements both.

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::history::{InstanceId, ModuleHash};

/// What happens to an instance whose replay diverges from its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NondeterminismPolicy {
    /// The instance waits, blocked, until it is upgraded to a compatible module (default).
    Block,
    /// The instance fails with kind `Nondeterminism`.
    Fail,
}

impl NondeterminismPolicy {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            NondeterminismPolicy::Block => "block",
            NondeterminismPolicy::Fail => "fail",
        }
    }

    /// Parses `block` or `fail`.
    pub fn parse(s: &str) -> Option<NondeterminismPolicy> {
        match s {
            "block" => Some(NondeterminismPolicy::Block),
            "fail" => Some(NondeterminismPolicy::Fail),
            _ => None,
        }
    }
}

/// An alias and where it sends new instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    /// Alias name.
    pub name: String,
    /// The module new instances start on.
    pub module_hash: ModuleHash,
    /// The module being ramped to, and the share (0-100) of new instances it gets.
    pub ramp: Option<(ModuleHash, u8)>,
    /// Last change.
    pub updated_at_ms: u64,
}

impl AliasRecord {
    /// The module this alias starts the instance `instance_id` on: the ramp module when
    /// the id's bucket falls under the ramp share, else the alias's module.
    pub fn module_for(&self, instance_id: &str) -> &ModuleHash {
        match &self.ramp {
            Some((hash, percent)) if ramp_bucket(instance_id) < *percent => hash,
            _ => &self.module_hash,
        }
    }
}

/// FNV-1a of the instance id, mod 100: the ramp bucket. Deterministic, so a retried start
/// with the same id lands on the same module.
pub fn ramp_bucket(instance_id: &str) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in instance_id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (h % 100) as u8
}

/// One change of an alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasChange {
    /// `set`, `ramp` or `ramp-cancel`.
    pub action: String,
    /// The module set or ramped to.
    pub module_hash: Option<ModuleHash>,
    /// The ramp share, for `ramp`.
    pub ramp_percent: Option<u8>,
    /// When.
    pub at_ms: u64,
}

/// How many instances pin a module, by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleUsage {
    /// Running instances.
    pub running: u64,
    /// Blocked instances.
    pub blocked: u64,
    /// Completed instances.
    pub completed: u64,
    /// Failed instances.
    pub failed: u64,
}

/// Rollout state. Implemented by every store backend.
pub trait DeploymentStore {
    /// Points `name` at `hash` (creating it), ending any ramp. Recorded in the history.
    fn set_alias(&self, name: &str, hash: &ModuleHash, now_ms: u64) -> Result<(), StoreError>;
    /// Sends `percent` of new instances of an existing alias to `hash`.
    fn ramp_alias(
        &self,
        name: &str,
        hash: &ModuleHash,
        percent: u8,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    /// Ends a ramp; every new instance goes to the alias's module again.
    fn cancel_ramp(&self, name: &str, now_ms: u64) -> Result<(), StoreError>;
    /// One alias.
    fn get_alias(&self, name: &str) -> Result<Option<AliasRecord>, StoreError>;
    /// Every alias, by name.
    fn list_aliases(&self) -> Result<Vec<AliasRecord>, StoreError>;
    /// Changes of an alias, oldest first.
    fn alias_history(&self, name: &str) -> Result<Vec<AliasChange>, StoreError>;
    /// Names of the aliases that point at, ramp to, or ever pointed or ramped to `hash`,
    /// sorted: what a grant naming an alias covers.
    fn aliases_of_module(&self, hash: &ModuleHash) -> Result<Vec<String>, StoreError>;
    /// Instance counts per module hash.
    fn module_usage(&self) -> Result<Vec<(ModuleHash, ModuleUsage)>, StoreError>;
    /// Deletes a module if no alias targets it and no running or blocked instance pins it,
    /// checked in the same transaction. Returns whether it was deleted.
    fn delete_module_if_unused(&self, hash: &ModuleHash) -> Result<bool, StoreError>;
    /// Moves a running or blocked instance from module `from` to `to`, appending a
    /// `ModuleUpgraded` event, if it still pins `from` and its history still has
    /// `expected_events` events (else [`StoreError::Conflict`], so two overlapping upgrades
    /// move it once). A blocked instance becomes running again; queued activity attempts
    /// switch module.
    fn upgrade_instance(
        &self,
        id: &InstanceId,
        expected_events: u64,
        from: &ModuleHash,
        to: &ModuleHash,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    /// Sets the non-determinism policy of a module's workflow type.
    fn set_policy(
        &self,
        hash: &ModuleHash,
        workflow_type: &str,
        policy: NondeterminismPolicy,
    ) -> Result<(), StoreError>;
    /// The policy of a module's workflow type (block when never set).
    fn policy(
        &self,
        hash: &ModuleHash,
        workflow_type: &str,
    ) -> Result<NondeterminismPolicy, StoreError>;
    /// Fails a running instance without an activation (the `fail` policy).
    fn fail_instance(
        &self,
        id: &InstanceId,
        failure: &pinion_abi::Failure,
        now_ms: u64,
    ) -> Result<(), StoreError>;
}
