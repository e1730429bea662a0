//! One resource limiter per store, counting every memory and table of the store together.
//!
//! wasmtime's stock `StoreLimits` bounds each memory on its own, so a module with several
//! memories (or one huge table) could take many times the intended budget. Multi-memory is
//! also switched off in the engine, which makes a second memory a deploy-time error; this
//! limiter is the belt to that brace, and the one place table growth is bounded.

use wasmtime::ResourceLimiter;

/// Table elements one store may hold in all, across its tables. A Rust module's function
/// table has hundreds to a few thousand entries.
pub const TABLE_ELEMENTS: usize = 100_000;

/// The budget of one store.
#[derive(Debug, Clone)]
pub struct GuestLimiter {
    memory_limit: usize,
    memory_used: usize,
    table_used: usize,
    /// Set when a growth was refused, so a trap can be reported as a limit, not a bug.
    pub(crate) hit: Option<Limit>,
}

/// Which limit a refused growth ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Linear memory.
    Memory,
    /// Table elements.
    Table,
}

impl GuestLimiter {
    /// A limiter allowing `memory_limit` bytes of linear memory in all.
    pub fn new(memory_limit: usize) -> GuestLimiter {
        GuestLimiter {
            memory_limit,
            memory_used: 0,
            table_used: 0,
            hit: None,
        }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_used
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_limit {
            self.hit = Some(Limit::Memory);
            return Ok(false);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .table_used
            .saturating_sub(current)
            .saturating_add(desired);
        if total > TABLE_ELEMENTS {
            self.hit = Some(Limit::Table);
            return Ok(false);
        }
        self.table_used = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_are_counted_together() {
        let mut l = GuestLimiter::new(100);
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(
            !l.memory_growing(0, 60, None).unwrap(),
            "a second memory shares the budget"
        );
        assert!(
            l.memory_growing(60, 100, None).unwrap(),
            "growing the first one to the limit"
        );
        assert!(!l.memory_growing(100, 101, None).unwrap());
        assert!(l.table_growing(0, TABLE_ELEMENTS / 2, None).unwrap());
        assert!(!l.table_growing(0, TABLE_ELEMENTS, None).unwrap());
        assert_eq!(l.hit, Some(Limit::Table));
    }
}
