//! The pipeline on real files: committed fixtures for every format and edge case, and the
//! shared corpus of real photos (`../shared/corpus` or `RESIZEQ_CORPUS`).

use crate::common::{corpus_dir, fixture};

use resizeq::pipeline::{
    ColourPolicy, MetadataPolicy, OutputFormat, Pipeline, PipelineSettings, VariantSpec,
};
use resizeq::ErrorKind;

fn default_pipeline() -> Pipeline {
    Pipeline::new(PipelineSettings::default()).unwrap()
}

fn pipeline_with(variants: Vec<VariantSpec>, edit: impl FnOnce(&mut PipelineSettings)) -> Pipeline {
    let mut settings = PipelineSettings {
        variants,
        ..Default::default()
    };
    edit(&mut settings);
    Pipeline::new(settings).unwrap()
}

/// Decodes an output with an independent decoder (image's zune-jpeg / png / image-webp).
fn decode_rgba(bytes: &[u8]) -> image::RgbaImage {
    image::load_from_memory(bytes)
        .expect("output decodes")
        .to_rgba8()
}

fn assert_colour(img: &image::RgbaImage, x: u32, y: u32, want: [u8; 3], what: &str) {
    let px = img.get_pixel(x, y).0;
    let close = (0..3).all(|c| (px[c] as i32 - want[c] as i32).abs() <= 40);
    assert!(
        close,
        "{what}: pixel ({x},{y}) is {:?}, want {want:?}",
        &px[..3]
    );
}

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];

/// The fixtures' "quad card": red, green / blue, white, checked at the quadrant centres.
fn assert_quad_card(img: &image::RgbaImage, corners: [[u8; 3]; 4], what: &str) {
    let (w, h) = img.dimensions();
    assert_colour(img, w / 4, h / 4, corners[0], &format!("{what} top-left"));
    assert_colour(
        img,
        3 * w / 4,
        h / 4,
        corners[1],
        &format!("{what} top-right"),
    );
    assert_colour(
        img,
        w / 4,
        3 * h / 4,
        corners[2],
        &format!("{what} bottom-left"),
    );
    assert_colour(
        img,
        3 * w / 4,
        3 * h / 4,
        corners[3],
        &format!("{what} bottom-right"),
    );
}

#[test]
fn every_exif_orientation_comes_out_upright() {
    let pipeline = default_pipeline();
    let mut names: Vec<String> = (1..=8).map(|n| format!("orient-{n}.jpg")).collect();
    names.extend(
        [
            "orient-6.png",
            "orient-6.webp",
            "orient-6.heic",
            "orient-6.avif",
        ]
        .map(String::from),
    );
    for name in names {
        let out = pipeline
            .process(&fixture(&name), &name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for v in &out.variants {
            assert_eq!((v.width, v.height), (48, 32), "{name} variant {}", v.name);
            let img = decode_rgba(&v.bytes);
            assert_eq!(img.dimensions(), (48, 32), "{name}");
            assert_quad_card(&img, [RED, GREEN, BLUE, WHITE], &name);
            assert!(
                !contains(&v.bytes, b"Exif\0\0"),
                "{name}: output must carry no EXIF (and so no orientation tag)"
            );
        }
    }
}

#[test]
fn one_small_file_of_every_format_gives_both_variants() {
    let pipeline = default_pipeline();
    for name in [
        "tiny.jpg",
        "progressive.jpg",
        "tiny.png",
        "tiny.gif",
        "tiny.tiff",
        "tiny.bmp",
        "tiny.webp",
        "tiny-lossless.webp",
        "tiny.heic",
        "tiny.avif",
        "actually-png.jpg",
    ] {
        let out = pipeline
            .process(&fixture(name), name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let sizes: Vec<(u32, u32)> = out.variants.iter().map(|v| (v.width, v.height)).collect();
        assert_eq!(
            sizes,
            [(80, 53), (120, 80)],
            "{name}: 80 wide, and 500 not upscaled from 120"
        );
        for v in &out.variants {
            assert_eq!(v.content_type(), "image/jpeg");
            let img = decode_rgba(&v.bytes);
            assert_eq!(img.dimensions(), (v.width, v.height));
            assert_quad_card(&img, [RED, GREEN, BLUE, WHITE], name);
        }
    }
}

#[test]
fn gif_renders_its_first_frame() {
    let out = default_pipeline()
        .process(&fixture("tiny.gif"), "a.gif")
        .unwrap();
    let img = decode_rgba(&out.variants[1].bytes);
    assert_colour(
        &img,
        30,
        20,
        RED,
        "first frame's top-left is red (later frames are green, blue)",
    );
}

#[test]
fn grayscale_and_cmyk_jpegs_decode_to_the_right_colours() {
    let out = default_pipeline()
        .process(&fixture("cmyk.jpg"), "c.jpg")
        .unwrap();
    let img = decode_rgba(&out.variants[1].bytes);
    // Pure inks (M+Y, C+Y, C+M, K) through the FOGRA39 fallback profile: press red, green,
    // blue and black, which are far from sRGB's primaries (a naive conversion gives those).
    let want = colour_reference("../cmyk.jpg", "srgb");
    assert_quadrants_near(&img, want, LOSSY_DE, "Adobe CMYK without a profile");
    let out = default_pipeline()
        .process(&fixture("gray.jpg"), "g.jpg")
        .unwrap();
    let img = decode_rgba(&out.variants[1].bytes);
    assert_quad_card(&img, [[0; 3], [85; 3], [170; 3], [255; 3]], "grayscale");
}

#[test]
fn small_sources_are_not_upscaled_unless_enlarge_is_set() {
    let out = default_pipeline()
        .process(&fixture("small-60x40.jpg"), "s.jpg")
        .unwrap();
    for v in &out.variants {
        assert_eq!((v.width, v.height), (60, 40));
        assert_eq!(decode_rgba(&v.bytes).dimensions(), (60, 40));
    }
    let mut big = VariantSpec::jpeg_width(80);
    big.enlarge = true;
    let out = pipeline_with(vec![big], |_| {})
        .process(&fixture("small-60x40.jpg"), "s.jpg")
        .unwrap();
    assert_eq!((out.variants[0].width, out.variants[0].height), (80, 53));
}

#[test]
fn alpha_is_flattened_onto_the_background_for_jpeg_and_kept_for_png() {
    let mut png = VariantSpec::jpeg_width(60);
    png.format = OutputFormat::Png;
    png.name = Some("png".into());
    let mut webp = VariantSpec::jpeg_width(60);
    webp.format = OutputFormat::Webp;
    webp.name = Some("webp".into());
    let pipeline = pipeline_with(vec![VariantSpec::jpeg_width(60), png, webp], |s| {
        s.output.background = "#000000".into();
        s.output.key_template = "{name}/{key}.{ext}".into();
    });
    let out = pipeline.process(&fixture("alpha.png"), "a.png").unwrap();
    let jpeg = decode_rgba(&out.variants[0].bytes);
    assert_colour(
        &jpeg,
        10,
        20,
        BLACK,
        "transparent half shows the background, never magenta",
    );
    assert_colour(&jpeg, 28, 20, BLACK, "no magenta fringe next to the edge");
    assert_colour(&jpeg, 50, 20, [0, 128, 255], "opaque half keeps its colour");
    for v in &out.variants[1..] {
        let img = decode_rgba(&v.bytes);
        assert_eq!(img.dimensions(), (60, 40), "{}", v.name);
        assert!(
            img.get_pixel(10, 20).0[3] < 10,
            "{}: transparent stays transparent",
            v.name
        );
        assert!(
            img.get_pixel(50, 20).0[3] > 245,
            "{}: opaque stays opaque",
            v.name
        );
        assert_colour(&img, 50, 20, [0, 128, 255], &v.name);
    }
    assert_eq!(out.variants[1].content_type(), "image/png");
    assert_eq!(out.variants[2].content_type(), "image/webp");
    assert!(
        out.variants[2].key.ends_with("a.png.webp"),
        "{}",
        out.variants[2].key
    );
}

#[test]
fn fit_cover_and_fill_give_exact_boxes() {
    let mut cover = VariantSpec::jpeg_width(40);
    cover.height = Some(40);
    cover.fit = resizeq::pipeline::Fit::Cover;
    cover.name = Some("cover".into());
    let mut fill = cover.clone();
    fill.fit = resizeq::pipeline::Fit::Fill;
    fill.height = Some(20);
    fill.name = Some("fill".into());
    let pipeline = pipeline_with(vec![cover, fill], |s| {
        s.output.key_template = "{name}/{key}".into()
    });
    let out = pipeline.process(&fixture("tiny.png"), "t.png").unwrap();
    let cover = decode_rgba(&out.variants[0].bytes);
    assert_eq!(cover.dimensions(), (40, 40));
    // The centre square of a 120x80 quad card still has all four colours.
    assert_quad_card(&cover, [RED, GREEN, BLUE, WHITE], "cover");
    assert_eq!(decode_rgba(&out.variants[1].bytes).dimensions(), (40, 20));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn exif_of(jpeg: &[u8]) -> Option<exif::Exif> {
    let at = jpeg.windows(6).position(|w| w == b"Exif\0\0")?;
    let len = u16::from_be_bytes([jpeg[at - 2], jpeg[at - 1]]) as usize;
    exif::Reader::new()
        .continue_on_error(true)
        .read_raw(jpeg[at + 6..at - 2 + len].to_vec())
        .or_else(|e| e.distill_partial_result(|_| {}))
        .ok()
}

#[test]
fn default_output_strips_exif_xmp_gps_and_the_profile() {
    let out = default_pipeline()
        .process(&fixture("meta.jpg"), "m.jpg")
        .unwrap();
    for v in &out.variants {
        let b = &v.bytes;
        // Its sRGB profile says nothing an untagged image does not.
        assert!(
            !contains(b, b"ICC_PROFILE\0"),
            "no ICC under output.color = srgb"
        );
        for marker in [
            &b"Exif\0\0"[..],
            b"ResizeqTestMake",
            b"RESIZEQ-XMP-MARKER",
            b"RESIZEQ-XMPEXT-MARKER",
            b"RESIZEQ-IPTC-MARKER",
            b"http://ns.adobe.com",
        ] {
            assert!(
                !contains(b, marker),
                "{} must be stripped",
                String::from_utf8_lossy(marker)
            );
        }
        assert_quad_card(
            &decode_rgba(b),
            [RED, GREEN, BLUE, WHITE],
            "meta.jpg (not its magenta thumbnail)",
        );
    }
}

#[test]
fn keep_policy_keeps_exif_without_gps_orientation_or_extended_xmp() {
    let pipeline = pipeline_with(resizeq::pipeline::settings::default_variants(), |s| {
        s.output.metadata = MetadataPolicy::Keep;
        s.output.color = ColourPolicy::Keep;
    });
    let out = pipeline.process(&fixture("meta.jpg"), "m.jpg").unwrap();
    let b = &out.variants[1].bytes;
    assert!(contains(b, b"ResizeqTestMake"), "EXIF kept");
    assert!(contains(b, b"RESIZEQ-XMP-MARKER"), "main XMP kept");
    assert!(
        contains(b, b"ICC_PROFILE\0"),
        "ICC kept (output.color = keep)"
    );
    assert!(
        !contains(b, b"RESIZEQ-XMPEXT-MARKER"),
        "extended XMP never copied"
    );
    assert!(
        !contains(b, b"RESIZEQ-IPTC-MARKER"),
        "other APPn never copied"
    );
    let exif = exif_of(b).expect("EXIF parses");
    assert!(
        exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
            .is_none(),
        "no orientation tag"
    );
    assert!(
        exif.get_field(exif::Tag::GPSLatitude, exif::In::PRIMARY)
            .is_none(),
        "no GPS by default"
    );
    assert!(
        exif.get_field(exif::Tag::DateTimeOriginal, exif::In::PRIMARY)
            .is_some(),
        "Exif IFD kept"
    );
    assert!(
        exif.fields().all(|f| f.ifd_num == exif::In::PRIMARY),
        "no thumbnail IFD"
    );

    let pipeline = pipeline_with(resizeq::pipeline::settings::default_variants(), |s| {
        s.output.metadata = MetadataPolicy::Keep;
        s.output.keep_gps = true;
    });
    let out = pipeline.process(&fixture("meta.jpg"), "m.jpg").unwrap();
    let exif = exif_of(&out.variants[1].bytes).expect("EXIF parses");
    assert!(
        exif.get_field(exif::Tag::GPSLatitude, exif::In::PRIMARY)
            .is_some(),
        "keep_gps keeps GPS"
    );
}

#[test]
fn keep_policy_carries_exif_into_png_and_webp_outputs_too() {
    let mut png = VariantSpec::jpeg_width(100);
    png.format = OutputFormat::Png;
    let mut webp = VariantSpec::jpeg_width(100);
    webp.format = OutputFormat::Webp;
    let pipeline = pipeline_with(vec![png, webp], |s| {
        s.output.metadata = MetadataPolicy::Keep;
        s.output.key_template = "{ext}/{key}".into();
    });
    let out = pipeline.process(&fixture("meta.jpg"), "m.jpg").unwrap();
    for v in &out.variants {
        assert!(
            contains(&v.bytes, b"ResizeqTestMake"),
            "{}: EXIF kept",
            v.name
        );
        assert!(!contains(&v.bytes, b"RESIZEQ-XMPEXT-MARKER"), "{}", v.name);
        assert_eq!(decode_rgba(&v.bytes).dimensions(), (100, 75), "{}", v.name);
    }
    assert!(
        contains(&out.variants[1].bytes, b"RESIZEQ-XMP-MARKER"),
        "WebP keeps the main XMP"
    );
}

#[test]
fn keep_policy_drops_the_orientation_of_rotated_sources() {
    let pipeline = pipeline_with(resizeq::pipeline::settings::default_variants(), |s| {
        s.output.metadata = MetadataPolicy::Keep
    });
    let out = pipeline.process(&fixture("orient-6.jpg"), "o.jpg").unwrap();
    let b = &out.variants[0].bytes;
    // No EXIF left at all, or EXIF without an orientation: both mean "already upright".
    assert!(exif_of(b).is_none_or(|exif| exif
        .get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .is_none()));
    assert_quad_card(
        &decode_rgba(b),
        [RED, GREEN, BLUE, WHITE],
        "kept metadata, still upright",
    );
}

#[test]
fn hostile_inputs_are_permanent_errors_of_the_right_kind() {
    let pipeline = default_pipeline();
    for (name, kind) in [
        ("empty.jpg", ErrorKind::Unsupported),
        ("random.bin", ErrorKind::Unsupported),
        ("page.jpg", ErrorKind::Unsupported),
        ("drawing.jpg", ErrorKind::Unsupported),
        ("text.txt", ErrorKind::Unsupported),
        ("truncated.jpg", ErrorKind::Corrupt),
        ("huge-dims.png", ErrorKind::TooLarge),
        ("huge-dims.jpg", ErrorKind::TooLarge),
        ("many-frames.gif", ErrorKind::TooLarge),
    ] {
        let err = pipeline.process(&fixture(name), name).expect_err(name);
        assert_eq!(err.kind(), kind, "{name}: {err}");
        assert!(err.is_permanent(), "{name}");
        assert!(!err.message().is_empty());
    }
}

#[test]
fn source_bytes_over_the_limit_are_refused_before_decoding() {
    let pipeline = pipeline_with(resizeq::pipeline::settings::default_variants(), |s| {
        s.limits.max_source_bytes = 1000
    });
    let err = pipeline.process(&fixture("tiny.jpg"), "t.jpg").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(err.message().contains("max_source_bytes"), "{err}");
}

#[test]
fn heic_irot_is_applied_once() {
    // orient-6.heic carries irot 270 *and* EXIF Orientation 6, like iPhone photos.
    let out = default_pipeline()
        .process(&fixture("orient-6.heic"), "o.heic")
        .unwrap();
    assert_eq!((out.source_width, out.source_height), (48, 32));
}

/// Sizes from the corpus README (upright), independent of our decoders.
const CORPUS: &[(&str, u32, u32)] = &[
    ("heic02_arrow.heic", 3024, 4032),
    ("heic03_xiaomi.heic", 2592, 1944),
    ("heic05_spatial-photo.heic", 2560, 2560),
    ("jpg01_painting-colors.jpg", 6000, 4000),
    ("jpg03_infinite-sea.jpg", 4096, 4096),
    ("jpg05_seeding.jpg", 5312, 2988),
    ("jpg07_sunset.jpg", 4272, 2848),
    ("jpg09_wine.jpg", 2560, 3837),
    ("jpg11_umang.jpg", 3840, 2160),
    ("jpg13_volna.jpg", 5120, 2880),
    ("jpg15_shell.jpg", 5120, 2880),
    ("jpg17_flow.jpg", 5120, 2880),
    ("jpg19_the-mouse.jpg", 3840, 2400),
    ("jpg21_firstgeneration.jpg", 3640, 2400),
    ("png01_flowers.png", 3000, 1993),
    ("png03_kay.png", 5120, 2880),
    ("small01_greenmeadow.jpg", 1280, 1024),
    ("small03_flow-phone.jpg", 720, 1440),
    ("webp01_adwaita-l.webp", 4096, 4096),
    ("webp03_pixels-d.webp", 4096, 4096),
];

#[test]
fn every_corpus_photo_yields_both_variants_at_the_expected_size() {
    let Some(dir) = corpus_dir() else { return };
    let pipeline = default_pipeline();
    for &(name, w, h) in CORPUS {
        let data = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = pipeline
            .process(&data, name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((out.source_width, out.source_height), (w, h), "{name}");
        for (v, target) in out.variants.iter().zip([80u32, 500]) {
            let expect_w = target.min(w);
            let expect_h = ((h as f64 * expect_w as f64 / w as f64).round() as u32).max(1);
            assert_eq!(
                (v.width, v.height),
                (expect_w, expect_h),
                "{name} {}",
                v.name
            );
            let img = decode_rgba(&v.bytes);
            assert_eq!(
                img.dimensions(),
                (expect_w, expect_h),
                "{name} {} decodes",
                v.name
            );
            assert_eq!(v.key, format!("{target}/{name}.jpg"));
        }
    }
}

#[test]
fn corpus_icc_profiles_are_kept_only_under_the_keep_policy() {
    let Some(dir) = corpus_dir() else { return };
    let srgb = default_pipeline();
    let keep = pipeline_with(PipelineSettings::default().variants, |s| {
        s.output.color = ColourPolicy::Keep;
    });
    for name in [
        "jpg01_painting-colors.jpg",
        "png01_flowers.png",
        "heic02_arrow.heic",
    ] {
        let data = std::fs::read(dir.join(name)).unwrap();
        let out = srgb.process(&data, name).unwrap();
        assert!(
            !contains(&out.variants[0].bytes, b"ICC_PROFILE\0"),
            "{name}"
        );
        let out = keep.process(&data, name).unwrap();
        assert!(contains(&out.variants[0].bytes, b"ICC_PROFILE\0"), "{name}");
        assert!(!contains(&out.variants[0].bytes, b"Exif\0\0"), "{name}");
    }
}

// --- Colour management (tests/fixtures/colour, made by make_colour_fixtures.py) -------------

/// sRGB references per fixture, computed with Pillow's ImageCms and cross-checked with jpgicc
/// by the fixture script.
fn colour_reference(name: &str, field: &str) -> [[u8; 3]; 4] {
    let text = String::from_utf8(fixture("colour/reference.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let patches = json[name][field]
        .as_array()
        .unwrap_or_else(|| panic!("reference.json has no {name}.{field}"));
    let mut out = [[0u8; 3]; 4];
    for (o, p) in out.iter_mut().zip(patches) {
        for (c, v) in o.iter_mut().zip(p.as_array().unwrap()) {
            *c = v.as_u64().unwrap() as u8;
        }
    }
    out
}

/// CIE L*a*b* (D65) of an 8-bit sRGB colour.
fn lab(rgb: [u8; 3]) -> [f64; 3] {
    let lin = |c: u8| {
        let c = c as f64 / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(rgb[0]), lin(rgb[1]), lin(rgb[2]));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f64| {
        if t > 216.0 / 24389.0 {
            t.cbrt()
        } else {
            (24389.0 / 27.0 * t + 16.0) / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// CIE76 colour difference.
fn delta_e(a: [u8; 3], b: [u8; 3]) -> f64 {
    let (a, b) = (lab(a), lab(b));
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// The quadrant centres of `img` within `max_de` of `want` (TL, TR, BL, BR).
fn assert_quadrants_near(img: &image::RgbaImage, want: [[u8; 3]; 4], max_de: f64, what: &str) {
    let (w, h) = img.dimensions();
    let centres = [
        (w / 4, h / 4),
        (3 * w / 4, h / 4),
        (w / 4, 3 * h / 4),
        (3 * w / 4, 3 * h / 4),
    ];
    for ((x, y), want) in centres.into_iter().zip(want) {
        let px = img.get_pixel(x, y).0;
        let got = [px[0], px[1], px[2]];
        let de = delta_e(got, want);
        assert!(
            de <= max_de,
            "{what}: pixel ({x},{y}) is {got:?}, reference {want:?}: ΔE {de:.2} > {max_de}"
        );
    }
}

/// Whether an output carries an ICC profile (JPEG APP2, PNG iCCP, WebP ICCP, AVIF colr).
fn carries_icc(bytes: &[u8]) -> bool {
    contains(bytes, b"ICC_PROFILE\0")
        || contains(bytes, b"iCCP")
        || contains(bytes, b"ICCP")
        || contains(bytes, b"colrprof")
        || contains(bytes, b"colrrICC")
}

/// One 32 px variant per format: lossless PNG for colour checks, and the lossy formats.
fn colour_variants() -> Vec<VariantSpec> {
    [
        OutputFormat::Png,
        OutputFormat::Jpeg,
        OutputFormat::Webp,
        OutputFormat::Avif,
    ]
    .into_iter()
    .map(|format| {
        let mut v = VariantSpec::jpeg_width(32);
        v.format = format;
        v.quality = format.default_quality();
        v
    })
    .collect()
}

fn colour_pipeline(policy: ColourPolicy) -> Pipeline {
    pipeline_with(colour_variants(), |s| {
        s.output.color = policy;
        s.output.key_template = "{width}/{key}.{ext}".into();
    })
}

/// Lossless output: references hold to ΔE 3 (8-bit LUT rounding, JPEG source coding);
/// the lossy formats' flat patches to ΔE 6.
const PNG_DE: f64 = 3.0;
const LOSSY_DE: f64 = 6.0;

fn check_converted(name: &str, policy: ColourPolicy) {
    let out = colour_pipeline(policy)
        .process(&fixture(&format!("colour/{name}")), name)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let want = colour_reference(name, "srgb");
    for v in &out.variants {
        let what = format!("{name} {:?} as {:?}", policy, v.format);
        assert!(!carries_icc(&v.bytes), "{what}: carries no profile");
        let img = decode_any(&v.bytes, v.format);
        assert_eq!(img.dimensions(), (32, 32), "{what}");
        let de = if v.format == OutputFormat::Png {
            PNG_DE
        } else {
            LOSSY_DE
        };
        assert_quadrants_near(&img, want, de, &what);
    }
}

#[test]
fn colour_cmyk_grey_and_p3_sources_are_converted_to_srgb_without_a_profile() {
    for name in [
        "cmyk-swop.jpg",
        "cmyk-adobe.jpg",
        "gray-gamma18.jpg",
        "p3.jpg",
    ] {
        check_converted(name, ColourPolicy::Srgb);
    }
    // `keep` keeps only RGB profiles: CMYK and grey still come out as sRGB.
    for name in ["cmyk-swop.jpg", "cmyk-adobe.jpg", "gray-gamma18.jpg"] {
        check_converted(name, ColourPolicy::Keep);
    }
}

#[test]
fn colour_keep_policy_keeps_a_small_rgb_profile_and_its_pixels() {
    let data = fixture("colour/p3.jpg");
    let out = colour_pipeline(ColourPolicy::Keep)
        .process(&data, "p3.jpg")
        .unwrap();
    let source = colour_reference("p3.jpg", "source");
    let p3_profile = {
        // The source's APP2 payload after the 14-byte ICC_PROFILE header: the same bytes must
        // be in every output.
        let at = data
            .windows(12)
            .position(|w| w == b"ICC_PROFILE\0")
            .unwrap();
        let len = u16::from_be_bytes([data[at - 2], data[at - 1]]) as usize;
        data[at + 14..at - 2 + len].to_vec()
    };
    for v in &out.variants {
        let what = format!("p3.jpg keep as {:?}", v.format);
        let attached = if v.format == OutputFormat::Png {
            // iCCP is deflated: read it back with the png decoder.
            use image::ImageDecoder;
            let mut png =
                image::codecs::png::PngDecoder::new(std::io::Cursor::new(&v.bytes)).unwrap();
            png.icc_profile().unwrap() == Some(p3_profile.clone())
        } else {
            contains(&v.bytes, &p3_profile)
        };
        assert!(attached, "{what}: P3 profile attached");
        let de = if v.format == OutputFormat::Png {
            PNG_DE
        } else {
            LOSSY_DE
        };
        assert_quadrants_near(&decode_any(&v.bytes, v.format), source, de, &what);
    }
}

#[test]
fn colour_icc_bomb_and_one_megabyte_profile_give_small_correct_outputs() {
    for policy in [ColourPolicy::Srgb, ColourPolicy::Keep] {
        // The 1 MiB profile is too big to keep: converted through it, not attached.
        check_converted("big-profile.jpg", policy);
        // The iCCP chunk that inflates to 100 MB is not read: the pixels are taken as sRGB.
        check_converted("icc-bomb.png", policy);
    }
    let pipeline = pipeline_with(default_variants_for_colour(), |_| {});
    for name in ["big-profile.jpg", "icc-bomb.png"] {
        let out = pipeline
            .process(&fixture(&format!("colour/{name}")), name)
            .unwrap();
        for v in &out.variants {
            assert!(
                v.bytes.len() < 10_000,
                "{name} {}: {} bytes",
                v.name,
                v.bytes.len()
            );
        }
    }
}

fn default_variants_for_colour() -> Vec<VariantSpec> {
    PipelineSettings::default().variants
}

#[test]
fn colour_foreign_and_unparsable_profiles_are_ignored() {
    for policy in [ColourPolicy::Srgb, ColourPolicy::Keep] {
        // An RGB JPEG tagged with a CMYK profile, and one whose profile is junk: the image
        // renders, the profile is neither applied nor attached.
        check_converted("rgb-cmyk-profile.jpg", policy);
        check_converted("bad-profile.jpg", policy);
    }
}

/// Decodes an output with a decoder independent of the one that wrote it: image's
/// zune-jpeg / png / image-webp, and libavif's `avifdec` (its own container parser) for AVIF.
fn decode_any(bytes: &[u8], format: OutputFormat) -> image::RgbaImage {
    if format != OutputFormat::Avif {
        return decode_rgba(bytes);
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("in.avif"), dir.path().join("out.png"));
    std::fs::write(&src, bytes).unwrap();
    let status = std::process::Command::new("avifdec")
        .arg(&src)
        .arg(&dst)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("avifdec (apt libavif-bin, installed by scripts/deps.sh) runs");
    assert!(status.success(), "avifdec decodes the AVIF output");
    decode_rgba(&std::fs::read(&dst).unwrap())
}

#[test]
fn avif_and_webp_variants_decode_independently_at_the_right_size() {
    let mut variants = Vec::new();
    for format in [OutputFormat::Jpeg, OutputFormat::Webp, OutputFormat::Avif] {
        for width in [80, 500] {
            let mut v = VariantSpec::jpeg_width(width);
            v.format = format;
            v.quality = format.default_quality();
            variants.push(v);
        }
    }
    let pipeline = pipeline_with(variants, |_| {});
    let out = pipeline
        .process(&fixture("small-60x40.jpg"), "s.jpg")
        .unwrap();
    assert_eq!(out.variants.len(), 6);
    for v in &out.variants {
        let img = decode_any(&v.bytes, v.format);
        assert_eq!(img.dimensions(), (60, 40), "{} {:?}", v.name, v.format);
        assert_eq!(v.key, format!("{}/s.jpg.{}", v.name, v.format.extension()));
    }
    let types: Vec<_> = out.variants.iter().map(|v| v.content_type()).collect();
    assert!(types.contains(&"image/avif") && types.contains(&"image/webp"));
    // A larger source, so both sizes differ: the orientation fixture upright is 48x32.
    let out = pipeline.process(&fixture("orient-6.jpg"), "o.jpg").unwrap();
    for v in &out.variants {
        let img = decode_any(&v.bytes, v.format);
        assert_eq!(img.dimensions(), (48, 32), "{} {:?}", v.name, v.format);
        assert_quad_card(&img, [RED, GREEN, BLUE, WHITE], &format!("{:?}", v.format));
    }
}
