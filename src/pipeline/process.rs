//! [`Pipeline`]: one decode per source, every variant from it.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use super::decode::Probe;
use super::metadata::OutputMetadata;
use super::resize::{self, Pixels};
use super::settings::{self, OutputFormat, PipelineSettings};
use super::sniff::{self, SourceFormat};
use super::{colour, decode, encode, geometry, orient, placeholder};
use crate::error::{Error, Result};
use crate::events::Placeholder;

/// One encoded output.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Index into the configured variants.
    pub variant: usize,
    pub name: String,
    /// Destination key, from the key template.
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub format: OutputFormat,
    pub bytes: Vec<u8>,
}

impl Rendered {
    pub fn content_type(&self) -> &'static str {
        self.format.content_type()
    }
}

/// Where the time of one source went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub decode: Duration,
    /// Every variant's resize, and the placeholder's.
    pub resize: Duration,
    pub encode: Duration,
}

#[derive(Debug, Clone)]
pub struct Output {
    pub format: SourceFormat,
    /// Upright size of the full-resolution source.
    pub source_width: u32,
    pub source_height: u32,
    pub variants: Vec<Rendered>,
    /// ThumbHash and average colour of the upright, colour-managed source.
    pub placeholder: Placeholder,
    pub timings: Timings,
}

/// A validated pipeline. Cheap to share across threads; per-thread scratch lives in
/// thread-locals so buffers are reused from one image to the next.
#[derive(Debug, Clone)]
pub struct Pipeline {
    settings: PipelineSettings,
    background: [u8; 3],
    fingerprint: String,
}

thread_local! {
    static RESIZER: RefCell<fast_image_resize::Resizer> = RefCell::new(fast_image_resize::Resizer::new());
}

impl Pipeline {
    pub fn new(settings: PipelineSettings) -> Result<Pipeline> {
        settings.validate()?;
        let background = settings.output.background_rgb()?;
        let fingerprint = settings.fingerprint();
        Ok(Pipeline {
            settings,
            background,
            fingerprint,
        })
    }

    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }

    /// Digest of the output-relevant config; stored with every variant for idempotency.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The destination keys of `source_key`, in variant order.
    pub fn keys_for(&self, source_key: &str) -> Vec<String> {
        self.settings
            .variants
            .iter()
            .map(|v| settings::render_key(&self.settings.output.key_template, v, source_key))
            .collect()
    }

    /// Checks the size, sniffs the format and reads the header within the limits: one read,
    /// whose result [`Pipeline::process_probed`] decodes from without parsing it again.
    pub fn probe(&self, data: &[u8]) -> Result<Probe> {
        let limits = &self.settings.limits;
        if data.len() as u64 > limits.max_source_bytes {
            return Err(Error::too_large(format!(
                "{} bytes, over limits.max_source_bytes = {}",
                data.len(),
                limits.max_source_bytes
            )));
        }
        let format = sniff::sniff(data)?;
        decode::probe(data, format, limits)
    }

    /// Estimated decode memory of `data` (0 if it is not an image we know: it fails fast).
    /// Reads the header; callers that go on to process should use [`Pipeline::probe`].
    pub fn estimate_decode_bytes(&self, data: &[u8]) -> u64 {
        self.probe(data).map_or(0, |p| p.decode_bytes())
    }

    /// Runs every variant of one source. Errors name the reason; the caller adds the key.
    pub fn process(&self, data: &[u8], source_key: &str) -> Result<Output> {
        self.process_probed(data, self.probe(data)?, self.keys_for(source_key))
    }

    /// [`Pipeline::process`] from a [`Pipeline::probe`] of the same `data`, with the keys the
    /// caller rendered once ([`Pipeline::keys_for`], one per variant, in order).
    pub fn process_probed(&self, data: &[u8], probe: Probe, keys: Vec<String>) -> Result<Output> {
        let mut keys = keys.into_iter();
        let limits = &self.settings.limits;
        let format = probe.format();
        let started = Instant::now();
        // Stage spans: children of the caller's span (the worker's per-message trace).
        let decode_span = tracing::info_span!("decode", format = format.as_str()).entered();
        let min_scale = |w, h, o| self.min_decode_scale(w, h, o);
        let mut decoded = decode::decode(data, probe, &min_scale, limits)?;
        let output_icc = colour::manage(&mut decoded, self.settings.output.color)?;
        let orientation = decoded.meta.orientation;
        let (up_w, up_h) = orientation.upright_size(decoded.source_width, decoded.source_height);
        let (width, height) = orientation.upright_size(decoded.width, decoded.height);
        let rotated = orientation.apply(
            &decoded.pixels,
            decoded.width as usize,
            decoded.height as usize,
            decoded.channels as usize,
        );
        let mut upright = Pixels::new(
            rotated.map_or(decoded.pixels, Into::into),
            width,
            height,
            decoded.channels,
        );
        resize::prepare_alpha(&mut upright)?;
        let mut timings = Timings {
            decode: started.elapsed(),
            ..Default::default()
        };
        drop(decode_span);
        let meta = OutputMetadata::for_policy(&decoded.meta, &self.settings.output, output_icc);
        let (sx, sy) = (
            upright.width as f64 / up_w as f64,
            upright.height as f64 / up_h as f64,
        );
        let t = Instant::now();
        let placeholder =
            RESIZER.with(|r| placeholder::placeholder(&mut r.borrow_mut(), &upright))?;
        timings.resize += t.elapsed();
        let mut variants = Vec::with_capacity(self.settings.variants.len());
        for (index, spec) in self.settings.variants.iter().enumerate() {
            let plan = geometry::plan(spec, up_w, up_h);
            let t = Instant::now();
            let resize_span =
                tracing::info_span!("resize", variant = %spec.display_name()).entered();
            let resized = RESIZER
                .with(|r| resize::resize(&mut r.borrow_mut(), &upright, &plan.scaled(sx, sy)))?;
            let resized = match spec.format {
                OutputFormat::Jpeg => resize::flatten(resized, self.background),
                _ => resize::unpremultiply(resized)?,
            };
            timings.resize += t.elapsed();
            drop(resize_span);
            let t = Instant::now();
            let encode_span =
                tracing::info_span!("encode", variant = %spec.display_name()).entered();
            let bytes = encode::encode(
                &resized,
                spec.format,
                spec.quality,
                &self.settings.output.avif,
                &meta,
            )?;
            timings.encode += t.elapsed();
            drop(encode_span);
            variants.push(Rendered {
                variant: index,
                name: spec.display_name(),
                key: keys.next().expect("one key per variant"),
                width: resized.width,
                height: resized.height,
                format: spec.format,
                bytes,
            });
        }
        drop(upright);
        if up_w as u64 * up_h as u64 >= super::memory::LARGE_JOB_PIXELS {
            super::memory::release_freed_pages();
        }
        Ok(Output {
            format,
            source_width: up_w,
            source_height: up_h,
            variants,
            placeholder,
            timings,
        })
    }

    /// The largest shrink the decoder may apply to a stored `w` × `h` source: enough pixels
    /// left for every variant.
    fn min_decode_scale(&self, w: u32, h: u32, orientation: orient::Orientation) -> f64 {
        let (w, h) = orientation.upright_size(w, h);
        let needed = self
            .settings
            .variants
            .iter()
            .map(|spec| geometry::plan(spec, w, h).needed_scale())
            .fold(0.0, f64::max);
        needed.min(1.0)
    }
}
