//! The HTTP JSON API: what `pinion server` serves, and the client the CLI's `--server`
//! mode uses.
//!
//! One trait, [`Api`], lists every operation. It has two implementations: [`Pinion`] itself
//! ([`local`], the embedded database) and [`Client`] (HTTP to a server). The server's
//! handlers call the first inside `spawn_blocking` (the engine is synchronous: SQLite); the
//! CLI calls whichever it was given, so a verb prints the same text, the same `--json` and
//! exits with the same code either way. Request and response bodies are the domain types
//! ([`types`]), errors carry one stable code ([`error`]).
//!
//! | file | what |
//! |---|---|
//! | `types.rs` | request/response bodies, limits, the pagination cursor |
//! | `error.rs` | [`ApiError`], the code table (HTTP status, CLI exit code) |
//! | `local.rs` | `impl Api for Pinion`: the operations, over the engine |
//! | `routes.rs` | the route table and the handlers |
//! | `extract.rs` | request parsing that answers in the API's error shape |
//! | `auth.rs` | bearer tokens, constant-time check |
//! | `server.rs` | binding, serving, graceful shutdown, the workers |
//! | `client.rs` | the blocking HTTP client |
//! | `events.rs` | the `/v1/events` Server-Sent Events stream |
//! | `webhooks.rs` | lifecycle events POSTed to webhooks, signed, with retries and a give-up limit |
//! | `dead_letters.rs` | `/v1/webhooks/dead-letters`: the events webhooks gave up on, listed and redelivered |
//! | `openapi.json` | the OpenAPI 3.0 document served at `/openapi.json` |
//! | `ui/` | the web console: static files at `/ui`, embedded, served without the token |
//!
//! # Adding an endpoint
//!
//! 1. A method on [`Api`], implemented in `local.rs` (and in `client.rs`).
//! 2. A handler in `routes.rs` and one line in [`routes::table`] (method, path, handler).
//! 3. Its entry under `paths` in `openapi.json` (with any new schema under `components`).
//!
//! The unit test `openapi_describes_exactly_the_routes` (in `routes.rs`) fails until the
//! table and the document agree.

pub mod auth;
pub mod client;
pub mod dead_letters;
pub mod error;
mod events;
mod extract;
pub mod jobs;
pub mod local;
mod ops;
pub mod routes;
pub mod server;
pub mod tls;
pub mod types;
pub mod ui;
pub mod webhooks;

use std::time::Duration;

pub use auth::Token;
pub use client::Client;
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use server::{serve, ServeError, ServerConfig};

use crate::census::{MarkerCensus, MarkerQuery};
use crate::engine::Pinion;
use crate::history::HistoryExport;
use crate::rollout::ModuleStatus;
use crate::store::{AliasChange, AliasRecord, InstanceRecord, LifecycleEvent};
use types::{
    AliasRamp, AliasSet, Candidate, DeployOptions, Deployment, EventQuery, GcBody, GcResponse,
    InputBody, InstancePage, ListQuery, QueryAnswer, RampBody, ReplayQuery, ReplayResponse,
    SetAliasBody, Signalled, StartBody, Started, StopBody, StopVerb, Stopped, UpgradeBody,
    UpgradeResponse,
};

/// The OpenAPI 3.0 document of the HTTP API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every operation of the API, local or remote. All calls block.
pub trait Api {
    /// Validates and stores a module (`pinion deploy`).
    ///
    /// # Errors
    /// `invalid_module`; `verification_failed` ([`ApiError::Refused`]) when `verify` found
    /// a divergence (nothing stored); `not_found` / `invalid_input` for a bad policy.
    fn deploy(&self, wasm: &[u8], options: &DeployOptions) -> Result<Deployment, ApiError>;
    /// Starts an instance.
    ///
    /// # Errors
    /// Unknown module, alias or workflow type; bad id; id in use.
    fn start(&self, body: &StartBody) -> Result<Started, ApiError>;
    /// One instance.
    ///
    /// # Errors
    /// `not_found`.
    fn status(&self, id: &str) -> Result<InstanceRecord, ApiError>;
    /// Waits until the instance is completed, failed or blocked, up to `timeout`.
    ///
    /// # Errors
    /// `not_found`, `imported`, `timed_out`.
    fn wait(&self, id: &str, timeout: Duration) -> Result<InstanceRecord, ApiError>;
    /// One page of instances, newest first.
    ///
    /// # Errors
    /// Unknown module; a bad cursor.
    fn list(&self, query: &ListQuery) -> Result<InstancePage, ApiError>;
    /// An instance's history in the export format.
    ///
    /// # Errors
    /// `not_found`.
    /// With `run`, that run's: an archived one (ended with continue-as-new) or the current.
    fn history(&self, id: &str, run: Option<u32>) -> Result<HistoryExport, ApiError>;
    /// Queues signal `name` for a running or blocked instance; durable when it returns.
    ///
    /// # Errors
    /// `not_found`; `not_accepting` for an instance that has ended or is imported;
    /// `invalid_input` for an empty name.
    fn signal(&self, id: &str, name: &str, body: &InputBody) -> Result<Signalled, ApiError>;
    /// Evaluates the workflow's read-only query handler `name`; writes nothing.
    ///
    /// # Errors
    /// `not_found` (instance or handler); `invalid_input` (input the handler does not
    /// accept); `query_failed`; `rebuild_failed` when replay cannot rebuild the instance.
    fn query(&self, id: &str, name: &str, body: &InputBody) -> Result<QueryAnswer, ApiError>;
    /// Cancels or terminates one instance (`id`), or every running and blocked instance
    /// `module` and/or `workflow_type` select. Per-instance failures of a bulk stop are in
    /// the answer.
    ///
    /// # Errors
    /// `invalid_input` for no, mixed or empty selectors; for one id, `not_found` and
    /// `not_accepting`.
    fn stop(&self, verb: StopVerb, body: &StopBody) -> Result<Stopped, ApiError>;
    /// Lifecycle events after `query.after`, oldest first: at most `query.limit`, else
    /// every one committed when the call began.
    ///
    /// # Errors
    /// `bad_request` for an unknown type; `not_found` for an unknown module.
    fn events(&self, query: &EventQuery) -> Result<Vec<LifecycleEvent>, ApiError>;
    /// Every module with aliases, usage and rollout state.
    ///
    /// # Errors
    /// Storage errors.
    fn modules(&self) -> Result<Vec<ModuleStatus>, ApiError>;
    /// The marker census: instances by the path they recorded at each version or patch
    /// marker, and which old branches may be deleted (`pinion markers`).
    ///
    /// # Errors
    /// Unknown module; storage errors.
    fn markers(&self, query: &MarkerQuery) -> Result<MarkerCensus, ApiError>;
    /// Every alias.
    ///
    /// # Errors
    /// Storage errors.
    fn aliases(&self) -> Result<Vec<AliasRecord>, ApiError>;
    /// Points an alias at a module, ending any ramp.
    ///
    /// # Errors
    /// Unknown module; `verification_failed` (alias not moved).
    fn set_alias(&self, name: &str, body: &SetAliasBody) -> Result<AliasSet, ApiError>;
    /// Ramps an alias to a module.
    ///
    /// # Errors
    /// Unknown alias or module; a share over 100.
    fn ramp_alias(&self, name: &str, body: &RampBody) -> Result<AliasRamp, ApiError>;
    /// Ends an alias's ramp.
    ///
    /// # Errors
    /// Unknown alias.
    fn cancel_ramp(&self, name: &str) -> Result<AliasRamp, ApiError>;
    /// An alias's changes, oldest first.
    ///
    /// # Errors
    /// Unknown alias.
    fn alias_history(&self, name: &str) -> Result<Vec<AliasChange>, ApiError>;
    /// Replays recorded histories against a candidate, in isolation.
    ///
    /// # Errors
    /// `invalid_module` for a candidate that is not a module; a bad filter.
    fn replay(
        &self,
        candidate: &Candidate,
        query: &ReplayQuery,
    ) -> Result<ReplayResponse, ApiError>;
    /// Verified upgrade of running or blocked instances.
    ///
    /// # Errors
    /// Unknown target or instance; no or several selectors.
    fn upgrade(&self, body: &UpgradeBody) -> Result<UpgradeResponse, ApiError>;
    /// Deletes drained, unaliased modules.
    ///
    /// # Errors
    /// Storage errors.
    fn gc(&self, body: &GcBody) -> Result<GcResponse, ApiError>;
}

/// Asserts at compile time that the engine is an [`Api`] (for `&dyn Api` callers).
const _: fn(&Pinion) -> &dyn Api = |p| p;
