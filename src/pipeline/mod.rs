//! The image pipeline: bytes in, encoded variants out. Synchronous and free of tokio and AWS,
//! so the worker, the CLI, the tests and the benchmark all run exactly this code.
//!
//! Steps: size check → [`sniff`] the format from magic bytes → read the header and check the
//! limits → decode once, shrunk on load as far as the largest variant allows → auto-orient →
//! [`placeholder`] (ThumbHash + average colour) → for each variant: resize (Lanczos3),
//! flatten alpha for JPEG, encode, attach metadata.

pub mod settings;
pub mod sniff;

#[cfg(feature = "codecs")]
pub mod colour;
#[cfg(feature = "codecs")]
pub mod decode;
#[cfg(feature = "codecs")]
pub mod encode;
pub mod geometry;
#[cfg(feature = "codecs")]
pub mod memory;
#[cfg(feature = "codecs")]
pub mod metadata;
pub mod orient;
#[cfg(feature = "codecs")]
pub mod placeholder;
#[cfg(feature = "codecs")]
mod process;
#[cfg(feature = "codecs")]
pub mod resize;

#[cfg(feature = "codecs")]
pub use decode::Probe;
#[cfg(feature = "codecs")]
pub use process::{Output, Pipeline, Rendered, Timings};
pub use settings::{
    ColourPolicy, Fit, Limits, MetadataPolicy, OutputFormat, OutputSettings, PipelineSettings,
    VariantSpec,
};
pub use sniff::SourceFormat;
