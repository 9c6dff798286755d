//! [`SdkUploadSigner`]: the presign sidecar's [`UploadSigner`] port on the AWS SDK. Presigned
//! PUTs come from the SDK; POST policies are signed by `crate::presign::policy` with the
//! credentials resolved here. Nothing here sends a request to S3.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_s3::config::{Credentials, ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::presigning::PresigningConfig;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::Mutex;

use super::aws;
use crate::config::AwsConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::presign::policy::SigningCredentials;
use crate::presign::s3::{PresignedPut, UploadSigner, UploadTarget};

/// Temporary credentials are refreshed this long before they expire, so a POST policy is
/// never signed with credentials about to lapse.
const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

pub struct SdkUploadSigner {
    client: aws_sdk_s3::Client,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
    region: String,
    endpoint_url: Option<String>,
    force_path_style: bool,
}

impl SdkUploadSigner {
    /// `sdk` carries the credentials and region ([`aws::sdk_config`] in production; static
    /// test credentials in tests).
    pub fn new(sdk: &SdkConfig, aws_config: &AwsConfig) -> Result<SdkUploadSigner> {
        let region = sdk
            .region()
            .map(|r| r.as_ref().to_string())
            .ok_or_else(|| {
                Error::config("no AWS region: set aws.region (RESIZEQ_AWS__REGION) or AWS_REGION")
            })?;
        let credentials = sdk
            .credentials_provider()
            .ok_or_else(|| Error::config("no AWS credentials provider (aws-config found none)"))?;
        Ok(SdkUploadSigner {
            client: aws::s3_client(sdk, aws_config),
            credentials,
            cached: Mutex::new(None),
            region,
            endpoint_url: aws_config
                .endpoint_url
                .clone()
                .or_else(|| sdk.endpoint_url().map(String::from)),
            force_path_style: aws_config.force_path_style,
        })
    }

    /// As [`SdkUploadSigner::new`], as the port the sidecar takes.
    pub fn shared(sdk: &SdkConfig, aws_config: &AwsConfig) -> Result<Arc<dyn UploadSigner>> {
        Ok(Arc::new(Self::new(sdk, aws_config)?))
    }

    async fn cached_credentials(&self) -> Result<Credentials> {
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

    async fn put(&self, bucket: &str, target: &UploadTarget<'_>) -> Result<PresignedPut> {
        let presigning = PresigningConfig::builder()
            .start_time(target.now)
            .expires_in(target.expires_in)
            .build()
            .map_err(|e| Error::config(format!("presigning: {e}")))?;
        let mut request = self
            .client
            .put_object()
            .bucket(bucket)
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
}

impl UploadSigner for SdkUploadSigner {
    fn region(&self) -> &str {
        &self.region
    }

    fn endpoint_url(&self) -> Option<&str> {
        self.endpoint_url.as_deref()
    }

    fn force_path_style(&self) -> bool {
        self.force_path_style
    }

    fn presign_put<'a>(
        &'a self,
        bucket: &'a str,
        target: &'a UploadTarget<'a>,
    ) -> BoxFuture<'a, Result<PresignedPut>> {
        self.put(bucket, target).boxed()
    }

    fn credentials(&self) -> BoxFuture<'_, Result<SigningCredentials>> {
        async move {
            let c = self.cached_credentials().await?;
            Ok(SigningCredentials {
                access_key_id: c.access_key_id().into(),
                secret_access_key: c.secret_access_key().into(),
                session_token: c.session_token().map(String::from),
            })
        }
        .boxed()
    }
}
