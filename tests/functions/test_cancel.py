"""Cancelling a job on the local path: POST /jobs/{job_id}/cancel, the demo/job_cancelled event,
and chunks that had not started never running (the in-process executor ignores Inngest's
cancel, so this shows the store check every chunk makes; the registration shows the cancel)."""

from __future__ import annotations

import asyncio

import httpx
from inngest.experimental import mocked

from functions.deps import get_store
from functions.events import JOB_CANCELLED, PROCESS_CHUNK, START_JOB
from functions.process_chunk import process_chunk
from functions.start_job import start_job
from tests.support import FakeInngestApi, replay


def test_cancel_stops_the_chunks_not_started_and_the_accounting_adds_up(
    api: httpx.Client, fake_inngest: FakeInngestApi
) -> None:
    response = api.post("/jobs", json={"total_items": 100, "chunk_size": 10, "item_delay_ms": 0})
    job_id = response.json()["job_id"]
    replay(start_job, fake_inngest.named(START_JOB)[0])
    events = fake_inngest.named(PROCESS_CHUNK)
    for event in events[:3]:
        replay(process_chunk, event)
    get_store().begin_attempt(job_id, 3)  # chunk 3 is running when the cancel arrives

    cancelled = api.post(f"/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["status"], body["chunks_succeeded"], body["chunks_cancelled"]) == (
        "cancelled", 3, 6,
    )  # fmt: skip
    [sent] = fake_inngest.named(JOB_CANCELLED)
    assert sent["data"] == {"job_id": job_id} and sent["id"] == f"{job_id}-cancelled"

    results = [replay(process_chunk, event) for event in events[4:]]
    assert all(r.status is mocked.Status.COMPLETED for r in results)
    assert {r.output["outcome"] for r in results} == {"cancelled"}
    get_store().settle_chunk(job_id, 3, succeeded=True, items=10)  # the running one finishes

    final = api.get(f"/jobs/{job_id}").json()
    assert (final["status"], final["chunks_succeeded"], final["chunks_failed"]) == (
        "cancelled", 4, 0,
    )  # fmt: skip
    assert final["chunks_cancelled"] == 6 and final["attempts"] == 4  # none of the 6 ran
    assert final["chunks_succeeded"] + final["chunks_cancelled"] == final["total_chunks"]
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 200  # idempotent


def test_cancel_of_an_unknown_or_ended_job(api: httpx.Client, fake_inngest: FakeInngestApi) -> None:
    assert api.post("/jobs/ghost/cancel").status_code == 404
    job_id = api.post("/jobs", json={"total_items": 10, "chunk_size": 10}).json()["job_id"]
    replay(start_job, fake_inngest.named(START_JOB)[0])
    replay(process_chunk, fake_inngest.named(PROCESS_CHUNK)[0])
    response = api.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 409 and "succeeded" in response.text


def test_a_fan_out_cancelled_midway_sends_no_more_chunks(fake_inngest: FakeInngestApi) -> None:
    from chunking.spec import JobSpec
    from functions.start_job import send_chunk_events

    store = get_store()
    store.create_job("c", JobSpec(total_items=10, chunk_size=1), "local")
    store.start_job("c")
    store.cancel_job("c")
    sent = asyncio.get_event_loop().run_until_complete(send_chunk_events("c", 0, 10))
    assert sent == 0 and fake_inngest.named(PROCESS_CHUNK) == []
