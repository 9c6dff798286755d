//! Resampling with fast_image_resize (SIMD convolution, Lanczos3).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, MulDiv, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::geometry::Plan;
use crate::error::{Error, Result};

/// Pixel bytes: our own, or a decoder's frame used in place (a 12 MP HEIC frame is 36 MB;
/// copying it would double the peak memory of the job).
pub enum PixelData {
    Owned(Vec<u8>),
    Heif {
        image: libheif_rs::Image,
        len: usize,
    },
}

impl std::ops::Deref for PixelData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            PixelData::Owned(v) => v,
            PixelData::Heif { image, len } => image
                .planes()
                .interleaved
                .map_or(&[][..], |plane| &plane.data[..*len]),
        }
    }
}

impl std::fmt::Debug for PixelData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PixelData({} bytes)", self.len())
    }
}

impl From<Vec<u8>> for PixelData {
    fn from(v: Vec<u8>) -> Self {
        PixelData::Owned(v)
    }
}

/// Interleaved 8-bit pixels, rows without padding.
#[derive(Debug)]
pub struct Pixels {
    pub data: PixelData,
    pub width: u32,
    pub height: u32,
    /// 3 (RGB) or 4 (RGBA).
    pub channels: u8,
    /// RGBA whose colour channels are already multiplied by alpha (see [`prepare_alpha`]).
    pub premultiplied: bool,
}

impl Pixels {
    #[cfg(test)]
    fn with_premultiplied(mut self) -> Self {
        self.premultiplied = true;
        self
    }

    pub fn new(data: PixelData, width: u32, height: u32, channels: u8) -> Pixels {
        Pixels {
            data,
            width,
            height,
            channels,
            premultiplied: false,
        }
    }
}

/// Readies RGBA for resizing, in place and once for all variants: an alpha channel that is
/// opaque everywhere is dropped (RGB resizes faster and needs no flattening), a real one is
/// premultiplied (so transparent pixels' hidden colour never bleeds into edges). Doing it in
/// place saves the full-size copy that the resizer would otherwise make.
pub fn prepare_alpha(px: &mut Pixels) -> Result<()> {
    if px.channels != 4 || px.premultiplied {
        return Ok(());
    }
    if let PixelData::Heif { .. } = px.data {
        px.data = PixelData::Owned(px.data.to_vec());
    }
    let PixelData::Owned(data) = &mut px.data else {
        unreachable!("made owned above")
    };
    if data.chunks_exact(4).all(|p| p[3] == 255) {
        let pixels = data.len() / 4;
        for i in 0..pixels {
            data.copy_within(i * 4..i * 4 + 3, i * 3);
        }
        data.truncate(pixels * 3);
        px.channels = 3;
        return Ok(());
    }
    let mut view = Image::from_slice_u8(px.width, px.height, data, PixelType::U8x4)
        .map_err(|e| Error::corrupt(format!("alpha: {e}")))?;
    MulDiv::default()
        .multiply_alpha_inplace(&mut view)
        .map_err(|e| Error::corrupt(format!("alpha: {e}")))?;
    px.premultiplied = true;
    Ok(())
}

/// Undoes [`prepare_alpha`]'s premultiplication on an output that keeps its alpha.
pub fn unpremultiply(mut px: Pixels) -> Result<Pixels> {
    if !px.premultiplied {
        return Ok(px);
    }
    if let PixelData::Owned(data) = &mut px.data {
        let mut view = Image::from_slice_u8(px.width, px.height, data, PixelType::U8x4)
            .map_err(|e| Error::corrupt(format!("alpha: {e}")))?;
        MulDiv::default()
            .divide_alpha_inplace(&mut view)
            .map_err(|e| Error::corrupt(format!("alpha: {e}")))?;
    }
    px.premultiplied = false;
    Ok(px)
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
        return Ok(Pixels {
            data: src.data.to_vec().into(),
            ..*src
        });
    }
    let src_ref = ImageRef::new(src.width, src.height, &src.data, pt)
        .map_err(|e| Error::corrupt(format!("resize: {e}")))?;
    let mut dst = Image::new(plan.width, plan.height, pt);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .crop(l, t, w, h)
        // Premultiplied (or opaque) already: see prepare_alpha.
        .use_alpha(false);
    resizer
        .resize(&src_ref, &mut dst, &options)
        .map_err(|e| Error::corrupt(format!("resize: {e}")))?;
    Ok(Pixels {
        data: dst.into_vec().into(),
        width: plan.width,
        height: plan.height,
        channels: src.channels,
        premultiplied: src.premultiplied,
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
            let colour = if src.premultiplied {
                px[c] as u32 * 255
            } else {
                px[c] as u32 * a
            };
            data.push(((colour + background[c] as u32 * (255 - a) + 127) / 255) as u8);
        }
    }
    Pixels::new(data.into(), src.width, src.height, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_blends_onto_the_background() {
        let px = Pixels::new(
            vec![255, 0, 0, 0, 255, 0, 0, 255, 0, 0, 0, 128].into(),
            3,
            1,
            4,
        );
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

    #[test]
    fn opaque_alpha_is_dropped_and_real_alpha_premultiplied_in_place() {
        let mut opaque = Pixels::new(vec![1, 2, 3, 255, 4, 5, 6, 255].into(), 2, 1, 4);
        prepare_alpha(&mut opaque).unwrap();
        assert_eq!(
            (opaque.channels, &opaque.data[..]),
            (3, &[1, 2, 3, 4, 5, 6][..])
        );

        let mut half = Pixels::new(vec![200, 100, 0, 128, 10, 20, 30, 255].into(), 2, 1, 4);
        prepare_alpha(&mut half).unwrap();
        assert!(half.premultiplied);
        assert_eq!(&half.data[..4], &[100, 50, 0, 128]);
        let flat = flatten(
            Pixels::new(half.data.to_vec().into(), 2, 1, 4).with_premultiplied(),
            [0, 0, 0],
        );
        assert_eq!(
            &flat.data[..3],
            &[100, 50, 0],
            "premultiplied over black is itself"
        );
        let back = unpremultiply(half).unwrap();
        assert_eq!(&back.data[..4], &[199, 100, 0, 128]);
    }
}
