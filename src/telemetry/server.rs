//! The metrics listener: `/metrics` (Prometheus text), `/healthz` and `/readyz`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::catalogue;
use super::health::Health;
use crate::error::{Error, Result};

#[derive(Clone)]
struct Endpoints {
    metrics: Option<PrometheusHandle>,
    health: Arc<Health>,
}

/// Binds `metrics.listen`; the error names the address (a second worker on the same port, a
/// typo) so start-up fails loudly instead of running unobserved.
pub async fn bind(listen: &str) -> Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .map_err(|e| Error::config(format!("metrics.listen: cannot listen on {listen}: {e}")))
}

pub fn router(metrics: Option<PrometheusHandle>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Endpoints { metrics, health })
}

/// Serves the endpoints in the background for the life of the runtime (they must keep
/// answering `/readyz` with 503 while the worker drains), and keeps `resizeq_ready` current.
pub fn spawn(listener: TcpListener, metrics: Option<PrometheusHandle>, health: Arc<Health>) {
    match listener.local_addr() {
        Ok(addr) => info!(%addr, "metrics, /healthz and /readyz listening"),
        Err(e) => warn!(error = %e, "metrics listener has no local address"),
    }
    let app = router(metrics, health.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "metrics listener stopped");
        }
    });
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            let ready = if health.is_ready() { 1.0 } else { 0.0 };
            metrics::gauge!(catalogue::READY.name).set(ready);
        }
    });
}

async fn render_metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    metrics::gauge!(catalogue::JOBS_STALLED.name).set(endpoints.health.stalled_jobs() as f64);
    match &endpoints.metrics {
        Some(handle) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        ),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain")],
            "no metrics recorder\n".to_string(),
        ),
    }
}

async fn healthz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    match endpoints.health.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn readyz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let ready = endpoints.health.readiness();
    metrics::gauge!(catalogue::READY.name).set(if ready.is_ok() { 1.0 } else { 0.0 });
    match ready {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// `resizeq healthcheck`: GET /healthz on the local metrics listener (the slim container image
/// has no curl). Ok when it answers 200.
pub fn healthcheck(listen: &str) -> Result<()> {
    let addr = local_address(listen)?;
    let timeout = Duration::from_secs(3);
    let unreachable = |e: std::io::Error| Error::io(format!("{addr}: {e}"));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(unreachable)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(unreachable)?;
    let status = response.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(Error::io(format!(
            "{addr}/healthz answered {:?}",
            response.lines().last().unwrap_or(status)
        )))
    }
}

/// The address to reach a listener bound to `listen` from this host: a wildcard bind is
/// reached on loopback.
fn local_address(listen: &str) -> Result<SocketAddr> {
    let mut addr = listen
        .to_socket_addrs()
        .map_err(|e| Error::config(format!("metrics.listen {listen:?}: {e}")))?
        .next()
        .ok_or_else(|| Error::config(format!("metrics.listen {listen:?}: no address")))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_checked_on_loopback() {
        assert_eq!(
            local_address("0.0.0.0:9090").unwrap(),
            "127.0.0.1:9090".parse().unwrap()
        );
        assert_eq!(local_address("[::]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(
            local_address("10.1.2.3:80").unwrap(),
            "10.1.2.3:80".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn healthcheck_follows_healthz() {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let health = Arc::new(Health::new(Duration::from_secs(1)));
        spawn(listener, None, health.clone());
        let check = addr.clone();
        let result = tokio::task::spawn_blocking(move || healthcheck(&check))
            .await
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
        let closed = bind("127.0.0.1:0").await.unwrap();
        let dead = closed.local_addr().unwrap().to_string();
        drop(closed);
        let result = tokio::task::spawn_blocking(move || healthcheck(&dead))
            .await
            .unwrap();
        assert!(result.is_err());
    }
}
