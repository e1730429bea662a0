//! Bearer-token authentication.
//!
//! The server reads one token from a file; every request must carry
//! `Authorization: Bearer <token>`, or it gets 401 before any handler runs (unknown routes
//! too, so the route table is not probed without the token). The comparison takes the same
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
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|e| TokenError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(TokenError::Exposed {
                    path: path.display().to_string(),
                    mode,
                });
            }
        }
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
pub async fn require_token(State(token): State<Arc<Token>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(t) if token.matches(t) => next.run(req).await,
        _ => {
            let mut resp = ApiError::Unauthorized.into_response();
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
