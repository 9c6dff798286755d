use super::{check_limits, Decoded, Dimensions};
use crate::error::{Error, Result};
use crate::pipeline::colour::{self, PixelModel};
use crate::pipeline::metadata::SourceMetadata;
use crate::pipeline::orient::Orientation;
use crate::pipeline::resize::PixelData;
use crate::pipeline::settings::Limits;
use libheif_rs::{ColorPrimaries, ColorSpace, HeifContext, LibHeif, RgbChroma, SecurityLimits};

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
        &Dimensions {
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
    let icc = handle
        .color_profile_raw()
        .map(|p| p.data)
        .filter(|d| !d.is_empty())
        .or_else(|| {
            // No ICC: the nclx box's primaries and transfer say what the RGB means.
            let nclx = handle.color_profile_nclx()?;
            if matches!(
                nclx.color_primaries(),
                ColorPrimaries::Unspecified | ColorPrimaries::Unknown
            ) {
                return None;
            }
            let xy = |x: f32, y: f32| (x as f64, y as f64);
            let primaries = colour::Primaries {
                red: xy(nclx.color_primary_red_x(), nclx.color_primary_red_y()),
                green: xy(nclx.color_primary_green_x(), nclx.color_primary_green_y()),
                blue: xy(nclx.color_primary_blue_x(), nclx.color_primary_blue_y()),
                white: xy(nclx.color_primary_white_x(), nclx.color_primary_white_y()),
            };
            colour::profile_from_nclx(primaries, nclx.transfer_characteristics() as u32)
        });
    let mut meta = SourceMetadata {
        icc,
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
        model: PixelModel::Rgb,
        source_width: w,
        source_height: h,
        meta,
    })
}
