"""Checked structured answers and the file of what failed (issue 24 points 5 and 6) on the
cloud path, through the offline emulation: the items kept in S3, the worker asking the test
server with the job's response_format (realtime and in batches), the merged output and the
errors file in S3."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aws.local.resources import NAMES
from tests.aws.test_emulator import Running
from tests.functions.test_llm_structured import MISSED, RESPONSE_FORMAT
from tests.llm_server import FakeModelServer

BUCKET = NAMES["DataBucket"]
CONTEXT = "400 context_length_exceeded: This model's maximum context length is 8192 tokens."


def read_lines(emulator: Running, uri: str) -> list[dict[str, Any]]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=emulator.moto)
    body = s3.get_object(Bucket=BUCKET, Key=uri.removeprefix(f"s3://{BUCKET}/"))["Body"]
    return [json.loads(line) for line in body.read().decode().splitlines()]


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_checked_answers_and_the_errors_file_on_the_emulator(
    emulator: Running, model: FakeModelServer, mode: str
) -> None:
    model.batch.turnaround_s = 2.0
    prompts = [f"good {mode}", f"[badjsonx1] once {mode}", f"[badjson] never {mode}",
               f"[400-context] long {mode}"]  # fmt: skip
    items = [{"id": f"c{i}", "prompt": prompt} for i, prompt in enumerate(prompts)]
    response = emulator.start({"workload": "llm", "items": items, "chunk_size": 2, "mode": mode,
                               "response_format": RESPONSE_FORMAT})  # fmt: skip
    assert response.status_code == 202, response.text
    status = emulator.wait_until_done(response.json()["job_id"], timeout_s=90)

    assert (status["status"], status["items_processed"]) == ("partial", 4)
    asked = model.calls if mode == "realtime" else model.batch.asked
    assert [asked[prompt] for prompt in prompts] == [1, 2, 2, 1]
    output = read_lines(emulator, status["output_uri"])
    assert [line["id"] for line in output] == ["c0", "c1", "c2", "c3"]
    assert output[0]["parsed"] == {"label": f"echo: {prompts[0]}", "words": 2}
    assert output[1]["parsed"] == {"label": f"echo: {prompts[1]}", "words": 3}
    assert output[2]["error"] == MISSED and "parsed" not in output[2]
    assert read_lines(emulator, status["errors_uri"]) == [
        {"id": "c2", "input": items[2], "error": MISSED, "attempts": 2},
        {"id": "c3", "input": items[3], "error": CONTEXT, "attempts": 1},
    ]
    assert status["errors_uri"].startswith(f"s3://{BUCKET}/outputs/")


def test_a_job_with_nothing_failed_has_no_errors_file_on_the_emulator(
    emulator: Running, model: FakeModelServer
) -> None:
    items = [{"id": "fine", "prompt": "all good"}]
    response = emulator.start({"workload": "llm", "items": items})
    status = emulator.wait_until_done(response.json()["job_id"], timeout_s=60)
    assert (status["status"], status["errors_uri"]) == ("succeeded", None)


def test_a_bad_schema_is_a_400_naming_response_format_on_the_cloud_api(
    emulator: Running, model: FakeModelServer
) -> None:
    bad = {**RESPONSE_FORMAT, "json_schema": {"name": "x", "schema": {"type": "objekt"}}}
    response = emulator.start(
        {"workload": "llm", "items": [{"id": "a", "prompt": "p"}], "response_format": bad}
    )
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "response_format.json_schema.schema"
    assert "not a valid JSON schema" in error["message"]
