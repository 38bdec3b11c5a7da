"""Cancelling a job on the cloud path: POST /jobs/{job_id}/cancel on the starter, and workers
dropping the chunks of a cancelled job that had not started (deleted, not retried, not DLQ'd)."""

from __future__ import annotations

import json
from typing import Any

import cloud
from aws.local.lambda_events import api_event, lambda_context, post_start
from aws.local.resources import LocalStack
from aws.local.sqs_event_source import SqsEventSource
from aws.starter.app import lambda_handler as starter
from aws.worker.app import lambda_handler as worker
from tests.aws.conftest import queue_bodies, visible_count


def cancel(job_id: str) -> tuple[int, dict[str, Any]]:
    event = api_event("POST", f"/jobs/{job_id}/cancel", resource="/jobs/{job_id}/cancel",
                      path_parameters={"job_id": job_id})  # fmt: skip
    response = starter(event, lambda_context())
    return response["statusCode"], json.loads(response["body"])


def test_cancel_drops_the_chunks_not_started_and_the_accounting_adds_up(
    stack: LocalStack, sqs: Any
) -> None:
    response = starter(post_start({"total_items": 300, "chunk_size": 10, "item_delay_ms": 0}),
                       lambda_context())  # fmt: skip
    job_id = json.loads(response["body"])["job_id"]
    source = SqsEventSource(sqs, stack.queue_url, worker)
    source.poll_once()  # one batch of 10 chunks runs
    code, body = cancel(job_id)
    assert code == 200, body
    assert (body["status"], body["chunks_succeeded"], body["chunks_cancelled"]) == (
        "cancelled", 10, 20,
    )  # fmt: skip
    source.drain()  # the other 20 messages are received, seen cancelled, and deleted
    assert visible_count(sqs, stack.queue_url) == 0 and queue_bodies(sqs, stack.dlq_url) == []
    final = cloud.job_store().status(job_id)
    assert final is not None
    assert (final.status, final.chunks_succeeded, final.chunks_cancelled) == ("cancelled", 10, 20)
    assert final.attempts == 10  # none of the cancelled chunks ran
    assert cancel(job_id)[0] == 200  # idempotent


def test_cancel_of_an_unknown_or_ended_job(stack: LocalStack, sqs: Any) -> None:
    assert cancel("ghost")[0] == 404
    response = starter(post_start({"total_items": 10, "chunk_size": 10, "item_delay_ms": 0}),
                       lambda_context())  # fmt: skip
    job_id = json.loads(response["body"])["job_id"]
    SqsEventSource(sqs, stack.queue_url, worker).drain()
    code, body = cancel(job_id)
    assert code == 409 and "succeeded" in body["message"]
