//! The sidecar's S3 side: presigned PUTs from the SDK, presigned POSTs from [`super::policy`]
//! with the SDK's credentials. Nothing here sends a request to S3.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_s3::config::{Credentials, ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::presigning::PresigningConfig;
use tokio::sync::Mutex;

use super::policy::{self, FormFields, PostUpload, SigningCredentials};
use crate::adapters::aws;
use crate::config::AwsConfig;
use crate::error::{Error, ErrorKind, Result};

/// Temporary credentials are refreshed this long before they expire, so a POST policy is
/// never signed with credentials about to lapse.
const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// What one upload is bound to.
#[derive(Debug, Clone)]
pub struct UploadTarget<'a> {
    pub key: &'a str,
    pub content_type: &'a str,
    /// PUT: the exact, signed Content-Length (`None`: unsigned, the compat route's old
    /// clients declare no length). POST: the policy's maximum (`None`: an error).
    pub bytes: Option<u64>,
    /// `x-amz-meta-uploader`; `None` leaves it out (the compat route's old clients cannot
    /// send a header they do not know about).
    pub uploader: Option<&'a str>,
    pub now: SystemTime,
    pub expires_in: Duration,
}

#[derive(Debug, Clone)]
pub struct PresignedPut {
    pub url: String,
    /// Every header the client must send as given (they are signed).
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct PresignedPost {
    pub url: String,
    pub fields: FormFields,
}

pub struct S3Presigner {
    client: aws_sdk_s3::Client,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
    region: String,
    bucket: String,
    post_url: String,
}

impl S3Presigner {
    /// `sdk` carries the credentials and region (`resizeq::adapters::aws::sdk_config` in
    /// production; static test credentials in tests).
    pub fn new(sdk: &SdkConfig, aws_config: &AwsConfig, bucket: &str) -> Result<S3Presigner> {
        let region = sdk
            .region()
            .map(|r| r.as_ref().to_string())
            .ok_or_else(|| {
                Error::config("no AWS region: set aws.region (RESIZEQ_AWS__REGION) or AWS_REGION")
            })?;
        let credentials = sdk
            .credentials_provider()
            .ok_or_else(|| Error::config("no AWS credentials provider (aws-config found none)"))?;
        let endpoint = aws_config
            .endpoint_url
            .clone()
            .or_else(|| sdk.endpoint_url().map(String::from));
        Ok(S3Presigner {
            client: aws::s3_client(sdk, aws_config),
            credentials,
            cached: Mutex::new(None),
            post_url: post_url(
                endpoint.as_deref(),
                aws_config.force_path_style,
                &region,
                bucket,
            ),
            region,
            bucket: bucket.into(),
        })
    }

    /// Resolved (and cached) credentials: the SDK's default chain may ask IMDS or STS, which
    /// must not happen on every request.
    async fn credentials(&self) -> Result<Credentials> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c
                .expiry()
                .is_none_or(|t| t > SystemTime::now() + CREDENTIALS_REFRESH_MARGIN);
            if fresh {
                return Ok(c.clone());
            }
        }
        let c = self.credentials.provide_credentials().await.map_err(|e| {
            // The provider's message names the sources it tried, never a secret.
            Error::new(ErrorKind::Service, format!("AWS credentials: {e}"))
        })?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Whether credentials can be obtained (readiness).
    pub async fn ready(&self) -> Result<()> {
        self.credentials().await.map(|_| ())
    }

    pub async fn presign_put(&self, target: &UploadTarget<'_>) -> Result<PresignedPut> {
        let presigning = PresigningConfig::builder()
            .start_time(target.now)
            .expires_in(target.expires_in)
            .build()
            .map_err(|e| Error::config(format!("presigning: {e}")))?;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(target.key)
            .content_type(target.content_type);
        if let Some(bytes) = target.bytes {
            request = request.content_length(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if let Some(uploader) = target.uploader {
            request = request.metadata("uploader", uploader);
        }
        let presigned = request
            .presigned(presigning)
            .await
            .map_err(|e| aws::classify("s3 presign PutObject", e))?;
        Ok(PresignedPut {
            url: presigned.uri().to_string(),
            headers: presigned
                .headers()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    pub async fn presign_post(&self, target: &UploadTarget<'_>) -> Result<PresignedPost> {
        let max_bytes = target
            .bytes
            .ok_or_else(|| Error::config("a POST policy needs a maximum size"))?;
        let c = self.credentials().await?;
        let credentials = SigningCredentials {
            access_key_id: c.access_key_id().into(),
            secret_access_key: c.secret_access_key().into(),
            session_token: c.session_token().map(String::from),
        };
        let fields = policy::presign_post(
            &PostUpload {
                bucket: &self.bucket,
                key: target.key,
                content_type: target.content_type,
                uploader: target.uploader.unwrap_or_default(),
                max_bytes,
                region: &self.region,
                now: target.now,
                expires_in: target.expires_in,
            },
            &credentials,
        );
        Ok(PresignedPost {
            url: self.post_url.clone(),
            fields,
        })
    }
}

/// Where a browser POSTs: the bucket's URL, path-style on an emulator that needs it.
fn post_url(endpoint: Option<&str>, path_style: bool, region: &str, bucket: &str) -> String {
    match endpoint {
        Some(endpoint) => {
            let endpoint = endpoint.trim_end_matches('/');
            match endpoint.split_once("://") {
                Some((scheme, host)) if !path_style => format!("{scheme}://{bucket}.{host}/"),
                _ => format!("{endpoint}/{bucket}"),
            }
        }
        None if path_style => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        None => format!("https://{bucket}.s3.{region}.amazonaws.com/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_url_follows_the_addressing_style() {
        assert_eq!(
            post_url(None, false, "eu-west-1", "photos"),
            "https://photos.s3.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            post_url(None, true, "eu-west-1", "photos"),
            "https://s3.eu-west-1.amazonaws.com/photos"
        );
        assert_eq!(
            post_url(Some("http://127.0.0.1:9000/"), true, "us-east-1", "photos"),
            "http://127.0.0.1:9000/photos"
        );
        assert_eq!(
            post_url(Some("https://minio.example"), false, "us-east-1", "photos"),
            "https://photos.minio.example/"
        );
    }
}
