//! The HTTP API: `POST /v1/uploads`, the optional `GET /image/presigned-uri`, and the
//! operational routes. Every refusal is a JSON `{error, message}` counted by reason and
//! logged with the client's address.
//!
//! In front of every route ([`front_door`]): the client address (the peer, or from
//! `X-Forwarded-For` behind `trust_proxy_hops` proxies), its request budget and its
//! failed-authentication budget (both before any credential is looked at), and the
//! whole-request time-out.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::auth::{Authenticator, Caller};
use super::config::{extension_for, PresignConfig};
pub use super::error::ApiError;
pub use super::front_door::client_addr;
use super::front_door::*;
use super::metrics as m;
use super::policy::FormFields;
use super::s3::{S3Presigner, UploadTarget};

/// An upload request is a few hundred bytes of JSON; anything much larger is not one.
pub const MAX_REQUEST_BODY_BYTES: usize = 16 * 1024;
/// A sanitised filename is echoed back at most this long.
const MAX_FILENAME_CHARS: usize = 255;

pub struct AppState {
    pub config: PresignConfig,
    pub auth: Arc<Authenticator>,
    pub presigner: S3Presigner,
    /// Per caller (after authentication).
    pub limiter: DefaultKeyedRateLimiter<String>,
    /// Per client address, every request.
    pub clients: DefaultKeyedRateLimiter<IpAddr>,
    /// Per client address, failed authentications; when spent, the address is in `blocked`.
    pub auth_failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses refused before authentication until the instant given.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// The last readiness problem logged (each change is logged once, not every probe).
    readiness: Mutex<Option<String>>,
    pub metrics: PrometheusHandle,
}

/// The client's address as the limits and logs see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl AppState {
    pub fn new(
        config: PresignConfig,
        auth: Arc<Authenticator>,
        presigner: S3Presigner,
        metrics: PrometheusHandle,
    ) -> Arc<AppState> {
        let quota = |per_minute: u32, burst: u32| {
            let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            Quota::per_minute(per_minute).allow_burst(burst)
        };
        let l = &config.client_limit;
        Arc::new(AppState {
            limiter: RateLimiter::keyed(quota(
                config.rate_limit.per_minute,
                config.rate_limit.burst,
            )),
            clients: RateLimiter::keyed(quota(l.per_minute, l.burst)),
            auth_failures: RateLimiter::keyed(quota(
                l.auth_failures_per_minute,
                l.auth_failures_burst,
            )),
            blocked: Mutex::new(HashMap::new()),
            readiness: Mutex::new(None),
            config,
            auth,
            presigner,
            metrics,
        })
    }

    /// Drops idle limiter state and lapsed blocks, and keeps the histograms tidy.
    pub fn housekeeping(&self) {
        for limiter in [&self.clients, &self.auth_failures] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = Instant::now();
        lock(&self.blocked).retain(|_, until| *until > now);
        self.metrics.run_upkeep();
    }

    /// The address's request budget, and whether it is blocked for failed authentications.
    pub(super) fn admit_client(&self, client: IpAddr) -> Result<(), ApiError> {
        let now = Instant::now();
        if let Some(until) = lock(&self.blocked).get(&client).filter(|u| **u > now) {
            return Err(too_many(
                *until - now,
                "too many failed authentications from this address",
            ));
        }
        self.clients.check_key(&client).map_err(|not_until| {
            too_many(
                not_until.wait_time_from(DefaultClock::default().now()),
                "too many requests from this address",
            )
        })
    }

    /// A 401 spends the address's failure budget; once spent, the address is refused before
    /// authentication until the budget allows another attempt.
    pub(super) fn note_auth_failure(&self, client: IpAddr) {
        if let Err(not_until) = self.auth_failures.check_key(&client) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            lock(&self.blocked).insert(client, Instant::now() + wait);
        }
    }
}

/// The router with its layers: CORS (when origins are configured), the request body limit,
/// [`front_door`] and the latency histogram. Unknown routes and methods get JSON too.
pub fn router(state: Arc<AppState>) -> Router {
    let mut api = Router::new().route("/v1/uploads", post(create_upload));
    if state.config.compat_route {
        api = api.route("/image/presigned-uri", get(compat_presigned_uri));
    }
    let mut router = Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, m::REASON_NOT_FOUND, "no such route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                m::REASON_NOT_FOUND,
                "method not allowed on this route",
            )
        })
        // Enforced by the body extractors, whose rejection becomes a JSON 413 below, with or
        // without a Content-Length.
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), front_door));
    // Outside the front door, so a browser can read its 429s (and their Retry-After) too.
    if let Some(cors) = cors_layer(&state.config.cors.allowed_origins) {
        router = router.layer(cors);
    }
    router
        .layer(middleware::from_fn(record_latency))
        .with_state(state)
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

async fn record_latency(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        m::REQUEST_DURATION,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum UploadMethod {
    #[default]
    Post,
    Put,
}

impl UploadMethod {
    fn as_str(self) -> &'static str {
        match self {
            UploadMethod::Post => "POST",
            UploadMethod::Put => "PUT",
        }
    }
}

/// The request body. Unknown fields are refused, so a client trying to pass `key` learns at
/// once that it cannot choose one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    pub content_type: String,
    pub content_length: u64,
    pub filename: Option<String>,
    #[serde(default)]
    pub method: UploadMethod,
    /// Shorter than the configured default is allowed; longer is capped to `max_expires_secs`.
    pub expires_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct UploadResponse {
    pub method: &'static str,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<FormFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    pub key: String,
    pub expires_at: String,
    /// The most bytes the URL accepts: POST, the policy's maximum; PUT, exactly the declared
    /// (signed) length.
    pub max_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// Authentication, then the caller's rate limit.
async fn admit(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = state.auth.authenticate(authorization).await?;
    if let Err(not_until) = state.limiter.check_key(&caller.id) {
        tracing::info!(caller = %caller.id, "rate limited");
        return Err(too_many(
            not_until.wait_time_from(DefaultClock::default().now()),
            "rate limit",
        ));
    }
    Ok(caller)
}

/// A body rejection: 413 past the body limit (declared or chunked), else 400.
fn body_rejected(e: &JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            m::REASON_BODY_TOO_LARGE,
            format!("the request body is over {MAX_REQUEST_BODY_BYTES} bytes"),
        );
    }
    ApiError::bad_request(
        m::REASON_INVALID_REQUEST,
        format!("invalid request body: {}", e.body_text()),
    )
}

/// The allowed content type equal to `requested` (ASCII case and surrounding spaces ignored).
fn allowed_content_type<'a>(
    config: &'a PresignConfig,
    requested: &str,
) -> Result<&'a str, ApiError> {
    let wanted = requested.trim().to_ascii_lowercase();
    config
        .content_types
        .iter()
        .find(|t| **t == wanted)
        .map(String::as_str)
        .ok_or_else(|| {
            ApiError::bad_request(
                m::REASON_CONTENT_TYPE,
                format!(
                    "content_type `{}` is not allowed; allowed: {}",
                    requested.chars().take(100).collect::<String>(),
                    config.content_types.join(", ")
                ),
            )
        })
}

fn check_length(config: &PresignConfig, length: u64) -> Result<(), ApiError> {
    if length == 0 {
        return Err(ApiError::bad_request(
            m::REASON_TOO_LARGE,
            "content_length must be at least 1",
        ));
    }
    if length > config.max_bytes {
        return Err(ApiError::bad_request(
            m::REASON_TOO_LARGE,
            format!(
                "content_length {length} is over the limit of {} bytes",
                config.max_bytes
            ),
        ));
    }
    Ok(())
}

/// `{prefix}/{caller}/{uuid}.{ext}`: chosen here, never by the client.
fn new_key(config: &PresignConfig, caller: &Caller, content_type: &str) -> String {
    let ext = extension_for(content_type).unwrap_or("bin");
    format!(
        "{}/{}/{}.{ext}",
        config.prefix,
        caller.id,
        uuid::Uuid::new_v4()
    )
}

/// The last path segment, printable, without quotes or separators; `None` if nothing is left.
pub fn sanitize_filename(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| {
            if c.is_alphanumeric() || " ._-()+,".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(MAX_FILENAME_CHARS)
        .collect();
    let clean = clean.trim().trim_start_matches('.').to_string();
    (!clean.is_empty()).then_some(clean)
}

async fn create_upload(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Result<Json<UploadRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    let caller = admit(&state, &headers).await?;
    let Json(request) = body.map_err(|e| body_rejected(&e))?;
    let config = &state.config;
    let content_type = allowed_content_type(config, &request.content_type)?;
    check_length(config, request.content_length)?;
    let expires_secs = request
        .expires_secs
        .unwrap_or(config.expires_secs)
        .min(config.max_expires_secs);
    if expires_secs == 0 {
        return Err(ApiError::bad_request(
            m::REASON_INVALID_REQUEST,
            "expires_secs must be at least 1",
        ));
    }
    let key = new_key(config, &caller, content_type);
    let now = SystemTime::now();
    let expires_in = Duration::from_secs(expires_secs);
    let bytes = match request.method {
        UploadMethod::Post => config.max_bytes,
        UploadMethod::Put => request.content_length,
    };
    let target = UploadTarget {
        key: &key,
        content_type,
        bytes: Some(bytes),
        uploader: Some(&caller.id),
        now,
        expires_in,
    };
    let (url, fields, headers) = match request.method {
        UploadMethod::Post => {
            let post = state
                .presigner
                .presign_post(&target)
                .await
                .map_err(signing_failed)?;
            (post.url, Some(post.fields), None)
        }
        UploadMethod::Put => {
            let put = state
                .presigner
                .presign_put(&target)
                .await
                .map_err(signing_failed)?;
            (put.url, None, Some(put.headers.into_iter().collect()))
        }
    };
    issued(
        client,
        &caller,
        &key,
        request.method,
        content_type,
        expires_secs,
    );
    Ok((
        StatusCode::CREATED,
        Json(UploadResponse {
            method: request.method.as_str(),
            url,
            fields,
            headers,
            key,
            expires_at: super::policy::iso8601_millis(now + expires_in),
            max_bytes: bytes,
            filename: request.filename.as_deref().and_then(sanitize_filename),
        }),
    ))
}

fn signing_failed(e: crate::Error) -> ApiError {
    tracing::error!(error = %e, "cannot sign an upload");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        m::REASON_SIGNING_FAILED,
        "cannot sign uploads right now",
    )
}

/// Counted and logged with the key and the caller, never the URL (its query is the signature).
fn issued(
    client: ClientAddr,
    caller: &Caller,
    key: &str,
    method: UploadMethod,
    content_type: &str,
    expires: u64,
) {
    metrics::counter!(
        m::URLS_ISSUED,
        "method" => method.as_str(),
        "content_type" => content_type.to_string()
    )
    .increment(1);
    tracing::info!(
        client = %client.0,
        caller = %caller.id,
        key,
        method = method.as_str(),
        content_type,
        expires_secs = expires,
        "upload URL issued"
    );
}

#[derive(Debug, Deserialize)]
pub struct CompatQuery {
    content_type: Option<String>,
    content_length: Option<u64>,
}

/// The old Lambda's route and answer shape, `{"result":"SUCCESS","data":[url]}`: a presigned
/// PUT of `?content_type=` (default `image/jpeg`) and `?content_length=`, both signed.
/// Without a length it is a 400, unless `compat_unbounded` lets old clients that cannot send
/// one get a URL with no size bound. Old clients cannot send the uploader header, so it is
/// left out; the caller is still in the key.
async fn compat_presigned_uri(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    query: Result<Query<CompatQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = admit(&state, &headers).await?;
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(
            m::REASON_INVALID_REQUEST,
            format!("invalid query: {}", e.body_text()),
        )
    })?;
    let config = &state.config;
    let content_type = allowed_content_type(
        config,
        query.content_type.as_deref().unwrap_or("image/jpeg"),
    )?;
    match query.content_length {
        Some(length) => check_length(config, length)?,
        None if config.compat_unbounded => {}
        None => {
            return Err(ApiError::bad_request(
                m::REASON_INVALID_REQUEST,
                "content_length is required (the URL signs the upload's size)",
            ))
        }
    }
    let key = new_key(config, &caller, content_type);
    let target = UploadTarget {
        key: &key,
        content_type,
        bytes: query.content_length,
        uploader: None,
        now: SystemTime::now(),
        expires_in: Duration::from_secs(config.expires_secs),
    };
    let put = state
        .presigner
        .presign_put(&target)
        .await
        .map_err(signing_failed)?;
    issued(
        client,
        &caller,
        &key,
        UploadMethod::Put,
        content_type,
        config.expires_secs,
    );
    Ok(Json(
        serde_json::json!({"result": "SUCCESS", "data": [put.url]}),
    ))
}

/// Ready when credentials resolve (cached by the signer) and the JWKS URL, if any, has been
/// fetched (the background fetch's outcome: this never fetches). Unauthenticated, so it says
/// only ready or not; the reason goes to the log, once per change.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let problem = match state.presigner.ready().await {
        Err(e) => Some(format!("credentials: {e}")),
        Ok(()) if !state.auth.ready() => Some("the JWKS URL has not been fetched yet".into()),
        Ok(()) => None,
    };
    let mut last = lock(&state.readiness);
    if *last != problem {
        match &problem {
            Some(p) => tracing::warn!(problem = %p, "not ready"),
            None => tracing::info!("ready"),
        }
        last.clone_from(&problem);
    }
    drop(last);
    match problem {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            m::REASON_NOT_READY,
            "not ready",
        )
        .into_response(),
    }
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_reduced_to_a_safe_last_segment() {
        assert_eq!(
            sanitize_filename("IMG_0001.JPG").as_deref(),
            Some("IMG_0001.JPG")
        );
        assert_eq!(
            sanitize_filename("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            sanitize_filename("C:\\Users\\me\\cat pic.jpg").as_deref(),
            Some("cat pic.jpg")
        );
        assert_eq!(
            sanitize_filename("a\"<script>.png\n").as_deref(),
            Some("a__script_.png")
        );
        assert_eq!(sanitize_filename("..").as_deref(), None);
        assert_eq!(sanitize_filename("/").as_deref(), None);
        assert_eq!(sanitize_filename(&"x".repeat(300)).unwrap().len(), 255);
    }

    #[test]
    fn the_client_address_is_the_peer_unless_proxies_are_trusted() {
        let peer: IpAddr = "127.0.0.9".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.7, 203.0.113.5"),
        );
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("192.0.2.1:4711"),
        );
        assert_eq!(client_addr(peer, &headers, 0), peer);
        assert_eq!(client_addr(peer, &headers, 1).to_string(), "192.0.2.1");
        assert_eq!(client_addr(peer, &headers, 2).to_string(), "203.0.113.5");
        assert_eq!(client_addr(peer, &headers, 3).to_string(), "198.51.100.7");
        // Fewer entries than trusted hops: the request did not come through them all.
        assert_eq!(client_addr(peer, &headers, 4), peer);
        assert_eq!(client_addr(peer, &HeaderMap::new(), 1), peer);
        let mut garbage = HeaderMap::new();
        garbage.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(client_addr(peer, &garbage, 1), peer);
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limiter_key(a), limiter_key(b));
        assert_ne!(limiter_key(a), limiter_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(limiter_key(mapped).to_string(), "127.0.0.2");
    }

    #[test]
    fn content_types_are_matched_against_the_allow_list() {
        let config = PresignConfig::default();
        assert_eq!(
            allowed_content_type(&config, " Image/JPEG ").unwrap(),
            "image/jpeg"
        );
        let e = allowed_content_type(&config, "text/html").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("image/png"), "{}", e.message);
        assert!(allowed_content_type(&config, "image/tiff").is_err());
    }

    #[test]
    fn keys_are_prefix_caller_uuid_and_extension() {
        let config = PresignConfig::default();
        let caller = Caller { id: "alice".into() };
        let key = new_key(&config, &caller, "image/heic");
        let rest = key.strip_prefix("uploads/alice/").unwrap();
        let (id, ext) = rest.split_once('.').unwrap();
        assert_eq!(ext, "heic");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{key}");
        assert_ne!(key, new_key(&config, &caller, "image/heic"));
    }
}
