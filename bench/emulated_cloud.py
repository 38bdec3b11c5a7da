"""Benchmarks of the cloud path on the offline emulation (python -m aws.local.emulator).

    .venv/bin/python -m bench.emulated_cloud efficiency   # 40 chunks of 250 ms, 8 in flight
    .venv/bin/python -m bench.emulated_cloud sweep        # chunk size 10, 50, 200, 1000
    .venv/bin/python -m bench.emulated_cloud load         # POST /start, 50 clients, 2,000 calls
    .venv/bin/python -m bench.emulated_cloud fairness     # a high job beside a 2,000-chunk low one

Wall time is the job's own (finished_at - created_at in its status JSON), so polling does not
add to it. Worker processes are warmed by one job first, as a busy Lambda function's are.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import httpx

from aws.local.emulator import EmulatorProcess
from aws.local.resources import NAMES
from chunking.status import TERMINAL_STATUSES
from tools.cloud_cost import estimate

RESULTS = Path(__file__).parent / "results"
# At most 8 chunks in flight: 8 invocations of one record each.
EIGHT_IN_FLIGHT = ("--parameter", "WorkerConcurrency=8", "--parameter", "WorkerBatchSize=1")


def run_job(
    emulator: EmulatorProcess, spec: dict[str, Any], timeout_s: float = 300
) -> dict[str, Any]:
    headers = {"x-api-key": emulator.api_key}
    response = httpx.post(f"{emulator.api}/Prod/start", json=spec, headers=headers, timeout=30)
    response.raise_for_status()
    url, polls = response.json()["status_url"], 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status: dict[str, Any] = httpx.get(url, headers=headers, timeout=30).json()
        polls += 1
        if status["status"] in TERMINAL_STATUSES:
            status["status_polls"] = polls
            return status
        time.sleep(0.25)
    raise TimeoutError(f"job not done after {timeout_s}s")


def wall_s(status: dict[str, Any]) -> float:
    created = datetime.fromisoformat(status["created_at"])
    return (datetime.fromisoformat(status["finished_at"]) - created).total_seconds()


def efficiency(runs: int) -> None:
    ideal = 40 * 0.250 / 8
    spec = {"total_items": 2_000, "chunk_size": 50, "item_delay_ms": 5}
    with EmulatorProcess(*EIGHT_IN_FLIGHT) as emulator:
        run_job(emulator, spec)  # warm the 8 worker processes
        walls = []
        for _ in range(runs):
            status = run_job(emulator, spec)
            assert status["status"] == "succeeded" and status["items_processed"] == 2_000
            walls.append(wall_s(status))
    median = statistics.median(walls)
    print(f"2,000 items x 5 ms, chunk 50 (40 chunks of 250 ms), 8 in flight; ideal {ideal:.2f} s")
    print(f"wall times (s): {', '.join(f'{w:.3f}' for w in walls)}")
    print(f"median {median:.3f} s -> wall / ideal = {median / ideal:.2f} (target <= 1.25)")


def sweep() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, walls, costs = [10, 50, 200, 1000], [], []
    with EmulatorProcess(*EIGHT_IN_FLIGHT) as emulator:
        run_job(emulator, {"total_items": 80, "chunk_size": 10, "item_delay_ms": 0})  # warm up
        print("2,000 items x 5 ms, 8 in flight")
        print(f"{'chunk':>6} {'chunks':>7} {'wall s':>8} {'items/s':>8} {'est. USD':>10}")
        for size in sizes:
            status = run_job(
                emulator, {"total_items": 2_000, "chunk_size": size, "item_delay_ms": 5}
            )
            cost = estimate(status, status_polls=1, batch_size=1).usd  # one poll: the client's own
            walls.append(wall_s(status))
            costs.append(cost)
            print(
                f"{size:>6} {status['total_chunks']:>7} {walls[-1]:>8.3f} "
                f"{2_000 / walls[-1]:>8.0f} {cost:>10.7f}"
            )
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(sizes, walls, "o-", color="#4c72b0", label="wall time (s)")
    left.set_xscale("log")
    left.set_xlabel("chunk size (items)")
    left.set_ylabel("wall time (s)", color="#4c72b0")
    right = left.twinx()
    right.plot(sizes, [c * 1e6 for c in costs], "s--", color="#dd8452", label="est. cost")
    right.set_ylabel("estimated AWS cost (micro-USD)", color="#dd8452")
    fig.suptitle("Chunk-size sweep: 2,000 items x 5 ms, 8 chunks in flight (emulated cloud)")
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / "chunk_size_sweep.png", dpi=100)
    print(f"chart: {RESULTS / 'chunk_size_sweep.png'}")


async def _load(
    emulator: EmulatorProcess, clients: int, requests: int
) -> tuple[list[float], list[str], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    accepted: list[str] = []
    gate = asyncio.Semaphore(clients)
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def one(i: int) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    response = await http.post(
                        f"{emulator.api}/Prod/start",
                        json={"total_items": 10, "chunk_size": 10, "item_delay_ms": 0},
                        headers={"x-api-key": emulator.api_key},
                    )
                except httpx.HTTPError as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    return
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code == 202:
                    accepted.append(response.json()["job_id"])
                else:
                    errors.append(f"{response.status_code}: {response.text[:200]}")

        await asyncio.gather(*(one(i) for i in range(requests)))
    return latencies, errors, accepted


def load(clients: int, requests: int) -> None:
    with EmulatorProcess() as emulator:
        started = time.perf_counter()
        latencies, errors, accepted = asyncio.run(_load(emulator, clients, requests))
        elapsed = time.perf_counter() - started
        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=emulator.moto,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        stored: set[str] = set()
        for page in dynamodb.get_paginator("scan").paginate(
            TableName=NAMES["JobTable"],
            FilterExpression="sk = :job",
            ExpressionAttributeValues={":job": {"S": "JOB"}},
            ProjectionExpression="job_id",
        ):
            stored.update(item["job_id"]["S"] for item in page["Items"])
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    missing = set(accepted) - stored
    print(
        f"POST /start: {requests} requests from {clients} concurrent clients in {elapsed:.1f} s "
        f"({requests / elapsed:.0f} req/s)"
    )
    print(f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms")
    print(f"errors: {len(errors)}{' e.g. ' + errors[0] if errors else ''}")
    print(
        f"accepted {len(accepted)}, in the job table {len(set(accepted) & stored)}, "
        f"missing {len(missing)}"
    )


def fairness(runs: int, low_chunk_ms: int) -> None:
    """A 10-chunk high-priority job, alone and while a 2,000-chunk low-priority job runs."""
    high = {"total_items": 500, "chunk_size": 50, "item_delay_ms": 5, "priority": "high"}
    low = {"total_items": 2_000, "chunk_size": 1, "item_delay_ms": low_chunk_ms, "priority": "low"}
    with EmulatorProcess(*EIGHT_IN_FLIGHT) as emulator:
        headers = {"x-api-key": emulator.api_key}
        run_job(emulator, high)  # warm the worker processes of both event sources
        alone = [wall_s(run_job(emulator, high)) for _ in range(runs)]
        response = httpx.post(f"{emulator.api}/Prod/start", json=low, headers=headers, timeout=30)
        response.raise_for_status()
        big = response.json()["status_url"]
        while httpx.get(big, headers=headers, timeout=30).json()["chunks_succeeded"] < 50:
            time.sleep(0.2)
        beside = []
        for _ in range(runs):
            status = run_job(emulator, high)
            assert status["status"] == "succeeded"
            beside.append(wall_s(status))
        progress = httpx.get(big, headers=headers, timeout=30).json()
        httpx.post(f"{big}/cancel", headers=headers, timeout=30)  # done measuring: stop it
    ratio = statistics.median(beside) / statistics.median(alone)
    print(f"high job: 10 chunks of 250 ms; low job: 2,000 chunks of {low_chunk_ms} ms, first")
    print(f"high alone (s):       {', '.join(f'{w:.3f}' for w in alone)}")
    print(f"high beside low (s):  {', '.join(f'{w:.3f}' for w in beside)}")
    print(f"low job meanwhile: {progress['chunks_succeeded']} of 2,000 chunks done, still running")
    print(f"median beside / median alone = {ratio:.2f} (target <= 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=["efficiency", "sweep", "load", "fairness"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--low-chunk-ms", type=int, default=1000, help="fairness: low job chunks")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2_000)
    args = parser.parse_args()
    if args.benchmark == "efficiency":
        efficiency(args.runs)
    elif args.benchmark == "sweep":
        sweep()
    elif args.benchmark == "fairness":
        fairness(args.runs, args.low_chunk_ms)
    else:
        load(args.clients, args.requests)


if __name__ == "__main__":
    main()
