//! A pool of fiber stacks for async activity calls.
//!
//! Every activity attempt runs in a fresh store, and wasmtime's on-demand allocator gives
//! each store's first `call_async` a new stack: an `mmap`, page faults as it is touched,
//! and an `munmap` (a TLB shootdown on every core) when the store is dropped. At thousands
//! of attempts a second that was a measurable share of the machine. This creator keeps
//! released stacks mapped and hands them out again.
//!
//! wasmtime has a pooling allocator that does this and much more (memories, tables), but
//! it reserves every slot up front and, measured on the in-flight benchmark, cost more
//! than it saved; stacks are the part worth pooling. Stacks are not zeroed on reuse (as
//! in wasmtime's pooling allocator by default): guest code cannot read the host stack, and
//! `zeroed` requests (`Config::async_stack_zeroing`) are honoured.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use wasmtime::{StackCreator, StackMemory};

/// Guard region below each stack, catching overflows.
const GUARD: usize = 64 << 10;

struct Region {
    /// Start of the mapping (the guard region).
    base: usize,
    /// Usable stack bytes above the guard.
    size: usize,
}

/// Released stacks, kept mapped.
pub struct StackPool {
    free: Mutex<Vec<Region>>,
    keep: usize,
}

impl StackPool {
    /// A pool keeping up to `keep` released stacks mapped.
    pub fn new(keep: usize) -> Arc<StackPool> {
        Arc::new(StackPool {
            free: Mutex::new(Vec::new()),
            keep,
        })
    }
}

fn map(size: usize) -> Result<Region, wasmtime::Error> {
    let total = size + GUARD;
    // SAFETY: a fresh anonymous private mapping; the guard stays PROT_NONE.
    unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if base == libc::MAP_FAILED {
            return Err(wasmtime::Error::msg(format!(
                "cannot map a {size}-byte fiber stack: {}",
                std::io::Error::last_os_error()
            )));
        }
        let stack = (base as *mut u8).add(GUARD);
        if libc::mprotect(stack.cast(), size, libc::PROT_READ | libc::PROT_WRITE) != 0 {
            let e = std::io::Error::last_os_error();
            libc::munmap(base, total);
            return Err(wasmtime::Error::msg(format!(
                "cannot make a fiber stack writable: {e}"
            )));
        }
        Ok(Region {
            base: base as usize,
            size,
        })
    }
}

fn unmap(r: &Region) {
    // SAFETY: the region was mapped by `map` with exactly this length and is unused.
    unsafe {
        libc::munmap(r.base as *mut libc::c_void, r.size + GUARD);
    }
}

// SAFETY: every stack handed out is a private mapping of `size` writable bytes above a
// PROT_NONE guard, page aligned, and is reused only after wasmtime dropped it.
unsafe impl StackCreator for PoolHandle {
    fn new_stack(
        &self,
        size: usize,
        zeroed: bool,
    ) -> Result<Box<dyn StackMemory>, wasmtime::Error> {
        let reused = {
            let mut free = self.0.free.lock().expect("stack pool lock");
            free.iter()
                .position(|r| r.size == size)
                .map(|i| free.swap_remove(i))
        };
        let region = match reused {
            Some(r) => {
                if zeroed {
                    // SAFETY: `size` writable bytes above the guard.
                    unsafe { std::ptr::write_bytes((r.base + GUARD) as *mut u8, 0, r.size) };
                }
                r
            }
            None => map(size)?,
        };
        Ok(Box::new(PooledStack {
            region: Some(region),
            pool: self.0.clone(),
        }))
    }
}

/// The creator handed to wasmtime (`Config::with_host_stack`).
pub struct PoolHandle(pub Arc<StackPool>);

struct PooledStack {
    region: Option<Region>,
    pool: Arc<StackPool>,
}

// SAFETY: see `StackCreator` above.
unsafe impl StackMemory for PooledStack {
    fn top(&self) -> *mut u8 {
        let r = self.region.as_ref().expect("live stack");
        (r.base + GUARD + r.size) as *mut u8
    }

    fn range(&self) -> Range<usize> {
        let r = self.region.as_ref().expect("live stack");
        (r.base + GUARD)..(r.base + GUARD + r.size)
    }

    fn guard_range(&self) -> Range<*mut u8> {
        let r = self.region.as_ref().expect("live stack");
        (r.base as *mut u8)..((r.base + GUARD) as *mut u8)
    }
}

impl Drop for PooledStack {
    fn drop(&mut self) {
        let Some(r) = self.region.take() else {
            return;
        };
        let mut free = self.pool.free.lock().expect("stack pool lock");
        if free.len() < self.pool.keep {
            free.push(r);
        } else {
            drop(free);
            unmap(&r);
        }
    }
}

impl Drop for StackPool {
    fn drop(&mut self) {
        for r in self.free.get_mut().expect("stack pool lock").drain(..) {
            unmap(&r);
        }
    }
}
