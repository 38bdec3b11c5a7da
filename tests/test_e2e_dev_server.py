"""Opt-in end-to-end test against a real Inngest Dev Server.

The Dev Server binary cannot be downloaded on every machine (ours included), so this runs only
when INNGEST_E2E_URL names a running Dev Server, e.g. after `make run` on a machine where npx
could start it:

    INNGEST_E2E_URL=http://127.0.0.1:8288 make test ARGS="-m e2e"

E2E_APP_URL is the app the Dev Server calls (default http://127.0.0.1:8000).
"""

from __future__ import annotations

import os
import time

import httpx
import pytest

DEV_SERVER = os.environ.get("INNGEST_E2E_URL")
APP = os.environ.get("E2E_APP_URL", "http://127.0.0.1:8000")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not DEV_SERVER, reason="set INNGEST_E2E_URL to a running Dev Server"),
]


def wait_for_end(status_url: str, timeout_s: float = 180) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status: dict[str, object] = httpx.get(status_url).json()
        if status["status"] in ("succeeded", "partial", "failed", "cancelled"):
            return status
        time.sleep(1)
    raise AssertionError(f"job did not end within {timeout_s}s: {status}")


def test_job_runs_through_the_dev_server_with_retries_and_a_permanent_failure() -> None:
    assert DEV_SERVER is not None
    httpx.get(DEV_SERVER, timeout=5).raise_for_status()
    spec = {"total_items": 200, "chunk_size": 20, "item_delay_ms": 5,
            "fail_chunks": [3], "flaky_chunks": {"5": 1}}  # fmt: skip
    response = httpx.post(f"{APP}/jobs", json=spec, timeout=30)
    assert response.status_code == 202, response.text
    status = wait_for_end(response.json()["status_url"])
    assert status["status"] == "partial"
    assert (status["chunks_succeeded"], status["chunks_failed"]) == (9, 1)
    assert status["items_processed"] == 180
    assert status["retries"] == 1  # the flaky chunk; the permanent one was not retried
