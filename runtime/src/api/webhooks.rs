//! Webhooks: every lifecycle event POSTed to each configured URL, in order, signed, with
//! retries.
//!
//! One thread per webhook reads the outbox ([`crate::store::EventStore`]) after the last
//! event its endpoint acknowledged, and POSTs the events one by one as JSON (the same
//! document as one `/v1/events` event). A 2xx answer acknowledges the event; anything else
//! (another status, a refused connection, a timeout) is retried with exponential backoff
//! from 0.5 s up to one minute, and later events wait: an endpoint sees the events in
//! outbox order. An event still not acknowledged after the give-up limit
//! (`--webhook-give-up-after`, default [`DEFAULT_GIVE_UP`] from its first failed attempt)
//! is recorded as a *dead letter* (`webhook_dead_letters`, with its attempts and last
//! error) and the webhook moves on to the next event, so one event an endpoint never
//! accepts no longer holds its queue for ever; the dead letter is listed and redelivered
//! through `/v1/webhooks/dead-letters` ([`redeliver`]), out of order, once the endpoint is
//! fixed. Other webhooks and the event stream are never affected. How far each URL got is stored in the
//! database (`webhook_cursors`), after every batch and at shutdown, so a restarted server
//! goes on where it stopped. Servers sharing a PostgreSQL database deliver each webhook from
//! one of them at a time (`EventStore::lead`); when it dies another takes over from the
//! stored position. Delivery is *at least once*: after a crash, the events since
//! the last stored position are sent again, so receivers deduplicate by `Pinion-Event-Id`.
//!
//! A webhook seen for the first time starts at the newest event: it receives what happens
//! from then on (read the past from `GET /v1/events?after=0`).
//!
//! # Signature
//!
//! Each request carries `Pinion-Signature: t=<ms since epoch>,v1=<hex>`, where `v1` is
//! HMAC-SHA256 with the shared secret over `"<t>.<body>"` ([`signature`]). A receiver
//! recomputes it over the raw body, compares in constant time, and refuses a `t` too far
//! from its clock (replays).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::auth::Token;
use crate::clock::Clock;
use crate::store::events::display_url;
use crate::store::{EventFilter, LifecycleEvent, NewDeadLetter, Store, StoreError};
use crate::worker::Notify;

/// Events read from the outbox per batch.
const BATCH: u32 = 100;
/// First retry delay; doubles per failed attempt.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest retry delay.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// How often an idle deliverer looks for new events.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How often a server that does not deliver a webhook (another one sharing the database
/// does) checks whether it should take over.
const LEAD_POLL: Duration = Duration::from_secs(1);
/// Per-request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default give-up limit: how long an event is retried before it becomes a dead letter.
pub const DEFAULT_GIVE_UP: Duration = Duration::from_secs(24 * 3600);

/// One webhook endpoint.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Where to POST (`http://` or `https://`).
    pub url: String,
    /// The shared secret of the signature.
    pub secret: Token,
}

impl Webhook {
    /// A webhook, checking the URL.
    ///
    /// # Errors
    /// A message naming the URL when it is not http or https.
    pub fn new(url: &str, secret: Token) -> Result<Webhook, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("--webhook {url:?}: use an http:// or https:// URL"));
        }
        Ok(Webhook {
            url: url.to_owned(),
            secret,
        })
    }
}

/// The `Pinion-Signature` header value for `body` sent at `t_ms`.
pub fn signature(secret: &Token, t_ms: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.secret().as_bytes()).expect("HMAC takes any key");
    mac.update(t_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t_ms},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A stop flag that sleeping threads wake up for (the workers' pattern: a flag and a
/// [`Notify`]).
#[derive(Default)]
struct Stop {
    stopped: AtomicBool,
    wake: Notify,
}

impl Stop {
    /// Sleeps up to `d`; true when stopped.
    fn sleep(&self, d: Duration) -> bool {
        let seen = self.wake.generation();
        if !self.stopped() {
            self.wake.wait(seen, d);
        }
        self.stopped()
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake.notify();
    }
}

/// The running deliverers.
pub struct Deliveries {
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
}

impl Deliveries {
    /// Starts one deliverer thread per webhook.
    ///
    /// # Errors
    /// Storage errors while reading or creating a webhook's position.
    pub fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        hooks: Vec<Webhook>,
        give_up: Duration,
    ) -> Result<Deliveries, StoreError> {
        let stop = Arc::new(Stop::default());
        let mut threads = Vec::new();
        for hook in hooks {
            let cursor = match store.webhook_cursor(&hook.url)? {
                Some(c) => c,
                None => {
                    let head = store.last_event_id()?;
                    store.set_webhook_cursor(&hook.url, head, clock.now_ms())?;
                    head
                }
            };
            let d = Deliverer {
                store: store.clone(),
                clock: clock.clone(),
                stop: stop.clone(),
                agent: agent(),
                hook,
                cursor,
                give_up,
            };
            threads.push(
                std::thread::Builder::new()
                    .name("pinion-webhook".into())
                    .spawn(move || d.run())
                    .expect("spawn webhook thread"),
            );
        }
        Ok(Deliveries { stop, threads })
    }

    /// Stops the deliverers: a request in flight finishes (or times out), its position is
    /// stored, and nothing more is sent.
    pub fn shutdown(self) {
        self.stop.stop();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct Deliverer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    stop: Arc<Stop>,
    agent: ureq::Agent,
    hook: Webhook,
    /// The last acknowledged (or dead-lettered) event.
    cursor: u64,
    /// How long an event is retried before it is dead-lettered.
    give_up: Duration,
}

/// What became of one event.
enum Delivery {
    /// The endpoint answered 2xx.
    Acknowledged,
    /// Recorded as a dead letter after the give-up limit.
    DeadLettered,
    /// The server is stopping; the event is not done.
    Stopped,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into()
}

/// POSTs one event to `hook`, signed at `clock`'s time: `Ok` on a 2xx answer, else why not.
fn post(
    agent: &ureq::Agent,
    hook: &Webhook,
    clock: &dyn Clock,
    event: &LifecycleEvent,
) -> Result<(), String> {
    let body = serde_json::to_vec(event).expect("events serialise");
    let t = clock.now_ms();
    let sent = agent
        .post(&hook.url)
        .header("Content-Type", "application/json")
        .header("Pinion-Event-Id", event.id.to_string())
        .header("Pinion-Event-Type", event.transition.name())
        .header("Pinion-Signature", signature(&hook.secret, t, &body))
        .send(&body[..]);
    match sent {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
        Err(e) => Err(e.to_string()),
    }
}

/// What a redelivery did (`POST /v1/webhooks/dead-letters/{id}/redeliver`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Redelivered {
    /// The dead letter.
    pub id: u64,
    /// Its event's id.
    pub event_id: u64,
    /// The webhook, without query string or user info.
    pub webhook: String,
    /// True when the endpoint acknowledged it; the dead letter is then gone.
    pub delivered: bool,
    /// Why not, when not delivered (the dead letter stays, one attempt more).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// Sends dead letter `id` once more to its webhook (one of `hooks`, which hold the
/// secrets): delivered, it is deleted; else its attempts and last error are updated.
///
/// # Errors
/// `None` when there is no such dead letter; storage errors.
pub fn redeliver(
    store: &dyn Store,
    clock: &dyn Clock,
    hooks: &[Webhook],
    id: u64,
) -> Result<Option<Redelivered>, StoreError> {
    let Some(letter) = store.dead_letter(id)? else {
        return Ok(None);
    };
    let mut answer = Redelivered {
        id,
        event_id: letter.event.id,
        webhook: letter.webhook.clone(),
        delivered: false,
        error: None,
    };
    let Some(hook) = hooks.iter().find(|h| h.url == letter.url) else {
        answer.error = Some(format!(
            "this server has no webhook {} (start it with --webhook for that URL to redeliver)",
            letter.webhook
        ));
        return Ok(Some(answer));
    };
    match post(&agent(), hook, clock, &letter.event) {
        Ok(()) => {
            store.remove_dead_letter(id)?;
            answer.delivered = true;
        }
        Err(why) => {
            store.dead_letter_failed(id, &why, clock.now_ms())?;
            answer.error = Some(why);
        }
    }
    Ok(Some(answer))
}

impl Deliverer {
    fn run(mut self) {
        let url = display_url(&self.hook.url);
        let mut stored = self.cursor;
        // Servers sharing a database deliver each webhook from one of them at a time;
        // another takes over (from the stored position) when the leader is gone.
        let mut lead: Option<Box<dyn crate::store::events::Lead>> = None;
        while !self.stop.stopped() {
            if !lead.as_mut().is_some_and(|l| l.held()) {
                lead = None;
                match self.store.lead(&format!("webhook {}", self.hook.url)) {
                    Ok(Some(l)) => {
                        match self.store.webhook_cursor(&self.hook.url) {
                            Ok(Some(c)) => self.cursor = c,
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(webhook = %url, "cannot read its position: {e}");
                                if self.stop.sleep(FIRST_RETRY) {
                                    break;
                                }
                                continue;
                            }
                        }
                        stored = self.cursor;
                        lead = Some(l);
                    }
                    Ok(None) => {
                        // Another server delivers it.
                        if self.stop.sleep(LEAD_POLL) {
                            break;
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(webhook = %url, "cannot take the lead: {e}");
                        if self.stop.sleep(FIRST_RETRY) {
                            break;
                        }
                        continue;
                    }
                }
            }
            let batch = match self.store.lifecycle_events(&EventFilter {
                after: self.cursor,
                limit: BATCH,
                ..EventFilter::default()
            }) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(webhook = %url, "cannot read events: {e}");
                    if self.stop.sleep(FIRST_RETRY) {
                        break;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                if self.stop.sleep(IDLE_POLL) {
                    break;
                }
                continue;
            }
            for event in &batch {
                match self.deliver(event, &url) {
                    Delivery::Acknowledged | Delivery::DeadLettered => self.cursor = event.id,
                    Delivery::Stopped => break,
                }
            }
            if self.cursor != stored && self.save(&url) {
                stored = self.cursor;
            }
        }
        if self.cursor != stored {
            self.save(&url);
        }
    }

    fn save(&self, url: &str) -> bool {
        match self
            .store
            .set_webhook_cursor(&self.hook.url, self.cursor, self.clock.now_ms())
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(webhook = %url, "cannot store its position: {e}");
                false
            }
        }
    }

    /// Sends one event until the endpoint acknowledges it, or until the give-up limit
    /// (from the first failed attempt) passes and it is recorded as a dead letter.
    fn deliver(&self, event: &LifecycleEvent, url: &str) -> Delivery {
        let mut delay = FIRST_RETRY;
        let mut first_failed = None;
        for attempt in 1u32.. {
            let why = match post(&self.agent, &self.hook, self.clock.as_ref(), event) {
                Ok(()) => return Delivery::Acknowledged,
                Err(why) => why,
            };
            let now = self.clock.now_ms();
            let first = *first_failed.get_or_insert(now);
            let failing = Duration::from_millis(now.saturating_sub(first));
            if failing >= self.give_up {
                tracing::warn!(
                    webhook = %url,
                    "event {} attempt {attempt} failed ({why}); gave up after {failing:?}: it is a dead letter now",
                    event.id
                );
                return self.dead_letter(event, attempt, why, first, url);
            }
            let wait = delay.min(self.give_up - failing);
            tracing::warn!(
                webhook = %url,
                "event {} attempt {attempt} failed ({why}); retrying in {wait:?}",
                event.id
            );
            if self.stop.sleep(wait) {
                return Delivery::Stopped;
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
        unreachable!("the attempt counter does not run out")
    }

    /// Records the dead letter before the webhook moves past it (retrying a storage error,
    /// so an event is never skipped without a record).
    fn dead_letter(
        &self,
        event: &LifecycleEvent,
        attempts: u32,
        last_error: String,
        first_failed_at_ms: u64,
        url: &str,
    ) -> Delivery {
        let letter = NewDeadLetter {
            url: self.hook.url.clone(),
            event: event.clone(),
            attempts,
            last_error,
            first_failed_at_ms,
            now_ms: self.clock.now_ms(),
        };
        loop {
            match self.store.add_dead_letter(&letter) {
                Ok(()) => return Delivery::DeadLettered,
                Err(e) => {
                    tracing::warn!(webhook = %url, "cannot record dead letter {}: {e}", event.id);
                    if self.stop.sleep(FIRST_RETRY) {
                        return Delivery::Stopped;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        let secret = Token::new("whsec", "test").unwrap();
        let sig = signature(&secret, 1_700_000_000_000, br#"{"id":1}"#);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec").unwrap();
        mac.update(br#"1700000000000.{"id":1}"#);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("t=1700000000000,v1={expected}"));
        assert_ne!(
            sig,
            signature(&secret, 1_700_000_000_001, br#"{"id":1}"#),
            "the time is signed"
        );
    }

    #[test]
    fn urls_in_logs_lose_their_credentials_and_query() {
        assert_eq!(
            display_url("https://user:pw@hooks.example/x?token=s3cret"),
            "https://hooks.example/x"
        );
        assert_eq!(
            display_url("http://127.0.0.1:9/a#f"),
            "http://127.0.0.1:9/a"
        );
        assert!(Webhook::new("ftp://x", Token::new("s", "t").unwrap()).is_err());
    }
}
