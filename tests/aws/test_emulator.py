"""The cloud path end to end through the offline emulation, started as a user would.

Time is shortened with the emulator's own flags (worker Timeout 2 s, visibility timeout 2 s;
the cancel test keeps the template's); everything else comes from template.yaml.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest

from aws.local.emulator import EmulatorProcess
from aws.local.worker_process import machine_cores
from chunking.status import JobStatus
from cloud.messages import ChunkMessage
from tests.support import wait_for

API_KEY = "emulator-test-key"


@dataclass
class Running:
    api: str
    moto: str

    def start(self, spec: dict[str, Any], key: str | None = API_KEY) -> httpx.Response:
        headers = {"x-api-key": key} if key else {}
        return httpx.post(f"{self.api}/Prod/start", json=spec, headers=headers, timeout=30)

    def status(self, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.api}/Prod/jobs/{job_id}", headers={"x-api-key": API_KEY})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_until_done(self, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status(job_id)
            if status["status"] in ("succeeded", "partial", "failed", "cancelled"):
                return status
            time.sleep(0.2)
        raise AssertionError(
            f"job {job_id} still {status['status']} after {timeout_s}s: {status}, {self.state()}"
        )

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.api}/_emulator").json()
        return result

    def dlq(self, capsys: pytest.CaptureFixture[str], *action: str) -> Any:
        from tools import dlq

        capsys.readouterr()
        assert dlq.main([*action, "--endpoint-url", self.moto]) == 0
        return capsys.readouterr().out


@contextmanager
def running_emulator(*args: str) -> Iterator[Running]:
    """`python -m aws.local.emulator ARGS` on free ports, with this module's API key."""
    with EmulatorProcess(*args, api_key=API_KEY) as process:
        for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
            os.environ.setdefault(name, value)
        yield Running(process.api, process.moto)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Running]:
    args = ("--worker-timeout", "2", "--visibility-timeout", "2", "--parameter",
            "WorkerConcurrency=4")  # fmt: skip
    with running_emulator(*args) as running:
        yield running


def test_api_key_is_required(emulator: Running) -> None:
    assert emulator.start({"total_items": 10}, key=None).status_code == 403
    assert emulator.start({"total_items": 10}, key="wrong").json() == {"message": "Forbidden"}


def test_job_succeeds_and_reports_the_local_paths_keys(emulator: Running) -> None:
    response = emulator.start({"total_items": 500, "chunk_size": 50, "item_delay_ms": 1})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status_url"].startswith(f"{emulator.api}/Prod/jobs/")
    status = emulator.wait_until_done(body["job_id"])
    assert (status["status"], status["chunks_succeeded"], status["items_processed"]) == (
        "succeeded", 10, 500,
    )  # fmt: skip
    assert set(status) == set(JobStatus.model_fields)  # what GET /jobs/{id} answers locally
    assert status["path"] == "cloud"


def test_bad_input_is_400_through_the_api(emulator: Running) -> None:
    response = emulator.start({"total_items": -1})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "total_items"


def test_poison_chunk_is_dead_lettered_after_max_receive_count_then_redriven(
    emulator: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    # Chunk 2 fails its first 3 attempts: exactly maxReceiveCount receives, then the DLQ.
    spec = {"total_items": 100, "chunk_size": 10, "item_delay_ms": 0, "flaky_chunks": {"2": 3}}
    job_id = emulator.start(spec).json()["job_id"]
    status = emulator.wait_until_done(job_id)
    assert (status["status"], status["chunks_succeeded"], status["chunks_failed"]) == (
        "partial", 9, 1,
    )  # fmt: skip
    assert status["chunks_succeeded"] + status["chunks_failed"] == status["total_chunks"]
    [failed] = status["failed_chunks"]
    assert (failed["index"], failed["attempts"]) == (2, 3)

    def dead() -> list[dict[str, Any]]:
        rows = json.loads(emulator.dlq(capsys, "list", "--json"))
        return [r for r in rows if r["job_id"] == job_id]

    wait_for(lambda: len(dead()) == 1, timeout=15)  # the redrive policy moves it on next receive
    [letter] = dead()
    assert (letter["chunk_index"], letter["receive_count"]) == (2, 3)
    assert letter["reason"].startswith("gave up after 3 attempts: TransientError")

    # The fault is gone now (the 4th attempt succeeds): redrive, and the job completes.
    assert "redrove" in emulator.dlq(capsys, "redrive")
    wait_for(lambda: emulator.status(job_id)["status"] == "succeeded", timeout=30)
    final = emulator.status(job_id)
    assert (final["chunks_succeeded"], final["chunks_failed"], final["items_processed"]) == (
        10, 0, 100,
    )  # fmt: skip
    assert dead() == []


def test_worker_killed_mid_batch_its_records_reappear_and_the_job_completes(
    emulator: Running,
) -> None:
    # 10 chunks of 10 x 50 ms: a batch is in flight for about half a second.
    job_id = emulator.start({"total_items": 100, "chunk_size": 10, "item_delay_ms": 50}).json()[
        "job_id"
    ]
    # Kill once the batch's chunks have begun (attempts are recorded), before they settle.
    wait_for(
        lambda: emulator.status(job_id)["attempts"] > 0 and bool(emulator.state()["in_flight"]),
        timeout=15,
    )
    [pid, *_] = [int(p) for p in emulator.state()["in_flight"]]
    failures_before = emulator.state()["failed_invocations"]
    os.kill(pid, signal.SIGKILL)
    status = emulator.wait_until_done(job_id, timeout_s=60)
    assert emulator.state()["failed_invocations"] > failures_before
    assert (status["status"], status["chunks_succeeded"], status["items_processed"]) == (
        "succeeded", 10, 100,
    )  # fmt: skip
    assert status["attempts"] > 10  # the killed batch's chunks ran again


def test_chunk_past_the_timeout_is_retried_then_dead_lettered(
    emulator: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    # One chunk of 30 x 100 ms = 3 s against a 2 s worker Timeout.
    spec = {"total_items": 40, "chunk_size": 30, "item_delay_ms": 100}
    job_id = emulator.start(spec).json()["job_id"]
    status = emulator.wait_until_done(job_id, timeout_s=90)
    assert status["status"] == "partial"
    [failed] = status["failed_chunks"]
    assert failed["index"] == 0 and failed["attempts"] == 3
    assert "TimeoutError: ran past its" in failed["error"]
    wait_for(
        lambda: any(
            r["job_id"] == job_id for r in json.loads(emulator.dlq(capsys, "list", "--json"))
        ),
        timeout=15,
    )


def test_compare_runs_the_cloud_column_and_says_why_the_local_one_did_not(
    emulator: Running, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support import free_port
    from tools import compare

    # A letter another job left in the DLQ: not this job's, so not in its count.
    sqs = boto3.client("sqs", endpoint_url=emulator.moto)
    dlq = sqs.get_queue_url(QueueName="long-jobs-dlq")["QueueUrl"]
    other = ChunkMessage(job_id="an-earlier-job", chunk_index=0).model_dump_json()
    sqs.send_message(QueueUrl=dlq, MessageBody=other)
    dead = f"http://127.0.0.1:{free_port()}"
    code = compare.main([
        "--items", "200", "--chunk-size", "50", "--item-delay-ms", "1",
        "--spec", '{"fail_chunks": [1]}', "--local-url", dead,
        "--cloud-url", f"{emulator.api}/Prod/start", "--api-key", API_KEY,
        "--endpoint-url", emulator.moto, "--out-dir", str(tmp_path),
    ])  # fmt: skip
    assert code == 1  # one path did not run
    report = json.loads((tmp_path / "compare-200-50.json").read_text())
    assert "make run" in report["local"]["not_run"]
    cloud = report["cloud"]
    assert (cloud["status"], cloud["chunks_succeeded"], cloud["failed_chunks"]) == (
        "partial",
        3,
        [1],
    )
    assert cloud["items_processed"] == 150 and cloud["wall_s"] > 0
    assert report["dlq_messages"] == 1  # this job's own: earlier tests' letters are not counted
    assert report["cloud_cost"]["usd"] > 0
    assert (tmp_path / "compare-200-50.png").stat().st_size > 0
    # The timeline the figure draws: every chunk's runs, in seconds since the job was accepted.
    runs = cloud["timeline"]
    assert sorted({r[0] for r in runs}) == [0, 1, 2, 3]
    assert [r[4] for r in runs if r[0] == 1] == ["failed"]
    assert all(0 <= r[2] <= r[3] for r in runs)
    out = capsys.readouterr().out
    assert "local: not run" in out and "est. AWS cost" in out


@pytest.fixture(scope="module")
def untimed_emulator() -> Iterator[Running]:
    """The template's worker Timeout and visibility timeout (not 2 s): on a busy machine a
    0.5 s chunk can pass 2 s, and then be received again while it runs (a second attempt) or
    time out on each receive and be dead-lettered; the cancel test's accounting would then
    rightly not add up as it expects. Those paths have their own tests above."""
    with running_emulator("--parameter", "WorkerConcurrency=4") as e:
        yield e


def test_cancel_through_the_api_stops_the_rest_and_the_accounting_adds_up(
    untimed_emulator: Running,
) -> None:
    emulator = untimed_emulator
    spec = {"total_items": 2000, "chunk_size": 10, "item_delay_ms": 50}  # 200 chunks of 0.5 s
    job_id = emulator.start(spec).json()["job_id"]
    wait_for(lambda: emulator.status(job_id)["chunks_succeeded"] > 0, timeout=20)
    response = httpx.post(f"{emulator.api}/Prod/jobs/{job_id}/cancel",
                          headers={"x-api-key": API_KEY}, timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"

    def accounted() -> int:
        s = emulator.status(job_id)
        return int(s["chunks_succeeded"] + s["chunks_failed"] + s["chunks_cancelled"])

    # The running chunks finish, and each of the ~190 cancelled chunks' messages is received
    # and counted once. How fast is moto's, late in a suite (its table has grown, each call
    # slower): this bounds a wait, it measures nothing (speed lives in bench/).
    deadline = time.monotonic() + 120
    while accounted() < 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert accounted() == 200, (emulator.status(job_id), emulator.state())
    final = emulator.status(job_id)
    assert final["status"] == "cancelled" and final["chunks_cancelled"] > 0
    assert final["attempts"] == final["chunks_succeeded"] + final["chunks_failed"]


def test_fifty_workers_start_without_losing_a_delivery(capsys: pytest.CaptureFixture[str]) -> None:
    """WorkerConcurrency=50 with one record a batch: a hundred 10 ms chunks want up to 50
    invocations at once, far more cold starts than this machine can init side by side within
    Lambda's 10 s. The template's visibility timeout (30 min) is kept: a delivery lost to a
    failed init would come back only long after this test's wait."""
    args = ("--parameter", "WorkerConcurrency=50", "--parameter", "WorkerBatchSize=1")
    with running_emulator(*args) as emulator:
        spec = {"total_items": 200, "chunk_size": 2, "item_delay_ms": 5}
        job_id = emulator.start(spec).json()["job_id"]
        status = emulator.wait_until_done(job_id, timeout_s=60)
        outcome = status["status"], status["chunks_succeeded"], status["chunks_failed"]
        assert outcome == ("succeeded", 100, 0)
        assert status["items_processed"] == 200
        assert status["attempts"] == 100  # each chunk once: no delivery came back
        state = emulator.state()
        assert (state["failed_invocations"], state["init_failures"]) == (0, 0)
        assert state["max_initing"] <= machine_cores()
        assert state["max_in_flight"] <= 50
        letters = json.loads(emulator.dlq(capsys, "list", "--json"))
        assert [r for r in letters if r["job_id"] == job_id] == []
