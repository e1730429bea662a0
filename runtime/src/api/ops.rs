//! What an operator's tools call, without the token: `/metrics` (Prometheus, OpenMetrics
//! text), `/healthz` (the process serves) and `/readyz` (it can serve: the database answers
//! and the server is not stopping).
//!
//! They are outside authentication so a load balancer's health check and a Prometheus
//! scraper need no secret; none of them shows an instance, a history or an input. Counts of
//! instances by status are the most they reveal. Metrics are described in
//! [`crate::telemetry::metrics`].

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::error::ApiError;
use super::routes::AppState;
use crate::telemetry::metrics::metrics;

/// The routes, to be merged outside the token check.
pub(super) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn scrape(
    axum::extract::State(s): axum::extract::State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let text = s
        .run(|p| {
            let db = p.store().gauges(p.now_ms()).map_err(crate::Error::from)?;
            Ok(metrics().encode(&db))
        })
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(axum::extract::State(s): axum::extract::State<AppState>) -> impl IntoResponse {
    if *s.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_owned());
    }
    match s
        .run(|p| {
            p.store()
                .last_event_id()
                .map_err(|e| crate::Error::from(e).into())
        })
        .await
    {
        Ok(_) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database does not answer: {}\n", e.message()),
        ),
    }
}
