"""GET /jobs/{job_id}/events: the progress stream, read over HTTP by a real SSE client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from chunking.settings import get_settings
from chunking.spec import JobSpec
from functions.deps import get_store
from tests.support import ServerThread


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("SSE_POLL_INTERVAL_S", "0.05")
    get_settings.cache_clear()
    from main import app

    server = ServerThread(app).start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http
    server.stop()


def running_job(chunks: int = 10) -> str:
    store = get_store()
    store.create_job("sse", JobSpec(total_items=chunks * 10, chunk_size=10), "local")
    store.start_job("sse")
    return "sse"


def settle(index: int, ok: bool = True) -> None:
    store = get_store()
    store.begin_attempt("sse", index)
    store.settle_chunk("sse", index, succeeded=ok, items=10, error=None if ok else "boom")


def settle_the_rest(first: int, stop: int) -> None:
    for index in range(first, stop):
        settle(index)


def read(http: httpx.Client, job_id: str, until: int | None = None, **headers: str) -> list[Any]:
    """The stream's events, up to the chunk event with id `until` (or the end)."""
    events: list[ServerSentEvent] = []
    with connect_sse(http, "GET", f"/jobs/{job_id}/events", headers=headers) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for event in source.iter_sse():
            events.append(event)
            if event.event == "end" or (until is not None and event.id == str(until)):
                break
    return events


def test_the_stream_sends_each_settlement_then_the_end_and_closes(api: httpx.Client) -> None:
    job_id = running_job()
    for index in range(4):
        settle(index, ok=index != 2)
    later = threading.Timer(0.3, settle_the_rest, args=(4, 10))
    later.start()
    events = read(api, job_id)
    later.join()
    assert [e.event for e in events] == ["status"] + ["chunk"] * 10 + ["end"]
    chunks = [e.json() for e in events[1:-1]]
    assert [e.id for e in events[1:-1]] == [str(n) for n in range(1, 11)]
    assert [c["chunk_index"] for c in chunks] == list(range(10))
    assert chunks[2]["outcome"] == "failed" and chunks[2]["error"] == "boom"
    last = chunks[-1]
    assert (last["chunks_settled"], last["chunks_succeeded"], last["chunks_failed"]) == (10, 9, 1)
    assert last["items_processed"] == 90
    final = events[-1].json()
    assert (final["status"], final["chunks_succeeded"], final["chunks_failed"]) == ("partial", 9, 1)


def test_reconnecting_with_last_event_id_resumes_without_gaps_or_repeats(
    api: httpx.Client,
) -> None:
    job_id = running_job()
    for index in range(6):
        settle(index)
    first = read(api, job_id, until=3)  # the client drops after event 3
    assert [e.id for e in first if e.event == "chunk"] == ["1", "2", "3"]
    for index in range(6, 10):
        settle(index)
    rest = read(api, job_id, **{"Last-Event-ID": first[-1].id})
    chunk_events = [e for e in rest if e.event == "chunk"]
    assert [e.id for e in chunk_events] == [str(n) for n in range(4, 11)]
    assert chunk_events[0].json()["chunks_settled"] == 4  # the counts carry on from event 3
    assert rest[-1].event == "end" and rest[-1].json()["status"] == "succeeded"


def test_a_stream_from_the_start_reads_the_settlements_a_page_at_a_time(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many chunks have settled, no read takes more than a page of them: a client
    connecting from 0 to a big job costs the server steps, not one read of every chunk."""
    from chunking import progress
    from stores.sqlite import SqliteJobStore

    monkeypatch.setattr(progress, "SETTLED_PAGE", 3)
    asked: list[int] = []
    real = SqliteJobStore.settled_since

    def spy(self: SqliteJobStore, job: str, after: int, limit: int) -> Any:
        asked.append(limit)
        return real(self, job, after, limit)

    monkeypatch.setattr(SqliteJobStore, "settled_since", spy)
    job_id = running_job()
    for index in range(10):
        settle(index)
    events = read(api, job_id)
    assert [e.id for e in events if e.event == "chunk"] == [str(n) for n in range(1, 11)]
    assert events[-1].event == "end" and set(asked) == {3} and len(asked) >= 4


def test_unknown_job_and_bad_last_event_id_are_refused_before_streaming(
    api: httpx.Client,
) -> None:
    assert api.get("/jobs/nope/events").status_code == 404
    job_id = running_job()
    response = api.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "abc"})
    assert response.status_code == 400 and "Last-Event-ID" in response.text


def test_compare_follows_the_local_path_by_its_event_stream(api: httpx.Client) -> None:
    from tools.compare import PathRun, follow_events

    job_id = running_job(chunks=5)
    run = PathRun("local", status_url=f"{api.base_url}/jobs/{job_id}")
    stop = threading.Event()
    follower = threading.Thread(target=follow_events, args=(run, stop))
    follower.start()
    for index in range(5):
        settle(index)
    follower.join(timeout=10)
    assert not follower.is_alive()
    assert run.done and run.wall_s is not None
    assert (run.status["status"], run.status["chunks_succeeded"]) == ("succeeded", 5)


def test_a_cancelled_jobs_stream_ends_once_its_running_chunks_have_finished(
    api: httpx.Client,
) -> None:
    job_id = running_job(chunks=4)
    settle(0)
    get_store().begin_attempt(job_id, 1)  # running when the cancel comes
    get_store().cancel_job(job_id)
    later = threading.Timer(0.3, get_store().settle_chunk, args=(job_id, 1),
                            kwargs={"succeeded": True, "items": 10})  # fmt: skip
    later.start()
    events = read(api, job_id)
    later.join()
    assert [e.event for e in events] == ["status", "chunk", "chunk", "end"]
    final = events[-1].json()
    assert (final["status"], final["chunks_succeeded"], final["chunks_cancelled"]) == (
        "cancelled", 2, 2,
    )  # fmt: skip
