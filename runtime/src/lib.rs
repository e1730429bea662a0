//! pinion-runtime: durable WebAssembly workflows pinned by content hash.
//!
//! Layers, each depending only on the ones before it (see `docs/design.md`):
//! [`history`] and [`clock`] (domain) ← [`store`] (SQLite behind a trait) ← [`registry`]
//! (modules by hash, compile cache) ← [`sandbox`] (wasmtime, deterministic WASI, limits) ←
//! [`executor`] (activations, determinism checks) ← [`worker`] (task loops, activities,
//! timers, retries) ← [`engine`] (the library API the CLI and tests use) ← `cli`.
#![deny(missing_docs)]

pub mod bench;
pub mod cli;
pub mod clock;
pub mod engine;
pub mod executor;
pub mod history;
pub mod registry;
pub mod replay;
pub mod sandbox;
pub mod store;
pub mod worker;

pub use engine::{Error, Pinion, PinionConfig, StartRequest, WorkerGuard};
pub use history::{EventKind, HistoryEvent, InstanceId, InstanceStatus, ModuleHash, Payload};
pub use worker::WorkerConfig;
