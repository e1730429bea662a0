//! Activity options in Rust types: [`ActivityOptions`] and [`RetryPolicy`].
//!
//! The wire types in `pinion_abi` speak milliseconds and raw numbers so they stay simple to
//! encode; these builders speak [`Duration`], document every default, and convert with
//! `From` at the moment a command is issued. The defaults are Temporal's, so an author coming
//! from Temporal gets no surprise, and they equal `pinion_abi`'s defaults, so the host and
//! the SDK agree on what "default" means.
//!
//! Unlimited attempts by default means a permanently failing activity retries forever (with
//! capped backoff) until it succeeds, a human fixes it, or the instance is cancelled: that is
//! deliberate, because giving up silently on a side effect is worse than retrying it.

use std::time::Duration;

/// How failed activity attempts are retried.
///
/// | setting | default |
/// | --- | --- |
/// | [`maximum_attempts`](Self::maximum_attempts) | unlimited (`0` on the wire) |
/// | [`initial_interval`](Self::initial_interval) | 1 s |
/// | [`backoff_coefficient`](Self::backoff_coefficient) | 2.0 |
/// | [`maximum_interval`](Self::maximum_interval) | none: 100 × the initial interval |
/// | [`non_retryable_error_kind`](Self::non_retryable_error_kind) | none |
///
/// Unlimited attempts means a permanently failing activity retries until it succeeds or the
/// instance is cancelled; set `maximum_attempts` when a bounded number of tries is what you
/// want, and mark errors that can never succeed as non-retryable
/// ([`ActivityError::non_retryable`](crate::ActivityError::non_retryable)).
///
/// # Examples
/// ```
/// use pinion_sdk::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::new()
///     .maximum_attempts(5)
///     .initial_interval(Duration::from_millis(100))
///     .backoff_coefficient(2.0)
///     .maximum_interval(Duration::from_secs(5))
///     .non_retryable_error_kind("PaymentDeclined");
/// let wire: pinion_sdk::abi::RetryPolicy = policy.into();
/// assert_eq!(wire.initial_interval_ms, 100);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    maximum_attempts: u32,
    initial_interval: Duration,
    backoff_coefficient: f64,
    maximum_interval: Option<Duration>,
    non_retryable_error_kinds: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            maximum_attempts: 0,
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            maximum_interval: None,
            non_retryable_error_kinds: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// The default policy: unlimited attempts, 1 s initial interval, backoff 2.0.
    pub fn new() -> Self {
        RetryPolicy::default()
    }

    /// A policy that makes exactly one attempt.
    pub fn no_retries() -> Self {
        RetryPolicy::default().maximum_attempts(1)
    }

    /// Maximum number of attempts, including the first; `0` means unlimited (the default).
    pub fn maximum_attempts(mut self, attempts: u32) -> Self {
        self.maximum_attempts = attempts;
        self
    }

    /// Delay before the first retry (default 1 s). Rounded up to whole milliseconds.
    pub fn initial_interval(mut self, interval: Duration) -> Self {
        self.initial_interval = interval;
        self
    }

    /// Each delay is the previous one times this (default 2.0). Values below 1.0, and NaN,
    /// are raised to 1.0: a shrinking delay would hammer a struggling dependency.
    pub fn backoff_coefficient(mut self, coefficient: f64) -> Self {
        self.backoff_coefficient = if coefficient.is_nan() || coefficient < 1.0 {
            1.0
        } else {
            coefficient
        };
        self
    }

    /// Upper bound on one delay (default: 100 × the initial interval).
    pub fn maximum_interval(mut self, interval: Duration) -> Self {
        self.maximum_interval = Some(interval);
        self
    }

    /// Adds an error kind that is never retried, whatever the error's own flag says.
    pub fn non_retryable_error_kind(mut self, kind: impl Into<String>) -> Self {
        self.non_retryable_error_kinds.push(kind.into());
        self
    }
}

impl From<RetryPolicy> for pinion_abi::RetryPolicy {
    fn from(p: RetryPolicy) -> Self {
        pinion_abi::RetryPolicy {
            maximum_attempts: p.maximum_attempts,
            initial_interval_ms: duration_to_ms(p.initial_interval),
            backoff_coefficient: p.backoff_coefficient,
            maximum_interval_ms: p.maximum_interval.map(duration_to_ms),
            non_retryable_error_kinds: p.non_retryable_error_kinds,
        }
    }
}

/// Options for one activity call: timeout and retry policy.
///
/// | setting | default |
/// | --- | --- |
/// | [`start_to_close_timeout`](Self::start_to_close_timeout) | none: the host's default applies |
/// | [`retry_policy`](Self::retry_policy) | [`RetryPolicy::default`] (unlimited attempts, 1 s, ×2.0) |
/// | [`heartbeat_timeout`](Self::heartbeat_timeout) | none: heartbeats are optional |
///
/// # Examples
/// ```
/// use pinion_sdk::{ActivityOptions, RetryPolicy};
/// use std::time::Duration;
///
/// let options = ActivityOptions::new()
///     .start_to_close_timeout(Duration::from_millis(200))
///     .retry_policy(RetryPolicy::new().maximum_attempts(2));
/// let wire: pinion_sdk::abi::ActivityOptions = options.into();
/// assert_eq!(wire.start_to_close_timeout_ms, Some(200));
/// assert_eq!(wire.retry.maximum_attempts, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActivityOptions {
    start_to_close_timeout: Option<Duration>,
    retry: RetryPolicy,
    heartbeat_timeout: Option<Duration>,
}

impl ActivityOptions {
    /// Default options: host-default timeout, default [`RetryPolicy`].
    pub fn new() -> Self {
        ActivityOptions::default()
    }

    /// Limit on one attempt's run time. An attempt that runs longer is abandoned by the host
    /// and counts as a timed-out attempt (retried like a failure). Rounded up to whole ms.
    pub fn start_to_close_timeout(mut self, timeout: Duration) -> Self {
        self.start_to_close_timeout = Some(timeout);
        self
    }

    /// Replaces the retry policy.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Longest silence between heartbeats: an attempt that goes this long without calling
    /// [`ActivityContext::heartbeat`](crate::ActivityContext::heartbeat) (counted from its
    /// start, then from its last heartbeat) is abandoned and fails with kind
    /// `"HeartbeatTimeout"`, retried like any timeout. Use it for long activities, so a hung
    /// one is noticed in seconds rather than at its start-to-close timeout. Rounded up to
    /// whole ms.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = Some(timeout);
        self
    }
}

impl From<ActivityOptions> for pinion_abi::ActivityOptions {
    fn from(o: ActivityOptions) -> Self {
        pinion_abi::ActivityOptions {
            start_to_close_timeout_ms: o.start_to_close_timeout.map(duration_to_ms),
            retry: o.retry.into(),
            heartbeat_timeout_ms: o.heartbeat_timeout.map(duration_to_ms),
        }
    }
}

/// Whole milliseconds, rounded up so a non-zero duration never becomes zero, saturating at
/// `u64::MAX` instead of wrapping.
pub(crate) fn duration_to_ms(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_wire_defaults() {
        let wire: pinion_abi::ActivityOptions = ActivityOptions::new().into();
        assert_eq!(wire, pinion_abi::ActivityOptions::default());
    }

    #[test]
    fn durations_round_up_and_saturate() {
        assert_eq!(duration_to_ms(Duration::ZERO), 0);
        assert_eq!(duration_to_ms(Duration::from_micros(1)), 1);
        assert_eq!(duration_to_ms(Duration::from_micros(1_500)), 2);
        assert_eq!(duration_to_ms(Duration::from_millis(7)), 7);
        assert_eq!(duration_to_ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn backoff_below_one_is_clamped() {
        let wire: pinion_abi::RetryPolicy = RetryPolicy::new().backoff_coefficient(0.5).into();
        assert_eq!(wire.backoff_coefficient, 1.0);
        let wire: pinion_abi::RetryPolicy = RetryPolicy::new().backoff_coefficient(f64::NAN).into();
        assert_eq!(wire.backoff_coefficient, 1.0);
    }
}
