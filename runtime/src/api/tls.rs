//! TLS for the HTTP API: `pinion server --tls-cert FILE --tls-key FILE` (PEM), with rustls.
//! The key file is refused when others than its owner can read it, like token files.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key file is readable by others.
    #[error(
        "the TLS key file {path} has mode {mode:o}: others can read it; run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The certificate and the key do not make a server configuration.
    #[error("the TLS certificate and key do not fit together: {0}")]
    Config(String),
}

/// A server's TLS: the acceptor built from its certificate and key.
#[derive(Clone)]
pub struct Tls(pub(crate) tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

/// The TLS of a server with `cert` (a PEM chain, leaf first) and `key` (a PEM private
/// key).
///
/// # Errors
/// [`TlsError`], naming the file and the problem.
pub fn acceptor(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
    let file_err = |path: &Path, reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    if let Some(mode) = crate::config::shared_mode(key).map_err(|e| file_err(key, e.to_string()))? {
        return Err(TlsError::Exposed {
            path: key.display().to_string(),
            mode,
        });
    }
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(cert, "holds no PEM certificate".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_err(key, format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Tls(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}
