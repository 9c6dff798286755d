//! The sidecar's S3 side: presigned PUTs and the credentials for presigned POSTs come through
//! the [`UploadSigner`] port (the SDK implementation is `crate::adapters::presign_s3`);
//! POST policies are signed here with [`super::policy`]. Nothing here sends a request to S3.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;

use super::policy::{self, FormFields, PostUpload, SigningCredentials};
use crate::error::{Error, Result};

/// What one upload is bound to.
#[derive(Debug, Clone)]
pub struct UploadTarget<'a> {
    pub key: &'a str,
    pub content_type: &'a str,
    /// PUT: the exact, signed Content-Length (`None`: unsigned, only with
    /// `compat_unbounded`). POST: the policy's maximum (`None`: an error).
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

/// The port to the object store's signer: what the sidecar needs from an S3 SDK. Object-safe
/// (boxed futures), so the server holds an `Arc<dyn UploadSigner>`.
pub trait UploadSigner: Send + Sync + 'static {
    /// The bucket's region (a POST policy's credential scope names it).
    fn region(&self) -> &str;
    /// A custom endpoint (emulators, MinIO-likes), if any; `None` is AWS.
    fn endpoint_url(&self) -> Option<&str>;
    /// Path-style addressing (`{endpoint}/{bucket}`) rather than virtual-host style.
    fn force_path_style(&self) -> bool;
    /// A presigned PUT of `target` into `bucket`.
    fn presign_put<'a>(
        &'a self,
        bucket: &'a str,
        target: &'a UploadTarget<'a>,
    ) -> BoxFuture<'a, Result<PresignedPut>>;
    /// Credentials to sign a POST policy with, valid for a while yet (the implementation
    /// caches them: resolving may ask IMDS or STS, which must not happen on every request).
    fn credentials(&self) -> BoxFuture<'_, Result<SigningCredentials>>;
}

pub struct S3Presigner {
    signer: Arc<dyn UploadSigner>,
    bucket: String,
    post_url: String,
}

impl S3Presigner {
    pub fn new(signer: Arc<dyn UploadSigner>, bucket: &str) -> S3Presigner {
        let post_url = post_url(
            signer.endpoint_url(),
            signer.force_path_style(),
            signer.region(),
            bucket,
        );
        S3Presigner {
            signer,
            bucket: bucket.into(),
            post_url,
        }
    }

    /// Whether credentials can be obtained (readiness).
    pub async fn ready(&self) -> Result<()> {
        self.signer.credentials().await.map(|_| ())
    }

    pub async fn presign_put(&self, target: &UploadTarget<'_>) -> Result<PresignedPut> {
        self.signer.presign_put(&self.bucket, target).await
    }

    pub async fn presign_post(&self, target: &UploadTarget<'_>) -> Result<PresignedPost> {
        let max_bytes = target
            .bytes
            .ok_or_else(|| Error::config("a POST policy needs a maximum size"))?;
        let credentials = self.signer.credentials().await?;
        let fields = policy::presign_post(
            &PostUpload {
                bucket: &self.bucket,
                key: target.key,
                content_type: target.content_type,
                uploader: target.uploader.unwrap_or_default(),
                max_bytes,
                region: self.signer.region(),
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
