//! Integration tests: real wasm modules built from `examples/`, real SQLite files, the real
//! `pinion` binary. One test binary (faster to build), one module per area.

// Tests bound their waits with the real clock; the engine under test uses the injected one.
#![allow(clippy::disallowed_methods)]
// `pg.rs` compiles some test files a second time, on PostgreSQL: on purpose.
#![allow(clippy::duplicate_mod)]

mod common;

mod api;
mod api_cli;
mod api_fuzz;
mod api_jobs;
mod api_limits;
mod api_signals;
mod api_tls;
mod authoring;
mod census;
mod census_api;
mod children;
mod cli;
mod cli_output;
mod console;
mod determinism;
mod engine;
mod events;
mod golden;
mod harness;
mod heartbeats;
mod hostile;
mod logs;
mod ops;
mod pg;
mod pool;
mod reach;
mod replay;
mod rollout;
mod secrets;
mod signals;
mod verify_scale;
mod versioning;
