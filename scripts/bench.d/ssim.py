#!/usr/bin/env python3
"""SSIM of 500 px thumbnails against a Pillow Lanczos reference (used by scripts/bench).

Reference, per source image: Pillow decodes it at full resolution (HEIC through pillow-heif,
which applies the container's irot/imir), ImageOps.exif_transpose applies the EXIF orientation,
the result is converted to RGB (alpha dropped) and resized with Image.LANCZOS to 500 px wide,
height round(h * 500 / w), then converted to luma (Pillow "L"). References are cached in
target/bench/ref/ keyed by the source file's size and mtime and the Pillow / pillow-heif versions.

A tool's output is decoded by Pillow, EXIF-transposed (i.e. compared as a viewer shows it),
converted to "L", and, if its size differs from the reference, resized (Lanczos) to the
reference size; the note says so.

SSIM is the standard Gaussian-window mean SSIM (Wang et al. 2004): 11x11 Gaussian window,
sigma 1.5, K1 0.01, K2 0.03, L 255, population covariances, averaged over the pixels whose
window lies inside the image (the same numbers as scikit-image's structural_similarity with
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255).

Standalone use:
    ssim.py [--cache DIR] --tool NAME=DIR [--tool NAME=DIR ...] SOURCE...
prints one JSON line per source file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps
from scipy.ndimage import gaussian_filter

pillow_heif.register_heif_opener()

REF_WIDTH = 500
SIGMA = 1.5
TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5: an 11x11 window
K1, K2, DATA_RANGE = 0.01, 0.03, 255.0
CACHE_VERSION = "1"


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of two equally sized 2-D luma arrays (0..255)."""
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {x.shape} vs {y.shape}")
    x = x.astype(np.float64)
    y = y.astype(np.float64)

    def blur(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, sigma=SIGMA, truncate=TRUNCATE, mode="reflect")

    ux, uy = blur(x), blur(y)
    vx = blur(x * x) - ux * ux
    vy = blur(y * y) - uy * uy
    vxy = blur(x * y) - ux * uy
    c1 = (K1 * DATA_RANGE) ** 2
    c2 = (K2 * DATA_RANGE) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = int(TRUNCATE * SIGMA + 0.5)
    return float(s[pad:-pad, pad:-pad].mean(dtype=np.float64))


def _to_rgb(im: Image.Image) -> Image.Image:
    """Full-resolution decode to 8-bit RGB (alpha dropped, 16-bit scaled down)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a * 255.0 / peak + 0.5, 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


def reference_height(w: int, h: int) -> int:
    return max(1, int(h * REF_WIDTH / w + 0.5))


def make_reference(source: Path) -> Image.Image:
    with Image.open(source) as im:
        im = ImageOps.exif_transpose(im)
        rgb = _to_rgb(im)
    w, h = rgb.size
    ref = rgb.resize((REF_WIDTH, reference_height(w, h)), Image.LANCZOS)
    return ref.convert("L")


def reference(source: Path, cache: Path | None) -> Image.Image:
    """The 500 px luma reference of `source`, from the cache when it is fresh."""
    if cache is None:
        return make_reference(source)
    st = source.stat()
    key = "|".join(
        [
            CACHE_VERSION,
            source.name,
            str(st.st_size),
            str(st.st_mtime_ns),
            Image.__version__,
            pillow_heif.__version__,
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = cache / f"{source.name}.{digest}.ref500.png"
    if path.exists():
        with Image.open(path) as im:
            return im.convert("L")
    ref = make_reference(source)
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob(f"{source.name}.*.ref500.png"):
        old.unlink()
    tmp = path.with_suffix(".tmp")
    ref.save(tmp, format="PNG")
    tmp.replace(path)
    return ref


def compare(ref: Image.Image, output: Path) -> dict:
    """SSIM of one tool output against the reference, with its size and a note."""
    if not output.exists():
        return {"ssim": None, "size": None, "size_ok": False, "note": "no output"}
    with Image.open(output) as im:
        im = ImageOps.exif_transpose(im)
        luma = im.convert("L")
    size = luma.size
    note = ""
    size_ok = True
    if size != ref.size:
        dw, dh = abs(size[0] - ref.size[0]), abs(size[1] - ref.size[1])
        size_ok = dw <= 1 and dh <= 1
        what = "resized" if size_ok else "SIZE MISMATCH, resized"
        note = f"{what} {size[0]}x{size[1]}→{ref.size[0]}x{ref.size[1]}"
        luma = luma.resize(ref.size, Image.LANCZOS)
    value = ssim(np.asarray(ref), np.asarray(luma))
    return {"ssim": value, "size": f"{size[0]}x{size[1]}", "size_ok": size_ok, "note": note}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, help="directory for cached references")
    ap.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a tool's output directory (holding <file name>.500.jpg)",
    )
    ap.add_argument("sources", nargs="+", type=Path)
    args = ap.parse_args(argv)
    tools = {}
    for spec in args.tool:
        name, sep, directory = spec.partition("=")
        if not sep:
            ap.error(f"--tool wants NAME=DIR, got {spec!r}")
        tools[name] = Path(directory)
    for source in args.sources:
        ref = reference(source, args.cache)
        row = {"file": source.name, "ref": f"{ref.size[0]}x{ref.size[1]}"}
        for name, directory in tools.items():
            row[name] = compare(ref, directory / f"{source.name}.500.jpg")
        print(json.dumps(row, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
