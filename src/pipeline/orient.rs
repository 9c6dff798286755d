//! EXIF orientation (values 1–8) applied to interleaved pixels.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Orientation {
    #[default]
    Normal,
    FlipHorizontal,
    Rotate180,
    FlipVertical,
    Transpose,
    Rotate90,
    Transverse,
    Rotate270,
}

impl Orientation {
    pub fn from_exif(value: u16) -> Option<Orientation> {
        use Orientation::*;
        Some(match value {
            1 => Normal,
            2 => FlipHorizontal,
            3 => Rotate180,
            4 => FlipVertical,
            5 => Transpose,
            6 => Rotate90,
            7 => Transverse,
            8 => Rotate270,
            _ => return None,
        })
    }

    /// Orientations 5–8 swap width and height.
    pub fn swaps_axes(self) -> bool {
        use Orientation::*;
        matches!(self, Transpose | Rotate90 | Transverse | Rotate270)
    }

    /// Upright dimensions of a stored `w` × `h` image.
    pub fn upright_size(self, w: u32, h: u32) -> (u32, u32) {
        if self.swaps_axes() {
            (h, w)
        } else {
            (w, h)
        }
    }

    /// The upright copy of a stored image (`channels` interleaved bytes per pixel), or `None`
    /// when it is upright already: the common case costs no copy.
    pub fn apply(self, pixels: &[u8], w: usize, h: usize, channels: usize) -> Option<Vec<u8>> {
        use Orientation::*;
        if self == Normal {
            return None;
        }
        let (ow, oh) = if self.swaps_axes() { (h, w) } else { (w, h) };
        let mut out = vec![0u8; pixels.len()];
        for oy in 0..oh {
            for ox in 0..ow {
                // Which stored pixel is shown at upright (ox, oy).
                let (sx, sy) = match self {
                    Normal => (ox, oy),
                    FlipHorizontal => (w - 1 - ox, oy),
                    Rotate180 => (w - 1 - ox, h - 1 - oy),
                    FlipVertical => (ox, h - 1 - oy),
                    Transpose => (oy, ox),
                    Rotate90 => (oy, h - 1 - ox),
                    Transverse => (w - 1 - oy, h - 1 - ox),
                    Rotate270 => (w - 1 - oy, ox),
                };
                let src = (sy * w + sx) * channels;
                let dst = (oy * ow + ox) * channels;
                out[dst..dst + channels].copy_from_slice(&pixels[src..src + channels]);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3×2 image with distinct pixel values 0..6, one channel.
    const IMG: [u8; 6] = [0, 1, 2, 3, 4, 5];

    fn apply(o: Orientation) -> Vec<u8> {
        o.apply(&IMG, 3, 2, 1).unwrap_or_else(|| IMG.to_vec())
    }

    #[test]
    fn rotate90_turns_the_left_column_into_the_top_row() {
        // Stored:  0 1 2      Upright (rotated clockwise):  3 0
        //          3 4 5                                    4 1
        //                                                   5 2
        assert_eq!(apply(Orientation::Rotate90), [3, 0, 4, 1, 5, 2]);
        assert_eq!(apply(Orientation::Rotate270), [2, 5, 1, 4, 0, 3]);
        assert_eq!(apply(Orientation::Transpose), [0, 3, 1, 4, 2, 5]);
        assert_eq!(apply(Orientation::Transverse), [5, 2, 4, 1, 3, 0]);
        assert_eq!(apply(Orientation::Rotate180), [5, 4, 3, 2, 1, 0]);
        assert_eq!(apply(Orientation::FlipHorizontal), [2, 1, 0, 5, 4, 3]);
        assert_eq!(apply(Orientation::FlipVertical), [3, 4, 5, 0, 1, 2]);
    }
}
