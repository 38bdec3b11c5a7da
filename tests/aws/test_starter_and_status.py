"""Starter (POST /start) and status (GET /jobs/{job_id}) handlers against moto."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from aws.local.lambda_events import DOMAIN, lambda_context, post_start
from aws.local.resources import LocalStack
from aws.starter.app import lambda_handler as starter
from aws.status.app import lambda_handler as status_handler
from chunking.status import JobStatus
from tests.aws.conftest import queue_bodies, visible_count
from tests.aws.events import get_status


def start(body: str | dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    response = starter(post_start(body), lambda_context())
    return response["statusCode"], json.loads(response["body"])


def status(job_id: str) -> tuple[int, dict[str, Any]]:
    response = status_handler(get_status(job_id), lambda_context())
    return response["statusCode"], json.loads(response["body"])


def test_start_records_the_job_and_enqueues_its_chunks(stack: LocalStack, sqs: Any) -> None:
    code, body = start({"total_items": 500, "chunk_size": 50})
    assert code == 202
    job_id = body["job_id"]
    assert body == {
        "message": "job accepted", "job_id": job_id,
        "status_url": f"https://{DOMAIN}/Prod/jobs/{job_id}",
        "total_items": 500, "chunk_size": 50, "chunks_created": 10,
    }  # fmt: skip
    messages = queue_bodies(sqs, stack.queue_url)
    assert sorted(m["body"]["chunk_index"] for m in messages) == list(range(10))
    assert {m["body"]["job_id"] for m in messages} == {job_id}
    code, job = status(job_id)
    assert code == 200
    assert (job["status"], job["path"], job["total_chunks"]) == ("running", "cloud", 10)


def test_status_has_exactly_the_local_paths_keys(stack: LocalStack) -> None:
    _, body = start({"total_items": 10, "chunk_size": 5})
    _, job = status(body["job_id"])
    assert set(job) == set(JobStatus.model_fields)


def test_start_without_body_uses_the_stack_parameters(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chunking.settings import get_settings

    monkeypatch.setenv("TOTAL_ITEMS", "120")
    monkeypatch.setenv("CHUNK_SIZE", "40")
    get_settings.cache_clear()
    code, body = start(None)
    assert code == 202
    assert (body["total_items"], body["chunk_size"], body["chunks_created"]) == (120, 40, 3)


def test_large_job_is_enqueued_as_one_range_message(stack: LocalStack, sqs: Any) -> None:
    code, body = start({"total_items": 10_000_000, "chunk_size": 100})
    assert code == 202 and body["chunks_created"] == 100_000
    [message] = queue_bodies(sqs, stack.queue_url)
    assert message["body"] == {"kind": "range", "job_id": body["job_id"], "first": 0,
                               "stop": 100_000}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{not json", None),
        ("[1, 2, 3]", None),
        ('{"total_items": -1}', "total_items"),
        ('{"total_items": "many"}', "total_items"),
        ('{"chunk_size": 0}', "chunk_size"),
        ('{"item_delay_ms": -5}', "item_delay_ms"),
        ('{"total_items": 10000000, "chunk_size": 1}', "chunk_size"),
        ('{"job_id": "bad id!"}', "job_id"),
        ('{"flaky_chunks": {"999": 1}}', "flaky_chunks"),
        ('{"chunks": 3}', "chunks"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_nothing_is_enqueued_or_recorded(
    stack: LocalStack, sqs: Any, body: str, field: str | None
) -> None:
    code, answer = start(body)
    assert code == 400, answer
    if field is None:
        assert "JSON" in answer["message"]
    else:
        assert field in [e["field"] for e in answer["errors"]]
        assert f"{field}:" in answer["message"]
    assert visible_count(sqs, stack.queue_url) == 0
    assert boto3.client("dynamodb").scan(TableName=stack.table_name)["Count"] == 0


def test_same_job_id_is_one_job(stack: LocalStack, sqs: Any) -> None:
    spec = {"job_id": "cloud-once", "total_items": 30, "chunk_size": 10}
    assert start(spec)[0] == 202
    code, again = start(spec)
    assert code == 200 and again["job_id"] == "cloud-once"
    assert visible_count(sqs, stack.queue_url) == 3
    code, conflict = start({**spec, "total_items": 31})
    assert code == 409 and "cloud-once" in conflict["message"]


def test_enqueue_failure_is_503_and_the_job_says_so(stack: LocalStack, sqs: Any) -> None:
    sqs.delete_queue(QueueUrl=stack.queue_url)
    spec = {"job_id": "no-queue", "total_items": 30, "chunk_size": 10}
    code, body = start(spec)
    assert code == 503 and "could not enqueue chunks" in body["message"]
    _, job = status("no-queue")
    assert job["status"] == "failed" and "could not enqueue chunks" in job["error"]

    # Once the queue is back, the same request starts the job.
    sqs.create_queue(QueueName=stack.queue_url.rsplit("/", 1)[1])
    code, body = start(spec)
    assert code == 202
    assert status("no-queue")[1]["status"] == "running"
    assert visible_count(sqs, stack.queue_url) == 3


def test_unknown_job_is_404(stack: LocalStack) -> None:
    code, body = status("nope")
    assert code == 404 and "nope" in body["message"]


def test_the_emulated_table_expires_claims_as_the_deployed_one(stack: LocalStack) -> None:
    """The resources made from the template carry its TTL, as CloudFormation applies it."""
    from stores.dynamodb import CLAIM_TTL_ATTRIBUTE

    ttl = boto3.client("dynamodb").describe_time_to_live(TableName=stack.table_name)
    described = ttl["TimeToLiveDescription"]
    assert described["TimeToLiveStatus"] == "ENABLED"
    assert described["AttributeName"] == CLAIM_TTL_ATTRIBUTE
