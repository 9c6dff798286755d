//! Encoders, and embedding the output metadata each format can carry.

use super::metadata::{self, OutputMetadata};
use super::resize::Pixels;
use super::settings::{AvifSettings, OutputFormat};
use crate::error::{Error, Result};

/// Progressive scans do not pay at thumbnail sizes: over 8 corpus photos at 500 px, q80,
/// 0.7 % fewer bytes (178 559 vs 179 879) for ~10 % more encode time (+1.5 ms per image).
/// Nor does mozjpeg (`scripts/bench --jpeg-encoders`): at libjpeg-turbo q80's SSIM its trellis
/// quantisation saves 3–6 % of the bytes for 4–7× the encode time.
const PROGRESSIVE_JPEG: bool = false;

pub fn encode(
    px: &Pixels,
    format: OutputFormat,
    quality: u8,
    avif_settings: &AvifSettings,
    meta: &OutputMetadata,
) -> Result<Vec<u8>> {
    match format {
        OutputFormat::Jpeg => jpeg(px, quality, meta),
        OutputFormat::Png => png(px, meta),
        OutputFormat::Webp => webp(px, quality, meta),
        OutputFormat::Avif => avif(px, quality, avif_settings, meta),
    }
}

fn jpeg(px: &Pixels, quality: u8, meta: &OutputMetadata) -> Result<Vec<u8>> {
    let err = |e: turbojpeg::Error| Error::encode(format!("JPEG: {e}"));
    let mut c = turbojpeg::Compressor::new().map_err(err)?;
    c.set_quality(quality as i32).map_err(err)?;
    // 4:2:0 like sharp and every camera below q90; optimised Huffman tables are ~10 % smaller
    // for well under a millisecond at thumbnail sizes.
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2).map_err(err)?;
    c.set_optimize(true).map_err(err)?;
    c.set_progressive(PROGRESSIVE_JPEG).map_err(err)?;
    let format = if px.channels == 4 {
        turbojpeg::PixelFormat::RGBA
    } else {
        turbojpeg::PixelFormat::RGB
    };
    let image = turbojpeg::Image {
        pixels: &px.data[..],
        width: px.width as usize,
        pitch: px.width as usize * px.channels as usize,
        height: px.height as usize,
        format,
    };
    let out = c.compress_to_vec(image).map_err(err)?;
    Ok(metadata::insert_jpeg_segments(
        out,
        &metadata::jpeg_metadata_segments(meta),
    ))
}

fn png(px: &Pixels, meta: &OutputMetadata) -> Result<Vec<u8>> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let mut out = Vec::new();
    let mut encoder =
        PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive);
    if let Some(icc) = &meta.icc {
        // A profile the encoder rejects is dropped rather than failing the variant.
        let _ = encoder.set_icc_profile(icc.clone());
    }
    if let Some(exif) = &meta.exif {
        // eXIf chunk. (XMP would need an iTXt chunk, which this encoder does not write.)
        let _ = encoder.set_exif_metadata(exif.clone());
    }
    let color = if px.channels == 4 {
        image::ExtendedColorType::Rgba8
    } else {
        image::ExtendedColorType::Rgb8
    };
    encoder
        .write_image(&px.data, px.width, px.height, color)
        .map_err(|e| Error::encode(format!("PNG: {e}")))?;
    Ok(out)
}

/// libwebp's loop-filter strength (0–100; its default is 60). For a still image the filter only
/// smooths the decoded blocks, so it costs no bytes and no encode time; at 100 the corpus's
/// 500 px WebPs at q83 score 0.0017 higher median SSIM against the Lanczos reference than at 60
/// (`scripts/bench --encoder-sweep`). libwebp's per-image `autofilter` finds a little more for
/// ~55 ms more per image.
const WEBP_FILTER_STRENGTH: i32 = 100;
/// libwebp's spatial noise shaping (0–100; default 50) moves bits from busy to flat areas. At
/// 25 the corpus's median and worst-file SSIM rise a little for 0.8 % more bytes.
const WEBP_SNS_STRENGTH: i32 = 25;

fn webp(px: &Pixels, quality: u8, meta: &OutputMetadata) -> Result<Vec<u8>> {
    use libwebp_sys as sys;
    let failed = |what: &str| Error::encode(format!("WebP: {what}"));
    let mut config = sys::WebPConfig::new_with_preset(sys::WebPPreset::WEBP_PRESET_DEFAULT, 75.0)
        .map_err(|()| failed("libwebp version mismatch"))?;
    config.quality = quality as f32;
    config.filter_strength = WEBP_FILTER_STRENGTH;
    config.sns_strength = WEBP_SNS_STRENGTH;
    let mut picture = sys::WebPPicture::new().map_err(|()| failed("libwebp version mismatch"))?;
    // Lossy: libwebp converts RGB straight to YUV 4:2:0 (as its one-call WebPEncodeRGB does).
    picture.use_argb = 0;
    picture.width = px.width as i32;
    picture.height = px.height as i32;
    let stride = (px.width * px.channels as u32) as i32;
    // SAFETY: `px.data` holds stride × height bytes; `picture` owns what libwebp allocates into
    // it (freed by WebPPictureFree) and `writer` the output (freed by WebPMemoryWriterClear);
    // `writer` stays in place while `picture.custom_ptr` points at it.
    let encoded = unsafe {
        let mut writer: sys::WebPMemoryWriter = std::mem::zeroed();
        sys::WebPMemoryWriterInit(&mut writer);
        picture.writer = Some(sys::WebPMemoryWrite);
        picture.custom_ptr = (&mut writer as *mut sys::WebPMemoryWriter).cast();
        let imported = if px.channels == 4 {
            sys::WebPPictureImportRGBA(&mut picture, px.data.as_ptr(), stride)
        } else {
            sys::WebPPictureImportRGB(&mut picture, px.data.as_ptr(), stride)
        };
        let ok = imported != 0 && sys::WebPEncode(&config, &mut picture) != 0;
        let error = picture.error_code;
        sys::WebPPictureFree(&mut picture);
        let result = if !ok {
            Err(failed(&format!("encoder failed ({error:?})")))
        } else if writer.mem.is_null() || writer.size == 0 {
            Err(failed("the encoder wrote nothing"))
        } else {
            Ok(std::slice::from_raw_parts(writer.mem, writer.size).to_vec())
        };
        sys::WebPMemoryWriterClear(&mut writer);
        result?
    };
    if meta.icc.is_none() && meta.exif.is_none() && meta.xmp.is_none() {
        return Ok(encoded);
    }
    Ok(webp_with_metadata(&encoded, px, meta))
}

/// Rebuilds a simple WebP as an extended (VP8X) one carrying ICCP, EXIF and XMP chunks.
fn webp_with_metadata(encoded: &[u8], px: &Pixels, meta: &OutputMetadata) -> Vec<u8> {
    let chunks = metadata::riff_chunks(encoded);
    let has_alpha = chunks.iter().any(|(c, _)| c == b"ALPH") || px.channels == 4;
    let mut flags = 0u8;
    if meta.icc.is_some() {
        flags |= 0x20;
    }
    if has_alpha {
        flags |= 0x10;
    }
    if meta.exif.is_some() {
        flags |= 0x08;
    }
    if meta.xmp.is_some() {
        flags |= 0x04;
    }
    let mut body = Vec::new();
    let mut chunk = |fourcc: &[u8; 4], payload: &[u8]| {
        body.extend_from_slice(fourcc);
        body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        body.extend_from_slice(payload);
        if payload.len() % 2 == 1 {
            body.push(0);
        }
    };
    let mut vp8x = vec![flags, 0, 0, 0];
    vp8x.extend_from_slice(&(px.width - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(px.height - 1).to_le_bytes()[..3]);
    chunk(b"VP8X", &vp8x);
    if let Some(icc) = &meta.icc {
        chunk(b"ICCP", icc);
    }
    for (fourcc, payload) in chunks.iter().filter(|(c, _)| c != b"VP8X") {
        chunk(fourcc, payload);
    }
    if let Some(exif) = &meta.exif {
        chunk(b"EXIF", exif);
    }
    if let Some(xmp) = &meta.xmp {
        chunk(b"XMP ", xmp);
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((body.len() + 4) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    out
}

/// AVIF through libheif and the AV1 encoder `settings.encoder` (the highest-priority one
/// built in when that one is not).
pub fn avif(
    px: &Pixels,
    quality: u8,
    settings: &AvifSettings,
    meta: &OutputMetadata,
) -> Result<Vec<u8>> {
    use libheif_rs::{
        color_profile_types, Channel, ColorProfileRaw, ColorSpace, CompressionFormat,
        EncoderParameterValue, EncoderQuality, HeifContext, Image, LibHeif, RgbChroma,
    };
    let err = |e: libheif_rs::HeifError| Error::encode(format!("AVIF: {}", e.message));
    let lib = LibHeif::new();
    let chroma = if px.channels == 4 {
        RgbChroma::Rgba
    } else {
        RgbChroma::Rgb
    };
    let mut image = Image::new(px.width, px.height, ColorSpace::Rgb(chroma)).map_err(err)?;
    image
        .create_plane(Channel::Interleaved, px.width, px.height, 8)
        .map_err(err)?;
    {
        let plane = image
            .planes_mut()
            .interleaved
            .ok_or_else(|| Error::encode("AVIF: no interleaved plane"))?;
        let row = px.width as usize * px.channels as usize;
        for (y, src) in px.data.chunks_exact(row).enumerate() {
            plane.data[y * plane.stride..y * plane.stride + row].copy_from_slice(src);
        }
    }
    if let Some(icc) = &meta.icc {
        let profile = ColorProfileRaw::new(color_profile_types::PROF, icc.clone());
        image.set_color_profile_raw(&profile).map_err(err)?;
    }
    // Filtered here by id: libheif-rs 3.0's name filter passes libheif a dangling pointer (its
    // CString is dropped inside the `map` closure), so it never matches.
    let descriptor = lib
        .encoder_descriptors(16, Some(CompressionFormat::Av1), None)
        .into_iter()
        .find(|d| d.id() == settings.encoder);
    let mut encoder = match descriptor {
        Some(d) => lib.encoder(d),
        None => lib.encoder_for_format(CompressionFormat::Av1),
    }
    .map_err(|e| Error::io(format!("AVIF: no AV1 encoder built in: {}", e.message)))?;
    encoder
        .set_quality(EncoderQuality::Lossy(quality))
        .map_err(err)?;
    let set = |name: &str, value: EncoderParameterValue| {
        // Not every encoder has every parameter; a missing one keeps its default.
        if encoder.parameters_names().iter().any(|n| n == name) {
            encoder.set_parameter_value(name, value).map_err(err)
        } else {
            Ok(())
        }
    };
    set("speed", EncoderParameterValue::Int(settings.speed as i32))?;
    // One job, one core: the worker runs jobs in parallel.
    set("threads", EncoderParameterValue::Int(1))?;
    let mut ctx = HeifContext::new().map_err(err)?;
    let handle = ctx.encode_image(&image, &mut encoder, None).map_err(err)?;
    if let Some(exif) = &meta.exif {
        // libheif finds the TIFF header and writes the item's offset prefix itself.
        ctx.add_exif_metadata(&handle, exif).map_err(err)?;
    }
    if let Some(xmp) = &meta.xmp {
        ctx.add_xmp_metadata(&handle, xmp).map_err(err)?;
    }
    ctx.write_to_bytes().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6386's boolean decoder, enough to read a VP8 key frame's header.
    struct BoolDecoder<'a> {
        data: &'a [u8],
        pos: usize,
        value: u32,
        range: u32,
        bits: i32,
    }

    impl<'a> BoolDecoder<'a> {
        fn new(data: &'a [u8]) -> Self {
            let mut d = BoolDecoder {
                data,
                pos: 0,
                value: 0,
                range: 255,
                bits: 0,
            };
            d.value = (d.byte() << 8) | d.byte();
            d
        }
        fn byte(&mut self) -> u32 {
            let b = self.data.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
            b as u32
        }
        fn bit(&mut self, probability: u32) -> bool {
            let split = 1 + (((self.range - 1) * probability) >> 8);
            let big_split = split << 8;
            let one = self.value >= big_split;
            if one {
                self.range -= split;
                self.value -= big_split;
            } else {
                self.range = split;
            }
            while self.range < 128 {
                self.value <<= 1;
                self.range <<= 1;
                self.bits += 1;
                if self.bits == 8 {
                    self.bits = 0;
                    self.value |= self.byte();
                }
            }
            one
        }
        fn literal(&mut self, n: u32) -> i32 {
            (0..n).fold(0, |v, _| (v << 1) | self.bit(128) as i32)
        }
        fn signed(&mut self, n: u32) -> i32 {
            let v = self.literal(n);
            if self.bit(128) {
                -v
            } else {
                v
            }
        }
    }

    /// The loop-filter levels a lossy WebP's decoder applies: the frame's, and each segment's
    /// when segmentation sets them.
    fn vp8_filter_levels(webp: &[u8]) -> Vec<i32> {
        let chunks = metadata::riff_chunks(webp);
        let vp8 = &chunks
            .iter()
            .find(|(c, _)| c == b"VP8 ")
            .expect("lossy VP8 chunk")
            .1;
        assert_eq!(vp8[0] & 1, 0, "a key frame");
        assert_eq!(&vp8[3..6], &[0x9d, 0x01, 0x2a], "VP8 start code");
        let mut d = BoolDecoder::new(&vp8[10..]);
        d.literal(2); // colour space, clamping
        let mut segment_levels = Vec::new();
        let mut absolute = false;
        if d.bit(128) {
            let update_map = d.bit(128);
            if d.bit(128) {
                absolute = d.bit(128);
                for _ in 0..4 {
                    if d.bit(128) {
                        d.signed(7); // quantiser
                    }
                }
                for _ in 0..4 {
                    segment_levels.push(if d.bit(128) { d.signed(6) } else { 0 });
                }
            }
            if update_map {
                for _ in 0..3 {
                    if d.bit(128) {
                        d.literal(8);
                    }
                }
            }
        }
        d.bit(128); // filter type
        let level = d.literal(6);
        if segment_levels.is_empty() {
            vec![level]
        } else if absolute {
            segment_levels
        } else {
            segment_levels.iter().map(|delta| level + delta).collect()
        }
    }

    fn photo_like(width: u32, height: u32) -> Pixels {
        // Texture at several scales, so libwebp's segments get different quantisers.
        let mut data = Vec::with_capacity((width * height * 3) as usize);
        for y in 0..height {
            for x in 0..width {
                let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 27;
                let v = if x < width / 2 {
                    (x + y) % 256
                } else {
                    (x * y + n * 9) % 256
                };
                data.extend_from_slice(&[v as u8, (255 - v) as u8, (v / 2 + n * 4) as u8]);
            }
        }
        Pixels::new(data.into(), width, height, 3)
    }

    #[test]
    fn webp_deblocks_harder_than_libwebps_defaults() {
        let px = photo_like(256, 192);
        let ours = webp(&px, 83, &OutputMetadata::default()).unwrap();
        // libwebp's one-call encoder: filter strength 60, SNS 50.
        let mut out: *mut u8 = std::ptr::null_mut();
        // SAFETY: `px.data` holds width × 3 × height bytes; libwebp allocates `out`, freed below.
        let defaults = unsafe {
            let len =
                libwebp_sys::WebPEncodeRGB(px.data.as_ptr(), 256, 192, 256 * 3, 83.0, &mut out);
            assert!(
                len > 0 && !out.is_null(),
                "libwebp's one-call encoder failed"
            );
            let v = std::slice::from_raw_parts(out, len).to_vec();
            libwebp_sys::WebPFree(out.cast());
            v
        };
        let (ours, theirs) = (vp8_filter_levels(&ours), vp8_filter_levels(&defaults));
        assert_eq!(ours.len(), theirs.len(), "{ours:?} vs {theirs:?}");
        assert!(
            ours.iter().zip(&theirs).all(|(a, b)| a >= b)
                && ours.iter().sum::<i32>() > theirs.iter().sum::<i32>(),
            "filter levels {ours:?} should exceed libwebp's defaults {theirs:?}"
        );
    }
}
