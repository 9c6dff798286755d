use super::{Decoded, Dimensions, MinScale};
use crate::error::{Error, Result};
use crate::pipeline::colour::PixelModel;
use crate::pipeline::metadata::{self, SourceMetadata};
use libwebp_sys as sys;

/// What the probe read: the bitstream features and the RIFF metadata chunks.
#[derive(Debug, Clone)]
pub struct Header {
    pub dims: Dimensions,
    pub has_alpha: bool,
    pub animated: bool,
    pub meta: SourceMetadata,
}

pub fn probe(data: &[u8]) -> Result<Header> {
    let mut features = std::mem::MaybeUninit::<sys::WebPBitstreamFeatures>::zeroed();
    // SAFETY: WebPGetFeatures reads at most `data.len()` bytes and fills `features`.
    let status = unsafe { sys::WebPGetFeatures(data.as_ptr(), data.len(), features.as_mut_ptr()) };
    if status != sys::VP8StatusCode::VP8_STATUS_OK {
        return Err(Error::corrupt(format!(
            "WebP: unreadable header ({status:?})"
        )));
    }
    // SAFETY: initialised by the successful call above.
    let features = unsafe { features.assume_init() };
    let frames = metadata::riff_chunks(data)
        .iter()
        .filter(|(fourcc, _)| fourcc == b"ANMF")
        .count()
        .max(1) as u32;
    Ok(Header {
        dims: Dimensions {
            width: features.width as u32,
            height: features.height as u32,
            frames,
        },
        has_alpha: features.has_alpha != 0,
        animated: features.has_animation != 0,
        meta: metadata::webp_metadata(data),
    })
}

pub fn decode(data: &[u8], header: Header, min_scale: MinScale) -> Result<Decoded> {
    let Header {
        dims: probe,
        has_alpha,
        animated,
        meta,
    } = header;
    if animated {
        return decode_first_frame(data, probe, meta);
    }
    let scale = min_scale(probe.width, probe.height, meta.orientation).clamp(0.0, 1.0);
    // libwebp scales while converting colour: far less work and memory than full size.
    let sw = ((probe.width as f64 * scale).ceil() as u32).clamp(1, probe.width);
    let sh = ((probe.height as f64 * scale).ceil() as u32).clamp(1, probe.height);
    let channels: u8 = if has_alpha { 4 } else { 3 };
    let mut pixels = vec![0u8; sw as usize * sh as usize * channels as usize];

    let mut config =
        sys::WebPDecoderConfig::new().map_err(|_| Error::io("WebP: decoder version mismatch"))?;
    config.options.use_threads = 0;
    if (sw, sh) != (probe.width, probe.height) {
        config.options.use_scaling = 1;
        config.options.scaled_width = sw as i32;
        config.options.scaled_height = sh as i32;
    }
    config.output.colorspace = if has_alpha {
        sys::WEBP_CSP_MODE::MODE_RGBA
    } else {
        sys::WEBP_CSP_MODE::MODE_RGB
    };
    config.output.is_external_memory = 1;
    config.output.u.RGBA = sys::WebPRGBABuffer {
        rgba: pixels.as_mut_ptr(),
        stride: (sw * channels as u32) as i32,
        size: pixels.len(),
    };
    // SAFETY: the output points into `pixels`, which outlives the call and has exactly
    // `size` bytes; libwebp writes only within stride × height.
    let status = unsafe { sys::WebPDecode(data.as_ptr(), data.len(), &mut config) };
    unsafe { sys::WebPFreeDecBuffer(&mut config.output) };
    if status != sys::VP8StatusCode::VP8_STATUS_OK {
        return Err(Error::corrupt(format!("WebP: cannot decode ({status:?})")));
    }
    Ok(Decoded {
        pixels: pixels.into(),
        width: sw,
        height: sh,
        channels,
        model: PixelModel::Rgb,
        source_width: probe.width,
        source_height: probe.height,
        meta,
    })
}

/// Animated WebP: the first frame, composited on the canvas, like GIFs.
fn decode_first_frame(data: &[u8], probe: Dimensions, meta: SourceMetadata) -> Result<Decoded> {
    let webp_data = sys::WebPData {
        bytes: data.as_ptr(),
        size: data.len(),
    };
    let mut options = std::mem::MaybeUninit::<sys::WebPAnimDecoderOptions>::zeroed();
    // SAFETY: the options struct is initialised by the library before use; the decoder
    // borrows `data` only for its lifetime, which ends in this function.
    unsafe {
        if sys::WebPAnimDecoderOptionsInit(options.as_mut_ptr()) == 0 {
            return Err(Error::io("WebP: anim decoder version mismatch"));
        }
        let mut options = options.assume_init();
        options.color_mode = sys::WEBP_CSP_MODE::MODE_RGBA;
        options.use_threads = 0;
        let dec = sys::WebPAnimDecoderNew(&webp_data, &options);
        if dec.is_null() {
            return Err(Error::corrupt("WebP: cannot read the animation"));
        }
        let mut buf: *mut u8 = std::ptr::null_mut();
        let mut timestamp = 0;
        let ok = sys::WebPAnimDecoderGetNext(dec, &mut buf, &mut timestamp);
        let len = probe.width as usize * probe.height as usize * 4;
        let pixels =
            (ok != 0 && !buf.is_null()).then(|| std::slice::from_raw_parts(buf, len).to_vec());
        sys::WebPAnimDecoderDelete(dec);
        let pixels = pixels.ok_or_else(|| Error::corrupt("WebP: cannot decode the first frame"))?;
        Ok(Decoded {
            pixels: pixels.into(),
            width: probe.width,
            height: probe.height,
            channels: 4,
            model: PixelModel::Rgb,
            source_width: probe.width,
            source_height: probe.height,
            meta,
        })
    }
}
