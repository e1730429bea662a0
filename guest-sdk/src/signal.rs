//! Input from outside a running workflow: signals and cancellation.
//!
//! A **signal** (`pinion signal <id> <name> --input JSON`) is a named JSON message. The host
//! records it in history when it delivers it; the SDK buffers it under its name, in arrival
//! order, until the workflow takes it with [`WorkflowContext::signal`] or a
//! [`SignalStream`]. A signal that arrives before the workflow waits for it is therefore
//! kept, not lost, and replay hands out the same signals to the same waits.
//!
//! A **cancellation** (`pinion cancel <id>`) is delivered once. Every wait pending at that
//! moment ends with a cancellation error: activities (kind `"Cancelled"`, and the host stops
//! them), timers ([`Cancelled`]), signal waits (a [`WorkflowError`] of kind `"Cancelled"`).
//! Waits started after the code has *seen* the cancellation (one of those errors, or
//! [`WorkflowContext::cancelled`] / [`WorkflowContext::cancel_requested`]) run normally, so
//! the workflow can clean up; waits started before it has seen it (a cancellation that
//! arrived before the code first ran) are cancelled at once; when it then returns
//! a `"Cancelled"` error (the `?` of any of those errors does) the instance ends *cancelled*.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;

use crate::__rt::state::SharedRef;
use crate::context::WorkflowContext;
use crate::error::{Cancelled, WorkflowError};

/// The kind of the [`WorkflowError`] a signal wait returns when the signal's input does not
/// deserialise into the type the workflow asked for.
pub const INVALID_SIGNAL_KIND: &str = "InvalidSignal";

impl WorkflowContext {
    /// Waits for the next signal named `name` and decodes its JSON input as `T`.
    ///
    /// Signals are buffered per name: one sent before this call is returned at once, in the
    /// order signals arrived. The future resolves to
    /// - `Ok(T)` with the oldest buffered signal of that name,
    /// - `Err` of kind `"InvalidSignal"` when its input does not fit `T` (the signal is
    ///   consumed),
    /// - `Err` of kind `"Cancelled"` when the workflow is cancelled while it waits (and no
    ///   signal of that name is buffered).
    ///
    /// ```
    /// # use pinion_sdk::{WorkflowContext, WorkflowError};
    /// async fn approval(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    ///     let approver: String = ctx.signal("approve").await?;
    ///     Ok(format!("approved by {approver}"))
    /// }
    /// ```
    pub fn signal<T: DeserializeOwned>(&self, name: &str) -> SignalFuture<T> {
        SignalFuture::new(self.shared().clone(), name)
    }

    /// Every signal named `name`, one wait at a time: `stream.recv().await` is
    /// [`signal`](Self::signal), and [`SignalStream::try_recv`] takes a buffered one without
    /// waiting.
    pub fn signals<T: DeserializeOwned>(&self, name: &str) -> SignalStream<T> {
        SignalStream {
            shared: self.shared().clone(),
            name: name.to_owned(),
            _item: PhantomData,
        }
    }

    /// Resolves when the workflow is cancelled, with the reason. Use it in a
    /// [`select`](crate::select) to react to a cancellation while waiting on something
    /// that is not cancelled by it.
    pub fn cancelled(&self) -> CancellationFuture {
        CancellationFuture {
            shared: self.shared().clone(),
        }
    }

    /// The reason given with the cancellation, once one was delivered.
    pub fn cancel_requested(&self) -> Option<String> {
        self.shared().borrow_mut().observe_cancel()
    }
}

/// The next signal of one name; see [`WorkflowContext::signal`].
#[must_use = "a signal is only taken from the buffer when the future is awaited"]
pub struct SignalFuture<T> {
    shared: SharedRef,
    name: String,
    /// Created before a cancellation arrived, so a cancellation ends it.
    cancellable: bool,
    _output: PhantomData<fn() -> T>,
}

impl<T> SignalFuture<T> {
    fn new(shared: SharedRef, name: &str) -> Self {
        let cancellable = {
            let s = shared.borrow();
            s.cancel_reason.is_none() || s.cancel_unobserved()
        };
        SignalFuture {
            shared,
            name: name.to_owned(),
            cancellable,
            _output: PhantomData,
        }
    }
}

impl<T> fmt::Debug for SignalFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalFuture")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Future for SignalFuture<T> {
    type Output = Result<T, WorkflowError>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut shared = this.shared.borrow_mut();
        if let Some(input) = shared.take_signal(&this.name) {
            return Poll::Ready(decode_signal(&this.name, &input));
        }
        if this.cancellable {
            if let Some(reason) = shared.observe_cancel() {
                return Poll::Ready(Err(Cancelled { reason }.into()));
            }
        }
        Poll::Pending
    }
}

fn decode_signal<T: DeserializeOwned>(name: &str, input: &[u8]) -> Result<T, WorkflowError> {
    crate::__rt::decode_json(input).map_err(|e| {
        WorkflowError::new(
            INVALID_SIGNAL_KIND,
            format!("signal \"{name}\" does not deserialise into the expected type: {e}"),
        )
    })
}

/// Signals of one name, read one at a time; see [`WorkflowContext::signals`].
pub struct SignalStream<T> {
    shared: SharedRef,
    name: String,
    _item: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for SignalStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalStream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> SignalStream<T> {
    /// Waits for the next signal; the same as [`WorkflowContext::signal`] with this name.
    pub fn recv(&mut self) -> SignalFuture<T> {
        SignalFuture::new(self.shared.clone(), &self.name)
    }

    /// Takes the oldest buffered signal without waiting; `None` when none is buffered.
    pub fn try_recv(&mut self) -> Option<Result<T, WorkflowError>> {
        let input = self.shared.borrow_mut().take_signal(&self.name)?;
        Some(decode_signal(&self.name, &input))
    }
}

/// Resolves when the workflow is cancelled; see [`WorkflowContext::cancelled`].
pub struct CancellationFuture {
    shared: SharedRef,
}

impl fmt::Debug for CancellationFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancellationFuture").finish_non_exhaustive()
    }
}

impl Future for CancellationFuture {
    type Output = Cancelled;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Cancelled> {
        match self.shared.borrow_mut().observe_cancel() {
            Some(reason) => Poll::Ready(Cancelled { reason }),
            None => Poll::Pending,
        }
    }
}
