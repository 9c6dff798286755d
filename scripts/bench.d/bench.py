#!/usr/bin/env python3
"""resizeq vs the sharp Lambda: throughput, peak RSS and SSIM over the corpus.

Run through scripts/bench, which installs what this needs (npm packages, a venv) first.

For each round r in 0..R-1, runs resizeq's pipeline bench over the whole corpus, then the sharp
reference (scripts/bench.d/sharp-bench.mjs) over the whole corpus: one process per tool per
round, each pinned to one core with `taskset -c CPU`. Round 0 is a warm-up and is not counted.
Throughput per category = images / sum of the per-file median ms over rounds 1..R-1. Peak RSS
is the max of ru_maxrss over all of a tool's processes (os.wait4 on each). SSIM compares each
tool's last 500 px outputs with a Pillow Lanczos reference (see ssim.py).

Environment:
  RESIZEQ_CORPUS     corpus directory (default: ../shared/corpus from the repo root)
  RESIZEQ_BENCH_CMD  command that replaces resizeq's bench (shell words; gets
                     `--rounds 1 --out DIR FILE...` appended), e.g. a stand-in
  BENCH_CPU          CPU list for taskset -c (default 1; same as --cpu)
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH_D = ROOT / "scripts" / "bench.d"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".gif", ".tif", ".tiff"}

# Throughput targets: category -> minimum ratio resizeq img/s / sharp img/s (same run, one core).
SPEED_TARGETS = {"jpg": 2.2, "webp": 1.5, "heic": 4.0, "all": 2.5}
CATEGORY_ORDER = ["jpg", "png", "webp", "heic", "small"]
RSS_TARGET = 0.25  # resizeq peak RSS <= 1/4 of sharp's
SSIM_SLACK = 0.005  # resizeq SSIM >= sharp SSIM - 0.005 on every file
TOOLS = ("resizeq", "sharp")
# Output table: 500 px bytes of each default format / sharp's JPEG q80 bytes (corpus total),
# at SSIM (median and worst file) no lower than sharp's JPEG.
BYTES_TARGETS = {"jpeg": 0.78, "webp": 0.65, "avif": 0.50}
SET_COST_TARGET = 2.0  # default variants + 500 px WebP + AVIF, ms / the JPEG-only pipeline's
DEFAULT_FORMATS = "jpeg,webp,avif"
EXTENSIONS = {"jpeg": "jpg", "webp": "webp", "avif": "avif", "png": "png"}


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


@dataclass
class Tool:
    name: str
    argv: list[str]
    describe: str
    env: dict[str, str] = field(default_factory=dict)
    trailing: list[str] = field(default_factory=list)  # arguments after the files
    ms: dict[str, list[float]] = field(default_factory=dict)  # file -> ms per measured round
    # file -> other numeric fields of its lines (e.g. decode_ms), per measured round
    extra: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # file -> error reported by the tool
    maxrss_kib: int = 0
    wall_s: list[float] = field(default_factory=list)


def category(name: str) -> str:
    m = re.match(r"[A-Za-z]+", name)
    return m.group(0).lower() if m else "other"


def corpus_dir() -> Path:
    env = os.environ.get("RESIZEQ_CORPUS")
    return Path(env).resolve() if env else (ROOT / ".." / "shared" / "corpus").resolve()


def list_corpus(directory: Path, only: str | None) -> list[Path]:
    if not directory.is_dir():
        raise BenchError(
            f"corpus not found at {directory}: set RESIZEQ_CORPUS to the directory that holds "
            "the benchmark photos (jpg*, png*, webp*, heic*, small*; see its README.md)"
        )
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if only:
        if any(c in only for c in "*?["):
            files = [p for p in files if fnmatch.fnmatch(p.name, only)]
        else:
            files = [p for p in files if only in p.name]
    if not files:
        what = f" matching {only!r}" if only else ""
        raise BenchError(f"no images{what} in {directory}")
    return files


def run_logged(cmd: list[str], log: Path, **kw) -> subprocess.CompletedProcess:
    with open(log, "wb") as err:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, cwd=ROOT, **kw)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + ln for ln in text[-lines:])


def resizeq_tool(logs: Path, formats: str) -> Tool:
    """resizeq's bench: RESIZEQ_BENCH_CMD, or the compiled `pipeline` bench binary."""
    override = os.environ.get("RESIZEQ_BENCH_CMD")
    if override:
        argv = shlex.split(override)
        return Tool("resizeq", argv, f"`{override}` (RESIZEQ_BENCH_CMD)")
    say("building resizeq's bench (cargo bench --bench pipeline --no-run)")
    log = logs / "cargo-build.log"
    cmd = ["cargo", "bench", "--bench", "pipeline", "--no-run", "--message-format=json"]
    proc = run_logged(cmd, log)
    exe = None
    for line in proc.stdout.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        target = msg.get("target") or {}
        if (
            msg.get("reason") == "compiler-artifact"
            and target.get("name") == "pipeline"
            and "bench" in target.get("kind", [])
            and msg.get("executable")
        ):
            exe = msg["executable"]
    if proc.returncode != 0 or not exe:
        raise BenchError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}); see {log}:\n{tail(log)}"
        )
    deps = Path(exe).parent  # target/release/deps
    env = {
        # what `cargo bench` would set for the binary it runs
        "CARGO_MANIFEST_DIR": str(ROOT),
        "LD_LIBRARY_PATH": os.pathsep.join(
            [str(deps), str(deps.parent)]
            + ([os.environ["LD_LIBRARY_PATH"]] if os.environ.get("LD_LIBRARY_PATH") else [])
        ),
    }
    rel = os.path.relpath(exe, ROOT)
    # `cargo bench --bench pipeline -- ARGS` runs `<exe> ARGS --bench`: do the same.
    trailing = (["--formats", formats] if formats else []) + ["--bench"]
    return Tool("resizeq", [exe], f"`{rel}` (cargo bench --bench pipeline)", env, trailing)


def sharp_tool() -> Tool:
    env = {"UV_THREADPOOL_SIZE": "1", "VIPS_CONCURRENCY": "1"}
    return Tool(
        "sharp",
        ["node", str(BENCH_D / "sharp-bench.mjs")],
        "`node scripts/bench.d/sharp-bench.mjs`",
        env,
    )


def versions() -> dict[str, str]:
    out = {"node": "?", "sharp": "?", "libvips": "?", "heic-convert": "?"}
    js = (
        "const s=require('sharp');"
        "console.log(JSON.stringify({node:process.version,sharp:s.versions.sharp,"
        "libvips:s.versions.vips,'heic-convert':require('heic-convert/package.json').version}))"
    )
    try:
        proc = subprocess.run(["node", "-e", js], cwd=BENCH_D, capture_output=True, timeout=60)
        out.update(json.loads(proc.stdout))
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def run_round(tool: Tool, files: list[Path], rnd: int, cpu: str, out: Path, logs: Path) -> None:
    """One process of `tool` over all files, pinned to `cpu`; records ms and peak RSS."""
    if out.exists():  # no stale outputs from an earlier round or run
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cmd = (
        ["taskset", "-c", cpu]
        + tool.argv
        + ["--rounds", "1", "--out", str(out)]
        + [str(p) for p in files]
        + tool.trailing
    )
    env = dict(os.environ, **tool.env)
    stdout_log = logs / f"{tool.name}.r{rnd}.stdout"
    stderr_log = logs / f"{tool.name}.r{rnd}.stderr"
    t0 = time.monotonic()
    with open(stdout_log, "wb") as so, open(stderr_log, "wb") as se:
        proc = subprocess.Popen(
            cmd, stdout=so, stderr=se, stdin=subprocess.DEVNULL, cwd=ROOT, env=env
        )
        # wait4 gives this child's own rusage (taskset execs the command: same process).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise BenchError(
            f"{tool.name} round {rnd} failed (exit {proc.returncode}): "
            f"{shlex.join(cmd[:8])} ...; stderr ({stderr_log}):\n{tail(stderr_log)}"
        )
    tool.maxrss_kib = max(tool.maxrss_kib, usage.ru_maxrss)  # KiB on Linux
    seen: dict[str, dict] = {}
    for line in stdout_log.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
            name = str(rec["file"])
            if "error" not in rec:
                rec["ms"] = float(rec["ms"])
        except (ValueError, KeyError, TypeError):
            continue
        if name in seen:
            raise BenchError(f"{tool.name} round {rnd}: {name} reported twice ({stdout_log})")
        seen[name] = rec
    missing = [p.name for p in files if p.name not in seen]
    if missing:
        raise BenchError(
            f"{tool.name} round {rnd}: no timing line for {', '.join(missing)} "
            f'(expected JSON lines {{"file":..,"round":0,"ms":..}} on stdout; '
            f"see {stdout_log})"
        )
    tool.wall_s.append(wall)
    for name, rec in seen.items():
        if "error" in rec:
            tool.errors.setdefault(name, str(rec["error"]))
            say(f"round {rnd}: {tool.name} failed on {name}: {rec['error']}")
        elif rnd > 0:  # round 0 is the warm-up
            tool.ms.setdefault(name, []).append(rec["ms"])
            for key, value in rec.items():
                if key not in ("file", "round", "ms") and isinstance(value, (int, float)):
                    tool.extra.setdefault(name, {}).setdefault(key, []).append(float(value))
    timed = sum(rec.get("ms", 0.0) for rec in seen.values()) / 1000
    say(
        f"round {rnd}: {tool.name:<7} {wall:6.1f} s wall, "
        f"{timed:6.1f} s timed, maxrss {usage.ru_maxrss / 1024:.0f} MiB"
    )


def fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def times(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec) + "×"


def median_ms(tool: Tool, name: str) -> float | None:
    return statistics.median(tool.ms[name]) if tool.ms.get(name) else None


def throughput(tool: Tool, names: list[str]) -> float | None:
    total_ms = sum(statistics.median(tool.ms[n]) for n in names)
    return len(names) / (total_ms / 1000) if total_ms > 0 else None


def per_round(tool: Tool, names: list[str]) -> list[float]:
    """All-corpus img/s of each measured round (to show the run-to-run noise)."""
    rounds = zip(*(tool.ms[n] for n in names), strict=True)  # round i -> ms of every file
    return [len(ms) / (sum(ms) / 1000) for ms in rounds]


def stage_split(tool: Tool, name: str) -> str:
    """Median of the tool's optional per-stage fields, e.g. decode_ms/resize_ms/encode_ms."""
    extra = tool.extra.get(name) or {}
    return " / ".join(f"{statistics.median(extra[k]):.1f}" for k in STAGES if k in extra)


STAGES = ("decode_ms", "resize_ms", "encode_ms")


def format_labels(formats: str) -> list[str]:
    return [spec.replace(":", "_") for spec in formats.split(",") if spec] if formats else []


def output_path(out_dir: Path, tool: str, name: str, label: str | None) -> Path:
    """A tool's 500 px output of `name`; `label`: one of resizeq's --formats runs."""
    if label is None:
        return out_dir / "out" / tool / f"{name}.500.jpg"
    ext = EXTENSIONS[label.split("_")[0]]
    return out_dir / "out" / tool / f"{name}.500.{label}.{ext}"


def output_table(
    files: list[Path], rq: Tool, labels: list[str], out_dir: Path, format_ssim: dict, ssim_rows
) -> tuple[list[str], list[bool]]:
    """Per format: 500 px bytes vs sharp's JPEG q80, SSIM (median, worst), encode ms."""
    lines: list[str] = []
    add = lines.append
    verdicts: list[bool] = []
    names = [p.name for p in files if p.name in rq.ms]
    sharp_ssim = [r["sharp"]["ssim"] for r in ssim_rows or [] if r["sharp"]["ssim"] is not None]
    sharp_bytes = {n: output_path(out_dir, "sharp", n, None).stat().st_size for n in names
                   if output_path(out_dir, "sharp", n, None).exists()}
    names = [n for n in names if n in sharp_bytes]
    total_sharp = sum(sharp_bytes.values())
    add("## Output formats (500 px)")
    add("")
    add(
        "Bytes of each file's 500 px output, summed over the corpus and divided by sharp's JPEG "
        "q80 (the Lambda's output) of the same run; SSIM as above (median and worst file); "
        "encode ms = median over files of the 500 px encode (resizeq's own stage timing). "
        "ok: bytes ratio within the target and both SSIM figures at least sharp's."
    )
    add("")
    add("| output | bytes (corpus) | × sharp | median per-file × | SSIM median | SSIM worst "
        "| encode ms | target | ok |")
    add("|---|---:|---:|---:|---:|---:|---:|---|---|")
    s_med = statistics.median(sharp_ssim) if sharp_ssim else None
    s_min = min(sharp_ssim) if sharp_ssim else None
    add(f"| sharp JPEG q80 | {total_sharp} | 1.00× | 1.00× | {fmt(s_med, '.4f')} | "
        f"{fmt(s_min, '.4f')} | — | — | |")
    for label in labels:
        key = f"{label}_bytes"
        have = [n for n in names if key in (rq.extra.get(n) or {})]
        if not have:
            continue
        total = sum(statistics.median(rq.extra[n][key]) for n in have)
        ratio = total / sum(sharp_bytes[n] for n in have)
        per_file = statistics.median(
            statistics.median(rq.extra[n][key]) / sharp_bytes[n] for n in have
        )
        enc = statistics.median(
            statistics.median(rq.extra[n][f"{label}_encode_ms"]) for n in have
        )
        values = [v for n in have if (v := format_ssim.get((label, n))) is not None]
        med = statistics.median(values) if values else None
        worst = min(values) if values else None
        goal = BYTES_TARGETS.get(label)
        ok = ""
        if goal is not None and med is not None and s_med is not None:
            passed = ratio <= goal and med >= s_med and worst >= s_min
            verdicts.append(passed)
            ok = "PASS" if passed else "FAIL"
        add(f"| resizeq {label.replace('_', ' ')} | {int(total)} | {ratio:.2f}× | "
            f"{per_file:.2f}× | {fmt(med, '.4f')} | {fmt(worst, '.4f')} | {enc:.1f} | "
            f"{f'≤ {goal:g}×' if goal else '—'} | {ok} |")
    set_names = [n for n in names if "set_ms" in (rq.extra.get(n) or {})]
    if set_names:
        set_ms = sum(statistics.median(rq.extra[n]["set_ms"]) for n in set_names)
        jpeg_ms = sum(statistics.median(rq.ms[n]) for n in set_names)
        cost = set_ms / jpeg_ms
        passed = cost <= SET_COST_TARGET
        verdicts.append(passed)
        add("")
        add(
            f"A `<picture>` set (the default 80 + 500 px JPEG, plus 500 px WebP and AVIF) takes "
            f"{set_ms / len(set_names):.1f} ms per image against {jpeg_ms / len(set_names):.1f} ms "
            f"for the JPEG-only pipeline: {cost:.2f}× (target ≤ {SET_COST_TARGET:g}×) → "
            f"{'PASS' if passed else 'FAIL'}."
        )
    add("")
    return lines, verdicts


def build_report(
    args, files: list[Path], tools: dict[str, Tool], ssim_rows: list[dict] | None, meta: dict
) -> tuple[str, int, int]:
    met = total = 0
    lines: list[str] = []
    add = lines.append

    def target(ok: bool) -> str:
        nonlocal met, total
        total += 1
        met += ok
        return "PASS" if ok else "FAIL"

    rq, sh = tools["resizeq"], tools["sharp"]
    failed = set(rq.errors) | set(sh.errors)
    timed = [p.name for p in files if p.name not in failed]
    measured = "round 1" if args.rounds == 2 else f"rounds 1–{args.rounds - 1}"
    v = meta["versions"]
    only = f", --only {args.only!r}" if args.only else ""
    add("# resizeq vs sharp (Lambda reference)")
    add("")
    add(f"- corpus: `{meta['corpus']}` ({len(files)} files{only})")
    add(
        f"- rounds: {args.rounds}, interleaved (resizeq then sharp, one process each per round), "
        f"each pinned with `taskset -c {args.cpu}`; round 0 is a warm-up and is excluded; "
        f"img/s = images ÷ Σ per-file **median** ms over {measured} "
        "(in-process time: decode + 80 px + 500 px JPEG q80, bytes in memory to buffers)"
    )
    add(f"- resizeq: {rq.describe}")
    add(
        f"- sharp: {sh.describe}: sharp {v['sharp']} (libvips {v['libvips']}), heic-convert "
        f"{v['heic-convert']}, node {v['node']}; "
        "UV_THREADPOOL_SIZE=1, concurrency(1), cache(false)"
    )
    add(f"- machine: {meta['cpu']}, {os.cpu_count()} CPUs, {platform.platform()}")
    add("")

    add("| category | images | resizeq img/s | sharp img/s | ratio | target | ok |")
    add("|---|---:|---:|---:|---:|---|---|")
    cats: dict[str, list[str]] = {}
    for p in files:
        cats.setdefault(category(p.name), []).append(p.name)
    order = [c for c in CATEGORY_ORDER if c in cats]
    order += sorted(c for c in cats if c not in CATEGORY_ORDER) + ["all"]
    cats["all"] = [p.name for p in files]
    for cat in order:
        names = [n for n in cats[cat] if n not in failed]
        n_failed = len(cats[cat]) - len(names)
        count = f"{len(names)}" + (f" (+{n_failed} failed)" if n_failed else "")
        r = throughput(rq, names) if names else None
        s = throughput(sh, names) if names else None
        ratio = r / s if r and s else None
        goal = SPEED_TARGETS.get(cat)
        ok = target(ratio >= goal) if goal is not None and ratio is not None else ""
        label = f"**{cat}**" if cat == "all" else cat
        add(
            f"| {label} | {count} | {fmt(r, '.2f')} | {fmt(s, '.2f')} | "
            f"{times(ratio, '.2f')} | {f'≥ {goal:g}×' if goal else '—'} | {ok} |"
        )
    r_mib, s_mib = rq.maxrss_kib / 1024, sh.maxrss_kib / 1024
    rss_ratio = r_mib / s_mib if s_mib else None
    rss_ok = target(rss_ratio is not None and rss_ratio <= RSS_TARGET)
    add(
        f"| peak RSS (MiB) | — | {r_mib:.1f} | {s_mib:.1f} | {times(rss_ratio, '.3f')} | "
        f"≤ {RSS_TARGET:g}× | {rss_ok} |"
    )
    if rq.errors:
        add(
            f"| files failed | {len(rq.errors)} | {len(rq.errors)} | {len(sh.errors)} | — | "
            f"0 | {target(False)} |"
        )
    add("")
    add(
        "Peak RSS = max ru_maxrss over all rounds' processes of each tool (os.wait4). "
        "All-corpus img/s in each measured round: "
        + "; ".join(
            f"{t.name} " + ", ".join(f"{x:.2f}" for x in per_round(t, timed)) for t in (rq, sh)
        )
        + f". Load average before/after: {meta['load_before']:.2f} / {meta['load_after']:.2f} "
        "(other work on the machine adds noise)."
    )
    for t in (rq, sh):
        for name, err in t.errors.items():
            add(f"- **{t.name} failed on {name}**: {err} (excluded from both tools' img/s)")
    add("")

    # Per-file table: median ms always; SSIM unless --no-ssim.
    with_ssim = ssim_rows is not None
    with_split = any(rq.extra.values())
    split_keys = next(([k for k in STAGES if k in e] for e in rq.extra.values() if e), [])
    add(
        "## Per file"
        + (
            ": median ms, and SSIM of the 500 px output vs a Pillow Lanczos reference"
            if with_ssim
            else ": median ms"
        )
    )
    add("")
    if with_ssim:
        add(
            'SSIM on luma (Pillow "L"), Gaussian window (11×11, σ 1.5, K1 0.01, K2 0.03, L 255); '
            f"ok = resizeq SSIM ≥ sharp SSIM − {SSIM_SLACK} and its size within 1 px."
        )
        add("")
    head = ["file", "resizeq ms", "sharp ms", "speed-up"]
    align = ["---", "---:", "---:", "---:"]
    if with_split:
        head.append("resizeq " + " / ".join(k.removesuffix("_ms") for k in split_keys) + " ms")
        align.append("---:")
    if with_ssim:
        head += ["ref size", "resizeq SSIM", "sharp SSIM", "Δ", "ok", "note"]
        align += ["---", "---:", "---:", "---:", "---", "---"]
    add("| " + " | ".join(head) + " |")
    add("|" + "|".join(align) + "|")
    rows = {row["file"]: row for row in ssim_rows or []}
    n_ok = 0
    for p in files:
        name = p.name
        r_ms = None if name in rq.errors else median_ms(rq, name)
        s_ms = None if name in sh.errors else median_ms(sh, name)
        speedup = s_ms / r_ms if r_ms and s_ms else None
        cells = [
            name,
            "error" if name in rq.errors else fmt(r_ms, ".1f"),
            "error" if name in sh.errors else fmt(s_ms, ".1f"),
            times(speedup, ".2f"),
        ]
        if with_split:
            cells.append(stage_split(rq, name) or "—")
        if with_ssim:
            row = rows[name]
            a, b = row["resizeq"], row["sharp"]
            ra, sb = a["ssim"], b["ssim"]
            ok = ra is not None and a["size_ok"] and (sb is None or ra >= sb - SSIM_SLACK)
            n_ok += ok
            notes = "; ".join(f"{t}: {row[t]['note']}" for t in TOOLS if row[t]["note"])
            delta = ra - sb if ra is not None and sb is not None else None
            cells += [
                row["ref"],
                fmt(ra, ".4f"),
                fmt(sb, ".4f"),
                fmt(delta, "+.4f"),
                "PASS" if ok else "FAIL",
                notes,
            ]
        add("| " + " | ".join(cells) + " |")
    add("")
    if with_ssim:
        verdict = target(n_ok == len(files))
        add(f"SSIM target (every file): {n_ok}/{len(files)} files ok → {verdict}")
    else:
        add("SSIM: skipped (--no-ssim).")
    add("")
    labels = args.formats_labels
    if labels:
        table, verdicts = output_table(
            files, rq, labels, Path(args.out_dir).resolve(), meta.get("format_ssim", {}), ssim_rows
        )
        lines.extend(table)
        for v in verdicts:
            target(v)
    add(f"targets: {met}/{total} met")
    return "\n".join(lines) + "\n", met, total


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__.split("\n\n")[0],
        epilog="Environment:" + __doc__.split("Environment:", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds, including the warm-up round 0 (default 3, minimum 2)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="warm-up + 1 measured round (same as --rounds 2), for CI smoke runs",
    )
    ap.add_argument(
        "--only",
        metavar="PATTERN",
        help="only corpus files whose name contains PATTERN (or matches it as a glob "
        "when it has * ? [)",
    )
    ap.add_argument(
        "--cpu",
        default=os.environ.get("BENCH_CPU", "1"),
        help="CPU list for taskset -c (default: $BENCH_CPU or 1)",
    )
    ap.add_argument("--no-ssim", action="store_true", help="skip the SSIM comparison")
    ap.add_argument(
        "--formats",
        default=DEFAULT_FORMATS,
        help="resizeq's output table: 500 px runs, each FORMAT[:QUALITY[:SPEED[:ENCODER]]] "
        f"(speed/encoder: AVIF), comma-separated; '' for none (default {DEFAULT_FORMATS})",
    )
    ap.add_argument(
        "--out-dir",
        type=Path,
        default=ROOT / "target" / "bench",
        help="where outputs, logs and report.md go (default target/bench)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = 2
    if args.rounds < 2:
        ap.error("--rounds must be at least 2 (round 0 is a warm-up)")
    return args


def pin_self_away(cpu: str) -> None:
    """Keep this harness off the measured CPU while it waits."""
    try:
        measured: set[int] = set()
        for part in cpu.split(","):
            lo, _, hi = part.partition("-")
            measured.update(range(int(lo), int(hi or lo) + 1))
        others = os.sched_getaffinity(0) - measured
        if others:
            os.sched_setaffinity(0, others)
    except (ValueError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        corpus = corpus_dir()
        files = list_corpus(corpus, args.only)
        out_dir: Path = args.out_dir.resolve()
        logs = out_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for old in logs.glob("*.r*.std*"):  # a previous run's per-round logs
            old.unlink()
        tools = {"resizeq": resizeq_tool(logs, args.formats), "sharp": sharp_tool()}
        meta = {
            "corpus": str(corpus),
            "versions": versions(),
            "cpu": cpu_model(),
            "load_before": os.getloadavg()[0],
        }
        pin_self_away(args.cpu)
        say(f"{len(files)} files, {args.rounds} rounds (round 0 = warm-up), taskset -c {args.cpu}")
        for rnd in range(args.rounds):
            for tool in tools.values():
                run_round(tool, files, rnd, args.cpu, out_dir / "out" / tool.name, logs)
        meta["load_after"] = os.getloadavg()[0]
        ssim_rows = None
        if not args.no_ssim:
            say("SSIM against Pillow Lanczos references")
            import ssim  # numpy/scipy/Pillow: only needed here

            ssim_rows = []
            for p in files:
                ref = ssim.reference(p, out_dir / "ref")
                row = {"file": p.name, "ref": f"{ref.size[0]}x{ref.size[1]}"}
                for name in TOOLS:
                    row[name] = ssim.compare(ref, out_dir / "out" / name / f"{p.name}.500.jpg")
                ssim_rows.append(row)
                for label in format_labels(args.formats):
                    out = output_path(out_dir, "resizeq", p.name, label)
                    meta.setdefault("format_ssim", {})[(label, p.name)] = ssim.compare(
                        ref, out
                    )["ssim"]
    except BenchError as e:
        say(f"error: {e}")
        return 1
    args.formats_labels = format_labels(args.formats)
    report, met, total = build_report(args, files, tools, ssim_rows, meta)
    (out_dir / "report.md").write_text(report)
    raw = {
        "rounds": args.rounds,
        "cpu": args.cpu,
        "corpus": meta["corpus"],
        "versions": meta["versions"],
        "targets_met": met,
        "targets": total,
        "ssim": ssim_rows,
        "format_ssim": {f"{k[0]}/{k[1]}": v for k, v in meta.get("format_ssim", {}).items()},
        "tools": {
            t.name: {
                "command": t.argv,
                "ms_measured_rounds": t.ms,
                "extra_measured_rounds": t.extra,
                "errors": t.errors,
                "maxrss_kib": t.maxrss_kib,
                "wall_s": t.wall_s,
            }
            for t in tools.values()
        },
    }
    (out_dir / "results.json").write_text(json.dumps(raw, indent=1, ensure_ascii=False) + "\n")
    sys.stdout.write(report)
    say(f"report written to {os.path.relpath(out_dir / 'report.md', Path.cwd())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
