//! In front of every route: the client address (the peer, or from `X-Forwarded-For` behind
//! `trust_proxy_hops` proxies), its request budget and its failed-authentication budget (both
//! before any credential is looked at), and the whole-request time-out.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::metrics as m;

use super::error::Refusal;
use super::server::*;

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn too_many(wait: Duration, why: &str) -> ApiError {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        m::REASON_RATE_LIMITED,
        format!("{why}: retry in {secs} s"),
    );
    e.retry_after_secs = Some(secs);
    e
}

/// The client's address: the TCP peer, or with `trust_proxy_hops = n` the n-th
/// `X-Forwarded-For` entry from the right (each trusted proxy appends the address it got the
/// request from; entries further left are whatever the client sent). Too few or unparseable
/// entries: the peer.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trust_proxy_hops: u32) -> IpAddr {
    if trust_proxy_hops == 0 {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let hops = trust_proxy_hops as usize;
    if entries.len() < hops {
        return peer;
    }
    let entry = entries[entries.len() - hops];
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .unwrap_or(peer)
}

/// The limiter key for an address: IPv6 clients are keyed by their /64 (one host usually
/// holds a whole /64, so a per-address budget would be no budget).
pub(super) fn limiter_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// In front of every route: the client's address and budgets, the request time-out, and the
/// refusal log line (with the address).
pub(super) async fn front_door(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| super::conn::unknown_peer().ip(), |c| c.0.ip());
    let client = client_addr(peer, request.headers(), state.config.trust_proxy_hops);
    let key = limiter_key(client);
    let response = match state.admit_client(key) {
        Err(e) => e.into_response(),
        Ok(()) => {
            request.extensions_mut().insert(ClientAddr(client));
            let limit = Duration::from_secs(state.config.server.request_timeout_secs);
            match tokio::time::timeout(limit, next.run(request)).await {
                Ok(response) => response,
                Err(_) => {
                    let mut response = ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        m::REASON_TIMEOUT,
                        format!("the request took over {} s", limit.as_secs()),
                    )
                    .into_response();
                    // Its body may be half read: the connection cannot carry another request.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    response
                }
            }
        }
    };
    if response.status() == StatusCode::UNAUTHORIZED {
        state.note_auth_failure(key);
    }
    if let Some(refusal) = response.extensions().get::<Refusal>() {
        tracing::info!(
            client = %client,
            status = response.status().as_u16(),
            reason = refusal.reason,
            detail = %refusal.detail,
            "request refused"
        );
    }
    response
}
