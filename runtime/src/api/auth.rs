//! Bearer-token authentication and roles.
//!
//! The server knows its tokens from `--token-file` (one token, role `admin`) and
//! `--tokens-file` (named tokens with roles); every request must carry
//! `Authorization: Bearer <token>`, or it gets 401 before any handler runs (unknown routes
//! too, so the route table is not probed without a token). A known token whose role does
//! not cover the request gets 403 ([`required_role`]). The comparison takes the same
//! time whatever the token sent: both sides are hashed with SHA-256 and the digests compared
//! byte by byte without an early exit. The token never appears in `Debug` output, logs or
//! error messages.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Why a token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read the token file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The token is empty (after trimming whitespace).
    #[error("the token {0} is empty")]
    Empty(String),
    /// Others than its owner can read or write the file.
    #[error("the token file {path} has mode {mode:o}: others can read it; run `chmod 600 {path}`")]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The token cannot be sent in an HTTP header.
    #[error(
        "the token {0} has characters that cannot be sent in an HTTP header (use printable ASCII)"
    )]
    Unprintable(String),
}

/// A secret bearer token. `Debug` prints `Token(***)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token from text, trimmed; `source` names it in errors (never the text itself).
    ///
    /// # Errors
    /// [`TokenError::Empty`], [`TokenError::Unprintable`].
    pub fn new(text: &str, source: &str) -> Result<Token, TokenError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(TokenError::Empty(source.into()));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(TokenError::Unprintable(source.into()));
        }
        Ok(Token(t.to_owned()))
    }

    /// The trimmed contents of a file.
    ///
    /// # Errors
    /// [`TokenError`].
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| TokenError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Token::new(&text, &format!("in {}", path.display()))
    }

    /// The token, for the `Authorization` header of a client.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// True when `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented);
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Middleware: passes requests with the right bearer token, answers 401 to the rest.
pub async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let Some(known) = presented.and_then(|t| tokens.find(t)) else {
        let mut resp = ApiError::Unauthorized.into_response();
        resp.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return resp;
    };
    let needed = required_role(req.method().as_str(), req.uri().path());
    if known.role < needed {
        let refusal = ApiError::Forbidden {
            name: known.name.clone(),
            role: known.role.as_str().into(),
            needed: needed.as_str().into(),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
        };
        // The caller is authenticated: read (and drop) what it is uploading, so it gets
        // this answer rather than a connection closed mid-upload.
        let _ = axum::body::to_bytes(req.into_body(), super::types::MAX_WASM_BYTES).await;
        return refusal.into_response();
    }
    next.run(req).await
}

/// What a token may do. Each role can do everything the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read: every `GET` (status, lists, histories, modules, events, the OpenAPI
    /// document) and queries, which never change an instance.
    Reader,
    /// Run instances: start, signal, cancel and terminate them (one or in bulk), replay
    /// histories against a module, and cancel jobs.
    Operator,
    /// Everything: deploy modules, set and ramp aliases, upgrade instances, collect
    /// modules.
    Admin,
}

impl Role {
    /// Its name, as in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The role a request needs, from its method and path.
pub fn required_role(method: &str, path: &str) -> Role {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET" | "HEAD", _) => Role::Reader,
        ("POST", ["v1", "instances", _, "queries", _]) => Role::Reader,
        ("POST", ["v1", "instances"])
        | ("POST", ["v1", "instances", _, "signals", _])
        | ("POST", ["v1", "instances", _, "cancel" | "terminate"])
        | ("POST", ["v1", "cancel" | "terminate" | "replay"])
        | ("POST", ["v1", "jobs", _, "cancel"])
        | ("POST", ["v1", "webhooks", "dead-letters", _, "redeliver"]) => Role::Operator,
        _ => Role::Admin,
    }
}

/// A token the server accepts.
#[derive(Debug, Clone)]
pub struct NamedToken {
    /// Shown in errors and logs instead of the token.
    pub name: String,
    /// What it may do.
    pub role: Role,
    token: Token,
}

/// Every token the server accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<NamedToken>);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    token: String,
}

impl Tokens {
    /// No tokens.
    pub fn new() -> Tokens {
        Tokens::default()
    }

    /// Adds `token` with `role` under `name`.
    pub fn add(&mut self, name: &str, role: Role, token: Token) {
        self.0.push(NamedToken {
            name: name.into(),
            role,
            token,
        });
    }

    /// True when no token is known.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The known token `presented` is, checking every one (in time independent of which).
    pub fn find(&self, presented: &[u8]) -> Option<&NamedToken> {
        let mut found = None;
        for t in &self.0 {
            if t.token.matches(presented) && found.is_none() {
                found = Some(t);
            }
        }
        found
    }

    /// Reads a tokens file (TOML, mode 0600 or stricter):
    ///
    /// ```toml
    /// [[token]]
    /// name = "ci"
    /// role = "operator"   # reader, operator or admin
    /// token = "..."
    /// ```
    ///
    /// # Errors
    /// [`TokenError`]: unreadable, readable by others, not this format, an empty or
    /// unprintable token, a name or a token given twice.
    pub fn from_file(path: &Path) -> Result<Tokens, TokenError> {
        let shown = path.display().to_string();
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| TokenError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let file: TokensFile = toml::from_str(&text).map_err(|e| TokenError::Read {
            path: shown.clone(),
            reason: format!("not a tokens file: {e}"),
        })?;
        let mut tokens = Tokens::new();
        for e in file.token {
            let token = Token::new(&e.token, &format!("`{}` in {shown}", e.name))?;
            if tokens.0.iter().any(|t| t.name == e.name) {
                return Err(TokenError::Read {
                    path: shown,
                    reason: format!("the name `{}` is given twice", e.name),
                });
            }
            if tokens.find(token.secret().as_bytes()).is_some() {
                return Err(TokenError::Read {
                    path: shown,
                    reason: format!("the token of `{}` is also another entry's", e.name),
                });
            }
            tokens.add(&e.name, e.role, token);
        }
        if tokens.is_empty() {
            return Err(TokenError::Read {
                path: shown,
                reason: "it lists no [[token]]".into(),
            });
        }
        Ok(tokens)
    }
}

/// Refuses a secret file others than its owner can read or write.
fn check_private(path: &Path) -> Result<(), TokenError> {
    let shared = crate::config::shared_mode(path).map_err(|e| TokenError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    match shared {
        Some(mode) => Err(TokenError::Exposed {
            path: path.display().to_string(),
            mode,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_role_its_effect_calls_for() {
        use Role::{Admin, Operator, Reader};
        for (method, path, role) in [
            ("GET", "/openapi.json", Reader),
            ("GET", "/v1/instances/o-1/history", Reader),
            ("GET", "/v1/events", Reader),
            ("POST", "/v1/instances/o-1/queries/status", Reader),
            ("POST", "/v1/instances", Operator),
            ("POST", "/v1/instances/o-1/signals/approve", Operator),
            ("POST", "/v1/instances/o-1/cancel", Operator),
            ("POST", "/v1/instances/o-1/terminate", Operator),
            ("POST", "/v1/cancel", Operator),
            ("POST", "/v1/replay", Operator),
            ("GET", "/v1/webhooks/dead-letters", Reader),
            ("POST", "/v1/webhooks/dead-letters/3/redeliver", Operator),
            ("POST", "/v1/modules", Admin),
            ("PUT", "/v1/aliases/orders", Admin),
            ("POST", "/v1/aliases/orders/ramp", Admin),
            ("DELETE", "/v1/aliases/orders/ramp", Admin),
            ("POST", "/v1/upgrade", Admin),
            ("POST", "/v1/gc", Admin),
            ("POST", "/v1/no/such/route", Admin),
        ] {
            assert_eq!(required_role(method, path), role, "{method} {path}");
        }
        assert!(Reader < Operator && Operator < Admin);
    }

    #[test]
    fn tokens_are_trimmed_checked_and_never_printed() {
        let t = Token::new("  s3cret\n", "test").unwrap();
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3cret "));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b""));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(matches!(Token::new(" \n", "x"), Err(TokenError::Empty(_))));
        assert!(matches!(
            Token::new("a\u{7}b", "x"),
            Err(TokenError::Unprintable(_))
        ));
    }
}
