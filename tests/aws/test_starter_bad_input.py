"""POST /start refuses what it cannot take with a 4xx naming why; nothing recorded or enqueued.

The real starter handler against the stack's resources in moto, with API Gateway proxy events
as API Gateway builds them (a body that is not UTF-8 arrives base64-encoded).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import boto3
import pytest

from aws.local.lambda_events import lambda_context, post_start
from aws.local.resources import NAMES, LocalStack
from aws.starter.app import lambda_handler as starter
from stores.dynamodb import JOB_SK
from tests.aws.conftest import visible_count
from workloads.simulate import MAX_INJECTED_CHUNKS


def start(body: str | bytes | dict[str, Any] | None) -> tuple[int, dict[str, Any], int]:
    response = starter(post_start(body), lambda_context())
    return response["statusCode"], json.loads(response["body"]), len(response["body"])


def assert_nothing_recorded(stack: LocalStack, sqs: Any) -> None:
    assert visible_count(sqs, stack.queue_url) == 0
    assert boto3.client("dynamodb").scan(TableName=stack.table_name)["Count"] == 0


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("[" * 10_000 + "]" * 10_000, "nested too deeply"),
        ('{"total_items": ' + "9" * 5000 + "}", "too many digits"),
        (b'{"tenant": "\xff\xfe"}', "not UTF-8"),
        ('{"total_items": NaN}', "NaN"),
        ('{"total_items": 1e400}', "out of range"),
        ('{"fail_chunks": [' + "1," * 600_000 + "1]}", "at most 1048576"),
    ],
)
def test_bodies_that_cannot_be_a_jobspec_are_a_4xx_naming_why(
    stack: LocalStack, sqs: Any, body: str | bytes, names: str
) -> None:
    code, answer, _ = start(body)
    assert code in (400, 413), answer
    assert names in answer["message"]
    assert_nothing_recorded(stack, sqs)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ('{"tenant": "a\\ud800"}', "tenant"),
        ('{"callback_url": "https://x.example/\\udfff"}', "callback_url"),
        ('{"total_items": 100000, "chunk_size": 1, "fail_chunks": ['
         + ",".join(map(str, range(MAX_INJECTED_CHUNKS + 1))) + "]}", "fail_chunks"),
        ('{"total_items": 100000, "chunk_size": 1, "flaky_chunks": {'
         + ",".join(f'"{i}": 1' for i in range(MAX_INJECTED_CHUNKS + 1)) + "}}", "flaky_chunks"),
    ],
)  # fmt: skip
def test_fields_no_store_can_hold_are_a_400_naming_the_field(
    stack: LocalStack, sqs: Any, spec: str, field: str
) -> None:
    code, answer, _ = start(spec)
    assert code == 400, answer
    assert field in [e["field"] for e in answer["errors"]]
    assert_nothing_recorded(stack, sqs)


def test_errors_are_bounded_whatever_was_sent(stack: LocalStack, sqs: Any) -> None:
    bad = {"total_items": 100, "chunk_size": 1, "fail_chunks": [-1] * MAX_INJECTED_CHUNKS}
    code, answer, size = start(bad)
    assert code == 400
    assert size < 10_000, f"{size} bytes of error"
    assert answer["errors"][-1]["message"].endswith("more problems not shown")
    out_of_range = {"total_items": 100, "chunk_size": 1,
                    "fail_chunks": list(range(100, 100 + MAX_INJECTED_CHUNKS))}  # fmt: skip
    code, answer, size = start(out_of_range)
    assert code == 400 and size < 10_000
    assert "and 9990 more are out of range" in answer["message"]
    assert_nothing_recorded(stack, sqs)


def test_the_largest_spec_allowed_fits_one_dynamodb_item(stack: LocalStack, sqs: Any) -> None:
    chunks = 100_000
    spec = {
        "total_items": chunks, "chunk_size": 1,
        "fail_chunks": list(range(chunks - MAX_INJECTED_CHUNKS, chunks)),
        "flaky_chunks": {str(i): 100 for i in range(chunks - MAX_INJECTED_CHUNKS, chunks)},
        "tenant": "t" * 64, "job_id": "j" * 64,
    }  # fmt: skip
    code, answer, _ = start(spec)
    assert code == 202, answer
    item = boto3.client("dynamodb").get_item(
        TableName=stack.table_name, Key={"job_id": {"S": "j" * 64}, "sk": {"S": JOB_SK}}
    )
    assert "Item" in item


def test_the_emulated_api_passes_bad_bytes_on_as_api_gateway_does() -> None:
    """Over HTTP through the emulator: a body that is not UTF-8 is a 400, not a crash."""
    import httpx

    from aws.local.emulator import EmulatorProcess

    with EmulatorProcess(api_key="k") as emulator:
        post = functools.partial(
            httpx.post, f"{emulator.api}/Prod/start", timeout=30,
            headers={"x-api-key": "k", "content-type": "application/json"},
        )  # fmt: skip
        not_utf8 = post(content=b'{"tenant": "\xff\xfe"}')
        assert not_utf8.status_code == 400 and "not UTF-8" in not_utf8.json()["message"]
        deep = post(content=b"[" * 10_000 + b"]" * 10_000)
        assert deep.status_code == 400 and "nested too deeply" in deep.json()["message"]
        huge = post(content=b" " * (10 * 2**20 + 1))
        assert huge.status_code == 413
        listed = httpx.get(f"{emulator.api}/_emulator").json()
        assert listed["records"] == 0


def test_an_input_on_an_s3_that_does_not_answer_is_a_503_saying_so(
    stack: LocalStack, sqs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chunking.settings import get_settings
    from tests.support import free_port
    from workloads.llm import blobs

    monkeypatch.setenv("OPENAI_API_KEY_PARAMETER", "/long-jobs/openai-api-key")
    get_settings.cache_clear()
    # The data bucket's S3 alone does not answer (the table and queues still do).
    broken = f"http://127.0.0.1:{free_port()}"
    client = functools.lru_cache(lambda: boto3.client("s3", endpoint_url=broken))
    monkeypatch.setattr(blobs, "s3_client", client)
    spec = {"workload": "llm", "input_uri": f"s3://{NAMES['DataBucket']}/in.jsonl",
            "prompt_template": "{text}"}  # fmt: skip
    code, answer, _ = start(spec)
    assert code == 503, answer
    assert "S3 could not be reached" in answer["message"]
    assert_nothing_recorded(stack, sqs)
