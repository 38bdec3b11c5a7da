"""lifecycle.submit and submit_async: the core records the job and decides its first work (plan
it in its first durable unit, or its chunks, planned already); the adapter's `send` only sends
it. A job recorded is sent or marked failed; a repeat sends nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import workloads  # noqa: F401 - registers the workloads, as every entrypoint does
from chunking import lifecycle
from chunking.lifecycle import EnqueueError, FanOut, FirstWork, PlanJob
from chunking.spec import JobSpec
from stores.sqlite import SqliteJobStore
from workloads.simulate import Simulate


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobStore:
    return SqliteJobStore(tmp_path / "store.sqlite3")


def spec(job_id: str = "job-1") -> JobSpec:
    return JobSpec(job_id=job_id, total_items=30, chunk_size=10)


class Sender:
    """An adapter's send: records what it was handed (and the job's state then), or fails."""

    def __init__(self, store: SqliteJobStore) -> None:
        self.store = store
        self.sent: list[tuple[FirstWork, str]] = []
        self.fail: Exception | None = None

    def __call__(self, work: FirstWork) -> None:
        if self.fail is not None:
            raise self.fail
        job = self.store.get_job(work.job.job_id)
        assert job is not None
        self.sent.append((work, job.state))

    async def on_loop(self, work: PlanJob) -> None:
        self(work)


def test_known_items_planned_here_are_chunks_to_fan_out_sent_after_the_job_started(
    store: SqliteJobStore,
) -> None:
    send = Sender(store)
    submission = lifecycle.submit(store, spec(), "cloud", send, plan_known_items=True)
    assert submission.enqueued
    [(work, state_when_sent)] = send.sent
    assert isinstance(work, FanOut) and work.total_chunks == 3
    # Planned before sending: a fast worker may settle every chunk before submit returns.
    assert state_when_sent == "running"


def test_without_planning_here_the_first_durable_unit_plans_it(store: SqliteJobStore) -> None:
    send = Sender(store)
    lifecycle.submit(store, spec(), "local", send)
    [(work, state_when_sent)] = send.sent
    assert work == PlanJob(work.job, again=False) and state_when_sent == "queued"


def test_a_job_that_counts_its_input_is_planned_in_its_first_durable_unit(
    store: SqliteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Simulate, "known_items", lambda self, spec: None)
    send = Sender(store)
    lifecycle.submit(store, spec(), "cloud", send, plan_known_items=True)
    [(work, state_when_sent)] = send.sent
    assert isinstance(work, PlanJob) and state_when_sent == "queued"


def test_a_repeat_sends_nothing(store: SqliteJobStore) -> None:
    send = Sender(store)
    lifecycle.submit(store, spec(), "cloud", send, plan_known_items=True)
    again = lifecycle.submit(store, spec(), "cloud", send, plan_known_items=True)
    assert not again.enqueued and len(send.sent) == 1


@pytest.mark.parametrize("plan_known_items", [False, True])
def test_a_failed_send_marks_the_job_failed_and_a_retry_sends_it_again(
    store: SqliteJobStore, plan_known_items: bool
) -> None:
    send = Sender(store)
    send.fail = RuntimeError("queue gone")
    with pytest.raises(EnqueueError) as raised:
        lifecycle.submit(
            store, spec(), "cloud", send, plan_known_items=plan_known_items, what="enqueue chunks"
        )
    assert raised.value.job_id == "job-1"
    job = store.get_job("job-1")
    assert job is not None and job.state == "failed"
    assert job.error == "could not enqueue chunks: queue gone"

    send.fail = None
    retry = lifecycle.submit(store, spec(), "cloud", send, plan_known_items=plan_known_items)
    assert retry.enqueued
    [(work, _)] = send.sent
    assert work == (FanOut(work.job, 3) if plan_known_items else PlanJob(work.job, again=True))


def test_a_plan_that_raises_marks_the_job_failed_and_sends_nothing(
    store: SqliteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*_: object) -> None:
        raise OSError("the store did not answer")

    monkeypatch.setattr(lifecycle, "plan", unavailable)
    send = Sender(store)
    with pytest.raises(EnqueueError):
        lifecycle.submit(store, spec(), "cloud", send, plan_known_items=True, what="enqueue chunks")
    job = store.get_job("job-1")
    assert job is not None and job.state == "failed" and send.sent == []
    assert job.error == "could not enqueue chunks: the store did not answer"


def test_submit_async_sends_a_plan_job_once_and_marks_a_failed_send(
    store: SqliteJobStore,
) -> None:
    send = Sender(store)

    async def submit(job_id: str) -> lifecycle.Submission:
        return await lifecycle.submit_async(store, spec(job_id), "local", send.on_loop)

    assert asyncio.run(submit("job-1")).enqueued
    assert not asyncio.run(submit("job-1")).enqueued  # a repeat: nothing sent
    [(work, state_when_sent)] = send.sent
    assert work == PlanJob(work.job, again=False) and state_when_sent == "queued"

    send.fail = RuntimeError("event API unavailable")
    with pytest.raises(EnqueueError):
        asyncio.run(submit("job-2"))
    job = store.get_job("job-2")
    assert job is not None and job.state == "failed"
