"""Store throughput (issue 13): settlements per second on SQLite, Postgres, and two replicas.

    .venv/bin/python -m bench.store_throughput [--writers 8 ...] [--chunks 10000] [--runs 3]

A settlement is what each chunk costs the store, as the app's chunk runner spends it:
`begin_attempt` then `settle_chunk` (succeeded, 1 item) of a distinct chunk of a running job
(chunks of 1 item). `--writers` threads per process settle at once, as the app's thread pool
does, each its own share of the chunks (several values: each in turn); the clock runs from
releasing them (each already holding its connection) until the last has settled its share.
Configurations:

- sqlite: `SqliteJobStore` on a fresh file, one process (WAL, synchronous=NORMAL, as the store
  opens it).
- postgres: `PostgresJobStore` (pool of `--writers` connections, all opened before the clock
  starts), one process, one job.
- postgres, 2 replicas, one job: two OS processes (this module with `--worker`), each with its
  own store and `--writers` threads, settling the odd and the even chunks of one job: every
  settlement locks the job's row (`SELECT … FOR UPDATE`), so the replicas queue for it. Both
  are released together (each reports when it is ready, then is told to go); the combined
  figure is all settlements over the span from the first start to the last finish.
- postgres, 2 replicas, two jobs: the same, each replica settling a job of its own (half the
  chunks each): no row shared, so the difference from the line above is the job row's lock.

Postgres is `tests/postgres_server.py`'s server, durable (fsync and synchronous_commit on, as
in production), on the same machine; each run gets a fresh schema (and SQLite a fresh file),
so every run starts from empty tables. The configurations are interleaved run by run, so the
machine's drift hits all alike. After each run the store must show every chunk succeeded, the
job finished, and exactly one settlement told it finished the job; otherwise the bench fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from chunking.store import JobStore

WORKER_TIMEOUT_S = 1800  # a replica that neither answers nor exits by then has hung
READY, GO = "ready", "go"


@dataclass(frozen=True)
class Share:
    """The chunks one process settles: `range(first, stop, step)` of a job."""

    job_id: str
    first: int
    stop: int
    step: int

    def indexes(self) -> range:
        return range(self.first, self.stop, self.step)


@dataclass(frozen=True)
class Timed:
    """One process's run: what it settled, how many told it finished the job, and when."""

    settled: int
    finished: int
    started: float  # time.monotonic(): one clock for every process on the machine (Linux)
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def rate(self) -> float:
        return self.settled / self.seconds


@dataclass(frozen=True)
class Config:
    name: str
    processes: int
    same_job: bool = True

    @property
    def postgres(self) -> bool:
        return self.name != "sqlite"


@dataclass
class Figures:
    config: Config
    writers: int
    rates: list[float] = field(default_factory=list)  # combined settlements/s, one per run
    per_process: list[list[float]] = field(default_factory=list)
    skews_ms: list[float] = field(default_factory=list)  # replicas: start-time difference


CONFIGS = (
    Config("sqlite", 1),
    Config("postgres", 1),
    Config("postgres, 2 replicas, one job", 2),
    Config("postgres, 2 replicas, two jobs", 2, same_job=False),
)


def create_running_job(store: JobStore, job_id: str, chunks: int) -> None:
    from chunking.spec import JobSpec

    store.create_job(job_id, JobSpec(total_items=chunks, chunk_size=1), "local")
    if not store.start_job(job_id):
        raise RuntimeError(f"{job_id}: start_job refused a queued job")


def warm_pool(store: JobStore, connections: int) -> None:
    """Open a Postgres store's pool to `connections` (it opens them lazily otherwise)."""
    from stores.postgres import PostgresJobStore

    if isinstance(store, PostgresJobStore):
        with ExitStack() as held:
            for _ in range(connections):
                held.enter_context(store.pool.connection())


def settle_share(
    store: JobStore, share: Share, writers: int, release: Callable[[], None] = lambda: None
) -> Timed:
    """`writers` threads settle the share's chunks (thread t every writers-th one); once they
    are all ready (connection in hand), `release()` is called and then they go."""
    indexes = share.indexes()
    ready = threading.Barrier(writers + 1)
    started = 0.0
    go = threading.Event()
    results: list[tuple[int, int] | BaseException | None] = [None] * writers

    def writer(t: int) -> None:
        try:
            store.status(share.job_id)  # this thread's connection (SQLite), a pooled one (pg)
            ready.wait()
            go.wait()
            settled = finished = 0
            for index in indexes[t::writers]:
                attempt = store.begin_attempt(share.job_id, index)
                if attempt != 1:
                    raise RuntimeError(f"chunk {index}: begin_attempt returned {attempt}, not 1")
                done = store.settle_chunk(
                    share.job_id, index, succeeded=True, items=1, latency_ms=5.0
                )
                if not done.recorded:
                    raise RuntimeError(f"chunk {index}: settle_chunk did not record it")
                settled += 1
                finished += done.job_finished
            results[t] = (settled, finished)
        except BaseException as err:
            results[t] = err
            ready.abort()

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(writers)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass  # a writer failed: its error is raised below
    else:
        release()
        started = time.monotonic()
        go.set()
    for thread in threads:
        thread.join()
    ended = time.monotonic()
    for result in results:
        if isinstance(result, BaseException):
            raise RuntimeError(f"a writer failed: {result!r}") from result
    counts = [r for r in results if isinstance(r, tuple)]
    return Timed(sum(s for s, _ in counts), sum(f for _, f in counts), started, ended)


def verify(store: JobStore, job_id: str, chunks: int, settled: int, finished: int) -> None:
    """The store's own account must match what the writers did; else fail loudly."""
    status, job = store.status(job_id), store.get_job(job_id)
    if status is None or job is None:
        raise RuntimeError(f"{job_id}: the job is gone")
    problems = []
    if settled != chunks:
        problems.append(f"the writers settled {settled} chunks of {chunks}")
    if status.chunks_succeeded != chunks or status.chunks_failed != 0:
        problems.append(
            f"chunks_succeeded {status.chunks_succeeded}, "
            f"chunks_failed {status.chunks_failed} (expected {chunks}, 0)"
        )
    if status.items_processed != chunks or status.attempts != chunks:
        problems.append(
            f"items_processed {status.items_processed}, attempts "
            f"{status.attempts} (expected {chunks} each)"
        )
    if job.state != "finished" or status.status != "succeeded":
        problems.append(f"state {job.state!r}, status {status.status!r} (expected finished)")
    if finished != 1:
        problems.append(f"{finished} settlements were told they finished the job (expected 1)")
    if problems:
        raise RuntimeError(f"{job_id}: the store disagrees: " + "; ".join(problems))


# --- a replica: this module with --worker, in a process of its own ---


def worker(spec: str) -> None:
    """Open the store, take connections, say ready, wait for go, settle, print the result."""
    import workloads  # noqa: F401 - registers the workloads, as every entrypoint does
    from stores.postgres import PostgresJobStore

    given = json.loads(spec)
    share = Share(**given["share"])
    store = PostgresJobStore(given["url"], pool_size=given["pool_size"])
    warm_pool(store, given["writers"])

    def release() -> None:
        print(READY, flush=True)
        line = sys.stdin.readline().strip()
        if line != GO:
            raise RuntimeError(f"expected {GO!r} from the parent, got {line!r}")

    timed = settle_share(store, share, given["writers"], release)
    store.close()
    print(json.dumps(timed.__dict__), flush=True)


def run_replicas(url: str, shares: Sequence[Share], writers: int) -> list[Timed]:
    """One process per share, released together once all are ready; their results."""
    spec = {"url": url, "writers": writers, "pool_size": writers}
    command = [sys.executable, "-m", "bench.store_throughput", "--worker"]
    procs = [
        subprocess.Popen(
            [*command, json.dumps({**spec, "share": share.__dict__})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != READY:
                raise RuntimeError(f"a replica failed before it was ready (said {line!r})")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(GO + "\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=WORKER_TIMEOUT_S)
            if proc.returncode != 0:
                raise RuntimeError(f"a replica exited with {proc.returncode}")
            results.append(Timed(**json.loads(out.strip().splitlines()[-1])))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --- one run of a configuration ---


def run_sqlite(chunks: int, writers: int) -> list[Timed]:
    from stores.sqlite import SqliteJobStore

    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        store = SqliteJobStore(Path(folder) / "jobs.sqlite3")
        create_running_job(store, "bench", chunks)
        timed = settle_share(store, Share("bench", 0, chunks, 1), writers)
        verify(store, "bench", chunks, timed.settled, timed.finished)
        return [timed]


def run_postgres(config: Config, chunks: int, writers: int, url: str) -> list[Timed]:
    from stores.postgres import PostgresJobStore

    store = PostgresJobStore(url, pool_size=writers)
    try:
        if config.processes == 1:
            create_running_job(store, "bench", chunks)
            warm_pool(store, writers)
            timed = settle_share(store, Share("bench", 0, chunks, 1), writers)
            verify(store, "bench", chunks, timed.settled, timed.finished)
            return [timed]
        n = config.processes
        if config.same_job:  # replica r settles chunks r, r + n, r + 2n... of one job
            create_running_job(store, "bench", chunks)
            shares = [Share("bench", r, chunks, n) for r in range(n)]
        else:  # replica r settles all of job r; the jobs share out the chunks
            sizes = [len(range(r, chunks, n)) for r in range(n)]
            shares = [Share(f"bench-{r}", 0, sizes[r], 1) for r in range(n)]
            for share in shares:
                create_running_job(store, share.job_id, share.stop)
        results = run_replicas(url, shares, writers)
        for job_id in sorted({s.job_id for s in shares}):
            mine = [t for s, t in zip(shares, results, strict=True) if s.job_id == job_id]
            size = sum(len(s.indexes()) for s in shares if s.job_id == job_id)
            verify(store, job_id, size, sum(t.settled for t in mine), sum(t.finished for t in mine))
        return results
    finally:
        store.close()


# --- the report ---


def describe(server_url: str | None) -> None:
    print(
        f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
        f"{platform.python_version()}"
    )
    print(
        "sqlite: WAL, synchronous=NORMAL (as SqliteJobStore opens it: a commit is not "
        "fsynced, a checkpoint is)"
    )
    if server_url is not None:
        import psycopg

        with psycopg.connect(server_url) as conn:
            shown = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")
            }
        print(
            f"postgres {shown['server_version']} on this machine (tests/postgres_server.py, "
            f"durable: fsync={shown['fsync']}, synchronous_commit="
            f"{shown['synchronous_commit']}, wal_sync_method="
            f"{shown['wal_sync_method']})"
        )


def print_table(figures: Sequence[Figures], chunks: int) -> None:
    print()
    print("| store | writers | processes | chunks | settlements/s (median) | runs |")
    print("|---|---:|---:|---:|---:|---|")
    for f in figures:
        per = f"{f.writers}" + (" per process" if f.config.processes > 1 else "")
        runs = ", ".join(f"{r:,.0f}" for r in f.rates)
        print(
            f"| {f.config.name} | {per} | {f.config.processes} | {chunks:,} | "
            f"**{statistics.median(f.rates):,.0f}** | {runs} |"
        )
    replicas = [f for f in figures if f.config.processes > 1]
    if replicas:
        print()
        print(
            "Per process (two replicas): settlements/s of each, run by run, and how far apart "
            "they started"
        )
        print()
        print("| store | writers | run | combined | per process | start skew |")
        print("|---|---:|---:|---:|---|---:|")
        for f in replicas:
            for run, (rate, each, skew) in enumerate(
                zip(f.rates, f.per_process, f.skews_ms, strict=True), 1
            ):
                shown = " + ".join(f"{r:,.0f}" for r in each)
                print(
                    f"| {f.config.name} | {f.writers} | {run} | {rate:,.0f} | {shown} | "
                    f"{skew:.1f} ms |"
                )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--writers",
        type=int,
        nargs="+",
        default=[8],
        help="threads per process (several: each in turn)",
    )
    parser.add_argument("--chunks", type=int, default=10_000, help="settlements per run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each configuration")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["sqlite", "postgres", "replicas"],
        help="run only these (default: all)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a replica's process
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    import workloads  # noqa: F401 - registers the workloads, as every entrypoint does
    from tests.postgres_server import PostgresServer

    def chosen(config: Config) -> bool:
        kind = "sqlite" if not config.postgres else "postgres" if config.processes == 1 else None
        return args.only is None or (kind or "replicas") in args.only

    configs = [c for c in CONFIGS if chosen(c)]
    only = f" --only {' '.join(args.only)}" if args.only else ""
    writers = " ".join(map(str, args.writers))
    print(
        f"$ .venv/bin/python -m bench.store_throughput --writers {writers} "
        f"--chunks {args.chunks} --runs {args.runs}{only}"
    )
    server = PostgresServer(durable=True).start() if any(c.postgres for c in configs) else None
    try:
        describe(None if server is None else server.base_url)
        figures = [Figures(c, w) for w in args.writers for c in configs]
        for run in range(1, args.runs + 1):
            for f in figures:
                if f.config.postgres:
                    assert server is not None
                    timed = run_postgres(f.config, args.chunks, f.writers, server.url())
                else:
                    timed = run_sqlite(args.chunks, f.writers)
                span = max(t.ended for t in timed) - min(t.started for t in timed)
                rate = sum(t.settled for t in timed) / span
                f.rates.append(rate)
                f.per_process.append([t.rate for t in timed])
                f.skews_ms.append(
                    (max(t.started for t in timed) - min(t.started for t in timed)) * 1000
                )
                each = " + ".join(f"{t.rate:,.0f}" for t in timed) if len(timed) > 1 else ""
                print(
                    f"run {run} {f.config.name:<31} W={f.writers:<3} {args.chunks:,} settled "
                    f"in {span:6.2f} s: {rate:7,.0f}/s {f'({each}) ' if each else ''}"
                    "verified"
                )
        print_table(figures, args.chunks)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
