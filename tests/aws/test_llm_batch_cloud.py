"""Batch mode on the cloud path, through the offline emulation: the input in S3, the worker
submitting each chunk's batch to the test server's Batch API and polling it by delayed SQS
messages, the merged output in S3; the wait holds no Lambda but the polls'."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from aws.local.resources import NAMES
from tests.aws.test_emulator import API_KEY, Running
from tests.llm_server import FakeModelServer

BUCKET = NAMES["DataBucket"]
TURNAROUND_S = 8.0


def upload(emulator: Running, key: str, lines: list[dict[str, Any]]) -> str:
    import boto3

    s3 = boto3.client("s3", endpoint_url=emulator.moto)
    body = "".join(json.dumps(line) + "\n" for line in lines)
    s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode())
    return f"s3://{BUCKET}/{key}"


def merged(emulator: Running, uri: str) -> list[dict[str, Any]]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=emulator.moto)
    body = s3.get_object(Bucket=BUCKET, Key=uri.removeprefix(f"s3://{BUCKET}/"))["Body"]
    return [json.loads(line) for line in body.read().decode().splitlines()]


def batches_of(model: FakeModelServer, job_id: str) -> list[Any]:
    found = [b for b in model.batch.batches.values() if (b.metadata or {}).get("job_id") == job_id]
    return sorted(found, key=lambda b: b.seq)


def test_a_batch_job_succeeds_on_the_emulator_and_its_wait_holds_no_worker(
    emulator: Running, model: FakeModelServer
) -> None:
    model.batch.turnaround_s = TURNAROUND_S
    lines = [{"id": f"b{i}", "prompt": f"batched {i}"} for i in range(9)]
    lines[2] = {"id": "b2", "prompt": "[expirex1] batched 2"}  # sent again, alone
    uri = upload(emulator, "inputs/batched.jsonl", lines)
    response = emulator.start({"workload": "llm", "input_uri": uri, "chunk_size": 5,
                               "mode": "batch"})  # fmt: skip
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    # Once both batches are with the provider, count the worker's invocations until the end.
    deadline = time.monotonic() + 30
    while len(batches_of(model, job_id)) < 2:
        assert time.monotonic() < deadline, emulator.state()
        time.sleep(0.1)
    before, began = emulator.state(), time.monotonic()
    status = emulator.wait_until_done(job_id, timeout_s=90)
    after, waited_s = emulator.state(), time.monotonic() - began

    assert (status["status"], status["chunks_succeeded"], status["items_processed"]) == (
        "succeeded", 2, 9,
    )  # fmt: skip
    assert [m["id"] for m in merged(emulator, status["output_uri"])] == [f"b{i}" for i in range(9)]
    assert merged(emulator, status["output_uri"])[2]["output"] == "echo: [expirex1] batched 2"
    batches = batches_of(model, job_id)
    assert sorted(len(b.requests) for b in batches[:2]) == [4, 5]
    assert len(batches[2].requests) == 1  # the expired one, alone
    assert status["batch"]["requests_resubmitted"] == 1
    assert status["usage"]["est_cost_usd"] == pytest.approx(
        status["usage"]["realtime_cost_usd"] / 2, abs=1e-6
    )
    # The wait: the provider took 2 x TURNAROUND_S (the resubmission's too) while the worker
    # ran only for the polls, each a short invocation, and the job's finishing unit.
    import httpx

    chunks = httpx.get(f"{emulator.api}/Prod/jobs/{job_id}/chunks", headers={"x-api-key": API_KEY})
    polls = sum(c["batch"]["polls"] for c in chunks.json()["chunks"])
    invocations = after["invocations"] - before["invocations"]
    billed_s = after["invocation_s"] - before["invocation_s"]
    assert invocations <= polls + 4, (invocations, polls)  # + resubmission, finish, callbacks
    assert billed_s < 0.5 * waited_s, (billed_s, waited_s)  # idle most of the wait


def test_cancel_mid_batch_cancels_the_provider_batches_and_keeps_what_came_back(
    emulator: Running, model: FakeModelServer
) -> None:
    import httpx

    model.batch.turnaround_s = 20.0
    lines = [{"id": f"k{i}", "prompt": f"keep {i}"} for i in range(20)]
    uri = upload(emulator, "inputs/cancelled.jsonl", lines)
    response = emulator.start({"workload": "llm", "input_uri": uri, "chunk_size": 10,
                               "mode": "batch"})  # fmt: skip
    job_id = response.json()["job_id"]
    deadline = time.monotonic() + 30
    while [b.status for b in batches_of(model, job_id)] != ["in_progress"] * 2:
        assert time.monotonic() < deadline, emulator.state()
        time.sleep(0.1)
    time.sleep(4)  # a fifth of each batch answered
    headers = {"x-api-key": API_KEY}
    cancelled = httpx.post(f"{emulator.api}/Prod/jobs/{job_id}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    deadline = time.monotonic() + 30
    while (status := emulator.status(job_id))["chunks_failed"] < 2:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)

    assert status["status"] == "cancelled"
    assert [b.status for b in batches_of(model, job_id)] == ["cancelled"] * 2
    chunks = httpx.get(f"{emulator.api}/Prod/jobs/{job_id}/chunks", headers=headers).json()
    for chunk in chunks["chunks"]:
        kept = chunk["batch"]["completed"]
        assert 0 < kept < 10, chunk
        assert f"{kept} items answered before the cancel are kept" in chunk["error"]


def test_the_emulated_stack_polls_batches_as_the_local_settings_say(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both paths poll a batch, and price it, alike: the emulator deploys the stack with the
    local settings as its LlmBatch* parameters, as it does the model's."""
    from aws.local.emulator import emulated_function
    from aws.local.local_secrets import local_parameters
    from aws.local.resources import LocalStack
    from aws.local.template import StackTemplate
    from tests.support import set_settings

    set_settings(monkeypatch, LLM_BATCH_POLL_MIN_S="7", LLM_BATCH_POLL_MAX_S="70",
                 LLM_BATCH_DISCOUNTS='{"*": 0.4}')  # fmt: skip
    deploy = StackTemplate(local_parameters())
    stack = LocalStack("jobs", "q", "dlq", 3, "bucket", "q-high")
    env = emulated_function(deploy, "WorkerFunction", stack, {}).environment
    assert (env["LLM_BATCH_POLL_MIN_S"], env["LLM_BATCH_POLL_MAX_S"]) == ("7.0", "70.0")
    assert json.loads(env["LLM_BATCH_DISCOUNTS"]) == {"*": 0.4}
    set_settings(monkeypatch, LLM_BATCH_DISCOUNTS="{}")
    unset = emulated_function(StackTemplate(local_parameters()), "WorkerFunction", stack, {})
    assert "LLM_BATCH_DISCOUNTS" not in unset.environment  # unset: 0.5 for every model


def test_prompts_in_the_request_are_a_job_on_the_emulator(
    emulator: Running, model: FakeModelServer
) -> None:
    """Issue 24 point 4 on the cloud path: the starter keeps the items as the job's input in
    the data bucket; the job runs from it as from an uploaded file."""
    body = {"workload": "llm", "items": [{"id": "c1", "prompt": "cloud one"},
                                          {"id": "c2", "text": "cloud two"}],
            "prompt_template": "Say: {text}"}  # fmt: skip
    response = emulator.start(body)
    assert response.status_code == 202, response.text
    status = emulator.wait_until_done(response.json()["job_id"], timeout_s=60)
    assert (status["status"], status["items_processed"]) == ("succeeded", 2)
    outputs = [m["output"] for m in merged(emulator, status["output_uri"])]
    assert outputs == ["echo: cloud one", "echo: Say: cloud two"]
