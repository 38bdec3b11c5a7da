"""A job's tally (the totals its status is read from) against a recount of its rows, on both
stores; the chunks endpoint's pages; a status read that touches no chunk or item row."""

from __future__ import annotations

import math
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chunking.latency import RELATIVE_ERROR
from chunking.spec import JobSpec
from chunking.status import FAILED_HEAD_MAX, ChunkRecord
from chunking.store import JobStore
from chunking.workload import ChunkUsage


def all_chunks(store: JobStore, job_id: str, state: Any = None) -> list[ChunkRecord]:
    """Every chunk row, through the pages (the recount reads the rows the tally summarises)."""
    found: list[ChunkRecord] = []
    after = -1
    while page := store.chunk_page(job_id, state, after, 7):
        found += page
        after = page[-1].index
    return found


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def llm_job(store: JobStore, total: int, size: int) -> str:
    spec = JobSpec(workload="llm", input_uri="in.jsonl", chunk_size=size)
    store.create_job("job-t", spec, "local")
    assert store.set_plan("job-t", total) and store.start_job("job-t")
    return "job-t"


def assert_tally_matches_rows(store: JobStore, job_id: str) -> None:
    status = store.status(job_id)
    assert status is not None and status.usage is not None
    rows = all_chunks(store, job_id)
    succeeded = [c for c in rows if c.state == "succeeded"]
    failed = [c for c in rows if c.state == "failed"]
    recount = {
        "chunks_succeeded": len(succeeded),
        "chunks_failed": len(failed),
        "items_processed": sum(c.items for c in succeeded),
        "attempts": sum(c.attempts for c in rows),
        "retries": sum(max(c.attempts - 1, 0) for c in rows),
        "prompt_tokens": sum(c.prompt_tokens for c in rows),
        "completion_tokens": sum(c.completion_tokens for c in rows),
        "items_failed": sum(c.items_failed for c in rows),
    }
    tally = {
        **{k: getattr(status, k) for k in ("chunks_succeeded", "chunks_failed",
                                           "items_processed", "attempts", "retries")},
        "prompt_tokens": status.usage.prompt_tokens,
        "completion_tokens": status.usage.completion_tokens,
        "items_failed": status.usage.items_failed,
    }  # fmt: skip
    assert tally == recount
    latencies = [c.latency_ms for c in rows if c.latency_ms is not None]
    if latencies:
        assert status.chunk_latency_ms.max == max(latencies)
        for q, got in ((50, status.chunk_latency_ms.p50), (95, status.chunk_latency_ms.p95)):
            assert got == pytest.approx(nearest_rank(latencies, q), rel=RELATIVE_ERROR)
    # The head of the failed chunks: real failures, with their errors, at most FAILED_HEAD_MAX.
    by_index = {c.index: c for c in failed}
    assert len(status.failed_chunks) == min(len(failed), FAILED_HEAD_MAX)
    for entry in status.failed_chunks:
        assert entry.error == by_index[entry.index].error
    assert [c.index for c in status.failed_chunks] == sorted(c.index for c in status.failed_chunks)
    # Failed by the page of failed chunks too (the sparse index on DynamoDB).
    assert [c.index for c in all_chunks(store, job_id, "failed")] == sorted(by_index)


def test_the_tally_equals_a_recount_after_concurrent_and_duplicate_settlements(
    store: JobStore,
) -> None:
    chunks = 60
    job_id = llm_job(store, total=chunks * 5, size=5)
    rng = random.Random(7)
    latency = {i: rng.uniform(1, 5_000) for i in range(chunks)}
    tries = {i: 1 + i % 3 for i in range(chunks)}

    def deliver(index: int) -> None:
        for _ in range(tries[index]):
            store.begin_attempt(job_id, index)
        ok = index % 7 != 3
        usage = ChunkUsage(index, 2 * index, index % 2)
        error = None if ok else f"chunk {index} failed"
        store.settle_chunk(
            job_id, index, succeeded=ok, items=5, latency_ms=latency[index], error=error,
            usage=usage,
        )  # fmt: skip

    # Every chunk delivered three times, eight at once: duplicates race their originals.
    deliveries = [i for i in range(chunks) for _ in range(3)]
    rng.shuffle(deliveries)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(deliver, deliveries))
    assert_tally_matches_rows(store, job_id)
    status = store.status(job_id)
    assert status is not None and status.status == "running"  # its output is not written

    # Redrive two failed chunks: their outcome leaves the tally, and comes back when they settle.
    for index in (3, 10):
        assert store.reopen_chunk(job_id, index)
    assert_tally_matches_rows(store, job_id)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda i: (store.begin_attempt(job_id, i), store.settle_chunk(
            job_id, i, succeeded=True, items=5, latency_ms=12.0, usage=ChunkUsage(1, 1, 0)
        )), [3, 10, 3, 10]))  # fmt: skip
    assert_tally_matches_rows(store, job_id)


def test_a_status_lists_the_first_failed_chunks_and_counts_them_all(store: JobStore) -> None:
    job_id = llm_job(store, total=200, size=2)
    for index in range(FAILED_HEAD_MAX + 15):
        store.begin_attempt(job_id, index)
        store.settle_chunk(job_id, index, succeeded=False, error="x" * 5_000)
    status = store.status(job_id)
    assert status is not None and status.chunks_failed == FAILED_HEAD_MAX + 15
    assert [c.index for c in status.failed_chunks] == list(range(FAILED_HEAD_MAX))
    assert all(len(c.error) <= 1_000 for c in status.failed_chunks)  # bounded in the job's row
    assert len(all_chunks(store, job_id, "failed")) == FAILED_HEAD_MAX + 15


def test_the_chunks_pages_filter_by_state_and_go_on_after_an_index(store: JobStore) -> None:
    job_id = llm_job(store, total=20, size=1)
    for index in range(12):
        store.begin_attempt(job_id, index)
        if index < 10:
            ok = index % 3 != 0
            store.settle_chunk(job_id, index, succeeded=ok, items=1, error=None if ok else "no")
    assert [c.index for c in store.chunk_page(job_id, None, -1, 5)] == [0, 1, 2, 3, 4]
    assert [c.index for c in store.chunk_page(job_id, None, 4, 5)] == [5, 6, 7, 8, 9]
    assert [c.index for c in store.chunk_page(job_id, "failed", -1, 10)] == [0, 3, 6, 9]
    assert [c.index for c in store.chunk_page(job_id, "failed", 3, 2)] == [6, 9]
    assert [c.index for c in store.chunk_page(job_id, "running", -1, 10)] == [10, 11]
    assert len(store.chunk_page(job_id, "succeeded", -1, 100)) == 6
    assert store.chunk_page(job_id, None, 11, 5) == []
    assert store.chunk(job_id, 6) is not None and store.chunk(job_id, 15) is None


def test_a_status_read_touches_no_chunk_or_item_row(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = llm_job(store, total=40, size=2)
    for index in range(20):
        store.begin_attempt(job_id, index)
        store.settle_chunk(job_id, index, succeeded=index != 4, items=2, latency_ms=float(index),
                           error="no" if index == 4 else None)  # fmt: skip

    def refused(*_: object) -> None:
        raise AssertionError("a status read reached for chunk or item rows")

    for primitive in ("_chunk_rows", "_item_rows", "_settled_rows"):
        monkeypatch.setattr(store, primitive, refused)
    status = store.status(job_id)
    assert status is not None and (status.chunks_succeeded, status.chunks_failed) == (19, 1)
    assert [store.status_of(job).job_id for job in store.list_jobs(5)] == [job_id]


def test_a_cancelled_jobs_unstarted_chunks_are_counted_cancelled(store: JobStore) -> None:
    job_id = llm_job(store, total=10, size=1)
    for index in range(3):
        store.begin_attempt(job_id, index)
    store.settle_chunk(job_id, 0, succeeded=True, items=1)
    assert store.cancel_job(job_id)
    status = store.status(job_id)
    assert status is not None
    # 1 succeeded, 2 still running (they finish), 7 never started.
    assert (status.chunks_succeeded, status.chunks_cancelled) == (1, 7)
    store.settle_chunk(job_id, 1, succeeded=False, error="cancelled", begun_only=True)
    store.settle_chunk(job_id, 5, succeeded=False, error="cancelled", begun_only=True)  # unbegun
    status = store.status(job_id)
    assert status is not None and (status.chunks_failed, status.chunks_cancelled) == (1, 7)
