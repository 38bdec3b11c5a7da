"""The llm workload through the offline emulation: S3 input, the worker processes calling the
OpenAI-compatible test server, the merged output in S3, and the compare tool's llm table.

The worker Timeout here is 20 s: an llm chunk needs time for its calls (a chunk that runs out
of budget is retried, which would blur the retry counts these tests assert).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from aws.local.resources import NAMES
from aws.local.template import REPO
from tests.aws.test_emulator import API_KEY, Running
from tests.llm_server import FakeModelServer

BUCKET = NAMES["DataBucket"]


def test_llm_job_reads_s3_through_the_emulator_and_writes_its_merged_output(
    emulator: Running, model: FakeModelServer
) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=emulator.moto)
    lines = [{"id": f"e{i}", "prompt": f"emulated {i}"} for i in range(7)]
    lines[5] = {"id": "e5", "prompt": "[500x1] emulated 5"}  # one 5xx: retried with backoff
    body = "".join(json.dumps(line) + "\n" for line in lines)
    s3.put_object(Bucket=BUCKET, Key="inputs/emulated.jsonl", Body=body.encode())
    spec = {"workload": "llm", "input_uri": f"s3://{BUCKET}/inputs/emulated.jsonl",
            "chunk_size": 3}  # fmt: skip
    response = emulator.start(spec)
    assert response.status_code == 202, response.text
    assert response.json()["total_items"] is None  # counted by a worker, not the request
    status = emulator.wait_until_done(response.json()["job_id"], timeout_s=60)
    assert status["total_items"] == 7
    assert (status["status"], status["chunks_succeeded"], status["items_processed"]) == (
        "succeeded", 3, 7,
    )  # fmt: skip
    assert status["retries"] == 1 and status["usage"]["prompt_tokens"] == 6 * 2 + 3
    key = status["output_uri"].removeprefix(f"s3://{BUCKET}/")
    rows = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().splitlines()
    assert [json.loads(r)["id"] for r in rows] == [f"e{i}" for i in range(7)]
    assert model.calls["emulated 3"] == 1 and model.calls["[500x1] emulated 5"] == 2


def test_the_answers_of_a_job_of_items_are_read_a_chunk_at_a_time_through_the_api(
    emulator: Running, model: FakeModelServer
) -> None:
    """GET /jobs/{id}/chunks/{index}/items as API Gateway routes it (the template's event)."""
    items = [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(3)]
    response = emulator.start({"workload": "llm", "items": items, "chunk_size": 2})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert emulator.wait_until_done(job_id, timeout_s=60)["status"] == "succeeded"
    headers = {"x-api-key": API_KEY}
    url = f"{emulator.api}/Prod/jobs/{job_id}/chunks"
    answers = []
    for index in (0, 1):
        page = httpx.get(f"{url}/{index}/items", headers=headers).json()
        assert page["chunk_index"] == index and page["next_after"] is None
        answers += [(item["id"], item["output"]) for item in page["items"]]
    assert answers == [(f"q{i}", f"echo: question {i}") for i in range(3)]
    assert httpx.get(f"{url}/2/items", headers=headers).status_code == 404
    bad = httpx.get(f"{url}/0/items", params={"limit": "0"}, headers=headers)
    assert bad.status_code == 400 and "limit" in bad.json()["message"]


def test_compare_uploads_a_local_llm_input_and_shows_tokens_and_model_cost(
    emulator: Running, model: FakeModelServer, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support import free_port
    from tools import compare

    dead = f"http://127.0.0.1:{free_port()}"
    # The example names its input where `make llm-example` copies it (under LLM_INPUT_ROOT);
    # compare uploads it for the cloud path from wherever it is.
    spec = json.loads((REPO / "examples/llm-job.json").read_text())
    assert spec["input_uri"] == "data/inputs/reviews.jsonl"
    spec["input_uri"] = str(REPO / "examples/reviews.jsonl")
    code = compare.main([
        "--chunk-size", "4", "--spec", json.dumps(spec),
        "--local-url", dead, "--cloud-url", f"{emulator.api}/Prod/start", "--api-key", API_KEY,
        "--endpoint-url", emulator.moto, "--out-dir", str(tmp_path),
    ])  # fmt: skip
    assert code == 1  # the local path did not run
    cloud = json.loads((tmp_path / "compare-reviews-4.json").read_text())["cloud"]
    assert (cloud["status"], cloud["items_processed"], cloud["items_failed"]) == (
        "succeeded",
        10,
        0,
    )
    assert cloud["prompt_tokens"] > 0 and cloud["model_cost_usd"] > 0
    assert cloud["output_uri"].startswith(f"s3://{BUCKET}/outputs/")
    out = capsys.readouterr().out
    assert "prompt tokens" in out and "est. model cost" in out
