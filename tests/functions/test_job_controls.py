"""What a batch owner controls (issue 24 points 1-3) on the local path: a spend cap, a failure
threshold, and a retry of only what failed, through POST /jobs and the stand-in executor over
the SDK's protocol, the model the OpenAI-compatible test server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.executor import StandInExecutor, ended
from tests.llm_server import FakeModelServer


def output(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(status["output_uri"]).read_text().splitlines()]


def start(api: httpx.Client, **body: Any) -> str:
    response = api.post("/jobs", json={"workload": "llm", **body})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def test_a_job_stops_at_its_spend_cap_having_spent_no_more_than_it(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer
) -> None:
    # Each answer costs its reported tokens at the default prices: 2 prompt tokens, 3
    # completion; a call holds its estimate (1 prompt token, max_tokens completion) meanwhile.
    items = [{"id": f"q{i}", "prompt": f"cap {i}"} for i in range(40)]
    cap = 2e-5  # about 9 answers' worth
    job_id = start(api, items=items, chunk_size=4, max_tokens=5, max_cost_usd=cap)
    status = ended(api, job_id)
    usage = status["usage"]
    print("capped:", {k: status[k] for k in ("status", "stopped_by", "error", "items_processed",
                                              "items_failed")}, usage)  # fmt: skip
    assert (status["status"], status["stopped_by"]) == ("partial", "max_cost_usd")
    assert "spend cap reached" in status["error"]
    asked = sum(model.calls.values())
    assert 0 < asked < len(items)
    # Nothing is held once the job has ended, and the spend never passed the cap: every call
    # held at least what it cost before it began.
    assert usage["in_flight_usd"] == 0 and 0 < usage["spent_usd"] <= cap
    answered = [line for line in output(status) if line.get("error") is None]
    assert len(answered) == asked
    assert usage["spent_usd"] == pytest.approx(asked * (2 * 0.15 + 3 * 0.60) / 1e6)
    assert status["items_failed"] == len(items) - asked  # the rest was never asked


def test_a_broken_job_stops_at_its_failure_threshold_having_asked_fewer_items(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer
) -> None:
    items = [{"id": f"b{i}", "prompt": f"[400-context] broken {i}"} for i in range(120)]
    job_id = start(api, items=items, chunk_size=2, max_failed_items=3)
    status = ended(api, job_id)
    print("threshold:", {k: status[k] for k in ("status", "stopped_by", "error", "items_failed",
                                                "max_failed_items")})  # fmt: skip
    assert (status["status"], status["stopped_by"]) == ("failed", "max_failed_items")
    assert "max_failed_items=3" in status["error"]
    asked = sum(model.calls.values())
    assert asked < len(items), asked
    assert status["items_failed"] == len(items)  # asked and failed, or never asked
    assert any("not run: the job was stopped" in c["error"] for c in status["failed_chunks"])


def test_a_threshold_as_a_share_of_the_items(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer
) -> None:
    items = [{"id": f"s{i}", "prompt": f"share {i}"} for i in range(20)]
    items[3] = {"id": "s3", "prompt": "[400-context] share 3"}
    # One item in 20 failed is 5 %: within "10%" (2 items), so the job ends partial.
    status = ended(api, start(api, items=items, chunk_size=5, max_failed_items="10%"))
    assert (status["status"], status["stopped_by"], status["max_failed_items"]) == (
        "partial", None, 2,
    )  # fmt: skip


def test_a_retry_asks_only_what_failed_and_merges_the_output_again(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer
) -> None:
    items = [{"id": f"r{i}", "prompt": f"retry {i}"} for i in range(6)]
    items[1] = {"id": "r1", "prompt": "[400-contextx1] retry 1"}  # refused once, then answered
    items[4] = {"id": "r4", "prompt": "[400-contextx1] retry 4"}
    job_id = start(api, items=items, chunk_size=2, job_id="to-retry")
    first = ended(api, job_id)
    assert (first["status"], first["usage"]["items_failed"], first["redrives"]) == (
        "partial", 2, 0,
    )  # fmt: skip

    retried = api.post(f"/jobs/{job_id}/retry")
    assert retried.status_code == 202, retried.text
    assert (retried.json()["status"], retried.json()["redrives"]) == ("running", 1)
    final = ended(api, job_id)
    print("retried:", {k: final[k] for k in ("status", "redrives", "items_failed")},
          dict(model.calls))  # fmt: skip
    assert (final["status"], final["redrives"], final["items_failed"]) == ("succeeded", 1, 0)
    # Every answered item was asked once in all: the retry asked only the two that failed.
    assert {prompt: n for prompt, n in model.calls.items()} == {
        item["prompt"]: 2 if item["id"] in ("r1", "r4") else 1 for item in items
    }
    lines = output(final)
    assert [line["id"] for line in lines] == [f"r{i}" for i in range(6)]
    assert all(line.get("error") is None for line in lines)
    assert final["chunks_succeeded"] == 3 and final["usage"]["prompt_tokens"] == sum(
        len(item["prompt"].split()) for item in items
    )

    again = api.post(f"/jobs/{job_id}/retry")  # it succeeded: nothing to retry
    assert again.status_code == 409 and "succeeded" in again.json()["message"]


def test_a_retry_is_bounded_and_refused_for_a_running_cancelled_or_unknown_job(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from chunking.settings import get_settings

    monkeypatch.setenv("JOB_MAX_REDRIVES", "1")
    get_settings.cache_clear()
    assert api.post("/jobs/ghost/retry").status_code == 404
    items = [{"id": "x", "prompt": "[400-context] never"}, {"id": "y", "prompt": "fine"}]
    job_id = start(api, items=items, chunk_size=1)
    assert ended(api, job_id)["status"] == "partial"
    assert api.post(f"/jobs/{job_id}/retry").status_code == 202
    assert ended(api, job_id)["status"] == "partial"  # refused again: still partial
    refused = api.post(f"/jobs/{job_id}/retry")
    assert refused.status_code == 409 and "JOB_MAX_REDRIVES" in refused.json()["message"]
    assert model.calls["[400-context] never"] == 2 and model.calls["fine"] == 1

    slow = start(api, items=[{"id": "s", "prompt": "[slow] s"}], job_id="slow-one")
    assert api.post(f"/jobs/{slow}/retry").status_code == 409  # queued or running
    assert api.post(f"/jobs/{slow}/cancel").status_code == 200
    assert api.post(f"/jobs/{slow}/retry").status_code == 409  # cancelled


def test_a_retry_event_sent_by_hand_runs_the_same_retry(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer
) -> None:
    import asyncio

    from functions.client import inngest_client
    from functions.events import retry_job_event

    items = [{"id": "a", "prompt": "[400-contextx1] by hand"}, {"id": "b", "prompt": "kept"}]
    job_id = start(api, items=items, chunk_size=1)
    assert ended(api, job_id)["status"] == "partial"
    asyncio.get_event_loop().run_until_complete(inngest_client.send(retry_job_event(job_id, 1)))
    wait_started = time.monotonic()
    while api.get(f"/jobs/{job_id}").json()["redrives"] == 0:
        assert time.monotonic() - wait_started < 30
        time.sleep(0.05)
    final = ended(api, job_id)
    assert (final["status"], final["redrives"]) == ("succeeded", 1)
    assert (model.calls["[400-contextx1] by hand"], model.calls["kept"]) == (2, 1)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"max_cost_usd": 0}, "max_cost_usd", "greater than 0"),
        ({"max_cost_usd": True}, "max_cost_usd", "valid number"),
        ({"max_cost_usd": "1"}, "max_cost_usd", "valid number"),
        ({"max_failed_items": -1}, "max_failed_items", "greater than or equal to 0"),
        ({"max_failed_items": "150%"}, "max_failed_items", "pattern"),
        ({"max_failed_items": 2.5}, "max_failed_items", "integer"),
        ({"workload": "simulate", "max_cost_usd": 1}, "max_cost_usd", "spends nothing"),
    ],
)
def test_the_controls_are_checked_by_name(
    api: httpx.Client, model: FakeModelServer, body: dict[str, Any], field: str, words: str
) -> None:
    spec = {"workload": "llm", "items": [{"id": "a", "prompt": "p"}], **body}
    if spec["workload"] == "simulate":
        spec.pop("items")
    response = api.post("/jobs", json=spec)
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert any(e["field"].startswith(field) and words in e["message"] for e in errors), errors


def test_a_tenants_default_cap_is_recorded_in_its_jobs_spec(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from chunking.settings import get_settings

    monkeypatch.setenv("MAX_COST_USD_BY_TENANT", '{"acme": 0.5, "*": 2}')
    get_settings.cache_clear()
    items = [{"id": "a", "prompt": "p"}]
    acme = ended(api, start(api, items=items, tenant="acme"))
    other = ended(api, start(api, items=items, tenant="other", job_id="other-tenant"))
    own = ended(api, start(api, items=items, tenant="acme", max_cost_usd=1, job_id="own-cap"))
    caps = [s["usage"]["max_cost_usd"] for s in (acme, other, own)]
    assert caps == [0.5, 2, 1]


def test_a_batch_job_holds_each_batch_of_its_cap_until_its_answers_are_kept(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from chunking.settings import get_settings

    monkeypatch.setenv("LLM_BATCH_POLL_MIN_S", "0.3")
    monkeypatch.setenv("LLM_BATCH_POLL_MAX_S", "1")
    get_settings.cache_clear()
    # A batch of 4 holds 4 estimates at the batch price (1 prompt token, 5 completion: $1.575
    # per 1M) = $6.3e-06: a cap of $1e-05 lets one batch of the three go, not two.
    items = [{"id": f"m{i}", "prompt": f"batch cap {i}"} for i in range(12)]
    job_id = start(api, items=items, chunk_size=4, max_tokens=5, mode="batch", max_cost_usd=1e-5)
    status = ended(api, job_id)
    usage = status["usage"]
    print("batch capped:", {k: status[k] for k in ("status", "stopped_by", "error")}, usage)
    assert (status["status"], status["stopped_by"]) == ("partial", "max_cost_usd")
    batches = [
        b for b in model.batch.batches.values() if (b.metadata or {}).get("job_id") == job_id
    ]
    assert [len(b.requests) for b in batches] == [4]
    assert usage["in_flight_usd"] == 0 and usage["spent_usd"] <= 1e-5
    # What the batch's 4 answers cost, at half price: 3 prompt and 4 completion tokens each.
    assert usage["spent_usd"] == pytest.approx(4 * (3 * 0.15 + 4 * 0.60) / 2 / 1e6)
