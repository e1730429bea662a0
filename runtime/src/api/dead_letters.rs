//! `/v1/webhooks/dead-letters`: the events webhooks gave up on, listed and redelivered.
//!
//! A webhook whose endpoint does not acknowledge an event within the give-up limit records
//! it as a dead letter and moves on ([`super::webhooks`]). These handlers show the dead
//! letters (role reader) and send one again (role operator). Redelivery is done by the
//! server, inside the request, because only the server holds the webhooks' signing secret:
//! one signed attempt, and the answer says whether the endpoint acknowledged it (then the
//! dead letter is deleted) or why not (it stays, with one attempt more). A redelivered event
//! arrives after the events the webhook sent meanwhile; receivers already deduplicate and
//! order by `Pinion-Event-Id`.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Params, Segment};
use super::routes::AppState;
use super::webhooks::{redeliver as send_again, Redelivered};
use crate::engine::Error;
use crate::store::DeadLetter;

/// `GET /v1/webhooks/dead-letters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetters {
    /// Every dead letter, oldest first.
    pub dead_letters: Vec<DeadLetter>,
}

/// Parses a dead letter's id; anything else names no dead letter.
pub(super) fn letter_id(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::NotFound(format!("no dead letter `{s}`: ids are whole numbers")))
}

pub(super) async fn dead_letters(
    State(s): State<AppState>,
    params: Params,
) -> Result<Json<DeadLetters>, ApiError> {
    params.only(&[])?;
    let dead_letters = s
        .run(|p| p.store().dead_letters().map_err(|e| Error::from(e).into()))
        .await?;
    Ok(Json(DeadLetters { dead_letters }))
}

pub(super) async fn redeliver(
    State(s): State<AppState>,
    Segment(id): Segment,
    params: Params,
) -> Result<Json<Redelivered>, ApiError> {
    params.only(&[])?;
    let n = letter_id(&id)?;
    let hooks = s.webhooks.clone();
    let answer = s
        .run(move |p| {
            send_again(p.store().as_ref(), p.clock().as_ref(), &hooks, n)
                .map_err(|e| ApiError::from(Error::from(e)))
        })
        .await?;
    answer
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))
}
