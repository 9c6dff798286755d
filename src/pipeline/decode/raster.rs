use std::io::Cursor;

use super::{Decoded, Dimensions};
use crate::error::{Error, Result};
use crate::pipeline::colour::{PixelModel, MAX_ICC_BYTES};
use crate::pipeline::metadata::SourceMetadata;
use crate::pipeline::orient::Orientation;
use crate::pipeline::settings::Limits;
use crate::pipeline::sniff::SourceFormat;
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

pub fn probe(data: &[u8], format: SourceFormat) -> Result<Dimensions> {
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
    Ok(Dimensions {
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

/// Decodes a source whose probed size passed the limits.
pub fn decode(data: &[u8], format: SourceFormat, limits: &Limits) -> Result<Decoded> {
    // The png crate inflates iCCP whole, up to the image's whole allocation limit (a 104 KB
    // chunk can hold 100 MB): read the profile ourselves, bounded, and hide the chunk.
    let without_iccp;
    let (data, png_icc) = match png_iccp(data).filter(|_| format == SourceFormat::Png) {
        Some((chunk, icc)) => {
            without_iccp = [&data[..chunk.start], &data[chunk.end..]].concat();
            (&without_iccp[..], Some(icc))
        }
        None => (data, None),
    };
    let mut decoder = reader(data, format, limits)?
        .into_decoder()
        .map_err(|e| corrupt(format, e))?;
    let icc = match png_icc {
        Some(icc) => icc,
        None => decoder.icc_profile().ok().flatten(),
    };
    use image::ColorType;
    let model = match decoder.color_type() {
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16 => PixelModel::Gray,
        _ => PixelModel::Rgb,
    };
    let mut meta = SourceMetadata {
        icc,
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
        model,
        source_width: width,
        source_height: height,
        meta,
    })
}

/// The byte range of a PNG's iCCP chunk (before IDAT) and its profile, inflated to at most
/// [`MAX_ICC_BYTES`] (`None` past that, or if the stream is broken: no profile).
fn png_iccp(data: &[u8]) -> Option<(std::ops::Range<usize>, Option<Vec<u8>>)> {
    let mut pos = 8;
    while pos + 12 <= data.len() {
        let len =
            u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let kind = &data[pos + 4..pos + 8];
        let end = pos.saturating_add(12).saturating_add(len);
        if kind == b"IDAT" || end > data.len() {
            return None;
        }
        if kind == b"iCCP" {
            let payload = &data[pos + 8..pos + 8 + len];
            // Profile name, NUL, compression method (0), then the zlib stream.
            let stream = payload
                .iter()
                .position(|&b| b == 0)
                .and_then(|nul| payload.get(nul + 2..));
            let icc = stream.and_then(|s| {
                fdeflate::decompress_to_vec_bounded(s, MAX_ICC_BYTES)
                    .map_err(|e| {
                        tracing::warn!(
                            "PNG iCCP profile not read ({}): ignored",
                            match e {
                                fdeflate::BoundedDecompressionError::OutputTooLarge { .. } =>
                                    format!("inflates past {MAX_ICC_BYTES} bytes"),
                                _ => "corrupt zlib stream".to_string(),
                            }
                        )
                    })
                    .ok()
            });
            return Some((pos..end, icc));
        }
        pos = end;
    }
    None
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
        let len =
            u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
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
