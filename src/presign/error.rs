//! [`ApiError`]: every refusal of the sidecar, as JSON `{error, message}` with the right
//! status, counted by reason and logged with the client's address.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::AuthError;
use super::metrics as m;

/// A refusal: status, the bounded reason (metric label and `error` field), a message for the
/// client, and Retry-After for 429.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    reason: &'static str,
    pub(super) message: String,
    pub(super) retry_after_secs: Option<u64>,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            reason,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub(super) fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
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

/// Left on a refusal's response for [`front_door`], which logs it with the client address.
#[derive(Debug, Clone)]
pub(super) struct Refusal {
    pub(super) reason: &'static str,
    pub(super) detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!(m::REJECTIONS, "reason" => self.reason).increment(1);
        let body = Json(serde_json::json!({"error": self.reason, "message": self.message}));
        let mut response = (self.status, body).into_response();
        response.extensions_mut().insert(Refusal {
            reason: self.reason,
            detail: self.message,
        });
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
