"""Benchmark: peak memory of the llm output merge for 10,000 vs 100,000 item outputs.

The merge (workloads/llm/merge.py) must stream in constant memory whatever the job's size, so
the target is peak(100k) / peak(10k) <= 1.5, for a local folder and for S3 (moto).

    .venv/bin/python -m bench.merge_memory [--sizes 10000 100000] [--chunk-size 1000]

Chunk files of realistic ~200-byte lines are built first (in a temporary folder, or in a moto
server's bucket), then each merge runs in a fresh subprocess, its modules imported and its S3
client warmed before measuring, so the figures are the merge's own:
- tracemalloc peak: Python allocations during the `merge_outputs` call only;
- peak RSS: the subprocess's resident size before the merge (interpreter, boto3, warm-up) and
  its peak during the merge (VmHWM, reset just before it through /proc/self/clear_refs);
- ru_maxrss, as asked of such benchmarks, though on Linux it is not the child's own: exec keeps
  the parent's high-water mark (here the bench holding moto's objects), hence the VmHWM figures.
The moto server runs in this (parent) process, so its own copies of the parts (moto
concatenates a whole object in memory on completion) are not counted as the merge's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

JOB = "bench-merge"
BUCKET = "bench-data"
TARGET_RATIO = 1.5
AWS_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
WORDS = [
    "the",
    "model",
    "answered",
    "with",
    "a",
    "short",
    "paragraph",
    "about",
    "the",
    "item",
    "it",
    "was",
    "given",
]


def item_lines(first: int, count: int, rng: random.Random) -> str:
    """`count` output lines as the workload writes them, about 200 bytes each."""
    from chunking.status import ItemResult
    from workloads.llm.outputs import output_line

    lines = []
    for index in range(first, first + count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(17, 23)))
        result = ItemResult(
            index=index,
            chunk_index=index // count,
            id=f"item-{index:07d}",
            output=text,
            prompt_tokens=rng.randint(20, 80),
            completion_tokens=rng.randint(20, 60),
            latency_ms=round(rng.uniform(200, 900), 1),
        )
        lines.append(output_line(result) + "\n")
    return "".join(lines)


def build_chunks(output_uri: str, items: int, chunk_size: int) -> tuple[int, int]:
    """The job's chunk files under `output_uri`; returns (chunks, bytes)."""
    import boto3

    from workloads.llm import blobs

    rng = random.Random(items)
    chunks, total = -(-items // chunk_size), 0
    s3 = boto3.client("s3") if blobs.is_s3(output_uri) else None
    for index in range(chunks):
        first = index * chunk_size
        data = item_lines(first, min(chunk_size, items - first), rng).encode()
        total += len(data)
        uri = blobs.join(output_uri, JOB, f"chunk-{index:06d}.jsonl")
        if s3 is not None:
            bucket, key = blobs.split_s3(uri)
            s3.put_object(Bucket=bucket, Key=key, Body=data)
        else:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            Path(uri).write_bytes(data)
    return chunks, total


def print_figures(uri: str | None, peak: int, seconds: float, rss_before: int | None) -> None:
    """What a measured subprocess reports to the bench, one JSON line: its step's figures."""
    figures = {
        "uri": uri,
        "peak": peak,
        "seconds": seconds,
        "rss_before_kib": rss_before,
        "rss_peak_kib": proc_status_kib("VmHWM"),
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    print(json.dumps(figures))


def proc_status_kib(field: str) -> int | None:
    """A size from /proc/self/status (Linux), in KiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass  # not Linux: VmHWM is not read either


def child(chunks: int) -> None:
    """In the fresh subprocess: one merge, measured; prints its figures as JSON."""
    import tracemalloc

    from chunking.settings import get_settings
    from workloads.llm import blobs
    from workloads.llm.outputs import merge_outputs

    output_uri = get_settings().llm_output_uri
    if blobs.is_s3(output_uri):  # the client, its service model and a first request, not counted
        blobs.s3_client().head_bucket(Bucket=blobs.split_s3(output_uri)[0])
    rss_before = proc_status_kib("VmRSS")
    reset_peak_rss()
    tracemalloc.start()
    started = time.perf_counter()
    uri = merge_outputs(JOB, chunks)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print_figures(uri, peak, seconds, rss_before)


def run_child(chunks: int, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.merge_memory", "--child", str(chunks)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def merged_size(uri: str) -> int:
    import boto3

    from workloads.llm import blobs

    if blobs.is_s3(uri):
        bucket, key = blobs.split_s3(uri)
        return int(boto3.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"])
    return Path(uri).stat().st_size


def measure(where: str, output_uri: str, sizes: list[int], chunk_size: int) -> None:
    env = dict(os.environ)
    rows = []
    for items in sizes:
        job_uri = f"{output_uri}/{items}"
        chunks, total = build_chunks(job_uri, items, chunk_size)
        figures = run_child(chunks, env | {"LLM_OUTPUT_URI": job_uri})
        assert merged_size(figures["uri"]) == total, "the merge is not the chunks' concatenation"
        rows.append((items, chunks, total, figures))
    print(f"\n{where}, chunks of {chunk_size:,} items")
    print(
        f"{'items':>9} {'chunks':>6} {'output':>9} {'tracemalloc peak':>16} {'RSS before':>11}"
        f" {'peak RSS':>10} {'ru_maxrss':>10} {'merge':>7}"
    )
    for items, chunks, total, f in rows:
        print(
            f"{items:>9,} {chunks:>6,} {total / 2**20:>6.1f} MB {f['peak'] / 2**20:>12.2f} MiB"
            f" {mib(f['rss_before_kib'])} {mib(f['rss_peak_kib'])} {mib(f['maxrss_kib'])}"
            f" {f['seconds']:>5.2f} s"
        )
    (_, _, _, small), (_, _, _, large) = rows[0], rows[-1]
    peak_ratio = large["peak"] / small["peak"]
    verdict = "met" if peak_ratio <= TARGET_RATIO else "NOT met"
    ratios = f"ratio {sizes[-1]:,} / {sizes[0]:,}: tracemalloc peak {peak_ratio:.2f}"
    ratios += f" (target <= {TARGET_RATIO}: {verdict})"
    if small["rss_peak_kib"] and large["rss_peak_kib"]:
        ratios += f"\n{' ' * 29}peak RSS {large['rss_peak_kib'] / small['rss_peak_kib']:.2f}"
        added = [(f["rss_peak_kib"] - f["rss_before_kib"]) / 2**10 for f in (small, large)]
        ratios += f" (added by the merge: {added[0]:.1f} vs {added[1]:.1f} MiB)"
    print(ratios + f"\n{' ' * 29}ru_maxrss {large['maxrss_kib'] / small['maxrss_kib']:.2f}")


def mib(kib: int | None) -> str:
    return f"{'-':>10}" if kib is None else f"{kib / 2**10:>6.1f} MiB"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--chunk-size", type=int, default=1_000)
    parser.add_argument("--where", choices=["local", "s3", "both"], default="both")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # chunks, in the subprocess
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    print(f"merge peak memory, {' vs '.join(f'{n:,}' for n in args.sizes)} item outputs")
    if args.where in ("local", "both"):
        with tempfile.TemporaryDirectory(prefix="merge-bench-") as folder:
            measure("local folder", folder, args.sizes, args.chunk_size)
    if args.where in ("s3", "both"):
        import logging

        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line a request otherwise

        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            os.environ.update(AWS_ENV | {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"})
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            measure("S3 (moto server)", f"s3://{BUCKET}/outputs", args.sizes, args.chunk_size)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
