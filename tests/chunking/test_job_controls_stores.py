"""The job controls' store primitives and the runner's use of them, on each job store (SQLite,
Postgres, DynamoDB on moto): a spend cap's holds never take more than is left, a stopped job
begins nothing more and still finishes, a failure threshold stops a simulate job too, and a
retry reopens only what failed."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from chunking import lifecycle
from chunking.lifecycle import RetryStep
from chunking.runner import AttemptOutcome, attempt_chunk
from chunking.spec import JobSpec
from chunking.status import ItemResult
from chunking.store import JobStore
from stores.base import nano_usd


def attempt(store: JobStore, job_id: str, index: int) -> AttemptOutcome:
    run = attempt_chunk(store, job_id, index, last_attempt=True)
    return asyncio.get_event_loop().run_until_complete(run)


def simulate_job(store: JobStore, job_id: str, **spec: object) -> None:
    job_spec = JobSpec.model_validate({"total_items": 40, "chunk_size": 4, "item_delay_ms": 0,
                                       **spec})  # fmt: skip
    store.create_job(job_id, job_spec, "local")
    assert lifecycle.plan(store, job_id, None, None).started


def test_holds_at_once_never_take_more_of_the_cap_than_is_left(store: JobStore) -> None:
    spec = JobSpec.model_validate({"workload": "llm", "input_uri": "in.jsonl", "max_cost_usd": 1.0})
    store.create_job("capped", spec, "local")
    # 40 holds of $0.05 race for a $1 cap: exactly 20 are granted, whatever the interleaving.
    with ThreadPoolExecutor(8) as pool:
        granted = list(pool.map(lambda _: store.reserve_spend("capped", nano_usd(0.05)), range(40)))
    assert sum(granted) == 20
    job = store.get_job("capped")
    assert job is not None and job.tally.headroom_nano == 0
    store.record_spend("capped", held_nano=nano_usd(0.05), spent_nano=nano_usd(0.03))
    job = store.get_job("capped")
    assert job is not None
    assert (job.tally.spent_nano, job.tally.headroom_nano) == (nano_usd(0.03), nano_usd(0.02))
    usage = store.status_of(job).usage
    assert usage is not None
    assert (usage.spent_usd, usage.in_flight_usd) == (0.03, 0.95)


def test_a_simulate_job_stops_at_its_threshold_and_still_finishes(store: JobStore) -> None:
    simulate_job(store, "broken", fail_chunks=list(range(10)), max_failed_items=5)
    first, second = attempt(store, "broken", 0), attempt(store, "broken", 1)
    assert (first.outcome, second.outcome) == ("failed", "failed")
    status = store.status("broken")
    assert status is not None
    assert (status.status, status.stopped_by, status.items_failed) == (
        "running", "max_failed_items", 8,
    )  # fmt: skip
    assert status.error is not None and "max_failed_items=5" in status.error
    # The other chunks' deliveries begin nothing: each is settled "not run", and the last
    # one finishes the job (its finishing unit then runs, as for any job).
    outcomes = [attempt(store, "broken", index) for index in range(2, 10)]
    assert {o.outcome for o in outcomes} == {"failed"} and outcomes[-1].job_finished
    final = store.status("broken")
    assert final is not None
    assert (final.status, final.chunks_failed, final.attempts, final.items_failed) == (
        "failed", 10, 2, 40,
    )  # fmt: skip
    assert all("not run: the job was stopped" in c.error for c in final.failed_chunks[2:])


def test_a_retry_reopens_only_what_failed_and_forgets_only_failed_items(store: JobStore) -> None:
    simulate_job(store, "again", fail_chunks=[1, 3])
    for index in range(10):
        attempt(store, "again", index)
    # An answered and a failed item kept for chunk 5, as an llm chunk would have them.
    store.record_items("again", [ItemResult(20, 5, "a", output="yes"),
                                 ItemResult(21, 5, "b", error="refused")])  # fmt: skip
    assert store.status("again").status == "partial"  # type: ignore[union-attr]
    status = lifecycle.retry(store, "again")
    assert status is not None and (status.status, status.redrives) == ("running", 1)

    step: RetryStep | None = RetryStep("reopen", -1)
    sent: list[int] = []
    while step is not None:
        page = lifecycle.retry_page(store, "again", 1, step)
        sent += page.send
        step = page.next
    assert sent == [1, 3]  # the failed chunks; chunk 5 succeeded with no failed item counted
    assert [r.id for r in store.item_results("again", 5)] == ["a", "b"]
    after = store.status("again")
    assert after is not None
    assert (after.chunks_succeeded, after.chunks_failed, after.status) == (8, 0, "running")
