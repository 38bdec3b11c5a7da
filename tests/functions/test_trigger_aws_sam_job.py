"""demo/trigger_aws_sam_job against a local stand-in for the cloud API (we have no AWS here).

The stand-in answers as the SAM stack's API does: `POST /start` -> 202 with a relative
`status_url`, `GET /jobs/{id}` -> the status JSON, 403 without the right `x-api-key`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import inngest
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from inngest.experimental import mocked

from chunking.settings import get_settings
from functions.events import TRIGGER_AWS_SAM_JOB
from functions.trigger_aws_sam_job import trigger_aws_sam_job
from tests.support import ServerThread, trigger


class CloudStandIn:
    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.polls = 0
        self.start_failures: list[tuple[int, dict[str, Any]]] = []  # answered first, in order
        self.polls_until_done = 2
        self.app = FastAPI()

        @self.app.post("/Prod/start")
        async def start(request: Request) -> JSONResponse:
            if request.headers.get("x-api-key") != "secret-key":
                return JSONResponse({"message": "Forbidden"}, status_code=403)
            if self.start_failures:
                code, body = self.start_failures.pop(0)
                return JSONResponse(body, status_code=code)
            payload = await request.json()
            self.starts.append(payload)
            job_id = payload["job_id"]
            return JSONResponse(
                {"message": "job accepted", "job_id": job_id, "status_url": f"jobs/{job_id}",
                 "total_items": payload["total_items"], "chunk_size": payload["chunk_size"],
                 "chunks_created": 10},
                status_code=202,
            )  # fmt: skip

        @self.app.get("/Prod/jobs/{job_id}")
        async def status(job_id: str, request: Request) -> JSONResponse:
            if request.headers.get("x-api-key") != "secret-key":
                return JSONResponse({"message": "Forbidden"}, status_code=403)
            self.polls += 1
            done = self.polls > self.polls_until_done
            return JSONResponse(
                {"job_id": job_id, "path": "cloud", "status": "succeeded" if done else "running",
                 "chunks_succeeded": 10 if done else self.polls}
            )  # fmt: skip


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudStandIn]:
    stand_in = CloudStandIn()
    server = ServerThread(stand_in.app).start()
    monkeypatch.setenv("AWS_START_URL", f"{server.url}/Prod/start")
    monkeypatch.setenv("CLOUD_API_KEY", "secret-key")
    monkeypatch.setenv("AWS_POLL_INTERVAL_S", "1")
    monkeypatch.setenv("AWS_POLL_TIMEOUT_S", "10")
    get_settings.cache_clear()
    yield stand_in
    server.stop()


def test_starts_the_cloud_job_and_polls_until_it_ends(cloud: CloudStandIn) -> None:
    result = trigger(trigger_aws_sam_job, TRIGGER_AWS_SAM_JOB, {"total_items": 500})
    assert result.status is mocked.Status.COMPLETED, result.error
    assert result.output["status"] == "succeeded" and result.output["path"] == "cloud"
    [payload] = cloud.starts
    # The same JobSpec as the local path, with a job_id chosen once so retries are idempotent.
    assert payload["total_items"] == 500 and payload["chunk_size"] == 50
    assert result.output["job_id"] == payload["job_id"]
    assert cloud.polls == 3


def test_client_error_is_not_retried_and_carries_the_response(cloud: CloudStandIn) -> None:
    cloud.start_failures = [(400, {"message": "total_items: must be at least 1"})] * 5
    result = trigger(trigger_aws_sam_job, TRIGGER_AWS_SAM_JOB, {})
    # NonRetriableError is what the SDK turns into "x-inngest-no-retry: true" for the executor
    # (shown over HTTP in tests/test_serve.py); the in-process executor itself retries anyway.
    assert isinstance(result.error, inngest.NonRetriableError)
    assert "answered 400" in str(result.error)
    assert "total_items: must be at least 1" in str(result.error)


def test_server_error_is_retried(cloud: CloudStandIn) -> None:
    cloud.start_failures = [(502, {"message": "Internal server error"})]
    result = trigger(trigger_aws_sam_job, TRIGGER_AWS_SAM_JOB, {"job_id": "retry-me"})
    assert result.status is mocked.Status.COMPLETED, result.error
    assert [s["job_id"] for s in cloud.starts] == ["retry-me"]


def test_missing_api_key_is_a_clear_permanent_error(
    cloud: CloudStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUD_API_KEY", "")
    get_settings.cache_clear()
    result = trigger(trigger_aws_sam_job, TRIGGER_AWS_SAM_JOB, {})
    assert isinstance(result.error, inngest.NonRetriableError)
    assert "answered 403" in str(result.error)


def test_gives_up_at_the_deadline(cloud: CloudStandIn) -> None:
    cloud.polls_until_done = 1_000
    result = trigger(trigger_aws_sam_job, TRIGGER_AWS_SAM_JOB, {})
    assert isinstance(result.error, inngest.NonRetriableError)
    assert "still 'running' after 10s" in str(result.error)
    assert cloud.polls == 10  # AWS_POLL_TIMEOUT_S / AWS_POLL_INTERVAL_S


def test_unreachable_cloud_is_retried_then_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import free_port

    monkeypatch.setenv("AWS_START_URL", f"http://127.0.0.1:{free_port()}/Prod/start")
    get_settings.cache_clear()
    result = trigger(trigger_aws_sam_job, TRIGGER_AWS_SAM_JOB, {})
    assert result.status is mocked.Status.FAILED
    assert not isinstance(result.error, inngest.NonRetriableError)  # network errors are retried


def test_without_aws_start_url_it_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_START_URL", "")
    get_settings.cache_clear()
    result = trigger(trigger_aws_sam_job, TRIGGER_AWS_SAM_JOB, {})
    assert isinstance(result.error, inngest.NonRetriableError)
    assert "AWS_START_URL is not set" in str(result.error)


def test_invalid_spec_is_rejected_before_any_request(cloud: CloudStandIn) -> None:
    result = trigger(trigger_aws_sam_job, TRIGGER_AWS_SAM_JOB, {"chunk_size": 0})
    assert isinstance(result.error, inngest.NonRetriableError)
    assert "chunk_size:" in str(result.error)
    assert cloud.starts == []
