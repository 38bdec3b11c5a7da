"""Priority on the cloud path: a high-priority job's chunks travel through their own queue (and
worker share), and retries stay on the queue their message came from."""

from __future__ import annotations

import json
from typing import Any

import cloud
from aws.local.lambda_events import lambda_context, post_start
from aws.local.resources import LocalStack
from aws.local.sqs_event_source import SqsEventSource
from aws.starter.app import lambda_handler as starter
from aws.worker.app import lambda_handler as worker
from tests.aws.conftest import visible_count


def start(spec: dict[str, Any]) -> str:
    response = starter(post_start(spec), lambda_context())
    assert response["statusCode"] == 202, response["body"]
    job_id: str = json.loads(response["body"])["job_id"]
    return job_id


def test_high_priority_chunks_go_through_their_own_queue(stack: LocalStack, sqs: Any) -> None:
    low = start({"total_items": 50, "chunk_size": 10, "item_delay_ms": 0, "priority": "low"})
    high = start({"total_items": 30, "chunk_size": 10, "item_delay_ms": 0, "priority": "high",
                  "flaky_chunks": {"1": 1}})  # fmt: skip
    assert visible_count(sqs, stack.queue_url) == 5
    assert visible_count(sqs, stack.high_queue_url) == 3

    high_source = SqsEventSource(sqs, stack.high_queue_url, worker)
    high_source.poll_once()
    # The flaky chunk's backoff was set on the high queue, where its message lives.
    assert visible_count(sqs, stack.high_queue_url) == 0 and high_source.receive() == []
    high_source.drain()
    done = cloud.job_store().status(high)
    assert done is not None and (done.status, done.retries) == ("succeeded", 1)
    waiting = cloud.job_store().status(low)
    assert waiting is not None and waiting.chunks_succeeded == 0  # its queue is not touched

    SqsEventSource(sqs, stack.queue_url, worker).drain()
    finished = cloud.job_store().status(low)
    assert finished is not None and finished.status == "succeeded"


def test_priority_and_tenant_are_validated_by_name(stack: LocalStack) -> None:
    response = starter(post_start({"priority": "urgent", "tenant": "a b"}), lambda_context())
    assert response["statusCode"] == 400
    fields = {e["field"] for e in json.loads(response["body"])["errors"]}
    assert fields == {"priority", "tenant"}
