//! Request parsing that answers in the API's error shape.
//!
//! axum's own extractors reject with plain-text bodies and their own status codes; these
//! wrappers turn every rejection into an [`ApiError`], so a client always gets
//! `{"error": {"code", "message"}}`: 400 for what cannot be parsed, 413 for a body over the
//! limit, 422 for a well-formed JSON body with a wrong shape or value.

use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::types::{MAX_JSON_BYTES, MAX_WASM_BYTES};

/// The query string as name/value pairs, checked against the names a route accepts.
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Refuses names outside `known` (a typo should not silently mean "no filter").
    pub fn only(self, known: &[&str]) -> Result<Params, ApiError> {
        if let Some((name, _)) = self.0.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            return Err(ApiError::BadRequest(if known.is_empty() {
                format!("unknown query parameter `{name}`: this endpoint takes none")
            } else {
                format!(
                    "unknown query parameter `{name}`; this endpoint takes: {}",
                    known.join(", ")
                )
            }));
        }
        Ok(self)
    }

    /// The value of a parameter given at most once.
    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.0.iter().filter(|(n, _)| n == name);
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{name}` is given more than once"
            )));
        }
        Ok(first)
    }

    /// A non-empty text parameter.
    pub fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.one(name)? {
            Some("") => Err(ApiError::BadRequest(format!(
                "query parameter `{name}` is empty"
            ))),
            other => Ok(other.map(str::to_owned)),
        }
    }

    /// Every value of a repeatable parameter.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A parameter parsed as `T`; `what` describes the expected form.
    pub fn parse<T: FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, ApiError> {
        self.one(name)?
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "query parameter `{name}`: expected {what}, got `{v}`"
                    ))
                })
            })
            .transpose()
    }

    /// A boolean parameter: `true` or `false`; absent is false.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self.parse::<bool>(name, "true or false")?.unwrap_or(false))
    }

    /// A long poll's `wait`: whole seconds, 0 when absent, at most
    /// [`MAX_WAIT_SECS`](super::types::MAX_WAIT_SECS) (more is a bad request).
    pub fn wait_secs(&self) -> Result<u64, ApiError> {
        use super::types::MAX_WAIT_SECS;
        let wait = self
            .parse::<u64>("wait", "a whole number of seconds")?
            .unwrap_or(0);
        if wait > MAX_WAIT_SECS {
            return Err(ApiError::BadRequest(format!(
                "query parameter `wait`: at most {MAX_WAIT_SECS} seconds; poll again to wait longer"
            )));
        }
        Ok(wait)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Params, ApiError> {
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|Query(pairs)| Params(pairs))
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
    }
}

/// The one path parameter of a route (`{id}`, `{name}`), percent-decoded.
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Segment, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| Segment(s))
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))
    }
}

/// The two path parameters of a route (`{id}` and `{name}`), percent-decoded.
pub struct Segments(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segments {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Segments, ApiError> {
        Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map(|Path((a, b))| Segments(a, b))
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))
    }
}

async fn body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {}", e.body_text()))
        }
    })
}

/// A raw wasm body, up to [`MAX_WASM_BYTES`] (the route must raise `DefaultBodyLimit`).
pub struct WasmBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for WasmBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<WasmBody, ApiError> {
        body(req, MAX_WASM_BYTES).await.map(WasmBody)
    }
}

/// A JSON body, up to [`MAX_JSON_BYTES`]. An empty body is `{}` when `T` allows it.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<JsonBody<T>, ApiError> {
        let bytes = body(req, MAX_JSON_BYTES).await?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let value: serde_json::Value = serde_json::from_slice(text)
            .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
        // serde would also read a struct from an array; the API takes objects only.
        if !value.is_object() {
            return Err(ApiError::InvalidInput(
                "request body must be a JSON object".into(),
            ));
        }
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|e| ApiError::InvalidInput(format!("invalid request body: {e}")))
    }
}
