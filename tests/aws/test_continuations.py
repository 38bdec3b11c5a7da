"""Running out of budget is a continuation, not a failure, on both paths: a chunk that stops to
respect its budget keeps its answers and goes on in a fresh run (event or message) without
spending a retry; an input too big to index in one budget is indexed over several units."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from inngest.experimental import mocked

from aws.local.lambda_events import post_start
from aws.local.resources import LocalStack
from aws.local.sqs_event_source import SqsEventSource
from aws.starter.app import lambda_handler as starter
from aws.worker.app import lambda_handler as worker
from chunking.settings import get_settings
from chunking.store import JobStore
from functions.events import PROCESS_CHUNK, START_JOB
from functions.process_chunk import process_chunk
from functions.start_job import start_job
from tests.aws.conftest import queue_bodies
from tests.llm_server import FakeModelServer
from tests.support import FakeInngestApi, replay, run_finishes, spy_run_errors

SLOW_ITEMS = 12  # at ~0.2 s each, more than one budget holds


def slow_lines() -> list[dict[str, Any]]:
    return [{"id": f"s{i}", "prompt": f"[slow] item {i}"} for i in range(SLOW_ITEMS)]


def assert_continued_not_retried(store: JobStore, job_id: str, model: FakeModelServer) -> None:
    status = store.status(job_id)
    assert status is not None
    assert (status.status, status.items_processed, status.attempts, status.retries) == (
        "succeeded", SLOW_ITEMS, 1, 0,
    )  # fmt: skip
    chunk = store.chunk(job_id, 0)
    assert chunk is not None and chunk.attempts == 1 and chunk.continuations >= 1
    assert all(model.calls[f"[slow] item {i}"] == 1 for i in range(SLOW_ITEMS))  # none twice


def test_a_local_chunk_out_of_budget_continues_in_a_fresh_run(
    api: httpx.Client,
    fake_inngest: FakeInngestApi,
    model: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from functions.deps import get_store

    monkeypatch.setenv("INNGEST_STEP_BUDGET_S", "2.5")
    monkeypatch.setenv("LLM_ITEM_CONCURRENCY", "1")  # one at a time: more than a budget holds
    get_settings.cache_clear()
    path = tmp_path / "slow.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in slow_lines()))
    response = api.post(
        "/jobs", json={"workload": "llm", "input_uri": str(path), "chunk_size": SLOW_ITEMS}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert replay(start_job, fake_inngest.named(START_JOB)[0]).status is mocked.Status.COMPLETED
    errors = spy_run_errors(process_chunk, monkeypatch)
    runs = 0
    while pending := fake_inngest.named(PROCESS_CHUNK)[runs:]:
        for event in pending:
            result = replay(process_chunk, event)
            assert result.status is mocked.Status.COMPLETED, result.error
            runs += 1
        assert runs < 20
    assert errors == []  # no run failed: none was retried
    events = fake_inngest.named(PROCESS_CHUNK)
    assert len(events) >= 2 and events[1]["id"] == f"{job_id}-chunk-0-continued-1"
    assert events[1]["data"]["continuation"] == 1
    run_finishes(fake_inngest)
    assert_continued_not_retried(get_store(), job_id, model)


def test_a_cloud_chunk_out_of_budget_continues_in_a_fresh_message(
    model: FakeModelServer, stack: LocalStack, sqs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloud

    monkeypatch.setenv("LLM_ITEM_CONCURRENCY", "1")  # one at a time: more than a budget holds
    get_settings.cache_clear()

    body = "".join(json.dumps(line) + "\n" for line in slow_lines())
    boto3.client("s3").put_object(Bucket=stack.bucket_name, Key="in/slow.jsonl", Body=body)
    spec = {"workload": "llm", "input_uri": f"s3://{stack.bucket_name}/in/slow.jsonl",
            "chunk_size": SLOW_ITEMS}  # fmt: skip
    response = starter(post_start(spec), _context())
    assert response["statusCode"] == 202, response["body"]
    job_id = json.loads(response["body"])["job_id"]
    # A 3.5 s Lambda: each invocation leaves the chunk about 2.5 s.
    source = SqsEventSource(sqs, stack.queue_url, worker, timeout_s=3.5)
    source.poll_once()  # the plan message
    _, failed = source.poll_once()  # the chunk's first run: out of budget, continued
    assert failed == set()  # not a failure: nothing for SQS to redeliver
    [more] = queue_bodies(sqs, stack.queue_url)
    assert more["body"] == {"kind": "chunk", "job_id": job_id, "chunk_index": 0,
                            "continuation": 1, "poll": 0}  # fmt: skip
    assert more["attributes"] == {}  # a fresh message, not a redelivery with a reason
    source.drain()
    assert_continued_not_retried(cloud.job_store(), job_id, model)


def _context() -> Any:
    from aws.local.lambda_events import lambda_context

    return lambda_context()


def big_input_lines(count: int) -> str:
    return "".join(
        json.dumps({"id": i, "prompt": f"p{i} " + "x" * 30}) + "\n" for i in range(count)
    )


def test_a_local_input_too_big_for_one_budget_is_indexed_over_several_steps(
    api: httpx.Client,
    fake_inngest: FakeInngestApi,
    model: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text(big_input_lines(3_500))
    response = api.post("/jobs", json={"workload": "llm", "input_uri": str(path),
                                       "chunk_size": 500})  # fmt: skip
    assert response.status_code == 202, response.text
    monkeypatch.setenv("INNGEST_STEP_BUDGET_S", "0.000001")  # every plan step is out of time
    get_settings.cache_clear()
    result = replay(start_job, fake_inngest.named(START_JOB)[0])
    assert result.status is mocked.Status.COMPLETED, result.error
    job = api.get(f"/jobs/{response.json()['job_id']}").json()
    assert (job["total_items"], job["total_chunks"], job["status"]) == (3_500, 7, "running")
    assert len(fake_inngest.named(PROCESS_CHUNK)) == 7


def test_a_cloud_input_too_big_for_one_budget_is_indexed_over_several_messages(
    model: FakeModelServer, stack: LocalStack, sqs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aws.worker.app
    import cloud

    boto3.client("s3").put_object(
        Bucket=stack.bucket_name, Key="in/big.jsonl", Body=big_input_lines(3_500)
    )
    spec = {"workload": "llm", "input_uri": f"s3://{stack.bucket_name}/in/big.jsonl",
            "chunk_size": 500}  # fmt: skip
    response = starter(post_start(spec), _context())
    job_id = json.loads(response["body"])["job_id"]
    # Invocations with no time to spare: each plan message indexes what one run must (at
    # least a thousand lines), then goes on in the next.
    monkeypatch.setattr(aws.worker.app, "deadline_s", lambda _context: 0.0)
    source = SqsEventSource(sqs, stack.queue_url, worker)
    plans = 0
    while (kinds := [m["body"]["kind"] for m in queue_bodies(sqs, stack.queue_url)]) == ["plan"]:
        source.poll_once()
        plans += 1
        assert plans < 20
    assert plans >= 2 and kinds == ["chunk"] * 7
    job = cloud.job_store().get_job(job_id)
    assert job is not None and (job.total_items, job.total_chunks) == (3_500, 7)
