"""start_job fan-out and process_chunk, run in the SDK's in-process executor.

Events the functions send go through the real SDK client to the Inngest API stand-in, which
keeps them; each captured chunk event is then delivered to process_chunk as Inngest would.
"""

from __future__ import annotations

import datetime
from typing import Any

import inngest
import pytest
from inngest.experimental import mocked

from functions.deps import get_store
from functions.events import JOB_COMPLETED, PROCESS_CHUNK, START_JOB
from functions.process_chunk import process_chunk
from functions.start_job import start_job
from tests.support import FakeInngestApi, replay, run_finishes, spy_run_errors, trigger


def start(**spec: Any) -> str:
    result = trigger(start_job, START_JOB, {"item_delay_ms": 0, **spec})
    assert result.status is mocked.Status.COMPLETED, result.error
    job_id: str = result.output["job_id"]
    return job_id


def run_chunks(api: FakeInngestApi, deliveries: int = 1) -> list[Any]:
    """Each chunk event delivered `deliveries` times, then the job's finishing unit."""
    runs = [replay(process_chunk, e) for e in api.named(PROCESS_CHUNK) for _ in range(deliveries)]
    run_finishes(api)
    return runs


def status(job_id: str) -> dict[str, Any]:
    found = get_store().status(job_id)
    assert found is not None
    result: dict[str, Any] = found.model_dump(mode="json")
    return result


def test_fan_out_processes_every_chunk(fake_inngest: FakeInngestApi) -> None:
    job_id = start(total_items=500, chunk_size=50)
    chunk_events = fake_inngest.named(PROCESS_CHUNK)
    assert sorted(e["data"]["chunk_index"] for e in chunk_events) == list(range(10))
    assert {e["data"]["job_id"] for e in chunk_events} == {job_id}
    assert status(job_id)["status"] == "running"

    assert all(r.status is mocked.Status.COMPLETED for r in run_chunks(fake_inngest))
    final = status(job_id)
    assert final["status"] == "succeeded"
    assert (final["chunks_succeeded"], final["chunks_failed"]) == (10, 0)
    assert (final["items_processed"], final["attempts"], final["retries"]) == (500, 10, 0)
    assert final["finished_at"] is not None and final["chunk_latency_ms"]["max"] is not None

    [completed] = fake_inngest.named(JOB_COMPLETED)
    assert completed["data"]["job_id"] == job_id
    assert completed["data"]["items_processed"] == 500
    assert completed["data"]["status"] == "succeeded"


def test_largest_job_fans_out_in_100_send_steps(fake_inngest: FakeInngestApi) -> None:
    result = trigger(start_job, START_JOB, {"total_items": 10_000_000, "chunk_size": 100})
    assert result.status is mocked.Status.COMPLETED, result.error
    assert result.output["total_chunks"] == 100_000
    assert result.output["send_steps"] == 100
    indexes = [e["data"]["chunk_index"] for e in fake_inngest.named(PROCESS_CHUNK)]
    assert indexes == list(range(100_000))
    assert len({e["id"] for e in fake_inngest.events}) == 100_000  # ids make sends idempotent


def test_same_job_id_starts_one_job(fake_inngest: FakeInngestApi) -> None:
    start(job_id="once", total_items=100, chunk_size=10)
    again = trigger(start_job, START_JOB, {"job_id": "once", "total_items": 100, "chunk_size": 10})
    assert again.output == {"job_id": "once", "total_chunks": 10, "duplicate": True}
    assert len(fake_inngest.named(PROCESS_CHUNK)) == 10
    assert len(get_store().list_jobs(10)) == 1


def test_same_job_id_with_another_spec_fails_without_retry(fake_inngest: FakeInngestApi) -> None:
    start(job_id="taken", total_items=100, chunk_size=10)
    other = trigger(start_job, START_JOB, {"job_id": "taken", "total_items": 99})
    assert other.status is mocked.Status.FAILED
    assert isinstance(other.error, inngest.NonRetriableError)
    assert "'taken' is already used" in str(other.error)


@pytest.mark.parametrize(
    ("data", "field"),
    [({"total_items": -1}, "total_items"), ({"chunk_size": "x"}, "chunk_size"),
     ({"job_id": "no spaces"}, "job_id"), ({"total_items": 10**7, "chunk_size": 1}, "chunk_size")],
)  # fmt: skip
def test_invalid_start_event_names_the_field(
    fake_inngest: FakeInngestApi, data: dict[str, Any], field: str
) -> None:
    result = trigger(start_job, START_JOB, data)
    assert result.status is mocked.Status.FAILED
    assert isinstance(result.error, inngest.NonRetriableError)
    assert f"{field}:" in str(result.error)
    assert fake_inngest.events == [] and get_store().list_jobs(10) == []


def test_flaky_chunk_is_retried_and_succeeds(fake_inngest: FakeInngestApi) -> None:
    job_id = start(total_items=100, chunk_size=10, flaky_chunks={"3": 2})
    results = run_chunks(fake_inngest)
    assert all(r.status is mocked.Status.COMPLETED for r in results)
    final = status(job_id)
    assert final["status"] == "succeeded"
    assert (final["attempts"], final["retries"], final["items_processed"]) == (12, 2, 100)
    # The chunk's timeline: each failed run ended `retried` with its error, then the success.
    chunk = get_store().chunk(job_id, 3)
    assert chunk is not None
    assert [(s.attempt, s.outcome) for s in chunk.timeline] == [
        (1, "retried"), (2, "retried"), (3, "succeeded"),
    ]  # fmt: skip
    assert all(s.ended_at is not None and s.started_at <= s.ended_at for s in chunk.timeline)
    assert (chunk.timeline[0].error or "").startswith("TransientError")


def test_a_transient_failure_waits_our_backoff_not_inngests(
    fake_inngest: FakeInngestApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chunking.settings import get_settings

    # The cloud path's schedule, from the same settings (tests/aws/test_worker.py asserts it
    # there): 3 s, then 9 s.
    monkeypatch.setenv("RETRY_BACKOFF_BASE_S", "3")
    monkeypatch.setenv("RETRY_BACKOFF_FACTOR", "3")
    get_settings.cache_clear()
    job_id = start(total_items=10, chunk_size=10, flaky_chunks={"0": 2})
    errors = spy_run_errors(process_chunk, monkeypatch)
    [event] = fake_inngest.named(PROCESS_CHUNK)
    began = datetime.datetime.now()
    assert replay(process_chunk, event).status is mocked.Status.COMPLETED
    assert [type(e) for e in errors] == [inngest.RetryAfterError] * 2
    waits = [(e.retry_after - began).total_seconds() for e in errors]  # type: ignore[attr-defined]
    assert 3 <= waits[0] < 3 + 2 and 9 <= waits[1] < 9 + 2, waits
    assert status(job_id)["retries"] == 2


def test_chunk_flaky_beyond_its_retries_fails_and_is_recorded(fake_inngest: FakeInngestApi) -> None:
    # CHUNK_RETRIES=3 in tests: 4 attempts, all failing.
    job_id = start(total_items=20, chunk_size=10, flaky_chunks={"1": 10})
    results = run_chunks(fake_inngest)
    assert results[1].status is mocked.Status.FAILED
    final = status(job_id)
    assert final["status"] == "partial"
    [failed] = final["failed_chunks"]
    assert failed["index"] == 1 and failed["attempts"] == 4
    assert failed["error"].startswith("gave up after 4 attempts: TransientError")
    assert len(fake_inngest.named(JOB_COMPLETED)) == 1


def test_permanent_failure_is_not_retried_and_job_ends_partial(
    fake_inngest: FakeInngestApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = start(total_items=100, chunk_size=10, fail_chunks=[4])
    errors = spy_run_errors(process_chunk, monkeypatch)
    run_chunks(fake_inngest)
    # Its run ends NonRetriableError. (The in-process executor runs it again all the same,
    # which Inngest would not; that run finds the chunk settled and does nothing.)
    assert isinstance(errors[0], inngest.NonRetriableError)
    final = status(job_id)
    assert final["status"] == "partial"
    assert (final["chunks_succeeded"], final["chunks_failed"], final["items_processed"]) == (
        9,
        1,
        90,
    )
    # The workload ran once: the store counted one attempt and no retry.
    assert final["failed_chunks"] == [
        {"index": 4, "error": "permanent: chunk 4 is in fail_chunks (injected permanent failure)",
         "attempts": 1}
    ]  # fmt: skip
    assert final["retries"] == 0
    assert len(fake_inngest.named(JOB_COMPLETED)) == 1


def test_chunk_delivered_twice_counts_once(fake_inngest: FakeInngestApi) -> None:
    job_id = start(total_items=100, chunk_size=10)
    results = run_chunks(fake_inngest, deliveries=2)
    assert [r.output["outcome"] for r in results[1::2]] == ["duplicate"] * 10
    final = status(job_id)
    assert (final["chunks_succeeded"], final["items_processed"], final["attempts"]) == (10, 100, 10)
    # The finishing chunk's redelivery re-sends the completion with the same event id, which
    # Inngest drops: subscribers see the job complete once.
    completions = fake_inngest.named(JOB_COMPLETED)
    assert len({e["id"] for e in completions}) == 1


def test_rate_limited_chunk_asks_inngest_to_wait(
    fake_inngest: FakeInngestApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chunking.errors import RateLimitedError
    from workloads.simulate import Simulate

    original = Simulate.run_chunk
    calls: list[int] = []

    async def rate_limited_once(
        self: Any, store: Any, job: Any, chunk: Any, attempt: int, *rest: Any
    ) -> Any:
        calls.append(attempt)
        if attempt == 1:
            raise RateLimitedError("429 from the model", retry_after_s=30)
        return await original(self, store, job, chunk, attempt, *rest)

    monkeypatch.setattr(Simulate, "run_chunk", rate_limited_once)
    job_id = start(total_items=10, chunk_size=10)
    errors = spy_run_errors(process_chunk, monkeypatch)
    [event] = fake_inngest.named(PROCESS_CHUNK)
    result = replay(process_chunk, event)
    assert result.status is mocked.Status.COMPLETED
    assert calls == [1, 2]
    assert status(job_id)["retries"] == 1
    [retry_after] = errors
    assert isinstance(retry_after, inngest.RetryAfterError)
    waited = (retry_after.retry_after - datetime.datetime.now()).total_seconds()
    assert 25 < waited <= 30


def test_chunk_of_unknown_job_fails_without_retry() -> None:
    result = trigger(process_chunk, PROCESS_CHUNK, {"job_id": "ghost", "chunk_index": 0})
    assert isinstance(result.error, inngest.NonRetriableError)
    assert "'ghost': no such job" in str(result.error)


def test_chunk_events_carry_the_jobs_priority_and_tenant(fake_inngest: FakeInngestApi) -> None:
    start(total_items=30, chunk_size=10, priority="high", tenant="acme")
    events = fake_inngest.named(PROCESS_CHUNK)
    assert {(e["data"]["priority"], e["data"]["tenant"]) for e in events} == {("high", "acme")}
    assert all(r.status is mocked.Status.COMPLETED for r in run_chunks(fake_inngest))
