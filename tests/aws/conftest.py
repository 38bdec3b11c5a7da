"""Fixtures for the cloud path: the stack's resources in moto, created from template.yaml."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

import cloud
from aws.local.resources import LocalStack, create_resources
from chunking.settings import get_settings
from tests.aws.test_emulator import Running, running_emulator
from tests.llm_server import FakeModelServer


@pytest.fixture
def stack(
    aws_env: None, atomic_moto: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalStack]:
    with mock_aws():
        created = create_resources(boto3.client("dynamodb"), boto3.client("sqs"))
        for name, value in created.environment().items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        cloud.reset()
        yield created
        cloud.reset()


@pytest.fixture
def sqs(stack: LocalStack) -> Any:
    return boto3.client("sqs")


def visible_count(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def queue_bodies(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message now visible in a queue (received, then made visible again)."""
    found: list[dict[str, Any]] = []
    receipts = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            break
        for m in batch:
            try:
                body: Any = json.loads(m["Body"])
            except json.JSONDecodeError:
                body = m["Body"]
            found.append({"body": body, "attributes": m.get("MessageAttributes", {})})
            receipts.append(m["ReceiptHandle"])
    for receipt in receipts:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=receipt, VisibilityTimeout=0)
    return found


@pytest.fixture(scope="module")
def emulator(model_server: tuple[FakeModelServer, str]) -> Iterator[Running]:
    """The offline stack, its model the test server, its batch polls 1-2 s apart (a module
    that needs another defines its own). The queue's visibility timeout is over the worker's
    timeout, as AWS advises: a run that waits long on the model's shared budget (while it is
    still probing for the test model's rate) is not delivered again while it runs, which would
    spend the chunk's receives and dead-letter it unsettled. A failed attempt's retry is timed
    by the worker itself (it sets the message's visibility), not by this."""
    args = ("--worker-timeout", "20", "--visibility-timeout", "30",
            "--parameter", f"OpenAiBaseUrl={model_server[1]}",
            "--parameter", "LlmBatchPollMinS=1", "--parameter", "LlmBatchPollMaxS=2")  # fmt: skip
    with running_emulator(*args) as running:
        yield running
