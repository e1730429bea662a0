//! The operator's configuration file, `pinion.toml`: what activities may reach.
//!
//! Deny by default. An activity attempt gets only what the `[[grant]]` entries matching its
//! module (by alias, version label, hash or hash prefix) and its activity type give it:
//! outgoing HTTP to URL patterns, preopened directories, environment variables copied from
//! the server's environment, and secrets from a separate file that only its owner can read.
//! Workflows never get any of it.
//!
//! The file is parsed and validated here, in one place ([`Grants::load`]): every mistake is
//! reported with the grant's number and what to write instead, before anything runs. The
//! result is immutable; [`GrantSource`] re-reads the files when they change, so a grant
//! change applies to the next attempt without redeploying anything, and a broken edit keeps
//! the last good grants in force.
//!
//! ```toml
//! secrets_file = "secrets.toml"        # NAME = "value" lines, mode 0600
//!
//! [[grant]]
//! modules = ["orders"]                 # alias, version label, hash or hash prefix
//! activities = ["charge_payment"]      # optional: every activity type when absent
//! http = ["http://127.0.0.1:8080", "https://*.internal.example/v1"]
//! env = ["PAYMENT_URL"]                # copied from the server's environment
//! secrets = ["PAY_API_TOKEN"]          # from secrets_file
//! dirs = [{ host = "receipts", guest = "/receipts", mode = "rw" }]
//! ```

mod grants;
mod url_pattern;

pub use grants::{
    Capabilities, DirGrant, DirMode, GrantSource, Grants, ModuleFacts, ModuleSelector, Secret,
};
pub use url_pattern::UrlPattern;

/// The permission bits of the file at `path` when anyone but its owner may read or write
/// it (`None` when it is private, mode 0600 or stricter). Secrets files, token files and
/// TLS keys are refused in that case.
///
/// # Errors
/// When the file's metadata cannot be read.
pub fn shared_mode(path: &std::path::Path) -> std::io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then_some(mode))
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).map(|_| None)
    }
}

/// Why a configuration file was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("{path}: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// What the parser said, with the line.
        reason: String,
    },
    /// A value is not acceptable; the message says which and what to write instead.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}
