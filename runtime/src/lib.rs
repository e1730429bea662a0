//! pinion-runtime: durable WebAssembly workflows pinned by content hash.
//!
//! Layers; each uses only the ones listed before it (see `docs/design.md`):
//! [`history`] and [`clock`] (domain types) → [`store`] (SQLite behind traits) →
//! [`sandbox`] (wasmtime, deterministic WASI, limits) → [`registry`] (modules by hash,
//! validation, compile cache) → [`executor`] (activations, determinism checks) →
//! [`worker`] (task loops, activities, timers, retries) → [`replay`] (any module against any
//! histories) → [`engine`] (the library API: open, deploy, start, inspect, run workers) →
//! [`rollout`] (aliases, drain status, gc, verified upgrade: more methods on the engine) and
//! [`census`] (which open instances took which path of each version or patch marker) →
//! [`api`] (the HTTP JSON API: server, client, and the `Api` trait both implement) →
//! [`bench`] and [`cli`]. [`telemetry`] sets up the logs every layer writes through
//! `tracing`.
#![deny(missing_docs)]

pub mod api;
pub mod bench;
pub mod census;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod executor;
pub mod history;
pub mod pool;
pub mod registry;
pub mod replay;
pub mod rollout;
pub mod sandbox;
pub mod store;
pub mod telemetry;
pub mod worker;

pub use engine::{Error, Pinion, PinionConfig, Progress, StartRequest, WorkerGuard};
pub use history::{EventKind, HistoryEvent, InstanceId, InstanceStatus, ModuleHash, Payload};
pub use worker::WorkerConfig;
