//! Pooled slots for activity instances, and for the workflow instances of replay: wasmtime
//! engines with the pooling allocator.
//!
//! Every activity attempt runs in a fresh instance. With the on-demand allocator, each one
//! maps its linear memory, takes page faults as the guest touches it, and unmaps it (a TLB
//! shootdown on every core) when the store drops: measured on testkit's `step`, 41 µs an
//! attempt, most of it in the kernel. The pooling allocator keeps a fixed number of slots
//! (memory, table, instance, fiber stack) mapped for the life of the process and resets a
//! slot when its store drops. On Linux 6.7 and later (`PAGEMAP_SCAN`), wasmtime finds the
//! pages the attempt wrote and restores only those, up to [`KEEP_RESIDENT_PAGEMAP`] a slot;
//! elsewhere it rewrites the first [`KEEP_RESIDENT_PLAIN`] bytes with `memset` and gives the
//! rest back to the kernel. Either way the next attempt sees the module's initial memory,
//! never what an earlier attempt wrote.
//!
//! Why only activities: a workflow instance lives in the run cache for as long as its
//! instance is hot, so pooling them would tie the cache's size to the slot count, and each
//! live slot keeps its resident pages (tried: the in-flight benchmark's RSS grew from
//! 415 MiB to 4.7 GB). Activity instances live for one attempt. So do the workflow
//! instances of replay (one per history): [`ReplayPool`] gives them slots of their own.
//!
//! Why a second engine: the allocation strategy is a property of the engine. The module is
//! compiled once, by the main engine, and loaded into this one from its serialised form
//! (both engines have the same compilation settings, so the code is the same bytes).
//!
//! The pool never limits anything: an attempt that finds every slot taken
//! ([`wasmtime::PoolConcurrencyLimitError`]) runs on the main engine as before, and a
//! module the pool cannot hold (more tables, a bigger instance) always does.

use std::sync::{Arc, OnceLock};

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig,
};

use super::activity::{self, ActivityState};
use super::limiter::TABLE_ELEMENTS;
use super::GuestState;
use super::SandboxError;

/// Bytes of a slot's linear memory kept resident between attempts when the kernel can tell
/// wasmtime which pages were written (`PAGEMAP_SCAN`): only those are reset.
pub const KEEP_RESIDENT_PAGEMAP: usize = 2 << 20;

/// Bytes kept resident without `PAGEMAP_SCAN`: wasmtime then rewrites this whole prefix at
/// every reset, so it must stay small (256 slots × 2 MiB would be 512 MiB held for ever).
pub const KEEP_RESIDENT_PLAIN: usize = 128 << 10;

/// The pooled engine and its linker.
pub(crate) struct ActivityPool {
    engine: Engine,
    linker: Linker<ActivityState>,
}

/// A module's pooled activity instance template, made on first use: most loaded modules
/// (replay candidates, deploys) never run an activity in this process.
pub(crate) type PooledPre = Arc<OnceLock<Option<InstancePre<ActivityState>>>>;

impl ActivityPool {
    /// A pool of `slots` activity instances, each with at most `memory_bytes` of linear
    /// memory, on an engine configured by `base` (the main engine's settings).
    ///
    /// # Errors
    /// [`SandboxError::Setup`] when wasmtime cannot reserve the pool (an address-space
    /// limit such as `ulimit -v`, say); the caller then runs without one.
    pub(crate) fn new(
        base: Config,
        slots: u32,
        memory_bytes: usize,
    ) -> Result<ActivityPool, SandboxError> {
        let engine = pooling_engine(base, slots, memory_bytes)?;
        let mut linker = Linker::new(&engine);
        activity::add_to_linker(&mut linker).map_err(super::setup)?;
        Ok(ActivityPool { engine, linker })
    }

    /// The pooled engine (its epoch must tick with the main one's).
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The pooled template of `module` (compiled by the main engine), made once per
    /// module; `None` when the pool cannot hold it, and its attempts run on the main engine.
    pub(crate) fn prepare<'a>(
        &self,
        cell: &'a PooledPre,
        module: &Module,
    ) -> Option<&'a InstancePre<ActivityState>> {
        cell.get_or_init(|| {
            let bytes = module.serialize().ok()?;
            // SAFETY: the bytes were serialised just now by wasmtime itself, from a module
            // compiled in this process; they are not read from anywhere else.
            let pooled = unsafe { Module::deserialize(&self.engine, bytes) }.ok()?;
            self.linker.instantiate_pre(&pooled).ok()
        })
        .as_ref()
    }
}

/// An engine with the pooling allocator: `slots` instances of at most `memory_bytes` of
/// linear memory each, configured by `base` (the main engine's settings).
///
/// # Errors
/// [`SandboxError::Setup`] when wasmtime cannot reserve the pool.
fn pooling_engine(
    mut base: Config,
    slots: u32,
    memory_bytes: usize,
) -> Result<Engine, SandboxError> {
    let mut pool = PoolingAllocationConfig::new();
    let keep = if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes);
        KEEP_RESIDENT_PAGEMAP
    } else {
        KEEP_RESIDENT_PLAIN
    };
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        // A store holds one fiber stack while it runs; twice as many leaves room for a
        // store being torn down while its slot's next instance starts.
        .total_stacks(slots.saturating_mul(2))
        .total_component_instances(0)
        .max_memory_size(memory_bytes)
        .table_elements(TABLE_ELEMENTS)
        .linear_memory_keep_resident(keep)
        .table_keep_resident(64 << 10)
        .max_unused_warm_slots(slots);
    base.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&base).map_err(|e| SandboxError::Setup(format!("{e:#}")))
}

/// Pooled slots for the workflow instances of replay (`pinion replay`, verify, upgrade):
/// each lives for one history, like an activity attempt, so a slot is taken and reset
/// once per history instead of memory being mapped and unmapped (a TLB shootdown on
/// every core, while the other cores are replaying too). Live instances of the worker's
/// run cache never use it (see the module docs). Made on first use, by the sandbox.
pub(crate) struct ReplayPool {
    engine: Engine,
    linker: Linker<GuestState>,
}

/// A module's pooled workflow instance template for replay, made on first use.
pub(crate) type PooledWorkflowPre = Arc<OnceLock<Option<InstancePre<GuestState>>>>;

impl ReplayPool {
    /// A pool of `slots` workflow instances (see [`ActivityPool::new`]).
    ///
    /// # Errors
    /// [`SandboxError::Setup`] when wasmtime cannot reserve the pool.
    pub(crate) fn new(
        base: Config,
        slots: u32,
        memory_bytes: usize,
    ) -> Result<ReplayPool, SandboxError> {
        let engine = pooling_engine(base, slots, memory_bytes)?;
        let mut linker = Linker::new(&engine);
        super::wasi::add_to_linker(&mut linker).map_err(super::setup)?;
        Ok(ReplayPool { engine, linker })
    }

    /// The pooled engine. Workflows are bounded by fuel, not by the epoch, so it needs no
    /// ticking.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The pooled template of `module`, made once per module; `None` when the pool cannot
    /// hold it (replay then instantiates on the main engine).
    pub(crate) fn prepare<'a>(
        &self,
        cell: &'a PooledWorkflowPre,
        module: &Module,
    ) -> Option<&'a InstancePre<GuestState>> {
        cell.get_or_init(|| {
            let bytes = module.serialize().ok()?;
            // SAFETY: as in `ActivityPool::prepare`: serialised just now by wasmtime,
            // from a module compiled in this process.
            let pooled = unsafe { Module::deserialize(&self.engine, bytes) }.ok()?;
            let mut linker = self.linker.clone();
            super::wasi::define_missing(&mut linker, &pooled).ok()?;
            linker.instantiate_pre(&pooled).ok()
        })
        .as_ref()
    }
}

/// Whether an instantiation failed only because every slot of the pool is taken.
pub(crate) fn exhausted(e: &wasmtime::Error) -> bool {
    e.is::<wasmtime::PoolConcurrencyLimitError>()
}
