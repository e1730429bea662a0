//! `GET /v1/events`: lifecycle events as a Server-Sent Events stream.
//!
//! Each event is one SSE message: `id:` is the event's outbox id, `event:` its type
//! (`started`, `completed`, ...), `data:` the JSON document ([`LifecycleEvent`]). The
//! stream starts after `after` (or after the `Last-Event-ID` header, which an EventSource
//! sends when it reconnects, so a dropped connection resumes exactly where it stopped),
//! sends every committed event that matches the filters in commit order, and then waits for
//! new ones; with `follow=false` it ends once it has caught up with the events committed
//! when the request came.
//!
//! Waiting costs no thread: one task of the server ([`watch_head`]) polls the newest event
//! id every 100 ms (events may be written by any process that opens the database, so
//! polling the file is the one source that sees them all) and wakes the streams when it
//! moves; each stream then reads its next batch on the blocking pool.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use tokio::sync::watch;

use super::error::ApiError;
use super::extract::Params;
use super::routes::AppState;
use super::types::{EventQuery, EVENT_BATCH};
use crate::engine::Error;
use crate::store::{EventFilter, LifecycleEvent};

/// How often the newest event id is polled.
const HEAD_POLL: Duration = Duration::from_millis(100);

/// Most events one step of the head watcher lists by instance; beyond, every long poll
/// looks again.
const CHANGED_LIMIT: u32 = 10_000;

/// Polls the outbox's newest id into `head` until `shutdown` turns true.
pub async fn watch_head(state: AppState, head: watch::Sender<u64>) {
    let mut shutdown = state.shutdown.clone();
    let mut seen: Option<u64> = None;
    loop {
        if let Ok(id) = state
            .run(|p| p.store().last_event_id().map_err(|e| Error::from(e).into()))
            .await
        {
            head.send_if_modified(|h| {
                let moved = *h != id;
                *h = id;
                moved
            });
            // Which instances those events were about, for the long polls.
            if let Some(from) = seen.filter(|from| *from < id) {
                let filter = EventFilter {
                    after: from,
                    until: Some(id),
                    limit: CHANGED_LIMIT,
                    ..EventFilter::default()
                };
                let read = state
                    .run(move |p| {
                        p.store()
                            .lifecycle_events(&filter)
                            .map_err(|e| Error::from(e).into())
                    })
                    .await;
                let changed = match read {
                    Ok(events) => super::routes::Changed {
                        all: events.len() as u32 >= CHANGED_LIMIT,
                        ids: events.into_iter().map(|e| e.instance_id.0).collect(),
                    },
                    Err(_) => super::routes::Changed {
                        all: true,
                        ..Default::default()
                    },
                };
                let _ = state.changed_tx.send(std::sync::Arc::new(changed));
            }
            seen = Some(id);
        }
        tokio::select! {
            _ = tokio::time::sleep(HEAD_POLL) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// The handler.
pub async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    params: Params,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let params = params.only(&[
        "after",
        "instance_id",
        "workflow_type",
        "module",
        "type",
        "limit",
        "follow",
    ])?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "header `Last-Event-ID`: expected an event id (a whole number)".into(),
                    )
                })?,
        ),
    };
    let query = EventQuery {
        // A reconnecting client's Last-Event-ID is newer than the `after` of its URL.
        after: match last_event_id {
            Some(id) => id,
            None => params
                .parse::<u64>("after", "an event id (a whole number)")?
                .unwrap_or(0),
        },
        instance_id: params.text("instance_id")?,
        workflow_type: params.text("workflow_type")?,
        module: params.text("module")?,
        types: params.all("type"),
        limit: params.parse::<u32>("limit", "a whole number")?,
    };
    let follow = params
        .parse::<bool>("follow", "true or false")?
        .unwrap_or(true);
    let (mut filter, head) = {
        let query = query.clone();
        s.run(move |p| {
            let filter = p.event_filter(&query)?;
            let head = p.store().last_event_id().map_err(Error::from)?;
            Ok((filter, head))
        })
        .await?
    };
    filter.until = (!follow).then_some(head);
    filter.limit = EVENT_BATCH;
    let tail = Tail {
        head: s.events_head.clone(),
        shutdown: s.shutdown.clone(),
        state: s,
        left: query.limit.map_or(u64::MAX, u64::from),
        filter,
        pending: VecDeque::new(),
        caught_up: false,
    };
    Ok(Sse::new(stream::unfold(tail, Tail::next)).keep_alive(KeepAlive::default()))
}

/// One stream's position.
struct Tail {
    state: AppState,
    head: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    /// The filters and the position; with `follow=false`, `until` is the newest id when the
    /// request came.
    filter: EventFilter,
    /// Events still to send (`limit`).
    left: u64,
    pending: VecDeque<LifecycleEvent>,
    /// The last read returned everything up to `until`.
    caught_up: bool,
}

impl Tail {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Tail)> {
        loop {
            if self.left == 0 {
                return None;
            }
            if let Some(e) = self.pending.pop_front() {
                self.left -= 1;
                let msg = Event::default()
                    .id(e.id.to_string())
                    .event(e.transition.name())
                    .json_data(&e)
                    .unwrap_or_else(|_| Event::default().comment("unencodable event"));
                return Some((Ok(msg), self));
            }
            if self.caught_up || *self.shutdown.borrow() {
                return None;
            }
            // Marks the head as seen before reading, so an event committed during the read
            // wakes the wait below.
            self.head.borrow_and_update();
            let mut filter = self.filter.clone();
            let read = self
                .state
                .run(move |p| {
                    let (batch, more) = p.read_events(&mut filter)?;
                    Ok((filter, batch, more))
                })
                .await;
            // On an error the stream ends; the client reconnects with Last-Event-ID, so
            // nothing is skipped.
            let (filter, batch, more) = read.ok()?;
            self.filter = filter;
            if self.filter.until.is_some() && !more {
                self.caught_up = true;
            }
            if !batch.is_empty() {
                self.pending.extend(batch);
                continue;
            }
            if self.caught_up {
                return None;
            }
            tokio::select! {
                changed = self.head.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = self.shutdown.changed() => return None,
            }
        }
    }
}
