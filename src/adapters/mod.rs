//! Implementations of the ports: memory (unit tests), a local folder, SQS and S3.
//!
//! - [`aws`]: the SDK configuration and clients, and `classify`, the one place where SDK
//!   errors become our [`crate::Error`] (permanent or transient).
//! - [`sqs`]: [`sqs::SqsQueue`], the `Queue` on SQS (with an optional dead-letter queue).
//! - [`s3`]: [`s3::S3Store`], the `Store` on S3.
//! - [`presign_s3`]: [`presign_s3::SdkUploadSigner`], the presign sidecar's `UploadSigner` on
//!   the SDK (presigned PUTs, credentials for POST policies).

pub mod aws;
pub mod fs;
pub mod memory;
pub mod presign_s3;
pub mod s3;
pub mod sqs;
