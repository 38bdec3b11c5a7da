"""The llm workload on the cloud path: starter, worker and status handlers against moto (S3, SQS,
DynamoDB) and the OpenAI-compatible test server, through the real openai SDK."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

import cloud
from aws.local.lambda_events import lambda_context, post_start
from aws.local.resources import LocalStack
from aws.local.sqs_event_source import SqsEventSource
from aws.starter.app import lambda_handler as starter
from aws.status.app import lambda_handler as status_handler
from aws.worker.app import lambda_handler as worker
from tests.aws.conftest import queue_bodies
from tests.aws.events import get_status
from tests.llm_server import FakeModelServer


@pytest.fixture
def source(stack: LocalStack, sqs: Any) -> SqsEventSource:
    return SqsEventSource(sqs, stack.queue_url, worker)


def upload(stack: LocalStack, key: str, lines: list[dict[str, Any]]) -> str:
    body = "".join(json.dumps(line) + "\n" for line in lines)
    boto3.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body.encode())
    return f"s3://{stack.bucket_name}/{key}"


def post(spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = starter(post_start(spec), lambda_context())
    return response["statusCode"], json.loads(response["body"])


def status(job_id: str) -> dict[str, Any]:
    response = status_handler(get_status(job_id), lambda_context())
    assert response["statusCode"] == 200, response["body"]
    result: dict[str, Any] = json.loads(response["body"])
    return result


def test_starter_counts_the_s3_input_and_refuses_what_cannot_run(
    model: FakeModelServer, stack: LocalStack, sqs: Any
) -> None:
    uri = upload(stack, "inputs/ok.jsonl", [{"id": i, "prompt": f"p{i}"} for i in range(25)])
    code, body = post({"workload": "llm", "input_uri": uri, "chunk_size": 10})
    body_of_ok = body
    # Counted by the job's first worker message, not in the request.
    assert (code, body["total_items"], body["chunks_created"]) == (202, None, None)

    bad = upload(stack, "inputs/bad.jsonl", [{"id": 1, "prompt": "a"}, {"prompt": "no id"}])
    refused = [
        ({"workload": "llm", "input_uri": bad}, "input_uri", "line 2: needs an id"),
        ({"workload": "llm", "input_uri": "examples/prompts.jsonl"}, "input_uri", "S3"),
        ({"workload": "llm", "input_uri": f"s3://{stack.bucket_name}/nope"}, "input_uri",
         "no such object"),
    ]  # fmt: skip
    for spec, field, words in refused:
        code, body = post(spec)
        assert code == 400, body
        [error] = body["errors"]
        assert error["field"] == field and words in error["message"], error
    [plan] = queue_bodies(sqs, stack.queue_url)  # only the good job's first message
    assert plan["body"] == {"kind": "plan", "job_id": body_of_ok["job_id"], "resume": None}


def test_an_llm_job_runs_with_retries_only_where_needed_and_merges_its_output(
    model: FakeModelServer, stack: LocalStack, sqs: Any, source: SqsEventSource
) -> None:
    lines: list[dict[str, Any]] = [{"id": f"r{i}", "text": f"review {i}"} for i in range(6)]
    lines[1] = {"id": "r1", "prompt": "[400-context] a very long review"}
    lines[4] = {"id": "r4", "prompt": "[429x1] review four"}
    uri = upload(stack, "inputs/reviews.jsonl", lines)
    code, body = post({"workload": "llm", "input_uri": uri, "chunk_size": 2,
                       "prompt_template": "Summarise: {text}"})  # fmt: skip
    assert code == 202, body
    job_id = body["job_id"]

    source.poll_once()  # the plan message: the input indexed, the chunks enqueued
    assert status(job_id)["total_chunks"] == 3
    # The 429 fails nothing: its item waits the server's Retry-After in the same run.
    _messages, failed = source.poll_once()
    assert failed == set()
    source.drain()

    final = status(job_id)
    assert (final["status"], final["chunks_succeeded"], final["chunks_failed"]) == ("partial", 3, 0)
    assert (final["items_processed"], final["attempts"], final["retries"]) == (6, 3, 0)
    usage = final["usage"]
    assert usage["rate_limited"] == 1 and usage["rate_wait_s"] >= 1
    # "Summarise: review N": 3 prompt words -> 3 prompt and 4 completion tokens (test server).
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (4 * 3 + 3, 4 * 4 + 4)
    assert usage["items_failed"] == 1 and usage["est_cost_usd"] > 0
    by_chunk = cloud.job_store().chunk_page(job_id, None, -1, 10)
    assert [(c.index, c.items_failed) for c in by_chunk] == [(0, 1), (1, 0), (2, 0)]
    assert final["output_uri"] == f"s3://{stack.bucket_name}/outputs/{job_id}/output.jsonl"

    merged = boto3.client("s3").get_object(Bucket=stack.bucket_name,
                                           Key=f"outputs/{job_id}/output.jsonl")  # fmt: skip
    rows = [json.loads(line) for line in merged["Body"].read().decode().splitlines()]
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(6)]
    assert rows[1]["output"] is None and "context_length_exceeded" in rows[1]["error"]
    assert rows[5]["output"] == "echo: Summarise: review 5"
    assert model.calls["Summarise: review 5"] == 1
    assert model.calls["[429x1] review four"] == 2
    assert model.calls["[400-context] a very long review"] == 1  # never retried


def test_a_rejected_key_fails_the_chunk_and_dead_letters_it_at_once(
    model: FakeModelServer, stack: LocalStack, sqs: Any, source: SqsEventSource
) -> None:
    lines = [{"id": "a", "prompt": "fine a"}, {"id": "b", "prompt": "[401] rejected"},
             {"id": "c", "prompt": "fine c"}]  # fmt: skip
    code, body = post(
        {"workload": "llm", "input_uri": upload(stack, "inputs/k.jsonl", lines), "chunk_size": 3}
    )
    assert code == 202, body
    source.poll_once()  # the plan message
    _messages, failed = source.poll_once()
    assert failed == set()
    assert [m["body"]["kind"] for m in queue_bodies(sqs, stack.queue_url)] == ["finish"]
    assert status(body["job_id"])["status"] == "running"  # until its finish message is handled
    source.drain()
    [dead] = queue_bodies(sqs, stack.dlq_url)
    assert "401 invalid_api_key" in dead["attributes"]["error"]["StringValue"]
    final = status(body["job_id"])
    assert (final["status"], final["chunks_failed"], final["retries"]) == ("failed", 1, 0)
    assert model.calls["[401] rejected"] == 1
    # What was answered (before the refusal, or in flight beside it) is kept.
    kept = cloud.job_store().item_results(body["job_id"], 0)
    assert kept and kept[0].output == "echo: fine a"
    assert final["usage"]["prompt_tokens"] == 2 * len(kept)


def test_an_output_too_big_for_a_dynamodb_item_is_kept_in_the_bucket(
    model: FakeModelServer, stack: LocalStack, sqs: Any, source: SqsEventSource
) -> None:
    huge = "word " * 100_000  # echoed back: a 500 KB answer, over DynamoDB's 400 KB per item
    lines = [{"id": "small", "prompt": "fine"}, {"id": "huge", "prompt": huge}]
    code, body = post(
        {"workload": "llm", "input_uri": upload(stack, "inputs/h.jsonl", lines), "chunk_size": 2}
    )
    assert code == 202, body
    source.drain()
    final = status(body["job_id"])
    assert (final["status"], final["items_processed"]) == ("succeeded", 2)
    [small, big] = cloud.job_store().item_results(body["job_id"], 0)
    assert (small.output, small.output_uri) == ("echo: fine", None)
    assert big.output is None and big.output_uri is not None  # the row holds its address
    assert big.output_uri.startswith(f"s3://{stack.bucket_name}/outputs/{body['job_id']}/")
    key = final["output_uri"].removeprefix(f"s3://{stack.bucket_name}/")
    merged = boto3.client("s3").get_object(Bucket=stack.bucket_name, Key=key)
    rows = [json.loads(line) for line in merged["Body"].read().decode().splitlines()]
    assert rows[1]["output"] == f"echo: {huge}"


def test_a_merge_that_keeps_failing_fails_the_job_with_its_reason(
    model: FakeModelServer,
    stack: LocalStack,
    sqs: Any,
    source: SqsEventSource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import workloads.llm.workload

    def broken(job_id: str, total_chunks: int) -> str:
        raise RuntimeError("the bucket is on fire")

    monkeypatch.setattr(workloads.llm.workload, "merge_outputs", broken)
    lines = [{"id": "a", "prompt": "fine a"}]
    code, body = post(
        {"workload": "llm", "input_uri": upload(stack, "inputs/m.jsonl", lines), "chunk_size": 1}
    )
    assert code == 202, body
    source.drain()  # plan, chunk, then the finish message: retried, then given up
    final = status(body["job_id"])
    assert (final["status"], final["chunks_succeeded"], final["output_uri"]) == ("failed", 1, None)
    assert final["error"] == "the job's results could not be written: the bucket is on fire"
    [dead] = queue_bodies(sqs, stack.dlq_url)
    assert dead["body"] == {"kind": "finish", "job_id": body["job_id"]}


def test_a_bad_line_deep_in_a_large_input_fails_the_job_and_enqueues_no_chunk(
    model: FakeModelServer, stack: LocalStack, sqs: Any, source: SqsEventSource
) -> None:
    lines: list[dict[str, Any]] = [
        {"id": i, "prompt": f"question {i} " + "x" * 40} for i in range(20_000)
    ]
    lines[15_431] = {"id": "bad", "text": "a text, but the job has no prompt_template"}
    uri = upload(stack, "inputs/deep.jsonl", lines)
    code, body = post({"workload": "llm", "input_uri": uri, "chunk_size": 100})
    assert code == 202, body  # too big to read in the request: counted by the worker
    source.drain()
    final = status(body["job_id"])
    assert final["status"] == "failed" and final["total_chunks"] == 0
    assert "line 15432: has a text but the job has no prompt_template" in final["error"]
    assert queue_bodies(sqs, stack.queue_url) == [] and queue_bodies(sqs, stack.dlq_url) == []
    assert sum(model.calls.values()) == 0


def test_a_429_storm_ends_with_every_chunk_succeeded_and_no_retry_spent(
    model: FakeModelServer, stack: LocalStack, sqs: Any, source: SqsEventSource
) -> None:
    lines = [{"id": f"s{i}", "prompt": f"cloud storm {i}"} for i in range(6)]
    code, body = post(
        {"workload": "llm", "input_uri": upload(stack, "inputs/s.jsonl", lines), "chunk_size": 2}
    )
    assert code == 202, body
    source.poll_once()  # the plan message
    model.storm(3)  # the server refuses everything for 3 s
    _messages, failed = source.poll_once()
    assert failed == set()  # no record back to the queue: nothing for SQS to redeliver
    source.drain()
    assert queue_bodies(sqs, stack.dlq_url) == []
    final = status(body["job_id"])
    assert (final["status"], final["chunks_succeeded"], final["retries"]) == ("succeeded", 3, 0)
    assert final["usage"]["rate_limited"] >= 1 and final["usage"]["rate_wait_s"] >= 2
    calls = sum(model.calls[f"cloud storm {i}"] for i in range(6))
    assert calls == 6 + final["usage"]["rate_limited"]
