"""Benchmarks of scale (issue 12): what a request or a chunk costs must not grow with the job.

    .venv/bin/python -m bench.scale status      # status() at 100,000 vs 1,000 settled chunks
    .venv/bin/python -m bench.scale accept      # POST /jobs, POST /start: 1M-line vs 10-line input
    .venv/bin/python -m bench.scale chunk-read  # last vs first chunk of a 1M-line input
    .venv/bin/python -m bench.scale llm-e2e     # a 100,000-item llm job on the emulated cloud
    .venv/bin/python -m bench.scale all         # each of them in turn, each in a fresh process

- status: SqliteJobStore (a temporary file) and DynamoJobStore (moto, in this process), a job
  of 1,000 and one of 100,000 chunks of 10 items, every chunk begun and settled (1 in 50
  failed); the median of `--calls` status() calls per size, the two sizes interleaved. SQLite
  settles all of them through the store API. moto copies the whole table for every
  transaction (its rollback), so a settlement through the API slows as the table grows: the
  100,000-chunk job's first 100 chunks are settled through the API, then the 1,000-chunk
  job's, timed; if the rest would take more than `--api-budget-s`, they are written with
  BatchWriteItem (the rows and SETTLED markers `_begin` and `_record_outcome` write, the tally
  from `attempt_change` and `settle_change`) and the job's row set to the totals with one
  UpdateItem - the output says so. A status read touches only the job's row either way.
- accept: the local app over HTTP (uvicorn in a thread; the Inngest event API a stand-in that
  accepts at once) and the cloud starter's handler (moto in this process), a fresh job per
  call, median of `--calls` per size after warm-up calls.
- chunk-read: `build_index` once (chunks of 100 lines; timed: the job's first durable unit),
  then `chunk_items` of chunk 0 and of the last chunk, median of `--calls` each; a local file,
  and S3 on moto (in this process).
- llm-e2e: `python -m aws.local.emulator` (its model the OpenAI-compatible test server in this
  process, answering at once; `--concurrency` workers of one record each, warmed first by
  jobs of 1, 2, 4... chunks, since cold workers starting together on 2 cores overrun the 10 s
  init limit; visibility timeout 600 s, so a failed invocation's chunk comes back within the
  run), chunks of 1,000; the wall time is the job's own (finished_at - created_at), and the
  model calls are counted by the test server.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

AWS_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_SERVICE_NAME": "bench-scale",
}
CHUNK_ITEMS = 10  # status: items per chunk
FAIL_EVERY = 50  # status: one chunk in 50 fails
BATCH_WRITE_MAX = 25  # items per BatchWriteItem
API_HEAD = 100  # status, DynamoDB: the large job's chunks settled through the API if bulk-loaded


def command(name: str, args: argparse.Namespace, *options: str) -> None:
    values = {o: getattr(args, o) for o in options}
    shown = " ".join(
        f"--{o.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for o, v in values.items()
    )
    print(f"$ .venv/bin/python -m bench.scale {name} {shown}".rstrip())


def set_aws_env() -> None:
    os.environ.update(AWS_ENV)
    os.environ.pop("AWS_PROFILE", None)


def median_ms(timings: list[float]) -> float:
    return statistics.median(timings) * 1000


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f} (target <= {target:g}: {'met' if ratio <= target else 'NOT met'})"


# --- status ---


def outcome_of(index: int, rng: random.Random) -> dict[str, Any]:
    """How chunk `index` settles: succeeded with 10 items, or (1 in 50) failed."""
    failed = index % FAIL_EVERY == FAIL_EVERY - 1
    return {
        "succeeded": not failed,
        "items": CHUNK_ITEMS,
        "latency_ms": round(rng.uniform(200, 900), 1),
        "error": "TransientError: bench failure" if failed else None,
    }


def create_running_job(store: Any, job_id: str, chunks: int) -> None:
    from chunking.spec import JobSpec

    spec = JobSpec(total_items=chunks * CHUNK_ITEMS, chunk_size=CHUNK_ITEMS)
    store.create_job(job_id, spec, "local")
    assert store.start_job(job_id)


def settle_through_api(store: Any, job_id: str, first: int, last: int, seed: int) -> float:
    """Begin and settle chunks first..last-1 through the store API; the seconds it took."""
    rng = random.Random(seed)
    started = time.perf_counter()
    for index in range(first, last):
        assert store.begin_attempt(job_id, index) == 1
        assert store.settle_chunk(job_id, index, **outcome_of(index, rng)).recorded
    return time.perf_counter() - started


def time_status(store: Any, jobs: dict[int, str], calls: int) -> dict[int, list[float]]:
    """`calls` status() calls per job, interleaved so that drift hits both sizes alike."""
    for job_id in jobs.values():  # warm-up
        for _ in range(5):
            store.status(job_id)
    timings: dict[int, list[float]] = {n: [] for n in jobs}
    for _ in range(calls):
        for n, job_id in jobs.items():
            started = time.perf_counter()
            status = store.status(job_id)
            timings[n].append(time.perf_counter() - started)
            assert status is not None and status.chunks_failed == n // FAIL_EVERY
            assert status.items_processed == (n - n // FAIL_EVERY) * CHUNK_ITEMS
    return timings


def print_status(name: str, jobs: dict[int, str], timings: dict[int, list[float]]) -> None:
    for n in jobs:
        t = sorted(timings[n])
        print(
            f"{name:<16} {n:>15,} {median_ms(t):>10.3f} {t[0] * 1000:>8.3f} "
            f"{t[int(len(t) * 0.9)] * 1000:>8.3f} {len(t):>6}"
        )
    small, large = (statistics.median(timings[n]) for n in sorted(jobs))
    print(
        f"{name:<16} ratio median({max(jobs):,}) / median({min(jobs):,}) = "
        f"{verdict(large / small, 1.5)}"
    )


STATUS_HEADER = (
    f"{'store':<16} {'settled chunks':>15} {'median ms':>10} {'min ms':>8} "
    f"{'p90 ms':>8} {'calls':>6}"
)


def status_sqlite(sizes: list[int], calls: int) -> None:
    from stores.sqlite import SqliteJobStore

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        store = SqliteJobStore(Path(tmp) / "jobs.sqlite3")
        jobs: dict[int, str] = {}
        for n in sizes:
            jobs[n] = f"sqlite-{n}"
            create_running_job(store, jobs[n], n)
            took = settle_through_api(store, jobs[n], 0, n, seed=n)
            print(
                f"sqlite: {n:,} chunks begun and settled through the store API in {took:.1f} s "
                f"({took / n * 1000:.2f} ms each)"
            )
        timings = time_status(store, jobs, calls)
        print(STATUS_HEADER)
        print_status("SqliteJobStore", jobs, timings)


def bulk_settle(db: Any, table: str, job_id: str, first: int, last: int, seed: int) -> None:
    """Chunks first..last-1 begun and settled as `_begin` and `_record_outcome` write them
    (chunk rows, SETTLED markers, the job's tally from `attempt_change` and `settle_change`),
    with BatchWriteItem, then the job's row set to the totals (and finished) in one UpdateItem."""
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    from stores.base import COUNTERS, SUMMARIES, attempt_change, settle_change, stored_time
    from stores.dynamodb import chunk_sk, settled_sk, state_key

    ser, de = TypeSerializer(), TypeDeserializer()

    def attributes(item: dict[str, Any]) -> dict[str, Any]:
        return {
            k: ser.serialize(Decimal(str(v)) if isinstance(v, float) else v)
            for k, v in item.items()
            if v is not None
        }

    key = {"job_id": {"S": job_id}, "sk": {"S": "JOB"}}
    raw = db.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
    job = {k: de.deserialize(v) for k, v in raw.items()}
    rng = random.Random(seed)
    for index in range(first):
        outcome_of(index, rng)  # the draws the API's settlements made: the same sequence
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        request = {table: [{"PutRequest": {"Item": attributes(item)}} for item in batch]}
        while request:
            request = db.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
        batch.clear()

    for index in range(first, last):
        drawn = outcome_of(index, rng)
        succeeded = drawn["succeeded"]
        outcome = {
            "chunk_index": index,
            "state": "succeeded" if succeeded else "failed",
            "items": drawn["items"] if succeeded else 0,
            "latency_ms": drawn["latency_ms"],
            "error": drawn["error"],
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "items_failed": 0,
        }
        for name, n in attempt_change(None).items():
            job[name] = int(job.get(name) or 0) + n
        change = settle_change(job, True, 1, outcome, datetime.now(UTC))
        for name, n in change.add.items():
            job[name] = int(job.get(name) or 0) + n
        job.update(change.put)
        state = state_key(str(outcome["state"]), index)
        chunk = {
            "job_id": job_id,
            "sk": chunk_sk(index),
            "attempts": 1,
            **outcome,
            **change.chunk,
            "chunk_state": state,
        }
        marker = {
            "job_id": job_id,
            "sk": settled_sk(int(change.chunk["seq"] or 0)),
            "chunk_index": index,
        }
        batch += [chunk, marker]
        if len(batch) >= BATCH_WRITE_MAX - 1:
            flush()
    if batch:
        flush()
    fields = {name: job.get(name) for name in (*COUNTERS, *SUMMARIES)}
    fields |= {
        "state": "finished",
        "finished_at": stored_time(datetime.now(UTC)),
        "settled_by": last - 1,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    db.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in fields),
        ExpressionAttributeNames={f"#{k}": k for k in fields},
        ExpressionAttributeValues={f":{k}": v for k, v in attributes(fields).items()},
    )


def status_dynamodb(sizes: list[int], calls: int, api_budget_s: float) -> None:
    import boto3
    from moto import mock_aws

    from aws.local.resources import create_resources
    from stores.dynamodb import DynamoJobStore

    set_aws_env()
    with mock_aws():
        db = boto3.client("dynamodb")
        created = create_resources(db, boto3.client("sqs"))
        store = DynamoJobStore(created.table_name, db)
        small, large = min(sizes), max(sizes)
        jobs = {small: f"dynamo-{small}", large: f"dynamo-{large}"}
        create_running_job(store, jobs[small], small)
        create_running_job(store, jobs[large], large)
        # The large job's first chunks through the API while the table is small (moto copies
        # the whole table for every transaction), then the small job's 1,000, timed.
        head = min(API_HEAD, large)
        head_s = settle_through_api(store, jobs[large], 0, head, seed=large)
        took = settle_through_api(store, jobs[small], 0, small, seed=small)
        projected = took / small * (large - head)
        print(
            f"dynamodb (moto): {small:,} chunks begun and settled through the store API in "
            f"{took:.1f} s ({took / small * 1000:.1f} ms each); the other {large - head:,} "
            f"of the {large:,}-chunk job would take at least {projected / 60:.0f} min (more: "
            "moto copies the whole table for every transaction)"
        )
        if projected <= api_budget_s:
            took = settle_through_api(store, jobs[large], head, large, seed=large)
            print(
                f"dynamodb (moto): {large:,} chunks settled through the store API in "
                f"{took + head_s:.1f} s"
            )
        else:
            started = time.perf_counter()
            bulk_settle(db, created.table_name, jobs[large], head, large, seed=large)
            print(
                f"dynamodb (moto): BULK-LOADED - of the {large:,}-chunk job, the first {head:,} "
                f"chunks were settled through the store API ({head_s:.1f} s), the other "
                f"{large - head:,} chunk rows and SETTLED markers were written with "
                f"BatchWriteItem and the job row's tally set to the totals with one "
                f"UpdateItem ({time.perf_counter() - started:.1f} s)"
            )
        timings = time_status(store, jobs, calls)
        pages = db.get_paginator("query").paginate(
            TableName=created.table_name,
            KeyConditionExpression="job_id = :j",
            ExpressionAttributeValues={":j": {"S": jobs[large]}},
            Select="COUNT",
        )
        count = sum(page["Count"] for page in pages)
        print(
            f"dynamodb (moto): the {large:,}-chunk job's partition holds {count:,} items "
            "(its row, a row and a SETTLED marker per chunk)"
        )
        print(STATUS_HEADER)
        print_status("DynamoJobStore", jobs, timings)


def status_bench(args: argparse.Namespace) -> None:
    command("status", args, "sizes", "calls", "api_budget_s")
    import workloads  # noqa: F401 - registers the workloads, as every entrypoint does

    sizes = sorted(args.sizes)
    status_sqlite(sizes, args.calls)
    status_dynamodb(sizes, args.calls, args.api_budget_s)


# --- inputs ---


def write_input(path: Path, lines: int) -> int:
    """An llm input of `lines` lines `{"id": i, "prompt": "..."}`; its size in bytes."""
    with path.open("w") as f:
        for start in range(0, lines, 10_000):
            f.write(
                "".join(
                    f'{{"id": {i}, "prompt": "Say something about item {i}."}}\n'
                    for i in range(start, min(lines, start + 10_000))
                )
            )
    return path.stat().st_size


# --- accept ---


def accept_local(inputs: dict[str, Path], calls: int, warmup: int) -> dict[str, float]:
    from chunking.settings import Settings

    Settings.model_config["env_file"] = None
    from tests.support import FakeInngestApi, ServerThread

    fake = FakeInngestApi()
    inngest = ServerThread(fake.app).start()
    os.environ["INNGEST_DEV"] = inngest.url
    import httpx

    from main import app  # after the environment: its Inngest client is built on import

    server = ServerThread(app).start()
    timings: dict[str, list[float]] = {label: [] for label in inputs}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(warmup + calls):
            for label, path in inputs.items():
                spec = {"workload": "llm", "input_uri": str(path), "chunk_size": 1000}
                started = time.perf_counter()
                response = http.post("/jobs", json=spec)
                took = time.perf_counter() - started
                assert response.status_code == 202, response.text
                if i >= warmup:
                    timings[label].append(took)
    server.stop()
    inngest.stop()
    assert len(fake.named("demo/start_job")) == (warmup + calls) * len(inputs)
    return {label: median_ms(t) for label, t in timings.items()}


def accept_cloud(inputs: dict[str, Path], calls: int, warmup: int) -> dict[str, float]:
    import boto3
    from moto import mock_aws

    set_aws_env()
    with mock_aws():
        sqs = boto3.client("sqs")
        created = create_resources_env(sqs)
        s3 = boto3.client("s3")
        uris = {}
        for label, path in inputs.items():
            s3.upload_file(str(path), created.bucket_name, f"inputs/{path.name}")
            uris[label] = f"s3://{created.bucket_name}/inputs/{path.name}"
        from aws.local.lambda_events import lambda_context, post_start
        from aws.starter.app import lambda_handler

        timings: dict[str, list[float]] = {label: [] for label in inputs}
        for i in range(warmup + calls):
            for label, uri in uris.items():
                drain(sqs, created.queue_url)  # measure the starter, not moto's growing queue
                event = post_start({"workload": "llm", "input_uri": uri, "chunk_size": 1000})
                started = time.perf_counter()
                response = lambda_handler(event, lambda_context())
                took = time.perf_counter() - started
                assert response["statusCode"] == 202, response["body"]
                if i >= warmup:
                    timings[label].append(took)
    return {label: median_ms(t) for label, t in timings.items()}


def create_resources_env(sqs: Any) -> Any:
    """The stack's resources in moto, and the environment the functions get for them."""
    import boto3

    import cloud
    from aws.local.resources import create_resources
    from chunking.settings import get_settings

    created = create_resources(boto3.client("dynamodb"), sqs)
    os.environ.update(created.environment())
    get_settings.cache_clear()
    cloud.reset()
    return created


def drain(sqs: Any, url: str) -> None:
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)


def print_accept(name: str, medians: dict[str, float], calls: int) -> None:
    small, large = medians.values()
    labels = list(medians)
    print(
        f"{name:<12} {labels[0]}: median {small:7.2f} ms; {labels[1]}: median {large:7.2f} ms "
        f"(n={calls} each)"
    )
    print(
        f"{name:<12} ratio {verdict(large / small, 2)}; the {labels[1]} input's job "
        f"{large:.1f} ms ({'met' if large < 100 else 'NOT met'}: target < 100 ms)"
    )


def accept_bench(args: argparse.Namespace) -> None:
    command("accept", args, "calls", "lines")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        inputs = {"10 lines": root / "small.jsonl", f"{args.lines:,} lines": root / "large.jsonl"}
        for lines, path in zip((10, args.lines), inputs.values(), strict=True):
            print(f"input {path.name}: {lines:,} lines, {write_input(path, lines):,} bytes")
        os.environ.update(
            {
                "LLM_INPUT_ROOT": tmp,
                "LLM_OUTPUT_URI": str(root / "outputs"),
                "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                "OPENAI_API_KEY": "x",
                "JOB_STORE_URL": f"sqlite:///{root / 'jobs.sqlite3'}",
                "ITEM_DELAY_MS": "0",
            }
        )
        for name in (
            "INNGEST_SIGNING_KEY",
            "INNGEST_EVENT_KEY",
            "AWS_START_URL",
            "API_KEY",
            "CLOUD_API_KEY",
        ):
            os.environ.pop(name, None)
        local = accept_local(inputs, args.calls, warmup=3)
        print_accept("POST /jobs", local, args.calls)
        cloud = accept_cloud(inputs, args.calls, warmup=3)
        print_accept("POST /start", cloud, args.calls)


# --- chunk-read ---


def time_chunks(uri: str, index_at: str, chunks: int, calls: int) -> tuple[float, float]:
    from workloads.llm.index import chunk_items

    last = chunks - 1
    first_t: list[float] = []
    last_t: list[float] = []
    for _ in range(calls + 3):  # the first 3: warm-up
        for index, timings in ((0, first_t), (last, last_t)):
            started = time.perf_counter()
            items = chunk_items(uri, None, index_at, index, index * 100, 100)
            timings.append(time.perf_counter() - started)
            assert items[0].id == str(index * 100) and len(items) == 100
    return median_ms(first_t[3:]), median_ms(last_t[3:])


def chunk_read_one(name: str, uri: str, index_at: str, lines: int, calls: int) -> None:
    from workloads.llm.index import Indexed, build_index

    started = time.perf_counter()
    built = build_index(uri, None, 100, index_at)
    took = time.perf_counter() - started
    assert isinstance(built, Indexed) and built.total_items == lines
    chunks = lines // 100
    first, last = time_chunks(uri, index_at, chunks, calls)
    print(f"{name:<6} build_index ({lines:,} lines, {chunks:,} chunks of 100): {took:.2f} s")
    print(
        f"{name:<6} chunk 0: median {first:.3f} ms; chunk {chunks - 1:,}: median {last:.3f} ms "
        f"(n={calls} each); last / first = {verdict(last / first, 2)}"
    )


def chunk_read_bench(args: argparse.Namespace) -> None:
    command("chunk-read", args, "calls", "lines")
    lines = args.lines
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        os.environ["LLM_INPUT_ROOT"] = tmp
        path = root / "input.jsonl"
        print(f"input: {lines:,} lines, {write_input(path, lines):,} bytes")
        from chunking.settings import get_settings

        get_settings.cache_clear()
        chunk_read_one("local", str(path), str(root / "job" / "input.index"), lines, args.calls)
        import boto3
        from moto import mock_aws

        set_aws_env()
        with mock_aws():
            created = create_resources_env(boto3.client("sqs"))
            boto3.client("s3").upload_file(str(path), created.bucket_name, "inputs/input.jsonl")
            bucket = f"s3://{created.bucket_name}"
            uri, index_at = f"{bucket}/inputs/input.jsonl", f"{bucket}/outputs/job/input.index"
            chunk_read_one("s3", uri, index_at, lines, args.calls)


# --- llm-e2e ---


def run_job(emulator: Any, spec: dict[str, Any], timeout_s: float = 300) -> dict[str, Any]:
    """As bench.emulated_cloud.run_job (its wall time is the job's own), saying why a start
    was refused, and polling once a second (each poll is moto calls the job waits behind)."""
    import httpx

    from chunking.status import TERMINAL_STATUSES

    headers = {"x-api-key": emulator.api_key}
    response = httpx.post(f"{emulator.api}/Prod/start", json=spec, headers=headers, timeout=30)
    if response.status_code != 202:
        raise RuntimeError(f"POST /start answered {response.status_code}: {response.text}")
    url = response.json()["status_url"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status: dict[str, Any] = httpx.get(url, headers=headers, timeout=30).json()
        if status["status"] in TERMINAL_STATUSES:
            return status
        time.sleep(1)
    raise TimeoutError(f"job not done after {timeout_s} s: {status}")


def llm_e2e_bench(args: argparse.Namespace) -> None:
    command("llm-e2e", args, "items", "concurrency", "timeout_s")
    import boto3
    import httpx

    from aws.local.emulator import EmulatorProcess
    from aws.local.resources import NAMES
    from bench.emulated_cloud import wall_s
    from tests.llm_server import FakeModelServer
    from tests.support import ServerThread

    model = FakeModelServer()
    server = ServerThread(model.app).start()
    bucket = NAMES["DataBucket"]
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
        EmulatorProcess(
            "--parameter",
            f"OpenAiBaseUrl={server.url}/v1",
            "--parameter",
            f"WorkerConcurrency={args.concurrency}",
            "--parameter",
            "WorkerBatchSize=1",
            "--visibility-timeout",
            "600",
        ) as emulator,
    ):
        s3 = boto3.client(
            "s3",
            endpoint_url=emulator.moto,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        path = Path(tmp) / "input.jsonl"
        size = write_input(path, args.items)
        s3.upload_file(str(path), bucket, "inputs/e2e.jsonl")
        # Warm the worker processes first, as a busy function's are, with jobs of 1, 2, 4...
        # chunks: more than a couple starting at once on 2 cores take over the 10 s init limit.
        chunks = 1
        while True:
            warm = Path(tmp) / f"warm-{chunks}.jsonl"
            warm.write_text(
                "".join(
                    json.dumps({"id": f"w{i}", "prompt": f"warm {chunks} {i}"}) + "\n"
                    for i in range(4 * chunks)
                )
            )
            s3.upload_file(str(warm), bucket, f"inputs/{warm.name}")
            spec = {
                "workload": "llm",
                "input_uri": f"s3://{bucket}/inputs/{warm.name}",
                "chunk_size": 4,
            }
            warmed = run_job(emulator, spec)
            assert warmed["status"] == "succeeded", warmed
            if chunks >= args.concurrency:
                break
            chunks = min(2 * chunks, args.concurrency)
        model.calls.clear()
        spec = {
            "workload": "llm",
            "input_uri": f"s3://{bucket}/inputs/e2e.jsonl",
            "chunk_size": 1000,
        }
        started = time.monotonic()
        status = run_job(emulator, spec, timeout_s=args.timeout_s)
        observed = time.monotonic() - started
        state = httpx.get(f"{emulator.api}/_emulator", timeout=30).json()
    server.stop()
    calls = sum(model.calls.values())
    print(
        f"input: {args.items:,} items, {size:,} bytes, chunks of 1,000; WorkerConcurrency "
        f"{args.concurrency}, WorkerBatchSize 1, visibility timeout 600 s, worker Timeout "
        "300 s (the template's)"
    )
    print(
        f"status {status['status']}: {status['chunks_succeeded']} chunks succeeded, "
        f"{status['chunks_failed']} failed, {status['items_processed']:,} items processed, "
        f"retries {status['retries']}"
    )
    print(
        f"wall time (finished_at - created_at): {wall_s(status):.1f} s "
        f"({args.items / wall_s(status):.0f} items/s); start to final status seen: "
        f"{observed:.1f} s"
    )
    print(
        f"model calls counted: {calls:,} ({len(model.calls):,} distinct prompts, at most "
        f"{max(model.calls.values(), default=0)} per prompt); exactly {args.items:,}: "
        f"{'yes' if calls == args.items else 'NO'}"
    )
    print(
        f"emulator: {state['invocations']} worker invocations (warm-up included), "
        f"{state['failed_invocations']} failed, last error {state['last_error']!r}"
    )


# --- all ---


def run_all(args: argparse.Namespace) -> None:
    """Each benchmark in a fresh process: each sets its own environment before imports."""
    for name in ("status", "accept", "chunk-read", "llm-e2e"):
        subprocess.run([sys.executable, "-m", "bench.scale", name], check=True)
        print(flush=True)


BENCHMARKS: dict[str, Callable[[argparse.Namespace], None]] = {
    "status": status_bench,
    "accept": accept_bench,
    "chunk-read": chunk_read_bench,
    "llm-e2e": llm_e2e_bench,
    "all": run_all,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=list(BENCHMARKS))
    parser.add_argument("--calls", type=int, help="timed calls per size (status 200, else 30)")
    parser.add_argument(
        "--api-budget-s",
        type=float,
        default=600,
        help="status: most time for the settlements on moto",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs=2,
        default=[1_000, 100_000],
        help="status: settled chunks of the two jobs",
    )
    parser.add_argument(
        "--lines", type=int, default=1_000_000, help="accept, chunk-read: lines of the large input"
    )
    parser.add_argument("--items", type=int, default=100_000, help="llm-e2e: the job's items")
    parser.add_argument("--concurrency", type=int, default=4, help="llm-e2e: workers at once")
    parser.add_argument("--timeout-s", type=float, default=3600, help="llm-e2e: wait at most")
    args = parser.parse_args()
    if args.calls is None:
        args.calls = 200 if args.benchmark == "status" else 30 if args.benchmark == "accept" else 50
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    BENCHMARKS[args.benchmark](args)


if __name__ == "__main__":
    main()
