//! The HTTP server's connections, bounded in time and in number.
//!
//! - **Time:** a connection that sends no complete request head for `idle_timeout` is
//!   closed: a silent socket, half-sent headers, a keep-alive connection left idle. (A
//!   request's own time, its body included, is bounded by `--request-timeout`.)
//! - **Number:** at most `max` connections are served at once. Past that, a small reserve
//!   of connections answers `/healthz` and `/readyz` as usual and every other request `503
//!   too_many_connections` with `Retry-After`, one request per connection, with a short
//!   time for its head. When the reserve is full too, its oldest connection is closed for
//!   the new one: whoever holds every connection, a health check still gets its answer.
//!
//! hyper's HTTP/1 server gives the head timeout (it needs a timer, which `axum::serve`
//! does not set); the accept loop here gives the count. Stopping finishes the requests in
//! flight, like `axum::serve`'s graceful shutdown.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::error::ApiError;
use crate::telemetry::Metrics;

/// How long a connection of the reserve has to send its request head.
const RESERVE_HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// File descriptors kept for what is not a client connection (database and Redis
/// connections, outbound HTTP, files).
const OTHER_FILES: usize = 256;

/// The limits on one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served in full at once.
    pub max: usize,
    /// Connections past `max` that answer health checks (and refuse the rest).
    pub reserve: usize,
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// `max` (with its reserve, a sixty-fourth of it and at least 16), lowered so that it
    /// fits under `open_files` (the process's limit on open files) with room to spare.
    pub fn new(max: usize, idle_timeout: Duration, open_files: Option<u64>) -> Self {
        let reserve = |max: usize| (max / 64).max(16);
        let mut limits = Self {
            max,
            reserve: reserve(max),
            idle_timeout,
        };
        if let Some(files) = open_files.and_then(|f| usize::try_from(f).ok()) {
            let room = files.saturating_sub(OTHER_FILES);
            if limits.max + limits.reserve > room {
                // max + max/64 fits in room
                let max = (room * 64 / 65).max(16);
                limits = Self {
                    max,
                    reserve: reserve(max).min(room.saturating_sub(max)).max(1),
                    idle_timeout,
                };
            }
        }
        limits
    }
}

/// Raises this process's soft limit on open files to its hard limit, and returns the
/// limit in force (`None` where it cannot be read).
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current < limit.maximum || (limit.current.is_some() && limit.maximum.is_none()) {
            let raised = Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                return raised.current;
            }
        }
        limit.current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connections of the reserve, oldest first, each with what closes it.
type Reserve = Arc<Mutex<VecDeque<(u64, CancellationToken)>>>;

/// Serves `app` on `listener` within `limits` until `stop` is cancelled, then finishes the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
    metrics: Option<Metrics>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let reserve: Reserve = Arc::default();
    // every connection task holds a receiver; all are gone when the last one ended
    let (all_closed, closed) = watch::channel(());
    let mut next_id = 0u64;
    loop {
        let (stream, _peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let closed = closed.clone();
        if open.load(Ordering::SeqCst) < limits.max {
            let counted = Counted::new(open.clone(), metrics.clone());
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                // counted out when the task ends, a panic's unwinding included
                let _counted = counted;
                serve_one(stream, app, limits.idle_timeout, true, stop).await;
                drop(closed);
            });
            continue;
        }
        // at the cap: the reserve, which makes room by closing its oldest
        if let Some(m) = &metrics {
            m.http_connection_refused();
        }
        let close = CancellationToken::new();
        {
            let mut held = reserve.lock().expect("reserve lock");
            while held.len() >= limits.reserve {
                let Some((_, oldest)) = held.pop_front() else {
                    break;
                };
                oldest.cancel();
            }
            held.push_back((next_id, close.clone()));
        }
        let (app, stop, reserve, id) = (app.clone(), stop.clone(), reserve.clone(), next_id);
        tokio::spawn(async move {
            let health_only = health_only(app);
            tokio::select! {
                () = serve_one(stream, health_only, RESERVE_HEAD_TIMEOUT, false, stop) => {}
                () = close.cancelled() => {}
            }
            reserve
                .lock()
                .expect("reserve lock")
                .retain(|(other, _)| *other != id);
            drop(closed);
        });
    }
    drop(closed);
    // no new connection is taken while the open ones finish their requests in flight
    drop(listener);
    all_closed.closed().await;
}

/// One connection counted among the open ones (and in the metrics) while it lives.
struct Counted {
    open: Arc<AtomicUsize>,
    metrics: Option<Metrics>,
}

impl Counted {
    fn new(open: Arc<AtomicUsize>, metrics: Option<Metrics>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        if let Some(m) = &metrics {
            m.http_connection_opened();
        }
        Self { open, metrics }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        if let Some(m) = &self.metrics {
            m.http_connection_closed();
        }
    }
}

/// An error from `accept`: a connection that went away before it was accepted is nothing;
/// running out of file descriptors (or memory) is waited out rather than spun on.
async fn accept_failed(e: &io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting an HTTP connection failed; trying again shortly");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves one connection until it ends, or, once `stop` is cancelled, until its request
/// in flight is answered.
async fn serve_one<S>(
    stream: TcpStream,
    service: S,
    head_timeout: Duration,
    keep_alive: bool,
    stop: CancellationToken,
) where
    S: tower::Service<Request<Incoming>, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .keep_alive(keep_alive);
    let conn = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// The reserve's service: health checks as usual, anything else refused.
fn health_only(
    app: Router,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        async move {
            if matches!(req.uri().path(), "/healthz" | "/readyz") {
                return app.oneshot(req.map(axum::body::Body::new)).await;
            }
            Ok(ApiError::Overloaded {
                code: "too_many_connections",
                detail: "this server holds as many connections as it may (--max-connections): try again shortly".into(),
                retry_after: 1,
            }
            .into_response())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_under_the_open_files_limit() {
        let idle = Duration::from_secs(20);
        let plenty = ConnectionLimits::new(8192, idle, Some(1 << 20));
        assert_eq!((plenty.max, plenty.reserve), (8192, 128));
        let unknown = ConnectionLimits::new(100, idle, None);
        assert_eq!((unknown.max, unknown.reserve), (100, 16));
        let tight = ConnectionLimits::new(8192, idle, Some(1024));
        assert!(tight.max + tight.reserve + OTHER_FILES <= 1024, "{tight:?}");
        assert!(tight.max >= 700, "{tight:?}");
        let tiny = ConnectionLimits::new(8192, idle, Some(100));
        assert!(tiny.max >= 16 && tiny.reserve >= 1, "{tiny:?}");
    }
}
