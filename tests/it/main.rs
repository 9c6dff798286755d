//! The integration tests: one binary (each file below is a module), so the AWS SDK and the
//! codecs are linked once. Tests that talk to S3/SQS need an emulator (`source
//! scripts/moto.sh`); `scripts/test` starts one and sets `RESIZEQ_TEST_REQUIRE_ENDPOINT`, under
//! which a missing emulator or corpus fails the run.
//!
//! By hand: `bash -c 'source scripts/moto.sh && cargo test --test it worker_e2e -- --nocapture'`.

/// The test's AWS context, or return (the test passes as skipped, saying `MOTO MISSING`)
/// without an emulator, unless one is required.
macro_rules! context {
    ($name:expr) => {
        match crate::common::context($name).await {
            Some(ctx) => ctx,
            None => return,
        }
    };
}

mod common;

mod aws_adapters;
mod chaos;
mod cli;
mod events;
mod events_e2e;
mod lifecycle_core;
mod lifecycle_e2e;
mod lifecycle_races;
mod local_mode;
mod ops_backfill;
mod ops_dlq;
mod outages;
mod pipeline;
mod presign;
mod telemetry_files;
mod worker_core;
mod worker_e2e;
