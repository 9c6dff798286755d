//! The HTTP API: `POST /v1/uploads`, the optional `GET /image/presigned-uri`, and the
//! operational routes. Every refusal is a JSON `{error, message}` counted by reason.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{MatchedPath, Query, Request, State};
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
use tower_http::limit::RequestBodyLimitLayer;

use super::auth::{AuthError, Authenticator, Caller};
use super::config::{extension_for, PresignConfig};
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
    pub limiter: DefaultKeyedRateLimiter<String>,
    pub metrics: PrometheusHandle,
}

impl AppState {
    pub fn new(
        config: PresignConfig,
        auth: Arc<Authenticator>,
        presigner: S3Presigner,
        metrics: PrometheusHandle,
    ) -> Arc<AppState> {
        let per_minute = NonZeroU32::new(config.rate_limit.per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate_limit.burst).unwrap_or(NonZeroU32::MIN);
        Arc::new(AppState {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            config,
            auth,
            presigner,
            metrics,
        })
    }
}

/// The router with its layers: CORS (when origins are configured), the request body limit,
/// and the latency histogram.
pub fn router(state: Arc<AppState>) -> Router {
    let mut api = Router::new().route("/v1/uploads", post(create_upload));
    if state.config.compat_route {
        api = api.route("/image/presigned-uri", get(compat_presigned_uri));
    }
    if let Some(cors) = cors_layer(&state.config.cors.allowed_origins) {
        api = api.layer(cors);
    }
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BODY_BYTES))
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

/// A refusal: status, the bounded reason (metric label and `error` field), a message for the
/// client, and Retry-After for 429.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            reason,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(why) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                m::REASON_UNAUTHENTICATED,
                format!("authentication required: {why}"),
            ),
            AuthError::Forbidden => ApiError::new(
                StatusCode::FORBIDDEN,
                m::REASON_FORBIDDEN,
                "this credential lacks the upload scope",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!(m::REJECTIONS, "reason" => self.reason).increment(1);
        tracing::info!(
            status = self.status.as_u16(),
            reason = self.reason,
            message = %self.message,
            "request refused"
        );
        let body = Json(serde_json::json!({"error": self.reason, "message": self.message}));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
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
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            m::REASON_RATE_LIMITED,
            format!("rate limit: retry in {secs} s"),
        );
        e.retry_after_secs = Some(secs.max(1));
        tracing::info!(caller = %caller.id, "rate limited");
        return Err(e);
    }
    Ok(caller)
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
    headers: HeaderMap,
    body: Result<Json<UploadRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    let caller = admit(&state, &headers).await?;
    let Json(request) = body.map_err(|e| {
        ApiError::bad_request(
            m::REASON_INVALID_REQUEST,
            format!("invalid request body: {}", e.body_text()),
        )
    })?;
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
    issued(&caller, &key, request.method, content_type, expires_secs);
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
fn issued(caller: &Caller, key: &str, method: UploadMethod, content_type: &str, expires: u64) {
    metrics::counter!(
        m::URLS_ISSUED,
        "method" => method.as_str(),
        "content_type" => content_type.to_string()
    )
    .increment(1);
    tracing::info!(
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
/// PUT. Old clients send neither a length nor the uploader header, so by default only the
/// Content-Type (`image/jpeg` unless `?content_type=` says otherwise) is signed; with
/// `?content_length=` the length is signed too. The caller is still in the key.
async fn compat_presigned_uri(
    State(state): State<Arc<AppState>>,
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
    if let Some(length) = query.content_length {
        check_length(config, length)?;
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

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = state.presigner.ready().await {
        problems.push(format!("credentials: {e}"));
    }
    if let Err(e) = state.auth.ready().await {
        problems.push(format!("auth: {e}"));
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
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
