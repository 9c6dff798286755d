//! What the S3 and SQS adapters share: the SDK configuration, the clients, and the one place
//! where SDK errors become our [`Error`] (permanent or transient).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::config::AwsConfig;
use crate::error::{Error, ErrorKind};

/// The SDK configuration from aws-config's default chain (environment, profile, web identity
/// / IRSA, ECS container credentials, IMDS), with `aws.region` and `aws.endpoint_url` from our
/// config taking precedence when set, and our connect and per-attempt time-outs on every call:
/// a stalled connection fails as a (transient) time-out instead of holding a job forever.
pub async fn sdk_config(aws: &AwsConfig) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(aws.connect_timeout_secs))
        .operation_attempt_timeout(Duration::from_secs(aws.attempt_timeout_secs))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(region) = &aws.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &aws.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    loader.load().await
}

/// An S3 client; `aws.force_path_style` for emulators and MinIO-likes.
pub fn s3_client(sdk: &SdkConfig, aws: &AwsConfig) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(aws.force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

pub fn sqs_client(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk)
}

/// For the events for the application (`adapters::events_aws`).
pub fn sns_client(sdk: &SdkConfig) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(sdk)
}

pub fn eventbridge_client(sdk: &SdkConfig) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(sdk)
}

/// The HTTP status of a raw response, if it has one; lets [`classify`] stay generic over the
/// response type of `SdkError` (every AWS SDK crate uses the same [`HttpResponse`]).
pub trait RawStatus {
    fn http_status(&self) -> Option<u16>;
}

impl RawStatus for HttpResponse {
    fn http_status(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

/// Error codes that pass by themselves: throttling, a service having a bad moment, expired or
/// momentarily unobtainable credentials. Matched case-sensitively, as AWS spells them (SQS's
/// JSON protocol may prefix them, e.g. `AWS.SimpleQueueService.…`: see [`code_name`]).
const TRANSIENT_CODES: &[&str] = &[
    // Throttling, as the various services name it.
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "KmsThrottled",
    "KMS.ThrottlingException",
    // SQS: more than 120 000 in-flight messages; drains as others are deleted.
    "OverLimit",
    // The service itself.
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Unavailable",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServiceError",
    "RequestTimeout",
    "RequestTimeoutException",
    "RequestTimeTooSkewed",
    "IDPCommunicationError",
    "OperationAborted",
    // Credentials that expired between refreshes; the provider fetches new ones.
    "ExpiredToken",
    "ExpiredTokenException",
    "TokenRefreshRequired",
];

/// Configuration and infrastructure faults that an operator fixes: a destination bucket that
/// does not exist yet, a policy that denies us. Retrying them is deliberate: while a bucket is
/// missing or a role lacks a permission, *every* message fails the same way, and dead-lettering
/// all of them would turn a five-minute fix into a mass redrive; retried, they simply succeed
/// once the operator has fixed the bucket or the policy (the queue's own redrive policy still
/// bounds how long).
const OPERATOR_FIXABLE_CODES: &[&str] = &[
    "NoSuchBucket",
    "KmsAccessDenied",
    "KmsDisabled",
    "KmsNotFound",
    "KmsInvalidState",
    "KMS.DisabledException",
    "KMS.NotFoundException",
    "KMS.KMSInvalidStateException",
];

/// The refusals among the operator-fixable faults: credentials or a policy say no. Jobs retry
/// them like the others ([`ErrorKind::Denied`] is transient); start-up does not, since a worker
/// that may not read its queue has nothing to wait for.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
];

/// Codes whose permanent kind is more precise than [`ErrorKind::Config`].
fn permanent_kind(code: &str) -> ErrorKind {
    match code {
        "EntityTooLarge" | "MessageTooLong" => ErrorKind::TooLarge,
        // An archived (Glacier / Deep Archive) object cannot be read without a restore.
        "InvalidObjectState" => ErrorKind::Unsupported,
        _ => ErrorKind::Config,
    }
}

/// The code without a service prefix: SQS's JSON protocol reports some errors as
/// `AWS.SimpleQueueService.NonExistentQueue` and the like.
fn code_name(code: &str) -> &str {
    code.strip_prefix("AWS.SimpleQueueService.").unwrap_or(code)
}

/// Whether an error code names a fault that can pass without anyone changing the request.
pub fn is_transient_code(code: &str) -> bool {
    let code = code_name(code);
    TRANSIENT_CODES.contains(&code)
        || OPERATOR_FIXABLE_CODES.contains(&code)
        || DENIED_CODES.contains(&code)
}

/// Turns an SDK error into ours, naming the operation (`op`, e.g. `"s3 GetObject photos/a.jpg"`)
/// and the service's error code; transient faults ([`ErrorKind::Service`]) are timeouts,
/// connection and I/O failures, unparseable responses, HTTP 5xx and 429, throttling codes, and
/// the operator-fixable codes above (missing bucket, access denied); everything else (a bad
/// parameter, a queue that does not exist) is permanent, usually [`ErrorKind::Config`].
///
/// The message carries the code, the HTTP status and the service's own message (shortened,
/// with any URL query string removed), never request headers, credentials or presigned URLs.
pub fn classify<E, R>(op: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata,
    R: RawStatus,
{
    let status = err.raw_response().and_then(RawStatus::http_status);
    metrics::counter!(
        crate::telemetry::catalogue::AWS_ERRORS.name,
        "error_kind" => error_class(&err, status),
    )
    .increment(1);
    match &err {
        SdkError::TimeoutError(_) => Error::new(ErrorKind::Service, format!("{op}: timed out")),
        SdkError::DispatchFailure(failure) => {
            let what = if failure.is_timeout() {
                "connection timed out"
            } else if failure.is_io() {
                "connection failed (I/O)"
            } else if failure.is_user() {
                "request could not be sent"
            } else {
                "request could not be sent (credentials or connection)"
            };
            let detail = failure
                .as_connector_error()
                .and_then(std::error::Error::source)
                .map(|source| format!(": {}", scrub(&source.to_string())))
                .unwrap_or_default();
            // Credential resolution fails here too (IMDS or STS unreachable): transient.
            Error::new(ErrorKind::Service, format!("{op}: {what}{detail}"))
        }
        SdkError::ConstructionFailure(_) => Error::new(
            ErrorKind::Config,
            format!("{op}: the request could not be built (invalid parameters or configuration)"),
        ),
        SdkError::ResponseError(_) => Error::new(
            ErrorKind::Service,
            format!(
                "{op}: unreadable response{}",
                status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
            ),
        ),
        _ => {
            // A service error (or a future variant): decide on the code, then the status.
            let code = err.code().unwrap_or("");
            let transient = is_transient_code(code)
                || status.is_some_and(|s| s >= 500 || s == 429)
                // No code and no status: nothing says it is the request's fault.
                || (code.is_empty() && status.is_none());
            let kind = if DENIED_CODES.contains(&code_name(code)) {
                ErrorKind::Denied
            } else if transient {
                ErrorKind::Service
            } else {
                permanent_kind(code_name(code))
            };
            let mut message = format!("{op}: {}", if code.is_empty() { "error" } else { code });
            if let Some(status) = status {
                message.push_str(&format!(" (HTTP {status})"));
            }
            if let Some(text) = err.message().filter(|m| !m.is_empty()) {
                message.push_str(": ");
                message.push_str(&scrub(text));
            }
            Error::new(kind, message)
        }
    }
}

/// The bounded class of an AWS failure for `resizeq_aws_errors_total{error_kind}`:
/// throttling, server, timeout, dispatch or client.
fn error_class<E, R>(err: &SdkError<E, R>, status: Option<u16>) -> &'static str
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::TimeoutError(_) => "timeout",
        SdkError::DispatchFailure(failure) if failure.is_timeout() => "timeout",
        SdkError::DispatchFailure(_) => "dispatch",
        SdkError::ConstructionFailure(_) => "client",
        SdkError::ResponseError(_) => "server",
        _ => {
            let code = code_name(err.code().unwrap_or(""));
            if status == Some(429)
                || code.contains("Throttl")
                || code == "SlowDown"
                || code == "RequestLimitExceeded"
            {
                "throttling"
            } else if status.is_some_and(|s| s >= 500) {
                "server"
            } else {
                "client"
            }
        }
    }
}

/// Shortens a service or connector message to one line of at most 200 characters and drops
/// the query string of any URL in it (presigned URLs carry signatures and credential scopes
/// there).
fn scrub(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        match word.find('?') {
            Some(i) if word.contains("://") || word.contains("X-Amz-") => {
                out.push_str(&word[..i]);
                out.push_str("?…");
            }
            _ => out.push_str(word),
        }
    }
    if out.chars().count() > 200 {
        out = out.chars().take(199).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::operation::head_object::HeadObjectError;
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_sdk_s3::primitives::SdkBody;
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
    use aws_sdk_sqs::operation::send_message::SendMessageError;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(status.try_into().unwrap(), SdkBody::empty())
    }

    fn meta(code: &str, message: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(message).build()
    }

    fn s3_put(code: &str, status: u16) -> Error {
        let err = PutObjectError::generic(meta(code, "something went wrong"));
        classify(
            "s3 PutObject b/k",
            SdkError::service_error(err, response(status)),
        )
    }

    fn sqs_receive(code: &str, status: u16) -> Error {
        let err = ReceiveMessageError::generic(meta(code, "nope"));
        classify(
            "sqs ReceiveMessage",
            SdkError::service_error(err, response(status)),
        )
    }

    #[test]
    fn throttling_and_server_faults_are_transient() {
        for code in [
            "SlowDown",
            "Throttling",
            "ThrottlingException",
            "RequestThrottled",
            "RequestLimitExceeded",
            "TooManyRequestsException",
            "ServiceUnavailable",
            "InternalError",
            "RequestTimeout",
            "ExpiredToken",
        ] {
            let e = s3_put(code, 400);
            assert_eq!(e.kind(), ErrorKind::Service, "{code}: {e}");
            assert!(!e.is_permanent());
            assert!(e.message().contains(code), "{e}");
        }
        // By status alone, whatever the code.
        for status in [500, 502, 503, 504, 429] {
            let e = s3_put("SomethingNew", status);
            assert_eq!(e.kind(), ErrorKind::Service, "{status}: {e}");
        }
        let e = sqs_receive("AWS.SimpleQueueService.RequestThrottled", 400);
        assert_eq!(e.kind(), ErrorKind::Service, "{e}");
        let e = sqs_receive("KmsThrottled", 400);
        assert_eq!(e.kind(), ErrorKind::Service, "{e}");
    }

    #[test]
    fn missing_bucket_and_access_denied_are_retried_not_dead_lettered() {
        let e = s3_put("NoSuchBucket", 404);
        assert_eq!(e.kind(), ErrorKind::Service, "{e}");
        assert_eq!(
            e.message(),
            "s3 PutObject b/k: NoSuchBucket (HTTP 404): something went wrong"
        );
        assert_eq!(s3_put("AccessDenied", 403).kind(), ErrorKind::Denied);
        assert_eq!(
            sqs_receive("AccessDeniedException", 400).kind(),
            ErrorKind::Denied
        );
        assert!(!ErrorKind::Denied.is_permanent(), "jobs retry refusals");
    }

    #[test]
    fn request_faults_are_permanent() {
        for code in ["InvalidArgument", "InvalidRequest", "MalformedXML"] {
            let e = s3_put(code, 400);
            assert!(e.is_permanent(), "{code}: {e}");
            assert_eq!(e.kind(), ErrorKind::Config);
        }
        let e = s3_put("EntityTooLarge", 400);
        assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
        for code in [
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            "InvalidParameterValue",
        ] {
            let e = sqs_receive(code, 400);
            assert!(e.is_permanent(), "{code}: {e}");
            assert!(e.message().starts_with("sqs ReceiveMessage: "), "{e}");
        }
        let err = SendMessageError::generic(meta("InvalidMessageContents", "bad chars"));
        let e = classify(
            "sqs SendMessage",
            SdkError::service_error(err, response(400)),
        );
        assert!(e.is_permanent(), "{e}");
    }

    #[test]
    fn modelled_errors_are_classified_by_their_code() {
        // A modelled HEAD 404 (HeadObject has no body, so the code comes from the status).
        let err = HeadObjectError::NotFound(aws_sdk_s3::types::error::NotFound::builder().build());
        let e = classify(
            "s3 HeadObject b/k",
            SdkError::service_error(err, response(404)),
        );
        assert!(e.is_permanent(), "{e}");
        let err = GetObjectError::NoSuchKey(
            aws_sdk_s3::types::error::NoSuchKey::builder()
                .message("The specified key does not exist.")
                .meta(meta("NoSuchKey", "The specified key does not exist."))
                .build(),
        );
        let e = classify(
            "s3 GetObject b/k",
            SdkError::service_error(err, response(404)),
        );
        assert!(e.is_permanent(), "{e}");
        assert!(e.message().contains("NoSuchKey (HTTP 404)"), "{e}");
    }

    #[test]
    fn timeouts_and_connection_failures_are_transient() {
        let e = classify::<GetObjectError, HttpResponse>(
            "s3 GetObject b/k",
            SdkError::timeout_error(
                "operation timeout (all attempts including retries) occurred after 30s",
            ),
        );
        assert_eq!(e.kind(), ErrorKind::Service);
        assert_eq!(e.message(), "s3 GetObject b/k: timed out");

        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let e = classify::<GetObjectError, HttpResponse>(
            "s3 GetObject b/k",
            SdkError::dispatch_failure(ConnectorError::io(Box::new(io))),
        );
        assert_eq!(e.kind(), ErrorKind::Service, "{e}");
        assert!(e.message().contains("connection reset"), "{e}");

        let e = classify::<ReceiveMessageError, HttpResponse>(
            "sqs ReceiveMessage",
            SdkError::dispatch_failure(ConnectorError::timeout("connect timeout".into())),
        );
        assert_eq!(e.kind(), ErrorKind::Service, "{e}");

        let e = classify::<ReceiveMessageError, HttpResponse>(
            "sqs ReceiveMessage",
            SdkError::dispatch_failure(ConnectorError::other(
                "failed to load credentials from IMDS".into(),
                None,
            )),
        );
        assert_eq!(e.kind(), ErrorKind::Service, "{e}");

        let e = classify::<GetObjectError, HttpResponse>(
            "s3 GetObject b/k",
            SdkError::response_error("truncated body", response(200)),
        );
        assert_eq!(e.kind(), ErrorKind::Service, "{e}");
        assert!(e.message().contains("HTTP 200"), "{e}");
    }

    #[test]
    fn construction_failures_are_permanent() {
        let e = classify::<PutObjectError, HttpResponse>(
            "s3 PutObject b/k",
            SdkError::construction_failure("bucket is required"),
        );
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    }

    #[test]
    fn messages_never_carry_presigned_query_strings() {
        let err = GetObjectError::generic(meta(
            "AccessDenied",
            "denied for https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAEXAMPLE%2F2024&X-Amz-Signature=abc",
        ));
        let e = classify(
            "s3 GetObject b/k",
            SdkError::service_error(err, response(403)),
        );
        assert!(!e.message().contains("AKIA"), "{e}");
        assert!(!e.message().contains("Signature"), "{e}");
        assert!(
            e.message().contains("https://b.s3.amazonaws.com/k?…"),
            "{e}"
        );

        let long = "x".repeat(1000);
        let err = GetObjectError::generic(meta("InternalError", &long));
        let e = classify(
            "s3 GetObject b/k",
            SdkError::service_error(err, response(500)),
        );
        assert!(e.message().len() < 300, "{e}");
    }
}
