"""What a batch owner controls (issue 24 points 1-3) on the cloud path, through the offline
emulation of the stack: a spend cap, a failure threshold, and POST /jobs/{id}/retry, with the
same JSON as the local path (tests/functions/test_job_controls.py)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.aws.test_emulator import API_KEY, Running
from tests.aws.test_llm_batch_cloud import merged
from tests.llm_server import FakeModelServer


def start(emulator: Running, **body: Any) -> str:
    response = emulator.start({"workload": "llm", **body})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def retry(emulator: Running, job_id: str) -> httpx.Response:
    return httpx.post(f"{emulator.api}/Prod/jobs/{job_id}/retry",
                      headers={"x-api-key": API_KEY}, timeout=30)  # fmt: skip


def test_a_job_stops_at_its_spend_cap_on_the_emulator(
    emulator: Running, model: FakeModelServer
) -> None:
    items = [{"id": f"q{i}", "prompt": f"cloud cap {i}"} for i in range(40)]
    cap = 2e-5
    job_id = start(emulator, items=items, chunk_size=4, max_tokens=5, max_cost_usd=cap)
    status = emulator.wait_until_done(job_id, timeout_s=120)
    usage = status["usage"]
    print("capped:", {k: status[k] for k in ("status", "stopped_by", "error")}, usage)
    assert (status["status"], status["stopped_by"]) == ("partial", "max_cost_usd")
    asked = sum(model.calls.values())
    assert 0 < asked < len(items)
    assert usage["in_flight_usd"] == 0 and 0 < usage["spent_usd"] <= cap
    assert len([m for m in merged(emulator, status["output_uri"]) if not m.get("error")]) == asked


def test_a_broken_job_stops_at_its_threshold_on_the_emulator(
    emulator: Running, model: FakeModelServer
) -> None:
    items = [{"id": f"b{i}", "prompt": f"[400-context] cloud broken {i}"} for i in range(120)]
    job_id = start(emulator, items=items, chunk_size=2, max_failed_items=3)
    # A bound on the wait, not a measure: late in a module the model's shared budget may
    # still be finding its rate, and runs that wait on it past the worker's 20 s are retried.
    status = emulator.wait_until_done(job_id, timeout_s=300)
    print("threshold:", {k: status[k] for k in ("status", "stopped_by", "error", "items_failed")})
    assert (status["status"], status["stopped_by"]) == ("failed", "max_failed_items")
    assert sum(model.calls.values()) < len(items)
    assert status["items_failed"] == len(items)


def test_a_retry_asks_only_what_failed_on_the_emulator(
    emulator: Running, model: FakeModelServer
) -> None:
    items = [{"id": f"r{i}", "prompt": f"cloud retry {i}"} for i in range(6)]
    items[1] = {"id": "r1", "prompt": "[400-contextx1] cloud retry 1"}
    items[4] = {"id": "r4", "prompt": "[400-contextx1] cloud retry 4"}
    job_id = start(emulator, items=items, chunk_size=2)
    first = emulator.wait_until_done(job_id, timeout_s=60)
    assert (first["status"], first["usage"]["items_failed"]) == ("partial", 2)
    assert retry(emulator, "ghost").status_code == 404

    retried = retry(emulator, job_id)
    assert retried.status_code == 202, retried.text
    assert (retried.json()["status"], retried.json()["redrives"]) == ("running", 1)
    final = emulator.wait_until_done(job_id, timeout_s=60)
    print("retried:", {k: final[k] for k in ("status", "redrives", "items_failed")},
          dict(model.calls))  # fmt: skip
    assert (final["status"], final["redrives"], final["items_failed"]) == ("succeeded", 1, 0)
    assert dict(model.calls) == {
        item["prompt"]: 2 if item["id"] in ("r1", "r4") else 1 for item in items
    }
    lines = merged(emulator, final["output_uri"])
    assert [m["id"] for m in lines] == [f"r{i}" for i in range(6)]
    assert all(m.get("error") is None for m in lines)
    again = retry(emulator, job_id)
    assert again.status_code == 409 and "succeeded" in again.json()["message"]
