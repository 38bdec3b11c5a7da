"""LLM batch mode (issue 23): a job sent as provider batches, on both paths, against the test
server's Batch API with a fixed turnaround.

    .venv/bin/python -m bench.llm_batch                                # 10,000 and 100,000 items
    .venv/bin/python -m bench.llm_batch --items 200 --turnaround 10    # smoke (about 2 minutes)
    .venv/bin/python -m bench.llm_batch --path local
    .venv/bin/python -m bench.llm_batch --path cloud --worker-timeout 900   # runs not cut at 300 s

Two batch jobs per path, items/10 and `--items` (10,000 and 100,000), both in chunks of
items/10 (10,000): 1 and 10 provider batches of the same size, so a batch's own costs (its calls,
its files' memory, its wait) can be compared between the two jobs, the job's size changing only
how many batches there are. Then the smaller input once more in realtime mode (the same spec
without `mode`), for its cost.

The model is tests/llm_server.py in a subprocess (`--batch-turnaround T`, 120 s by default): a
batch validates for T/10, is in progress for T and finalizes for T/10, so the server turns a
batch around in 1.2 T; realtime answers at once. The local path is the app (`uvicorn main:app`)
with the stand-in executor (tests/executor.py) running its functions, the poll runs' durable
sleeps included; the cloud path is the emulator (`python -m aws.local.emulator`), a poll a
delayed SQS message. Both poll a batch LLM_BATCH_POLL_MIN_S (1 s) x 1.5^n apart, at most
LLM_BATCH_POLL_MAX_S (5 s) (the stack: LlmBatchPollMinS, LlmBatchPollMaxS).

Figures, per job:
- control-plane calls by kind from the server's /stats (reset before the job): per batch, and
  calls(100k) / calls(10k) against batches(100k) / batches(10k) (bound: at most 1.25 x);
- peak memory (tracemalloc, in this process) of writing the job's request files with
  `workloads.llm.batch.write_requests`, chunk after chunk, and of reading its result files
  from the server through `BatchApi.lines` and `result_of`, line by line: 100k / 10k <= 1.5
  each; the local app process's peak RSS during the job (VmHWM, reset before it) is reported;
- wall time: the job's own finished_at - created_at, / the server's 1.2 T <= 1.2 (and / T);
- cost: usage.est_cost_usd / usage.realtime_cost_usd = the discount (0.5), and the 10k batch
  job's est_cost_usd / the realtime job's = 0.5.
Results: bench/results/llm_batch.json (one entry per items, turnaround and path).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.llm_throughput import (
    MODEL,
    REPO,
    RESULTS,
    TEMPLATE,
    CloudJobs,
    LocalApp,
    Scenario,
    ServerProcess,
    _import_functions_as_the_app_names_them,
    _wait,
    app_env,
    input_lines,
    job_duration_s,
    job_spec,
)

ITEMS = 100_000
TURNAROUND_S = 120.0
POLL_MIN_S, POLL_MAX_S = 1.0, 5.0
IN_FLIGHT = 5  # the local path's TENANT_CHUNK_CONCURRENCY, the stack's WorkerConcurrency
ITEM_CONCURRENCY = 16
# What the server adds to a batch's turnaround (validating and finalizing, T/10 each).
SERVER_LIFE = 1.2
MAX_CALL_GROWTH = 1.25  # calls(100k)/calls(10k) over batches(100k)/batches(10k)
MAX_MEMORY_RATIO = 1.5
MAX_WALL_RATIO = 1.2
# Control-plane calls by the role they play in a batch's life.
KINDS = {
    "uploads": ("files_create",),
    "creates": ("batches_create",),
    "polls": ("batches_retrieve",),
    "downloads": ("files_content",),
    "other": ("files_delete", "files_retrieve", "batches_cancel", "batches_list"),
}


@dataclass
class Job:
    """One batch job's figures on one path."""

    items: int
    chunk_size: int
    status: str
    items_processed: int
    wall_s: float | None
    batches: int  # created, from the server's calls
    calls: dict[str, int]  # by KINDS
    bytes_up: int
    bytes_down: int
    server_life_s: float | None  # the server's mean batch life (created to ended)
    # Where the wall time went: job created -> its last batch created (submitting), and its
    # last batch ended -> job finished (the last poll's wait, recording, merging).
    submit_s: float | None
    tail_s: float | None
    batch: dict[str, Any] | None  # the status JSON's
    est_cost_usd: float | None
    realtime_cost_usd: float | None
    write_peak_bytes: int = 0
    read_peak_bytes: int = 0
    request_file_bytes: int = 0  # of the largest request file written
    result_lines: int = 0
    app_peak_rss_bytes: int | None = None

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def per_batch(self) -> float:
        return self.total_calls / self.batches if self.batches else float("inf")


def job_of(
    items: int, chunk_size: int, status: dict[str, Any], stats: dict[str, Any], since: float
) -> Job:
    """A job's figures from its status JSON and the server's /stats (reset before it; its
    batches those created since `since`)."""
    calls = stats.get("calls") or {}
    by_kind = {kind: sum(int(calls.get(n, 0)) for n in names) for kind, names in KINDS.items()}
    mine = [b for b in (stats.get("batches") or {}).values() if b["created_at"] >= since]
    lives = [b["ended_at"] - b["created_at"] for b in mine if b.get("ended_at") is not None]
    duration = job_duration_s([status]) if status.get("created_at") else None
    submit_s = tail_s = None
    if mine and duration is not None:
        created = datetime.fromisoformat(status["created_at"]).timestamp()
        submit_s = round(max(b["created_at"] for b in mine) - created, 3)
        if all(b.get("ended_at") is not None for b in mine):
            tail_s = round(created + duration - max(b["ended_at"] for b in mine), 3)
    usage = status.get("usage") or {}
    return Job(
        items=items,
        chunk_size=chunk_size,
        status=str(status.get("status")),
        items_processed=int(status.get("items_processed") or 0),
        wall_s=round(duration, 3) if duration is not None else None,
        batches=int(calls.get("batches_create", 0)),
        calls=by_kind,
        bytes_up=int(stats.get("bytes_uploaded", 0)),
        bytes_down=int(stats.get("bytes_downloaded", 0)),
        server_life_s=round(sum(lives) / len(lives), 3) if lives else None,
        submit_s=submit_s,
        tail_s=tail_s,
        batch=status.get("batch"),
        est_cost_usd=usage.get("est_cost_usd"),
        realtime_cost_usd=usage.get("realtime_cost_usd"),
    )


@dataclass
class PathRun:
    """A path's two batch jobs, its realtime job's cost, and the verdicts."""

    path: str
    turnaround_s: float
    small: Job
    large: Job
    realtime_est_cost_usd: float | None
    realtime_status: str
    checks: dict[str, bool] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def _equal(ratio_of: tuple[float | None, float | None], expected: float) -> bool:
    """a / b == expected, but for the rounding of a and b to 6 decimals (the status's)."""
    a, b = ratio_of
    if a is None or not b:
        return False
    return abs(a / b - expected) <= (0.5e-6 + expected * 0.5e-6) / b + 1e-9


def judge(run: PathRun) -> PathRun:
    small, large, life = run.small, run.large, SERVER_LIFE * run.turnaround_s
    growth = _ratio(large.total_calls, small.total_calls)
    batches_growth = _ratio(large.batches, small.batches)
    discount = float((large.batch or {}).get("discount") or 0.5)
    run.ratios = {
        "calls_growth": growth,
        "batches_growth": batches_growth,
        "write_memory": _ratio(large.write_peak_bytes, small.write_peak_bytes),
        "read_memory": _ratio(large.read_peak_bytes, small.read_peak_bytes),
        "app_rss": _ratio(large.app_peak_rss_bytes, small.app_peak_rss_bytes),
        "wall_small": _ratio(small.wall_s, life),
        "wall_large": _ratio(large.wall_s, life),
        "wall_large_over_T": _ratio(large.wall_s, run.turnaround_s),
        "cost_small": _ratio(small.est_cost_usd, small.realtime_cost_usd),
        "cost_large": _ratio(large.est_cost_usd, large.realtime_cost_usd),
        "batch_over_realtime": _ratio(small.est_cost_usd, run.realtime_est_cost_usd),
    }
    r = run.ratios
    run.checks = {
        "both jobs succeeded, every item": all(
            j.status == "succeeded" and j.items_processed == j.items for j in (small, large)
        ),
        f"calls growth <= {MAX_CALL_GROWTH} x batches growth": growth is not None
        and batches_growth is not None
        and growth <= MAX_CALL_GROWTH * batches_growth,
        f"write memory 100k/10k <= {MAX_MEMORY_RATIO}": (r["write_memory"] or 99)
        <= MAX_MEMORY_RATIO,
        f"read memory 100k/10k <= {MAX_MEMORY_RATIO}": (r["read_memory"] or 99) <= MAX_MEMORY_RATIO,
        f"wall (10k) / server turnaround <= {MAX_WALL_RATIO}": (r["wall_small"] or 99)
        <= MAX_WALL_RATIO,
        f"wall (100k) / server turnaround <= {MAX_WALL_RATIO}": (r["wall_large"] or 99)
        <= MAX_WALL_RATIO,
        "est cost / realtime cost == discount": all(
            _equal((j.est_cost_usd, j.realtime_cost_usd), discount) for j in (small, large)
        ),
        "batch job cost / realtime job cost == 0.5": run.realtime_status == "succeeded"
        and _equal((small.est_cost_usd, run.realtime_est_cost_usd), 1 - discount),
    }
    return run


def table(runs: list[PathRun]) -> str:
    head = (
        f"{'path':<5} {'items':>7} {'status':<9} {'batches':>7} {'calls':>5} {'/batch':>6} "
        f"{'up':>3} {'cre':>3} {'poll':>4} {'down':>4} {'oth':>3} {'wall s':>7} "
        f"{'/1.2T':>5} {'subm s':>6} {'tail s':>6} {'write KiB':>9} {'read KiB':>8} "
        f"{'app MiB':>7} {'est $':>9} {'rt $':>9}"
    )
    lines = [head, "-" * len(head)]
    for run in runs:
        for job in (run.small, run.large):
            c = job.calls
            rss = job.app_peak_rss_bytes
            lines.append(
                f"{run.path:<5} {job.items:>7} {job.status:<9} {job.batches:>7} "
                f"{job.total_calls:>5} {job.per_batch():>6.1f} {c['uploads']:>3} "
                f"{c['creates']:>3} {c['polls']:>4} {c['downloads']:>4} {c['other']:>3} "
                f"{job.wall_s if job.wall_s is not None else '-':>7} "
                f"{_show(_ratio(job.wall_s, SERVER_LIFE * run.turnaround_s)):>5} "
                f"{_show(job.submit_s):>6} {_show(job.tail_s):>6} "
                f"{job.write_peak_bytes / 1024:>9.1f} {job.read_peak_bytes / 1024:>8.1f} "
                f"{'-' if rss is None else f'{rss / 2**20:.0f}':>7} "
                f"{_show(job.est_cost_usd):>9} {_show(job.realtime_cost_usd):>9}"
            )
    for run in runs:
        lines.append(f"{run.path}: {json.dumps(run.ratios)}")
        lines += [f"  {'PASS' if ok else 'MISS'} {name}" for name, ok in run.checks.items()]
    return "\n".join(lines)


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


# -- memory of the batch files ------------------------------------------------------------


def items_of(scenario: Scenario, prefix: str, count: int) -> list[Any]:
    """The job's items as the app reads them (index, id, the prompt from the template)."""
    from workloads.llm.input import Item

    return [
        Item(i, f"{prefix}{i:06d}", TEMPLATE.replace("{text}", scenario.text_of(i)))
        for i in range(count)
    ]


@contextmanager
def traced() -> Iterator[list[int]]:
    """tracemalloc's peak over the block (bytes), in the list it yields."""
    peak = [0]
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def write_peak(items: list[Any], chunk_size: int) -> tuple[int, int]:
    """Peak memory of writing the job's request files one chunk after another (as its runs
    do, each to a temporary file), and the largest file's bytes. The items are read first."""
    from workloads.llm.batch import write_requests

    largest = 0
    with tempfile.TemporaryFile() as out:  # once untraced: the first call's imports
        write_requests(items[:1], MODEL, None, out)
    with traced() as peak:
        for start in range(0, len(items), chunk_size):
            with tempfile.TemporaryFile() as out:
                written = write_requests(items[start : start + chunk_size], MODEL, None, out)
            largest = max(largest, written)
    return peak[0], largest


def result_files(model_url: str, job_id: str) -> list[str]:
    """The job's batches' output and error files, from the provider's list."""
    import openai

    client = openai.OpenAI(api_key="bench", base_url=f"{model_url}/v1", max_retries=0)
    files = []
    for batch in client.batches.list(limit=100):
        if (batch.metadata or {}).get("job_id") == job_id:
            files += [f for f in (batch.output_file_id, batch.error_file_id) if f]
    client.close()
    return files


def read_peak(model_url: str, file_ids: list[str], items: list[Any]) -> tuple[int, int]:
    """Peak memory of streaming the result files through BatchApi.lines and result_of, a
    line at a time (each result dropped, as the app keeps it in its store), and the lines."""
    from workloads.llm.batch import BatchApi, result_of
    from workloads.llm.client import LlmClient

    by_index = {item.index: item for item in items}

    async def read() -> tuple[int, int]:
        async with LlmClient(api_key="bench", base_url=f"{model_url}/v1", model=MODEL) as client:
            api, lines = BatchApi(client), 0
            async for line in api.lines(file_ids[0]):  # once untraced: the first call's imports
                result_of(line, by_index)
            with traced() as peak:
                for file_id in file_ids:
                    async for line in api.lines(file_id):
                        result = result_of(line, by_index)
                        lines += result is not None
            return peak[0], lines

    return asyncio.run(read())


def measure_files(job: Job, scenario: Scenario, prefix: str, model_url: str, job_id: str) -> None:
    items = items_of(scenario, prefix, job.items)
    job.write_peak_bytes, job.request_file_bytes = write_peak(items, job.chunk_size)
    files = result_files(model_url, job_id)
    job.read_peak_bytes, job.result_lines = read_peak(model_url, files, items)


# -- the runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    items: int  # of the larger job; the smaller is a tenth
    turnaround_s: float
    worker_timeout_s: float | None = None  # the stack's worker Timeout (None: the template's)

    @property
    def sizes(self) -> tuple[int, int]:
        return max(1, self.items // 10), self.items

    @property
    def chunk_size(self) -> int:
        return self.sizes[0]

    @property
    def timeout_s(self) -> float:
        return 3 * SERVER_LIFE * self.turnaround_s + 600 + (self.worker_timeout_s or 0)

    def scenario(self) -> Scenario:
        return Scenario("batch", "batch", self.items, self.chunk_size, IN_FLIGHT, None)


def batch_spec(chunk_size: int, input_uri: str = "") -> dict[str, Any]:
    return {**job_spec(input_uri, chunk_size), "mode": "batch"}


def peak_rss_reset(pid: int) -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def _batch_jobs(
    setup: Setup,
    server: ServerProcess,
    start: Any,
    wait: Any,
    around: Any,
) -> list[Job]:
    """The two batch jobs, one after the other, each measured alone."""
    scenario, jobs = setup.scenario(), []
    for n, count in enumerate(setup.sizes):
        prefix = f"b{n}-"
        server.reset()
        since = time.time() - 1
        with around() as rss:
            job_id = start(f"batch-{count}", input_lines(scenario, prefix, count), setup.chunk_size)
            status = wait(job_id)
        job = job_of(count, setup.chunk_size, status, server.stats(), since)
        job.app_peak_rss_bytes = rss[0]
        measure_files(job, scenario, prefix, server.url, job_id)
        print(f"  {count} items: {job.status} in {job.wall_s} s, {job.batches} batches")
        jobs.append(job)
    return jobs


@contextmanager
def no_rss() -> Iterator[list[int | None]]:
    yield [None]


def run_local(setup: Setup, server: ServerProcess) -> PathRun:
    _import_functions_as_the_app_names_them()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llm-batch-")))
        scenario = setup.scenario()
        store_url = f"sqlite:///{work / 'jobs.sqlite3'}"
        env = app_env(scenario, work, store_url, server.url, ITEM_CONCURRENCY)
        env |= {"LLM_BATCH_POLL_MIN_S": str(POLL_MIN_S), "LLM_BATCH_POLL_MAX_S": str(POLL_MAX_S)}
        app = LocalApp(env, work, IN_FLIGHT)
        stack.callback(app.close)

        def start(name: str, body: str, chunk_size: int, mode: str = "batch") -> str:
            path = work / f"{name}.jsonl"
            path.write_text(body)
            spec = batch_spec(chunk_size, str(path))
            if mode != "batch":
                del spec["mode"]
            return app.submit(spec)

        def wait(job_id: str) -> dict[str, Any]:
            return _wait(app.status, app.cancel, job_id, setup.timeout_s)

        @contextmanager
        def app_rss() -> Iterator[list[int | None]]:
            peak_rss_reset(app.proc.pid)
            got: list[int | None] = [None]
            yield got
            got[0] = peak_rss(app.proc.pid)

        wait(start("warm", input_lines(scenario, "warm-", IN_FLIGHT), 1, mode="realtime"))
        small, large = _batch_jobs(setup, server, start, wait, app_rss)
        body = input_lines(scenario, "b0-", setup.sizes[0])
        realtime = wait(start("realtime", body, setup.chunk_size, mode="realtime"))
    return _path_run("local", setup, small, large, realtime)


def cloud_parameters(model_url: str) -> list[str]:
    parameters = {
        "OpenAiBaseUrl": f"{model_url}/v1",
        "OpenAiModel": MODEL,
        "WorkerConcurrency": str(IN_FLIGHT),
        "WorkerBatchSize": "1",
        "LlmItemConcurrency": str(ITEM_CONCURRENCY),
        "LlmBatchPollMinS": f"{POLL_MIN_S:g}",
        "LlmBatchPollMaxS": f"{POLL_MAX_S:g}",
    }
    return [arg for name, value in parameters.items() for arg in ("--parameter", f"{name}={value}")]


def run_cloud(setup: Setup, server: ServerProcess) -> PathRun:
    from aws.local.emulator import EmulatorProcess

    scenario = setup.scenario()
    times = (
        ()
        if setup.worker_timeout_s is None
        else ("--worker-timeout", f"{setup.worker_timeout_s:g}")
    )
    with EmulatorProcess(*times, *cloud_parameters(server.url)) as emulator:
        cloud = CloudJobs(emulator)
        cloud.warm_up(scenario, IN_FLIGHT)

        def start(name: str, body: str, chunk_size: int, mode: str = "batch") -> str:
            spec = batch_spec(chunk_size)
            if mode != "batch":
                del spec["mode"]
            return cloud.start(f"inputs/{name}.jsonl", body, spec)

        def wait(job_id: str) -> dict[str, Any]:
            return cloud.wait(job_id, setup.timeout_s)

        small, large = _batch_jobs(setup, server, start, wait, no_rss)
        body = input_lines(scenario, "b0-", setup.sizes[0])
        realtime = wait(start("realtime", body, setup.chunk_size, mode="realtime"))
    return _path_run("cloud", setup, small, large, realtime)


def _path_run(path: str, setup: Setup, small: Job, large: Job, realtime: dict[str, Any]) -> PathRun:
    print(f"  realtime {small.items} items: {realtime.get('status')}")
    run = PathRun(
        path=path,
        turnaround_s=setup.turnaround_s,
        small=small,
        large=large,
        realtime_est_cost_usd=(realtime.get("usage") or {}).get("est_cost_usd"),
        realtime_status=str(realtime.get("status")),
    )
    return judge(run)


def save(runs: list[PathRun], setup: Setup, took_s: dict[str, float]) -> Path:
    """Merge into bench/results/llm_batch.json, one entry per "<items> items, T <s>, <path>"."""
    out = RESULTS / "llm_batch.json"
    saved: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    for run in runs:
        timeout = "" if setup.worker_timeout_s is None else f", worker {setup.worker_timeout_s:g} s"
        saved[f"{setup.items} items, T {setup.turnaround_s:g} s, {run.path}{timeout}"] = {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit,
            "poll_min_s": POLL_MIN_S,
            "poll_max_s": POLL_MAX_S,
            "worker_timeout_s": setup.worker_timeout_s if run.path == "cloud" else None,
            "run_took_s": round(took_s[run.path], 1),
            **asdict(run),
        }
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(saved, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=ITEMS, help="the larger job's (100,000)")
    parser.add_argument("--turnaround", type=float, default=TURNAROUND_S, help="seconds (120)")
    parser.add_argument("--path", choices=["local", "cloud", "both"], default="both")
    parser.add_argument(
        "--worker-timeout", type=float, help="the cloud worker's Timeout, s (the template's: 300)"
    )
    args = parser.parse_args(argv)
    setup = Setup(args.items, args.turnaround, args.worker_timeout)
    paths = ("local", "cloud") if args.path == "both" else (args.path,)
    runs, took = [], {}
    with tempfile.TemporaryDirectory(prefix="llm-batch-logs-") as logs:
        for path in paths:
            print(
                f"{path} path: {setup.sizes[0]} and {setup.sizes[1]} items in chunks of "
                f"{setup.chunk_size}, turnaround {setup.turnaround_s:g} s"
            )
            started = time.monotonic()
            args_ = ["--batch-turnaround", str(setup.turnaround_s)]
            server = ServerProcess("tests.llm_server", args_, Path(logs), "/stats/reset")
            try:
                runs.append((run_local if path == "local" else run_cloud)(setup, server))
            finally:
                server.stop()
            took[path] = time.monotonic() - started
            print(f"  took {took[path]:.0f} s")
    print()
    print(table(runs))
    print(f"figures: {save(runs, setup, took).relative_to(REPO)}")
    missed = sum(not ok for run in runs for ok in run.checks.values())
    print(f"{missed} of {sum(len(r.checks) for r in runs)} bounds missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
