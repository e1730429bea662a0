//! Outgoing HTTP for activities: the host side of `pinion::http_send`.
//!
//! One `reqwest` client (rustls, a connection pool shared by every attempt) sends what an
//! activity asks for, after checking the URL against the attempt's grants. Redirects are
//! followed here, not by the client, so that every hop is checked against the grants too:
//! a granted service cannot bounce an activity to a host it was never given. The request
//! never waits past the attempt's start-to-close deadline, and a response body larger than
//! the operator's limit is cut off with an error instead of filling memory.

use std::time::{Duration, Instant};

use pinion_abi::{HttpError, HttpErrorKind, HttpOutcome, HttpRequest, HttpResponse};
use reqwest::{Method, Url};

use crate::config::Capabilities;

/// Redirects followed for one request before giving up.
pub const MAX_REDIRECTS: usize = 10;

/// The shared client.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    max_response_bytes: usize,
}

impl HttpClient {
    /// A client whose responses may be at most `max_response_bytes` long.
    ///
    /// # Errors
    /// When the TLS backend cannot be set up.
    pub fn new(max_response_bytes: usize) -> Result<HttpClient, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("pinion/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpClient {
            client,
            max_response_bytes,
        })
    }
}

fn err(kind: HttpErrorKind, message: String) -> HttpError {
    HttpError { kind, message }
}

/// Who is asking, for messages: `activity "pay" of module 3f2a9c…`.
pub struct Asker<'a> {
    /// The activity type.
    pub activity_type: &'a str,
    /// The module's hash.
    pub module: &'a str,
}

fn denied(url: &Url, asker: &Asker<'_>, caps: &Capabilities, what: &str) -> HttpError {
    let origin = url.origin().ascii_serialization();
    let in_force = if caps.http.is_empty() {
        "it is granted no HTTP at all".to_string()
    } else {
        format!(
            "its HTTP grants are {}",
            caps.http
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    err(
        HttpErrorKind::Denied,
        format!(
            "{what} {url} is not granted to activity {:?} of module {}: {in_force}; to allow it, add \"{origin}\" to `http` in a [[grant]] for this module in pinion.toml",
            asker.activity_type,
            &asker.module[..asker.module.len().min(12)],
        ),
    )
}

/// Sends `req`, following granted redirects, until `deadline`.
pub async fn send(
    client: &HttpClient,
    caps: &Capabilities,
    asker: &Asker<'_>,
    req: HttpRequest,
    deadline: Instant,
) -> HttpOutcome {
    let mut url = Url::parse(&req.url).map_err(|e| {
        err(
            HttpErrorKind::InvalidRequest,
            format!("{:?} is not an absolute URL: {e}", req.url),
        )
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(err(
            HttpErrorKind::InvalidRequest,
            format!("{url}: only http:// and https:// URLs can be requested"),
        ));
    }
    let mut method = Method::from_bytes(req.method.as_bytes()).map_err(|_| {
        err(
            HttpErrorKind::InvalidRequest,
            format!("{:?} is not an HTTP method", req.method),
        )
    })?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &req.headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            err(
                HttpErrorKind::InvalidRequest,
                format!("{k:?} is not a header name"),
            )
        })?;
        let value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
            err(
                HttpErrorKind::InvalidRequest,
                format!("the value of header {k} is not a valid header value"),
            )
        })?;
        headers.append(name, value);
    }
    let mut body = Some(req.body);
    let mut what = "request to";
    for _ in 0..=MAX_REDIRECTS {
        if !caps.http.iter().any(|p| p.matches(&url)) {
            return Err(denied(&url, asker, caps, what));
        }
        #[allow(clippy::disallowed_methods)] // the attempt's deadline is real time
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = req
            .timeout_ms
            .map(Duration::from_millis)
            .map_or(left, |t| t.min(left));
        if timeout.is_zero() {
            return Err(err(
                HttpErrorKind::Timeout,
                format!("{method} {url}: the attempt's start-to-close deadline has passed"),
            ));
        }
        let mut builder = client
            .client
            .request(method.clone(), url.clone())
            .headers(headers.clone())
            .timeout(timeout);
        if let Some(b) = &body {
            if !b.is_empty() {
                builder = builder.body(b.clone());
            }
        }
        let mut resp = builder
            .send()
            .await
            .map_err(|e| transport(&method, &url, &e))?;
        let status = resp.status();
        if status.is_redirection() {
            if let Some(loc) = resp.headers().get(reqwest::header::LOCATION) {
                let loc = loc.to_str().unwrap_or_default();
                let next = url.join(loc).map_err(|e| {
                    err(
                        HttpErrorKind::InvalidRequest,
                        format!("{url} redirected to {loc:?}, which is not a URL: {e}"),
                    )
                })?;
                // 303 always, and 301/302 after a POST, continue as a GET without a body,
                // as browsers and curl do; 307 and 308 repeat the request as it was.
                if status.as_u16() == 303
                    || (matches!(status.as_u16(), 301 | 302) && method == Method::POST)
                {
                    method = Method::GET;
                    body = None;
                    headers.remove(reqwest::header::CONTENT_TYPE);
                    headers.remove(reqwest::header::CONTENT_LENGTH);
                }
                if next.origin() != url.origin() {
                    // Credentials were meant for the first host only.
                    headers.remove(reqwest::header::AUTHORIZATION);
                    headers.remove(reqwest::header::COOKIE);
                }
                url = next;
                what = "redirect to";
                continue;
            }
        }
        let mut out = Vec::new();
        if let Some(len) = resp.content_length() {
            if len as usize > client.max_response_bytes {
                return Err(too_large(&method, &url, client.max_response_bytes));
            }
        }
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if out.len() + c.len() > client.max_response_bytes {
                        return Err(too_large(&method, &url, client.max_response_bytes));
                    }
                    out.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => return Err(transport(&method, &url, &e)),
            }
        }
        return Ok(HttpResponse {
            status: status.as_u16(),
            headers: resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: out,
            url: url.to_string(),
        });
    }
    Err(err(
        HttpErrorKind::TooManyRedirects,
        format!("{} was redirected more than {MAX_REDIRECTS} times", req.url),
    ))
}

fn too_large(method: &Method, url: &Url, limit: usize) -> HttpError {
    err(
        HttpErrorKind::TooLarge,
        format!("{method} {url}: the response is larger than the limit of {limit} bytes"),
    )
}

fn transport(method: &Method, url: &Url, e: &reqwest::Error) -> HttpError {
    use std::error::Error as _;
    let mut cause = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let kind = if e.is_timeout() {
        HttpErrorKind::Timeout
    } else {
        HttpErrorKind::Connect
    };
    let what = if e.is_timeout() {
        "timed out".to_string()
    } else if cause.is_empty() {
        e.to_string()
    } else {
        format!("{e}: {cause}")
    };
    err(kind, format!("{method} {url}: {what}"))
}
