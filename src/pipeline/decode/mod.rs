//! Decoders: bytes in, 8-bit RGB or RGBA pixels out, shrunk on load where the codec can.
//!
//! [`probe`] reads only the header and checks the limits, so a file that claims
//! 100 000 × 100 000 pixels is refused before a byte of pixel memory is allocated. What it
//! read travels in the [`Probe`] into [`decode`], which does not parse the header again.

mod heif;
mod jpeg;
mod progressive;
mod raster;
mod webp;

use super::colour::PixelModel;
use super::metadata::SourceMetadata;
use super::orient::Orientation;
use super::resize::PixelData;
use super::settings::Limits;
use super::sniff::SourceFormat;
use crate::error::{Error, Result};

/// Decoded pixels in stored orientation (`meta.orientation` still to apply).
#[derive(Debug)]
pub struct Decoded {
    pub pixels: PixelData,
    pub width: u32,
    pub height: u32,
    /// 3 (RGB) or 4 (RGBA, or CMYK when `model` says so).
    pub channels: u8,
    /// What the channels hold; [`colour::manage`](super::colour::manage) makes it RGB.
    pub model: PixelModel,
    /// Size of the full-resolution source (stored orientation), before any shrink-on-load.
    pub source_width: u32,
    pub source_height: u32,
    pub meta: SourceMetadata,
}

/// Size and frame count as the header states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dimensions {
    pub width: u32,
    pub height: u32,
    pub frames: u32,
}

pub fn check_limits(dims: &Dimensions, limits: &Limits) -> Result<()> {
    let pixels = dims.width as u64 * dims.height as u64;
    if dims.width == 0 || dims.height == 0 {
        return Err(Error::corrupt(format!(
            "header claims an empty image ({}x{})",
            dims.width, dims.height
        )));
    }
    if pixels > limits.max_pixels {
        return Err(Error::too_large(format!(
            "{}x{} is {pixels} pixels, over limits.max_pixels = {}",
            dims.width, dims.height, limits.max_pixels
        )));
    }
    if dims.frames > limits.max_frames {
        return Err(Error::too_large(format!(
            "{} frames, over limits.max_frames = {}",
            dims.frames, limits.max_frames
        )));
    }
    Ok(())
}

/// One read of a source's header, within the limits: the memory estimate the worker admits
/// the job by, and what [`decode`] starts from.
#[derive(Debug, Clone)]
pub struct Probe {
    format: SourceFormat,
    decode_bytes: u64,
    header: Header,
}

/// What each decoder keeps from the header read.
#[derive(Debug, Clone)]
enum Header {
    Jpeg(jpeg::Header),
    WebP(webp::Header),
    /// libheif reads the container as it decodes; a separate parse would only duplicate it.
    Heif,
    Raster(Dimensions),
}

impl Probe {
    pub fn format(&self) -> SourceFormat {
        self.format
    }

    /// A rough upper bound of the memory the decode takes: the worker's memory budget admits
    /// jobs by it.
    pub fn decode_bytes(&self) -> u64 {
        self.decode_bytes
    }

    /// Stored size, when the header states it (HEIF's is read by the decoder).
    pub fn dimensions(&self) -> Option<Dimensions> {
        match &self.header {
            Header::Jpeg(h) => Some(h.dims),
            Header::WebP(h) => Some(h.dims),
            Header::Heif => None,
            Header::Raster(d) => Some(*d),
        }
    }
}

/// Reads the header of `data` (already sniffed as `format`) and checks it against `limits`.
pub fn probe(data: &[u8], format: SourceFormat, limits: &Limits) -> Result<Probe> {
    let pixels = |d: &Dimensions| d.width as u64 * d.height as u64;
    let (header, decode_bytes) = match format {
        SourceFormat::Jpeg => {
            let h = jpeg::probe(data)?;
            check_limits(&h.dims, limits)?;
            // libjpeg keeps every coefficient of a progressive image (2 bytes × 3 components).
            let bytes = if h.turbo.is_progressive {
                pixels(&h.dims) * 6
            } else {
                pixels(&h.dims) / 2
            };
            (Header::Jpeg(h), bytes)
        }
        SourceFormat::WebP => {
            let h = webp::probe(data)?;
            check_limits(&h.dims, limits)?;
            let bytes = pixels(&h.dims);
            (Header::WebP(h), bytes)
        }
        // libheif: YCbCr planes, the RGB frame and a rotation copy.
        SourceFormat::Heif => (Header::Heif, data.len() as u64 * 80),
        SourceFormat::Png | SourceFormat::Gif | SourceFormat::Tiff | SourceFormat::Bmp => {
            let d = raster::probe(data, format)?;
            check_limits(&d, limits)?;
            (Header::Raster(d), pixels(&d) * 4)
        }
    };
    Ok(Probe {
        format,
        decode_bytes,
        header,
    })
}

/// Given the stored size and orientation, the smallest fraction of the full size that the
/// decoder may shrink to on load.
pub type MinScale<'a> = &'a dyn Fn(u32, u32, Orientation) -> f64;

/// Decodes `data` as its `probe` describes, shrunk on load where the codec can (others return
/// full size).
pub fn decode(data: &[u8], probe: Probe, min_scale: MinScale, limits: &Limits) -> Result<Decoded> {
    match probe.header {
        Header::Jpeg(h) => jpeg::decode(data, h, min_scale),
        Header::WebP(h) => webp::decode(data, h, min_scale),
        Header::Heif => heif::decode(data, limits),
        Header::Raster(_) => raster::decode(data, probe.format, limits),
    }
}
