#!/usr/bin/env python3
"""`scripts/bench --encoder-sweep`: encoder settings on resizeq's own 500 px pixels.

Input: a directory of resizeq's lossless 500 px outputs (`<file name>.500.png.png`, from the
pipeline bench with `--formats png`), i.e. exactly the pixels its encoders receive. Each
setting is run with the command-line encoder of the same library resizeq links (cjpeg:
libjpeg-turbo, cwebp: libwebp, avifenc: libaom), one process per file, and scored:

- bytes, summed over the corpus, against libjpeg-turbo q80 4:2:0 with optimised Huffman tables
  (resizeq's JPEG and sharp's), on the same pixels;
- SSIM of the luma against the Pillow Lanczos reference of ssim.py (median and worst file), the
  figure the output-table targets use;
- colour loss: mean CIEDE2000 of the decoded output against the lossless pixels (median over
  files, and the worst file), which luma SSIM cannot see: chroma quantisation shows only here;
- ms: median wall time per file of the encoder process (includes reading the input and process
  start, so only the differences between rows mean something).

The question it answers: which settings pay at the SSIM of libjpeg-turbo q80, and what each
costs in colour and time. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import ssim

# mozjpeg's alternative luma quantisation tables (jcparam.c; from the papers they name), for
# cjpeg -qtables. The chroma table stays Annex K's, scaled at its own quality.
ANNEX_K_CHROMA = (
    [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99]
    + [24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99]
    + [99] * 32
)
LUMA_TABLES = {
    "annexk": [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24,
               40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77,
               24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95,
               98, 112, 100, 103, 99],
    "ms-ssim": [12, 17, 20, 21, 30, 34, 56, 63, 18, 20, 20, 26, 28, 51, 61, 55, 19, 20, 21, 26,
                33, 58, 69, 55, 26, 26, 26, 30, 46, 87, 86, 66, 31, 33, 36, 40, 46, 96, 100, 73,
                40, 35, 46, 62, 81, 100, 111, 91, 46, 66, 76, 86, 102, 121, 120, 101, 68, 90, 90,
                96, 113, 102, 105, 103],
    "ahumada": [15, 11, 11, 12, 15, 19, 25, 32, 11, 13, 10, 10, 12, 15, 19, 24, 11, 10, 14, 14,
                16, 18, 22, 27, 12, 10, 14, 18, 21, 24, 28, 33, 15, 12, 16, 21, 26, 31, 36, 42,
                19, 15, 18, 24, 31, 38, 45, 53, 25, 19, 22, 28, 36, 45, 55, 65, 32, 24, 27, 33,
                42, 53, 65, 77],
    "flat": [16] * 64,
}

JPEG = "-optimize -sample 2x2"
AVIF = "-j 1 -y 420 --min 0 --max 63 -a end-usage=q -a tune=ssim"
# (label, encoder, arguments). libheif maps AVIF quality q to cq-level ((100 - q) * 63 + 50) / 100.
SETTINGS = [
    ("jpeg q80 (resizeq, sharp)", "cjpeg", f"-quality 80 {JPEG}"),
    ("jpeg q80, luma only (chroma's share)", "cjpeg", "-quality 80 -optimize -grayscale"),
    ("jpeg q75", "cjpeg", f"-quality 75 {JPEG}"),
    ("jpeg q80, chroma q70", "cjpeg", f"-quality 80,70 -qslots 0,1,1 {JPEG}"),
    ("jpeg q80, chroma q60", "cjpeg", f"-quality 80,60 -qslots 0,1,1 {JPEG}"),
    ("jpeg ms-ssim table q80", "cjpeg", f"-qtables @ms-ssim -quality 80 -qslots 0,1,1 {JPEG}"),
    ("jpeg ahumada table q67", "cjpeg", f"-qtables @ahumada -quality 67 -qslots 0,1,1 {JPEG}"),
    ("jpeg ahumada table q68, chroma q80", "cjpeg",
     f"-qtables @ahumada -quality 68,80 -qslots 0,1,1 {JPEG}"),
    ("jpeg flat table q68, chroma q80", "cjpeg",
     f"-qtables @flat -quality 68,80 -qslots 0,1,1 {JPEG}"),
    ("webp q85 (before)", "cwebp", "-q 85 -m 4"),
    ("webp q84", "cwebp", "-q 84 -m 4"),
    ("webp q83", "cwebp", "-q 83 -m 4"),
    ("webp q83 filter 100", "cwebp", "-q 83 -m 4 -f 100"),
    ("webp q83 filter 100 sns 25 (resizeq)", "cwebp", "-q 83 -m 4 -f 100 -sns 25"),
    ("webp q83 filter 100 sns 0", "cwebp", "-q 83 -m 4 -f 100 -sns 0"),
    ("webp q83 autofilter", "cwebp", "-q 83 -m 4 -af"),
    ("webp q84 method 6 filter 100", "cwebp", "-q 84 -m 6 -f 100"),
    ("avif q70 speed 8 (before)", "avifenc", f"{AVIF} -s 8 -a cq-level=19"),
    ("avif q68 speed 8", "avifenc", f"{AVIF} -s 8 -a cq-level=20"),
    ("avif q70 speed 7", "avifenc", f"{AVIF} -s 7 -a cq-level=19"),
    ("avif q70 speed 6", "avifenc", f"{AVIF} -s 6 -a cq-level=19"),
    ("avif q68 speed 6 (resizeq)", "avifenc", f"{AVIF} -s 6 -a cq-level=20"),
    ("avif q66 speed 6", "avifenc", f"{AVIF} -s 6 -a cq-level=21"),
]
BASELINE = SETTINGS[0][0]
EXT = {"cjpeg": "jpg", "cwebp": "webp", "avifenc": "avif"}


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    c = rgb.astype(np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], -1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 (Sharma, Wu, Dalal 2005)."""
    l1, a1, b1 = np.moveaxis(lab1, -1, 0)
    l2, a2, b2 = np.moveaxis(lab2, -1, 0)
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1 = np.degrees(np.arctan2(b1, a1p)) % 360
    h2 = np.degrees(np.arctan2(b2, a2p)) % 360
    chroma0 = c1p * c2p == 0
    dh = h2 - h1
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chroma0, 0, dh)
    d_l, d_c = l2 - l1, c2p - c1p
    d_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    l_bar, cp_bar = (l1 + l2) / 2, (c1p + c2p) / 2
    h_sum = h1 + h2
    h_bar = np.where(np.abs(h1 - h2) > 180, np.where(h_sum < 360, h_sum + 360, h_sum - 360), h_sum)
    h_bar = np.where(chroma0, h_sum, h_bar / 2)
    t = (1 - 0.17 * np.cos(np.radians(h_bar - 30)) + 0.24 * np.cos(np.radians(2 * h_bar))
         + 0.32 * np.cos(np.radians(3 * h_bar + 6)) - 0.20 * np.cos(np.radians(4 * h_bar - 63)))
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(cp_bar**7 / (cp_bar**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * cp_bar
    s_h = 1 + 0.015 * cp_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2
                   + r_t * (d_c / s_c) * (d_h / s_h))


def mean_delta_e(lossless: Path, output: Path) -> float:
    with Image.open(lossless) as a, Image.open(output) as b:
        x, y = np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))
    return float(ciede2000(srgb_to_lab(x), srgb_to_lab(y)).mean())


def encode(tool: str, args: str, source: Path, out: Path, work: Path) -> float:
    argv = [tool]
    for arg in args.split():
        if arg.startswith("@"):  # a named quantisation table file for cjpeg -qtables
            table = work / f"qtable-{arg[1:]}.txt"
            table.write_text(" ".join(map(str, LUMA_TABLES[arg[1:]])) + "\n"
                             + " ".join(map(str, ANNEX_K_CHROMA)) + "\n")
            arg = str(table)
        argv.append(arg)
    if tool == "cjpeg":
        argv += ["-outfile", str(out), str(source.with_suffix(".ppm"))]
    elif tool == "cwebp":
        argv = argv[:1] + ["-quiet"] + argv[1:] + [str(source), "-o", str(out)]
    else:
        argv += ["--ignore-icc", "--ignore-exif", "--ignore-xmp", str(source), str(out)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--lossless", type=Path, required=True,
                    help="resizeq's <file name>.500.png.png outputs")
    ap.add_argument("--out", type=Path, required=True, help="work directory")
    ap.add_argument("--ref-cache", type=Path, help="ssim.py's reference cache")
    args = ap.parse_args()
    ref_cache = args.ref_cache
    args.out.mkdir(parents=True, exist_ok=True)
    sources = {}
    for png in sorted(args.lossless.glob("*.500.png.png")):
        name = png.name.removesuffix(".500.png.png")
        if not (args.corpus / name).exists():
            continue
        rgb = args.out / f"{name}.png"
        with Image.open(png) as im:  # the encoders get RGB: alpha is flattened by resizeq anyway
            im.convert("RGB").save(rgb)
            im.convert("RGB").save(rgb.with_suffix(".ppm"))
        sources[name] = rgb
    if not sources:
        print(f"no <file>.500.png.png in {args.lossless}", file=sys.stderr)
        return 1
    refs = {n: ssim.reference(args.corpus / n, ref_cache) for n in sources}
    rows = []
    for label, tool, targs in SETTINGS:
        slug = "".join(ch if ch.isalnum() else "-" for ch in label)
        directory = args.out / slug
        directory.mkdir(exist_ok=True)
        total, scores, colour, ms = 0, [], [], []
        for name, rgb in sources.items():
            out = directory / f"{name}.{EXT[tool]}"
            ms.append(encode(tool, targs, rgb, out, args.out))
            total += out.stat().st_size
            scores.append(ssim.compare(refs[name], out)["ssim"])
            colour.append(mean_delta_e(rgb, out))
        rows.append((label, total, scores, colour, statistics.median(ms)))
        print(f"sweep: {label}", file=sys.stderr, flush=True)
    base = next(r[1] for r in rows if r[0] == BASELINE)
    print(f"## Encoder settings at 500 px ({len(sources)} photos, resizeq's pixels)\n")
    print("| setting | bytes | × jpeg q80 | SSIM median | SSIM worst | ΔE00 median | ΔE00 worst "
          "| ms (CLI) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, total, scores, colour, ms in rows:
        print(f"| {label} | {total} | {total / base:.3f}× | {statistics.median(scores):.4f} | "
              f"{min(scores):.4f} | {statistics.median(colour):.3f} | {max(colour):.3f} | "
              f"{ms:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
