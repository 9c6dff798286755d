//! Decoders: bytes in, 8-bit RGB or RGBA pixels out, shrunk on load where the codec can.
//!
//! Every decoder first reads only the header and checks the limits, so a file that claims
//! 100 000 × 100 000 pixels is refused before a byte of pixel memory is allocated.

use std::io::Cursor;

use super::metadata::{self, SourceMetadata};
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
    /// 3 (RGB) or 4 (RGBA).
    pub channels: u8,
    /// Size of the full-resolution source (stored orientation), before any shrink-on-load.
    pub source_width: u32,
    pub source_height: u32,
    pub meta: SourceMetadata,
}

/// What the header says, read without decoding pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub width: u32,
    pub height: u32,
    pub frames: u32,
}

pub fn check_limits(probe: &Probe, limits: &Limits) -> Result<()> {
    let pixels = probe.width as u64 * probe.height as u64;
    if probe.width == 0 || probe.height == 0 {
        return Err(Error::corrupt(format!(
            "header claims an empty image ({}x{})",
            probe.width, probe.height
        )));
    }
    if pixels > limits.max_pixels {
        return Err(Error::too_large(format!(
            "{}x{} is {pixels} pixels, over limits.max_pixels = {}",
            probe.width, probe.height, limits.max_pixels
        )));
    }
    if probe.frames > limits.max_frames {
        return Err(Error::too_large(format!(
            "{} frames, over limits.max_frames = {}",
            probe.frames, limits.max_frames
        )));
    }
    Ok(())
}

/// A rough upper bound of the memory a decode of `data` takes, from its header alone: the
/// worker's memory budget admits jobs by it.
pub fn estimate_decode_bytes(data: &[u8], format: SourceFormat) -> u64 {
    let pixels = |w: u32, h: u32| w as u64 * h as u64;
    match format {
        SourceFormat::Jpeg => match turbojpeg::read_header(data) {
            // libjpeg keeps every coefficient of a progressive image (2 bytes × 3 components).
            Ok(h) if h.is_progressive => pixels(h.width as u32, h.height as u32) * 6,
            Ok(h) => pixels(h.width as u32, h.height as u32) / 2,
            Err(_) => data.len() as u64,
        },
        SourceFormat::WebP => {
            webp::probe(data).map_or(data.len() as u64, |(p, _, _)| pixels(p.width, p.height))
        }
        // libheif: YCbCr planes, the RGB frame and a rotation copy.
        SourceFormat::Heif => data.len() as u64 * 80,
        _ => generic::probe(data, format)
            .map_or(data.len() as u64, |p| pixels(p.width, p.height) * 4),
    }
}

/// Given the stored size and orientation, the smallest fraction of the full size that the
/// decoder may shrink to on load.
pub type MinScale<'a> = &'a dyn Fn(u32, u32, Orientation) -> f64;

/// Decodes `data`, shrunk on load where the codec can (others return full size).
pub fn decode(
    data: &[u8],
    format: SourceFormat,
    min_scale: MinScale,
    limits: &Limits,
) -> Result<Decoded> {
    match format {
        SourceFormat::Jpeg => jpeg::decode(data, min_scale, limits),
        SourceFormat::WebP => webp::decode(data, min_scale, limits),
        SourceFormat::Heif => heif::decode(data, limits),
        SourceFormat::Png | SourceFormat::Gif | SourceFormat::Tiff | SourceFormat::Bmp => {
            generic::decode(data, format, limits)
        }
    }
}

mod jpeg {
    use super::*;
    use turbojpeg::{Colorspace, Decompressor, PixelFormat, ScalingFactor};

    /// libjpeg-turbo's guard against progressive files with absurd scan counts
    /// (a few hundred bytes can otherwise cost minutes of CPU).
    const MAX_SCANS: u32 = 500;

    /// Decode at least this many times the output size before resizing.
    const SHRINK_MARGIN: f64 = 1.2;

    fn corrupt(e: turbojpeg::Error) -> Error {
        Error::corrupt(format!("JPEG: {e}"))
    }

    pub fn decode(data: &[u8], min_scale: MinScale, limits: &Limits) -> Result<Decoded> {
        let mut d = Decompressor::new().map_err(|e| Error::io(format!("turbojpeg init: {e}")))?;
        let header = d.read_header(data).map_err(corrupt)?;
        let (w, h) = (header.width as u32, header.height as u32);
        check_limits(
            &Probe {
                width: w,
                height: h,
                frames: 1,
            },
            limits,
        )?;
        let (meta, adobe) = metadata::jpeg_metadata(data);
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
            .then(|| progressive_dc_scans(data))
            .flatten();
        d.decompress(dc_only.as_deref().unwrap_or(data), image.as_deref_mut())
            .map_err(corrupt)?;
        let pixels = if cmyk {
            cmyk_to_rgb(&image.pixels, adobe)
        } else {
            image.pixels
        }
        .into();
        Ok(Decoded {
            pixels,
            width: scaled.width as u32,
            height: scaled.height as u32,
            channels: 3,
            source_width: w,
            source_height: h,
            meta,
        })
    }

    /// A copy of a progressive JPEG without the AC scans of its full-resolution components
    /// (at 1/8 scale their IDCT reads only the DC coefficient). Subsampled chroma keeps its AC
    /// scans: libjpeg scales it with a 2×2 IDCT rather than upsampling. `None` if the structure
    /// is not what we expect, in which case the caller decodes the original.
    pub(super) fn progressive_dc_scans(data: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len() / 2);
        out.extend_from_slice(&data[..2]);
        // (table id, offset in `out` of its Q01 entry, entry size)
        let mut q01_entries: Vec<(u8, usize, usize)> = Vec::new();
        // (component id, sampling factors h, v, quantisation table)
        let mut components: Vec<(u8, u8, u8, u8)> = Vec::new();
        let mut dropped_any = false;
        let mut pos = 2;
        loop {
            if pos + 2 > data.len() || data[pos] != 0xFF {
                return None;
            }
            let marker = data[pos + 1];
            match marker {
                0xFF => {
                    pos += 1;
                    continue;
                }
                0xD9 => break,
                0xD0..=0xD7 | 0x01 => return None,
                _ if pos + 4 > data.len() => return None,
                _ => {}
            }
            let len = u16::from_be_bytes([data[pos + 2], data[pos + 3]]) as usize;
            let segment_end = pos + 2 + len;
            if len < 2 || segment_end > data.len() {
                return None;
            }
            let payload = &data[pos + 4..segment_end];
            match marker {
                0xDB => {
                    let base = out.len() + 4;
                    let mut at = 0;
                    while at < payload.len() {
                        let entry = if payload[at] >> 4 != 0 { 2 } else { 1 };
                        if at + 1 + 64 * entry > payload.len() {
                            return None;
                        }
                        q01_entries.push((payload[at] & 0x0F, base + at + 1 + entry, entry));
                        at += 1 + 64 * entry;
                    }
                }
                0xC2 => {
                    let n = *payload.get(5)? as usize;
                    for c in payload.get(6..6 + 3 * n)?.chunks_exact(3) {
                        components.push((c[0], c[1] >> 4, c[1] & 0x0F, c[2]));
                    }
                }
                _ => {}
            }
            if marker != 0xDA {
                out.extend_from_slice(&data[pos..segment_end]);
                pos = segment_end;
                continue;
            }
            // SOS: Ns, Ns × (id, tables), Ss, Se, AhAl. AC scans have exactly one component.
            let ns = *payload.first()? as usize;
            let ss = *payload.get(1 + 2 * ns)?;
            let scan_end = entropy_data_end(data, segment_end);
            let drop = ss > 0 && ns == 1 && is_full_resolution(&components, payload[1]);
            if drop {
                dropped_any = true;
            } else {
                out.extend_from_slice(&data[pos..scan_end]);
            }
            pos = scan_end;
        }
        out.extend_from_slice(&[0xFF, 0xD9]);
        if !dropped_any {
            return None;
        }
        // libjpeg "smooths" progressive images whose AC coefficients are missing, guessing them
        // (and, since libjpeg-turbo 2.1, the DC too) from neighbouring blocks: right for a
        // half-loaded web image, wrong here, where AC scans were dropped on purpose. It skips
        // smoothing when a low AC quantiser is 0, so zero Q01 of the tables that only
        // full-resolution components use: their AC coefficients are all zero now anyway.
        let full_res_only = |table: u8| {
            let users: Vec<_> = components.iter().filter(|c| c.3 == table).collect();
            !users.is_empty() && users.iter().all(|c| is_full_resolution(&components, c.0))
        };
        let mut zeroed = false;
        for &(table, at, entry) in &q01_entries {
            if full_res_only(table) {
                out[at..at + entry].fill(0);
                zeroed = true;
            }
        }
        zeroed.then_some(out)
    }

    fn is_full_resolution(components: &[(u8, u8, u8, u8)], id: u8) -> bool {
        let max_h = components.iter().map(|c| c.1).max().unwrap_or(0);
        let max_v = components.iter().map(|c| c.2).max().unwrap_or(0);
        components
            .iter()
            .any(|c| c.0 == id && c.1 == max_h && c.2 == max_v)
    }

    /// Entropy-coded data ends at the first marker that is neither a stuffed 0xFF00 nor a
    /// restart marker.
    fn entropy_data_end(data: &[u8], mut pos: usize) -> usize {
        while pos + 1 < data.len() {
            if data[pos] == 0xFF {
                let next = data[pos + 1];
                if next != 0x00 && !(0xD0..=0xD7).contains(&next) && next != 0xFF {
                    return pos;
                }
            }
            pos += 1;
        }
        data.len()
    }

    /// Adobe writes CMYK inverted (0 = full ink); others write it plain. No colour management:
    /// CMYK uploads are rare and this keeps them recognisable.
    fn cmyk_to_rgb(cmyk: &[u8], inverted: bool) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
        for px in cmyk.chunks_exact(4) {
            let [c, m, y, k] = if inverted {
                [px[0], px[1], px[2], px[3]]
            } else {
                [255 - px[0], 255 - px[1], 255 - px[2], 255 - px[3]]
            };
            let mul = |a: u8| ((a as u16 * k as u16 + 127) / 255) as u8;
            rgb.extend_from_slice(&[mul(c), mul(m), mul(y)]);
        }
        rgb
    }
}

mod webp {
    use super::*;
    use libwebp_sys as sys;

    pub fn probe(data: &[u8]) -> Result<(Probe, bool, bool)> {
        let mut features = std::mem::MaybeUninit::<sys::WebPBitstreamFeatures>::zeroed();
        // SAFETY: WebPGetFeatures reads at most `data.len()` bytes and fills `features`.
        let status =
            unsafe { sys::WebPGetFeatures(data.as_ptr(), data.len(), features.as_mut_ptr()) };
        if status != sys::VP8StatusCode::VP8_STATUS_OK {
            return Err(Error::corrupt(format!(
                "WebP: unreadable header ({status:?})"
            )));
        }
        // SAFETY: initialised by the successful call above.
        let features = unsafe { features.assume_init() };
        let frames = metadata::riff_chunks(data)
            .iter()
            .filter(|(fourcc, _)| fourcc == b"ANMF")
            .count()
            .max(1) as u32;
        let probe = Probe {
            width: features.width as u32,
            height: features.height as u32,
            frames,
        };
        Ok((probe, features.has_alpha != 0, features.has_animation != 0))
    }

    pub fn decode(data: &[u8], min_scale: MinScale, limits: &Limits) -> Result<Decoded> {
        let (probe, has_alpha, animated) = probe(data)?;
        check_limits(&probe, limits)?;
        let meta = metadata::webp_metadata(data);
        if animated {
            return decode_first_frame(data, probe, meta);
        }
        let scale = min_scale(probe.width, probe.height, meta.orientation).clamp(0.0, 1.0);
        // libwebp scales while converting colour: far less work and memory than full size.
        let sw = ((probe.width as f64 * scale).ceil() as u32).clamp(1, probe.width);
        let sh = ((probe.height as f64 * scale).ceil() as u32).clamp(1, probe.height);
        let channels: u8 = if has_alpha { 4 } else { 3 };
        let mut pixels = vec![0u8; sw as usize * sh as usize * channels as usize];

        let mut config = sys::WebPDecoderConfig::new()
            .map_err(|_| Error::io("WebP: decoder version mismatch"))?;
        config.options.use_threads = 0;
        if (sw, sh) != (probe.width, probe.height) {
            config.options.use_scaling = 1;
            config.options.scaled_width = sw as i32;
            config.options.scaled_height = sh as i32;
        }
        config.output.colorspace = if has_alpha {
            sys::WEBP_CSP_MODE::MODE_RGBA
        } else {
            sys::WEBP_CSP_MODE::MODE_RGB
        };
        config.output.is_external_memory = 1;
        config.output.u.RGBA = sys::WebPRGBABuffer {
            rgba: pixels.as_mut_ptr(),
            stride: (sw * channels as u32) as i32,
            size: pixels.len(),
        };
        // SAFETY: the output points into `pixels`, which outlives the call and has exactly
        // `size` bytes; libwebp writes only within stride × height.
        let status = unsafe { sys::WebPDecode(data.as_ptr(), data.len(), &mut config) };
        unsafe { sys::WebPFreeDecBuffer(&mut config.output) };
        if status != sys::VP8StatusCode::VP8_STATUS_OK {
            return Err(Error::corrupt(format!("WebP: cannot decode ({status:?})")));
        }
        Ok(Decoded {
            pixels: pixels.into(),
            width: sw,
            height: sh,
            channels,
            source_width: probe.width,
            source_height: probe.height,
            meta,
        })
    }

    /// Animated WebP: the first frame, composited on the canvas, like GIFs.
    fn decode_first_frame(data: &[u8], probe: Probe, meta: SourceMetadata) -> Result<Decoded> {
        let webp_data = sys::WebPData {
            bytes: data.as_ptr(),
            size: data.len(),
        };
        let mut options = std::mem::MaybeUninit::<sys::WebPAnimDecoderOptions>::zeroed();
        // SAFETY: the options struct is initialised by the library before use; the decoder
        // borrows `data` only for its lifetime, which ends in this function.
        unsafe {
            if sys::WebPAnimDecoderOptionsInit(options.as_mut_ptr()) == 0 {
                return Err(Error::io("WebP: anim decoder version mismatch"));
            }
            let mut options = options.assume_init();
            options.color_mode = sys::WEBP_CSP_MODE::MODE_RGBA;
            options.use_threads = 0;
            let dec = sys::WebPAnimDecoderNew(&webp_data, &options);
            if dec.is_null() {
                return Err(Error::corrupt("WebP: cannot read the animation"));
            }
            let mut buf: *mut u8 = std::ptr::null_mut();
            let mut timestamp = 0;
            let ok = sys::WebPAnimDecoderGetNext(dec, &mut buf, &mut timestamp);
            let len = probe.width as usize * probe.height as usize * 4;
            let pixels =
                (ok != 0 && !buf.is_null()).then(|| std::slice::from_raw_parts(buf, len).to_vec());
            sys::WebPAnimDecoderDelete(dec);
            let pixels =
                pixels.ok_or_else(|| Error::corrupt("WebP: cannot decode the first frame"))?;
            Ok(Decoded {
                pixels: pixels.into(),
                width: probe.width,
                height: probe.height,
                channels: 4,
                source_width: probe.width,
                source_height: probe.height,
                meta,
            })
        }
    }
}

mod heif {
    use super::*;
    use libheif_rs::{ColorSpace, HeifContext, LibHeif, RgbChroma, SecurityLimits};

    fn corrupt(e: libheif_rs::HeifError) -> Error {
        Error::corrupt(format!("HEIF: {}", e.message))
    }

    pub fn decode(data: &[u8], limits: &Limits) -> Result<Decoded> {
        let lib = LibHeif::new();
        let mut ctx = HeifContext::new().map_err(corrupt)?;
        let mut security = SecurityLimits::new();
        security.set_max_image_size_pixels(limits.max_pixels);
        ctx.set_security_limits(&security).map_err(corrupt)?;
        // One job, one core: the worker runs jobs in parallel, not tiles.
        ctx.set_max_decoding_threads(0);
        ctx.read_bytes(data).map_err(|e| match e.sub_code {
            _ if e.message.contains("limit") || e.message.contains("exceeds") => {
                Error::too_large(format!("HEIF: {}", e.message))
            }
            _ => corrupt(e),
        })?;
        let handle = ctx.primary_image_handle().map_err(corrupt)?;
        // The handle's size already includes irot/imir/clap.
        let (w, h) = (handle.width(), handle.height());
        check_limits(
            &Probe {
                width: w,
                height: h,
                frames: 1,
            },
            limits,
        )?;
        let has_alpha = handle.has_alpha_channel();
        let chroma = if has_alpha {
            RgbChroma::Rgba
        } else {
            RgbChroma::Rgb
        };
        let image = lib
            .decode(&handle, ColorSpace::Rgb(chroma), None)
            .map_err(corrupt)?;
        let plane = image
            .planes()
            .interleaved
            .ok_or_else(|| Error::corrupt("HEIF: decoder returned no interleaved plane"))?;
        let channels: u8 = if has_alpha { 4 } else { 3 };
        let (width, height) = (plane.width, plane.height);
        let row = width as usize * channels as usize;
        // libheif pads rows to its alignment; most widths need none, and then its frame is
        // used in place.
        let pixels = if plane.stride == row {
            PixelData::Heif {
                len: row * height as usize,
                image,
            }
        } else {
            let mut pixels = Vec::with_capacity(row * height as usize);
            for y in 0..height as usize {
                pixels.extend_from_slice(&plane.data[y * plane.stride..y * plane.stride + row]);
            }
            pixels.into()
        };
        let mut meta = SourceMetadata {
            icc: handle
                .color_profile_raw()
                .map(|p| p.data)
                .filter(|d| !d.is_empty()),
            ..Default::default()
        };
        // HEIF's EXIF item starts with a 4-byte offset to the TIFF header. Its orientation
        // is informational only: irot/imir were applied by the decoder.
        for block in handle.all_metadata() {
            if block.item_type.to_string() == "Exif" && block.raw_data.len() > 4 {
                let skip =
                    u32::from_be_bytes(block.raw_data[..4].try_into().unwrap_or_default()) as usize;
                if let Some(tiff) = block.raw_data.get(4 + skip..) {
                    meta.exif = Some(tiff.to_vec());
                }
            } else if block.content_type.contains("rdf+xml") {
                meta.xmp = Some(block.raw_data.clone());
            }
        }
        meta.orientation = Orientation::Normal;
        Ok(Decoded {
            pixels,
            width,
            height,
            channels,
            source_width: w,
            source_height: h,
            meta,
        })
    }
}

mod generic {
    use super::*;
    use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

    fn corrupt(format: SourceFormat, e: image::ImageError) -> Error {
        match e {
            image::ImageError::Limits(l) => Error::too_large(format!("{}: {l}", format.as_str())),
            image::ImageError::Unsupported(u) => {
                Error::unsupported(format!("{}: {u}", format.as_str()))
            }
            e => Error::corrupt(format!("{}: {e}", format.as_str())),
        }
    }

    pub fn probe(data: &[u8], format: SourceFormat) -> Result<Probe> {
        let (w, h) = match format {
            SourceFormat::Png => png_size(data)?,
            _ => {
                let decoder = reader(data, format, &Limits::default())?
                    .into_decoder()
                    .map_err(|e| corrupt(format, e))?;
                decoder.dimensions()
            }
        };
        let frames = match format {
            SourceFormat::Gif => gif_frames(data),
            SourceFormat::Png => apng_frames(data),
            _ => 1,
        };
        Ok(Probe {
            width: w,
            height: h,
            frames,
        })
    }

    fn reader<'a>(
        data: &'a [u8],
        format: SourceFormat,
        limits: &Limits,
    ) -> Result<ImageReader<Cursor<&'a [u8]>>> {
        let image_format = match format {
            SourceFormat::Png => ImageFormat::Png,
            SourceFormat::Gif => ImageFormat::Gif,
            SourceFormat::Tiff => ImageFormat::Tiff,
            SourceFormat::Bmp => ImageFormat::Bmp,
            other => {
                return Err(Error::unsupported(format!(
                    "{} is not decoded here",
                    other.as_str()
                )))
            }
        };
        let mut reader = ImageReader::with_format(Cursor::new(data), image_format);
        let mut image_limits = image::Limits::default();
        // RGBA8 of the largest allowed image, plus room for the decoder's own buffers.
        image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8));
        reader.limits(image_limits);
        Ok(reader)
    }

    pub fn decode(data: &[u8], format: SourceFormat, limits: &Limits) -> Result<Decoded> {
        let probe = probe(data, format)?;
        check_limits(&probe, limits)?;
        let mut decoder = reader(data, format, limits)?
            .into_decoder()
            .map_err(|e| corrupt(format, e))?;
        let mut meta = SourceMetadata {
            icc: decoder.icc_profile().ok().flatten(),
            exif: decoder.exif_metadata().ok().flatten(),
            ..Default::default()
        };
        meta.orientation = decoder
            .orientation()
            .ok()
            .and_then(|o| Orientation::from_exif(o.to_exif() as u16))
            .unwrap_or_default();
        let has_alpha = decoder.color_type().has_alpha();
        let image = DynamicImage::from_decoder(decoder).map_err(|e| corrupt(format, e))?;
        let (width, height) = (image.width(), image.height());
        let (pixels, channels) = if has_alpha {
            (image.into_rgba8().into_raw(), 4)
        } else {
            (image.into_rgb8().into_raw(), 3)
        };
        Ok(Decoded {
            pixels: pixels.into(),
            width,
            height,
            channels,
            source_width: width,
            source_height: height,
            meta,
        })
    }

    /// IHDR is always the first chunk; read it directly so a hostile size never reaches a
    /// decoder.
    fn png_size(data: &[u8]) -> Result<(u32, u32)> {
        if data.len() < 24 || &data[12..16] != b"IHDR" {
            return Err(Error::corrupt("png: missing IHDR"));
        }
        let w = u32::from_be_bytes([data[16], data[17], data[18], data[19]]);
        let h = u32::from_be_bytes([data[20], data[21], data[22], data[23]]);
        Ok((w, h))
    }

    /// APNG's acTL chunk states the frame count; only chunks before IDAT matter.
    fn apng_frames(data: &[u8]) -> u32 {
        let mut pos = 8;
        while pos + 12 <= data.len() {
            let len = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]])
                as usize;
            let kind = &data[pos + 4..pos + 8];
            if kind == b"acTL" && pos + 12 <= data.len() {
                return u32::from_be_bytes([
                    data[pos + 8],
                    data[pos + 9],
                    data[pos + 10],
                    data[pos + 11],
                ]);
            }
            if kind == b"IDAT" {
                break;
            }
            pos = pos.saturating_add(12).saturating_add(len);
        }
        1
    }

    /// Counts image descriptors by skipping sub-blocks, without decompressing anything.
    fn gif_frames(data: &[u8]) -> u32 {
        let mut frames = 0u32;
        if data.len() < 13 {
            return 0;
        }
        let flags = data[10];
        let mut pos = 13;
        if flags & 0x80 != 0 {
            pos += 3 * (1usize << ((flags & 0x07) + 1));
        }
        let skip_sub_blocks = |mut pos: usize| -> usize {
            while pos < data.len() {
                let len = data[pos] as usize;
                pos += 1 + len;
                if len == 0 {
                    break;
                }
            }
            pos
        };
        while pos < data.len() {
            match data[pos] {
                0x2C => {
                    frames += 1;
                    if pos + 10 > data.len() {
                        break;
                    }
                    let local = data[pos + 9];
                    pos += 10;
                    if local & 0x80 != 0 {
                        pos += 3 * (1usize << ((local & 0x07) + 1));
                    }
                    pos = skip_sub_blocks(pos + 1); // LZW minimum code size, then data
                }
                0x21 => pos = skip_sub_blocks(pos + 2),
                _ => break, // trailer or garbage
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_at_one_eighth(bytes: &[u8]) -> Vec<u8> {
        let eighth = turbojpeg::ScalingFactor::ONE_EIGHTH;
        let mut d = turbojpeg::Decompressor::new().unwrap();
        d.set_scaling_factor(eighth).unwrap();
        let h = d.read_header(bytes).unwrap().scaled(eighth);
        let mut img = turbojpeg::Image {
            pixels: vec![0u8; h.width * h.height * 3],
            width: h.width,
            pitch: h.width * 3,
            height: h.height,
            format: turbojpeg::PixelFormat::RGB,
        };
        d.decompress(bytes, img.as_deref_mut()).unwrap();
        img.pixels
    }

    #[test]
    fn dc_only_decode_of_a_progressive_jpeg_is_pixel_identical_at_one_eighth() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let corpus = std::env::var_os("RESIZEQ_CORPUS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join("../shared/corpus"));
        let mut files = vec![root.join("tests/fixtures/progressive.jpg")];
        // 4:4:4 and 4:2:0 progressive photos, when the corpus is here.
        for name in [
            "jpg03_infinite-sea.jpg",
            "jpg05_seeding.jpg",
            "jpg13_volna.jpg",
            "small01_greenmeadow.jpg",
        ] {
            if corpus.join(name).is_file() {
                files.push(corpus.join(name));
            }
        }
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let stripped = jpeg::progressive_dc_scans(&data).expect("parses");
            assert!(
                stripped.len() < data.len(),
                "{}: AC scans removed",
                file.display()
            );
            assert!(
                decode_at_one_eighth(&stripped) == decode_at_one_eighth(&data),
                "{}: same pixels",
                file.display()
            );
        }
    }
}
