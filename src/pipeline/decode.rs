//! Decoders: bytes in, 8-bit RGB or RGBA pixels out, shrunk on load where the codec can.
//!
//! Every decoder first reads only the header and checks the limits, so a file that claims
//! 100 000 × 100 000 pixels is refused before a byte of pixel memory is allocated.

use std::io::Cursor;

use super::metadata::{self, SourceMetadata};
use super::orient::Orientation;
use super::settings::Limits;
use super::sniff::SourceFormat;
use crate::error::{Error, Result};

/// Decoded pixels in stored orientation (`meta.orientation` still to apply).
#[derive(Debug)]
pub struct Decoded {
    pub pixels: Vec<u8>,
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

        // DCT-domain scaling: the smallest n/8 that still gives the resizer enough pixels.
        let factor = (1..=8)
            .map(|n| ScalingFactor::new(n, 8))
            .find(|f| f.num() as f64 / 8.0 >= min_scale - 1e-9)
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
        d.decompress(data, image.as_deref_mut()).map_err(corrupt)?;
        let pixels = if cmyk {
            cmyk_to_rgb(&image.pixels, adobe)
        } else {
            image.pixels
        };
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
            pixels,
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
                pixels,
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
        let row = plane.width as usize * channels as usize;
        let mut pixels = Vec::with_capacity(row * plane.height as usize);
        for y in 0..plane.height as usize {
            pixels.extend_from_slice(&plane.data[y * plane.stride..y * plane.stride + row]);
        }
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
            width: plane.width,
            height: plane.height,
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
            pixels,
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
