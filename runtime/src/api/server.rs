//! `pinion server`: the HTTP API and the workers in one process, and their shutdown.
//!
//! A small tokio runtime (two async workers; engine calls go to its blocking pool) serves
//! the router of [`super::routes`]. On SIGTERM or SIGINT the server stops accepting
//! connections, ends long polls early (they answer with the instance as it is), lets every
//! in-flight request finish, and only then stops the workers, which let their running
//! tasks finish too ([`WorkerGuard::shutdown`]). Nothing is lost either way: a step that did
//! not commit runs again after a restart.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::auth::Tokens;
use super::error::ApiError;
use super::routes::{router, AppState};
use super::webhooks::{Deliveries, Webhook};
use crate::engine::{Pinion, WorkerGuard};
use crate::store::StoreError;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No token and authentication not explicitly disabled, or disabled on a non-loopback
    /// address.
    #[error("{0}")]
    Auth(String),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving HTTP failed: {0}")]
    Serve(std::io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signals(std::io::Error),
    /// The webhooks' positions could not be read.
    #[error("cannot start the webhooks: {0}")]
    Webhooks(StoreError),
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0: any free port; the bound address is reported).
    pub listen: SocketAddr,
    /// The bearer tokens and their roles; `None` serves without authentication (loopback
    /// only).
    pub tokens: Option<Tokens>,
    /// Where lifecycle events are POSTed.
    pub webhooks: Vec<Webhook>,
    /// How long a webhook retries an event before it becomes a dead letter.
    pub webhook_give_up: Duration,
    /// A connection that has not sent a whole request head (request line and headers) this
    /// long after it opened, or after its previous request, is closed.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog until one
    /// closes.
    pub max_connections: usize,
    /// A request whose answer is not ready this long after its head arrived (body upload
    /// included) is answered `504 timed_out`; what it ran is cancelled before its next
    /// instance. Long polls wait at most a minute; event streams and jobs are not bound.
    pub request_timeout: Duration,
    /// Ended instances older than this are purged periodically; `None` keeps them.
    pub retention: Option<Duration>,
    /// Serve HTTPS with this acceptor (`--tls-cert`, `--tls-key`); `None`: plain HTTP.
    pub tls: Option<super::tls::Tls>,
}

/// Default [`ServerConfig::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ServerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default [`ServerConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

impl ServerConfig {
    /// Checks the authentication rule: a token, or `no_auth` on a loopback address.
    ///
    /// # Errors
    /// [`ServeError::Auth`] with what to do instead.
    pub fn new(
        listen: SocketAddr,
        tokens: Option<Tokens>,
        no_auth: bool,
    ) -> Result<ServerConfig, ServeError> {
        let tokens = tokens.filter(|t| !t.is_empty());
        match (&tokens, no_auth) {
            (Some(_), true) => Err(ServeError::Auth(
                "give either tokens (--token-file, --tokens-file) or --no-auth, not both".into(),
            )),
            (None, false) => Err(ServeError::Auth(
                "the HTTP API needs a token: --token-file FILE or --tokens-file FILE (or --no-auth, on a loopback address only)"
                    .into(),
            )),
            (None, true) if !listen.ip().is_loopback() => Err(ServeError::Auth(format!(
                "--no-auth is allowed only on a loopback address (127.0.0.1, ::1), not {}; use --token-file",
                listen.ip()
            ))),
            _ => Ok(ServerConfig {
                listen,
                tokens,
                webhooks: Vec::new(),
                webhook_give_up: super::webhooks::DEFAULT_GIVE_UP,
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                retention: None,
                tls: None,
            }),
        }
    }
}

/// Serves the API on `config.listen` beside the running `worker` and the webhook
/// deliverers until SIGTERM or SIGINT, then shuts down in order (HTTP, webhooks, then
/// workers). `ready` is called with the bound address once requests are accepted.
///
/// # Errors
/// [`ServeError`]; the workers are stopped in every case.
pub fn serve(
    pinion: Pinion,
    worker: WorkerGuard,
    config: ServerConfig,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let worker = Arc::new(Mutex::new(Some(worker)));
    let pinion = Arc::new(pinion);
    let deliveries = Deliveries::start(
        pinion.store().clone(),
        pinion.clock().clone(),
        config.webhooks.clone(),
        config.webhook_give_up,
    );
    let retention = config
        .retention
        .map(|keep| Retention::start(pinion.clone(), keep));
    let result = match deliveries {
        Ok(deliveries) => {
            let result = run(pinion, worker.clone(), config, ready);
            deliveries.shutdown();
            result
        }
        Err(e) => Err(ServeError::Webhooks(e)),
    };
    if let Some(r) = retention {
        r.stop();
    }
    let guard = worker.lock().map(|mut w| w.take()).unwrap_or_default();
    if let Some(w) = guard {
        w.shutdown();
    }
    result
}

fn run(
    pinion: Arc<Pinion>,
    worker: Arc<Mutex<Option<WorkerGuard>>>,
    config: ServerConfig,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pinion-http")
        .enable_io()
        .enable_time()
        .build()
        .map_err(ServeError::Runtime)?;
    let result = rt.block_on(async move {
        // Install the handlers before announcing the address, so a signal sent as soon as
        // the caller sees it is handled, not fatal.
        let signals = Signals::install().map_err(ServeError::Signals)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(ServeError::Serve)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let wake = Arc::new(move || {
            if let Ok(w) = worker.lock() {
                if let Some(w) = w.as_ref() {
                    w.wake();
                }
            }
        });
        let (head_tx, head_rx) = watch::channel(0);
        let state =
            AppState::new(pinion, wake, stop_rx, head_rx).with_webhooks(config.webhooks.clone());
        tokio::spawn(super::events::watch_head(state.clone(), head_tx));
        let limits = config.limits();
        let jobs = state.clone();
        let app = router(state, config.tokens)
            .layer(axum::middleware::from_fn_with_state(
                config.request_timeout,
                request_timeout,
            ))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                |panic: Box<dyn std::any::Any + Send>| {
                    use axum::response::IntoResponse;
                    ApiError::Internal(format!(
                        "the request's handler panicked: {}",
                        crate::worker::panic_message(panic.as_ref())
                    ))
                    .into_response()
                },
            ))
            .layer(axum::middleware::from_fn(log_request));
        ready(addr);
        let stop = async move {
            signals.recv().await;
            tracing::info!(
                "stopping; in-flight requests and tasks finish first, jobs are cancelled"
            );
            jobs.cancel_jobs();
            let _ = stop_tx.send(true);
        };
        accept_loop(listener, app, &limits, stop).await;
        Ok(())
    });
    // Requests are done; engine calls they started have returned. Give stragglers a bound.
    rt.shutdown_timeout(Duration::from_secs(30));
    result
}

/// Answers `504 timed_out` for a request not answered within `limit`, dropping (so
/// cancelling) its handler. A response that streams (the event stream) is answered at
/// once and not bound.
async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout(limit).into_response(),
    }
}

/// One log line per request, once it is answered: method, path, status and duration. The
/// query string and the headers are left out, so a token never reaches the log. A streamed
/// response (the event stream) is logged when its head is sent.
async fn log_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    #[allow(clippy::disallowed_methods)] // a request's duration is real time
    let started = std::time::Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let response = next.run(req).await;
    tracing::info!(
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    response
}

/// The server's retention thread: purges ended instances older than the retention every
/// tenth of it (at least every second, at most every ten minutes). Servers sharing a
/// PostgreSQL database purge from one of them at a time (`EventStore::lead`), so they do
/// not all delete the same rows at once; another takes over when it is gone.
struct Retention {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

/// What the servers sharing a database lead to purge.
const RETENTION_LEAD: &str = "retention";

impl Retention {
    fn start(pinion: Arc<Pinion>, keep: Duration) -> Retention {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let every = (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pinion-retention".into())
            .spawn(move || {
                let mut lead: Option<Box<dyn crate::store::events::Lead>> = None;
                loop {
                    if !lead.as_mut().is_some_and(|l| l.held()) {
                        lead = match pinion.store().lead(RETENTION_LEAD) {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::warn!("retention: cannot take the lead: {e}");
                                None
                            }
                        };
                    }
                    // Another server on the database purges meanwhile.
                    if lead.is_some() {
                        match pinion.purge(keep, None, None, false) {
                            Ok(r) if !r.instances.is_empty() => tracing::info!(
                                "retention: deleted {} ended instance(s) older than {keep:?}",
                                r.instances.len()
                            ),
                            Ok(_) => {}
                            Err(e) => tracing::warn!("retention: {e}"),
                        }
                    }
                    let (lock, cv) = &*s;
                    let stopped = lock
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let (stopped, _) = cv
                        .wait_timeout_while(stopped, every, |stopped| !*stopped)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if *stopped {
                        return;
                    }
                }
            })
            .expect("spawn the retention thread");
        Retention { stop, thread }
    }

    fn stop(self) {
        *self
            .stop
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.stop.1.notify_all();
        let _ = self.thread.join();
    }
}

/// What bounds a client's hold on the server, and how connections are wrapped.
struct ConnLimits {
    header_read_timeout: Duration,
    max_connections: usize,
    tls: Option<super::tls::Tls>,
}

impl ServerConfig {
    fn limits(&self) -> ConnLimits {
        ConnLimits {
            header_read_timeout: self.header_read_timeout,
            max_connections: self.max_connections.max(1),
            tls: self.tls.clone(),
        }
    }
}

/// Accepts connections until `stop` resolves, serving each with HTTP/1.1: at most
/// `max_connections` at once (the next accept waits for a free slot, so further clients
/// queue in the kernel's backlog), and each must send its request head within
/// `header_read_timeout`. On stop, it accepts nothing more, closes idle connections, and
/// waits for the requests in flight.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: &ConnLimits,
    stop: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        match &limits.tls {
            None => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                // The handshake gets the header-read timeout too: a client that never
                // finishes it holds its slot no longer than one that never sends headers.
                let (acceptor, http, watcher) =
                    (acceptor.0.clone(), http.clone(), graceful.watcher());
                let handshake_timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    let accepted =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
                    if let Ok(Ok(tls)) = accepted {
                        let conn = http.serve_connection(TokioIo::new(tls), service);
                        let _ = watcher.watch(conn).await;
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// SIGTERM and SIGINT, installed eagerly.
pub(crate) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a tokio runtime with I/O enabled).
    pub(crate) fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the first of them.
    pub(crate) async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::{Role, Token};

    #[test]
    fn no_auth_only_on_loopback_and_never_with_a_token() {
        let lo: SocketAddr = "127.0.0.1:7077".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7077".parse().unwrap();
        let mut t = Tokens::new();
        t.add("test", Role::Admin, Token::new("x", "test").unwrap());
        assert!(ServerConfig::new(lo, None, true).is_ok());
        assert!(ServerConfig::new("[::1]:1".parse().unwrap(), None, true).is_ok());
        assert!(ServerConfig::new(any, None, true).is_err());
        assert!(ServerConfig::new(lo, None, false).is_err());
        assert!(ServerConfig::new(any, Some(t.clone()), false).is_ok());
        assert!(ServerConfig::new(lo, Some(t), true).is_err());
    }
}
