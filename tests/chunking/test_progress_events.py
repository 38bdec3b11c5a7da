"""`progress.job_events` read straight from each job store: SQLite (local) and DynamoDB (moto).

The HTTP stream is tested in tests/test_progress_stream.py; here the same events come from
either store, through the JobStore protocol alone.
"""

from __future__ import annotations

import asyncio

from chunking.progress import ProgressEvent, job_events
from chunking.spec import JobSpec
from chunking.store import JobStore


def running_job(store: JobStore, chunks: int) -> str:
    store.create_job("events", JobSpec(total_items=chunks * 10, chunk_size=10), "local")
    store.start_job("events")
    return "events"


def settle(store: JobStore, job_id: str, index: int, ok: bool = True) -> None:
    store.begin_attempt(job_id, index)
    store.settle_chunk(job_id, index, succeeded=ok, items=10, error=None if ok else "boom")


def follow(
    store: JobStore, job_id: str, after_seq: int = 0, then_settle: tuple[int, ...] = ()
) -> list[ProgressEvent]:
    """The stream's events until its end; `then_settle` settle after the first event (the
    status snapshot), while the stream runs."""

    async def read() -> list[ProgressEvent]:
        events = []
        async for event in job_events(store, job_id, after_seq, poll_s=0.01):
            events.append(event)
            if event.event == "status":
                for index in then_settle:
                    await asyncio.to_thread(settle, store, job_id, index)
        return events

    return asyncio.run(read())


def test_each_settlement_is_sent_once_in_order_then_the_end(store: JobStore) -> None:
    job_id = running_job(store, chunks=4)
    settle(store, job_id, 2)
    settle(store, job_id, 0, ok=False)
    events = follow(store, job_id, then_settle=(3, 1))
    assert [e.event for e in events] == ["status", "chunk", "chunk", "chunk", "chunk", "end"]
    assert [e.id for e in events] == [None, "1", "2", "3", "4", None]
    chunks = [e.data for e in events[1:-1]]
    assert [(c["chunk_index"], c["outcome"]) for c in chunks] == [
        (2, "succeeded"), (0, "failed"), (3, "succeeded"), (1, "succeeded"),
    ]  # fmt: skip
    assert (chunks[-1]["chunks_settled"], chunks[-1]["items_processed"]) == (4, 30)
    assert (events[-1].data["status"], events[-1].data["chunks_failed"]) == ("partial", 1)


def test_a_reconnect_resumes_after_its_last_event_without_gaps_or_repeats(
    store: JobStore,
) -> None:
    job_id = running_job(store, chunks=4)
    for index in range(3):
        settle(store, job_id, index)
    events = follow(store, job_id, after_seq=2, then_settle=(3,))
    assert [(e.event, e.id) for e in events] == [
        ("status", None), ("chunk", "3"), ("chunk", "4"), ("end", None),
    ]  # fmt: skip
    assert events[1].data["chunks_settled"] == 3  # the counts carry on from event 2
    assert events[-1].data["status"] == "succeeded"


def test_a_reopened_chunk_is_sent_again_under_a_new_id(store: JobStore) -> None:
    job_id = running_job(store, chunks=2)
    settle(store, job_id, 0)
    settle(store, job_id, 1, ok=False)
    assert store.reopen_chunk(job_id, 1)  # a DLQ redrive
    events = follow(store, job_id, after_seq=1, then_settle=(1,))
    assert [(e.event, e.id) for e in events][1:] == [("chunk", "3"), ("end", None)]
    assert events[1].data["outcome"] == "succeeded" and events[-1].data["status"] == "succeeded"
