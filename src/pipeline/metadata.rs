//! Source metadata (orientation, ICC, EXIF, XMP) and what of it each output carries.
//!
//! The ICC profile is colour management's choice (see `colour`), never a blind copy.
//! Policy: `strip` drops EXIF and XMP. `keep` copies EXIF
//! (orientation removed, because outputs are upright; GPS only on request; no embedded
//! thumbnail) and the main XMP packet. Extended XMP and other APPn blobs are never copied: a
//! real wallpaper carries 7 MB of extended XMP that a naive copy would paste into every thumb.

use super::orient::Orientation;
use super::settings::{MetadataPolicy, OutputSettings};

/// What the decoder found besides pixels.
#[derive(Debug, Clone, Default)]
pub struct SourceMetadata {
    pub icc: Option<Vec<u8>>,
    /// A raw TIFF structure (starts with `II*\0` or `MM\0*`), without the `Exif\0\0` prefix.
    pub exif: Option<Vec<u8>>,
    pub xmp: Option<Vec<u8>>,
    /// The EXIF orientation still to apply to the decoded pixels (HEIF decoders apply
    /// irot/imir themselves and report `Normal`).
    pub orientation: Orientation,
}

/// What an output carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputMetadata {
    pub icc: Option<Vec<u8>>,
    pub exif: Option<Vec<u8>>,
    pub xmp: Option<Vec<u8>>,
}

impl OutputMetadata {
    /// `icc`: the profile colour management chose for the outputs (its pixels' own).
    pub fn for_policy(
        source: &SourceMetadata,
        output: &OutputSettings,
        icc: Option<Vec<u8>>,
    ) -> OutputMetadata {
        match output.metadata {
            MetadataPolicy::Strip => OutputMetadata {
                icc,
                exif: None,
                xmp: None,
            },
            MetadataPolicy::Keep => OutputMetadata {
                icc,
                exif: source
                    .exif
                    .as_deref()
                    .and_then(|raw| clean_exif(raw, output.keep_gps)),
                xmp: source.xmp.as_deref().map(neutralise_xmp_orientation),
            },
        }
    }
}

pub const EXIF_PREFIX: &[u8] = b"Exif\0\0";
pub const XMP_PREFIX: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
pub const ICC_PREFIX: &[u8] = b"ICC_PROFILE\0";

/// The EXIF orientation of a raw TIFF structure; `Normal` when absent or unreadable.
pub fn exif_orientation(raw: &[u8]) -> Orientation {
    let Some(exif) = parse_exif(raw) else {
        return Orientation::Normal;
    };
    exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
        .and_then(|v| Orientation::from_exif(v as u16))
        .unwrap_or(Orientation::Normal)
}

/// Parses what can be parsed: cameras and libraries often write sub-IFDs with a stray
/// next-IFD pointer, which a strict parser rejects whole.
fn parse_exif(raw: &[u8]) -> Option<exif::Exif> {
    exif::Reader::new()
        .continue_on_error(true)
        .read_raw(raw.to_vec())
        .or_else(|e| e.distill_partial_result(|_ignored| {}))
        .ok()
}

/// Rewrites EXIF without orientation, without the embedded thumbnail and, unless `keep_gps`,
/// without the GPS directory. `None` if the EXIF cannot be parsed: dropping is safer than
/// copying bytes we could not check.
pub fn clean_exif(raw: &[u8], keep_gps: bool) -> Option<Vec<u8>> {
    let exif = parse_exif(raw)?;
    let kept: Vec<&exif::Field> = exif
        .fields()
        .filter(|f| f.ifd_num == exif::In::PRIMARY)
        .filter(|f| f.tag != exif::Tag::Orientation)
        .filter(|f| keep_gps || f.tag.context() != exif::Context::Gps)
        .collect();
    if kept.is_empty() {
        return None;
    }
    let mut writer = exif::experimental::Writer::new();
    for field in kept {
        writer.push_field(field);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    writer.write(&mut out, exif.little_endian()).ok()?;
    Some(out.into_inner())
}

/// Outputs are upright, so an XMP `tiff:Orientation` other than 1 would rotate them again.
fn neutralise_xmp_orientation(xmp: &[u8]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(xmp) else {
        return xmp.to_vec();
    };
    // Both the attribute form `tiff:Orientation="6"` and the element form
    // `<tiff:Orientation>6</tiff:Orientation>` hold a single digit.
    let text = set_value_after(text, "tiff:Orientation=\"", '"');
    set_value_after(&text, "<tiff:Orientation>", '<').into_bytes()
}

/// Replaces every short value between `open` and `close` with `1`.
fn set_value_after(text: &str, open: &str, close: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(open) {
        let value_start = at + open.len();
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        if let Some(end) = rest.find(close).filter(|&end| end <= 2) {
            out.push('1');
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// JPEG marker segments before the first scan: (marker, payload).
pub fn jpeg_segments(data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut segments = Vec::new();
    let mut pos = 2; // after SOI
    while pos + 4 <= data.len() {
        if data[pos] != 0xFF {
            break;
        }
        let marker = data[pos + 1];
        if marker == 0xFF {
            pos += 1; // fill byte
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            break; // start of scan or end of image: no more metadata
        }
        let len = u16::from_be_bytes([data[pos + 2], data[pos + 3]]) as usize;
        if len < 2 || pos + 2 + len > data.len() {
            break;
        }
        segments.push((marker, &data[pos + 4..pos + 2 + len]));
        pos += 2 + len;
    }
    segments
}

/// ICC, EXIF and main XMP of a JPEG, and whether an Adobe APP14 marks inverted CMYK.
pub fn jpeg_metadata(data: &[u8]) -> (SourceMetadata, bool) {
    let mut meta = SourceMetadata::default();
    let mut icc_chunks: Vec<(u8, &[u8])> = Vec::new();
    let mut adobe = false;
    for (marker, payload) in jpeg_segments(data) {
        match marker {
            0xE1 if payload.starts_with(EXIF_PREFIX) && meta.exif.is_none() => {
                meta.exif = Some(payload[EXIF_PREFIX.len()..].to_vec());
            }
            0xE1 if payload.starts_with(XMP_PREFIX) && meta.xmp.is_none() => {
                meta.xmp = Some(payload[XMP_PREFIX.len()..].to_vec());
            }
            0xE2 if payload.starts_with(ICC_PREFIX) && payload.len() > ICC_PREFIX.len() + 2 => {
                let seq = payload[ICC_PREFIX.len()];
                icc_chunks.push((seq, &payload[ICC_PREFIX.len() + 2..]));
            }
            0xEE if payload.starts_with(b"Adobe") => adobe = true,
            _ => {}
        }
    }
    if !icc_chunks.is_empty() {
        icc_chunks.sort_by_key(|(seq, _)| *seq);
        meta.icc = Some(
            icc_chunks
                .iter()
                .flat_map(|(_, c)| c.iter().copied())
                .collect(),
        );
    }
    if let Some(exif) = &meta.exif {
        meta.orientation = exif_orientation(exif);
    }
    (meta, adobe)
}

/// RIFF chunks of a WebP file: (fourcc, payload).
pub fn riff_chunks(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut chunks = Vec::new();
    let mut pos = 12;
    while pos + 8 <= data.len() {
        let fourcc = [data[pos], data[pos + 1], data[pos + 2], data[pos + 3]];
        let len = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]])
            as usize;
        let start = pos + 8;
        let end = start.saturating_add(len).min(data.len());
        chunks.push((fourcc, &data[start..end]));
        pos = start.saturating_add(len).saturating_add(len & 1);
    }
    chunks
}

pub fn webp_metadata(data: &[u8]) -> SourceMetadata {
    let mut meta = SourceMetadata::default();
    for (fourcc, payload) in riff_chunks(data) {
        match &fourcc {
            b"ICCP" => meta.icc = Some(payload.to_vec()),
            b"EXIF" => {
                let raw = payload.strip_prefix(EXIF_PREFIX).unwrap_or(payload);
                meta.orientation = exif_orientation(raw);
                meta.exif = Some(raw.to_vec());
            }
            b"XMP " => meta.xmp = Some(payload.to_vec()),
            _ => {}
        }
    }
    meta
}

/// JPEG APPn segments carrying `meta`, to insert after the encoder's SOI/APP0.
pub fn jpeg_metadata_segments(meta: &OutputMetadata) -> Vec<u8> {
    let mut out = Vec::new();
    let mut segment = |marker: u8, parts: &[&[u8]]| {
        let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 2;
        if len > 0xFFFF {
            return; // does not fit one segment; EXIF and XMP beyond 64 KiB are dropped
        }
        out.extend_from_slice(&[0xFF, marker]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        for p in parts {
            out.extend_from_slice(p);
        }
    };
    if let Some(exif) = &meta.exif {
        segment(0xE1, &[EXIF_PREFIX, exif]);
    }
    if let Some(xmp) = &meta.xmp {
        segment(0xE1, &[XMP_PREFIX, xmp]);
    }
    if let Some(icc) = &meta.icc {
        // ICC profiles larger than one segment are split into numbered chunks.
        const CHUNK: usize = 0xFFFF - 2 - 14;
        let count = icc.len().div_ceil(CHUNK).min(255);
        for (i, chunk) in icc.chunks(CHUNK).take(count).enumerate() {
            segment(0xE2, &[ICC_PREFIX, &[(i + 1) as u8, count as u8], chunk]);
        }
    }
    out
}

/// Inserts APPn segments into an encoded JPEG after SOI and any APP0 (JFIF) segment.
pub fn insert_jpeg_segments(jpeg: Vec<u8>, segments: &[u8]) -> Vec<u8> {
    if segments.is_empty() || jpeg.len() < 4 {
        return jpeg;
    }
    let mut at = 2;
    if jpeg[2] == 0xFF && jpeg[3] == 0xE0 && jpeg.len() >= 6 {
        at = 4 + u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
    }
    let mut out = Vec::with_capacity(jpeg.len() + segments.len());
    out.extend_from_slice(&jpeg[..at]);
    out.extend_from_slice(segments);
    out.extend_from_slice(&jpeg[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xmp_orientation_becomes_upright_in_both_forms() {
        let xmp = br#"<x tiff:Orientation="6" a="b"/><tiff:Orientation>8</tiff:Orientation>"#;
        let out = String::from_utf8(neutralise_xmp_orientation(xmp)).unwrap();
        assert_eq!(
            out,
            r#"<x tiff:Orientation="1" a="b"/><tiff:Orientation>1</tiff:Orientation>"#
        );
    }

    #[test]
    fn icc_survives_a_round_trip_through_segments() {
        let icc: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let meta = OutputMetadata {
            icc: Some(icc.clone()),
            exif: None,
            xmp: None,
        };
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend(jpeg_metadata_segments(&meta));
        jpeg.extend([0xFF, 0xDA, 0, 2, 0xFF, 0xD9]);
        let (read, _) = jpeg_metadata(&jpeg);
        assert_eq!(read.icc.unwrap(), icc);
    }
}
