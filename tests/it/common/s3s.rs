//! A strict S3 in the test process: `s3s-fs` 0.14.1 behind `s3s`'s SigV4 authentication, on
//! 127.0.0.1 and a free port. Unlike moto it checks signatures (header and presigned),
//! presigned-URL expiry, and POST policies (expiration, every `eq` condition,
//! `content-length-range`, and that every form field is covered by a condition).
#![allow(dead_code)] // each test crate uses its own share of these helpers

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use resizeq::adapters::aws;
use resizeq::config::AwsConfig;

pub const ACCESS_KEY: &str = "AKIARESIZEQTEST00001";
pub const SECRET_KEY: &str = "strict-s3-secret-key-for-tests-only-000000";
pub const REGION: &str = "us-east-1";

pub struct StrictS3 {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub aws: AwsConfig,
    /// SDK config with the server's credentials, as the sidecar gets from aws-config's chain.
    pub sdk: SdkConfig,
    /// An S3 client built as the project builds them (`resizeq::adapters::aws`).
    pub s3: aws_sdk_s3::Client,
    root: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for StrictS3 {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl StrictS3 {
    /// Starts the server and creates `bucket` through the SDK (a signed request, so a broken
    /// authentication setup fails here first).
    pub async fn start(bucket: &str) -> StrictS3 {
        let root = tempfile::tempdir().unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        let aws_config = AwsConfig {
            region: Some(REGION.into()),
            endpoint_url: Some(endpoint.clone()),
            force_path_style: true,
            ..AwsConfig::default()
        };
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&endpoint)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "tests",
            )))
            .load()
            .await;
        let s3 = aws::s3_client(&sdk, &aws_config);
        s3.create_bucket().bucket(bucket).send().await.unwrap();
        StrictS3 {
            endpoint,
            aws: aws_config,
            sdk,
            s3,
            root,
            server,
        }
    }

    /// The object's bytes, metadata and content type, or `None` if it does not exist.
    pub async fn object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Option<(
        Vec<u8>,
        std::collections::HashMap<String, String>,
        Option<String>,
    )> {
        match self.s3.get_object().bucket(bucket).key(key).send().await {
            Ok(out) => {
                let metadata = out.metadata().cloned().unwrap_or_default();
                let content_type = out.content_type().map(String::from);
                let bytes = out.body.collect().await.unwrap().into_bytes().to_vec();
                Some((bytes, metadata, content_type))
            }
            Err(e) => {
                let e = e.into_service_error();
                assert!(e.is_no_such_key(), "unexpected GetObject error: {e:?}");
                None
            }
        }
    }

    /// How many objects the bucket holds (every rejection test also checks nothing landed
    /// anywhere, not just at the issued key).
    pub async fn object_count(&self, bucket: &str) -> usize {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        out.contents().len()
    }
}
