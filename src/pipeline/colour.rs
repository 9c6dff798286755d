//! Colour management: decoded pixels in their source colour space → the output's.
//!
//! LittleCMS (lcms2, what libvips and ImageMagick use) does the conversions. Policy
//! `output.color`: `srgb` converts everything to sRGB and attaches no profile (an untagged
//! image is sRGB to every browser); `keep` keeps the pixels and profile of an RGB source whose
//! profile is at most [`MAX_KEPT_ICC_BYTES`], and converts anything else to sRGB.
//!
//! CMYK JPEGs are converted through their embedded CMYK profile, or through a FOGRA39
//! (ISO Coated) profile when they have none. A profile that does not parse, that is larger
//! than [`MAX_ICC_BYTES`], or whose colour space is not the pixels' is treated as absent, with
//! a warning: never a failed image, and never attached to an output.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use lcms2::{
    CIExyY, CIExyYTRIPLE, ColorSpaceSignature, Intent, PixelFormat, Profile, Tag, TagSignature,
    ToneCurve,
};
use tracing::warn;

use super::decode::Decoded;
use super::resize::PixelData;
use crate::error::{Error, Result};

pub use super::settings::ColourPolicy;

/// Profiles larger than this are ignored: real ones (LUT-based print profiles included) stay
/// well under it, and a PNG's `iCCP` is never inflated past it.
pub const MAX_ICC_BYTES: usize = 4 << 20;

/// `keep` attaches a source profile only up to this size: a thumbnail should not carry a
/// profile bigger than itself.
pub const MAX_KEPT_ICC_BYTES: usize = 64 << 10;

/// The CMYK profile for CMYK sources without one: made with ArgyllCMS from FOGRA39L
/// characterisation data (Zlib licence), see tests/fixtures/colour/make_colour_fixtures.py.
static FALLBACK_CMYK: &[u8] = include_bytes!("../../assets/icc/cmyk-fogra39.icc");

/// What the decoded pixels are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PixelModel {
    /// RGB or RGBA.
    #[default]
    Rgb,
    /// Grey, decoded as RGB(A) with R = G = B.
    Gray,
    /// Four channels of ink, no alpha. `inverted`: Adobe's convention, 255 = no ink.
    Cmyk { inverted: bool },
}

/// Converts `decoded` in place to the output colour space of `policy` and returns the profile
/// the outputs carry (`None`: untagged sRGB). Takes `decoded.meta.icc`.
pub fn manage(decoded: &mut Decoded, policy: ColourPolicy) -> Result<Option<Vec<u8>>> {
    let icc = decoded.meta.icc.take().filter(|icc| !icc.is_empty());
    let profile = icc.as_deref().and_then(parse);
    let space = profile.as_ref().map(|p| p.color_space());
    match decoded.model {
        PixelModel::Cmyk { inverted } => {
            let embedded = profile.filter(|_| space == Some(ColorSpaceSignature::CmykData));
            if embedded.is_none() && icc.is_some() {
                warn!(?space, "CMYK image with an unusable profile: using FOGRA39");
            }
            let format = if inverted {
                PixelFormat::CMYK_8_REV
            } else {
                PixelFormat::CMYK_8
            };
            let from_embedded = embedded.and_then(|p| {
                let key = icc.as_deref().map_or(0, hash);
                cached_transform(key, &p, format, PixelFormat::RGB_8)
                    .inspect_err(|e| warn!(error = %e, "CMYK profile unusable: using FOGRA39"))
                    .ok()
            });
            let transform = match from_embedded {
                Some(t) => t,
                None => cached_transform(0, &fallback_cmyk()?, format, PixelFormat::RGB_8)?,
            };
            let mut rgb = vec![0u8; decoded.pixels.len() / 4 * 3];
            transform.transform_pixels(&decoded.pixels[..], &mut rgb[..]);
            decoded.pixels = rgb.into();
            decoded.channels = 3;
            decoded.model = PixelModel::Rgb;
            Ok(None)
        }
        PixelModel::Gray => {
            match (profile, space) {
                (Some(p), Some(ColorSpaceSignature::GrayData)) => {
                    let key = icc.as_deref().map_or(0, hash);
                    gray_to_srgb(decoded, key, &p)?;
                }
                (Some(_), _) => warn!(?space, "grey image with a non-grey profile: ignored"),
                (None, _) => {}
            }
            decoded.model = PixelModel::Rgb;
            Ok(None)
        }
        PixelModel::Rgb => {
            let (Some(profile), Some(icc)) = (profile, icc) else {
                return Ok(None);
            };
            if space != Some(ColorSpaceSignature::RgbData) {
                warn!(?space, "RGB image with a non-RGB profile: ignored");
                return Ok(None);
            }
            if policy == ColourPolicy::Keep && icc.len() <= MAX_KEPT_ICC_BYTES {
                return Ok(Some(icc));
            }
            if !is_srgb(&profile) {
                rgb_to_srgb(decoded, hash(&icc), &profile)?;
            }
            Ok(None)
        }
    }
}

/// Chromaticities (x, y) of an RGB space's primaries and white point.
#[derive(Debug, Clone, Copy)]
pub struct Primaries {
    pub red: (f64, f64),
    pub green: (f64, f64),
    pub blue: (f64, f64),
    pub white: (f64, f64),
}

/// An ICC profile for a HEIF/AVIF `nclx` colour description (primaries and ITU-T H.273
/// transfer characteristics), so colour management treats it like an embedded profile.
/// `None` for sRGB itself and for what an 8-bit SDR pipeline cannot honour (PQ, HLG).
pub fn profile_from_nclx(p: Primaries, transfer: u32) -> Option<Vec<u8>> {
    const BT709: Primaries = Primaries {
        red: (0.64, 0.33),
        green: (0.30, 0.60),
        blue: (0.15, 0.06),
        white: (0.3127, 0.3290),
    };
    let near =
        |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 0.002 && (a.1 - b.1).abs() < 0.002;
    let srgb_primaries = near(p.red, BT709.red)
        && near(p.green, BT709.green)
        && near(p.blue, BT709.blue)
        && near(p.white, BT709.white);
    // 2 = unspecified: what phones mean by it is sRGB.
    let transfer = if transfer == 2 { 13 } else { transfer };
    let curve = match transfer {
        // sRGB; BT.709 (and its 10/12-bit twins) is nearly sRGB on a display: treated alike.
        13 | 1 | 6 | 14 | 15 if srgb_primaries => return None,
        13 => {
            ToneCurve::new_parametric(4, &[2.4, 1.0 / 1.055, 0.055 / 1.055, 1.0 / 12.92, 0.04045])
        }
        1 | 6 | 14 | 15 => ToneCurve::new_parametric(
            4,
            &[1.0 / 0.45, 1.0 / 1.099, 0.099 / 1.099, 1.0 / 4.5, 0.081],
        ),
        4 => Ok(ToneCurve::new(2.2)),
        5 => Ok(ToneCurve::new(2.8)),
        8 => Ok(ToneCurve::new(1.0)),
        other => {
            warn!(
                transfer = other,
                "HEIF nclx transfer not handled (HDR?): taken as sRGB"
            );
            return None;
        }
    }
    .ok()?;
    let xyy = |(x, y): (f64, f64)| CIExyY { x, y, Y: 1.0 };
    let primaries = CIExyYTRIPLE {
        Red: xyy(p.red),
        Green: xyy(p.green),
        Blue: xyy(p.blue),
    };
    Profile::new_rgb(&xyy(p.white), &primaries, &[&curve, &curve, &curve])
        .and_then(|profile| profile.icc())
        .ok()
}

/// Parses a profile; `None` (with a warning) if it is too large or unreadable.
fn parse(icc: &[u8]) -> Option<Profile> {
    if icc.len() > MAX_ICC_BYTES {
        warn!(
            bytes = icc.len(),
            "ICC profile over {MAX_ICC_BYTES} bytes: ignored"
        );
        return None;
    }
    match Profile::new_icc(icc) {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(error = %e, bytes = icc.len(), "ICC profile does not parse: ignored");
            None
        }
    }
}

fn fallback_cmyk() -> Result<Profile> {
    Profile::new_icc(FALLBACK_CMYK).map_err(|e| Error::io(format!("fallback CMYK profile: {e}")))
}

fn hash(icc: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    icc.hash(&mut h);
    h.finish()
}

type Transform = lcms2::Transform<u8, u8>;

thread_local! {
    /// The last few transforms, by (profile hash, input format): building one from a LUT
    /// profile (CMYK) precomputes a device link, ~10 ms; phones tag every photo alike.
    static TRANSFORMS: RefCell<Vec<(u64, u32, Rc<Transform>)>> = const { RefCell::new(Vec::new()) };
}

const CACHED_TRANSFORMS: usize = 6;

/// A transform from `profile` (`key`: a hash of its bytes) to sRGB. A transform lcms cannot
/// build (a device link or abstract profile as the source) is an unusable profile: the caller
/// sees it as a corrupt-source error only for CMYK, where the fallback is our own profile.
fn cached_transform(
    key: u64,
    profile: &Profile,
    input: PixelFormat,
    output: PixelFormat,
) -> Result<Rc<Transform>> {
    let id = input.0 ^ (output.0 << 1);
    if let Some(t) = TRANSFORMS.with(|c| {
        c.borrow()
            .iter()
            .find(|(k, f, _)| *k == key && *f == id)
            .map(|(_, _, t)| t.clone())
    }) {
        return Ok(t);
    }
    let flags = if output == PixelFormat::RGBA_8 {
        lcms2::Flags::COPY_ALPHA
    } else {
        lcms2::Flags::default()
    };
    let transform = Transform::new_flags(
        profile,
        input,
        &Profile::new_srgb(),
        output,
        Intent::Perceptual,
        flags,
    )
    .map_err(|e| Error::corrupt(format!("ICC profile: no transform to sRGB ({e})")))?;
    let transform = Rc::new(transform);
    TRANSFORMS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CACHED_TRANSFORMS {
            c.remove(0);
        }
        c.push((key, id, transform.clone()));
    });
    Ok(transform)
}

/// RGB(A) in `profile`'s space → sRGB. A profile lcms cannot build a transform from is
/// ignored (pixels left as they are).
fn rgb_to_srgb(decoded: &mut Decoded, key: u64, profile: &Profile) -> Result<()> {
    let format = if decoded.channels == 4 {
        PixelFormat::RGBA_8
    } else {
        PixelFormat::RGB_8
    };
    let Ok(transform) = cached_transform(key, profile, format, format) else {
        warn!("RGB profile cannot be used as a source: ignored");
        return Ok(());
    };
    match &mut decoded.pixels {
        PixelData::Owned(px) => transform.transform_in_place(&mut px[..]),
        heif => {
            let mut out = vec![0u8; heif.len()];
            transform.transform_pixels(&heif[..], &mut out[..]);
            *heif = out.into();
        }
    }
    Ok(())
}

/// Grey through its profile: a 256-entry table, since every pixel is one of 256 greys.
fn gray_to_srgb(decoded: &mut Decoded, key: u64, profile: &Profile) -> Result<()> {
    let Ok(transform) = cached_transform(key, profile, PixelFormat::GRAY_8, PixelFormat::RGB_8)
    else {
        warn!("grey profile cannot be used as a source: ignored");
        return Ok(());
    };
    let ramp: Vec<u8> = (0..=255).collect();
    let mut table = [0u8; 256 * 3];
    transform.transform_pixels(&ramp[..], &mut table[..]);
    let channels = decoded.channels as usize;
    if let PixelData::Heif { .. } = decoded.pixels {
        decoded.pixels = decoded.pixels.to_vec().into();
    }
    let PixelData::Owned(px) = &mut decoded.pixels else {
        unreachable!("made owned above")
    };
    for p in px.chunks_exact_mut(channels) {
        let v = p[0] as usize * 3;
        p[..3].copy_from_slice(&table[v..v + 3]);
    }
    Ok(())
}

/// A matrix/TRC profile whose colorants and curves are sRGB's (most "sRGB IEC61966-2.1"
/// profiles cameras embed): converting through it would only add rounding.
fn is_srgb(profile: &Profile) -> bool {
    if !profile.is_matrix_shaper() {
        return false;
    }
    let srgb = Profile::new_srgb();
    let colorants = [
        TagSignature::RedColorantTag,
        TagSignature::GreenColorantTag,
        TagSignature::BlueColorantTag,
    ];
    let same_colorants =
        colorants
            .iter()
            .all(|&sig| match (profile.read_tag(sig), srgb.read_tag(sig)) {
                (Tag::CIEXYZ(a), Tag::CIEXYZ(b)) => {
                    (a.X - b.X).abs() < 0.002
                        && (a.Y - b.Y).abs() < 0.002
                        && (a.Z - b.Z).abs() < 0.002
                }
                _ => false,
            });
    let curves = [
        TagSignature::RedTRCTag,
        TagSignature::GreenTRCTag,
        TagSignature::BlueTRCTag,
    ];
    same_colorants
        && curves
            .iter()
            .all(|&sig| match (profile.read_tag(sig), srgb.read_tag(sig)) {
                (Tag::ToneCurve(a), Tag::ToneCurve(b)) => (0..=32).all(|i| {
                    let x = i as f32 / 32.0;
                    (a.eval(x) - b.eval(x)).abs() < 0.002
                }),
                _ => false,
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nclx_p3_becomes_a_profile_and_nclx_srgb_needs_none() {
        let p3 = Primaries {
            red: (0.680, 0.320),
            green: (0.265, 0.690),
            blue: (0.150, 0.060),
            white: (0.3127, 0.3290),
        };
        let icc = profile_from_nclx(p3, 13).expect("a P3 profile");
        let profile = Profile::new_icc(&icc).unwrap();
        assert_eq!(profile.color_space(), ColorSpaceSignature::RgbData);
        assert!(!is_srgb(&profile));
        let bt709 = Primaries {
            red: (0.64, 0.33),
            green: (0.30, 0.60),
            blue: (0.15, 0.06),
            ..p3
        };
        assert!(profile_from_nclx(bt709, 13).is_none());
        assert!(profile_from_nclx(p3, 16).is_none(), "PQ is not handled");
    }

    #[test]
    fn the_fallback_cmyk_profile_parses_as_cmyk() {
        let p = fallback_cmyk().unwrap();
        assert_eq!(p.color_space(), ColorSpaceSignature::CmykData);
    }

    #[test]
    fn lcms_srgb_is_recognised_and_a_wide_gamut_profile_is_not() {
        assert!(is_srgb(&Profile::new_srgb()));
        let p3 = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/colour/p3.jpg"),
        )
        .unwrap();
        let (meta, _) = super::super::metadata::jpeg_metadata(&p3);
        assert!(!is_srgb(&Profile::new_icc(&meta.icc.unwrap()).unwrap()));
    }
}
