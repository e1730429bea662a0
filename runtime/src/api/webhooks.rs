//! Webhooks: every lifecycle event POSTed to each configured URL, in order, signed, with
//! retries.
//!
//! One thread per webhook reads the outbox ([`crate::store::EventStore`]) after the last
//! event its endpoint acknowledged, and POSTs the events one by one as JSON (the same
//! document as one `/v1/events` event). A 2xx answer acknowledges the event; anything else
//! (another status, a refused connection, a timeout) is retried with exponential backoff
//! from 0.5 s up to one minute, for as long as the server runs, and later events wait:
//! an endpoint sees the events in outbox order. How far each URL got is stored in the
//! database (`webhook_cursors`), after every batch and at shutdown, so a restarted server
//! goes on where it stopped. Delivery is *at least once*: after a crash, the events since
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
use crate::store::{EventFilter, LifecycleEvent, Store, StoreError};
use crate::worker::Notify;

/// Events read from the outbox per batch.
const BATCH: u32 = 100;
/// First retry delay; doubles per failed attempt.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest retry delay.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// How often an idle deliverer looks for new events.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Per-request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The URL without its query string and user info, for logs (either may hold a secret).
fn display_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => no_query.to_owned(),
    }
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
                agent: ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(REQUEST_TIMEOUT))
                    .build()
                    .into(),
                hook,
                cursor,
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
    /// The last acknowledged event.
    cursor: u64,
}

impl Deliverer {
    fn run(mut self) {
        let url = display_url(&self.hook.url);
        let mut stored = self.cursor;
        while !self.stop.stopped() {
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
                if !self.deliver(event, &url) {
                    break; // stopping
                }
                self.cursor = event.id;
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

    /// Sends one event until the endpoint acknowledges it; false when stopped first.
    fn deliver(&self, event: &LifecycleEvent, url: &str) -> bool {
        let body = serde_json::to_vec(event).expect("events serialise");
        let mut delay = FIRST_RETRY;
        for attempt in 1u32.. {
            let t = self.clock.now_ms();
            let sent = self
                .agent
                .post(&self.hook.url)
                .header("Content-Type", "application/json")
                .header("Pinion-Event-Id", event.id.to_string())
                .header("Pinion-Event-Type", event.transition.name())
                .header("Pinion-Signature", signature(&self.hook.secret, t, &body))
                .send(&body[..]);
            let why = match sent {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(
                webhook = %url,
                "event {} attempt {attempt} failed ({why}); retrying in {delay:?}",
                event.id
            );
            if self.stop.sleep(delay) {
                return false;
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
        unreachable!("the attempt counter does not run out")
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
