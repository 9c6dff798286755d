//! The sidecar's accept loop. `axum::serve` has no header-read time-out, no idle time-out and
//! no connection cap, so idle or trickling clients could hold every file descriptor. Here:
//! - at most `max_connections` connections at once (the rest wait in the listen backlog, and
//!   an accept error such as EMFILE backs off instead of spinning);
//! - hyper's header-read time-out (its clock runs from the connection opening, and again
//!   whenever a connection falls idle after a response);
//! - a keep-alive time-out: a connection with no request in progress that sends nothing for
//!   that long is closed;
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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
/// How often a connection with a request in progress re-checks its idle clock.
const IDLE_RECHECK: Duration = Duration::from_millis(500);

pub async fn serve(
    listener: TcpListener,
    router: Router,
    server: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let slots = Arc::new(Semaphore::new(server.max_connections as usize));
    let keep_alive = Duration::from_secs(server.keep_alive_timeout_secs);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(server.header_read_timeout_secs));
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
                () = activity.idle_for(keep_alive) => {}
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

/// When a connection last received bytes or finished a request, and how many requests it has
/// in progress.
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened`.
    last_active_ms: AtomicU64,
    in_progress: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        InProgress(self.clone())
    }

    /// Completes once the connection has had no request in progress and received nothing
    /// for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last =
                self.opened + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() < deadline {
                tokio::time::sleep_until(deadline.into()).await;
            } else if self.in_progress.load(Ordering::Relaxed) > 0 {
                // The request's own time-out bounds this; its end touches the clock.
                tokio::time::sleep(IDLE_RECHECK.min(limit)).await;
            } else {
                return;
            }
        }
    }
}

/// A request in progress on its connection; its end counts as activity.
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.touch();
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
            self.activity.touch();
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
