//! Output sizes and crops, computed in the upright (auto-oriented) frame of the source.

use super::settings::{Fit, VariantSpec};

/// Where one variant comes from and how big it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// The region of the upright source to use: left, top, width, height (source pixels).
    pub crop: (f64, f64, f64, f64),
    pub width: u32,
    pub height: u32,
}

impl Plan {
    /// How many output pixels per source pixel along the more demanding axis: a decoder may
    /// shrink the source by this much (and no more) without losing detail the output needs.
    pub fn needed_scale(&self) -> f64 {
        (self.width as f64 / self.crop.2).max(self.height as f64 / self.crop.3)
    }

    /// The same plan on a source that was decoded `scale` times smaller or larger.
    pub fn scaled(&self, sx: f64, sy: f64) -> Plan {
        let (l, t, w, h) = self.crop;
        Plan {
            crop: (l * sx, t * sy, w * sx, h * sy),
            ..*self
        }
    }
}

fn round_side(x: f64) -> u32 {
    (x.round() as u32).max(1)
}

/// Sizes `spec` for an upright source of `src_w` × `src_h`.
pub fn plan(spec: &VariantSpec, src_w: u32, src_h: u32) -> Plan {
    let (w, h) = (src_w as f64, src_h as f64);
    let full = (0.0, 0.0, w, h);
    let cap = |s: f64| if spec.enlarge { s } else { s.min(1.0) };
    match (spec.fit, spec.width, spec.height) {
        (Fit::Fill, Some(tw), Some(th)) => {
            let (ow, oh) = if spec.enlarge {
                (tw, th)
            } else {
                (tw.min(src_w), th.min(src_h))
            };
            Plan {
                crop: full,
                width: ow,
                height: oh,
            }
        }
        (Fit::Cover, Some(tw), Some(th)) => {
            let s = cap((tw as f64 / w).max(th as f64 / h));
            // Never upscaled: a small source gives at most its own pixels of the box.
            let ow = (tw as f64).min(w * s);
            let oh = (th as f64).min(h * s);
            let (cw, ch) = (ow / s, oh / s);
            Plan {
                crop: ((w - cw) / 2.0, (h - ch) / 2.0, cw, ch),
                width: round_side(ow),
                height: round_side(oh),
            }
        }
        (_, tw, th) => {
            let sx = tw.map_or(f64::INFINITY, |tw| tw as f64 / w);
            let sy = th.map_or(f64::INFINITY, |th| th as f64 / h);
            let s = cap(sx.min(sy));
            // The constrained side gets exactly its configured size, the other one follows.
            let ow = match tw {
                Some(tw) if s == sx => tw,
                _ => round_side(w * s),
            };
            let oh = match th {
                Some(th) if s == sy => th,
                _ => round_side(h * s),
            };
            Plan {
                crop: full,
                width: ow,
                height: oh,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::settings::OutputFormat;

    fn spec(width: Option<u32>, height: Option<u32>, fit: Fit, enlarge: bool) -> VariantSpec {
        VariantSpec {
            name: None,
            width,
            height,
            fit,
            format: OutputFormat::Jpeg,
            quality: 80,
            enlarge,
        }
    }

    #[test]
    fn width_only_keeps_aspect() {
        let p = plan(&spec(Some(500), None, Fit::Inside, false), 6000, 4000);
        assert_eq!((p.width, p.height), (500, 333));
        let p = plan(&spec(Some(80), None, Fit::Inside, false), 3024, 4032);
        assert_eq!((p.width, p.height), (80, 107));
    }

    #[test]
    fn never_upscales_unless_asked() {
        let p = plan(&spec(Some(80), None, Fit::Inside, false), 60, 40);
        assert_eq!((p.width, p.height), (60, 40));
        let p = plan(&spec(Some(80), None, Fit::Inside, true), 60, 40);
        assert_eq!((p.width, p.height), (80, 53));
        let p = plan(&spec(Some(100), Some(100), Fit::Cover, false), 60, 40);
        assert_eq!((p.width, p.height), (60, 40));
        let p = plan(&spec(Some(100), Some(100), Fit::Fill, false), 60, 40);
        assert_eq!((p.width, p.height), (60, 40));
    }

    #[test]
    fn inside_fits_the_box() {
        let p = plan(&spec(Some(200), Some(200), Fit::Inside, false), 4000, 3000);
        assert_eq!((p.width, p.height), (200, 150));
        let p = plan(&spec(Some(200), Some(200), Fit::Inside, false), 3000, 4000);
        assert_eq!((p.width, p.height), (150, 200));
        let p = plan(&spec(None, Some(100), Fit::Inside, false), 4000, 3000);
        assert_eq!((p.width, p.height), (133, 100));
    }

    #[test]
    fn cover_crops_the_centre() {
        let p = plan(&spec(Some(100), Some(100), Fit::Cover, false), 400, 200);
        assert_eq!((p.width, p.height), (100, 100));
        assert_eq!(p.crop, (100.0, 0.0, 200.0, 200.0));
        assert!((p.needed_scale() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn fill_stretches() {
        let p = plan(&spec(Some(100), Some(10), Fit::Fill, false), 400, 200);
        assert_eq!((p.width, p.height), (100, 10));
        assert!((p.needed_scale() - 0.25).abs() < 1e-9);
    }
}
