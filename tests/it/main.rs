//! The integration tests: one binary (each file below is a module), so the AWS SDK and the
//! codecs are linked once. Tests that talk to S3/SQS need an emulator (`source
//! scripts/moto.sh`); `scripts/test` starts one and sets `RESIZEQ_TEST_REQUIRE_ENDPOINT`, under
//! which a missing emulator or corpus fails the run.
//!
//! By hand: `bash -c 'source scripts/moto.sh && cargo test --test it worker_e2e -- --nocapture'`.

mod common;

mod aws_adapters;
mod chaos;
mod cli;
mod local_mode;
mod ops_backfill;
mod ops_dlq;
mod outages;
mod pipeline;
mod presign;
mod telemetry_files;
mod worker_core;
mod worker_e2e;
