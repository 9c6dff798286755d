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

fn webp(px: &Pixels, quality: u8, meta: &OutputMetadata) -> Result<Vec<u8>> {
    use libwebp_sys as sys;
    let mut output: *mut u8 = std::ptr::null_mut();
    let stride = (px.width * px.channels as u32) as i32;
    // SAFETY: `px.data` holds stride × height bytes; libwebp allocates `output`, freed below.
    let len = unsafe {
        if px.channels == 4 {
            sys::WebPEncodeRGBA(
                px.data.as_ptr(),
                px.width as i32,
                px.height as i32,
                stride,
                quality as f32,
                &mut output,
            )
        } else {
            sys::WebPEncodeRGB(
                px.data.as_ptr(),
                px.width as i32,
                px.height as i32,
                stride,
                quality as f32,
                &mut output,
            )
        }
    };
    if len == 0 || output.is_null() {
        return Err(Error::encode("WebP: encoder failed"));
    }
    // SAFETY: libwebp returned `len` bytes at `output`.
    let encoded = unsafe { std::slice::from_raw_parts(output, len) }.to_vec();
    unsafe { sys::WebPFree(output.cast()) };
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
