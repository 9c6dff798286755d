//! Format detection from the first bytes of the data: never from a Content-Type header or a
//! file extension, both of which the uploader controls.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    Jpeg,
    Png,
    WebP,
    Gif,
    Tiff,
    Bmp,
    /// HEIF family: HEIC (HEVC) and AVIF (AV1) share the ISO-BMFF container and decoder.
    Heif,
}

impl SourceFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "jpeg",
            SourceFormat::Png => "png",
            SourceFormat::WebP => "webp",
            SourceFormat::Gif => "gif",
            SourceFormat::Tiff => "tiff",
            SourceFormat::Bmp => "bmp",
            SourceFormat::Heif => "heif",
        }
    }
}

/// `ftyp` brands of still images and sequences that libheif decodes.
const HEIF_BRANDS: &[&[u8; 4]] = &[
    b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis",
    b"mif2", b"miaf",
];

pub fn sniff(data: &[u8]) -> Result<SourceFormat> {
    if data.is_empty() {
        return Err(Error::unsupported("empty input (0 bytes)"));
    }
    let format = if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        SourceFormat::Jpeg
    } else if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        SourceFormat::Png
    } else if data.len() >= 12 && &data[0..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        SourceFormat::WebP
    } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        SourceFormat::Gif
    } else if data.starts_with(b"II*\0") || data.starts_with(b"MM\0*") {
        SourceFormat::Tiff
    } else if data.starts_with(b"BM") && data.len() >= 26 {
        SourceFormat::Bmp
    } else if is_heif(data) {
        SourceFormat::Heif
    } else {
        return Err(Error::unsupported(format!(
            "not a supported image (first bytes {})",
            describe_prefix(data)
        )));
    };
    Ok(format)
}

/// An ISO-BMFF `ftyp` box whose major or compatible brands include a HEIF/AVIF brand.
fn is_heif(data: &[u8]) -> bool {
    if data.len() < 16 || &data[4..8] != b"ftyp" {
        return false;
    }
    let box_len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let end = box_len.clamp(16, data.len());
    let major = &data[8..12];
    let compatible = data[16.min(end)..end].chunks_exact(4);
    std::iter::once(major)
        .chain(compatible)
        .any(|brand| HEIF_BRANDS.iter().any(|b| &b[..] == brand))
}

/// A short printable description of unrecognised data, for the error message.
fn describe_prefix(data: &[u8]) -> String {
    let head = &data[..data.len().min(8)];
    let text: String = head
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
    format!("{} \"{}\"", hex.join(" "), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_format_by_magic() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest").unwrap(), SourceFormat::Jpeg);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nIHDR").unwrap(), SourceFormat::Png);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap(), SourceFormat::WebP);
        assert_eq!(sniff(b"GIF89a....").unwrap(), SourceFormat::Gif);
        assert_eq!(sniff(b"II*\0\x08\0\0\0").unwrap(), SourceFormat::Tiff);
        assert_eq!(sniff(b"MM\0*\0\0\0\x08").unwrap(), SourceFormat::Tiff);
        assert_eq!(
            sniff(&[
                b'B', b'M', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ])
            .unwrap(),
            SourceFormat::Bmp
        );
        assert_eq!(
            sniff(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic").unwrap(),
            SourceFormat::Heif
        );
        assert_eq!(
            sniff(b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf").unwrap(),
            SourceFormat::Heif
        );
    }

    #[test]
    fn compatible_brand_is_enough_for_heif() {
        // Some phones write a vendor major brand and list `mif1` as compatible.
        assert_eq!(
            sniff(b"\0\0\0\x14ftypXYZ1\0\0\0\0mif1").unwrap(),
            SourceFormat::Heif
        );
    }

    #[test]
    fn rejects_text_and_video_with_a_readable_message() {
        let err = sniff(b"<!DOCTYPE html><html>").unwrap_err();
        assert!(err.is_permanent());
        assert!(err.message().contains("<!DOCTYP"), "{err}");
        assert!(sniff(b"<svg xmlns=").is_err());
        assert!(sniff(b"\0\0\0\x18ftypmp42\0\0\0\0isommp42").is_err());
        assert!(sniff(b"").unwrap_err().message().contains("empty"));
    }
}
