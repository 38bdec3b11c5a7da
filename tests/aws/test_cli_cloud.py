"""`longjobs --cloud` against the offline stack (the emulator, its model the test server): the
input uploaded through the API's presigned URL, the status polled, the answers downloaded
through the presigned URL the API redirects to. And `longjobs demo`: both paths side by side."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.aws.test_emulator import API_KEY, Running
from tests.executor import StandInExecutor, serving
from tests.llm_server import FakeModelServer
from tests.support import FakeInngestApi, longjobs_process

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_developer_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no developer's .env
    for name in ("LONGJOBS_TARGET", "LONGJOBS_URL", "LONGJOBS_API_KEY", "API_KEY",
                 "AWS_START_URL", "CLOUD_API_KEY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def cloud(emulator: Running, *args: str, key: str = API_KEY) -> Any:
    start = f"{emulator.api}/Prod/start"
    return runner.invoke(app, [*args, "--cloud", "--url", start, "--api-key", key])


def s3_text(emulator: Running, uri: str) -> str:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    s3 = boto3.client("s3", endpoint_url=emulator.moto)
    return str(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())


def test_a_cloud_run_uploads_polls_and_writes_the_merged_output(
    emulator: Running, model: FakeModelServer, tmp_path: Path
) -> None:
    lines = [{"id": f"c{i}", "text": f"cloud review {i}"} for i in range(7)]
    lines[2] = {"id": "c2", "text": "[400-context] far too long"}
    source = tmp_path / "reviews.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))

    result = cloud(emulator, "run", str(source), "--prompt", "Classify: {text}",
                   "--chunk-size", "3", "--out", "answers.jsonl")  # fmt: skip
    print(result.output)
    assert result.exit_code == 1, result.output  # one item failed: partial
    job_id = result.output.split("watching job ")[1].split()[0]
    status = emulator.status(job_id)
    assert status["status"] == "partial" and status["items_failed"] == 1
    written = (tmp_path / "answers.jsonl").read_text()
    assert written.splitlines() == s3_text(emulator, status["output_uri"]).splitlines()
    assert [json.loads(line)["id"] for line in written.splitlines()] == [f"c{i}" for i in range(7)]
    errors = (tmp_path / "answers.errors.jsonl").read_text()
    assert errors == s3_text(emulator, status["errors_uri"])
    assert [json.loads(line)["id"] for line in errors.splitlines()] == ["c2"]
    # The same command again: the upload is not sent again, the job is the same one.
    again = cloud(emulator, "run", str(source), "--prompt", "Classify: {text}",
                  "--chunk-size", "3", "--out", "again.jsonl")  # fmt: skip
    assert "already submitted with this file and these options" in again.output
    assert (tmp_path / "again.jsonl").read_text() == written
    # status and chunks, polled from the stack.
    failed = cloud(emulator, "chunks", job_id, "--json")
    assert len(failed.output.splitlines()) == 3, failed.output
    listed = json.loads(cloud(emulator, "list", "--json").output)
    assert job_id in [job["job_id"] for job in listed]


def test_a_wrong_cloud_key_says_which_setting_holds_it(emulator: Running) -> None:
    result = cloud(emulator, "list", key="not-the-key")
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: 403 from the cloud API: Forbidden") and "CLOUD_API_KEY" in line


def test_ctrl_c_detaches_from_a_polled_cloud_job_and_watch_attaches_again(
    emulator: Running,
) -> None:
    job_id = emulator.start({"total_items": 40, "chunk_size": 2, "item_delay_ms": 100}).json()[
        "job_id"
    ]
    start = f"{emulator.api}/Prod/start"
    watching = longjobs_process("watch", job_id, "--cloud", "--url", start, "--api-key", API_KEY)
    assert watching.stdout is not None
    assert f"watching job {job_id} on the cloud path" in watching.stdout.readline()
    time.sleep(0.5)
    watching.send_signal(signal.SIGINT)
    out, err = watching.communicate(timeout=30)
    assert watching.returncode == 130, out + err
    assert f"Attach again: longjobs watch {job_id} --cloud" in err and "Traceback" not in err

    again = cloud(emulator, "watch", job_id)
    assert again.exit_code == 0 and f"job {job_id} succeeded" in again.output, again.output


def test_an_unreachable_cloud_api_is_one_line_and_exit_3() -> None:
    result = runner.invoke(app, ["list", "--cloud", "--url", "http://127.0.0.1:9/Prod/start"])
    assert result.exit_code == 3
    [line] = result.output.strip().splitlines()
    assert "cloud API at http://127.0.0.1:9/Prod is unreachable" in line
    assert "make aws-local, or set AWS_START_URL" in line


@pytest.fixture
def both_paths(
    emulator: Running, api: httpx.Client, fake_inngest: FakeInngestApi,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[StandInExecutor]:  # fmt: skip
    """The demo's two targets from the environment, as a user's .env gives them."""
    monkeypatch.setenv("LONGJOBS_URL", str(api.base_url))
    monkeypatch.setenv("AWS_START_URL", f"{emulator.api}/Prod/start")
    monkeypatch.setenv("CLOUD_API_KEY", API_KEY)
    with serving(api, fake_inngest) as running:
        yield running


def test_the_demo_runs_the_same_job_on_both_paths_side_by_side(
    both_paths: StandInExecutor, emulator: Running, api: httpx.Client
) -> None:
    result = runner.invoke(app, ["demo", "--items", "100", "--chunk-size", "10"])
    print(result.output)
    assert result.exit_code == 0, result.output
    for path in ("local", "cloud"):
        [line] = [line for line in result.output.splitlines() if line.startswith(f"{path}: job")]
        assert " partial in " in line and "100/100 items" in line, line
    assert "chunk latency p95" in result.output  # the side-by-side table
    # The same job on each: chunk 7 failed after one attempt (permanent), chunk 3 failed twice
    # and was retried to success.
    [local] = api.get("/jobs").json()
    cloud_id = result.output.split("cloud: job ")[1].split()[0]
    remote = emulator.status(cloud_id)
    for status in (local, remote):
        assert status["total_items"] == 100 and status["retries"] == 2
        assert [[c["index"], c["attempts"]] for c in status["failed_chunks"]] == [[7, 1]]
