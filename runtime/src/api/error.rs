//! Errors of the API, one table for all three places that show them: the HTTP status and
//! JSON body the server answers, the exit code the CLI returns, and the message both print.
//!
//! | code | HTTP | exit | when |
//! |---|---|---|---|
//! | `bad_request` | 400 | 4 | body is not JSON, a query parameter is unknown or malformed, a bad cursor |
//! | `unauthorized` | 401 | 1 | no `Authorization: Bearer` header, or the wrong token |
//! | `not_found` | 404 | 3 | unknown instance, module, alias, workflow type or route; a module prefix under 4 characters |
//! | `method_not_allowed` | 405 | 1 | the route exists, not with this method |
//! | `ambiguous_module` | 409 | 3 | a hash prefix matches several modules |
//! | `already_exists` | 409 | 4 | an instance id in use |
//! | `imported` | 409 | 4 | waiting for an imported history, which never runs |
//! | `conflict` | 409 | 1 | the state changed under the request; retrying is correct |
//! | `not_accepting` | 409 | 4 | a signal, cancel or terminate for an instance that has ended or is imported |
//! | `rebuild_failed` | 409 | 8 | a query needed the instance rebuilt by replay, and its module cannot replay its history |
//! | `verification_failed` | 409 | 8 | `verify` replayed histories the module does not support; `details` has the report |
//! | `cancelled` | 409 | 1 | a job (replay, verify, upgrade) was cancelled before it finished |
//! | `payload_too_large` | 413 | 4 | body over the limit (64 MiB for wasm, 1 MiB for JSON) |
//! | `invalid_input` | 422 | 4 | well-formed request with a wrong value (bad id, input, percentage, policy) |
//! | `invalid_module` | 422 | 4 | the bytes are not a pinion module (not wasm, no ABI, bad manifest) |
//! | `query_failed` | 422 | 1 | the query handler failed, tried to change the workflow, or the instance has not started |
//! | `internal` | 500 | 1 | a bug or an I/O failure of the server |
//! | `unavailable` | 503 | 5 | the database is locked, unreadable or closing; the server is unreachable; 64 jobs are already queued or running |
//! | `timed_out` | 504 | 7 | the request ran past the server's `--request-timeout`; or (never sent) the CLI's `result --wait` ran out of time |
//!
//! The engine's [`Error`] maps onto the table in [`ErrorCode::of`], exhaustively, so a new
//! engine error cannot silently become a 500.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::types::Verification;
use crate::engine::Error;
use crate::registry::RegistryError;
use crate::replay::ReplayError;
use crate::store::StoreError;

/// The stable, machine-readable kind of an API error (the `error.code` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed request: not JSON, unknown or malformed query parameter, bad cursor.
    BadRequest,
    /// Missing or wrong bearer token.
    Unauthorized,
    /// The token's role does not allow the request.
    Forbidden,
    /// Unknown instance, module, alias, workflow type or route.
    NotFound,
    /// The route does not take this method.
    MethodNotAllowed,
    /// A module prefix matches several modules.
    AmbiguousModule,
    /// The instance id is in use.
    AlreadyExists,
    /// The instance is an imported history, which never runs.
    Imported,
    /// The state changed under the request (retryable).
    Conflict,
    /// The instance has ended (or is imported): it takes no more signals or stops.
    NotAccepting,
    /// A query could not rebuild the instance by replay.
    RebuildFailed,
    /// Verification replayed histories the module does not support.
    VerificationFailed,
    /// A job was cancelled before it finished.
    Cancelled,
    /// The request body is over the limit.
    PayloadTooLarge,
    /// A well-formed request with a wrong value.
    InvalidInput,
    /// The uploaded bytes are not a valid pinion module.
    InvalidModule,
    /// The workflow's query handler could not answer.
    QueryFailed,
    /// A server-side failure.
    Internal,
    /// The database (or the server) cannot be reached now.
    Unavailable,
    /// The CLI gave up waiting (never sent by the server).
    TimedOut,
}

impl ErrorCode {
    /// Every code, in the order of the table above.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::AmbiguousModule,
        ErrorCode::AlreadyExists,
        ErrorCode::Imported,
        ErrorCode::Conflict,
        ErrorCode::NotAccepting,
        ErrorCode::RebuildFailed,
        ErrorCode::VerificationFailed,
        ErrorCode::Cancelled,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InvalidInput,
        ErrorCode::InvalidModule,
        ErrorCode::QueryFailed,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::TimedOut,
    ];

    /// The snake_case name sent in `error.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::AmbiguousModule => "ambiguous_module",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Imported => "imported",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NotAccepting => "not_accepting",
            ErrorCode::RebuildFailed => "rebuild_failed",
            ErrorCode::VerificationFailed => "verification_failed",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::InvalidModule => "invalid_module",
            ErrorCode::QueryFailed => "query_failed",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::TimedOut => "timed_out",
        }
    }

    /// Parses a name sent by a server; `None` for a code this build does not know.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The HTTP status the server answers with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::AmbiguousModule
            | ErrorCode::AlreadyExists
            | ErrorCode::Imported
            | ErrorCode::Conflict
            | ErrorCode::NotAccepting
            | ErrorCode::RebuildFailed
            | ErrorCode::VerificationFailed
            | ErrorCode::Cancelled => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidInput | ErrorCode::InvalidModule | ErrorCode::QueryFailed => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The CLI's exit code (README, "Exit codes").
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::NotFound | ErrorCode::AmbiguousModule => 3,
            ErrorCode::BadRequest
            | ErrorCode::AlreadyExists
            | ErrorCode::Imported
            | ErrorCode::PayloadTooLarge
            | ErrorCode::InvalidInput
            | ErrorCode::InvalidModule
            | ErrorCode::NotAccepting => 4,
            ErrorCode::Unavailable => 5,
            ErrorCode::TimedOut => 7,
            ErrorCode::VerificationFailed | ErrorCode::RebuildFailed => 8,
            ErrorCode::Unauthorized
            | ErrorCode::Forbidden
            | ErrorCode::MethodNotAllowed
            | ErrorCode::Conflict
            | ErrorCode::Cancelled
            | ErrorCode::QueryFailed
            | ErrorCode::Internal => 1,
        }
    }

    /// The code of an engine error.
    pub fn of(e: &Error) -> ErrorCode {
        match e {
            Error::UnknownInstance(_)
            | Error::UnknownWorkflowType { .. }
            | Error::UnknownAlias(_) => ErrorCode::NotFound,
            Error::Registry(r) => ErrorCode::of_registry(r),
            Error::Store(s) => ErrorCode::of_store(s),
            Error::InvalidInput(_) | Error::InvalidInstanceId(_) | Error::Io { .. } => {
                ErrorCode::InvalidInput
            }
            Error::Imported(_) => ErrorCode::Imported,
            Error::WorkerLocked(_) => ErrorCode::Unavailable,
            Error::WaitTimedOut { .. } => ErrorCode::TimedOut,
            Error::Sandbox(_) => ErrorCode::Internal,
            Error::Query { kind, .. } => match kind.as_str() {
                "UnknownQuery" => ErrorCode::NotFound,
                "InvalidInput" => ErrorCode::InvalidInput,
                _ => ErrorCode::QueryFailed,
            },
            Error::Rebuild(_) => ErrorCode::RebuildFailed,
            Error::Cancelled { .. } => ErrorCode::Cancelled,
            Error::Migrate(m) => {
                use crate::store::migrate::MigrateError;
                match m {
                    MigrateError::NotEmpty { .. } | MigrateError::InUse { .. } => {
                        ErrorCode::Conflict
                    }
                    MigrateError::Source { .. } | MigrateError::Destination { .. } => {
                        ErrorCode::Unavailable
                    }
                    MigrateError::Value { .. } => ErrorCode::Internal,
                }
            }
        }
    }

    fn of_registry(e: &RegistryError) -> ErrorCode {
        match e {
            RegistryError::Invalid(_) | RegistryError::BadManifest(_) => ErrorCode::InvalidModule,
            // Not looked up, so not found (and an alias of that name may still be meant).
            RegistryError::UnknownModule(_) | RegistryError::PrefixTooShort(_) => {
                ErrorCode::NotFound
            }
            RegistryError::AmbiguousModule { .. } => ErrorCode::AmbiguousModule,
            RegistryError::Store(s) => ErrorCode::of_store(s),
        }
    }

    fn of_store(e: &StoreError) -> ErrorCode {
        match e {
            StoreError::Open { .. }
            | StoreError::Locked(_)
            | StoreError::Corrupt(_)
            | StoreError::Closed => ErrorCode::Unavailable,
            StoreError::Conflict(_) => ErrorCode::Conflict,
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            StoreError::NotAccepting { .. } => ErrorCode::NotAccepting,
            StoreError::Database(_) | StoreError::Constraint(_) => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of an API call, local or remote.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] Error),
    /// A replay candidate could not be loaded.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The request is malformed (`bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// A value in a well-formed request is wrong (`invalid_input`).
    #[error("{0}")]
    InvalidInput(String),
    /// Something named in the request does not exist (`not_found`).
    #[error("{0}")]
    NotFound(String),
    /// No or the wrong bearer token. The message never repeats what was sent.
    #[error("missing or wrong bearer token: send `Authorization: Bearer <token>`")]
    Unauthorized,
    /// The token is known, but its role does not allow the request.
    #[error("the token `{name}` has role `{role}`; {method} {path} needs `{needed}`")]
    Forbidden {
        /// The token's name (never its value).
        name: String,
        /// Its role.
        role: String,
        /// The role the request needs.
        needed: String,
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// The route does not take this method.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path.
        path: String,
    },
    /// The request body is over the limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Verification found histories the module does not support; nothing changed.
    #[error("{}", .0.message())]
    Refused(Box<Verification>),
    /// A failure of the server itself.
    #[error("{0}")]
    Internal(String),
    /// The server is at a limit it sets itself (jobs queued); retry later (`unavailable`).
    #[error("{0}")]
    Busy(String),
    /// The request ran longer than the server's request timeout (`timed_out`).
    #[error("the request took longer than the server's request timeout ({0:?}); run long replays, verifies and upgrades as jobs (`job=true`), as the CLI does")]
    RequestTimeout(std::time::Duration),
    /// The server could not be reached (`unavailable`).
    #[error("cannot reach the pinion server at {url}: {reason}")]
    Unreachable {
        /// The server URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An error answered by a server, as it sent it.
    #[error("{message}")]
    Remote {
        /// The code (`internal` when the server sent one this build does not know).
        code: ErrorCode,
        /// The HTTP status.
        status: u16,
        /// The message.
        message: String,
    },
}

impl ApiError {
    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Engine(e) => ErrorCode::of(e),
            ApiError::Replay(ReplayError::Module(r)) => ErrorCode::of_registry(r),
            ApiError::Replay(ReplayError::HistoryFile { .. }) => ErrorCode::InvalidInput,
            ApiError::Replay(ReplayError::Sandbox(_)) => ErrorCode::Internal,
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::InvalidInput(_) => ErrorCode::InvalidInput,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::Forbidden { .. } => ErrorCode::Forbidden,
            ApiError::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            ApiError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::Refused(_) => ErrorCode::VerificationFailed,
            ApiError::Internal(_) => ErrorCode::Internal,
            ApiError::Busy(_) => ErrorCode::Unavailable,
            ApiError::RequestTimeout(_) => ErrorCode::TimedOut,
            ApiError::Unreachable { .. } => ErrorCode::Unavailable,
            ApiError::Remote { code, .. } => *code,
        }
    }

    /// The message with its causes, `a: b: c` (what the CLI prints, and the server sends).
    pub fn message(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let text = s.to_string();
            // `transparent` variants repeat their source's text; say each cause once.
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = s.source();
        }
        out
    }

    /// The JSON body the server sends for this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                code: self.code(),
                message: self.message(),
                details: match self {
                    ApiError::Refused(v) => serde_json::to_value(v).ok(),
                    _ => None,
                },
            },
        }
    }
}

/// The body of every error response: `{"error": {"code": ..., "message": ..., "details"?}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorObject {
    /// Stable code (see the table in this module's docs).
    pub code: ErrorCode,
    /// Human-readable message; the same text the CLI prints.
    pub message: String,
    /// Structured detail: for `verification_failed`, the replay report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        if code == ErrorCode::Internal {
            // The only errors an operator must see: the client got a 500.
            tracing::error!("internal error: {}", self.message());
        }
        (code.status(), axum::Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_name_and_serde() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::String(c.as_str().into())
            );
        }
    }

    #[test]
    fn bad_input_is_never_a_server_error() {
        for c in ErrorCode::ALL {
            let server_side = matches!(c, ErrorCode::Internal | ErrorCode::Unavailable);
            assert_eq!(
                c.status().is_server_error(),
                server_side || c == ErrorCode::TimedOut
            );
        }
    }

    #[test]
    fn engine_errors_keep_the_cli_exit_codes() {
        assert_eq!(
            ErrorCode::of(&Error::UnknownInstance("x".into())).exit_code(),
            3
        );
        assert_eq!(
            ErrorCode::of(&Error::InvalidInput("x".into())).exit_code(),
            4
        );
        assert_eq!(
            ErrorCode::of(&Error::Store(StoreError::Locked("x".into()))).exit_code(),
            5
        );
        assert_eq!(
            ErrorCode::of(&Error::Store(StoreError::AlreadyExists("x".into()))).status(),
            StatusCode::CONFLICT
        );
    }
}
