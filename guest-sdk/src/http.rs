//! Outgoing HTTP from activities: a small blocking client over the host's `pinion::http_send`.
//!
//! ```no_run
//! use pinion_sdk::http::Request;
//! use pinion_sdk::ActivityError;
//!
//! #[derive(serde::Serialize)]
//! struct Charge { amount_cents: u64 }
//! #[derive(serde::Deserialize)]
//! struct Charged { id: String }
//!
//! fn charge(amount_cents: u64) -> Result<String, ActivityError> {
//!     let token = std::env::var("PAY_API_TOKEN")
//!         .map_err(|_| ActivityError::non_retryable("Config", "PAY_API_TOKEN is not granted"))?;
//!     let charged: Charged = Request::post("http://127.0.0.1:8080/charges")
//!         .bearer(&token)
//!         .json(&Charge { amount_cents })
//!         .send()?             // connection errors: retryable; a denied URL: not
//!         .error_for_status()? // 5xx, 408, 429: retryable; other 4xx: not
//!         .json()?;
//!     Ok(charged.id)
//! }
//! ```
//!
//! The host does the request: it checks the URL, and every redirect, against what the
//! operator granted this activity in `pinion.toml`, never waits past the attempt's
//! start-to-close timeout, and limits the response size. The call blocks the activity (the
//! host does not block a thread for it: thousands of activities can wait at once).
//!
//! Every failure converts into an [`ActivityError`] with `?`, with the retry behaviour a
//! workflow engine should have; [`HttpError::kind`] says which:
//!
//! | [`HttpErrorKind`] | activity error kind | retried |
//! |---|---|---|
//! | `Denied` (URL or redirect not granted) | `HttpDenied` | no |
//! | `InvalidRequest` | `HttpInvalidRequest` | no |
//! | `Timeout` | `HttpTimeout` | yes |
//! | `Connect` (refused, reset, DNS, TLS) | `HttpConnect` | yes |
//! | `TooLarge`, `TooManyRedirects` | `HttpTooLarge`, `HttpTooManyRedirects` | no |
//! | `Status(5xx, 408, 429)` from [`Response::error_for_status`] | `HttpServerError` | yes |
//! | `Status(other 4xx)` | `HttpClientError` | no |
//! | `InvalidBody` from [`Response::json`] | `HttpInvalidBody` | no |
//!
//! Workflow code cannot make requests: they would not replay. Call an activity instead.

use std::fmt;
use std::time::Duration;

use pinion_abi::{HttpOutcome, HttpRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ActivityError;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpErrorKind {
    /// The URL, or a redirect's target, is not granted to this activity.
    Denied,
    /// The request is malformed: bad URL, method, header, or a body that did not serialise.
    InvalidRequest,
    /// No answer in time.
    Timeout,
    /// The connection failed.
    Connect,
    /// The response is larger than the operator's limit.
    TooLarge,
    /// Too many redirects.
    TooManyRedirects,
    /// The server answered with this error status ([`Response::error_for_status`]).
    Status(u16),
    /// The body is not what was expected ([`Response::json`]).
    InvalidBody,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    kind: HttpErrorKind,
    message: String,
}

impl HttpError {
    fn new(kind: HttpErrorKind, message: impl Into<String>) -> HttpError {
        HttpError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure.
    pub fn kind(&self) -> HttpErrorKind {
        self.kind
    }

    /// What happened, naming the URL.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying the activity can help (see the table in the module docs).
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            HttpErrorKind::Timeout | HttpErrorKind::Connect => true,
            HttpErrorKind::Status(s) => s >= 500 || s == 408 || s == 429,
            _ => false,
        }
    }

    fn error_kind(&self) -> &'static str {
        match self.kind {
            HttpErrorKind::Denied => "HttpDenied",
            HttpErrorKind::InvalidRequest => "HttpInvalidRequest",
            HttpErrorKind::Timeout => "HttpTimeout",
            HttpErrorKind::Connect => "HttpConnect",
            HttpErrorKind::TooLarge => "HttpTooLarge",
            HttpErrorKind::TooManyRedirects => "HttpTooManyRedirects",
            HttpErrorKind::Status(_) if self.is_retryable() => "HttpServerError",
            HttpErrorKind::Status(_) => "HttpClientError",
            HttpErrorKind::InvalidBody => "HttpInvalidBody",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for ActivityError {
    fn from(e: HttpError) -> ActivityError {
        if e.is_retryable() {
            ActivityError::retryable(e.error_kind(), e.message)
        } else {
            ActivityError::non_retryable(e.error_kind(), e.message)
        }
    }
}

/// A request being built. Nothing is sent until [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Result<Vec<u8>, String>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with any method.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Request {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Ok(Vec::new()),
            timeout: None,
        }
    }

    /// `GET url`.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new("GET", url)
    }

    /// `POST url`.
    pub fn post(url: impl Into<String>) -> Request {
        Request::new("POST", url)
    }

    /// `PUT url`.
    pub fn put(url: impl Into<String>) -> Request {
        Request::new("PUT", url)
    }

    /// `PATCH url`.
    pub fn patch(url: impl Into<String>) -> Request {
        Request::new("PATCH", url)
    }

    /// `DELETE url`.
    pub fn delete(url: impl Into<String>) -> Request {
        Request::new("DELETE", url)
    }

    /// Adds a header (names may repeat).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Request {
        self.header("authorization", format!("Bearer {token}"))
    }

    /// The body, as bytes.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Ok(body.into());
        self
    }

    /// A JSON body, with `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Request {
        self.body = serde_json::to_vec(value).map_err(|e| e.to_string());
        self.header("content-type", "application/json")
    }

    /// A timeout for this request; the attempt's start-to-close timeout bounds it anyway.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and waits for the whole response.
    ///
    /// # Errors
    /// When no response arrived: see [`HttpErrorKind`]. An error status is a response,
    /// not an error; [`Response::error_for_status`] turns it into one.
    pub fn send(self) -> Result<Response, HttpError> {
        let body = self.body.map_err(|e| {
            HttpError::new(
                HttpErrorKind::InvalidRequest,
                format!(
                    "{} {}: the JSON body does not serialise: {e}",
                    self.method, self.url
                ),
            )
        })?;
        let request = HttpRequest {
            method: self.method,
            url: self.url,
            headers: self.headers,
            body,
            timeout_ms: self.timeout.map(|t| t.as_millis() as u64),
        };
        let outcome = host::send(&request)?;
        match outcome {
            Ok(r) => Ok(Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
                url: r.url,
            }),
            Err(e) => {
                let kind = match e.kind {
                    pinion_abi::HttpErrorKind::Denied => HttpErrorKind::Denied,
                    pinion_abi::HttpErrorKind::InvalidRequest => HttpErrorKind::InvalidRequest,
                    pinion_abi::HttpErrorKind::Timeout => HttpErrorKind::Timeout,
                    pinion_abi::HttpErrorKind::Connect => HttpErrorKind::Connect,
                    pinion_abi::HttpErrorKind::TooLarge => HttpErrorKind::TooLarge,
                    pinion_abi::HttpErrorKind::TooManyRedirects => HttpErrorKind::TooManyRedirects,
                };
                Err(HttpError::new(kind, e.message))
            }
        }
    }
}

/// A response (any status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    url: String,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, names in lower case, in the order received.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The URL that answered, after redirects.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// [`HttpErrorKind::InvalidBody`] when it is not JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HttpError::new(
                HttpErrorKind::InvalidBody,
                format!("the response of {} is not the JSON expected: {e}", self.url),
            )
        })
    }

    /// The response itself if its status is below 400, else an
    /// [`HttpErrorKind::Status`] error carrying the start of the body.
    ///
    /// # Errors
    /// As described.
    pub fn error_for_status(self) -> Result<Response, HttpError> {
        if self.status < 400 {
            return Ok(self);
        }
        let text = self.text();
        let snippet: String = text.chars().take(200).collect();
        Err(HttpError::new(
            HttpErrorKind::Status(self.status),
            format!("{} answered {}: {}", self.url, self.status, snippet.trim()),
        ))
    }
}

#[cfg(target_arch = "wasm32")]
mod host {
    use super::{HttpError, HttpErrorKind, HttpOutcome, HttpRequest};

    #[link(wasm_import_module = "pinion")]
    extern "C" {
        fn http_send(ptr: *const u8, len: i32) -> i32;
        fn take_staged(ptr: *mut u8, len: i32) -> i32;
    }

    pub(super) fn send(request: &HttpRequest) -> Result<HttpOutcome, HttpError> {
        let bytes = pinion_abi::encode(request)
            .map_err(|e| HttpError::new(HttpErrorKind::InvalidRequest, format!("encoding: {e}")))?;
        // SAFETY: the host reads `bytes` during the call and keeps no reference to it.
        let n = unsafe { http_send(bytes.as_ptr(), bytes.len() as i32) };
        if n < 0 {
            return Err(HttpError::new(
                HttpErrorKind::InvalidRequest,
                format!("the host refused the request (code {n}); is it larger than 16 MiB?"),
            ));
        }
        let mut out = vec![0u8; n as usize];
        // SAFETY: `out` is `n` writable bytes, exactly what the host staged.
        let rc = unsafe { take_staged(out.as_mut_ptr(), n) };
        if rc != 0 {
            return Err(HttpError::new(
                HttpErrorKind::InvalidRequest,
                format!("the host could not hand over the response (code {rc})"),
            ));
        }
        pinion_abi::decode(&out).map_err(|e| {
            HttpError::new(
                HttpErrorKind::InvalidRequest,
                format!("the host's response does not decode: {e}"),
            )
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    use super::{HttpError, HttpErrorKind, HttpOutcome, HttpRequest};

    pub(super) fn send(request: &HttpRequest) -> Result<HttpOutcome, HttpError> {
        Err(HttpError::new(
            HttpErrorKind::Denied,
            format!(
                "{} {}: outgoing HTTP exists only inside a pinion activity (this is a native build)",
                request.method, request.url
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_convert_to_activity_errors_with_the_documented_retry_behaviour() {
        let cases = [
            (HttpErrorKind::Denied, "HttpDenied", false),
            (HttpErrorKind::Timeout, "HttpTimeout", true),
            (HttpErrorKind::Connect, "HttpConnect", true),
            (HttpErrorKind::Status(503), "HttpServerError", true),
            (HttpErrorKind::Status(429), "HttpServerError", true),
            (HttpErrorKind::Status(404), "HttpClientError", false),
            (HttpErrorKind::InvalidBody, "HttpInvalidBody", false),
        ];
        for (kind, name, retryable) in cases {
            let f = ActivityError::from(HttpError::new(kind, "m")).into_failure(1);
            assert_eq!(
                (f.kind.as_str(), !f.non_retryable),
                (name, retryable),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn error_for_status_keeps_success_and_reports_failure_with_the_body() {
        let r = |status| Response {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"card declined".to_vec(),
            url: "http://pay/charges".into(),
        };
        assert!(r(201).error_for_status().is_ok());
        let e = r(402).error_for_status().unwrap_err();
        assert_eq!(e.kind(), HttpErrorKind::Status(402));
        assert!(e.message().contains("402") && e.message().contains("card declined"));
        assert_eq!(r(200).header("Content-Type"), Some("text/plain"));
    }

    #[test]
    fn outside_wasm_a_request_is_refused_not_sent() {
        let e = Request::get("http://127.0.0.1:1/").send().unwrap_err();
        assert_eq!(e.kind(), HttpErrorKind::Denied);
    }
}
