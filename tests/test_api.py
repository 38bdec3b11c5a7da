"""The /jobs HTTP API of the local path, over HTTP, with the Inngest API stand-in."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from functions.events import PROCESS_CHUNK, START_JOB
from functions.process_chunk import process_chunk
from functions.start_job import start_job
from tests.support import FakeInngestApi, replay

CONTRACT_KEYS = {
    "job_id", "path", "status", "total_items", "chunk_size", "total_chunks", "chunks_succeeded",
    "chunks_failed", "items_processed", "attempts", "retries", "created_at", "started_at",
    "finished_at", "duration_s", "chunk_latency_ms", "failed_chunks",
}  # fmt: skip


def test_post_job_records_it_queued_then_sends_start(
    api: httpx.Client, fake_inngest: FakeInngestApi
) -> None:
    response = api.post("/jobs", json={"total_items": 500, "chunk_size": 50, "item_delay_ms": 0})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert body["status_url"] == f"{api.base_url}/jobs/{body['job_id']}"
    [event] = fake_inngest.events
    assert event["name"] == START_JOB and event["id"] == f"start-{body['job_id']}"
    assert event["data"]["job_id"] == body["job_id"]

    status = api.get(body["status_url"]).json()
    assert status["status"] == "queued" and set(status) >= CONTRACT_KEYS

    # What the Dev Server would do next: run start_job, then every chunk.
    replay(start_job, event)
    assert api.get(body["status_url"]).json()["status"] == "running"
    for chunk_event in fake_inngest.named(PROCESS_CHUNK):
        replay(process_chunk, chunk_event)
    final = api.get(body["status_url"]).json()
    assert (final["status"], final["chunks_succeeded"], final["items_processed"]) == (
        "succeeded", 10, 500,
    )  # fmt: skip


def test_empty_body_uses_the_configured_defaults(api: httpx.Client) -> None:
    # An empty body, declared JSON: a bodiless POST with no content type is refused (415).
    response = api.post("/jobs", headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text
    status = api.get(response.json()["status_url"]).json()
    assert (status["total_items"], status["chunk_size"], status["total_chunks"]) == (500, 50, 10)


def test_same_job_id_is_one_job(api: httpx.Client, fake_inngest: FakeInngestApi) -> None:
    spec = {"job_id": "idem-1", "total_items": 100, "chunk_size": 10}
    assert api.post("/jobs", json=spec).status_code == 202
    again = api.post("/jobs", json=spec)
    assert again.status_code == 200
    assert again.json()["job_id"] == "idem-1"
    assert len(fake_inngest.events) == 1
    conflict = api.post("/jobs", json={**spec, "total_items": 101})
    assert conflict.status_code == 409
    assert "idem-1" in conflict.json()["message"]


def test_failed_send_marks_the_job_failed_and_answers_503(
    api: httpx.Client, fake_inngest: FakeInngestApi
) -> None:
    fake_inngest.fail_sends = True
    response = api.post("/jobs", json={"job_id": "unsent", "total_items": 10, "chunk_size": 5})
    assert response.status_code == 503
    assert "could not send demo/start_job" in response.json()["message"]
    status = api.get("/jobs/unsent").json()
    assert status["status"] == "failed"
    assert "event API unavailable" in status["error"]

    # Retrying with the same job_id once Inngest is back starts the job.
    fake_inngest.fail_sends = False
    retry = api.post("/jobs", json={"job_id": "unsent", "total_items": 10, "chunk_size": 5})
    assert retry.status_code == 202
    assert api.get("/jobs/unsent").json()["status"] == "queued"
    [resent] = fake_inngest.events
    assert resent["data"]["job_id"] == "unsent"
    # A fresh event id: had the failed send reached Inngest, the same id would be dropped.
    assert resent["id"].startswith("start-unsent-")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"total_items": null}', "total_items"),
        (b'{"total_items": -5}', "total_items"),
        (b'{"total_items": "lots"}', "total_items"),
        (b'{"chunk_size": -1}', "chunk_size"),
        (b'{"item_delay_ms": -1}', "item_delay_ms"),
        (b'{"total_items": 10000000, "chunk_size": 10}', "chunk_size"),
        (b'{"job_id": "../etc/passwd"}', "job_id"),
        (b'{"job_id": ""}', "job_id"),
        (b'{"fail_chunks": [99]}', "fail_chunks"),
        (b'{"totl_items": 5}', "totl_items"),
    ],
)
def test_bad_bodies_get_400_naming_the_field_and_nothing_is_sent(
    api: httpx.Client, fake_inngest: FakeInngestApi, body: bytes, field: str | None
) -> None:
    # The error contract both APIs share (README: Errors): 400, {"message", "errors"}.
    response = api.post("/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    answer: dict[str, Any] = response.json()
    if field is None:
        assert "JSON" in answer["message"]
    else:
        assert field in [e["field"] for e in answer["errors"]], answer
        assert f"{field}:" in answer["message"]
    assert fake_inngest.events == []
    assert api.get("/jobs").json() == []


def test_unknown_job_is_404(api: httpx.Client) -> None:
    response = api.get("/jobs/no-such-job")
    assert response.status_code == 404
    assert "no-such-job" in response.json()["message"]


def test_list_jobs_newest_first(api: httpx.Client) -> None:
    for name in ("first", "second", "third"):
        api.post("/jobs", json={"job_id": name, "total_items": 10, "chunk_size": 10})
    assert [j["job_id"] for j in api.get("/jobs").json()] == ["third", "second", "first"]
    assert [j["job_id"] for j in api.get("/jobs", params={"limit": 1}).json()] == ["third"]
    assert api.get("/jobs", params={"limit": 0}).status_code == 400


def test_healthz(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
