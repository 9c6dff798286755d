#!/usr/bin/env python3
"""`scripts/bench --jpeg-encoders`: bytes and SSIM of JPEG encoder settings at 500 px.

Runs jpeg-encoders.mjs (the same sharp-resized pixels encoded with libjpeg-turbo's and
mozjpeg's settings), then scores every file against the Pillow Lanczos reference of ssim.py and
prints a markdown table: corpus bytes against libjpeg-turbo q80 (sharp's and resizeq's
encoder), SSIM median and worst file, and median encode milliseconds (sharp's call, one core).
The question it answers: at the SSIM of libjpeg-turbo q80, how many bytes does mozjpeg save?
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import ssim

BASELINE = "turbo-q80"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    here = Path(__file__).resolve().parent
    files = sorted(p for p in args.corpus.iterdir() if p.is_file() and p.name != "README.md")
    run = subprocess.run(
        ["node", str(here / "jpeg-encoders.mjs"), "--out", str(args.out / "jpeg-encoders")]
        + [str(f) for f in files],
        check=True,
        capture_output=True,
        text=True,
    )
    rows: dict[str, dict[str, dict]] = {}
    skipped = []
    for line in run.stdout.splitlines():
        rec = json.loads(line)
        if "skipped" in rec:
            skipped.append(rec["file"])
            continue
        out = args.out / "jpeg-encoders" / rec["label"] / f"{rec['file']}.500.jpg"
        ref = ssim.reference(args.corpus / rec["file"], args.out / "ref")
        rec["ssim"] = ssim.compare(ref, out)["ssim"]
        rows.setdefault(rec["label"], {})[rec["file"]] = rec
    base = sum(r["bytes"] for r in rows[BASELINE].values())
    print(f"## JPEG encoders at 500 px ({len(rows[BASELINE])} photos, same pixels for every setting)\n")
    print("| setting | bytes | × turbo q80 | SSIM median | SSIM worst | encode ms (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, recs in rows.items():
        total = sum(r["bytes"] for r in recs.values())
        s = [r["ssim"] for r in recs.values()]
        ms = statistics.median(r["ms"] for r in recs.values())
        print(
            f"| {label} | {total} | {total / base:.3f}× | {statistics.median(s):.4f} "
            f"| {min(s):.4f} | {ms:.1f} |"
        )
    if skipped:
        print(f"\nLeft out (sharp's prebuilt libvips decodes no HEVC): {', '.join(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
