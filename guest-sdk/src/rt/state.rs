//! Per-instance workflow state: the command buffer, the activity and timer slots, logical
//! time, the PRNG and the markers behind versioning.
//!
//! It is shared (`Rc<RefCell<_>>`) by the [`WorkflowContext`](crate::WorkflowContext), every
//! leaf future ([`ActivityFuture`](crate::ActivityFuture), [`Timer`](crate::Timer)) and the
//! activation driver. A wasm instance is single threaded, so `Rc` is enough; borrows are
//! never held across a poll of user code, so the `RefCell` never sees a conflict.
//!
//! Leaf futures do not register wakers: the host resolves slots only between polls (by jobs),
//! and the driver polls the root future once after applying them, so a leaf future just
//! looks at its slot when polled.
//!
//! # Slot transitions
//!
//! Activities (indexed by `seq - 1`; sequence numbers are dense from 1):
//!
//! | state | job `ResolveActivity` | future polled | future dropped |
//! | --- | --- | --- | --- |
//! | Pending | → Resolved | stays Pending | → Abandoned |
//! | Resolved | error: resolved twice | → Consumed (value returned) | → Consumed |
//! | Consumed | error: resolved twice | — | — |
//! | Abandoned | → Consumed (result ignored) | — | — |
//! | Cancelled | ignored (raced the cancellation) | ready: `Cancelled` error | — |
//!
//! `Job::Cancel` moves every Pending or Abandoned activity to Cancelled and emits
//! `RequestCancelActivity` for it.
//!
//! Timers:
//!
//! | state | job `FireTimer` | future polled | future dropped |
//! | --- | --- | --- | --- |
//! | Pending | → Fired | stays Pending | → Dropped, emits `CancelTimer` |
//! | Fired | error: fired twice | ready | nothing |
//! | Dropped | ignored (the host raced the cancel) | — | — |
//! | Cancelled | ignored (the host raced the cancel) | ready: `Cancelled` error | nothing |
//!
//! `Job::Cancel` moves every Pending timer to Cancelled and emits `CancelTimer` for it.
//!
//! Signals are buffered per name, in arrival order, until a signal future takes them; a
//! signal future created before `Job::Cancel` reports the cancellation once no signal of its
//! name is buffered.
//!
//! A job naming a sequence number the workflow never issued is an error: the host and the
//! code disagree about history, and continuing would only hide it.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use pinion_abi::{ActivityOptions, ActivityResult, ChildResult, Command, ModuleChoice};

use crate::rng::Rng;
use crate::versioning::Markers;

/// The handle everything in one instance shares.
pub(crate) type SharedRef = Rc<RefCell<Shared>>;

/// Where one activity stands. See the module docs for the transitions.
#[derive(Debug)]
enum ActivitySlot {
    Pending,
    Resolved(ActivityResult),
    Consumed,
    Abandoned,
    Cancelled,
}

/// Where one timer stands. See the module docs for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerSlot {
    Pending,
    Fired,
    /// The future was dropped before the timer fired.
    Dropped,
    /// Cancelled by `Job::Cancel`; the future reports it.
    Cancelled,
}

/// Where one child workflow stands: Pending until its end arrives (a cancellation asks the
/// child to stop but still waits for its end), then Resolved, then Consumed once the future
/// took it. A dropped future's child keeps running; its result is ignored.
#[derive(Debug)]
enum ChildSlot {
    Pending,
    Resolved(ChildResult),
    Consumed,
    Abandoned,
}

/// A query handler: raw JSON input to raw JSON output, or an error message.
pub(crate) type QueryFn = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, QueryError>>;

/// Why a handler could not answer.
#[derive(Debug)]
pub(crate) enum QueryError {
    /// The input does not deserialise into the handler's input type.
    InvalidInput(String),
    /// The output does not serialise to JSON.
    InvalidOutput(String),
}

/// Registered query handlers, by name.
#[derive(Default)]
pub(crate) struct QueryHandlers(pub(crate) BTreeMap<String, QueryFn>);

impl std::fmt::Debug for QueryHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Mutable state of one workflow instance.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Logical time of the current activation, ms since the Unix epoch.
    pub(crate) now_ms: u64,
    /// Whether the current activation is a replay.
    pub(crate) replaying: bool,
    /// The seeded PRNG; draws happen in program order, so they replay identically.
    pub(crate) rng: Rng,
    /// True once the workflow has completed or failed: nothing is issued after that.
    pub(crate) closed: bool,
    /// Markers delivered by the host and the versioning decisions already made.
    pub(crate) markers: Markers,
    /// The reason given with `Job::Cancel`, once it arrived.
    pub(crate) cancel_reason: Option<String>,
    /// True once the code has seen the cancellation (a wait reported it, or it asked).
    /// Until then, waits it starts are cancelled at once: a cancellation that arrives before
    /// the code first runs must still stop it. Afterwards waits run normally (cleanup).
    pub(crate) cancel_observed: bool,
    /// Registered query handlers.
    pub(crate) queries: QueryHandlers,
    /// True while a query handler runs: anything that would change the workflow is refused
    /// and recorded in `query_violation`.
    pub(crate) in_query: bool,
    /// What a query handler tried to do that queries may not.
    pub(crate) query_violation: Option<String>,
    /// The continue-as-new the workflow asked for, issued when its root future returns the
    /// matching error.
    pub(crate) continue_as_new: Option<Command>,
    signals: BTreeMap<String, VecDeque<Vec<u8>>>,
    children: Vec<ChildSlot>,
    commands: Vec<Command>,
    activities: Vec<ActivitySlot>,
    timers: Vec<TimerSlot>,
}

impl Shared {
    /// Fresh state for an instance started with this seed.
    pub(crate) fn new(random_seed: u64, now_ms: u64, replaying: bool) -> Self {
        Shared {
            now_ms,
            replaying,
            rng: Rng::new(random_seed),
            closed: false,
            markers: Markers::default(),
            cancel_reason: None,
            cancel_observed: false,
            queries: QueryHandlers::default(),
            in_query: false,
            query_violation: None,
            continue_as_new: None,
            signals: BTreeMap::new(),
            children: Vec::new(),
            commands: Vec::new(),
            activities: Vec::new(),
            timers: Vec::new(),
        }
    }

    /// Records a command, unless the workflow has already finished. During a query the
    /// command is dropped and the query is marked as violating read-only access.
    pub(crate) fn push(&mut self, command: Command) {
        if self.in_query {
            self.violate("issue a command");
            return;
        }
        if !self.closed {
            self.commands.push(command);
        }
    }

    /// Notes that a query handler tried to change the workflow.
    pub(crate) fn violate(&mut self, what: &str) {
        if self.in_query && self.query_violation.is_none() {
            self.query_violation = Some(what.to_owned());
        }
    }

    /// The PRNG, for a draw. A draw during a query is a violation (it would shift every
    /// later draw of the workflow).
    pub(crate) fn rng(&mut self) -> &mut Rng {
        self.violate("draw a random number");
        &mut self.rng
    }

    /// Applies `Job::Signal`: buffers the input under its name.
    pub(crate) fn deliver_signal(&mut self, name: String, input: Vec<u8>) {
        self.signals.entry(name).or_default().push_back(input);
    }

    /// Takes every buffered signal, oldest first within each name (for continue-as-new).
    pub(crate) fn take_unread_signals(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.signals)
            .into_iter()
            .flat_map(|(name, queue)| queue.into_iter().map(move |input| (name.clone(), input)))
            .collect()
    }

    /// Takes the oldest buffered signal of this name.
    pub(crate) fn take_signal(&mut self, name: &str) -> Option<Vec<u8>> {
        if self.in_query {
            self.violate("consume a signal");
            return None;
        }
        let queue = self.signals.get_mut(name)?;
        let input = queue.pop_front();
        if queue.is_empty() {
            self.signals.remove(name);
        }
        input
    }

    /// Applies `Job::Cancel`: every pending activity and timer is cancelled (and the host
    /// told so), and waits started from now on run normally.
    pub(crate) fn cancel(&mut self, reason: String) -> Result<(), String> {
        if self.cancel_reason.is_some() {
            return Err("the workflow was cancelled twice".into());
        }
        self.cancel_reason = Some(reason);
        for (i, slot) in self.activities.iter_mut().enumerate() {
            if matches!(slot, ActivitySlot::Pending | ActivitySlot::Abandoned) {
                *slot = ActivitySlot::Cancelled;
                let seq = seq_of(i + 1);
                if !self.closed {
                    self.commands.push(Command::RequestCancelActivity { seq });
                }
            }
        }
        for (i, slot) in self.children.iter().enumerate() {
            if matches!(slot, ChildSlot::Pending) && !self.closed {
                self.commands
                    .push(Command::RequestCancelChild { seq: seq_of(i + 1) });
            }
        }
        for (i, slot) in self.timers.iter_mut().enumerate() {
            if *slot == TimerSlot::Pending {
                *slot = TimerSlot::Cancelled;
                if !self.closed {
                    self.commands
                        .push(Command::CancelTimer { seq: seq_of(i + 1) });
                }
            }
        }
        Ok(())
    }

    /// Hands over the commands issued since the last call.
    pub(crate) fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// True when a wait started now must be cancelled at once: a cancellation arrived and
    /// the code has not seen it yet.
    pub(crate) fn cancel_unobserved(&self) -> bool {
        self.cancel_reason.is_some() && !self.cancel_observed
    }

    /// The cancellation reason, recording that the code has now seen it.
    pub(crate) fn observe_cancel(&mut self) -> Option<String> {
        if self.cancel_reason.is_some() && !self.in_query {
            self.cancel_observed = true;
        }
        self.cancel_reason.clone()
    }

    /// Issues `ScheduleActivity` with the next activity sequence number and returns it
    /// (or, while a cancellation is unobserved, schedules nothing: the future reports the
    /// cancellation).
    pub(crate) fn schedule_activity(
        &mut self,
        activity_type: String,
        input: Vec<u8>,
        options: ActivityOptions,
    ) -> u32 {
        if self.cancel_unobserved() {
            self.activities.push(ActivitySlot::Cancelled);
            return seq_of(self.activities.len());
        }
        self.activities.push(ActivitySlot::Pending);
        let seq = seq_of(self.activities.len());
        self.push(Command::ScheduleActivity {
            seq,
            activity_type,
            input,
            options,
        });
        seq
    }

    /// Issues `StartTimer` with the next timer sequence number and returns it.
    pub(crate) fn start_timer(&mut self, duration_ms: u64) -> u32 {
        if self.cancel_unobserved() {
            self.timers.push(TimerSlot::Cancelled);
            return seq_of(self.timers.len());
        }
        self.timers.push(TimerSlot::Pending);
        let seq = seq_of(self.timers.len());
        self.push(Command::StartTimer { seq, duration_ms });
        seq
    }

    /// Issues `StartChild` with the next child sequence number and returns it.
    pub(crate) fn start_child(
        &mut self,
        workflow_type: String,
        input: Vec<u8>,
        id: Option<String>,
        module: ModuleChoice,
    ) -> u32 {
        if self.cancel_unobserved() {
            let reason = self.cancel_reason.clone().unwrap_or_default();
            self.children.push(ChildSlot::Resolved(ChildResult::Failed(
                pinion_abi::Failure {
                    kind: "Cancelled".into(),
                    message: format!("not started: the workflow was cancelled: {reason}"),
                    non_retryable: true,
                    attempts: 0,
                },
            )));
            return seq_of(self.children.len());
        }
        self.children.push(ChildSlot::Pending);
        let seq = seq_of(self.children.len());
        self.push(Command::StartChild {
            seq,
            workflow_type,
            input,
            id,
            module,
        });
        seq
    }

    /// Applies `Job::ResolveChild`.
    pub(crate) fn resolve_child(&mut self, seq: u32, result: ChildResult) -> Result<(), String> {
        let slot = slot_mut(&mut self.children, seq)
            .ok_or_else(|| format!("child {seq} was resolved but the workflow never started it"))?;
        match slot {
            ChildSlot::Pending => *slot = ChildSlot::Resolved(result),
            ChildSlot::Abandoned => *slot = ChildSlot::Consumed,
            ChildSlot::Resolved(_) | ChildSlot::Consumed => {
                return Err(format!("child {seq} was resolved twice"));
            }
        }
        Ok(())
    }

    /// Takes a child's result, if it has arrived.
    pub(crate) fn take_child_result(&mut self, seq: u32) -> Option<ChildResult> {
        let slot = slot_mut(&mut self.children, seq)?;
        match std::mem::replace(slot, ChildSlot::Consumed) {
            ChildSlot::Resolved(result) => Some(result),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// The child's future was dropped: its result is to be ignored.
    pub(crate) fn abandon_child(&mut self, seq: u32) {
        if let Some(slot) = slot_mut(&mut self.children, seq) {
            *slot = match slot {
                ChildSlot::Pending => ChildSlot::Abandoned,
                _ => ChildSlot::Consumed,
            };
        }
    }

    /// Applies `Job::ResolveActivity`.
    pub(crate) fn resolve_activity(
        &mut self,
        seq: u32,
        result: ActivityResult,
    ) -> Result<(), String> {
        let slot = slot_mut(&mut self.activities, seq).ok_or_else(|| {
            format!("activity {seq} was resolved but the workflow never scheduled it")
        })?;
        match slot {
            ActivitySlot::Pending => *slot = ActivitySlot::Resolved(result),
            ActivitySlot::Abandoned => *slot = ActivitySlot::Consumed,
            ActivitySlot::Cancelled => {}
            ActivitySlot::Resolved(_) | ActivitySlot::Consumed => {
                return Err(format!("activity {seq} was resolved twice"));
            }
        }
        Ok(())
    }

    /// Applies `Job::FireTimer`.
    pub(crate) fn fire_timer(&mut self, seq: u32) -> Result<(), String> {
        let slot = slot_mut(&mut self.timers, seq)
            .ok_or_else(|| format!("timer {seq} fired but the workflow never started it"))?;
        match slot {
            TimerSlot::Pending => *slot = TimerSlot::Fired,
            TimerSlot::Dropped | TimerSlot::Cancelled => {}
            TimerSlot::Fired => return Err(format!("timer {seq} fired twice")),
        }
        Ok(())
    }

    /// Takes a resolved activity's result, if it has arrived; `Err` with the cancellation
    /// reason when the activity was cancelled.
    pub(crate) fn take_activity_result(
        &mut self,
        seq: u32,
    ) -> Option<Result<ActivityResult, String>> {
        let slot = slot_mut(&mut self.activities, seq)?;
        match std::mem::replace(slot, ActivitySlot::Consumed) {
            ActivitySlot::Resolved(result) => Some(Ok(result)),
            ActivitySlot::Cancelled => {
                *slot = ActivitySlot::Cancelled;
                Some(Err(self.observe_cancel().unwrap_or_default()))
            }
            other => {
                *slot = other;
                None
            }
        }
    }

    /// The activity's future was dropped: a result still to come is to be ignored, and one
    /// already here can be freed.
    pub(crate) fn abandon_activity(&mut self, seq: u32) {
        if let Some(slot) = slot_mut(&mut self.activities, seq) {
            *slot = match slot {
                ActivitySlot::Pending => ActivitySlot::Abandoned,
                ActivitySlot::Cancelled => ActivitySlot::Cancelled,
                _ => ActivitySlot::Consumed,
            };
        }
    }

    /// Whether the timer has fired (`Some(Ok)`), was cancelled by `Job::Cancel`
    /// (`Some(Err(reason))`), or is still pending (`None`).
    pub(crate) fn timer_state(&mut self, seq: u32) -> Option<Result<(), String>> {
        let index = usize::try_from(seq).unwrap_or(usize::MAX).wrapping_sub(1);
        match self.timers.get(index) {
            Some(TimerSlot::Fired) => Some(Ok(())),
            Some(TimerSlot::Cancelled) => Some(Err(self.observe_cancel().unwrap_or_default())),
            _ => None,
        }
    }

    /// The timer's future was dropped: cancel it if it is still pending, so the host does not
    /// keep a durable timer nobody waits for (the loser of a `select`, typically).
    pub(crate) fn cancel_timer(&mut self, seq: u32) {
        if self.closed {
            return;
        }
        if let Some(slot) = slot_mut(&mut self.timers, seq) {
            if *slot == TimerSlot::Pending {
                *slot = TimerSlot::Dropped;
                self.push(Command::CancelTimer { seq });
            }
        }
    }
}

/// The sequence number of the slot just pushed. More than `u32::MAX` activities in one
/// instance is not a real workload; saturating keeps this total.
fn seq_of(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// The slot for a 1-based sequence number.
fn slot_mut<T>(slots: &mut [T], seq: u32) -> Option<&mut T> {
    let index = usize::try_from(seq).ok()?.checked_sub(1)?;
    slots.get_mut(index)
}
