//! Logs and metrics. Logs: every layer writes through `tracing` macros; this module builds
//! the one subscriber that turns them into lines on stderr. Metrics: [`metrics`], served by
//! the API at `/metrics`.
//!
//! The library never installs a subscriber (an embedding application owns its own); the
//! CLI calls [`install`] once, before it does anything else. Lines are text (an RFC 3339
//! UTC timestamp, the level, the target, the fields, the message) or JSON (one object per
//! line, for a log shipper), filtered by a `RUST_LOG`-style directive list.
//!
//! What is logged, and at which level:
//!
//! | target | level | what |
//! |---|---|---|
//! | `pinion_runtime::api` | info | one line per HTTP request: method, path (never the query or headers, so never a token), status, duration |
//! | `guest` | info | each line a workflow or activity wrote to stdout or stderr, with `instance`, `module`, `source`, `stream`, and `workflow_type` or `attempt` |
//! | `pinion_runtime::worker` | warn / error | blocked instances, failed writes, contained panics |
//! | `pinion_runtime::worker` | debug | spans `activation` and `attempt` around each activation and activity attempt, carrying the instance, workflow or activity type, module hash and attempt |
//! | `pinion_runtime::api` | info / warn | start-up, shutdown, retention, webhook retries |
//!
//! The activation and attempt spans are at `debug` because entering two spans per step is
//! measurable at 10,000 steps a second; the guest lines carry the same fields themselves.

pub mod metrics;

use tracing_subscriber::filter::EnvFilter;

/// The filter when neither `--log`, `$PINION_LOG` nor `$RUST_LOG` sets one.
pub const DEFAULT_FILTER: &str = "warn,pinion_runtime=info,guest=info";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-04T17:30:00.123456Z  INFO target: message key=value`.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`, `span`, `spans`.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter does not parse.
    #[error("invalid log filter `{filter}`: {reason}; use directives like `info`, `warn,pinion_runtime=debug` or `pinion_runtime::api=warn`")]
    Filter {
        /// The filter as given.
        filter: String,
        /// What the parser said.
        reason: String,
    },
    /// A subscriber was installed already (in this process).
    #[error("a log subscriber is already installed")]
    AlreadyInstalled,
}

/// The filter to use: `flag` (from `--log`), else `$PINION_LOG`, else `$RUST_LOG`, else
/// [`DEFAULT_FILTER`].
pub fn filter_source(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| std::env::var("PINION_LOG").ok())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_FILTER.to_owned())
}

/// Parses a filter, refusing what `EnvFilter` would silently ignore.
///
/// # Errors
/// [`TelemetryError::Filter`] naming the filter and the problem.
pub fn parse_filter(filter: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| TelemetryError::Filter {
            filter: filter.to_owned(),
            reason: e.to_string(),
        })
}

/// Installs the process's subscriber: lines on stderr in `format`, filtered by `filter`.
///
/// # Errors
/// A filter that does not parse, or a subscriber already installed.
pub fn install(filter: &str, format: LogFormat) -> Result<(), TelemetryError> {
    let filter = parse_filter(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInstalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_refused_with_the_filter_named() {
        let e = parse_filter("pinion_runtime=loud").unwrap_err();
        assert!(e.to_string().contains("`pinion_runtime=loud`"), "{e}");
        assert!(parse_filter(DEFAULT_FILTER).is_ok());
        assert!(parse_filter("warn,pinion_runtime::api=debug").is_ok());
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        assert_eq!(filter_source(Some("debug")), "debug");
    }
}
