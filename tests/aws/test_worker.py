"""Worker handler against moto, fed by a stand-in for Lambda's SQS event source."""

from __future__ import annotations

import json
from typing import Any

import pytest

import cloud
from aws.local.lambda_events import lambda_context, post_start
from aws.local.resources import LocalStack
from aws.local.sqs_event_source import SqsEventSource
from aws.starter.app import lambda_handler as starter
from aws.worker.app import lambda_handler as worker
from cloud.messages import ChunkMessage
from tests.aws.conftest import queue_bodies
from tests.support import set_settings


def start(spec: dict[str, Any]) -> str:
    response = starter(post_start(spec), lambda_context())
    assert response["statusCode"] == 202, response["body"]
    job_id: str = json.loads(response["body"])["job_id"]
    return job_id


def status(job_id: str) -> dict[str, Any]:
    found = cloud.job_store().status(job_id)
    assert found is not None
    result: dict[str, Any] = found.model_dump(mode="json")
    return result


@pytest.fixture
def source(stack: LocalStack, sqs: Any) -> SqsEventSource:
    return SqsEventSource(sqs, stack.queue_url, worker)


def test_job_runs_to_success(source: SqsEventSource) -> None:
    job_id = start({"total_items": 500, "chunk_size": 50, "item_delay_ms": 0})
    source.drain()
    final = status(job_id)
    assert (final["status"], final["chunks_succeeded"], final["items_processed"]) == (
        "succeeded", 10, 500,
    )  # fmt: skip
    assert (final["attempts"], final["retries"]) == (10, 0)
    assert source.invocations == 2  # one batch of 10 chunks, then the job's finish message


def test_transient_failure_is_retried_after_a_backoff(source: SqsEventSource) -> None:
    job_id = start(
        {"total_items": 20, "chunk_size": 10, "item_delay_ms": 0, "flaky_chunks": {"1": 1}}
    )
    messages, failed = source.poll_once()
    [flaky] = [m for m in messages if json.loads(m["Body"])["chunk_index"] == 1]
    assert failed == {flaky["MessageId"]}
    # Its visibility was set to the backoff: not receivable now.
    assert source.receive() == []
    source.fast_forward()
    messages, failed = source.poll_once()
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in messages] == ["2"]
    assert failed == set()
    final = status(job_id)
    assert (final["status"], final["attempts"], final["retries"]) == ("succeeded", 3, 1)


def test_backoff_grows_and_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    from chunking.errors import backoff_s
    from chunking.settings import get_settings

    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert backoff_s(20) == 300
    monkeypatch.setenv("RETRY_BACKOFF_BASE_S", "0.5")
    monkeypatch.setenv("RETRY_BACKOFF_FACTOR", "3")
    monkeypatch.setenv("RETRY_BACKOFF_MAX_S", "10")
    get_settings.cache_clear()
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 10]


@pytest.mark.parametrize(("window", "hidden"), [("0", [3, 9]), ("1", [2, 8])])
def test_a_transient_failure_waits_the_shared_backoff(
    source: SqsEventSource, monkeypatch: pytest.MonkeyPatch, window: str, hidden: list[float]
) -> None:
    """Hidden for the backoff less the event source's batching window, which it adds back:
    the wait between runs is the local path's (tests/dashboard/test_retry_waits.py)."""
    import cloud
    from chunking.settings import get_settings

    # The local path's schedule, from the same settings (tests/functions asserts it there).
    monkeypatch.setenv("RETRY_BACKOFF_BASE_S", "3")
    monkeypatch.setenv("RETRY_BACKOFF_FACTOR", "3")
    monkeypatch.setenv("BATCHING_WINDOW_S", window)
    get_settings.cache_clear()
    delays: list[float] = []
    real_delay = cloud.chunk_queue().delay

    def spy_delay(receipt_handle: str, seconds: float) -> None:
        delays.append(seconds)
        real_delay(receipt_handle, seconds)

    monkeypatch.setattr(cloud.chunk_queue(), "delay", spy_delay)
    job_id = start({"total_items": 10, "chunk_size": 10, "item_delay_ms": 0,
                    "flaky_chunks": {"0": 2}})  # fmt: skip
    source.drain()
    assert delays == hidden
    final = status(job_id)
    assert (final["status"], final["retries"]) == ("succeeded", 2)


def test_rate_limit_waits_the_time_asked_for(
    source: SqsEventSource, sqs: Any, stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chunking.errors import RateLimitedError
    from workloads.simulate import Simulate

    delays: list[float] = []
    real_delay = cloud.chunk_queue().delay

    async def rate_limited(*args: Any) -> Any:
        raise RateLimitedError("429 Too Many Requests", retry_after_s=42)

    def spy_delay(receipt: str, seconds: float) -> None:
        delays.append(seconds)
        real_delay(receipt, seconds)

    monkeypatch.setattr(Simulate, "run_chunk", rate_limited)
    monkeypatch.setattr(cloud.chunk_queue(), "delay", spy_delay)
    set_settings(monkeypatch, BATCHING_WINDOW_S="1")  # never taken off what the server asked
    job_id = start({"total_items": 10, "chunk_size": 10})
    messages, failed = source.poll_once()
    assert failed == {messages[0]["MessageId"]}
    assert delays == [42]
    assert source.receive() == []  # invisible for the 42 s the server asked for
    assert status(job_id)["status"] == "running"


def test_permanent_failure_goes_to_the_dlq_at_once(
    source: SqsEventSource, sqs: Any, stack: LocalStack
) -> None:
    job_id = start({"total_items": 30, "chunk_size": 10, "item_delay_ms": 0, "fail_chunks": [2]})
    _messages, failed = source.poll_once()
    assert failed == set()  # nothing for SQS to retry
    # What is left: the job's finish message (its chunks have all settled).
    assert [m["body"]["kind"] for m in queue_bodies(sqs, stack.queue_url)] == ["finish"]
    [dead] = queue_bodies(sqs, stack.dlq_url)
    assert dead["body"] == {
        "kind": "chunk",
        "job_id": job_id,
        "chunk_index": 2,
        "continuation": 0,
        "poll": 0,
    }
    assert "fail_chunks" in dead["attributes"]["error"]["StringValue"]
    assert dead["attributes"]["receive_count"]["StringValue"] == "1"
    final = status(job_id)
    assert (final["status"], final["chunks_succeeded"], final["chunks_failed"]) == ("partial", 2, 1)
    assert final["failed_chunks"][0]["attempts"] == 1 and final["retries"] == 0


def test_chunk_failing_every_receive_is_dead_lettered_by_the_redrive_policy(
    source: SqsEventSource, sqs: Any, stack: LocalStack
) -> None:
    job_id = start({"total_items": 20, "chunk_size": 10, "item_delay_ms": 0,
                    "flaky_chunks": {"0": 50}})  # fmt: skip
    source.drain()
    final = status(job_id)
    assert final["status"] == "partial"
    [failed] = final["failed_chunks"]
    assert failed["attempts"] == stack.max_receive_count == 3
    assert failed["error"].startswith("gave up after 3 attempts")
    [dead] = queue_bodies(sqs, stack.dlq_url)
    assert dead["body"]["chunk_index"] == 0
    assert final["chunks_succeeded"] + final["chunks_failed"] == final["total_chunks"]


def test_redelivery_of_a_settled_chunk_is_skipped(source: SqsEventSource) -> None:
    job_id = start({"total_items": 20, "chunk_size": 10, "item_delay_ms": 0})
    source.drain()
    cloud.chunk_queue().send([ChunkMessage(job_id=job_id, chunk_index=1)])  # a redelivery
    source.drain()
    final = status(job_id)
    assert (final["chunks_succeeded"], final["items_processed"], final["attempts"]) == (2, 20, 2)
    assert final["status"] == "succeeded"


def test_duplicates_in_flight_together_count_once(source: SqsEventSource) -> None:
    job_id = start({"total_items": 20, "chunk_size": 10, "item_delay_ms": 1})
    cloud.chunk_queue().send([ChunkMessage(job_id=job_id, chunk_index=1)] * 3)
    source.drain()
    final = status(job_id)
    # Copies that run at the same moment may each do the work (attempts says so), but the
    # chunk's outcome is recorded once.
    assert (final["chunks_succeeded"], final["chunks_failed"], final["items_processed"]) == (
        2, 0, 20,
    )  # fmt: skip
    assert final["status"] == "succeeded" and final["attempts"] >= 2


def test_range_messages_expand_into_every_chunk_once(
    source: SqsEventSource, sqs: Any, stack: LocalStack
) -> None:
    job_id = start({"total_items": 1_010, "chunk_size": 10, "item_delay_ms": 0})
    [range_message] = queue_bodies(sqs, stack.queue_url)
    assert range_message["body"]["kind"] == "range"
    source.drain()
    final = status(job_id)
    assert (final["status"], final["chunks_succeeded"], final["items_processed"]) == (
        "succeeded", 101, 1_010,
    )  # fmt: skip
    assert final["attempts"] == 101  # every chunk enqueued exactly once


def test_message_that_is_not_ours_is_dead_lettered(
    source: SqsEventSource, sqs: Any, stack: LocalStack
) -> None:
    sqs.send_message(QueueUrl=stack.queue_url, MessageBody="hello")
    _, failed = source.poll_once()
    assert failed == set()
    [dead] = queue_bodies(sqs, stack.dlq_url)
    assert dead["body"] == "hello"
    assert "not a chunk or range message" in dead["attributes"]["error"]["StringValue"]


def test_every_kind_of_message_has_its_handler() -> None:
    """The worker dispatches by one table: a kind of message it lacks would fail every
    delivery of that kind (a KeyError, retried until the DLQ) rather than at review."""
    from typing import get_args

    from aws.worker.app import HANDLERS
    from cloud.messages import QueueMessage

    assert set(HANDLERS) == set(get_args(QueueMessage))


def test_chunk_of_unknown_job_is_dead_lettered(
    source: SqsEventSource, sqs: Any, stack: LocalStack
) -> None:
    cloud.chunk_queue().send([ChunkMessage(job_id="ghost", chunk_index=0)])
    _, failed = source.poll_once()
    assert failed == set()
    [dead] = queue_bodies(sqs, stack.dlq_url)
    assert "'ghost': no such job" in dead["attributes"]["error"]["StringValue"]


def test_chunk_running_past_the_invocation_budget_is_stopped_retried_then_recorded(
    sqs: Any, stack: LocalStack
) -> None:
    # 1 s invocations: a 20 x 100 ms chunk never fits, every attempt is stopped in time.
    source = SqsEventSource(sqs, stack.queue_url, worker, timeout_s=1)
    job_id = start({"total_items": 20, "chunk_size": 20, "item_delay_ms": 100})
    source.drain()
    final = status(job_id)
    assert final["status"] == "failed"
    [failed] = final["failed_chunks"]
    assert failed["attempts"] == 3
    assert "gave up after 3 attempts: TimeoutError: ran past its" in failed["error"]
    assert len(queue_bodies(sqs, stack.dlq_url)) == 1
