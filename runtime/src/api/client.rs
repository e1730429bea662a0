//! A blocking HTTP client of the API (ureq): [`Api`] over a server, for the CLI's
//! `--server` mode and for tests.
//!
//! It decodes answers into the same types the engine returns, and errors into the same
//! [`ApiError`] codes, so a caller cannot tell the two apart except by latency.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::auth::Token;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::types::{
    AliasHistory, AliasList, AliasRamp, AliasSet, Candidate, DeployOptions, Deployment, EventQuery,
    GcBody, GcResponse, InputBody, InstancePage, JobList, JobView, ListQuery, ModuleList,
    QueryAnswer, RampBody, ReplayQuery, ReplayResponse, SetAliasBody, Signalled, StartBody,
    Started, StopBody, StopVerb, Stopped, UpgradeBody, UpgradeResponse, Verification,
    MAX_WAIT_SECS,
};
use super::Api;
use crate::census::{MarkerCensus, MarkerQuery};
use crate::engine::Error;
use crate::history::{HistoryExport, InstanceStatus, Payload};
use crate::rollout::ModuleStatus;
use crate::store::{AliasChange, AliasRecord, InstanceRecord, LifecycleEvent};

/// Largest response body read (a long history export can be large).
const MAX_RESPONSE_BYTES: u64 = 1 << 30;

/// A connection to a pinion server.
pub struct Client {
    base: String,
    token: Option<Token>,
    agent: ureq::Agent,
    /// Print a job's progress on stderr while waiting for it.
    progress: bool,
}

/// Percent-encodes one path segment (instance ids may hold `/`, `?`, `%`, ...).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    Json(Vec<u8>),
}

impl Client {
    /// A client of the server at `base_url` (`http://host:port` or `https://...`).
    ///
    /// # Errors
    /// `invalid_input` for a URL that is not http or https.
    pub fn new(base_url: &str, token: Option<Token>) -> Result<Client, ApiError> {
        Client::with_ca(base_url, token, None)
    }

    /// [`Client::new`] that trusts the certificate authorities in the PEM file `ca` (a
    /// server's own CA, or its self-signed certificate) instead of the system's roots.
    ///
    /// # Errors
    /// `invalid_input` for a URL that is not http or https, or a CA file that cannot be
    /// read or holds no certificate.
    pub fn with_ca(
        base_url: &str,
        token: Option<Token>,
        ca: Option<&std::path::Path>,
    ) -> Result<Client, ApiError> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ApiError::InvalidInput(format!(
                "--server {base_url:?}: use an http:// or https:// URL"
            )));
        }
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .map_err(|e| ApiError::InvalidInput(format!("--ca-file {}: {e}", ca.display())))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if certs.is_empty() {
                return Err(ApiError::InvalidInput(format!(
                    "--ca-file {}: no PEM certificate in it",
                    ca.display()
                )));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
                    .build(),
            );
        }
        let agent = config.build().into();
        Ok(Client {
            base,
            token,
            agent,
            progress: false,
        })
    }

    /// Prints the progress of the jobs this client waits for (replay, upgrade, verify) on
    /// stderr, with the job's id (the CLI does this when stderr is a terminal).
    pub fn show_progress(&mut self, show: bool) {
        self.progress = show;
    }

    /// Every job the server keeps, newest first.
    ///
    /// # Errors
    /// As any request.
    pub fn jobs(&self) -> Result<Vec<JobView>, ApiError> {
        let list: JobList = self.send("GET", "/v1/jobs", &[], Body::None)?;
        Ok(list.jobs)
    }

    /// One job, with its result once finished; `wait` waits (at most a minute) for it to
    /// finish.
    ///
    /// # Errors
    /// `not_found` for an unknown job.
    pub fn job(&self, id: &str, wait: Duration) -> Result<JobView, ApiError> {
        let wait = wait.as_secs().min(MAX_WAIT_SECS);
        let path = format!("/v1/jobs/{}", segment(id));
        self.send("GET", &path, &[("wait", wait.to_string())], Body::None)
    }

    /// Cancels a job: it stops before its next instance.
    ///
    /// # Errors
    /// `not_found` for an unknown job.
    pub fn cancel_job(&self, id: &str) -> Result<JobView, ApiError> {
        let path = format!("/v1/jobs/{}/cancel", segment(id));
        self.send("POST", &path, &[], Body::None)
    }

    /// The events the server's webhooks gave up on, oldest first.
    ///
    /// # Errors
    /// As any request.
    pub fn dead_letters(&self) -> Result<Vec<crate::store::DeadLetter>, ApiError> {
        let list: super::dead_letters::DeadLetters =
            self.send("GET", "/v1/webhooks/dead-letters", &[], Body::None)?;
        Ok(list.dead_letters)
    }

    /// Sends dead letter `id` to its webhook again.
    ///
    /// # Errors
    /// `not_found` for an unknown dead letter.
    pub fn redeliver(&self, id: u64) -> Result<super::webhooks::Redelivered, ApiError> {
        let path = format!("/v1/webhooks/dead-letters/{id}/redeliver");
        self.send("POST", &path, &[], Body::None)
    }

    /// Runs a long operation as a job (`job=true`) and waits for it, however long it takes,
    /// without holding one request open: the answer is the job's result or error.
    fn run_job<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<T, ApiError> {
        let mut query = query.to_vec();
        query.push(("job", "true".into()));
        let mut job: JobView = self.send(method, path, &query, body)?;
        let mut shown = false;
        while !job.state.finished() {
            if self.progress {
                eprint!(
                    "\r{} {}: {} of {} instances",
                    job.kind, job.id, job.done, job.total
                );
                shown = true;
            }
            let wait = if self.progress { 1 } else { 30 };
            job = self.job(&job.id, Duration::from_secs(wait))?;
        }
        if shown {
            eprintln!(
                "\r{} {}: {} of {} instances, {}",
                job.kind,
                job.id,
                job.done,
                job.total,
                serde_json::to_value(job.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            );
        }
        if let Some(error) = job.error {
            let status = error.code.status().as_u16();
            let body = serde_json::to_vec(&ErrorBody { error }).unwrap_or_default();
            return Err(decode_error(status, &body));
        }
        serde_json::from_value(job.result.unwrap_or_default()).map_err(|e| {
            ApiError::Internal(format!(
                "the result of job {} is not what this client expects: {e}",
                job.id
            ))
        })
    }

    /// The server's URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<T, ApiError> {
        let bytes = self.send_raw(method, path, query, body)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::Internal(format!(
                "the server's answer to {method} {path} is not what this client expects: {e}"
            ))
        })
    }

    /// Sends a request; the body of a 2xx answer, else the error it stands for.
    fn send_raw(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<Vec<u8>, ApiError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: ureq::Error| ApiError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        };
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Bearer {}", t.secret()));
        macro_rules! prepare {
            ($req:expr) => {{
                let mut r = $req;
                for (k, v) in query {
                    r = r.query(k, v);
                }
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r
            }};
        }
        let response = match (method, body) {
            ("GET", _) => prepare!(self.agent.get(&url)).call(),
            ("DELETE", _) => prepare!(self.agent.delete(&url)).call(),
            (m, body) => {
                let r = if m == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                let r = prepare!(r);
                match body {
                    Body::None => r.send_empty(),
                    Body::Bytes(b) => r.header("Content-Type", "application/wasm").send(b),
                    Body::Json(b) => r.header("Content-Type", "application/json").send(&b[..]),
                }
            }
        };
        let mut response = response.map_err(unreachable)?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(unreachable)?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        Err(decode_error(status, &bytes))
    }

    fn json<B: Serialize>(body: &B) -> Body<'static> {
        Body::Json(serde_json::to_vec(body).unwrap_or_default())
    }
}

/// Turns an error answer into the [`ApiError`] it stands for.
fn decode_error(status: u16, bytes: &[u8]) -> ApiError {
    let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(bytes) else {
        // Not pinion's error shape: a proxy in between, or not a pinion server.
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        let code = match status {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            502..=504 => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        };
        return ApiError::Remote {
            code,
            status,
            message: format!("the server answered HTTP {status}: {}", text.trim()),
        };
    };
    if error.code == ErrorCode::VerificationFailed {
        if let Some(v) = error
            .details
            .and_then(|d| serde_json::from_value::<Verification>(d).ok())
        {
            return ApiError::Refused(Box::new(v));
        }
    }
    ApiError::Remote {
        code: error.code,
        status,
        message: error.message,
    }
}

impl Api for Client {
    fn deploy(&self, wasm: &[u8], options: &DeployOptions) -> Result<Deployment, ApiError> {
        let mut q = Vec::new();
        if let Some(a) = &options.alias {
            q.push(("alias", a.clone()));
        }
        if options.verify {
            q.push(("verify", "true".into()));
            q.push(("verify_limit", options.verify_limit.to_string()));
        }
        for p in &options.on_nondeterminism {
            q.push(("on_nondeterminism", p.clone()));
        }
        if options.verify {
            return self.run_job("POST", "/v1/modules", &q, Body::Bytes(wasm));
        }
        self.send("POST", "/v1/modules", &q, Body::Bytes(wasm))
    }

    fn start(&self, body: &StartBody) -> Result<Started, ApiError> {
        self.send("POST", "/v1/instances", &[], Self::json(body))
    }

    fn status(&self, id: &str) -> Result<InstanceRecord, ApiError> {
        let r: InstanceRecord = self.send(
            "GET",
            &format!("/v1/instances/{}", segment(id)),
            &[],
            Body::None,
        )?;
        Ok(normalise(r))
    }

    #[allow(clippy::disallowed_methods)] // bounds the caller's wait; not workflow time
    fn wait(&self, id: &str, timeout: Duration) -> Result<InstanceRecord, ApiError> {
        let start = std::time::Instant::now();
        let path = format!("/v1/instances/{}/result", segment(id));
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            // Whole seconds, rounded up, so a short remainder still waits.
            let secs = left.as_millis().div_ceil(1000).min(MAX_WAIT_SECS as u128);
            let r: InstanceRecord =
                self.send("GET", &path, &[("wait", secs.to_string())], Body::None)?;
            let r = normalise(r);
            if r.status != InstanceStatus::Running {
                return Ok(r);
            }
            if start.elapsed() >= timeout {
                return Err(Error::WaitTimedOut {
                    id: id.into(),
                    status: r.status,
                    waited: timeout,
                }
                .into());
            }
        }
    }

    fn list(&self, query: &ListQuery) -> Result<InstancePage, ApiError> {
        let mut q = Vec::new();
        if let Some(s) = query.status {
            q.push(("status", s.as_str().to_owned()));
        }
        if let Some(t) = &query.workflow_type {
            q.push(("workflow_type", t.clone()));
        }
        if let Some(m) = &query.module {
            q.push(("module", m.clone()));
        }
        if let Some(l) = query.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(c) = &query.cursor {
            q.push(("cursor", c.clone()));
        }
        let mut page: InstancePage = self.send("GET", "/v1/instances", &q, Body::None)?;
        page.instances = page.instances.into_iter().map(normalise).collect();
        Ok(page)
    }

    fn history(&self, id: &str, run: Option<u32>) -> Result<HistoryExport, ApiError> {
        let path = format!("/v1/instances/{}/history", segment(id));
        let q: Vec<_> = run.map(|r| ("run", r.to_string())).into_iter().collect();
        self.send("GET", &path, &q, Body::None)
    }

    fn signal(&self, id: &str, name: &str, body: &InputBody) -> Result<Signalled, ApiError> {
        let path = format!("/v1/instances/{}/signals/{}", segment(id), segment(name));
        self.send("POST", &path, &[], Self::json(body))
    }

    fn query(&self, id: &str, name: &str, body: &InputBody) -> Result<QueryAnswer, ApiError> {
        let path = format!("/v1/instances/{}/queries/{}", segment(id), segment(name));
        self.send("POST", &path, &[], Self::json(body))
    }

    fn stop(&self, verb: StopVerb, body: &StopBody) -> Result<Stopped, ApiError> {
        let path = match verb {
            StopVerb::Cancel => "/v1/cancel",
            StopVerb::Terminate => "/v1/terminate",
        };
        self.send("POST", path, &[], Self::json(body))
    }

    fn events(&self, query: &EventQuery) -> Result<Vec<LifecycleEvent>, ApiError> {
        let mut q = vec![
            ("after", query.after.to_string()),
            ("follow", "false".to_owned()),
        ];
        if let Some(i) = &query.instance_id {
            q.push(("instance_id", i.clone()));
        }
        if let Some(t) = &query.workflow_type {
            q.push(("workflow_type", t.clone()));
        }
        if let Some(m) = &query.module {
            q.push(("module", m.clone()));
        }
        for t in &query.types {
            q.push(("type", t.clone()));
        }
        if let Some(l) = query.limit {
            q.push(("limit", l.to_string()));
        }
        let text = self.send_raw("GET", "/v1/events", &q, Body::None)?;
        parse_sse(&text).map_err(|e| {
            ApiError::Internal(format!(
                "the server's event stream is not what this client expects: {e}"
            ))
        })
    }

    fn modules(&self) -> Result<Vec<ModuleStatus>, ApiError> {
        let l: ModuleList = self.send("GET", "/v1/modules", &[], Body::None)?;
        Ok(l.modules)
    }

    fn markers(&self, query: &MarkerQuery) -> Result<MarkerCensus, ApiError> {
        let mut q = Vec::new();
        if let Some(t) = &query.workflow_type {
            q.push(("workflow_type", t.clone()));
        }
        if let Some(m) = &query.module {
            q.push(("module", m.clone()));
        }
        if query.include_ended {
            q.push(("include_ended", "true".to_owned()));
        }
        self.send("GET", "/v1/markers", &q, Body::None)
    }

    fn aliases(&self) -> Result<Vec<AliasRecord>, ApiError> {
        let l: AliasList = self.send("GET", "/v1/aliases", &[], Body::None)?;
        Ok(l.aliases)
    }

    fn set_alias(&self, name: &str, body: &SetAliasBody) -> Result<AliasSet, ApiError> {
        let path = format!("/v1/aliases/{}", segment(name));
        if body.verify {
            return self.run_job("PUT", &path, &[], Self::json(body));
        }
        self.send("PUT", &path, &[], Self::json(body))
    }

    fn ramp_alias(&self, name: &str, body: &RampBody) -> Result<AliasRamp, ApiError> {
        let path = format!("/v1/aliases/{}/ramp", segment(name));
        self.send("POST", &path, &[], Self::json(body))
    }

    fn cancel_ramp(&self, name: &str) -> Result<AliasRamp, ApiError> {
        let path = format!("/v1/aliases/{}/ramp", segment(name));
        self.send("DELETE", &path, &[], Body::None)
    }

    fn alias_history(&self, name: &str) -> Result<Vec<AliasChange>, ApiError> {
        let path = format!("/v1/aliases/{}/history", segment(name));
        let h: AliasHistory = self.send("GET", &path, &[], Body::None)?;
        Ok(h.changes)
    }

    fn replay(
        &self,
        candidate: &Candidate,
        query: &ReplayQuery,
    ) -> Result<ReplayResponse, ApiError> {
        let mut q = Vec::new();
        if let Some(t) = &query.workflow_type {
            q.push(("workflow_type", t.clone()));
        }
        if let Some(s) = &query.status {
            q.push(("status", s.clone()));
        }
        for id in &query.ids {
            q.push(("id", id.clone()));
        }
        if let Some(l) = query.limit {
            q.push(("limit", l.to_string()));
        }
        if query.strict_inputs {
            q.push(("strict_inputs", "true".into()));
        }
        if query.all_runs {
            q.push(("all_runs", "true".into()));
        }
        let body = match candidate {
            Candidate::Bytes(b) => Body::Bytes(b),
            Candidate::Module(m) => {
                q.push(("module", m.clone()));
                Body::None
            }
        };
        self.run_job("POST", "/v1/replay", &q, body)
    }

    fn upgrade(&self, body: &UpgradeBody) -> Result<UpgradeResponse, ApiError> {
        self.run_job("POST", "/v1/upgrade", &[], Self::json(body))
    }

    fn gc(&self, body: &GcBody) -> Result<GcResponse, ApiError> {
        self.send("POST", "/v1/gc", &[], Self::json(body))
    }
}

/// The events of a Server-Sent Events body: the JSON `data` of each message (comments and
/// other fields are skipped).
pub fn parse_sse(body: &[u8]) -> Result<Vec<LifecycleEvent>, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    let mut data = String::new();
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() {
            if !data.is_empty() {
                events.push(serde_json::from_str(&data).map_err(|e| format!("{e}: {data}"))?);
                data.clear();
            }
        } else if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    if !data.is_empty() {
        events.push(serde_json::from_str(&data).map_err(|e| format!("{e}: {data}"))?);
    }
    Ok(events)
}

/// JSON cannot tell a completed instance whose result is `null` from one without a result;
/// the engine's record has `Some(null)` there.
fn normalise(mut r: InstanceRecord) -> InstanceRecord {
    if r.status == InstanceStatus::Completed && r.result.is_none() {
        r.result = Some(Payload::null());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("wf-1_a.b~"), "wf-1_a.b~");
        assert_eq!(segment("a/b?c#d%"), "a%2Fb%3Fc%23d%25");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn error_answers_decode_to_their_codes() {
        let e = decode_error(
            404,
            br#"{"error":{"code":"not_found","message":"no instance with id `x`"}}"#,
        );
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert_eq!(e.to_string(), "no instance with id `x`");
        assert_eq!(
            decode_error(502, b"<html>bad gateway</html>").code(),
            ErrorCode::Unavailable
        );
    }
}
