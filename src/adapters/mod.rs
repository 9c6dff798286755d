//! Implementations of the ports: memory (unit tests), a local folder, SQS and S3.
//!
//! - [`aws`]: the SDK configuration and clients, and `classify`, the one place where SDK
//!   errors become our [`crate::Error`] (permanent or transient).
//! - [`sqs`]: [`sqs::SqsQueue`], the `Queue` (and `Enqueue`) on SQS, with an optional
//!   dead-letter queue; [`sqs_dlq`]: the `DeadLetterQueue` of the dlq commands on SQS.
//! - [`s3`]: [`s3::S3Store`], the `Store` on S3; [`fs`]: the `Store` on a local folder.
//! - [`memory`], [`memory_dlq`]: in-memory queue, store and dead-letter queue with switches
//!   to inject faults, for unit tests.
//! - [`events_aws`]: the events for the application on SQS, SNS or EventBridge;
//!   [`events_file`]: on a local file (local mode); [`memory_events`]: in memory (unit tests).
//! - [`presign_s3`]: [`presign_s3::SdkUploadSigner`], the presign sidecar's `UploadSigner` on
//!   the SDK (presigned PUTs, credentials for POST policies).

pub mod aws;
pub mod events_aws;
pub mod events_file;
pub mod fs;
pub mod memory;
pub mod memory_dlq;
pub mod memory_events;
pub mod presign_s3;
pub mod s3;
pub mod sqs;
pub mod sqs_dlq;
