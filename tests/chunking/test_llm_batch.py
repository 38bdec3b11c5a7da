"""Batch mode's chunk runs on each job store (SQLite, Postgres, DynamoDB on moto), against the
test server's Batch API through the real openai SDK: a batch is created once whatever the
deliveries, a dead run's batch is found rather than paid for twice, results are recorded once,
and the provider's refusals are handled as it means them. The server's clock is moved on
instead of waiting out its turnaround."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import ValidationError

from chunking import lifecycle
from chunking.api_errors import field_errors
from chunking.prepare import prepare_spec
from chunking.runner import AttemptOutcome, attempt_chunk
from chunking.spec import JobSpec
from chunking.store import JobStore
from tests.llm_server import FakeModelServer
from workloads.llm.batch import request_line
from workloads.llm.input import Item


def write_input(path: Path, count: int, prefix: str = "item") -> str:
    path.write_text("".join(json.dumps({"id": f"i{n}", "prompt": f"{prefix} {n}"}) + "\n"
                            for n in range(count)))  # fmt: skip
    return str(path)


def batch_job(store: JobStore, uri: str, job_id: str, chunk_size: int = 10) -> None:
    spec = JobSpec(workload="llm", input_uri=uri, chunk_size=chunk_size, mode="batch")
    store.create_job(job_id, prepare_spec(spec, "local"), "local")
    assert lifecycle.plan(store, job_id, None, None).started


def attempt(store: JobStore, job_id: str, poll: int = 0, index: int = 0) -> AttemptOutcome:
    run = attempt_chunk(store, job_id, index, last_attempt=False, poll=poll)
    return asyncio.get_event_loop().run_until_complete(run)


def at_once(store: JobStore, job_id: str, poll: int, runs: int = 2) -> list[AttemptOutcome]:
    """Several deliveries of the same run at the same time (a redelivered message)."""

    async def together() -> list[AttemptOutcome]:
        return list(
            await asyncio.gather(
                *(attempt_chunk(store, job_id, 0, last_attempt=False, poll=poll)
                  for _ in range(runs))
            )
        )  # fmt: skip

    return asyncio.get_event_loop().run_until_complete(together())


def new_id(name: str) -> str:
    """Job ids unique in the session: the test server (and its batches) outlive a test."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def batches_of(model: FakeModelServer, job_id: str) -> list[Any]:
    found = [b for b in model.batch.batches.values() if (b.metadata or {}).get("job_id") == job_id]
    return sorted(found, key=lambda b: b.seq)


def run_to_the_end(store: JobStore, model: FakeModelServer, job_id: str) -> AttemptOutcome:
    for poll in range(1, 20):
        model.batch.clock.advance(model.batch.turnaround_s * 2)
        outcome = attempt(store, job_id, poll=poll)
        if outcome.outcome != "waiting":
            return outcome
    raise AssertionError("the batch never ended")


def test_a_redelivered_submit_finds_its_batch_and_results_are_recorded_once(
    store: JobStore, model: FakeModelServer, tmp_path: Path
) -> None:
    once = new_id("once")
    uri = write_input(tmp_path / "in.jsonl", 5)
    batch_job(store, uri, once)
    first = attempt(store, once)
    assert (first.outcome, first.wait_s) == ("waiting", 30.0)  # LLM_BATCH_POLL_MIN_S
    again = attempt(store, once)  # the same delivery again: it finds the batch
    assert again.outcome == "waiting"
    [batch] = batches_of(model, once)
    assert len(batch.requests) == 5
    model.batch.clock.advance(model.batch.turnaround_s * 2)
    # Both deliveries of a poll find it ended and record it: each item once, tokens once.
    outcomes = at_once(store, once, poll=1)
    assert [o.outcome for o in outcomes] == ["succeeded", "succeeded"], outcomes
    assert sorted(o.recorded for o in outcomes) == [False, True]  # settled once
    results = store.item_results(once, 0)
    assert [r.id for r in results] == [f"i{n}" for n in range(5)]
    assert [r.output for r in results] == [f"echo: item {n}" for n in range(5)]
    status = store.status(once)
    assert status is not None
    assert (status.status, status.items_processed) == ("running", 5)  # its output merges next
    assert status.usage is not None and status.usage.prompt_tokens == 5 * 2
    assert status.batch is not None and status.batch.batches == 1
    assert (status.batch.requests_submitted, status.batch.requests_done) == (5, 5)
    assert len(batches_of(model, once)) == 1


def test_deliveries_at_once_create_one_batch(
    store: JobStore, model: FakeModelServer, tmp_path: Path
) -> None:
    race = new_id("race")
    uri = write_input(tmp_path / "in.jsonl", 4)
    batch_job(store, uri, race)
    outcomes = at_once(store, race, poll=0, runs=3)
    assert [o.outcome for o in outcomes] == ["waiting"] * 3
    assert len(batches_of(model, race)) == 1
    assert batches_of(model, race)[0].status != "cancelling"  # none created, then cancelled
    assert run_to_the_end(store, model, race).outcome == "succeeded"


def test_a_run_that_died_after_creating_its_batch_is_found_by_its_claim(
    store: JobStore, model: FakeModelServer, model_server: tuple[FakeModelServer, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    dead = new_id("dead")
    uri = write_input(tmp_path / "in.jsonl", 3)
    batch_job(store, uri, dead)
    # A run claimed the submission, created the batch, and died before recording its id.
    assert store.begin_attempt(dead, 0) == 1
    claimed_at = time.time() - 3600
    assert store.put_chunk_batch(dead, 0, {"claim": "c0ffee", "claimed_at": claimed_at}, 0)
    sdk = openai.OpenAI(base_url=model_server[1], api_key="test")
    items = [Item(index=n, id=f"i{n}", prompt=f"item {n}") for n in range(3)]
    data = "".join(request_line(item, "gpt-4o-mini", None) + "\n" for item in items)
    uploaded = sdk.files.create(file=("in.jsonl", io.BytesIO(data.encode())), purpose="batch")
    metadata = {"job_id": dead, "chunk": "0", "round": "1", "claim": "c0ffee"}
    sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                       completion_window="24h", metadata=metadata)  # fmt: skip

    assert attempt(store, dead).outcome == "waiting"  # its retry: the batch is adopted
    assert len(batches_of(model, dead)) == 1
    assert run_to_the_end(store, model, dead).outcome == "succeeded"
    assert [r.output for r in store.item_results(dead, 0)] == [f"echo: item {n}" for n in range(3)]


def test_an_invalid_batch_fails_the_chunk_with_the_providers_message(
    model: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.deps import get_store

    store, invalid = get_store(), new_id("invalid")
    monkeypatch.setattr(model.batch, "max_requests_per_batch", 2)
    batch_job(store, write_input(tmp_path / "in.jsonl", 5), invalid)
    assert attempt(store, invalid).outcome == "waiting"
    outcome = run_to_the_end(store, model, invalid)
    assert outcome.outcome == "failed"
    assert outcome.error is not None
    assert outcome.error.startswith("permanent: the provider refused batch batch_")
    assert "too_many_tasks" in outcome.error
    assert len(batches_of(model, invalid)) == 1  # not sent again: it would fail the same way
    # Redriven once the cause is fixed (make dlq ARGS=redrive): its items go in a new batch.
    monkeypatch.setattr(model.batch, "max_requests_per_batch", 50_000)
    assert store.reopen_chunk(invalid, 0)
    assert attempt(store, invalid).outcome == "waiting"
    assert run_to_the_end(store, model, invalid).outcome == "succeeded"
    refused, again = batches_of(model, invalid)
    assert (refused.status, again.status, len(again.requests)) == ("failed", "completed", 5)


def test_the_providers_queue_limit_is_waited_out_not_a_failure(
    model: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.deps import get_store

    store, queued = get_store(), new_id("queued")
    with monkeypatch.context() as limited:
        limited.setattr(model.batch, "enqueued_token_limit", 1)
        batch_job(store, write_input(tmp_path / "in.jsonl", 3), queued)
        assert attempt(store, queued).outcome == "waiting"
        model.batch.clock.advance(5)
        refused = attempt(store, queued, poll=1)
    assert (refused.outcome, refused.wait_s) == ("waiting", 600.0)  # LLM_BATCH_POLL_MAX_S
    assert refused.error is not None and "Enqueued token limit reached" in refused.error
    status = store.status(queued)
    assert status is not None and status.batch is not None
    assert (status.batch.requeued, status.chunks_failed) == (1, 0)
    assert attempt(store, queued, poll=2).outcome == "waiting"  # sent again
    assert run_to_the_end(store, model, queued).outcome == "succeeded"
    first, second = batches_of(model, queued)
    assert (first.status, second.status) == ("failed", "completed")


def test_a_batch_job_chunk_is_at_most_one_provider_batch(tmp_path: Path) -> None:
    spec = {"workload": "llm", "input_uri": "in.jsonl", "mode": "batch", "chunk_size": 50_001}
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(spec)
    [error] = field_errors(info.value)
    assert "at most 50000 requests: chunk_size=50001 is too big" in error["message"]
    with pytest.raises(ValidationError):
        JobSpec.model_validate({**spec, "mode": "later"})
    JobSpec.model_validate({**spec, "mode": "realtime"})  # realtime chunks may be bigger


def test_a_batch_not_ended_in_the_give_up_time_is_cancelled_and_fails_its_chunk(
    model: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.deps import get_store
    from tests.support import set_settings

    set_settings(monkeypatch, LLM_BATCH_GIVE_UP_S="0.5")
    store, late = get_store(), new_id("late")
    batch_job(store, write_input(tmp_path / "in.jsonl", 3), late)
    assert attempt(store, late).outcome == "waiting"
    time.sleep(0.6)
    outcome = attempt(store, late, poll=1)
    assert outcome.outcome == "failed"
    assert outcome.error == "permanent: the provider has not ended this chunk's batch in 0.5 s"
    [batch] = batches_of(model, late)
    assert batch.status in ("cancelling", "cancelled")


def test_a_result_file_too_big_for_one_run_is_recorded_over_several(
    model: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each run records what its time allows, writes down how far it got, and the next run
    goes on from there: no line is recorded twice, none is lost."""
    from functions.deps import get_store
    from workloads.llm import batch

    store, big = get_store(), new_id("big")
    batch_job(store, write_input(tmp_path / "in.jsonl", 20), big, chunk_size=20)
    assert attempt(store, big).outcome == "waiting"
    model.batch.clock.advance(model.batch.turnaround_s * 2)
    monkeypatch.setattr(batch, "RECORD_AT_ONCE", 4)
    real_record, written = store.record_items, list[int]()

    def slow_record(job_id: str, results: Any) -> list[bool]:
        time.sleep(0.8)  # a store far away: a write of 4 results takes 0.8 s
        written.extend(result.index for result in results)
        return real_record(job_id, results)

    monkeypatch.setattr(store, "record_items", slow_record)
    runs = []
    for poll in range(1, 6):
        run = attempt_chunk(store, big, 0, last_attempt=False, poll=poll, budget_s=3.0)
        runs.append(asyncio.get_event_loop().run_until_complete(run))
        if runs[-1].outcome != "waiting":
            break
    assert [r.outcome for r in runs] == ["waiting", "succeeded"], runs
    assert runs[0].wait_s == 0 and "12 lines so far" in (runs[0].error or "")
    assert sorted(written) == list(range(20))  # each line once, over two runs
    assert len(store.item_results(big, 0)) == 20


def test_many_results_are_kept_in_few_writes_and_the_first_of_each_still_wins(
    store: JobStore, model: FakeModelServer, tmp_path: Path
) -> None:
    from chunking.status import ItemResult

    many = new_id("many")
    batch_job(store, write_input(tmp_path / "in.jsonl", 250), many, chunk_size=250)
    earlier = [ItemResult(i, 0, f"i{i}", output=f"first {i}") for i in (3, 120, 249)]
    assert store.record_items(many, earlier) == [True, True, True]
    later = [ItemResult(i, 0, f"i{i}", output=f"second {i}") for i in range(250)]
    kept = store.record_items(many, later)  # three groups of up to 100 on DynamoDB
    assert [i for i, new in enumerate(kept) if not new] == [3, 120, 249]
    results = store.item_results(many, 0)
    assert len(results) == 250
    assert {r.index: r.output for r in results if (r.output or "").startswith("first")} == {
        3: "first 3", 120: "first 120", 249: "first 249"
    }  # fmt: skip
