//! The sidecar's accept loop. `axum::serve` has no header-read time-out, no idle time-out and
//! no connection cap, so idle or trickling clients could hold every file descriptor. Here:
//! - at most `max_connections` connections at once (the rest wait in the listen backlog, and
//!   an accept error such as EMFILE backs off instead of spinning);
//! - a header-read time-out: a request's head must be complete within that long of the
//!   connection opening or of the first byte after the previous response;
//! - a keep-alive time-out: a connection with no request in progress that sends nothing for
//!   that long after a response is closed. Separate from the above (hyper's own header timer
//!   also runs while a connection waits for its next request, which would cut keep-alive
//!   connections a load balancer expects to reuse), so both are kept here, per connection;
//! - the peer address as [`ConnectInfo`] on every request (the server's layers derive the
//!   client address from it).
//!
//! The whole-request time-out is a layer of the router (`server::front_door`), so the client
//! gets a JSON 408.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::config::ServerConfig;
use crate::error::Result;

/// After the shutdown signal, requests in flight get this long to finish (they are short:
/// signing is local).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Pause after a failed accept (EMFILE, ENFILE…): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How often a connection's watchdog looks at its clocks at most.
const RECHECK: Duration = Duration::from_millis(250);

pub async fn serve(
    listener: TcpListener,
    router: Router,
    server: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let slots = Arc::new(Semaphore::new(server.max_connections as usize));
    let limits = Limits {
        header_read: Duration::from_secs(server.header_read_timeout_secs),
        keep_alive: Duration::from_secs(server.keep_alive_timeout_secs),
    };
    // hyper's own header-read clock is off (it would need a timer): ours is in `Activity`.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().header_read_timeout(None);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let router = router.clone();
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let in_progress = requests.begin();
            let response = router.clone().oneshot(request);
            async move {
                let response = response.await;
                drop(in_progress);
                response
            }
        });
        let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                _ = connection => {}
                // Dropping the connection closes the socket.
                () = activity.expired(limits) => {}
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read: Duration,
    keep_alive: Duration,
}

/// `head_started_ms` when no request head is being received.
const NO_HEAD: u64 = u64::MAX;

/// A connection's clocks: when it last received bytes or finished a request, when the head
/// of its next request started to arrive, and how many requests it has in progress.
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened`.
    last_active_ms: AtomicU64,
    /// Milliseconds after `opened`, or [`NO_HEAD`]. A new connection is receiving a head
    /// from the start.
    head_started_ms: AtomicU64,
    in_progress: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NO_HEAD - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    /// Bytes arrived: activity, and the start of a head if the connection was idle.
    fn received(&self) {
        let now = self.now_ms();
        self.last_active_ms.fetch_max(now, Ordering::Relaxed);
        if self.in_progress.load(Ordering::Relaxed) == 0 {
            let _ = self.head_started_ms.compare_exchange(
                NO_HEAD,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// hyper has parsed a head and calls the service.
    fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(NO_HEAD, Ordering::Relaxed);
        InProgress(self.clone())
    }

    /// Completes when the connection should be closed: a head not complete within
    /// `header_read` of its start, or nothing received for `keep_alive` with no request in
    /// progress. A request in progress is bounded by the router's own time-out.
    async fn expired(&self, limits: Limits) {
        loop {
            let now = Instant::now();
            let deadline = if self.in_progress.load(Ordering::Relaxed) > 0 {
                None
            } else {
                match self.head_started_ms.load(Ordering::Relaxed) {
                    NO_HEAD => Some(
                        self.at(self.last_active_ms.load(Ordering::Relaxed)) + limits.keep_alive,
                    ),
                    started => Some(self.at(started) + limits.header_read),
                }
            };
            match deadline {
                Some(deadline) if now >= deadline => return,
                // Clocks move while this sleeps: look again at least every RECHECK.
                Some(deadline) => {
                    tokio::time::sleep_until(deadline.min(now + RECHECK).into()).await
                }
                None => tokio::time::sleep(RECHECK).await,
            }
        }
    }
}

/// A request in progress on its connection; its end counts as activity.
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let now = self.0.now_ms();
        self.0.last_active_ms.fetch_max(now, Ordering::Relaxed);
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The socket, noting every read that brought bytes.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The peer address of a socket-less caller (a router driven in-process): unspecified.
pub fn unknown_peer() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}
