//! resizeq: thumbnails of every upload, from S3 events on SQS.
//!
//! Module map (dependencies point down):
//! - [`cli`]: the `resizeq` subcommands (`resize`), glue between arguments and the core;
//!   [`daemon`]: `resizeq run` wiring (adapters, logging, runtime and signals).
//! - [`ops`]: operator tools (`resizeq dlq …`, `resizeq backfill`) over the same config; their
//!   logic runs over the [`ports`], only their `run` functions pick the adapters.
//! - [`worker`]: [`worker::Processor`], the queue-free job core (one typed object event in,
//!   its variants out), under the receive loop and per-message decisions; local mode. Over the
//!   [`ports`] only; [`adapters`]: SQS, S3, memory (tests) and local-folder implementations.
//! - [`pipeline`]: bytes in, encoded variants out; synchronous, knows nothing of tokio or AWS.
//!   [`pipeline::settings`] is the pure part (variants, limits, key template) that the presign
//!   sidecar can build without the codecs.
//! - [`config`]: defaults → TOML file → `RESIZEQ_` environment, validated once.
//! - [`ports`]: the queue, object-store and dead-letter-queue traits the worker and the tools
//!   use, and the queue limits; [`event`]: the typed object events (and [`event::ETag`]) and
//!   what a queue message means (S3, SNS, EventBridge shapes); [`fnv`]: the one
//!   change-detection hash; [`events`]: the events for the application (variants ready,
//!   failed, deleted) as CloudEvents, and `events.target`.
//! - [`telemetry`]: the metric catalogue, the `/metrics` `/healthz` `/readyz` listener and
//!   logs + OpenTelemetry traces.
//! - [`signals`]: the tokio runtime and shutdown on SIGTERM/SIGINT, for every binary.
//! - [`error`]: typed errors that say whether a failure is permanent or transient.
//! - [`presign`]: the `resizeq-presign` upload sidecar (HTTP API, auth, URL signing); needs
//!   neither the codecs nor the worker.

pub mod adapters;
#[cfg(feature = "codecs")]
pub mod cli;
pub mod config;
#[cfg(feature = "codecs")]
pub mod daemon;
pub mod error;
pub mod event;
pub mod events;
pub mod fnv;
#[cfg(feature = "codecs")]
pub mod ops;
pub mod pipeline;
pub mod ports;
pub mod presign;
pub mod signals;
pub mod telemetry;
#[cfg(feature = "codecs")]
pub mod worker;

pub use error::{Error, ErrorKind, Result};
