"""Worker benchmark: `resizeq run` (release build) against moto on loopback.

Derives a few hundred images from the corpus (each photo re-encoded in its own format at a few
upload sizes), uploads them to a moto bucket whose notification feeds an SQS queue, runs the
worker with one CPU worker per core until every message is done, and prints messages/s, the
wall-time split per stage (from the worker's own /metrics histograms) and the worker's CPU
outside the pipeline against the pipeline's CPU (the baseline, measured in the same run).

Run through `scripts/bench --worker` (which starts moto and builds the binary).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig
from PIL import Image, ImageOps
from pillow_heif import register_heif_opener

register_heif_opener()

STAGES = ["receive", "head", "get", "decode", "resize", "encode", "put", "ack"]
TARGET_OVERHEAD = 0.10


def derive(corpus: Path, count: int) -> list[tuple[str, bytes, str]]:
    """`count` uploads: every corpus photo at long sides 2048, 1600, 1024 (and its original),
    in its own format, cycled."""
    kinds = {".jpg": ("JPEG", "image/jpeg"), ".png": ("PNG", "image/png"),
             ".webp": ("WEBP", "image/webp"), ".heic": ("HEIF", "image/heic")}
    pool: list[tuple[str, bytes, str]] = []
    for path in sorted(corpus.iterdir()):
        kind = kinds.get(path.suffix.lower())
        if not kind:
            continue
        fmt, content_type = kind
        original = path.read_bytes()
        pool.append((f"{path.stem}/original{path.suffix}", original, content_type))
        with Image.open(io.BytesIO(original)) as img:
            img = ImageOps.exif_transpose(img)
            if fmt == "JPEG" and img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            for side in (2048, 1600, 1024):
                if max(img.size) <= side:
                    continue
                copy = img.copy()
                copy.thumbnail((side, side), Image.LANCZOS)
                out = io.BytesIO()
                options = {"quality": 85} if fmt in ("JPEG", "WEBP", "HEIF") else {}
                copy.save(out, fmt, **options)
                pool.append((f"{path.stem}/{side}{path.suffix}", out.getvalue(), content_type))
    uploads = []
    for i in range(count):
        name, data, content_type = pool[i % len(pool)]
        uploads.append((f"bench/{i:04d}/{name}", data, content_type))
    return uploads


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total


def cpu_seconds(stat_path: Path) -> float:
    fields = stat_path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_split(pid: int) -> tuple[float, float]:
    """(process CPU, CPU of the threads still alive). The difference is the CPU of threads that
    have exited: libheif's libde265 decoder starts its own worker thread for every HEIC decode
    (the plugin never decodes on the caller's thread), so that CPU is the pipeline's although
    the pipeline's thread clock cannot see it."""
    total = cpu_seconds(Path(f"/proc/{pid}/stat"))
    live = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            live += cpu_seconds(task / "stat")
        except OSError:
            pass  # exited between listing and reading
    return total, live


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=300, help="images to upload (default 300)")
    ap.add_argument("--binary", default="target/release/resizeq")
    ap.add_argument("--corpus", default=os.environ.get("RESIZEQ_CORPUS", "../shared/corpus"))
    args = ap.parse_args()
    endpoint = os.environ["RESIZEQ_TEST_ENDPOINT"]
    cores = os.cpu_count() or 1

    boto = dict(endpoint_url=endpoint, region_name="us-east-1",
                aws_access_key_id="testing", aws_secret_access_key="testing",
                config=BotoConfig(s3={"addressing_style": "path"}))
    s3, sqs = boto3.client("s3", **boto), boto3.client("sqs", **boto)
    run = f"wb{int(time.time())}"
    source, dest = f"{run}-photos", f"{run}-photos-resized"
    for bucket in (source, dest):
        s3.create_bucket(Bucket=bucket)
    dlq = sqs.create_queue(QueueName=f"{run}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName=f"{run}-events", Attributes={
        "VisibilityTimeout": "60",
        "RedrivePolicy": f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}'})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=source, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]})
    sqs.purge_queue(QueueUrl=queue)  # the s3:TestEvent

    print(f"worker bench: deriving {args.count} images from {args.corpus}", file=sys.stderr)
    uploads = derive(Path(args.corpus), args.count)
    total_bytes = sum(len(d) for _, d, _ in uploads)
    print(f"worker bench: uploading {len(uploads)} objects ({total_bytes / 2**20:.0f} MiB) to moto",
          file=sys.stderr)
    for key, data, content_type in uploads:
        s3.put_object(Bucket=source, Key=key, Body=data, ContentType=content_type)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESIZEQ_")}
    env.update({
        "RESIZEQ_QUEUE__URL": queue, "RESIZEQ_QUEUE__DLQ_URL": dlq,
        "RESIZEQ_AWS__ENDPOINT_URL": endpoint, "RESIZEQ_AWS__FORCE_PATH_STYLE": "true",
        "RESIZEQ_AWS__REGION": "us-east-1", "RESIZEQ_METRICS__LISTEN": f"127.0.0.1:{port}",
        "RESIZEQ_WORKER__CPU_WORKERS": str(cores), "RESIZEQ_LOG": "warn",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    started = time.monotonic()
    worker = subprocess.Popen([args.binary, "run"], env=env, stderr=subprocess.DEVNULL)
    try:
        done, text, deadline = 0.0, "", started + 900
        while done < len(uploads):
            if worker.poll() is not None:
                raise SystemExit(f"worker bench: resizeq exited early with {worker.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit("worker bench: not done after 15 minutes")
            time.sleep(0.05)
            try:
                text = scrape(port)
            except OSError:
                continue
            done = sum(sample(text, "resizeq_messages_total", outcome=o)
                       for o in ("processed", "skipped", "dead_lettered", "ignored", "superseded"))
        wall = time.monotonic() - started
        cpu, live_cpu = cpu_split(worker.pid)
        text = scrape(port)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)

    n = len(uploads)
    processed = sample(text, "resizeq_messages_total", outcome="processed")
    dead = sample(text, "resizeq_messages_total", outcome="dead_lettered")
    pipeline_thread_cpu = sample(text, "resizeq_pipeline_cpu_seconds_sum")
    codec_threads_cpu = max(cpu - live_cpu, 0.0)
    pipeline_cpu = pipeline_thread_cpu + codec_threads_cpu
    overhead = max(live_cpu - pipeline_thread_cpu, 0.0)
    ratio = overhead / pipeline_cpu if pipeline_cpu else float("inf")
    stage_sum = {s: sample(text, "resizeq_stage_duration_seconds_sum", stage=s) for s in STAGES}
    stage_count = {s: sample(text, "resizeq_stage_duration_seconds_count", stage=s) for s in STAGES}
    busy = sum(stage_sum.values())

    print(f"\n## Worker benchmark: {n} corpus-derived images through moto on loopback\n")
    print(f"{cores} cores, worker.cpu_workers = {cores}, max_in_flight 16, release build; "
          f"{total_bytes / n / 1024:.0f} KiB per upload on average; "
          f"processed {processed:.0f}, dead-lettered {dead:.0f}.\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| messages/s (wall, from worker start) | {n / wall:.1f} |")
    print(f"| wall time | {wall:.1f} s |")
    print(f"| worker process CPU | {cpu:.2f} s ({cpu / n * 1000:.1f} ms/message) |")
    print(f"| pipeline CPU (baseline) | {pipeline_cpu:.2f} s ({pipeline_cpu / n * 1000:.1f} ms/message): "
          f"{pipeline_thread_cpu:.2f} s on the pipeline's threads + {codec_threads_cpu:.2f} s on "
          f"libde265's per-decode threads |")
    print(f"| worker CPU outside the pipeline | {overhead:.2f} s ({overhead / n * 1000:.2f} ms/message) |")
    verdict = "met" if ratio < TARGET_OVERHEAD else "MISSED"
    print(f"| outside / pipeline (target < {TARGET_OVERHEAD:.0%}) | **{ratio:.1%}** ({verdict}) |")
    print("\nWall time per stage, summed over messages (stages overlap across concurrent jobs):\n")
    print("| stage | calls | total s | ms/call | share |")
    print("|---|---|---|---|---|")
    for s in STAGES:
        calls, total = stage_count[s], stage_sum[s]
        per = total / calls * 1000 if calls else 0.0
        share = total / busy if busy else 0.0
        print(f"| {s} | {calls:.0f} | {total:.2f} | {per:.1f} | {share:.0%} |")
    return 0 if processed + dead == n else 1


if __name__ == "__main__":
    sys.exit(main())
