//! Progressive JPEGs decoded at 1/8 scale need only their DC scans: cutting the AC scans of
//! the full-resolution components saves most of the entropy decoding.

/// A copy of a progressive JPEG without the AC scans of its full-resolution components
/// (at 1/8 scale their IDCT reads only the DC coefficient). Subsampled chroma keeps its AC
/// scans: libjpeg scales it with a 2×2 IDCT rather than upsampling. `None` if the structure
/// is not what we expect, in which case the caller decodes the original.
pub fn dc_scans(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2);
    out.extend_from_slice(&data[..2]);
    // (table id, offset in `out` of its Q01 entry, entry size)
    let mut q01_entries: Vec<(u8, usize, usize)> = Vec::new();
    // (component id, sampling factors h, v, quantisation table)
    let mut components: Vec<(u8, u8, u8, u8)> = Vec::new();
    let mut dropped_any = false;
    let mut pos = 2;
    loop {
        if pos + 2 > data.len() || data[pos] != 0xFF {
            return None;
        }
        let marker = data[pos + 1];
        match marker {
            0xFF => {
                pos += 1;
                continue;
            }
            0xD9 => break,
            0xD0..=0xD7 | 0x01 => return None,
            _ if pos + 4 > data.len() => return None,
            _ => {}
        }
        let len = u16::from_be_bytes([data[pos + 2], data[pos + 3]]) as usize;
        let segment_end = pos + 2 + len;
        if len < 2 || segment_end > data.len() {
            return None;
        }
        let payload = &data[pos + 4..segment_end];
        match marker {
            0xDB => {
                let base = out.len() + 4;
                let mut at = 0;
                while at < payload.len() {
                    let entry = if payload[at] >> 4 != 0 { 2 } else { 1 };
                    if at + 1 + 64 * entry > payload.len() {
                        return None;
                    }
                    q01_entries.push((payload[at] & 0x0F, base + at + 1 + entry, entry));
                    at += 1 + 64 * entry;
                }
            }
            0xC2 => {
                let n = *payload.get(5)? as usize;
                for c in payload.get(6..6 + 3 * n)?.chunks_exact(3) {
                    components.push((c[0], c[1] >> 4, c[1] & 0x0F, c[2]));
                }
            }
            _ => {}
        }
        if marker != 0xDA {
            out.extend_from_slice(&data[pos..segment_end]);
            pos = segment_end;
            continue;
        }
        // SOS: Ns, Ns × (id, tables), Ss, Se, AhAl. AC scans have exactly one component.
        let ns = *payload.first()? as usize;
        let ss = *payload.get(1 + 2 * ns)?;
        let scan_end = entropy_data_end(data, segment_end);
        let drop = ss > 0 && ns == 1 && is_full_resolution(&components, payload[1]);
        if drop {
            dropped_any = true;
        } else {
            out.extend_from_slice(&data[pos..scan_end]);
        }
        pos = scan_end;
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    if !dropped_any {
        return None;
    }
    // libjpeg "smooths" progressive images whose AC coefficients are missing, guessing them
    // (and, since libjpeg-turbo 2.1, the DC too) from neighbouring blocks: right for a
    // half-loaded web image, wrong here, where AC scans were dropped on purpose. It skips
    // smoothing when a low AC quantiser is 0, so zero Q01 of the tables that only
    // full-resolution components use: their AC coefficients are all zero now anyway.
    let full_res_only = |table: u8| {
        let users: Vec<_> = components.iter().filter(|c| c.3 == table).collect();
        !users.is_empty() && users.iter().all(|c| is_full_resolution(&components, c.0))
    };
    let mut zeroed = false;
    for &(table, at, entry) in &q01_entries {
        if full_res_only(table) {
            out[at..at + entry].fill(0);
            zeroed = true;
        }
    }
    zeroed.then_some(out)
}

fn is_full_resolution(components: &[(u8, u8, u8, u8)], id: u8) -> bool {
    let max_h = components.iter().map(|c| c.1).max().unwrap_or(0);
    let max_v = components.iter().map(|c| c.2).max().unwrap_or(0);
    components
        .iter()
        .any(|c| c.0 == id && c.1 == max_h && c.2 == max_v)
}

/// Entropy-coded data ends at the first marker that is neither a stuffed 0xFF00 nor a
/// restart marker.
fn entropy_data_end(data: &[u8], mut pos: usize) -> usize {
    while pos + 1 < data.len() {
        if data[pos] == 0xFF {
            let next = data[pos + 1];
            if next != 0x00 && !(0xD0..=0xD7).contains(&next) && next != 0xFF {
                return pos;
            }
        }
        pos += 1;
    }
    data.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_at_one_eighth(bytes: &[u8]) -> Vec<u8> {
        let eighth = turbojpeg::ScalingFactor::ONE_EIGHTH;
        let mut d = turbojpeg::Decompressor::new().unwrap();
        d.set_scaling_factor(eighth).unwrap();
        let h = d.read_header(bytes).unwrap().scaled(eighth);
        let mut img = turbojpeg::Image {
            pixels: vec![0u8; h.width * h.height * 3],
            width: h.width,
            pitch: h.width * 3,
            height: h.height,
            format: turbojpeg::PixelFormat::RGB,
        };
        d.decompress(bytes, img.as_deref_mut()).unwrap();
        img.pixels
    }

    #[test]
    fn dc_only_decode_of_a_progressive_jpeg_is_pixel_identical_at_one_eighth() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let corpus = std::env::var_os("RESIZEQ_CORPUS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join("../shared/corpus"));
        let mut files = vec![root.join("tests/fixtures/progressive.jpg")];
        // 4:4:4 and 4:2:0 progressive photos, when the corpus is here.
        for name in [
            "jpg03_infinite-sea.jpg",
            "jpg05_seeding.jpg",
            "jpg13_volna.jpg",
            "small01_greenmeadow.jpg",
        ] {
            if corpus.join(name).is_file() {
                files.push(corpus.join(name));
            }
        }
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let stripped = dc_scans(&data).expect("parses");
            assert!(
                stripped.len() < data.len(),
                "{}: AC scans removed",
                file.display()
            );
            assert!(
                decode_at_one_eighth(&stripped) == decode_at_one_eighth(&data),
                "{}: same pixels",
                file.display()
            );
        }
    }
}
