"""The JobStore contract, held by both implementations: SQLite (local) and DynamoDB (cloud).

The `store` fixture (tests/chunking/conftest.py) runs each test on both.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from chunking.latency import RELATIVE_ERROR
from chunking.spec import JobSpec
from chunking.status import SPAN_ERROR_MAX_CHARS, TIMELINE_MAX
from chunking.store import JobConflictError, JobStore, Settlement
from chunking.workload import ChunkUsage
from stores.dynamodb import DynamoJobStore
from stores.sql import SqlJobStore
from stores.sqlite import SqliteJobStore

CONTRACT_KEYS = {
    "job_id", "path", "status", "total_items", "chunk_size", "total_chunks", "chunks_succeeded",
    "chunks_failed", "items_processed", "attempts", "retries", "created_at", "started_at",
    "finished_at", "duration_s", "chunk_latency_ms", "failed_chunks",
}  # fmt: skip


def started_job(store: JobStore, total: int = 100, size: int = 10) -> str:
    store.create_job("job-1", JobSpec(total_items=total, chunk_size=size), "local")
    assert store.start_job("job-1")
    return "job-1"


def test_sqlite_store_uses_wal(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "wal.sqlite3")
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_new_job_is_queued_and_answers_status(store: JobStore) -> None:
    job, created = store.create_job("j", JobSpec(total_items=95, chunk_size=10), "local")
    assert created and job.state == "queued" and job.total_chunks == 10
    status = store.status("j")
    assert status is not None
    assert set(status.model_dump()) >= CONTRACT_KEYS
    assert (status.status, status.started_at, status.duration_s) == ("queued", None, None)


def test_same_job_id_same_spec_is_one_job(store: JobStore) -> None:
    spec = JobSpec(total_items=10, chunk_size=5)
    store.create_job("j", spec, "local")
    _, created = store.create_job("j", spec, "local")
    assert not created
    assert store.start_job("j") and not store.start_job("j")
    assert len(store.list_jobs(10)) == 1


def test_same_job_id_other_spec_is_a_conflict(store: JobStore) -> None:
    store.create_job("j", JobSpec(total_items=10, chunk_size=5), "local")
    with pytest.raises(JobConflictError, match="'j' is already used"):
        store.create_job("j", JobSpec(total_items=11, chunk_size=5), "local")


def test_outcome_counts_once_per_chunk(store: JobStore) -> None:
    job_id = started_job(store, total=20, size=10)
    assert store.begin_attempt(job_id, 0) == 1
    first = store.settle_chunk(job_id, 0, succeeded=True, items=10, latency_ms=5)
    again = store.settle_chunk(job_id, 0, succeeded=False, error="late duplicate")
    assert first.recorded and not again.recorded
    assert store.begin_attempt(job_id, 0) is None  # settled: never run again
    status = store.status(job_id)
    assert status is not None
    assert (status.chunks_succeeded, status.chunks_failed, status.items_processed) == (1, 0, 10)


def test_last_chunk_finishes_the_job_once(store: JobStore) -> None:
    job_id = started_job(store, total=20, size=10)
    for index in (1, 0):
        store.begin_attempt(job_id, index)
    assert not store.settle_chunk(job_id, 1, succeeded=True, items=10).job_finished
    finishing = store.settle_chunk(job_id, 0, succeeded=False, error="boom")
    assert finishing.recorded and finishing.job_finished
    # A redelivery of the finishing chunk reports it again (to re-emit, deduplicated), others never.
    assert store.settle_chunk(job_id, 0, succeeded=True).job_finished
    assert not store.settle_chunk(job_id, 1, succeeded=True).job_finished
    status = store.status(job_id)
    assert status is not None
    assert status.status == "partial"
    assert status.chunks_succeeded + status.chunks_failed == status.total_chunks
    assert [(f.index, f.error, f.attempts) for f in status.failed_chunks] == [(0, "boom", 1)]


def test_attempts_retries_and_latency(store: JobStore) -> None:
    job_id = started_job(store, total=40, size=10)
    for index, tries in enumerate((1, 3, 1, 2)):
        for _ in range(tries):
            store.begin_attempt(job_id, index)
        store.settle_chunk(job_id, index, succeeded=True, items=10, latency_ms=10.0 * (index + 1))
    status = store.status(job_id)
    assert status is not None
    assert (status.status, status.attempts, status.retries) == ("succeeded", 7, 3)
    # p50 and p95 come from the job's latency histogram: within its relative error; max exact.
    latency = status.chunk_latency_ms
    assert latency.p50 == pytest.approx(20.0, rel=RELATIVE_ERROR)
    assert latency.p95 == pytest.approx(40.0, rel=RELATIVE_ERROR)
    assert latency.max == 40.0
    assert status.duration_s is not None and status.duration_s >= 0


def test_all_chunks_failed_is_failed(store: JobStore) -> None:
    job_id = started_job(store, total=10, size=10)
    store.settle_chunk(job_id, 0, succeeded=False, error="never ran")
    status = store.status(job_id)
    assert status is not None
    assert (status.status, status.attempts, status.failed_chunks[0].attempts) == ("failed", 0, 0)


def test_job_that_failed_to_start_can_be_requeued(store: JobStore) -> None:
    store.create_job("j", JobSpec(total_items=10, chunk_size=5), "local")
    store.fail_job("j", "event API down")
    status = store.status("j")
    assert status is not None and (status.status, status.error) == ("failed", "event API down")
    assert store.requeue_job("j")
    assert store.start_job("j")
    assert not store.requeue_job("j")  # it started: no going back


def test_many_threads_settling_the_same_chunks_count_once(store: JobStore) -> None:
    job_id = started_job(store, total=200, size=10)

    def deliver(index: int) -> tuple[int, bool]:
        store.begin_attempt(job_id, index)
        return index, store.settle_chunk(job_id, index, succeeded=True, items=10).job_finished

    # Every chunk delivered 4 times, from 8 threads at once.
    with ThreadPoolExecutor(max_workers=8) as pool:
        finished = list(pool.map(deliver, [i for i in range(20) for _ in range(4)]))
    status = store.status(job_id)
    assert status is not None
    assert (status.chunks_succeeded, status.items_processed, status.status) == (
        20,
        200,
        "succeeded",
    )
    job = store.get_job(job_id)
    assert job is not None and job.settled_by is not None
    # The finish is reported to the delivery that finished the job, and maybe to its copies
    # (so a lost announcement can be repeated); never to any other chunk.
    reported = [index for index, done in finished if done]
    assert reported and set(reported) == {job.settled_by}


def test_many_threads_settling_take_consecutive_numbers_once_per_chunk(store: JobStore) -> None:
    job_id = started_job(store, total=200, size=10)

    def deliver(index: int) -> None:
        store.begin_attempt(job_id, index)
        store.settle_chunk(job_id, index, succeeded=True, items=10)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(deliver, [i for i in range(20) for _ in range(3)]))
    settled = store.settled_since(job_id, 0, 100)
    assert [c.seq for c in settled] == list(range(1, 21))
    assert sorted(c.index for c in settled) == list(range(20))


def test_settlements_are_numbered_in_order_and_never_reused(store: JobStore) -> None:
    job_id = started_job(store, total=40, size=10)
    for index, ok in ((2, True), (0, True), (0, False), (1, False), (3, True)):
        store.begin_attempt(job_id, index)
        store.settle_chunk(job_id, index, succeeded=ok, items=10, error=None if ok else "boom")
    settled = store.settled_since(job_id, 0, 100)  # the duplicate of chunk 0 took no number
    assert [(c.index, c.seq, c.state) for c in settled] == [
        (2, 1, "succeeded"), (0, 2, "succeeded"), (1, 3, "failed"), (3, 4, "succeeded"),
    ]  # fmt: skip
    assert [c.index for c in store.settled_since(job_id, 2, 100)] == [1, 3]
    assert store.settled_since(job_id, 4, 100) == []
    chunks = store.chunk_page(job_id, None, -1, 100)
    assert {c.index: c.seq for c in chunks} == {0: 2, 1: 3, 2: 1, 3: 4}
    assert store.reopen_chunk(job_id, 1)  # it leaves the list, until it settles again
    assert [c.seq for c in store.settled_since(job_id, 0, 100)] == [1, 2, 4]
    assert store.begin_attempt(job_id, 1) == 2
    assert store.settle_chunk(job_id, 1, succeeded=True, items=10).job_finished
    assert [(c.index, c.seq, c.attempts) for c in store.settled_since(job_id, 3, 100)] == [
        (3, 4, 1), (1, 5, 2),
    ]  # fmt: skip


def test_settlements_are_read_a_page_at_a_time_in_order(store: JobStore) -> None:
    """A reopened chunk settled again is listed once, at its new number, even when its old
    number falls on an earlier page: pages read one after another list every settlement once."""
    job_id = started_job(store, total=100, size=10)
    for index in range(8):
        store.begin_attempt(job_id, index)
        store.settle_chunk(job_id, index, succeeded=index != 1, items=10)
    assert store.reopen_chunk(job_id, 1)  # its number 2 is no longer current
    store.begin_attempt(job_id, 1)
    store.settle_chunk(job_id, 1, succeeded=True, items=10)  # number 9
    pages, after = [], 0
    while True:
        page = store.settled_since(job_id, after, 3)
        pages.append([(c.index, c.seq) for c in page])
        if len(page) < 3:
            break
        after = page[-1].seq or after
    assert pages == [[(0, 1), (2, 3), (3, 4)], [(4, 5), (5, 6), (6, 7)], [(7, 8), (1, 9)]]


def test_a_claim_is_made_once_until_it_expires(store: JobStore) -> None:
    now = 1_800_000_000.0
    assert store.claim_once("sig-a", now, 600)
    assert not store.claim_once("sig-a", now + 1, 600)  # the same key again: refused
    assert store.claim_once("sig-b", now + 1, 600)  # another key is its own
    assert not store.claim_once("sig-a", now + 599, 600)
    assert store.claim_once("sig-a", now + 602, 600)  # expired: it may be made again
    assert not store.claim_once("sig-a", now + 603, 600)


def test_many_threads_claiming_one_key_get_it_once(store: JobStore) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        taken = list(pool.map(lambda _: store.claim_once("sig", 1_800_000_000.0, 600), range(16)))
    assert taken.count(True) == 1


def test_stored_times_are_timezone_aware(store: JobStore) -> None:
    job_id = started_job(store, total=10, size=10)
    store.settle_chunk(job_id, 0, succeeded=True, items=10)
    job = store.get_job(job_id)
    assert job is not None and job.finished_at is not None and job.started_at is not None
    assert all(t.utcoffset() is not None for t in (job.created_at, job.started_at, job.finished_at))


def test_reopened_chunk_runs_again_and_the_job_finishes_anew(store: JobStore) -> None:
    job_id = started_job(store, total=20, size=10)
    for index in (0, 1):
        store.begin_attempt(job_id, index)
    store.settle_chunk(job_id, 0, succeeded=True, items=10)
    assert store.settle_chunk(job_id, 1, succeeded=False, error="dead-lettered").job_finished
    assert not store.reopen_chunk(job_id, 0)  # succeeded chunks stay as they are
    assert store.reopen_chunk(job_id, 1)
    assert not store.reopen_chunk(job_id, 1)  # once
    status = store.status(job_id)
    assert status is not None
    assert (status.status, status.chunks_failed, status.finished_at) == ("running", 0, None)
    assert store.begin_attempt(job_id, 1) == 2
    assert store.settle_chunk(job_id, 1, succeeded=True, items=10).job_finished
    status = store.status(job_id)
    assert status is not None
    assert (status.status, status.chunks_succeeded, status.items_processed) == ("succeeded", 2, 20)
    assert (status.attempts, status.retries) == (3, 1)


def test_item_results_are_kept_once_and_read_per_chunk(store: JobStore) -> None:
    from chunking.status import ItemResult

    job_id = started_job(store, total=6, size=3)
    first = ItemResult(index=4, chunk_index=1, id="e", output="five", prompt_tokens=3,
                       completion_tokens=5, latency_ms=12.5, attempts=2)  # fmt: skip
    assert store.record_item(job_id, first)
    assert not store.record_item(job_id, ItemResult(index=4, chunk_index=1, id="e", output="x"))
    store.record_item(job_id, ItemResult(index=3, chunk_index=1, id="d", error="400: too long"))
    store.record_item(job_id, ItemResult(index=0, chunk_index=0, id="a", output="one"))
    results = store.item_results(job_id, 1)
    assert [r.index for r in results] == [3, 4]
    assert results[1] == first
    assert results[0].error == "400: too long" and results[0].output is None
    assert (results[0].attempts, results[1].attempts) == (1, 2)
    assert [r.id for r in store.item_results(job_id, 0)] == ["a"]
    assert store.item_results(job_id, 2) == []
    # Item rows are not chunks: the job's accounting is untouched.
    status = store.status(job_id)
    assert status is not None and status.attempts == 0 and status.chunks_succeeded == 0


def llm_job(store: JobStore, total: int, size: int) -> str:
    spec = JobSpec(workload="llm", input_uri="in.jsonl", chunk_size=size)
    store.create_job("job-1", spec, "local")
    assert store.set_plan("job-1", total) and store.start_job("job-1")
    return "job-1"


def test_usage_is_added_up_by_the_settlements(store: JobStore) -> None:
    job_id = llm_job(store, total=6, size=3)
    job = store.get_job(job_id)
    assert job is not None and (job.total_items, job.total_chunks) == (6, 2)
    status = store.status(job_id)
    assert status is not None and status.usage is not None and status.usage.prompt_tokens == 0
    store.begin_attempt(job_id, 0)
    store.settle_chunk(job_id, 0, succeeded=True, items=3, usage=ChunkUsage(10, 20, 0))
    store.begin_attempt(job_id, 1)
    store.settle_chunk(job_id, 1, succeeded=True, items=3, usage=ChunkUsage(3, 5, 1))
    status = store.status(job_id)
    assert status is not None and status.usage is not None
    assert (status.usage.prompt_tokens, status.usage.completion_tokens) == (13, 25)
    assert status.usage.items_failed == 1
    assert status.usage.est_cost_usd == round((13 * 0.15 + 25 * 0.60) / 1e6, 6)
    # Per chunk: on the chunks endpoint's pages, not in the status.
    chunks = store.chunk_page(job_id, None, -1, 10)
    assert [(c.index, c.prompt_tokens, c.items_failed) for c in chunks] == [(0, 10, 0), (1, 3, 1)]


def test_jobs_without_model_calls_have_no_usage(store: JobStore) -> None:
    job_id = started_job(store, total=10, size=10)
    status = store.status(job_id)
    assert status is not None and status.usage is None


def test_errors_uri_is_kept_with_the_output_and_cleared_when_the_job_reopens(
    store: JobStore,
) -> None:
    job_id = started_job(store, total=20, size=10)
    store.begin_attempt(job_id, 0)
    store.begin_attempt(job_id, 1)
    store.settle_chunk(job_id, 0, succeeded=True, items=10)
    assert store.settle_chunk(job_id, 1, succeeded=False, error="dead-lettered").job_finished
    store.set_output_uri(job_id, "out/output.jsonl", "out/errors.jsonl")
    status = store.status(job_id)
    assert status is not None and status.errors_uri == "out/errors.jsonl"
    assert store.reopen_chunk(job_id, 1)
    status = store.status(job_id)
    assert status is not None and (status.output_uri, status.errors_uri) == (None, None)
    store.set_output_uri(job_id, "out/output.jsonl")  # nothing failed this time
    status = store.status(job_id)
    assert status is not None and status.errors_uri is None


def test_output_uri_is_kept_and_cleared_when_the_job_reopens(store: JobStore) -> None:
    job_id = started_job(store, total=20, size=10)
    store.begin_attempt(job_id, 0)
    store.begin_attempt(job_id, 1)
    store.settle_chunk(job_id, 0, succeeded=True, items=10)
    assert store.settle_chunk(job_id, 1, succeeded=False, error="dead-lettered").job_finished
    status = store.status(job_id)
    assert status is not None and status.output_uri is None  # not written yet: not claimed
    store.set_output_uri(job_id, "s3://bucket/outputs/job-1/output.jsonl")
    job = store.get_job(job_id)
    assert job is not None and job.output_uri == "s3://bucket/outputs/job-1/output.jsonl"
    assert store.reopen_chunk(job_id, 1)
    status = store.status(job_id)
    assert status is not None and (status.status, status.output_uri) == ("running", None)


def test_a_finished_job_with_failed_items_is_partial(store: JobStore) -> None:
    job_id = llm_job(store, total=2, size=2)
    store.begin_attempt(job_id, 0)
    usage = ChunkUsage(prompt_tokens=4, completion_tokens=2, items_failed=1)
    assert store.settle_chunk(job_id, 0, succeeded=True, items=2, usage=usage).job_finished
    store.set_output_uri(job_id, "out.jsonl")
    status = store.status(job_id)
    assert status is not None and status.usage is not None
    assert (status.status, status.chunks_succeeded, status.usage.items_failed) == ("partial", 1, 1)


def test_sqlite_store_adds_new_columns_to_an_older_file(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    old_schema = (
        "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, path TEXT NOT NULL, spec TEXT NOT NULL,"
    )
    old_schema += " state TEXT NOT NULL, total_chunks INTEGER NOT NULL, chunks_settled INTEGER"
    old_schema += " NOT NULL DEFAULT 0, created_at TEXT NOT NULL, started_at TEXT,"
    old_schema += " finished_at TEXT, error TEXT, settled_by INTEGER)"
    with sqlite3.connect(path) as db:
        db.execute(old_schema)
    store = SqliteJobStore(path)
    store.create_job("j", JobSpec(total_items=10, chunk_size=5), "local")
    store.set_output_uri("j", "data/outputs/j/output.jsonl")
    job = store.get_job("j")
    assert job is not None and job.output_uri == "data/outputs/j/output.jsonl"


def test_an_llm_job_ends_when_its_output_is_written(store: JobStore) -> None:
    spec = JobSpec(workload="llm", input_uri="in.jsonl", total_items=2, chunk_size=2)
    store.create_job("llm", spec, "local")
    store.start_job("llm")
    store.begin_attempt("llm", 0)
    assert store.settle_chunk("llm", 0, succeeded=True, items=2).job_finished
    status = store.status("llm")
    assert status is not None
    assert (status.status, status.finished_at, status.chunks_succeeded) == ("running", None, 1)
    store.set_output_uri("llm", "data/outputs/llm/output.jsonl")
    status = store.status("llm")
    assert status is not None and status.status == "succeeded" and status.finished_at is not None


def test_a_cancelled_job_counts_the_chunks_that_never_ran(store: JobStore) -> None:
    job_id = started_job(store, total=100, size=10)
    for index in range(3):
        store.begin_attempt(job_id, index)
        store.settle_chunk(job_id, index, succeeded=index != 1, items=10, error="x")
    store.begin_attempt(job_id, 3)  # running when the cancel comes: it may finish
    assert store.cancel_job(job_id)
    assert not store.cancel_job(job_id)  # once
    status = store.status(job_id)
    assert status is not None and status.finished_at is not None
    assert (status.status, status.chunks_succeeded, status.chunks_failed) == ("cancelled", 2, 1)
    assert status.chunks_cancelled == 6  # 10 - 3 settled - 1 still running
    assert not store.settle_chunk(job_id, 3, succeeded=True, items=10).job_finished
    status = store.status(job_id)
    assert status is not None
    assert (status.chunks_succeeded, status.chunks_failed, status.chunks_cancelled) == (3, 1, 6)
    total = status.chunks_succeeded + status.chunks_failed + status.chunks_cancelled
    assert total == status.total_chunks and status.status == "cancelled"


def test_an_ended_job_cannot_be_cancelled(store: JobStore) -> None:
    job_id = started_job(store, total=10, size=10)
    store.begin_attempt(job_id, 0)
    store.settle_chunk(job_id, 0, succeeded=True, items=10)
    assert not store.cancel_job(job_id)
    status = store.status(job_id)
    assert status is not None and (status.status, status.chunks_cancelled) == ("succeeded", 0)


def test_a_chunk_begun_before_the_cancel_is_recorded_when_it_comes_back(store: JobStore) -> None:
    import asyncio

    from chunking.runner import attempt_chunk, forget_jobs

    forget_jobs()
    job_id = started_job(store, total=40, size=10)
    store.begin_attempt(job_id, 0)  # attempt 1 failed transiently: waiting for its retry
    store.begin_attempt(job_id, 1)
    store.settle_chunk(job_id, 1, succeeded=True, items=10)
    assert store.cancel_job(job_id)
    loop = asyncio.get_event_loop()
    for index in (0, 2, 3):  # the retry of chunk 0, and two chunks never begun
        outcome = loop.run_until_complete(attempt_chunk(store, job_id, index, last_attempt=False))
        assert outcome.outcome == "cancelled"
    status = store.status(job_id)
    assert status is not None
    assert (status.chunks_succeeded, status.chunks_failed, status.chunks_cancelled) == (1, 1, 2)
    assert "cancelled" in status.failed_chunks[0].error
    assert not store.settle_chunk(job_id, 2, succeeded=False, begun_only=True).recorded


def test_writes_in_a_batch_each_land_or_fail_on_their_own(store: JobStore) -> None:
    spec = JobSpec(total_items=10, chunk_size=5)
    store.create_job("taken", spec, "local")
    with store.batch():
        store.create_job("b1", spec, "local")
        with pytest.raises(JobConflictError):
            store.create_job("taken", JobSpec(total_items=99, chunk_size=5), "local")
        store.create_job("b2", spec, "local")
        assert store.start_job("b1")
    assert [store.get_job(j) is not None for j in ("b1", "b2")] == [True, True]
    status, taken = store.status("b1"), store.get_job("taken")
    assert status is not None and status.status == "running"
    assert taken is not None and taken.total_items == 10


def test_a_failed_batch_keeps_none_of_its_writes_on_a_sql_store(store: JobStore) -> None:
    if not isinstance(store, SqlJobStore):
        pytest.skip("DynamoDB has no transaction to share: its batch() changes nothing")
    with pytest.raises(RuntimeError), store.batch():
        store.create_job("gone", JobSpec(total_items=10, chunk_size=5), "local")
        raise RuntimeError("the batch failed")
    assert store.get_job("gone") is None


def test_a_chunks_runs_are_timed_by_the_writes_that_begin_and_settle_them(
    store: JobStore,
) -> None:
    store.create_job("timed", JobSpec(total_items=10, chunk_size=5), "local")
    store.start_job("timed")
    store.begin_attempt("timed", 0)
    store.begin_attempt("timed", 0)  # the first run never said how it ended: lost
    store.begin_attempt("timed", 0, continuation=True)  # the second stopped for its budget
    store.settle_chunk("timed", 0, succeeded=True, items=5)
    store.end_attempt("timed", 0, "too late")  # a settled chunk's timeline is left alone
    chunk = store.chunk("timed", 0)
    assert chunk is not None
    assert [(s.attempt, s.outcome) for s in chunk.timeline] == [
        (1, "lost"), (2, "continued"), (2, "succeeded"),
    ]  # fmt: skip
    lost, continued, settled = chunk.timeline
    assert lost.ended_at is None and continued.ended_at is not None
    assert settled.ended_at is not None and continued.started_at <= settled.started_at
    assert all(s.error is None for s in chunk.timeline)


def test_a_chunk_keeps_its_latest_runs_only(store: JobStore) -> None:
    store.create_job("long", JobSpec(total_items=10, chunk_size=5), "local")
    store.start_job("long")
    for _ in range(TIMELINE_MAX + 6):
        store.begin_attempt("long", 1)
        store.end_attempt("long", 1, "x" * 5_000)
    chunk = store.chunk("long", 1)
    assert chunk is not None and len(chunk.timeline) == TIMELINE_MAX
    assert chunk.timeline[-1].attempt == TIMELINE_MAX + 6
    assert chunk.timeline[-1].outcome == "retried"
    assert len(chunk.timeline[-1].error or "") == SPAN_ERROR_MAX_CHARS


def test_a_cancel_between_a_settlements_read_and_its_write_is_not_undone(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last chunk's settlement read the job as running; a cancel lands before its write.
    The write must not finish the job over the cancel: it is decided again on what is now.
    (SQL stores hold the rows they read, so there the cancel waits: DynamoDB only.)"""
    if not isinstance(store, DynamoJobStore):
        pytest.skip("a SQL store holds the job's row from its read to its write")
    job_id = started_job(store, total=10, size=10)
    store.begin_attempt(job_id, 0)
    decide = store._settle_plan
    cancels: list[bool] = []

    def cancel_after_the_read(*args: Any, **kwargs: Any) -> Any:
        plan = decide(*args, **kwargs)
        if not cancels:  # another request cancels the job now, after the read
            cancels.append(store.cancel_job(job_id))
        return plan

    monkeypatch.setattr(store, "_settle_plan", cancel_after_the_read)
    settlement = store.settle_chunk(job_id, 0, succeeded=True, items=10)
    assert cancels == [True] and settlement == Settlement(recorded=True, job_finished=False)
    job = store.get_job(job_id)
    assert job is not None and (job.state, job.settled_by) == ("cancelled", None)
    assert job.tally.chunks_succeeded == 1  # counted all the same, once
