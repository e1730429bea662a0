//! The route table and its handlers.
//!
//! Each handler parses its request ([`super::extract`]), runs the [`Api`] operation on the
//! engine in `spawn_blocking` (SQLite and wasm compilation block), and answers JSON. The
//! table in [`table`] is the single list of routes: the router is built from it, and a test
//! checks that `openapi.json` describes exactly these.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::handler::Handler;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use tokio::sync::watch;

use super::auth::{require_token, Tokens};
use super::error::ApiError;
use super::extract::{JsonBody, Params, Segment, Segments, WasmBody};
use super::jobs::{Jobs, Work};
use super::local::Prepared;
use super::types::{
    AliasHistory, AliasList, AliasRamp, Candidate, DeployOptions, GcBody, GcResponse, InputBody,
    InstancePage, JobList, JobView, ListQuery, ModuleList, QueryAnswer, RampBody, ReplayQuery,
    SetAliasBody, Signalled, StartBody, Started, StopBody, StopOneBody, StopVerb, Stopped,
    UpgradeBody, DEFAULT_VERIFY_LIMIT, MAX_JSON_BYTES, MAX_PAGE, MAX_WASM_BYTES,
};
use super::{Api, OPENAPI};
use crate::census::{MarkerCensus, MarkerQuery};
use crate::engine::{Error, Pinion, Progress};
use crate::history::{HistoryExport, InstanceStatus};
use crate::store::InstanceRecord;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pinion: Arc<Pinion>,
    wake: Arc<dyn Fn() + Send + Sync>,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) events_head: watch::Receiver<u64>,
    /// The instances the head watcher saw change last, for long polls to wait on.
    pub(super) changed: watch::Receiver<Arc<Changed>>,
    pub(super) changed_tx: Arc<watch::Sender<Arc<Changed>>>,
    /// Replays, verifies and upgrades running in the background.
    pub(super) jobs: Arc<Jobs>,
    /// The webhooks (with their secrets), to redeliver dead letters to.
    pub(super) webhooks: Arc<Vec<super::webhooks::Webhook>>,
}

/// The instances that had lifecycle events (ended, blocked, started, ...) in one step of
/// the head watcher ([`super::events::watch_head`]); `all` when there were too many to
/// list, so every waiter looks.
#[derive(Debug, Default)]
pub struct Changed {
    pub(super) ids: std::collections::HashSet<String>,
    pub(super) all: bool,
}

impl AppState {
    /// State over an engine. `wake` nudges the workers after a start or an upgrade;
    /// `shutdown` turns true when the server stops, which ends long polls and event
    /// streams early; `events_head` is the newest lifecycle event's id (see
    /// [`super::events::watch_head`]).
    pub fn new(
        pinion: Arc<Pinion>,
        wake: Arc<dyn Fn() + Send + Sync>,
        shutdown: watch::Receiver<bool>,
        events_head: watch::Receiver<u64>,
    ) -> AppState {
        let (changed_tx, changed) = watch::channel(Arc::new(Changed::default()));
        AppState {
            pinion,
            wake,
            shutdown,
            events_head,
            changed,
            changed_tx: Arc::new(changed_tx),
            jobs: Arc::new(Jobs::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            )),
            webhooks: Arc::new(Vec::new()),
        }
    }

    /// The same state, redelivering dead letters to `hooks`.
    pub fn with_webhooks(mut self, hooks: Vec<super::webhooks::Webhook>) -> AppState {
        self.webhooks = Arc::new(hooks);
        self
    }

    /// Cancels every job (the server is stopping).
    pub(super) fn cancel_jobs(&self) {
        self.jobs.cancel_all();
    }

    /// Runs a long operation (replay, verify, upgrade). It is prepared inside the request,
    /// so a bad request is refused as usual; then it runs as a job when `job`, answering
    /// at once, or else inside the request, cancelled (before its next instance) if the
    /// request is dropped: its client went away, or the request timeout ran out.
    async fn long<T: serde::Serialize + Send + 'static>(
        &self,
        kind: &'static str,
        job: bool,
        prepare: impl FnOnce(&Pinion) -> Result<Prepared<T>, ApiError> + Send + 'static,
    ) -> Result<Answer<T>, ApiError> {
        let run = self.run(prepare).await?;
        if job {
            let work: Work = Box::new(move |p, progress| {
                let value = run(p, progress)?;
                serde_json::to_value(value)
                    .map_err(|e| ApiError::Internal(format!("encoding the job's result: {e}")))
            });
            let job = self.jobs.submit(self.pinion.clone(), kind, work)?;
            return Ok(Answer::Job(Box::new(job)));
        }
        struct CancelOnDrop(Arc<Progress>);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                self.0.cancel();
            }
        }
        let progress = Arc::new(Progress::new());
        let _cancel = CancelOnDrop(progress.clone());
        Ok(Answer::Now(self.run(move |p| run(p, &progress)).await?))
    }

    /// Runs a blocking engine call off the async workers.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Pinion) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let p = self.pinion.clone();
        tokio::task::spawn_blocking(move || f(&p))
            .await
            .map_err(|e| ApiError::Internal(format!("the request's task failed: {e}")))?
    }
}

/// What a long operation answered: its result, or the job running it.
enum Answer<T> {
    Now(T),
    Job(Box<JobView>),
}

impl<T: serde::Serialize> Answer<T> {
    /// `status` with the result, or `202 Accepted` with the job and its `Location`.
    fn respond(self, status: StatusCode) -> axum::response::Response {
        match self {
            Answer::Now(t) => (status, Json(t)).into_response(),
            Answer::Job(job) => (
                StatusCode::ACCEPTED,
                [(header::LOCATION, format!("/v1/jobs/{}", job.id))],
                Json(*job),
            )
                .into_response(),
        }
    }
}

/// One route: method and path (OpenAPI syntax, `{param}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// The path template.
    pub path: &'static str,
}

struct Entry {
    route: Route,
    handler: MethodRouter<AppState>,
}

fn at<H: Handler<T, AppState>, T: 'static>(
    method: &'static str,
    path: &'static str,
    handler: H,
) -> Entry {
    let filter = match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "DELETE" => MethodFilter::DELETE,
        other => unreachable!("no route uses {other}"),
    };
    Entry {
        route: Route { method, path },
        handler: on(filter, handler),
    }
}

fn entries() -> Vec<Entry> {
    let wasm = || DefaultBodyLimit::max(MAX_WASM_BYTES);
    vec![
        at("GET", "/openapi.json", openapi),
        at("POST", "/v1/modules", deploy.layer(wasm())),
        at("GET", "/v1/modules", modules),
        at("GET", "/v1/markers", markers),
        at("POST", "/v1/instances", start),
        at("GET", "/v1/instances", list),
        at("GET", "/v1/instances/{id}", status),
        at("GET", "/v1/instances/{id}/result", result),
        at("GET", "/v1/instances/{id}/history", history),
        at("POST", "/v1/instances/{id}/signals/{name}", signal),
        at("POST", "/v1/instances/{id}/queries/{name}", query),
        at("POST", "/v1/instances/{id}/cancel", cancel_one),
        at("POST", "/v1/instances/{id}/terminate", terminate_one),
        at("POST", "/v1/cancel", cancel),
        at("POST", "/v1/terminate", terminate),
        at("GET", "/v1/events", super::events::events),
        at("GET", "/v1/aliases", aliases),
        at("PUT", "/v1/aliases/{name}", set_alias),
        at("POST", "/v1/aliases/{name}/ramp", ramp_alias),
        at("DELETE", "/v1/aliases/{name}/ramp", cancel_ramp),
        at("GET", "/v1/aliases/{name}/history", alias_history),
        at("POST", "/v1/replay", replay.layer(wasm())),
        at("POST", "/v1/upgrade", upgrade),
        at("POST", "/v1/gc", gc),
        at("GET", "/v1/jobs", jobs),
        at("GET", "/v1/jobs/{id}", job),
        at("POST", "/v1/jobs/{id}/cancel", cancel_job),
        at(
            "GET",
            "/v1/webhooks/dead-letters",
            super::dead_letters::dead_letters,
        ),
        at(
            "POST",
            "/v1/webhooks/dead-letters/{id}/redeliver",
            super::dead_letters::redeliver,
        ),
    ]
}

/// Every route the server serves.
pub fn table() -> Vec<Route> {
    entries().into_iter().map(|e| e.route).collect()
}

/// The router: every route of [`table`], JSON errors for unknown routes and methods, body
/// limits, and (with a token) authentication in front of everything but the metrics and
/// health checks (`/metrics`, `/healthz`, `/readyz`) and the console's static files (`/ui`).
pub fn router(state: AppState, tokens: Option<Tokens>) -> Router {
    let mut router = Router::new();
    for e in entries() {
        router = router.route(e.route.path, e.handler);
    }
    let router = router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .with_state(state.clone());
    let router = match tokens {
        Some(t) => router.layer(axum::middleware::from_fn_with_state(
            Arc::new(t),
            require_token,
        )),
        None => router,
    };
    // Outside the token check: metrics and health checks (see `ops`) and the console's
    // static files (see `ui`).
    super::ops::routes(state)
        .merge(router)
        .merge(super::ui::router())
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {method} {}; GET /openapi.json lists the API",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn openapi(params: Params) -> Result<impl IntoResponse, ApiError> {
    params.only(&[])?;
    Ok(([(header::CONTENT_TYPE, "application/json")], OPENAPI))
}

async fn deploy(
    State(s): State<AppState>,
    params: Params,
    WasmBody(wasm): WasmBody,
) -> Result<axum::response::Response, ApiError> {
    let params = params.only(&[
        "alias",
        "verify",
        "verify_limit",
        "on_nondeterminism",
        "job",
    ])?;
    let options = DeployOptions {
        alias: params.text("alias")?,
        verify: params.flag("verify")?,
        verify_limit: params
            .parse("verify_limit", "a whole number")?
            .unwrap_or(DEFAULT_VERIFY_LIMIT),
        on_nondeterminism: params.all("on_nondeterminism"),
    };
    let answer = s
        .long("deploy", params.flag("job")?, move |p| {
            p.prepare_deploy(wasm.to_vec(), options)
        })
        .await?;
    let status = match &answer {
        Answer::Now(d) if !d.new => StatusCode::OK,
        _ => StatusCode::CREATED,
    };
    Ok(answer.respond(status))
}

async fn modules(State(s): State<AppState>, params: Params) -> Result<Json<ModuleList>, ApiError> {
    params.only(&[])?;
    let modules = s.run(Api::modules).await?;
    Ok(Json(ModuleList { modules }))
}

async fn markers(
    State(s): State<AppState>,
    params: Params,
) -> Result<Json<MarkerCensus>, ApiError> {
    let params = params.only(&["workflow_type", "module", "include_ended"])?;
    let query = MarkerQuery {
        workflow_type: params.text("workflow_type")?,
        module: params.text("module")?,
        include_ended: params.flag("include_ended")?,
    };
    Ok(Json(s.run(move |p| Api::markers(p, &query)).await?))
}

async fn start(
    State(s): State<AppState>,
    params: Params,
    JsonBody(body): JsonBody<StartBody>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    params.only(&[])?;
    let started = s.run(move |p| Api::start(p, &body)).await?;
    (s.wake)();
    Ok((StatusCode::CREATED, Json(started)))
}

fn parse_status(s: &str) -> Result<InstanceStatus, ApiError> {
    InstanceStatus::parse(s).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown status `{s}`; use running, blocked, completed, failed, cancelled or terminated"
        ))
    })
}

async fn list(State(s): State<AppState>, params: Params) -> Result<Json<InstancePage>, ApiError> {
    let params = params.only(&["status", "workflow_type", "module", "limit", "cursor"])?;
    let limit = params.parse::<u32>("limit", "a number from 1 to 1000")?;
    if limit.is_some_and(|l| l == 0 || l > MAX_PAGE) {
        return Err(ApiError::BadRequest(format!(
            "query parameter `limit`: expected a number from 1 to {MAX_PAGE}"
        )));
    }
    let query = ListQuery {
        status: params.one("status")?.map(parse_status).transpose()?,
        workflow_type: params.text("workflow_type")?,
        module: params.text("module")?,
        limit,
        cursor: params.text("cursor")?,
    };
    Ok(Json(s.run(move |p| Api::list(p, &query)).await?))
}

async fn status(
    State(s): State<AppState>,
    Segment(id): Segment,
    params: Params,
) -> Result<Json<InstanceRecord>, ApiError> {
    params.only(&[])?;
    Ok(Json(s.run(move |p| Api::status(p, &id)).await?))
}

/// Long poll: answers as soon as the instance is no longer running, or when `wait` seconds
/// (at most [`MAX_WAIT_SECS`](super::types::MAX_WAIT_SECS); more is a bad request) have passed, or when the server shuts
/// down, with the instance as it is then. It waits on the head watcher's notification of
/// which instances changed (one reader of the database for all waiters), reads the
/// instance again only when it is among them, and holds no thread.
async fn result(
    State(s): State<AppState>,
    Segment(id): Segment,
    params: Params,
) -> Result<Json<InstanceRecord>, ApiError> {
    let params = params.only(&["wait"])?;
    let wait = params.wait_secs()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut shutdown = s.shutdown.clone();
    // Subscribed before the first read, so no change after it is missed.
    let mut changed = s.changed.clone();
    changed.borrow_and_update();
    loop {
        let rec = {
            let id = id.clone();
            s.run(move |p| Api::status(p, &id)).await?
        };
        if rec.status != InstanceStatus::Running || wait == 0 {
            return Ok(Json(rec));
        }
        if rec.imported {
            return Err(Error::Imported(id).into());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline || *shutdown.borrow() {
            return Ok(Json(rec));
        }
        // A change of this instance, the deadline, the shutdown, or (a safety net for a
        // watcher that failed to read) a few seconds.
        let recheck = (now + Duration::from_secs(5)).min(deadline);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(recheck) => break,
                _ = shutdown.changed() => break,
                moved = changed.changed() => {
                    if moved.is_err() {
                        tokio::time::sleep_until(recheck).await;
                        break;
                    }
                    let c = changed.borrow_and_update().clone();
                    if c.all || c.ids.contains(&id) {
                        break;
                    }
                }
            }
        }
    }
}

async fn history(
    State(s): State<AppState>,
    Segment(id): Segment,
    params: Params,
) -> Result<Json<HistoryExport>, ApiError> {
    let params = params.only(&["run"])?;
    let run = params.parse::<u32>("run", "a run number (1, 2, ...)")?;
    Ok(Json(s.run(move |p| Api::history(p, &id, run)).await?))
}

async fn signal(
    State(s): State<AppState>,
    Segments(id, name): Segments,
    params: Params,
    JsonBody(body): JsonBody<InputBody>,
) -> Result<(StatusCode, Json<Signalled>), ApiError> {
    params.only(&[])?;
    let sent = s.run(move |p| Api::signal(p, &id, &name, &body)).await?;
    Ok((StatusCode::ACCEPTED, Json(sent)))
}

async fn query(
    State(s): State<AppState>,
    Segments(id, name): Segments,
    params: Params,
    JsonBody(body): JsonBody<InputBody>,
) -> Result<Json<QueryAnswer>, ApiError> {
    params.only(&[])?;
    Ok(Json(
        s.run(move |p| Api::query(p, &id, &name, &body)).await?,
    ))
}

async fn stop(s: AppState, verb: StopVerb, body: StopBody) -> Result<Json<Stopped>, ApiError> {
    Ok(Json(s.run(move |p| Api::stop(p, verb, &body)).await?))
}

fn one(id: String, body: StopOneBody) -> StopBody {
    StopBody {
        id: Some(id),
        reason: body.reason,
        dry_run: body.dry_run,
        ..StopBody::default()
    }
}

async fn cancel_one(
    State(s): State<AppState>,
    Segment(id): Segment,
    params: Params,
    JsonBody(body): JsonBody<StopOneBody>,
) -> Result<Json<Stopped>, ApiError> {
    params.only(&[])?;
    stop(s, StopVerb::Cancel, one(id, body)).await
}

async fn terminate_one(
    State(s): State<AppState>,
    Segment(id): Segment,
    params: Params,
    JsonBody(body): JsonBody<StopOneBody>,
) -> Result<Json<Stopped>, ApiError> {
    params.only(&[])?;
    stop(s, StopVerb::Terminate, one(id, body)).await
}

async fn cancel(
    State(s): State<AppState>,
    params: Params,
    JsonBody(body): JsonBody<StopBody>,
) -> Result<Json<Stopped>, ApiError> {
    params.only(&[])?;
    stop(s, StopVerb::Cancel, body).await
}

async fn terminate(
    State(s): State<AppState>,
    params: Params,
    JsonBody(body): JsonBody<StopBody>,
) -> Result<Json<Stopped>, ApiError> {
    params.only(&[])?;
    stop(s, StopVerb::Terminate, body).await
}

async fn aliases(State(s): State<AppState>, params: Params) -> Result<Json<AliasList>, ApiError> {
    params.only(&[])?;
    let aliases = s.run(Api::aliases).await?;
    Ok(Json(AliasList { aliases }))
}

async fn set_alias(
    State(s): State<AppState>,
    Segment(name): Segment,
    params: Params,
    JsonBody(body): JsonBody<SetAliasBody>,
) -> Result<axum::response::Response, ApiError> {
    let params = params.only(&["job"])?;
    let answer = s
        .long("alias_set", params.flag("job")?, move |p| {
            p.prepare_set_alias(name, body)
        })
        .await?;
    Ok(answer.respond(StatusCode::OK))
}

async fn ramp_alias(
    State(s): State<AppState>,
    Segment(name): Segment,
    params: Params,
    JsonBody(body): JsonBody<RampBody>,
) -> Result<Json<AliasRamp>, ApiError> {
    params.only(&[])?;
    Ok(Json(
        s.run(move |p| Api::ramp_alias(p, &name, &body)).await?,
    ))
}

async fn cancel_ramp(
    State(s): State<AppState>,
    Segment(name): Segment,
    params: Params,
) -> Result<Json<AliasRamp>, ApiError> {
    params.only(&[])?;
    Ok(Json(s.run(move |p| Api::cancel_ramp(p, &name)).await?))
}

async fn alias_history(
    State(s): State<AppState>,
    Segment(name): Segment,
    params: Params,
) -> Result<Json<AliasHistory>, ApiError> {
    params.only(&[])?;
    let alias = name.clone();
    let changes = s.run(move |p| Api::alias_history(p, &name)).await?;
    Ok(Json(AliasHistory { alias, changes }))
}

async fn replay(
    State(s): State<AppState>,
    params: Params,
    WasmBody(wasm): WasmBody,
) -> Result<axum::response::Response, ApiError> {
    let params = params.only(&[
        "module",
        "workflow_type",
        "status",
        "id",
        "limit",
        "strict_inputs",
        "all_runs",
        "job",
    ])?;
    let candidate = match (params.text("module")?, wasm.is_empty()) {
        (None, false) => Candidate::Bytes(wasm.to_vec()),
        (Some(m), true) => Candidate::Module(m),
        (None, true) => {
            return Err(ApiError::BadRequest(
                "upload the candidate module as the body, or name a deployed one with `module`"
                    .into(),
            ))
        }
        (Some(_), false) => {
            return Err(ApiError::BadRequest(
                "give the candidate either as the body or as `module`, not both".into(),
            ))
        }
    };
    let query = ReplayQuery {
        workflow_type: params.text("workflow_type")?,
        status: params.text("status")?,
        ids: params.all("id"),
        limit: params.parse("limit", "a whole number")?,
        strict_inputs: params.flag("strict_inputs")?,
        all_runs: params.flag("all_runs")?,
    };
    let answer = s
        .long("replay", params.flag("job")?, move |p| {
            p.prepare_replay(candidate, query)
        })
        .await?;
    Ok(answer.respond(StatusCode::OK))
}

async fn upgrade(
    State(s): State<AppState>,
    params: Params,
    JsonBody(body): JsonBody<UpgradeBody>,
) -> Result<axum::response::Response, ApiError> {
    let params = params.only(&["job"])?;
    let wake = s.wake.clone();
    let answer = s
        .long("upgrade", params.flag("job")?, move |p| {
            let run = p.prepare_upgrade(body)?;
            let run: Prepared<_> = Box::new(move |p: &Pinion, progress: &Progress| {
                let r = run(p, progress);
                // Wake the workers for the moved instances, even when the rest failed.
                if r.as_ref()
                    .map_or(true, |r| r.results.iter().any(|u| u.upgraded))
                {
                    wake();
                }
                r
            });
            Ok(run)
        })
        .await?;
    Ok(answer.respond(StatusCode::OK))
}

async fn gc(
    State(s): State<AppState>,
    params: Params,
    JsonBody(body): JsonBody<GcBody>,
) -> Result<Json<GcResponse>, ApiError> {
    params.only(&[])?;
    Ok(Json(s.run(move |p| Api::gc(p, &body)).await?))
}

async fn jobs(State(s): State<AppState>, params: Params) -> Result<Json<JobList>, ApiError> {
    params.only(&[])?;
    Ok(Json(JobList {
        jobs: s.jobs.list(),
    }))
}

async fn job(
    State(s): State<AppState>,
    Segment(id): Segment,
    params: Params,
) -> Result<Json<JobView>, ApiError> {
    let params = params.only(&["wait"])?;
    let wait = params.wait_secs()?;
    Ok(Json(
        s.jobs
            .get(&id, Duration::from_secs(wait), s.shutdown.clone())
            .await?,
    ))
}

async fn cancel_job(
    State(s): State<AppState>,
    Segment(id): Segment,
    params: Params,
) -> Result<Json<JobView>, ApiError> {
    params.only(&[])?;
    Ok(Json(s.jobs.cancel(&id)?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn openapi_describes_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().unwrap().keys() {
                if method != "parameters" {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let served: BTreeSet<_> = table()
            .into_iter()
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        fn walk(v: &serde_json::Value, doc: &serde_json::Value) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                        let ptr = r.strip_prefix('#').expect("local reference");
                        assert!(doc.pointer(ptr).is_some(), "dangling {r}");
                    }
                    m.values().for_each(|x| walk(x, doc));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, doc)),
                _ => {}
            }
        }
        walk(&doc, &doc);
    }
}
