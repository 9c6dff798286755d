//! Resampling with fast_image_resize (SIMD convolution, Lanczos3).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::geometry::Plan;
use crate::error::{Error, Result};

/// Interleaved 8-bit pixels.
#[derive(Debug, Clone)]
pub struct Pixels {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// 3 (RGB) or 4 (RGBA).
    pub channels: u8,
}

fn pixel_type(channels: u8) -> PixelType {
    if channels == 4 {
        PixelType::U8x4
    } else {
        PixelType::U8x3
    }
}

/// Resizes `src` (whose crop is given by `plan`, in `src` pixels) to the plan's size.
pub fn resize(resizer: &mut Resizer, src: &Pixels, plan: &Plan) -> Result<Pixels> {
    let pt = pixel_type(src.channels);
    let (l, t, w, h) = plan.crop;
    let is_identity = plan.width == src.width
        && plan.height == src.height
        && l == 0.0
        && t == 0.0
        && (w - src.width as f64).abs() < 1e-6
        && (h - src.height as f64).abs() < 1e-6;
    if is_identity {
        return Ok(src.clone());
    }
    let src_ref = ImageRef::new(src.width, src.height, &src.data, pt)
        .map_err(|e| Error::corrupt(format!("resize: {e}")))?;
    let mut dst = Image::new(plan.width, plan.height, pt);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .crop(l, t, w, h);
    resizer
        .resize(&src_ref, &mut dst, &options)
        .map_err(|e| Error::corrupt(format!("resize: {e}")))?;
    Ok(Pixels {
        data: dst.into_vec(),
        width: plan.width,
        height: plan.height,
        channels: src.channels,
    })
}

/// Composites RGBA onto an opaque background (for formats without alpha).
pub fn flatten(src: Pixels, background: [u8; 3]) -> Pixels {
    if src.channels != 4 {
        return src;
    }
    let mut data = Vec::with_capacity(src.data.len() / 4 * 3);
    for px in src.data.chunks_exact(4) {
        let a = px[3] as u32;
        for c in 0..3 {
            let v = (px[c] as u32 * a + background[c] as u32 * (255 - a) + 127) / 255;
            data.push(v as u8);
        }
    }
    Pixels {
        data,
        width: src.width,
        height: src.height,
        channels: 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_blends_onto_the_background() {
        let px = Pixels {
            data: vec![255, 0, 0, 0, 255, 0, 0, 255, 0, 0, 0, 128],
            width: 3,
            height: 1,
            channels: 4,
        };
        let out = flatten(px, [0, 0, 255]);
        assert_eq!(out.channels, 3);
        assert_eq!(
            &out.data[0..3],
            &[0, 0, 255],
            "transparent shows the background"
        );
        assert_eq!(&out.data[3..6], &[255, 0, 0], "opaque keeps its colour");
        assert_eq!(
            &out.data[6..9],
            &[0, 0, 127],
            "half-transparent black over blue is half blue"
        );
    }
}
