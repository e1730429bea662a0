//! Deterministic future combinators: [`join`], [`join3`], [`join_all`], [`select`],
//! [`select_all`].
//!
//! The SDK does not depend on the `futures` crate: these few are all a workflow needs, and
//! writing them here lets them promise what workflow code relies on:
//!
//! - **Fixed polling order.** Inputs are polled in argument (or iteration) order on every
//!   poll, so which branch a `select` picks depends only on which slots the host resolved,
//!   never on scheduling.
//! - **Left bias.** When several `select` branches are ready in the same activation, the first
//!   one in argument order wins.
//! - **Losers are dropped on the spot.** The losing branches of a `select` are dropped in the
//!   same poll that picks the winner, so a losing [`Timer`](crate::Timer) issues its
//!   `CancelTimer` right away and a losing activity's result is ignored when it arrives.
//! - **Eager inputs.** Each combinator takes futures that already exist; since the SDK issues
//!   commands when a future is *created*, the commands follow the order the futures were
//!   written in, not the order they are polled in.
//!
//! Every combinator accepts any `Future`, including `async` blocks, which are not `Unpin`:
//! two-way and three-way forms pin their inputs inside their own state without allocating,
//! the `Vec` forms box each input once.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;

/// The result of a [`select`]: which branch finished first, with its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Either<L, R> {
    /// The first (left) future finished first.
    Left(L),
    /// The second (right) future finished first.
    Right(R),
}

impl<L, R> Either<L, R> {
    /// True for [`Either::Left`].
    pub fn is_left(&self) -> bool {
        matches!(self, Either::Left(_))
    }

    /// True for [`Either::Right`].
    pub fn is_right(&self) -> bool {
        matches!(self, Either::Right(_))
    }

    /// The left value, if this is [`Either::Left`].
    pub fn left(self) -> Option<L> {
        match self {
            Either::Left(l) => Some(l),
            Either::Right(_) => None,
        }
    }

    /// The right value, if this is [`Either::Right`].
    pub fn right(self) -> Option<R> {
        match self {
            Either::Left(_) => None,
            Either::Right(r) => Some(r),
        }
    }
}

/// Polls `fut` into `slot` unless it already finished: finished futures are never polled
/// again.
fn poll_into<F: Future>(
    fut: Pin<&mut F>,
    slot: &mut Option<F::Output>,
    cx: &mut std::task::Context<'_>,
) {
    if slot.is_none() {
        if let Poll::Ready(v) = fut.poll(cx) {
            *slot = Some(v);
        }
    }
}

/// Waits for both futures and returns both outputs.
///
/// # Examples
/// ```no_run
/// # async fn demo(ctx: pinion_sdk::WorkflowContext) -> Result<(), pinion_sdk::WorkflowError> {
/// let a = ctx.activity::<i64>("double", &1);
/// let b = ctx.activity::<i64>("double", &2);
/// let (a, b) = pinion_sdk::join(a, b).await;
/// let sum = a? + b?;
/// # Ok(()) }
/// ```
pub async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    poll_fn(|cx| {
        poll_into(a.as_mut(), &mut ra, cx);
        poll_into(b.as_mut(), &mut rb, cx);
        match (ra.take(), rb.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a, b) => {
                (ra, rb) = (a, b);
                Poll::Pending
            }
        }
    })
    .await
}

/// Waits for three futures and returns the three outputs.
pub async fn join3<A: Future, B: Future, C: Future>(
    a: A,
    b: B,
    c: C,
) -> (A::Output, B::Output, C::Output) {
    let (mut a, mut b, mut c) = (pin!(a), pin!(b), pin!(c));
    let (mut ra, mut rb, mut rc) = (None, None, None);
    poll_fn(|cx| {
        poll_into(a.as_mut(), &mut ra, cx);
        poll_into(b.as_mut(), &mut rb, cx);
        poll_into(c.as_mut(), &mut rc, cx);
        match (ra.take(), rb.take(), rc.take()) {
            (Some(a), Some(b), Some(c)) => Poll::Ready((a, b, c)),
            (a, b, c) => {
                (ra, rb, rc) = (a, b, c);
                Poll::Pending
            }
        }
    })
    .await
}

/// Waits for every future and returns the outputs in input order. The input is collected
/// immediately, so futures produced lazily by an iterator are still created (and their
/// commands issued) at the call, in iteration order.
pub fn join_all<F: Future>(
    futures: impl IntoIterator<Item = F>,
) -> impl Future<Output = Vec<F::Output>> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    async move {
        let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
        poll_fn(|cx| {
            for (fut, slot) in futures.iter_mut().zip(results.iter_mut()) {
                poll_into(fut.as_mut(), slot, cx);
            }
            if results.iter().all(Option::is_some) {
                Poll::Ready(results.iter_mut().filter_map(Option::take).collect())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Waits for the first of two futures; the other is dropped in the same poll. Left-biased:
/// when both are ready, `a` wins.
///
/// # Examples
/// ```no_run
/// # async fn demo(ctx: pinion_sdk::WorkflowContext) -> Result<(), pinion_sdk::WorkflowError> {
/// use pinion_sdk::Either;
/// use std::time::Duration;
///
/// let charge = ctx.activity::<String>("charge_payment", &"order-1");
/// match pinion_sdk::select(charge, ctx.sleep(Duration::from_secs(30))).await {
///     Either::Left(result) => { let charge_id = result?; }
///     Either::Right(fired) => { fired?; /* deadline passed; compensate */ }
/// }
/// # Ok(()) }
/// ```
pub async fn select<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
    // `a` and `b` go out of scope here, inside the winning poll: the loser is dropped now.
}

/// Waits for the first of many futures and returns its output and index; the rest are
/// dropped in the same poll. The earliest index wins when several are ready.
///
/// # Panics
/// When `futures` is empty (the result would never come).
pub fn select_all<F: Future>(
    futures: impl IntoIterator<Item = F>,
) -> impl Future<Output = (F::Output, usize)> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    assert!(!futures.is_empty(), "select_all needs at least one future");
    async move {
        poll_fn(|cx| {
            for (i, fut) in futures.iter_mut().enumerate() {
                if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                    return Poll::Ready((v, i));
                }
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::task::{Context, Waker};

    /// Ready after `n` polls; counts polls and drops.
    struct After {
        n: u32,
        value: u32,
        polls: Rc<Cell<u32>>,
        drops: Rc<Cell<u32>>,
    }

    impl Future for After {
        type Output = u32;
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u32> {
            self.polls.set(self.polls.get() + 1);
            if self.n == 0 {
                Poll::Ready(self.value)
            } else {
                self.n -= 1;
                Poll::Pending
            }
        }
    }

    impl Drop for After {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    fn after(n: u32, value: u32, polls: &Rc<Cell<u32>>, drops: &Rc<Cell<u32>>) -> After {
        After {
            n,
            value,
            polls: polls.clone(),
            drops: drops.clone(),
        }
    }

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn join_waits_for_both_and_never_repolls_a_finished_input() {
        let (polls, drops) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let mut j = pin!(join(
            after(0, 1, &polls, &drops),
            after(2, 2, &polls, &drops)
        ));
        assert!(poll_once(j.as_mut()).is_pending());
        assert!(poll_once(j.as_mut()).is_pending());
        assert_eq!(poll_once(j.as_mut()), Poll::Ready((1, 2)));
        // 1 poll for the first input, 3 for the second.
        assert_eq!(polls.get(), 4);
    }

    #[test]
    fn select_is_left_biased_and_drops_the_loser_at_once() {
        let (polls, drops) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let mut s = pin!(select(
            after(0, 1, &polls, &drops),
            after(0, 2, &polls, &drops)
        ));
        assert_eq!(poll_once(s.as_mut()), Poll::Ready(Either::Left(1)));
        assert_eq!(
            drops.get(),
            2,
            "both inputs are dropped when select finishes"
        );
    }

    #[test]
    fn select_all_and_join_all_keep_input_order() {
        let (polls, drops) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let futs = vec![
            after(1, 10, &polls, &drops),
            after(0, 20, &polls, &drops),
            after(0, 30, &polls, &drops),
        ];
        let mut s = pin!(select_all(futs));
        assert_eq!(poll_once(s.as_mut()), Poll::Ready((20, 1)));

        let futs = vec![
            after(2, 1, &polls, &drops),
            after(0, 2, &polls, &drops),
            after(1, 3, &polls, &drops),
        ];
        let mut j = pin!(join_all(futs));
        assert!(poll_once(j.as_mut()).is_pending());
        assert!(poll_once(j.as_mut()).is_pending());
        assert_eq!(poll_once(j.as_mut()), Poll::Ready(vec![1, 2, 3]));
    }

    #[test]
    fn join_all_of_nothing_is_ready() {
        let mut j = pin!(join_all(Vec::<After>::new()));
        assert_eq!(poll_once(j.as_mut()), Poll::Ready(vec![]));
    }
}
