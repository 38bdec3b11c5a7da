"""Accepting jobs under load (issue 13, point 5): POST /jobs from many clients at once, while
chunks settle in the same store.

    .venv/bin/python -m bench.accept_load [--requests 2000] [--clients 50] [--settle-rate 200]
        [--postgres | --store-url postgresql://...] [--workers 1]

Four processes, as in production minus the orchestrator:
- the stand-in event intake (`POST /e/{key}`, a bare ASGI app under uvicorn) answers at once,
  so the figure is ours and not the orchestrator's; it keeps the ids of the events it got;
- the app, `uvicorn main:app` (settings from the environment: `INNGEST_DEV` the intake's URL,
  `ITEM_DELAY_MS=0`, `API_KEY` unset, `JOB_STORE_URL` a SQLite file in a temporary folder
  unless `--store-url` names another);
- a settler that, for the whole run, creates jobs of `--settler-chunks` chunks and begins and
  settles their chunks through the store API, in the same store, at `--settle-rate`
  settlements per second (200 by default: ten chunks in flight that take 50 ms each, about
  what one app process's own chunk runs could settle); 0: as fast as it can, a stress in which
  it holds SQLite's write lock most of the time; the rate it achieved is reported;
- this process, the load: `--clients` concurrent clients, each with its own keep-alive
  connection, share `--requests` POST /jobs of a small spec, each sent as soon as that client's
  previous one is answered; `--warmup` requests go first, the same way, untimed. The client
  writes HTTP/1.1 on asyncio streams (`--client httpx`: httpx.AsyncClient, which spends
  milliseconds of CPU per request on the same two cores as the app).

Reported: requests, errors (anything but a 202 with a job_id), latency p50/p95/p99/max, the
throughput, the CPU each process used; then every accepted job_id (warm-up included) is looked
up in the store, read directly (it must be there, `queued`), and in the intake's events (its
demo/start_job must have arrived). PASS when there are 0 errors, every accepted job is
recorded and sent, and p99 <= `--p99-target-ms` (50).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import httpx
import uvloop

from bench.checks import verdict

ROOT = Path(__file__).resolve().parent.parent
SPEC = {"total_items": 20, "chunk_size": 10}  # small: accepting it is one write and one send
JSON = {"content-type": "application/json"}


# --- the stand-in event intake (its own process) ---


def intake_app() -> Any:
    """A bare ASGI event API: `POST /e/{key}` answers with the events' ids at once; `GET /ids`
    lists the ids of every event received."""
    received: list[str] = []

    async def read_body(receive: Any) -> bytes:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                return bytes(body)

    async def answer(send: Any, status: int, payload: object) -> None:
        raw = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "POST" and scope["path"].startswith("/e/"):
            body = json.loads(await read_body(receive))
            batch = body if isinstance(body, list) else [body]
            ids = [str(e.get("id") or uuid.uuid4().hex) for e in batch]
            received.extend(ids)
            await answer(send, 200, {"ids": ids, "status": 200})
        elif scope["method"] == "GET" and scope["path"] == "/ids":
            await answer(send, 200, received)
        else:
            await answer(send, 404, {"error": "not found"})

    return app


def run_intake(port: int) -> None:
    import uvicorn

    uvicorn.run(intake_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the settler (its own process) ---


def open_store(env: dict[str, str]) -> Any:
    """The store the app opens, from the same settings."""
    import workloads  # noqa: F401 - registers the workloads, as the app does
    from stores.factory import open_store as open_url

    return open_url(env["JOB_STORE_URL"])


def run_settler(
    env: dict[str, str],
    chunks: int,
    rate: float,
    settled: Synchronized[int],
    ready: EventType,
    stop: EventType,
) -> None:
    """Create jobs of `chunks` chunks and begin and settle each chunk, until `stop`."""
    from chunking.spec import JobSpec

    store = open_store(env)
    spec = JobSpec(total_items=chunks * 10, chunk_size=10)
    interval = 1 / rate if rate > 0 else 0.0
    due = time.perf_counter()
    prefix = f"settler-{uuid.uuid4().hex[:8]}"
    job = 0
    while not stop.is_set():
        job_id = f"{prefix}-{job}"
        job += 1
        store.create_job(job_id, spec, "local")
        assert store.start_job(job_id)
        for index in range(chunks):
            if stop.is_set():
                break
            if interval:  # at most a second's worth late: no long burst after a stall
                due = max(due + interval, time.perf_counter() - 1)
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            store.begin_attempt(job_id, index)
            assert store.settle_chunk(job_id, index, succeeded=True, items=10, latency_ms=5.0)
            with settled.get_lock():
                settled.value += 1
            ready.set()


# --- the app (its own process) ---


def start_app(
    app: str, port: int, env: dict[str, str], log: Path, workers: int
) -> subprocess.Popen[bytes]:
    app_env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    app_env.update(env)
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=app_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_up(url: str, proc: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise SystemExit(f"the app exited ({proc.returncode}):\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within 60 s")


# --- the load ---


Result = tuple[list[float], Counter[str], list[str]]
Post = Callable[[], Awaitable[tuple[int, bytes]]]


class Connection:
    """One client's keep-alive HTTP/1.1 connection, POSTing one fixed request: a few
    microseconds of CPU per request, so that the load costs the app's machine little."""

    def __init__(self, host: str, port: int, path: str, body: bytes) -> None:
        self.host, self.port = host, port
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        try:
            writer.write(self.request)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            status = int(head[9:12])
            length = re.search(r"\r\ncontent-length: *(\d+)", head)
            if length is None:
                raise ValueError(f"answer without a content-length: {head[:200]!r}")
            body = await reader.readexactly(int(length[1]))
        except BaseException:
            self.close()
            raise
        if "\r\nconnection: close" in head:
            self.close()
        return status, body

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def post_jobs(posts: list[Post], requests: int) -> Result:
    """`requests` POST /jobs shared by concurrent clients (one per `posts`), each sent when its
    client's previous one is answered: (latencies in seconds, errors by kind, accepted ids)."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    accepted: list[str] = []
    remaining = iter(range(requests))

    async def client(post: Post) -> None:
        for _ in remaining:
            started = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(post(), 60)
            except Exception as err:
                errors[type(err).__name__] += 1
                continue
            finally:
                latencies.append(time.perf_counter() - started)
            job_id = json.loads(body).get("job_id") if status == 202 else None
            if job_id:
                accepted.append(job_id)
            else:
                errors[f"HTTP {status}"] += 1

    await asyncio.gather(*(client(post) for post in posts))
    return latencies, errors, accepted


async def load(
    url: str,
    args: argparse.Namespace,
    between: Callable[[], None],
    settled: Synchronized[int],
    pids: dict[str, int],
) -> tuple[Result, Result, float, int, dict[str, float]]:
    """The warm-up, `between()`, then the timed load on the same connections: (warm-up, load,
    the load's seconds, chunks settled meanwhile, CPU seconds each process spent meanwhile)."""
    body = json.dumps(SPEC).encode()
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        if args.client == "httpx":

            async def post_httpx() -> tuple[int, bytes]:
                response = await http.post("/jobs", content=body, headers=JSON)
                return response.status_code, response.content

            posts: list[Post] = [post_httpx] * args.clients
        else:
            parts = httpx.URL(url)
            connections = [
                Connection(parts.host, parts.port or 80, "/jobs", body) for _ in range(args.clients)
            ]
            posts = [c.post for c in connections]
        warm = await post_jobs(posts, args.warmup)
        await asyncio.to_thread(between)
        cpu = {name: cpu_seconds(pid, name != "load") for name, pid in pids.items()}
        settled_before, started = settled.value, time.perf_counter()
        timed = await post_jobs(posts, args.requests)
        elapsed = time.perf_counter() - started
        cpu = {name: cpu_seconds(pid, name != "load") - cpu[name] for name, pid in pids.items()}
        if args.client != "httpx":
            for connection in connections:
                connection.close()
        return warm, timed, elapsed, settled.value - settled_before, cpu


def cpu_seconds(pid: int, children: bool = True) -> float:
    """CPU time (user + system) a process (and its live children: uvicorn's workers) has used
    so far (Linux: /proc/<pid>/stat)."""
    proc = Path(f"/proc/{pid}")
    fields = (proc / "stat").read_text().rpartition(")")[2].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for listed in proc.glob("task/*/children") if children else ():
        total += sum(cpu_seconds(int(child)) for child in listed.read_text().split())
    return total


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def missing_from_store(store: Any, job_ids: list[str]) -> list[str]:
    """The job_ids the store does not hold as `queued` (read directly, one by one)."""
    missing = []
    for job_id in job_ids:
        job = store.get_job(job_id)
        if job is None or job.state != "queued":
            missing.append(f"{job_id} ({'absent' if job is None else job.state})")
    return missing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--app", default="main:app", help="the ASGI app uvicorn serves")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the app")
    parser.add_argument("--store-url", help="the job store (default: a SQLite file in a temp dir)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="the store on a durable Postgres server this bench starts (tests/postgres_server.py)",
    )
    parser.add_argument("--settler-chunks", type=int, default=100, help="chunks per settler job")
    parser.add_argument("--settle-rate", type=float, default=200, help="settlements/s (0: max)")
    parser.add_argument("--p99-target-ms", type=float, default=50)
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="the load's HTTP client: raw keep-alive HTTP/1.1 on asyncio streams (little CPU), "
        "or httpx.AsyncClient (some milliseconds of CPU per request)",
    )
    args = parser.parse_args(argv)
    if not args.postgres:
        run(args, argv)
        return
    from tests.postgres_server import PostgresServer

    server = PostgresServer(durable=True).start()
    try:
        args.store_url = server.url()
        run(args, argv)
    finally:
        server.stop()


def run(args: argparse.Namespace, argv: list[str] | None) -> None:
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"$ .venv/bin/python -m bench.accept_load {shown}".rstrip())

    folder = Path(tempfile.mkdtemp(prefix="accept-load-"))
    db_path = folder / "jobs.sqlite3"
    env = {
        "JOB_STORE_URL": args.store_url or f"sqlite:///{db_path}",
        "ITEM_DELAY_MS": "0",
        "LLM_OUTPUT_URI": str(folder / "outputs"),
    }
    from tests.support import free_port

    spawn = multiprocessing.get_context("spawn")
    intake_port, app_port = free_port(), free_port()
    intake_url, app_url = f"http://127.0.0.1:{intake_port}", f"http://127.0.0.1:{app_port}"
    intake = spawn.Process(target=run_intake, args=(intake_port,), daemon=True)
    intake.start()
    wait_up(f"{intake_url}/ids", None, None)
    env["INNGEST_DEV"] = intake_url
    app_log = folder / "app.log"
    app = start_app(args.app, app_port, env, app_log, args.workers)
    settled: Synchronized[int] = spawn.Value("q", 0)
    ready, stop = spawn.Event(), spawn.Event()
    settler = spawn.Process(
        target=run_settler,
        args=(env, args.settler_chunks, args.settle_rate, settled, ready, stop),
        daemon=True,
    )
    try:
        wait_up(f"{app_url}/healthz", app, app_log)
        store = open_store(env)  # this process reads the store directly, to check it
        print(f"store: {type(store).__name__} ({args.store_url or db_path})")
        pids = {"app": app.pid, "intake": intake.pid or 0, "load": os.getpid()}

        def start_settler() -> None:  # after the warm-up: every worker has opened the store
            settler.start()
            if not ready.wait(60):
                raise SystemExit("the settler settled nothing within 60 s")
            pids["settler"] = settler.pid or 0

        warm, timed, elapsed, settled_during, cpu = uvloop.run(
            load(app_url, args, start_settler, settled, pids)
        )
        _, warm_errors, warm_accepted = warm
        latencies, errors, accepted = timed
        if warm_errors:
            raise SystemExit(f"warm-up errors: {dict(warm_errors)}:\n{app_log.read_text()[-3000:]}")
        settler_ran = settler.is_alive()  # it settled through the whole load
        stop.set()
        settler.join(30)
        all_accepted = warm_accepted + accepted
        missing = missing_from_store(store, all_accepted)
        sent = set(httpx.get(f"{intake_url}/ids", timeout=30).json())
        unsent = [j for j in all_accepted if f"start-{j}" not in sent]
    finally:
        stop.set()
        app.terminate()
        app.wait(10)
        intake.terminate()
        intake.join(10)
        if settler.is_alive():
            settler.terminate()

    ms = [x * 1000 for x in latencies]
    p99 = percentile(ms, 99)
    print(
        f"{args.requests} POST /jobs from {args.clients} clients ({args.client} HTTP client; "
        f"after {args.warmup} warm-up requests) to {args.workers} app worker(s); "
        "event intake: a stand-in answering at once"
    )
    print(
        f"settler: {settled_during} chunks settled in the same store during the load "
        f"({settled_during / elapsed:.0f}/s; "
        f"{f'at most {args.settle_rate:g}/s' if args.settle_rate else 'as fast as it can'})"
    )
    print(f"{'requests':>9} {'errors':>7} {'p50':>9} {'p95':>9} {'p99':>9} {'max':>9} {'req/s':>7}")
    print(
        f"{len(ms):>9} {sum(errors.values()):>7} {percentile(ms, 50):>6.1f} ms "
        f"{percentile(ms, 95):>6.1f} ms {p99:>6.1f} ms {max(ms):>6.1f} ms "
        f"{args.requests / elapsed:>7.0f}"
    )
    if errors:
        print(f"errors: {dict(errors)}")
    print(
        f"CPU during the load ({elapsed:.1f} s, {os.cpu_count()} cores): "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cpu.items())
    )
    print(
        f"accepted {len(all_accepted)} jobs (warm-up included): "
        f"{len(all_accepted) - len(missing)} recorded queued in the store, "
        f"{len(all_accepted) - len(unsent)} start events received by the intake"
    )
    for what, ids in (("not recorded", missing), ("not sent", unsent)):
        if ids:
            print(f"{what}: {len(ids)}, e.g. {', '.join(ids[:5])}")
    checks = {
        "the settler settled throughout": settler_ran,
        "0 errors": not errors,
        "every accepted job recorded": not missing,
        "every accepted job's event sent": not unsent,
        f"p99 <= {args.p99_target_ms:g} ms": p99 <= args.p99_target_ms,
    }
    verdict(checks, folder, kept="the app's log and the store")


if __name__ == "__main__":
    main()
