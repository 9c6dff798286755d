//! The placeholder of a source: a ThumbHash and the average colour of the upright,
//! colour-managed image, both from one small copy that fits in 100 × 100 (ThumbHash's limit),
//! made by averaging areas (a box filter over a super-sampled grid: what a placeholder shows,
//! at a fraction of a convolution over every source pixel).
//!
//! The encoder is the `thumbhash` crate: the Rust port in the reference repository
//! (evanw/thumbhash), by its author.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};

use super::resize::{self, Pixels};
use crate::error::{Error, Result};
use crate::events::Placeholder;

/// Samples per placeholder pixel and side: the source is first sampled (nearest) down to 4 ×
/// the placeholder's size, then box-filtered: 16 samples per pixel, plenty for ThumbHash's
/// 7 × 7 lowest frequencies. Measured over the corpus (debug build): a box filter over every
/// source pixel cost 6 % of a pipeline run, 8 × super-sampling 1.8 %, 4 × 0.9 %.
const SUPER_SAMPLING: u8 = 4;

/// ThumbHash's largest input side.
pub const MAX_SIDE: u32 = 100;

/// The size that fits `width` × `height` in [`MAX_SIDE`] × [`MAX_SIDE`], keeping the aspect
/// ratio, never enlarging, never below 1 pixel.
pub fn fitted_size(width: u32, height: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= MAX_SIDE {
        return (width.max(1), height.max(1));
    }
    let scale = |side: u32| {
        ((side as u64 * MAX_SIDE as u64 + longest as u64 / 2) / longest as u64).max(1) as u32
    };
    (scale(width), scale(height))
}

/// The placeholder of `upright` (RGB, or RGBA premultiplied or not, as [`resize::prepare_alpha`]
/// leaves it).
pub fn placeholder(resizer: &mut Resizer, upright: &Pixels) -> Result<Placeholder> {
    let (width, height) = fitted_size(upright.width, upright.height);
    let channels = upright.channels;
    let pixel_type = if channels == 4 {
        fast_image_resize::PixelType::U8x4
    } else {
        fast_image_resize::PixelType::U8x3
    };
    let src = ImageRef::new(upright.width, upright.height, &upright.data, pixel_type)
        .map_err(|e| Error::corrupt(format!("placeholder: {e}")))?;
    let mut small = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::SuperSampling(FilterType::Box, SUPER_SAMPLING))
        .use_alpha(false);
    resizer
        .resize(&src, &mut small, &options)
        .map_err(|e| Error::corrupt(format!("placeholder: {e}")))?;
    let small = resize::unpremultiply(Pixels {
        data: small.into_vec().into(),
        width,
        height,
        channels,
        premultiplied: upright.premultiplied,
    })?;
    let rgba: Vec<u8> = if channels == 4 {
        small.data.to_vec()
    } else {
        small
            .data
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect()
    };
    Ok(Placeholder {
        thumbhash: thumbhash::rgba_to_thumb_hash(width as usize, height as usize, &rgba),
        average_rgb: average_rgb(&rgba),
    })
}

/// The mean colour of the visible pixels (weighted by alpha; a fully transparent image is
/// black).
pub fn average_rgb(rgba: &[u8]) -> [u8; 3] {
    let mut sums = [0u64; 3];
    let mut alpha = 0u64;
    for p in rgba.chunks_exact(4) {
        let a = p[3] as u64;
        for c in 0..3 {
            sums[c] += p[c] as u64 * a;
        }
        alpha += a;
    }
    if alpha == 0 {
        return [0; 3];
    }
    sums.map(|s| ((s + alpha / 2) / alpha) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic test image: colour gradients, and (with `alpha`) a transparent corner.
    /// The same formula produced the reference hashes below with the reference implementation
    /// (npm `thumbhash` 0.1.1, evanw's JavaScript `rgbaToThumbHash`).
    fn pattern(w: usize, h: usize, alpha: bool) -> Vec<u8> {
        let mut rgba = Vec::with_capacity(w * h * 4);
        for y in 0..h {
            for x in 0..w {
                let a = if alpha && x + y < (w + h) / 3 { 0 } else { 255 };
                rgba.extend_from_slice(&[
                    (x * 255 / (w - 1)) as u8,
                    (y * 255 / (h - 1)) as u8,
                    ((x + y) * 127 / (w + h - 2)) as u8,
                    a,
                ]);
            }
        }
        rgba
    }

    /// (width, height, alpha, ThumbHash of `pattern` by the reference JavaScript, by the
    /// crate), base64. The JavaScript computes in f64, the Rust port in f32: once in these
    /// five, a coefficient sits on a rounding edge and one 4-bit AC value differs by one step
    /// (invisible in the decoded placeholder).
    const REFERENCE: &[(usize, usize, bool, &str, &str)] = &[
        (
            100,
            75,
            false,
            "2gkOJZqAh4eAiIeIeHh4iIJwCPh3",
            "2gkOJZqAh4eAiIeIeHh4iIJwCPh3",
        ),
        (
            60,
            100,
            true,
            "X+qFExg7kNHIeYeQtgrpaHN3QHh0eXk=",
            "X+qFExg7kNHIeYeQtgrpaHN3QHh0eXk=",
        ),
        (
            37,
            23,
            false,
            "2gkOJJqAh4eBiId4eIeDcAj4eA==",
            "2gkOJJqAh4eBiId4eIeDcAj4eA==",
        ),
        (
            8,
            8,
            true,
            "XwqGFRorsIbgeZtlh7DgC/loYHgwiIaKeA==",
            "XwqGFRorsIbgeZtlh7DgC/loYHgwiIaKeA==",
        ),
        (
            100,
            100,
            false,
            "2gkOHxqAh4eAiIeIiHiIiIeHCAiHgH8H",
            "2gkOHxqAh4eAiIeIiHiIiIeHCAiHgI8H",
        ),
    ];

    fn base64(bytes: &[u8]) -> String {
        Placeholder {
            thumbhash: bytes.to_vec(),
            average_rgb: [0; 3],
        }
        .thumbhash_base64()
    }

    /// How far apart two hashes are: the largest difference of any 4-bit value.
    fn nibble_distance(a: &str, b: &str) -> u8 {
        use base64::Engine;
        let decode = |s| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        let (a, b) = (decode(a), decode(b));
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .flat_map(|(x, y)| [(x & 15).abs_diff(y & 15), (x >> 4).abs_diff(y >> 4)])
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn matches_the_reference_implementation() {
        for (w, h, alpha, javascript, rust) in REFERENCE {
            let hash = thumbhash::rgba_to_thumb_hash(*w, *h, &pattern(*w, *h, *alpha));
            assert_eq!(base64(&hash), *rust, "{w}x{h} alpha={alpha}");
            assert!(nibble_distance(rust, javascript) <= 1, "{w}x{h}");
        }
        let exact = REFERENCE.iter().filter(|(.., js, rust)| js == rust).count();
        assert_eq!(exact, 4);
    }

    #[test]
    fn fits_in_100_keeping_the_aspect_ratio() {
        assert_eq!(fitted_size(4032, 3024), (100, 75));
        assert_eq!(fitted_size(3024, 4032), (75, 100));
        assert_eq!(fitted_size(10_000, 10), (100, 1));
        assert_eq!(fitted_size(64, 48), (64, 48));
        assert_eq!(fitted_size(100, 100), (100, 100));
    }

    #[test]
    fn placeholder_of_a_wide_image_says_wide_and_its_colour() {
        // 400 × 200, left half pure red, right half pure blue.
        let (w, h) = (400u32, 200u32);
        let data: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                if i % w < w / 2 {
                    [255, 0, 0]
                } else {
                    [0, 0, 255]
                }
            })
            .collect();
        let upright = Pixels::new(data.into(), w, h, 3);
        let p = placeholder(&mut Resizer::new(), &upright).unwrap();
        let ratio = thumbhash::thumb_hash_to_approximate_aspect_ratio(&p.thumbhash).unwrap();
        assert!((ratio - 2.0).abs() < 0.35, "{ratio}");
        assert_eq!(p.average_rgb, [128, 0, 128]);
        let (dw, dh, decoded) = thumbhash::thumb_hash_to_rgba(&p.thumbhash).unwrap();
        assert!(dw > dh, "{dw}x{dh}");
        // The decoded placeholder is red on the left and blue on the right.
        let left = &decoded[(dh / 2 * dw) * 4..][..4];
        let right = &decoded[(dh / 2 * dw + dw - 1) * 4..][..4];
        assert!(left[0] > left[2] + 100, "{left:?}");
        assert!(right[2] > right[0] + 100, "{right:?}");
    }

    #[test]
    fn transparent_pixels_do_not_colour_the_average() {
        // Premultiplied, as prepare_alpha leaves it: half opaque green, half transparent.
        let (w, h) = (200u32, 100u32);
        let data: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                if i % w < w / 2 {
                    [0, 200, 0, 255]
                } else {
                    [0, 0, 0, 0]
                }
            })
            .collect();
        let mut upright = Pixels::new(data.into(), w, h, 4);
        upright.premultiplied = true;
        let p = placeholder(&mut Resizer::new(), &upright).unwrap();
        assert_eq!(p.average_rgb, [0, 200, 0]);
        let (_, _, _, a) = thumbhash::thumb_hash_to_average_rgba(&p.thumbhash).unwrap();
        assert!(a < 0.75, "{a}");
    }
}
