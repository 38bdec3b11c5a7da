"""Benchmark: peak memory of writing an llm job's errors file for 10,000 vs 100,000 failed items.

Issue 24 point 6: the errors file (`errors_uri`, one JSONL line per failed item: its id, input
line, error, attempts) is written by the job's finishing unit in constant memory, whatever the
number of failed items. Target: peak(100k) / peak(10k) <= 1.5, for a local folder and for S3
(moto), as for the output merge (bench/merge_memory.py).

    .venv/bin/python -m bench.errors_memory [--sizes 10000 100000] [--chunk-size 1000]

Each job is built first through the code the app runs, in a real job store (SQLite through
`stores.factory`, in a temporary folder, with LLM_OUTPUT_URI and LLM_INPUT_ROOT there too):
a JSONL input of ~200-byte lines indexed by the workload's `plan` (`lifecycle.plan`); then its
chunks, alternately
- every item failed on its own (a refusal, a context too long: results with their error and
  attempts kept by `keep_results`), the chunk settled by `chunking.runner.settle`, whose
  `before_settle` writes the chunk's own errors file, as a run does;
- the chunk failed whole (the endpoint refused the key, three attempts), settled failed with no
  item result: the finishing unit must list its never-answered items with the chunk's error.
The last settlement finishes the job. Then, each in a fresh subprocess (modules imported, the
store opened, the S3 client warmed before measuring), measured around the call only:
- `errors`: `workloads.llm.failures.merge_errors`, the errors file alone (the target);
- `finish`: `lifecycle.finish`, the whole finishing unit (`after_job_finished`: the output
  merge as well, and the job's output_uri and errors_uri recorded), reported beside it.
Figures: the tracemalloc peak, and the subprocess's peak RSS (VmHWM reset just before the
call, see bench/merge_memory.py, whose helpers this reuses). After each, the errors file is
read back: exactly one line per item, in input order, each with its input line, error and
attempts. The table is printed and written to bench/results/errors_memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.merge_memory import (
    AWS_ENV,
    WORDS,
    free_port,
    mib,
    print_figures,
    proc_status_kib,
    reset_peak_rss,
)

BUCKET = "bench-errors"
TARGET_RATIO = 1.5
RESULTS = Path(__file__).parent / "results" / "errors_memory.json"
# The errors the app records, as the fake model's tests see them: an item's own two kinds, and
# a chunk's whole failure (a bad key fails every item the same way, so the chunk gives up).
ITEM_ERRORS = (
    "400 context_length_exceeded: This model's maximum context length is 8192 tokens.",
    "refused by the content policy (finish_reason=content_filter)",
)
CHUNK_ERROR = "permanent: the model endpoint refused the request: 401 invalid_api_key"
WHOLE_ATTEMPTS = 3  # a chunk failed whole: tried three times, its items never answered
STEPS = ("errors", "finish")


def item_id(index: int) -> str:
    return f"item-{index:07d}"


def input_lines(items: int) -> Iterator[str]:
    """The job's input, about 200 bytes a line: an id, a prompt and some metadata."""
    rng = random.Random(items)
    for index in range(items):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(17, 23)))
        line = {"id": item_id(index), "prompt": f"Summarise: {text}", "meta": {"n": index}}
        yield json.dumps(line)


def whole_failure(chunk_index: int) -> bool:
    """Every other chunk fails whole, so the two kinds alternate through the file."""
    return chunk_index % 2 == 1


async def build_job(job_id: str, input_uri: str, items: int, chunk_size: int) -> int:
    """The job, planned, every chunk settled as above (the last settlement ends it); its chunks."""
    import workloads  # noqa: F401 - registers the llm workload, as every entrypoint does
    from chunking import lifecycle
    from chunking.planning import chunk_at
    from chunking.runner import settle
    from chunking.settings import get_settings
    from chunking.spec import JobSpec
    from chunking.status import ItemResult
    from stores.factory import open_store
    from workloads.llm import blobs
    from workloads.llm.workload import keep_results

    blobs.write_lines(input_uri, input_lines(items))
    store = open_store(get_settings().job_store_url)
    spec = JobSpec(workload="llm", input_uri=input_uri, chunk_size=chunk_size)
    store.create_job(job_id, spec, "local")
    planned = lifecycle.plan(store, job_id, None, None)  # the workload indexes the input
    assert planned.started and planned.failed is None, planned
    finished = False
    for index in range(planned.total_chunks):
        chunk = chunk_at(items, chunk_size, index)
        if whole_failure(index):
            for attempt in range(1, WHOLE_ATTEMPTS + 1):
                store.begin_attempt(job_id, index)
                if attempt < WHOLE_ATTEMPTS:
                    store.end_attempt(job_id, index, "transient: 503 from the model")
            outcome = await settle(store, job_id, index, error=CHUNK_ERROR)
        else:
            store.begin_attempt(job_id, index)
            results = [
                ItemResult(i, index, item_id(i), error=ITEM_ERRORS[i % 2], attempts=1 + i % 2)
                for i in range(chunk.start, chunk.end)
            ]
            await keep_results(store, job_id, index, results)
            outcome = await settle(store, job_id, index, items=chunk.size)
        assert outcome.recorded, outcome
        finished = outcome.job_finished
    assert finished, f"{job_id}: the last settlement did not finish the job"
    return planned.total_chunks


def child(job_id: str, step: str) -> None:
    """In the fresh subprocess: one step of the finishing unit, measured; its figures as JSON."""
    import tracemalloc

    import workloads  # noqa: F401 - registers the llm workload, as every entrypoint does
    from chunking import lifecycle
    from chunking.settings import get_settings
    from stores.factory import open_store
    from workloads.llm import blobs
    from workloads.llm.failures import merge_errors

    settings = get_settings()
    store = open_store(settings.job_store_url)
    job = store.get_job(job_id)  # also opens the store's connection: not counted
    assert job is not None and job.state == "finished", job
    if blobs.is_s3(settings.llm_output_uri):  # the client, its models, a first request
        blobs.s3_client().head_bucket(Bucket=blobs.split_s3(settings.llm_output_uri)[0])
    rss_before = proc_status_kib("VmRSS")
    reset_peak_rss()
    tracemalloc.start()
    started = time.perf_counter()
    if step == "errors":
        uri = merge_errors(store, job)
    else:
        lifecycle.finish(store, job_id)
        uri = None
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if uri is None:
        ended = store.get_job(job_id)
        uri = ended.errors_uri if ended else None
    print_figures(uri, peak, seconds, rss_before)


def run_child(job_id: str, step: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.errors_memory", "--child", job_id, "--step", step],
        env=dict(os.environ),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"the {step} step of {job_id} failed:\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def read_lines(uri: str) -> Iterator[bytes]:
    """The file's lines, streamed (a local path or an s3:// URI)."""
    from workloads.llm import blobs

    if blobs.is_s3(uri):
        bucket, key = blobs.split_s3(uri)
        body = blobs.s3_client().get_object(Bucket=bucket, Key=key)["Body"]
        with body:
            yield from body.iter_lines()
        return
    with open(uri, "rb") as f:
        for line in f:
            yield line.rstrip(b"\n")


def check_errors_file(uri: str | None, items: int, chunk_size: int) -> int:
    """Raise unless the file has exactly one line per item, in input order, each the item's
    input line with its own error and attempts (its chunk's, for a chunk failed whole)."""
    assert uri is not None, "no errors file"
    expected = input_lines(items)
    count = 0
    for count, raw in enumerate(read_lines(uri), start=1):
        index = count - 1
        assert index < items, f"{uri}: more than {items} lines"
        line = json.loads(raw)
        if whole_failure(index // chunk_size):
            error, attempts = CHUNK_ERROR, WHOLE_ATTEMPTS
        else:
            error, attempts = ITEM_ERRORS[index % 2], 1 + index % 2
        wanted = {"id": item_id(index), "input": json.loads(next(expected))}
        wanted |= {"error": error, "attempts": attempts}
        assert line == wanted, f"{uri} line {count}: {line} != {wanted}"
    assert count == items, f"{uri}: {count} lines for {items} failed items"
    return count


def measure(where: str, tag: str, sizes: list[int], chunk_size: int) -> dict[str, Any]:
    """Build each size's job, then measure each step in a fresh subprocess; the table printed,
    and the figures returned."""
    from chunking.settings import get_settings
    from workloads.llm import blobs

    settings = get_settings()
    rows: list[dict[str, Any]] = []
    for items in sizes:
        # Named by variant too: the runner remembers a job's record by its id, per process.
        job_id = f"bench-errors-{tag}-{items}"
        if blobs.is_s3(settings.llm_output_uri):
            input_uri = blobs.join(settings.llm_output_uri, "inputs", f"{job_id}.jsonl")
        else:
            input_uri = str(settings.llm_input_root / f"{job_id}.jsonl")
        built = time.perf_counter()
        chunks = asyncio.run(build_job(job_id, input_uri, items, chunk_size))
        built_s = time.perf_counter() - built
        for step in STEPS:
            figures = run_child(job_id, step)
            lines = check_errors_file(figures["uri"], items, chunk_size)
            size = blobs.size_of(figures["uri"])
            rows.append(
                {"step": step, "items": items, "chunks": chunks, "lines": lines, "bytes": size}
                | {"build_s": round(built_s, 2)}
                | figures
            )
    verdicts = judge(sizes, rows)
    print_table(where, chunk_size, rows, verdicts)
    return {"where": where, "chunk_size": chunk_size, "rows": rows, "verdicts": verdicts}


def judge(sizes: list[int], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each step's ratios, largest size over smallest, and whether the target is met."""
    verdicts: dict[str, Any] = {}
    for step in STEPS:
        by_size = {row["items"]: row for row in rows if row["step"] == step}
        small, large = by_size[sizes[0]], by_size[sizes[-1]]
        peak = large["peak"] / small["peak"]
        rss = None
        if small["rss_peak_kib"] and large["rss_peak_kib"]:
            rss = large["rss_peak_kib"] / small["rss_peak_kib"]
        verdicts[step] = {
            "peak_ratio": round(peak, 3),
            "rss_ratio": None if rss is None else round(rss, 3),
            "met": peak <= TARGET_RATIO,
        }
    return verdicts


def print_table(
    where: str, chunk_size: int, rows: list[dict[str, Any]], verdicts: dict[str, Any]
) -> None:
    print(f"\n{where}, chunks of {chunk_size:,} items, half failed item by item, half whole")
    print(
        f"{'step':<7} {'failed':>9} {'chunks':>6} {'errors file':>11} {'tracemalloc peak':>16}"
        f" {'RSS before':>10} {'peak RSS':>10} {'time':>7}"
    )
    for r in rows:
        print(
            f"{r['step']:<7} {r['items']:>9,} {r['chunks']:>6,} {r['bytes'] / 2**20:>8.1f} MB"
            f" {r['peak'] / 2**20:>12.2f} MiB {mib(r['rss_before_kib'])}"
            f" {mib(r['rss_peak_kib'])} {r['seconds']:>5.2f} s"
        )
    sizes = sorted({r["items"] for r in rows})
    for step, v in verdicts.items():
        verdict = "met" if v["met"] else "NOT met"
        line = f"{step}: ratio {sizes[-1]:,} / {sizes[0]:,}: tracemalloc peak {v['peak_ratio']:.2f}"
        line += f" (target <= {TARGET_RATIO}: {verdict})"
        if v["rss_ratio"] is not None:
            line += f", peak RSS {v['rss_ratio']:.2f}"
        print(line)


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """The variant's settings in this process's environment (its subprocesses inherit it), put
    back as they were after: a test may run the bench in the suite's own process."""
    from chunking.settings import get_settings
    from workloads.llm import blobs

    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    get_settings.cache_clear()  # read again, from the variant's environment
    blobs.s3_client.cache_clear()  # its endpoint may be this variant's moto server
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
        blobs.s3_client.cache_clear()


def local_variant(sizes: list[int], chunk_size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="errors-bench-") as folder:
        paths = {
            "JOB_STORE_URL": f"sqlite:///{folder}/jobs.sqlite3",
            "LLM_OUTPUT_URI": f"{folder}/outputs",
            "LLM_INPUT_ROOT": folder,
        }
        with environment(paths):
            return measure("local folder", "local", sizes, chunk_size)


def s3_variant(sizes: list[int], chunk_size: int) -> dict[str, Any]:
    """The outputs and the input in a moto server's bucket (the cloud path's layout); the job
    store still SQLite. The server runs in this process: its memory is not the child's."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line a request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="errors-bench-s3-") as folder:
            values = AWS_ENV | {
                "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
                "JOB_STORE_URL": f"sqlite:///{folder}/jobs.sqlite3",
                "LLM_OUTPUT_URI": f"s3://{BUCKET}/outputs",
                "LLM_INPUT_ROOT": folder,
            }
            with environment(values):
                boto3.client("s3").create_bucket(Bucket=BUCKET)
                return measure("S3 (moto server)", "s3", sizes, chunk_size)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--chunk-size", type=int, default=1_000)
    parser.add_argument("--where", choices=["local", "s3", "both"], default="both")
    parser.add_argument("--results", type=Path, default=RESULTS, help="'-': not written")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a job id, in the subprocess
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child, args.step)
        return []
    print(f"errors file peak memory, {' vs '.join(f'{n:,}' for n in args.sizes)} failed items")
    runs = []
    if args.where in ("local", "both"):
        runs.append(local_variant(args.sizes, args.chunk_size))
    if args.where in ("s3", "both"):
        runs.append(s3_variant(args.sizes, args.chunk_size))
    if str(args.results) != "-":
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps({"target_ratio": TARGET_RATIO, "runs": runs}, indent=1))
        print(f"\nfigures: {args.results}")
    return runs


if __name__ == "__main__":
    main()
