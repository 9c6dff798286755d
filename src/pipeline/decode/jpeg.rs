use super::{progressive, Decoded, Dimensions, MinScale};
use crate::error::{Error, Result};
use crate::pipeline::colour::PixelModel;
use crate::pipeline::metadata::{self, SourceMetadata};
use turbojpeg::{Colorspace, Decompressor, PixelFormat, ScalingFactor};

/// libjpeg-turbo's guard against progressive files with absurd scan counts
/// (a few hundred bytes can otherwise cost minutes of CPU).
const MAX_SCANS: u32 = 500;

/// Decode at least this many times the output size before resizing.
const SHRINK_MARGIN: f64 = 1.2;

fn corrupt(e: turbojpeg::Error) -> Error {
    Error::corrupt(format!("JPEG: {e}"))
}

/// What the probe read: the frame header and the metadata segments.
#[derive(Debug, Clone)]
pub struct Header {
    pub dims: Dimensions,
    pub turbo: turbojpeg::DecompressHeader,
    pub meta: SourceMetadata,
    /// An Adobe APP14 segment: CMYK is stored inverted.
    pub adobe: bool,
}

pub fn probe(data: &[u8]) -> Result<Header> {
    let turbo = turbojpeg::read_header(data).map_err(corrupt)?;
    let dims = Dimensions {
        width: turbo.width as u32,
        height: turbo.height as u32,
        frames: 1,
    };
    let (meta, adobe) = metadata::jpeg_metadata(data);
    Ok(Header {
        dims,
        turbo,
        meta,
        adobe,
    })
}

pub fn decode(data: &[u8], header: Header, min_scale: MinScale) -> Result<Decoded> {
    let Header {
        dims,
        turbo: header,
        meta,
        adobe,
    } = header;
    let (w, h) = (dims.width, dims.height);
    // `tj3Decompress8` reads the frame header itself; no separate read_header call is needed.
    let mut d = Decompressor::new().map_err(|e| Error::io(format!("turbojpeg init: {e}")))?;
    let min_scale = min_scale(w, h, meta.orientation);

    // DCT-domain scaling: the smallest n/8 that leaves the Lanczos resizer a margin. The DCT
    // scaler is a box filter; decoding to barely above the output size (4096 → 512 for 500)
    // measurably blurs against a Lanczos reference (SSIM −0.006 in scripts/bench).
    let wanted = (min_scale * SHRINK_MARGIN).min(1.0);
    let factor = (1..=8)
        .map(|n| ScalingFactor::new(n, 8))
        .find(|f| f.num() as f64 / 8.0 >= wanted - 1e-9)
        .unwrap_or(ScalingFactor::ONE);
    if !header.is_lossless {
        d.set_scaling_factor(factor).map_err(corrupt)?;
    }
    d.set_scan_limit(MAX_SCANS).map_err(corrupt)?;
    let scaled = if header.is_lossless {
        header
    } else {
        header.scaled(factor)
    };
    let cmyk = matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let format = if cmyk {
        PixelFormat::CMYK
    } else {
        PixelFormat::RGB
    };
    let mut image = turbojpeg::Image {
        pixels: vec![0u8; scaled.width * scaled.height * format.size()],
        width: scaled.width,
        pitch: scaled.width * format.size(),
        height: scaled.height,
        format,
    };
    // At 1/8 scale the IDCT reads only each block's DC coefficient, so the AC scans of a
    // progressive file (most of its bytes) can be skipped without changing a pixel.
    let dc_only = (header.is_progressive && factor == ScalingFactor::ONE_EIGHTH)
        .then(|| progressive::dc_scans(data))
        .flatten();
    d.decompress(dc_only.as_deref().unwrap_or(data), image.as_deref_mut())
        .map_err(corrupt)?;
    // CMYK stays CMYK here: colour::manage converts it through its profile.
    let model = match header.colorspace {
        Colorspace::CMYK | Colorspace::YCCK => PixelModel::Cmyk { inverted: adobe },
        Colorspace::Gray => PixelModel::Gray,
        _ => PixelModel::Rgb,
    };
    Ok(Decoded {
        pixels: image.pixels.into(),
        width: scaled.width as u32,
        height: scaled.height as u32,
        channels: format.size() as u8,
        model,
        source_width: w,
        source_height: h,
        meta,
    })
}
