//! What the pipeline is asked to do: variants, limits and output policy. These types are the
//! `variants`, `limits` and `output` sections of the config file, so their serde shape is part
//! of the interface.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a variant fits the source into its box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Keep the aspect ratio; the output fits inside width × height.
    #[default]
    Inside,
    /// Keep the aspect ratio; the output covers width × height exactly, cropped at the centre.
    Cover,
    /// Stretch to exactly width × height.
    Fill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Jpeg,
    Png,
    Webp,
    /// AV1 in HEIF (libheif's encoder).
    Avif,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
            OutputFormat::Avif => "avif",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
            OutputFormat::Avif => "image/avif",
        }
    }

    /// The quality a variant gets when it names none. Each format's scale means something
    /// else; these were chosen with `scripts/bench` (README: output table) to keep SSIM at or
    /// above sharp's JPEG q80 on the corpus.
    pub fn default_quality(self) -> u8 {
        match self {
            OutputFormat::Jpeg => 80,
            OutputFormat::Png => 80,
            OutputFormat::Webp => 83,
            OutputFormat::Avif => 68,
        }
    }
}

/// One configured output of every source image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "VariantToml")]
pub struct VariantSpec {
    /// Used in `{name}` and logs; defaults to the width (or `h<height>`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub fit: Fit,
    #[serde(default)]
    pub format: OutputFormat,
    /// 1–100; JPEG, WebP and AVIF. Unset in config: the format's default.
    pub quality: u8,
    /// Allow outputs larger than the source. Off: a 60 px source stays 60 px.
    pub enlarge: bool,
}

/// [`VariantSpec`] as written in config: `quality` defaults by format.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantToml {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    width: Option<u32>,
    #[serde(default)]
    height: Option<u32>,
    #[serde(default)]
    fit: Fit,
    #[serde(default)]
    format: OutputFormat,
    #[serde(default)]
    quality: Option<u8>,
    #[serde(default)]
    enlarge: bool,
}

impl From<VariantToml> for VariantSpec {
    fn from(v: VariantToml) -> Self {
        VariantSpec {
            name: v.name,
            width: v.width,
            height: v.height,
            fit: v.fit,
            format: v.format,
            quality: v.quality.unwrap_or(v.format.default_quality()),
            enlarge: v.enlarge,
        }
    }
}

impl VariantSpec {
    pub fn jpeg_width(width: u32) -> Self {
        VariantSpec {
            name: None,
            width: Some(width),
            height: None,
            fit: Fit::Inside,
            format: OutputFormat::Jpeg,
            quality: OutputFormat::Jpeg.default_quality(),
            enlarge: false,
        }
    }

    pub fn display_name(&self) -> String {
        match (&self.name, self.width, self.height) {
            (Some(name), _, _) => name.clone(),
            (None, Some(w), Some(h)) => format!("{w}x{h}"),
            (None, Some(w), None) => w.to_string(),
            (None, None, Some(h)) => format!("h{h}"),
            (None, None, None) => "unnamed".into(),
        }
    }

    fn validate(&self, index: usize) -> Result<()> {
        let at = format!("variants[{index}]");
        if self.width.is_none() && self.height.is_none() {
            return Err(Error::config(format!("{at}: set width, height or both")));
        }
        if self.width == Some(0) || self.height == Some(0) {
            return Err(Error::config(format!(
                "{at}: width and height must be at least 1"
            )));
        }
        if self.width.unwrap_or(0) > MAX_OUTPUT_SIDE || self.height.unwrap_or(0) > MAX_OUTPUT_SIDE {
            return Err(Error::config(format!(
                "{at}: width and height must be at most {MAX_OUTPUT_SIDE}"
            )));
        }
        if self.fit != Fit::Inside && (self.width.is_none() || self.height.is_none()) {
            return Err(Error::config(format!(
                "{at}.fit: `{}` needs both width and height",
                serde_plain_fit(self.fit)
            )));
        }
        if !(1..=100).contains(&self.quality) {
            return Err(Error::config(format!(
                "{at}.quality: {} is not in 1..=100",
                self.quality
            )));
        }
        Ok(())
    }
}

/// The largest output side we accept in config: JPEG's own limit.
pub const MAX_OUTPUT_SIDE: u32 = 16_000;

fn serde_plain_fit(fit: Fit) -> &'static str {
    match fit {
        Fit::Inside => "inside",
        Fit::Cover => "cover",
        Fit::Fill => "fill",
    }
}

/// The Lambda's outputs: 80 and 500 wide, JPEG quality 80.
pub fn default_variants() -> Vec<VariantSpec> {
    vec![VariantSpec::jpeg_width(80), VariantSpec::jpeg_width(500)]
}

/// Inputs above these are rejected as permanent errors before any pixel is allocated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_source_bytes: u64,
    pub max_pixels: u64,
    /// Frames in an animation (GIF, APNG, animated WebP); only the first is rendered, but a file
    /// that claims thousands is hostile.
    pub max_frames: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_source_bytes: 64 * 1024 * 1024,
            max_pixels: 100_000_000,
            max_frames: 1_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetadataPolicy {
    /// Drop EXIF, XMP and GPS. (The ICC profile is `output.color`'s business.)
    #[default]
    Strip,
    /// Keep EXIF (without orientation; GPS only with `keep_gps`) and the main XMP packet.
    Keep,
}

/// `output.color`: the colour space of the outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ColourPolicy {
    /// Convert every source with a profile to sRGB and attach no profile (as imgproxy does).
    #[default]
    Srgb,
    /// Keep an RGB source's pixels and profile when the profile is at most 64 KiB (Display P3
    /// phone photos stay wide-gamut); convert anything else to sRGB.
    Keep,
}

/// `[output.avif]`: how AVIF variants are encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AvifSettings {
    /// The libheif encoder's `speed` (aom: cpu-used 0–9; SVT-AV1: preset 0–13; rav1e: 0–10):
    /// higher is faster and larger.
    pub speed: u8,
    /// The AV1 encoder by libheif id: `aom`, `svt` or `rav1e`, whichever the build linked; the
    /// highest-priority one built in when this one is not.
    pub encoder: String,
}

impl Default for AvifSettings {
    /// Chosen with `scripts/bench` at thumbnail sizes (README: output formats): libaom's speed 6
    /// is the fastest that keeps the corpus's worst file at sharp's JPEG SSIM.
    fn default() -> Self {
        AvifSettings {
            speed: 6,
            encoder: "aom".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSettings {
    /// Placeholders: `{key}` (the whole source key), `{stem}` (key without its extension),
    /// `{name}`, `{width}`, `{height}` (the variant's configured box) and `{ext}`.
    pub key_template: String,
    pub metadata: MetadataPolicy,
    pub keep_gps: bool,
    pub color: ColourPolicy,
    pub avif: AvifSettings,
    /// Colour that transparent pixels are flattened onto for JPEG output, `#rrggbb`.
    pub background: String,
}

impl Default for OutputSettings {
    fn default() -> Self {
        OutputSettings {
            key_template: "{width}/{key}.{ext}".into(),
            metadata: MetadataPolicy::Strip,
            keep_gps: false,
            color: ColourPolicy::Srgb,
            avif: AvifSettings::default(),
            background: "#ffffff".into(),
        }
    }
}

const PLACEHOLDERS: &[&str] = &["key", "stem", "name", "width", "height", "ext"];

impl OutputSettings {
    pub fn background_rgb(&self) -> Result<[u8; 3]> {
        parse_hex_colour(&self.background).ok_or_else(|| {
            Error::config(format!(
                "output.background: `{}` is not a colour like #ffffff",
                self.background
            ))
        })
    }

    fn validate_template(&self) -> Result<()> {
        let t = &self.key_template;
        if !t.contains("{key}") && !t.contains("{stem}") {
            return Err(Error::config(format!(
                "output.key_template: `{t}` must contain {{key}} or {{stem}}, or every source \
                 would write the same key"
            )));
        }
        let mut rest = t.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').ok_or_else(|| {
                Error::config(format!("output.key_template: unclosed `{{` in `{t}`"))
            })?;
            let name = &rest[open + 1..open + close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(Error::config(format!(
                    "output.key_template: unknown placeholder {{{name}}} (known: {})",
                    PLACEHOLDERS.join(", ")
                )));
            }
            rest = &rest[open + close + 1..];
        }
        if t.starts_with('/') {
            return Err(Error::config(
                "output.key_template: must not start with `/`",
            ));
        }
        Ok(())
    }
}

fn parse_hex_colour(s: &str) -> Option<[u8; 3]> {
    let hex = s.strip_prefix('#')?;
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

/// Everything the pipeline needs, validated once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSettings {
    pub variants: Vec<VariantSpec>,
    pub limits: Limits,
    pub output: OutputSettings,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            variants: default_variants(),
            limits: Limits::default(),
            output: OutputSettings::default(),
        }
    }
}

impl PipelineSettings {
    pub fn validate(&self) -> Result<()> {
        if self.variants.is_empty() {
            return Err(Error::config("variants: at least one variant is needed"));
        }
        for (i, v) in self.variants.iter().enumerate() {
            v.validate(i)?;
        }
        let mut keys = std::collections::HashSet::new();
        for (i, v) in self.variants.iter().enumerate() {
            let key = render_key(&self.output.key_template, v, "k.jpg");
            if !keys.insert(key) {
                return Err(Error::config(format!(
                    "variants[{i}]: writes to the same key as an earlier variant; give it another \
                     width, name or format, or add {{name}} to output.key_template"
                )));
            }
        }
        self.output.validate_template()?;
        self.output.background_rgb()?;
        if self.limits.max_pixels == 0
            || self.limits.max_source_bytes == 0
            || self.limits.max_frames == 0
        {
            return Err(Error::config("limits: every limit must be at least 1"));
        }
        Ok(())
    }

    /// A stable digest of everything that changes output bytes. Stored on every variant, so a
    /// changed config is never mistaken for "already done".
    pub fn fingerprint(&self) -> String {
        // v2: colour management, AVIF, the leaner JPEG/WebP encoders. v3: WebP with the full
        // loop filter and SNS 25 (the same config now gives other bytes).
        let relevant = serde_json::json!({
            "v": 3,
            "variants": self.variants,
            "template": self.output.key_template,
            "metadata": self.output.metadata,
            "keep_gps": self.output.keep_gps,
            "color": self.output.color,
            "avif": self.output.avif,
            "background": self.output.background,
        });
        let text = relevant.to_string();
        format!("{:016x}", crate::fnv::fnv1a64(text.as_bytes()))
    }
}

/// The destination key of one variant of `source_key`.
pub fn render_key(template: &str, variant: &VariantSpec, source_key: &str) -> String {
    let stem = match source_key.rfind('.') {
        Some(dot) if dot > source_key.rfind('/').map_or(0, |s| s + 1) => &source_key[..dot],
        _ => source_key,
    };
    let dim = |d: Option<u32>| d.map_or_else(|| "auto".to_string(), |d| d.to_string());
    template
        .replace("{key}", source_key)
        .replace("{stem}", stem)
        .replace("{name}", &variant.display_name())
        .replace("{width}", &dim(variant.width))
        .replace("{height}", &dim(variant.height))
        .replace("{ext}", variant.format.extension())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_template_matches_the_lambda_layout() {
        let s = PipelineSettings::default();
        let keys: Vec<String> = s
            .variants
            .iter()
            .map(|v| render_key(&s.output.key_template, v, "photos/a.png"))
            .collect();
        assert_eq!(keys, ["80/photos/a.png.jpg", "500/photos/a.png.jpg"]);
    }

    #[test]
    fn stem_drops_only_the_last_extension_of_the_file_name() {
        let v = VariantSpec::jpeg_width(80);
        assert_eq!(
            render_key("{name}/{stem}.{ext}", &v, "a.b/c.tar.gz"),
            "80/a.b/c.tar.jpg"
        );
        assert_eq!(
            render_key("{stem}-{width}.{ext}", &v, "dir.x/noext"),
            "dir.x/noext-80.jpg"
        );
    }

    #[test]
    fn rejects_templates_that_cannot_work() {
        let mut s = PipelineSettings::default();
        s.output.key_template = "{width}/thumb.jpg".into();
        assert!(s.validate().unwrap_err().message().contains("key_template"));
        s.output.key_template = "{width}/{kee}".into();
        assert!(s.validate().unwrap_err().message().contains("{kee}"));
    }

    #[test]
    fn rejects_two_variants_writing_one_key() {
        let mut s = PipelineSettings::default();
        s.variants[1].width = Some(80);
        assert!(s.validate().unwrap_err().message().contains("variants[1]"));
    }

    #[test]
    fn fingerprint_changes_with_anything_that_changes_bytes() {
        let a = PipelineSettings::default();
        let mut b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.variants[0].quality = 81;
        assert_ne!(a.fingerprint(), b.fingerprint());
        let mut c = a.clone();
        c.limits.max_pixels = 5;
        assert_eq!(
            a.fingerprint(),
            c.fingerprint(),
            "limits do not change output bytes"
        );
    }
}
