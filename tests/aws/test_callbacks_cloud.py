"""Completion callbacks on the cloud path: the worker enqueues a callback message when a job
finishes and delivers it like a chunk — retried with backoff, dead-lettered when refused."""

from __future__ import annotations

import json
from typing import Any

from aws.local.lambda_events import lambda_context, post_start
from aws.local.resources import LocalStack
from aws.local.sqs_event_source import SqsEventSource
from aws.starter.app import lambda_handler as starter
from aws.worker.app import lambda_handler as worker
from chunking.callbacks import verify
from tests.aws.conftest import queue_bodies, visible_count
from tests.callback_receiver import CallbackReceiver
from tests.conftest import CALLBACK_SECRET


def start(spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = starter(post_start(spec), lambda_context())
    return response["statusCode"], json.loads(response["body"])


def run_job_with_callback(
    stack: LocalStack,
    sqs: Any,
    receiver: tuple[CallbackReceiver, str],
    answers: list[int],
    chunks: int,
) -> tuple[CallbackReceiver, dict[str, Any]]:
    """A job of `chunks` chunks with the receiver as its callback_url, run to the end."""
    hook, url = receiver
    hook.answers = answers
    spec = {"total_items": 10 * chunks, "chunk_size": 10, "item_delay_ms": 0, "callback_url": url}
    code, body = start(spec)
    assert code == 202, body
    SqsEventSource(sqs, stack.queue_url, worker).drain()
    return hook, body


def test_the_finished_job_calls_back_after_the_receiver_recovers(
    stack: LocalStack, sqs: Any, receiver: tuple[CallbackReceiver, str]
) -> None:
    # The chunks, then the callback: 502, retried after its backoff, then 200.
    hook, body = run_job_with_callback(stack, sqs, receiver, answers=[502], chunks=2)
    assert len(hook.deliveries) == 2
    first, delivery = hook.deliveries
    assert first.headers["x-callback-id"] == delivery.headers["x-callback-id"]
    assert verify(delivery.body, delivery.headers["x-signature"], CALLBACK_SECRET)
    summary = json.loads(delivery.body)
    assert (summary["job_id"], summary["path"], summary["status"]) == (
        body["job_id"], "cloud", "succeeded",
    )  # fmt: skip
    assert visible_count(sqs, stack.queue_url) == 0 and queue_bodies(sqs, stack.dlq_url) == []


def test_a_refusing_receiver_sends_the_callback_to_the_dlq_at_once(
    stack: LocalStack, sqs: Any, receiver: tuple[CallbackReceiver, str]
) -> None:
    hook, body = run_job_with_callback(stack, sqs, receiver, answers=[404], chunks=1)
    [dead] = queue_bodies(sqs, stack.dlq_url)
    assert dead["body"] == {"kind": "callback", "job_id": body["job_id"]}
    assert "404" in dead["attributes"]["error"]["StringValue"]
    assert len(hook.deliveries) == 1


def test_the_starter_refuses_a_private_target(stack: LocalStack, monkeypatch: Any) -> None:
    from chunking.settings import get_settings

    monkeypatch.setenv("CALLBACK_SECRET", CALLBACK_SECRET)
    get_settings.cache_clear()
    code, body = start({"callback_url": "http://10.0.0.8/hook"})
    assert code == 400 and body["errors"][0]["field"] == "callback_url"
