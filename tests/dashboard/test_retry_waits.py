"""The two paths' retry waits, side by side as the dashboard shows them: the same flaky job on
the local path (our backoff as the `retry-after` the app answers the executor) and on the cloud
path's emulation (our backoff as the retried message's visibility, behind the template's
SQS batching window), read from the chunks' timelines. One schedule on both paths."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx

from aws.local.emulator import EmulatorProcess
from tests.executor import StandInExecutor

TERMINAL = {"succeeded", "partial", "failed", "cancelled"}
SCHEDULE_S = [2.0, 4.0]  # RETRY_BACKOFF_BASE_S x FACTOR^(n-1) with the defaults: 2, 4
# Scheduling jitter (the executor's timer, the event source's polls), not the window's second.
TOLERANCE_S = 0.5


def retry_waits(api: httpx.Client, base: str, job_id: str) -> list[float]:
    """Seconds between the end of each retried run of chunk 0 and the start of the next."""
    deadline = time.monotonic() + 60
    while api.get(f"{base}/{job_id}").json()["status"] not in TERMINAL:
        assert time.monotonic() < deadline, f"{base}/{job_id} did not end"
        time.sleep(0.2)
    chunk = api.get(f"{base}/{job_id}/chunks", params={"limit": 1}).json()["chunks"][0]
    spans: list[dict[str, Any]] = chunk["timeline"]
    assert [span["outcome"] for span in spans] == ["retried", "retried", "succeeded"], spans
    ends = [datetime.fromisoformat(span["ended_at"]) for span in spans[:-1]]
    starts = [datetime.fromisoformat(span["started_at"]) for span in spans[1:]]
    return [(start - end).total_seconds() for end, start in zip(ends, starts, strict=True)]


def test_both_paths_wait_the_same_backoff_between_a_chunks_runs(
    api: httpx.Client, executor: StandInExecutor, cloud: EmulatorProcess
) -> None:
    spec = {"total_items": 4, "chunk_size": 2, "item_delay_ms": 0, "flaky_chunks": {"0": 2}}
    local_job = api.post("/jobs", json=spec)
    cloud_job = api.post("/cloud/jobs", json=spec)
    assert local_job.status_code == 202 and cloud_job.status_code == 202, cloud_job.text
    waits = {
        "local": retry_waits(api, "/jobs", local_job.json()["job_id"]),
        "cloud": retry_waits(api, "/cloud/jobs", cloud_job.json()["job_id"]),
    }
    for path, seen in waits.items():
        off = [round(wait - planned, 2) for wait, planned in zip(seen, SCHEDULE_S, strict=True)]
        assert all(abs(d) <= TOLERANCE_S for d in off), (path, waits)
    assert not executor.errors
