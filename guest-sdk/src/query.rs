//! Queries: read-only questions to a live workflow (`pinion query <id> <name>`).
//!
//! A workflow registers a handler per query name, usually a closure over state it shares
//! with itself through `Rc<RefCell<_>>`. The host evaluates the handler inside the live wasm
//! instance (rebuilding it by replay first when it is not cached) and records nothing: a
//! query never appears in history and never changes what the workflow does next.
//!
//! Handlers must only read. The SDK enforces what it can see: a handler that issues a
//! command (schedules an activity, starts a timer, records a version marker), draws a
//! random number or consumes a signal gets its query refused as `ReadOnlyViolation`, and the
//! host throws the wasm instance away and rebuilds it from history before its next
//! activation. Mutating your own captured state is not detectable; don't.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::__rt::state::QueryError;
use crate::context::WorkflowContext;

impl WorkflowContext {
    /// Registers (or replaces) the handler of query `name`. The handler gets the query's
    /// JSON input decoded as `In` (`()` accepts no input) and returns a value serialised to
    /// JSON.
    ///
    /// ```
    /// # use pinion_sdk::{WorkflowContext, WorkflowError};
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    ///
    /// async fn counter(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    ///     let done = Rc::new(Cell::new(0u32));
    ///     let seen = done.clone();
    ///     ctx.register_query("progress", move |(): ()| seen.get());
    ///     for _ in 0..n {
    ///         let _: () = ctx.activity("step", &()).await?;
    ///         done.set(done.get() + 1);
    ///     }
    ///     Ok(done.get())
    /// }
    /// ```
    pub fn register_query<In, Out, F>(&self, name: &str, handler: F)
    where
        In: DeserializeOwned,
        Out: Serialize,
        F: Fn(In) -> Out + 'static,
    {
        let handler = move |input: &[u8]| {
            let input: In = crate::__rt::decode_json(input)
                .map_err(|e| QueryError::InvalidInput(e.to_string()))?;
            serde_json::to_vec(&handler(input))
                .map_err(|e| QueryError::InvalidOutput(e.to_string()))
        };
        let mut shared = self.shared().borrow_mut();
        shared.violate("register a query handler");
        if !shared.in_query {
            shared.queries.0.insert(name.to_owned(), Box::new(handler));
        }
    }
}
