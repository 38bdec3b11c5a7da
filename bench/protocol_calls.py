"""Executor calls per run, counted on the SDK's own HTTP protocol (issue 13, point 1).

    .venv/bin/python -m bench.protocol_calls [--chunks 20]

The app is served over HTTP (uvicorn in a thread), its events going to a stand-in for Inngest's
event API; each function is driven through `POST /api/inngest` exactly as the executor does
(every 206 answer's steps memoized and the function called again, until it answers 200 or an
error), and the calls are counted: start-job for a job of `--chunks` chunks, each chunk's
process-chunk run (one of them failing permanently), the finishing unit and the callback. Each
call is one trip through Inngest's queue and concurrency limits on a real engine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20)
    args = parser.parse_args(argv)
    from tests.support import FakeInngestApi, ServerThread

    fake = FakeInngestApi()
    intake = ServerThread(fake.app).start()
    folder = Path(tempfile.mkdtemp(prefix="protocol-calls-"))
    # Before the app is imported: its Inngest client and settings are built from these.
    os.environ.update(
        {
            "INNGEST_DEV": intake.url,
            "JOB_STORE_URL": f"sqlite:///{folder / 'jobs.sqlite3'}",
            "ITEM_DELAY_MS": "0",
            "LLM_OUTPUT_URI": str(folder / "outputs"),
        }
    )
    from main import app
    from tests.support import drive_counting_calls

    server = ServerThread(app).start()
    url, prefix = f"{server.url}/api/inngest", "long-jobs-"

    def drive(fn: str, event: dict[str, Any]) -> int:
        response, calls = drive_counting_calls(url, prefix + fn, event, max_calls=500)
        assert response.status_code in (200, 500), response.text
        return calls

    spec = {
        "job_id": "bench-calls",
        "total_items": args.chunks * 10,
        "chunk_size": 10,
        "fail_chunks": [1],
    }
    start_calls = drive("start-job", {"name": "demo/start_job", "data": spec})
    chunk_calls = [drive("process-chunk", e) for e in fake.named("demo/process_chunk")]
    finish = fake.named("demo/finish_job")
    finish_calls = [drive("finish-job", e) for e in finish]
    completed = fake.named("demo/job_completed")
    callback_calls = [drive("send-callback", e) for e in completed]
    print(f"job of {args.chunks} chunks (chunk 1 fails permanently), driven over HTTP")
    print(f"start-job      {start_calls} calls")
    print(
        f"process-chunk  {statistics.mean(chunk_calls):.2f} calls per chunk on average "
        f"(min {min(chunk_calls)}, max {max(chunk_calls)}; {len(chunk_calls)} runs)"
    )
    for name, calls in (("finish-job", finish_calls), ("send-callback", callback_calls)):
        print(f"{name:<14} {', '.join(map(str, calls)) or '(no such function)'} calls")
    total = start_calls + sum(chunk_calls) + sum(finish_calls) + sum(callback_calls)
    print(f"in all {total} calls for {args.chunks} chunks: {total / args.chunks:.2f} per chunk")
    server.stop()
    intake.stop()


if __name__ == "__main__":
    main()
